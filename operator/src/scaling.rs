//! How many brokers a room wants: enough for its connected and waiting
//! visitors, within the spec's bounds, and slow to scale down; at least the
//! pre-warm floor ahead of the opening; none once the room is closed and
//! drained.

use std::collections::VecDeque;
use std::time::Duration;

use usher_runtime::queue::RoomCounts;

use crate::crd::{BrokerSpec, WaitingRoomSpec};

/// Recommendations from this long ago still hold replicas up.
pub const SCALE_DOWN_WINDOW_MS: i64 = 5 * 60 * 1000;

/// `clamp(ceil(demand / per replica), min, max)`.
pub fn recommended(demand: u64, spec: &BrokerSpec) -> i32 {
    let per_replica = spec.connections_per_replica.max(1) as u64;
    let wanted = demand.div_ceil(per_replica).min(i32::MAX as u64) as i32;
    wanted.clamp(spec.min_replicas, spec.max_replicas.max(spec.min_replicas))
}

/// Recent recommendations of one room. Scaling up follows demand at once;
/// scaling down waits until no recommendation in the window asks for more
/// (as the HorizontalPodAutoscaler's stabilization window does).
#[derive(Debug, Default)]
pub struct ScaleHistory {
    recent: VecDeque<(i64, i32)>,
}

impl ScaleHistory {
    /// Records `recommendation` at `now` and returns the replicas to run.
    pub fn desired(&mut self, now: i64, recommendation: i32) -> i32 {
        self.recent.push_back((now, recommendation));
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| *at < now - SCALE_DOWN_WINDOW_MS)
        {
            self.recent.pop_front();
        }
        self.recent
            .iter()
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(recommendation)
    }
}

/// The instant (ms) from which `spec.broker.prewarm` holds: `opensAt -
/// before`. None without a pre-warm, without `opensAt`, or when either does
/// not parse (the schema refuses those).
pub fn prewarm_from(spec: &WaitingRoomSpec) -> Option<i64> {
    let prewarm = spec.broker.prewarm.as_ref()?;
    let opens_at = usher_runtime::clock::parse_rfc3339(spec.opens_at.as_deref()?).ok()?;
    let before = usher_runtime::config::parse_session_duration(&prewarm.before).ok()?;
    Some(opens_at.saturating_sub(before.as_millis().min(i64::MAX as u128) as i64))
}

/// `desired` raised to the pre-warm floor once its time has come, never
/// above `maxReplicas`.
pub fn with_prewarm(desired: i32, spec: &WaitingRoomSpec, now_ms: i64) -> i32 {
    let floor = match (&spec.broker.prewarm, prewarm_from(spec)) {
        (Some(prewarm), Some(from)) if now_ms >= from => prewarm.replicas,
        _ => return desired,
    };
    desired.max(floor.min(spec.broker.max_replicas))
}

/// When to look at the room again: after `interval`, or at the pre-warm
/// instant if that comes first.
pub fn requeue_after(interval: Duration, spec: &WaitingRoomSpec, now_ms: i64) -> Duration {
    match prewarm_from(spec) {
        Some(from) if from > now_ms => interval.min(Duration::from_millis((from - now_ms) as u64)),
        _ => interval,
    }
}

