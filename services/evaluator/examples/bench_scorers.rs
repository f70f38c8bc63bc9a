//! Benchmark of the server-side evaluators: rule evaluations per second for each rule type
//! (one task, one core), and LLM-judge calls per second at a given concurrency against the
//! FAKE chat-completions endpoint of the tests (`tests/support/fake_llm.rs`, a mock that
//! answers after a fixed latency, in this process).
//!
//! ```text
//! cargo run --release -p sextant-evaluator --example bench_scorers -- \
//!     --rules 200000 --judge-calls 2000 --concurrency 32 --latency-ms 20
//! ```

#[path = "../tests/support/fake_llm.rs"]
mod fake_llm;

use std::hint::black_box;
use std::time::{Duration, Instant};

use fake_llm::{FakeLlm, Reply};
use serde_json::{json, Value};
use sextant_evaluator::scorers::{parse_evaluator, Cost, JudgeSettings, ScoreInput};

struct Args {
    rules: u64,
    judge_calls: u64,
    concurrency: usize,
    latency_ms: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { rules: 200_000, judge_calls: 2_000, concurrency: 32, latency_ms: 20 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--rules" => a.rules = num(value()?)?,
            "--judge-calls" => a.judge_calls = num(value()?)?,
            "--concurrency" => a.concurrency = num(value()?)? as usize,
            "--latency-ms" => a.latency_ms = num(value()?)?,
            "-h" | "--help" => {
                return Err("usage: bench_scorers [--rules N] [--judge-calls N] [--concurrency N] [--latency-ms MS]".into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.concurrency == 0 {
        return Err("--concurrency must be positive".into());
    }
    Ok(a)
}

/// A support answer of about 600 characters, with amounts and durations.
const ANSWER: &str = "Thanks for reaching out about your order. Under our returns policy you can request a refund \
within 30 days of delivery, as long as you still have the receipt. Refunds of up to $40 are issued to the original \
payment method automatically; larger amounts are reviewed by our team, which usually takes 2.5 hours during business \
hours. Please note that opened electronics carry a 15% restocking fee. To start, open the Orders page, choose the item, \
and select Return. You will receive a prepaid shipping label by email. If anything is unclear, reply to this message \
and we will be happy to help. Ticket reference: TICKET-48213.";

const REFERENCE: &str = "Refunds are available within 30 days with a receipt. Up to $40 is refunded automatically; \
larger amounts take about 2.5 hours to review. Opened electronics have a 15% restocking fee.";

fn rule_configs() -> Vec<Value> {
    vec![
        json!({"type": "keywords", "key": "keywords", "keywords": ["refund", "receipt", "30 days", "restocking fee", "warranty"]}),
        json!({"type": "forbidden", "key": "forbidden", "phrases": ["as an AI", "I cannot", "guarantee", "lawyer"]}),
        json!({"type": "length", "key": "length", "unit": "words", "min": 20, "max": 200}),
        json!({"type": "regex", "key": "regex", "pattern": r"TICKET-\d{5}", "mode": "match"}),
        json!({"type": "json", "key": "json", "field": "json"}),
        json!({"type": "json_schema", "key": "json_schema", "field": "json", "schema": {
            "type": "object", "required": ["intent", "refund", "days"],
            "properties": {"intent": {"enum": ["refund", "exchange"]}, "refund": {"type": "number", "minimum": 0}, "days": {"type": "integer"}}
        }}),
        json!({"type": "exact_match", "key": "exact_match", "case_sensitive": false, "collapse_whitespace": true}),
        json!({"type": "fuzzy_match", "key": "fuzzy_match"}),
        json!({"type": "fuzzy_match", "key": "fuzzy_match_token_set", "method": "token_set"}),
        json!({"type": "numeric_claims", "key": "numeric_claims"}),
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn bench_rules(n: u64) {
    let settings = JudgeSettings::default();
    let input = ScoreInput {
        inputs: json!({"question": "Can I get a refund for my order?"}),
        outputs: json!({"answer": ANSWER, "json": "{\"intent\": \"refund\", \"refund\": 40, \"days\": 30}"}),
        reference: Some(json!({"answer": REFERENCE})),
    };
    println!("rule evaluations, {n} per type, one task ({} chars of output, {} of reference):", ANSWER.len(), REFERENCE.len());
    println!("  {:<24} {:>12} {:>10}  last score", "type", "evals/s", "µs/eval");
    for cfg in rule_configs() {
        let e = parse_evaluator(&cfg, &settings).expect("bench configs parse");
        // Warm-up: lazily compiled regexes, allocator.
        for _ in 0..(n / 100).max(10) {
            black_box(e.score(&input).await.expect("bench inputs score"));
        }
        let started = Instant::now();
        let mut last = 0.0;
        for _ in 0..n {
            last = black_box(e.score(black_box(&input)).await.expect("bench inputs score")).score;
        }
        let secs = started.elapsed().as_secs_f64();
        println!("  {:<24} {:>12.0} {:>10.2}  {last:.4}", e.key(), n as f64 / secs, secs * 1e6 / n as f64);
    }
}

async fn bench_judge(calls: u64, concurrency: usize, latency_ms: u64) {
    let fake = FakeLlm::start().await;
    fake.fallback(
        Reply::content("{\"score\": 0.8, \"reasoning\": \"States the refund window and fee correctly.\"}")
            .delay_ms(latency_ms)
            .usage(250, 20),
    );
    let settings = JudgeSettings {
        base_url: fake.base_url.clone(),
        api_key: Some("sk-bench".into()),
        model: "judge-bench".into(),
        timeout_ms: 10_000,
        max_retries: 0,
        max_concurrency: concurrency,
        prices: sextant_evaluator::scorers::Prices { prompt_usd_per_mtok: 0.15, completion_usd_per_mtok: 0.6 },
        ..Default::default()
    };
    let judge = parse_evaluator(
        &json!({"type": "llm_judge", "key": "correctness",
            "prompt": "Question: {inputs.question}\nAnswer: {outputs.answer}\nReference: {reference.answer}\nScore the answer's correctness against the reference."}),
        &settings,
    )
    .expect("bench judge parses");
    let input = ScoreInput {
        inputs: json!({"question": "Can I get a refund for my order?"}),
        outputs: json!({"answer": ANSWER}),
        reference: Some(json!({"answer": REFERENCE})),
    };
    // Warm-up: connections.
    let warm: Vec<_> = (0..concurrency).map(|_| judge.score(&input)).collect();
    for r in futures::future::join_all(warm).await {
        r.expect("warm-up call scores");
    }
    let before = fake.request_count();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..calls {
        let (judge, input) = (judge.clone(), input.clone());
        tasks.spawn(async move {
            let t = Instant::now();
            let r = judge.score(&input).await;
            (t.elapsed(), r)
        });
    }
    let mut latencies = Vec::with_capacity(calls as usize);
    let mut cost = Cost::default();
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        let (latency, r) = done.expect("judge task");
        latencies.push(latency);
        match r {
            Ok(out) => cost.add(&out.cost.unwrap_or_default()),
            Err(e) => {
                errors += 1;
                if errors <= 3 {
                    eprintln!("judge error: {e}");
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    println!(
        "judge calls: {calls} at concurrency {concurrency} against the fake endpoint ({latency_ms} ms per answer; ceiling {:.0} calls/s):",
        concurrency as f64 * 1000.0 / latency_ms.max(1) as f64
    );
    println!("  calls/s                  {:>10.0}", (fake.request_count() - before) as f64 / secs);
    println!("  wall                     {secs:>10.3} s");
    println!("  evaluation latency p50   {:>10.1} ms (queueing for the limit included)", percentile(&latencies, 0.5).as_secs_f64() * 1e3);
    println!("  evaluation latency p99   {:>10.1} ms", percentile(&latencies, 0.99).as_secs_f64() * 1e3);
    println!("  max in flight at fake    {:>10}", fake.max_in_flight());
    println!("  errors                   {errors:>10}");
    println!(
        "  accounted cost           {:>10.6} USD for {} calls, {} prompt + {} completion tokens",
        cost.usd, cost.calls, cost.prompt_tokens, cost.completion_tokens
    );
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(64);
        }
    };
    if args.rules > 0 {
        bench_rules(args.rules).await;
    }
    if args.judge_calls > 0 {
        bench_judge(args.judge_calls, args.concurrency, args.latency_ms).await;
    }
}
