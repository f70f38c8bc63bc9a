//! The HTTP and gRPC listeners: a cap on open connections with a clear refusal past it,
//! timeouts on slow and idle clients, and an accept loop that backs off when the process is
//! out of file descriptors instead of spinning.
//!
//! Every accepted socket is a [`Conn`]. A tower layer on each listener counts the requests in
//! flight on a connection (from the request head until the response body is done). While none
//! is, the connection is on a clock, checked whenever the server waits to read from it:
//!
//! * HTTP: the first request's headers must be complete `header_read_timeout` after the
//!   connect; afterwards a keep-alive connection may idle `idle_timeout`, and once the first
//!   byte of another request arrives its headers must be complete within `header_read_timeout`.
//! * gRPC: the HTTP/2 preface must arrive within `header_read_timeout`; afterwards a
//!   connection without a call may idle `grpc_idle_timeout` (HTTP/2 pings keep finding dead
//!   peers meanwhile).
//!
//! While a request is in flight its body is read under tower-http's body timeouts (no byte
//! for `body_read_timeout`, or the whole body not within `body_read_deadline`: 408, and the
//! connection closes), and on both listeners a client that reads none of its response for
//! `send_timeout` is disconnected. A connection past its clock is closed: its next read fails,
//! which ends it in hyper (the same as a client that went away).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use futures::task::AtomicWaker;
use futures::Stream;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tower::{Layer, Service};
use tower_http::timeout::{RequestBodyDeadlineLayer, RequestBodyTimeoutLayer, TimeoutBody};
use tracing::{debug, info, warn};

use sextant_ingest::decode::DecodeBudget;

use crate::config::ServerConfig;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// File descriptors kept back from the connection caps for the store, the bus, the log and
/// refusals: an eighth of the limit, and at least this many.
const FD_RESERVE_MIN: usize = 256;
/// Refusals being written at once; past it an over-cap connection is just closed.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refused connection is kept to deliver its refusal, and how long of that an
/// HTTP refusal waits for the request head (an HTTP client reads no answer before it has
/// sent its request).
const REFUSAL_LINGER: Duration = Duration::from_secs(3);
const REFUSAL_HEAD_WAIT: Duration = Duration::from_secs(1);
/// How long the accept loop waits for a refusal slot once it has hurried the others.
const REFUSAL_SLOT_WAIT: Duration = Duration::from_millis(20);
/// Accept-error back-off (out of file descriptors, out of memory): doubles up to the max.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The client's HTTP/2 connection preface.
const H2_PREFACE_LEN: usize = 24;
/// HTTP/2 header block limit on the gRPC listener (metadata: keys, trace context).
const GRPC_MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// The listeners' settings: [`ServerConfig`] in durations, with the connection caps fitted
/// to the process's open-file limit.
#[derive(Debug, Clone)]
pub struct Settings {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub body_read_deadline: Duration,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
    pub tcp_keepalive: Duration,
    pub max_connections: usize,
    pub grpc_max_connections: usize,
    pub grpc_idle_timeout: Duration,
    pub grpc_keepalive_interval: Duration,
    pub grpc_keepalive_timeout: Duration,
    pub grpc_request_timeout: Duration,
    pub grpc_max_concurrent_streams: u32,
    /// What a compressed gRPC request is charged against the decode budget while it is
    /// decoded (tonic decodes it, so the real size is not known beforehand).
    pub grpc_compressed_charge: usize,
}

