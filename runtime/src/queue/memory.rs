//! The in-memory store: the same semantics as the Redis scripts, in one
//! process. Used by `usher demo` and the fast tests.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::shuffle::shuffle;
use super::*;

/// Changes kept for readers; older ones are trimmed like the Redis stream.
const CHANGE_LOG_LEN: usize = 100_000;

#[derive(Default)]
pub struct MemoryStore {
    room: Mutex<Room>,
    changed: Notify,
}

#[derive(Default)]
struct Room {
    config: Option<RoomConfig>,
    next_ticket: u64,
    admitted_total: u64,
    opened: bool,
    /// Token bucket smoothing admissions when a rate is set.
    tokens: f64,
    tokens_at: Option<Millis>,
    users: HashMap<String, String>,
    sessions: HashMap<String, Session>,
    waiting: BTreeMap<u64, String>,
    /// (expires_at, sid)
    active: BTreeSet<(Millis, String)>,
    /// sid -> claim deadline, for admitted sessions not yet seen at the gate.
    unclaimed: HashMap<String, Millis>,
    /// The last admit-now request, and how many it has left to admit.
    admit_request: (String, u64),
    /// sid -> last seen, for waiting sessions.
    seen: HashMap<String, Millis>,
    /// Nobody counts as unseen before this (see [`Store::presence_lapsed`]).
    presence_from: Millis,
    /// Admission instants inside the rate window.
    admits: VecDeque<Millis>,
    /// (ended_at, sid), to forget old closed sessions.
    closed: BTreeSet<(Millis, String)>,
    change_seq: u64,
    log: VecDeque<(u64, Change)>,
    brokers: HashMap<String, (u64, Millis)>,
    /// The room was purged since it was last configured.
    purged: bool,
    /// The seed a Random room sealed for its shuffle.
    sealed: Option<SealedSeed>,
    /// When the pre-queue was shuffled, and its tickets in join order then.
    shuffled: Option<(Millis, Vec<u64>)>,
    addresses: AddressLimits,
    /// Hashes of invite codes good for one join, and of those redeemed.
    invites: HashSet<String>,
    redeemed: HashSet<String>,
    /// The priority lane's share of admissions not given yet (0 to 1).
    lane_credit: f64,
    /// Spent proof-of-work challenges, and the same by expiry to forget them.
    spent_proofs: HashSet<String>,
    spent_proofs_expiry: BTreeSet<(Millis, String)>,
}

/// The per-address limits' state, as `lua/join.lua` keeps it.
#[derive(Default)]
struct AddressLimits {
    /// address -> when its join rate allows the next new place.
    next_place_at: HashMap<String, f64>,
    /// address -> live sessions.
    live: HashMap<String, u64>,
    /// sid -> the address it counts against.
    of_session: HashMap<String, String>,
}

impl AddressLimits {
    /// Whether `address` may take one more place now; if so, spends it.
    fn take_place(&mut self, address: &str, config: &RoomConfig, now: Millis) -> Result<()> {
        let cap = config.sessions_per_address;
        if cap > 0 && self.live.get(address).copied().unwrap_or(0) >= cap {
            return Err(QueueError::AddressFull);
        }
        let rate = config.joins_per_address_per_minute;
        if rate > 0 {
            let interval = RATE_WINDOW_MS as f64 / rate as f64;
            let next_at = self
                .next_place_at
                .get(address)
                .map_or(now as f64, |&at| at.max(now as f64))
                + interval;
            let ahead = next_at - now as f64;
            if ahead > RATE_WINDOW_MS as f64 {
                return Err(QueueError::AddressRateLimited {
                    retry_after_ms: (ahead - RATE_WINDOW_MS as f64).ceil() as Millis,
                });
            }
            self.next_place_at.insert(address.to_owned(), next_at);
        }
        Ok(())
    }

    fn count(&mut self, sid: &str, address: &str) {
        self.of_session.insert(sid.to_owned(), address.to_owned());
        *self.live.entry(address.to_owned()).or_default() += 1;
    }

