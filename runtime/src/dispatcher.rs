//! `usher dispatcher`: admits users from the front of the line on a short
//! tick, and at once when a slot frees. Any number may run: each step is one
//! atomic store call, so together they never over-admit.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::queue::{Change, LATEST, Store};

/// How long one read of the change stream waits for a freed slot.
const FOLLOW_BLOCK: Duration = Duration::from_secs(5);

pub struct Dispatcher {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    tick: Duration,
    /// Woken when an active session ends.
    slot_freed: Notify,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, tick: Duration) -> Arc<Self> {
        Arc::new(Dispatcher {
            store,
            metrics,
            tick,
            slot_freed: Notify::new(),
        })
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let watcher = tokio::spawn(Arc::clone(&self).watch_for_freed_slots());
        let mut timer = tokio::time::interval(self.tick);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = timer.tick() => {}
                () = self.slot_freed.notified() => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            self.step().await;
        }
        watcher.abort();
    }

    /// Ticks until the store says there is no more to do right now.
    async fn step(&self) {
        loop {
            match self
                .store
                .tick(now_ms(), rand::random::<u32>().into())
                .await
            {
                Ok(report) => {
                    self.metrics.dispatcher_ticks.fetch_add(1, Relaxed);
                    self.metrics.admissions.fetch_add(report.admitted, Relaxed);
                    self.metrics.expirations.fetch_add(report.expired, Relaxed);
                    self.metrics
                        .abandonments
                        .fetch_add(report.abandoned, Relaxed);
                    if report.admitted + report.expired + report.abandoned + report.closed > 0 {
                        tracing::debug!(?report, "dispatched");
                    }
                    if !report.more {
                        return;
                    }
                }
                Err(e) => {
                    self.metrics.store_errors.fetch_add(1, Relaxed);
                    tracing::warn!(error = %e, "dispatch step failed");
                    return;
                }
            }
        }
    }

    /// Follows the change stream and wakes the loop when a slot frees.
    async fn watch_for_freed_slots(self: Arc<Self>) {
        let mut cursor = LATEST.to_owned();
        loop {
            match self.store.changes(&cursor, 1000, FOLLOW_BLOCK).await {
                Ok(batch) => {
                    if batch
                        .changes
                        .iter()
                        .any(|(_, c)| matches!(c, Change::Ended { .. }))
                    {
                        self.slot_freed.notify_one();
                    }
                    cursor = batch.cursor;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow the change stream");
                    cursor = LATEST.to_owned();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// `/metrics`, `/healthz` and `/readyz` (the store answers) of a dispatcher.
pub fn health_router(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> axum::Router {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::get;
    crate::metrics_endpoint::router(Arc::clone(&store), metrics)
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let store = Arc::clone(&store);
                async move {
                    match store.ping().await {
                        Ok(()) => (
                            StatusCode::OK,
                            axum::Json(serde_json::json!({"status": "ready"})),
                        )
                            .into_response(),
                        Err(e) => crate::broker::ApiError::from(e).into_response(),
                    }
                }
            }),
        )
}