impl Settings {
    /// The configured settings; the caps are lowered (and a warning logged) if the open-file
    /// limit, raised to its hard maximum first, cannot hold them.
    pub fn new(cfg: &ServerConfig, max_request_bytes: usize) -> Self {
        let secs = Duration::from_secs;
        let mut s = Self {
            header_read_timeout: secs(cfg.header_read_timeout_secs),
            body_read_timeout: secs(cfg.body_read_timeout_secs),
            body_read_deadline: secs(cfg.body_read_deadline_secs),
            idle_timeout: secs(cfg.idle_timeout_secs),
            send_timeout: secs(cfg.send_timeout_secs),
            tcp_keepalive: secs(cfg.tcp_keepalive_secs),
            max_connections: cfg.max_connections,
            grpc_max_connections: cfg.grpc_max_connections,
            grpc_idle_timeout: secs(cfg.grpc_idle_timeout_secs),
            grpc_keepalive_interval: secs(cfg.grpc_keepalive_interval_secs),
            grpc_keepalive_timeout: secs(cfg.grpc_keepalive_timeout_secs),
            grpc_request_timeout: secs(cfg.grpc_request_timeout_secs),
            grpc_max_concurrent_streams: cfg.grpc_max_concurrent_streams,
            grpc_compressed_charge: max_request_bytes.saturating_mul(2),
        };
        if let Some(limit) = raise_open_file_limit() {
            let (http, grpc) = fit_to_open_files(s.max_connections, s.grpc_max_connections, limit);
            if (http, grpc) != (s.max_connections, s.grpc_max_connections) {
                warn!(
                    open_file_limit = limit,
                    configured_http = s.max_connections,
                    configured_grpc = s.grpc_max_connections,
                    max_connections = http,
                    grpc_max_connections = grpc,
                    "the open-file limit (RLIMIT_NOFILE) cannot hold server.max_connections + server.grpc_max_connections \
                     with room for the store: lowered them; raise the limit (ulimit -n, LimitNOFILE=) to allow more"
                );
            }
            s.max_connections = http;
            s.grpc_max_connections = grpc;
        }
        s
    }
}

/// Makes the C allocator (glibc's, used by zstd and other C code; Rust's allocations go to
/// mimalloc) map blocks of 1 MiB and more on their own and unmap them when freed. Its default
/// threshold adapts upwards to the largest block freed, after which decoder windows of
/// 8 MiB come from per-thread arenas that are never trimmed: memory taken by a burst of
/// compressed requests stayed taken.
pub fn return_large_c_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the C allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Raises the soft open-file limit to the hard one (as Go's runtime does) and returns it;
/// `None` when unlimited or unknown.
#[cfg(unix)]
fn raise_open_file_limit() -> Option<usize> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    // Beyond about a million, select()-era code and the kernel's nr_open get in the way.
    let want = lim.rlim_max.min(1 << 20);
    if want > lim.rlim_cur {
        let raised = libc::rlimit { rlim_cur: want, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            info!(from = lim.rlim_cur, to = want, "raised the open-file limit to its hard maximum");
            lim.rlim_cur = want;
        }
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    usize::try_from(lim.rlim_cur).ok()
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> Option<usize> {
    None
}

/// The connection caps that fit `open_files` descriptors with a reserve kept back, shared
/// between the listeners in proportion to what was configured.
fn fit_to_open_files(http: usize, grpc: usize, open_files: usize) -> (usize, usize) {
    let reserve = (open_files / 8).max(FD_RESERVE_MIN) + MAX_REFUSALS_IN_FLIGHT * 2;
    let room = open_files.saturating_sub(reserve).max(2);
    if http.saturating_add(grpc) <= room {
        return (http, grpc);
    }
    let http_share = ((room as u128 * http as u128) / (http as u128 + grpc as u128)) as usize;
    let http_share = http_share.clamp(1, room - 1);
    (http_share, (room - http_share).min(grpc).max(1))
}

/// Which listener a connection came from: its limits, its metrics and its refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Http,
    Grpc,
}

impl Kind {
    fn open_gauge(self) -> &'static str {
        match self {
            Kind::Http => "sextant_http_connections",
            Kind::Grpc => "sextant_grpc_connections",
        }
    }
    fn refused_counter(self) -> &'static str {
        match self {
            Kind::Http => "sextant_http_connections_refused_total",
            Kind::Grpc => "sextant_grpc_connections_refused_total",
        }
    }
    fn closed_counter(self) -> &'static str {
        match self {
            Kind::Http => "sextant_http_connections_timed_out_total",
            Kind::Grpc => "sextant_grpc_connections_timed_out_total",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Http => "HTTP",
            Kind::Grpc => "gRPC",
        }
    }
}

/// Which timeout closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    Header,
    Idle,
    Send,
}

impl Closed {
    fn label(self) -> &'static str {
        match self {
            Closed::Header => "header",
            Closed::Idle => "idle",
            Closed::Send => "send",
        }
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    Instant::now().saturating_duration_since(epoch()).as_millis() as u64
}

/// What the request layer tells a connection's clock: requests in flight, and when the last
/// one finished.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    started: AtomicU64,
    last_end_ms: AtomicU64,
    /// The connection's task, woken when its last request finishes so that its clock is
    /// wound (the connection may be waiting on nothing else).
    waker: AtomicWaker,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            last_end_ms: AtomicU64::new(now_ms()),
            waker: AtomicWaker::new(),
        }
    }

    fn last_end(&self) -> Instant {
        epoch() + Duration::from_millis(self.last_end_ms.load(Ordering::SeqCst))
    }
}

