//! The filter language: any text either parses or is a `ParseError`, never a panic. What
//! parses must evaluate against sample runs without panicking, its hints must hold for every
//! run it matches, and its canonical form (`Display`) must parse back to the same filter.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use sextant_core::{ProjectId, RawJson, Run, RunId, Timestamp};
use sextant_filter::{FeedbackRow, Filter, Hint, IdField, Record, RunView, TextField, TimeField};

fn rid(n: u128) -> RunId {
    RunId::from_bytes(n.to_be_bytes())
}

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

/// A finished root LLM run with a bit of everything (as in libs/filter/src/tests.rs), a child
/// of it, and an empty run.
fn runs() -> &'static (Vec<Run>, Vec<FeedbackRow>) {
    static RUNS: OnceLock<(Vec<Run>, Vec<FeedbackRow>)> = OnceLock::new();
    RUNS.get_or_init(|| {
        let mut r = Run::empty(rid(1), ProjectId::from_bytes(0xAAAAu128.to_be_bytes()));
        r.name = Some("ChatModel 1".into());
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
        r.total_cost = Some(0.003);
        r.reference_example_id = Some(rid(0xE1).0);
        let mut child = r.clone();
        child.id = rid(2);
        child.parent_run_id = Some(r.id);
        child.trace_id = Some(r.trace());
        child.run_type = Some("tool".into());
        child.name = Some("search_tool".into());
        child.error = Some("ValueError('boom')".into());
        child.inputs = Some(RawJson::parse(r#"[1, "two", {"three": 3}]"#).unwrap());
        let bare = Run::empty(rid(3), ProjectId::from_bytes([0; 16]));
        let feedback = vec![
            FeedbackRow { key: "user_rating".into(), score: Some(0.1), value: None, source: Some("api".into()) },
            FeedbackRow { key: "user".into(), score: None, value: Some(json!("u1")), source: Some("model".into()) },
        ];
        (vec![r, child, bare], feedback)
    })
}

/// Every hint must hold for a record the filter matches.
fn check_hints(f: &Filter, r: &RunView<'_>) {
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

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    let Ok(f) = sextant_filter::parse(src) else { return };
    let _ = f.needs();
    let (runs, feedback) = runs();
    for (i, run) in runs.iter().enumerate() {
        let rows: &[FeedbackRow] = if i == 1 { &[] } else { feedback };
        let view = RunView::new(run, rows);
        if f.matches(&view) {
            check_hints(&f, &view);
        }
    }
    let shown = f.to_string();
    let again = sextant_filter::parse(&shown).unwrap_or_else(|e| panic!("{src:?} → {shown:?} does not parse: {e}"));
    assert_eq!(again, f, "{src:?} → {shown:?} parses to another filter");
    assert_eq!(again.to_string(), shown, "the canonical form is not a fixed point");
});
