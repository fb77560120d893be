//! The broker's HTTP layer against hostile and broken clients, over raw
//! TCP: malformed heads, slow bodies, dead peers. Every case runs on a fresh
//! connection and on one that already carried a request, because browsers
//! send the join and then open the stream on the same connection.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Set in the copy of a test that runs inside its own network namespace.
const IN_NAMESPACE: &str = "USHER_TEST_IN_NETNS";

/// A raw connection to a broker.
struct Raw {
    stream: TcpStream,
    /// Bytes read past the last response.
    pending: Vec<u8>,
}

/// A response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    /// The `code` of a JSON error body; fails on any other body.
    fn code(&self) -> String {
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "not JSON: {self:?}"
        );
        let body: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"));
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        body["code"].as_str().unwrap().to_owned()
    }
}

impl Raw {
    async fn connect(base: &str) -> Raw {
        let address = base.trim_start_matches("http://");
        Raw {
            stream: TcpStream::connect(address).await.unwrap(),
            pending: Vec::new(),
        }
    }

    /// A connection whose receive window is as small as the kernel allows,
    /// so that a client that stops reading soon stops the broker's writes.
    async fn connect_with_small_window(base: &str) -> Raw {
        let address = base.trim_start_matches("http://").parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(1024).unwrap();
        Raw {
            stream: socket.connect(address).await.unwrap(),
            pending: Vec::new(),
        }
    }

    /// A connection that already carried one request and was kept alive.
    async fn reused(base: &str) -> Raw {
        let mut raw = Raw::connect(base).await;
        raw.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(raw.answer().await.status, 200);
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(30), self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.pending.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("no answer within 30 s"),
        }
    }

    /// Reads one response head and its `Content-Length` body.
    async fn answer(&mut self) -> Answer {
        let end = loop {
            if let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            assert!(self.fill().await, "closed before a response head");
        };
        let head = String::from_utf8(self.pending.drain(..end + 4).collect()).unwrap();
        let status = head[9..12].parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .unwrap_or(0);
        while self.pending.len() < length {
            assert!(self.fill().await, "closed in a response body");
        }
        let body = self.pending.drain(..length).collect();
        Answer { status, head, body }
    }

    /// The head of an answer to HEAD (its length describes no body).
    async fn answer_to_head(&mut self) -> String {
        let end = loop {
            if let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            assert!(self.fill().await, "closed before a response head");
        };
        String::from_utf8(self.pending.drain(..end + 4).collect()).unwrap()
    }

    /// Whether the broker closes the connection within 30 s.
    async fn closed(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }
}

/// Opens an event stream on each of `streams`: the first for a visitor who
/// joined on another connection, the second on the join's own connection.
async fn open_streams_fresh_and_reused(base: &str, streams: &mut [Raw; 2]) {
    let [fresh, reused] = streams;
    let mut joining = Raw::connect(base).await;
    for (raw, join_here) in [(fresh, false), (reused, true)] {
        let joining = if join_here { &mut *raw } else { &mut joining };
        joining.send(&join_request("", "")).await;
        let user: Joined = serde_json::from_slice(&joining.answer().await.body).unwrap();
        raw.send(format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", user.events_url).as_bytes())
            .await;
    }
}

fn join_request(extra_head: &str, body: &str) -> Vec<u8> {
    format!("POST /v1/rooms/{ROOM}/queue HTTP/1.1\r\nHost: t\r\n{extra_head}\r\n{body}",)
        .into_bytes()
}

#[tokio::test]
async fn malformed_requests_get_json_errors_on_fresh_and_reused_connections() {
    let room = Room::new(&[("USHER_PAUSED", "true")]);
    let (_broker, base) = room.broker(&[]).await;
    let many_headers: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Bad: a\x01b\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            join_request("Content-Length: 2\r\nContent-Length: 2\r\n", "{}"),
            400,
            "invalid_content_length",
        ),
        (
            join_request("Content-Length: -1\r\n", ""),
            400,
            "invalid_content_length",
        ),
        (
            join_request("Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", "{}"),
            400,
            "ambiguous_length",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{many_headers}\r\n").into_bytes(),
            431,
            "too_many_headers",
        ),
        (
            format!(
                "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
                "a".repeat(20_000)
            )
            .into_bytes(),
            431,
            "head_too_large",
        ),
        (
            b"GET /healthz HTTP/1.1\r\n\r\n".to_vec(),
            400,
            "invalid_host",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
            400,
            "invalid_host",
        ),
        (
            join_request(
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
                "zz\r\n{}\r\n0\r\n\r\n",
            ),
            400,
            "invalid_chunked_body",
        ),
        (
            join_request("Content-Length: 5000\r\n", ""),
            413,
            "body_too_large",
        ),
    ];
    for reused in [false, true] {
        for (request, status, code) in &cases {
            let mut raw = if reused {
                Raw::reused(&base).await
            } else {
                Raw::connect(&base).await
            };
            raw.send(request).await;
            let answer = raw.answer().await;
            let what = format!("{:?} (reused: {reused})", String::from_utf8_lossy(request));
            assert_eq!(
                (answer.status, answer.code()),
                (*status, code.to_string()),
                "{what}"
            );
            assert!(raw.closed().await, "{what}: still open");
        }
    }
    assert_eq!(
        room_stats(&base).await["waiting"],
        0,
        "a bad request joined"
    );
}

