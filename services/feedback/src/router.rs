//! The annotation router: consumes the run stream and adds every finished run that matches
//! a queue's routing rule to that queue ("errors", "low confidence in metadata", "mentions
//! refund"...).
//!
//! Rules are evaluated on the stored run (its posts and patches merged), so the router waits
//! for the run projector: a finished run that is not stored yet is retried shortly after.
//! Adding is idempotent per (queue, run), so redelivery adds nothing twice; sampling is
//! decided by the run id, so a redelivery samples alike.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, warn};

use sextant_bus::{ConsumerSpec, Delivery, EventBus};
use sextant_core::annotation::Queue;
use sextant_core::TenantId;
use sextant_events::{Event, Stream};
use sextant_filter::{Filter, RunView};
use sextant_storage::Storage;

use crate::queues::Queues;

pub const ANNOTATION_ROUTER: &str = "annotation-router";
/// How long the rule set is cached: a new rule applies to runs finishing after this.
const RULES_TTL: Duration = Duration::from_secs(2);
/// Retries while a finished run is not stored yet (backoff 500 ms each).
const MAX_DELIVERIES: u32 = 60;

struct CompiledRule {
    queue: Queue,
    filter: Filter,
    rule: sextant_core::annotation::RoutingRule,
}

struct RuleCache {
    loaded: Option<Instant>,
    by_tenant: HashMap<TenantId, Vec<CompiledRule>>,
}

impl RuleCache {
    async fn refresh(&mut self, store: &Arc<dyn Storage>) {
        if self.loaded.is_some_and(|at| at.elapsed() < RULES_TTL) {
            return;
        }
        match store.queues_with_rules().await {
            Ok(queues) => {
                let mut by_tenant: HashMap<TenantId, Vec<CompiledRule>> = HashMap::new();
                for (t, q) in queues {
                    for rule in &q.rules {
                        match sextant_filter::parse(&rule.filter) {
                            Ok(filter) => {
                                by_tenant.entry(t).or_default().push(CompiledRule { queue: q.clone(), filter, rule: rule.clone() })
                            }
                            Err(e) => warn!(queue = %q.id, rule = %rule.id, error = %e, "routing rule no longer parses; skipped"),
                        }
                    }
                }
                self.by_tenant = by_tenant;
                self.loaded = Some(Instant::now());
            }
            Err(e) => warn!(error = %e, "cannot load routing rules; keeping the previous set"),
        }
    }
}

pub async fn run_annotation_router(bus: Arc<dyn EventBus>, store: Arc<dyn Storage>, queues: Arc<Queues>, shutdown: watch::Receiver<bool>) {
    let mut spec = ConsumerSpec::new(ANNOTATION_ROUTER, Stream::RunCompletions);
    spec.max_deliveries = MAX_DELIVERIES;
    let rules = tokio::sync::Mutex::new(RuleCache { loaded: None, by_tenant: HashMap::new() });
    let (rules, store, queues) = (&rules, &store, &queues);
    sextant_bus::consume_batches(bus.as_ref(), spec, 256, shutdown, move |batch| async move {
        let mut rules = rules.lock().await;
        rules.refresh(store).await;
        for d in batch {
            route(store, queues, &rules, d).await;
        }
    })
    .await;
}

async fn route(store: &Arc<dyn Storage>, queues: &Queues, rules: &RuleCache, d: Delivery) {
    let Ok(env) = &d.payload else {
        let _ = d.ack().await; // the run projector dead-letters undecodable events
        return;
    };
    let Event::RunsCompletedV1(ev) = &env.event else {
        let _ = d.ack().await;
        return;
    };
    let Some(tenant_rules) = rules.by_tenant.get(&env.tenant) else {
        let _ = d.ack().await;
        return;
    };
    // Finished runs only: a rule looks at outputs, errors and feedback-worthy content.
    for run_id in ev.runs.iter().map(|r| r.id) {
        let applicable: Vec<&CompiledRule> = tenant_rules
            .iter()
            .filter(|r| (r.rule.project_ids.is_empty() || r.rule.project_ids.contains(&ev.project_id)) && r.rule.samples(run_id))
            .collect();
        if applicable.is_empty() {
            continue;
        }
        let run = match store.get_run(env.tenant, run_id).await {
            Ok(Some(run)) if run.end_time.is_some() || run.error.is_some() => run,
            Ok(_) => {
                // Not projected yet: try again shortly.
                let _ = d.nak(Duration::from_millis(500)).await;
                return;
            }
            Err(e) => {
                warn!(error = %e, "router cannot read a run; will retry");
                let _ = d.nak(Duration::from_secs(1)).await;
                return;
            }
        };
        let feedback = if applicable.iter().any(|r| r.filter.needs().feedback) {
            store
                .list_feedback(env.tenant, &sextant_storage::FeedbackQuery { runs: vec![run_id], limit: 1000, ..Default::default() })
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let rows: Vec<sextant_filter::FeedbackRow> = feedback.iter().map(sextant_filter::FeedbackRow::from).collect();
        for r in applicable {
            if r.filter.matches(&RunView::new(&run, &rows)) {
                if let Err(e) = queues.add_routed(env.tenant, r.queue.id, &run).await {
                    warn!(error = %e, queue = %r.queue.id, "cannot add a routed run; will retry");
                    let _ = d.nak(Duration::from_secs(1)).await;
                    return;
                }
                debug!(tenant = %env.tenant, queue = %r.queue.id, run = %run_id, "run routed to annotation queue");
                metrics::counter!("sextant_queue_routed_runs_total").increment(1);
            }
        }
    }
    let _ = d.ack().await;
}
