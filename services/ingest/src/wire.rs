//! The SDK's run JSON (spec §3.5) and its translation into [`RunFragment`]s.
//!
//! Parsing is strict about what it uses (ids are UUIDs, times are ISO 8601, tags are strings)
//! and tolerant of what it does not (unknown keys are ignored). Large JSON values (inputs,
//! outputs, events, serialized) are validated and kept as text, never parsed into trees.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use sextant_core::run::validate_dotted_order;
use sextant_core::{FragmentKind, RawJson, RunFragment, RunId, Timestamp, WireTime};
use sextant_proto::{truncate, ApiError};

pub const MAX_TAGS: usize = 1000;
pub const MAX_SHORT_STRING: usize = 4096;

/// Where a run says it belongs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProjectRef {
    Id(uuid::Uuid),
    Name(String),
    /// Not given: the run's existing project, else "default".
    Unspecified,
}

/// A run as the SDK sends it in a post or patch. Every field may be absent or `null`.
#[derive(Debug, Default, Deserialize)]
pub struct WireRun<'a> {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub parent_run_id: Option<String>,
    #[serde(default)]
    pub dotted_order: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub run_type: Option<String>,
    #[serde(default)]
    pub start_time: Option<WireTime>,
    #[serde(default)]
    pub end_time: Option<WireTime>,
    #[serde(default)]
    pub first_token_time: Option<WireTime>,
    #[serde(default)]
    pub session_name: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default, borrow)]
    pub inputs: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub outputs: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub events: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub serialized: Option<&'a RawValue>,
    #[serde(default)]
    pub extra: Option<Map<String, Value>>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub reference_example_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub prompt_tokens: Option<i64>,
    #[serde(default)]
    pub completion_tokens: Option<i64>,
    #[serde(default)]
    pub total_tokens: Option<i64>,
    #[serde(default)]
    pub prompt_cost: Option<f64>,
    #[serde(default)]
    pub completion_cost: Option<f64>,
    #[serde(default)]
    pub total_cost: Option<f64>,
}

fn uuid_field(where_: &str, field: &str, v: &Option<String>) -> Result<Option<uuid::Uuid>, ApiError> {
    match v.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => uuid::Uuid::parse_str(s)
            .map(Some)
            .map_err(|_| ApiError::unprocessable(format!("{where_}.{field}: {:?} is not a UUID", truncate(s)))),
    }
}

fn time_field(where_: &str, field: &str, v: &Option<WireTime>) -> Result<Option<Timestamp>, ApiError> {
    v.as_ref().map(|t| t.to_timestamp().map_err(|e| ApiError::unprocessable(format!("{where_}.{field}: {e}")))).transpose()
}

fn short(where_: &str, field: &str, v: &Option<String>) -> Result<(), ApiError> {
    match v {
        Some(s) if s.len() > MAX_SHORT_STRING => {
            Err(ApiError::unprocessable(format!("{where_}.{field} is {} bytes; the limit is {MAX_SHORT_STRING}", s.len())))
        }
        _ => Ok(()),
    }
}

/// A JSON text value; the literal `null` means "unchanged".
fn raw(where_: &str, field: &str, v: Option<&RawValue>) -> Result<Option<RawJson>, ApiError> {
    v.filter(|r| r.get() != "null")
        .map(|r| RawJson::from_raw(r).map_err(|e| ApiError::unprocessable(format!("{where_}.{field}: {e}"))))
        .transpose()
}