    fn release(&mut self, sid: &str) {
        let Some(address) = self.of_session.remove(sid) else {
            return;
        };
        if let Some(live) = self.live.get_mut(&address) {
            *live = live.saturating_sub(1);
            if *live == 0 {
                self.live.remove(&address);
            }
        }
    }

    /// Forgets addresses whose join rate has fully recovered.
    fn forget_recovered(&mut self, now: Millis) {
        self.next_place_at.retain(|_, at| *at > now as f64);
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything, as a Redis that restarted without its data.
    #[cfg(test)]
    pub fn lose_everything(&self) {
        self.with_room(|r| *r = Room::default());
    }

    fn with_room<T>(&self, f: impl FnOnce(&mut Room) -> T) -> T {
        let mut room = self
            .room
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = room.change_seq;
        let out = f(&mut room);
        let changed = room.change_seq != before;
        drop(room);
        if changed {
            self.changed.notify_waiters();
        }
        out
    }
}

impl Room {
    fn emit(&mut self, change: Change) {
        self.change_seq += 1;
        self.log.push_back((self.change_seq, change));
        if self.log.len() > CHANGE_LOG_LEN {
            self.log.pop_front();
        }
    }

    fn config(&self) -> Result<RoomConfig> {
        self.config.clone().ok_or(QueueError::NotConfigured)
    }

    fn view(&self, sid: &str) -> Result<SessionView> {
        let session = self.sessions.get(sid).ok_or(QueueError::UnknownSession)?;
        let lane = Lane::of_ticket(session.ticket).tickets();
        let position = match session.state {
            SessionState::Waiting => {
                Some(self.waiting.range(lane.start..session.ticket).count() as u64 + 1)
            }
            _ => None,
        };
        Ok(SessionView {
            session: session.clone(),
            position,
            waiting: self.waiting.range(lane).count() as u64,
        })
    }

    fn close(&mut self, sid: &str, reason: CloseReason, now: Millis) {
        let Some(session) = self.sessions.get_mut(sid) else {
            return;
        };
        session.state = SessionState::Closed(reason);
        if self.users.get(&session.user).map(String::as_str) == Some(sid) {
            self.users.remove(&session.user);
        }
        self.closed.insert((now, sid.to_owned()));
        self.addresses.release(sid);
    }

    fn remove_waiting(&mut self, sid: &str, reason: CloseReason, now: Millis) {
        let ticket = self.sessions[sid].ticket;
        self.waiting.remove(&ticket);
        self.seen.remove(sid);
        self.close(sid, reason, now);
        self.emit(Change::Dequeued {
            sid: sid.to_owned(),
            ticket,
            reason,
        });
    }

    fn end_active(&mut self, sid: &str, expires_at: Millis, reason: CloseReason, now: Millis) {
        self.active.remove(&(expires_at, sid.to_owned()));
        self.unclaimed.remove(sid);
        self.close(sid, reason, now);
        self.emit(Change::Ended {
            sid: sid.to_owned(),
            reason,
        });
    }

    fn admit(&mut self, sid: &str, config: &RoomConfig, now: Millis) {
        let expires_at = now + config.session_duration_ms;
        let Some(session) = self.sessions.get_mut(sid) else {
            return;
        };
        session.state = SessionState::Active {
            admitted_at: now,
            expires_at,
        };
        let (user, ticket) = (session.user.clone(), session.ticket);
        self.active.insert((expires_at, sid.to_owned()));
        if config.claim_window_ms > 0 {
            self.unclaimed
                .insert(sid.to_owned(), now + config.claim_window_ms);
        }
        if config.rate_limited() {
            self.admits.push_back(now);
        }
        self.admitted_total += 1;
        self.emit(Change::Admitted {
            sid: sid.to_owned(),
            user,
            ticket,
            admitted_at: now,
            expires_at,
        });
    }

