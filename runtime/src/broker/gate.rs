//! The gate at the shop's door: a forward-auth endpoint for the shop's
//! ingress (NGINX `auth_request`, ingress-nginx `auth-url`, Traefik
//! `forwardAuth`, Envoy `ext_authz`). It lets a request through when it
//! carries a valid entry token of this room whose session has not ended,
//! and names the visitor for the upstream. The check is local: a token is
//! verified by signature once and then remembered, and sessions that ended
//! (completed, revoked, expired, left) are known from the room's change
//! stream, so no request costs a Redis call.
//!
//! A token bound to a browser (its `cnf` claim, see `auth/binding.rs`)
//! passes only with that browser's `usher_bind` cookie, or the secret in
//! an `Usher-Binding` header from an API client: a copied token is refused
//! as `token_not_bound`. A broker with binding off checks no binding.
//!
//! With a claim window, the first pass of a session on this broker also
//! claims the session in the store (one script call), so that it does not
//! end as `unclaimed`; later passes cost nothing. A claim the store says
//! came too late refuses the visitor. A claim the store cannot take (it is
//! unreachable) lets the visitor through, since the token is valid; the
//! next pass tries again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::Broker;
use super::api::ServedRoom;
use super::error::ApiError;
use super::redirect;
use crate::auth;
use crate::auth::binding::{self, BINDING_COOKIE, BINDING_HEADER};
use crate::clock::{now_ms, rfc3339};
use crate::queue::{ClaimOutcome, QueueError, SessionState};
use crate::tokens::{EntryClaims, EntryTokenVerifier};

/// The cookie, on the shop's host, that carries the entry token.
pub const ENTRY_COOKIE: &str = "usher_entry";
/// Headers that name the visitor to the shop.
const USER_HEADER: HeaderName = HeaderName::from_static("x-usher-user");
const SESSION_HEADER: HeaderName = HeaderName::from_static("x-usher-session");
const EXPIRES_HEADER: HeaderName = HeaderName::from_static("x-usher-expires-at");
/// Where an API client presents the binding secret of its entry token.
const BINDING: HeaderName = HeaderName::from_static(BINDING_HEADER);
/// The most verified tokens (and claimed sessions) remembered; past it the
/// memory starts over.
const MAX_REMEMBERED: usize = 100_000;

/// Verifies entry tokens, remembering those it verified.
pub struct Gate {
    verifier: EntryTokenVerifier,
    verified: Mutex<HashMap<String, Arc<EntryClaims>>>,
    /// Sessions this broker has claimed in the store (or found it had lost).
    claimed: Mutex<HashSet<String>>,
}

