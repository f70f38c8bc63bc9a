//! The LLM judge against a FAKE chat-completions server (`support/fake_llm.rs`, a mock the
//! tests start on 127.0.0.1 and script): answer parsing, bounds, timeouts, retries and
//! `Retry-After`, the median of samples, the shared concurrency limit, cost, and the API key.

#[path = "support/fake_llm.rs"]
mod fake_llm;

use std::time::{Duration, Instant};

use fake_llm::{FakeLlm, Reply};
use futures::future::join_all;
use serde_json::{json, Value};
use sextant_evaluator::scorers::{parse_evaluator, Evaluator, JudgeSettings, Prices, ScoreErrorKind, ScoreInput};

const KEY: &str = "sk-test-0123456789abcdef";

fn settings(fake: &FakeLlm) -> JudgeSettings {
    JudgeSettings {
        base_url: fake.base_url.clone(),
        api_key: Some(KEY.into()),
        model: "judge-small".into(),
        timeout_ms: 2_000,
        max_retries: 2,
        // Short backoff keeps retry tests fast; Retry-After tests check a longer wait.
        backoff_base_ms: 10,
        backoff_max_ms: 5_000,
        max_concurrency: 8,
        prices: Prices { prompt_usd_per_mtok: 2.0, completion_usd_per_mtok: 10.0 },
        ..Default::default()
    }
}

fn judge(s: &JudgeSettings, extra: Value) -> Evaluator {
    let mut cfg = json!({
        "type": "llm_judge",
        "key": "correctness",
        "prompt": "Question: {inputs.question}\nAnswer: {outputs}\nReference: {reference}\nIs the answer correct?",
    });
    cfg.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    parse_evaluator(&cfg, s).unwrap()
}

fn input() -> ScoreInput {
    ScoreInput {
        inputs: json!({"question": "How long is the refund window?"}),
        outputs: json!({"answer": "30 days"}),
        reference: Some(json!({"answer": "Refunds within 30 days."})),
    }
}

#[tokio::test]
async fn fenced_json_answer_gives_score_reasoning_and_cost_and_sends_the_expected_request() {
    let fake = FakeLlm::start().await;
    fake.then(Reply::content("Sure.\n```json\n{\"score\": 0.8, \"reasoning\": \"States the window correctly.\"}\n```").usage(120, 30));
    let s = settings(&fake);
    let j = judge(&s, json!({}));
    assert!(j.is_llm() && j.needs_reference() && j.kind() == "llm_judge");
    let out = j.score(&input()).await.unwrap();
    assert_eq!(out.key, "correctness");
    assert_eq!(out.score, 0.8);
    assert!(out.comment.starts_with("States the window correctly."), "{}", out.comment);
    let cost = out.cost.unwrap();
    assert_eq!((cost.prompt_tokens, cost.completion_tokens, cost.calls), (120, 30, 1));
    assert!((cost.usd - (120.0 * 2.0 + 30.0 * 10.0) / 1e6).abs() < 1e-12, "{}", cost.usd);

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    let body = &reqs[0].body;
    assert_eq!(body["model"], "judge-small");
    assert_eq!(body["temperature"], 0);
    assert_eq!(body["messages"][0]["role"], "system");
    assert!(body["messages"][0]["content"].as_str().unwrap().contains("\"score\""));
    assert_eq!(body["messages"][1]["role"], "user");
    assert_eq!(
        body["messages"][1]["content"],
        "Question: How long is the refund window?\nAnswer: {\"answer\":\"30 days\"}\nReference: {\"answer\":\"Refunds within 30 days.\"}\nIs the answer correct?"
    );
}

#[tokio::test]
async fn bare_number_answer() {
    let fake = FakeLlm::start().await;
    fake.then(Reply::content("0.7"));
    let out = judge(&settings(&fake), json!({"model": "judge-large"})).score(&input()).await.unwrap();
    assert_eq!(out.score, 0.7);
    assert!(out.comment.contains("no reasoning"), "{}", out.comment);
    assert_eq!(fake.requests()[0].body["model"], "judge-large");
}

