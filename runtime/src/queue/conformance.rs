//! One suite of queue semantics, run against every store (see the macro at
//! the bottom), plus a randomized comparison with a reference model.

#![allow(clippy::unwrap_used)]

mod model;

use super::*;
use crate::testing::RedisServer;

const MIN: Millis = 60_000;
const T0: Millis = 1_800_000_000_000;

fn config() -> RoomConfig {
    RoomConfig {
        capacity: 2,
        admission_rate: None,
        session_duration_ms: 10 * MIN,
        queueing: Queueing::Fifo,
        opens_at: None,
        closes_at: None,
        paused: false,
        abandon_timeout_ms: 2 * MIN,
        claim_window_ms: 0,
        max_session_duration_ms: 0,
        message: String::new(),
        joins_per_address_per_minute: 0,
        sessions_per_address: 0,
        priority_share: 100,
        revision: 0,
        proof_of_work_bits: 0,
    }
}

/// A sealed seed for ticks; its salt is made from the seed.
fn seed(seed: u64) -> SealedSeed {
    SealedSeed::new(seed, format!("{seed:032x}"))
}

async fn configured(store: &dyn Store, config: RoomConfig) {
    store.configure(&config).await.unwrap();
}

/// A room whose line never moves on by admissions.
async fn admitting_nobody(store: &dyn Store) {
    configured(
        store,
        RoomConfig {
            capacity: 0,
            ..config()
        },
    )
    .await;
}

async fn join(store: &dyn Store, user: &str, now: Millis) -> SessionView {
    store
        .join(&JoinRequest::new(user, &format!("sid-{user}")), now)
        .await
        .unwrap()
        .view
}

fn is_active(view: &SessionView) -> bool {
    matches!(view.session.state, SessionState::Active { .. })
}

async fn state(store: &dyn Store, user: &str) -> SessionState {
    store
        .session(&format!("sid-{user}"), None)
        .await
        .unwrap()
        .session
        .state
}

async fn unconfigured_room_refuses_joins(store: &dyn Store) {
    let err = store
        .join(&JoinRequest::new("u", "s"), T0)
        .await
        .unwrap_err();
    assert_eq!(err, QueueError::NotConfigured);
    assert_eq!(store.config().await.unwrap(), None);
}

async fn configuration_round_trips(store: &dyn Store) {
    let config = RoomConfig {
        admission_rate: Some(300),
        opens_at: Some(T0),
        closes_at: Some(T0 + 60 * MIN),
        queueing: Queueing::Random,
        paused: true,
        claim_window_ms: 90_000,
        joins_per_address_per_minute: 30,
        sessions_per_address: 4,
        priority_share: 30,
        proof_of_work_bits: 20,
        ..config()
    };
    configured(store, config.clone()).await;
    assert_eq!(store.config().await.unwrap(), Some(config));
}

async fn older_revisions_never_replace_newer_rules(store: &dyn Store) {
    let newer = RoomConfig {
        revision: 5,
        paused: true,
        ..config()
    };
    assert!(store.configure(&newer).await.unwrap());
    let older = RoomConfig {
        revision: 4,
        ..config()
    };
    assert!(!store.configure(&older).await.unwrap());
    assert_eq!(store.config().await.unwrap(), Some(newer.clone()));
    let same = RoomConfig {
        capacity: 9,
        ..newer
    };
    assert!(store.configure(&same).await.unwrap());
    assert_eq!(store.config().await.unwrap().unwrap().capacity, 9);
}

async fn join_is_idempotent_and_positions_are_exact(store: &dyn Store) {
    configured(
        store,
        RoomConfig {
            paused: true,
            ..config()
        },
    )
    .await;
    let a = store
        .join(&JoinRequest::new("alice", "s1"), T0)
        .await
        .unwrap();
    assert!(a.created);
    assert_eq!(
        (a.view.session.ticket, a.view.position, a.view.waiting),
        (1, Some(1), 1)
    );
    let b = join(store, "bob", T0).await;
    assert_eq!((b.position, b.waiting), (Some(2), 2));
    let again = store
        .join(&JoinRequest::new("alice", "s-other"), T0 + 5)
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.view.session.id, "s1");
    assert_eq!(again.view.position, Some(1));
    store.leave("s1", T0 + 6).await.unwrap();
    let b = store.session("sid-bob", None).await.unwrap();
    assert_eq!((b.position, b.waiting), (Some(1), 1));
}

async fn admission_follows_tickets_and_never_exceeds_capacity(store: &dyn Store) {
    configured(store, config()).await;
    for user in ["a", "b", "c", "d"] {
        join(store, user, T0).await;
    }
    let report = store.tick(T0 + 1, &seed(0)).await.unwrap();
    assert_eq!(report.admitted, 2);
    assert!(is_active(&store.session("sid-a", None).await.unwrap()));
    assert!(is_active(&store.session("sid-b", None).await.unwrap()));
    assert_eq!(
        store.session("sid-c", None).await.unwrap().position,
        Some(1)
    );
    assert_eq!(store.tick(T0 + 2, &seed(0)).await.unwrap().admitted, 0);
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (counts.waiting, counts.active, counts.admitted_total),
        (2, 2, 2)
    );
    assert!(counts.opened);
}

async fn broker_reports_add_up_and_go_stale(store: &dyn Store) {
    store.report_broker("b1", 120, T0).await.unwrap();
    store.report_broker("b2", 30, T0 + 10).await.unwrap();
    store.report_broker("b1", 100, T0 + 20).await.unwrap();
    assert_eq!(store.connected(T0).await.unwrap(), 130);
    assert_eq!(store.connected(T0 + 15).await.unwrap(), 100);
}

async fn purging_forgets_the_room(store: &dyn Store) {
    random_room(store).await;
    join(store, "a", T0).await;
    store.tick(T0, &seed(1)).await.unwrap();
    assert_eq!(store.joins(0, 10).await.unwrap(), [1]);
    store.report_broker("b1", 1, T0).await.unwrap();
    store.purge().await.unwrap();
    assert_eq!(store.fairness().await.unwrap(), None);
    assert_eq!(store.joins(0, 10).await.unwrap(), Vec::<u64>::new());
    assert_eq!(store.config().await.unwrap(), None);
    assert_eq!(store.counts().await.unwrap(), RoomCounts::default());
    assert_eq!(store.connected(0).await.unwrap(), 0);
    assert_eq!(
        store.session("sid-a", None).await.unwrap_err(),
        QueueError::UnknownSession
    );
}

async fn lost_rules_are_restored_but_not_those_of_a_purged_room(store: &dyn Store) {
    // A store without rules and no purge: they were lost, and come back.
    assert!(store.restore(&config()).await.unwrap());
    assert!(
        !store
            .restore(&RoomConfig {
                capacity: 9,
                ..config()
            })
            .await
            .unwrap()
    );
    assert_eq!(store.config().await.unwrap(), Some(config()));
    store.purge().await.unwrap();
    assert_eq!(
        store.restore(&config()).await.unwrap_err(),
        QueueError::NotConfigured
    );
    assert_eq!(store.config().await.unwrap(), None);
    // A process starting for the room configures it, purged or not.
    let again = RoomConfig {
        capacity: 7,
        ..config()
    };
    assert!(store.configure(&again).await.unwrap());
    assert_eq!(store.config().await.unwrap(), Some(again));
}

