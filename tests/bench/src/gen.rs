//! Synthetic trace generator and request-body builders.
//!
//! Traces look like what the LangSmith SDK sends for a small RAG/agent app: a root `chain` with
//! `llm`, `tool` and `retriever` children, some under a nested `chain` (depth 2-3), UUIDv7 ids
//! whose timestamp matches `start_time`, `dotted_order` per §3.2 of the wire reference, tags
//! inherited from the parent, `extra.metadata` with user keys and `usage_metadata` on llm runs.
//!
//! Bodies are generated ahead of the timed phase into a [`Pool`] of [`Template`]s. When a run
//! needs more requests than the pool holds, a template is replayed with every run id remapped
//! (see [`remap_id`]): the remap is a pure function of (id, cycle), so parent/trace references
//! stay consistent even for traces that span two requests.

use std::collections::VecDeque;
use std::io::Write;

use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::util::{dotted_stamp, iso_utc};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `POST /runs/multipart`, uncompressed
    #[value(name = "multipart")]
    Multipart,
    /// `POST /runs/multipart` with `Content-Encoding: zstd`
    #[value(name = "multipart-zstd")]
    MultipartZstd,
    /// `POST /runs/batch`, JSON `{"post":[...],"patch":[...]}`
    #[value(name = "batch")]
    Batch,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Multipart => "multipart",
            Mode::MultipartZstd => "multipart-zstd",
            Mode::Batch => "batch",
        }
    }
    pub fn path(self) -> &'static str {
        match self {
            Mode::Batch => "/runs/batch",
            _ => "/runs/multipart",
        }
    }
}

#[derive(Clone, Debug)]
pub struct GenConfig {
    pub project: String,
    pub trace_size: usize,
    pub run_bytes: usize,
    pub runs_per_request: usize,
    /// Fraction of runs sent as separate post + patch parts instead of one merged post.
    pub split_fraction: f64,
    /// Fraction of non-chain child runs that carry an `error`.
    pub error_rate: f64,
    pub seed: u64,
    /// Unix µs of the first trace's start.
    pub start_us: i64,
    pub zstd_level: i32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Chain,
    Llm,
    Tool,
    Retriever,
}

impl Kind {
    fn run_type(self) -> &'static str {
        match self {
            Kind::Chain => "chain",
            Kind::Llm => "llm",
            Kind::Tool => "tool",
            Kind::Retriever => "retriever",
        }
    }
}

/// One generated run with all its fields.
#[derive(Clone, Debug)]
pub struct Run {
    pub id: Uuid,
    pub trace_id: Uuid,
    pub parent_run_id: Option<Uuid>,
    pub dotted_order: String,
    pub name: &'static str,
    pub run_type: &'static str,
    pub start_time: String,
    pub end_time: String,
    pub tags: Vec<String>,
    pub inputs: Value,
    pub outputs: Value,
    pub events: Value,
    pub extra: Value,
    pub error: Option<String>,
    pub serialized: Option<Value>,
    /// Sent as `post` (no end_time, empty outputs) followed by `patch`.
    pub split: bool,
}

impl Run {
    /// Base object of a `post` op (the run minus the out-of-band fields).
    pub fn post_base(&self, project: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("start_time".into(), json!(self.start_time));
        if !self.split {
            m.insert("end_time".into(), json!(self.end_time));
        }
        m.insert("tags".into(), json!(self.tags));
        m.insert("dotted_order".into(), json!(self.dotted_order));
        m.insert("trace_id".into(), json!(self.trace_id));
        if let Some(p) = self.parent_run_id {
            m.insert("parent_run_id".into(), json!(p));
        }
        m.insert("session_name".into(), json!(project));
        m.insert("name".into(), json!(self.name));
        m.insert("run_type".into(), json!(self.run_type));
        m
    }

    /// Base object of a `patch` op (§3.5: null means unchanged).
    pub fn patch_base(&self, project: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("name".into(), json!(self.name));
        m.insert("run_type".into(), json!(self.run_type));
        m.insert("trace_id".into(), json!(self.trace_id));
        m.insert("parent_run_id".into(), json!(self.parent_run_id));
        m.insert("dotted_order".into(), json!(self.dotted_order));
        m.insert("tags".into(), json!(self.tags));
        m.insert("session_id".into(), Value::Null);
        m.insert("session_name".into(), json!(project));
        m.insert("start_time".into(), json!(self.start_time));
        m.insert("end_time".into(), json!(self.end_time));
        m.insert("reference_example_id".into(), Value::Null);
        m
    }

    /// Out-of-band fields of the post op, in part order.
    pub fn post_fields(&self) -> Vec<(&'static str, Value)> {
        let mut v = vec![("inputs", self.inputs.clone())];
        if self.split {
            v.push(("outputs", json!({})));
            v.push(("events", json!([])));
            v.push(("extra", self.extra.clone()));
        } else {
            v.push(("outputs", self.outputs.clone()));
            v.push(("events", self.events.clone()));
            v.push(("extra", self.extra.clone()));
            if let Some(e) = &self.error {
                v.push(("error", json!(e)));
            }
        }
        if let Some(s) = &self.serialized {
            v.push(("serialized", s.clone()));
        }
        v
    }

    /// Out-of-band fields of the patch op (split runs only).
    pub fn patch_fields(&self) -> Vec<(&'static str, Value)> {
        let mut v = vec![("outputs", self.outputs.clone()), ("events", self.events.clone()), ("extra", self.extra.clone())];
        if let Some(e) = &self.error {
            v.push(("error", json!(e)));
        }
        v
    }

