//! The checkout's API, server to server: the shop completes a session (the
//! slot frees at once), revokes it (the visitor's stream gets `closed:
//! revoked`), or extends it (a buyer still paying keeps the slot, up to the
//! room's `maxSessionDuration`). Every call carries the room's checkout key as a Bearer token;
//! a broker started without one answers `404 checkout_disabled`.
//!
//! The body names the session by its entry token or by its id (`jti`). An
//! entry token is checked for the room's signature, `aud` and `iss`, but not
//! for its times: the token only names the session, the checkout key is
//! what authorizes the call, and the session's state in the store decides
//! the answer. A shop that completes just after the token expired thus
//! learns the truth (`409 not_active`, the session expired) rather than a
//! refusal of the token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::Broker;
use super::api::{ServedRoom, declares_json, header_text, valid_session_id};
use super::error::ApiError;
use crate::clock::now_ms;
use crate::config::parse_session_duration;
use crate::queue::{CloseReason, Millis};
use crate::tokens::{EntryTokenVerifier, TokenTimes};

/// The shortest checkout key accepted: 32 bytes, 256 bits when random.
pub const MIN_CHECKOUT_KEY_LEN: usize = 32;
/// What the key's HMAC tag is computed over (see [`CheckoutKey`]).
const TAG_MESSAGE: &[u8] = b"usher/checkout-key";

/// The room's checkout credential. Only an HMAC tag of the secret is kept:
/// a presented key is checked by computing its own tag and comparing the
/// two in constant time, so neither the secret's content nor its length
/// shows in the time an answer takes.
#[derive(Clone)]
pub struct CheckoutKey {
    tag: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckoutKeyError {
    #[error("cannot read the checkout key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the checkout key in {path} is {len} bytes; it must be at least {MIN_CHECKOUT_KEY_LEN} \
         (for example `openssl rand -hex 32`)"
    )]
    TooShort { path: String, len: usize },
    #[error(
        "the checkout key in {path} must be printable ASCII without spaces, \
         to travel in an Authorization header"
    )]
    NotPrintable { path: String },
}

impl CheckoutKey {
    /// Reads the secret from `path`. Whitespace around it (a file's final
    /// newline) is not part of it.
    pub fn from_file(path: &str) -> Result<Self, CheckoutKeyError> {
        let bytes = std::fs::read(path).map_err(|source| CheckoutKeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let secret = bytes.trim_ascii();
        if !secret.iter().all(u8::is_ascii_graphic) {
            return Err(CheckoutKeyError::NotPrintable {
                path: path.to_owned(),
            });
        }
        if secret.len() < MIN_CHECKOUT_KEY_LEN {
            return Err(CheckoutKeyError::TooShort {
                path: path.to_owned(),
                len: secret.len(),
            });
        }
        Ok(CheckoutKey { tag: tag(secret) })
    }

    /// Checks the `Authorization: Bearer` key of a request.
    fn check(&self, headers: &HeaderMap) -> Result<(), CheckoutError> {
        let presented = crate::auth::bearer(header_text(headers, header::AUTHORIZATION))
            .filter(|key| !key.is_empty())
            .ok_or(CheckoutError::MissingKey)?;
        mac(presented.as_bytes())
            .verify_slice(&self.tag)
            .map_err(|_| CheckoutError::InvalidKey)
    }
}

impl std::fmt::Debug for CheckoutKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckoutKey(..)")
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|e| unreachable!("HMAC takes keys of any length: {e}"));
    mac.update(TAG_MESSAGE);
    mac
}

fn tag(key: &[u8]) -> Vec<u8> {
    mac(key).finalize().into_bytes().to_vec()
}

