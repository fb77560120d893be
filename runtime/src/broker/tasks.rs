//! The broker's background work: following the change stream, broadcasting
//! positions, keeping present users marked as present, reporting load, and
//! keep-alives.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::watch;
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
/// Pause between reads of a busy change stream, so changes arrive in
/// batches: at most ~100 reads a second however busy the room is.
const FOLLOW_PACE: Duration = Duration::from_millis(10);

/// Starts every background task; they stop when `shutdown` turns true.
pub fn spawn_all(broker: &Arc<Broker>, shutdown: &watch::Receiver<bool>) {
    tokio::spawn(until_shutdown(
        shutdown.clone(),
        follow_changes(Arc::clone(broker)),
    ));
    let b = Arc::clone(broker);
    tokio::spawn(until_shutdown(
        shutdown.clone(),
        every(broker.settings.position_interval, move || {
            b.fanout.broadcast(now_ms());
            async {}
        }),
    ));
    let b = Arc::clone(broker);
    tokio::spawn(until_shutdown(
        shutdown.clone(),
        every(broker.settings.presence_interval(), move || {
            let b = Arc::clone(&b);
            async move {
                let present = b.fanout.present_sessions();
                if let Err(e) = b.store.touch(&present, now_ms()).await {
                    b.metrics.store_errors.fetch_add(1, Relaxed);
                    tracing::warn!(error = %e, "cannot mark present users");
                }
            }
        }),
    ));
    let b = Arc::clone(broker);
    tokio::spawn(until_shutdown(
        shutdown.clone(),
        every(REPORT_EVERY, move || {
            let b = Arc::clone(&b);
            async move { b.report_load().await }
        }),
    ));
    let b = Arc::clone(broker);
    tokio::spawn(until_shutdown(
        shutdown.clone(),
        every(broker.settings.keep_alive, move || {
            b.beats.send_modify(|beat| *beat += 1);
            async {}
        }),
    ));
}

async fn until_shutdown(mut shutdown: watch::Receiver<bool>, task: impl Future<Output = ()>) {
    tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => {}
        () = task => {}
    }
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

/// Follows the room's change stream forever: load a snapshot, then apply
/// changes in order; reload on a gap, at opening, or after errors.
async fn follow_changes(broker: Arc<Broker>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match follow_from_snapshot(&broker).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                broker.metrics.store_errors.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, retry_in = ?backoff, "lost the change stream");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Returns `Ok` when the line must be reloaded, `Err` when the store failed.
async fn follow_from_snapshot(broker: &Arc<Broker>) -> crate::queue::Result<()> {
    if let Some(config) = broker.store.config().await? {
        broker.fanout.set_config(config);
    }
    let snapshot = broker.store.snapshot().await?;
    broker.metrics.line_resyncs.fetch_add(1, Relaxed);
    for sid in broker.fanout.load(&snapshot) {
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
                } => match broker.admitted_frame(&sid, &user, admitted_at, expires_at) {
                    Ok(frame) => broker.fanout.settle(&sid, frame),
                    Err(e) => tracing::error!(error = %e, "cannot sign an entry token"),
                },
                Notice::Closed { sid, reason } => broker
                    .fanout
                    .settle(&sid, broker.fanout.closed_frame(reason)),
            }
        }
        if changes.contains(&Change::Reconfigured)
            && let Some(config) = broker.store.config().await?
        {
            broker.fanout.set_config(config);
        }
        if changes.contains(&Change::Opened) {
            return Ok(());
        }
        if !changes.is_empty() && !full {
            tokio::time::sleep(FOLLOW_PACE).await;
        }
    }
}
