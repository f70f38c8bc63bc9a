//! `POST /runs/multipart` bodies (spec §3.3): optional whole-body compression (zstd, gzip),
//! then multipart/form-data parts named `post.<id>`, `patch.<id>`, `<kind>.<id>.<field>`,
//! `attachment.<id>.<name>` and `feedback.<id>`.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value};

use sextant_core::run::Attachment;
use sextant_core::{FragmentKind, RawJson, RunFragment, RunId};
use sextant_proto::{ApiError, ErrorKind};

use crate::form_data::Parts;
use crate::wire::{parse_json, ProjectRef, WireRun};
use sextant_proto::truncate;

/// A parsed multipart request, in the order its runs first appeared.
#[derive(Debug, Default)]
pub struct ParsedMultipart {
    pub fragments: Vec<(RunFragment, ProjectRef)>,
    /// `feedback.<id>` parts, raw JSON, for the feedback service.
    pub feedback: Vec<(uuid::Uuid, Bytes)>,
}

/// Synchronous and unbudgeted (for tools and fuzzing); the REST handler uses
/// [`crate::decode::decode_body`], which charges the process-wide decode budget.
pub use crate::decode::decode_body_blocking as decode_body;

const SUB_FIELDS: [&str; 6] = ["inputs", "outputs", "events", "extra", "error", "serialized"];