#[tokio::test]
async fn score_out_of_ten_with_bounds_one_to_ten_is_normalized() {
    let fake = FakeLlm::start().await;
    fake.then(Reply::content("The answer matches the reference.\nScore: 8/10"));
    let out = judge(&settings(&fake), json!({"min": 1, "max": 10})).score(&input()).await.unwrap();
    assert!((out.score - 7.0 / 9.0).abs() < 1e-12, "{}", out.score);
    assert!(out.comment.contains("on 1..10") && out.comment.contains("normalized to 0.7778"), "{}", out.comment);
    // The system prompt tells the judge the scale.
    assert!(fake.requests()[0].body["messages"][0]["content"].as_str().unwrap().contains("from 1 to 10"));

    // Raw scores on the judge's scale when normalization is off.
    fake.then(Reply::content("Score: 8/10"));
    let out = judge(&settings(&fake), json!({"min": 1, "max": 10, "normalize": false})).score(&input()).await.unwrap();
    assert_eq!(out.score, 8.0);
}

#[tokio::test]
async fn garbage_and_out_of_bounds_answers_are_errors_not_midpoints() {
    let fake = FakeLlm::start().await;
    let s = settings(&fake);
    let j = judge(&s, json!({}));
    fake.then(Reply::content("I'm not able to grade this, sorry."));
    let e = j.score(&input()).await.unwrap_err();
    assert_eq!(e.kind, ScoreErrorKind::Answer);
    assert_eq!(e.key, "correctness");
    assert!(e.message.contains("no score") && e.message.contains("not able to grade"), "{}", e.message);
    assert_eq!(e.cost.unwrap().calls, 1, "garbage answers are not retried");

    fake.then(Reply::content("{\"score\": 7, \"reasoning\": \"good\"}"));
    let e = j.score(&input()).await.unwrap_err();
    assert_eq!(e.kind, ScoreErrorKind::Answer);
    assert!(e.message.contains("outside") && e.message.contains("0..1"), "{}", e.message);

    fake.then(Reply::content(""));
    assert_eq!(j.score(&input()).await.unwrap_err().kind, ScoreErrorKind::Answer);

    fake.then(Reply::raw_ok("<html>gateway</html>"));
    let e = j.score(&input()).await.unwrap_err();
    assert_eq!(e.kind, ScoreErrorKind::Endpoint);
    assert!(e.message.contains("not a chat-completions response"), "{}", e.message);
}

#[tokio::test]
async fn a_slow_judge_times_out() {
    let fake = FakeLlm::start().await;
    fake.fallback(Reply::content("0.9").delay_ms(3_000));
    let s = JudgeSettings { timeout_ms: 200, max_retries: 1, ..settings(&fake) };
    let started = Instant::now();
    let e = judge(&s, json!({})).score(&input()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(1_500), "{:?}", started.elapsed());
    assert_eq!(e.kind, ScoreErrorKind::Timeout);
    assert!(e.message.contains("timed out after 200 ms") && e.message.contains("2 attempts"), "{}", e.message);
    assert_eq!(e.cost.unwrap().calls, 2);
    assert_eq!(fake.request_count(), 2);

    // The evaluator's own timeout overrides the settings'.
    let e = judge(&JudgeSettings { max_retries: 0, ..settings(&fake) }, json!({"timeout_ms": 100})).score(&input()).await.unwrap_err();
    assert!(e.message.contains("timed out after 100 ms"), "{}", e.message);
}