impl WireRun<'_> {
    /// Validates and converts. `where_` names the run in error messages (`post[3]`);
    /// `path_id` is the id from the URL or part name, which must agree with the body's.
    pub fn into_fragment(self, kind: FragmentKind, where_: &str, path_id: Option<RunId>) -> Result<(RunFragment, ProjectRef), ApiError> {
        let body_id = uuid_field(where_, "id", &self.id)?.map(RunId);
        let id = match (path_id, body_id) {
            (Some(p), Some(b)) if p != b => {
                return Err(ApiError::unprocessable(format!("{where_}: body id {b} does not match {p}")));
            }
            (Some(p), _) => p,
            (None, Some(b)) => b,
            (None, None) => return Err(ApiError::unprocessable(format!("{where_}.id is required"))),
        };
        for (field, v) in
            [("name", &self.name), ("run_type", &self.run_type), ("session_name", &self.session_name), ("status", &self.status)]
        {
            short(where_, field, v)?;
        }
        let mut f = RunFragment::new(kind, id);
        f.trace_id = uuid_field(where_, "trace_id", &self.trace_id)?.map(RunId);
        f.parent_run_id = uuid_field(where_, "parent_run_id", &self.parent_run_id)?.map(RunId);
        if let Some(d) = self.dotted_order.filter(|d| !d.is_empty()) {
            validate_dotted_order(&d, id).map_err(|e| ApiError::unprocessable(format!("{where_}.dotted_order: {e}")))?;
            f.dotted_order = Some(d);
        }
        f.name = self.name;
        f.run_type = self.run_type.filter(|t| !t.is_empty());
        f.start_time = time_field(where_, "start_time", &self.start_time)?;
        f.end_time = time_field(where_, "end_time", &self.end_time)?;
        f.first_token_time = time_field(where_, "first_token_time", &self.first_token_time)?;
        if let Some(tags) = &self.tags {
            if tags.len() > MAX_TAGS {
                return Err(ApiError::unprocessable(format!("{where_}.tags has {} entries; the limit is {MAX_TAGS}", tags.len())));
            }
            if let Some(t) = tags.iter().find(|t| t.len() > MAX_SHORT_STRING) {
                return Err(ApiError::unprocessable(format!("{where_}.tags: tag {:?} is too long", truncate(t))));
            }
        }
        f.tags = self.tags;
        f.inputs = raw(where_, "inputs", self.inputs)?;
        f.outputs = raw(where_, "outputs", self.outputs)?;
        f.events = raw(where_, "events", self.events)?;
        f.serialized = raw(where_, "serialized", self.serialized)?;
        if let Some(extra) = &self.extra {
            // `extra` is parsed (filters look inside it): its depth is checked here, the text
            // fields' where they are kept.
            // Each part of `extra` (`metadata`, `runtime`, ...) is a document of its own.
            if let Some((key, _)) = extra.iter().find(|(_, v)| sextant_core::json::depth_of(v) > sextant_core::json::MAX_JSON_DEPTH) {
                return Err(ApiError::unprocessable(format!(
                    "{where_}.extra.{}: JSON nested deeper than {} levels",
                    truncate(key),
                    sextant_core::json::MAX_JSON_DEPTH
                )));
            }
        }
        f.extra = self.extra;
        f.error = self.error;
        f.reference_example_id = uuid_field(where_, "reference_example_id", &self.reference_example_id)?;
        // The SDKs send lower case; LangSmith's newer API types spell the same values in capitals.
        f.status = self.status.filter(|s| !s.is_empty()).map(|s| s.to_ascii_lowercase());
        f.prompt_tokens = self.prompt_tokens;
        f.completion_tokens = self.completion_tokens;
        f.total_tokens = self.total_tokens;
        f.prompt_cost = self.prompt_cost;
        f.completion_cost = self.completion_cost;
        f.total_cost = self.total_cost;
        let project = match (uuid_field(where_, "session_id", &self.session_id)?, self.session_name) {
            (Some(id), _) => ProjectRef::Id(id),
            (None, Some(name)) if !name.trim().is_empty() => ProjectRef::Name(name),
            _ => ProjectRef::Unspecified,
        };
        crate::core::validate_fragment(&f, where_)?;
        Ok((f, project))
    }
}

