//! Slow, idle and too many clients, and decompression bombs: the server closes what holds a
//! connection without using it, refuses connections past its cap with a clear answer, keeps
//! decoded bodies within its budget, and keeps serving ordinary clients throughout.
//! Every timeout here is configured short (1–3 s) and every wait is bounded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{client, wait_until, Sextant};

/// Scheduling slack on a shared machine, on top of a configured timeout.
const SLACK: Duration = Duration::from_millis(2500);

fn host(url: &str) -> &str {
    url.trim_start_matches("http://")
}

async fn connect(url: &str) -> TcpStream {
    TcpStream::connect(host(url)).await.expect("connect")
}

/// Reads (and keeps) whatever arrives until the server closes the connection, for at most
/// `max`: the bytes and when it closed, or `None` if it was still open.
async fn until_closed(s: &mut TcpStream, max: Duration) -> Option<(Vec<u8>, Duration)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = max.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((got, start.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A client that opens a new connection for every request (each one goes through accept).
fn new_connection_client() -> reqwest::Client {
    let _ = client(None); // installs the TLS provider reqwest needs
    reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(5)).build().unwrap()
}

/// A client that keeps making ordinary requests (each on a new connection) until stopped,
/// counting successes and failures.
struct Bystander {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Bystander {
    fn start(url: &str) -> Self {
        let c = new_connection_client();
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (o, f, url) = (ok.clone(), failed.clone(), url.to_string());
        let task = tokio::spawn(async move {
            let mut errors = Vec::new();
            while !*stopped.borrow() {
                let body = json!({"post": [{"id": uuid::Uuid::now_v7().to_string(), "name": "bystander", "session_name": "bystanders"}]});
                match c.post(format!("{url}/runs/batch")).json(&body).send().await {
                    Ok(r) if r.status() == 202 => o.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        errors.push(format!("status {}", r.status()));
                        f.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        errors.push(e.to_string());
                        f.fetch_add(1, Ordering::Relaxed)
                    }
                };
                let _ = tokio::time::timeout(Duration::from_millis(100), stopped.changed()).await;
            }
            errors
        });
        Self { ok, failed, stop, task }
    }

    async fn finish(self) -> (usize, usize, Vec<String>) {
        let _ = self.stop.send(true);
        let errors = self.task.await.unwrap();
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed), errors)
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(name) && !l.starts_with('#')).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_http_clients_are_closed_while_others_are_served() {
    let s = Sextant::start(Some(
        "[server]\nheader_read_timeout_secs = 1\nbody_read_timeout_secs = 1\nbody_read_deadline_secs = 3\nidle_timeout_secs = 2\n",
    ))
    .await;
    let url = s.url.clone();
    let bystander = Bystander::start(&url);
    let header = Duration::from_secs(1);
    let started = Instant::now();

    // Connects and sends nothing, forty times over.
    let silent = async {
        let mut socks = Vec::new();
        for _ in 0..40 {
            socks.push(connect(&url).await);
        }
        let mut worst = Duration::ZERO;
        for sock in &mut socks {
            let (got, _) = until_closed(sock, header + SLACK).await.expect("a silent connection is closed");
            assert!(got.is_empty(), "nothing is sent to a client that sent nothing");
            worst = worst.max(started.elapsed());
        }
        worst
    };
    // Slowloris: a header that grows by a line every 200 ms and never ends.
    let slowloris = async {
        let mut sock = connect(&url).await;
        let t = Instant::now();
        sock.write_all(b"POST /runs/batch HTTP/1.1\r\nHost: sextant\r\n").await.unwrap();
        let mut i = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if sock.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).await.is_err() {
                break;
            }
            i += 1;
            assert!(t.elapsed() < header + SLACK, "a header trickled forever is cut off");
        }
        let closed = until_closed(&mut sock, SLACK).await.expect("closed").1;
        t.elapsed().saturating_sub(closed)
    };
    // A keep-alive connection: one request, then idle.
    let idle = async {
        let mut sock = connect(&url).await;
        sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: sextant\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 1024];
        let n = sock.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        let (_, after) = until_closed(&mut sock, Duration::from_secs(2) + SLACK).await.expect("an idle keep-alive connection is closed");
        after
    };
    // A body shorter than its Content-Length, then silence: 408, then closed.
    let short_body = async {
        let mut sock = connect(&url).await;
        let t = Instant::now();
        sock.write_all(
            b"POST /runs/batch HTTP/1.1\r\nHost: sextant\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"post\":[",
        )
        .await
        .unwrap();
        let (got, _) = until_closed(&mut sock, Duration::from_secs(1) + SLACK).await.expect("closed after the body stalls");
        let text = String::from_utf8_lossy(&got).to_string();
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("body_read_timeout_secs"), "the 408 names the setting: {text}");
        t.elapsed()
    };
    // A body that keeps coming, a byte every 400 ms (under the 1 s gap), too slowly to finish
    // within the 3 s deadline.
    let trickle = async {
        let mut sock = connect(&url).await;
        let t = Instant::now();
        sock.write_all(b"POST /runs/batch HTTP/1.1\r\nHost: sextant\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
            .await
            .unwrap();
        let (mut rd, mut wr) = sock.split();
        let write = async {
            while wr.write_all(b" ").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(400)).await;
                if t.elapsed() > Duration::from_secs(3) + SLACK * 2 {
                    break;
                }
            }
        };
        let read = async {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(3) + SLACK, rd.read(&mut buf)).await {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            (got, t.elapsed())
        };
        let ((got, at), ()) = tokio::join!(read, write);
        let text = String::from_utf8_lossy(&got).to_string();
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        at
    };
    let (silent, slowloris, idle, short_body, trickle) = tokio::join!(silent, slowloris, idle, short_body, trickle);
    eprintln!(
        "closed: 40 silent by {silent:?}, slowloris after {slowloris:?}, idle keep-alive after {idle:?}, \
         short body (408) after {short_body:?}, trickled body (408) after {trickle:?}"
    );
    assert!(idle >= Duration::from_millis(1700), "an idle keep-alive connection gets idle_timeout, not the header timeout: {idle:?}");
    assert!(short_body >= Duration::from_millis(900), "{short_body:?}");
    assert!(trickle >= Duration::from_millis(2700), "the whole-body deadline, not the gap timeout: {trickle:?}");

    let (ok, failed, errors) = bystander.finish().await;
    assert_eq!(failed, 0, "an ordinary client is served throughout: {errors:?}");
    assert!(ok >= 10, "{ok} requests served");
    let m = client(None).get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metric(&m, "sextant_http_connections_timed_out_total{reason=\"header\"") >= 41.0, "{m}");
    assert!(metric(&m, "sextant_http_connections_timed_out_total{reason=\"idle\"") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_get_a_clear_refusal() {
    let s = Sextant::start(Some("[server]\nmax_connections = 50\nheader_read_timeout_secs = 2\n")).await;
    let url = s.url.clone();
    // 60 idle sockets: the first 50 take every slot...
    let mut socks = Vec::new();
    for _ in 0..60 {
        socks.push(connect(&url).await);
    }
    let (held, over) = socks.split_at_mut(50);
    // ...the other 10 are told why as soon as they have sent a request (or after a second
    // without one), and closed.
    for (i, sock) in over.iter_mut().enumerate() {
        if i % 2 == 0 {
            sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: sextant\r\n\r\n").await.unwrap();
        }
        let (got, at) = until_closed(sock, Duration::from_secs(1) + SLACK).await.expect("an over-cap connection is closed");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable"), "{text}");
        assert!(text.contains("Retry-After: 1") && text.contains("server.max_connections = 50"), "{text}");
        if i % 2 == 0 {
            assert!(at < Duration::from_millis(500), "the refusal answers the request at once: {at:?}");
        }
    }
    // An ordinary client meanwhile gets the same answer, not a hang.
    let c = new_connection_client();
    let t = Instant::now();
    let r = c.get(format!("{url}/healthz")).send().await.expect("a refusal, not a hang");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    assert!(r.text().await.unwrap().contains("max_connections"));
    assert!(t.elapsed() < Duration::from_secs(1));
    // The 50 are closed by the header timeout, and then there is room again.
    for sock in held.iter_mut() {
        until_closed(sock, Duration::from_secs(2) + SLACK).await.expect("an idle socket holding a slot is closed");
    }
    let healthy = wait_until(5, || {
        let c = c.clone();
        let url = url.clone();
        async move { c.get(format!("{url}/healthz")).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    assert!(healthy.is_some(), "served again once the idle sockets are gone");
    let m = c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metric(&m, "sextant_http_connections_refused_total") >= 11.0, "{m}");
    assert!(metric(&m, "sextant_http_connections ") >= 1.0, "the open-connection gauge: {m}");
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// The GOAWAY frame in what a server sent: its error code and debug text.
fn goaway(bytes: &[u8]) -> Option<(u32, String)> {
    let mut i = 0;
    while i + 9 <= bytes.len() {
        let len = ((bytes[i] as usize) << 16) | ((bytes[i + 1] as usize) << 8) | bytes[i + 2] as usize;
        let payload = bytes.get(i + 9..i + 9 + len)?;
        if bytes[i + 3] == 0x07 && len >= 8 {
            let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
            return Some((code, String::from_utf8_lossy(&payload[8..]).to_string()));
        }
        i += 9 + len;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_grpc_connections_are_closed_and_over_cap_ones_refused() {
    use sextant_proto::pb::run_service_client::RunServiceClient;
    use sextant_proto::pb::QueryRunsRequest;

    let s = Sextant::start(Some("[server]\nheader_read_timeout_secs = 1\ngrpc_idle_timeout_secs = 2\ngrpc_max_connections = 5\n")).await;
    let grpc = s.grpc_url.clone();
    let mut g = RunServiceClient::connect(grpc.clone()).await.expect("gRPC answers");
    let calls = {
        let mut g = g.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            let until = Instant::now() + Duration::from_secs(4);
            while Instant::now() < until {
                match g.query_runs(QueryRunsRequest { limit: 1, ..Default::default() }).await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (ok, failed)
        })
    };

    // A TCP connection that sends nothing: closed after the header timeout.
    let mut silent = connect(&grpc).await;
    // One that sends the HTTP/2 preface and then no call: closed after the idle timeout.
    let mut idle = connect(&grpc).await;
    idle.write_all(H2_PREFACE).await.unwrap();
    let (silent, idle) =
        tokio::join!(until_closed(&mut silent, Duration::from_secs(1) + SLACK), until_closed(&mut idle, Duration::from_secs(2) + SLACK));
    let (_, silent_at) = silent.expect("a silent gRPC connection is closed");
    let (_, idle_at) = idle.expect("an idle gRPC connection is closed");
    eprintln!("gRPC: silent connection closed after {silent_at:?}, idle one after {idle_at:?}");
    assert!(idle_at >= Duration::from_millis(1700), "idle connections get grpc_idle_timeout: {idle_at:?}");
    let (ok, failed) = calls.await.unwrap();
    assert!(failed.is_empty() && ok >= 10, "an ordinary gRPC client is served throughout: {ok} ok, {failed:?}");

    // At the cap (the client above holds one slot): the next connection gets a GOAWAY that
    // says why, and existing connections keep working.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut sock = connect(&grpc).await;
        sock.write_all(H2_PREFACE).await.unwrap();
        held.push(sock);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = connect(&grpc).await;
    let _ = over.write_all(H2_PREFACE).await;
    let (got, at) = until_closed(&mut over, SLACK).await.expect("an over-cap gRPC connection is closed");
    let (code, why) = goaway(&got).expect("a GOAWAY frame");
    assert_eq!(code, 0x0b, "ENHANCE_YOUR_CALM");
    assert!(why.contains("server.grpc_max_connections = 5"), "{why}");
    assert!(at < Duration::from_secs(1), "{at:?}");
    g.query_runs(QueryRunsRequest { limit: 1, ..Default::default() }).await.expect("a connected client keeps working at the cap");
    let m = client(None).get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    assert!(metric(&m, "sextant_grpc_connections_refused_total") >= 1.0, "{m}");
}

/// The process's peak and current resident memory, in MiB (`VmHWM`, `VmRSS`).
fn memory_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"));
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
    };
    (kib("VmHWM:"), kib("VmRSS:"))
}

const BOUNDARY: &str = "eb4651d2d7d94b3fa6445b6be97e9bf5";

fn multipart_run(id: &str) -> Vec<u8> {
    let run = json!({"id": id, "name": "after-the-bombs", "session_name": "bombs", "run_type": "chain"}).to_string();
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"post.{id}\"\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{run}\r\n--{BOUNDARY}--\r\n",
        run.len()
    )
    .into_bytes()
}

/// 1 GiB of zeros, zstd-compressed: streamed (no declared size, so the server must decode to
/// find out) or with the size in the frame header.
fn bomb(declare_size: bool) -> Vec<u8> {
    const GIB: u64 = 1 << 30;
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    if declare_size {
        enc.set_pledged_src_size(Some(GIB)).unwrap();
    } else {
        enc.include_contentsize(false).unwrap();
    }
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..GIB / chunk.len() as u64 {
        std::io::Write::write_all(&mut enc, &chunk).unwrap();
    }
    enc.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_zstd_bombs_stay_within_the_decode_budget() {
    // The defaults: 200 MiB decoded per request, 512 MiB decoded in flight.
    let s = Sextant::start(None).await;
    let url = s.url.clone();
    let c = client(None);
    let send = |body: Vec<u8>| {
        c.post(format!("{url}/runs/multipart"))
            .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
            .header("content-encoding", "zstd")
            .body(body)
            .send()
    };
    let warm = uuid::Uuid::now_v7().to_string();
    assert_eq!(send(zstd::encode_all(&multipart_run(&warm)[..], 3).unwrap()).await.unwrap().status(), 202);
    let (streamed, declared) = tokio::task::spawn_blocking(|| (bomb(false), bomb(true))).await.unwrap();
    eprintln!("bombs: 1 GiB of zeros as {} bytes (streamed) and {} bytes (size declared)", streamed.len(), declared.len());
    let (hwm_before, rss_before) = memory_mib(s.pid());

    // 16 at once, twice over: each gets a 413 (or a 503 while the budget is spent).
    let t = Instant::now();
    for _ in 0..2 {
        let sends: Vec<_> = (0..16).map(|i| tokio::spawn(send(if i % 2 == 0 { streamed.clone() } else { declared.clone() }))).collect();
        for r in sends {
            let r = r.await.unwrap().expect("an answer, not a dropped connection");
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert!(
                (status == 413 && text.contains("decompressed body exceeds"))
                    || (status == 503 && text.contains("max_decoded_bytes_in_flight")),
                "{status}: {text}"
            );
        }
    }
    let took = t.elapsed();
    let (hwm_after, rss_after) = memory_mib(s.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, rss_later) = memory_mib(s.pid());
    eprintln!(
        "32 bombs (16 at once) answered in {took:?}; VmHWM {hwm_before} -> {hwm_after} MiB, \
         VmRSS {rss_before} -> {rss_after} MiB, {rss_later} MiB 2 s later"
    );
    assert!(hwm_after < hwm_before + 160, "peak resident memory grew by {} MiB", hwm_after - hwm_before);
    assert!(rss_later < rss_before + 100, "memory is returned: {rss_before} -> {rss_later} MiB");

    // And an ordinary compressed request still goes through.
    let id = uuid::Uuid::now_v7().to_string();
    assert_eq!(send(zstd::encode_all(&multipart_run(&id)[..], 3).unwrap()).await.unwrap().status(), 202);
    let seen = wait_until(10, || {
        let r = c.get(format!("{url}/runs/{id}")).send();
        async move { r.await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    assert!(seen.is_some(), "the run sent after the bombs is stored");
}

/// The case: at a 1,024 open-file limit, more idle sockets than descriptors. The
/// server fits its caps below the limit, refuses the surplus with a 503 rather than running
/// out of descriptors, and serves again once the idle sockets are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_an_open_file_limit_of_1024_idle_sockets_cannot_lock_clients_out() {
    if std::process::Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    // This test process opens 700 sockets, beside what the other tests hold.
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft: u64 =
        limits.lines().find(|l| l.starts_with("Max open files")).and_then(|l| l.split_whitespace().nth(3)?.parse().ok()).unwrap_or(0);
    if soft < 4096 {
        eprintln!("skipped: this test process may open only {soft} files (ulimit -n); it needs 4096");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (http, grpc) = (port(), port());
    let config = dir.path().join("sextant.toml");
    std::fs::write(&config, "[server]\nheader_read_timeout_secs = 3\n").unwrap();
    let log = dir.path().join("server.log");
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=1024:1024")
        .arg("--")
        .arg(crate::harness::binary())
        .args(["serve", "--http", &format!("127.0.0.1:{http}"), "--grpc", &format!("127.0.0.1:{grpc}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let url = format!("http://127.0.0.1:{http}");
    let c = new_connection_client();
    let ready = wait_until(30, || {
        let r = c.get(format!("{url}/readyz")).send();
        async move { r.await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    assert!(ready.is_some(), "ready: {}", std::fs::read_to_string(&log).unwrap_or_default());
    let _ = child.try_wait();
    let _child = Kill(child);
    let text = strip_ansi(&std::fs::read_to_string(&log).unwrap());
    assert!(text.contains("max_connections=512"), "the caps are fitted to the limit and the change logged:\n{text}");

    // 700 idle sockets against 512 HTTP slots.
    let mut socks = Vec::new();
    for _ in 0..700 {
        socks.push(connect(&url).await);
    }
    let t = Instant::now();
    let r = c.get(format!("{url}/healthz")).send().await.expect("an answer, not a hang or a reset");
    assert_eq!(r.status(), 503, "past the cap: a clear refusal");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Once the header timeout has closed them, clients are served again.
    let served = wait_until(10, || {
        let r = c.get(format!("{url}/healthz")).send();
        async move { r.await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    assert!(served.is_some(), "served again");
    for sock in &mut socks {
        assert!(until_closed(sock, SLACK).await.is_some(), "every idle socket was closed by the server");
    }
    let m = c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metric(&m, "sextant_http_connections_refused_total") >= 188.0, "{m}");
    assert_eq!(metric(&m, "sextant_accept_errors_total"), 0.0, "never out of descriptors");
}

/// Log text without its colours.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
