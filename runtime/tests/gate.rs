//! The gate at the shop's door, against real brokers, a real dispatcher
//! and a real Redis: who gets through, who does not, and how fast an ended
//! session's token stops working on every broker.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use usher_runtime::tokens::{EntryClaims, EntryTokenSigner};

/// Asks `base`'s gate with `token` as the entry cookie (or nothing).
async fn gate(base: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{base}/v1/rooms/{ROOM}/gate"));
    if let Some(token) = token {
        request = request.header("cookie", format!("a=b; usher_entry={token}"));
    }
    request.send().await.unwrap()
}

async fn refusal(base: &str, token: Option<&str>) -> (StatusCode, String, String) {
    let response = gate(base, token).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["code"].as_str().unwrap().to_owned(),
        body["message"].as_str().unwrap().to_owned(),
    )
}

/// Joins and waits until admitted; returns the session and its entry token.
async fn admitted(base: &str) -> (Joined, String) {
    let client = reqwest::Client::new();
    let user = join(&client, base).await;
    let status_url = format!("{base}{}", user.status_url);
    let token = eventually(Duration::from_secs(10), "admission", || {
        let (client, url) = (client.clone(), status_url.clone());
        async move {
            let body = get_json(&client, &url).await;
            body["entryToken"].as_str().map(str::to_owned)
        }
    })
    .await;
    (user, token)
}