/// One request in flight on a connection, until dropped (with its response body).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        // In flight before started: a clock that sees the new request sees it in flight.
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        activity.started.fetch_add(1, Ordering::SeqCst);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // When, before how many: a clock that sees none in flight sees when the last ended.
        self.0.last_end_ms.store(now_ms(), Ordering::SeqCst);
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.waker.wake();
        }
    }
}

/// An accepted socket on a clock (see the module documentation). Holds its listener's
/// connection slot until dropped.
pub struct Conn {
    io: TcpStream,
    kind: Kind,
    activity: Arc<Activity>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    send_timeout: Duration,
    accepted: Instant,
    seen_started: u64,
    /// When the first byte of the next request's head arrived (HTTP).
    head_started: Option<Instant>,
    /// Bytes read so far, up to the HTTP/2 preface (gRPC), and when the preface was complete.
    preface_read: usize,
    preface_done: Option<Instant>,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_stalled: Option<Instant>,
    write_timer: Option<Pin<Box<Sleep>>>,
    closed: Option<Closed>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    _slot: OwnedSemaphorePermit,
}

impl Conn {
    fn new(io: TcpStream, peer: SocketAddr, kind: Kind, settings: &Settings, slot: OwnedSemaphorePermit) -> Self {
        metrics::gauge!(kind.open_gauge()).increment(1.0);
        let local = io.local_addr().ok();
        Self {
            io,
            kind,
            activity: Arc::new(Activity::new()),
            header_read_timeout: settings.header_read_timeout,
            idle_timeout: match kind {
                Kind::Http => settings.idle_timeout,
                Kind::Grpc => settings.grpc_idle_timeout,
            },
            send_timeout: settings.send_timeout,
            accepted: Instant::now(),
            seen_started: 0,
            head_started: None,
            preface_read: 0,
            preface_done: None,
            read_timer: None,
            write_stalled: None,
            write_timer: None,
            closed: None,
            peer,
            local,
            _slot: slot,
        }
    }

    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// When a read that is still waiting must give up, and why; `None` while a request is in
    /// flight (its body has its own timeouts).
    fn read_deadline(&mut self) -> Option<(Instant, Closed)> {
        let started = self.activity.started.load(Ordering::SeqCst);
        if started != self.seen_started {
            self.seen_started = started;
            self.head_started = None;
        }
        if self.activity.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        match self.kind {
            Kind::Http if started == 0 => Some((self.accepted + self.header_read_timeout, Closed::Header)),
            Kind::Http => match self.head_started {
                Some(t) => Some((t + self.header_read_timeout, Closed::Header)),
                None => Some((self.activity.last_end() + self.idle_timeout, Closed::Idle)),
            },
            Kind::Grpc => match self.preface_done {
                None => Some((self.accepted + self.header_read_timeout, Closed::Header)),
                Some(t) => Some((t.max(self.activity.last_end()) + self.idle_timeout, Closed::Idle)),
            },
        }
    }

    fn on_read(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        match self.kind {
            Kind::Http => {
                if self.head_started.is_none()
                    && self.activity.started.load(Ordering::SeqCst) > 0
                    && self.activity.in_flight.load(Ordering::SeqCst) == 0
                {
                    self.head_started = Some(Instant::now());
                }
            }
            Kind::Grpc => {
                if self.preface_done.is_none() {
                    self.preface_read += n;
                    if self.preface_read >= H2_PREFACE_LEN {
                        self.preface_done = Some(Instant::now());
                    }
                }
            }
        }
    }

    fn close(&mut self, why: Closed) -> io::Error {
        if self.closed.is_none() {
            self.closed = Some(why);
            metrics::counter!(self.kind.closed_counter(), "reason" => why.label()).increment(1);
            debug!(peer = %self.peer, listener = self.kind.name(), reason = why.label(), "closing a connection: timed out");
        }
        io::Error::new(io::ErrorKind::TimedOut, format!("{} timeout", why.label()))
    }

    /// Arms `timer` for `deadline` and polls it: `true` once it has passed.
    fn expired(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
        if Instant::now() >= deadline {
            return true;
        }
        match timer {
            Some(t) if t.deadline() == deadline => {}
            Some(t) => t.as_mut().reset(deadline),
            None => *timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready())
    }

