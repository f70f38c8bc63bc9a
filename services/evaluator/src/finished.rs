//! What the evaluator's run-stream consumers share: the finished root runs an event
//! announced, read back once the run projector has stored them (rules look at the merged run,
//! not at a fragment).

use sextant_bus::Delivery;
use sextant_core::{Run, RunFragment, TenantId};
use sextant_events::Event;
use sextant_storage::Storage;

pub(crate) enum Announced {
    /// Not a run event, or none of its fragments is selected: ack.
    Nothing,
    /// The finished root runs, as stored.
    Runs(TenantId, Vec<Run>),
    /// A selected run is not stored (or not finished) yet: retry shortly.
    NotYet,
    /// The store failed: retry.
    Failed(String),
}

/// The stored finished root runs of the delivery's selected finished fragments.
pub(crate) async fn finished_root_runs(store: &dyn Storage, d: &Delivery, select: impl Fn(&RunFragment) -> bool) -> Announced {
    let Ok(env) = &d.payload else { return Announced::Nothing };
    let Event::RunsIngestedV1(ev) = &env.event else { return Announced::Nothing };
    let mut runs = Vec::new();
    for f in ev.fragments.iter().filter(|f| (f.end_time.is_some() || f.error.is_some()) && select(f)) {
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
