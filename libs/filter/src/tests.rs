//! Evaluation, hints, canonical form and robustness, through the public API.

use serde_json::json;
use sextant_core::{ProjectId, RawJson, Run, RunId, Timestamp};

use super::*;

fn rid(n: u128) -> RunId {
    RunId::from_bytes(n.to_be_bytes())
}

fn uuid_str(n: u128) -> String {
    rid(n).to_string()
}

const PROJECT: u128 = 0xAAAA;

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

/// A finished root LLM run with a bit of everything.
fn run(n: u128) -> Run {
    let mut r = Run::empty(rid(n), ProjectId::from_bytes(PROJECT.to_be_bytes()));
    r.name = Some(format!("ChatModel {n}"));
    r.run_type = Some("llm".into());
    r.start_time = Some(ts("2026-11-25T02:00:00"));
    r.end_time = Some(ts("2026-11-25T02:00:02.5"));
    r.first_token_time = Some(ts("2026-11-25T02:00:00.2"));
    r.tags = vec!["prod".into(), "Team-A".into()];
    r.inputs = Some(RawJson::parse(r#"{"question": "What is the Capital of France?", "n": 3}"#).unwrap());
    r.outputs = Some(RawJson::parse(r#"{"answer": "Paris", "usage": {"total": 12}}"#).unwrap());
    r.extra = json!({"metadata": {"user": "u1", "version": "3", "ls_model": "gpt-4o", "temperature": 0.5, "flag": true, "none": null}})
        .as_object()
        .unwrap()
        .clone();
    r.prompt_tokens = Some(10);
    r.completion_tokens = Some(2);
    r.total_tokens = Some(12);
    r.prompt_cost = Some(0.001);
    r.completion_cost = Some(0.002);
    r.total_cost = Some(0.003);
    r.reference_example_id = Some(rid(0xE1).0);
    r
}

fn child_of(parent: &Run, n: u128) -> Run {
    let mut r = run(n);
    r.parent_run_id = Some(parent.id);
    r.trace_id = Some(parent.trace());
    r.run_type = Some("tool".into());
    r.name = Some("search_tool".into());
    r
}

fn fb(key: &str, score: Option<f64>) -> FeedbackRow {
    FeedbackRow { key: key.into(), score, value: None, source: Some("api".into()) }
}

fn matches(filter: &str, run: &Run, feedback: &[FeedbackRow]) -> bool {
    let f = parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
    let view = RunView::new(run, feedback);
    let m = f.matches(&view);
    check_hints(&f, &view, m);
    m
}

/// Hints must hold for every matching record.
fn check_hints(f: &Filter, r: &RunView<'_>, matched: bool) {
    if !matched {
        return;
    }
    for hint in f.hints() {
        let ok = match &hint {
            Hint::Ids(ids) => ids.contains(&r.id(IdField::Id).unwrap()),
            Hint::TraceIds(ids) => ids.contains(&r.id(IdField::TraceId).unwrap()),
            Hint::ParentRunIds(ids) => r.id(IdField::ParentRunId).is_some_and(|p| ids.contains(&p)),
            Hint::SessionIds(ids) => ids.contains(&r.run().project_id),
            Hint::RunTypes(v) => r.text(TextField::RunType).is_some_and(|t| v.iter().any(|x| x == t)),
            Hint::Names(v) => r.text(TextField::Name).is_some_and(|t| v.iter().any(|x| x == t)),
            Hint::Tag(t) => r.tags().contains(t),
            Hint::IsRoot(b) => r.is_root() == *b,
            Hint::StartTime { min, max } => {
                r.time(TimeField::StartTime).is_some_and(|t| min.is_none_or(|m| t >= m) && max.is_none_or(|m| t <= m))
            }
            Hint::MetadataPair { key, value } => {
                r.run().metadata().and_then(|m| m.get(key)).and_then(|v| v.as_str()) == Some(value.as_str())
            }
        };
        assert!(ok, "{f}: hint {hint:?} does not hold for a matching record");
    }
}

#[test]
fn spec_example_user_rating_below_threshold() {
    let roots: Vec<Run> = (1..=3).map(run).collect();
    let feedback = [
        vec![fb("user_rating", Some(0.1))],
        vec![fb("user_rating", Some(0.2)), fb("other", Some(0.9))],
        vec![fb("user_rating", Some(0.9)), fb("other", Some(0.1))],
    ];
    let filter = r#"and(eq(feedback_key, "user_rating"), lt(feedback_score, 0.4))"#;
    let hits: Vec<usize> = (0..3).filter(|&i| matches(filter, &roots[i], &feedback[i])).collect();
    assert_eq!(hits, vec![0, 1]);
    // Not paired when the comparisons sit in different and()s.
    let unpaired = r#"and(and(eq(feedback_key, "user_rating")), and(lt(feedback_score, 0.4)))"#;
    assert!(matches(unpaired, &roots[2], &feedback[2]));
    assert!(parse(filter).unwrap().needs().feedback);
}

#[test]
fn feedback_fields() {
    let r = run(1);
    let rows = vec![
        FeedbackRow { key: "correct".into(), score: score_from_json(&json!(true)), value: None, source: Some("model".into()) },
        FeedbackRow { key: "label".into(), score: None, value: Some(json!("good")), source: Some("api".into()) },
        FeedbackRow { key: "n".into(), score: Some(0.5), value: Some(json!(7)), source: None },
    ];
    assert!(matches("eq(feedback_key, 'label')", &r, &rows));
    assert!(!matches("eq(feedback_key, 'missing')", &r, &rows));
    assert!(matches("and(eq(feedback_key, 'correct'), eq(feedback_score, true))", &r, &rows));
    assert!(matches("and(eq(feedback_key, 'correct'), eq(feedback_score, 1))", &r, &rows));
    assert!(!matches("and(eq(feedback_key, 'correct'), eq(feedback_score, false))", &r, &rows));
    assert!(matches("and(eq(feedback_key, 'label'), eq(feedback_value, 'good'))", &r, &rows));
    assert!(!matches("and(eq(feedback_key, 'n'), eq(feedback_value, 'good'))", &r, &rows));
    assert!(matches("and(eq(feedback_key, 'n'), gt(feedback_value, 6))", &r, &rows));
    assert!(matches("and(eq(feedback_key, 'label'), eq(feedback_score, null))", &r, &rows));
    assert!(matches("and(eq(feedback_source, 'model'), gte(feedback_score, 1))", &r, &rows));
    assert!(!matches("and(eq(feedback_source, 'api'), gte(feedback_score, 1))", &r, &rows));
    assert!(matches("in(feedback_key, ['x', 'n'])", &r, &rows));
    assert!(matches("and(eq(feedback_key, 'n'), or(gt(feedback_score, 0.9), lt(feedback_score, 0.6)))", &r, &rows));
    assert!(!matches("and(eq(feedback_key, 'correct'), or(gt(feedback_score, 1), lt(feedback_score, 0.6)))", &r, &rows));
    assert!(matches("neq(feedback_key, 'absent')", &r, &rows));
    assert!(!matches("neq(feedback_key, 'label')", &r, &rows));
    assert!(!matches("gt(feedback_score, 0)", &r, &[]));
    assert!(matches("neq(feedback_key, 'x')", &r, &[]));
}

#[test]
fn metadata_pairing_and_negative_forms() {
    let r = run(1);
    let m = |f: &str| matches(f, &r, &[]);
    assert!(m("and(eq(metadata_key, 'user'), eq(metadata_value, 'u1'))"));
    assert!(!m("and(eq(metadata_key, 'user'), eq(metadata_value, 'gpt-4o'))"));
    assert!(m("eq(metadata_value, 'gpt-4o')"));
    // "no key k"
    assert!(m("and(neq(metadata_key, 'absent'))"));
    assert!(!m("and(neq(metadata_key, 'user'))"));
    assert!(!m("neq(metadata_key, 'user')"));
    // "k present with a value other than v"
    assert!(m("and(eq(metadata_key, 'user'), neq(metadata_value, 'u2'))"));
    assert!(!m("and(eq(metadata_key, 'user'), neq(metadata_value, 'u1'))"));
    assert!(!m("and(eq(metadata_key, 'absent'), neq(metadata_value, 'u1'))"));
    assert!(m("and(eq(metadata_key, 'user'), neq(metadata_key, 'absent'))"));
    assert!(!m("and(eq(metadata_key, 'user'), neq(metadata_key, 'version'))"));
    // Threads: some key in the list.
    assert!(m("in(metadata_key, ['session_id', 'conversation_id', 'user'])"));
    assert!(!m("in(metadata_key, ['session_id', 'conversation_id', 'thread_id'])"));
    // Values compare by their JSON type; numeric strings compare with numbers.
    assert!(m("and(eq(metadata_key, 'version'), eq(metadata_value, 3))"));
    assert!(m("and(eq(metadata_key, 'version'), eq(metadata_value, '3'))"));
    assert!(m("and(eq(metadata_key, 'temperature'), lt(metadata_value, 1))"));
    assert!(m("and(eq(metadata_key, 'temperature'), eq(metadata_value, '0.5'))"));
    assert!(!m("and(eq(metadata_key, 'temperature'), gt(metadata_value, 0.5))"));
    assert!(m("and(eq(metadata_key, 'flag'), eq(metadata_value, true))"));
    assert!(m("and(eq(metadata_key, 'none'), eq(metadata_value, null))"));
    assert!(!m("and(eq(metadata_key, 'user'), eq(metadata_value, null))"));
    assert!(m("and(eq(metadata_key, 'user'), gt(metadata_value, 'u0'))"));
    // not() over a pair negates the whole pair.
    assert!(m("not(and(eq(metadata_key, 'user'), eq(metadata_value, 'u2')))"));
    // A run without metadata.
    let bare = Run::empty(rid(9), ProjectId::from_bytes([0; 16]));
    assert!(!matches("eq(metadata_key, 'user')", &bare, &[]));
    assert!(matches("neq(metadata_key, 'user')", &bare, &[]));
    assert!(!matches("exists(metadata, 'user')", &bare, &[]));
}

#[test]
fn inputs_and_outputs_pairing() {
    let r = run(1);
    let m = |f: &str| matches(f, &r, &[]);
    assert!(m("and(eq(input_key, 'n'), eq(input_value, 3))"));
    assert!(!m("and(eq(input_key, 'question'), eq(input_value, 3))"));
    assert!(m("and(eq(output_key, 'answer'), eq(output_value, 'Paris'))"));
    assert!(!m("and(eq(output_key, 'answer'), eq(input_value, 'Paris'))"));
    assert!(m("and(eq(input_key, 'n'), eq(output_key, 'answer'))"));
    assert!(!m("neq(output_key, 'answer')"));
    assert!(m("exists(outputs, 'usage')"));
    assert!(m("has(outputs, '{\"usage\": {\"total\": 12.0}}')"));
    let f = parse("and(eq(input_key, 'n'), eq(output_key, 'answer'))").unwrap();
    assert_eq!(f.needs(), Needs { feedback: false, inputs: true, outputs: true });
    assert_eq!(parse("eq(metadata_key, 'a')").unwrap().needs(), Needs::default());
    assert_eq!(parse("search('x')").unwrap().needs(), Needs { feedback: false, inputs: true, outputs: true });
    assert_eq!(parse("not(search(outputs, 'x'))").unwrap().needs(), Needs { feedback: false, inputs: false, outputs: true });
    // Inputs that are not an object have no keys; corrupt stored text reads as absent.
    let mut odd = run(2);
    odd.inputs = Some(RawJson::parse("[1, 2]").unwrap());
    assert!(!matches("eq(input_key, '0')", &odd, &[]));
    assert!(matches("search(inputs, '2')", &odd, &[]));
    let mut corrupt = run(3);
    corrupt.outputs = Some(serde_json::from_str::<RawJson>("\"{not json\"").unwrap());
    assert!(!matches("search(outputs, 'not')", &corrupt, &[]));
}

#[test]
fn scalar_fields() {
    let root = run(1);
    let child = child_of(&root, 2);
    let m = |f: &str| matches(f, &root, &[]);
    assert!(m(&format!("eq(id, '{}')", uuid_str(1))));
    assert!(m(&format!("in(id, ['{}', '{}'])", uuid_str(5), uuid_str(1))));
    assert!(m(&format!("eq(trace_id, '{}')", uuid_str(1))));
    assert!(m(&format!("eq(session_id, '{}')", uuid_str(PROJECT))));
    assert!(m(&format!("eq(reference_example_id, '{}')", uuid_str(0xE1))));
    assert!(m("eq(parent_run_id, null)"));
    assert!(matches(&format!("eq(parent_run_id, '{}')", uuid_str(1)), &child, &[]));
    assert!(matches(&format!("eq(trace_id, '{}')", uuid_str(1)), &child, &[]));
    assert!(m("eq(name, 'ChatModel 1')"));
    assert!(m("neq(name, 'other')"));
    assert!(m("in(run_type, ['chain', 'llm'])"));
    assert!(m("eq(status, 'success')"));
    assert!(m("gt(latency, 2)"));
    assert!(m("gt(latency, '2s')"));
    assert!(m("lt(latency, '2501ms')"));
    assert!(!m("gt(latency, '1m')"));
    assert!(m("eq(latency, 2.5)"));
    assert!(m("lt(first_token_time, '0.3s')"));
    assert!(m("gte(first_token_time, 0.2)"));
    assert!(m("eq(total_tokens, 12)"));
    assert!(m("gt(prompt_tokens, 9)"));
    assert!(m("lte(completion_tokens, 2)"));
    assert!(m("lt(total_cost, 0.01)"));
    assert!(m("gt(prompt_cost, 0)"));
    assert!(m("eq(completion_cost, 0.002)"));
    assert!(m("eq(execution_order, 1)"));
    assert!(matches("eq(execution_order, 2)", &child, &[]));
    assert!(m("eq(is_root, true)"));
    assert!(matches("eq(is_root, false)", &child, &[]));
    assert!(m("gte(start_time, '2026-11-25T02:00:00')"));
    assert!(!m("gt(start_time, '2026-11-25T02:00:00')"));
    assert!(m("lt(start_time, '2026-11-25T03:00:00+00:00')"));
    assert!(m("gt(start_time, '2026-11-25T03:30:00+02:00')"));
    assert!(m("eq(end_time, '2026-11-25T02:00:02.500')"));
    assert!(m("neq(end_time, null)"));
    assert!(m("has(tags, 'prod')"));
    assert!(!m("has(tags, 'PROD')"));
    assert!(m("in(tags, ['x', 'Team-A'])"));
    assert!(!m("in(tags, ['x'])"));
    assert!(m("search(tags, 'team-a')"));
}

#[test]
fn missing_values_and_error() {
    let mut pending = Run::empty(rid(7), ProjectId::from_bytes([0; 16]));
    pending.start_time = Some(ts("2026-01-01"));
    let m = |f: &str| matches(f, &pending, &[]);
    assert!(m("eq(status, 'pending')"));
    assert!(m("eq(end_time, null)"));
    assert!(m("eq(latency, null)"));
    assert!(!m("gt(latency, 0)"));
    assert!(!m("lt(latency, 1000)"));
    assert!(!m("eq(latency, 0)"));
    assert!(m("neq(latency, 0)"));
    assert!(!m("eq(name, 'x')"));
    assert!(!m("in(name, ['x'])"));
    assert!(m("in(name, ['x', null])"));
    assert!(m("eq(error, null)"));
    assert!(m("eq(error, false)"));
    assert!(!m("neq(error, null)"));
    assert!(!m("has(tags, 'x')"));
    assert!(!m("search('x')"));

    let mut failed = run(8);
    failed.error = Some("ValueError('Boom')".into());
    let m = |f: &str| matches(f, &failed, &[]);
    assert!(m("neq(error, null)"));
    assert!(m("eq(error, true)"));
    assert!(!m("eq(error, false)"));
    assert!(m("eq(status, 'error')"));
    assert!(m("search(error, 'boom')"));
    assert!(m("eq(error, \"ValueError('Boom')\")"));

    // An empty error string is no error.
    let mut empty = run(9);
    empty.error = Some(String::new());
    assert!(matches("eq(error, null)", &empty, &[]));
}

#[test]
fn thread_id_follows_langsmiths_precedence() {
    let with = |meta: serde_json::Value| {
        let mut r = run(10);
        r.extra = json!({ "metadata": meta }).as_object().unwrap().clone();
        r
    };
    let all = with(json!({"thread_id": "t1", "session_id": "s1", "conversation_id": "c1"}));
    assert_eq!(thread_id(&all), Some("t1"));
    assert!(matches("eq(thread_id, 't1')", &all, &[]));
    assert!(!matches("eq(thread_id, 's1')", &all, &[]));
    let session = with(json!({"session_id": "s1", "conversation_id": "c1"}));
    assert!(matches("eq(thread_id, \"s1\")", &session, &[]));
    assert!(matches("in(thread_id, ['x', 's1'])", &session, &[]));
    let conversation = with(json!({"thread_id": "", "session_id": 7, "conversation_id": "c1"}));
    assert!(matches("eq(thread_id, 'c1')", &conversation, &[]));
    let none = with(json!({"user": "u1"}));
    assert_eq!(thread_id(&none), None);
    assert!(matches("eq(thread_id, null)", &none, &[]));
    assert!(!matches("eq(thread_id, 'c1')", &none, &[]));
    assert!(matches("and(eq(thread_id, 't1'), eq(run_type, 'llm'))", &all, &[]));
    assert!(parse("eq(thread_id, 3)").unwrap_err().message.contains("thread_id is compared with a string"));
}

#[test]
fn search_has_exists() {
    let r = run(1);
    let m = |f: &str| matches(f, &r, &[]);
    assert!(m("search('chatmodel')"));
    assert!(m("search('capital of FRANCE')"));
    assert!(m("search('paris')"));
    assert!(m("search('GPT-4')"));
    assert!(m("search('team-a')"));
    assert!(!m("search('question')"), "keys are not searched");
    assert!(!m("search('nowhere')"));
    assert!(m("search(name, 'MODEL')"));
    assert!(!m("search(name, 'paris')"));
    assert!(m("search(inputs, 'france')"));
    assert!(!m("search(outputs, 'france')"));
    assert!(m("search(outputs, '12')"));
    assert!(m("search(metadata, 'U1')"));
    assert!(m("search(run_type, 'LL')"));
    assert!(m("search('')"));
    let mut uni = run(2);
    uni.name = Some("ÉCOLE Straße".into());
    assert!(matches("search('école')", &uni, &[]));
    assert!(matches("search('STRAßE')", &uni, &[]));

    assert!(m("has(metadata, '{\"user\": \"u1\"}')"));
    assert!(m("has(metadata, '{\"user\": \"u1\", \"temperature\": 0.5, \"flag\": true}')"));
    assert!(!m("has(metadata, '{\"user\": \"u2\"}')"));
    assert!(!m("has(metadata, '{\"user\": \"u1\", \"absent\": 1}')"));
    assert!(m("has(metadata, '{}')"));
    assert!(m("has(inputs, '{\"n\": 3.0}')"));
    assert!(m("exists(metadata, 'none')"));
    assert!(!m("exists(metadata, 'absent')"));
    assert!(m("exists(inputs, 'question')"));
}

#[test]
fn logic() {
    let r = run(1);
    let m = |f: &str| matches(f, &r, &[]);
    assert!(m("and(eq(run_type, 'llm'), has(tags, 'prod'))"));
    assert!(!m("and(eq(run_type, 'llm'), has(tags, 'dev'))"));
    assert!(m("or(eq(run_type, 'chain'), has(tags, 'prod'))"));
    assert!(!m("or(eq(run_type, 'chain'), has(tags, 'dev'))"));
    assert!(m("not(eq(run_type, 'chain'))"));
    assert!(m("not(not(eq(run_type, 'llm')))"));
    assert!(m("or(eq(run_type, 'chain'))") == m("eq(run_type, 'chain')"));
}

/// A filter looks at one run: trace_filter is evaluated on the root, tree_filter on every run
/// of the trace, and neither makes a run's result depend on another run.
#[test]
fn evaluation_is_per_run() {
    let root = run(1);
    let tool = child_of(&root, 2);
    let trace = [&root, &tool];
    let tree_filter = parse("eq(name, 'search_tool')").unwrap();
    let trace_filter = parse("eq(run_type, 'llm')").unwrap();
    let filter = parse("eq(is_root, false)").unwrap();

    let views: Vec<RunView<'_>> = trace.iter().map(|r| RunView::new(r, &[])).collect();
    let tree_ok = views.iter().any(|v| tree_filter.matches(v));
    let trace_ok = trace_filter.matches(&views[0]);
    let selected: Vec<RunId> = views.iter().filter(|v| filter.matches(*v) && tree_ok && trace_ok).map(|v| v.run().id).collect();
    assert_eq!(selected, vec![tool.id]);
    // The root alone does not match the tree filter, and the child matches it alone.
    assert!(!tree_filter.matches(&views[0]));
    assert!(tree_filter.matches(&RunView::new(&tool, &[])));
    // Also through a trait object.
    let dynamic: &dyn Record = &views[1];
    assert!(filter.matches(dynamic));
}

#[test]
fn hints_are_read_from_the_conjunctive_top_level() {
    let h = |f: &str| parse(f).unwrap().hints();
    let t = |s: &str| Some(ts(s));
    assert_eq!(
        h(&format!(
            "and(eq(trace_id, '{}'), eq(run_type, 'llm'), eq(name, 'x'), has(tags, 't'), eq(is_root, true), \
             gte(start_time, '2026-01-01'), lt(start_time, '2026-02-01'), gt(start_time, '2026-01-05'))",
            uuid_str(1)
        )),
        vec![
            Hint::TraceIds(vec![rid(1)]),
            Hint::RunTypes(vec!["llm".into()]),
            Hint::Names(vec!["x".into()]),
            Hint::Tag("t".into()),
            Hint::IsRoot(true),
            Hint::StartTime { min: t("2026-01-05"), max: t("2026-02-01") },
        ]
    );
    assert_eq!(h(&format!("in(id, ['{}', '{}'])", uuid_str(1), uuid_str(2))), vec![Hint::Ids(vec![rid(1), rid(2)])]);
    assert_eq!(h(&format!("eq(session_id, '{}')", uuid_str(3))), vec![Hint::SessionIds(vec![ProjectId::from_bytes(3u128.to_be_bytes())])]);
    assert_eq!(h(&format!("eq(parent_run_id, '{}')", uuid_str(3))), vec![Hint::ParentRunIds(vec![rid(3)]), Hint::IsRoot(false)]);
    assert_eq!(h("eq(parent_run_id, null)"), vec![Hint::IsRoot(true)]);
    assert_eq!(h("neq(parent_run_id, null)"), vec![Hint::IsRoot(false)]);
    assert_eq!(h("eq(execution_order, 1)"), vec![Hint::IsRoot(true)]);
    assert_eq!(h("neq(is_root, true)"), vec![Hint::IsRoot(false)]);
    // Nested and() is still conjunctive; sets intersect.
    assert_eq!(h("and(in(run_type, ['llm', 'chain']), and(in(run_type, ['chain', 'tool'])))"), vec![Hint::RunTypes(vec!["chain".into()])]);
    // or() keeps what every branch constrains.
    assert_eq!(
        h("or(eq(run_type, 'llm'), and(eq(run_type, 'chain'), has(tags, 'x')))"),
        vec![Hint::RunTypes(vec!["llm".into(), "chain".into()])]
    );
    assert_eq!(
        h("or(and(has(tags, 'a'), gt(start_time, '2026-01-02')), and(has(tags, 'a'), gt(start_time, '2026-01-01')))"),
        vec![Hint::Tag("a".into()), Hint::StartTime { min: t("2026-01-01"), max: None }]
    );
    // Nothing is read through not(), neq, or an or() with an unconstrained branch.
    assert_eq!(h("not(eq(run_type, 'llm'))"), vec![]);
    assert_eq!(h("neq(run_type, 'llm')"), vec![]);
    assert_eq!(h("or(eq(run_type, 'llm'), has(tags, 'x'))"), vec![]);
    assert_eq!(h("in(parent_run_id, [null])"), vec![Hint::IsRoot(true)]);
    assert_eq!(h(&format!("in(parent_run_id, [null, '{}'])", uuid_str(1))), vec![]);
    assert_eq!(h("and(eq(feedback_key, 'a'), eq(metadata_key, 'b'))"), vec![]);
    // A metadata key and string value paired in one and() can use an index ...
    let pair = |k: &str, v: &str| Hint::MetadataPair { key: k.into(), value: v.into() };
    assert_eq!(h("and(eq(metadata_key, 'user_id'), eq(metadata_value, 'u1'))"), vec![pair("user_id", "u1")]);
    assert_eq!(
        h("and(eq(run_type, 'llm'), and(eq(metadata_key, 'k'), eq(metadata_value, 'v')))"),
        vec![Hint::RunTypes(vec!["llm".into()]), pair("k", "v")]
    );
    // ... but not when the value may compare as a number or boolean, or the pair is ambiguous.
    assert_eq!(h("and(eq(metadata_key, 'n'), eq(metadata_value, '42'))"), vec![]);
    assert_eq!(h("and(eq(metadata_key, 'b'), eq(metadata_value, 'true'))"), vec![]);
    assert_eq!(h("and(eq(metadata_key, 'a'), eq(metadata_key, 'b'), eq(metadata_value, 'v'))"), vec![]);
    assert_eq!(h("and(eq(metadata_key, 'a'), neq(metadata_value, 'v'))"), vec![]);
    assert_eq!(h("or(and(eq(metadata_key, 'a'), eq(metadata_value, 'v')), eq(run_type, 'llm'))"), vec![]);
}

/// Every filter of a corpus, on every run of a sample: matching records satisfy the hints.
#[test]
fn hints_hold_for_every_match() {
    let root = run(1);
    let child = child_of(&root, 2);
    let mut other = run(3);
    other.run_type = Some("chain".into());
    other.tags = vec!["dev".into()];
    other.start_time = Some(ts("2025-01-01"));
    let fbk = [fb("user_rating", Some(0.1))];
    let corpus = corpus();
    let mut matched = 0;
    for src in &corpus {
        for r in [&root, &child, &other] {
            if matches(src, r, &fbk) {
                matched += 1;
            }
        }
    }
    assert!(matched > corpus.len() / 2, "the corpus should exercise matches ({matched})");
}

fn corpus() -> Vec<String> {
    let mut v: Vec<String> = [
        r#"and(eq(feedback_key, "user_rating"), lt(feedback_score, 0.4))"#,
        "and(eq(run_type, 'llm'), gt(latency, '1.5s'), has(tags, 'prod'))",
        "or(eq(run_type, 'tool'), eq(run_type, 'chain'))",
        "and(gte(start_time, '2026-11-25'), lte(start_time, '2026-11-26'))",
        "eq(start_time, '2026-11-25T02:00:00')",
        "and(eq(is_root, false), eq(name, 'search_tool'))",
        "eq(execution_order, 2)",
        "neq(parent_run_id, null)",
        "and(eq(metadata_key, 'user'), neq(metadata_value, 'u2'))",
        "and(eq(metadata_key, 'user'), eq(metadata_value, 'u1'))",
        "and(has(tags, 'prod'), and(eq(metadata_key, 'user'), eq(metadata_value, 'u1')))",
        "and(neq(metadata_key, 'k'))",
        "in(metadata_key, ['session_id', 'conversation_id', 'thread_id'])",
        "has(metadata, '{\"foo\":\"bar\"}')",
        "exists(metadata, 'user')",
        "search('paris')",
        "search(inputs, 'france')",
        "not(or(has(tags, 'dev'), eq(error, true)))",
        "in(run_type, ['llm', 'tool'])",
        "or(and(has(tags, 'prod'), gt(start_time, '2026-01-01')), has(tags, 'dev'))",
        "and(in(tags, ['prod', 'dev']), lt(total_cost, 1e-2), gte(total_tokens, -5))",
        "and(eq(input_key, 'n'), or(eq(input_value, 3), eq(input_value, '4')))",
        "eq(status, 'success')",
        "lt(first_token_time, \"200ms\")",
        "search(error, 'it\\'s \"quoted\"\\n\\u00e9')",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!("and(eq(trace_id, '{}'), in(id, ['{}', '{}']))", uuid_str(1), uuid_str(1), uuid_str(2)));
    v.push(format!("and(eq(session_id, '{}'), eq(parent_run_id, '{}'))", uuid_str(PROJECT), uuid_str(1)));
    v.push(format!("eq(reference_example_id, \"{}\")", uuid_str(0xE1).to_uppercase()));
    v
}

#[test]
fn canonical_form_round_trips() {
    for src in corpus() {
        let a = parse(&src).unwrap();
        let shown = a.to_string();
        let b = parse(&shown).unwrap_or_else(|e| panic!("{src} → {shown}: {e}"));
        assert_eq!(a, b, "{src} → {shown}");
        assert_eq!(b.to_string(), shown, "display is a fixed point");
    }
    assert_eq!(
        parse("AND( eq(latency,'1.5s') , Has(tags , 'a'),eq(error,TRUE),eq(feedback_score, true))").unwrap().to_string(),
        r#"and(eq(latency, 1.5), has(tags, "a"), neq(error, null), eq(feedback_score, 1))"#
    );
    assert_eq!(
        parse("gt(start_time, '2026-11-25T03:25:38.269290+01:00')").unwrap().to_string(),
        r#"gt(start_time, "2026-11-25T02:25:38.269290")"#
    );
}

/// A fuzz regression: `src` parses, and its canonical form parses back to the same filter.
fn assert_round_trips(src: &str) {
    let a = parse(src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
    let shown = a.to_string();
    let b = parse(&shown).unwrap_or_else(|e| panic!("{src:?} → {shown:?}: {e}"));
    assert_eq!(a, b, "{src:?} → {shown:?}");
    assert_eq!(b.to_string(), shown, "display is a fixed point");
}

/// fuzz/regressions/filter/float-roundtrip-has-metadata: serde_json parsed some numbers in
/// `has(metadata, '…')` to a neighbouring float (the canonical form then named another
/// number) until its `float_roundtrip` feature was enabled.
#[test]
fn fuzz_regression_float_in_has_metadata() {
    assert_round_trips(include_str!("../../../fuzz/regressions/filter/float-roundtrip-has-metadata"));
    assert_round_trips(r#"has(metadata, '{"foo": 5.1e+93, "p": 0.30000000000000004}')"#);
}

/// fuzz/regressions/filter/negative-year-timestamp: `Timestamp::parse` accepted a year before
/// 0000 (`-2206-11-25T03:25:38-0900`), which `to_iso` wrote in a form `parse` refuses; years
/// outside 0000-9999 UTC are now refused.
#[test]
fn fuzz_regression_negative_year_timestamp() {
    let src = include_str!("../../../fuzz/regressions/filter/negative-year-timestamp");
    if parse(src).is_ok() {
        assert_round_trips(src);
    }
    for t in ["-0001-01-01", "0000-01-01T00:30:00+01:00"] {
        let src = format!("gt(start_time, '{t}')");
        if parse(&src).is_ok() {
            assert_round_trips(&src);
        }
    }
}

/// A small deterministic generator (xorshift) so the test needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Parsing odd inputs never panics; whatever parses evaluates, and its canonical form
/// parses back to the same filter.
#[test]
fn no_panic_on_odd_input() {
    let fragments = [
        "and(",
        "or(",
        "not(",
        "eq(",
        "neq(",
        "gt(",
        "lte(",
        "in(",
        "has(",
        "search(",
        "exists(",
        ")",
        "(",
        "[",
        "]",
        ",",
        " ",
        "name",
        "tags",
        "latency",
        "start_time",
        "metadata",
        "feedback_key",
        "feedback_score",
        "metadata_value",
        "input_key",
        "error",
        "is_root",
        "trace_id",
        "'",
        "\"",
        "'x'",
        "\"5s\"",
        "'2026-01-01'",
        "'{\"a\":1}'",
        "\\",
        "\\u",
        "\\ud800",
        "1",
        "-",
        ".",
        "1e",
        "1e309",
        "-0",
        "99999999999999999999999999",
        "0.1",
        "null",
        "TRUE",
        "é",
        "😀",
        "\u{0}",
        "\n",
        "\u{202e}",
        "[1, 2]",
        "'00000000-0000-0000-0000-000000000001'",
        "eq(name, 'x')",
    ];
    let root = run(1);
    let child = child_of(&root, 2);
    let bare = Run::empty(rid(3), ProjectId::from_bytes([0; 16]));
    let rows = [fb("user_rating", Some(0.1)), FeedbackRow { key: "user".into(), value: Some(json!("u1")), ..FeedbackRow::default() }];
    let views = [RunView::new(&root, &rows), RunView::new(&child, &[]), RunView::new(&bare, &rows)];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut parsed = 0;
    let check = |src: &str, parsed: &mut usize| {
        if let Ok(f) = parse(src) {
            *parsed += 1;
            for view in &views {
                check_hints(&f, view, f.matches(view));
            }
            let _ = f.needs();
            assert_eq!(parse(&f.to_string()).as_ref(), Ok(&f), "{src:?}");
        }
    };
    for _ in 0..20_000 {
        let n = 1 + rng.below(12);
        let src: String = (0..n).map(|_| fragments[rng.below(fragments.len())]).collect();
        check(&src, &mut parsed);
    }
    // Random bytes, read lossily as text.
    for _ in 0..5_000 {
        let bytes: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
        check(&String::from_utf8_lossy(&bytes), &mut parsed);
    }
    // Grammar-directed filters: mostly well-formed, often ill-typed.
    for _ in 0..20_000 {
        let mut src = String::new();
        gen_call(&mut rng, &mut src, 0);
        check(&src, &mut parsed);
    }
    // Every prefix of valid filters, and random edits of them.
    for src in corpus() {
        for (i, _) in src.char_indices() {
            check(&src[..i], &mut parsed);
        }
        for _ in 0..200 {
            let mut edited = src.clone();
            let at = rng.below(edited.len() + 1);
            if edited.is_char_boundary(at) {
                edited.insert_str(at, fragments[rng.below(fragments.len())]);
            }
            let cut = rng.below(edited.len() + 1);
            if rng.below(2) == 0 && edited.is_char_boundary(cut) {
                let end = (cut + rng.below(4)).min(edited.len());
                if edited.is_char_boundary(end) {
                    edited.replace_range(cut..end, "");
                }
            }
            check(&edited, &mut parsed);
        }
    }
    // Extremes.
    for src in [
        "(".repeat(100_000),
        "not(".repeat(10_000),
        format!("in(name, {}", "[".repeat(10_000)),
        format!("and({})", "has(tags,'a'),".repeat(4000) + "has(tags,'a')"),
        format!("eq(total_tokens, {})", "9".repeat(400)),
        format!("eq(total_tokens, 0.{}1)", "0".repeat(400)),
        format!("eq(name, '{}')", "\\u00e9".repeat(1000)),
    ] {
        check(&src, &mut parsed);
    }
    assert!(parsed > 2_000, "the generators should produce valid filters too ({parsed})");
}

/// Appends a random call: known functions and fields, literals of every kind.
fn gen_call(rng: &mut Rng, out: &mut String, depth: usize) {
    const FUNCS: &[&str] = &["eq", "neq", "gt", "gte", "lt", "lte", "in", "has", "search", "exists", "and", "or", "not"];
    let fields: Vec<&str> = Field::names().collect();
    let literals = [
        "null",
        "true",
        "false",
        "0",
        "-1.5",
        "0.4",
        "1e3",
        "'x'",
        "\"u1\"",
        "'5s'",
        "'200ms'",
        "'2026-11-25T02:00:00'",
        "'success'",
        "'{\"user\": \"u1\"}'",
        "'user'",
        "'00000000-0000-0000-0000-000000000001'",
        "'prod'",
    ];
    let func = FUNCS[rng.below(if depth > 4 { 10 } else { FUNCS.len() })];
    out.push_str(func);
    out.push('(');
    match func {
        "and" | "or" | "not" => {
            for i in 0..1 + rng.below(3) {
                if i > 0 {
                    out.push_str(", ");
                }
                gen_call(rng, out, depth + 1);
            }
        }
        "search" if rng.below(2) == 0 => out.push_str(literals[rng.below(literals.len())]),
        _ => {
            out.push_str(fields[rng.below(fields.len())]);
            out.push_str(", ");
            if func == "in" {
                out.push('[');
                for i in 0..rng.below(3) {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(literals[rng.below(literals.len())]);
                }
                out.push(']');
            } else {
                out.push_str(literals[rng.below(literals.len())]);
            }
        }
    }
    out.push(')');
}