    /// Admits up to `n` sessions from the front of the lanes, sharing
    /// them as `admit_front` in `lua/common.lua` does; returns how many.
    fn admit_front(&mut self, n: u64, config: &RoomConfig, now: Millis) -> u64 {
        let priority_waiting = self.waiting.range(Lane::Priority.tickets()).count() as u64;
        let general_waiting = self.waiting.len() as u64 - priority_waiting;
        let credit = self.lane_credit + n as f64 * f64::from(config.priority_share) / 100.0;
        let from_priority = priority_waiting.min(n).min(credit.floor() as u64);
        let from_general = general_waiting.min(n - from_priority);
        let from_priority = priority_waiting.min(n - from_general);
        self.lane_credit = (credit - from_priority as f64).clamp(0.0, 1.0);
        for (lane, count) in [
            (Lane::Priority, from_priority),
            (Lane::General, from_general),
        ] {
            let admitting: Vec<(u64, String)> = self
                .waiting
                .range(lane.tickets())
                .take(count as usize)
                .map(|(ticket, sid)| (*ticket, sid.clone()))
                .collect();
            for (ticket, sid) in admitting {
                self.waiting.remove(&ticket);
                self.seen.remove(&sid);
                self.admit(&sid, config, now);
            }
        }
        from_priority + from_general
    }

    /// Like `lua/admit_now.lua`.
    fn admit_now(&mut self, request: &str, count: u64, now: Millis) -> Result<AdmitNow> {
        let config = self.config()?;
        let open = self.opened && config.closes_at.is_none_or(|at| now < at);
        if self.admit_request.0 != request {
            let mut total = if open { count } else { 0 };
            if config.queueing != Queueing::Passthrough {
                total = total.min(config.capacity.saturating_sub(self.active.len() as u64));
            }
            self.admit_request = (request.to_owned(), total);
        }
        let left = self.admit_request.1;
        let admitted = if open {
            self.admit_front(left.min(TICK_BATCH as u64), &config, now)
        } else {
            0
        };
        self.admit_request.1 = left - admitted;
        Ok(AdmitNow {
            admitted,
            left: left - admitted,
        })
    }

    /// How many sessions the capacity, the rate window and the token bucket
    /// allow to be admitted now.
    fn admission_budget(&mut self, config: &RoomConfig, now: Millis) -> u64 {
        if config.queueing == Queueing::Passthrough {
            return TICK_BATCH as u64;
        }
        let mut budget = config.capacity.saturating_sub(self.active.len() as u64);
        if let Some(rate) = config.admission_rate {
            while self
                .admits
                .front()
                .is_some_and(|&t| t <= now - RATE_WINDOW_MS)
            {
                self.admits.pop_front();
            }
            budget = budget.min(rate.saturating_sub(self.admits.len() as u64));
            let burst = rate.div_ceil(60).max(1) as f64;
            let tokens = match self.tokens_at {
                None => burst,
                Some(at) => {
                    (self.tokens + (now - at).max(0) as f64 * rate as f64 / 60_000.0).min(burst)
                }
            };
            self.tokens = tokens;
            // Never moves back, so callers with skewed clocks cannot earn a second credit.
            self.tokens_at = Some(self.tokens_at.map_or(now, |at| at.max(now)));
            budget = budget.min(tokens.floor() as u64);
        }
        budget.min(TICK_BATCH as u64)
    }

