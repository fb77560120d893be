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

/// Asks `base`'s gate with the cookies `cookies` (or none), as a browser
/// with other cookies of the shop's would.
async fn gate(base: &str, cookies: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{base}/v1/rooms/{ROOM}/gate"));
    if let Some(cookies) = cookies {
        request = request.header("cookie", format!("a=b; {cookies}"));
    }
    request.send().await.unwrap()
}

/// The `Cookie` header of a token copied on its own.
fn token_alone(token: &str) -> String {
    format!("usher_entry={token}")
}

async fn refusal(base: &str, cookies: Option<&str>) -> (StatusCode, String, String) {
    let response = gate(base, cookies).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["code"].as_str().unwrap().to_owned(),
        body["message"].as_str().unwrap().to_owned(),
    )
}

/// Joins and waits until admitted; returns the session and its pass.
async fn admitted(base: &str) -> (Joined, EntryPass) {
    let user = join(&reqwest::Client::new(), base).await;
    let pass = entry_pass(base, &user).await;
    (user, pass)
}

#[tokio::test]
async fn the_gate_lets_admitted_visitors_in_and_nobody_else() {
    let room = Room::new(&[("USHER_CAPACITY", "1"), ("USHER_DISPATCH_TICK", "50ms")]);
    let (_a, base_a) = room.broker(&[]).await;
    let (_b, base_b) = room.broker(&[]).await;
    let _dispatcher = room.dispatcher(&[]).await;
    let (user, pass) = admitted(&base_a).await;
    let before = room_stats(&base_a).await;

    for base in [&base_a, &base_b] {
        let response = gate(base, Some(&pass.cookie())).await;
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
    // API clients send the token as a Bearer token, and its binding.
    let bearer = reqwest::Client::new()
        .post(format!("{base_b}/v1/rooms/{ROOM}/gate"))
        .bearer_auth(&pass.token)
        .header("usher-binding", pass.binding.as_deref().unwrap())
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
            cnf: None,
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
        let cookies = token.as_deref().map(token_alone);
        let (status, got, message) = refusal(&base_a, cookies.as_deref()).await;
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
    let (user, pass) = admitted(&base_a).await;
    let cookies = pass.cookie();
    for base in [&base_a, &base_b] {
        assert_eq!(gate(base, Some(&cookies)).await.status(), StatusCode::OK);
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
            (gate(base, Some(&cookies)).await.status() == StatusCode::UNAUTHORIZED).then_some(())
        })
        .await;
        println!(
            "refused on {base} {:?} after completion",
            completed.elapsed()
        );
        let (_, code, _) = refusal(base, Some(&cookies)).await;
        assert_eq!(code, "session_ended");
    }
    // A broker that starts later knows it too.
    let (_c, base_c) = room.broker(&[]).await;
    let (_, code, _) = refusal(&base_c, Some(&cookies)).await;
    assert_eq!(code, "session_ended");
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A room of `capacity` with a dispatcher and a broker whose redirect form
/// sends refused visitors to `https://queue.shop.example/`.
async fn with_waiting_page(capacity: &str) -> (Room, Usher, Usher, String) {
    let room = Room::new(&[
        ("USHER_CAPACITY", capacity),
        ("USHER_DISPATCH_TICK", "50ms"),
    ]);
    let (broker, base) = room
        .broker(&[("USHER_WAITING_PAGE", "https://queue.shop.example/")])
        .await;
    let dispatcher = room.dispatcher(&[]).await;
    (room, broker, dispatcher, base)
}

/// The redirect form, asked as Traefik (`X-Forwarded-*`) and Envoy (the
/// original path appended) ask it.
#[tokio::test]
async fn the_redirect_form_sends_refused_visits_to_the_waiting_page() {
    let (_room, _broker, _dispatcher, base) = with_waiting_page("1").await;
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
    let (user, pass) = admitted(&base).await;
    let passed = client
        .get(format!("{redirect}/checkout"))
        .header("cookie", pass.cookie())
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

/// Entry-token binding: a token copied into another client, without the
/// binding cookie of the browser that waited or with another's, is
/// refused; the browser that waited gets through.
#[tokio::test]
async fn a_copied_token_is_refused_without_the_binding_of_the_browser_that_waited() {
    let (room, _broker, _dispatcher, base) = with_waiting_page("3").await;
    let (_, alice) = admitted(&base).await;
    let (_, bob) = admitted(&base).await;
    let (alice_binding, bob_binding) = (alice.binding.clone().unwrap(), bob.binding.unwrap());
    assert_ne!(alice_binding, bob_binding);

    assert_eq!(
        gate(&base, Some(&alice.cookie())).await.status(),
        StatusCode::OK
    );
    let copied = [
        token_alone(&alice.token),
        format!("usher_entry={}; usher_bind={bob_binding}", alice.token),
        format!("usher_entry={}; usher_bind=", alice.token),
        format!("usher_entry={}; usher_bind={}", alice.token, bob.token),
    ];
    for cookies in &copied {
        let (status, code, message) = refusal(&base, Some(cookies)).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "token_not_bound"),
            "{message}"
        );
    }
    // API clients: the token as a Bearer token, its binding in a header.
    let api = |binding: Option<&str>| {
        let mut request = reqwest::Client::new()
            .get(format!("{base}/v1/rooms/{ROOM}/gate"))
            .bearer_auth(&alice.token);
        if let Some(binding) = binding {
            request = request.header("usher-binding", binding);
        }
        request.send()
    };
    assert_eq!(
        api(Some(&alice_binding)).await.unwrap().status(),
        StatusCode::OK
    );
    for refused in [None, Some(bob_binding.as_str())] {
        let response = api(refused).await.unwrap();
        assert_eq!(
            error_of(response).await,
            (StatusCode::UNAUTHORIZED, "token_not_bound".into())
        );
    }

    // The redirect form sends a copied token's page visit to the waiting
    // page, and lets the browser that waited through.
    let redirect = |cookies: String| {
        no_redirects()
            .get(format!("{base}/v1/rooms/{ROOM}/gate/redirect/checkout"))
            .header("host", "www.shop.example")
            .header("x-forwarded-proto", "https")
            .header("accept", "text/html")
            .header("cookie", cookies)
            .send()
    };
    let sent_back = redirect(token_alone(&alice.token)).await.unwrap();
    assert_eq!(sent_back.status(), StatusCode::FOUND);
    assert_eq!(
        sent_back.headers()["location"],
        "https://queue.shop.example/?return=https%3A%2F%2Fwww.shop.example%2Fcheckout"
    );
    assert_eq!(
        redirect(alice.cookie()).await.unwrap().status(),
        StatusCode::OK
    );

    // A broker with binding off mints unbound tokens and checks none.
    let (_unbound, base_off) = room.broker(&[("USHER_TOKEN_BINDING", "off")]).await;
    let (_, carol) = admitted(&base_off).await;
    assert_eq!(carol.binding, None);
    for (token, at) in [
        (&carol.token, &base_off),
        (&alice.token, &base_off),
        (&carol.token, &base),
    ] {
        assert_eq!(
            gate(at, Some(&token_alone(token))).await.status(),
            StatusCode::OK
        );
    }
}
