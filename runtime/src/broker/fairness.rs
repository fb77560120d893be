//! A Random room's shuffle, published so that anyone can check it (see
//! `queue/fairness.rs`): the room's stats carry the commitment to its seed
//! before the opening and the seed and salt after it, and
//! `GET /v1/rooms/{room}/fairness/joins` pages through the join list.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Broker;
use super::api::{ServedRoom, query_params};
use super::error::ApiError;
use crate::clock::rfc3339;
use crate::queue::{ALGORITHM, Fairness, join_number};

/// The most join-list entries one answer carries.
const MAX_JOINS_PAGE: u64 = 10_000;

/// The `fairness` member of the room's stats: `null` for a room without a
/// sealed seed (not Random); `seed`, `salt`, `shuffledAt` and `joins` are
/// `null` until the shuffle.
pub(super) fn stats(fairness: Option<&Fairness>) -> Value {
    let Some(fairness) = fairness else {
        return Value::Null;
    };
    let revealed = fairness.revealed.as_ref();
    json!({
        "algorithm": ALGORITHM,
        "commitment": fairness.commitment,
        "seed": revealed.map(|r| r.seed.to_string()),
        "salt": revealed.map(|r| r.salt.as_str()),
        "shuffledAt": revealed.map(|r| rfc3339(r.shuffled_at)),
        "joins": revealed.map(|r| r.joins()),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    offset: u64,
    #[serde(default = "full_page")]
    limit: u64,
}

fn full_page() -> u64 {
    MAX_JOINS_PAGE
}

/// `GET /v1/rooms/{room}/fairness/joins?offset=0&limit=10000`: entries of
/// the join list from `offset`, with the seed, salt and commitment, once
/// the room shuffled. The list holds the pre-queue's tickets (as visitors
/// see them in the join answer) in join order: the general lane's
/// `lanes.general` entries, then the priority lane's `lanes.priority`.
pub(super) async fn joins(
    State(broker): State<Arc<Broker>>,
    _: ServedRoom,
    uri: Uri,
) -> Result<Response, ApiError> {
    let page: Page = query_params(&uri)?;
    if !(1..=MAX_JOINS_PAGE).contains(&page.limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit is from 1 to {MAX_JOINS_PAGE}"),
        ));
    }
    let fairness = broker.store.fairness().await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_shuffle",
            "this room does not shuffle its pre-queue (its queueing is not Random)",
        )
    })?;
    let revealed = fairness.revealed.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "not_shuffled",
            "the pre-queue is shuffled when the room opens; its join list is published then",
        )
    })?;
    let tickets: Vec<u64> = if page.offset < revealed.joins() {
        let entries = broker.store.joins(page.offset, page.limit).await?;
        entries.into_iter().map(join_number).collect()
    } else {
        Vec::new()
    };
    // The join list never changes once published.
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(json!({
            "algorithm": ALGORITHM,
            "commitment": fairness.commitment,
            "seed": revealed.seed.to_string(),
            "salt": revealed.salt,
            "total": revealed.joins(),
            "lanes": {"general": revealed.general, "priority": revealed.priority},
            "offset": page.offset,
            "tickets": tickets,
        })),
    )
        .into_response())
}