    fn tick(&mut self, now: Millis, seed: &SealedSeed) -> Result<TickReport> {
        let config = self.config()?;
        let mut report = TickReport::default();
        if config.queueing == Queueing::Random && !self.opened {
            self.sealed.get_or_insert_with(|| seed.clone());
        }

        let expired: Vec<_> = self
            .active
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(TICK_BATCH)
            .cloned()
            .collect();
        report.more |= expired.len() == TICK_BATCH;
        for (at, sid) in expired {
            self.end_active(&sid, at, CloseReason::Expired, now);
            report.expired += 1;
        }
        report.unclaimed = self.end_unclaimed(&config, now, &mut report.more);

        let cutoff = now - config.abandon_timeout_ms;
        let mut abandoned: Vec<_> = self
            .seen
            .iter()
            .filter(|(_, at)| {
                self.presence_from < now - presence_grace_ms(config.abandon_timeout_ms)
                    && **at < cutoff
            })
            .map(|(sid, at)| (*at, sid.clone()))
            .collect();
        abandoned.sort();
        abandoned.truncate(TICK_BATCH);
        report.more |= abandoned.len() == TICK_BATCH;
        for (_, sid) in abandoned {
            self.remove_waiting(&sid, CloseReason::Abandoned, now);
            report.abandoned += 1;
        }

        self.addresses.forget_recovered(now);

        let forget: Vec<_> = self
            .closed
            .iter()
            .take_while(|(at, _)| {
                *at <= now - CLOSED_RECORD_RETENTION_MS.max(config.session_duration_ms)
            })
            .take(TICK_BATCH)
            .cloned()
            .collect();
        for entry in forget {
            self.closed.remove(&entry);
            self.sessions.remove(&entry.1);
        }

        if config.closes_at.is_some_and(|at| now >= at) {
            let closing: Vec<_> = self.waiting.values().take(TICK_BATCH).cloned().collect();
            report.more |= closing.len() == TICK_BATCH;
            for sid in closing {
                self.remove_waiting(&sid, CloseReason::RoomClosed, now);
                report.closed += 1;
            }
            return Ok(report);
        }
        if config.opens_at.is_some_and(|at| now < at) {
            return Ok(report);
        }
        if !self.opened {
            self.opened = true;
            if let (Queueing::Random, Some(sealed)) = (config.queueing, &self.sealed) {
                self.shuffle_line(sealed.seed, now);
            }
            self.emit(Change::Opened);
        }
        if config.paused {
            return Ok(report);
        }

        let budget = self.admission_budget(&config, now);
        report.admitted = self.admit_front(budget, &config, now);
        if config.rate_limited() {
            self.tokens -= report.admitted as f64;
        }
        report.more |= report.admitted == TICK_BATCH as u64;
        Ok(report)
    }

    /// Ends, as `unclaimed`, the admitted sessions whose claim deadline
    /// passed (in deadline order, like `lua/tick.lua`); returns how many.
    fn end_unclaimed(&mut self, config: &RoomConfig, now: Millis, more: &mut bool) -> u64 {
        if config.claim_window_ms == 0 {
            self.unclaimed.clear();
            return 0;
        }
        let mut lapsed: Vec<(Millis, String)> = self
            .unclaimed
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(sid, deadline)| (*deadline, sid.clone()))
            .collect();
        lapsed.sort();
        lapsed.truncate(TICK_BATCH);
        *more |= lapsed.len() == TICK_BATCH;
        for (_, sid) in &lapsed {
            self.end_unclaimed_session(sid, now);
        }
        lapsed.len() as u64
    }

    fn end_unclaimed_session(&mut self, sid: &str, now: Millis) {
        if let Some(SessionState::Active { expires_at, .. }) =
            self.sessions.get(sid).map(|s| s.state)
        {
            self.end_active(sid, expires_at, CloseReason::Unclaimed, now);
        }
    }

    /// Like `lua/claim.lua`.
    fn claim(&mut self, sid: &str, now: Millis) -> Result<ClaimOutcome> {
        if !self.sessions.contains_key(sid) {
            return Err(QueueError::UnknownSession);
        }
        let window_on = self.config.as_ref().is_some_and(|c| c.claim_window_ms > 0);
        let lapsed = self
            .unclaimed
            .remove(sid)
            .is_some_and(|deadline| window_on && deadline <= now);
        if lapsed {
            self.end_unclaimed_session(sid, now);
        }
        Ok(ClaimOutcome {
            view: self.view(sid)?,
            lapsed,
        })
    }