    /// The run as one JSON object, as `/runs/batch` carries it (merged post).
    pub fn full_json(&self, project: &str) -> Value {
        let mut m = self.post_base(project);
        for (k, v) in self.post_fields() {
            m.insert(k.into(), v);
        }
        Value::Object(m)
    }

    /// The finished run as one object (end_time and outputs included), whether split or not.
    pub fn merged_json(&self, project: &str) -> Value {
        if !self.split {
            return self.full_json(project);
        }
        let mut m = self.post_base(project);
        m.insert("end_time".into(), json!(self.end_time));
        let merged = Run { split: false, ..self.clone() };
        for (k, v) in merged.post_fields() {
            m.insert(k.into(), v);
        }
        Value::Object(m)
    }
}

// ---------------------------------------------------------------------------------------------
// text

const WORDS: &[&str] = &[
    "the",
    "a",
    "model",
    "customer",
    "order",
    "refund",
    "policy",
    "account",
    "invoice",
    "shipping",
    "delivery",
    "request",
    "support",
    "agent",
    "answer",
    "question",
    "context",
    "document",
    "search",
    "result",
    "price",
    "product",
    "subscription",
    "plan",
    "upgrade",
    "billing",
    "error",
    "timeout",
    "retry",
    "database",
    "query",
    "user",
    "session",
    "token",
    "limit",
    "please",
    "thanks",
    "could",
    "would",
    "should",
    "will",
    "can",
    "not",
    "and",
    "or",
    "but",
    "with",
    "without",
    "from",
    "into",
    "about",
    "for",
    "to",
    "of",
    "in",
    "on",
    "at",
    "by",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "has",
    "have",
    "had",
    "this",
    "that",
    "these",
    "those",
    "it",
    "we",
    "you",
    "they",
    "our",
    "your",
    "their",
    "days",
    "weeks",
    "month",
    "year",
    "today",
    "yesterday",
    "tomorrow",
    "within",
    "after",
    "before",
    "because",
    "therefore",
    "however",
    "according",
    "summary",
    "details",
    "section",
    "paragraph",
    "table",
    "figure",
    "report",
    "analysis",
    "revenue",
    "quarter",
    "growth",
    "latency",
    "throughput",
    "cluster",
    "region",
    "europe",
    "america",
    "asia",
    "warehouse",
    "inventory",
    "stock",
    "available",
    "unavailable",
    "confirmed",
    "pending",
    "cancelled",
    "completed",
    "failed",
    "successful",
    "email",
    "phone",
    "address",
    "password",
    "reset",
    "login",
    "two",
    "three",
    "five",
    "ten",
    "twenty",
    "hundred",
    "percent",
    "discount",
    "coupon",
    "code",
    "express",
    "standard",
    "international",
    "domestic",
    "tracking",
    "number",
    "package",
    "carrier",
    "label",
    "return",
    "exchange",
    "warranty",
    "repair",
    "replacement",
    "battery",
    "screen",
    "laptop",
    "headphones",
    "charger",
    "cable",
    "manual",
    "guide",
    "step",
    "first",
    "then",
    "finally",
    "next",
    "also",
    "only",
    "all",
    "some",
    "many",
    "few",
    "more",
    "less",
    "most",
    "best",
    "better",
    "good",
    "bad",
    "new",
    "old",
    "large",
    "small",
    "fast",
    "slow",
    "important",
    "relevant",
    "helpful",
    "accurate",
    "clear",
];

fn push_text(rng: &mut fastrand::Rng, out: &mut String, len: usize) {
    let target = out.len() + len;
    let mut sentence_start = true;
    let mut words_in_sentence = 0;
    while out.len() < target {
        let w = WORDS[rng.usize(..WORDS.len())];
        if sentence_start {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                out.push(f.to_ascii_uppercase());
                out.push_str(c.as_str());
            }
            sentence_start = false;
        } else {
            out.push_str(w);
        }
        words_in_sentence += 1;
        if words_in_sentence > 6 && rng.u8(..6) == 0 {
            out.push_str(if rng.u8(..8) == 0 { "? " } else { ". " });
            sentence_start = true;
            words_in_sentence = 0;
        } else if rng.u8(..12) == 0 {
            out.push_str(", ");
        } else {
            out.push(' ');
        }
    }
    out.truncate(target);
}

fn text(rng: &mut fastrand::Rng, len: usize) -> String {
    let mut s = String::with_capacity(len + 16);
    push_text(rng, &mut s, len);
    s
}

// ---------------------------------------------------------------------------------------------
// traces

const ROOT_NAMES: &[&str] = &["support_agent", "rag_pipeline", "AgentExecutor", "summarize_ticket"];
const SUBCHAIN_NAMES: &[&str] = &["agent_step", "RunnableSequence", "plan_and_execute"];
const TOOL_NAMES: &[&str] = &["web_search", "calculator", "sql_query", "lookup_order"];
const RETRIEVER_NAMES: &[&str] = &["VectorStoreRetriever", "BM25Retriever"];
const ENVS: &[(&str, u32)] = &[("production", 60), ("staging", 30), ("dev", 10)];
const MODELS: &[(&str, &str)] = &[("openai", "gpt-4o-mini"), ("openai", "gpt-4.1"), ("anthropic", "claude-sonnet-4-5")];
const ERRORS: &[&str] = &[
    "TimeoutError('upstream request timed out after 30s')\n\nTraceback (most recent call last):\n  File \"/app/agent/tools.py\", line 142, in web_search\n    resp = client.get(url, timeout=30)\n  File \"/usr/lib/python3.12/site-packages/httpx/_client.py\", line 1066, in get\n    return self.request(\"GET\", url, **kwargs)\nTimeoutError: upstream request timed out after 30s",
    "RateLimitError('Error code: 429 - Rate limit reached for requests')\n\nTraceback (most recent call last):\n  File \"/app/agent/llm.py\", line 57, in call_model\n    return client.chat.completions.create(**params)\nopenai.RateLimitError: Error code: 429",
    "ValueError('could not parse tool arguments: Expecting value: line 1 column 1 (char 0)')\n\nTraceback (most recent call last):\n  File \"/app/agent/parse.py\", line 23, in parse_args\n    return json.loads(raw)\nValueError: could not parse tool arguments",
];

