//! A full disk: on a small filesystem made for the test (a tmpfs; needs root, as CI runs),
//! writes are refused with 507 naming the cause while free space is below the reserve, the
//! server reports itself unready, and once space is freed it accepts writes again by itself,
//! with nothing that was acknowledged lost (also after a `kill -9` on the same directory).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{all_runs, client, project_id, trace, wait_until, Sextant};

const FS_BYTES: u64 = 96 << 20;
const RESERVE_BYTES: u64 = 24 << 20;

/// A tmpfs of `FS_BYTES` mounted for the test's lifetime.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={FS_BYTES}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free(&self) -> u64 {
        sextant_bus::disk::free_bytes(self.path()).unwrap()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Fills the filesystem until `leave` bytes are free; returns the filler's path.
fn fill(fs: &SmallFs, leave: u64) -> PathBuf {
    let filler = fs.path().join("filler");
    let free = fs.free();
    let size = free.saturating_sub(leave);
    let f = std::fs::File::create(&filler).unwrap();
    // tmpfs allocates on write, not on set_len: write the bytes.
    use std::io::Write;
    let mut w = std::io::BufWriter::new(f);
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < size {
        let n = chunk.len().min((size - written) as usize);
        if w.write_all(&chunk[..n]).is_err() {
            break;
        }
        written += n as u64;
    }
    let _ = w.flush();
    filler
}

/// The gRPC health status of the whole server (`""`), once it is `want` (within 5 s).
async fn grpc_health_becomes(grpc_url: &str, want: tonic_health::ServingStatus) -> bool {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let Ok(channel) = tonic::transport::Endpoint::from_shared(grpc_url.to_string()).unwrap().connect().await else { return false };
    let health = HealthClient::new(channel);
    wait_until(5, || {
        let mut h = health.clone();
        async move {
            let status = h.check(HealthCheckRequest { service: String::new() }).await.ok()?.into_inner().status;
            (status == want as i32).then_some(())
        }
    })
    .await
    .is_some()
}

async fn post(c: &reqwest::Client, url: &str, runs: &[Value]) -> (u16, String) {
    let r = c.post(format!("{url}/runs/batch")).json(&json!({ "post": runs })).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_and_recovers_by_itself() {
    let Some(fs) = SmallFs::mount() else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the disk-full test did not run");
        return;
    };
    let config = format!("[limits]\nmin_free_disk_bytes = {RESERVE_BYTES}\n");
    let mut s = Sextant::start_in(fs.path().join("data"), Some(&config), &[]).await;
    let c = client(None);
    let project = format!("disk-full-{}", uuid::Uuid::new_v4());
    let mut acked: HashSet<String> = HashSet::new();
    let mut faults = 0;
    for cycle in 0..2 {
        // Acknowledged before the disk fills.
        for _ in 0..3 {
            let (runs, _) = trace(&project, 9);
            let (status, body) = post(&c, &s.url, &runs).await;
            assert_eq!(status, 202, "cycle {cycle}: {body}");
            acked.extend(runs.iter().map(|r| r["id"].as_str().unwrap().to_string()));
        }
        // Leave less than the reserve free.
        let filler = fill(&fs, RESERVE_BYTES / 2);
        faults += 1;
        let refused = wait_until(5, || {
            let (c, url) = (c.clone(), s.url.clone());
            async move {
                let (runs, _) = trace("disk-full-refused", 2);
                let (status, body) = post(&c, &url, &runs).await;
                (status == 507).then_some(body)
            }
        })
        .await
        .unwrap_or_else(|| panic!("cycle {cycle}: writes were not refused on a full disk:\n{}", s.log_tail()));
        assert!(refused.contains("disk full"), "the error names the cause: {refused}");
        let fb = c
            .post(format!("{}/feedback", s.url))
            .json(&json!({"run_id": uuid::Uuid::now_v7(), "key": "k", "score": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(fb.status(), 507, "feedback is refused too");
        let ready = c.get(format!("{}/readyz", s.url)).send().await.unwrap();
        assert_eq!(ready.status(), 503, "unready while writes cannot be made durable");
        assert!(ready.text().await.unwrap().contains("disk full"));
        assert!(grpc_health_becomes(&s.grpc_url, tonic_health::ServingStatus::NotServing).await, "gRPC health follows /readyz");
        // Reads keep working meanwhile.
        let pid = project_id(&c, &s.url, &project).await.expect("the project is readable");
        assert!(!all_runs(&c, &s.url, &pid).await.is_empty());

        // Space comes back: writes are accepted again without a restart.
        std::fs::remove_file(&filler).unwrap();
        let (runs, _) = trace(&project, 4);
        let accepted = wait_until(5, || {
            let (c, url, runs) = (c.clone(), s.url.clone(), runs.clone());
            async move { (post(&c, &url, &runs).await.0 == 202).then_some(()) }
        })
        .await;
        assert!(accepted.is_some(), "cycle {cycle}: writes did not resume once space was freed:\n{}", s.log_tail());
        acked.extend(runs.iter().map(|r| r["id"].as_str().unwrap().to_string()));
        assert_eq!(c.get(format!("{}/readyz", s.url)).send().await.unwrap().status(), 200, "ready again");
        assert!(grpc_health_becomes(&s.grpc_url, tonic_health::ServingStatus::Serving).await, "gRPC health SERVING again");
    }

    // Everything acknowledged is there, now and after kill -9 on the same directory.
    for phase in ["running", "after kill -9"] {
        if phase != "running" {
            s.kill9();
            s.launch().await;
        }
        let pid = wait_until(10, || async { project_id(&c, &s.url, &project).await }).await.expect("project");
        let stored = wait_until(20, || {
            let (c, url, pid, acked) = (c.clone(), s.url.clone(), pid.clone(), acked.clone());
            async move {
                let ids: HashSet<String> = all_runs(&c, &url, &pid).await.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
                (ids == acked).then_some(ids)
            }
        })
        .await;
        assert!(stored.is_some(), "{phase}: acknowledged runs were lost on a full disk:\n{}", s.log_tail());
    }
    eprintln!("disk full: {faults} faults injected, {} acknowledged runs checked, 0 lost", acked.len());
    tokio::time::sleep(Duration::from_millis(10)).await;
}
