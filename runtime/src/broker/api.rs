//! The HTTP contract: routes, input checks and JSON answers.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::Broker;
use super::client_address::Peer;
use super::error::{ApiError, ErrorCode};
use super::events::StreamHandoff;
use super::join_body::JoinBody;
use crate::auth::{self, SESSION_COOKIE, random_id};
use crate::clock::{now_ms, rfc3339};
use crate::queue::{JoinRequest, Lane, SessionState, SessionView, join_number};

const WAITING_PAGE: &str = include_str!("../web/waiting.html");

type Shared = State<Arc<Broker>>;
type ApiResult = Result<Response, ApiError>;

pub fn router(broker: Arc<Broker>) -> Router {
    let metrics = Arc::clone(&broker.metrics);
    // Room ids are DNS labels, safe to place in the page as they are.
    let page = Html(WAITING_PAGE.replace("__USHER_ROOM__", &broker.room));
    Router::new()
        .route("/", get(move || async move { page }))
        .route("/v1/rooms/{room}", get(room_stats))
        .route(
            "/v1/rooms/{room}/fairness/joins",
            get(super::fairness::joins),
        )
        .route("/v1/rooms/{room}/queue", post(join))
        .route("/v1/rooms/{room}/challenge", get(super::bots::challenge))
        .route("/v1/rooms/{room}/gate", any(super::gate::check))
        .route(
            "/v1/rooms/{room}/gate/redirect",
            any(super::gate::check_or_redirect),
        )
        .route(
            "/v1/rooms/{room}/gate/redirect/{*original}",
            any(super::gate::check_or_redirect),
        )
        .route("/v1/rooms/{room}/sessions/{sid}", get(status).delete(leave))
        .route("/v1/rooms/{room}/sessions/{sid}/events", get(events))
        .route("/v1/rooms/{room}/sessions/{sid}/complete", post(complete))
        // The shop's checkout, server to server.
        .merge(super::checkout::routes(&broker))
        .merge(super::lanes::routes())
        .route("/v1/rooms/{room}/sessions/{sid}/enter", get(enter))
        .route("/.well-known/jwks.json", get(jwks))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(ready))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let metrics = Arc::clone(&metrics);
            async move {
                let response = next.run(request).await;
                if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
                    metrics.error(code);
                }
                response
            }
        }))
        .with_state(broker)
}

/// Room ids are DNS labels: what Kubernetes names and Redis hash tags can carry.
pub fn valid_room_id(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= 63
        && room
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !room.starts_with('-')
        && !room.ends_with('-')
}

