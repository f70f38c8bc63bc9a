//! LLM-as-judge: an evaluator that asks a model, through any OpenAI-compatible
//! chat-completions endpoint, to score a run, and the endpoint settings all judges share.
//!
//! One judge evaluation renders the prompt template, then makes `samples` calls (concurrently,
//! keeping the median score). Each call is `POST {base_url}/chat/completions` at temperature 0,
//! bounded by a per-attempt timeout and by the settings' shared concurrency limit, and retried
//! with exponential backoff and jitter on timeouts, connection errors, 408, 429 (honouring
//! `Retry-After`) and 5xx; other 4xx answers fail at once. Token usage is priced per model and
//! summed over samples and attempts, failed ones included. A judge that times out, errs or
//! answers without a usable score yields an error, never a made-up score.
//!
//! TLS: `https://` endpoints are verified against the system's roots (rustls with the ring
//! provider), plus the CA certificates in `ca_cert_file` for private gateways.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::answer::{self, Answer};
use super::config::{ConfigError, Fields};
use super::template::Template;
use super::text::{quote, truncate};
use super::{Cost, Failure, ScoreErrorKind, ScoreInput, Scored};

/// Most samples one evaluation may take (each is a billed call).
pub const MAX_SAMPLES: u64 = 15;
/// Largest response body read from the endpoint.
const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Largest concurrency limit (tokio's semaphore has a far larger bound; this catches typos).
const MAX_CONCURRENCY: usize = 10_000;

/// Judge endpoint settings from the service config.
///
/// All evaluators parsed with one settings value (or clones of it) share one HTTP client and
/// one concurrency limit ([`JudgeRuntime`]), created on first use.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JudgeSettings {
    /// The API's base URL, version included: `http://llm-gateway:8080/v1`. Requests go to
    /// `{base_url}/chat/completions`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer ...`; never logged, serialized or put in error messages.
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
    /// The model judges use unless their config names one.
    pub model: String,
    /// Per attempt: connecting, sending, and reading the whole answer.
    pub timeout_ms: u64,
    /// Retries after the first attempt (timeouts, connection errors, 408, 429, 5xx).
    pub max_retries: u32,
    /// Backoff before retry `n` (from 0) is `backoff_base_ms * 2^n`, capped at `backoff_max_ms`,
    /// with jitter in its upper half. A `Retry-After` longer than `backoff_max_ms` ends retrying.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Judge calls in flight at once, across every evaluator sharing these settings.
    pub max_concurrency: usize,
    /// Prices for models not in `model_prices`.
    pub prices: Prices,
    pub model_prices: BTreeMap<String, Prices>,
    /// Sent as `max_tokens` when set; bounds what a rambling judge costs.
    pub max_tokens: Option<u32>,
    /// PEM file of extra CA certificates to trust for an `https://` endpoint (a private
    /// gateway); the system's roots are trusted either way.
    pub ca_cert_file: Option<std::path::PathBuf>,
    /// Runtime state, not config: leave it to `Default` (or `..Default::default()`).
    #[serde(skip)]
    pub runtime: JudgeRuntime,
}

/// The HTTP client and concurrency limit shared by the evaluators parsed with one
/// [`JudgeSettings`] value and its clones. A settings value built from another with a different
/// `max_concurrency` (`JudgeSettings { max_concurrency: 4, ..other }`) gets a new limit for the
/// evaluators parsed from then on.
#[derive(Clone, Default)]
pub struct JudgeRuntime(Arc<Mutex<Option<Arc<Shared>>>>);

/// Runtime state is not configuration: two settings values are equal whatever clients they
/// have created.
impl PartialEq for JudgeRuntime {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for JudgeRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JudgeRuntime")
    }
}

/// USD per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prices {
    pub prompt_usd_per_mtok: f64,
    pub completion_usd_per_mtok: f64,
}

