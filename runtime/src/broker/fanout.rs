//! The broker's connected sessions and how news reaches them.
//!
//! Each session with at least one open stream has a subscriber: its ticket
//! and a `watch` channel holding the latest frame for it. The change-stream
//! follower applies changes to the local line and ends subscribers that were
//! admitted or closed; a timer broadcasts positions. A broadcast costs no
//! store call at all: positions come from the local line.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

use super::ended::EndedSessions;
use super::line::LocalLine;
use super::sse::{self, ClosedData, Frame, PositionData};
use crate::metrics::{EventKind, Metrics};
use crate::queue::{Change, CloseReason, Lane, LineSnapshot, Millis, Phase, RoomConfig};

type FrameSender = watch::Sender<Option<Arc<Frame>>>;
pub type FrameReceiver = watch::Receiver<Option<Arc<Frame>>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    /// Connected, state not known yet.
    Unknown,
    Waiting {
        ticket: u64,
    },
    /// Admitted or closed: position updates no longer apply.
    Settled,
}

struct Subscriber {
    standing: Standing,
    streams: usize,
    /// (position, eta) last sent, to skip unchanged updates.
    last_sent: Option<(u64, Option<u64>)>,
    frames: FrameSender,
}

/// What happened to a connected session, for the follower to tell it.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    /// Admitted, or (`extended`) already admitted and now holding the slot
    /// until a later `expires_at`.
    Admitted {
        sid: String,
        user: String,
        admitted_at: Millis,
        expires_at: Millis,
        extended: bool,
    },
    Closed {
        sid: String,
        reason: CloseReason,
    },
}

#[derive(Default)]
struct State {
    line: LocalLine,
    /// The line has been loaded from a snapshot at least once.
    synced: bool,
    /// Counts loads; a store read begun before a load may be stale.
    generation: u64,
    /// Bumped on every applied change; a broadcast runs only when it moved.
    version: u64,
    broadcast_version: u64,
    /// Numbers broadcasts; the SSE `id` of position events.
    broadcasts: u64,
    subscribers: HashMap<String, Subscriber>,
    config: Option<RoomConfig>,
    /// Admission instants of the last minute, for the ETA.
    recent_admissions: VecDeque<Millis>,
}

pub struct Fanout {
    state: Mutex<State>,
    /// Read by every gate check: kept out of `state`'s lock.
    ended: EndedSessions,
    claim_window_ms: AtomicI64,
    metrics: Arc<Metrics>,
}

/// An open stream's hold on its session; dropping it unsubscribes.
pub struct Subscription {
    pub frames: FrameReceiver,
    sid: String,
    fanout: Arc<Fanout>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.fanout.metrics.connections.fetch_sub(1, Relaxed);
        let mut state = self.fanout.lock();
        if let Some(sub) = state.subscribers.get_mut(&self.sid) {
            sub.streams -= 1;
            if sub.streams == 0 {
                state.subscribers.remove(&self.sid);
            }
        }
    }
}

const ETA_WINDOW_MS: Millis = 60_000;
/// The most streams one session may hold on a broker at once: a few tabs
/// and a reconnect racing its predecessor's teardown, but not a flood that
/// would inflate the connection count the operator scales by.
pub const MAX_STREAMS_PER_SESSION: usize = 4;

impl State {
    fn priority_share(&self) -> u8 {
        self.config.as_ref().map_or(100, |c| c.priority_share)
    }

    /// The waiting `ticket`'s position, its lane's length, and about how
    /// many admissions come before its own (see
    /// [`super::line::LaneLengths::admissions_before`]).
    fn standing_of(&self, ticket: u64) -> (u64, u64, u64) {
        let (lane, position, lengths) = (
            Lane::of_ticket(ticket),
            self.line.position(ticket),
            self.line.lengths(),
        );
        let ahead = lengths.admissions_before(lane, position, self.priority_share());
        (position, lengths.of(lane), ahead)
    }