/// Why a checkout call is refused before it reaches the store.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum CheckoutError {
    #[error("this broker has no checkout key (USHER_CHECKOUT_KEY): the checkout API is off")]
    Disabled,
    #[error("the checkout key is required: Authorization: Bearer <key>")]
    MissingKey,
    #[error("the checkout key is not this room's")]
    InvalidKey,
    #[error("the body must be a JSON object sent with Content-Type: application/json")]
    NotJson,
    #[error("{0}")]
    InvalidBody(String),
    #[error("session ids are up to 64 URL-safe characters")]
    InvalidSessionId,
    #[error("the entry token is not valid for this room: {0}")]
    InvalidEntryToken(String),
}

impl From<CheckoutError> for ApiError {
    fn from(e: CheckoutError) -> Self {
        let (status, code) = match e {
            CheckoutError::Disabled => (StatusCode::NOT_FOUND, "checkout_disabled"),
            CheckoutError::MissingKey => (StatusCode::UNAUTHORIZED, "missing_checkout_key"),
            CheckoutError::InvalidKey => (StatusCode::UNAUTHORIZED, "invalid_checkout_key"),
            CheckoutError::NotJson => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            CheckoutError::InvalidBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            CheckoutError::InvalidSessionId => (StatusCode::BAD_REQUEST, "invalid_session_id"),
            CheckoutError::InvalidEntryToken(_) => (StatusCode::BAD_REQUEST, "invalid_entry_token"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// The session a call names.
#[derive(Debug, PartialEq, Eq)]
enum Named {
    EntryToken(String),
    Jti(String),
}

/// What a call asks, once its body is read.
#[derive(Debug, PartialEq, Eq)]
enum Call {
    End(CloseReason),
    /// Keep the slot at least this long from now.
    Extend(Millis),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Body {
    entry_token: Option<String>,
    jti: Option<String>,
    /// Extensions only: how long from now the session keeps its slot.
    #[serde(rename = "for")]
    extend_for: Option<String>,
}

/// A call's body: a JSON object, sent as JSON, read as `T`.
fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, CheckoutError> {
    if declares_json(headers) != Some(true) {
        return Err(CheckoutError::NotJson);
    }
    serde_json::from_slice(body)
        .map_err(|e| CheckoutError::InvalidBody(format!("the body is not a valid call: {e}")))
}

/// Reads a call's body: a JSON object, sent as JSON, with exactly one of
/// `entryToken` and `jti`, and `for` (a duration) when it extends. `call`
/// is the route's call; an extension's length comes from the body.
fn parse_body(
    headers: &HeaderMap,
    body: &[u8],
    call: Option<CloseReason>,
) -> Result<(Named, Call), CheckoutError> {
    let body: Body = json_body(headers, body)?;
    let call = match (call, body.extend_for) {
        (Some(reason), None) => Call::End(reason),
        (None, Some(text)) => Call::Extend(
            parse_session_duration(&text)
                .map_err(|e| CheckoutError::InvalidBody(format!("for: {e}")))?
                .as_millis() as Millis,
        ),
        (Some(_), Some(_)) => {
            return Err(CheckoutError::InvalidBody(
                "only an extension takes `for`".into(),
            ));
        }
        (None, None) => {
            return Err(CheckoutError::InvalidBody(
                "an extension says for how long from now: `for`, such as \"10m\"".into(),
            ));
        }
    };
    let named = match (body.entry_token, body.jti) {
        (Some(token), None) => Named::EntryToken(token),
        (None, Some(jti)) if valid_session_id(&jti) => Named::Jti(jti),
        (None, Some(_)) => return Err(CheckoutError::InvalidSessionId),
        _ => {
            return Err(CheckoutError::InvalidBody(
                "name the session by exactly one of entryToken and jti".into(),
            ));
        }
    };
    Ok((named, call))
}

impl Broker {
    /// Checks that a call of the shop's server carries the room's checkout key.
    fn check_checkout_key(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let key = self
            .settings
            .checkout_key
            .as_ref()
            .ok_or(CheckoutError::Disabled)?;
        Ok(key.check(headers)?)
    }

    /// The body of a call of the shop's server (see [`json_body`]), once
    /// the call's checkout key is checked.
    pub(super) fn shop_call<T: serde::de::DeserializeOwned>(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<T, ApiError> {
        self.check_checkout_key(headers)?;
        Ok(json_body(headers, body)?)
    }
}

/// The checkout routes, for the broker's router.
pub(super) fn routes(broker: &Broker) -> Router<Arc<Broker>> {
    // The token only names the session: its times do not matter here.
    let names = Arc::new(broker.signer.verifier(
        &broker.room,
        &broker.settings.issuer,
        TokenTimes::Ignored,
    ));
    // `None`: an extension.
    let call = |ending: Option<CloseReason>| -> MethodRouter<Arc<Broker>> {
        let names = Arc::clone(&names);
        post(
            move |State(broker): State<Arc<Broker>>,
                  _: ServedRoom,
                  headers: HeaderMap,
                  body: Bytes| async move {
                checkout_call(&broker, &names, &headers, &body, ending).await
            },
        )
    };
    Router::new()
        .route(
            "/v1/rooms/{room}/checkout/complete",
            call(Some(CloseReason::Completed)),
        )
        .route(
            "/v1/rooms/{room}/checkout/revoke",
            call(Some(CloseReason::Revoked)),
        )
        .route("/v1/rooms/{room}/checkout/extend", call(None))
}

/// Completes, revokes or extends the session a call names, once the call
/// is authorized and well formed; anything refused before the store
/// changes nothing.
async fn checkout_call(
    broker: &Broker,
    names: &EntryTokenVerifier,
    headers: &HeaderMap,
    body: &[u8],
    ending: Option<CloseReason>,
) -> Result<Response, ApiError> {
    broker.check_checkout_key(headers)?;
    let (named, call) = parse_body(headers, body, ending)?;
    let sid = match named {
        Named::EntryToken(token) => {
            names
                .verify(&token)
                .map_err(CheckoutError::InvalidEntryToken)?
                .sid
        }
        Named::Jti(sid) => sid,
    };
    let view = match call {
        Call::End(CloseReason::Revoked) => broker.store.revoke(&sid, now_ms()).await?,
        Call::End(_) => broker.store.complete(&sid, now_ms()).await?,
        Call::Extend(for_ms) => broker.store.extend(&sid, for_ms, now_ms()).await?,
    };
    tracing::info!(sid, ?call, "a checkout call");
    Ok(Json(broker.session_body(&view, None)).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    /// A file removed when dropped.
    struct KeyFile(std::path::PathBuf);

    impl Drop for KeyFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn key_file(content: &[u8]) -> (KeyFile, String) {
        let path = std::env::temp_dir().join(format!(
            "usher-checkout-key-{}-{}",
            std::process::id(),
            crate::auth::random_id()
        ));
        std::fs::write(&path, content).unwrap();
        let text = path.display().to_string();
        (KeyFile(path), text)
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.clone(), HeaderValue::from_str(value).unwrap()))
            .collect()
    }

    fn bearer(key: &str) -> HeaderMap {
        headers(&[(header::AUTHORIZATION, &format!("Bearer {key}"))])
    }

    #[test]
    fn the_key_file_must_hold_a_long_printable_secret() {
        let (_file, path) = key_file(format!("{SECRET}\n").as_bytes());
        let key = CheckoutKey::from_file(&path).unwrap();
        assert_eq!(key.check(&bearer(SECRET)), Ok(()));
        assert_eq!(format!("{key:?}"), "CheckoutKey(..)");
        let (_short, path) = key_file(&SECRET.as_bytes()[..31]);
        assert!(matches!(
            CheckoutKey::from_file(&path),
            Err(CheckoutKeyError::TooShort { len: 31, .. })
        ));
        let (_spaced, path) = key_file(format!("{SECRET} {SECRET}").as_bytes());
        assert!(matches!(
            CheckoutKey::from_file(&path),
            Err(CheckoutKeyError::NotPrintable { .. })
        ));
        assert!(matches!(
            CheckoutKey::from_file("/nonexistent/checkout-key"),
            Err(CheckoutKeyError::Read { .. })
        ));
    }

    #[test]
    fn requests_carry_the_key_as_a_bearer_token() {
        let (_file, path) = key_file(SECRET.as_bytes());
        let key = CheckoutKey::from_file(&path).unwrap();
        assert_eq!(
            key.check(&headers(&[(
                header::AUTHORIZATION,
                &format!("bearer  {SECRET} ")
            )])),
            Ok(())
        );
        for missing in [
            headers(&[]),
            bearer(""),
            headers(&[(header::AUTHORIZATION, &format!("Basic {SECRET}"))]),
        ] {
            assert_eq!(key.check(&missing), Err(CheckoutError::MissingKey));
        }
        let longer = format!("{SECRET}x");
        for wrong in [&SECRET[..31], &SECRET[1..], longer.as_str(), "x"] {
            assert_eq!(key.check(&bearer(wrong)), Err(CheckoutError::InvalidKey));
        }
    }

    fn json() -> HeaderMap {
        headers(&[(header::CONTENT_TYPE, "application/json; charset=utf-8")])
    }

    const COMPLETE: Option<CloseReason> = Some(CloseReason::Completed);

    /// The session a completion's body names.
    fn complete(headers: &HeaderMap, body: &[u8]) -> Result<Named, CheckoutError> {
        parse_body(headers, body, COMPLETE).map(|(named, call)| {
            assert_eq!(call, Call::End(CloseReason::Completed));
            named
        })
    }

    #[test]
    fn bodies_name_exactly_one_session() {
        assert_eq!(
            complete(&json(), br#"{"entryToken": "e.y.j"}"#),
            Ok(Named::EntryToken("e.y.j".into()))
        );
        assert_eq!(
            complete(&json(), br#"{"jti": "zT0UxT9LKaeWIKAzmuooOQ"}"#),
            Ok(Named::Jti("zT0UxT9LKaeWIKAzmuooOQ".into()))
        );
        for bad in [
            &br#"{"entryToken": "e.y.j", "jti": "abc"}"#[..],
            br#"{}"#,
            br#"{"jti": null}"#,
            br#"{"jti": "abc", "extra": 1}"#,
            br#"{"jti": 7}"#,
            br#"["abc"]"#,
            b"jti=abc",
            b"",
        ] {
            assert!(
                matches!(complete(&json(), bad), Err(CheckoutError::InvalidBody(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            complete(&json(), br#"{"jti": "no/slashes"}"#),
            Err(CheckoutError::InvalidSessionId)
        );
        for not_json in [
            headers(&[]),
            headers(&[(header::CONTENT_TYPE, "text/plain")]),
            headers(&[(header::CONTENT_TYPE, "application/x-www-form-urlencoded")]),
        ] {
            assert_eq!(
                complete(&not_json, br#"{"jti": "abc"}"#),
                Err(CheckoutError::NotJson)
            );
        }
    }

    #[test]
    fn only_extensions_say_for_how_long() {
        assert_eq!(
            parse_body(&json(), br#"{"jti": "abc", "for": "10m"}"#, None),
            Ok((Named::Jti("abc".into()), Call::Extend(600_000)))
        );
        for bad in [
            &br#"{"jti": "abc"}"#[..],
            br#"{"jti": "abc", "for": "soon"}"#,
            br#"{"jti": "abc", "for": "0s"}"#,
            br#"{"jti": "abc", "for": "169h"}"#,
            br#"{"jti": "abc", "for": 600}"#,
        ] {
            assert!(
                matches!(
                    parse_body(&json(), bad, None),
                    Err(CheckoutError::InvalidBody(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            parse_body(&json(), br#"{"jti": "abc", "for": "10m"}"#, COMPLETE),
            Err(CheckoutError::InvalidBody(_))
        ));
    }
}