    /// Deals each lane's tickets out again in the order `seed` gives, and
    /// keeps the join list: every waiting ticket, in order.
    fn shuffle_line(&mut self, seed: u64, now: Millis) {
        self.shuffled = Some((now, self.waiting.keys().copied().collect()));
        for lane in [Lane::General, Lane::Priority] {
            let tickets: Vec<u64> = self
                .waiting
                .range(lane.tickets())
                .map(|(t, _)| *t)
                .collect();
            let mut sids: Vec<String> = tickets.iter().map(|t| self.waiting[t].clone()).collect();
            shuffle(&mut sids, seed);
            for (ticket, sid) in tickets.into_iter().zip(sids) {
                if let Some(session) = self.sessions.get_mut(&sid) {
                    session.ticket = ticket;
                }
                self.waiting.insert(ticket, sid);
            }
        }
    }

    fn join(&mut self, request: &JoinRequest<'_>, now: Millis) -> Result<JoinOutcome> {
        let JoinRequest {
            user,
            new_sid,
            address,
            lane,
            invite,
        } = *request;
        let config = self.config()?;
        if let Some(sid) = self.users.get(user).cloned() {
            if let Some(seen) = self.seen.get_mut(&sid) {
                *seen = (*seen).max(now);
            }
            return Ok(JoinOutcome {
                view: self.view(&sid)?,
                created: false,
            });
        }
        if config.queueing == Queueing::Reject {
            return Err(QueueError::Rejected);
        }
        if config.closes_at.is_some_and(|at| now >= at) {
            return Err(QueueError::RoomClosed);
        }
        // Every check comes before any change, so a refused join changes nothing.
        if invite.is_some_and(|code| !self.invites.contains(code)) {
            return Err(QueueError::InvalidInvite);
        }
        if let Some(address) = address {
            self.addresses.take_place(address, &config, now)?;
            self.addresses.count(new_sid, address);
        }
        if let Some(code) = invite {
            self.invites.remove(code);
            self.redeemed.insert(code.to_owned());
        }
        self.next_ticket += 1;
        let ticket = match lane {
            Lane::General => self.next_ticket,
            Lane::Priority => PRIORITY_BASE + self.next_ticket,
        };
        self.users.insert(user.to_owned(), new_sid.to_owned());
        self.sessions.insert(
            new_sid.to_owned(),
            Session {
                id: new_sid.to_owned(),
                user: user.to_owned(),
                ticket,
                state: SessionState::Waiting,
            },
        );
        if config.queueing == Queueing::Passthrough {
            self.admit(new_sid, &config, now);
        } else {
            self.waiting.insert(ticket, new_sid.to_owned());
            self.seen.insert(new_sid.to_owned(), now);
            self.emit(Change::Joined { ticket });
        }
        Ok(JoinOutcome {
            view: self.view(new_sid)?,
            created: true,
        })
    }

    fn leave(&mut self, sid: &str, now: Millis) -> Result<SessionView> {
        let session = self.sessions.get(sid).ok_or(QueueError::UnknownSession)?;
        match session.state {
            SessionState::Waiting => self.remove_waiting(sid, CloseReason::Left, now),
            SessionState::Active { expires_at, .. } => {
                self.end_active(sid, expires_at, CloseReason::Left, now)
            }
            SessionState::Closed(_) => {}
        }
        self.view(sid)
    }

    /// Ends an active session for the checkout (`completed` or `revoked`);
    /// again with the same reason is harmless, like `lua/finish.lua`.
    fn finish(&mut self, sid: &str, reason: CloseReason, now: Millis) -> Result<SessionView> {
        let session = self.sessions.get(sid).ok_or(QueueError::UnknownSession)?;
        match session.state {
            SessionState::Active { expires_at, .. } => {
                self.end_active(sid, expires_at, reason, now)
            }
            SessionState::Closed(ended) if ended == reason => {}
            _ => return Err(QueueError::NotActive),
        }
        self.view(sid)
    }

