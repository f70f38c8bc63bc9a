//! What the evaluator's run-completion consumers share: the finished root runs an event
//! announced, read back from the store (rules look at the merged run, not at a fragment).

use std::time::Duration;

use tracing::warn;

use sextant_bus::Delivery;
use sextant_core::{Run, TenantId};
use sextant_events::{CompletedRun, Event};
use sextant_storage::Storage;

enum Announced {
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
async fn finished_root_runs(store: &dyn Storage, d: &Delivery, select: impl Fn(&CompletedRun) -> bool) -> Announced {
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

/// The stored finished root runs the delivery announced (those `select` picks), with the
/// delivery to settle once they are scored. `None` when the delivery is already settled: acked
/// when there is nothing to score, nak'd to retry when a run is not stored yet or the store
/// failed. `consumer` names the consumer in logs.
pub(crate) async fn runs_to_score(
    store: &dyn Storage,
    d: Delivery,
    consumer: &'static str,
    select: impl Fn(&CompletedRun) -> bool,
) -> Option<(Delivery, TenantId, Vec<Run>)> {
    match finished_root_runs(store, &d, select).await {
        Announced::Runs(tenant, runs) => return Some((d, tenant, runs)),
        Announced::Nothing => {
            let _ = d.ack().await;
        }
        Announced::NotYet => {
            let _ = d.nak(Duration::from_millis(500)).await;
        }
        Announced::Failed(e) => {
            warn!(consumer, error = %e, "cannot read a run; will retry");
            let _ = d.nak(Duration::from_secs(1)).await;
        }
    }
    None
}