async fn closed_sessions_are_remembered_while_their_tokens_could_live(store: &dyn Store) {
    let hours = |h: i64| h * 60 * MIN;
    configured(
        store,
        RoomConfig {
            session_duration_ms: hours(3),
            ..config()
        },
    )
    .await;
    join(store, "a", T0).await;
    store.tick(T0, &seed(0)).await.unwrap();
    store.complete("sid-a", T0 + 1).await.unwrap();
    store.tick(T0 + hours(2), &seed(0)).await.unwrap();
    assert_eq!(store.snapshot().await.unwrap().closed, ["sid-a"]);
    store.tick(T0 + 1 + hours(3), &seed(0)).await.unwrap();
    assert!(store.snapshot().await.unwrap().closed.is_empty());
}

/// A room of capacity 1 where `a` was admitted at T0 and `b` waits.
async fn one_active_one_waiting(store: &dyn Store) {
    a_admitted_b_waiting(store, 0).await;
}

/// [`one_active_one_waiting`] with a claim window of `claim_window_ms`.
async fn a_admitted_b_waiting(store: &dyn Store, claim_window_ms: Millis) {
    configured(store, capacity_one(claim_window_ms)).await;
    join(store, "a", T0).await;
    join(store, "b", T0).await;
    store.tick(T0, &seed(0)).await.unwrap();
}

fn capacity_one(claim_window_ms: Millis) -> RoomConfig {
    RoomConfig {
        capacity: 1,
        claim_window_ms,
        ..config()
    }
}

async fn completing_frees_the_slot_at_once(store: &dyn Store) {
    one_active_one_waiting(store).await;
    let done = store.complete("sid-a", T0 + 1).await.unwrap();
    assert_eq!(
        done.session.state,
        SessionState::Closed(CloseReason::Completed)
    );
    // A reader loading the line learns the session is over.
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.closed, ["sid-a"]);
    assert_eq!(snapshot.waiting.len(), 1);
    // Completing again is harmless; completing a waiting session is refused.
    store.complete("sid-a", T0 + 2).await.unwrap();
    assert_eq!(
        store.complete("sid-b", T0 + 2).await.unwrap_err(),
        QueueError::NotActive
    );
    assert_eq!(
        store.complete("nope", T0).await.unwrap_err(),
        QueueError::UnknownSession
    );
    assert_eq!(store.tick(T0 + 3, &seed(0)).await.unwrap().admitted, 1);
    assert!(is_active(&store.session("sid-b", None).await.unwrap()));
}

async fn revoking_frees_the_slot_and_tells_the_change_stream(store: &dyn Store) {
    one_active_one_waiting(store).await;
    let cursor = store.snapshot().await.unwrap().cursor;
    let revoked = store.revoke("sid-a", T0 + 1).await.unwrap();
    assert_eq!(
        revoked.session.state,
        SessionState::Closed(CloseReason::Revoked)
    );
    // Revoking again is harmless and tells nobody anything new.
    assert_eq!(store.revoke("sid-a", T0 + 2).await.unwrap(), revoked);
    let batch = store
        .changes(&cursor, 10, std::time::Duration::from_millis(10))
        .await
        .unwrap();
    let changes: Vec<Change> = batch.changes.into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        changes,
        [Change::Ended {
            sid: "sid-a".into(),
            reason: CloseReason::Revoked
        }]
    );
    // A revoked session cannot be completed, nor a completed one revoked;
    // a waiting session is neither, and none of these change anything.
    assert_eq!(
        store.complete("sid-a", T0 + 2).await.unwrap_err(),
        QueueError::NotActive
    );
    assert_eq!(
        store.revoke("sid-b", T0 + 2).await.unwrap_err(),
        QueueError::NotActive
    );
    assert_eq!(
        store.revoke("nope", T0 + 2).await.unwrap_err(),
        QueueError::UnknownSession
    );
    assert_eq!(state(store, "b").await, SessionState::Waiting);
    assert_eq!(store.tick(T0 + 3, &seed(0)).await.unwrap().admitted, 1);
    store.complete("sid-b", T0 + 4).await.unwrap();
    assert_eq!(
        store.revoke("sid-b", T0 + 5).await.unwrap_err(),
        QueueError::NotActive
    );
    assert_eq!(
        state(store, "b").await,
        SessionState::Closed(CloseReason::Completed)
    );
    assert_eq!(
        state(store, "a").await,
        SessionState::Closed(CloseReason::Revoked)
    );
    assert_eq!(store.counts().await.unwrap().active, 0);
}

async fn sessions_expire_after_their_duration(store: &dyn Store) {
    one_active_one_waiting(store).await;
    let SessionState::Active { expires_at, .. } = state(store, "a").await else {
        panic!("a should be active");
    };
    assert_eq!(expires_at, T0 + 10 * MIN);
    store
        .touch(&["sid-b".into()], expires_at - 1)
        .await
        .unwrap();
    assert_eq!(
        store.tick(expires_at - 1, &seed(0)).await.unwrap().expired,
        0
    );
    let report = store.tick(expires_at, &seed(0)).await.unwrap();
    assert_eq!((report.expired, report.admitted), (1, 1));
    assert_eq!(
        state(store, "a").await,
        SessionState::Closed(CloseReason::Expired)
    );
}

async fn the_checkout_extends_a_session_up_to_the_longest(store: &dyn Store) {
    configured(
        store,
        RoomConfig {
            capacity: 1,
            max_session_duration_ms: 30 * MIN,
            ..config()
        },
    )
    .await;
    join(store, "a", T0).await;
    join(store, "b", T0).await;
    store.tick(T0, &seed(0)).await.unwrap();
    let cursor = store.snapshot().await.unwrap().cursor;
    let expiry = |view: SessionView| match view.session.state {
        SessionState::Active { expires_at, .. } => expires_at,
        other => panic!("not active: {other:?}"),
    };
    // At least 15 minutes from minute 5: until minute 20.
    let view = store.extend("sid-a", 15 * MIN, T0 + 5 * MIN).await.unwrap();
    assert_eq!(expiry(view), T0 + 20 * MIN);
    // Never shorter than it was, never past 30 minutes after admission.
    let view = store.extend("sid-a", MIN, T0 + 6 * MIN).await.unwrap();
    assert_eq!(expiry(view), T0 + 20 * MIN);
    let view = store.extend("sid-a", 60 * MIN, T0 + 7 * MIN).await.unwrap();
    assert_eq!(expiry(view), T0 + 30 * MIN);
    let batch = store
        .changes(&cursor, 10, std::time::Duration::from_millis(10))
        .await
        .unwrap();
    let extended = |expires_at| Change::Extended {
        sid: "sid-a".into(),
        user: "a".into(),
        admitted_at: T0,
        expires_at,
    };
    let changes: Vec<Change> = batch.changes.into_iter().map(|(_, c)| c).collect();
    assert_eq!(changes, [extended(T0 + 20 * MIN), extended(T0 + 30 * MIN)]);
    // The slot is held until then, and not a moment longer.
    store
        .touch(&["sid-b".into()], T0 + 30 * MIN - 1)
        .await
        .unwrap();
    assert_eq!(
        store
            .tick(T0 + 30 * MIN - 1, &seed(0))
            .await
            .unwrap()
            .expired,
        0
    );
    assert_eq!(
        store.tick(T0 + 30 * MIN, &seed(0)).await.unwrap().expired,
        1
    );
    // Only an active session is extended.
    for (sid, error) in [
        ("sid-a", QueueError::NotActive),
        ("nope", QueueError::UnknownSession),
    ] {
        assert_eq!(
            store.extend(sid, MIN, T0 + 30 * MIN).await.unwrap_err(),
            error
        );
    }
}