    /// Like `lua/extend.lua`.
    fn extend(&mut self, sid: &str, for_ms: Millis, now: Millis) -> Result<SessionView> {
        let longest = self
            .config
            .as_ref()
            .map_or(0, RoomConfig::longest_session_ms);
        let session = self
            .sessions
            .get_mut(sid)
            .ok_or(QueueError::UnknownSession)?;
        let SessionState::Active {
            admitted_at,
            expires_at,
        } = session.state
        else {
            return Err(QueueError::NotActive);
        };
        if expires_at <= now {
            return Err(QueueError::NotActive);
        }
        let extended = (now + for_ms).min(admitted_at + longest);
        if extended > expires_at {
            session.state = SessionState::Active {
                admitted_at,
                expires_at: extended,
            };
            let user = session.user.clone();
            self.active.remove(&(expires_at, sid.to_owned()));
            self.active.insert((extended, sid.to_owned()));
            self.emit(Change::Extended {
                sid: sid.to_owned(),
                user,
                admitted_at,
                expires_at: extended,
            });
        }
        self.view(sid)
    }

    /// Like `lua/spend_proof.lua`.
    fn spend_proof(&mut self, id: &str, expires_at: Millis, now: Millis) -> bool {
        while let Some((at, _)) = self.spent_proofs_expiry.first()
            && *at <= now
            && let Some((_, expired)) = self.spent_proofs_expiry.pop_first()
        {
            self.spent_proofs.remove(&expired);
        }
        if !self.spent_proofs.insert(id.to_owned()) {
            return false;
        }
        self.spent_proofs_expiry.insert((expires_at, id.to_owned()));
        true
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn configure(&self, config: &RoomConfig) -> Result<bool> {
        Ok(self.with_room(|r| {
            r.purged = false;
            if r.config
                .as_ref()
                .is_some_and(|c| c.revision > config.revision)
            {
                return false;
            }
            r.config = Some(config.clone());
            r.emit(Change::Reconfigured);
            true
        }))
    }

    async fn restore(&self, config: &RoomConfig) -> Result<bool> {
        self.with_room(|r| {
            if r.purged {
                return Err(QueueError::NotConfigured);
            }
            if r.config.is_some() {
                return Ok(false);
            }
            r.config = Some(config.clone());
            r.emit(Change::Reconfigured);
            Ok(true)
        })
    }

    async fn config(&self) -> Result<Option<RoomConfig>> {
        Ok(self.with_room(|r| r.config.clone()))
    }

    async fn join(&self, request: &JoinRequest<'_>, now: Millis) -> Result<JoinOutcome> {
        self.with_room(|r| r.join(request, now))
    }

    async fn add_invites(&self, hashes: &[String]) -> Result<u64> {
        self.with_room(|r| {
            let fresh = hashes.iter().filter(|h| !r.redeemed.contains(*h));
            Ok(fresh.filter(|h| r.invites.insert((*h).clone())).count() as u64)
        })
    }

    async fn session(&self, sid: &str, touch: Option<Millis>) -> Result<SessionView> {
        self.with_room(|r| {
            if let (Some(now), Some(seen)) = (touch, r.seen.get_mut(sid)) {
                *seen = (*seen).max(now);
            }
            r.view(sid)
        })
    }

    async fn leave(&self, sid: &str, now: Millis) -> Result<SessionView> {
        self.with_room(|r| r.leave(sid, now))
    }

    async fn complete(&self, sid: &str, now: Millis) -> Result<SessionView> {
        self.with_room(|r| r.finish(sid, CloseReason::Completed, now))
    }

    async fn revoke(&self, sid: &str, now: Millis) -> Result<SessionView> {
        self.with_room(|r| r.finish(sid, CloseReason::Revoked, now))
    }

    async fn admit_now(&self, request: &str, count: u64, now: Millis) -> Result<AdmitNow> {
        self.with_room(|r| r.admit_now(request, count, now))
    }

    async fn extend(&self, sid: &str, for_ms: Millis, now: Millis) -> Result<SessionView> {
        self.with_room(|r| r.extend(sid, for_ms, now))
    }

    async fn claim(&self, sid: &str, now: Millis) -> Result<ClaimOutcome> {
        self.with_room(|r| r.claim(sid, now))
    }

    async fn touch(&self, sids: &[String], now: Millis) -> Result<()> {
        self.with_room(|r| {
            for sid in sids {
                if let Some(seen) = r.seen.get_mut(sid) {
                    *seen = (*seen).max(now);
                }
            }
        });
        Ok(())
    }

    async fn presence_lapsed(&self, now: Millis) -> Result<()> {
        self.with_room(|r| r.presence_from = r.presence_from.max(now));
        Ok(())
    }

    async fn tick(&self, now: Millis, seed: &SealedSeed) -> Result<TickReport> {
        self.with_room(|r| r.tick(now, seed))
    }

    async fn counts(&self) -> Result<RoomCounts> {
        Ok(self.with_room(|r| RoomCounts {
            waiting: r.waiting.len() as u64,
            active: r.active.len() as u64,
            admitted_total: r.admitted_total,
            opened: r.opened,
        }))
    }

    async fn fairness(&self) -> Result<Option<Fairness>> {
        Ok(self.with_room(|r| {
            let sealed = r.sealed.as_ref()?;
            Some(Fairness {
                commitment: sealed.commitment.clone(),
                revealed: r.shuffled.as_ref().map(|(at, joins)| {
                    let general = joins.partition_point(|t| Lane::of_ticket(*t) == Lane::General);
                    Revealed {
                        seed: sealed.seed,
                        salt: sealed.salt.clone(),
                        shuffled_at: *at,
                        general: general as u64,
                        priority: (joins.len() - general) as u64,
                    }
                }),
            })
        }))
    }

    async fn joins(&self, offset: u64, limit: u64) -> Result<Vec<u64>> {
        Ok(self.with_room(|r| {
            r.shuffled.as_ref().map_or_else(Vec::new, |(_, joins)| {
                let skip = usize::try_from(offset).unwrap_or(usize::MAX);
                let take = usize::try_from(limit).unwrap_or(usize::MAX);
                joins.iter().skip(skip).take(take).copied().collect()
            })
        }))
    }

    async fn snapshot(&self) -> Result<LineSnapshot> {
        Ok(self.with_room(|r| LineSnapshot {
            cursor: r.change_seq.to_string(),
            seq: r.change_seq,
            waiting: r.waiting.iter().map(|(t, s)| (s.clone(), *t)).collect(),
            closed: r.closed.iter().map(|(_, sid)| sid.clone()).collect(),
        }))
    }

    async fn changes(&self, cursor: &str, max: usize, block: Duration) -> Result<ChangeBatch> {
        let after: u64 = if cursor == LATEST {
            self.with_room(|r| r.change_seq)
        } else {
            cursor
                .parse()
                .map_err(|_| QueueError::Malformed(format!("bad cursor {cursor:?}")))?
        };
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let notified = self.changed.notified();
            let batch = self.with_room(|r| {
                // Sequence numbers in the log are consecutive.
                let first = r.log.front().map_or(after + 1, |(seq, _)| *seq);
                let skip = (after + 1).saturating_sub(first) as usize;
                let changes: Vec<_> = r.log.iter().skip(skip).take(max).cloned().collect();
                let cursor = changes.last().map_or(after, |(seq, _)| *seq);
                ChangeBatch {
                    cursor: cursor.to_string(),
                    changes,
                }
            });
            if !batch.changes.is_empty() {
                return Ok(batch);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(batch);
            }
        }
    }

    async fn report_broker(&self, broker_id: &str, connected: u64, now: Millis) -> Result<()> {
        self.with_room(|r| r.brokers.insert(broker_id.to_owned(), (connected, now)));
        Ok(())
    }

    async fn connected(&self, since: Millis) -> Result<u64> {
        Ok(self.with_room(|r| {
            r.brokers
                .values()
                .filter(|(_, at)| *at >= since)
                .map(|(n, _)| n)
                .sum()
        }))
    }

    async fn purge(&self) -> Result<()> {
        self.with_room(|r| {
            *r = Room {
                purged: true,
                ..Room::default()
            }
        });
        Ok(())
    }

    async fn spend_proof(&self, id: &str, expires_at: Millis, now: Millis) -> Result<bool> {
        Ok(self.with_room(|r| r.spend_proof(id, expires_at, now)))
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
