//! `RawJson`: a validated JSON text kept as text. Run inputs, outputs and events can be large
//! and are rarely inspected by the server, so they travel and are stored without being parsed
//! into a tree; only `extra` (metadata) is parsed, because filters look inside it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// JSON text known to be valid. Serialises as a string in MessagePack (events, storage);
/// use [`RawJson::as_raw`] to embed it verbatim in a JSON response.
#[derive(Clone, PartialEq, Eq)]
pub struct RawJson(Box<str>);

/// How deeply one client document (a run's inputs, outputs or metadata, a feedback value, an
/// example's inputs, a prompt manifest, ...) may nest: `{}` and `[]` are one level. Deeper
/// documents are refused where they enter, on every transport. It sits well below
/// serde_json's own recursion limit (128 levels for a whole text), so a document accepted
/// once can always be parsed again, also inside a request or response that wraps it.
pub const MAX_JSON_DEPTH: usize = 100;

/// Levels a request body may add around its documents (`{"post": [{"inputs": …}]}`); a body
/// nested deeper than `MAX_JSON_DEPTH + MAX_ENVELOPE_DEPTH` is refused before it is parsed.
pub const MAX_ENVELOPE_DEPTH: usize = 8;

/// Stored documents written before the limit was lowered may nest up to this (the old limit);
/// they are still read, never refused.
const MAX_STORED_DEPTH: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum InvalidJson {
    #[error("invalid JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    #[error("JSON nested deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("request body nested deeper than {} levels (a document in it may nest at most {MAX_JSON_DEPTH})", MAX_JSON_DEPTH + MAX_ENVELOPE_DEPTH)]
    BodyTooDeep,
}

/// Refuses a request body nesting deeper than its documents and their envelope may, before a
/// recursive parser sees it (serde_json's own limit would answer a vaguer error).
pub fn check_body_depth(text: &[u8]) -> Result<(), InvalidJson> {
    if nests_deeper_than(text, MAX_JSON_DEPTH + MAX_ENVELOPE_DEPTH) {
        return Err(InvalidJson::BodyTooDeep);
    }
    Ok(())
}