struct Node {
    kind: Kind,
    parent: Option<usize>,
    depth: u8,
    children: Vec<usize>,
    name: &'static str,
    start: i64,
    end: i64,
}

fn pick<T: Copy>(rng: &mut fastrand::Rng, xs: &[T]) -> T {
    xs[rng.usize(..xs.len())]
}

/// Log-uniform duration in µs between lo and hi seconds.
fn log_uniform_us(rng: &mut fastrand::Rng, lo: f64, hi: f64) -> i64 {
    let x = lo.ln() + rng.f64() * (hi.ln() - lo.ln());
    (x.exp() * 1e6) as i64
}

fn layout(nodes: &mut [Node], i: usize, start: i64, rng: &mut fastrand::Rng) -> i64 {
    nodes[i].start = start;
    let end = if nodes[i].children.is_empty() {
        start
            + match nodes[i].kind {
                Kind::Llm => log_uniform_us(rng, 0.25, 6.0),
                Kind::Tool => log_uniform_us(rng, 0.01, 1.5),
                Kind::Retriever => log_uniform_us(rng, 0.03, 0.6),
                Kind::Chain => log_uniform_us(rng, 0.001, 0.05),
            }
    } else {
        let mut cursor = start + rng.i64(100..2_000);
        let children = nodes[i].children.clone();
        for c in children {
            cursor = layout(nodes, c, cursor, rng) + rng.i64(50..1_500);
        }
        cursor + rng.i64(100..3_000)
    };
    nodes[i].end = end;
    end
}

fn weighted<'a>(rng: &mut fastrand::Rng, xs: &'a [(&'a str, u32)]) -> &'a str {
    let total: u32 = xs.iter().map(|x| x.1).sum();
    let mut r = rng.u32(..total);
    for (v, w) in xs {
        if r < *w {
            return v;
        }
        r -= w;
    }
    xs[0].0
}

struct ContentSpec {
    kind: Kind,
    is_root: bool,
    name: &'static str,
    model: &'static str,
    is_error: bool,
    in_slots: usize,
    out_slots: usize,
    md: Map<String, Value>,
}

/// inputs, outputs, extra and serialized of a run, given its texts.
fn content(
    rng: &mut fastrand::Rng,
    spec: &ContentSpec,
    runtime: &Value,
    tin: &[String],
    tout: &[String],
) -> (Value, Value, Value, Option<Value>) {
    let in_len: usize = tin.iter().map(|t| t.len()).sum();
    let out_len: usize = tout.iter().map(|t| t.len()).sum();
    let usage = json!({
        "input_tokens": in_len / 4 + 12,
        "output_tokens": out_len / 4 + 1,
        "total_tokens": (in_len + out_len) / 4 + 13,
    });
    let mut md = spec.md.clone();
    let mut serialized = None;
    let (inputs, mut outputs) = match spec.kind {
        Kind::Chain if spec.is_root => (json!({"question": tin[0]}), json!({"answer": tout[0]})),
        Kind::Chain => (json!({"input": tin[0], "chat_history": []}), json!({"output": tout[0]})),
        Kind::Llm => {
            md.insert("usage_metadata".into(), usage.clone());
            serialized = Some(json!({"name": spec.name}));
            (
                json!({"messages": [
                    {"role": "system", "content": tin[0]},
                    {"role": "user", "content": tin[1]}
                ], "model": spec.model, "temperature": 0.2}),
                json!({"choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": tout[0]}}],
                    "usage_metadata": usage}),
            )
        }
        Kind::Tool => (json!({"query": tin[0]}), json!({"output": tout[0]})),
        Kind::Retriever => (
            json!({"query": tin[0]}),
            json!({"documents": tout.iter().map(|t| json!({
                "page_content": t,
                "metadata": {"source": format!("kb/article-{}.md", rng.u32(..5000)),
                             "score": (rng.f64() * 1000.0).round() / 1000.0}
            })).collect::<Vec<_>>()}),
        ),
    };
    if spec.is_error {
        outputs = json!({"output": null});
    }
    let extra = json!({"metadata": md, "runtime": runtime});
    (inputs, outputs, extra, serialized)
}

pub struct Generator {
    cfg: GenConfig,
    rng: fastrand::Rng,
    clock_us: i64,
    runtime: Value,
}

impl Generator {
    pub fn new(cfg: GenConfig) -> Self {
        let rng = fastrand::Rng::with_seed(cfg.seed);
        let clock_us = cfg.start_us;
        let runtime = json!({
            "sdk": "langsmith-py", "sdk_version": "0.15.1", "library": "langsmith",
            "platform": "Linux-6.8.0-x86_64-with-glibc2.39", "runtime": "python",
            "py_implementation": "CPython", "runtime_version": "3.12.3",
            "langchain_version": null, "langchain_core_version": "1.8.3"
        });
        Generator { cfg, rng, clock_us, runtime }
    }

