//! The queue engine: one waiting room's line, its active set and its change
//! stream, behind the [`Store`] trait.
//!
//! Two stores implement the trait with the same semantics (checked by one
//! conformance suite): [`RedisStore`], where every state change is one atomic
//! Lua script, and [`MemoryStore`], used by `usher demo` and fast tests.
//! Time is always passed in by the caller (`now`, Unix milliseconds), so the
//! semantics are deterministic and testable.

mod fairness;
mod lane;
mod memory;
mod redis_store;
mod shuffle;

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use self::fairness::{ALGORITHM, Fairness, Revealed, SealedSeed, commitment};
pub use self::lane::{Lane, PRIORITY_BASE, join_number};
pub use self::memory::MemoryStore;
pub use self::redis_store::{RedisStore, room_key_prefix};

/// Unix time in milliseconds.
pub type Millis = i64;

/// The change-stream cursor that means "only changes from now on".
pub const LATEST: &str = "$";

/// How long a closed session's record is kept (for late `closed` answers).
pub const CLOSED_RECORD_RETENTION_MS: Millis = 3_600_000;
/// The most sessions one dispatcher tick changes in each of its steps.
pub const TICK_BATCH: usize = 1000;

/// How often brokers mark the visitors whose streams they hold as present:
/// a quarter of the abandon timeout, within 1 to 30 s.
pub fn presence_interval_ms(abandon_timeout_ms: Millis) -> Millis {
    (abandon_timeout_ms / 4).clamp(1_000, 30_000)
}

/// After presence lapsed (the store was away), nobody is dropped as absent
/// for this long: every broker marks its visitors again by then, at its
/// next regular mark or on its retry a second after a failed one. Never
/// longer than the abandon timeout, so a lapse only delays abandonment.
/// `lua/tick.lua` computes the same.
pub fn presence_grace_ms(abandon_timeout_ms: Millis) -> Millis {
    (presence_interval_ms(abandon_timeout_ms) + 5_000).min(abandon_timeout_ms)
}
/// The sliding window `admissionRate` is measured over.
pub const RATE_WINDOW_MS: Millis = 60_000;

/// How joins are ordered and admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Queueing {
    /// First come, first served by ticket.
    #[serde(rename = "FIFO")]
    Fifo,
    /// The pre-queue (joins before `opensAt`) is shuffled once at opening; FIFO after.
    Random,
    /// No line: every join is admitted at once, capacity and rate are not applied.
    Passthrough,
    /// New joins are refused; the existing line still drains.
    Reject,
}

impl Queueing {
    pub fn as_str(self) -> &'static str {
        match self {
            Queueing::Fifo => "FIFO",
            Queueing::Random => "Random",
            Queueing::Passthrough => "Passthrough",
            Queueing::Reject => "Reject",
        }
    }
}

impl std::str::FromStr for Queueing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fifo" => Ok(Queueing::Fifo),
            "random" => Ok(Queueing::Random),
            "passthrough" => Ok(Queueing::Passthrough),
            "reject" => Ok(Queueing::Reject),
            _ => Err(format!(
                "unknown queueing mode {s:?} (expected FIFO, Random, Passthrough or Reject)"
            )),
        }
    }
}

