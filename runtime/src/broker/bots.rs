//! Keeping bots out of the line. A join that would give someone a new
//! place asks first for a proof of work (when the room's rules ask for one
//! and users are anonymous) and for a passed human check (when the broker
//! has one). A visitor who already holds a live session of the room, and
//! shows its session token (the page's cookie), is asked for neither: a
//! reload or a reconnect costs no new work.
//!
//! Answers: `403 proof_required` (no proof), `400 invalid_proof`
//! (malformed, forged, another room's, expired, easier than the room now
//! asks, or not solved), `409 proof_replayed` (spent already);
//! `403 human_check_required` (no `humanToken`), `403 human_check_failed`,
//! `503 human_check_unavailable` with `Retry-After` (the verifier did not
//! answer usably). A proof is spent before the human check, so a verifier
//! is asked at most once per solved challenge.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Broker;
use super::api::{ServedRoom, header_text};
use super::error::ApiError;
use super::human_check::{HumanCheckError, MAX_TOKEN_BYTES};
use super::join_body::{JoinBody, Proof};
use crate::auth::{UserAuth, session_token_candidates};
use crate::clock::{now_ms, rfc3339};
use crate::pow::ProofError;
use crate::queue::{QueueError, SessionState};

/// [`Broker::proof_of_work_bits`] before the broker has read the rules.
pub(super) const BITS_UNKNOWN: u16 = u16::MAX;
/// When to try again after the human check's verifier failed to answer.
const HUMAN_CHECK_RETRY_SECONDS: u64 = 5;

impl From<ProofError> for ApiError {
    fn from(e: ProofError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_proof", e.to_string())
    }
}

impl From<HumanCheckError> for ApiError {
    fn from(e: HumanCheckError) -> Self {
        match e {
            HumanCheckError::Failed => {
                ApiError::new(StatusCode::FORBIDDEN, "human_check_failed", e.to_string())
            }
            HumanCheckError::Unavailable(_) => {
                tracing::warn!(error = %e, "the human check's verifier failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "human_check_unavailable",
                    "the human check cannot be verified right now; try again shortly",
                )
                .retry_after(HUMAN_CHECK_RETRY_SECONDS)
            }
        }
    }
}

/// `GET /v1/rooms/{room}/challenge`: a proof-of-work challenge to solve
/// before joining, or `{"difficulty": 0}` when the room asks for none.
pub(super) async fn challenge(
    State(broker): State<Arc<Broker>>,
    ServedRoom(room): ServedRoom,
) -> Result<Response, ApiError> {
    let bits = broker.proof_of_work_bits().await?;
    let body = if bits == 0 {
        serde_json::json!({"difficulty": 0})
    } else {
        let challenge = broker.challenges.issue(&room, bits, now_ms());
        serde_json::json!({
            "challenge": challenge.text,
            "difficulty": challenge.difficulty,
            "expiresAt": rfc3339(challenge.expires_at),
        })
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

impl Broker {
    /// The difficulty newcomers' proofs must reach: the room's rule with
    /// anonymous users, 0 when the platform's JWT names every user.
    async fn proof_of_work_bits(&self) -> Result<u8, ApiError> {
        if matches!(self.users, UserAuth::Jwt(_)) {
            return Ok(0);
        }
        match self.proof_of_work_bits.load(Relaxed) {
            BITS_UNKNOWN => Ok(self
                .store
                .config()
                .await?
                .ok_or(QueueError::NotConfigured)?
                .proof_of_work_bits),
            bits => Ok(u8::try_from(bits).unwrap_or(u8::MAX)),
        }
    }

    /// Lets a join go on that may give `user` a new place: checks and
    /// spends its proof of work, then asks the human check. `remote_ip`,
    /// the visitor's address (the TCP peer's, or what a trusted proxy
    /// says), is passed on to the human check's verifier. A join refused
    /// after this (the room closed, a per-address limit) has spent its
    /// proof: the client solves a new one to try again.
    pub(super) async fn check_newcomer(
        &self,
        room: &str,
        user: &str,
        headers: &HeaderMap,
        body: &JoinBody,
        remote_ip: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let bits = self.proof_of_work_bits().await?;
        let human_check = self.settings.human_check.as_ref();
        if (bits == 0 && human_check.is_none())
            || self.holds_live_session(room, user, headers).await?
        {
            return Ok(());
        }
        if bits > 0 {
            self.spend_proof(room, bits, body.proof.as_ref()).await?;
        }
        if let Some(check) = human_check {
            let token = body
                .human_token
                .as_deref()
                .filter(|token| !token.is_empty())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::FORBIDDEN,
                        "human_check_required",
                        "joining needs a passed human check (humanToken)",
                    )
                })?;
            if token.len() > MAX_TOKEN_BYTES {
                return Err(HumanCheckError::Failed.into());
            }
            check.verify(token, remote_ip).await?;
        }
        Ok(())
    }

    /// Whether the request shows the session token of a session of `room`
    /// that belongs to `user` and has not ended. The join then gives that
    /// session back, creating nothing.
    async fn holds_live_session(
        &self,
        room: &str,
        user: &str,
        headers: &HeaderMap,
    ) -> Result<bool, ApiError> {
        let tokens = session_token_candidates(
            None,
            header_text(headers, header::AUTHORIZATION),
            header_text(headers, header::COOKIE),
        );
        for sid in tokens
            .into_iter()
            .filter_map(|token| self.session_tokens.session_in(token, room))
        {
            match self.store.session(sid, None).await {
                Ok(view)
                    if view.session.user == user
                        && !matches!(view.session.state, SessionState::Closed(_)) =>
                {
                    return Ok(true);
                }
                Ok(_) | Err(QueueError::UnknownSession) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Checks `proof` against a difficulty of `asked` bits and spends it.
    async fn spend_proof(
        &self,
        room: &str,
        asked: u8,
        proof: Option<&Proof>,
    ) -> Result<(), ApiError> {
        let proof = proof.ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "proof_required",
                format!(
                    "joining needs a proof of work: solve GET /v1/rooms/{room}/challenge ({asked} bits)"
                ),
            )
        })?;
        let now = now_ms();
        let spend = self
            .challenges
            .verify(&proof.challenge, proof.counter, room, asked, now)?;
        if !self
            .store
            .spend_proof(&spend.id, spend.expires_at, now)
            .await?
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "proof_replayed",
                "this proof of work was used already; solve a new challenge",
            ));
        }
        Ok(())
    }
}