pub async fn parse(content_type: Option<&str>, body: Bytes, max_parts: usize) -> Result<ParsedMultipart, ApiError> {
    let ct = content_type
        .ok_or_else(|| ApiError::new(ErrorKind::UnsupportedMediaType, "Content-Type multipart/form-data with a boundary is required"))?;
    let boundary = multer::parse_boundary(ct).map_err(|_| {
        ApiError::new(
            ErrorKind::UnsupportedMediaType,
            format!("Content-Type {:?} is not multipart/form-data with a boundary", truncate(ct)),
        )
    })?;
    let mut mp = Parts::new(&body, &boundary).map_err(|e| ApiError::bad_request(format!("malformed multipart body: {e}")))?;

    let mut out = ParsedMultipart::default();
    let mut slots: HashMap<(FragmentKind, RunId), usize> = HashMap::new();
    let mut parts = 0usize;
    let bad = |m: String| ApiError::bad_request(m);

    loop {
        let field = match mp.next() {
            Some(Ok(f)) => f,
            None => break,
            Some(Err(e)) => return Err(bad(format!("malformed multipart body: {e}"))),
        };
        parts += 1;
        if parts > max_parts {
            return Err(ApiError::new(ErrorKind::PayloadTooLarge, format!("more than {max_parts} parts in one request")));
        }
        let name = field.name.ok_or_else(|| bad(format!("part {parts} has no name")))?;
        let shown = truncate(&name);
        if let Some(enc) = field.content_encoding.as_deref() {
            if !enc.eq_ignore_ascii_case("identity") {
                return Err(ApiError::new(
                    ErrorKind::UnsupportedMediaType,
                    format!("part {shown}: per-part Content-Encoding {:?} is not supported", truncate(enc)),
                ));
            }
        }
        let declared_len = match field.content_length.as_deref() {
            Some(v) => Some(v.parse::<usize>().map_err(|_| bad(format!("part {shown}: Content-Length is not a number")))?),
            None => None,
        };
        let mime = field.content_type;
        let data = field.data;
        if let Some(n) = declared_len {
            if n != data.len() {
                return Err(bad(format!("part {shown}: Content-Length says {n} bytes but the part has {}", data.len())));
            }
        }

        let mut segs = name.splitn(3, '.');
        let head = segs.next().unwrap_or_default();
        let id_str = segs.next().ok_or_else(|| bad(format!("part {shown}: expected <kind>.<id>[.<field>]")))?;
        let rest = segs.next();
        let id = uuid::Uuid::parse_str(id_str).map_err(|_| bad(format!("part {shown}: {:?} is not a UUID", truncate(id_str))))?;
        let kind = match head {
            "post" => FragmentKind::Post,
            "patch" => FragmentKind::Patch,
            "attachment" => {
                let att_name = rest.filter(|n| !n.is_empty()).ok_or_else(|| bad(format!("part {shown}: attachment needs a name")))?;
                let frag = slot(&mut out, &mut slots, FragmentKind::Post, RunId(id));
                frag.attachments.push(Attachment {
                    name: att_name.to_string(),
                    mime_type: mime.unwrap_or_else(|| "application/octet-stream".into()),
                    data: data.to_vec(),
                });
                continue;
            }
            "feedback" => {
                serde_json::from_slice::<&serde_json::value::RawValue>(&data)
                    .map_err(|e| ApiError::unprocessable(format!("part {shown}: invalid JSON: {e}")))?;
                out.feedback.push((id, data));
                continue;
            }
            other => return Err(bad(format!("part {shown}: unknown part kind {:?}", truncate(other)))),
        };
        if mime.as_deref().is_some_and(|m| m != "application/json") {
            return Err(ApiError::new(ErrorKind::UnsupportedMediaType, format!("part {shown}: Content-Type must be application/json")));
        }
        let run_id = RunId(id);
        match rest {
            None => {
                let wire: WireRun = parse_json(&format!("part {shown}"), &data)?;
                let (base, project) = wire.into_fragment(kind, &format!("part {shown}"), Some(run_id))?;
                let idx = slot_index(&mut out, &mut slots, kind, run_id);
                let (existing, existing_project) = &mut out.fragments[idx];
                merge_base(existing, base);
                *existing_project = project;
            }
            Some(field_name) => {
                if !SUB_FIELDS.contains(&field_name) {
                    return Err(bad(format!("part {shown}: unknown run field {:?}", truncate(field_name))));
                }
                let invalid = |e: &dyn std::fmt::Display| ApiError::unprocessable(format!("part {shown}: {e}"));
                // serde_json validates UTF-8 and syntax in one pass; `extra` and `error` are
                // parsed straight into what the run keeps, once their depth is known to be sane.
                sextant_core::json::check_body_depth(&data).map_err(|e| invalid(&e))?;
                match field_name {
                    "extra" => match serde_json::from_slice::<Value>(&data).map_err(|e| invalid(&format!("invalid JSON: {e}")))? {
                        Value::Null => {}
                        Value::Object(m) => {
                            // Each part of `extra` (`metadata`, ...) is a document of its own.
                            if m.values().any(|v| sextant_core::json::depth_of(v) > sextant_core::json::MAX_JSON_DEPTH) {
                                return Err(invalid(&sextant_core::json::InvalidJson::TooDeep {
                                    limit: sextant_core::json::MAX_JSON_DEPTH,
                                }));
                            }
                            slot(&mut out, &mut slots, kind, run_id).extra = Some(m)
                        }
                        _ => return Err(ApiError::unprocessable(format!("part {shown}: extra must be a JSON object"))),
                    },
                    "error" => match serde_json::from_slice::<Value>(&data).map_err(|e| invalid(&format!("invalid JSON: {e}")))? {
                        Value::Null => {}
                        Value::String(e) => slot(&mut out, &mut slots, kind, run_id).error = Some(e),
                        other => slot(&mut out, &mut slots, kind, run_id).error = Some(other.to_string()),
                    },
                    _ => {
                        let raw: &serde_json::value::RawValue =
                            serde_json::from_slice(&data).map_err(|e| invalid(&format!("invalid JSON: {e}")))?;
                        let json = RawJson::from_raw(raw).map_err(|e| invalid(&e))?;
                        let frag = slot(&mut out, &mut slots, kind, run_id);
                        if json.is_null() {
                            continue;
                        }
                        match field_name {
                            "inputs" => frag.inputs = Some(json),
                            "outputs" => frag.outputs = Some(json),
                            "events" => frag.events = Some(json),
                            "serialized" => frag.serialized = Some(json),
                            _ => unreachable!("checked against SUB_FIELDS"),
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

fn slot_index(out: &mut ParsedMultipart, slots: &mut HashMap<(FragmentKind, RunId), usize>, kind: FragmentKind, id: RunId) -> usize {
    *slots.entry((kind, id)).or_insert_with(|| {
        out.fragments.push((RunFragment::new(kind, id), ProjectRef::Unspecified));
        out.fragments.len() - 1
    })
}

fn slot<'a>(
    out: &'a mut ParsedMultipart,
    slots: &mut HashMap<(FragmentKind, RunId), usize>,
    kind: FragmentKind,
    id: RunId,
) -> &'a mut RunFragment {
    let idx = slot_index(out, slots, kind, id);
    &mut out.fragments[idx].0
}

/// Fills a fragment built from sub-parts with its base part; sub-part values win.
fn merge_base(existing: &mut RunFragment, base: RunFragment) {
    let sub = std::mem::replace(existing, base);
    let keep = |dst: &mut Option<RawJson>, src: Option<RawJson>| {
        if src.is_some() {
            *dst = src;
        }
    };
    keep(&mut existing.inputs, sub.inputs);
    keep(&mut existing.outputs, sub.outputs);
    keep(&mut existing.events, sub.events);
    keep(&mut existing.serialized, sub.serialized);
    if sub.error.is_some() {
        existing.error = sub.error;
    }
    if let Some(e) = sub.extra {
        let mut merged: Map<String, Value> = existing.extra.take().unwrap_or_default();
        merged.extend(e);
        existing.extra = Some(merged);
    }
    existing.attachments.extend(sub.attachments);
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "eb4651d2d7d94b3fa6445b6be97e9bf5";
    const ID: &str = "01a21085-dddd-7ab9-9494-115de01cbb17";

    fn part(name: &str, ct: &str, body: &str, len: Option<usize>) -> String {
        let len = len.unwrap_or(body.len());
        format!("--{B}\r\nContent-Disposition: form-data; name=\"{name}\"\r\nContent-Type: {ct}\r\nContent-Length: {len}\r\n\r\n{body}\r\n")
    }

    fn body(parts: &[String]) -> Bytes {
        Bytes::from(format!("{}--{B}--\r\n", parts.concat()))
    }

    fn ct() -> String {
        format!("multipart/form-data; boundary={B}")
    }

    #[tokio::test]
    async fn parses_sdk_parts_in_any_order() {
        let b = body(&[
            part(&format!("post.{ID}.inputs"), "application/json", r#"{"q":1}"#, None),
            part(&format!("post.{ID}"), "application/json", &format!(r#"{{"id":"{ID}","name":"parent","session_name":"p1"}}"#), None),
            part(&format!("post.{ID}.error"), "application/json", r#""ValueError('boom')""#, None),
            part(&format!("patch.{ID}"), "application/json", &format!(r#"{{"id":"{ID}","end_time":"2026-11-25T02:25:39+00:00"}}"#), None),
            part(&format!("patch.{ID}.outputs"), "application/json", r#"{"y":2}"#, None),
            part(&format!("attachment.{ID}.image"), "image/png", "PNG", None),
        ]);
        let p = parse(Some(&ct()), b, 100).await.unwrap();
        assert_eq!(p.fragments.len(), 2);
        let (post, project) = &p.fragments[0];
        assert_eq!(post.kind, FragmentKind::Post);
        assert_eq!(*project, ProjectRef::Name("p1".into()));
        assert_eq!(post.inputs.as_ref().unwrap().as_str(), r#"{"q":1}"#);
        assert_eq!(post.error.as_deref(), Some("ValueError('boom')"));
        assert_eq!(post.attachments[0].mime_type, "image/png");
        assert_eq!(p.fragments[1].0.outputs.as_ref().unwrap().as_str(), r#"{"y":2}"#);
    }

    #[tokio::test]
    async fn lying_or_malformed_parts_are_rejected() {
        let lie = body(&[part(&format!("post.{ID}"), "application/json", "{}", Some(10))]);
        assert!(parse(Some(&ct()), lie, 100).await.unwrap_err().message.contains("Content-Length"));
        let bad_json = body(&[part(&format!("post.{ID}.inputs"), "application/json", "{nope", None)]);
        assert_eq!(parse(Some(&ct()), bad_json, 100).await.unwrap_err().kind, ErrorKind::Unprocessable);
        let bad_id = body(&[part("post.not-a-uuid", "application/json", "{}", None)]);
        assert!(parse(Some(&ct()), bad_id, 100).await.unwrap_err().message.contains("UUID"));
        let mismatch = body(&[part(&format!("post.{ID}"), "application/json", r#"{"id":"01a21085-dddd-7ab9-9494-000000000000"}"#, None)]);
        assert!(parse(Some(&ct()), mismatch, 100).await.unwrap_err().message.contains("does not match"));
        assert!(parse(Some("application/json"), Bytes::new(), 100).await.is_err());
        assert!(parse(Some(&ct()), Bytes::from_static(b"garbage"), 100).await.is_err());
        let many: Vec<_> = (0..5).map(|_| part(&format!("post.{ID}.inputs"), "application/json", "{}", None)).collect();
        assert_eq!(parse(Some(&ct()), body(&many), 3).await.unwrap_err().kind, ErrorKind::PayloadTooLarge);
    }
}