    /// One trace of `n` runs, parents before children (pre-order of creation).
    pub fn trace(&mut self, n: usize) -> Vec<Run> {
        let n = n.max(1);
        let rng = &mut self.rng;
        // --- shape
        let mut nodes: Vec<Node> = Vec::with_capacity(n);
        nodes.push(Node { kind: Kind::Chain, parent: None, depth: 1, children: vec![], name: pick(rng, ROOT_NAMES), start: 0, end: 0 });
        for i in 1..n {
            // Node 1 is always a nested chain when there is room for it to have children,
            // so every trace of >= 4 runs has depth 3.
            let sub_chains: Vec<usize> = (1..i).filter(|&j| nodes[j].kind == Kind::Chain && nodes[j].depth == 2).collect();
            let parent = if !sub_chains.is_empty() && rng.f64() < 0.55 { pick(rng, &sub_chains) } else { 0 };
            let depth = nodes[parent].depth + 1;
            let kind = if (i == 1 && n >= 4) || (depth == 2 && i > 1 && rng.f64() < 0.12) {
                Kind::Chain
            } else {
                match rng.u8(..20) {
                    0..=8 => Kind::Llm,
                    9..=14 => Kind::Tool,
                    _ => Kind::Retriever,
                }
            };
            let name = match kind {
                Kind::Chain => pick(rng, SUBCHAIN_NAMES),
                Kind::Llm => "ChatOpenAI", // set from the trace's provider below
                Kind::Tool => pick(rng, TOOL_NAMES),
                Kind::Retriever => pick(rng, RETRIEVER_NAMES),
            };
            nodes.push(Node { kind, parent: Some(parent), depth, children: vec![], name, start: 0, end: 0 });
            nodes[parent].children.push(i);
        }
        // --- timing
        let t0 = self.clock_us;
        self.clock_us += rng.i64(200..2_000);
        layout(&mut nodes, 0, t0, rng);

        // --- trace-level attributes
        let env = weighted(rng, ENVS);
        let user_id = format!("user_{:04}", (rng.f64().powi(2) * 1000.0) as u32);
        let mut trace_tags = vec!["bench".to_string(), env.to_string()];
        if rng.u8(..10) == 0 {
            trace_tags.push("experiment-a".into());
        }
        let app_version = if rng.bool() { "1.4.2" } else { "1.5.0" };
        let (provider, model) = pick(rng, MODELS);
        for node in nodes.iter_mut().filter(|n| n.kind == Kind::Llm) {
            node.name = if provider == "anthropic" { "ChatAnthropic" } else { "ChatOpenAI" };
        }

        // --- runs
        let mut runs: Vec<Run> = Vec::with_capacity(n);
        let mut specs: Vec<(ContentSpec, usize)> = Vec::with_capacity(n);
        for node in &nodes {
            let mut rb = [0u8; 10];
            self.rng.fill(&mut rb);
            let id = uuid::Builder::from_unix_timestamp_millis((node.start / 1000) as u64, &rb).into_uuid();
            let rng = &mut self.rng;
            let (trace_id, parent_run_id, dotted_order) = match node.parent {
                None => (id, None, format!("{}{}", dotted_stamp(node.start), id)),
                Some(p) => {
                    let pr = &runs[p];
                    (pr.trace_id, Some(pr.id), format!("{}.{}{}", pr.dotted_order, dotted_stamp(node.start), id))
                }
            };
            let mut tags = match node.parent {
                None => trace_tags.clone(),
                Some(p) => runs[p].tags.clone(),
            };
            if node.kind == Kind::Retriever && !tags.iter().any(|t| t == "retrieval") {
                tags.push("retrieval".into());
            }
            let error =
                if node.kind != Kind::Chain && rng.f64() < self.cfg.error_rate { Some(pick(rng, ERRORS).to_string()) } else { None };
            let is_error = error.is_some();
            let split = rng.f64() < self.cfg.split_fraction;

            let mut md = Map::new();
            md.insert("user_id".into(), json!(user_id));
            md.insert("env".into(), json!(env));
            md.insert("app_version".into(), json!(app_version));
            md.insert("ls_method".into(), json!("traceable"));
            if node.parent.is_none() || node.kind == Kind::Llm {
                md.insert("confidence".into(), json!((rng.f64() * 1000.0).round() / 1000.0));
            }
            if node.kind == Kind::Llm {
                md.insert("ls_provider".into(), json!(provider));
                md.insert("ls_model_name".into(), json!(model));
                md.insert("ls_temperature".into(), json!(0.2));
            }

            let (in_slots, out_slots) = match node.kind {
                Kind::Llm => (2, 1),
                Kind::Retriever => (1, 3),
                _ => (1, 1),
            };
            let spec =
                ContentSpec { kind: node.kind, is_root: node.parent.is_none(), name: node.name, model, is_error, in_slots, out_slots, md };
            // First pass with empty texts, to measure the fixed part of each run.
            let (inputs, outputs, extra, serialized) =
                content(rng, &spec, &self.runtime, &vec![String::new(); in_slots], &vec![String::new(); out_slots]);
            let events = json!([
                {"name": "start", "time": iso_utc(node.start)},
                {"name": "end", "time": iso_utc(node.end)}
            ]);
            let run = Run {
                id,
                trace_id,
                parent_run_id,
                dotted_order,
                name: node.name,
                run_type: node.kind.run_type(),
                start_time: iso_utc(node.start),
                end_time: iso_utc(node.end),
                tags,
                inputs,
                outputs,
                events,
                extra,
                error,
                serialized,
                split,
            };
            let base = serde_json::to_vec(&run.merged_json(&self.cfg.project)).map(|v| v.len()).unwrap_or(0);
            runs.push(run);
            specs.push((spec, base));
        }

        // Second pass: spread the trace's text budget (trace_size * run_bytes minus the fixed
        // parts) over its runs, llm and retriever runs getting the largest shares, so the
        // average run is about run_bytes.
        let weight = |s: &ContentSpec| -> f64 {
            let w = match s.kind {
                Kind::Llm => 4.0,
                Kind::Retriever => 3.0,
                Kind::Chain if s.is_root => 2.0,
                Kind::Chain => 1.0,
                Kind::Tool => 1.0,
            };
            if s.is_error {
                w * 0.4
            } else {
                w
            }
        };
        let fixed: usize = specs.iter().map(|(_, b)| *b).sum();
        let text_total = (n * self.cfg.run_bytes).saturating_sub(fixed) as f64;
        let wsum: f64 = specs.iter().map(|(s, _)| weight(s)).sum();
        let rng = &mut self.rng;
        for (run, (spec, _)) in runs.iter_mut().zip(&specs) {
            let share = ((text_total * weight(spec) / wsum) as usize).max(24);
            let (in_budget, out_budget) = if spec.is_error { (share, 0) } else { (share * 2 / 5, share - share * 2 / 5) };
            let tin: Vec<String> = (0..spec.in_slots).map(|_| text(rng, in_budget / spec.in_slots)).collect();
            let tout: Vec<String> = (0..spec.out_slots).map(|_| text(rng, out_budget / spec.out_slots)).collect();
            let (inputs, outputs, extra, serialized) = content(rng, spec, &self.runtime, &tin, &tout);
            run.inputs = inputs;
            run.outputs = outputs;
            run.extra = extra;
            run.serialized = serialized;
        }
        runs
    }
}