/// Session ids are up to 64 URL-safe characters.
pub(super) fn valid_session_id(sid: &str) -> bool {
    !sid.is_empty()
        && sid.len() <= 64
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Broker {
    fn check_room(&self, room: &str) -> Result<(), ApiError> {
        if !valid_room_id(room) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_room",
                "room ids are 1-63 lowercase letters, digits and dashes",
            ));
        }
        if room != self.room {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_room",
                format!("this broker serves room {:?}", self.room),
            ));
        }
        Ok(())
    }

    /// Checks the room, the session id's shape and the session token.
    pub(super) fn check_session(
        &self,
        room: &str,
        sid: &str,
        tokens: &[&str],
    ) -> Result<(), ApiError> {
        self.check_room(room)?;
        if !valid_session_id(sid) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_session_id",
                "session ids are up to 64 URL-safe characters",
            ));
        }
        // The first token that proves the session wins; else the first's error.
        let mut first_error = None;
        for token in tokens {
            match self.session_tokens.verify(token, room, sid) {
                Ok(()) => return Ok(()),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        Err(first_error
            .unwrap_or(auth::AuthError::MissingSessionToken)
            .into())
    }

    pub(super) fn session_body(&self, view: &SessionView, token: Option<String>) -> SessionBody {
        let session = &view.session;
        let mut body = SessionBody {
            session_id: session.id.clone(),
            ticket: join_number(session.ticket),
            lane: Lane::of_ticket(session.ticket),
            state: "waiting",
            position: view.position,
            waiting: view.waiting,
            eta_seconds: None,
            entry_token: None,
            entry_binding: None,
            expires_at: None,
            reason: None,
            poll_after_ms: None,
            events_url: None,
            status_url: None,
            session_token: None,
            message: Some(self.announcement.borrow().text.clone()).filter(|m| !m.is_empty()),
        };
        match session.state {
            SessionState::Waiting => {
                let position = view.position.unwrap_or(1);
                body.eta_seconds = self.fanout.eta_of(session.ticket, position, now_ms());
                let ceiling =
                    (self.settings.abandon_timeout.as_millis() as u64 / 3).clamp(1_000, 15_000);
                body.poll_after_ms = Some((2_000 + position * 5).min(ceiling));
            }
            SessionState::Active {
                admitted_at,
                expires_at,
            } => {
                body.state = "admitted";
                body.expires_at = Some(rfc3339(expires_at));
                match self.entry_token(&session.id, &session.user, admitted_at, expires_at) {
                    Ok(token) => body.entry_token = Some(token),
                    Err(e) => tracing::error!(error = %e, "cannot sign an entry token"),
                }
                body.entry_binding = self.binding(&session.id);
            }
            SessionState::Closed(reason) => {
                body.state = "closed";
                body.reason = Some(reason.as_str());
            }
        }
        if let Some(token) = token {
            let base = format!("/v1/rooms/{}/sessions/{}", self.room, session.id);
            body.events_url = Some(format!("{base}/events?token={token}"));
            body.status_url = Some(format!("{base}?token={token}"));
            body.session_token = Some(token);
        }
        body
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SessionBody {
    session_id: String,
    /// The order of joins (the same in every lane).
    ticket: u64,
    lane: Lane,
    /// waiting, admitted or closed.
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<u64>,
    waiting: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    eta_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entry_token: Option<String>,
    /// The binding secret of a bound entry token, for clients that present
    /// it at the gate themselves (`Usher-Binding`); browsers get it as a
    /// cookie from `enter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    entry_binding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    poll_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_url: Option<String>,
    /// The room's message to everyone waiting, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The session tokens a request carries, in the order to try them.
fn session_tokens<'a>(query: &'a TokenQuery, headers: &'a HeaderMap) -> Vec<&'a str> {
    auth::session_token_candidates(
        query.token.as_deref(),
        header_text(headers, header::AUTHORIZATION),
        header_text(headers, header::COOKIE),
    )
}

pub(super) fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether the request declares a JSON body (`application/json` or
/// `application/*+json`); `None` when it declares no type at all.
pub(super) fn declares_json(headers: &HeaderMap) -> Option<bool> {
    header_text(headers, header::CONTENT_TYPE).map(|value| {
        let essence = value.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("application/json")
            || essence.rsplit_once('+').is_some_and(|(kind, suffix)| {
                kind.to_ascii_lowercase().starts_with("application/")
                    && suffix.eq_ignore_ascii_case("json")
            })
    })
}

/// Whether the visitor reached the first proxy over HTTPS. Proxies append
/// to `X-Forwarded-Proto` and `Forwarded`, so the first entry is the one
/// the visitor's own connection used.
fn visitor_used_https(headers: &HeaderMap) -> bool {
    let first_entry = |name: header::HeaderName| {
        headers
            .get_all(name)
            .iter()
            .next()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    };
    if let Some(forwarded) = first_entry(header::FORWARDED) {
        return forwarded.split(';').any(|pair| {
            pair.trim().split_once('=').is_some_and(|(key, value)| {
                key.trim().eq_ignore_ascii_case("proto")
                    && value.trim().trim_matches('"').eq_ignore_ascii_case("https")
            })
        });
    }
    first_entry(header::HeaderName::from_static("x-forwarded-proto"))
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

async fn join(
    State(broker): Shared,
    ServedRoom(room): ServedRoom,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let asked = JoinBody::parse(&headers, &body)?;
    // Checked before anything else: a malformed forwarding header is
    // refused whoever sent it.
    let client = match peer {
        Some(Extension(Peer(peer))) => Some(broker.settings.addresses.client(peer.ip(), &headers)?),
        None => None,
    };
    let address = client.map(|client| broker.settings.addresses.limit_key(client));
    let identity = broker.users.identify(
        header_text(&headers, header::AUTHORIZATION),
        header_text(&headers, header::COOKIE),
    )?;
    let (lane, invite) =
        super::lanes::requested_lane(&room, asked.invite.as_deref(), identity.priority)?;
    broker
        .check_newcomer(&room, &identity.user, &headers, &asked, client)
        .await?;
    let sid = random_id();
    let mut request = JoinRequest::new(&identity.user, &sid).in_lane(lane);
    if let Some(address) = &address {
        request = request.from_address(address);
    }
    if let Some(invite) = &invite {
        request = request.redeeming(invite);
    }
    let outcome = broker.store.join(&request, now_ms()).await?;
    broker
        .metrics
        .joins
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let token = broker.session_tokens.issue(&room, &outcome.view.session.id);
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    // Behind a TLS-terminating proxy, keep the cookies off plain HTTP.
    let secure = visitor_used_https(&headers);
    let session_cookie =
        format!("{SESSION_COOKIE}={token}; Path=/v1/rooms/{room}/; HttpOnly; SameSite=Lax");
    let mut response = (
        status,
        Json(broker.session_body(&outcome.view, Some(token))),
    )
        .into_response();
    for cookie in identity.set_cookie.into_iter().chain([session_cookie]) {
        let cookie = if secure {
            format!("{cookie}; Secure")
        } else {
            cookie
        };
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

/// The path's parameters, or a 400 `invalid_path` saying why not.
async fn path_params<T>(
    parts: &mut axum::http::request::Parts,
    broker: &Arc<Broker>,
) -> Result<T, ApiError>
where
    T: serde::de::DeserializeOwned + Send,
{
    <Path<T> as axum::extract::FromRequestParts<Arc<Broker>>>::from_request_parts(parts, broker)
        .await
        .map(|Path(params)| params)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", e.body_text()))
}

/// The query's parameters, or a 400 `invalid_query` saying why not.
pub(super) fn query_params<T: serde::de::DeserializeOwned>(
    uri: &axum::http::Uri,
) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(params)| params)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))
}

/// The room of the path, checked to be the one this broker serves.
pub(super) struct ServedRoom(pub String);

impl axum::extract::FromRequestParts<Arc<Broker>> for ServedRoom {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        broker: &Arc<Broker>,
    ) -> Result<Self, ApiError> {
        // By name: a route may capture more than the room.
        let mut params: std::collections::HashMap<String, String> =
            path_params(parts, broker).await?;
        let room = params.remove("room").unwrap_or_default();
        broker.check_room(&room)?;
        Ok(ServedRoom(room))
    }
}

/// A session the request proved it holds (room, id shape and session token
/// checked), or the error answer saying why not.
struct HeldSession(String);

impl axum::extract::FromRequestParts<Arc<Broker>> for HeldSession {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        broker: &Arc<Broker>,
    ) -> Result<Self, ApiError> {
        let (room, sid): (String, String) = path_params(parts, broker).await?;
        let query: TokenQuery = query_params(&parts.uri)?;
        broker.check_session(&room, &sid, &session_tokens(&query, &parts.headers))?;
        Ok(HeldSession(sid))
    }
}

async fn status(State(broker): Shared, HeldSession(sid): HeldSession) -> ApiResult {
    let view = broker.store.session(&sid, Some(now_ms())).await?;
    Ok(Json(broker.session_body(&view, None)).into_response())
}

async fn leave(State(broker): Shared, HeldSession(sid): HeldSession) -> ApiResult {
    let view = broker.store.leave(&sid, now_ms()).await?;
    Ok(Json(broker.session_body(&view, None)).into_response())
}

async fn complete(State(broker): Shared, HeldSession(sid): HeldSession) -> ApiResult {
    let view = broker.store.complete(&sid, now_ms()).await?;
    Ok(Json(broker.session_body(&view, None)).into_response())
}

/// Opens the SSE stream of one session; the listener writes it out. HEAD
/// gets the head alone, and opens nothing.
async fn events(State(broker): Shared, method: Method, HeldSession(sid): HeldSession) -> ApiResult {
    let mut response = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
        (header::HeaderName::from_static("x-accel-buffering"), "no"),
    ]
    .into_response();
    if method != Method::HEAD {
        let feed = broker.open_events(&sid).await?;
        response.extensions_mut().insert(StreamHandoff::new(feed));
    }
    Ok(response)
}