    /// Admissions per second to estimate waits with: the observed rate (the
    /// rules' nominal rate until a few admissions were seen); `None` while
    /// the room admits nobody. Computed once per broadcast, not per visitor.
    fn admission_pace(&self, now: Millis) -> Option<f64> {
        let config = self.config.as_ref()?;
        if config.phase(now) != Phase::Open {
            return None;
        }
        let recent = &self.recent_admissions;
        let per_second = if recent.len() >= 5 {
            let since = recent.front().copied().unwrap_or(now);
            recent.len() as f64 / ((now - since).max(1_000) as f64 / 1000.0)
        } else {
            config.nominal_admissions_per_second()
        };
        (per_second > 0.0).then_some(per_second)
    }
}

/// Seconds until `position` is admitted at `pace` admissions per second.
fn eta(pace: Option<f64>, position: u64) -> Option<u64> {
    pace.map(|per_second| (position as f64 / per_second).ceil() as u64)
}

impl Fanout {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Fanout {
            state: Mutex::new(State::default()),
            ended: EndedSessions::default(),
            claim_window_ms: AtomicI64::new(0),
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the room's rules. Changed rules (a pause, a new rate) change
    /// the waits shown, so the next broadcast sends every position again.
    pub fn set_config(&self, config: RoomConfig) {
        self.claim_window_ms.store(config.claim_window_ms, Relaxed);
        let mut state = self.lock();
        if state.config.as_ref() != Some(&config) {
            state.version += 1;
        }
        state.config = Some(config);
    }

    /// The room's claim window as this broker last read its rules (0: none).
    pub fn claim_window_ms(&self) -> Millis {
        self.claim_window_ms.load(Relaxed)
    }

    /// Seconds until `position` is admitted, as shown to users.
    pub fn eta(&self, position: u64, now: Millis) -> Option<u64> {
        eta(self.lock().admission_pace(now), position)
    }

    /// Seconds until the session waiting with `ticket` at `position` (as
    /// the store said) is admitted, counting the other lane's share.
    pub fn eta_of(&self, ticket: u64, position: u64, now: Millis) -> Option<u64> {
        let state = self.lock();
        let ahead = if state.synced {
            state.standing_of(ticket).2
        } else {
            position
        };
        eta(state.admission_pace(now), ahead)
    }

    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    pub fn is_synced(&self) -> bool {
        self.lock().synced
    }

    /// Whether `sid` ended (completed, revoked, expired, left): its entry
    /// token no longer opens the gate.
    pub fn has_ended(&self, sid: &str) -> bool {
        self.ended.contains(sid)
    }

    /// The local line may have missed changes: not synced until reloaded.
    pub fn mark_stale(&self) {
        self.lock().synced = false;
    }

    /// Opens a stream's hold on `sid`. The receiver first yields the
    /// session's current frame, if any. `None` when the session already
    /// holds [`MAX_STREAMS_PER_SESSION`] streams.
    pub fn subscribe(self: &Arc<Self>, sid: &str) -> Option<Subscription> {
        let mut state = self.lock();
        if state
            .subscribers
            .get(sid)
            .is_some_and(|sub| sub.streams >= MAX_STREAMS_PER_SESSION)
        {
            return None;
        }
        self.metrics.connections.fetch_add(1, Relaxed);
        let sub = state
            .subscribers
            .entry(sid.to_owned())
            .or_insert_with(|| Subscriber {
                standing: Standing::Unknown,
                streams: 0,
                last_sent: None,
                frames: watch::Sender::new(None),
            });
        sub.streams += 1;
        let mut frames = sub.frames.subscribe();
        frames.mark_changed();
        Some(Subscription {
            frames,
            sid: sid.to_owned(),
            fanout: Arc::clone(self),
        })
    }

