//! A deliberately naive reference model of the queue semantics (linear
//! scans, no indexes), and a driver that runs random operations against a
//! store and the model side by side.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::shuffle::shuffle;
use super::super::*;

struct Entry {
    session: Session,
    seen: Millis,
    /// The claim deadline of an admitted session not yet claimed.
    claim_by: Option<Millis>,
}

struct Model {
    config: RoomConfig,
    entries: Vec<Entry>,
    opened: bool,
    admitted_total: u64,
    admits: Vec<Millis>,
    tokens: Option<(f64, Millis)>,
    presence_from: Millis,
    admit_request: (String, u64),
    /// The sealed seed, and the shuffle's time and join list once it ran.
    sealed: Option<SealedSeed>,
    shuffled: Option<(Millis, Vec<u64>)>,
}

impl Model {
    fn waiting(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| e.session.state == SessionState::Waiting)
    }

    fn active_count(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| matches!(e.session.state, SessionState::Active { .. }))
            .count() as u64
    }

    fn find(&mut self, sid: &str) -> Result<&mut Entry> {
        self.entries
            .iter_mut()
            .find(|e| e.session.id == sid)
            .ok_or(QueueError::UnknownSession)
    }

    fn view(&self, sid: &str) -> Result<SessionView> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.session.id == sid)
            .ok_or(QueueError::UnknownSession)?;
        let position = (entry.session.state == SessionState::Waiting).then(|| {
            1 + self
                .waiting()
                .filter(|e| e.session.ticket < entry.session.ticket)
                .count() as u64
        });
        Ok(SessionView {
            session: entry.session.clone(),
            position,
            waiting: self.waiting().count() as u64,
        })
    }

    fn admit(&mut self, sid: &str, now: Millis) {
        let duration = self.config.session_duration_ms;
        let window = self.config.claim_window_ms;
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.session.id == sid)
            .unwrap();
        entry.session.state = SessionState::Active {
            admitted_at: now,
            expires_at: now + duration,
        };
        entry.claim_by = (window > 0).then_some(now + window);
        self.admitted_total += 1;
        if self.config.rate_limited() {
            self.admits.push(now);
        }
    }

    fn join(&mut self, user: &str, sid: &str, now: Millis) -> Result<JoinOutcome> {
        let live = self.entries.iter_mut().find(|e| {
            e.session.user == user && !matches!(e.session.state, SessionState::Closed(_))
        });
        if let Some(entry) = live {
            entry.seen = entry.seen.max(now);
            let id = entry.session.id.clone();
            return Ok(JoinOutcome {
                view: self.view(&id)?,
                created: false,
            });
        }
        if self.config.queueing == Queueing::Reject {
            return Err(QueueError::Rejected);
        }
        if self.config.closes_at.is_some_and(|at| now >= at) {
            return Err(QueueError::RoomClosed);
        }
        let ticket = self.entries.len() as u64 + 1;
        let session = Session {
            id: sid.into(),
            user: user.into(),
            ticket,
            state: SessionState::Waiting,
        };
        self.entries.push(Entry {
            session,
            seen: now,
            claim_by: None,
        });
        if self.config.queueing == Queueing::Passthrough {
            self.admit(sid, now);
        }
        Ok(JoinOutcome {
            view: self.view(sid)?,
            created: true,
        })
    }

    fn end(&mut self, sid: &str, reason: CloseReason) {
        let entry = self.find(sid).unwrap();
        entry.session.state = SessionState::Closed(reason);
        entry.claim_by = None;
    }

    /// The visitor reached the gate: a lapsed claim ends the session.
    fn claim(&mut self, sid: &str, now: Millis) -> Result<ClaimOutcome> {
        let window_on = self.config.claim_window_ms > 0;
        let lapsed = self
            .find(sid)?
            .claim_by
            .take()
            .is_some_and(|deadline| window_on && deadline <= now);
        if lapsed {
            self.end(sid, CloseReason::Unclaimed);
        }
        Ok(ClaimOutcome {
            view: self.view(sid)?,
            lapsed,
        })
    }

    fn leave(&mut self, sid: &str) -> Result<SessionView> {
        if !matches!(self.find(sid)?.session.state, SessionState::Closed(_)) {
            self.end(sid, CloseReason::Left);
        }
        self.view(sid)
    }

    /// Complete or revoke: ends an active session with `reason`.
    fn finish(&mut self, sid: &str, reason: CloseReason) -> Result<SessionView> {
        match self.find(sid)?.session.state {
            SessionState::Active { .. } => self.end(sid, reason),
            SessionState::Closed(ended) if ended == reason => {}
            _ => return Err(QueueError::NotActive),
        }
        self.view(sid)
    }

    fn admit_front(&mut self, n: u64, now: Millis) -> u64 {
        let mut line: Vec<(u64, String)> = self
            .waiting()
            .map(|e| (e.session.ticket, e.session.id.clone()))
            .collect();
        line.sort();
        let admitting: Vec<String> = line.into_iter().take(n as usize).map(|(_, s)| s).collect();
        for sid in &admitting {
            self.admit(sid, now);
        }
        admitting.len() as u64
    }

    fn admit_now(&mut self, request: &str, count: u64, now: Millis) -> AdmitNow {
        let open = self.opened && self.config.closes_at.is_none_or(|at| now < at);
        if self.admit_request.0 != request {
            let mut total = if open { count } else { 0 };
            if self.config.queueing != Queueing::Passthrough {
                total = total.min(self.config.capacity.saturating_sub(self.active_count()));
            }
            self.admit_request = (request.to_owned(), total);
        }
        let left = self.admit_request.1;
        let admitted = if open {
            self.admit_front(left.min(TICK_BATCH as u64), now)
        } else {
            0
        };
        self.admit_request.1 = left - admitted;
        AdmitNow {
            admitted,
            left: left - admitted,
        }
    }

    fn extend(&mut self, sid: &str, for_ms: Millis, now: Millis) -> Result<SessionView> {
        let longest = self.config.longest_session_ms();
        let entry = self.find(sid)?;
        match entry.session.state {
            SessionState::Active {
                admitted_at,
                expires_at,
            } if expires_at > now => {
                let extended = (now + for_ms).min(admitted_at + longest).max(expires_at);
                entry.session.state = SessionState::Active {
                    admitted_at,
                    expires_at: extended,
                };
            }
            _ => return Err(QueueError::NotActive),
        }
        self.view(sid)
    }

    fn touch(&mut self, sid: &str, now: Millis) {
        if let Ok(entry) = self.find(sid)
            && entry.session.state == SessionState::Waiting
        {
            entry.seen = entry.seen.max(now);
        }
    }

    fn tick(&mut self, now: Millis, seed: &SealedSeed) -> TickReport {
        let mut report = TickReport::default();
        if self.config.queueing == Queueing::Random && !self.opened && self.sealed.is_none() {
            self.sealed = Some(seed.clone());
        }
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|e| matches!(e.session.state, SessionState::Active { expires_at, .. } if expires_at <= now))
            .map(|e| e.session.id.clone())
            .collect();
        for sid in expired {
            self.end(&sid, CloseReason::Expired);
            report.expired += 1;
        }
        let lapsed: Vec<String> = self
            .entries
            .iter()
            .filter_map(|e| {
                let lapsed = e.claim_by.is_some_and(|at| at <= now);
                (lapsed && self.config.claim_window_ms > 0).then(|| e.session.id.clone())
            })
            .collect();
        if self.config.claim_window_ms == 0 {
            self.entries.iter_mut().for_each(|e| e.claim_by = None);
        }
        for sid in lapsed {
            self.end(&sid, CloseReason::Unclaimed);
            report.unclaimed += 1;
        }
        let absent: Vec<String> = self
            .waiting()
            .filter(|e| {
                e.seen < now - self.config.abandon_timeout_ms
                    && self.presence_from
                        < now - super::super::presence_grace_ms(self.config.abandon_timeout_ms)
            })
            .map(|e| e.session.id.clone())
            .collect();
        for sid in absent {
            self.end(&sid, CloseReason::Abandoned);
            report.abandoned += 1;
        }
        if self.config.closes_at.is_some_and(|at| now >= at) {
            let rest: Vec<String> = self.waiting().map(|e| e.session.id.clone()).collect();
            for sid in rest {
                self.end(&sid, CloseReason::RoomClosed);
                report.closed += 1;
            }
            return report;
        }
        if self.config.opens_at.is_some_and(|at| now < at) {
            return report;
        }
        if !self.opened {
            self.opened = true;
            if self.config.queueing == Queueing::Random {
                let mut line: Vec<(u64, String)> = self
                    .waiting()
                    .map(|e| (e.session.ticket, e.session.id.clone()))
                    .collect();
                line.sort();
                let tickets: Vec<u64> = line.iter().map(|(t, _)| *t).collect();
                let mut sids: Vec<String> = line.into_iter().map(|(_, s)| s).collect();
                shuffle(&mut sids, self.sealed.as_ref().unwrap().seed);
                self.shuffled = Some((now, tickets.clone()));
                for (ticket, sid) in tickets.into_iter().zip(sids) {
                    self.find(&sid).unwrap().session.ticket = ticket;
                }
            }
        }
        if self.config.paused {
            return report;
        }
        let mut budget = u64::MAX;
        if self.config.queueing != Queueing::Passthrough {
            budget = self.config.capacity.saturating_sub(self.active_count());
            if let Some(rate) = self.config.admission_rate {
                self.admits.retain(|&t| t > now - RATE_WINDOW_MS);
                budget = budget.min(rate.saturating_sub(self.admits.len() as u64));
                let burst = rate.div_ceil(60).max(1) as f64;
                let tokens = match self.tokens {
                    None => burst,
                    Some((tokens, at)) => {
                        (tokens + (now - at).max(0) as f64 * rate as f64 / 60_000.0).min(burst)
                    }
                };
                budget = budget.min(tokens.floor() as u64);
                let at = self.tokens.map_or(now, |(_, at)| at.max(now));
                self.tokens = Some((tokens, at));
            }
        }
        report.admitted = self.admit_front(budget.min(TICK_BATCH as u64), now);
        if self.config.rate_limited()
            && let Some((tokens, at)) = self.tokens
        {
            self.tokens = Some((tokens - report.admitted as f64, at));
        }
        report
    }

    fn fairness(&self) -> Option<Fairness> {
        let sealed = self.sealed.as_ref()?;
        Some(Fairness {
            commitment: sealed.commitment.clone(),
            revealed: self.shuffled.as_ref().map(|(at, joins)| Revealed {
                seed: sealed.seed,
                salt: sealed.salt.clone(),
                shuffled_at: *at,
                general: joins.len() as u64,
                priority: 0,
            }),
        })
    }

    fn counts(&self) -> RoomCounts {
        RoomCounts {
            waiting: self.waiting().count() as u64,
            active: self.active_count(),
            admitted_total: self.admitted_total,
            opened: self.opened,
        }
    }
}