impl fmt::Display for Queueing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A room's rules, shared by every broker and dispatcher through the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomConfig {
    /// Most sessions active at once.
    pub capacity: u64,
    /// Most admissions in any 60 s window; `None` = bounded by capacity only.
    pub admission_rate: Option<u64>,
    /// How long an admitted session keeps its slot.
    pub session_duration_ms: Millis,
    pub queueing: Queueing,
    /// Before this instant joins wait in a pre-queue and nobody is admitted.
    pub opens_at: Option<Millis>,
    /// From this instant joins are refused and the remaining line is closed.
    pub closes_at: Option<Millis>,
    /// Stops admissions, keeps the line.
    pub paused: bool,
    /// A waiting session unseen (no stream, no poll) this long is dropped.
    pub abandon_timeout_ms: Millis,
    /// An admitted session not claimed at the shop's gate ([`Store::claim`])
    /// this long after its admission ends as `unclaimed`; 0 = no window.
    pub claim_window_ms: Millis,
    /// The longest the shop's checkout may extend a session to, counted
    /// from its admission ([`Store::extend`]); 0 = `session_duration_ms`.
    pub max_session_duration_ms: Millis,
    /// Shown to everyone waiting (SSE `message`); empty = none.
    pub message: String,
    /// Most new places one address may take per minute (a burst of that
    /// many, then evenly spread); 0 = unlimited.
    pub joins_per_address_per_minute: u64,
    /// Most live (waiting or admitted) sessions one address may hold at
    /// once; 0 = unlimited.
    pub sessions_per_address: u64,
    /// Percent of admissions that go to the priority lane while both lanes
    /// wait (the other lane takes what one cannot use); 100 = the priority
    /// lane is admitted strictly first.
    pub priority_share: u8,
    /// Rules of a lower revision never replace these (0 when unversioned).
    pub revision: u64,
    /// Leading zero bits a newcomer's proof of work must reach (see
    /// [`crate::pow`]); 0 = no proof asked.
    pub proof_of_work_bits: u8,
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    Left,
    Completed,
    Expired,
    Abandoned,
    RoomClosed,
    /// The shop's checkout ended the session (`POST .../checkout/revoke`).
    Revoked,
    /// Admitted, but never reached the shop's gate within the claim window.
    Unclaimed,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Left => "left",
            CloseReason::Completed => "completed",
            CloseReason::Expired => "expired",
            CloseReason::Abandoned => "abandoned",
            CloseReason::RoomClosed => "room_closed",
            CloseReason::Revoked => "revoked",
            CloseReason::Unclaimed => "unclaimed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "left" => CloseReason::Left,
            "completed" => CloseReason::Completed,
            "expired" => CloseReason::Expired,
            "abandoned" => CloseReason::Abandoned,
            "room_closed" => CloseReason::RoomClosed,
            "revoked" => CloseReason::Revoked,
            "unclaimed" => CloseReason::Unclaimed,
            _ => return None,
        })
    }
}

/// Where a session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    Waiting,
    /// Admitted: holds a slot from `admitted_at` until `expires_at`.
    Active {
        admitted_at: Millis,
        expires_at: Millis,
    },
    Closed(CloseReason),
}

/// One user's place in one room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub user: String,
    /// Order key inside its lane: lower tickets are admitted first. It
    /// carries the lane ([`Lane::of_ticket`]).
    pub ticket: u64,
    pub state: SessionState,
}

/// A session together with where it stands in the line right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    pub session: Session,
    /// 1 + waiting sessions of its lane with an earlier ticket; `None`
    /// unless waiting.
    pub position: Option<u64>,
    /// Sessions waiting in its lane.
    pub waiting: u64,
}

/// One visitor asking for a place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinRequest<'a> {
    pub user: &'a str,
    /// The id the session gets if one is created.
    pub new_sid: &'a str,
    /// What the per-address limits count the visitor as (an IPv4 address
    /// or an IPv6 network); `None` = not limited.
    pub address: Option<&'a str>,
    /// The lane a new place waits in.
    pub lane: Lane,
    /// The hash of an invite code this join redeems ([`Store::add_invites`]);
    /// a join with a code that is not good takes no place.
    pub invite: Option<&'a str>,
}

impl<'a> JoinRequest<'a> {
    /// A join the per-address limits do not apply to.
    pub fn new(user: &'a str, new_sid: &'a str) -> Self {
        JoinRequest {
            user,
            new_sid,
            address: None,
            lane: Lane::General,
            invite: None,
        }
    }

    pub fn in_lane(self, lane: Lane) -> Self {
        JoinRequest { lane, ..self }
    }