    /// Records that `sid` waits with `ticket` and sends its position now.
    /// `store_position` is used until the local line is loaded.
    /// `generation` is [`Fanout::generation`] from before the store read: if
    /// the line was reloaded since, the read may predate a shuffle or an
    /// admission, and the reload re-reads the session anyway.
    pub fn set_waiting(
        &self,
        sid: &str,
        ticket: u64,
        (store_position, store_waiting): (u64, u64),
        generation: u64,
        now: Millis,
    ) {
        let mut state = self.lock();
        if state.generation != generation {
            return;
        }
        let Some(sub) = state.subscribers.get(sid) else {
            return;
        };
        if sub.standing == Standing::Settled {
            return;
        }
        let (position, waiting, ahead) = if state.synced {
            state.standing_of(ticket)
        } else {
            (store_position, store_waiting, store_position)
        };
        let eta = eta(state.admission_pace(now), ahead);
        let frame = PositionData {
            position,
            waiting,
            eta_seconds: eta,
        }
        .frame(state.broadcasts);
        let sub = state
            .subscribers
            .get_mut(sid)
            .unwrap_or_else(|| unreachable!("checked above"));
        sub.standing = Standing::Waiting { ticket };
        sub.last_sent = Some((position, eta));
        sub.frames.send_replace(Some(frame));
        self.metrics.event_sent(EventKind::Position, 1);
    }

    /// Gives `sid` its final frame (admitted or closed). A closed session
    /// stays closed; an admitted one may still close; an admitted one is
    /// told so once.
    pub fn settle(&self, sid: &str, frame: Arc<Frame>) {
        let mut state = self.lock();
        let Some(sub) = state.subscribers.get_mut(sid) else {
            return;
        };
        let current = sub.frames.borrow().as_ref().map(|f| f.kind);
        if current == Some(EventKind::Closed) || current == Some(frame.kind) {
            return;
        }
        sub.standing = Standing::Settled;
        self.metrics.event_sent(frame.kind, 1);
        sub.frames.send_replace(Some(frame));
    }

    /// Sends a connected, admitted session its admission again, with a later
    /// expiry and a new entry token (the shop extended the session).
    pub fn renew(&self, sid: &str, frame: Arc<Frame>) {
        let state = self.lock();
        let Some(sub) = state.subscribers.get(sid) else {
            return;
        };
        let current = sub.frames.borrow().as_ref().map(|f| f.kind);
        if current == Some(EventKind::Admitted) {
            self.metrics.event_sent(frame.kind, 1);
            sub.frames.send_replace(Some(frame));
        }
    }

    /// A closed frame for `reason` (numbered like position events): a
    /// [`CloseReason`] or [`sse::LOST_REASON`].
    pub fn closed_frame(&self, reason: &'static str) -> Arc<Frame> {
        let id = self.lock().broadcasts;
        sse::frame(EventKind::Closed, id, &ClosedData { reason })
    }

    /// Loads the line from a snapshot and returns the subscribers to re-read
    /// from the store: changes before the snapshot were not seen, so any
    /// session not known to be waiting in it may have moved on.
    pub fn load(&self, snapshot: &LineSnapshot, now: Millis) -> Vec<String> {
        let mut state = self.lock();
        self.ended.record(
            snapshot.closed.iter().map(String::as_str),
            now,
            state.config.as_ref().map(RoomConfig::longest_session_ms),
        );
        let tickets: HashMap<&str, u64> = snapshot
            .waiting
            .iter()
            .map(|(sid, t)| (sid.as_str(), *t))
            .collect();
        state.line = LocalLine::from_sorted(tickets.values().copied());
        state.synced = true;
        state.generation += 1;
        state.version += 1;
        self.metrics.waiting.store(state.line.len(), Relaxed);
        let mut stale = Vec::new();
        for (sid, sub) in state.subscribers.iter_mut() {
            match (sub.standing, tickets.get(sid.as_str())) {
                (Standing::Waiting { .. }, Some(&ticket)) => {
                    sub.standing = Standing::Waiting { ticket }
                }
                (Standing::Settled, _) if sub.frames.borrow().as_ref().is_some_and(|f| f.last) => {}
                _ => stale.push(sid.clone()),
            }
        }
        stale
    }