/// The CA certificates of a PEM file.
fn extra_roots(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

impl Default for JudgeSettings {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            api_key: None,
            model: String::new(),
            timeout_ms: 30_000,
            max_retries: 2,
            backoff_base_ms: 500,
            backoff_max_ms: 20_000,
            max_concurrency: 8,
            prices: Prices::default(),
            model_prices: BTreeMap::new(),
            max_tokens: None,
            ca_cert_file: None,
            runtime: JudgeRuntime::default(),
        }
    }
}

impl fmt::Debug for JudgeSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JudgeSettings")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("model", &self.model)
            .field("timeout_ms", &self.timeout_ms)
            .field("max_retries", &self.max_retries)
            .field("backoff_base_ms", &self.backoff_base_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .field("max_concurrency", &self.max_concurrency)
            .field("prices", &self.prices)
            .field("model_prices", &self.model_prices)
            .field("max_tokens", &self.max_tokens)
            .field("ca_cert_file", &self.ca_cert_file)
            .finish()
    }
}

/// What the evaluators sharing one settings value share.
struct Shared {
    client: reqwest::Client,
    limit: Semaphore,
    /// The limit's size, to notice settings that changed it.
    permits: usize,
}

impl JudgeSettings {
    /// Checks the settings; errors name the field as `judge.<field>`. Parsing an `llm_judge`
    /// evaluator calls this, so services without judges need no endpoint.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let field = |name: &str, msg: String| ConfigError::field(format!("judge.{name}"), msg);
        if self.base_url.trim().is_empty() {
            return Err(field("base_url", "no judge endpoint configured".into()));
        }
        let url = reqwest::Url::parse(&self.base_url).map_err(|e| field("base_url", format!("not a URL: {e}")))?;
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(field("base_url", format!("unsupported scheme {other:?}"))),
        }
        if let Some(path) = &self.ca_cert_file {
            extra_roots(path).map_err(|e| field("ca_cert_file", e))?;
        }
        if self.timeout_ms == 0 {
            return Err(field("timeout_ms", "must be positive".into()));
        }
        if self.max_concurrency == 0 || self.max_concurrency > MAX_CONCURRENCY {
            return Err(field("max_concurrency", format!("must be 1 to {MAX_CONCURRENCY}")));
        }
        if self.backoff_max_ms < self.backoff_base_ms {
            return Err(field("backoff_max_ms", "must be at least backoff_base_ms".into()));
        }
        for (name, p) in std::iter::once(("prices".to_owned(), &self.prices))
            .chain(self.model_prices.iter().map(|(m, p)| (format!("model_prices.{m}"), p)))
        {
            if !(p.prompt_usd_per_mtok.is_finite()
                && p.prompt_usd_per_mtok >= 0.0
                && p.completion_usd_per_mtok.is_finite()
                && p.completion_usd_per_mtok >= 0.0)
            {
                return Err(field(&name, "prices must be non-negative numbers".into()));
            }
        }
        Ok(())
    }

    fn shared(&self) -> Result<Arc<Shared>, ConfigError> {
        let mut slot = self.runtime.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slot.as_ref().filter(|s| s.permits == self.max_concurrency) {
            return Ok(s.clone());
        }
        crate::install_crypto_provider();
        let mut builder = reqwest::Client::builder().pool_max_idle_per_host(self.max_concurrency).tcp_nodelay(true);
        if let Some(path) = &self.ca_cert_file {
            for cert in extra_roots(path).map_err(|e| ConfigError::field("judge.ca_cert_file", e))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| ConfigError::field("judge", format!("cannot build the HTTP client: {e}")))?;
        let shared = Arc::new(Shared { client, limit: Semaphore::new(self.max_concurrency), permits: self.max_concurrency });
        *slot = Some(shared.clone());
        Ok(shared)
    }

    /// Judge calls that could start now without waiting for the concurrency limit.
    pub fn available_permits(&self) -> usize {
        let slot = self.runtime.0.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().map_or(self.max_concurrency, |s| s.limit.available_permits())
    }

    fn prices_for(&self, model: &str) -> Prices {
        self.model_prices.get(model).copied().unwrap_or(self.prices)
    }
}