    pub fn redeeming(self, invite_hash: &'a str) -> Self {
        JoinRequest {
            invite: Some(invite_hash),
            ..self
        }
    }

    pub fn from_address(self, address: &'a str) -> Self {
        JoinRequest {
            address: Some(address),
            ..self
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinOutcome {
    pub view: SessionView,
    /// False when the user already had a live session (idempotent join).
    pub created: bool,
}

/// What a claim at the gate found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimOutcome {
    /// The session as it stands after the claim.
    pub view: SessionView,
    /// The claim came after the window lapsed, and ended the session as
    /// `unclaimed` (before a dispatcher step did).
    pub lapsed: bool,
}

/// What one call of [`Store::admit_now`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdmitNow {
    pub admitted: u64,
    /// Still to admit for this request (in the next call).
    pub left: u64,
}

/// What one dispatcher tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    pub admitted: u64,
    pub expired: u64,
    pub abandoned: u64,
    pub closed: u64,
    /// Admitted sessions that ended unclaimed (see [`RoomConfig::claim_window_ms`]).
    pub unclaimed: u64,
    /// A step hit [`TICK_BATCH`]: call again without waiting.
    pub more: bool,
}

/// Counters of a room, for stats and the operator's status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomCounts {
    pub waiting: u64,
    pub active: u64,
    pub admitted_total: u64,
    /// The room has passed its opening (admissions may run).
    pub opened: bool,
}

/// One entry of a room's change stream, in the order the store applied them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Joined {
        ticket: u64,
    },
    Admitted {
        sid: String,
        user: String,
        ticket: u64,
        admitted_at: Millis,
        expires_at: Millis,
    },
    /// A waiting session left the line without being admitted.
    Dequeued {
        sid: String,
        ticket: u64,
        reason: CloseReason,
    },
    /// The shop's checkout extended an active session to `expires_at`.
    Extended {
        sid: String,
        user: String,
        admitted_at: Millis,
        expires_at: Millis,
    },
    /// An active session ended; its slot is free.
    Ended {
        sid: String,
        reason: CloseReason,
    },
    /// The room opened; tickets may have been reordered (Random): resync.
    Opened,
    /// The room's configuration was replaced.
    Reconfigured,
}

/// Changes after a cursor. `seq` numbers are consecutive; a jump means the
/// reader missed entries (the stream is trimmed) and must resync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeBatch {
    pub cursor: String,
    pub changes: Vec<(u64, Change)>,
}

