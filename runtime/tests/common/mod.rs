//! Shared by the integration tests: real `usher` processes against a real
//! `redis-server`, and a small SSE client.

#![allow(dead_code, clippy::unwrap_used)]

pub mod browser;
pub mod gate;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use usher_runtime::testing::{RedisServer, free_port};
use usher_runtime::tokens::EntryTokenSigner;

pub const ROOM: &str = "concert";

/// A child process killed when dropped.
pub struct Process(pub Child);

impl Process {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `usher` process and the base URL of its `/metrics`.
pub struct Usher {
    pub process: Process,
    pub metrics: String,
}

impl Usher {
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.0.try_wait().unwrap().is_none()
    }

    /// Waits until the process serves exactly `streams` event streams.
    pub async fn wait_for_streams(&self, streams: u64, within: Duration) {
        let expected = format!("usher_connections {streams}\n");
        eventually(within, &format!("{streams} open streams"), || {
            let (metrics, expected) = (self.metrics.clone(), expected.clone());
            async move {
                metrics_text(&metrics)
                    .await
                    .contains(&expected)
                    .then_some(())
            }
        })
        .await;
    }
}

/// Redis, a key file and the environment every `usher` process of a room shares.
pub struct Room {
    pub redis: RedisServer,
    pub key_path: std::path::PathBuf,
    pub env: Vec<(String, String)>,
    _dir: TempDir,
}

pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Room {
    /// A room whose processes get `extra` environment on top of the defaults.
    pub fn new(extra: &[(&str, &str)]) -> Self {
        Self::with_redis(RedisServer::start(), extra)
    }

    /// [`Room::new`] on a given Redis (one that keeps its data, say).
    pub fn with_redis(redis: RedisServer, extra: &[(&str, &str)]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("usher-test-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_path = dir.join("entry.pem");
        std::fs::write(&key_path, EntryTokenSigner::generate_pem()).unwrap();
        let mut env: Vec<(String, String)> = [
            ("USHER_ROOM", ROOM.to_owned()),
            ("USHER_REDIS_URL", redis.url()),
            ("USHER_TOKEN_KEY", key_path.display().to_string()),
            ("USHER_LOG", "warn".to_owned()),
            // Every test visitor comes from 127.0.0.1 unless a test says
            // otherwise: no per-address limits by default.
            ("USHER_JOINS_PER_ADDRESS", "0".to_owned()),
            ("USHER_SESSIONS_PER_ADDRESS", "0".to_owned()),
            // Joins here are plain HTTP; tests of the proof of work ask for it.
            ("USHER_PROOF_OF_WORK", "0".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        Room {
            redis,
            key_path,
            env,
            _dir: TempDir(dir),
        }
    }

    /// Starts `usher <role>` on `port` without waiting for it to be ready.
    /// A broker serves its metrics on a port of their own; a dispatcher
    /// serves them on `port`.
    pub fn spawn(&self, role: &str, port: u16, extra: &[(&str, &str)]) -> Usher {
        let mut cmd = self.command(role);
        cmd.env("USHER_LISTEN", format!("127.0.0.1:{port}"));
        let metrics_port = if role == "broker" {
            let metrics_port = free_port();
            cmd.env("USHER_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"));
            metrics_port
        } else {
            port
        };
        cmd.envs(extra.iter().copied());
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
        Usher {
            process: Process(cmd.spawn().unwrap()),
            metrics: format!("http://127.0.0.1:{metrics_port}"),
        }
    }

    /// `usher <role>` with the room's environment, not started yet.
    pub fn command(&self, role: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_usher"));
        cmd.arg(role)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    /// Runs `usher <role>` with `extra` on top of the room's environment,
    /// expecting it to refuse to start; returns what it wrote to stderr.
    pub fn refused_at_start(&self, role: &str, extra: &[(&str, &str)]) -> String {
        let output = self
            .command(role)
            .env("USHER_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("USHER_METRICS_LISTEN", "127.0.0.1:0")
            .envs(extra.iter().copied())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{role} {extra:?} started");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// Starts a broker on `port` and waits until it is ready.
    pub async fn broker_on(&self, port: u16, extra: &[(&str, &str)]) -> Usher {
        let process = self.spawn("broker", port, extra);
        wait_ready(port).await;
        process
    }

    pub async fn broker(&self, extra: &[(&str, &str)]) -> (Usher, String) {
        let port = free_port();
        (
            self.broker_on(port, extra).await,
            format!("http://127.0.0.1:{port}"),
        )
    }

    /// Starts a dispatcher on `port` and waits until it is ready.
    pub async fn dispatcher_on(&self, port: u16, extra: &[(&str, &str)]) -> Usher {
        let process = self.spawn("dispatcher", port, extra);
        wait_ready(port).await;
        process
    }

    pub async fn dispatcher(&self, extra: &[(&str, &str)]) -> Usher {
        self.dispatcher_on(free_port(), extra).await
    }

    pub fn signer(&self) -> EntryTokenSigner {
        EntryTokenSigner::from_file(self.key_path.to_str().unwrap()).unwrap()
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.redis.url()).unwrap();
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap()
    }
}

/// Starts `usher demo <args>` with quiet logs; see [`wait_ready`].
pub fn demo(args: &[&str]) -> Process {
    Process(
        Command::new(env!("CARGO_BIN_EXE_usher"))
            .arg("demo")
            .args(args)
            .env("USHER_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

pub async fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let url = format!("http://127.0.0.1:{port}/readyz");
    loop {
        if let Ok(r) = reqwest::get(&url).await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process on port {port} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` until it returns `Some`, or fails after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A joined session as the broker described it.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Joined {
    pub session_id: String,
    pub ticket: u64,
    pub state: String,
    pub position: Option<u64>,
    pub waiting: u64,
    pub session_token: String,
    pub events_url: String,
    pub status_url: String,
}

/// What an admitted visitor holds for the shop's gate: the entry token and,
/// for a bound token, its binding secret (in a browser, both are cookies).
#[derive(Clone, Debug)]
pub struct EntryPass {
    pub token: String,
    pub binding: Option<String>,
}

impl EntryPass {
    /// The pass in a session's JSON answer, once admitted.
    pub fn of(session: &serde_json::Value) -> Option<Self> {
        Some(EntryPass {
            token: session["entryToken"].as_str()?.to_owned(),
            binding: session["entryBinding"].as_str().map(str::to_owned),
        })
    }

    /// The `Cookie` header of the browser that holds the pass.
    pub fn cookie(&self) -> String {
        match &self.binding {
            Some(binding) => format!("usher_entry={}; usher_bind={binding}", self.token),
            None => format!("usher_entry={}", self.token),
        }
    }
}

/// Waits until `session` is admitted; returns its pass.
pub async fn entry_pass(base: &str, session: &Joined) -> EntryPass {
    let client = reqwest::Client::new();
    let url = format!("{base}{}", session.status_url);
    eventually(Duration::from_secs(10), "an admission", || {
        let (client, url) = (client.clone(), url.clone());
        async move { EntryPass::of(&get_json(&client, &url).await) }
    })
    .await
}

/// Joins as a new anonymous user.
pub async fn join(client: &reqwest::Client, base: &str) -> Joined {
    let response = client
        .post(format!("{base}/v1/rooms/{ROOM}/queue"))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "join failed: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// A join body carrying a solved proof of work for the room at `base`
/// (`{}` when the room asks for none).
pub async fn solved(client: &reqwest::Client, base: &str, room: &str) -> serde_json::Value {
    let challenge = get_json(client, &format!("{base}/v1/rooms/{room}/challenge")).await;
    let difficulty = challenge["difficulty"].as_u64().unwrap() as u8;
    if difficulty == 0 {
        return serde_json::json!({});
    }
    let text = challenge["challenge"].as_str().unwrap().to_owned();
    let counter = usher_runtime::pow::solve(&text, difficulty);
    serde_json::json!({"proof": {"challenge": text, "counter": counter}})
}

/// The status and code of an error answer, checked to be JSON with a message.
pub async fn error_of(response: reqwest::Response) -> (reqwest::StatusCode, String) {
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    (status, body["code"].as_str().unwrap().to_owned())
}

/// Gives up `session`'s slot, as a finished checkout does.
pub async fn complete(client: &reqwest::Client, base: &str, session: &Joined) {
    let url = format!(
        "{base}/v1/rooms/{ROOM}/sessions/{}/complete?token={}",
        session.session_id, session.session_token
    );
    assert_eq!(client.post(url).send().await.unwrap().status(), 200);
}

/// Waits until the room has `active` visitors admitted.
pub async fn wait_active(base: &str, active: u64) {
    eventually(
        Duration::from_secs(10),
        &format!("{active} admitted"),
        || async { (room_stats(base).await["active"] == active).then_some(()) },
    )
    .await;
}

/// A client that shows redirects rather than following them.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The Prometheus text at `{metrics}/metrics` (see [`Usher::metrics`]).
pub async fn metrics_text(metrics: &str) -> String {
    reqwest::get(format!("{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub async fn room_stats(base: &str) -> serde_json::Value {
    reqwest::get(format!("{base}/v1/rooms/{ROOM}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: serde_json::Value,
}

/// An SSE stream read event by event.
pub struct SseClient {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
    pub last_id: Option<String>,
    pub comments: usize,
}

impl SseClient {
    pub async fn connect(url: &str, last_event_id: Option<&str>) -> Self {
        Self::connect_with(&reqwest::Client::new(), url, last_event_id).await
    }

    /// Connects with `client`, which may reuse a kept-alive connection.
    pub async fn connect_with(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<&str>,
    ) -> Self {
        let mut request = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "stream refused: {:?}",
            response.text().await
        );
        SseClient {
            stream: response.bytes_stream().boxed(),
            buffer: String::new(),
            last_id: None,
            comments: 0,
        }
    }

    /// The next event (skipping comments and `retry:`), or `None` when the
    /// stream ends, fails, or nothing comes within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event {
                    id: None,
                    event: "message".into(),
                    data: serde_json::Value::Null,
                };
                let mut has_data = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        event.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event.event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        event.data = serde_json::from_str(v).unwrap();
                        has_data = true;
                    }
                }
                if has_data {
                    if event.id.is_some() {
                        self.last_id = event.id.clone();
                    }
                    return Some(event);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??
                .ok()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event of kind `kind`, skipping others.
    pub async fn next_of(&mut self, kind: &str, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next(left).await?;
            if event.event == kind {
                return Some(event);
            }
        }
    }
}

/// The shop's checkout key in tests.
pub const CHECKOUT_KEY: &str = "k3y-0f-the-shop-9d1f0c7e2b6a4d58af31c0e9b7d2a6f4";

/// Writes the checkout key next to the room's entry-token key and returns
/// the environment that hands it to a broker.
pub fn checkout_env(room: &Room) -> [(&'static str, String); 1] {
    let path = room.key_path.with_file_name("checkout.key");
    std::fs::write(&path, format!("{CHECKOUT_KEY}\n")).unwrap();
    [("USHER_CHECKOUT_KEY", path.display().to_string())]
}

/// POSTs `body` (sent as JSON) to the checkout's `action`, with `key` as the
/// Bearer token.
pub async fn call(base: &str, action: &str, key: Option<&str>, body: &str) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/v1/rooms/{ROOM}/checkout/{action}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

/// A platform JWT with `claims`, signed HS256 with `secret`.
pub fn hs256_token(claims: &serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}