    /// Applies changes from the stream; returns news for connected sessions.
    pub fn apply(&self, changes: &[Change], now: Millis) -> Vec<Notice> {
        let mut state = self.lock();
        let mut notices = Vec::new();
        let mut ended = Vec::new();
        for change in changes {
            match change {
                Change::Joined { ticket } => state.line.insert(*ticket),
                Change::Admitted {
                    sid,
                    user,
                    ticket,
                    admitted_at,
                    expires_at,
                } => {
                    state.line.remove(*ticket);
                    state.recent_admissions.push_back(*admitted_at);
                    if state.subscribers.contains_key(sid) {
                        notices.push(Notice::Admitted {
                            sid: sid.clone(),
                            user: user.clone(),
                            admitted_at: *admitted_at,
                            expires_at: *expires_at,
                            extended: false,
                        });
                    }
                }
                Change::Extended {
                    sid,
                    user,
                    admitted_at,
                    expires_at,
                } => {
                    if state.subscribers.contains_key(sid) {
                        notices.push(Notice::Admitted {
                            sid: sid.clone(),
                            user: user.clone(),
                            admitted_at: *admitted_at,
                            expires_at: *expires_at,
                            extended: true,
                        });
                    }
                }
                Change::Dequeued {
                    sid,
                    ticket,
                    reason,
                } => {
                    state.line.remove(*ticket);
                    if state.subscribers.contains_key(sid) {
                        notices.push(Notice::Closed {
                            sid: sid.clone(),
                            reason: *reason,
                        });
                    }
                }
                Change::Ended { sid, reason } => {
                    ended.push(sid.as_str());
                    if state.subscribers.contains_key(sid) {
                        notices.push(Notice::Closed {
                            sid: sid.clone(),
                            reason: *reason,
                        });
                    }
                }
                Change::Opened | Change::Reconfigured => {}
            }
        }
        while state
            .recent_admissions
            .front()
            .is_some_and(|&t| t < now - ETA_WINDOW_MS)
        {
            state.recent_admissions.pop_front();
        }
        self.ended.record(
            ended,
            now,
            state.config.as_ref().map(RoomConfig::longest_session_ms),
        );
        state.version += 1;
        self.metrics.waiting.store(state.line.len(), Relaxed);
        notices
    }

    /// Sends every waiting subscriber whose position or ETA moved its new
    /// position. Runs on a timer; does nothing when the line did not change.
    pub fn broadcast(&self, now: Millis) {
        let started = Instant::now();
        let mut state = self.lock();
        if !state.synced || state.version == state.broadcast_version {
            return;
        }
        state.broadcast_version = state.version;
        state.broadcasts += 1;
        let mut sent = 0;
        let pace = state.admission_pace(now);
        let share = state.priority_share();
        let lengths = state.line.lengths();
        let state = &mut *state;
        for sub in state.subscribers.values_mut() {
            let Standing::Waiting { ticket } = sub.standing else {
                continue;
            };
            let (lane, position) = (Lane::of_ticket(ticket), state.line.position(ticket));
            let waiting = lengths.of(lane);
            let eta = eta(pace, lengths.admissions_before(lane, position, share));
            if sub.last_sent == Some((position, eta)) {
                continue;
            }
            let data = PositionData {
                position,
                waiting,
                eta_seconds: eta,
            };
            sub.frames.send_replace(Some(data.frame(state.broadcasts)));
            sub.last_sent = Some((position, eta));
            sent += 1;
        }
        self.metrics.event_sent(EventKind::Position, sent);
        self.metrics.broker_ticks.fetch_add(1, Relaxed);
        self.metrics
            .last_broadcast_micros
            .store(started.elapsed().as_micros() as u64, Relaxed);
    }

    /// Waiting sessions with open streams (their users are present).
    pub fn present_sessions(&self) -> Vec<String> {
        let state = self.lock();
        state
            .subscribers
            .iter()
            .filter(|(_, s)| matches!(s.standing, Standing::Waiting { .. } | Standing::Unknown))
            .map(|(sid, _)| sid.clone())
            .collect()
    }
}
