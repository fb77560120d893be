//! The broker's background work: following the change stream, broadcasting
//! positions, keeping present users marked as present, reporting load, and
//! keep-alives.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::{MissedTickBehavior, interval};

use super::Broker;
use super::fanout::Notice;
use crate::clock::now_ms;
use crate::queue::Change;

/// Most changes read from the stream at once.
const CHANGES_PER_READ: usize = 10_000;
/// How long one read of the change stream may wait for news.
const FOLLOW_BLOCK: Duration = Duration::from_secs(5);
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// The longest wait between attempts to follow the change stream again,
/// so the line is back within a second of Redis.
const FOLLOW_RETRY_MAX: Duration = Duration::from_secs(1);
/// Pause between reads of a busy change stream, so changes arrive in
/// batches: at most ~100 reads a second however busy the room is.
const FOLLOW_PACE: Duration = Duration::from_millis(10);
/// How soon marking visitors present is tried again after a failure.
const PRESENCE_RETRY: Duration = Duration::from_secs(1);

/// Starts every background task under the broker's supervisor.
pub fn spawn_all(broker: &Arc<Broker>) {
    let supervisor = &broker.supervisor;
    supervisor.spawn("change-stream follower", follow_changes(Arc::clone(broker)));
    let b = Arc::clone(broker);
    supervisor.spawn(
        "position broadcast",
        every(broker.settings.position_interval, move || {
            b.fanout.broadcast(now_ms());
            async {}
        }),
    );
    supervisor.spawn("presence", keep_present(Arc::clone(broker)));
    let b = Arc::clone(broker);
    supervisor.spawn(
        "load report",
        every(REPORT_EVERY, move || {
            let b = Arc::clone(&b);
            async move { b.report_load().await }
        }),
    );
    let b = Arc::clone(broker);
    supervisor.spawn(
        "keep-alive",
        every(broker.settings.keep_alive, move || {
            b.beats.send_modify(|beat| *beat += 1);
            async {}
        }),
    );
}

async fn every<F, Fut>(period: Duration, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut timer = interval(period);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        step().await;
    }
}

/// Marks the visitors whose streams this broker holds as present, every
/// quarter of the abandon timeout. After a failure (Redis away) it tries
/// again every [`PRESENCE_RETRY`], so visitors are marked again as soon as
/// Redis is back, not a whole period later.
async fn keep_present(broker: Arc<Broker>) {
    let period = broker.settings.presence_interval();
    let mut failing = false;
    loop {
        let present = broker.fanout.present_sessions();
        let wait = match broker.store.touch(&present, now_ms()).await {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(visitors = present.len(), "present visitors marked again");
                }
                period
            }
            Err(e) => {
                broker.metrics.store_errors.fetch_add(1, Relaxed);
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, "cannot mark present visitors; retrying");
                }
                period.min(PRESENCE_RETRY)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Follows the room's change stream forever: load a snapshot, then apply
/// changes in order; reload on a gap, at opening, or after errors.
async fn follow_changes(broker: Arc<Broker>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match follow_from_snapshot(&broker).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                // Until reloaded, the local line may be stale: not ready.
                broker.fanout.mark_stale();
                broker.metrics.store_errors.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, retry_in = ?backoff, "lost the change stream");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(FOLLOW_RETRY_MAX);
            }
        }
    }
}

/// Returns `Ok` when the line must be reloaded, `Err` when the store failed.
/// Each load first makes sure the room has rules: after a Redis restart
/// without data, this is what lets the room take joins again.
async fn follow_from_snapshot(broker: &Arc<Broker>) -> crate::queue::Result<()> {
    broker.adopt_rules(broker.rules.ensure().await?);
    let snapshot = broker.store.snapshot().await?;
    broker.metrics.line_resyncs.fetch_add(1, Relaxed);
    for sid in broker.fanout.load(&snapshot, now_ms()) {
        broker.refresh(&sid).await;
    }
    let (mut cursor, mut seq) = (snapshot.cursor, snapshot.seq);
    loop {
        let batch = broker
            .store
            .changes(&cursor, CHANGES_PER_READ, FOLLOW_BLOCK)
            .await?;
        if batch
            .changes
            .iter()
            .enumerate()
            .any(|(i, (n, _))| *n != seq + 1 + i as u64)
        {
            tracing::info!(after = seq, "missed changes; reloading the line");
            return Ok(());
        }
        seq += batch.changes.len() as u64;
        cursor = batch.cursor;
        let full = batch.changes.len() == CHANGES_PER_READ;
        let changes: Vec<Change> = batch.changes.into_iter().map(|(_, c)| c).collect();
        for notice in broker.fanout.apply(&changes, now_ms()) {
            match notice {
                Notice::Admitted {
                    sid,
                    user,
                    admitted_at,
                    expires_at,
                    extended,
                } => match broker.admitted_frame(&sid, &user, admitted_at, expires_at) {
                    Ok(frame) if extended => broker.fanout.renew(&sid, frame),
                    Ok(frame) => broker.fanout.settle(&sid, frame),
                    Err(e) => tracing::error!(error = %e, "cannot sign an entry token"),
                },
                Notice::Closed { sid, reason } => broker
                    .fanout
                    .settle(&sid, broker.fanout.closed_frame(reason.as_str())),
            }
        }
        if changes.contains(&Change::Reconfigured)
            && let Some(config) = broker.store.config().await?
        {
            broker.adopt_rules(config);
        }
        if changes.contains(&Change::Opened) {
            return Ok(());
        }
        if !changes.is_empty() && !full {
            tokio::time::sleep(FOLLOW_PACE).await;
        }
    }
}
