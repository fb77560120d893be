//! Headless Chromium, driven over the DevTools protocol.

use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use usher_runtime::testing::free_port;

use super::{Process, TempDir, eventually};

/// A page script: the text of the element with the given id.
pub const TEXT: &str = "(id) => document.getElementById(id).textContent";

/// One Chromium page, controlled over its DevTools WebSocket.
pub struct Browser {
    _process: Process,
    _profile: TempDir,
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Browser {
    pub async fn launch() -> Self {
        Self::launch_with(&[]).await
    }

    /// [`Browser::launch`] with more command-line flags, such as
    /// `--host-resolver-rules=MAP *.shop.test 127.0.0.1` for hosts that
    /// only the test knows.
    pub async fn launch_with(flags: &[String]) -> Self {
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
                .args(flags)
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

    pub async fn call(&mut self, method: &str, params: Value) -> Value {
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
    pub async fn before_each_page(&mut self, script: &str) {
        // Without the Page domain enabled, Chromium does not run them.
        self.call("Page.enable", json!({})).await;
        self.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": script}),
        )
        .await;
    }

    pub async fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// Evaluates `expression` in the page and returns its (JSON) value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    pub async fn wait_for(&mut self, expression: &str) {
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
