//! Many clients, several dispatchers and brokers at once, against a real
//! Redis: no over-admission, no lost or duplicated user, no lost place.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use redis::AsyncCommands as _;
use serde_json::Value;
use usher_runtime::queue::room_key_prefix;

const USERS: usize = 5000;
const CAPACITY: u64 = 100;

/// Replays the room's change stream from Redis and checks admission
/// invariants at every step; returns the admitted session ids in order.
async fn replay_admissions(room: &Room) -> (Vec<String>, usize) {
    let mut redis = room.redis().await;
    let key = format!("{}events", room_key_prefix(ROOM));
    let entries: redis::streams::StreamRangeReply = redis.xrange_all(&key).await.unwrap();
    let (mut active, mut joined) = (0u64, 0usize);
    let mut admitted = Vec::new();
    let mut seen = HashSet::new();
    let mut last_ticket = 0;
    for entry in entries.ids {
        let field = |name: &str| entry.get::<String>(name).unwrap();
        match field("k").as_str() {
            "j" => joined += 1,
            "a" => {
                let sid = field("s");
                assert!(seen.insert(sid.clone()), "{sid} admitted twice");
                let ticket: u64 = field("t").parse().unwrap();
                assert!(
                    ticket > last_ticket,
                    "ticket {ticket} admitted after {last_ticket}"
                );
                last_ticket = ticket;
                active += 1;
                assert!(
                    active <= CAPACITY,
                    "{active} active with capacity {CAPACITY}"
                );
                admitted.push(sid);
            }
            "e" => active -= 1,
            _ => {}
        }
    }
    (admitted, joined)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_thousand_users_three_dispatchers_never_over_admit() {
    let capacity = CAPACITY.to_string();
    let room = Room::new(&[
        ("USHER_CAPACITY", &capacity),
        ("USHER_SESSION_DURATION", "300ms"),
        ("USHER_DISPATCH_TICK", "20ms"),
        ("USHER_ABANDON_TIMEOUT", "10m"),
    ]);
    let (_broker, base) = room.broker(&[]).await;
    let _dispatchers = [
        room.dispatcher(&[]).await,
        room.dispatcher(&[]).await,
        room.dispatcher(&[]).await,
    ];

    let client = reqwest::Client::new();
    let workers = (0..50).map(|_| {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            let mut sids = Vec::new();
            for _ in 0..USERS / 50 {
                sids.push(join(&client, &base).await.session_id);
            }
            sids
        })
    });
    let joined: Vec<String> = futures_util::future::join_all(workers)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    assert_eq!(
        joined.iter().collect::<HashSet<_>>().len(),
        USERS,
        "every join made its own session"
    );

    eventually(Duration::from_secs(120), "every user admitted", || {
        let base = base.clone();
        async move { (room_stats(&base).await["admittedTotal"] == USERS).then_some(()) }
    })
    .await;
    let (admitted, joins) = replay_admissions(&room).await;
    assert_eq!(joins, USERS);
    assert_eq!(
        admitted.iter().collect::<HashSet<_>>(),
        joined.iter().collect::<HashSet<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_killed_mid_stream_loses_no_ones_place() {
    let room = Room::new(&[
        ("USHER_PAUSED", "true"),
        ("USHER_CAPACITY", "40"),
        ("USHER_POSITION_INTERVAL", "100ms"),
    ]);
    let port = usher_runtime::testing::free_port();
    let mut broker = room.broker_on(port, &[]).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut users = Vec::new();
    for _ in 0..30 {
        users.push(join(&client, &base).await);
    }
    let mut streams = Vec::new();
    for user in &users {
        let mut stream = SseClient::connect(&format!("{base}{}", user.events_url), None).await;
        let first = stream
            .next_of("position", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(first.data["position"].as_u64(), user.position);
        streams.push(stream);
    }

    broker.kill();
    for stream in &mut streams {
        assert!(
            stream.next(Duration::from_secs(5)).await.is_none(),
            "the stream should break"
        );
    }
    // Two brokers now serve the room; clients come back to either.
    let _restarted = room.broker_on(port, &[]).await;
    let (_second, other_base) = room.broker(&[]).await;
    let mut resumed = Vec::new();
    for (i, (user, old)) in users.iter().zip(&streams).enumerate() {
        let target = if i % 2 == 0 { &base } else { &other_base };
        let mut stream = SseClient::connect(
            &format!("{target}{}", user.events_url),
            old.last_id.as_deref(),
        )
        .await;
        let position = stream
            .next_of("position", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            position.data["position"].as_u64(),
            user.position,
            "place kept after reconnecting"
        );
        resumed.push(stream);
    }

    let _dispatcher = room.dispatcher(&[("USHER_PAUSED", "false")]).await;
    let mut admitted_sids = HashSet::new();
    for (user, stream) in users.iter().zip(&mut resumed) {
        let admitted = stream
            .next_of("admitted", Duration::from_secs(10))
            .await
            .unwrap();
        assert!(
            admitted.data["entryToken"]
                .as_str()
                .is_some_and(|t| t.split('.').count() == 3)
        );
        admitted_sids.insert(user.session_id.clone());
    }
    assert_eq!(admitted_sids.len(), users.len());
    let stats: Value = room_stats(&other_base).await;
    assert_eq!(
        (stats["waiting"].as_u64(), stats["active"].as_u64()),
        (Some(0), Some(30))
    );
}
