//! Rule evaluators through the public API: each type passing and failing, the comments that
//! explain the score, text selection (`field`, `reference_field`), and config errors that name
//! the field.

use serde_json::{json, Value};
use sextant_evaluator::scorers::{
    parse_evaluator, parse_evaluators, ConfigError, JudgeSettings, ScoreError, ScoreErrorKind, ScoreInput, ScoreOutput,
};

fn eval(config: Value) -> sextant_evaluator::scorers::Evaluator {
    parse_evaluator(&config, &JudgeSettings::default()).unwrap_or_else(|e| panic!("{config}: {e}"))
}

fn config_err(config: Value) -> ConfigError {
    parse_evaluator(&config, &JudgeSettings::default()).expect_err("config should be rejected")
}

fn run(config: Value, outputs: Value, reference: Option<Value>) -> Result<ScoreOutput, ScoreError> {
    let e = eval(config);
    let input = ScoreInput { inputs: json!({"question": "q"}), outputs, reference };
    futures::executor::block_on(e.score(&input))
}

fn score(config: Value, outputs: Value, reference: Option<Value>) -> (f64, String) {
    let out = run(config, outputs, reference).unwrap();
    assert!(out.cost.is_none());
    (out.score, out.comment)
}

#[test]
fn keywords_score_the_fraction_present_and_list_the_missing() {
    let cfg = json!({"type": "keywords", "key": "mentions_policy", "keywords": ["refund", "30 days", "receipt"]});
    let (s, c) = score(cfg.clone(), json!({"answer": "Refunds are issued within 30 DAYS."}), None);
    assert!((s - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(c, "2/3 keywords present; missing: \"receipt\"");
    let (s, c) = score(cfg.clone(), json!("Bring the receipt; refund in 30 days"), None);
    assert_eq!((s, c.as_str()), (1.0, "all 3 keywords present"));

    let cs = json!({"type": "keywords", "key": "k", "keywords": ["Refund"], "case_sensitive": true});
    assert_eq!(score(cs, json!("refund"), None).0, 0.0);
    let ww = json!({"type": "keywords", "key": "k", "keywords": ["cat"], "whole_words": true});
    assert_eq!(score(ww.clone(), json!("category"), None).0, 0.0);
    assert_eq!(score(ww, json!("the cat."), None).0, 1.0);
}

#[test]
fn forbidden_phrases() {
    let cfg = json!({"type": "forbidden", "key": "no_disclaimers", "phrases": ["as an AI", "I cannot"]});
    let (s, c) = score(cfg.clone(), json!({"output": "Sure, here it is."}), None);
    assert_eq!((s, c.as_str()), (1.0, "none of the 2 forbidden phrases present"));
    let (s, c) = score(cfg, json!({"output": "As an AI language model, I cannot..."}), None);
    assert_eq!((s, c.as_str()), (0.0, "forbidden phrases present: \"as an AI\", \"I cannot\""));
}

#[test]
fn length_bounds_in_chars_or_words() {
    let chars = json!({"type": "length", "key": "len", "min": 3, "max": 10});
    assert_eq!(score(chars.clone(), json!("héllo"), None), (1.0, "5 chars: within bounds (3..=10)".into()));
    assert_eq!(score(chars.clone(), json!("hi"), None), (0.0, "2 chars: fewer than the minimum (3..=10)".into()));
    assert_eq!(score(chars, json!("far too long here"), None).0, 0.0);
    let words = json!({"type": "length", "key": "len", "unit": "words", "max": 3});
    assert_eq!(score(words.clone(), json!("one two  three"), None), (1.0, "3 words: within bounds (at most 3)".into()));
    assert_eq!(score(words, json!("one two three four"), None), (0.0, "4 words: more than the maximum (at most 3)".into()));

    assert_eq!(config_err(json!({"type": "length", "key": "len"})).field, "min");
    assert_eq!(config_err(json!({"type": "length", "key": "len", "min": 5, "max": 2})).field, "max");
    assert_eq!(config_err(json!({"type": "length", "key": "len", "min": -1})).field, "min");
    assert_eq!(config_err(json!({"type": "length", "key": "len", "max": 2, "unit": "tokens"})).field, "unit");
}

#[test]
fn regex_match_and_no_match() {
    let m = json!({"type": "regex", "key": "has_ticket", "pattern": r"TICKET-\d+"});
    let (s, c) = score(m.clone(), json!("see TICKET-42 now"), None);
    assert_eq!((s, c.as_str()), (1.0, "matches /TICKET-\\d+/: \"TICKET-42\" at char 4"));
    assert_eq!(score(m, json!("no ticket"), None).0, 0.0);
    let ci = json!({"type": "regex", "key": "k", "pattern": "ticket", "case_insensitive": true});
    assert_eq!(score(ci, json!("TICKET"), None).0, 1.0);
    let nm = json!({"type": "regex", "key": "no_email", "pattern": r"\S+@\S+", "mode": "no_match"});
    assert_eq!(score(nm.clone(), json!("no address"), None).0, 1.0);
    let (s, c) = score(nm, json!("mail bob@example.com"), None);
    assert_eq!(s, 0.0);
    assert!(c.contains("must not match") && c.contains("bob@example.com"), "{c}");

    let e = config_err(json!({"type": "regex", "key": "k", "pattern": "(unclosed"}));
    assert!(e.field == "pattern" && e.message.contains("not a valid regex"), "{e}");
    let e = config_err(json!({"type": "regex", "key": "k", "pattern": r"\w{1000}{1000}"}));
    assert!(e.field == "pattern" && e.message.contains("size limit"), "{e}");
    assert_eq!(config_err(json!({"type": "regex", "key": "k", "pattern": "a".repeat(5000)})).field, "pattern");
    assert_eq!(config_err(json!({"type": "regex", "key": "k", "pattern": "a", "mode": "search"})).field, "mode");
}

#[test]
fn json_validity() {
    let cfg = json!({"type": "json", "key": "valid_json"});
    assert_eq!(score(cfg.clone(), json!({"output": "{\"a\": [1, 2]}"}), None), (1.0, "valid JSON (an object)".into()));
    let (s, c) = score(cfg.clone(), json!({"output": "{\"a\": [1, 2"}), None);
    assert!(s == 0.0 && c.starts_with("not valid JSON"), "{c}");
    // Fenced JSON is not JSON, unless fences are stripped.
    let fenced = json!({"output": "```json\n{\"a\": 1}\n```"});
    assert_eq!(score(cfg, fenced.clone(), None).0, 0.0);
    assert_eq!(score(json!({"type": "json", "key": "k", "strip_fences": true}), fenced, None).0, 1.0);
    // Structured outputs already are JSON.
    let (s, c) = score(json!({"type": "json", "key": "k", "field": "result"}), json!({"result": {"a": 1}}), None);
    assert!(s == 1.0 && c.contains("already structured"), "{c}");
}

#[test]
fn json_schema_conformance() {
    let schema = json!({"type": "object", "required": ["name", "age"], "properties": {"age": {"type": "integer", "minimum": 0}}});
    let cfg = json!({"type": "json_schema", "key": "schema_ok", "schema": schema});
    assert_eq!(score(cfg.clone(), json!({"output": "{\"name\": \"a\", \"age\": 3}"}), None), (1.0, "conforms to the schema".into()));
    let (s, c) = score(cfg.clone(), json!({"output": "{\"name\": \"a\", \"age\": \"x\"}"}), None);
    assert!(s == 0.0 && c.contains("at /age") && c.contains("integer"), "{c}");
    let (s, c) = score(cfg.clone(), json!({"output": "{\"age\": -1}"}), None);
    assert!(s == 0.0 && c.contains("at the root") && c.contains("at /age") && c.contains("; "), "{c}");
    let (s, c) = score(cfg.clone(), json!({"output": "not json"}), None);
    assert!(s == 0.0 && c.starts_with("not valid JSON"), "{c}");
    // Structured outputs are validated as they are.
    assert_eq!(score(cfg, json!({"name": "a", "age": 3}), None).0, 1.0);

    let e = config_err(json!({"type": "json_schema", "key": "k", "schema": {"type": "no-such-type"}}));
    assert!(e.field == "schema" && e.message.contains("not a valid JSON Schema"), "{e}");
    assert_eq!(config_err(json!({"type": "json_schema", "key": "k", "schema": "string"})).field, "schema");
    assert_eq!(config_err(json!({"type": "json_schema", "key": "k"})).field, "schema");
}

#[test]
fn exact_match_against_the_reference() {
    let cfg = json!({"type": "exact_match", "key": "exact"});
    assert_eq!(score(cfg.clone(), json!({"answer": " Paris\n"}), Some(json!({"answer": "Paris"}))), (1.0, "matches the reference".into()));
    let (s, c) = score(cfg.clone(), json!({"answer": "paris"}), Some(json!({"answer": "Paris"})));
    assert_eq!((s, c.as_str()), (0.0, "differs from the reference at char 0: expected \"Paris\", got \"paris\""));
    let ci = json!({"type": "exact_match", "key": "k", "case_sensitive": false, "collapse_whitespace": true});
    assert_eq!(score(ci, json!("new   YORK"), Some(json!("New York"))).0, 1.0);
    // Structured values compare as JSON, whatever the key order.
    let st = json!({"type": "exact_match", "key": "k"});
    assert_eq!(score(st.clone(), json!({"a": 1, "b": [1, 2]}), Some(json!({"b": [1, 2], "a": 1}))).0, 1.0);
    assert_eq!(score(st, json!({"a": 1, "b": 2}), Some(json!({"a": 1, "b": 3}))).0, 0.0);

    let e = run(cfg, json!("Paris"), None).unwrap_err();
    assert_eq!((e.key.as_str(), e.kind), ("exact", ScoreErrorKind::Input));
    assert!(e.message.contains("no reference output"), "{}", e.message);
}

#[test]
fn fuzzy_match_similarity_and_threshold() {
    let cfg = json!({"type": "fuzzy_match", "key": "fuzzy"});
    let (s, c) = score(cfg.clone(), json!("The capital is Paris"), Some(json!("the capital is paris.")));
    assert!(s > 0.9 && s < 1.0, "{s}");
    assert!(c.starts_with("normalized Levenshtein similarity to the reference: 0.95"), "{c}");
    assert!(score(cfg, json!("completely different"), Some(json!("nothing alike here"))).0 < 0.5);

    let th = json!({"type": "fuzzy_match", "key": "k", "threshold": 0.8});
    let (s, c) = score(th.clone(), json!("The capital is Paris"), Some(json!("the capital is paris.")));
    assert!(s == 1.0 && c.contains("at least the threshold 0.8"), "{c}");
    let (s, c) = score(th, json!("Lyon"), Some(json!("Paris")));
    assert!(s == 0.0 && c.contains("below the threshold 0.8"), "{c}");

    let ts = json!({"type": "fuzzy_match", "key": "k", "method": "token_set"});
    assert_eq!(score(ts, json!("Paris is the capital"), Some(json!("the capital is Paris"))).0, 1.0);

    let small = json!({"type": "fuzzy_match", "key": "k", "max_chars": 10});
    let e = run(small, json!("a long answer here"), Some(json!("x"))).unwrap_err();
    assert!(e.kind == ScoreErrorKind::Input && e.message.contains("max_chars"), "{}", e.message);

    assert_eq!(config_err(json!({"type": "fuzzy_match", "key": "k", "threshold": 1.5})).field, "threshold");
    assert_eq!(config_err(json!({"type": "fuzzy_match", "key": "k", "method": "soundex"})).field, "method");
    assert_eq!(config_err(json!({"type": "fuzzy_match", "key": "k", "max_chars": 0})).field, "max_chars");
}

#[test]
fn numeric_claims_of_the_reference_must_appear() {
    let cfg = json!({"type": "numeric_claims", "key": "numbers_right"});
    let reference = Some(json!({"answer": "Refunds of $40 within 30 days, a 15% fee, and 2.5 hours of support."}));
    let (s, c) = score(
        cfg.clone(),
        json!({"answer": "You get $40.00 back within a 30-day window; fee 15 percent; support 150 minutes."}),
        reference.clone(),
    );
    assert_eq!(s, 1.0, "{c}");
    assert!(c.starts_with("all 4 numeric claims"), "{c}");
    let (s, c) = score(cfg.clone(), json!({"answer": "Refunds of $40 within 14 days, a 15% fee."}), reference);
    assert_eq!(s, 0.5);
    assert_eq!(c, "2/4 numeric claims of the reference present; missing: \"30 days\", \"2.5 hours\"");

    let (s, c) = score(cfg.clone(), json!("anything"), Some(json!("No numbers here.")));
    assert!(s == 1.0 && c.contains("nothing to check"), "{c}");
    let strict = json!({"type": "numeric_claims", "key": "k", "on_no_claims": "error"});
    assert_eq!(run(strict, json!("anything"), Some(json!("No numbers here."))).unwrap_err().kind, ScoreErrorKind::Input);
    assert_eq!(run(cfg, json!("$40"), None).unwrap_err().kind, ScoreErrorKind::Input);

    let kinds = json!({"type": "numeric_claims", "key": "k", "kinds": ["number"]});
    assert_eq!(score(kinds, json!("order 1234 shipped"), Some(json!("Order 1234 and 99"))).0, 0.5);
    let e = config_err(json!({"type": "numeric_claims", "key": "k", "kinds": ["money", "dates"]}));
    assert!(e.field == "kinds[1]" && e.message.contains("dates"), "{e}");
}

#[test]
fn field_and_reference_field_select_the_text() {
    let cfg = json!({"type": "exact_match", "key": "k", "field": "final", "reference_field": "expected.text"});
    let outputs = json!({"draft": "Lyon", "final": "Paris", "answer": "ignored"});
    assert_eq!(score(cfg.clone(), outputs, Some(json!({"expected": {"text": "Paris"}}))).0, 1.0);
    let e = run(cfg.clone(), json!({"draft": "x"}), Some(json!({"expected": {"text": "Paris"}}))).unwrap_err();
    assert!(e.kind == ScoreErrorKind::Input && e.message.contains("outputs has no field `final`"), "{}", e.message);
    let e = run(cfg, json!({"final": "x"}), Some(json!({"text": "Paris"}))).unwrap_err();
    assert!(e.message.contains("the reference has no field `expected.text`"), "{}", e.message);
    // Without `field`: a structured output without a text field is scored as its JSON.
    let kw = json!({"type": "keywords", "key": "k", "keywords": ["\"total\":3"]});
    assert_eq!(score(kw, json!({"total": 3, "items": []}), None).0, 1.0);
}

#[test]
fn config_errors_name_the_field() {
    let e = config_err(json!({"type": "keywords", "key": "mentions_policy"}));
    assert_eq!((e.key.as_deref(), e.field.as_str(), e.message.as_str()), (Some("mentions_policy"), "keywords", "required"));
    assert_eq!(e.to_string(), "evaluator \"mentions_policy\": field `keywords`: required");
    assert_eq!(config_err(json!({"type": "keywords", "key": "k", "keywords": ["a", 3]})).field, "keywords[1]");
    assert_eq!(config_err(json!({"type": "keywords", "key": "k", "keywords": []})).field, "keywords");
    assert_eq!(config_err(json!({"type": "keywords", "key": "k", "keywords": "refund"})).field, "keywords");
    let e = config_err(json!({"type": "keywords", "key": "k", "keywords": ["a"], "case_sensitve": true}));
    assert!(e.field == "case_sensitve" && e.message.contains("case_sensitive"), "{e}");
    assert_eq!(config_err(json!({"type": "keywords", "key": "k", "keywords": ["a"], "case_sensitive": "no"})).field, "case_sensitive");
    let e = config_err(json!({"type": "sentiment", "key": "k"}));
    assert!(e.field == "type" && e.message.contains("keywords"), "{e}");
    assert_eq!(config_err(json!({"key": "k"})).field, "type");
    assert_eq!(config_err(json!({"type": "json"})).field, "key");
    assert_eq!(config_err(json!({"type": "json", "key": ""})).field, "key");
    assert_eq!(config_err(json!({"type": "json", "key": "k".repeat(300)})).field, "key");
    let e = config_err(json!(["not", "an", "object"]));
    assert_eq!((e.field.as_str(), e.to_string().as_str()), ("", "evaluator config: expected an object, got a list"));
    // Options of other types are unknown here.
    assert_eq!(config_err(json!({"type": "forbidden", "key": "k", "phrases": ["a"], "reference_field": "x"})).field, "reference_field");
}

#[test]
fn lists_of_evaluators() {
    let s = JudgeSettings::default();
    let list = json!([{"type": "json", "key": "a"}, {"type": "length", "key": "b", "max": 5}]);
    let evs = parse_evaluators(&list, &s).unwrap();
    assert_eq!(evs.iter().map(|e| (e.key(), e.kind(), e.is_llm())).collect::<Vec<_>>(), vec![("a", "json", false), ("b", "length", false)]);
    assert_eq!(evs[1].config(), &list[1]);
    assert!(!evs[0].needs_reference());
    let refs = json!([{"type": "exact_match", "key": "a"}, {"type": "fuzzy_match", "key": "b"}, {"type": "numeric_claims", "key": "c"}]);
    assert!(parse_evaluators(&refs, &s).unwrap().iter().all(|e| e.needs_reference()));
    let e = parse_evaluators(&json!([{"type": "json", "key": "a"}, {"type": "regex", "key": "b", "pattern": "("}]), &s).unwrap_err();
    assert_eq!(e.field, "[1].pattern");
    let e = parse_evaluators(&json!([{"type": "json", "key": "a"}, {"type": "json", "key": "a"}]), &s).unwrap_err();
    assert!(e.field == "[1].key" && e.message.contains("duplicate"), "{e}");
}