fn refused(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

fn session_ended() -> ApiError {
    refused("session_ended", "the session of this entry token has ended")
}

impl Gate {
    pub fn new(verifier: EntryTokenVerifier) -> Self {
        Gate {
            verifier,
            verified: Mutex::default(),
            claimed: Mutex::default(),
        }
    }

    fn is_claimed(&self, sid: &str) -> bool {
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(sid)
    }

    fn remember_claimed(&self, sid: &str) {
        let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        if claimed.len() >= MAX_REMEMBERED {
            claimed.clear();
        }
        claimed.insert(sid.to_owned());
    }

    /// The claims of a token whose signature, room and issuer are good.
    /// Times are checked by the caller on every use.
    fn claims(&self, token: &str) -> Result<Arc<EntryClaims>, ApiError> {
        let remembered = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned();
        if let Some(claims) = remembered {
            return Ok(claims);
        }
        let claims = Arc::new(self.verifier.verify(token).map_err(|e| {
            refused(
                "invalid_entry_token",
                format!("the entry token is not valid here: {e}"),
            )
        })?);
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= MAX_REMEMBERED {
            verified.clear();
        }
        verified.insert(token.to_owned(), Arc::clone(&claims));
        Ok(claims)
    }
}

impl Broker {
    /// Whether a request carrying these headers may enter the shop.
    fn admit_at_gate(&self, headers: &HeaderMap) -> Result<Arc<EntryClaims>, ApiError> {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let token = auth::cookie(text(header::COOKIE), ENTRY_COOKIE)
            .or_else(|| auth::bearer(text(header::AUTHORIZATION)))
            .ok_or_else(|| {
                refused(
                    "missing_entry_token",
                    format!("an entry token is required (cookie {ENTRY_COOKIE} or Authorization: Bearer)"),
                )
            })?;
        let claims = self.gate.claims(token)?;
        if claims.exp * 1000 <= now_ms() {
            return Err(refused(
                "entry_token_expired",
                "the entry token has expired",
            ));
        }
        if self.fanout.has_ended(&claims.sid) {
            return Err(session_ended());
        }
        if self.bindings.is_some()
            && let Some(cnf) = &claims.cnf
        {
            let presented =
                auth::cookie(text(header::COOKIE), BINDING_COOKIE).or_else(|| text(BINDING));
            if !presented.is_some_and(|secret| binding::proves(&cnf.binding, secret)) {
                return Err(refused(
                    "token_not_bound",
                    format!(
                        "the entry token is bound to the browser that waited for it, \
                         and this request does not carry its {BINDING_COOKIE} cookie \
                         (or {BINDING_HEADER} header)"
                    ),
                ));
            }
        }
        Ok(claims)
    }

    /// With a claim window, claims the session on its first pass through
    /// this broker's gate; refuses it if the store says it already ended.
    async fn claim_at_gate(&self, sid: &str) -> Result<(), ApiError> {
        if self.fanout.claim_window_ms() == 0 || self.gate.is_claimed(sid) {
            return Ok(());
        }
        match self.store.claim(sid, now_ms()).await {
            Ok(ClaimOutcome { view, lapsed }) => {
                if lapsed {
                    self.metrics
                        .unclaimed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if !matches!(view.session.state, SessionState::Active { .. }) {
                    return Err(session_ended());
                }
            }
            // Forgotten by a store that lost its data: the token stays
            // valid until its `exp`, as everywhere else.
            Err(QueueError::UnknownSession) => {}
            Err(e) => {
                self.metrics
                    .store_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %e, sid, "cannot claim the session; letting it through");
                return Ok(());
            }
        }
        self.gate.remember_claimed(sid);
        Ok(())
    }
}

/// `/v1/rooms/{room}/gate`, any method: 200 with the visitor named in
/// `x-usher-user`, `x-usher-session` and `x-usher-expires-at`, or 401 with
/// a JSON reason (the proxy then sends the visitor to the waiting page).
pub(super) async fn check(
    State(broker): State<Arc<Broker>>,
    _: ServedRoom,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    broker.pass_gate(&headers).await
}

/// `/v1/rooms/{room}/gate/redirect[/original path]`, any method: as
/// [`check`], but a refused page visit is sent to the waiting page (see
/// [`super::redirect`]).
pub(super) async fn check_or_redirect(
    State(broker): State<Arc<Broker>>,
    ServedRoom(room): ServedRoom,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match broker.pass_gate(&headers).await {
        Ok(passed) => passed,
        Err(refused) => {
            let prefix = format!("/v1/rooms/{room}/gate/redirect");
            redirect::refusal(
                refused,
                &broker.settings.waiting_page,
                &method,
                &headers,
                uri.path().strip_prefix(prefix.as_str()),
                uri.query(),
            )
        }
    }
}

impl Broker {
    async fn pass_gate(&self, headers: &HeaderMap) -> Result<Response, ApiError> {
        let claims = self.admit_at_gate(headers)?;
        self.claim_at_gate(&claims.sid).await?;
        self.metrics
            .gate_passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let expires_at = rfc3339(claims.exp * 1000);
        let mut response = (
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(serde_json::json!({
                "user": claims.sub,
                "session": claims.sid,
                "expiresAt": expires_at,
            })),
        )
            .into_response();
        let out = response.headers_mut();
        for (name, value) in [
            (USER_HEADER, header_safe(&claims.sub)),
            (SESSION_HEADER, claims.sid.clone()),
            (EXPIRES_HEADER, expires_at),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                out.insert(name, value);
            }
        }
        Ok(response)
    }
}

/// `text` with every byte outside printable ASCII percent-encoded, so any
/// user id (a platform's `sub` may hold anything) fits in a header.
fn header_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_graphic() && byte != b'%' || byte == b' ' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_fit_in_headers() {
        assert_eq!(header_safe("anon:AbC-_1"), "anon:AbC-_1");
        assert_eq!(header_safe("a\r\nb%ü"), "a%0D%0Ab%25%C3%BC");
    }
}
