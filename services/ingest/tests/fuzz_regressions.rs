//! Inputs the `multipart` and `wire_run` fuzz targets (fuzz/, tests/fuzz.sh) crashed on, kept
//! under fuzz/regressions/<target>/ and replayed here through the same calls as the targets:
//! each must be accepted or refused without a panic. One test per crash.

use std::collections::HashMap;
use std::future::Future;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use sextant_core::{FragmentKind, ProjectId, Run, RunFragment, RunId, TenantId};
use sextant_events::{decode, encode, Envelope, Event, RunsIngestedV1};
use sextant_ingest::multipart::{decode_body, parse};
use sextant_ingest::wire::{parse_json, WireBatch, WireRun};

/// What fuzz/fuzz_targets/wire_run.rs does with accepted fragments.
fn fold_and_publish(fragments: Vec<RunFragment>) {
    if fragments.is_empty() {
        return;
    }
    let project = ProjectId::from_bytes([7; 16]);
    let mut runs: HashMap<RunId, Run> = HashMap::new();
    for f in &fragments {
        for json in [&f.inputs, &f.outputs, &f.events, &f.serialized].into_iter().flatten() {
            assert!(serde_json::from_str::<&serde_json::value::RawValue>(json.as_str()).is_ok(), "kept invalid JSON");
        }
        runs.entry(f.id).or_insert_with(|| Run::empty(f.id, project)).apply(f);
    }
    let lineage: HashMap<RunId, Run> = runs.iter().map(|(id, r)| (*id, r.lineage())).collect();
    for run in runs.values_mut() {
        run.derive();
        if let Some(parent) = run.parent_run_id.and_then(|p| lineage.get(&p)) {
            run.derive_from_parent(parent);
        }
        let _ = (run.status(), run.latency_secs(), run.parent_run_ids(), run.dotted_order_or_default(), run.trace());
    }
    let sent = Envelope::new(TenantId::from_bytes([1; 16]), Event::RunsIngestedV1(RunsIngestedV1 { project_id: project, fragments }));
    let got = decode(&encode(&sent).unwrap()).unwrap();
    assert_eq!(got, sent);
}

fn replay_wire_run(data: &[u8]) {
    if let Ok(batch) = parse_json::<WireBatch>("body", data) {
        let mut fragments = Vec::new();
        for (kind, runs) in [(FragmentKind::Post, batch.post), (FragmentKind::Patch, batch.patch)] {
            for (i, w) in runs.unwrap_or_default().into_iter().enumerate() {
                if let Ok((f, _)) = w.into_fragment(kind, &format!("{kind:?}[{i}]"), None) {
                    fragments.push(f);
                }
            }
        }
        fold_and_publish(fragments);
    }
    let path_id = RunId(uuid::Uuid::parse_str("01a21085-dddd-7ab9-9494-115de01cbb17").unwrap());
    for (kind, path) in [(FragmentKind::Post, None), (FragmentKind::Patch, Some(path_id))] {
        let Ok(w) = parse_json::<WireRun>("body", data) else { return };
        if let Ok((f, _)) = w.into_fragment(kind, "run", path) {
            fold_and_publish(vec![f]);
        }
    }
}

/// fuzz/regressions/wire_run/usage-metadata-token-overflow: `extra.metadata.usage_metadata`
/// with `input_tokens: i64::MAX, output_tokens: 1` made `Run::derive` add the two with
/// overflow: a panic with overflow checks (debug builds: the projector), a negative
/// `total_tokens` in release.
#[test]
fn fuzz_regression_usage_metadata_token_overflow() {
    replay_wire_run(include_bytes!("../../../fuzz/regressions/wire_run/usage-metadata-token-overflow"));
}

/// What fuzz/fuzz_targets/multipart.rs does with one input (a mode byte, an optional
/// Content-Type line, the body); returns the parse result's fragment count.
fn replay_multipart(data: &[u8]) -> Option<usize> {
    const B: &str = "eb4651d2d7d94b3fa6445b6be97e9bf5";
    let (&mode, rest) = data.split_first()?;
    let encoding = [None, Some("gzip"), Some(" ZSTD "), Some("br")][(mode & 3) as usize];
    let (ct, body) = if mode & 4 != 0 {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (String::from_utf8_lossy(&rest[..i]).into_owned(), &rest[i + 1..]),
            None => (String::from_utf8_lossy(rest).into_owned(), &[][..]),
        }
    } else {
        (format!("multipart/form-data; boundary={B}"), rest)
    };
    let body = decode_body(encoding, Bytes::copy_from_slice(body), 64 * 1024).ok()?;
    let mut fut = std::pin::pin!(parse(Some(&ct), body, 64));
    let Poll::Ready(parsed) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) else { panic!("parse awaited") };
    let parsed = parsed.ok()?;
    for (f, _) in &parsed.fragments {
        for json in [&f.inputs, &f.outputs, &f.events, &f.serialized].into_iter().flatten() {
            assert!(serde_json::from_str::<&serde_json::value::RawValue>(json.as_str()).is_ok(), "kept invalid JSON");
        }
    }
    Some(parsed.fragments.len())
}

/// The multipart harness on a seed (a zstd-compressed SDK trace: two posts, two patches), so
/// a crash found later can be replayed here in one line.
#[test]
fn multipart_harness_replays_an_sdk_seed() {
    assert_eq!(replay_multipart(include_bytes!("../../../fuzz/corpus/multipart/sdk-trace.zstd")), Some(4));
    assert_eq!(replay_multipart(include_bytes!("../../../fuzz/corpus/multipart/sdk-trace.gzip")), Some(4));
}