#[tokio::test]
async fn server_errors_are_retried_and_their_calls_counted() {
    let fake = FakeLlm::start().await;
    fake.then(Reply::status(500, "upstream exploded")).then(Reply::status(503, "busy")).then(Reply::content("0.9").usage(100, 10));
    let out = judge(&settings(&fake), json!({})).score(&input()).await.unwrap();
    assert_eq!(out.score, 0.9);
    let cost = out.cost.unwrap();
    assert_eq!((cost.calls, cost.prompt_tokens, cost.completion_tokens), (3, 100, 10));
    assert_eq!(fake.request_count(), 3);

    // Past max_retries: an error naming the last failure.
    fake.fallback(Reply::status(502, "bad gateway"));
    let e = judge(&settings(&fake), json!({})).score(&input()).await.unwrap_err();
    assert_eq!(e.kind, ScoreErrorKind::Endpoint);
    assert!(e.message.contains("3 attempts") && e.message.contains("502"), "{}", e.message);
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let fake = FakeLlm::start().await;
    fake.then(Reply::status(429, "slow down").retry_after("1")).then(Reply::content("1"));
    let started = Instant::now();
    let out = judge(&settings(&fake), json!({})).score(&input()).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(out.score, 1.0);
    // The backoff alone would be 5–10 ms.
    assert!(waited >= Duration::from_millis(950), "retried after {waited:?}");
    assert_eq!(out.cost.unwrap().calls, 2);

    // A Retry-After beyond backoff_max_ms ends retrying at once.
    fake.then(Reply::status(429, "come back tomorrow").retry_after("86400"));
    let started = Instant::now();
    let e = judge(&settings(&fake), json!({})).score(&input()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(e.message.contains("Retry-After"), "{}", e.message);
}

#[tokio::test]
async fn client_errors_are_not_retried_and_never_reveal_the_key() {
    let fake = FakeLlm::start().await;
    // An endpoint that echoes the key it was sent back in its error.
    fake.then(Reply::status(401, &format!("{{\"error\": \"invalid api key {KEY}\"}}")));
    let s = settings(&fake);
    let e = judge(&s, json!({})).score(&input()).await.unwrap_err();
    assert_eq!(e.kind, ScoreErrorKind::Endpoint);
    assert_eq!(fake.request_count(), 1, "a 401 is not retried");
    assert!(e.message.contains("401") && e.message.contains("[redacted]"), "{}", e.message);
    assert!(!e.message.contains(KEY) && !e.to_string().contains(KEY), "{}", e.message);
    assert!(!format!("{s:?}").contains(KEY));
    assert!(!serde_json::to_string(&s).unwrap().contains(KEY));
}

#[tokio::test]
async fn connection_failures_are_retried_then_reported() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = JudgeSettings {
        base_url: format!("http://127.0.0.1:{port}/v1"),
        model: "m".into(),
        max_retries: 1,
        backoff_base_ms: 10,
        ..Default::default()
    };
    let e = judge(&s, json!({})).score(&input()).await.unwrap_err();
    assert_eq!(e.kind, ScoreErrorKind::Endpoint);
    assert_eq!(e.cost.unwrap().calls, 2);
    assert!(e.message.contains("2 attempts"), "{}", e.message);
}

