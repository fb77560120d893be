//! Hardening of real `usher` processes: platform JWTs must carry the claims
//! the broker is configured to require, and absurd durations stop the
//! process at start.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ROOM, Room};
use reqwest::StatusCode;

#[tokio::test]
async fn a_platform_jwt_without_the_required_issuer_is_refused() {
    let room = Room::new(&[
        ("USHER_USER_AUTH", "jwt"),
        ("USHER_USER_JWT_KEY", "s3cret"),
        ("USHER_USER_JWT_ISSUER", "shop"),
    ]);
    let (_broker, base) = room.broker(&[]).await;
    let token = |claims: serde_json::Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap()
    };
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
