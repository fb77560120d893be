//! The checkout's API, server to server, against a real broker, dispatcher
//! and Redis: the shop completes, revokes and extends sessions with the
//! room's checkout key, and every bad call gets a JSON 4xx and changes nothing.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use usher_runtime::tokens::{EntryClaims, EntryTokenSigner};

/// A room of capacity 1 served by a broker with the checkout key and a
/// dispatcher; returns the broker's base URL.
async fn shop_room(room: &Room) -> (Usher, Usher, String) {
    let env = checkout_env(room);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (broker, base) = room.broker(&env).await;
    let dispatcher = room.dispatcher(&[]).await;
    (broker, dispatcher, base)
}

fn shop_settings() -> [(&'static str, &'static str); 3] {
    [
        ("USHER_CAPACITY", "1"),
        ("USHER_DISPATCH_TICK", "50ms"),
        ("USHER_POSITION_INTERVAL", "100ms"),
    ]
}

async fn ok_json(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn status_of(base: &str, joined: &Joined) -> Value {
    get_json(
        &reqwest::Client::new(),
        &format!("{base}{}", joined.status_url),
    )
    .await
}

/// Waits until `joined` is admitted and returns its entry token.
async fn entry_token(base: &str, joined: &Joined) -> String {
    eventually(Duration::from_secs(10), "an admission", || async {
        status_of(base, joined).await["entryToken"]
            .as_str()
            .map(str::to_owned)
    })
    .await
}

/// The session and how it ended, of a checkout's answer.
fn ending(answer: &Value) -> Value {
    json!([answer["sessionId"], answer["state"], answer["reason"]])
}

#[tokio::test]
async fn the_shop_completes_and_revokes_sessions() {
    let room = Room::new(&shop_settings());
    let (_broker, _dispatcher, base) = shop_room(&room).await;
    let client = reqwest::Client::new();
    let alice = join(&client, &base).await;
    let bob = join(&client, &base).await;
    let carol = join(&client, &base).await;
    let token = entry_token(&base, &alice).await;
    let mut bob_events = SseClient::connect(&format!("{base}{}", bob.events_url), None).await;

    // Completing by entry token frees the slot: the next visitor is admitted.
    let body = json!({ "entryToken": token }).to_string();
    let done = ok_json(call(&base, "complete", Some(CHECKOUT_KEY), &body).await).await;
    assert_eq!(
        (&done["sessionId"], &done["state"], &done["reason"]),
        (
            &json!(alice.session_id),
            &json!("closed"),
            &json!("completed")
        )
    );
    bob_events
        .next_of("admitted", Duration::from_secs(5))
        .await
        .unwrap();
    // Completing again is harmless; revoking a completed session is not.
    assert_eq!(
        ending(&ok_json(call(&base, "complete", Some(CHECKOUT_KEY), &body).await).await),
        ending(&done)
    );
    assert_eq!(
        error_of(call(&base, "revoke", Some(CHECKOUT_KEY), &body).await).await,
        (StatusCode::CONFLICT, "not_active".into())
    );

    // Revoking by id ends the session: the visitor's stream says so, and
    // the slot goes to the next visitor.
    let body = json!({ "jti": bob.session_id }).to_string();
    let revoked = ok_json(call(&base, "revoke", Some(CHECKOUT_KEY), &body).await).await;
    assert_eq!(
        (&revoked["state"], &revoked["reason"]),
        (&json!("closed"), &json!("revoked"))
    );
    let closed = bob_events
        .next_of("closed", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(closed.data, json!({ "reason": "revoked" }));
    assert_eq!(status_of(&base, &bob).await["reason"], "revoked");
    entry_token(&base, &carol).await;
    assert_eq!(
        ending(&ok_json(call(&base, "revoke", Some(CHECKOUT_KEY), &body).await).await),
        ending(&revoked)
    );
    assert_eq!(
        error_of(call(&base, "complete", Some(CHECKOUT_KEY), &body).await).await,
        (StatusCode::CONFLICT, "not_active".into())
    );
    let stats = room_stats(&base).await;
    assert_eq!(
        (&stats["waiting"], &stats["active"], &stats["admittedTotal"]),
        (&json!(0), &json!(1), &json!(3))
    );
}

/// What a bad call must leave as it was.
async fn picture(base: &str, sessions: &[&Joined]) -> Vec<Value> {
    let stats = room_stats(base).await;
    let mut picture = vec![json!([
        stats["waiting"],
        stats["active"],
        stats["admittedTotal"]
    ])];
    for joined in sessions {
        let status = status_of(base, joined).await;
        picture.push(json!([
            status["state"],
            status["position"],
            status["reason"]
        ]));
    }
    picture
}

fn sign(signer: &EntryTokenSigner, aud: &str, sid: &str) -> String {
    let now = usher_runtime::clock::now_ms() / 1000;
    signer
        .sign(&EntryClaims {
            iss: "usher".into(),
            aud: aud.into(),
            sub: "mallory".into(),
            sid: sid.into(),
            iat: now,
            nbf: now,
            exp: now + 600,
            jti: sid.into(),
        })
        .unwrap()
}

#[tokio::test]
async fn bad_checkout_calls_get_a_json_4xx_and_change_nothing() {
    let room = Room::new(&shop_settings());
    let (_broker, _dispatcher, base) = shop_room(&room).await;
    let client = reqwest::Client::new();
    let alice = join(&client, &base).await;
    let bob = join(&client, &base).await;
    let token = entry_token(&base, &alice).await;
    let before = picture(&base, &[&alice, &bob]).await;
    assert_eq!(before[2], json!(["waiting", 1, null]));

    let alice_body = json!({ "jti": alice.session_id }).to_string();
    let both = json!({ "entryToken": token, "jti": alice.session_id }).to_string();
    let forged =
        json!({ "entryToken": sign(&EntryTokenSigner::generate(), ROOM, &alice.session_id) })
            .to_string();
    let other_room =
        json!({ "entryToken": sign(&room.signer(), "another-room", &alice.session_id) })
            .to_string();
    let bob_body = json!({ "jti": bob.session_id }).to_string();
    let unknown = json!({ "jti": "no-such-session" }).to_string();
    let bad_id = json!({ "jti": "../admin" }).to_string();
    let wrong_key = format!("{CHECKOUT_KEY}x");
    let cases: Vec<(Option<&str>, &str, StatusCode, &str)> = vec![
        (
            None,
            &alice_body,
            StatusCode::UNAUTHORIZED,
            "missing_checkout_key",
        ),
        (
            Some(&wrong_key),
            &alice_body,
            StatusCode::UNAUTHORIZED,
            "invalid_checkout_key",
        ),
        (
            Some(&CHECKOUT_KEY[1..]),
            &alice_body,
            StatusCode::UNAUTHORIZED,
            "invalid_checkout_key",
        ),
        (
            Some(CHECKOUT_KEY),
            &both,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            Some(CHECKOUT_KEY),
            "{}",
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            Some(CHECKOUT_KEY),
            "",
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            Some(CHECKOUT_KEY),
            "{\"jti\":",
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            Some(CHECKOUT_KEY),
            &forged,
            StatusCode::BAD_REQUEST,
            "invalid_entry_token",
        ),
        (
            Some(CHECKOUT_KEY),
            &other_room,
            StatusCode::BAD_REQUEST,
            "invalid_entry_token",
        ),
        (
            Some(CHECKOUT_KEY),
            &bad_id,
            StatusCode::BAD_REQUEST,
            "invalid_session_id",
        ),
        (
            Some(CHECKOUT_KEY),
            &unknown,
            StatusCode::NOT_FOUND,
            "unknown_session",
        ),
        (
            Some(CHECKOUT_KEY),
            &bob_body,
            StatusCode::CONFLICT,
            "not_active",
        ),
    ];
    for action in ["complete", "revoke", "extend"] {
        for (key, body, status, code) in &cases {
            let body = if action == "extend" {
                for_ten_minutes(body)
            } else {
                (*body).to_owned()
            };
            assert_eq!(
                error_of(call(&base, action, *key, &body).await).await,
                (*status, (*code).to_owned()),
                "{action} {body}"
            );
        }
        // Not JSON: the body must be declared as JSON.
        let form = client
            .post(format!("{base}/v1/rooms/{ROOM}/checkout/{action}"))
            .bearer_auth(CHECKOUT_KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("jti={}", alice.session_id))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(form).await,
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type".into()
            )
        );
        let other_path = client
            .post(format!("{base}/v1/rooms/elsewhere/checkout/{action}"))
            .bearer_auth(CHECKOUT_KEY)
            .json(&json!({ "jti": alice.session_id }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(other_path).await,
            (StatusCode::NOT_FOUND, "unknown_room".into())
        );
        let get = client
            .get(format!("{base}/v1/rooms/{ROOM}/checkout/{action}"))
            .bearer_auth(CHECKOUT_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(get).await,
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into())
        );
        assert_eq!(picture(&base, &[&alice, &bob]).await, before, "{action}");
    }
    // Only an extension says for how long, and says it well.
    for (action, body) in [
        ("extend", alice_body.clone()),
        (
            "extend",
            json!({ "jti": alice.session_id, "for": "soon" }).to_string(),
        ),
        (
            "extend",
            json!({ "jti": alice.session_id, "for": "0s" }).to_string(),
        ),
        (
            "extend",
            json!({ "jti": alice.session_id, "for": 600 }).to_string(),
        ),
        ("complete", for_ten_minutes(&alice_body)),
    ] {
        assert_eq!(
            error_of(call(&base, action, Some(CHECKOUT_KEY), &body).await).await,
            (StatusCode::BAD_REQUEST, "invalid_body".into()),
            "{action} {body}"
        );
    }
    assert_eq!(picture(&base, &[&alice, &bob]).await, before);
}