#[tokio::test]
async fn median_of_samples_and_summed_cost() {
    let fake = FakeLlm::start().await;
    fake.then(Reply::content("{\"score\": 0.2, \"reasoning\": \"low\"}").usage(100, 20))
        .then(Reply::content("{\"score\": 0.9, \"reasoning\": \"high\"}").usage(100, 20))
        .then(Reply::content("{\"score\": 0.6, \"reasoning\": \"middle\"}").usage(100, 20));
    let out = judge(&settings(&fake), json!({"samples": 3})).score(&input()).await.unwrap();
    assert_eq!(out.score, 0.6);
    assert!(out.comment.starts_with("middle") && out.comment.contains("median of 3 judge samples (0.2, 0.6, 0.9)"), "{}", out.comment);
    let cost = out.cost.unwrap();
    assert_eq!((cost.calls, cost.prompt_tokens, cost.completion_tokens), (3, 300, 60));
    assert!((cost.usd - 3.0 * (100.0 * 2.0 + 20.0 * 10.0) / 1e6).abs() < 1e-12);

    // An even number of samples: the mean of the middle two.
    for s in ["0.2", "0.4", "0.6", "1"] {
        fake.then(Reply::content(s));
    }
    assert!((judge(&settings(&fake), json!({"samples": 4})).score(&input()).await.unwrap().score - 0.5).abs() < 1e-12);

    // One garbage sample fails the evaluation (no median over the survivors), cost still summed.
    fake.then(Reply::content("0.5")).then(Reply::content("no idea")).then(Reply::content("0.5"));
    let e = judge(&settings(&fake), json!({"samples": 3})).score(&input()).await.unwrap_err();
    assert_eq!(e.kind, ScoreErrorKind::Answer);
    assert!(e.message.contains("of 3"), "{}", e.message);
    assert_eq!(e.cost.unwrap().calls, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_is_shared_by_every_judge_of_the_settings() {
    let fake = FakeLlm::start().await;
    fake.fallback(Reply::content("0.5").delay_ms(100));
    let s = JudgeSettings { max_concurrency: 3, ..settings(&fake) };
    // Two evaluators, one of them with 2 samples, parsed from clones of the same settings.
    let a = judge(&s, json!({}));
    let b = judge(&s.clone(), json!({"key": "other", "samples": 2}));
    let input = input();
    let runs = (0..6).map(|_| a.score(&input)).chain((0..6).map(|_| b.score(&input)));
    let started = Instant::now();
    let results = join_all(runs).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(fake.request_count(), 6 + 12);
    assert_eq!(fake.max_in_flight(), 3, "never more than max_concurrency calls in flight, and the limit is reached");
    // 18 calls of 100 ms, 3 at a time: at least 6 rounds.
    assert!(started.elapsed() >= Duration::from_millis(600), "{:?}", started.elapsed());
    assert_eq!(s.available_permits(), 3);
}

#[tokio::test]
async fn runs_missing_what_the_prompt_needs_are_input_errors_without_calls() {
    let fake = FakeLlm::start().await;
    let j = judge(&settings(&fake), json!({}));
    let e = j.score(&ScoreInput { reference: None, ..input() }).await.unwrap_err();
    assert_eq!(e.kind, ScoreErrorKind::Input);
    assert!(e.message.contains("{reference}"), "{}", e.message);
    let e = j.score(&ScoreInput { inputs: json!({"q": "?"}), ..input() }).await.unwrap_err();
    assert!(e.message.contains("{inputs.question}"), "{}", e.message);
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn judge_config_errors_name_the_field() {
    let fake = FakeLlm::start().await;
    let s = settings(&fake);
    let err = |cfg: Value, s: &JudgeSettings| parse_evaluator(&cfg, s).unwrap_err();
    let base = json!({"type": "llm_judge", "key": "k", "prompt": "Rate {outputs}"});
    let with = |extra: Value| {
        let mut c = base.clone();
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    };
    assert_eq!(err(json!({"type": "llm_judge", "key": "k"}), &s).field, "prompt");
    let e = err(with(json!({"prompt": "Rate {inputs}"})), &s);
    assert!(e.field == "prompt" && e.message.contains("{outputs}"), "{e}");
    assert_eq!(err(with(json!({"samples": 0})), &s).field, "samples");
    assert_eq!(err(with(json!({"samples": 100})), &s).field, "samples");
    assert_eq!(err(with(json!({"min": 5, "max": 1})), &s).field, "max");
    assert_eq!(err(with(json!({"min": "low"})), &s).field, "min");
    // Temperature is always 0: not configurable.
    assert_eq!(err(with(json!({"temperature": 0.7})), &s).field, "temperature");
    let e = err(base.clone(), &JudgeSettings { model: String::new(), ..s.clone() });
    assert!(e.field == "model" && e.to_string().contains("evaluator \"k\""), "{e}");
    assert_eq!(err(base.clone(), &JudgeSettings::default()).field, "model");
    assert_eq!(err(base.clone(), &JudgeSettings { model: "m".into(), ..Default::default() }).field, "judge.base_url");
    let e = err(base.clone(), &JudgeSettings { base_url: "ftp://api.example.com/v1".into(), ..s.clone() });
    assert!(e.field == "judge.base_url" && e.message.contains("unsupported scheme"), "{e}");
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn per_model_prices() {
    let fake = FakeLlm::start().await;
    fake.then(Reply::content("1").usage(1_000_000, 0));
    let mut s = settings(&fake);
    s.model_prices.insert("judge-large".into(), Prices { prompt_usd_per_mtok: 5.0, completion_usd_per_mtok: 0.0 });
    s.max_tokens = Some(64);
    let out = judge(&s, json!({"model": "judge-large"})).score(&input()).await.unwrap();
    assert!((out.cost.unwrap().usd - 5.0).abs() < 1e-12);
    assert_eq!(fake.requests()[0].body["max_tokens"], 64);
}