// ---------------------------------------------------------------------------------------------
// bodies

pub struct MultipartWriter {
    buf: Vec<u8>,
    boundary: String,
}

impl MultipartWriter {
    pub fn new(boundary: &str, cap: usize) -> Self {
        MultipartWriter { buf: Vec::with_capacity(cap), boundary: boundary.to_string() }
    }

    pub fn part(&mut self, name: &str, json: &[u8]) {
        let _ = write!(
            self.buf,
            "--{}\r\nContent-Disposition: form-data; name=\"{}\"\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.boundary,
            name,
            json.len()
        );
        self.buf.extend_from_slice(json);
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn finish(mut self) -> Vec<u8> {
        let _ = write!(self.buf, "--{}--\r\n", self.boundary);
        self.buf
    }
}

/// Builds one uncompressed request body for `runs`.
/// Posts come first in stream order; patches of split runs follow in reverse order
/// (children finish before their parents), as in the SDK's zstd path.
pub fn build_body(mode: Mode, runs: &[Run], project: &str, boundary: &str) -> Vec<u8> {
    match mode {
        Mode::Batch => {
            let post: Vec<Value> = runs.iter().map(|r| r.full_json(project)).collect();
            let patch: Vec<Value> = runs
                .iter()
                .rev()
                .filter(|r| r.split)
                .map(|r| {
                    let mut m = r.patch_base(project);
                    for (k, v) in r.patch_fields() {
                        m.insert(k.into(), v);
                    }
                    Value::Object(m)
                })
                .collect();
            let mut body = Map::new();
            body.insert("post".into(), Value::Array(post));
            if !patch.is_empty() {
                body.insert("patch".into(), Value::Array(patch));
            }
            serde_json::to_vec(&Value::Object(body)).expect("serialise batch")
        }
        Mode::Multipart | Mode::MultipartZstd => {
            let mut w = MultipartWriter::new(boundary, runs.len() * 3000);
            for r in runs {
                let name = format!("post.{}", r.id);
                w.part(&name, &serde_json::to_vec(&r.post_base(project)).unwrap());
                for (k, v) in r.post_fields() {
                    w.part(&format!("{name}.{k}"), &serde_json::to_vec(&v).unwrap());
                }
            }
            for r in runs.iter().rev().filter(|r| r.split) {
                let name = format!("patch.{}", r.id);
                w.part(&name, &serde_json::to_vec(&r.patch_base(project)).unwrap());
                for (k, v) in r.patch_fields() {
                    w.part(&format!("{name}.{k}"), &serde_json::to_vec(&v).unwrap());
                }
            }
            w.finish()
        }
    }
}

/// One zstd frame from a streaming encoder, so no content-size field (like the SDK).
pub fn zstd_compress(raw: &[u8], level: i32) -> Vec<u8> {
    let mut enc = zstd::stream::Encoder::new(Vec::with_capacity(raw.len() / 4), level).expect("zstd encoder");
    enc.write_all(raw).expect("zstd write");
    enc.finish().expect("zstd finish")
}

/// Offsets of every hyphenated UUIDv7 string in `body` (our run ids; nothing else is v7).
pub fn find_v7_ids(body: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    if body.len() < 36 {
        return out;
    }
    let mut i = 0;
    while i + 36 <= body.len() {
        let b = &body[i..i + 36];
        if b[8] == b'-'
            && b[13] == b'-'
            && b[14] == b'7'
            && b[18] == b'-'
            && b[23] == b'-'
            && b.iter().enumerate().all(|(k, c)| matches!(k, 8 | 13 | 18 | 23) || c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        {
            out.push(i as u32);
            i += 36;
        } else {
            i += 1;
        }
    }
    out
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Deterministic id remap for replay cycle `cycle` (> 0): xor the random bits (bytes 6..16,
/// keeping the version nibble and variant bits), so the 48-bit timestamp and the v7 shape stay.
pub fn remap_id(id: Uuid, seed: u64, cycle: u64) -> Uuid {
    if cycle == 0 {
        return id;
    }
    let a = splitmix64(seed ^ cycle.wrapping_mul(0xD6E8_FEB8_6659_FD93)).to_le_bytes();
    let b = splitmix64(a[0] as u64 ^ cycle ^ seed.rotate_left(17)).to_le_bytes();
    let key = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1]];
    let mut bytes = *id.as_bytes();
    for (k, byte) in bytes[6..16].iter_mut().enumerate() {
        let mask = match k {
            0 => 0x0F, // byte 6: version nibble stays
            2 => 0x3F, // byte 8: variant bits stay
            _ => 0xFF,
        };
        *byte ^= key[k] & mask;
    }
    Uuid::from_bytes(bytes)
}

/// A pre-generated request body.
pub struct Template {
    /// Uncompressed body.
    pub raw: bytes::Bytes,
    /// What goes on the wire on first use (compressed in zstd mode).
    pub wire: bytes::Bytes,
    pub id_offsets: Vec<u32>,
    pub runs: u32,
    /// Last merged (post-only) run of the body: what the "time until queryable" probe asks for.
    pub probe: Uuid,
    pub probe_trace: Uuid,
}

impl Template {
    /// The body with every run id remapped for replay cycle `cycle`.
    pub fn rewrite(&self, seed: u64, cycle: u64) -> Vec<u8> {
        let mut out = self.raw.to_vec();
        for &off in &self.id_offsets {
            let off = off as usize;
            let s = &mut out[off..off + 36];
            if let Ok(id) = Uuid::try_parse_ascii(s) {
                remap_id(id, seed, cycle).hyphenated().encode_lower(s);
            }
        }
        out
    }
}

pub struct Pool {
    pub templates: Vec<Template>,
    pub content_type: String,
    pub raw_bytes: u64,
    pub wire_bytes: u64,
    pub runs: u64,
    /// Sum of each run's JSON size (as one merged object), for the "avg run bytes" figure.
    pub run_json_bytes: u64,
}

/// Generates up to `max_requests` bodies, stopping early once `budget_bytes` of raw body
/// has been produced. Traces flow continuously across bodies.
pub fn build_pool(cfg: &GenConfig, mode: Mode, max_requests: u64, budget_bytes: u64) -> Pool {
    let boundary = Uuid::from_u64_pair(splitmix64(cfg.seed), splitmix64(cfg.seed ^ 1)).simple().to_string();
    let content_type = match mode {
        Mode::Batch => "application/json".to_string(),
        _ => format!("multipart/form-data; boundary={boundary}"),
    };
    let mut gen = Generator::new(cfg.clone());
    let mut pending: VecDeque<Run> = VecDeque::new();
    let mut pool = Pool { templates: Vec::new(), content_type, raw_bytes: 0, wire_bytes: 0, runs: 0, run_json_bytes: 0 };
    let rpr = cfg.runs_per_request.max(1);
    while (pool.templates.len() as u64) < max_requests.max(1) {
        if !pool.templates.is_empty() && pool.raw_bytes >= budget_bytes {
            break;
        }
        while pending.len() < rpr {
            pending.extend(gen.trace(cfg.trace_size));
        }
        let chunk: Vec<Run> = pending.drain(..rpr).collect();
        for r in &chunk {
            pool.run_json_bytes += serde_json::to_vec(&r.merged_json(&cfg.project)).map(|v| v.len() as u64).unwrap_or(0);
        }
        let raw = build_body(mode, &chunk, &cfg.project, &boundary);
        let wire = match mode {
            Mode::MultipartZstd => zstd_compress(&raw, cfg.zstd_level),
            _ => raw.clone(),
        };
        let probe_run = chunk.iter().rev().find(|r| !r.split).unwrap_or(chunk.last().unwrap());
        pool.raw_bytes += raw.len() as u64;
        pool.wire_bytes += wire.len() as u64;
        pool.runs += chunk.len() as u64;
        let id_offsets = find_v7_ids(&raw);
        let raw = bytes::Bytes::from(raw);
        let wire = if mode == Mode::MultipartZstd { bytes::Bytes::from(wire) } else { raw.clone() };
        pool.templates.push(Template {
            raw,
            wire,
            id_offsets,
            runs: chunk.len() as u32,
            probe: probe_run.id,
            probe_trace: probe_run.trace_id,
        });
    }
    pool
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg() -> GenConfig {
        GenConfig {
            project: "bench-test".into(),
            trace_size: 10,
            run_bytes: 1500,
            runs_per_request: 25,
            split_fraction: 0.3,
            error_rate: 0.2,
            seed: 7,
            start_us: 1_795_573_183_056_436,
            zstd_level: 1,
        }
    }

    /// Parses a multipart body with multer; returns (name, content-type, content-length header, body).
    fn parse_multipart(body: Vec<u8>, boundary: &str) -> Vec<(String, String, usize, Vec<u8>)> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async move {
            let stream = futures::stream::once(async move { Ok::<bytes::Bytes, std::io::Error>(bytes::Bytes::from(body)) });
            let mut mp = multer::Multipart::new(stream, boundary);
            let mut out = Vec::new();
            while let Some(field) = mp.next_field().await.unwrap() {
                assert!(field.file_name().is_none());
                let name = field.name().unwrap().to_string();
                let ct = field.headers()["content-type"].to_str().unwrap().to_string();
                let cl: usize = field.headers()["content-length"].to_str().unwrap().parse().unwrap();
                let data = field.bytes().await.unwrap().to_vec();
                out.push((name, ct, cl, data));
            }
            out
        })
    }