    fn write_pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let since = *self.write_stalled.get_or_insert_with(Instant::now);
        if Self::expired(&mut self.write_timer, since + self.send_timeout, cx) {
            return Poll::Ready(Err(self.close(Closed::Send)));
        }
        Poll::Pending
    }

    fn write_done<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => self.write_pending(cx),
            ready => {
                self.write_stalled = None;
                ready
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        metrics::gauge!(self.kind.open_gauge()).decrement(1.0);
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(why) = this.closed {
            return Poll::Ready(Err(this.close(why)));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.on_read(buf.filled().len() - before);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                this.activity.waker.register(cx.waker());
                match this.read_deadline() {
                    Some((deadline, why)) if Self::expired(&mut this.read_timer, deadline, cx) => Poll::Ready(Err(this.close(why))),
                    _ => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.write_done(r, cx)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.write_done(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.write_done(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_shutdown(cx);
        this.write_done(r, cx)
    }
}

/// What a gRPC call learns of its connection: tonic's [`TcpConnectInfo`] (re-inserted for
/// `Request::remote_addr`) and the connection's [`Activity`].
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub tcp: TcpConnectInfo,
    activity: Arc<Activity>,
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        ConnInfo { tcp: TcpConnectInfo { local_addr: self.local, remote_addr: Some(self.peer) }, activity: self.activity.clone() }
    }
}

/// Accepts connections for one listener: up to its cap, refusing past it, backing off on
/// errors that are not the client's.
struct Acceptor {
    listener: TcpListener,
    kind: Kind,
    settings: Arc<Settings>,
    slots: Arc<Semaphore>,
    limit: usize,
    refusals: Arc<Semaphore>,
    /// Tells refusals waiting for a request head to answer now (all refusal slots are taken).
    hurry: Arc<Notify>,
    backoff: Duration,
}

impl Acceptor {
    fn new(listener: TcpListener, kind: Kind, settings: Arc<Settings>) -> Self {
        let limit = match kind {
            Kind::Http => settings.max_connections,
            Kind::Grpc => settings.grpc_max_connections,
        };
        metrics::gauge!(kind.open_gauge()).set(0.0);
        metrics::counter!(kind.refused_counter()).absolute(0);
        Self {
            listener,
            kind,
            settings,
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT)),
            hurry: Arc::new(Notify::new()),
            backoff: ACCEPT_BACKOFF_MIN,
        }
    }

    async fn accept(&mut self) -> Conn {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    self.backoff = ACCEPT_BACKOFF_MIN;
                    let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                        self.refuse(stream, peer).await;
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let keepalive = socket2::TcpKeepalive::new().with_time(self.settings.tcp_keepalive);
                    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
                    return Conn::new(stream, peer, self.kind, &self.settings, slot);
                }
                // The client's problem (it reset before we accepted): next.
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) => {}
                // Ours: out of descriptors (EMFILE, ENFILE), buffers or memory. The pending
                // connection stays queued, so retrying at once would spin.
                Err(e) => {
                    if self.backoff == ACCEPT_BACKOFF_MIN {
                        warn!(listener = self.kind.name(), error = %e, "cannot accept connections; backing off");
                    } else {
                        debug!(listener = self.kind.name(), error = %e, backoff_ms = self.backoff.as_millis() as u64, "accept still failing");
                    }
                    metrics::counter!("sextant_accept_errors_total", "listener" => self.kind.name()).increment(1);
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    }

    /// Tells an over-cap client why (an HTTP 503 or an HTTP/2 GOAWAY naming the limit) and
    /// closes. An HTTP refusal waits (briefly) for the request first: a client reads no answer
    /// before it has sent its request. Refusals in the making are bounded; when all are taken,
    /// the waiting ones are told to answer at once, and if none is free even then this one
    /// answers without waiting.
    async fn refuse(&self, stream: TcpStream, peer: SocketAddr) {
        metrics::counter!(self.kind.refused_counter()).increment(1);
        debug!(peer = %peer, listener = self.kind.name(), limit = self.limit, "refusing a connection: at the connection limit");
        let refusal = refusal(self.kind, self.limit);
        let permit = match self.refusals.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                self.hurry.notify_waiters();
                tokio::time::timeout(REFUSAL_SLOT_WAIT, self.refusals.clone().acquire_owned()).await.ok().and_then(Result::ok)
            }
        };
        let Some(permit) = permit else {
            answer_now(&stream, &refusal);
            return;
        };
        let (kind, hurry) = (self.kind, self.hurry.clone());
        tokio::spawn(async move {
            let _permit = permit;
            deliver(stream, refusal, kind, hurry).await;
        });
    }
}