#[tokio::test]
async fn chunked_and_expect_continue_joins_work_on_one_connection() {
    let room = Room::new(&[("USHER_PAUSED", "true")]);
    let (_broker, base) = room.broker(&[]).await;
    let mut raw = Raw::connect(&base).await;
    // Two requests at once (pipelined), the first with a chunked body.
    let mut pipelined = join_request(
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
        "1\r\n{\r\n1;ext=x\r\n}\r\n0\r\n\r\n",
    );
    pipelined.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    raw.send(&pipelined).await;
    assert_eq!(raw.answer().await.status, 201);
    assert_eq!(raw.answer().await.status, 200);
    // `Expect: 100-continue`: the body follows the interim answer.
    raw.send(&join_request(
        "Content-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n",
        "",
    ))
    .await;
    assert_eq!(raw.answer().await.status, 100);
    raw.send(b"{}").await;
    assert_eq!(raw.answer().await.status, 201);
    assert_eq!(room_stats(&base).await["waiting"], 2);
}

#[tokio::test]
async fn heads_and_bodies_that_never_arrive_are_cut_and_do_not_hold_up_shutdown() {
    let room = Room::new(&[("USHER_PAUSED", "true")]);
    let (mut broker, base) = room.broker(&[]).await;
    let stalled = join_request(
        "Content-Type: application/json\r\nContent-Length: 100\r\n",
        "{",
    );
    let mut first = Raw::connect(&base).await;
    first.send(&stalled).await;
    let mut half_head = Raw::reused(&base).await;
    half_head.send(b"GET /healthz HTTP/1.1\r\nHo").await;
    let answer = first.answer().await;
    assert_eq!(
        (answer.status, answer.code()),
        (408, "body_timeout".to_owned())
    );
    assert!(first.closed().await);
    let answer = half_head.answer().await;
    assert_eq!(
        (answer.status, answer.code()),
        (408, "head_timeout".to_owned())
    );
    assert!(half_head.closed().await);
    // Many stalled bodies, some on kept-alive connections, then SIGTERM:
    // the broker stops without waiting for them.
    let mut held = Vec::new();
    for i in 0..100 {
        let mut raw = if i % 2 == 0 {
            Raw::connect(&base).await
        } else {
            Raw::reused(&base).await
        };
        raw.send(&stalled).await;
        held.push(raw);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &broker.process.0.id().to_string()])
        .status()
        .unwrap();
    let exited = tokio::task::spawn_blocking(move || {
        let status = broker.process.0.wait().unwrap();
        (status, stopping.elapsed())
    })
    .await
    .unwrap();
    assert!(exited.0.success(), "{:?}", exited.0);
    // The drain waits up to 10 s for requests in flight; stalled bodies are
    // not in flight.
    assert!(exited.1 < Duration::from_secs(5), "took {:?}", exited.1);
    drop(held);
}

