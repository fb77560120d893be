//! One place per person, not per cookie: the per-address limits hold across
//! brokers, a script that drops its cookies gets no more than its address's
//! share, and real visitors from other addresses are not touched. Real
//! `usher` processes on a real `redis-server`; visitors connect from their
//! own loopback addresses (127.0.0.2 and up).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use common::*;
use futures_util::StreamExt;
use reqwest::StatusCode;

/// A client whose connections come from `address`, without a cookie store:
/// every join is a new anonymous visitor.
fn client_from(address: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(address))
        .build()
        .unwrap()
}

fn join_url(base: &str) -> String {
    format!("{base}/v1/rooms/{ROOM}/queue")
}

/// The tickets of the room's admissions, in the order the store made them,
/// read from its change stream.
async fn admitted_tickets(room: &Room) -> Vec<u64> {
    let mut redis = room.redis().await;
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("usher:{{{ROOM}}}:events"))
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    entries
        .ids
        .iter()
        .filter(|entry| entry.get::<String>("k").as_deref() == Some("a"))
        .map(|entry| entry.get::<String>("t").unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bot_holds_at_most_its_share_and_real_visitors_all_get_in_in_order() {
    const BOT_JOINS: u64 = 20_000;
    const VISITORS: u64 = 500;
    const CAP: u64 = 20;
    let room = Room::new(&[
        ("USHER_SESSIONS_PER_ADDRESS", "20"),
        ("USHER_JOINS_PER_ADDRESS", "30"),
        ("USHER_CAPACITY", "1000"),
        ("USHER_ADMISSION_RATE", "6000"),
    ]);
    // Two brokers: the limits hold across both.
    let (_a, first) = room.broker(&[]).await;
    let (_b, second) = room.broker(&[]).await;

    // The bot, from 127.0.0.1, drops its cookies on every join; at the
    // same time 500 visitors join from 127.0.0.2-127.0.0.200.
    let bot = client_from(Ipv4Addr::LOCALHOST);
    let (bot_places, bot_refusals) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let bot_run = {
        let (bot_places, bot_refusals) = (Arc::clone(&bot_places), Arc::clone(&bot_refusals));
        let urls = [join_url(&first), join_url(&second)];
        futures_util::stream::iter(0..BOT_JOINS).for_each_concurrent(64, move |i| {
            let (bot, url) = (bot.clone(), urls[i as usize % 2].clone());
            let (bot_places, bot_refusals) = (Arc::clone(&bot_places), Arc::clone(&bot_refusals));
            async move {
                let response = bot.post(url).send().await.unwrap();
                match response.status() {
                    StatusCode::CREATED => {
                        bot_places.fetch_add(1, Relaxed);
                    }
                    StatusCode::TOO_MANY_REQUESTS => {
                        let wait: u64 = response.headers()["retry-after"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        assert!((1..=60).contains(&wait), "Retry-After {wait}");
                        let (_, code) = error_of(response).await;
                        assert!(code == "too_many_sessions" || code == "too_many_joins");
                        bot_refusals.fetch_add(1, Relaxed);
                    }
                    other => panic!("the bot got {other}"),
                }
            }
        })
    };
    let visitors_run = futures_util::stream::iter(0..VISITORS)
        .map(|i| {
            let address = Ipv4Addr::new(127, 0, 0, 2 + (i % 199) as u8);
            let base = if i % 2 == 0 { &first } else { &second };
            let url = join_url(base);
            async move {
                let response = client_from(address).post(url).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::CREATED, "visitor {i}");
                let joined: Joined = response.json().await.unwrap();
                joined.ticket
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<u64>>();
    let ((), mut visitor_tickets) = tokio::join!(bot_run, visitors_run);

    let places = bot_places.load(Relaxed);
    assert!((1..=CAP).contains(&places), "the bot holds {places} places");
    assert_eq!(places + bot_refusals.load(Relaxed), BOT_JOINS);
    let stats = room_stats(&first).await;
    assert_eq!(stats["waiting"], places + VISITORS, "{stats}");

    // Admissions start: everyone is admitted, in ticket order.
    let _dispatcher = room.dispatcher(&[]).await;
    wait_active(&first, places + VISITORS).await;
    let admitted = admitted_tickets(&room).await;
    assert_eq!(admitted.len() as u64, places + VISITORS);
    assert!(
        admitted.windows(2).all(|pair| pair[0] < pair[1]),
        "admitted out of ticket order"
    );
    visitor_tickets.sort_unstable();
    assert!(
        visitor_tickets
            .iter()
            .all(|t| admitted.binary_search(t).is_ok()),
        "a visitor was not admitted"
    );
}

#[tokio::test]
async fn the_join_rate_of_an_address_is_limited_and_says_when_to_come_back() {
    let room = Room::new(&[
        ("USHER_JOINS_PER_ADDRESS", "5"),
        ("USHER_SESSIONS_PER_ADDRESS", "0"),
    ]);
    let (_broker, base) = room.broker(&[]).await;
    let client = client_from(Ipv4Addr::new(127, 0, 0, 9));
    for _ in 0..5 {
        let response = client.post(join_url(&base)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let refused = client.post(join_url(&base)).send().await.unwrap();
    assert_eq!(refused.headers()["retry-after"], "12");
    assert_eq!(
        error_of(refused).await,
        (StatusCode::TOO_MANY_REQUESTS, "too_many_joins".to_owned())
    );
    assert_eq!(room_stats(&base).await["waiting"], 5);
    // Another address is not limited by this one.
    let other = client_from(Ipv4Addr::new(127, 0, 0, 10));
    let response = other.post(join_url(&base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn forwarding_headers_count_only_from_trusted_proxies_and_must_be_well_formed() {
    let room = Room::new(&[
        ("USHER_SESSIONS_PER_ADDRESS", "1"),
        ("USHER_JOINS_PER_ADDRESS", "0"),
    ]);
    // 127.0.0.5 is the shop's ingress; nobody else is trusted.
    let (_broker, base) = room
        .broker(&[("USHER_TRUSTED_PROXIES", "127.0.0.5/32")])
        .await;
    let proxy = client_from(Ipv4Addr::new(127, 0, 0, 5));
    let through_proxy = |visitor: &'static str| {
        proxy
            .post(join_url(&base))
            .header("x-forwarded-for", format!("6.6.6.6, {visitor}"))
            .send()
    };
    // Behind the proxy, each visitor counts on their own; the forged
    // leftmost entry does not matter.
    assert_eq!(through_proxy("198.51.100.1").await.unwrap().status(), 201);
    assert_eq!(through_proxy("198.51.100.2").await.unwrap().status(), 201);
    let second = through_proxy("198.51.100.1").await.unwrap();
    assert_eq!(
        error_of(second).await,
        (
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_sessions".to_owned()
        )
    );
    // An untrusted peer's claims are ignored: it counts as itself.
    let untrusted = client_from(Ipv4Addr::new(127, 0, 0, 6));
    let claim = |visitor: &'static str| {
        untrusted
            .post(join_url(&base))
            .header("x-forwarded-for", visitor)
            .send()
    };
    assert_eq!(claim("198.51.100.3").await.unwrap().status(), 201);
    let refused = claim("198.51.100.4").await.unwrap();
    assert_eq!(error_of(refused).await.1, "too_many_sessions");

    // A malformed header is refused, whoever sends it, and changes nothing.
    let waiting = room_stats(&base).await["waiting"].clone();
    for (client, value) in [(&untrusted, "banana"), (&proxy, "1.2.3.4,,5.6.7.8")] {
        let response = client
            .post(join_url(&base))
            .header("x-forwarded-for", value)
            .send()
            .await
            .unwrap();
        assert!(response.headers().get("set-cookie").is_none());
        assert_eq!(
            error_of(response).await,
            (
                StatusCode::BAD_REQUEST,
                "invalid_forwarded_header".to_owned()
            )
        );
    }
    assert_eq!(room_stats(&base).await["waiting"], waiting);
}