/// Writes a refusal and closes, within [`REFUSAL_LINGER`] or sooner when `hurry` is notified.
async fn deliver(mut stream: TcpStream, refusal: Vec<u8>, kind: Kind, hurry: Arc<Notify>) {
    let hurried = hurry.notified();
    tokio::pin!(hurried);
    hurried.as_mut().enable();
    let sent = AtomicBool::new(false);
    {
        let work = async {
            if kind == Kind::Http {
                let _ = tokio::time::timeout(REFUSAL_HEAD_WAIT, read_head(&mut stream)).await;
            }
            sent.store(true, Ordering::SeqCst);
            stream.write_all(&refusal).await?;
            stream.shutdown().await?;
            // Read what the client sends until it closes: closing with unread data would
            // reset the connection, and the client could lose the refusal.
            let mut sink = [0u8; 4096];
            let mut seen = 0usize;
            while seen < 256 * 1024 {
                match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? {
                    0 => break,
                    n => seen += n,
                }
            }
            Ok::<_, io::Error>(())
        };
        tokio::select! {
            _ = tokio::time::timeout(REFUSAL_LINGER, work) => return,
            _ = &mut hurried => {}
        }
    }
    if !sent.load(Ordering::SeqCst) {
        answer_now(&stream, &refusal);
    }
}

/// Reads what has already arrived (unread data would turn the close into a reset), writes
/// what fits of the refusal without waiting, and closes.
fn answer_now(stream: &TcpStream, refusal: &[u8]) {
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match stream.try_read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let _ = stream.try_write(refusal);
}

/// Reads up to the end of an HTTP request head (or 16 KiB of it, or the end of input).
async fn read_head(stream: &mut TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    let mut tail = [0u8; 3];
    let mut seen = 0usize;
    while seen < 16 * 1024 {
        let n = tokio::io::AsyncReadExt::read(stream, &mut buf).await?;
        if n == 0 {
            break;
        }
        let mut joined = tail.to_vec();
        joined.extend_from_slice(&buf[..n]);
        if joined.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        let keep = joined.len() - 3;
        tail.copy_from_slice(&joined[keep..]);
        seen += n;
    }
    Ok(())
}

/// The bytes an over-cap connection gets before it is closed.
fn refusal(kind: Kind, limit: usize) -> Vec<u8> {
    match kind {
        Kind::Http => {
            let body = format!(
                "{{\"detail\":\"the server has too many open connections (server.max_connections = {limit}); retry shortly\",\"error\":\"Unavailable\"}}"
            );
            format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
        Kind::Grpc => {
            // The server preface (an empty SETTINGS frame), then GOAWAY: no stream processed,
            // ENHANCE_YOUR_CALM, the reason as debug data.
            let debug = format!("too many open connections (server.grpc_max_connections = {limit}); retry shortly");
            let mut out = vec![0, 0, 0, 0x04, 0, 0, 0, 0, 0];
            let len = 8 + debug.len();
            out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 0x07, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&0u32.to_be_bytes());
            out.extend_from_slice(&0x0bu32.to_be_bytes());
            out.extend_from_slice(debug.as_bytes());
            out
        }
    }
}

/// A body that holds `T` until it ends or is dropped.
pub struct Holding<B, T> {
    inner: Pin<Box<B>>,
    held: Option<T>,
}

impl<B, T> Holding<B, T> {
    fn new(inner: B, held: Option<T>) -> Self {
        Self { inner: Box::pin(inner), held }
    }
}

impl<B: Body, T: Unpin> Body for Holding<B, T> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        // Unpin: `inner` is boxed.
        let this = self.get_mut();
        let r = this.inner.as_mut().poll_frame(cx);
        if let Poll::Ready(None) = r {
            this.held = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts an HTTP connection's requests for its clock (see [`Conn`]).
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B, RB> Service<Request<B>> for Tracked<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<Holding<RB, InFlight>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let guard = InFlight::begin(&self.activity);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|b| Holding::new(b, Some(guard))))
        })
    }
}

