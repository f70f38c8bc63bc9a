//! Starts and stops real `sextant serve` processes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("SEXTANT_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    let bin = target.join("debug/sextant");
    assert!(bin.exists(), "{} is missing: run `cargo build -p sextant` first (tests/run-all.sh does)", bin.display());
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Sextant {
    child: Option<Child>,
    pub url: String,
    /// `http://127.0.0.1:<grpc port>`
    pub grpc_url: String,
    pub data_dir: PathBuf,
    config: Option<PathBuf>,
    log: PathBuf,
    /// Extra environment for the process (applied after the defaults, so it can override them).
    env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
    /// The data directory's parent, when the server made it.
    _data: Option<tempfile::TempDir>,
}

impl Sextant {
    /// A server with a fresh data directory and, optionally, a TOML config.
    pub async fn start(config_toml: Option<&str>) -> Self {
        Self::start_with_env(config_toml, &[]).await
    }

    /// [`Sextant::start`] with extra environment variables, e.g. a `RUST_LOG`.
    pub async fn start_with_env(config_toml: Option<&str>, env: &[(&str, &str)]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut s = Self::start_in(data.path().join("data"), config_toml, env).await;
        s._data = Some(data);
        s
    }

    /// A server on a data directory the caller owns (a small filesystem, a directory reused
    /// across servers), with an optional TOML config and extra environment.
    pub async fn start_in(data_dir: PathBuf, config_toml: Option<&str>, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = config_toml.map(|c| {
            let p = dir.path().join("sextant.toml");
            std::fs::write(&p, c).unwrap();
            p
        });
        let log = dir.path().join("server.log");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut s =
            Self { child: None, url: String::new(), grpc_url: String::new(), data_dir, config, log, env, _dir: Some(dir), _data: None };
        s.launch().await;
        s
    }

    /// (Re)starts the process on new ports with the same data directory.
    pub async fn launch(&mut self) {
        let (http, grpc) = (free_port(), free_port());
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .arg("--http")
            .arg(format!("127.0.0.1:{http}"))
            .arg("--grpc")
            .arg(format!("127.0.0.1:{grpc}"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap());
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        self.child = Some(cmd.spawn().expect("start sextant"));
        self.url = format!("http://127.0.0.1:{http}");
        self.grpc_url = format!("http://127.0.0.1:{grpc}");
        let client = client(None);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sextant exited with {status} during start-up:\n{}", self.log_tail());
            }
            assert!(Instant::now() < deadline, "sextant never became ready:\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    /// SIGTERM, and the exit status once it stopped.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        Command::new("kill").arg("-TERM").arg(c.id().to_string()).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "sextant did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sextant {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A client that sends `x-api-key` when given one.
pub fn client(key: Option<&str>) -> reqwest::Client {
    // reqwest is built without a default TLS crypto provider (see sextant_evaluator).
    sextant_evaluator::install_crypto_provider();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(k) = key {
        headers.insert("x-api-key", k.parse().unwrap());
    }
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// A root run with `children` children, as the SDK's batch path sends them (merged posts).
pub fn trace(project: &str, children: usize) -> (Vec<Value>, String) {
    let root = uuid::Uuid::now_v7().to_string();
    let stamp = "20261125T021943056436Z";
    let root_dotted = format!("{stamp}{root}");
    let mut runs = vec![json!({
        "id": root, "trace_id": root, "dotted_order": root_dotted, "name": "root", "run_type": "chain",
        "start_time": "2026-11-25T02:19:43.056436+00:00", "end_time": "2026-11-25T02:19:44.000000+00:00",
        "session_name": project, "inputs": {"q": "hello"}, "outputs": {"a": "world"}, "tags": ["e2e"],
        "extra": {"metadata": {"user_id": "u1"}}
    })];
    for i in 0..children {
        let id = uuid::Uuid::now_v7().to_string();
        runs.push(json!({
            "id": id, "trace_id": root, "parent_run_id": root,
            "dotted_order": format!("{root_dotted}.20261125T021943{:06}Z{id}", 100 + i),
            "name": format!("child-{i}"), "run_type": "llm",
            "start_time": format!("2026-11-25T02:19:43.{:06}+00:00", 100 + i),
            "end_time": "2026-11-25T02:19:43.900000+00:00",
            "session_name": project, "inputs": {"i": i}, "outputs": {"o": i}
        }));
    }
    (runs, root)
}

/// Every run of a project, following cursors.
pub async fn all_runs(c: &reqwest::Client, url: &str, project_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut body = json!({"session": [project_id], "limit": 1000, "select": ["id"]});
        if let Some(cur) = &cursor {
            body["cursor"] = json!(cur);
        }
        let r: Value = c.post(format!("{url}/runs/query")).json(&body).send().await.unwrap().json().await.unwrap();
        out.extend(r["runs"].as_array().unwrap().iter().cloned());
        match r["cursors"]["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => return out,
        }
    }
}

pub async fn project_id(c: &reqwest::Client, url: &str, name: &str) -> Option<String> {
    let r: Value = c.get(format!("{url}/sessions?name={}", url_encode(name))).send().await.unwrap().json().await.unwrap();
    r.as_array().unwrap().first().map(|p| p["id"].as_str().unwrap().to_string())
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
pub async fn wait_until<T, F, Fut>(secs: u64, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}
