//! The HTTP contract against real `usher` processes and a real Redis: the
//! happy path, and bad input that must get a clear 4xx and change nothing.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use usher_runtime::auth::SessionTokens;

#[tokio::test]
async fn a_user_joins_streams_is_admitted_and_completes() {
    let room = Room::new(&[
        ("USHER_CAPACITY", "1"),
        ("USHER_DISPATCH_TICK", "50ms"),
        ("USHER_POSITION_INTERVAL", "100ms"),
    ]);
    let (broker, base) = room.broker(&[]).await;
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let other = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let first = join(&client, &base).await;
    let second = join(&other, &base).await;
    assert_eq!(
        (first.position, second.position, second.waiting),
        (Some(1), Some(2), 2)
    );

    let mut stream = SseClient::connect(&format!("{base}{}", second.events_url), None).await;
    let position = stream
        .next_of("position", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(position.data["position"], 2);

    let _dispatcher = room.dispatcher(&[]).await;
    // The first user is admitted; the second moves to the front.
    let moved = stream
        .next_of("position", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(moved.data["position"], 1);
    let status: Value = get_json(&client, &format!("{base}{}", first.status_url)).await;
    assert_eq!(status["state"], "admitted");

    // Completing frees the slot at once: the second user is admitted.
    let done = client
        .post(format!(
            "{base}/v1/rooms/{ROOM}/sessions/{}/complete?token={}",
            first.session_id, first.session_token
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let admitted = stream
        .next_of("admitted", Duration::from_secs(5))
        .await
        .unwrap();
    let token = admitted.data["entryToken"].as_str().unwrap();
    let jwks: Value = get_json(
        &reqwest::Client::new(),
        &format!("{base}/.well-known/jwks.json"),
    )
    .await;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&set.keys[0]).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&[ROOM]);
    let claims: Value = jsonwebtoken::decode(token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sid"], second.session_id.as_str());
    assert!(claims["sub"].as_str().unwrap().starts_with("anon:"));
    for claim in ["iss", "iat", "nbf", "exp", "jti"] {
        assert!(!claims[claim].is_null(), "{claim} missing");
    }
    // The token is bound to the binding secret its holder is given.
    let status = get_json(&other, &format!("{base}{}", second.status_url)).await;
    let binding = status["entryBinding"].as_str().unwrap();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(binding.as_bytes());
    assert_eq!(
        claims["cnf"]["usher-bnd"],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    );

    let stats = room_stats(&base).await;
    assert_eq!(
        (
            stats["waiting"].as_u64(),
            stats["active"].as_u64(),
            stats["admittedTotal"].as_u64()
        ),
        (Some(0), Some(1), Some(2))
    );
    let metrics = metrics_text(&broker.metrics).await;
    assert!(metrics.contains("usher_joins_total 2"), "{metrics}");
    assert!(
        metrics.contains("usher_events_sent_total{event=\"admitted\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let room = Room::new(&[("USHER_PAUSED", "true")]);
    let (broker, base) = room.broker(&[]).await;
    let client = reqwest::Client::new();
    let alice = join(&client, &base).await;
    let bob = join(&client, &base).await;
    let before = room_stats(&base).await;
    let tokens = SessionTokens::new(room.signer().mac_keys("session-token"));
    let session = |j: &Joined| format!("{base}/v1/rooms/{ROOM}/sessions/{}", j.session_id);

    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            client.post(format!("{base}/v1/rooms/Not_A_Room/queue")),
            StatusCode::BAD_REQUEST,
            "invalid_room",
        ),
        (
            client.post(format!("{base}/v1/rooms/{}/queue", "a".repeat(300))),
            StatusCode::BAD_REQUEST,
            "invalid_room",
        ),
        (
            client.post(format!("{base}/v1/rooms/another-room/queue")),
            StatusCode::NOT_FOUND,
            "unknown_room",
        ),
        (
            client
                .post(format!("{base}/v1/rooms/{ROOM}/queue"))
                .header("content-type", "application/json")
                .body("[1,2]"),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            client
                .post(format!("{base}/v1/rooms/{ROOM}/queue"))
                .header("content-type", "application/json")
                .body("{"),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        // A cross-site form cannot take a place in line, even empty.
        (
            client
                .post(format!("{base}/v1/rooms/{ROOM}/queue"))
                .header("content-type", "application/x-www-form-urlencoded"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            client
                .post(format!("{base}/v1/rooms/{ROOM}/queue"))
                .body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            client
                .post(format!("{base}/v1/rooms/{ROOM}/queue"))
                .body("x".repeat(5000)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            client.get(session(&alice)),
            StatusCode::UNAUTHORIZED,
            "missing_session_token",
        ),
        (
            client.get(format!("{}?token=garbage", session(&alice))),
            StatusCode::UNAUTHORIZED,
            "invalid_session_token",
        ),
        (
            client.get(format!(
                "{}/events?token={}x",
                session(&alice),
                alice.session_token
            )),
            StatusCode::UNAUTHORIZED,
            "invalid_session_token",
        ),
        // Bob's token cannot act on Alice's session: not leave, not complete.
        (
            client.delete(format!("{}?token={}", session(&alice), bob.session_token)),
            StatusCode::FORBIDDEN,
            "wrong_session",
        ),
        (
            client.post(format!(
                "{}/complete?token={}",
                session(&alice),
                bob.session_token
            )),
            StatusCode::FORBIDDEN,
            "wrong_session",
        ),
        (
            client.get(format!(
                "{}?token={}",
                session(&alice),
                tokens.issue("other-room", &alice.session_id)
            )),
            StatusCode::FORBIDDEN,
            "wrong_room",
        ),
        (
            client.get(format!(
                "{base}/v1/rooms/{ROOM}/sessions/nosuchsession?token={}",
                tokens.issue(ROOM, "nosuchsession")
            )),
            StatusCode::NOT_FOUND,
            "unknown_session",
        ),
        (
            client.get(format!("{base}/v1/rooms/{ROOM}/sessions/bad%20id?token=x")),
            StatusCode::BAD_REQUEST,
            "invalid_session_id",
        ),
        (
            client.post(format!(
                "{}/complete?token={}",
                session(&alice),
                alice.session_token
            )),
            StatusCode::CONFLICT,
            "not_active",
        ),
        (
            client.get(format!("{base}/v2/whatever")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            client.put(format!("{base}/v1/rooms/{ROOM}/queue")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(error_of(response).await, (status, code.to_owned()));
    }
    let after = room_stats(&base).await;
    assert_eq!(before, after, "bad requests changed the room");
    let alice_now: Value = get_json(&client, &format!("{base}{}", alice.status_url)).await;
    assert_eq!(
        (alice_now["state"].as_str(), alice_now["position"].as_u64()),
        (Some("waiting"), Some(1))
    );
    assert!(alice_now["pollAfterMs"].as_u64().unwrap() >= 1000);
    let metrics = metrics_text(&broker.metrics).await;
    assert!(
        metrics.contains("usher_errors_total{code=\"wrong_session\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn platform_jwts_identify_users_and_bad_ones_are_refused() {
    let room = Room::new(&[
        ("USHER_USER_AUTH", "jwt"),
        ("USHER_USER_JWT_KEY", "platform-secret"),
        ("USHER_USER_JWT_ISSUER", "shop"),
        ("USHER_PAUSED", "true"),
    ]);
    let (_broker, base) = room.broker(&[]).await;
    let token = |sub: &str, exp: i64, key: &str| {
        hs256_token(
            &serde_json::json!({"sub": sub, "iss": "shop", "exp": exp}),
            key,
        )
    };
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/rooms/{ROOM}/queue");
    let good = token("user-42", 4_000_000_000, "platform-secret");
    let first: Value = client
        .post(&url)
        .bearer_auth(&good)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again = client.post(&url).bearer_auth(&good).send().await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["sessionId"], again["sessionId"]);
    for (request, code) in [
        (client.post(&url), "missing_token"),
        (
            client
                .post(&url)
                .bearer_auth(token("user-42", 1_000, "platform-secret")),
            "invalid_token",
        ),
        (
            client
                .post(&url)
                .bearer_auth(token("user-42", 4_000_000_000, "forged")),
            "invalid_token",
        ),
        (client.post(&url).bearer_auth("not.a.jwt"), "invalid_token"),
    ] {
        assert_eq!(
            error_of(request.send().await.unwrap()).await,
            (StatusCode::UNAUTHORIZED, code.to_owned())
        );
    }
    assert_eq!(room_stats(&base).await["waiting"], 1);

    // A client that sends its platform JWT on every call still reaches its
    // session through the session cookie, on both stream paths too.
    let session = format!(
        "{base}/v1/rooms/{ROOM}/sessions/{}",
        first["sessionId"].as_str().unwrap()
    );
    let cookie = format!("usher_session={}", first["sessionToken"].as_str().unwrap());
    let status = client
        .get(&session)
        .bearer_auth(&good)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    for client in [client.clone(), reqwest::Client::new()] {
        let stream = client
            .get(format!("{session}/events"))
            .bearer_auth(&good)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
    }
}

#[tokio::test]
async fn cookies_are_secure_behind_a_tls_proxy_and_bad_paths_get_json() {
    let room = Room::new(&[("USHER_PAUSED", "true")]);
    let (_broker, base) = room.broker(&[]).await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{base}/v1/rooms/{ROOM}/queue"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let cookies: Vec<&str> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies.len(), 2);
    assert!(
        cookies.iter().all(|c| c.ends_with("; Secure")),
        "{cookies:?}"
    );
    // Proxies append: the first entry is the visitor's own connection.
    for (name, value, secure) in [
        ("x-forwarded-proto", "https, http", true),
        ("x-forwarded-proto", "http, https", false),
        (
            "forwarded",
            "for=192.0.2.1;proto=https, for=10.0.0.1;proto=http",
            true,
        ),
        ("forwarded", "for=192.0.2.1;proto=http", false),
        ("x-request-id", "1", false),
    ] {
        let response = client
            .post(format!("{base}/v1/rooms/{ROOM}/queue"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        let cookies: Vec<&str> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(cookies.len(), 2);
        assert!(
            cookies.iter().all(|c| c.ends_with("; Secure") == secure),
            "{name}: {value}: {cookies:?}"
        );
    }
    for path in [
        "/v1/rooms/%FF",
        "/v1/rooms/%FF/queue",
        "/v1/rooms/concert/sessions/%FF",
        "/v1/rooms/concert/sessions/%FF/events",
    ] {
        let response = client.get(format!("{base}{path}")).send().await.unwrap();
        assert!(
            response.status().is_client_error(),
            "{path}: {}",
            response.status()
        );
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{path}: not JSON: {e}"));
        assert!(body["code"].is_string(), "{path}: {body}");
    }
}

#[tokio::test]
async fn two_hundred_concurrent_joins_by_one_user_give_one_session() {
    let room = Room::new(&[("USHER_PAUSED", "true")]);
    let (_broker, base) = room.broker(&[]).await;
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    // The first join gives the user their cookie; then 200 at once.
    let first = join(&client, &base).await;
    let joins = (0..200).map(|_| {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move { join(&client, &base).await })
    });
    let results = futures_util::future::join_all(joins).await;
    for joined in results {
        let joined = joined.unwrap();
        assert_eq!(
            (joined.session_id.as_str(), joined.ticket, joined.position),
            (first.session_id.as_str(), first.ticket, Some(1))
        );
    }
    let stats = room_stats(&base).await;
    assert_eq!(stats["waiting"], 1);
}

#[tokio::test]
async fn leaving_and_the_closed_event() {
    let room = Room::new(&[
        ("USHER_PAUSED", "true"),
        ("USHER_POSITION_INTERVAL", "100ms"),
        ("USHER_KEEPALIVE_INTERVAL", "200ms"),
    ]);
    let (_broker, base) = room.broker(&[]).await;
    let client = reqwest::Client::new();
    let first = join(&client, &base).await;
    let second = join(&client, &base).await;
    let mut stream = SseClient::connect(&format!("{base}{}", second.events_url), None).await;
    assert_eq!(
        stream
            .next_of("position", Duration::from_secs(5))
            .await
            .unwrap()
            .data["position"],
        2
    );
    let left = client
        .delete(format!("{base}{}", first.status_url))
        .send()
        .await
        .unwrap();
    let left: Value = left.json().await.unwrap();
    assert_eq!(
        (left["state"].as_str(), left["reason"].as_str()),
        (Some("closed"), Some("left"))
    );
    assert_eq!(
        stream
            .next_of("position", Duration::from_secs(5))
            .await
            .unwrap()
            .data["position"],
        1
    );
    // Idle streams get keep-alive comments.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stream.next(Duration::from_millis(100)).await;
    assert!(stream.comments > 0);
    client
        .delete(format!("{base}{}", second.status_url))
        .send()
        .await
        .unwrap();
    let closed = stream
        .next_of("closed", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(closed.data["reason"], "left");
    assert!(
        stream.next(Duration::from_secs(2)).await.is_none(),
        "the stream ends after closed"
    );
}

#[tokio::test]
async fn streams_work_on_fresh_and_kept_alive_connections() {
    let room = Room::new(&[("USHER_PAUSED", "true")]);
    let (broker, base) = room.broker(&[]).await;
    // The same client joins and streams: the stream rides the kept-alive
    // connection of the join and is served by the router.
    let client = reqwest::Client::new();
    let user = join(&client, &base).await;
    let mut kept =
        SseClient::connect_with(&client, &format!("{base}{}", user.events_url), None).await;
    assert_eq!(
        kept.next_of("position", Duration::from_secs(5))
            .await
            .unwrap()
            .data["position"],
        1
    );
    // A fresh connection is served by the listener's own stream path.
    let mut fresh = SseClient::connect(&format!("{base}{}", user.events_url), None).await;
    assert_eq!(
        fresh
            .next_of("position", Duration::from_secs(5))
            .await
            .unwrap()
            .data["position"],
        1
    );
    // Both paths refuse a bad token with the same JSON error.
    let bad = format!(
        "{base}/v1/rooms/{ROOM}/sessions/{}/events?token=nope",
        user.session_id
    );
    for client in [client.clone(), reqwest::Client::new()] {
        let response = client.get(&bad).send().await.unwrap();
        assert_eq!(
            error_of(response).await,
            (StatusCode::UNAUTHORIZED, "invalid_session_token".to_owned())
        );
    }
    let oversized = reqwest::Client::new()
        .get(&bad)
        .header("x-filler", "y".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(
        oversized.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    // Both streams end with a closed event when the user leaves.
    client
        .delete(format!("{base}{}", user.status_url))
        .send()
        .await
        .unwrap();
    for stream in [&mut kept, &mut fresh] {
        assert_eq!(
            stream
                .next_of("closed", Duration::from_secs(5))
                .await
                .unwrap()
                .data["reason"],
            "left"
        );
    }
    // Both streams are released on the server once they end.
    broker.wait_for_streams(0, Duration::from_secs(5)).await;
}