#[tokio::test]
async fn the_gate_lets_admitted_visitors_in_and_nobody_else() {
    let room = Room::new(&[("USHER_CAPACITY", "1"), ("USHER_DISPATCH_TICK", "50ms")]);
    let (_a, base_a) = room.broker(&[]).await;
    let (_b, base_b) = room.broker(&[]).await;
    let _dispatcher = room.dispatcher(&[]).await;
    let (user, token) = admitted(&base_a).await;
    let before = room_stats(&base_a).await;

    for base in [&base_a, &base_b] {
        let response = gate(base, Some(&token)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(headers["x-usher-session"], user.session_id.as_str());
        assert!(
            headers["x-usher-user"]
                .to_str()
                .unwrap()
                .starts_with("anon:")
        );
        assert!(headers.contains_key("x-usher-expires-at"));
    }
    // API clients send the token as a Bearer token.
    let bearer = reqwest::Client::new()
        .post(format!("{base_b}/v1/rooms/{ROOM}/gate"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::OK);

    let signer = room.signer();
    let claims = |edit: &dyn Fn(&mut EntryClaims)| {
        let now = (now_secs() - 60) as i64;
        let mut claims = EntryClaims {
            iss: "usher".into(),
            aud: ROOM.into(),
            sub: "mallory".into(),
            sid: "forged".into(),
            iat: now,
            nbf: now,
            exp: now + 3600,
            jti: "forged".into(),
        };
        edit(&mut claims);
        claims
    };
    let stranger = EntryTokenSigner::generate();
    let cases = [
        (None, "missing_entry_token"),
        (Some("garbage".to_owned()), "invalid_entry_token"),
        (
            Some(stranger.sign(&claims(&|_| {})).unwrap()),
            "invalid_entry_token",
        ),
        (
            Some(signer.sign(&claims(&|c| c.aud = "other".into())).unwrap()),
            "invalid_entry_token",
        ),
        (
            Some(signer.sign(&claims(&|c| c.iss = "shop".into())).unwrap()),
            "invalid_entry_token",
        ),
        (
            Some(signer.sign(&claims(&|c| c.exp = c.iat + 1)).unwrap()),
            "invalid_entry_token",
        ),
    ];
    for (token, code) in cases {
        let (status, got, message) = refusal(&base_a, token.as_deref()).await;
        assert_eq!(
            (status, got.as_str()),
            (StatusCode::UNAUTHORIZED, code),
            "{message}"
        );
    }
    // The gate of another room's path is not this broker's.
    let other = reqwest::get(format!("{base_a}/v1/rooms/another/gate"))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        room_stats(&base_a).await,
        before,
        "the gate changed the room"
    );
}

#[tokio::test]
async fn an_ended_session_is_refused_on_every_broker_within_a_second() {
    let room = Room::new(&[("USHER_CAPACITY", "1"), ("USHER_DISPATCH_TICK", "50ms")]);
    let (_a, base_a) = room.broker(&[]).await;
    let (_b, base_b) = room.broker(&[]).await;
    let _dispatcher = room.dispatcher(&[]).await;
    let (user, token) = admitted(&base_a).await;
    for base in [&base_a, &base_b] {
        assert_eq!(gate(base, Some(&token)).await.status(), StatusCode::OK);
    }
    let completed = Instant::now();
    let done = reqwest::Client::new()
        .post(format!(
            "{base_a}/v1/rooms/{ROOM}/sessions/{}/complete?token={}",
            user.session_id, user.session_token
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    for base in [&base_a, &base_b] {
        eventually(Duration::from_secs(5), "the gate refuses", || async {
            (gate(base, Some(&token)).await.status() == StatusCode::UNAUTHORIZED).then_some(())
        })
        .await;
        println!(
            "refused on {base} {:?} after completion",
            completed.elapsed()
        );
        let (_, code, _) = refusal(base, Some(&token)).await;
        assert_eq!(code, "session_ended");
    }
    // A broker that starts later knows it too.
    let (_c, base_c) = room.broker(&[]).await;
    let (_, code, _) = refusal(&base_c, Some(&token)).await;
    assert_eq!(code, "session_ended");
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The redirect form, asked as Traefik (`X-Forwarded-*`) and Envoy (the
/// original path appended) ask it.
#[tokio::test]
async fn the_redirect_form_sends_refused_visits_to_the_waiting_page() {
    let room = Room::new(&[("USHER_CAPACITY", "1"), ("USHER_DISPATCH_TICK", "50ms")]);
    let (_broker, base) = room
        .broker(&[("USHER_WAITING_PAGE", "https://queue.shop.example/")])
        .await;
    let _dispatcher = room.dispatcher(&[]).await;
    let client = no_redirects();
    let redirect = format!("{base}/v1/rooms/{ROOM}/gate/redirect");
    let before = room_stats(&base).await;

    let traefik = client
        .get(&redirect)
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "www.shop.example")
        .header("x-forwarded-uri", "/checkout?seat=12")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(traefik.status(), StatusCode::FOUND);
    assert_eq!(
        traefik.headers()["location"],
        "https://queue.shop.example/?return=https%3A%2F%2Fwww.shop.example%2Fcheckout%3Fseat%3D12"
    );
    let envoy = client
        .get(format!("{redirect}/checkout/cart?seat=12"))
        .header("host", "www.shop.example")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(envoy.status(), StatusCode::FOUND);
    assert_eq!(
        envoy.headers()["location"],
        "https://queue.shop.example/?return=https%3A%2F%2Fwww.shop.example%2Fcheckout%2Fcart%3Fseat%3D12"
    );
    // What is not a page visit gets the 401 and its reason.
    for request in [
        client.post(format!("{redirect}/checkout")),
        client
            .get(format!("{redirect}/checkout"))
            .header("accept", "application/json"),
    ] {
        let refused = request.send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["code"], "missing_entry_token");
    }
    assert_eq!(
        room_stats(&base).await,
        before,
        "a refusal changed the room"
    );
    // An admitted visitor passes, named for the shop.
    let (user, token) = admitted(&base).await;
    let passed = client
        .get(format!("{redirect}/checkout"))
        .header("cookie", format!("usher_entry={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(passed.status(), StatusCode::OK);
    assert_eq!(
        passed.headers()["x-usher-session"],
        user.session_id.as_str()
    );
    let other = client
        .get(format!("{base}/v1/rooms/another/gate/redirect/checkout"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}
