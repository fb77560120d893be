//! `usher dispatcher`: admits users from the front of the line on a short
//! tick, and at once when a slot frees. Any number may run: each step is one
//! atomic store call, so together they never over-admit.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::queue::{Change, LATEST, QueueError, Store};
use crate::rules::RoomRules;
use crate::supervisor::Supervisor;

/// How long one read of the change stream waits for a freed slot.
const FOLLOW_BLOCK: Duration = Duration::from_secs(5);

pub struct Dispatcher {
    store: Arc<dyn Store>,
    rules: Arc<RoomRules>,
    metrics: Arc<Metrics>,
    tick: Duration,
    /// Woken when an active session ends.
    slot_freed: Notify,
}

impl Dispatcher {
    pub fn new(rules: Arc<RoomRules>, metrics: Arc<Metrics>, tick: Duration) -> Arc<Self> {
        Arc::new(Dispatcher {
            store: Arc::clone(rules.store()),
            rules,
            metrics,
            tick,
            slot_freed: Notify::new(),
        })
    }

    /// Starts dispatching, under `supervisor`, until shutdown.
    pub fn start(self: &Arc<Self>, supervisor: &Supervisor) {
        supervisor.spawn("dispatch loop", Arc::clone(self).run());
        supervisor.spawn(
            "freed-slot watcher",
            Arc::clone(self).watch_for_freed_slots(),
        );
    }

    async fn run(self: Arc<Self>) {
        let mut timer = tokio::time::interval(self.tick);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Presence may have gone unrecorded before this process started (it
        // cannot tell), and whenever the store fails: brokers could not mark
        // their visitors. Until the store is told, nobody is dropped.
        let mut lapsed = true;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = timer.tick() => {}
                () = self.slot_freed.notified() => {}
            }
            match self.step(&mut lapsed).await {
                Ok(()) if std::mem::take(&mut failing) => {
                    tracing::info!("the store answers again; dispatching resumed");
                }
                Ok(()) => {}
                Err(e) => {
                    lapsed = true;
                    self.metrics.store_errors.fetch_add(1, Relaxed);
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, "dispatch step failed; retrying every tick");
                    }
                }
            }
        }
    }

    /// Ticks until the store says there is no more to do right now. First,
    /// if presence `lapsed`, makes sure the room has rules (Redis may be
    /// back without its data) and gives presence one abandon timeout of grace.
    async fn step(&self, lapsed: &mut bool) -> crate::queue::Result<()> {
        if *lapsed {
            self.rules.ensure().await?;
            self.store.presence_lapsed(now_ms()).await?;
            *lapsed = false;
        }
        loop {
            let tick = || self.store.tick(now_ms(), rand::random::<u32>().into());
            let report = match tick().await {
                Err(QueueError::NotConfigured) => {
                    self.rules.ensure().await?;
                    tick().await?
                }
                report => report?,
            };
            self.metrics.dispatcher_ticks.fetch_add(1, Relaxed);
            self.metrics.admissions.fetch_add(report.admitted, Relaxed);
            self.metrics.expirations.fetch_add(report.expired, Relaxed);
            self.metrics
                .abandonments
                .fetch_add(report.abandoned, Relaxed);
            self.metrics.unclaimed.fetch_add(report.unclaimed, Relaxed);
            if report.admitted
                + report.expired
                + report.abandoned
                + report.closed
                + report.unclaimed
                > 0
            {
                tracing::debug!(?report, "dispatched");
            }
            if !report.more {
                return Ok(());
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

/// `/metrics`, `/healthz` and `/readyz` of a dispatcher: ready when the
/// store answers and the room has rules (written again here if Redis lost them).
pub fn health_router(rules: Arc<RoomRules>, metrics: Arc<Metrics>) -> axum::Router {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::get;
    crate::metrics_endpoint::router(Arc::clone(rules.store()), metrics)
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let rules = Arc::clone(&rules);
                async move {
                    match rules.ensure().await {
                        Ok(_) => (
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::queue::{CloseReason, JoinRequest, MemoryStore, RoomConfig, SessionState};

    const ABANDON_MS: i64 = 2_000;

    fn rules(store: &Arc<dyn Store>) -> Arc<RoomRules> {
        RoomRules::new(Arc::clone(store), RoomConfig::for_tests(0, ABANDON_MS))
    }

    fn start(store: &Arc<dyn Store>) -> Supervisor {
        let supervisor = Supervisor::default();
        Dispatcher::new(rules(store), Arc::default(), Duration::from_millis(10)).start(&supervisor);
        supervisor
    }

    async fn state(store: &Arc<dyn Store>) -> SessionState {
        store.session("s", None).await.unwrap().session.state
    }

    #[tokio::test]
    async fn a_starting_dispatcher_gives_presence_a_grace() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        rules(&store).ensure().await.unwrap();
        // Unseen for several abandon timeouts, as after a long outage that
        // this dispatcher did not witness.
        store
            .join(&JoinRequest::new("u", "s"), now_ms() - 5 * ABANDON_MS)
            .await
            .unwrap();
        let _supervisor = start(&store);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(state(&store).await, SessionState::Waiting);
        // Brokers had their chance; an absent visitor is then dropped.
        tokio::time::timeout(Duration::from_secs(10), async {
            while state(&store).await == SessionState::Waiting {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(
            state(&store).await,
            SessionState::Closed(CloseReason::Abandoned)
        );
    }

    #[tokio::test]
    async fn rules_the_store_lost_are_written_again() {
        let memory = Arc::new(MemoryStore::new());
        let store: Arc<dyn Store> = Arc::clone(&memory) as Arc<dyn Store>;
        let _supervisor = start(&store);
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if store.config().await.unwrap().is_some() {
                    memory.lose_everything();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            while store.config().await.unwrap().is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn rules_of_a_purged_room_stay_gone() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let _supervisor = start(&store);
        tokio::time::timeout(Duration::from_secs(10), async {
            while store.config().await.unwrap().is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        store.purge().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(store.config().await.unwrap(), None);
    }
}
