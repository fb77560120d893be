//! Provable fairness of a Random room, against a real broker, a real
//! dispatcher and a real Redis: the commitment published before the
//! opening matches the seed published after it, and the order recomputed
//! from the seed and the join list is the order visitors are admitted in.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use usher_runtime::clock::{now_ms, rfc3339};

const VISITORS: usize = 12;

/// The order a seed gives the join list, written out from the published
/// description (Park–Miller, then Fisher–Yates from the end), not with the
/// crate's own shuffle.
fn recompute(joins: &[u64], seed: u64) -> Vec<u64> {
    let mut order = joins.to_vec();
    let mut x = seed;
    for i in (1..order.len()).rev() {
        x = x * 48_271 % 2_147_483_647;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The whole join list, read in pages of `page`, split into its lanes'
/// parts: the general lane's, then the priority lane's.
async fn join_list(base: &str, page: usize) -> [Vec<u64>; 2] {
    let client = reqwest::Client::new();
    let mut tickets = Vec::new();
    loop {
        let url = format!(
            "{base}/v1/rooms/{ROOM}/fairness/joins?offset={}&limit={page}",
            tickets.len()
        );
        let body = get_json(&client, &url).await;
        let entries: Vec<u64> = serde_json::from_value(body["tickets"].clone()).unwrap();
        if entries.is_empty() {
            assert_eq!(body["total"], tickets.len());
            let general = body["lanes"]["general"].as_u64().unwrap() as usize;
            assert_eq!(body["lanes"]["priority"], tickets.len() - general);
            let priority = tickets.split_off(general);
            return [tickets, priority];
        }
        tickets.extend(entries);
    }
}

/// Waits until exactly one of `waiting` is admitted, and returns it.
async fn next_admitted(base: &str, waiting: &[Joined]) -> Joined {
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(10), "the next admission", || {
        let client = client.clone();
        async move {
            let mut admitted = Vec::new();
            for visitor in waiting {
                let url = format!("{base}{}", visitor.status_url);
                if get_json(&client, &url).await["state"] == "admitted" {
                    admitted.push(visitor.clone());
                }
            }
            assert!(admitted.len() <= 1, "capacity 1 admitted {admitted:?}");
            admitted.pop()
        }
    })
    .await
}

#[tokio::test]
async fn the_published_seed_reproduces_the_admission_order() {
    let opens_at = rfc3339(now_ms() + 6_000);
    let room = Room::new(&[
        ("USHER_QUEUEING", "Random"),
        ("USHER_OPENS_AT", opens_at.as_str()),
        ("USHER_CAPACITY", "1"),
        ("USHER_DISPATCH_TICK", "50ms"),
    ]);
    let (_broker, base) = room.broker(&[]).await;
    let _dispatcher = room.dispatcher(&[]).await;

    // Before the opening: a commitment, nothing to recompute from yet.
    let sealed = eventually(Duration::from_secs(5), "a commitment", || async {
        let stats = room_stats(&base).await;
        stats["fairness"]["commitment"].is_string().then_some(stats)
    })
    .await;
    assert_eq!(sealed["phase"], "Scheduled");
    let fairness = &sealed["fairness"];
    assert_eq!(fairness["algorithm"], "park-miller-fisher-yates-v1");
    for hidden in ["seed", "salt", "shuffledAt", "joins"] {
        assert_eq!(fairness[hidden], Value::Null, "{hidden} before the shuffle");
    }
    let commitment = fairness["commitment"].as_str().unwrap().to_owned();
    let early = reqwest::get(format!("{base}/v1/rooms/{ROOM}/fairness/joins"))
        .await
        .unwrap();
    assert_eq!(error_of(early).await.1, "not_shuffled");

    let mut visitors = Vec::new();
    for _ in 0..VISITORS {
        visitors.push(join(&reqwest::Client::new(), &base).await);
    }
    assert_eq!(room_stats(&base).await["phase"], "Scheduled", "joined late");

    // After the opening: the seed and salt that open the commitment.
    let opened = eventually(Duration::from_secs(15), "the seed", || async {
        let stats = room_stats(&base).await;
        stats["fairness"]["seed"].is_string().then_some(stats)
    })
    .await;
    let fairness = &opened["fairness"];
    assert_eq!(fairness["commitment"], commitment.as_str());
    let seed = fairness["seed"].as_str().unwrap();
    let salt = fairness["salt"].as_str().unwrap();
    assert_eq!(salt.len(), 32);
    assert_eq!(
        sha256_hex(&format!("usher-shuffle-v1:{seed}:{salt}")),
        commitment
    );
    assert_eq!(fairness["joins"], VISITORS);

    // The join list is every visitor's ticket from the join answer, in
    // join order (all in the general lane here); the seed deals each
    // lane's part out again.
    let [joins, priority] = join_list(&base, 5).await;
    let mut tickets: Vec<u64> = visitors.iter().map(|v| v.ticket).collect();
    tickets.sort_unstable();
    assert_eq!((&joins, priority.len()), (&tickets, 0));
    let expected = recompute(&joins, seed.parse().unwrap());

    // One slot: each admitted visitor completes, and the next comes in.
    let client = reqwest::Client::new();
    let mut admitted = Vec::new();
    while !visitors.is_empty() {
        let next = next_admitted(&base, &visitors).await;
        complete(&client, &base, &next).await;
        visitors.retain(|v| v.session_id != next.session_id);
        admitted.push(next.ticket);
    }
    assert_eq!(admitted, expected, "admitted by original ticket");
    assert_ne!(admitted, joins, "the shuffle left the line as it was");
}
