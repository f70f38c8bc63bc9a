//! What the evaluator's run-completion consumers share: the finished root runs an event
//! announced, read back from the store (rules look at the merged run, not at a fragment).

use sextant_bus::Delivery;
use sextant_core::{Run, TenantId};
use sextant_events::{CompletedRun, Event};
use sextant_storage::Storage;

pub(crate) enum Announced {
    /// Not a completion event, or none of its runs is selected: ack.
    Nothing,
    /// The finished root runs, as stored.
    Runs(TenantId, Vec<Run>),
    /// A selected run is not stored (or not finished) yet: retry shortly.
    NotYet,
    /// The store failed: retry.
    Failed(String),
}

/// The stored finished root runs among the delivery's selected completed runs.
pub(crate) async fn finished_root_runs(store: &dyn Storage, d: &Delivery, select: impl Fn(&CompletedRun) -> bool) -> Announced {
    let Ok(env) = &d.payload else { return Announced::Nothing };
    let Event::RunsCompletedV1(ev) = &env.event else { return Announced::Nothing };
    let mut runs = Vec::new();
    for f in ev.runs.iter().filter(|r| select(r)) {
        match store.get_run(env.tenant, f.id).await {
            Ok(Some(r)) if r.end_time.is_some() || r.error.is_some() => {
                if r.parent_run_id.is_none() {
                    runs.push(r);
                }
            }
            Ok(_) => return Announced::NotYet,
            Err(e) => return Announced::Failed(e.to_string()),
        }
    }
    if runs.is_empty() {
        Announced::Nothing
    } else {
        Announced::Runs(env.tenant, runs)
    }
}
