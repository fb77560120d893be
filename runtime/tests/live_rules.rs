//! Rules that live in the store, as the operator writes them, with a real
//! broker, dispatcher and Redis: processes started with
//! `USHER_RULES_FROM=store` wait for the rules, then follow every change
//! live (a message, a pause, more capacity) without a restart and without
//! cutting a stream.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use usher_runtime::queue::{Queueing, RedisStore, RoomConfig, Store as _};
use usher_runtime::testing::free_port;

fn rules(capacity: u64, paused: bool, message: &str, revision: u64) -> RoomConfig {
    RoomConfig {
        capacity,
        admission_rate: None,
        session_duration_ms: 600_000,
        queueing: Queueing::Fifo,
        opens_at: None,
        closes_at: None,
        paused,
        abandon_timeout_ms: 120_000,
        claim_window_ms: 0,
        max_session_duration_ms: 0,
        message: message.into(),
        joins_per_address_per_minute: 0,
        sessions_per_address: 0,
        priority_share: 100,
        revision,
        proof_of_work_bits: 0,
    }
}

async fn ready(port: u16) -> bool {
    reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test]
async fn rules_in_the_store_change_a_running_room_without_cutting_streams() {
    let room = Room::new(&[
        ("USHER_RULES_FROM", "store"),
        ("USHER_DISPATCH_TICK", "50ms"),
        ("USHER_POSITION_INTERVAL", "100ms"),
        // Ignored: the rules come from the store.
        ("USHER_CAPACITY", "1000"),
    ]);
    let (broker_port, dispatcher_port) = (free_port(), free_port());
    let mut broker = room.spawn("broker", broker_port, &[]);
    let mut dispatcher = room.spawn("dispatcher", dispatcher_port, &[]);
    let base = format!("http://127.0.0.1:{broker_port}");

    // Without rules in the store, neither is ready and nobody joins.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!ready(broker_port).await && !ready(dispatcher_port).await);
    let refused = reqwest::Client::new()
        .post(format!("{base}/v1/rooms/{ROOM}/queue"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let store = RedisStore::connect(&room.redis.url(), ROOM).await.unwrap();
    assert_eq!(
        store.config().await.unwrap(),
        None,
        "a follower wrote rules"
    );

    store.configure(&rules(1, false, "", 1)).await.unwrap();
    wait_ready(broker_port).await;
    wait_ready(dispatcher_port).await;
    let client = reqwest::Client::new();
    let alice = join(&client, &base).await;
    let bob = join(&client, &base).await;
    let mut bob_events = SseClient::connect(&format!("{base}{}", bob.events_url), None).await;
    bob_events
        .next_of("position", Duration::from_secs(5))
        .await
        .unwrap();
    let status = |joined: &Joined| {
        let (client, url) = (client.clone(), format!("{base}{}", joined.status_url));
        async move { get_json(&client, &url).await }
    };
    eventually(Duration::from_secs(5), "alice admitted", || async {
        (status(&alice).await["state"] == "admitted").then_some(())
    })
    .await;

    // A message reaches the open stream, and the status shows it.
    store
        .configure(&rules(1, false, "Doors open at 10", 2))
        .await
        .unwrap();
    let message = bob_events
        .next_of("message", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(message.data, json!({ "text": "Doors open at 10" }));
    assert_eq!(status(&bob).await["message"], "Doors open at 10");
    // A stream opened later gets the standing message at once.
    let carol = join(&client, &base).await;
    let mut carol_events = SseClient::connect(&format!("{base}{}", carol.events_url), None).await;
    let standing = carol_events
        .next_of("message", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(standing.data["text"], "Doors open at 10");

    // Paused with more room: nobody is admitted...
    store
        .configure(&rules(3, true, "Doors open at 10", 3))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(status(&bob).await["state"], "waiting");
    // ...until resumed: both waiting visitors are admitted on the streams
    // they hold.
    store
        .configure(&rules(3, false, "Doors open at 10", 4))
        .await
        .unwrap();
    for events in [&mut bob_events, &mut carol_events] {
        events
            .next_of("admitted", Duration::from_secs(3))
            .await
            .unwrap();
    }
    // Withdrawn: an empty message, on streams that stayed open all along.
    store.configure(&rules(3, false, "", 5)).await.unwrap();
    for events in [&mut bob_events, &mut carol_events] {
        let withdrawn = events
            .next_of("message", Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(withdrawn.data["text"], "");
    }
    assert!(status(&bob).await.get("message").is_none());
    // An older revision (a process with flags from an earlier rollout)
    // changes nothing.
    assert!(!store.configure(&rules(1, true, "old", 4)).await.unwrap());
    assert!(broker.is_running() && dispatcher.is_running());
}
