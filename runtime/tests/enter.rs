//! `GET /v1/rooms/{room}/sessions/{sid}/enter`: the hand-back to the shop,
//! against a real broker and dispatcher on a real `redis-server`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Joined, ROOM, Room, join, no_redirects, room_stats, wait_active};
use serde_json::Value;

/// `enter` for `session` with the raw query tail `rest`.
async fn enter(base: &str, session: &Joined, rest: &str) -> reqwest::Response {
    let url = format!(
        "{base}/v1/rooms/{ROOM}/sessions/{}/enter?token={}&{rest}",
        session.session_id, session.session_token
    );
    no_redirects()
        .get(url)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap()
}

async fn error_code(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn admitted_visitors_are_sent_back_with_the_entry_cookie_and_nobody_else() {
    let room = Room::new(&[
        ("USHER_CAPACITY", "1"),
        ("USHER_DISPATCH_TICK", "50ms"),
        (
            "USHER_RETURN_ORIGINS",
            "https://shop.example,http://127.0.0.1:9",
        ),
        ("USHER_COOKIE_DOMAIN", "shop.example"),
    ]);
    let (_broker, base) = room.broker(&[]).await;
    let _dispatcher = room.dispatcher(&[]).await;
    let client = reqwest::Client::new();
    let first = join(&client, &base).await;
    wait_active(&base, 1).await;
    let second = join(&reqwest::Client::new(), &base).await;
    let before = room_stats(&base).await;

    // A return URL off the list is refused first, whatever the session.
    for bad in [
        "return=https://evil.example/",
        "return=https://shop.example@evil.example/",
        "return=//evil.example/",
        "return=javascript:alert(1)",
        "return=%2F%09%2Fevil.example",
        "return=",
        "nothing=1",
    ] {
        let (status, body) = error_code(enter(&base, &first, bad).await).await;
        assert_eq!(
            (status, &body["code"]),
            (400, &"return_not_allowed".into()),
            "{bad}"
        );
        let no_token = no_redirects()
            .get(format!(
                "{base}/v1/rooms/{ROOM}/sessions/{}/enter?{bad}",
                first.session_id
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(no_token.status(), 400, "{bad} without a token");
    }

    // The admitted visitor goes back, to a path or a listed origin, with
    // the entry cookie and the binding cookie of its token.
    let mut jar = Vec::new();
    for (target, location) in [
        ("%2Fcheckout%3Fitem%3D7%26qty%3D2", "/checkout?item=7&qty=2"),
        ("https://shop.example/pay", "https://shop.example/pay"),
    ] {
        let response = enter(&base, &first, &format!("return={target}")).await;
        assert_eq!(response.status(), 303);
        assert_eq!(response.headers()["location"], location);
        let cookies: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(cookies.len(), 2, "{cookies:?}");
        jar.clear();
        for (cookie, name) in cookies.iter().zip(["usher_entry=ey", "usher_bind="]) {
            let attributes: Vec<&str> = cookie.split("; ").collect();
            assert!(attributes[0].starts_with(name), "{cookie}");
            jar.push(attributes[0].to_owned());
            for expected in [
                "Path=/",
                "HttpOnly",
                "SameSite=Lax",
                "Domain=shop.example",
                "Secure",
            ] {
                assert!(attributes.contains(&expected), "{expected} in {cookie}");
            }
            let max_age: i64 = attributes
                .iter()
                .find_map(|a| a.strip_prefix("Max-Age="))
                .unwrap()
                .parse()
                .unwrap();
            assert!((890..=900).contains(&max_age), "{cookie}");
        }
    }
    // The browser holding both cookies passes the gate; the entry cookie
    // alone, copied elsewhere, does not.
    let gate = |cookies: String| {
        reqwest::Client::new()
            .get(format!("{base}/v1/rooms/{ROOM}/gate"))
            .header("cookie", cookies)
            .send()
    };
    assert_eq!(gate(jar.join("; ")).await.unwrap().status(), 200);
    let (status, body) = error_code(gate(jar[0].clone()).await.unwrap()).await;
    assert_eq!((status, &body["code"]), (401, &"token_not_bound".into()));

    // Others are told why not.
    let (status, body) = error_code(enter(&base, &second, "return=/checkout").await).await;
    assert_eq!((status, &body["code"]), (409, &"not_active".into()));
    let mut wrong = second.clone();
    wrong.session_token = first.session_token.clone();
    let (status, _) = error_code(enter(&base, &wrong, "return=/checkout").await).await;
    assert_eq!(status, 403);

    // Nothing changed: the same line, the same slot.
    let after = room_stats(&base).await;
    assert_eq!(
        (&after["waiting"], &after["active"], &after["admittedTotal"]),
        (
            &before["waiting"],
            &before["active"],
            &before["admittedTotal"]
        )
    );

    // A session that ended says how.
    let leave = format!(
        "{base}/v1/rooms/{ROOM}/sessions/{}?token={}",
        first.session_id, first.session_token
    );
    assert_eq!(client.delete(leave).send().await.unwrap().status(), 200);
    let (status, body) = error_code(enter(&base, &first, "return=/checkout").await).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(
        (&body["code"], &body["reason"]),
        (&"session_closed".into(), &"left".into())
    );
}