/// A parsed `llm_judge` evaluator.
pub(crate) struct LlmJudge {
    template: Template,
    system: String,
    model: String,
    samples: u32,
    min: f64,
    max: f64,
    normalize: bool,
    prices: Prices,
    url: String,
    api_key: Option<String>,
    timeout: Duration,
    max_retries: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    max_tokens: Option<u32>,
    shared: Arc<Shared>,
}

fn default_system(min: f64, max: f64) -> String {
    format!(
        "You are an impartial evaluator of an AI system's output. Judge only what the user asks you to judge. \
         Reply with a single JSON object and nothing else: {{\"score\": <a number from {} to {}>, \"reasoning\": \"<one or two sentences>\"}}",
        num(min),
        num(max)
    )
}

impl LlmJudge {
    pub fn parse(f: &mut Fields<'_>, settings: &JudgeSettings) -> Result<Self, ConfigError> {
        let template = Template::parse(f.req_str("prompt")?).map_err(|e| ConfigError::field("prompt", e))?;
        let min = f.opt_f64("min")?.unwrap_or(0.0);
        let max = f.opt_f64("max")?.unwrap_or(1.0);
        if min >= max {
            return Err(ConfigError::field("max", format!("must be greater than `min` ({})", num(min))));
        }
        let lim = sextant_core::feedback::MAX_SCORE_ABS;
        if min.abs() > lim || max.abs() > lim {
            return Err(ConfigError::field(if min.abs() > lim { "min" } else { "max" }, format!("scores are within ±{lim}")));
        }
        let normalize = f.opt_bool("normalize", true)?;
        let system = f.opt_str("system")?.map_or_else(|| default_system(min, max), str::to_owned);
        let samples = f.opt_u64("samples")?.unwrap_or(1);
        if !(1..=MAX_SAMPLES).contains(&samples) {
            return Err(ConfigError::field("samples", format!("must be 1 to {MAX_SAMPLES}")));
        }
        let model = match f.opt_str("model")? {
            Some("") => return Err(ConfigError::field("model", "must not be empty")),
            Some(m) => m.to_owned(),
            None if settings.model.is_empty() => {
                return Err(ConfigError::field("model", "required: no default judge model in the service config (judge.model)"))
            }
            None => settings.model.clone(),
        };
        let timeout_ms = f.opt_u64("timeout_ms")?.unwrap_or(settings.timeout_ms);
        if timeout_ms == 0 {
            return Err(ConfigError::field("timeout_ms", "must be positive"));
        }
        let max_retries = f.opt_u64("max_retries")?.map_or(Ok(settings.max_retries), |r| {
            u32::try_from(r).ok().filter(|r| *r <= 10).ok_or_else(|| ConfigError::field("max_retries", "must be 0 to 10"))
        })?;
        settings.validate()?;
        let base = settings.base_url.trim_end_matches('/');
        let url = if base.ends_with("/chat/completions") { base.to_owned() } else { format!("{base}/chat/completions") };
        Ok(Self {
            template,
            system,
            prices: settings.prices_for(&model),
            model,
            samples: samples as u32,
            min,
            max,
            normalize,
            url,
            api_key: settings.api_key.clone().filter(|k| !k.is_empty()),
            timeout: Duration::from_millis(timeout_ms),
            max_retries,
            backoff_base: Duration::from_millis(settings.backoff_base_ms),
            backoff_max: Duration::from_millis(settings.backoff_max_ms),
            max_tokens: settings.max_tokens,
            shared: settings.shared()?,
        })
    }

    pub fn needs_reference(&self) -> bool {
        self.template.uses_reference()
    }