async fn admitting_now_passes_a_pause_and_the_rate_but_not_capacity(store: &dyn Store) {
    configured(
        store,
        RoomConfig {
            capacity: 3,
            admission_rate: Some(1),
            paused: true,
            opens_at: Some(T0 + MIN),
            ..config()
        },
    )
    .await;
    for user in ["a", "b", "c", "d"] {
        join(store, user, T0).await;
    }
    let admitted = |admitted, left| AdmitNow { admitted, left };
    // Not before the room opened (the first tick after opensAt).
    assert_eq!(
        store.admit_now("r1", 2, T0 + MIN).await.unwrap(),
        admitted(0, 0)
    );
    assert_eq!(store.tick(T0 + MIN, &seed(0)).await.unwrap().admitted, 0);
    // Paused, rate one a minute: two now, in line order; the same request
    // again admits nobody.
    assert_eq!(
        store.admit_now("r2", 2, T0 + MIN).await.unwrap(),
        admitted(2, 0)
    );
    assert_eq!(
        store.admit_now("r2", 2, T0 + MIN).await.unwrap(),
        admitted(0, 0)
    );
    assert!(is_active(&store.session("sid-a", None).await.unwrap()));
    assert!(is_active(&store.session("sid-b", None).await.unwrap()));
    assert_eq!(state(store, "c").await, SessionState::Waiting);
    // Capacity holds: one slot left of three.
    assert_eq!(
        store.admit_now("r3", 5, T0 + MIN).await.unwrap(),
        admitted(1, 0)
    );
    assert_eq!(store.counts().await.unwrap().active, 3);
    assert_eq!(
        store.admit_now("r4", 5, T0 + MIN).await.unwrap(),
        admitted(0, 0)
    );
    // Nobody after closing.
    store.complete("sid-a", T0 + MIN).await.unwrap();
    configured(
        store,
        RoomConfig {
            capacity: 3,
            closes_at: Some(T0 + 2 * MIN),
            ..config()
        },
    )
    .await;
    assert_eq!(
        store.admit_now("r5", 5, T0 + 2 * MIN).await.unwrap(),
        admitted(0, 0)
    );
    assert_eq!(state(store, "d").await, SessionState::Waiting);
}

async fn a_large_admission_now_comes_in_batches(store: &dyn Store) {
    let n = TICK_BATCH as u64 + 200;
    configured(
        store,
        RoomConfig {
            capacity: n + 100,
            paused: true,
            ..config()
        },
    )
    .await;
    for i in 0..n + 50 {
        store
            .join(
                &JoinRequest::new(&format!("user-{i}"), &format!("sid-{i}")),
                T0,
            )
            .await
            .unwrap();
    }
    store.tick(T0, &seed(0)).await.unwrap();
    let first = store.admit_now("big", n, T0).await.unwrap();
    assert_eq!(
        first,
        AdmitNow {
            admitted: TICK_BATCH as u64,
            left: 200
        }
    );
    let second = store.admit_now("big", n, T0).await.unwrap();
    assert_eq!(
        second,
        AdmitNow {
            admitted: 200,
            left: 0
        }
    );
    assert_eq!(store.admit_now("big", n, T0).await.unwrap().admitted, 0);
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.active, counts.waiting), (n, 50));
}

async fn without_a_longest_session_nothing_is_extended(store: &dyn Store) {
    one_active_one_waiting(store).await;
    let view = store.extend("sid-a", 60 * MIN, T0 + MIN).await.unwrap();
    assert!(matches!(
        view.session.state,
        SessionState::Active { expires_at, .. } if expires_at == T0 + 10 * MIN
    ));
    assert_eq!(
        store.extend("sid-b", MIN, T0 + MIN).await.unwrap_err(),
        QueueError::NotActive
    );
    // A session whose time is up is not extended, even before a tick ends it.
    assert_eq!(
        store.extend("sid-a", MIN, T0 + 10 * MIN).await.unwrap_err(),
        QueueError::NotActive
    );
}

/// [`one_active_one_waiting`] with a claim window of a minute; `b` stays
/// present through it.
async fn admitted_with_a_claim_window(store: &dyn Store) {
    a_admitted_b_waiting(store, MIN).await;
    store.touch(&["sid-b".into()], T0 + MIN).await.unwrap();
}

