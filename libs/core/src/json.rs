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

#[derive(Debug, thiserror::Error)]
#[error("invalid JSON: {0}")]
pub struct InvalidJson(#[from] serde_json::Error);

impl RawJson {
    /// Validates `text` and keeps it (surrounding whitespace trimmed).
    pub fn parse(text: &str) -> Result<Self, InvalidJson> {
        let raw: &RawValue = serde_json::from_str(text)?;
        Ok(Self(raw.get().into()))
    }

    pub fn from_raw(raw: &RawValue) -> Self {
        Self(raw.get().into())
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