/// Parses JSON into `T`, naming the path of the offending field on error. Anything but
/// whitespace after the value is refused: a second value would otherwise be silently dropped.
pub fn parse_json<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T, ApiError> {
    sextant_core::json::check_body_depth(bytes).map_err(|e| ApiError::unprocessable(format!("{what}: {e}")))?;
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("{what}: malformed JSON: {inner}"))
        } else if path.is_empty() || path == "." || path == "?" {
            ApiError::bad_request(format!("{what}: {inner}"))
        } else {
            ApiError::unprocessable(format!("{what}: {path}: {inner}"))
        }
    })?;
    de.end().map_err(|e| ApiError::bad_request(format!("{what}: unexpected content after the JSON value: {e}")))?;
    Ok(value)
}

/// The `/runs/batch` body.
#[derive(Debug, Default, Deserialize)]
pub struct WireBatch<'a> {
    #[serde(default, borrow)]
    pub post: Option<Vec<WireRun<'a>>>,
    #[serde(default, borrow)]
    pub patch: Option<Vec<WireRun<'a>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_an_sdk_post() {
        let body = br#"{"id":"01a21085-dddd-7ab9-9494-115de01cbb17","start_time":"2026-11-25T02:25:38.269290+00:00",
            "tags":["parent-tag"],"dotted_order":"20261125T022538269290Z01a21085-dddd-7ab9-9494-115de01cbb17",
            "trace_id":"01a21085-dddd-7ab9-9494-115de01cbb17","session_name":"rec","name":"parent","run_type":"chain",
            "inputs":{"question":"what is 21*2?"},"outputs":null,"unknown_key":[1,2,3]}"#;
        let w: WireRun = parse_json("post", body).unwrap();
        let (f, p) = w.into_fragment(FragmentKind::Post, "post[0]", None).unwrap();
        assert_eq!(p, ProjectRef::Name("rec".into()));
        assert_eq!(f.inputs.unwrap().as_str(), r#"{"question":"what is 21*2?"}"#);
        assert!(f.outputs.is_none());
        assert_eq!(f.tags.unwrap(), vec!["parent-tag"]);
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_json::<WireRun>("post[2]", br#"{"id":"x","tags":"notalist"}"#).unwrap_err();
        assert!(e.message.contains("tags"), "{}", e.message);
        let w: WireRun = parse_json("p", br#"{"id":"not-a-uuid"}"#).unwrap();
        let e = w.into_fragment(FragmentKind::Post, "post[2]", None).unwrap_err();
        assert!(e.message.contains("post[2].id"), "{}", e.message);
        let w: WireRun = parse_json("p", br#"{"id":"01a21085-dddd-7ab9-9494-115de01cbb17","start_time":"yesterday"}"#).unwrap();
        let e = w.into_fragment(FragmentKind::Post, "post[0]", None).unwrap_err();
        assert!(e.message.contains("start_time"), "{}", e.message);
        let w: WireRun = parse_json("p", br#"{}"#).unwrap();
        assert!(w.into_fragment(FragmentKind::Post, "post[0]", None).unwrap_err().message.contains("id is required"));
        assert!(parse_json::<WireRun>("body", b"{not json").unwrap_err().message.starts_with("body"));
    }

    #[test]
    fn trailing_content_is_refused() {
        assert!(parse_json::<WireRun>("body", b"{} \n").is_ok());
        let e = parse_json::<WireRun>("body", b"{}garbage").unwrap_err();
        assert_eq!(e.kind, sextant_proto::ErrorKind::BadRequest);
        assert!(e.message.contains("body: unexpected content after the JSON value"), "{}", e.message);
        let two = br#"{"post":[{"id":"01a21085-dddd-7ab9-9494-115de01cbb17"}]}{"post":[{"id":"01a21085-dddd-7ab9-9494-115de01cbb18"}]}"#;
        assert!(parse_json::<WireBatch>("body", two).unwrap_err().message.contains("trailing characters"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(r#"{{"id":"01a21085-dddd-7ab9-9494-115de01cbb17","inputs":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        let err = match parse_json::<WireRun>("post", deep.as_bytes()) {
            Err(e) => e,
            Ok(w) => w.into_fragment(FragmentKind::Post, "post[0]", None).unwrap_err(),
        };
        assert!(err.message.contains("deeper than"), "{}", err.message);
    }
}