    #[test]
    fn multipart_body_roundtrips_through_multer() {
        let cfg = cfg();
        for mode in [Mode::Multipart, Mode::MultipartZstd] {
            let pool = build_pool(&cfg, mode, 4, u64::MAX);
            assert_eq!(pool.templates.len(), 4);
            let boundary = pool.content_type.split("boundary=").nth(1).unwrap().to_string();
            assert_eq!(boundary.len(), 32);
            let mut all_runs: HashMap<String, Value> = HashMap::new();
            let mut patched = 0;
            let mut errors = 0;
            for t in &pool.templates {
                let raw = if mode == Mode::MultipartZstd {
                    // one frame, no content size: decode with the streaming decoder
                    let mut dec = zstd::stream::Decoder::new(&t.wire[..]).unwrap();
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut dec, &mut v).unwrap();
                    assert!(
                        matches!(zstd::zstd_safe::get_frame_content_size(&t.wire[..]), Ok(None)),
                        "frame must not carry a content size"
                    );
                    v
                } else {
                    t.wire.to_vec()
                };
                assert_eq!(raw, t.raw.to_vec());
                let parts = parse_multipart(raw, &boundary);
                let mut base_seen: Option<(String, String)> = None; // (op, id)
                let mut posts_in_body = 0;
                for (name, ct, cl, data) in &parts {
                    assert_eq!(ct, "application/json", "{name}");
                    assert_eq!(*cl, data.len(), "content-length of {name}");
                    let v: Value = serde_json::from_slice(data).unwrap_or_else(|e| panic!("part {name} is not JSON: {e}"));
                    let segs: Vec<&str> = name.split('.').collect();
                    assert!(segs[0] == "post" || segs[0] == "patch", "{name}");
                    Uuid::parse_str(segs[1]).unwrap();
                    match segs.len() {
                        2 => {
                            assert_eq!(v["id"], json!(segs[1]));
                            for k in ["inputs", "outputs", "events", "extra", "error", "serialized"] {
                                assert!(v.get(k).is_none(), "{name} carries {k} inline");
                            }
                            base_seen = Some((segs[0].into(), segs[1].into()));
                            if segs[0] == "post" {
                                posts_in_body += 1;
                                assert!(!all_runs.contains_key(segs[1]), "duplicate post");
                                all_runs.insert(segs[1].to_string(), v.clone());
                            } else {
                                patched += 1;
                                assert!(v.get("end_time").unwrap().is_string());
                                assert!(all_runs.contains_key(segs[1]), "patch before post");
                            }
                        }
                        3 => {
                            // sub-part right after its base part (or a sibling sub-part)
                            assert_eq!(
                                base_seen.as_ref().map(|(o, i)| (o.as_str(), i.as_str())),
                                Some((segs[0], segs[1])),
                                "{name} out of order"
                            );
                            match segs[2] {
                                "inputs" | "outputs" | "extra" | "serialized" => {
                                    assert!(v.is_object(), "{name}")
                                }
                                "events" => assert!(v.is_array()),
                                "error" => {
                                    errors += 1;
                                    assert!(v.as_str().unwrap().contains("Traceback"))
                                }
                                other => panic!("unexpected sub-part {other}"),
                            }
                        }
                        _ => panic!("bad part name {name}"),
                    }
                }
                assert_eq!(posts_in_body, cfg.runs_per_request);
            }
            assert!(patched > 0, "some runs must be split into post + patch");
            assert!(errors > 0, "some runs must carry an error");
            check_tree(&all_runs, &cfg);
        }
    }

    /// Every child's dotted_order extends its parent's; trace ids and ids agree with it.
    fn check_tree(runs: &HashMap<String, Value>, cfg: &GenConfig) {
        let mut depth3 = 0;
        let mut kinds = std::collections::HashSet::new();
        for (id, r) in runs {
            let d = r["dotted_order"].as_str().unwrap();
            let segs: Vec<&str> = d.split('.').collect();
            for s in &segs {
                assert_eq!(s.len(), 22 + 36, "segment {s}");
                assert_eq!(&s[8..9], "T");
                assert_eq!(&s[21..22], "Z");
                assert!(s[..21].chars().enumerate().all(|(i, c)| i == 8 || c.is_ascii_digit()));
            }
            assert!(d.ends_with(id.as_str()));
            assert_eq!(segs[0][22..], *r["trace_id"].as_str().unwrap());
            assert_eq!(r["session_name"], json!(cfg.project));
            kinds.insert(r["run_type"].as_str().unwrap().to_string());
            // dotted stamp agrees with start_time
            let st = r["start_time"].as_str().unwrap();
            let stamp: String = st[..26].chars().filter(|c| c.is_ascii_digit() || *c == 'T').collect();
            assert_eq!(&segs.last().unwrap()[..21], stamp);
            // UUIDv7 timestamp agrees with start_time (ms)
            let u = Uuid::parse_str(id).unwrap();
            assert_eq!(u.get_version_num(), 7);
            match r.get("parent_run_id") {
                None => assert_eq!(segs.len(), 1, "root {id}"),
                Some(p) => {
                    let p = p.as_str().unwrap();
                    if segs.len() == 3 {
                        depth3 += 1;
                    }
                    if let Some(parent) = runs.get(p) {
                        let pd = parent["dotted_order"].as_str().unwrap();
                        assert!(d.starts_with(&format!("{pd}.")), "{d} !~ {pd}");
                        assert_eq!(parent["trace_id"], r["trace_id"]);
                        assert!(parent["start_time"].as_str() <= r["start_time"].as_str());
                        // tags are inherited
                        for t in parent["tags"].as_array().unwrap() {
                            assert!(r["tags"].as_array().unwrap().contains(t));
                        }
                    }
                    assert_eq!(segs[segs.len() - 2][22..], *p);
                }
            }
        }
        assert!(depth3 > 0, "expected some depth-3 runs");
        for k in ["chain", "llm", "tool", "retriever"] {
            assert!(kinds.contains(k), "no {k} runs");
        }
    }

    #[test]
    fn runs_have_expected_size_and_metadata() {
        let cfg = cfg();
        let mut g = Generator::new(cfg.clone());
        let mut sizes = Vec::new();
        let mut llm = 0;
        for _ in 0..50 {
            for r in g.trace(10) {
                let v = r.merged_json(&cfg.project);
                let md = &v["extra"]["metadata"];
                assert!(md["user_id"].is_string() && md["env"].is_string());
                if r.run_type == "llm" {
                    llm += 1;
                    assert!(md["usage_metadata"]["total_tokens"].as_u64().unwrap() > 0);
                    assert!(md["confidence"].is_number());
                    if r.error.is_none() {
                        assert!(v["outputs"]["usage_metadata"]["input_tokens"].is_u64());
                    }
                }
                sizes.push(serde_json::to_vec(&v).unwrap().len());
            }
        }
        assert!(llm > 0);
        let avg = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
        assert!((1425.0..1575.0).contains(&avg), "avg run size {avg}");
    }

    #[test]
    fn batch_body_is_valid_json() {
        let cfg = cfg();
        let pool = build_pool(&cfg, Mode::Batch, 2, u64::MAX);
        assert_eq!(pool.content_type, "application/json");
        for t in &pool.templates {
            let v: Value = serde_json::from_slice(&t.wire).unwrap();
            let post = v["post"].as_array().unwrap();
            assert_eq!(post.len(), cfg.runs_per_request);
            for p in post {
                assert!(p["inputs"].is_object() && p["extra"].is_object());
            }
            if let Some(patch) = v.get("patch") {
                for p in patch.as_array().unwrap() {
                    assert!(p["end_time"].is_string());
                    assert!(post.iter().any(|q| q["id"] == p["id"]));
                    assert!(q_missing_end(post, &p["id"]));
                }
            }
        }
    }

    fn q_missing_end(post: &[Value], id: &Value) -> bool {
        post.iter().find(|q| &q["id"] == id).map(|q| q.get("end_time").is_none()).unwrap()
    }

    #[test]
    fn rewrite_remaps_ids_consistently() {
        let cfg = cfg();
        let pool = build_pool(&cfg, Mode::Batch, 3, u64::MAX);
        let t = &pool.templates[1];
        // every run id and reference is found
        assert!(t.id_offsets.len() >= t.runs as usize * 4);
        let a = t.rewrite(cfg.seed, 1);
        let b = t.rewrite(cfg.seed, 2);
        assert_eq!(a.len(), t.raw.len());
        assert_ne!(a, t.raw.to_vec());
        assert_ne!(a, b);
        let orig: Value = serde_json::from_slice(&t.raw).unwrap();
        let v: Value = serde_json::from_slice(&a).unwrap();
        for (o, n) in orig["post"].as_array().unwrap().iter().zip(v["post"].as_array().unwrap()) {
            let oid = Uuid::parse_str(o["id"].as_str().unwrap()).unwrap();
            let nid = Uuid::parse_str(n["id"].as_str().unwrap()).unwrap();
            assert_eq!(nid, remap_id(oid, cfg.seed, 1));
            assert_eq!(nid.get_version_num(), 7);
            assert_eq!(nid.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(nid.get_timestamp(), oid.get_timestamp());
            assert!(n["dotted_order"].as_str().unwrap().ends_with(&nid.to_string()));
            let otr = Uuid::parse_str(o["trace_id"].as_str().unwrap()).unwrap();
            assert_eq!(n["trace_id"], json!(remap_id(otr, cfg.seed, 1)));
            assert_eq!(o["inputs"], n["inputs"]);
        }
        assert_eq!(remap_id(t.probe, cfg.seed, 0), t.probe);
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    /// `cargo test --release -- --ignored --nocapture replay_cost`: CPU cost of the replay path.
    #[test]
    #[ignore]
    fn replay_cost() {
        let mut cfg = tests_cfg();
        cfg.runs_per_request = 100;
        let t = std::time::Instant::now();
        let pool = build_pool(&cfg, Mode::Multipart, 100, u64::MAX);
        let gen = t.elapsed();
        let t = std::time::Instant::now();
        let mut total = 0;
        for (i, tpl) in pool.templates.iter().enumerate() {
            total += tpl.rewrite(cfg.seed, 1 + i as u64).len();
        }
        let rw = t.elapsed();
        let t = std::time::Instant::now();
        for tpl in &pool.templates {
            total += zstd_compress(&tpl.raw, 1).len();
        }
        let z = t.elapsed();
        eprintln!("per 100-run body: generate {:?}, rewrite {:?}, zstd-1 {:?} ({total})", gen / 100, rw / 100, z / 100);
    }

    fn tests_cfg() -> GenConfig {
        GenConfig {
            project: "bench-test".into(),
            trace_size: 10,
            run_bytes: 1500,
            runs_per_request: 100,
            split_fraction: 0.2,
            error_rate: 0.03,
            seed: 7,
            start_us: 1_795_573_183_056_436,
            zstd_level: 1,
        }
    }
}
