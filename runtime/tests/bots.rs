//! Keeping bots out of the line, against real `usher` processes and a real
//! Redis: the proof of work before joining (challenge, every bad solution
//! refused with no state changed, one solution = one place, live
//! difficulty, JWT rooms exempt) and the human check against a stub
//! `siteverify` server.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clap::Parser as _;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use usher_runtime::clock::{now_ms, parse_rfc3339};
use usher_runtime::config::{Cli, Command};
use usher_runtime::pow::{CHALLENGE_TTL_MS, Challenges, ProofError, solve};
use usher_runtime::queue::{RedisStore, Store as _};

/// A light difficulty, so that the tests solve in a moment.
const BITS: &str = "8";

fn queue_url(base: &str) -> String {
    format!("{base}/v1/rooms/{ROOM}/queue")
}

/// Joins as `client` with the JSON `body`.
async fn join_with(client: &reqwest::Client, base: &str, body: &Value) -> reqwest::Response {
    client
        .post(queue_url(base))
        .json(body)
        .send()
        .await
        .unwrap()
}

fn proof(challenge: &str, counter: u64) -> Value {
    json!({"proof": {"challenge": challenge, "counter": counter}})
}

/// A proof of `challenge`, solved at its own difficulty.
fn solved_proof(challenge: &usher_runtime::pow::Challenge) -> Value {
    proof(
        &challenge.text,
        solve(&challenge.text, challenge.difficulty),
    )
}

/// The room's challenges as its brokers issue them (same key, same purpose).
fn challenges(room: &Room) -> Challenges {
    Challenges::new(room.signer().mac_keys("proof-of-work"))
}

async fn waiting(base: &str) -> u64 {
    room_stats(base).await["waiting"].as_u64().unwrap()
}

/// Sends a join with `body` from a new visitor (no cookies) and checks
/// it is refused with `status` and `code`, setting no cookie.
async fn refused(base: &str, body: Option<&Value>, status: StatusCode, code: &str) {
    let mut request = reqwest::Client::new().post(queue_url(base));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.headers().get("set-cookie").is_none(),
        "{code}: a refused join set a cookie"
    );
    assert_eq!(
        error_of(response).await,
        (status, code.to_owned()),
        "{body:?}"
    );
}