async fn room_stats(State(broker): Shared, _: ServedRoom) -> ApiResult {
    let config = broker
        .store
        .config()
        .await?
        .ok_or(crate::queue::QueueError::NotConfigured)?;
    let counts = broker.store.counts().await?;
    let fairness = broker.store.fairness().await?;
    let now = now_ms();
    Ok(Json(serde_json::json!({
        "room": broker.room,
        "phase": config.phase(now),
        "waiting": counts.waiting,
        "active": counts.active,
        "admittedTotal": counts.admitted_total,
        "capacity": config.capacity,
        "admissionRate": config.admission_rate,
        "queueing": config.queueing,
        "sessionDurationSeconds": config.session_duration_ms / 1000,
        "opensAt": config.opens_at.map(rfc3339),
        "closesAt": config.closes_at.map(rfc3339),
        "paused": config.paused,
        "estimatedWaitSeconds": broker.fanout.eta(counts.waiting.max(1), now),
        "fairness": super::fairness::stats(fairness.as_ref()),
    }))
    .into_response())
}

async fn jwks(State(broker): Shared) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(broker.signer.jwks()),
    )
        .into_response()
}

async fn ready(State(broker): Shared) -> ApiResult {
    broker.readiness().await?;
    Ok(Json(serde_json::json!({"status": "ready"})).into_response())
}