    /// Scores one run; the cost is returned whether or not it scored.
    pub async fn score(&self, input: &ScoreInput) -> (Result<Scored, Failure>, Cost) {
        let prompt = match self.template.render(&input.inputs, &input.outputs, input.reference.as_ref()) {
            Ok(p) => p,
            Err(e) => return (Err(Failure::input(e)), Cost::default()),
        };
        let mut body = json!({
            "model": self.model,
            "messages": [{"role": "system", "content": self.system}, {"role": "user", "content": prompt}],
            "temperature": 0,
        });
        if let Some(m) = self.max_tokens {
            body["max_tokens"] = m.into();
        }
        // Serialized once: samples and retries send the same bytes.
        let body = Bytes::from(serde_json::to_vec(&body).expect("JSON values serialize"));
        let results = join_all((0..self.samples).map(|_| self.sample(body.clone()))).await;
        let mut cost = Cost::default();
        let mut answers = Vec::with_capacity(results.len());
        let mut failure = None;
        for (i, (r, c)) in results.into_iter().enumerate() {
            cost.add(&c);
            match r {
                Ok(a) => answers.push(a),
                Err(mut f) if failure.is_none() => {
                    if self.samples > 1 {
                        f.message = format!("sample {} of {}: {}", i + 1, self.samples, f.message);
                    }
                    failure = Some(f);
                }
                Err(_) => {}
            }
        }
        // All samples must score: a median over the survivors would hide a failing judge.
        match failure {
            Some(f) => (Err(f), cost),
            None => (Ok(self.combine(answers)), cost),
        }
    }

    fn combine(&self, mut answers: Vec<Answer>) -> Scored {
        answers.sort_by(|a, b| a.score.total_cmp(&b.score));
        let n = answers.len();
        let median = if n % 2 == 1 { answers[n / 2].score } else { (answers[n / 2 - 1].score + answers[n / 2].score) / 2.0 };
        let score = if self.normalize { (median - self.min) / (self.max - self.min) } else { median };
        let scale = if self.min == 0.0 && self.max == 1.0 { String::new() } else { format!(" on {}..{}", num(self.min), num(self.max)) };
        let normalized = if self.normalize && !scale.is_empty() { format!(", normalized to {}", num(score)) } else { String::new() };
        let how = if n == 1 {
            format!("judge score {}{scale}{normalized}", answers[0].read)
        } else {
            let all: Vec<String> = answers.iter().map(|a| num(a.score)).collect();
            format!("median of {n} judge samples ({}){scale}: {}{normalized}", all.join(", "), num(median))
        };
        // The explanation of the sample at (or just above) the median.
        let reasoning = answers[n / 2].reasoning.as_deref().unwrap_or("the judge gave no reasoning");
        Scored { score, comment: format!("{} [{how}]", reasoning.trim()) }
    }

    /// One sample: a call with retries, and its answer read as a score.
    async fn sample(&self, body: Bytes) -> (Result<Answer, Failure>, Cost) {
        let (content, cost) = self.call(body).await;
        let r = content
            .and_then(|c| answer::parse(&c, self.min, self.max).map_err(|message| Failure { kind: ScoreErrorKind::Answer, message }));
        (r, cost)
    }

    /// One call with retries: the answer's text, or why there is none.
    async fn call(&self, body: Bytes) -> (Result<String, Failure>, Cost) {
        let mut cost = Cost::default();
        for attempt in 0.. {
            let started = Instant::now();
            let outcome = {
                // The permit is held for the attempt only, not across backoff sleeps.
                let _permit = self.shared.limit.acquire().await.expect("the judge semaphore is never closed");
                tokio::time::timeout(self.timeout, self.attempt(body.clone())).await
            };
            metrics::histogram!("sextant_evaluator_judge_call_seconds").record(started.elapsed().as_secs_f64());
            cost.calls += 1;
            let failed = match outcome {
                Err(_) => Attempt::retry(ScoreErrorKind::Timeout, format!("timed out after {} ms", self.timeout.as_millis()), None),
                Ok(Ok(reply)) => {
                    self.charge(&mut cost, reply.usage);
                    metrics::counter!("sextant_evaluator_judge_calls_total", "outcome" => "ok").increment(1);
                    return (reply.content, cost);
                }
                Ok(Err(failed)) => {
                    self.charge(&mut cost, failed.usage);
                    failed
                }
            };
            let last = !failed.retry || attempt >= self.max_retries;
            metrics::counter!("sextant_evaluator_judge_calls_total", "outcome" => if last { "failed" } else { "retried" }).increment(1);
            let message = self.redact(failed.message);
            if last {
                let tries = if attempt == 0 { "1 attempt".to_owned() } else { format!("{} attempts", attempt + 1) };
                return (Err(Failure { kind: failed.kind, message: format!("judge call failed after {tries}: {message}") }), cost);
            }
            let delay = match failed.retry_after {
                Some(after) if after > self.backoff_max => {
                    let message = format!(
                        "judge call failed: {message}; its Retry-After of {} s exceeds backoff_max_ms ({} ms)",
                        after.as_secs_f64(),
                        self.backoff_max.as_millis()
                    );
                    return (Err(Failure { kind: failed.kind, message }), cost);
                }
                Some(after) => after,
                None => self.backoff(attempt),
            };
            tracing::debug!(attempt, delay_ms = delay.as_millis() as u64, error = %message, "judge call failed, retrying");
            tokio::time::sleep(delay).await;
        }
        unreachable!("the retry loop returns")
    }

