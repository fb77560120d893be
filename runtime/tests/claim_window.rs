//! The claim window, against a real broker, a real dispatcher and a real
//! Redis: an admitted visitor who never reaches the shop's gate loses the
//! slot to the next in line; one who does keeps it.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::gate::Gate as RedisPath;
use common::*;
use reqwest::StatusCode;
use serde_json::json;

const WINDOW: Duration = Duration::from_secs(2);

/// Asks `base`'s gate with the cookies of `pass`.
async fn gate(base: &str, pass: &EntryPass) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{base}/v1/rooms/{ROOM}/gate"))
        .header("cookie", pass.cookie())
        .send()
        .await
        .unwrap()
}

/// Waits for `events`' `admitted` event; returns the pass of `session`.
async fn admitted(events: &mut SseClient, base: &str, session: &Joined) -> EntryPass {
    events
        .next_of("admitted", Duration::from_secs(5))
        .await
        .unwrap();
    entry_pass(base, session).await
}

#[tokio::test]
async fn a_no_show_loses_the_slot_and_a_visitor_at_the_gate_keeps_it() {
    let room = Room::new(&[
        ("USHER_CAPACITY", "1"),
        ("USHER_CLAIM_WINDOW", "2s"),
        ("USHER_DISPATCH_TICK", "50ms"),
    ]);
    let (_broker, base) = room.broker(&[]).await;
    let dispatcher = room.dispatcher(&[]).await;
    let client = reqwest::Client::new();
    let a = join(&client, &base).await;
    let b = join(&client, &base).await;
    let mut a_events = SseClient::connect(&format!("{base}{}", a.events_url), None).await;
    let mut b_events = SseClient::connect(&format!("{base}{}", b.events_url), None).await;

    // A is admitted and never comes to the gate: after the window, A's
    // stream hears the slot is gone, and B gets it.
    let a_pass = admitted(&mut a_events, &base, &a).await;
    let a_admitted = Instant::now();
    let closed = a_events
        .next_of("closed", WINDOW + Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(closed.data, json!({ "reason": "unclaimed" }));
    let waited = a_admitted.elapsed();
    assert!(waited >= WINDOW - Duration::from_millis(300), "{waited:?}");
    let b_pass = admitted(&mut b_events, &base, &b).await;
    let refused = gate(&base, &a_pass).await;
    assert_eq!(
        error_of(refused).await,
        (StatusCode::UNAUTHORIZED, "session_ended".into())
    );

    // B reaches the gate within the window and keeps the slot past it.
    assert_eq!(gate(&base, &b_pass).await.status(), StatusCode::OK);
    tokio::time::sleep(WINDOW + Duration::from_secs(1)).await;
    assert_eq!(gate(&base, &b_pass).await.status(), StatusCode::OK);
    let b_status = get_json(&client, &format!("{base}{}", b.status_url)).await;
    assert_eq!(b_status["state"], "admitted", "{b_status}");
    assert_eq!(room_stats(&base).await["active"], 1);
    assert!(
        metrics_text(&dispatcher.metrics)
            .await
            .contains("usher_unclaimed_total 1\n")
    );
}

/// The claim deadline Redis holds for `sid`, if any.
async fn deadline(room: &Room, sid: &str) -> Option<i64> {
    redis::cmd("ZSCORE")
        .arg(format!("usher:{{{ROOM}}}:unclaimed"))
        .arg(sid)
        .query_async(&mut room.redis().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_broker_cut_off_from_redis_lets_a_valid_token_through_and_claims_later() {
    let room = Room::new(&[
        ("USHER_CAPACITY", "1"),
        ("USHER_CLAIM_WINDOW", "6s"),
        ("USHER_DISPATCH_TICK", "50ms"),
    ]);
    let path = RedisPath::to(room.redis.port()).await;
    let url = path.url();
    let (_broker, base) = room.broker(&[("USHER_REDIS_URL", url.as_str())]).await;
    let _dispatcher = room.dispatcher(&[]).await;
    let a = join(&reqwest::Client::new(), &base).await;
    let mut events = SseClient::connect(&format!("{base}{}", a.events_url), None).await;
    let pass = admitted(&mut events, &base, &a).await;
    let admitted_at = Instant::now();
    assert!(deadline(&room, &a.session_id).await.is_some());

    // Redis is out of reach: the token is valid, so the visitor passes,
    // but nothing was claimed.
    path.close();
    assert_eq!(gate(&base, &pass).await.status(), StatusCode::OK);
    assert!(deadline(&room, &a.session_id).await.is_some());

    // Back in reach: a later pass claims the session, which keeps its slot.
    path.open();
    eventually(Duration::from_secs(3), "the claim", || {
        let (base, pass, room, sid) = (&base, &pass, &room, &a.session_id);
        async move {
            let passed = gate(base, pass).await.status() == StatusCode::OK;
            (passed && deadline(room, sid).await.is_none()).then_some(())
        }
    })
    .await;
    let past_window = Duration::from_secs(7).saturating_sub(admitted_at.elapsed());
    tokio::time::sleep(past_window).await;
    assert_eq!(gate(&base, &pass).await.status(), StatusCode::OK);
    assert_eq!(room_stats(&base).await["active"], 1);
}

#[tokio::test]
async fn a_claim_window_out_of_bounds_is_refused_at_start() {
    let room = Room::new(&[]);
    for (role, window) in [
        ("dispatcher", "500ms"),
        ("broker", "2h"),
        ("broker", "soon"),
    ] {
        let stderr = room.refused_at_start(role, &[("USHER_CLAIM_WINDOW", window)]);
        assert!(stderr.contains("--claim-window"), "{stderr}");
        assert!(stderr.contains(window), "{stderr}");
    }
}