/// The checked `return` URL of a request: where to send the visitor back.
struct ReturnTo(String);

impl axum::extract::FromRequestParts<Arc<Broker>> for ReturnTo {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        broker: &Arc<Broker>,
    ) -> Result<Self, ApiError> {
        #[derive(Deserialize)]
        struct ReturnQuery {
            #[serde(rename = "return")]
            target: Option<String>,
        }
        let query: ReturnQuery = query_params(&parts.uri)?;
        let refuse = |why: &str| ApiError::new(StatusCode::BAD_REQUEST, "return_not_allowed", why);
        let target = query
            .target
            .ok_or_else(|| refuse("the return parameter is required"))?;
        let location = broker
            .settings
            .return_origins
            .check(&target)
            .map_err(refuse)?;
        Ok(ReturnTo(location))
    }
}

/// Hands an admitted visitor back to the shop: `303` to the return URL,
/// setting the entry cookie that the gate reads, and the binding cookie of
/// a bound token. The return URL is checked before the session (its
/// extractor runs first), and nothing changes in the store: the visitor is
/// not even marked present.
async fn enter(
    State(broker): Shared,
    ReturnTo(location): ReturnTo,
    HeldSession(sid): HeldSession,
    headers: HeaderMap,
) -> ApiResult {
    let view = broker.store.session(&sid, None).await?;
    let (admitted_at, expires_at) = match view.session.state {
        SessionState::Active {
            admitted_at,
            expires_at,
        } => (admitted_at, expires_at),
        SessionState::Waiting => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_active",
                "the session is still waiting in line",
            ));
        }
        SessionState::Closed(reason) => {
            let code = "session_closed";
            let body = serde_json::json!({
                "code": code,
                "message": format!("the session has ended ({})", reason.as_str()),
                "reason": reason.as_str(),
            });
            let mut gone = (StatusCode::GONE, Json(body)).into_response();
            gone.extensions_mut().insert(ErrorCode(code));
            return Ok(gone);
        }
    };
    let token = broker
        .entry_token(&sid, &view.session.user, admitted_at, expires_at)
        .map_err(|e| {
            tracing::error!(error = %e, "cannot sign an entry token");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot sign an entry token",
            )
        })?;
    let max_age = expires_at / 1000 - now_ms() / 1000;
    let secure = visitor_used_https(&headers);
    let jar = &broker.settings.entry_cookie;
    let cookies = std::iter::once(jar.set_cookie(&token, max_age, secure)).chain(
        broker
            .binding(&sid)
            .map(|secret| jar.set_binding(&secret, max_age, secure)),
    );
    // All are printable ASCII: the return URL by its check, the cookies
    // being a JWT or base64url, a number and a checked domain.
    let value = |text: &str| {
        HeaderValue::from_str(text).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "return_not_allowed",
                "the return URL cannot be a header",
            )
        })
    };
    let mut response = (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, value(&location)?),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response();
    for cookie in cookies {
        response
            .headers_mut()
            .append(header::SET_COOKIE, value(&cookie)?);
    }
    Ok(response)
}