    /// Exponential backoff with jitter in the upper half, so retries from many evaluations that
    /// failed together (an endpoint outage) spread out instead of arriving together.
    fn backoff(&self, attempt: u32) -> Duration {
        let full = self.backoff_base.saturating_mul(2u32.saturating_pow(attempt.min(20))).min(self.backoff_max);
        full / 2 + full.mul_f64(fastrand::f64() / 2.0)
    }

    fn charge(&self, cost: &mut Cost, usage: Option<Usage>) {
        let Some(u) = usage else { return };
        cost.prompt_tokens += u.prompt_tokens;
        cost.completion_tokens += u.completion_tokens;
        cost.usd += (u.prompt_tokens as f64 * self.prices.prompt_usd_per_mtok
            + u.completion_tokens as f64 * self.prices.completion_usd_per_mtok)
            / 1e6;
        metrics::counter!("sextant_evaluator_judge_tokens_total", "kind" => "prompt").increment(u.prompt_tokens);
        metrics::counter!("sextant_evaluator_judge_tokens_total", "kind" => "completion").increment(u.completion_tokens);
    }

    /// The key must never reach an error message, even if an endpoint echoes it back.
    fn redact(&self, message: String) -> String {
        match &self.api_key {
            Some(k) if k.len() >= 4 && message.contains(k.as_str()) => message.replace(k.as_str(), "[redacted]"),
            _ => message,
        }
    }

    /// One HTTP exchange, without the timeout (the caller's).
    async fn attempt(&self, body: Bytes) -> Result<Reply, Attempt> {
        let mut req = self.shared.client.post(&self.url).header(CONTENT_TYPE, "application/json").body(body);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let mut resp = req.send().await.map_err(|e| Attempt::retry(ScoreErrorKind::Endpoint, error_chain(&e), None))?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let mut raw = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) if raw.len() + chunk.len() > MAX_RESPONSE_BYTES => {
                    return Err(Attempt::fail(
                        ScoreErrorKind::Endpoint,
                        format!("the endpoint's answer is larger than {MAX_RESPONSE_BYTES} bytes"),
                    ));
                }
                Ok(Some(chunk)) => raw.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return Err(Attempt::retry(ScoreErrorKind::Endpoint, format!("reading the answer: {}", error_chain(&e)), None)),
            }
        }
        if !status.is_success() {
            let snippet = String::from_utf8_lossy(&raw);
            let message = format!("the endpoint answered {status}: {}", quote(&truncate(snippet.trim(), 300)));
            let retryable = status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT || status.is_server_error();
            return Err(if retryable {
                Attempt::retry(ScoreErrorKind::Endpoint, message, retry_after)
            } else {
                Attempt::fail(ScoreErrorKind::Endpoint, message)
            });
        }
        let parsed: ChatResponse = serde_json::from_slice(&raw).map_err(|e| {
            let snippet = String::from_utf8_lossy(&raw);
            Attempt::fail(
                ScoreErrorKind::Endpoint,
                format!("not a chat-completions response ({e}): {}", quote(&truncate(snippet.trim(), 200))),
            )
        })?;
        let content = parsed.choices.into_iter().next().and_then(|c| {
            let refusal = c.message.refusal;
            match c.message.content {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(Ok(s)),
                // Some servers send content as parts: [{"type": "text", "text": "..."}].
                Some(Value::Array(parts)) => {
                    let s: String = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
                    (!s.trim().is_empty()).then_some(Ok(s))
                }
                _ => refusal.map(|r| Err(format!("the judge refused: {}", quote(&r)))),
            }
        });
        let content = match content {
            Some(Ok(s)) => Ok(s),
            Some(Err(m)) => Err(Failure { kind: ScoreErrorKind::Answer, message: m }),
            None => Err(Failure { kind: ScoreErrorKind::Answer, message: "the judge's answer is empty".into() }),
        };
        Ok(Reply { content, usage: parsed.usage })
    }
}

