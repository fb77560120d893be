//! Hardening of real `usher` processes: platform JWTs must carry the claims
//! the broker is configured to require, absurd durations stop the process
//! at start, and metrics stay off the visitors' port.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ROOM, Room, demo, hs256_token, join, metrics_text, wait_ready};
use reqwest::StatusCode;
use usher_runtime::testing::free_port;

#[tokio::test]
async fn a_platform_jwt_without_the_required_issuer_is_refused() {
    let room = Room::new(&[
        ("USHER_USER_AUTH", "jwt"),
        ("USHER_USER_JWT_KEY", "s3cret"),
        ("USHER_USER_JWT_ISSUER", "shop"),
    ]);
    let (_broker, base) = room.broker(&[]).await;
    let token = |claims: serde_json::Value| hs256_token(&claims, "s3cret");
    let exp = usher_runtime::clock::now_ms() / 1000 + 600;
    let client = reqwest::Client::new();
    let join_as = |token: String| {
        client
            .post(format!("{base}/v1/rooms/{ROOM}/queue"))
            .bearer_auth(token)
            .send()
    };
    let refused = join_as(token(serde_json::json!({"sub": "alice", "exp": exp})))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "invalid_token");
    assert!(
        body["message"].as_str().unwrap().contains("`iss`"),
        "{body}"
    );
    let accepted = join_as(token(
        serde_json::json!({"sub": "alice", "iss": "shop", "exp": exp}),
    ))
    .await
    .unwrap();
    assert_eq!(accepted.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn an_absurd_session_duration_stops_the_broker_at_start() {
    let room = Room::new(&[("USHER_SESSION_DURATION", "10000y")]);
    let mut broker = room
        .command("broker")
        .env("USHER_LISTEN", "127.0.0.1:0")
        .env("USHER_METRICS_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = broker.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = broker.kill();
            panic!("the broker accepted a session duration of 10000 years");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stderr = std::io::read_to_string(broker.stderr.take().unwrap()).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("--session-duration") && stderr.contains("at most"),
        "{stderr}"
    );
}

#[tokio::test]
async fn metrics_are_served_on_their_own_port_not_to_visitors() {
    let room = Room::new(&[("USHER_PAUSED", "true")]);
    let (broker, base) = room.broker(&[]).await;
    join(&reqwest::Client::new(), &base).await;

    let on_visitors_port = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(on_visitors_port.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = on_visitors_port.json().await.unwrap();
    assert_eq!(body["code"], "not_found");

    let metrics = metrics_text(&broker.metrics).await;
    assert!(metrics.contains("usher_joins_total 1\n"), "{metrics}");
    // The metrics port serves nothing of the visitors' API.
    let stats = reqwest::get(format!("{}/v1/rooms/{ROOM}", broker.metrics))
        .await
        .unwrap();
    assert_eq!(stats.status(), StatusCode::NOT_FOUND);

    // A dispatcher keeps serving its metrics next to its probes.
    let dispatcher = room.dispatcher(&[]).await;
    let metrics = metrics_text(&dispatcher.metrics).await;
    assert!(
        metrics.contains("usher_dispatcher_ticks_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_demo_serves_metrics_only_when_asked_and_apart() {
    let (port, metrics_port) = (free_port(), free_port());
    let _demo = demo(&[
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--metrics-listen",
        &format!("127.0.0.1:{metrics_port}"),
    ]);
    wait_ready(port).await;
    let on_page_port = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(on_page_port.status(), StatusCode::NOT_FOUND);
    let metrics = metrics_text(&format!("http://127.0.0.1:{metrics_port}")).await;
    assert!(metrics.contains("usher_connections"), "{metrics}");
}
