//! Ways past the general line: invite codes for the priority lane (kept
//! hashed in the store, each good for one place) and staff passes (entry
//! tokens minted for the shop's own people, which the gate lets through
//! without a place in line). Both are managed by the shop's server with
//! the room's checkout key:
//!
//! - `POST /v1/rooms/{room}/checkout/invites` `{"codes": ["..."]}` adds codes;
//! - `POST /v1/rooms/{room}/checkout/staff-pass` `{"name": "...", "for": "8h"}`
//!   answers `{entryToken, expiresAt}`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{Router, post};
use serde::Deserialize;

use super::Broker;
use super::api::ServedRoom;
use super::error::ApiError;
use crate::auth::random_id;
use crate::clock::{now_ms, rfc3339};
use crate::digest::sha256_hex;
use crate::queue::{Lane, Store};

/// Invite codes are 4 to 128 printable characters.
const CODE_LENGTHS: std::ops::RangeInclusive<usize> = 4..=128;
/// The most codes one call adds.
const MAX_CODES_PER_CALL: usize = 10_000;
/// The longest a staff pass lives.
const MAX_STAFF_PASS: Duration = Duration::from_secs(24 * 3600);

/// The hash an invite code is kept under, or `None` when `code` cannot be
/// one. Surrounding blanks do not count; the room is part of the hash, so
/// a code of one room is nothing in another.
pub fn invite_hash(room: &str, code: &str) -> Option<String> {
    let code = code.trim();
    let printable = code.chars().all(|c| !c.is_control());
    (CODE_LENGTHS.contains(&code.chars().count()) && printable)
        .then(|| sha256_hex(format!("usher-invite:{room}:{code}")))
}

/// The lane a join asks for (the priority lane with an invite code, or for
/// a platform user with the lane's claim), and the hash of the code it
/// redeems; a malformed code is refused before anything is spent.
pub(super) fn requested_lane(
    room: &str,
    invite: Option<&str>,
    eligible: bool,
) -> Result<(Lane, Option<String>), ApiError> {
    match invite {
        Some(code) => {
            let hash = invite_hash(room, code).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_invite",
                    "an invite code is 4 to 128 printable characters",
                )
            })?;
            Ok((Lane::Priority, Some(hash)))
        }
        None if eligible => Ok((Lane::Priority, None)),
        None => Ok((Lane::General, None)),
    }
}

/// The hashes of the codes in a list (one per line; blank lines and lines
/// starting with `#` are skipped), or the line number of one that is not a
/// code.
pub fn invite_hashes(room: &str, list: &str) -> Result<Vec<String>, usize> {
    list.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|(i, line)| invite_hash(room, line).ok_or(i + 1))
        .collect()
}

/// How often the invite-code file is read again: a Secret mounted in a
/// pod changes in place, and new codes should work without a restart.
const INVITES_RELOAD: Duration = Duration::from_secs(5);

/// The hashes of the invite codes listed in the file at `path`.
pub fn read_invites(room: &str, path: &str) -> anyhow::Result<Vec<String>> {
    let list = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the invite codes {path}: {e}"))?;
    invite_hashes(room, &list).map_err(|line| {
        anyhow::anyhow!("{path}:{line}: an invite code is 4 to 128 printable characters")
    })
}

/// Makes the codes good in the store, retrying until it takes them (codes
/// redeemed before stay spent).
async fn store_invites(store: &dyn Store, hashes: &[String]) {
    loop {
        match store.add_invites(hashes).await {
            Ok(added) => {
                tracing::info!(codes = hashes.len(), added, "invite codes loaded");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the invite codes yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Loads `codes` (read from `path` at start) into the store, then follows
/// the file: whenever it changes, its codes are loaded again. A file that
/// cannot be read or holds a bad line is logged and skipped until fixed.
pub async fn follow_invites(store: Arc<dyn Store>, room: String, path: String, codes: Vec<String>) {
    let mut loaded = codes;
    store_invites(store.as_ref(), &loaded).await;
    loop {
        tokio::time::sleep(INVITES_RELOAD).await;
        match read_invites(&room, &path) {
            Ok(codes) if codes != loaded => {
                store_invites(store.as_ref(), &codes).await;
                loaded = codes;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "keeping the invite codes loaded before"),
        }
    }
}

fn invalid_body(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvitesBody {
    codes: Vec<String>,
}

async fn add_invites(
    State(broker): State<Arc<Broker>>,
    ServedRoom(room): ServedRoom,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let InvitesBody { codes } = broker.shop_call(&headers, &body)?;
    if codes.len() > MAX_CODES_PER_CALL {
        return Err(invalid_body(format!(
            "at most {MAX_CODES_PER_CALL} codes a call"
        )));
    }
    let hashes = codes
        .iter()
        .enumerate()
        .map(|(i, code)| {
            invite_hash(&room, code).ok_or_else(|| {
                invalid_body(format!(
                    "codes[{i}]: an invite code is 4 to 128 printable characters"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let added = broker.store.add_invites(&hashes).await?;
    Ok(Json(serde_json::json!({"received": hashes.len(), "added": added})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaffPassBody {
    /// Who the pass is for, as the shop will see it (`x-usher-user`).
    name: String,
    /// How long it lives, e.g. `8h`; at most 24h.
    #[serde(rename = "for")]
    valid_for: String,
}

async fn staff_pass(
    State(broker): State<Arc<Broker>>,
    _: ServedRoom,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let StaffPassBody { name, valid_for } = broker.shop_call(&headers, &body)?;
    let name_ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if !name_ok {
        return Err(invalid_body(
            "name: 1 to 64 letters, digits, '-', '_', '.' or '@'",
        ));
    }
    let valid_for = humantime::parse_duration(&valid_for)
        .ok()
        .filter(|d| (Duration::from_secs(1)..=MAX_STAFF_PASS).contains(d))
        .ok_or_else(|| invalid_body("for: a duration from 1s to 24h, such as \"8h\""))?;
    let now = now_ms();
    let expires_at = now + valid_for.as_millis() as i64;
    let sid = format!("staff-{}", random_id());
    let token = broker
        .staff_pass(&sid, &format!("staff:{name}"), now, expires_at)
        .map_err(|e| {
            tracing::error!(error = %e, "cannot sign a staff pass");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot sign a staff pass",
            )
        })?;
    tracing::info!(name, sid, "a staff pass was issued");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "entryToken": token,
            "expiresAt": rfc3339(expires_at),
            "sessionId": sid,
        })),
    )
        .into_response())
}

pub(super) fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/rooms/{room}/checkout/invites", post(add_invites))
        .route("/v1/rooms/{room}/checkout/staff-pass", post(staff_pass))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn codes_hash_per_room_and_bad_ones_are_named() {
        let a = invite_hash("concert", " FAN-1234 ").unwrap();
        assert_eq!(a, invite_hash("concert", "FAN-1234").unwrap());
        assert_ne!(a, invite_hash("encore", "FAN-1234").unwrap());
        assert_eq!(a.len(), 64);
        assert_eq!(invite_hash("concert", "abc"), None);
        assert_eq!(invite_hash("concert", "bad\u{7}code"), None);
        let list = "# presale\nFAN-1\n\n  FAN-2  \n";
        assert_eq!(invite_hashes("concert", list).unwrap().len(), 2);
        assert_eq!(invite_hashes("concert", "FAN-1\nx\n"), Err(2));
    }
}