/// The room is closed (its `closesAt` has passed) and drained (nobody
/// waiting, nobody active), so it needs no runtime pods. `reading` is what
/// Redis said now (None when it could not be read: then the room stays as
/// it was, `was_drained`). A `closesAt` moved later reopens the room.
pub fn closed_and_drained(
    spec: &WaitingRoomSpec,
    now_ms: i64,
    reading: Option<&RoomCounts>,
    was_drained: bool,
) -> bool {
    let closed = spec
        .closes_at
        .as_deref()
        .and_then(|at| usher_runtime::clock::parse_rfc3339(at).ok())
        .is_some_and(|at| now_ms >= at);
    closed
        && match reading {
            Some(counts) => counts.waiting == 0 && counts.active == 0,
            None => was_drained,
        }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::crd::Prewarm;

    fn spec(min: i32, max: i32, per: i32) -> BrokerSpec {
        BrokerSpec {
            min_replicas: min,
            max_replicas: max,
            connections_per_replica: per,
            resources: None,
            prewarm: None,
        }
    }

    /// 2026-12-01T10:00:00Z
    const OPENS: i64 = 1_796_119_200_000;
    const MINUTE: i64 = 60_000;

    fn room(opens_at: Option<&str>, prewarm: Option<(i32, &str)>) -> WaitingRoomSpec {
        let mut spec: WaitingRoomSpec = serde_json::from_value(serde_json::json!({
            "capacity": 100,
            "redis": {"url": "redis://r:6379/"},
            "broker": {"minReplicas": 2, "maxReplicas": 8},
        }))
        .unwrap();
        spec.opens_at = opens_at.map(str::to_owned);
        spec.broker.prewarm = prewarm.map(|(replicas, before)| Prewarm {
            replicas,
            before: before.to_owned(),
        });
        spec
    }

    #[test]
    fn the_prewarm_floor_holds_from_opening_minus_before() {
        let spec = room(Some("2026-12-01T10:00:00Z"), Some((6, "30m")));
        assert_eq!(prewarm_from(&spec), Some(OPENS - 30 * MINUTE));
        // Before the window: demand alone.
        assert_eq!(with_prewarm(2, &spec, OPENS - 30 * MINUTE - 1), 2);
        // Inside it, and after the opening: at least the floor.
        assert_eq!(with_prewarm(2, &spec, OPENS - 30 * MINUTE), 6);
        assert_eq!(with_prewarm(2, &spec, OPENS + 60 * MINUTE), 6);
        // Load above the floor wins.
        assert_eq!(with_prewarm(8, &spec, OPENS - MINUTE), 8);
    }

    #[test]
    fn the_prewarm_floor_never_exceeds_max_replicas() {
        let mut spec = room(Some("2026-12-01T10:00:00Z"), Some((6, "1h")));
        spec.broker.max_replicas = 4;
        assert_eq!(with_prewarm(2, &spec, OPENS), 4);
    }

    #[test]
    fn without_opens_at_prewarm_does_nothing() {
        let spec = room(None, Some((6, "30m")));
        assert_eq!(prewarm_from(&spec), None);
        assert_eq!(with_prewarm(2, &spec, OPENS), 2);
        let interval = Duration::from_secs(5);
        assert_eq!(requeue_after(interval, &spec, OPENS), interval);
        let none = room(Some("2026-12-01T10:00:00Z"), None);
        assert_eq!(with_prewarm(2, &none, OPENS), 2);
    }

    #[test]
    fn the_operator_looks_again_no_later_than_the_prewarm_instant() {
        let spec = room(Some("2026-12-01T10:00:00Z"), Some((6, "30m")));
        let from = OPENS - 30 * MINUTE;
        let interval = Duration::from_secs(300);
        assert_eq!(
            requeue_after(interval, &spec, from - 1_500),
            Duration::from_millis(1_500)
        );
        assert_eq!(requeue_after(interval, &spec, from - 10 * MINUTE), interval);
        assert_eq!(requeue_after(interval, &spec, from), interval);
    }

    fn counts(waiting: u64, active: u64) -> RoomCounts {
        RoomCounts {
            waiting,
            active,
            admitted_total: 40,
            opened: true,
        }
    }

    #[test]
    fn a_closed_room_with_nobody_left_needs_no_pods() {
        let mut spec = room(Some("2026-12-01T10:00:00Z"), None);
        spec.closes_at = Some("2026-12-01T12:00:00Z".into());
        let closes = OPENS + 120 * MINUTE;
        let drained = counts(0, 0);
        assert!(!closed_and_drained(
            &spec,
            closes - 1,
            Some(&drained),
            false
        ));
        assert!(closed_and_drained(&spec, closes, Some(&drained), false));
        // Visitors still in line or still shopping: the pods stay.
        assert!(!closed_and_drained(
            &spec,
            closes,
            Some(&counts(3, 0)),
            false
        ));
        assert!(!closed_and_drained(
            &spec,
            closes,
            Some(&counts(0, 1)),
            false
        ));
        // Redis unreadable: stay as it was.
        assert!(closed_and_drained(&spec, closes, None, true));
        assert!(!closed_and_drained(&spec, closes, None, false));
        // closesAt moved later: the room reopens.
        spec.closes_at = Some("2026-12-01T14:00:00Z".into());
        assert!(!closed_and_drained(&spec, closes, Some(&drained), true));
        // No closesAt: never closed.
        spec.closes_at = None;
        assert!(!closed_and_drained(
            &spec,
            closes + 1_000 * MINUTE,
            Some(&drained),
            true
        ));
    }

    #[test]
    fn replicas_follow_demand_within_bounds() {
        let spec = spec(2, 20, 20_000);
        assert_eq!(recommended(0, &spec), 2);
        assert_eq!(recommended(40_000, &spec), 2);
        assert_eq!(recommended(40_001, &spec), 3);
        assert_eq!(recommended(10_000_000, &spec), 20);
    }

    #[test]
    fn scaling_up_is_immediate_and_down_waits_for_the_window() {
        let mut history = ScaleHistory::default();
        assert_eq!(history.desired(0, 2), 2);
        assert_eq!(history.desired(1_000, 8), 8);
        assert_eq!(history.desired(60_000, 3), 8);
        assert_eq!(history.desired(1_000 + SCALE_DOWN_WINDOW_MS, 3), 8);
        assert_eq!(history.desired(1_001 + SCALE_DOWN_WINDOW_MS, 3), 3);
    }
}
