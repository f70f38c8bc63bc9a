//! Which text an evaluator scores: choosing it inside a run's outputs (or the reference), and
//! the small string helpers comments need (quoting, truncating, stripping code fences).

use std::borrow::Cow;

use serde_json::Value;
use sextant_core::feedback::MAX_COMMENT_BYTES;

/// Field names that conventionally hold a model's text answer, in order of preference.
const TEXT_FIELDS: [&str; 4] = ["output", "answer", "text", "content"];

/// The value a rule scores inside `v` (a run's outputs or an example's reference).
///
/// With `field`, that key (or a dotted path, `answer.text`); its absence is an error. Without:
/// the single field of a one-string-field object, else the first of `output`, `answer`, `text`,
/// `content` that holds text (looking one level into objects, as chat messages
/// `{"output": {"role": ..., "content": ...}}`), else `v` itself.
pub(crate) fn select<'v>(v: &'v Value, field: Option<&str>, what: &str) -> Result<&'v Value, String> {
    match field {
        Some(f) => lookup(v, f).ok_or_else(|| format!("{what} has no field `{f}`")),
        None => Ok(default_text(v, 2).unwrap_or(v)),
    }
}

fn default_text(v: &Value, depth: u8) -> Option<&Value> {
    let Value::Object(m) = v else { return None };
    if m.len() == 1 {
        if let Some(s @ Value::String(_)) = m.values().next() {
            return Some(s);
        }
    }
    TEXT_FIELDS.iter().filter_map(|n| m.get(*n)).find_map(|c| match c {
        Value::String(_) => Some(c),
        Value::Object(_) if depth > 0 => default_text(c, depth - 1),
        _ => None,
    })
}

/// `path` in `v`: an exact key first (keys may contain dots), else a dotted path whose
/// segments are object keys or list indexes.
pub(crate) fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    if let Some(x) = v.get(path) {
        return Some(x);
    }
    if !path.contains('.') {
        return None;
    }
    path.split('.').try_fold(v, |cur, seg| match cur {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// A value as text: strings as they are, null as empty, anything else as compact JSON.
pub(crate) fn as_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

/// The scored output's text.
pub(crate) fn output_text<'v>(outputs: &'v Value, field: Option<&str>) -> Result<Cow<'v, str>, String> {
    select(outputs, field, "outputs").map(as_text)
}

/// The reference's text; a missing (or null) reference is an error for rules that need one.
pub(crate) fn reference_text<'v>(reference: Option<&'v Value>, field: Option<&str>) -> Result<Cow<'v, str>, String> {
    match reference {
        None | Some(Value::Null) => Err("no reference output: this evaluator compares against the example's reference".into()),
        Some(r) => select(r, field, "the reference").map(as_text),
    }
}

/// At most `max` chars of `s`, with an ellipsis when cut.
pub(crate) fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((at, _)) => Cow::Owned(format!("{}…", &s[..at])),
    }
}

/// `s` quoted for a comment, cut to 80 chars.
pub(crate) fn quote(s: &str) -> String {
    format!("{:?}", truncate(s, 80).as_ref())
}

/// A list of quoted strings for a comment: `"a", "b"`.
pub(crate) fn quote_list<'s>(items: impl IntoIterator<Item = &'s str>) -> String {
    items.into_iter().map(quote).collect::<Vec<_>>().join(", ")
}

/// Comments are stored as feedback comments, which have a size limit: cut at a char boundary.
pub(crate) fn clamp_comment(mut c: String) -> String {
    if c.len() > MAX_COMMENT_BYTES {
        let mut at = MAX_COMMENT_BYTES - '…'.len_utf8();
        while !c.is_char_boundary(at) {
            at -= 1;
        }
        c.truncate(at);
        c.push('…');
    }
    c
}

/// The body of a Markdown code fence (```` ```json ... ``` ````) if `s` is one, else `s`.
/// Models often wrap JSON in a fence even when asked not to.
pub(crate) fn strip_fence(s: &str) -> &str {
    let t = s.trim();
    let Some(rest) = t.strip_prefix("```") else { return s };
    let Some(body) = rest.strip_suffix("```") else { return s };
    // The info string (`json`) runs to the end of the first line.
    match body.find('\n') {
        Some(nl) if !body[..nl].trim_start().starts_with(['{', '[']) => &body[nl + 1..],
        _ => body,
    }
}

/// Lowercase and collapse whitespace runs to one space (trimmed), for case- and
/// spacing-insensitive comparisons.
pub(crate) fn normalize(s: &str, lowercase: bool, collapse_whitespace: bool) -> String {
    let s = if lowercase { s.to_lowercase() } else { s.to_owned() };
    if collapse_whitespace {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn default_selection_prefers_single_string_then_named_fields() {
        assert_eq!(select(&json!({"x": "hi"}), None, "outputs").unwrap(), &json!("hi"));
        assert_eq!(select(&json!({"answer": "a", "sources": [1]}), None, "outputs").unwrap(), &json!("a"));
        assert_eq!(select(&json!({"output": {"role": "ai", "content": "c"}}), None, "outputs").unwrap(), &json!("c"));
        let structured = json!({"a": 1, "b": 2});
        assert_eq!(select(&structured, None, "outputs").unwrap(), &structured);
        assert_eq!(as_text(&structured), r#"{"a":1,"b":2}"#);
        assert_eq!(as_text(&json!("plain")), "plain");
    }

    #[test]
    fn explicit_fields_and_paths() {
        let v = json!({"a.b": 1, "a": {"b": 2, "list": ["x", "y"]}});
        assert_eq!(lookup(&v, "a.b"), Some(&json!(1)));
        assert_eq!(lookup(&v, "a.list.1"), Some(&json!("y")));
        assert_eq!(select(&v, Some("missing"), "outputs").unwrap_err(), "outputs has no field `missing`");
    }

    #[test]
    fn fences_are_stripped() {
        assert_eq!(strip_fence("```json\n{\"a\": 1}\n```"), "{\"a\": 1}\n");
        assert_eq!(strip_fence("```{\"a\": 1}```"), "{\"a\": 1}");
        assert_eq!(strip_fence("no fence"), "no fence");
    }

    #[test]
    fn truncation_and_clamping_respect_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hi", 2), "hi");
        let long = "é".repeat(MAX_COMMENT_BYTES);
        let c = clamp_comment(long);
        assert!(c.len() <= MAX_COMMENT_BYTES && c.ends_with('…'));
    }
}