/// A consistent picture of the line, for a reader (re)starting to follow it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineSnapshot {
    /// Read changes after this cursor.
    pub cursor: String,
    /// The sequence number of the last change included.
    pub seq: u64,
    /// Every waiting session as (session id, ticket), in ticket order.
    pub waiting: Vec<(String, u64)>,
    /// Sessions closed lately (kept as long as an entry token of theirs
    /// could still be valid): the gate refuses their tokens.
    pub closed: Vec<String>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum QueueError {
    #[error("the room is not configured yet")]
    NotConfigured,
    #[error("this room is not accepting new visitors")]
    Rejected,
    #[error("the room is closed")]
    RoomClosed,
    #[error("too many new places from this address; try again in {retry_after_ms} ms")]
    AddressRateLimited { retry_after_ms: Millis },
    #[error("this address already holds as many places as one address may")]
    AddressFull,
    #[error("the invite code is not valid, or was used already")]
    InvalidInvite,
    #[error("no such session")]
    UnknownSession,
    #[error("the session is not active")]
    NotActive,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store returned malformed data: {0}")]
    Malformed(String),
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// One room's queue, shared by any number of brokers and dispatchers.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Replaces the room's configuration, unless the one in place has a
    /// higher revision; returns whether it was replaced. A process starting
    /// for the room does this, even for a room purged before.
    async fn configure(&self, config: &RoomConfig) -> Result<bool>;
    /// Writes `config` back when the room has none because the store lost
    /// it (Redis restarted without its data); returns whether it wrote.
    /// A purged room stays without rules: `NotConfigured`.
    async fn restore(&self, config: &RoomConfig) -> Result<bool>;
    /// The room's configuration, if it has one.
    async fn config(&self) -> Result<Option<RoomConfig>>;
    /// Joins the request's user, idempotently: a user with a live session
    /// gets it back, whatever the limits. A new place counts against the
    /// request's address: at most [`RoomConfig::sessions_per_address`]
    /// live sessions (`AddressFull`), and at most
    /// [`RoomConfig::joins_per_address_per_minute`] new places a minute
    /// (`AddressRateLimited`, saying when the next one would be allowed).
    /// A refused join changes nothing.
    async fn join(&self, request: &JoinRequest<'_>, now: Millis) -> Result<JoinOutcome>;
    /// Makes invite codes (their hashes) good for one join each; a code
    /// redeemed before stays spent. Returns how many were new.
    async fn add_invites(&self, hashes: &[String]) -> Result<u64>;
    /// Reads a session; with `touch`, also records the user as present.
    async fn session(&self, sid: &str, touch: Option<Millis>) -> Result<SessionView>;
    /// Leaves the line or gives up the slot. Leaving twice is harmless.
    async fn leave(&self, sid: &str, now: Millis) -> Result<SessionView>;
    /// Ends an active session (checkout done). Completing twice is harmless.
    async fn complete(&self, sid: &str, now: Millis) -> Result<SessionView>;
    /// Ends an active session as `revoked` (the shop's checkout turned it
    /// away). Revoking twice is harmless; a session that is waiting, or
    /// ended for another reason, is `NotActive` and keeps its state.
    async fn revoke(&self, sid: &str, now: Millis) -> Result<SessionView>;
    /// Admits the next `count` sessions from the front of the line now, past
    /// the admission rate and a pause, never past capacity (the free slots
    /// when `request` is first seen bound the whole request); none before
    /// the room opened or after it closed. Each call admits at most
    /// [`TICK_BATCH`]; call again while some are left. A request already
    /// done admits nobody, so repeating one is harmless.
    async fn admit_now(&self, request: &str, count: u64, now: Millis) -> Result<AdmitNow>;
    /// Extends an active session so that it holds its slot at least
    /// `for_ms` after `now`, never past [`RoomConfig::longest_session_ms`]
    /// after its admission, and never shorter than it was. A session that
    /// is not active (or whose time is up) is `NotActive`.
    async fn extend(&self, sid: &str, for_ms: Millis, now: Millis) -> Result<SessionView>;
    /// The visitor of an admitted session reached the shop's gate: the
    /// session no longer risks ending unclaimed. A session whose claim
    /// window has already lapsed ends as `unclaimed` here, if no tick got
    /// to it first. The caller lets the visitor in only if the session is
    /// still active. Claiming twice, or in a room without a claim window,
    /// changes nothing.
    async fn claim(&self, sid: &str, now: Millis) -> Result<ClaimOutcome>;
    /// Records that the users of these waiting sessions are still there.
    async fn touch(&self, sids: &[String], now: Millis) -> Result<()>;
    /// Records that presence may have gone unrecorded until `now` (the store
    /// was unreachable, or the caller cannot tell): no waiting session is
    /// dropped as absent within [`presence_grace_ms`] after `now`, which
    /// gives brokers time to mark their visitors again. Never moves back.
    async fn presence_lapsed(&self, now: Millis) -> Result<()>;
    /// One dispatcher step: expire, drop abandoned, open, close, admit.
    /// A Random room not yet open that has no sealed seed keeps `seed`
    /// (the first tick's wins), and shuffles its pre-queue with the seed it
    /// keeps when it opens (see `queue/fairness.rs`).
    async fn tick(&self, now: Millis, seed: &SealedSeed) -> Result<TickReport>;
    async fn counts(&self) -> Result<RoomCounts>;
    /// The commitment to the room's shuffle, and its seed once it took
    /// place; `None` when the room never sealed a seed (not Random).
    async fn fairness(&self) -> Result<Option<Fairness>>;
    /// Up to `limit` entries of the shuffle's join list from `offset`
    /// (none before the shuffle).
    async fn joins(&self, offset: u64, limit: u64) -> Result<Vec<u64>>;
    async fn snapshot(&self) -> Result<LineSnapshot>;
    /// Changes after `cursor`, waiting up to `block` for the first one.
    /// The cursor [`LATEST`] means "from now on".
    async fn changes(
        &self,
        cursor: &str,
        max: usize,
        block: std::time::Duration,
    ) -> Result<ChangeBatch>;
    /// Records how many streams a broker holds (read by the operator to scale).
    async fn report_broker(&self, broker_id: &str, connected: u64, now: Millis) -> Result<()>;
    /// Streams held by brokers that reported since `since` (for scaling).
    async fn connected(&self, since: Millis) -> Result<u64>;
    /// Deletes every key of the room (the operator's `onDelete: Delete`),
    /// leaving a mark for a day so that processes of the deleted room still
    /// running do not [`Store::restore`] its rules.
    async fn purge(&self) -> Result<()>;
    /// Records the proof-of-work challenge `id` as spent until `expires_at`;
    /// true the first time, false when it was spent already (a replay).
    /// Spent ids are forgotten once they expire, so the caller must refuse
    /// expired challenges itself.
    async fn spend_proof(&self, id: &str, expires_at: Millis, now: Millis) -> Result<bool>;
    /// Checks the store answers.
    async fn ping(&self) -> Result<()>;
    /// Commands sent to the backing server so far (0 for in-process stores).
    fn commands_sent(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod conformance;

#[cfg(test)]
impl RoomConfig {
    /// Plain FIFO rules for tests: no rate limit, no schedule, one-minute sessions.
    pub(crate) fn for_tests(capacity: u64, abandon_timeout_ms: Millis) -> Self {
        RoomConfig {
            capacity,
            admission_rate: None,
            session_duration_ms: 60_000,
            queueing: Queueing::Fifo,
            opens_at: None,
            closes_at: None,
            paused: false,
            abandon_timeout_ms,
            claim_window_ms: 0,
            max_session_duration_ms: 0,
            message: String::new(),
            joins_per_address_per_minute: 0,
            sessions_per_address: 0,
            priority_share: 100,
            revision: 0,
            proof_of_work_bits: 0,
        }
    }
}

/// Where a room stands, as shown to users and platform teams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Phase {
    /// Before `opensAt`: joins wait in the pre-queue.
    Scheduled,
    Open,
    Paused,
    /// After `closesAt`.
    Closed,
}

impl RoomConfig {
    pub fn phase(&self, now: Millis) -> Phase {
        if self.closes_at.is_some_and(|at| now >= at) {
            Phase::Closed
        } else if self.opens_at.is_some_and(|at| now < at) {
            Phase::Scheduled
        } else if self.paused {
            Phase::Paused
        } else {
            Phase::Open
        }
    }

    /// The longest an admitted session may hold its slot, extensions
    /// included: how long its entry tokens may stay valid.
    pub fn longest_session_ms(&self) -> Millis {
        self.session_duration_ms.max(self.max_session_duration_ms)
    }

    /// Admissions count against `admissionRate` (Passthrough ignores it).
    pub fn rate_limited(&self) -> bool {
        self.admission_rate.is_some() && self.queueing != Queueing::Passthrough
    }

    /// Admissions per second the rules allow when the line is long: the
    /// rate limit, or capacity turned over once per session duration.
    pub fn nominal_admissions_per_second(&self) -> f64 {
        let turnover = self.capacity as f64 / (self.session_duration_ms.max(1) as f64 / 1000.0);
        match self.admission_rate {
            Some(rate) => turnover.min(rate as f64 / 60.0),
            None => turnover,
        }
    }
}