#[tokio::test]
async fn the_challenge_names_its_difficulty_and_is_never_cached() {
    let room = Room::new(&[("USHER_PROOF_OF_WORK", BITS)]);
    let (_broker, base) = room.broker(&[]).await;
    let response = reqwest::get(format!("{base}/v1/rooms/{ROOM}/challenge"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["difficulty"], 8);
    let text = body["challenge"].as_str().unwrap();
    assert!(text.starts_with(&format!("v1.{ROOM}.")), "{text}");
    let expires_at = parse_rfc3339(body["expiresAt"].as_str().unwrap()).unwrap();
    let lifetime = expires_at - now_ms();
    assert!(
        lifetime > CHALLENGE_TTL_MS - 60_000 && lifetime <= CHALLENGE_TTL_MS,
        "{lifetime}"
    );
    let other = get_json(
        &reqwest::Client::new(),
        &format!("{base}/v1/rooms/{ROOM}/challenge"),
    )
    .await;
    assert_ne!(other["challenge"], body["challenge"]);
    let (status, code) = error_of(
        reqwest::get(format!("{base}/v1/rooms/elsewhere/challenge"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "unknown_room")
    );

    // A room without proof of work says so, and joins need none.
    let free = Room::new(&[]);
    let (_broker, base) = free.broker(&[]).await;
    let body = get_json(
        &reqwest::Client::new(),
        &format!("{base}/v1/rooms/{ROOM}/challenge"),
    )
    .await;
    assert_eq!(body, json!({"difficulty": 0}));
    join(&reqwest::Client::new(), &base).await;
}

#[tokio::test]
async fn bad_solutions_are_refused_and_change_nothing() {
    let room = Room::new(&[("USHER_PROOF_OF_WORK", BITS)]);
    let (broker, base) = room.broker(&[]).await;
    let keys = challenges(&room);
    let now = now_ms();
    let fresh = keys.issue(ROOM, 8, now);
    let unsolved = (0..)
        .find(|counter| {
            keys.verify(&fresh.text, *counter, ROOM, 8, now) == Err(ProofError::Unsolved)
        })
        .unwrap();
    let expired = keys.issue(ROOM, 8, now - CHALLENGE_TTL_MS - 1_000);
    let foreign =
        Challenges::new(usher_runtime::auth::MacKeys::new([9; 32], vec![])).issue(ROOM, 8, now);
    let cases = [
        (None, StatusCode::FORBIDDEN, "proof_required"),
        (Some(json!({})), StatusCode::FORBIDDEN, "proof_required"),
        (
            Some(json!({"proof": "abc"})),
            StatusCode::BAD_REQUEST,
            "invalid_proof",
        ),
        (
            Some(json!({"proof": {"challenge": fresh.text, "counter": -1}})),
            StatusCode::BAD_REQUEST,
            "invalid_proof",
        ),
        (
            Some(proof("garbage", 1)),
            StatusCode::BAD_REQUEST,
            "invalid_proof",
        ),
        (
            Some(proof(&fresh.text, unsolved)),
            StatusCode::BAD_REQUEST,
            "invalid_proof",
        ),
        (
            Some(solved_proof(&expired)),
            StatusCode::BAD_REQUEST,
            "invalid_proof",
        ),
        (
            Some(solved_proof(&keys.issue("other-room", 8, now))),
            StatusCode::BAD_REQUEST,
            "invalid_proof",
        ),
        // Signed by the broker, but easier than the room asks.
        (
            Some(solved_proof(&keys.issue(ROOM, 4, now))),
            StatusCode::BAD_REQUEST,
            "invalid_proof",
        ),
        (
            Some(solved_proof(&foreign)),
            StatusCode::BAD_REQUEST,
            "invalid_proof",
        ),
    ];
    for (body, status, code) in &cases {
        refused(&base, body.as_ref(), *status, code).await;
    }
    assert_eq!(waiting(&base).await, 0);

    // A good solution makes one place, once.
    let good = solved_proof(&fresh);
    let response = join_with(&reqwest::Client::new(), &base, &good).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    refused(&base, Some(&good), StatusCode::CONFLICT, "proof_replayed").await;
    assert_eq!(waiting(&base).await, 1);
    let metrics = metrics_text(&broker.metrics).await;
    for (code, times) in [
        ("proof_required", 2),
        ("invalid_proof", 8),
        ("proof_replayed", 1),
    ] {
        let line = format!("usher_errors_total{{code=\"{code}\"}} {times}\n");
        assert!(metrics.contains(&line), "{line}: {metrics}");
    }
}

#[tokio::test]
async fn a_returning_visitor_keeps_the_place_without_a_new_proof() {
    let room = Room::new(&[("USHER_PROOF_OF_WORK", BITS), ("USHER_PAUSED", "true")]);
    let (_broker, base) = room.broker(&[]).await;
    let visitor = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let first = join_with(&visitor, &base, &solved(&visitor, &base, ROOM).await).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Joined = first.json().await.unwrap();
    // Back with both cookies (a reload): the same place, no proof.
    let again = visitor.post(queue_url(&base)).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let again: Joined = again.json().await.unwrap();
    assert_eq!(again.session_id, first.session_id);

    // A session token names a session, not a visitor: someone else who
    // shows it is a newcomer, and solves.
    let stranger = reqwest::Client::new()
        .post(queue_url(&base))
        .bearer_auth(&first.session_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(stranger).await,
        (StatusCode::FORBIDDEN, "proof_required".to_owned())
    );
    // Once the place is given up, a new one takes a new proof.
    let leave = format!(
        "{base}/v1/rooms/{ROOM}/sessions/{}?token={}",
        first.session_id, first.session_token
    );
    assert_eq!(visitor.delete(leave).send().await.unwrap().status(), 200);
    let after = visitor.post(queue_url(&base)).send().await.unwrap();
    assert_eq!(
        error_of(after).await,
        (StatusCode::FORBIDDEN, "proof_required".to_owned())
    );
    assert_eq!(waiting(&base).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_solution_makes_one_place_however_many_send_it_at_once() {
    let room = Room::new(&[("USHER_PROOF_OF_WORK", BITS), ("USHER_PAUSED", "true")]);
    let (_broker, base) = room.broker(&[]).await;
    let body = solved(&reqwest::Client::new(), &base, ROOM).await;
    let sends = (0..50).map(|_| {
        let (base, body) = (base.clone(), body.clone());
        tokio::spawn(async move {
            join_with(&reqwest::Client::new(), &base, &body)
                .await
                .status()
        })
    });
    let mut statuses: HashMap<StatusCode, usize> = HashMap::new();
    for send in sends.collect::<Vec<_>>() {
        *statuses.entry(send.await.unwrap()).or_default() += 1;
    }
    assert_eq!(
        statuses,
        HashMap::from([(StatusCode::CREATED, 1), (StatusCode::CONFLICT, 49)])
    );
    assert_eq!(waiting(&base).await, 1);
}

#[tokio::test]
async fn the_difficulty_follows_the_live_rules() {
    let room = Room::new(&[("USHER_RULES_FROM", "store"), ("USHER_PAUSED", "true")]);
    let store = RedisStore::connect(&room.redis.url(), ROOM).await.unwrap();
    // Paused rules with a difficulty, as the operator writes them.
    let rules = |bits: u8, revision: u64| {
        let (bits, revision) = (bits.to_string(), revision.to_string());
        let cli = Cli::try_parse_from([
            "usher",
            "dispatcher",
            "--room",
            ROOM,
            "--paused",
            "--proof-of-work",
            &bits,
            "--config-revision",
            &revision,
        ])
        .unwrap();
        let Command::Dispatcher(args) = cli.command else {
            unreachable!("a dispatcher's flags")
        };
        args.room.room_config().unwrap()
    };
    store.configure(&rules(0, 1)).await.unwrap();
    let (_broker, base) = room.broker(&[]).await;
    let client = reqwest::Client::new();
    let challenge_url = format!("{base}/v1/rooms/{ROOM}/challenge");
    let asks = |bits: u8| {
        let (client, url) = (&client, &challenge_url);
        eventually(
            std::time::Duration::from_secs(10),
            "the room's difficulty in its challenges",
            move || async move { (get_json(client, url).await["difficulty"] == bits).then_some(()) },
        )
    };
    asks(0).await;

    // Raised during an attack: the next challenges are harder at once, and
    // a solution of an easier challenge issued before no longer does.
    store.configure(&rules(6, 2)).await.unwrap();
    asks(6).await;
    let easy = solved(&client, &base, ROOM).await;
    store.configure(&rules(10, 3)).await.unwrap();
    asks(10).await;
    refused(&base, Some(&easy), StatusCode::BAD_REQUEST, "invalid_proof").await;
    let hard = solved(&client, &base, ROOM).await;
    let response = join_with(&client, &base, &hard).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn platform_jwt_rooms_ask_for_no_proof() {
    let room = Room::new(&[
        ("USHER_USER_AUTH", "jwt"),
        ("USHER_USER_JWT_KEY", "platform-secret"),
        ("USHER_PROOF_OF_WORK", "16"),
    ]);
    let (_broker, base) = room.broker(&[]).await;
    let client = reqwest::Client::new();
    let challenge = get_json(&client, &format!("{base}/v1/rooms/{ROOM}/challenge")).await;
    assert_eq!(challenge, json!({"difficulty": 0}));
    let token = hs256_token(
        &json!({"sub": "user-42", "exp": 4_000_000_000u64}),
        "platform-secret",
    );
    let response = client
        .post(queue_url(&base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

const SITE_SECRET: &str = "site-secret";
const HUMAN: &str = "passed-token";

/// The forms a stub verifier received.
type Forms = Arc<Mutex<Vec<HashMap<String, String>>>>;

/// A stub `siteverify` on 127.0.0.1 that passes [`HUMAN`] with
/// [`SITE_SECRET`], and nothing else.
async fn siteverify() -> (String, Forms) {
    use axum::extract::{Form, State};
    let forms: Forms = Arc::default();
    let app = axum::Router::new()
        .route(
            "/siteverify",
            axum::routing::post(
                |State(forms): State<Forms>, Form(form): Form<HashMap<String, String>>| async move {
                    let success = form.get("secret").map(String::as_str) == Some(SITE_SECRET)
                        && form.get("response").map(String::as_str) == Some(HUMAN);
                    forms.lock().unwrap().push(form);
                    axum::Json(json!({"success": success, "hostname": "127.0.0.1"}))
                },
            ),
        )
        .with_state(Arc::clone(&forms));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/siteverify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, forms)
}

#[tokio::test]
async fn the_human_check_lets_in_whom_the_verifier_passes() {
    let (url, forms) = siteverify().await;
    let room = Room::new(&[("USHER_PAUSED", "true")]);
    let (_broker, base) = room
        .broker(&[
            ("USHER_HUMAN_CHECK_URL", url.as_str()),
            ("USHER_HUMAN_CHECK_SECRET", SITE_SECRET),
        ])
        .await;
    for (body, code) in [
        (None, "human_check_required"),
        (Some(json!({"humanToken": ""})), "human_check_required"),
        (Some(json!({"humanToken": "a-bot"})), "human_check_failed"),
    ] {
        refused(&base, body.as_ref(), StatusCode::FORBIDDEN, code).await;
    }
    assert_eq!(waiting(&base).await, 0);
    let visitor = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let response = join_with(&visitor, &base, &json!({"humanToken": HUMAN})).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    // Coming back is no new check.
    let again = visitor.post(queue_url(&base)).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(waiting(&base).await, 1);

    let forms = forms.lock().unwrap();
    assert_eq!(forms.len(), 2, "asked once per token shown: {forms:?}");
    assert_eq!(forms[1]["secret"], SITE_SECRET);
    assert_eq!(forms[1]["response"], HUMAN);
    assert_eq!(forms[1]["remoteip"], "127.0.0.1");
}

#[tokio::test]
async fn an_unreachable_verifier_means_try_again_later() {
    let room = Room::new(&[("USHER_PROOF_OF_WORK", BITS)]);
    let nobody = format!(
        "http://127.0.0.1:{}/siteverify",
        usher_runtime::testing::free_port()
    );
    let (_broker, base) = room
        .broker(&[
            ("USHER_HUMAN_CHECK_URL", nobody.as_str()),
            ("USHER_HUMAN_CHECK_SECRET", SITE_SECRET),
        ])
        .await;
    let client = reqwest::Client::new();
    let mut body = solved(&client, &base, ROOM).await;
    body["humanToken"] = json!(HUMAN);
    let response = join_with(&client, &base, &body).await;
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(
        error_of(response).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "human_check_unavailable".to_owned()
        )
    );
    // The proof was spent before the verifier was asked: each ask of the
    // verifier costs a solved challenge.
    refused(&base, Some(&body), StatusCode::CONFLICT, "proof_replayed").await;
    assert_eq!(waiting(&base).await, 0);
}