async fn an_unclaimed_slot_goes_to_the_next_in_line(store: &dyn Store) {
    admitted_with_a_claim_window(store).await;
    let cursor = store.snapshot().await.unwrap().cursor;
    assert_eq!(
        store.tick(T0 + MIN - 1, &seed(0)).await.unwrap().unclaimed,
        0
    );
    let report = store.tick(T0 + MIN, &seed(0)).await.unwrap();
    assert_eq!((report.unclaimed, report.admitted), (1, 1));
    assert_eq!(
        state(store, "a").await,
        SessionState::Closed(CloseReason::Unclaimed)
    );
    assert!(is_active(&store.session("sid-b", None).await.unwrap()));
    let batch = store
        .changes(&cursor, 10, std::time::Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(
        batch.changes[0].1,
        Change::Ended {
            sid: "sid-a".into(),
            reason: CloseReason::Unclaimed
        }
    );
    // Too late: claiming an ended session changes nothing.
    let late = store.claim("sid-a", T0 + MIN + 1).await.unwrap();
    assert_eq!(
        (late.view.session.state, late.lapsed),
        (SessionState::Closed(CloseReason::Unclaimed), false)
    );
    assert_eq!(
        store.claim("nope", T0).await.unwrap_err(),
        QueueError::UnknownSession
    );
}

async fn a_claimed_session_keeps_its_slot_until_it_ends(store: &dyn Store) {
    admitted_with_a_claim_window(store).await;
    let claimed = store.claim("sid-a", T0 + MIN - 1).await.unwrap();
    assert!(is_active(&claimed.view) && !claimed.lapsed);
    // Claiming again (another broker) is harmless.
    assert!(is_active(
        &store.claim("sid-a", T0 + MIN).await.unwrap().view
    ));
    let report = store.tick(T0 + 2 * MIN, &seed(0)).await.unwrap();
    assert_eq!((report.unclaimed, report.admitted), (0, 0));
    assert!(is_active(&store.session("sid-a", None).await.unwrap()));
    store.touch(&["sid-b".into()], T0 + 10 * MIN).await.unwrap();
    let report = store.tick(T0 + 10 * MIN, &seed(0)).await.unwrap();
    assert_eq!((report.expired, report.unclaimed), (1, 0));
    // b's own window runs from its admission.
    assert_eq!(
        store.tick(T0 + 11 * MIN, &seed(0)).await.unwrap().unclaimed,
        1
    );
}

async fn a_lapsed_claim_ends_the_session_before_any_tick(store: &dyn Store) {
    admitted_with_a_claim_window(store).await;
    let late = store.claim("sid-a", T0 + MIN).await.unwrap();
    assert_eq!(
        (late.view.session.state, late.lapsed),
        (SessionState::Closed(CloseReason::Unclaimed), true)
    );
    assert_eq!(store.counts().await.unwrap().active, 0);
    assert_eq!(store.tick(T0 + MIN, &seed(0)).await.unwrap().unclaimed, 0);
    assert!(is_active(&store.session("sid-b", None).await.unwrap()));
}

async fn without_a_claim_window_nobody_loses_a_slot_unclaimed(store: &dyn Store) {
    admitted_with_a_claim_window(store).await;
    // The window is switched off: pending deadlines no longer count.
    configured(store, capacity_one(0)).await;
    let report = store.tick(T0 + 2 * MIN, &seed(0)).await.unwrap();
    assert_eq!((report.unclaimed, report.admitted), (0, 0));
    assert!(is_active(
        &store.claim("sid-a", T0 + 3 * MIN).await.unwrap().view
    ));
    assert_eq!(state(store, "b").await, SessionState::Waiting);
    // Switched on again, deadlines start from the next admissions only.
    configured(store, capacity_one(MIN)).await;
    assert_eq!(
        store.tick(T0 + 4 * MIN, &seed(0)).await.unwrap().unclaimed,
        0
    );
    assert!(is_active(&store.session("sid-a", None).await.unwrap()));
}

async fn leaving_works_while_waiting_and_while_active(store: &dyn Store) {
    one_active_one_waiting(store).await;
    let left = store.leave("sid-b", T0 + 1).await.unwrap();
    assert_eq!(left.session.state, SessionState::Closed(CloseReason::Left));
    assert_eq!(left.waiting, 0);
    store.leave("sid-b", T0 + 2).await.unwrap();
    store.leave("sid-a", T0 + 2).await.unwrap();
    assert_eq!(store.counts().await.unwrap().active, 0);
    assert_eq!(
        store.leave("nope", T0).await.unwrap_err(),
        QueueError::UnknownSession
    );
    // A user whose session ended joins again at the back with a new session.
    let again = store
        .join(&JoinRequest::new("a", "sid-a2"), T0 + 3)
        .await
        .unwrap();
    assert!(again.created);
    assert_eq!(again.view.session.ticket, 3);
}

async fn pause_stops_admissions_and_keeps_the_line(store: &dyn Store) {
    configured(
        store,
        RoomConfig {
            paused: true,
            ..config()
        },
    )
    .await;
    join(store, "a", T0).await;
    assert_eq!(store.tick(T0, &seed(0)).await.unwrap().admitted, 0);
    assert_eq!(store.counts().await.unwrap().waiting, 1);
    configured(store, config()).await;
    assert_eq!(store.tick(T0 + 1, &seed(0)).await.unwrap().admitted, 1);
}

async fn admission_rate_is_never_exceeded(store: &dyn Store) {
    configured(
        store,
        RoomConfig {
            capacity: 1000,
            admission_rate: Some(120),
            ..config()
        },
    )
    .await;
    for i in 0..300 {
        join(store, &format!("u{i}"), T0).await;
    }
    let mut admitted_at = Vec::new();
    for step in 0..=600 {
        let now = T0 + step * 250;
        let ids: Vec<String> = (0..300).map(|i| format!("sid-u{i}")).collect();
        store.touch(&ids, now).await.unwrap();
        let report = store.tick(now, &seed(0)).await.unwrap();
        admitted_at.extend(std::iter::repeat_n(now, report.admitted as usize));
    }
    // 150 s at 120/min: the window allows at most 120 in any 60 s.
    for (i, &t) in admitted_at.iter().enumerate() {
        let in_window = admitted_at[i..]
            .iter()
            .take_while(|&&u| u < t + RATE_WINDOW_MS)
            .count();
        assert!(
            in_window <= 120,
            "{in_window} admissions in the minute from {t}"
        );
    }
    // ...and pacing spreads them: never more than a second's worth at once.
    let mut per_tick = std::collections::HashMap::new();
    for t in &admitted_at {
        *per_tick.entry(t).or_insert(0) += 1;
    }
    assert!(per_tick.values().all(|&n| n <= 2), "bursts: {per_tick:?}");
    assert!(
        admitted_at.len() >= 250,
        "only {} admitted in 150 s",
        admitted_at.len()
    );
}

/// Dispatchers whose clocks disagree must not earn the same credit twice.
async fn rate_pacing_survives_skewed_clocks(store: &dyn Store) {
    configured(
        store,
        RoomConfig {
            capacity: 100,
            admission_rate: Some(60),
            ..config()
        },
    )
    .await;
    for i in 0..10 {
        join(store, &format!("u{i}"), T0).await;
    }
    let mut admitted = 0;
    // One dispatcher at T0 and T0+1s; another, 1 s behind, in between.
    for now in [T0, T0 + 1000, T0, T0 + 1000] {
        admitted += store.tick(now, &seed(0)).await.unwrap().admitted;
    }
    assert_eq!(admitted, 2, "60/min allows one admission a second");
}

async fn pre_queue_waits_until_opening(store: &dyn Store) {
    configured(
        store,
        RoomConfig {
            opens_at: Some(T0 + MIN),
            ..config()
        },
    )
    .await;
    join(store, "a", T0).await;
    assert_eq!(store.tick(T0 + 1, &seed(0)).await.unwrap().admitted, 0);
    assert!(!store.counts().await.unwrap().opened);
    store.touch(&["sid-a".into()], T0 + MIN).await.unwrap();
    assert_eq!(store.tick(T0 + MIN, &seed(0)).await.unwrap().admitted, 1);
}

async fn random_room_shuffles_the_pre_queue_once(store: &dyn Store) {
    let sealed = seed(4242);
    configured(
        store,
        RoomConfig {
            opens_at: Some(T0 + 1),
            capacity: 0,
            queueing: Queueing::Random,
            ..config()
        },
    )
    .await;
    let users: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
    for u in &users {
        join(store, u, T0).await;
    }
    store.tick(T0 + 1, &sealed).await.unwrap();
    let mut expected: Vec<String> = users.iter().map(|u| format!("sid-{u}")).collect();
    shuffle::shuffle(&mut expected, sealed.seed);
    let line = store.snapshot().await.unwrap().waiting;
    let order: Vec<String> = line.iter().map(|(sid, _)| sid.clone()).collect();
    assert_eq!(order, expected);
    assert_eq!(
        line.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    let first = store.session(&expected[0], None).await.unwrap();
    assert_eq!((first.session.ticket, first.position), (1, Some(1)));
    // Later joins queue behind, and a second opening tick does not reshuffle.
    join(store, "late", T0 + 2).await;
    store.tick(T0 + 3, &seed(4243)).await.unwrap();
    let again: Vec<String> = waiting_sids(store).await;
    assert_eq!(&again[..20], &expected[..]);
    assert_eq!(again[20], "sid-late");
}

/// The waiting sessions' ids, in line order.
async fn waiting_sids(store: &dyn Store) -> Vec<String> {
    let line = store.snapshot().await.unwrap().waiting;
    line.into_iter().map(|(sid, _)| sid).collect()
}

/// A Random room, open from the start.
async fn random_room(store: &dyn Store) {
    configured(
        store,
        RoomConfig {
            queueing: Queueing::Random,
            ..config()
        },
    )
    .await;
}

/// A Random room opening at `T0 + MIN` with a line that does not move.
async fn random_room_opening_later(store: &dyn Store) {
    configured(
        store,
        RoomConfig {
            opens_at: Some(T0 + MIN),
            capacity: 0,
            queueing: Queueing::Random,
            ..config()
        },
    )
    .await;
}

async fn a_random_room_commits_to_its_seed_and_reveals_it_after_the_shuffle(store: &dyn Store) {
    random_room_opening_later(store).await;
    assert_eq!(store.fairness().await.unwrap(), None);
    let sealed = seed(77);
    store.tick(T0, &sealed).await.unwrap();
    let committed = Some(Fairness {
        commitment: sealed.commitment.clone(),
        revealed: None,
    });
    assert_eq!(store.fairness().await.unwrap(), committed);
    // Joins come after the commitment; later ticks bring other seeds.
    for i in 0..30 {
        join(store, &format!("u{i}"), T0 + 1).await;
    }
    store.leave("sid-u3", T0 + 2).await.unwrap();
    store.tick(T0 + 3, &seed(78)).await.unwrap();
    assert_eq!(store.fairness().await.unwrap(), committed);
    assert_eq!(store.joins(0, 100).await.unwrap(), Vec::<u64>::new());
    let before = store.snapshot().await.unwrap().waiting;

    store.tick(T0 + MIN, &seed(79)).await.unwrap();
    let fairness = store.fairness().await.unwrap().unwrap();
    assert_eq!(
        fairness,
        Fairness {
            commitment: sealed.commitment.clone(),
            revealed: Some(Revealed {
                seed: 77,
                salt: sealed.salt.clone(),
                shuffled_at: T0 + MIN,
                general: 29,
                priority: 0,
            }),
        }
    );
    assert_eq!(commitment(77, &sealed.salt), fairness.commitment);
    // The join list is the pre-queue's tickets in join order; shuffling
    // it with the seed gives the line, ticket by ticket.
    let joins = store.joins(0, 100).await.unwrap();
    let tickets: Vec<u64> = before.iter().map(|(_, t)| *t).collect();
    assert_eq!(joins, tickets);
    let mut order = joins.clone();
    shuffle::shuffle(&mut order, 77);
    let sid_of = |ticket: u64| before.iter().find(|(_, t)| *t == ticket).unwrap().0.clone();
    let line: Vec<String> = waiting_sids(store).await;
    assert_eq!(line, order.into_iter().map(sid_of).collect::<Vec<_>>());
    // Pages of the join list.
    assert_eq!(store.joins(10, 5).await.unwrap(), tickets[10..15]);
    assert_eq!(store.joins(25, 100).await.unwrap(), tickets[25..]);
    assert_eq!(store.joins(29, 100).await.unwrap(), Vec::<u64>::new());
    assert_eq!(store.joins(0, 0).await.unwrap(), Vec::<u64>::new());
    assert_eq!(
        store.joins(u64::MAX, u64::MAX).await.unwrap(),
        Vec::<u64>::new()
    );
}

async fn the_first_seed_sealed_wins_among_concurrent_ticks(store: &dyn Store) {
    random_room_opening_later(store).await;
    let seeds: Vec<SealedSeed> = (1..=16).map(seed).collect();
    futures_util::future::join_all(seeds.iter().map(|s| store.tick(T0, s)))
        .await
        .into_iter()
        .for_each(|report| {
            report.unwrap();
        });
    let kept = store.fairness().await.unwrap().unwrap().commitment;
    let sealed = seeds.iter().find(|s| s.commitment == kept).unwrap();
    join(store, "a", T0).await;
    join(store, "b", T0).await;
    futures_util::future::join_all(seeds.iter().map(|s| store.tick(T0 + MIN, s))).await;
    let revealed = store.fairness().await.unwrap().unwrap().revealed.unwrap();
    assert_eq!((revealed.seed, &revealed.salt), (sealed.seed, &sealed.salt));
}

async fn rooms_of_other_modes_seal_no_seed(store: &dyn Store) {
    for queueing in [Queueing::Fifo, Queueing::Passthrough, Queueing::Reject] {
        configured(
            store,
            RoomConfig {
                queueing,
                ..config()
            },
        )
        .await;
        store.tick(T0, &seed(5)).await.unwrap();
        assert_eq!(store.fairness().await.unwrap(), None);
    }
    // A room that turns Random after it opened has nothing left to shuffle.
    random_room(store).await;
    store.tick(T0 + 1, &seed(5)).await.unwrap();
    assert_eq!(store.fairness().await.unwrap(), None);
}

async fn passthrough_admits_at_once(store: &dyn Store) {
    configured(
        store,
        RoomConfig {
            queueing: Queueing::Passthrough,
            capacity: 1,
            ..config()
        },
    )
    .await;
    let a = join(store, "a", T0).await;
    let b = join(store, "b", T0).await;
    assert!(is_active(&a) && is_active(&b));
    assert_eq!(store.counts().await.unwrap().active, 2);
}

async fn reject_refuses_joins_but_keeps_sessions(store: &dyn Store) {
    configured(
        store,
        RoomConfig {
            paused: true,
            ..config()
        },
    )
    .await;
    join(store, "a", T0).await;
    configured(
        store,
        RoomConfig {
            queueing: Queueing::Reject,
            ..config()
        },
    )
    .await;
    assert_eq!(
        store
            .join(&JoinRequest::new("b", "s"), T0)
            .await
            .unwrap_err(),
        QueueError::Rejected
    );
    assert_eq!(join(store, "a", T0).await.position, Some(1));
    assert_eq!(store.tick(T0, &seed(0)).await.unwrap().admitted, 1);
}

async fn closing_refuses_joins_and_closes_the_line(store: &dyn Store) {
    configured(
        store,
        RoomConfig {
            closes_at: Some(T0 + MIN),
            capacity: 0,
            ..config()
        },
    )
    .await;
    join(store, "a", T0).await;
    assert_eq!(
        store
            .join(&JoinRequest::new("b", "s"), T0 + MIN)
            .await
            .unwrap_err(),
        QueueError::RoomClosed
    );
    assert_eq!(store.tick(T0 + MIN, &seed(0)).await.unwrap().closed, 1);
    assert_eq!(
        state(store, "a").await,
        SessionState::Closed(CloseReason::RoomClosed)
    );
    assert_eq!(store.counts().await.unwrap().waiting, 0);
}

async fn absent_users_are_dropped_from_the_line(store: &dyn Store) {
    admitting_nobody(store).await;
    join(store, "gone", T0).await;
    join(store, "here", T0).await;
    join(store, "polling", T0).await;
    store.touch(&["sid-here".into()], T0 + MIN).await.unwrap();
    store.session("sid-polling", Some(T0 + MIN)).await.unwrap();
    assert_eq!(
        store.tick(T0 + 2 * MIN, &seed(0)).await.unwrap().abandoned,
        0
    );
    let report = store.tick(T0 + 2 * MIN + 1, &seed(0)).await.unwrap();
    assert_eq!(report.abandoned, 1);
    assert_eq!(
        state(store, "gone").await,
        SessionState::Closed(CloseReason::Abandoned)
    );
    assert_eq!(
        store.session("sid-polling", None).await.unwrap().position,
        Some(2)
    );
}

async fn nobody_is_dropped_as_absent_right_after_presence_lapsed(store: &dyn Store) {
    admitting_nobody(store).await;
    let grace = presence_grace_ms(2 * MIN);
    let abandoned_at = |now| async move { store.tick(now, &seed(0)).await.unwrap().abandoned };
    join(store, "gone", T0).await;
    store.presence_lapsed(T0 + 3 * MIN).await.unwrap();
    assert_eq!(abandoned_at(T0 + 3 * MIN).await, 0);
    assert_eq!(abandoned_at(T0 + 3 * MIN + grace).await, 0);
    assert_eq!(abandoned_at(T0 + 3 * MIN + grace + 1).await, 1);
    assert_eq!(
        state(store, "gone").await,
        SessionState::Closed(CloseReason::Abandoned)
    );
    // A late report of an older lapse never shortens the grace.
    join(store, "late", T0 + 3 * MIN).await;
    store.presence_lapsed(T0 + 6 * MIN).await.unwrap();
    store.presence_lapsed(T0 + 4 * MIN).await.unwrap();
    assert_eq!(abandoned_at(T0 + 6 * MIN + grace).await, 0);
    assert_eq!(abandoned_at(T0 + 6 * MIN + grace + 1).await, 1);
}

async fn the_change_stream_tells_every_change_in_order(store: &dyn Store) {
    configured(
        store,
        RoomConfig {
            capacity: 1,
            ..config()
        },
    )
    .await;
    let start = store.snapshot().await.unwrap();
    join(store, "a", T0).await;
    join(store, "b", T0).await;
    store.tick(T0, &seed(0)).await.unwrap();
    store.leave("sid-b", T0).await.unwrap();
    store.complete("sid-a", T0).await.unwrap();
    let batch = store
        .changes(&start.cursor, 100, std::time::Duration::from_millis(10))
        .await
        .unwrap();
    let seqs: Vec<u64> = batch.changes.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        seqs,
        ((start.seq + 1)..=(start.seq + 6)).collect::<Vec<_>>()
    );
    let changes: Vec<Change> = batch.changes.into_iter().map(|(_, c)| c).collect();
    assert_eq!(changes[0], Change::Joined { ticket: 1 });
    assert_eq!(changes[2], Change::Opened);
    assert_eq!(
        changes[3],
        Change::Admitted {
            sid: "sid-a".into(),
            user: "a".into(),
            ticket: 1,
            admitted_at: T0,
            expires_at: T0 + 10 * MIN
        }
    );
    assert_eq!(
        changes[4],
        Change::Dequeued {
            sid: "sid-b".into(),
            ticket: 2,
            reason: CloseReason::Left
        }
    );
    assert_eq!(
        changes[5],
        Change::Ended {
            sid: "sid-a".into(),
            reason: CloseReason::Completed
        }
    );
    // Nothing more: a blocking read times out empty and keeps the cursor.
    let idle = store
        .changes(&batch.cursor, 100, std::time::Duration::from_millis(50))
        .await
        .unwrap();
    assert!(idle.changes.is_empty());
    assert_eq!(idle.cursor, batch.cursor);
}

async fn a_blocked_reader_wakes_on_a_change(store: &dyn Store) {
    configured(store, config()).await;
    let cursor = store.snapshot().await.unwrap().cursor;
    let (batch, _) = tokio::join!(
        store.changes(&cursor, 10, std::time::Duration::from_secs(5)),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            join(store, "a", T0).await
        }
    );
    assert_eq!(batch.unwrap().changes[0].1, Change::Joined { ticket: 1 });
    // Reading from LATEST skips what happened before, and gives a cursor to go on from.
    let (batch, _) = tokio::join!(
        store.changes(LATEST, 10, std::time::Duration::from_secs(5)),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            join(store, "b", T0).await
        }
    );
    let batch = batch.unwrap();
    assert_eq!(batch.changes.len(), 1);
    assert_eq!(batch.changes[0].1, Change::Joined { ticket: 2 });
    join(store, "c", T0).await;
    let next = store
        .changes(&batch.cursor, 10, std::time::Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(
        next.changes
            .iter()
            .map(|(_, c)| c.clone())
            .collect::<Vec<_>>(),
        [Change::Joined { ticket: 3 }]
    );
    // An empty read from LATEST still gives a cursor that misses nothing after it.
    let idle = store
        .changes(LATEST, 10, std::time::Duration::from_millis(10))
        .await
        .unwrap();
    assert!(idle.changes.is_empty());
    join(store, "d", T0).await;
    let after = store
        .changes(&idle.cursor, 10, std::time::Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(after.changes.len(), 1);
}

async fn a_proof_is_spent_once_and_forgotten_when_it_expires(store: &dyn Store) {
    assert!(store.spend_proof("p1", T0 + 100, T0).await.unwrap());
    assert!(!store.spend_proof("p1", T0 + 100, T0 + 1).await.unwrap());
    assert!(store.spend_proof("p2", T0 + 200, T0 + 1).await.unwrap());
    assert!(!store.spend_proof("p2", T0 + 200, T0 + 150).await.unwrap());
    // Expired ids are gone (the caller refuses expired challenges): the
    // record holds only live challenges, however many were spent.
    assert!(store.spend_proof("p1", T0 + 300, T0 + 150).await.unwrap());
    assert!(!store.spend_proof("p1", T0 + 300, T0 + 151).await.unwrap());
    // Nothing else of the room changed.
    assert_eq!(store.counts().await.unwrap(), RoomCounts::default());
    assert_eq!(store.config().await.unwrap(), None);
}

async fn purging_forgets_spent_proofs(store: &dyn Store) {
    configured(store, config()).await;
    assert!(store.spend_proof("p1", T0 + 100, T0).await.unwrap());
    store.purge().await.unwrap();
    assert!(store.spend_proof("p1", T0 + 100, T0).await.unwrap());
}

async fn users_with_odd_names_are_kept_intact(store: &dyn Store) {
    configured(store, config()).await;
    let user = "o'neil|admin\n{x}\u{1F600}";
    let view = store
        .join(&JoinRequest::new(user, "s1"), T0)
        .await
        .unwrap()
        .view;
    assert_eq!(view.session.user, user);
    store.tick(T0, &seed(0)).await.unwrap();
    assert_eq!(store.session("s1", None).await.unwrap().session.user, user);
}

fn add(total: &mut TickReport, report: &TickReport) {
    total.admitted += report.admitted;
    total.expired += report.expired;
    total.abandoned += report.abandoned;
    total.closed += report.closed;
    total.unclaimed += report.unclaimed;
}

/// The random runs must reach every kind of transition, or they prove little.
fn assert_all_transitions(total: &TickReport) {
    assert!(
        total.admitted > 50
            && total.expired > 0
            && total.abandoned > 0
            && total.closed > 0
            && total.unclaimed > 0,
        "{total:?}"
    );
}

/// Joins `user` from `address` as a new place, or says why not.
async fn join_from(
    store: &dyn Store,
    user: &str,
    address: &str,
    now: Millis,
) -> Result<JoinOutcome> {
    let sid = format!("sid-{user}");
    store
        .join(&JoinRequest::new(user, &sid).from_address(address), now)
        .await
}

async fn one_address_holds_at_most_its_cap_of_live_sessions(store: &dyn Store) {
    let limited = RoomConfig {
        capacity: 0,
        sessions_per_address: 3,
        priority_share: 100,
        ..config()
    };
    configured(store, limited).await;
    for user in ["a", "b", "c"] {
        assert!(
            join_from(store, user, "192.0.2.1", T0)
                .await
                .unwrap()
                .created
        );
    }
    let full = join_from(store, "d", "192.0.2.1", T0).await.unwrap_err();
    assert_eq!(full, QueueError::AddressFull);
    // Nothing changed: no session, no place, no change in the stream.
    assert_eq!(store.counts().await.unwrap().waiting, 3);
    assert_eq!(
        store.session("sid-d", None).await.unwrap_err(),
        QueueError::UnknownSession
    );
    // A user who already holds a place gets it back whatever the limits.
    let again = join_from(store, "a", "192.0.2.1", T0 + 1).await.unwrap();
    assert!(!again.created);
    // Another address is not affected.
    assert!(
        join_from(store, "d", "192.0.2.2", T0)
            .await
            .unwrap()
            .created
    );
    // A session that ends frees its address's place.
    store.leave("sid-b", T0 + 2).await.unwrap();
    assert!(
        join_from(store, "e", "192.0.2.1", T0 + 3)
            .await
            .unwrap()
            .created
    );
    assert_eq!(
        join_from(store, "f", "192.0.2.1", T0 + 3)
            .await
            .unwrap_err(),
        QueueError::AddressFull
    );
    // Joins without an address are never limited.
    let unlimited = store.join(&JoinRequest::new("g", "sid-g"), T0 + 4).await;
    assert!(unlimited.unwrap().created);
}

async fn one_address_takes_new_places_at_most_at_its_rate(store: &dyn Store) {
    let limited = RoomConfig {
        capacity: 0,
        joins_per_address_per_minute: 6,
        ..config()
    };
    configured(store, limited).await;
    // A burst of a minute's worth, then one place every 10 s.
    for i in 0..6 {
        join_from(store, &format!("u{i}"), "2001:db8::/64", T0)
            .await
            .unwrap();
    }
    let refused = join_from(store, "u6", "2001:db8::/64", T0)
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        QueueError::AddressRateLimited {
            retry_after_ms: 10_000
        }
    );
    assert_eq!(store.counts().await.unwrap().waiting, 6);
    let early = join_from(store, "u6", "2001:db8::/64", T0 + 9_999).await;
    assert_eq!(
        early.unwrap_err(),
        QueueError::AddressRateLimited { retry_after_ms: 1 }
    );
    join_from(store, "u6", "2001:db8::/64", T0 + 10_000)
        .await
        .unwrap();
    // Refused attempts spend nothing, and other addresses are not affected.
    join_from(store, "v", "2001:db8:0:1::/64", T0 + 10_000)
        .await
        .unwrap();
    // After a quiet minute the whole burst is back, even across ticks that
    // forget recovered addresses.
    store.tick(T0 + 2 * MIN, &seed(1)).await.unwrap();
    for i in 0..6 {
        join_from(store, &format!("w{i}"), "2001:db8::/64", T0 + 2 * MIN)
            .await
            .unwrap();
    }
}

