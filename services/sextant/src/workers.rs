//! Supervision of the long-running workers (projectors and consumers): a worker that stops
//! while the server is not shutting down (it panicked, or its loop ended) is logged, counted
//! and restarted with backoff, and the process reports itself unready until it is back.
//! A worker is never silently absent.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info};

/// Which workers are down right now (for `/readyz`).
#[derive(Default)]
pub struct WorkerHealth {
    down: Mutex<BTreeSet<&'static str>>,
}

impl WorkerHealth {
    /// The workers that are down, by name; empty when all are running.
    pub fn down(&self) -> Vec<&'static str> {
        self.down.lock().unwrap_or_else(PoisonError::into_inner).iter().copied().collect()
    }

    fn set(&self, name: &'static str, up: bool) {
        let mut down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        if up {
            down.remove(name);
        } else {
            down.insert(name);
        }
        metrics::gauge!("sextant_worker_up", "worker" => name).set(if up { 1.0 } else { 0.0 });
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A worker that ran this long before stopping starts again from the first backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runs `make(stop)` on `set` until `stop` turns true, making and starting it again whenever
/// it ends early.
pub fn supervise<F, Fut>(set: &mut JoinSet<()>, health: Arc<WorkerHealth>, name: &'static str, stop: watch::Receiver<bool>, make: F)
where
    F: Fn(watch::Receiver<bool>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    health.set(name, true);
    set.spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = tokio::time::Instant::now();
            let ended = tokio::spawn(make(stop.clone())).await;
            if *stop.borrow() {
                break;
            }
            let how = match &ended {
                Ok(()) => "returned".to_string(),
                Err(e) if e.is_panic() => "panicked".to_string(),
                Err(e) => format!("was cancelled ({e})"),
            };
            health.set(name, false);
            metrics::counter!("sextant_worker_restarts_total", "worker" => name).increment(1);
            if started.elapsed() > HEALTHY_RUN {
                backoff = FIRST_BACKOFF;
            }
            error!(worker = name, how = %how, retry_in_ms = backoff.as_millis() as u64, "worker stopped unexpectedly; restarting it");
            let mut stop_wait = stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop_wait.wait_for(|s| *s) => break,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            health.set(name, true);
            info!(worker = name, "worker restarted");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_worker_that_panics_is_restarted_and_reported_down_meanwhile() {
        let health = Arc::new(WorkerHealth::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let runs = Arc::new(AtomicUsize::new(0));
        let mut set = JoinSet::new();
        let counter = runs.clone();
        supervise(&mut set, health.clone(), "flaky", stop_rx, move |_stop| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("first run fails");
                }
                std::future::pending::<()>().await
            }
        });
        // Down right after the panic, for the backoff.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while health.down().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(health.down(), vec!["flaky"], "a stopped worker makes the process unready");
        while runs.load(Ordering::SeqCst) < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2, "restarted once");
        assert!(health.down().is_empty(), "up again once restarted");
        stop_tx.send(true).unwrap();
        set.abort_all();
    }
}
