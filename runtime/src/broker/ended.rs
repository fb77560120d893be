//! Sessions that ended, as the gate must know them: their entry tokens are
//! refused however valid. Kept apart from the fan-out's line, behind a lock
//! of their own, so a gate check never waits behind a broadcast.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use crate::queue::Millis;

/// How long an ended session is remembered: at least this, and at least as
/// long as a token of its could live (the session's duration).
const RETENTION_FLOOR_MS: Millis = 3_600_000;

#[derive(Default)]
pub struct EndedSessions(Mutex<Inner>);

#[derive(Default)]
struct Inner {
    sids: HashSet<String>,
    /// When this broker learnt of each, oldest first, to forget them.
    learnt: VecDeque<(Millis, String)>,
}

impl EndedSessions {
    pub fn contains(&self, sid: &str) -> bool {
        self.lock().sids.contains(sid)
    }

    /// Records `sids` as ended at `now`, and forgets those ended longer
    /// ago than a token of theirs could live (`session_ms`, if known).
    pub fn record<'a>(
        &self,
        sids: impl IntoIterator<Item = &'a str>,
        now: Millis,
        session_ms: Option<Millis>,
    ) {
        let mut inner = self.lock();
        for sid in sids {
            if inner.sids.insert(sid.to_owned()) {
                inner.learnt.push_back((now, sid.to_owned()));
            }
        }
        let retention = session_ms.map_or(RETENTION_FLOOR_MS, |ms| ms.max(RETENTION_FLOOR_MS));
        while let Some((at, _)) = inner.learnt.front()
            && *at < now - retention
        {
            if let Some((_, sid)) = inner.learnt.pop_front() {
                inner.sids.remove(&sid);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_sessions_are_forgotten_once_no_token_of_theirs_can_live() {
        let ended = EndedSessions::default();
        ended.record(["a"], 0, Some(2 * RETENTION_FLOOR_MS));
        ended.record(["b"], RETENTION_FLOOR_MS, Some(2 * RETENTION_FLOOR_MS));
        assert!(ended.contains("a") && ended.contains("b"));
        ended.record([], 2 * RETENTION_FLOOR_MS + 1, Some(2 * RETENTION_FLOOR_MS));
        assert!(!ended.contains("a") && ended.contains("b"));
    }
}
