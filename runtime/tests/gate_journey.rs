//! The whole round trip through a real NGINX (Debian's package), for both
//! layouts of the README's "Protecting your shop", each configured from its
//! example under `charts/usher/examples/`: a visitor who opens the shop's
//! checkout is sent to the waiting page, waits, is admitted, and lands back
//! on the checkout holding the entry cookie, which the gate reads through
//! `auth_request`.
//!
//! * `nginx-auth-request.conf`: the waiting room under `/queue/` of the
//!   shop's own host;
//! * `nginx-shared-domain.conf`: the waiting room on `queue.shop.test`, the
//!   shop on `www.shop.test`, the entry cookie set for `shop.test`. Chromium
//!   and the test's client take both names for 127.0.0.1.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine as _;
use common::browser::{Browser, TEXT};
use common::{
    Process, ROOM, Room, TempDir, complete, error_of, eventually, get_json, join, wait_active,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use usher_runtime::testing::free_port;

/// One of the examples under `charts/usher/examples/`, made to run on
/// this machine, and what a visitor sees of it.
struct Layout {
    /// The example's file name.
    example: &'static str,
    /// NGINX's port.
    port: u16,
    /// Edits to the example besides those every layout needs (upstreams,
    /// room, NGINX's own files): each must find its text.
    rewrites: Vec<(String, String)>,
    /// Host names that Chromium and the test's client take for 127.0.0.1.
    hosts: &'static [&'static str],
    /// The shop's origin.
    shop: String,
    /// The waiting page's URL.
    queue: String,
    /// Where the shop's door sends a refused `GET /checkout`.
    door: String,
    /// What the brokers need for the layout.
    broker_env: Vec<(&'static str, String)>,
    /// The entry cookie's domain as the browser keeps it: the host alone,
    /// or the `Domain` attribute with a leading dot.
    cookie_domain: &'static str,
    /// A return URL the waiting room must refuse.
    foreign_return: String,
}

/// The waiting room under `/queue/` of the shop's own host.
fn path_prefix() -> Layout {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    Layout {
        example: "nginx-auth-request.conf",
        port,
        rewrites: vec![("listen 80;".into(), format!("listen 127.0.0.1:{port};"))],
        hosts: &[],
        queue: format!("{base}/queue/"),
        shop: base,
        door: "/queue/?return=/checkout".into(),
        broker_env: vec![],
        cookie_domain: "127.0.0.1",
        foreign_return: "https://evil.example/".into(),
    }
}

/// The waiting room on `queue.shop.test`, the shop on `www.shop.test`, the
/// cookie set for `shop.test`: the shared-domain example over plain HTTP
/// on one port, `.test` for `.example`.
fn shared_domain() -> Layout {
    let port = free_port();
    let shop = format!("http://www.shop.test:{port}");
    let queue = format!("http://queue.shop.test:{port}/");
    let rewrite = |from: &str, to: &str| (from.to_owned(), to.to_owned());
    Layout {
        example: "nginx-shared-domain.conf",
        port,
        rewrites: vec![
            rewrite("listen 443 ssl;", &format!("listen 127.0.0.1:{port};")),
            rewrite("ssl_certificate /etc/nginx/tls/shop.example.crt;", ""),
            rewrite("ssl_certificate_key /etc/nginx/tls/shop.example.key;", ""),
            rewrite(
                "server_name www.shop.example;",
                "server_name www.shop.test;",
            ),
            rewrite(
                "server_name queue.shop.example;",
                "server_name queue.shop.test;",
            ),
            rewrite("https://queue.shop.example/", &queue),
            rewrite("https://www.shop.example", &shop),
        ],
        hosts: &["www.shop.test", "queue.shop.test"],
        door: format!("{queue}?return={shop}/checkout"),
        broker_env: vec![
            ("USHER_COOKIE_DOMAIN", "shop.test".into()),
            ("USHER_RETURN_ORIGINS", shop.clone()),
        ],
        shop,
        queue,
        cookie_domain: ".shop.test",
        foreign_return: format!("http://evil.test:{port}/"),
    }
}

/// A shop whose `GET /checkout` shows the user NGINX passed on.
async fn shop() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/checkout",
        axum::routing::get(|headers: HeaderMap| async move {
            let user = headers
                .get("x-usher-user")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            axum::response::Html(format!(
                "<!doctype html><title>Checkout</title><h1>Checkout</h1><p id=user>{user}</p>"
            ))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// NGINX running one of the examples, pointed at local ports, as a single
/// foreground process that needs no root and writes only under its own
/// directory.
struct Nginx {
    _process: Process,
    _dir: TempDir,
}

impl Nginx {
    /// `example` with `rewrites` and the ones every layout needs: the
    /// upstreams on `broker` and `shop`, the test's room, NGINX's files
    /// under its own directory. Returns once NGINX listens on `port`.
    async fn start(
        example: &str,
        port: u16,
        broker: u16,
        shop: u16,
        rewrites: Vec<(String, String)>,
    ) -> Self {
        let dir = TempDir(std::env::temp_dir().join(format!("usher-nginx-{port}")));
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = format!(
            "{}/../charts/usher/examples/{example}",
            env!("CARGO_MANIFEST_DIR")
        );
        let example = std::fs::read_to_string(path).unwrap();
        let tmp = dir.0.display();
        let mut conf = format!(
            "master_process off;\npid {tmp}/nginx.pid;\nerror_log stderr error;\n{example}"
        );
        let common = [
            (
                "concert-2026-broker.usher.svc:8080".to_owned(),
                format!("127.0.0.1:{broker}"),
            ),
            ("shop.shop.svc:8080".to_owned(), format!("127.0.0.1:{shop}")),
            (
                "/v1/rooms/concert-2026/".to_owned(),
                format!("/v1/rooms/{ROOM}/"),
            ),
            (
                "http {\n".to_owned(),
                format!(
                    "http {{\n    access_log off;\n    log_not_found off;\n    client_body_temp_path {tmp}/body;\n    \
                     proxy_temp_path {tmp}/proxy;\n    fastcgi_temp_path {tmp}/fastcgi;\n    \
                     uwsgi_temp_path {tmp}/uwsgi;\n    scgi_temp_path {tmp}/scgi;\n"
                ),
            ),
        ];
        for (from, to) in common.into_iter().chain(rewrites) {
            assert!(conf.contains(&from), "the example no longer holds {from:?}");
            conf = conf.replace(&from, &to);
        }
        let conf_path = dir.0.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let process = Process(
            Command::new(std::env::var("NGINX").unwrap_or_else(|_| "nginx".into()))
                .arg("-c")
                .arg(&conf_path)
                .arg("-p")
                .arg(&dir.0)
                .args(["-e", "stderr", "-g", "daemon off;"])
                .stdout(Stdio::null())
                .spawn()
                .expect("nginx must be installed (apt-get install nginx)"),
        );
        eventually(Duration::from_secs(10), "nginx listening", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(drop)
        })
        .await;
        Nginx {
            _process: process,
            _dir: dir,
        }
    }
}

/// What the shop's door answers `GET {url}` with `cookie`: the status and
/// `Location`.
async fn door(client: &reqwest::Client, url: &str, cookie: Option<&str>) -> (u16, String) {
    let mut request = client.get(url);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.unwrap();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (response.status().as_u16(), location)
}

/// The claims of a JWT, unverified.
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_visitor_waits_at_the_shops_door_and_comes_back_admitted() {
    journey(path_prefix()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_visitor_waits_on_the_queue_host_and_comes_back_to_the_shop_host() {
    journey(shared_domain()).await;
}

/// The round trip through `layout`, from the shop's door through the line
/// and back, until the shop completes the session.
async fn journey(layout: Layout) {
    let room = Room::new(&[("USHER_CAPACITY", "1"), ("USHER_DISPATCH_TICK", "50ms")]);
    // The shop's checkout service holds the room's checkout key.
    let checkout_key = "k".repeat(40);
    let key_file = std::env::temp_dir().join(format!("usher-journey-{}.key", free_port()));
    std::fs::write(&key_file, &checkout_key).unwrap();
    let mut broker_env = vec![("USHER_CHECKOUT_KEY", key_file.to_str().unwrap())];
    broker_env.extend(layout.broker_env.iter().map(|(k, v)| (*k, v.as_str())));
    let (_broker, broker_base) = room.broker(&broker_env).await;
    let _dispatcher = room.dispatcher(&[]).await;
    let broker_port: u16 = broker_base.rsplit(':').next().unwrap().parse().unwrap();
    let _nginx = Nginx::start(
        layout.example,
        layout.port,
        broker_port,
        shop().await,
        layout.rewrites,
    )
    .await;
    // The test's own client finds the layout's hosts as the browser does.
    let local = SocketAddr::from(([127, 0, 0, 1], layout.port));
    let visitor = layout
        .hosts
        .iter()
        .fold(
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()),
            |builder, host| builder.resolve(host, local),
        )
        .build()
        .unwrap();

    // Refused at the door: no cookie, or a forged one, goes to the queue.
    let checkout_url = format!("{}/checkout", layout.shop);
    let to_queue = (302, layout.door.clone());
    assert_eq!(door(&visitor, &checkout_url, None).await, to_queue);
    assert_eq!(
        door(&visitor, &checkout_url, Some("usher_entry=not.a.token")).await,
        to_queue
    );

    // Someone else holds the only slot, so the browser's visitor waits.
    let client = reqwest::Client::new();
    let holder = join(&client, &broker_base).await;
    wait_active(&broker_base, 1).await;

    // The visitor opens the checkout, with a query of its own that must
    // survive the trip, and lands on the waiting page.
    let resolve = layout
        .hosts
        .iter()
        .map(|host| format!("MAP {host} 127.0.0.1"))
        .collect::<Vec<_>>();
    let flags = if resolve.is_empty() {
        vec![]
    } else {
        vec![format!("--host-resolver-rules={}", resolve.join(", "))]
    };
    let mut browser = Browser::launch_with(&flags).await;
    let checkout = format!("{}/checkout?item=7&qty=2", layout.shop);
    browser.open(&checkout).await;
    browser
        .wait_for(&format!("({TEXT})('status').startsWith('Live')"))
        .await;
    assert_eq!(
        browser.eval("location.origin + location.pathname").await,
        layout.queue
    );
    assert_eq!(browser.eval(&format!("({TEXT})('position')")).await, "1");

    // The holder finishes; the visitor is admitted and sent back.
    complete(&client, &broker_base, &holder).await;
    browser
        .wait_for("location.pathname === '/checkout' && !!document.getElementById('user')")
        .await;
    assert_eq!(browser.eval("location.href").await, checkout);

    // The shop saw the user the entry cookie names.
    let cookies = browser
        .call("Network.getCookies", json!({"urls": [layout.shop]}))
        .await;
    let cookie_named = |name: &str| {
        let found = cookies["cookies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} cookie: {cookies}"))
            .clone();
        assert_eq!(found["httpOnly"], true, "{name}");
        assert_eq!(found["path"], "/", "{name}");
        assert_eq!(found["domain"], layout.cookie_domain, "{name}");
        found["value"].as_str().unwrap().to_owned()
    };
    let token = cookie_named("usher_entry");
    let binding = cookie_named("usher_bind");
    let user = browser.eval(&format!("({TEXT})('user')")).await;
    assert_eq!(user, claims(&token)["sub"]);
    assert!(!user.as_str().unwrap().is_empty());

    // The browser's cookies pass the door. The token copied on its own, or
    // with a signature of another key, is sent to the queue.
    let cookie = format!("usher_entry={token}; usher_bind={binding}");
    assert_eq!(door(&visitor, &checkout_url, Some(&cookie)).await.0, 200);
    let copied = format!("usher_entry={token}");
    assert_eq!(door(&visitor, &checkout_url, Some(&copied)).await, to_queue);
    let (head_and_claims, _) = token.rsplit_once('.').unwrap();
    let forged = format!(
        "usher_entry={head_and_claims}.{}; usher_bind={binding}",
        "A".repeat(86)
    );
    assert_eq!(door(&visitor, &checkout_url, Some(&forged)).await, to_queue);

    // Another visitor waits for the slot the browser's visitor holds.
    let next = join(&client, &broker_base).await;
    // The shop's server completes the purchase over the checkout API: the
    // cookie no longer opens the door, and the next visitor is admitted.
    let done = client
        .post(format!("{broker_base}/v1/rooms/{ROOM}/checkout/complete"))
        .bearer_auth(&checkout_key)
        .json(&json!({ "entryToken": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    eventually(Duration::from_secs(5), "the door shut", || async {
        (door(&visitor, &checkout_url, Some(&cookie)).await == to_queue).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "the next visitor admitted", || {
        let url = format!("{broker_base}{}", next.status_url);
        let client = client.clone();
        async move { (get_json(&client, &url).await["state"] == "admitted").then_some(()) }
    })
    .await;
    let _ = std::fs::remove_file(&key_file);

    // A return URL off the allow-list is refused through the proxy too.
    let foreign = format!(
        "{}v1/rooms/{ROOM}/sessions/{}/enter?token={}&return={}",
        layout.queue, next.session_id, next.session_token, layout.foreign_return
    );
    let refused = visitor.get(foreign).send().await.unwrap();
    assert_eq!(
        error_of(refused).await,
        (StatusCode::BAD_REQUEST, "return_not_allowed".to_owned())
    );
}