// `InFlight` is moved into futures that must be Send.
const _: fn() = || {
    fn is_send<T: Send + Sync>() {}
    is_send::<InFlight>();
};

/// Serves `app` on `listener` until `stop` resolves, then lets open requests finish (the
/// caller bounds how long) and returns once every connection has closed.
pub async fn serve_http(listener: TcpListener, app: Router, settings: Arc<Settings>, stop: impl Future<Output = ()>) {
    let mut acceptor = Acceptor::new(listener, Kind::Http, settings.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The connection's own clock times header reads (hyper's would also cut idle keep-alive
    // connections at the header timeout).
    builder.http1().keep_alive(true).header_read_timeout(None);
    let body_timeouts = tower::ServiceBuilder::new()
        .layer(RequestBodyDeadlineLayer::new(settings.body_read_deadline))
        .layer(RequestBodyTimeoutLayer::new(settings.body_read_timeout));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let conn = tokio::select! {
            conn = acceptor.accept() => conn,
            _ = &mut stop => break,
        };
        let peer = conn.peer;
        let svc = Tracked { inner: body_timeouts.service(app.clone()), activity: conn.activity().clone() };
        let conn = builder.serve_connection(TokioIo::new(conn), TowerToHyperService::new(svc)).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(peer = %peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    // Stop listening now: new clients are refused by the kernel rather than left waiting.
    drop(acceptor);
    graceful.shutdown().await;
}

/// The gRPC listener's connections, for `serve_with_incoming_shutdown`: capped, refused past
/// the cap, each on a clock. Accept errors are retried here with a back-off (tonic would
/// retry them at once).
pub fn grpc_incoming(listener: TcpListener, settings: Arc<Settings>) -> impl Stream<Item = Result<Conn, io::Error>> {
    futures::stream::unfold(Acceptor::new(listener, Kind::Grpc, settings), |mut acceptor| async move {
        let conn = acceptor.accept().await;
        Some((Ok(conn), acceptor))
    })
}

/// A tonic server builder with the gRPC listener's limits: request timeout, HTTP/2
/// keep-alive pings, concurrent streams per connection, header list size.
pub fn grpc_server(settings: &Settings) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .timeout(settings.grpc_request_timeout)
        .http2_keepalive_interval(Some(settings.grpc_keepalive_interval))
        .http2_keepalive_timeout(Some(settings.grpc_keepalive_timeout))
        .max_concurrent_streams(settings.grpc_max_concurrent_streams)
        .concurrency_limit_per_connection(settings.grpc_max_concurrent_streams as usize)
        .http2_max_header_list_size(GRPC_MAX_HEADER_LIST_BYTES)
}

/// The gRPC side of the connection clock, body timeout and decode budget: counts each
/// connection's calls, times out a request body that stops arriving, and charges a compressed
/// request against the decode budget while it is decoded.
#[derive(Clone)]
pub struct GrpcConnLayer {
    body_read_timeout: Duration,
    budget: DecodeBudget,
    compressed_charge: usize,
}

impl GrpcConnLayer {
    pub fn new(settings: &Settings, budget: DecodeBudget) -> Self {
        Self { body_read_timeout: settings.body_read_timeout, budget, compressed_charge: settings.grpc_compressed_charge }
    }
}

impl<S> Layer<S> for GrpcConnLayer {
    type Service = GrpcConn<S>;
    fn layer(&self, inner: S) -> GrpcConn<S> {
        GrpcConn { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct GrpcConn<S> {
    inner: S,
    layer: GrpcConnLayer,
}

impl<S, RB> Service<Request<tonic::body::Body>> for GrpcConn<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<tonic::body::Body>) -> Self::Future {
        let info = req.extensions().get::<ConnInfo>().cloned();
        let guard = info.map(|info| {
            req.extensions_mut().insert(info.tcp);
            InFlight::begin(&info.activity)
        });
        let compressed = req.headers().get("grpc-encoding").is_some_and(|v| v.as_bytes() != b"identity");
        // The service that was polled ready is the one called; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let reservation = if compressed {
                match layer.budget.reserve(layer.compressed_charge).await {
                    Ok(r) => Some(r),
                    Err(e) => return Ok(tonic::Status::from(e).into_http()),
                }
            } else {
                None
            };
            let timeout = layer.body_read_timeout;
            let req = req.map(|b| tonic::body::Body::new(Holding::new(TimeoutBody::new(timeout, b), reservation)));
            let resp = inner.call(req).await?;
            Ok(resp.map(|b| tonic::body::Body::new(Holding::new(b, guard))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_caps_fit_the_open_file_limit() {
        assert_eq!(fit_to_open_files(4096, 1024, 1 << 20), (4096, 1024));
        // 1024 descriptors: 256 + 128 kept back, 640 shared 4:1.
        assert_eq!(fit_to_open_files(4096, 1024, 1024), (512, 128));
        let (h, g) = fit_to_open_files(4096, 1024, 20_000);
        assert_eq!((h, g), (4096, 1024));
        let (h, g) = fit_to_open_files(50_000, 50_000, 20_000);
        assert!(h + g <= 20_000 - 2500 && h == g, "{h} {g}");
        let (h, g) = fit_to_open_files(10, 10, 100);
        assert!(h >= 1 && g >= 1);
    }

    #[tokio::test]
    async fn a_client_that_reads_none_of_its_response_is_disconnected() {
        use tokio::io::AsyncReadExt;
        const BIG: usize = 64 << 20;
        let mut settings = Settings::new(&ServerConfig::default(), 1 << 20);
        settings.send_timeout = Duration::from_secs(1);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/big", axum::routing::get(|| async { vec![b'x'; BIG] }));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_http(listener, app, Arc::new(settings), async move {
            let _ = stop_rx.await;
        }));
        let mut sock = TcpStream::connect(addr).await.unwrap();
        sock.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        // Reads nothing while the server's send buffer fills and its clock runs out...
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // ...then finds the connection closed after part of the response.
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 20];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the connection is closed");
        assert!(got < BIG, "the response was cut off ({got} bytes)");
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("drains").unwrap();
    }

    #[tokio::test]
    async fn a_compressed_grpc_request_is_charged_to_the_decode_budget_while_it_is_read() {
        use tower::ServiceExt;
        let settings = Settings::new(&ServerConfig::default(), 1 << 20);
        let budget = DecodeBudget::new(4 << 20, Duration::from_millis(50));
        // The inner service reads nothing and answers at once; it drops the body when it
        // answers, which ends the charge.
        let inner = tower::service_fn(|req: Request<tonic::body::Body>| async move {
            drop(req);
            Ok::<_, std::convert::Infallible>(Response::new(tonic::body::Body::empty()))
        });
        let svc = GrpcConnLayer::new(&settings, budget.clone()).layer(inner);
        let compressed = || Request::builder().header("grpc-encoding", "zstd").body(tonic::body::Body::empty()).unwrap();
        let resp = svc.clone().oneshot(compressed()).await.unwrap();
        assert!(resp.headers().get("grpc-status").is_none(), "served");
        assert_eq!(budget.in_use_bytes(), 0, "released once the request is read");
        // With the budget spent elsewhere: UNAVAILABLE naming it, after a short wait.
        let held = budget.reserve(4 << 20).await.unwrap();
        let resp = svc.clone().oneshot(compressed()).await.unwrap();
        assert_eq!(resp.headers().get("grpc-status").unwrap(), "14");
        let message = resp.headers().get("grpc-message").unwrap().to_str().unwrap().to_string();
        assert!(message.contains("max_decoded_bytes_in_flight"), "{message}");
        // An uncompressed request is not charged.
        let plain = Request::builder().body(tonic::body::Body::empty()).unwrap();
        assert!(svc.oneshot(plain).await.unwrap().headers().get("grpc-status").is_none());
        drop(held);
    }

    #[test]
    fn the_grpc_refusal_is_a_settings_and_a_goaway_frame() {
        let r = refusal(Kind::Grpc, 7);
        assert_eq!(&r[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let len = ((r[9] as usize) << 16) | ((r[10] as usize) << 8) | r[11] as usize;
        assert_eq!(r[12], 0x07, "GOAWAY");
        assert_eq!(r.len(), 18 + len);
        assert_eq!(&r[22..26], &0x0bu32.to_be_bytes());
        assert!(String::from_utf8_lossy(&r[26..]).contains("grpc_max_connections = 7"));
        let h = String::from_utf8(refusal(Kind::Http, 9)).unwrap();
        assert!(h.starts_with("HTTP/1.1 503 ") && h.contains("Retry-After: 1") && h.contains("max_connections = 9"), "{h}");
        let (head, body) = h.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
