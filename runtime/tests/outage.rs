//! Redis outages against real `usher` processes and a real `redis-server`
//! that the tests kill and start again on the same port: with its data
//! (append-only file) or empty.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::gate::Gate;
use common::*;
use usher_runtime::testing::{RedisServer, free_port};

/// What a broker or dispatcher answers on a path: status and JSON body.
async fn answer(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
) -> (u16, serde_json::Value) {
    let response = client.request(method, url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn readiness(client: &reqwest::Client, port: u16) -> (u16, serde_json::Value) {
    let url = format!("http://127.0.0.1:{port}/readyz");
    answer(client, reqwest::Method::GET, &url).await
}

/// Waits until the process on `port` reports not ready, with a JSON 503.
async fn not_ready(client: &reqwest::Client, port: u16) -> serde_json::Value {
    eventually(Duration::from_secs(15), "a 503 on /readyz", || async {
        match client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            Ok(r) if r.status() == 503 => Some(r.json::<serde_json::Value>().await.unwrap()),
            _ => None,
        }
    })
    .await
}

fn port_of(base: &str) -> u16 {
    base.rsplit(':').next().unwrap().parse().unwrap()
}

/// Joins and opens the visitor's stream, past its first position.
async fn join_and_stream(client: &reqwest::Client, base: &str) -> (Joined, SseClient) {
    let joined = join(client, base).await;
    let mut stream = SseClient::connect(&format!("{base}{}", joined.events_url), None).await;
    let first = stream.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.event, "position", "{first:?}");
    (joined, stream)
}

/// Visitors who keep their streams open through an outage longer than the
/// abandon timeout keep their places when Redis comes back with its data,
/// even when the dispatcher is back before the brokers: here the brokers
/// reach Redis through a gate that opens only once the dispatcher has been
/// ticking again for a while. Visitors who leave afterwards are still
/// dropped as absent.
#[tokio::test(flavor = "multi_thread")]
async fn visitors_connected_through_an_outage_keep_their_place() {
    let mut room = Room::with_redis(
        RedisServer::start_persistent(),
        &[
            ("USHER_ABANDON_TIMEOUT", "8s"),
            ("USHER_PAUSED", "true"),
            ("USHER_KEEPALIVE_INTERVAL", "1s"),
        ],
    );
    let gate = Gate::to(room.redis.port()).await;
    let gate_url = gate.url();
    let through_gate = [("USHER_REDIS_URL", gate_url.as_str())];
    let (_broker_a, base_a) = room.broker(&through_gate).await;
    let (_broker_b, base_b) = room.broker(&through_gate).await;
    let dispatcher_port = free_port();
    let _dispatcher = room.dispatcher_on(dispatcher_port, &[]).await;
    let client = reqwest::Client::new();
    let mut visitors = Vec::new();
    for i in 0..6 {
        let base = if i % 2 == 0 { &base_a } else { &base_b };
        visitors.push(join_and_stream(&client, base).await);
    }

    gate.close();
    room.redis.stop();
    tokio::time::sleep(Duration::from_secs(10)).await;
    room.redis.restart();
    wait_ready(dispatcher_port).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    gate.open();

    // Well past one abandon timeout after Redis is back, nobody was told to leave.
    let watched = visitors.iter_mut().map(|(joined, stream)| async move {
        let closed = stream.next_of("closed", Duration::from_secs(12)).await;
        assert_eq!(closed, None, "{} was closed", joined.session_id);
    });
    futures_util::future::join_all(watched).await;
    for (i, (joined, _)) in visitors.iter().enumerate() {
        let base = if i % 2 == 0 { &base_a } else { &base_b };
        let status = get_json(&client, &format!("{base}{}", joined.status_url)).await;
        assert_eq!(status["state"], "waiting", "{status}");
    }

    // Visitors who go away are still dropped after the abandon timeout.
    visitors.truncate(3);
    eventually(
        Duration::from_secs(20),
        "the absent visitors dropped",
        || async { (room_stats(&base_a).await["waiting"] == 3).then_some(()) },
    )
    .await;
    for (_, stream) in &mut visitors {
        assert_eq!(stream.next_of("closed", Duration::from_secs(1)).await, None);
    }
}

