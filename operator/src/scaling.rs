//! How many brokers a room wants: enough for its connected and waiting
//! visitors, within the spec's bounds, and slow to scale down.

use std::collections::VecDeque;

use crate::crd::BrokerSpec;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(min: i32, max: i32, per: i32) -> BrokerSpec {
        BrokerSpec {
            min_replicas: min,
            max_replicas: max,
            connections_per_replica: per,
            resources: None,
        }
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