#[tokio::test]
async fn odd_paths_and_queries_behave_alike_on_fresh_and_reused_connections() {
    let room = Room::new(&[("USHER_PAUSED", "true")]);
    let (_broker, base) = room.broker(&[]).await;
    let client = reqwest::Client::new();
    let user = join(&client, &base).await;
    let sid = &user.session_id;
    let token = &user.session_token;
    let targets = [
        // Percent-encoding is decoded: the room is "concert".
        (
            format!("/v1/rooms/%63oncert/sessions/{sid}/events?token={token}"),
            200,
            None,
        ),
        // One token, not two.
        (
            format!("/v1/rooms/{ROOM}/sessions/{sid}/events?token={token}&token=other"),
            400,
            Some("invalid_query"),
        ),
        (
            format!("/v1/rooms/{ROOM}/sessions/{sid}/events?token=other&token={token}"),
            400,
            Some("invalid_query"),
        ),
        (
            format!("/v1/rooms/{ROOM}/sessions/%zz{sid}/events?token={token}"),
            400,
            Some("invalid_session_id"),
        ),
    ];
    for (target, status, code) in targets {
        for reused in [false, true] {
            let mut raw = if reused {
                Raw::reused(&base).await
            } else {
                Raw::connect(&base).await
            };
            raw.send(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .await;
            let answer = raw.answer().await;
            let got = (answer.status, (answer.status != 200).then(|| answer.code()));
            assert_eq!(
                got,
                (status, code.map(str::to_owned)),
                "{target} (reused: {reused})"
            );
        }
    }
}

#[tokio::test]
async fn head_requests_get_heads_only() {
    let room = Room::new(&[("USHER_PAUSED", "true")]);
    let (broker, base) = room.broker(&[]).await;
    let user = join(&reqwest::Client::new(), &base).await;
    let ready_length = reqwest::get(format!("{base}/readyz"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    let mut raw = Raw::connect(&base).await;
    raw.send(b"HEAD /readyz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let head = raw.answer_to_head().await;
    assert!(
        head.contains(&format!("content-length: {ready_length}\r\n")),
        "{head}"
    );
    // HEAD on a stream opens none: the connection goes on at once.
    raw.send(format!("HEAD {} HTTP/1.1\r\nHost: t\r\n\r\n", user.events_url).as_bytes())
        .await;
    let head = raw.answer_to_head().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    raw.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let answer = raw.answer().await;
    assert_eq!(answer.status, 200, "{answer:?}");
    broker.wait_for_streams(0, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_session_cannot_open_streams_without_limit() {
    let room = Room::new(&[("USHER_PAUSED", "true")]);
    let (_broker, base) = room.broker(&[]).await;
    let client = reqwest::Client::new();
    let user = join(&client, &base).await;
    let url = format!("{base}{}", user.events_url);
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(SseClient::connect(&url, None).await);
    }
    let refused = reqwest::get(&url).await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "too_many_streams");
    // Another session is not affected, and a freed slot can be used again.
    let other = join(&reqwest::Client::new(), &base).await;
    let _other = SseClient::connect(&format!("{base}{}", other.events_url), None).await;
    streams.pop();
    eventually(Duration::from_secs(5), "a freed stream slot", || {
        let url = url.clone();
        async move {
            let response = reqwest::get(&url).await.ok()?;
            (response.status() == 200).then_some(())
        }
    })
    .await;
}

/// A client that vanishes without closing (its packets, acknowledgements
/// included, stop arriving) is dropped by the kernel's unacknowledged-data
/// limit, whether its stream came on a fresh or a reused connection. Runs
/// in a network namespace of its own, where it may drop packets.
#[tokio::test]
async fn streams_of_vanished_clients_end_on_fresh_and_reused_connections() {
    if std::env::var_os(IN_NAMESPACE).is_none() {
        let test = "streams_of_vanished_clients_end_on_fresh_and_reused_connections";
        let status = std::process::Command::new("unshare")
            .args([
                "--net",
                "sh",
                "-c",
                "ip link set lo up && exec \"$@\"",
                "sh",
            ])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture"])
            .env(IN_NAMESPACE, "1")
            .status()
            .expect("unshare (util-linux) must be installed, and the tests run as root");
        assert!(status.success(), "the test in its namespace failed");
        return;
    }
    let room = Room::new(&[("USHER_PAUSED", "true")]);
    let (broker, base) = room.broker(&[("USHER_KEEPALIVE_INTERVAL", "1s")]).await;
    let mut streams = [Raw::connect(&base).await, Raw::connect(&base).await];
    open_streams_fresh_and_reused(&base, &mut streams).await;
    let mut ports = Vec::new();
    for raw in &mut streams {
        while !String::from_utf8_lossy(&raw.pending).contains("event: position") {
            assert!(raw.fill().await, "stream ended early");
        }
        ports.push(raw.stream.local_addr().unwrap().port());
    }
    broker.wait_for_streams(2, Duration::from_secs(5)).await;
    // From now on nothing the two clients send arrives.
    let nft = |args: &str| {
        let status = std::process::Command::new("nft")
            .args(args.split(' '))
            .status()
            .expect("nft (nftables) must be installed");
        assert!(status.success(), "nft {args}");
    };
    nft("add table inet vanish");
    nft("add chain inet vanish out { type filter hook output priority 0 ; }");
    // Matched by both ports: the kernel may give another connection (the
    // test's own metrics requests) the same source port towards another
    // destination.
    let broker_port = base.rsplit(':').next().unwrap();
    for port in &ports {
        nft(&format!(
            "add rule inet vanish out tcp sport {port} tcp dport {broker_port} drop"
        ));
    }
    let started = Instant::now();
    broker.wait_for_streams(0, Duration::from_secs(120)).await;
    println!("vanished clients dropped after {:?}", started.elapsed());
    drop(streams);
}

/// A client that stays connected but stops reading is dropped once the
/// broker's writes stall for the write timeout, whether its stream opened
/// the connection or followed the join on it. Keep-alive comments every
/// millisecond fill the socket buffers within seconds.
#[tokio::test]
async fn streams_of_clients_that_stop_reading_end_on_fresh_and_reused_connections() {
    let room = Room::new(&[("USHER_PAUSED", "true")]);
    let (broker, base) = room.broker(&[("USHER_KEEPALIVE_INTERVAL", "1ms")]).await;
    let mut streams = [
        Raw::connect_with_small_window(&base).await,
        Raw::connect_with_small_window(&base).await,
    ];
    open_streams_fresh_and_reused(&base, &mut streams).await;
    broker.wait_for_streams(2, Duration::from_secs(5)).await;
    let started = Instant::now();
    broker.wait_for_streams(0, Duration::from_secs(120)).await;
    println!(
        "clients that stopped reading dropped after {:?}",
        started.elapsed()
    );
    drop(streams);
}