/// Joins `user` in `lane` as a new place.
async fn join_lane(store: &dyn Store, user: &str, lane: Lane, now: Millis) -> SessionView {
    let sid = format!("sid-{user}");
    let request = JoinRequest::new(user, &sid).in_lane(lane);
    store.join(&request, now).await.unwrap().view
}

async fn positions_are_exact_inside_each_lane(store: &dyn Store) {
    admitting_nobody(store).await;
    let g1 = join_lane(store, "g1", Lane::General, T0).await;
    let p1 = join_lane(store, "p1", Lane::Priority, T0).await;
    let g2 = join_lane(store, "g2", Lane::General, T0).await;
    let p2 = join_lane(store, "p2", Lane::Priority, T0).await;
    assert_eq!((g1.position, g1.waiting), (Some(1), 1));
    assert_eq!((p1.position, p1.waiting), (Some(1), 1));
    assert_eq!((g2.position, g2.waiting), (Some(2), 2));
    assert_eq!((p2.position, p2.waiting), (Some(2), 2));
    assert_eq!(Lane::of_ticket(p2.session.ticket), Lane::Priority);
    assert_eq!(join_number(p2.session.ticket), 4);
    store.leave("sid-p1", T0 + 1).await.unwrap();
    let p2 = store.session("sid-p2", None).await.unwrap();
    assert_eq!((p2.position, p2.waiting), (Some(1), 1));
    let g2 = store.session("sid-g2", None).await.unwrap();
    assert_eq!((g2.position, g2.waiting), (Some(2), 2));
    assert_eq!(store.counts().await.unwrap().waiting, 3);
}