fn random_config(rng: &mut StdRng, base: &RoomConfig) -> RoomConfig {
    RoomConfig {
        capacity: rng.gen_range(0..4),
        admission_rate: rng.gen_bool(0.3).then_some(30),
        claim_window_ms: if rng.gen_bool(0.5) { 25_000 } else { 0 },
        paused: rng.gen_bool(0.2),
        queueing: match rng.gen_range(0..10) {
            0 => Queueing::Passthrough,
            1 => Queueing::Reject,
            _ => base.queueing,
        },
        ..base.clone()
    }
}

/// Runs `steps` random operations from `seed` on `store` and on the model,
/// asserting after each that both gave the same answer and counts.
/// Returns what the ticks did in total, so callers can check the run
/// reached every kind of transition.
pub async fn run(store: &dyn Store, seed: u64, steps: usize) -> TickReport {
    let mut total = TickReport::default();
    let mut rng = StdRng::seed_from_u64(seed);
    let t0: Millis = 1_800_000_000_000 + seed as Millis * 10_000_000;
    let mut now = t0;
    let base = RoomConfig {
        capacity: 2,
        admission_rate: None,
        session_duration_ms: 90_000,
        queueing: if seed.is_multiple_of(2) {
            Queueing::Random
        } else {
            Queueing::Fifo
        },
        opens_at: (!seed.is_multiple_of(3)).then_some(t0 + 30_000),
        closes_at: (seed % 4 == 1).then_some(t0 + 500_000),
        paused: false,
        abandon_timeout_ms: 60_000,
        claim_window_ms: if seed % 3 == 2 { 0 } else { 40_000 },
        max_session_duration_ms: if seed.is_multiple_of(2) { 150_000 } else { 0 },
        message: String::new(),
        joins_per_address_per_minute: 0,
        sessions_per_address: 0,
        priority_share: 100,
        revision: 0,
        proof_of_work_bits: 0,
    };
    store.configure(&base).await.unwrap();
    let mut model = Model {
        config: base.clone(),
        entries: Vec::new(),
        opened: false,
        admitted_total: 0,
        admits: Vec::new(),
        tokens: None,
        presence_from: 0,
        admit_request: (String::new(), 0),
        sealed: None,
        shuffled: None,
    };
    let room_tag = format!("r{seed}-");
    let mut sids: Vec<String> = Vec::new();
    for step in 0..steps {
        let pick = |rng: &mut StdRng, sids: &[String]| -> String {
            if sids.is_empty() || rng.gen_bool(0.05) {
                "missing".into()
            } else {
                sids[rng.gen_range(0..sids.len())].clone()
            }
        };
        let context = format!("seed {seed} step {step}");
        match rng.gen_range(0..100) {
            0..=34 => {
                let user = format!("user{}", rng.gen_range(0..12));
                let sid = format!("{room_tag}{step}");
                let got = store.join(&JoinRequest::new(&user, &sid), now).await;
                let want = model.join(&user, &sid, now);
                assert_eq!(got, want, "join {user}: {context}");
                if matches!(got, Ok(JoinOutcome { created: true, .. })) {
                    sids.push(sid);
                }
            }
            35..=44 => {
                let sid = pick(&mut rng, &sids);
                assert_eq!(
                    store.leave(&sid, now).await,
                    model.leave(&sid),
                    "leave: {context}"
                );
            }
            45..=49 => {
                let sid = pick(&mut rng, &sids);
                assert_eq!(
                    store.complete(&sid, now).await,
                    model.finish(&sid, CloseReason::Completed),
                    "complete: {context}"
                );
            }
            50..=52 => {
                let sid = pick(&mut rng, &sids);
                assert_eq!(
                    store.revoke(&sid, now).await,
                    model.finish(&sid, CloseReason::Revoked),
                    "revoke: {context}"
                );
            }
            53..=57 => {
                let sid = pick(&mut rng, &sids);
                assert_eq!(
                    store.claim(&sid, now).await,
                    model.claim(&sid, now),
                    "claim: {context}"
                );
            }
            58..=60 => {
                let sid = pick(&mut rng, &sids);
                let for_ms = rng.gen_range(1..200_000);
                assert_eq!(
                    store.extend(&sid, for_ms, now).await,
                    model.extend(&sid, for_ms, now),
                    "extend: {context}"
                );
            }
            61 => {
                // Now and then the same request again.
                let request = format!("request-{}", rng.gen_range(0..3));
                let count = rng.gen_range(1..4);
                assert_eq!(
                    store.admit_now(&request, count, now).await,
                    Ok(model.admit_now(&request, count, now)),
                    "admit now: {context}"
                );
            }
            62..=64 => {
                let sid = pick(&mut rng, &sids);
                model.touch(&sid, now);
                assert_eq!(
                    store.session(&sid, Some(now)).await,
                    model.view(&sid),
                    "poll: {context}"
                );
            }
            65..=69 => {
                let chosen: Vec<String> =
                    sids.iter().filter(|_| rng.gen_bool(0.5)).cloned().collect();
                for sid in &chosen {
                    model.touch(sid, now);
                }
                store.touch(&chosen, now).await.unwrap();
            }
            70..=94 => {
                now += rng.gen_range(0..20_000);
                let seed = SealedSeed::new(rng.r#gen::<u32>().into(), format!("salt-{step}"));
                let got = store.tick(now, &seed).await.unwrap();
                let active_before_admission = model.active_count();
                let want = model.tick(now, &seed);
                assert_eq!(got, want, "tick: {context}");
                super::add(&mut total, &want);
                if want.admitted > 0 && model.config.queueing != Queueing::Passthrough {
                    assert!(
                        model.active_count() <= model.config.capacity.max(active_before_admission),
                        "over capacity: {context}"
                    );
                }
            }
            95..=96 => {
                model.presence_from = model.presence_from.max(now);
                store.presence_lapsed(now).await.unwrap();
            }
            _ => {
                let config = random_config(&mut rng, &base);
                store.configure(&config).await.unwrap();
                model.config = config;
            }
        }
        assert_eq!(
            store.counts().await.unwrap(),
            model.counts(),
            "counts: {context}"
        );
        assert_eq!(
            store.fairness().await.unwrap(),
            model.fairness(),
            "fairness: {context}"
        );
    }
    let joins = model.shuffled.map(|(_, joins)| joins).unwrap_or_default();
    assert_eq!(store.joins(0, u64::MAX).await.unwrap(), joins, "joins");
    total
}