/// `body` with `"for": "10m"` added, when it is a JSON object.
fn for_ten_minutes(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(mut fields)) => {
            fields.insert("for".into(), json!("10m"));
            Value::Object(fields).to_string()
        }
        _ => body.to_owned(),
    }
}

#[tokio::test]
async fn the_shop_extends_a_session_up_to_the_longest() {
    let mut settings = shop_settings().to_vec();
    settings.extend([
        ("USHER_SESSION_DURATION", "1m"),
        ("USHER_MAX_SESSION_DURATION", "5m"),
    ]);
    let room = Room::new(&settings);
    let (_broker, _dispatcher, base) = shop_room(&room).await;
    let alice = join(&reqwest::Client::new(), &base).await;
    let mut events = SseClient::connect(&format!("{base}{}", alice.events_url), None).await;
    let admitted = events
        .next_of("admitted", Duration::from_secs(5))
        .await
        .unwrap();
    let expiry = |body: &Value| {
        usher_runtime::clock::parse_rfc3339(body["expiresAt"].as_str().unwrap()).unwrap()
    };
    let first_expiry = expiry(&admitted.data);

    // Asked for ten more minutes, the session gets what the longest allows:
    // five minutes after its admission.
    let body = json!({ "jti": alice.session_id, "for": "10m" }).to_string();
    let extended = ok_json(call(&base, "extend", Some(CHECKOUT_KEY), &body).await).await;
    assert_eq!(extended["state"], "admitted");
    assert_eq!(expiry(&extended) - first_expiry, 4 * 60_000);
    let token = extended["entryToken"].as_str().unwrap();
    assert_ne!(token, admitted.data["entryToken"].as_str().unwrap());
    // The visitor's stream gets the admission again, with the new expiry.
    let again = events
        .next_of("admitted", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(expiry(&again.data), expiry(&extended));
    // The new token passes the gate and lasts as long as the session.
    let gate = reqwest::Client::new()
        .get(format!("{base}/v1/rooms/{ROOM}/gate"))
        .header("cookie", format!("usher_entry={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gate.status(), StatusCode::OK);
    let exp =
        usher_runtime::clock::parse_rfc3339(gate.headers()["x-usher-expires-at"].to_str().unwrap())
            .unwrap();
    assert_eq!(exp, expiry(&extended));
    // Asking again changes nothing, and a shorter ask never shortens it.
    for ask in ["10m", "1s"] {
        let body = json!({ "entryToken": token, "for": ask }).to_string();
        let same = ok_json(call(&base, "extend", Some(CHECKOUT_KEY), &body).await).await;
        assert_eq!(expiry(&same), expiry(&extended), "{ask}");
    }
    // An ended session is not extended.
    let done = json!({ "jti": alice.session_id }).to_string();
    ok_json(call(&base, "complete", Some(CHECKOUT_KEY), &done).await).await;
    assert_eq!(
        error_of(call(&base, "extend", Some(CHECKOUT_KEY), &body).await).await,
        (StatusCode::CONFLICT, "not_active".into())
    );
}

#[tokio::test]
async fn without_a_key_the_checkout_api_is_off() {
    let room = Room::new(&[]);
    let (_broker, base) = room.broker(&[]).await;
    let alice = join(&reqwest::Client::new(), &base).await;
    let body = json!({ "jti": alice.session_id }).to_string();
    for action in ["complete", "revoke", "extend"] {
        for key in [None, Some(CHECKOUT_KEY)] {
            assert_eq!(
                error_of(call(&base, action, key, &body).await).await,
                (StatusCode::NOT_FOUND, "checkout_disabled".into())
            );
        }
    }
    assert_eq!(status_of(&base, &alice).await["state"], "waiting");
}

#[tokio::test]
async fn a_broker_refuses_to_start_with_a_short_checkout_key() {
    let room = Room::new(&[]);
    let path = room.key_path.with_file_name("short.key");
    std::fs::write(&path, "too-short\n").unwrap();
    let stderr = room.refused_at_start("broker", &[("USHER_CHECKOUT_KEY", path.to_str().unwrap())]);
    assert!(stderr.contains("at least 32"), "{stderr}");
}