async fn the_priority_lane_is_admitted_first_within_capacity(store: &dyn Store) {
    configured(
        store,
        RoomConfig {
            capacity: 3,
            ..config()
        },
    )
    .await;
    for user in ["g1", "g2"] {
        join_lane(store, user, Lane::General, T0).await;
    }
    for user in ["p1", "p2"] {
        join_lane(store, user, Lane::Priority, T0).await;
    }
    store.tick(T0 + 1, &seed(1)).await.unwrap();
    for (user, active) in [("p1", true), ("p2", true), ("g1", true), ("g2", false)] {
        assert_eq!(
            is_active(&store.session(&format!("sid-{user}"), None).await.unwrap()),
            active,
            "{user}"
        );
    }
    assert_eq!(store.counts().await.unwrap().active, 3);
}

async fn the_priority_lane_can_get_a_share_of_admissions(store: &dyn Store) {
    configured(
        store,
        RoomConfig {
            capacity: 100,
            admission_rate: Some(60),
            priority_share: 25,
            ..config()
        },
    )
    .await;
    for i in 0..8 {
        join_lane(store, &format!("g{i}"), Lane::General, T0).await;
        join_lane(store, &format!("p{i}"), Lane::Priority, T0).await;
    }
    // One admission a second: one in four goes to the priority lane.
    let mut order = Vec::new();
    for second in 0..8 {
        let before: Vec<String> = order.clone();
        store.tick(T0 + second * 1_000, &seed(1)).await.unwrap();
        for i in 0..8 {
            for user in [format!("g{i}"), format!("p{i}")] {
                let view = store.session(&format!("sid-{user}"), None).await.unwrap();
                if is_active(&view) && !before.contains(&user) {
                    order.push(user);
                }
            }
        }
    }
    assert_eq!(order, ["g0", "g1", "g2", "p0", "g3", "g4", "g5", "p1"]);
}