/// A Redis that restarts without its data: open streams are told their
/// place is lost, readiness says so during the outage, and the processes
/// write the room's rules again so that joins work.
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_comes_back_empty_gets_its_rules_back() {
    let mut room = Room::new(&[
        ("USHER_CAPACITY", "7"),
        ("USHER_CONFIG_REVISION", "3"),
        ("USHER_PAUSED", "true"),
    ]);
    let broker_port = free_port();
    let _broker = room.broker_on(broker_port, &[]).await;
    let base = format!("http://127.0.0.1:{broker_port}");
    let dispatcher_port = free_port();
    let _dispatcher = room.dispatcher_on(dispatcher_port, &[]).await;
    let client = reqwest::Client::new();
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(join_and_stream(&client, &base).await.1);
    }

    room.redis.stop();
    for port in [broker_port, dispatcher_port] {
        let body = not_ready(&client, port).await;
        assert_eq!(body["code"], "store_unavailable", "{body}");
    }
    room.redis.restart();

    for stream in &mut streams {
        let closed = stream.next_of("closed", Duration::from_secs(20)).await;
        assert_eq!(closed.unwrap().data["reason"], "lost");
    }
    let joined = eventually(Duration::from_secs(10), "a join to work", || async {
        let url = format!("{base}/v1/rooms/{ROOM}/queue");
        let (status, body) = answer(&client, reqwest::Method::POST, &url).await;
        (status == 201).then_some(body)
    })
    .await;
    assert_eq!(joined["position"], 1, "{joined}");
    let stats = room_stats(&base).await;
    assert_eq!(stats["capacity"], 7, "{stats}");
    let mut redis = room.redis().await;
    let revision: String = redis::cmd("HGET")
        .arg(format!(
            "{}cfg",
            usher_runtime::queue::room_key_prefix(ROOM)
        ))
        .arg("revision")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(revision, "3");
    for port in [broker_port, dispatcher_port] {
        assert_eq!(readiness(&client, port).await.0, 200);
    }
}

/// Processes started while Redis is away run, say they are not ready, and
/// become ready by themselves once Redis answers.
#[tokio::test(flavor = "multi_thread")]
async fn processes_start_without_redis_and_get_ready_when_it_comes() {
    let mut room = Room::new(&[("USHER_CAPACITY", "9")]);
    room.redis.stop();
    let (broker_port, dispatcher_port) = (free_port(), free_port());
    let mut broker = room.spawn("broker", broker_port, &[]);
    let mut dispatcher = room.spawn("dispatcher", dispatcher_port, &[]);
    let client = reqwest::Client::new();
    for port in [broker_port, dispatcher_port] {
        let body = not_ready(&client, port).await;
        assert_eq!(body["code"], "store_unavailable", "{body}");
    }
    let url = format!("http://127.0.0.1:{broker_port}/v1/rooms/{ROOM}/queue");
    let (status, body) = answer(&client, reqwest::Method::POST, &url).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "store_unavailable", "{body}");

    room.redis.restart();
    wait_ready(broker_port).await;
    wait_ready(dispatcher_port).await;
    let (status, _) = answer(&client, reqwest::Method::POST, &url).await;
    assert_eq!(status, 201);
    let stats = room_stats(&format!("http://127.0.0.1:{broker_port}")).await;
    assert_eq!(stats["capacity"], 9, "{stats}");
    assert!(broker.is_running(), "the broker exited");
    assert!(dispatcher.is_running(), "the dispatcher exited");
}

/// While Redis is away, requests get their JSON 503 quickly instead of
/// hanging; the same processes serve again once Redis is back.
#[tokio::test(flavor = "multi_thread")]
async fn during_an_outage_requests_fail_fast_and_processes_recover() {
    let mut room = Room::new(&[]);
    let (mut broker, base) = room.broker(&[]).await;
    let mut dispatcher = room.dispatcher(&[]).await;
    let client = reqwest::Client::new();
    let joined = join(&client, &base).await;

    room.redis.stop();
    let urls = [
        (
            reqwest::Method::POST,
            format!("{base}/v1/rooms/{ROOM}/queue"),
        ),
        (reqwest::Method::GET, format!("{base}{}", joined.status_url)),
        (reqwest::Method::GET, format!("{base}/v1/rooms/{ROOM}")),
    ];
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        for (method, url) in &urls {
            let started = Instant::now();
            let (status, body) = answer(&client, method.clone(), url).await;
            slowest = slowest.max(started.elapsed());
            assert_eq!(status, 503, "{url}: {body}");
            assert_eq!(body["code"], "store_unavailable", "{url}: {body}");
        }
    }
    eprintln!("slowest 503 during the outage: {slowest:?}");
    // Loose on purpose: this only tells "answers" from "hangs for seconds".
    assert!(slowest < Duration::from_secs(3), "{slowest:?}");
    assert_eq!(readiness(&client, port_of(&base)).await.0, 503);

    room.redis.restart();
    wait_ready(port_of(&base)).await;
    let (status, _) = answer(&client, reqwest::Method::POST, &urls[0].1).await;
    assert_eq!(status, 201);
    assert!(broker.is_running(), "the broker exited");
    assert!(dispatcher.is_running(), "the dispatcher exited");
}
