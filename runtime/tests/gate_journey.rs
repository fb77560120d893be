//! The whole round trip through a real NGINX (Debian's package), configured
//! from `charts/usher/examples/nginx-auth-request.conf`: a visitor who
//! opens the shop's checkout is sent to the waiting page under `/queue/`,
//! waits, is admitted, and lands back on the checkout holding the entry
//! cookie, which the gate reads through `auth_request`.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine as _;
use common::browser::{Browser, TEXT};
use common::{
    Process, ROOM, Room, TempDir, complete, eventually, get_json, join, no_redirects, wait_active,
};
use serde_json::{Value, json};
use usher_runtime::testing::free_port;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/usher/examples/nginx-auth-request.conf"
);

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

/// NGINX running the example configuration, pointed at local ports, as a
/// single foreground process that needs no root and writes only under
/// its own directory.
struct Nginx {
    _process: Process,
    _dir: TempDir,
    base: String,
}

impl Nginx {
    async fn start(broker: u16, shop: u16) -> Self {
        let port = free_port();
        let dir = TempDir(std::env::temp_dir().join(format!("usher-nginx-{port}")));
        std::fs::create_dir_all(&dir.0).unwrap();
        let example = std::fs::read_to_string(EXAMPLE).unwrap();
        let tmp = dir.0.display();
        let mut conf = format!(
            "master_process off;\npid {tmp}/nginx.pid;\nerror_log stderr error;\n{example}"
        );
        for (from, to) in [
            (
                "concert-2026-broker.usher.svc:8080".to_owned(),
                format!("127.0.0.1:{broker}"),
            ),
            ("shop.shop.svc:8080".to_owned(), format!("127.0.0.1:{shop}")),
            ("listen 80;".to_owned(), format!("listen 127.0.0.1:{port};")),
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
        ] {
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
        let base = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(10), "nginx listening", || {
            let url = format!("{base}/queue/healthz");
            async move {
                reqwest::get(url)
                    .await
                    .ok()?
                    .status()
                    .is_success()
                    .then_some(())
            }
        })
        .await;
        Nginx {
            _process: process,
            _dir: dir,
            base,
        }
    }
}

/// Where NGINX sends `GET /checkout` with `cookie`: the answer's status
/// and `Location`.
async fn checkout_with(nginx: &Nginx, cookie: Option<&str>) -> (u16, String) {
    let mut request = no_redirects().get(format!("{}/checkout", nginx.base));
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
    let room = Room::new(&[("USHER_CAPACITY", "1"), ("USHER_DISPATCH_TICK", "50ms")]);
    // The shop's checkout service holds the room's checkout key.
    let checkout_key = "k".repeat(40);
    let key_file = std::env::temp_dir().join(format!("usher-journey-{}.key", free_port()));
    std::fs::write(&key_file, &checkout_key).unwrap();
    let (_broker, broker_base) = room
        .broker(&[("USHER_CHECKOUT_KEY", key_file.to_str().unwrap())])
        .await;
    let _dispatcher = room.dispatcher(&[]).await;
    let broker_port: u16 = broker_base.rsplit(':').next().unwrap().parse().unwrap();
    let nginx = Nginx::start(broker_port, shop().await).await;

    // Refused at the door: no cookie, or a forged one, goes to the queue.
    let to_queue = (302, "/queue/?return=/checkout".to_owned());
    assert_eq!(checkout_with(&nginx, None).await, to_queue);
    assert_eq!(
        checkout_with(&nginx, Some("usher_entry=not.a.token")).await,
        to_queue
    );

    // Someone else holds the only slot, so the browser's visitor waits.
    let client = reqwest::Client::new();
    let holder = join(&client, &broker_base).await;
    wait_active(&broker_base, 1).await;

    // The visitor opens the checkout, with a query of its own that must
    // survive the trip, and lands on the waiting page under /queue/.
    let mut browser = Browser::launch().await;
    let checkout = "/checkout?item=7&qty=2";
    browser.open(&format!("{}{checkout}", nginx.base)).await;
    browser
        .wait_for(&format!("({TEXT})('status').startsWith('Live')"))
        .await;
    assert_eq!(browser.eval("location.pathname").await, "/queue/");
    assert_eq!(browser.eval(&format!("({TEXT})('position')")).await, "1");

    // The holder finishes; the visitor is admitted and sent back.
    complete(&client, &broker_base, &holder).await;
    browser
        .wait_for("location.pathname === '/checkout' && !!document.getElementById('user')")
        .await;
    assert_eq!(
        browser.eval("location.pathname + location.search").await,
        checkout
    );

    // The shop saw the user the entry cookie names.
    let cookies = browser
        .call("Network.getCookies", json!({"urls": [nginx.base]}))
        .await;
    let entry = cookies["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "usher_entry")
        .unwrap_or_else(|| panic!("no entry cookie: {cookies}"))
        .clone();
    assert_eq!(entry["httpOnly"], true);
    assert_eq!(entry["path"], "/");
    let token = entry["value"].as_str().unwrap();
    let user = browser.eval(&format!("({TEXT})('user')")).await;
    assert_eq!(user, claims(token)["sub"]);
    assert!(!user.as_str().unwrap().is_empty());

    // The real cookie passes the door; the same token with a signature of
    // another key does not.
    let cookie = format!("usher_entry={token}");
    assert_eq!(checkout_with(&nginx, Some(&cookie)).await.0, 200);
    let (head_and_claims, _) = token.rsplit_once('.').unwrap();
    let forged = format!("usher_entry={head_and_claims}.{}", "A".repeat(86));
    assert_eq!(checkout_with(&nginx, Some(&forged)).await, to_queue);

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
        (checkout_with(&nginx, Some(&cookie)).await == to_queue).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "the next visitor admitted", || {
        let url = format!("{broker_base}{}", next.status_url);
        let client = client.clone();
        async move { (get_json(&client, &url).await["state"] == "admitted").then_some(()) }
    })
    .await;
    let _ = std::fs::remove_file(&key_file);

    // A return URL off the allow-list is refused through the prefix too.
    let evil = format!(
        "{}/queue/v1/rooms/{ROOM}/sessions/{}/enter?token={}&return=https://evil.example/",
        nginx.base, holder.session_id, holder.session_token
    );
    let refused = no_redirects().get(evil).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "return_not_allowed");
}
