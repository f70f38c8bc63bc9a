//! The run JSON the SDK sends: a `/runs/batch` body (`{"post": [...], "patch": [...]}`) and a
//! single run (`POST /runs`, `PATCH /runs/{id}`, a multipart `post.<id>` part), through
//! `WireRun::into_fragment`. No input may panic, and whatever is accepted must go on through
//! what the server does next without panicking: folding into a run (`Run::apply`, `derive`,
//! `derive_from_parent`), the JSON it kept re-parsing, and the event that carries it to the
//! bus encoding and decoding back to the same fragments.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use sextant_core::{FragmentKind, ProjectId, Run, RunFragment, RunId, TenantId};
use sextant_events::{decode, encode, Envelope, Event, RunsIngestedV1};
use sextant_ingest::wire::{parse_json, WireBatch, WireRun};

const PATH_ID: &str = "01a21085-dddd-7ab9-9494-115de01cbb17";

fn check(fragments: Vec<RunFragment>) {
    if fragments.is_empty() {
        return;
    }
    let project = ProjectId::from_bytes([7; 16]);
    let mut runs: HashMap<RunId, Run> = HashMap::new();
    for f in &fragments {
        for json in [&f.inputs, &f.outputs, &f.events, &f.serialized].into_iter().flatten() {
            assert!(serde_json::from_str::<&RawValue>(json.as_str()).is_ok(), "into_fragment kept invalid JSON");
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
    let bytes = encode(&sent).expect("an accepted run encodes as an event");
    let got = decode(&bytes).expect("an encoded event decodes");
    assert_eq!(got, sent, "the event does not survive the bus");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = parse_json::<WireBatch>("body", data) {
        let mut fragments = Vec::new();
        for (kind, runs) in [(FragmentKind::Post, batch.post), (FragmentKind::Patch, batch.patch)] {
            for (i, w) in runs.unwrap_or_default().into_iter().enumerate() {
                if let Ok((f, _project)) = w.into_fragment(kind, &format!("{kind:?}[{i}]"), None) {
                    fragments.push(f);
                }
            }
        }
        check(fragments);
    }
    // One run, with and without an id from the path.
    let path_id = RunId(uuid::Uuid::parse_str(PATH_ID).unwrap());
    for (kind, path) in [(FragmentKind::Post, None), (FragmentKind::Patch, Some(path_id))] {
        let Ok(w) = parse_json::<WireRun>("body", data) else { return };
        if let Ok((f, _project)) = w.into_fragment(kind, "run", path) {
            check(vec![f]);
        }
    }
});
