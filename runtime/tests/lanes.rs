//! The priority lane beside the general line, against real `usher`
//! processes and Redis: invite codes are good for one place even when
//! redeemed 200 times at once, the lane is admitted first without breaking
//! capacity, platform users with the right claim join it, and staff passes
//! go through the gate without a place in line.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Joins as a new anonymous visitor with `body` (JSON).
async fn join_with(base: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/v1/rooms/{ROOM}/queue"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The state of the session a join answered with.
async fn session_state(base: &str, joined: &Value) -> Value {
    let url = format!(
        "{base}/v1/rooms/{ROOM}/sessions/{}?token={}",
        joined["sessionId"].as_str().unwrap(),
        joined["sessionToken"].as_str().unwrap()
    );
    get_json(&reqwest::Client::new(), &url).await["state"].clone()
}

/// A broker with the checkout key and `codes` as its invite-code file.
async fn presale_broker(room: &Room, codes: &str, extra: &[(&str, &str)]) -> (Usher, String) {
    let codes_path = room.key_path.with_file_name("invites.txt");
    std::fs::write(&codes_path, codes).unwrap();
    let key_env = checkout_env(room);
    let mut env: Vec<(&str, &str)> = key_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("USHER_INVITE_CODES", codes_path.to_str().unwrap()));
    env.extend_from_slice(extra);
    room.broker(&env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invite_code_redeemed_200_times_at_once_gives_exactly_one_place() {
    let room = Room::new(&[("USHER_CAPACITY", "1")]);
    let (_broker, base) = presale_broker(&room, "# fan club\nFAN-0001\nFAN-0002\n", &[]).await;
    let answers: Vec<(StatusCode, Value)> = futures_util::stream::iter(0..200)
        .map(|_| async {
            let response = join_with(&base, json!({"invite": "FAN-0001"})).await;
            (response.status(), response.json().await.unwrap())
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let places: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(places.len(), 1, "{answers:?}");
    assert_eq!(places[0]["lane"], "priority");
    assert_eq!(places[0]["position"], 1);
    for (status, body) in answers.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_eq!(
            (*status, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("invalid_invite")),
            "{body}"
        );
    }
    assert_eq!(room_stats(&base).await["waiting"], 1);

    // Unknown and malformed codes take no place either; the other code works.
    let unknown = join_with(&base, json!({"invite": "FAN-9999"})).await;
    assert_eq!(error_of(unknown).await.1, "invalid_invite");
    let malformed = join_with(&base, json!({"invite": "ab"})).await;
    assert_eq!(
        error_of(malformed).await,
        (StatusCode::BAD_REQUEST, "malformed_invite".to_owned())
    );
    let wrong_type = join_with(&base, json!({"invite": 1234})).await;
    assert_eq!(error_of(wrong_type).await.1, "invalid_body");
    assert_eq!(room_stats(&base).await["waiting"], 1);
    let second = join_with(&base, json!({"invite": " FAN-0002 "})).await;
    assert_eq!(second.status(), StatusCode::CREATED);

    // A code added to the file (a Secret updated in place) works without a
    // restart; a bad edit keeps the codes loaded before.
    let codes = room.key_path.with_file_name("invites.txt");
    std::fs::write(&codes, "FAN-0001\nFAN-0002\nbad\n").unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    std::fs::write(&codes, "FAN-0001\nFAN-0002\nFAN-0003\n").unwrap();
    eventually(Duration::from_secs(15), "the new code", || async {
        let joined = join_with(&base, json!({"invite": "FAN-0003"})).await;
        (joined.status() == StatusCode::CREATED).then_some(())
    })
    .await;

    // A broker restarting with the same list does not make a code good again.
    let (_again, other) = presale_broker(&room, "FAN-0001\nFAN-0002\n", &[]).await;
    let reused = join_with(&other, json!({"invite": "FAN-0001"})).await;
    assert_eq!(error_of(reused).await.1, "invalid_invite");
}

#[tokio::test]
async fn the_priority_lane_goes_first_and_capacity_still_holds() {
    let room = Room::new(&[("USHER_CAPACITY", "2"), ("USHER_DISPATCH_TICK", "50ms")]);
    let (_broker, base) = presale_broker(&room, "", &[]).await;
    // The shop's server adds codes while the sale runs.
    let added = call(
        &base,
        "invites",
        Some(CHECKOUT_KEY),
        r#"{"codes": ["VIP-1", "VIP-2", "VIP-3"]}"#,
    )
    .await;
    assert_eq!(added.status(), StatusCode::OK);
    assert_eq!(
        added.json::<Value>().await.unwrap(),
        json!({"received": 3, "added": 3})
    );
    let mut general = Vec::new();
    for _ in 0..3 {
        let response = join_with(&base, json!({})).await;
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["lane"], "general");
        general.push(body);
    }
    let mut priority = Vec::new();
    for code in ["VIP-1", "VIP-2"] {
        let body: Value = join_with(&base, json!({"invite": code}))
            .await
            .json()
            .await
            .unwrap();
        priority.push(body);
    }
    // Positions count inside each lane.
    assert_eq!(general[2]["position"], 3);
    assert_eq!(
        (
            priority[1]["position"].clone(),
            priority[1]["waiting"].clone()
        ),
        (json!(2), json!(2))
    );
    assert!(
        priority[1]["ticket"].as_u64().unwrap() < 100,
        "{}",
        priority[1]
    );

    let _dispatcher = room.dispatcher(&[]).await;
    wait_active(&base, 2).await;
    for body in &priority {
        assert_eq!(session_state(&base, body).await, "admitted");
    }
    for body in &general {
        assert_eq!(session_state(&base, body).await, "waiting");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(room_stats(&base).await["active"], 2);

    // Bad calls of the shop's server change nothing.
    for (key, body, code) in [
        (None, r#"{"codes": ["VIP-9"]}"#, "missing_checkout_key"),
        (
            Some("wrong"),
            r#"{"codes": ["VIP-9"]}"#,
            "invalid_checkout_key",
        ),
        (Some(CHECKOUT_KEY), r#"{"codes": ["no"]}"#, "invalid_body"),
        (Some(CHECKOUT_KEY), r#"{"code": "VIP-9"}"#, "invalid_body"),
    ] {
        let refused = call(&base, "invites", key, body).await;
        assert_eq!(error_of(refused).await.1, code, "{body}");
    }
    let never_added = join_with(&base, json!({"invite": "VIP-9"})).await;
    assert_eq!(error_of(never_added).await.1, "invalid_invite");
}

#[tokio::test]
async fn platform_users_with_the_claim_join_the_priority_lane() {
    let room = Room::new(&[
        ("USHER_USER_AUTH", "jwt"),
        ("USHER_USER_JWT_KEY", "platform-secret"),
        ("USHER_PRIORITY_CLAIM", "tier=fanclub,gold"),
    ]);
    let (_broker, base) = room.broker(&[]).await;
    let token = |sub: &str, tier: &str| {
        hs256_token(
            &json!({"sub": sub, "exp": 4_000_000_000u64, "tier": tier}),
            "platform-secret",
        )
    };
    for (sub, tier, lane) in [("ann", "gold", "priority"), ("bob", "silver", "general")] {
        let body: Value = reqwest::Client::new()
            .post(format!("{base}/v1/rooms/{ROOM}/queue"))
            .bearer_auth(token(sub, tier))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["lane"], lane, "{sub}: {body}");
        assert_eq!(body["position"], 1);
    }
}

#[tokio::test]
async fn a_staff_pass_goes_through_the_gate_without_a_place_in_line() {
    let room = Room::new(&[("USHER_CAPACITY", "1")]);
    let (_broker, base) = presale_broker(&room, "", &[]).await;
    let issued = call(
        &base,
        "staff-pass",
        Some(CHECKOUT_KEY),
        r#"{"name": "ops.anna", "for": "8h"}"#,
    )
    .await;
    assert_eq!(issued.status(), StatusCode::CREATED);
    let pass: Value = issued.json().await.unwrap();
    let gate = reqwest::Client::new()
        .get(format!("{base}/v1/rooms/{ROOM}/gate"))
        .bearer_auth(pass["entryToken"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(gate.status(), StatusCode::OK);
    assert_eq!(gate.headers()["x-usher-user"], "staff:ops.anna");
    let stats = room_stats(&base).await;
    assert_eq!(
        (stats["waiting"].clone(), stats["active"].clone()),
        (json!(0), json!(0))
    );
    for (key, body, code) in [
        (
            None,
            r#"{"name": "x", "for": "1h"}"#,
            "missing_checkout_key",
        ),
        (
            Some(CHECKOUT_KEY),
            r#"{"name": "x", "for": "25h"}"#,
            "invalid_body",
        ),
        (
            Some(CHECKOUT_KEY),
            r#"{"name": "a b", "for": "1h"}"#,
            "invalid_body",
        ),
    ] {
        let refused = call(&base, "staff-pass", key, body).await;
        assert_eq!(error_of(refused).await.1, code, "{body}");
    }
}
