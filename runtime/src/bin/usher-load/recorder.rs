//! Counters and samples shared by all client tasks.
//!
//! Everything here is touched from many tasks, so it is either an atomic or
//! behind a `std::sync::Mutex` that is held only for a map update or a push
//! (never across an `.await`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::http::HttpError;
use crate::stats::{Broadcast, micros};

/// Locks ignoring poisoning: a panicked task leaves plain counters behind,
/// which are still worth reporting.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
pub struct Recorder {
    /// Origin of the `*_us` instants below.
    pub start: Instant,

    pub joins_sent: AtomicU64,
    pub joins_ok: AtomicU64,
    pub joins_failed: AtomicU64,
    /// Joins answered with `state: admitted` right away.
    pub joins_admitted: AtomicU64,
    /// Microseconds after `start` of the first join request write.
    first_join_us: AtomicU64,
    /// Microseconds after `start` of the last join response.
    last_join_us: AtomicU64,
    join_latency_us: Mutex<Vec<u32>>,

    /// Clients whose join (and stream opening) is finished, either way.
    pub settled: AtomicUsize,

    pub streams_opened: AtomicU64,
    pub streams_failed: AtomicU64,
    /// Streams open right now.
    pub streams_open: AtomicI64,
    /// Streams that ended before the load generator closed them.
    pub streams_ended_early: AtomicU64,
    /// Of those, the ones that ended with a `closed` event.
    pub streams_closed_event: AtomicU64,
    closed_reasons: Mutex<BTreeMap<String, u64>>,

    pub position_events: AtomicU64,
    pub admitted_events: AtomicU64,
    admission_latency_us: Mutex<Vec<u32>>,
    broadcasts: Mutex<HashMap<u64, Broadcast>>,

    pub completes_ok: AtomicU64,
    pub completes_failed: AtomicU64,

    pub errors_connect: AtomicU64,
    pub errors_io: AtomicU64,
    pub errors_timeout: AtomicU64,
    pub errors_protocol: AtomicU64,
    errors_http: Mutex<BTreeMap<String, u64>>,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Recorder {
    pub fn new(clients: usize) -> Self {
        Self {
            start: Instant::now(),
            joins_sent: AtomicU64::new(0),
            joins_ok: AtomicU64::new(0),
            joins_failed: AtomicU64::new(0),
            joins_admitted: AtomicU64::new(0),
            first_join_us: AtomicU64::new(u64::MAX),
            last_join_us: AtomicU64::new(0),
            join_latency_us: Mutex::new(Vec::with_capacity(clients)),
            settled: AtomicUsize::new(0),
            streams_opened: AtomicU64::new(0),
            streams_failed: AtomicU64::new(0),
            streams_open: AtomicI64::new(0),
            streams_ended_early: AtomicU64::new(0),
            streams_closed_event: AtomicU64::new(0),
            closed_reasons: Mutex::new(BTreeMap::new()),
            position_events: AtomicU64::new(0),
            admitted_events: AtomicU64::new(0),
            admission_latency_us: Mutex::new(Vec::new()),
            broadcasts: Mutex::new(HashMap::new()),
            completes_ok: AtomicU64::new(0),
            completes_failed: AtomicU64::new(0),
            errors_connect: AtomicU64::new(0),
            errors_io: AtomicU64::new(0),
            errors_timeout: AtomicU64::new(0),
            errors_protocol: AtomicU64::new(0),
            errors_http: Mutex::new(BTreeMap::new()),
        }
    }

    fn since_start_us(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_micros()).unwrap_or(u64::MAX)
    }

    /// Called right before a join request is written.
    pub fn join_started(&self, at: Instant) {
        bump(&self.joins_sent);
        self.first_join_us
            .fetch_min(self.since_start_us(at), Ordering::Relaxed);
    }

    /// A join got a success response after `latency`.
    pub fn join_ok(&self, latency: Duration, admitted: bool) {
        bump(&self.joins_ok);
        if admitted {
            bump(&self.joins_admitted);
        }
        self.join_finished();
        lock(&self.join_latency_us).push(micros(latency));
    }

    pub fn join_failed(&self, error: &HttpError) {
        bump(&self.joins_failed);
        self.join_finished();
        self.error(error);
    }

    fn join_finished(&self) {
        self.last_join_us
            .fetch_max(self.since_start_us(Instant::now()), Ordering::Relaxed);
    }

    /// Time from the first join write to the last join answer.
    pub fn join_phase(&self) -> Option<Duration> {
        let first = self.first_join_us.load(Ordering::Relaxed);
        let last = self.last_join_us.load(Ordering::Relaxed);
        (first != u64::MAX && last >= first).then(|| Duration::from_micros(last - first))
    }

    pub fn settle(&self) {
        self.settled.fetch_add(1, Ordering::Release);
    }

    /// Counts an error in its category.
    pub fn error(&self, error: &HttpError) {
        match error {
            HttpError::Connect(_) => bump(&self.errors_connect),
            HttpError::Io(_) => bump(&self.errors_io),
            HttpError::Timeout => bump(&self.errors_timeout),
            HttpError::Protocol(_) => bump(&self.errors_protocol),
            HttpError::Status { status, code } => {
                let key = match code {
                    Some(code) => format!("{status}_{code}"),
                    None => status.to_string(),
                };
                *lock(&self.errors_http).entry(key).or_insert(0) += 1;
            }
        }
    }

    pub fn protocol_error(&self) {
        bump(&self.errors_protocol);
    }

    pub fn stream_ended_early(&self, closed_reason: Option<&str>) {
        bump(&self.streams_ended_early);
        if let Some(reason) = closed_reason {
            bump(&self.streams_closed_event);
            *lock(&self.closed_reasons)
                .entry(reason.to_owned())
                .or_insert(0) += 1;
        }
    }

    /// A position event with broadcast id `id` arrived at `at`.
    pub fn position(&self, id: u64, at: Instant) {
        let mut broadcasts = lock(&self.broadcasts);
        let entry = broadcasts.entry(id).or_insert(Broadcast {
            first: at,
            last: at,
            clients: 0,
        });
        entry.first = entry.first.min(at);
        entry.last = entry.last.max(at);
        entry.clients += 1;
    }

    pub fn admission_latency(&self, latency_us: u32) {
        lock(&self.admission_latency_us).push(latency_us);
    }

    pub fn take_join_latencies(&self) -> Vec<u32> {
        std::mem::take(&mut *lock(&self.join_latency_us))
    }

    pub fn take_admission_latencies(&self) -> Vec<u32> {
        std::mem::take(&mut *lock(&self.admission_latency_us))
    }

    pub fn take_broadcasts(&self) -> HashMap<u64, Broadcast> {
        std::mem::take(&mut *lock(&self.broadcasts))
    }

    pub fn errors_http(&self) -> BTreeMap<String, u64> {
        lock(&self.errors_http).clone()
    }

    pub fn closed_reasons(&self) -> BTreeMap<String, u64> {
        lock(&self.closed_reasons).clone()
    }
}

/// Keeps [`Recorder::streams_open`] right however a stream task ends,
/// including when it is aborted at shutdown.
#[derive(Debug)]
pub struct OpenStream<'a>(&'a Recorder);

impl<'a> OpenStream<'a> {
    pub fn new(recorder: &'a Recorder) -> Self {
        bump(&recorder.streams_opened);
        recorder.streams_open.fetch_add(1, Ordering::Relaxed);
        Self(recorder)
    }
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}