async fn an_invite_code_is_good_for_one_place(store: &dyn Store) {
    admitting_nobody(store).await;
    let codes = ["hash-a".to_owned(), "hash-b".to_owned()];
    assert_eq!(store.add_invites(&codes).await.unwrap(), 2);
    assert_eq!(store.add_invites(&codes).await.unwrap(), 0);
    let redeem = |user: &'static str, code: &'static str| async move {
        let sid = format!("sid-{user}");
        let request = JoinRequest::new(user, &sid)
            .in_lane(Lane::Priority)
            .redeeming(code);
        store.join(&request, T0).await
    };
    assert!(redeem("u1", "hash-a").await.unwrap().created);
    // Spent, and a code never given: no place, no change.
    assert_eq!(
        redeem("u2", "hash-a").await.unwrap_err(),
        QueueError::InvalidInvite
    );
    assert_eq!(
        redeem("u2", "hash-z").await.unwrap_err(),
        QueueError::InvalidInvite
    );
    assert_eq!(store.counts().await.unwrap().waiting, 1);
    // The holder coming back keeps the place; the code stays spent even
    // when the list is loaded again (a broker restarting).
    assert!(!redeem("u1", "hash-a").await.unwrap().created);
    assert_eq!(store.add_invites(&codes).await.unwrap(), 0);
    assert_eq!(
        redeem("u3", "hash-a").await.unwrap_err(),
        QueueError::InvalidInvite
    );
    assert!(redeem("u3", "hash-b").await.unwrap().created);
}