/// A completed exchange: its text (or why there is none), and what it cost.
struct Reply {
    content: Result<String, Failure>,
    usage: Option<Usage>,
}

/// A failed attempt.
struct Attempt {
    kind: ScoreErrorKind,
    message: String,
    retry: bool,
    retry_after: Option<Duration>,
    usage: Option<Usage>,
}

impl Attempt {
    fn retry(kind: ScoreErrorKind, message: String, retry_after: Option<Duration>) -> Self {
        Self { kind, message, retry: true, retry_after, usage: None }
    }

    fn fail(kind: ScoreErrorKind, message: String) -> Self {
        Self { kind, message, retry: false, retry_after: None, usage: None }
    }
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Clone, Copy, Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// `Retry-After` in seconds (the HTTP-date form is ignored: backoff applies instead).
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let s = h.get(RETRY_AFTER)?.to_str().ok()?.trim();
    s.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0).map(Duration::from_secs_f64)
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// A number for comments: at most 4 decimals, no trailing zeros.
fn num(x: f64) -> String {
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_validation_names_the_field() {
        let s = JudgeSettings::default();
        assert_eq!(s.validate().unwrap_err().field, "judge.base_url");
        let s = JudgeSettings { base_url: "https://api.openai.com/v1".into(), ..Default::default() };
        assert!(s.validate().is_ok(), "https endpoints are supported");
        let s = JudgeSettings { base_url: "ftp://x/v1".into(), ..Default::default() };
        assert!(s.validate().unwrap_err().message.contains("unsupported scheme"));
        let s =
            JudgeSettings { base_url: "https://gateway/v1".into(), ca_cert_file: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        assert!(s.validate().unwrap_err().to_string().contains("ca_cert_file"));
        let s = JudgeSettings { base_url: "http://localhost:1/v1".into(), max_concurrency: 0, ..Default::default() };
        assert_eq!(s.validate().unwrap_err().field, "judge.max_concurrency");
        let s = JudgeSettings { base_url: "http://localhost:1/v1".into(), ..Default::default() };
        assert!(s.validate().is_ok());
    }

    #[test]
    fn settings_deserialize_with_defaults_and_never_serialize_the_key() {
        let s: JudgeSettings =
            serde_json::from_value(json!({"base_url": "http://x/v1", "api_key": "sk-secret", "max_concurrency": 4})).unwrap();
        assert_eq!((s.max_concurrency, s.timeout_ms, s.api_key.as_deref()), (4, 30_000, Some("sk-secret")));
        assert!(!serde_json::to_string(&s).unwrap().contains("sk-secret"));
        assert!(!format!("{s:?}").contains("sk-secret"));
        assert!(serde_json::from_value::<JudgeSettings>(json!({"base_ulr": "x"})).is_err());
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn numbers_for_comments() {
        assert_eq!((num(0.8), num(1.0), num(7.0 / 9.0), num(-0.00001)), ("0.8".into(), "1".into(), "0.7778".into(), "0".into()));
    }
}
