//! The waiting page in a real headless Chromium, driven over the DevTools
//! protocol, against `usher demo` and against a broker and dispatcher on a
//! real `redis-server`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::browser::{Browser, TEXT};
use common::{
    Room, complete, demo, eventually, get_json, join, room_stats, solved, wait_active, wait_ready,
};
use serde_json::Value;
use usher_runtime::testing::{RedisServer, free_port};

/// `usher demo` with one slot, held by someone else, so that the browser's
/// visitor waits; the page solves a light proof of work first. Returns
/// the demo, its base URL and the holder's join answer.
async fn demo_with_its_slot_held() -> (common::Process, String, Value) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let demo = demo(&[
        "--capacity",
        "1",
        "--tick",
        "50ms",
        "--proof-of-work",
        "10",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    wait_ready(port).await;
    let client = reqwest::Client::new();
    let holder = client
        .post(format!("{base}/v1/rooms/demo/queue"))
        .json(&solved(&client, &base, "demo").await)
        .send()
        .await
        .unwrap();
    assert_eq!(holder.status(), 201);
    (demo, base, holder.json().await.unwrap())
}

#[tokio::test]
async fn a_visitor_waits_with_a_live_position_then_is_admitted() {
    let (_demo, base, holder) = demo_with_its_slot_held().await;
    let client = reqwest::Client::new();

    let mut browser = Browser::launch().await;
    browser.open(&format!("{base}/")).await;
    browser
        .wait_for(&format!("({TEXT})('status').startsWith('Live')"))
        .await;
    let solve_ms = browser
        .eval("document.querySelector('main').dataset.solveMs")
        .await;
    assert!(
        solve_ms
            .as_str()
            .is_some_and(|ms| ms.parse::<u64>().is_ok()),
        "the page solved its proof of work: {solve_ms}"
    );
    assert_eq!(browser.eval(&format!("({TEXT})('position')")).await, "1");
    assert_eq!(
        browser.eval(&format!("({TEXT})('waitingCount')")).await,
        "1"
    );
    assert_eq!(
        browser
            .eval("document.getElementById('waiting').hidden")
            .await,
        false
    );
    let eta = browser.eval(&format!("({TEXT})('eta')")).await;
    assert!(
        eta.as_str().is_some_and(|e| !e.contains("estimating")),
        "{eta}"
    );

    // The holder finishes; the page turns to the admitted state by itself.
    let complete = format!(
        "{base}/v1/rooms/demo/sessions/{}/complete?token={}",
        holder["sessionId"].as_str().unwrap(),
        holder["sessionToken"].as_str().unwrap()
    );
    assert_eq!(client.post(complete).send().await.unwrap().status(), 200);
    browser
        .wait_for("!document.getElementById('admitted').hidden")
        .await;
    let token = browser.eval("document.getElementById('token').value").await;
    assert_eq!(
        token.as_str().unwrap().split('.').count(),
        3,
        "an entry token JWT: {token}"
    );
    assert_eq!(browser.eval("document.title").await, "It's your turn!");

    // "I'm done" completes the session on the server.
    browser
        .eval("document.getElementById('complete').click()")
        .await;
    browser
        .wait_for("!document.getElementById('closed').hidden")
        .await;
    let stats: Value = get_json(&reqwest::Client::new(), &format!("{base}/v1/rooms/demo")).await;
    assert_eq!(
        (stats["active"].as_u64(), stats["admittedTotal"].as_u64()),
        (Some(0), Some(2))
    );
}

/// The page solves its proof of work once: a reload (as after a network
/// drop) gets the same place back with the session cookie, and solves
/// nothing.
#[tokio::test]
async fn a_reload_keeps_the_place_without_solving_again() {
    let (_demo, base, _holder) = demo_with_its_slot_held().await;
    let client = reqwest::Client::new();

    let mut browser = Browser::launch().await;
    let live = format!("({TEXT})('status').startsWith('Live')");
    let solve_ms = "document.querySelector('main').dataset.solveMs";
    let session = "JSON.parse(sessionStorage.getItem('v1/rooms/demo')).sessionId";
    browser.open(&format!("{base}/")).await;
    browser.wait_for(&live).await;
    assert!(browser.eval(solve_ms).await.is_string());
    let first = browser.eval(session).await;
    let stats = format!("{base}/v1/rooms/demo");
    assert_eq!(get_json(&client, &stats).await["waiting"], 1);

    browser.open(&format!("{base}/")).await;
    browser.wait_for(&live).await;
    assert_eq!(browser.eval(solve_ms).await, Value::Null, "solved again");
    assert_eq!(browser.eval(session).await, first);
    assert_eq!(browser.eval(&format!("({TEXT})('position')")).await, "1");
    assert_eq!(get_json(&client, &stats).await["waiting"], 1);
}

/// The median time the page takes to solve the default proof of work in
/// headless Chromium on this machine, over 15 new visitors:
/// `cargo test -p usher-runtime --test waiting_page -- --ignored --nocapture`
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn median_solve_time_at_the_default_difficulty() {
    const LOADS: usize = 15;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _demo = demo(&[
        "--capacity",
        "1000",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    wait_ready(port).await;
    let difficulty = get_json(
        &reqwest::Client::new(),
        &format!("{base}/v1/rooms/demo/challenge"),
    )
    .await["difficulty"]
        .clone();
    let mut browser = Browser::launch().await;
    let mut times = Vec::with_capacity(LOADS);
    for _ in 0..LOADS {
        // A new visitor each time: no cookies, no session in the tab.
        browser
            .eval("try { sessionStorage.clear() } catch (e) {}")
            .await;
        browser
            .call("Network.clearBrowserCookies", serde_json::json!({}))
            .await;
        browser.open("about:blank").await;
        browser.open(&format!("{base}/")).await;
        browser
            .wait_for(&format!("({TEXT})('status').startsWith('Live')"))
            .await;
        let ms = browser
            .eval("Number(document.querySelector('main').dataset.solveMs)")
            .await;
        times.push(ms.as_f64().unwrap());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "difficulty {difficulty}: median solve {} ms over {LOADS} visitors (fastest {}, slowest {})",
        times[LOADS / 2],
        times[0],
        times[LOADS - 1]
    );
}

/// Counts, in `window.closedStreams`, the streams the browser gave up on
/// (an `error` event with the EventSource CLOSED: an answer other than 200),
/// which it never reopens by itself.
const COUNT_CLOSED_STREAMS: &str = "(() => {
    window.closedStreams = 0;
    const Native = window.EventSource;
    window.EventSource = class extends Native {
        constructor(...args) {
            super(...args);
            this.addEventListener('error', () => {
                if (this.readyState === Native.CLOSED) window.closedStreams += 1;
            });
        }
    };
})();";

/// A broker that restarts while Redis is down answers the page's reconnect
/// with `503`, after which the browser's EventSource stays closed for good.
/// The page must open streams again by itself, so that its visitor stays
/// present (and is not dropped as abandoned once Redis is back), gets a live
/// stream again, and is admitted when a slot frees.
#[tokio::test(flavor = "multi_thread")]
async fn the_page_reopens_its_stream_after_a_refused_reconnect() {
    let abandon = Duration::from_secs(10);
    let mut room = Room::with_redis(
        RedisServer::start_persistent(),
        &[
            ("USHER_CAPACITY", "1"),
            ("USHER_ABANDON_TIMEOUT", "10s"),
            // The outage is on purpose: no warnings about it.
            ("USHER_LOG", "error"),
        ],
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut broker = room.broker_on(port, &[]).await;
    let _dispatcher = room.dispatcher(&[]).await;
    let client = reqwest::Client::new();
    // Someone else holds the only slot, so the browser's visitor waits.
    let holder = join(&client, &base).await;
    wait_active(&base, 1).await;

    let mut browser = Browser::launch().await;
    browser.before_each_page(COUNT_CLOSED_STREAMS).await;
    browser.open(&format!("{base}/")).await;
    browser
        .wait_for(&format!("({TEXT})('status').startsWith('Live')"))
        .await;
    assert_eq!(browser.eval(&format!("({TEXT})('position')")).await, "1");
    // A visitor behind, who neither streams nor polls: once the dispatcher
    // drops them as absent, it would have dropped the page's visitor too,
    // had the page stopped marking them present.
    join(&client, &base).await;

    // Redis goes away and the broker restarts: the page's stream ends, and
    // the browser's reconnect gets a 503 from the new broker.
    room.redis.stop();
    broker.kill();
    let _broker = room.spawn("broker", port, &[]);
    browser.wait_for("window.closedStreams > 0").await;

    room.redis.restart();
    let stats = eventually(
        abandon * 3,
        "the absent visitor dropped after Redis is back",
        || async {
            let stats = room_stats(&base).await;
            stats["waiting"]
                .as_u64()
                .is_some_and(|w| w < 2)
                .then_some(stats)
        },
    )
    .await;
    let page = browser
        .eval("document.querySelector('main').innerText")
        .await;
    assert_eq!(
        stats["waiting"], 1,
        "the page's visitor was dropped as absent too: {stats}; the page shows: {page}"
    );
    browser
        .wait_for(&format!("({TEXT})('status').startsWith('Live')"))
        .await;
    assert_eq!(browser.eval(&format!("({TEXT})('position')")).await, "1");

    // The holder finishes; the page's visitor, still in line, is admitted.
    complete(&client, &base, &holder).await;
    browser
        .wait_for("!document.getElementById('admitted').hidden")
        .await;
}

/// The room's message, as the operator sets it in the rules in Redis,
/// appears on an open page at once, and goes when withdrawn.
#[tokio::test(flavor = "multi_thread")]
async fn the_page_shows_the_rooms_message_as_it_changes() {
    use usher_runtime::queue::{Queueing, RedisStore, RoomConfig, Store as _};
    let room = Room::new(&[("USHER_RULES_FROM", "store")]);
    let store = RedisStore::connect(&room.redis.url(), common::ROOM)
        .await
        .unwrap();
    let rules = |message: &str, revision| RoomConfig {
        capacity: 1,
        admission_rate: None,
        session_duration_ms: 600_000,
        queueing: Queueing::Fifo,
        opens_at: None,
        closes_at: None,
        paused: true,
        abandon_timeout_ms: 120_000,
        claim_window_ms: 0,
        max_session_duration_ms: 0,
        message: message.into(),
        joins_per_address_per_minute: 0,
        sessions_per_address: 0,
        priority_share: 100,
        revision,
        proof_of_work_bits: 0,
    };
    store.configure(&rules("", 1)).await.unwrap();
    let port = free_port();
    let _broker = room.broker_on(port, &[]).await;

    let mut browser = Browser::launch().await;
    browser.open(&format!("http://127.0.0.1:{port}/")).await;
    browser
        .wait_for(&format!("({TEXT})('status').startsWith('Live')"))
        .await;
    let banner_hidden = "document.getElementById('message').hidden";
    assert_eq!(browser.eval(banner_hidden).await, true);
    store
        .configure(&rules("Doors open at 10 <b>sharp</b>", 2))
        .await
        .unwrap();
    browser
        .wait_for(&format!(
            "({TEXT})('message') === 'Doors open at 10 <b>sharp</b>'"
        ))
        .await;
    assert_eq!(browser.eval(banner_hidden).await, false);
    // Shown as text, never as markup.
    assert_eq!(
        browser
            .eval("document.querySelector('#message b') === null")
            .await,
        true
    );
    store.configure(&rules("", 3)).await.unwrap();
    browser.wait_for(banner_hidden).await;
}

/// A presale link (`?invite=`) puts its visitor in the priority lane, and
/// the page says so; once the code is spent, the same link is told so
/// rather than quietly queued in the general line.
#[tokio::test(flavor = "multi_thread")]
async fn a_presale_link_puts_its_visitor_in_the_priority_lane() {
    let room = Room::new(&[("USHER_CAPACITY", "1")]);
    let codes = room.key_path.with_file_name("invites.txt");
    std::fs::write(&codes, "FAN-0042\n").unwrap();
    let port = free_port();
    // No dispatcher: visitors stay in line.
    let _broker = room
        .broker_on(port, &[("USHER_INVITE_CODES", codes.to_str().unwrap())])
        .await;
    let page = format!("http://127.0.0.1:{port}/?invite=FAN-0042");
    let lane_shown = "!document.getElementById('lane').hidden";

    let mut fan = Browser::launch().await;
    fan.open(&page).await;
    fan.wait_for(&format!("({TEXT})('status').startsWith('Live')"))
        .await;
    assert_eq!(fan.eval(lane_shown).await, true);
    assert_eq!(fan.eval(&format!("({TEXT})('position')")).await, "1");

    let mut latecomer = Browser::launch().await;
    latecomer.open(&page).await;
    latecomer
        .wait_for(&format!("({TEXT})('status').includes('invite code')"))
        .await;
    assert_eq!(latecomer.eval(lane_shown).await, false);
    assert_eq!(
        room_stats(&format!("http://127.0.0.1:{port}")).await["waiting"],
        1
    );
}