async fn a_random_room_shuffles_each_lane_on_its_own(store: &dyn Store) {
    random_room_opening_later(store).await;
    for i in 0..20 {
        let lane = if i % 2 == 0 {
            Lane::General
        } else {
            Lane::Priority
        };
        join_lane(store, &format!("u{i}"), lane, T0).await;
    }
    let before = store.snapshot().await.unwrap().waiting;
    store.tick(T0 + MIN, &seed(42)).await.unwrap();
    for i in 0..20 {
        let view = store.session(&format!("sid-u{i}"), None).await.unwrap();
        let lane = if i % 2 == 0 {
            Lane::General
        } else {
            Lane::Priority
        };
        assert_eq!(Lane::of_ticket(view.session.ticket), lane);
        assert_eq!(view.waiting, 10);
    }
    // The join list holds each lane's tickets in join order, the general
    // lane's first; each lane's part, dealt out with the seed, is its line.
    let revealed = store.fairness().await.unwrap().unwrap().revealed.unwrap();
    assert_eq!((revealed.general, revealed.priority), (10, 10));
    let joins = store.joins(0, 100).await.unwrap();
    assert_eq!(joins, before.iter().map(|(_, t)| *t).collect::<Vec<_>>());
    let sid_of = |ticket: u64| before.iter().find(|(_, t)| *t == ticket).unwrap().0.clone();
    let mut expected: Vec<String> = Vec::new();
    for part in [&joins[..10], &joins[10..]] {
        let mut order = part.to_vec();
        shuffle::shuffle(&mut order, 42);
        expected.extend(order.into_iter().map(sid_of));
    }
    let line: Vec<String> = waiting_sids(store).await;
    assert_eq!(line, expected);
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(#[tokio::test]
            async fn $name() {
                super::$name(&super::MemoryStore::new()).await;
            })*

            /// Random operations, each checked against the reference model.
            #[tokio::test]
            async fn behaves_like_the_reference_model() {
                let mut total = super::TickReport::default();
                for seed in 0..12 {
                    let report = super::model::run(&super::MemoryStore::new(), seed, 400).await;
                    super::add(&mut total, &report);
                }
                super::assert_all_transitions(&total);
            }
        }
        mod redis_store {
            $(#[tokio::test]
            async fn $name() {
                let server = super::RedisServer::start();
                let store = super::RedisStore::connect(&server.url(), "room-1").await.unwrap();
                super::$name(&store).await;
            })*

            #[tokio::test]
            async fn behaves_like_the_reference_model() {
                let server = super::RedisServer::start();
                let mut total = super::TickReport::default();
                for seed in 0..12 {
                    let room = format!("model-{seed}");
                    let store = super::RedisStore::connect(&server.url(), &room).await.unwrap();
                    super::add(&mut total, &super::model::run(&store, seed, 400).await);
                }
                super::assert_all_transitions(&total);
            }
        }
    };
}

conformance!(
    unconfigured_room_refuses_joins,
    configuration_round_trips,
    older_revisions_never_replace_newer_rules,
    join_is_idempotent_and_positions_are_exact,
    one_address_holds_at_most_its_cap_of_live_sessions,
    one_address_takes_new_places_at_most_at_its_rate,
    positions_are_exact_inside_each_lane,
    the_priority_lane_is_admitted_first_within_capacity,
    the_priority_lane_can_get_a_share_of_admissions,
    an_invite_code_is_good_for_one_place,
    a_random_room_shuffles_each_lane_on_its_own,
    admission_follows_tickets_and_never_exceeds_capacity,
    completing_frees_the_slot_at_once,
    revoking_frees_the_slot_and_tells_the_change_stream,
    sessions_expire_after_their_duration,
    the_checkout_extends_a_session_up_to_the_longest,
    without_a_longest_session_nothing_is_extended,
    admitting_now_passes_a_pause_and_the_rate_but_not_capacity,
    a_large_admission_now_comes_in_batches,
    an_unclaimed_slot_goes_to_the_next_in_line,
    a_claimed_session_keeps_its_slot_until_it_ends,
    a_lapsed_claim_ends_the_session_before_any_tick,
    without_a_claim_window_nobody_loses_a_slot_unclaimed,
    leaving_works_while_waiting_and_while_active,
    pause_stops_admissions_and_keeps_the_line,
    admission_rate_is_never_exceeded,
    rate_pacing_survives_skewed_clocks,
    pre_queue_waits_until_opening,
    random_room_shuffles_the_pre_queue_once,
    a_random_room_commits_to_its_seed_and_reveals_it_after_the_shuffle,
    the_first_seed_sealed_wins_among_concurrent_ticks,
    rooms_of_other_modes_seal_no_seed,
    passthrough_admits_at_once,
    reject_refuses_joins_but_keeps_sessions,
    closing_refuses_joins_and_closes_the_line,
    absent_users_are_dropped_from_the_line,
    nobody_is_dropped_as_absent_right_after_presence_lapsed,
    lost_rules_are_restored_but_not_those_of_a_purged_room,
    closed_sessions_are_remembered_while_their_tokens_could_live,
    the_change_stream_tells_every_change_in_order,
    a_blocked_reader_wakes_on_a_change,
    users_with_odd_names_are_kept_intact,
    broker_reports_add_up_and_go_stale,
    purging_forgets_the_room,
    a_proof_is_spent_once_and_forgotten_when_it_expires,
    purging_forgets_spent_proofs,
);
