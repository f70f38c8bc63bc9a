//! A private `nats-server` with JetStream for tests: a real server on a free port with its own
//! store directory, stopped (and restartable on the same port and store) on demand. Tests that
//! need NATS use this instead of a shared server so they can kill it and cannot disturb
//! each other.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) private nats-server.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

/// The nats-server binary: `$NATS_SERVER`, else `nats-server` on PATH, else Debian's path.
pub fn nats_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(p);
    }
    for dir in std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default() {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            return candidate;
        }
    }
    PathBuf::from("/usr/sbin/nats-server")
}

impl NatsServer {
    /// Starts a server on a free port. Panics (it is a test fixture) if nats-server is missing.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (child, port) = spawn(dir.path(), None);
        Self { child: Some(child), port, dir }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server abruptly (SIGKILL), keeping its store for [`NatsServer::restart`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        let (child, port) = spawn(self.dir.path(), Some(self.port));
        assert_eq!(port, self.port);
        self.child = Some(child);
    }

    pub fn store_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// The child is returned to `NatsServer`, whose `kill` waits for it.
#[allow(clippy::zombie_processes)]
fn spawn(dir: &Path, port: Option<u16>) -> (Child, u16) {
    let log = dir.join(format!("nats-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let port_arg = port.map(|p| p.to_string()).unwrap_or_else(|| "-1".into());
    let bin = nats_server_binary();
    let mut child = Command::new(&bin)
        .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
        .arg(dir.join("js"))
        .arg("-l")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {} (install nats-server, or set NATS_SERVER): {e}", bin.display()));
    // The server logs its port, then "Server is ready" once JetStream has recovered its store.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let listening = text.lines().find_map(|l| l.split("Listening for client connections on ").nth(1)).map(str::trim);
        let port = listening.and_then(|addr| addr.rsplit(':').next()).and_then(|p| p.parse().ok());
        if let (Some(port), true) = (port, text.contains("Server is ready")) {
            return (child, port);
        }
        // Restarting on a fixed port can race the old process's socket; give up only at the deadline.
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nats-server did not become ready; log:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
