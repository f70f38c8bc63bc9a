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

/// Deeper JSON is refused: readers (the SDK's, ours) recurse over it.
pub const MAX_JSON_DEPTH: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum InvalidJson {
    #[error("invalid JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    #[error("JSON nested deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
}

/// Nesting depth of valid JSON text, stopping early past the limit.
fn exceeds_depth(text: &str) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in text.bytes() {
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
                if depth > MAX_JSON_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

impl RawJson {
    /// Validates `text` and keeps it (surrounding whitespace trimmed).
    pub fn parse(text: &str) -> Result<Self, InvalidJson> {
        let raw: &RawValue = serde_json::from_str(text)?;
        Self::from_raw(raw)
    }

    /// Keeps an already-parsed raw value, refusing excessive nesting.
    pub fn from_raw(raw: &RawValue) -> Result<Self, InvalidJson> {
        if exceeds_depth(raw.get()) {
            return Err(InvalidJson::TooDeep);
        }
        Ok(Self(raw.get().into()))
    }

    pub fn from_value(v: &serde_json::Value) -> Self {
        Self(serde_json::to_string(v).expect("a Value always serialises").into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Borrowed `RawValue` for embedding in a serde_json response without re-encoding.
    pub fn as_raw(&self) -> &RawValue {
        // Validated on construction; re-validating here would cost a parse per response field.
        serde_json::from_str(&self.0).expect("RawJson holds valid JSON")
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).expect("RawJson holds valid JSON")
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

    #[test]
    fn depth_is_bounded_and_strings_do_not_count() {
        let ok = format!("{}{}", "[".repeat(MAX_JSON_DEPTH), "]".repeat(MAX_JSON_DEPTH));
        assert!(RawJson::parse(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_JSON_DEPTH + 1), "]".repeat(MAX_JSON_DEPTH + 1));
        assert!(matches!(RawJson::parse(&deep), Err(InvalidJson::TooDeep)));
        let in_string = format!(r#"{{"s":"{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert!(RawJson::parse(&in_string).is_ok());
    }
}