/// Whether JSON text nests deeper than `limit`: a linear scan that stops at the first level
/// past it, run before any recursive parser sees the text.
pub fn nests_deeper_than(text: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Nesting depth of a parsed value (`{}` is 1, a scalar 0), without recursion.
pub fn depth_of(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(v, 0)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(a) => {
                deepest = deepest.max(d + 1);
                stack.extend(a.iter().map(|c| (c, d + 1)));
            }
            Value::Object(o) => {
                deepest = deepest.max(d + 1);
                stack.extend(o.values().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Nesting depth of a JSON object given as its map (`{}` is 1).
pub fn depth_of_object(m: &serde_json::Map<String, serde_json::Value>) -> usize {
    1 + m.values().map(depth_of).max().unwrap_or(0)
}

/// Refuses a client document (already parsed) deeper than [`MAX_JSON_DEPTH`].
pub fn check_depth(v: &serde_json::Value) -> Result<(), InvalidJson> {
    if depth_of(v) > MAX_JSON_DEPTH {
        return Err(InvalidJson::TooDeep { limit: MAX_JSON_DEPTH });
    }
    Ok(())
}

/// Parses JSON text nesting at most `limit` levels. The depth is checked first, so serde_json's
/// recursion limit can be lifted safely: recursion is bounded by `limit`, and `limit` alone
/// decides. Trailing content after the value is refused.
pub fn from_slice_within<T: serde::de::DeserializeOwned>(text: &[u8], limit: usize) -> Result<T, InvalidJson> {
    if nests_deeper_than(text, limit) {
        return Err(InvalidJson::TooDeep { limit });
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    de.disable_recursion_limit();
    let v = T::deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// A whole request body: documents inside it are checked against [`MAX_JSON_DEPTH`] where they
/// are taken out; the body may add [`MAX_ENVELOPE_DEPTH`] levels around them.
pub fn body_from_slice<T: serde::de::DeserializeOwned>(text: &[u8]) -> Result<T, InvalidJson> {
    check_body_depth(text)?;
    from_slice_within(text, MAX_JSON_DEPTH + MAX_ENVELOPE_DEPTH)
}

impl RawJson {
    /// Validates `text` and keeps it (surrounding whitespace trimmed).
    pub fn parse(text: &str) -> Result<Self, InvalidJson> {
        if nests_deeper_than(text.as_bytes(), MAX_JSON_DEPTH) {
            return Err(InvalidJson::TooDeep { limit: MAX_JSON_DEPTH });
        }
        let raw: &RawValue = serde_json::from_str(text)?;
        Self::from_raw(raw)
    }

    /// A whole body kept as text (a feedback part): its documents are checked against
    /// [`MAX_JSON_DEPTH`] where they are taken out, the body against that plus its envelope.
    pub fn parse_body(text: &str) -> Result<Self, InvalidJson> {
        check_body_depth(text.as_bytes())?;
        let raw: &RawValue = serde_json::from_str(text)?;
        Ok(Self(raw.get().into()))
    }

    /// Keeps an already-parsed raw value, refusing nesting past [`MAX_JSON_DEPTH`].
    pub fn from_raw(raw: &RawValue) -> Result<Self, InvalidJson> {
        if nests_deeper_than(raw.get().as_bytes(), MAX_JSON_DEPTH) {
            return Err(InvalidJson::TooDeep { limit: MAX_JSON_DEPTH });
        }
        Ok(Self(raw.get().into()))
    }

    /// A client document given as a parsed value, refusing nesting past [`MAX_JSON_DEPTH`].
    pub fn from_client_value(v: &serde_json::Value) -> Result<Self, InvalidJson> {
        check_depth(v)?;
        Ok(Self::from_value(v))
    }

    /// A document the server composed itself (not checked against the depth limit).
    pub fn from_value(v: &serde_json::Value) -> Self {
        // `Display` for a `Value` cannot fail (its map keys are strings).
        Self(v.to_string().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Borrowed `RawValue` for embedding in a serde_json response without re-encoding. Never
    /// convert it into a `serde_json::Value` (`json!`, `to_value`): that re-parses it under
    /// serde_json's recursion limit; serialise a struct that holds it instead.
    pub fn as_raw(&self) -> &RawValue {
        // serde_json reads a RawValue without recursing, so valid stored text always reads; a
        // corrupt record becomes `null` rather than a failed response.
        serde_json::from_str(&self.0).unwrap_or_else(|_| null_raw())
    }

    /// The document as a tree. Stored text was validated when it was accepted; this still
    /// fails (rather than panics) on text that is not valid JSON or is too deep to walk.
    pub fn to_value(&self) -> Result<serde_json::Value, InvalidJson> {
        from_slice_within(self.0.as_bytes(), MAX_STORED_DEPTH)
    }

    /// [`RawJson::to_value`], with `null` for a document that cannot be read (logged): for
    /// derived views (usage, splits, evaluator inputs) where a missing part beats a failure.
    pub fn to_value_or_null(&self) -> serde_json::Value {
        self.to_value().unwrap_or_else(|e| {
            tracing::warn!(error = %e, bytes = self.0.len(), "a stored JSON document cannot be read; using null");
            serde_json::Value::Null
        })
    }

    pub fn is_null(&self) -> bool {
        &*self.0 == "null"
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn null_raw() -> &'static RawValue {
    static NULL: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| RawValue::from_string("null".into()).unwrap_or_else(|_| unreachable!("`null` is JSON")))
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawJson({} bytes)", self.0.len())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Stored text was validated when it was first accepted.
        let s = String::deserialize(d)?;
        Ok(Self(s.into_boxed_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_is_bounded_and_strings_do_not_count() {
        let ok = nested(MAX_JSON_DEPTH);
        assert!(RawJson::parse(&ok).is_ok());
        let deep = nested(MAX_JSON_DEPTH + 1);
        assert!(matches!(RawJson::parse(&deep), Err(InvalidJson::TooDeep { limit: MAX_JSON_DEPTH })));
        let in_string = format!(r#"{{"s":"{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert!(RawJson::parse(&in_string).is_ok());
    }

    #[test]
    fn every_accepted_document_reads_back_even_inside_an_envelope() {
        // The document at the limit, wrapped the way requests and responses wrap documents.
        let doc = RawJson::parse(&nested(MAX_JSON_DEPTH)).unwrap();
        let v = doc.to_value().expect("an accepted document parses back");
        assert_eq!(depth_of(&v), MAX_JSON_DEPTH);
        let wrapped = serde_json::json!({"runs": [{"outputs": doc.as_raw()}]});
        assert_eq!(depth_of(&wrapped), MAX_JSON_DEPTH + 3);
        // A body with the document and its envelope parses; one level more is refused.
        let body = format!(r#"{{"post":[{{"outputs":{}}}]}}"#, nested(MAX_JSON_DEPTH));
        assert!(body_from_slice::<serde_json::Value>(body.as_bytes()).is_ok());
        let too_deep = nested(MAX_JSON_DEPTH + MAX_ENVELOPE_DEPTH + 1);
        assert!(matches!(body_from_slice::<serde_json::Value>(too_deep.as_bytes()), Err(InvalidJson::BodyTooDeep)));
    }

    #[test]
    fn stored_documents_from_the_old_limit_still_read() {
        // Written when the limit was 128: serde_json alone refuses 128 levels.
        let old = RawJson(nested(128).into());
        assert!(serde_json::from_str::<serde_json::Value>(old.as_str()).is_err());
        assert_eq!(depth_of(&old.to_value().unwrap()), 128);
        assert_eq!(old.as_raw().get(), old.as_str());
        let corrupt = RawJson("{not json".into());
        assert!(corrupt.to_value().is_err());
        assert_eq!(corrupt.as_raw().get(), "null");
        assert!(corrupt.to_value_or_null().is_null());
    }

    #[test]
    fn trailing_content_is_refused() {
        assert!(body_from_slice::<serde_json::Value>(b"{} ").is_ok());
        assert!(body_from_slice::<serde_json::Value>(b"{}garbage").is_err());
        assert!(body_from_slice::<serde_json::Value>(br#"{"post":[1]}{"post":[2]}"#).is_err());
    }

    #[test]
    fn depth_of_values() {
        assert_eq!(depth_of(&serde_json::json!(1)), 0);
        assert_eq!(depth_of(&serde_json::json!({"a": {"b": [1]}})), 3);
        assert!(check_depth(&serde_json::from_str(&nested(MAX_JSON_DEPTH)).unwrap()).is_ok());
        let deep: serde_json::Value = from_slice_within(nested(MAX_JSON_DEPTH + 1).as_bytes(), 200).unwrap();
        assert!(check_depth(&deep).is_err());
    }
}
