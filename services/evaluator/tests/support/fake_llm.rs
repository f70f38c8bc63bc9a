//! A FAKE (mock) OpenAI-compatible chat-completions server, for the judge tests and the
//! benchmark. It is not a model: it answers `POST /v1/chat/completions` on 127.0.0.1 with
//! replies the test scripts (content, HTTP status, delay, `Retry-After`, token usage), records
//! what it was sent, and counts the most requests it had in flight at once.
//!
//! Included with `#[path]` by `tests/judge.rs` and `examples/bench_scorers.rs`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// One scripted reply.
#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    /// For 200: the assistant message's content. Otherwise: the raw body.
    text: String,
    /// Send `text` as the whole body even for 200 (malformed responses).
    raw: bool,
    delay: Duration,
    retry_after: Option<String>,
    usage: Option<(u64, u64)>,
}

impl Reply {
    /// A 200 chat-completions response whose message content is `text`, with usage 10 + 5.
    pub fn content(text: &str) -> Self {
        Self { status: 200, text: text.into(), raw: false, delay: Duration::ZERO, retry_after: None, usage: Some((10, 5)) }
    }

    /// An answer with this status and body.
    pub fn status(status: u16, body: &str) -> Self {
        Self { status, text: body.into(), raw: true, delay: Duration::ZERO, retry_after: None, usage: None }
    }

    /// A 200 whose body is `body` verbatim (not a chat-completions response).
    pub fn raw_ok(body: &str) -> Self {
        Self { raw: true, ..Self::content(body) }
    }

    pub fn delay_ms(mut self, ms: u64) -> Self {
        self.delay = Duration::from_millis(ms);
        self
    }

    pub fn retry_after(mut self, v: &str) -> Self {
        self.retry_after = Some(v.into());
        self
    }

    pub fn usage(mut self, prompt: u64, completion: u64) -> Self {
        self.usage = Some((prompt, completion));
        self
    }
}

/// A request as the fake received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub authorization: Option<String>,
    pub body: Value,
}

struct Shared {
    script: Mutex<VecDeque<Reply>>,
    fallback: Mutex<Reply>,
    requests: Mutex<Vec<Recorded>>,
    count: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// The running fake; stops when dropped.
pub struct FakeLlm {
    /// What to configure as the judge's `base_url`.
    pub base_url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// Decrements the in-flight count however the request ends (the client may hang up).
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FakeLlm {
    /// Starts the fake on a free port. Unscripted requests get `fallback` (by default a 500
    /// saying nothing was scripted, so a test that makes more calls than it expects fails).
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            script: Mutex::new(VecDeque::new()),
            fallback: Mutex::new(Reply::status(500, "fake: no scripted reply")),
            requests: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let app = Router::new().route("/v1/chat/completions", post(complete)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base_url: format!("http://{addr}/v1"), shared, task }
    }

    /// Queues a reply for the next unanswered request.
    pub fn then(&self, r: Reply) -> &Self {
        self.shared.script.lock().unwrap().push_back(r);
        self
    }

    /// The reply once the script runs out.
    pub fn fallback(&self, r: Reply) {
        *self.shared.fallback.lock().unwrap() = r;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn complete(State(s): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(s.clone());
    s.count.fetch_add(1, Ordering::SeqCst);
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "fake: the request body is not JSON").into_response();
    };
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    s.requests.lock().unwrap().push(Recorded { authorization, body: body.clone() });
    let reply = s.script.lock().unwrap().pop_front().unwrap_or_else(|| s.fallback.lock().unwrap().clone());
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let status = StatusCode::from_u16(reply.status).unwrap();
    let text = if reply.raw {
        reply.text
    } else {
        let mut r = json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": body.get("model").cloned().unwrap_or(Value::Null),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text}, "finish_reason": "stop"}],
        });
        if let Some((p, c)) = reply.usage {
            r["usage"] = json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c});
        }
        r.to_string()
    };
    let mut resp = (status, [("content-type", "application/json")], text).into_response();
    if let Some(ra) = reply.retry_after {
        resp.headers_mut().insert("retry-after", ra.parse().unwrap());
    }
    resp
}
