//! The waiting page in a real headless Chromium, driven over the DevTools
//! protocol, against `usher demo` and against a broker and dispatcher on a
//! real `redis-server`.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    Process, ROOM, Room, TempDir, demo, eventually, get_json, join, room_stats, wait_ready,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use usher_runtime::testing::{RedisServer, free_port};

/// One Chromium page, controlled over its DevTools WebSocket.
struct Browser {
    _process: Process,
    _profile: TempDir,
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Browser {
    async fn launch() -> Self {
        let port = free_port();
        let profile = TempDir(std::env::temp_dir().join(format!("usher-chromium-{port}")));
        let process = Process(
            Command::new(std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into()))
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=420,800",
                ])
                .arg(format!("--remote-debugging-port={port}"))
                .arg(format!("--user-data-dir={}", profile.0.display()))
                .arg("about:blank")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromium must be installed (apt-get install chromium)"),
        );
        let list_url = format!("http://127.0.0.1:{port}/json/list");
        let ws_url = eventually(
            Duration::from_secs(20),
            "chromium's DevTools endpoint",
            || {
                let list_url = list_url.clone();
                async move {
                    let pages: Vec<Value> =
                        reqwest::get(&list_url).await.ok()?.json().await.ok()?;
                    pages.iter().find(|p| p["type"] == "page")?["webSocketDebuggerUrl"]
                        .as_str()
                        .map(str::to_owned)
                }
            },
        )
        .await;
        let (socket, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
        Browser {
            _process: process,
            _profile: profile,
            socket,
            next_id: 0,
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket.send(Message::text(request)).await.unwrap();
        while let Some(message) = self.socket.next().await {
            let Ok(Message::Text(text)) = message else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == id {
                return reply["result"].clone();
            }
        }
        panic!("chromium closed the DevTools connection");
    }

    /// Runs `script` in every page this browser opens from now on, before
    /// the page's own scripts.
    async fn before_each_page(&mut self, script: &str) {
        // Without the Page domain enabled, Chromium does not run them.
        self.call("Page.enable", json!({})).await;
        self.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": script}),
        )
        .await;
    }

    async fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// Evaluates `expression` in the page and returns its (JSON) value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    async fn wait_for(&mut self, expression: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.eval(expression).await != Value::Bool(true) {
            let state = self.eval("document.querySelector('main').innerText").await;
            assert!(
                tokio::time::Instant::now() < deadline,
                "page never showed `{expression}`; it shows: {state}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

const TEXT: &str = "(id) => document.getElementById(id).textContent";

#[tokio::test]
async fn a_visitor_waits_with_a_live_position_then_is_admitted() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _demo = demo(&[
        "--capacity",
        "1",
        "--tick",
        "50ms",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    wait_ready(port).await;
    // Someone else holds the only slot, so the browser's visitor waits.
    let client = reqwest::Client::new();
    let holder: Value = client
        .post(format!("{base}/v1/rooms/demo/queue"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let mut browser = Browser::launch().await;
    browser.open(&format!("{base}/")).await;
    browser
        .wait_for(&format!("({TEXT})('status').startsWith('Live')"))
        .await;
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
    eventually(Duration::from_secs(10), "the holder admitted", || async {
        (room_stats(&base).await["active"] == 1).then_some(())
    })
    .await;

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
    let complete = format!(
        "{base}/v1/rooms/{ROOM}/sessions/{}/complete?token={}",
        holder.session_id, holder.session_token
    );
    assert_eq!(client.post(complete).send().await.unwrap().status(), 200);
    browser
        .wait_for("!document.getElementById('admitted').hidden")
        .await;
}
