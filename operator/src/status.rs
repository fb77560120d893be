//! The WaitingRoom's status: phase and conditions from what the reconciler
//! observed. Pure, so every transition is unit-tested.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use usher_runtime::queue::{Fairness, Phase as RoomPhase, RoomConfig, RoomCounts};

use crate::crd::{BrokerStatus, FairnessStatus, Phase, WaitingRoomStatus};

/// What one reconcile saw.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The room as Redis has it (no rules until a runtime pod wrote them),
    /// or why Redis could not be read.
    pub redis: Result<(Option<RoomConfig>, RoomCounts), String>,
    pub brokers_desired: i32,
    pub brokers_ready: i32,
    pub dispatchers_ready: i32,
    pub now_ms: i64,
    /// The room is closed and drained, and runs no pods on purpose.
    pub drained: bool,
}

/// Builds the status for `generation`, keeping condition transition times
/// from `previous` when a condition did not change.
pub fn build(
    previous: Option<&WaitingRoomStatus>,
    observed: &Observed,
    generation: Option<i64>,
    base: WaitingRoomStatus,
    now: &Time,
) -> WaitingRoomStatus {
    let mut status = base;
    status.observed_generation = generation;
    status.brokers = Some(BrokerStatus {
        desired: observed.brokers_desired,
        ready: observed.brokers_ready,
        summary: format!("{}/{}", observed.brokers_ready, observed.brokers_desired),
    });
    let scheduled =
        observed.drained || (observed.brokers_ready > 0 && observed.dispatchers_ready > 0);
    let (redis_ok, redis_message) = match &observed.redis {
        Ok((config, counts)) => {
            status.waiting = Some(counts.waiting as i64);
            status.active = Some(counts.active as i64);
            status.admitted_total = Some(counts.admitted_total as i64);
            status.estimated_wait_seconds = config.as_ref().and_then(|config| {
                let per_second = config.nominal_admissions_per_second();
                (per_second > 0.0 && config.phase(observed.now_ms) == RoomPhase::Open)
                    .then(|| (counts.waiting as f64 / per_second).ceil() as i64)
            });
            (true, "Redis answers".to_owned())
        }
        Err(e) => (false, e.clone()),
    };
    status.phase = Some(match &observed.redis {
        Err(_) => Phase::Degraded,
        // No rules in Redis yet: no runtime pod has started.
        // Scaled to zero after closing: the final figures stay.
        Ok(_) if observed.drained => Phase::Closed,
        Ok((None, _)) => Phase::Pending,
        Ok(_) if !scheduled => Phase::Pending,
        Ok((Some(config), _)) => match config.phase(observed.now_ms) {
            RoomPhase::Scheduled => Phase::Scheduled,
            RoomPhase::Open => Phase::Open,
            RoomPhase::Paused => Phase::Paused,
            RoomPhase::Closed => Phase::Closed,
        },
    });
    let ready = redis_ok && scheduled;
    let conditions = [
        (
            "RedisReachable",
            redis_ok,
            if redis_ok { "Reachable" } else { "Unreachable" },
            redis_message,
        ),
        (
            "Scheduled",
            scheduled,
            if observed.drained {
                "ScaledToZero"
            } else if scheduled {
                "PodsReady"
            } else {
                "PodsNotReady"
            },
            if observed.drained {
                "closed and drained: no broker or dispatcher runs".to_owned()
            } else {
                format!(
                    "{}/{} brokers and {} dispatchers ready",
                    observed.brokers_ready, observed.brokers_desired, observed.dispatchers_ready
                )
            },
        ),
        (
            "Ready",
            ready,
            if observed.drained {
                "Closed"
            } else if ready {
                "Serving"
            } else {
                "NotServing"
            },
            if observed.drained {
                "the room is closed and nobody is left".to_owned()
            } else if ready {
                "visitors can join and are admitted".to_owned()
            } else {
                "see the other conditions".to_owned()
            },
        ),
    ];
    let earlier = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    status.conditions = conditions
        .into_iter()
        .map(|(kind, ok, reason, message)| {
            let state = if ok { "True" } else { "False" };
            let since = earlier
                .iter()
                .find(|c| c.type_ == kind && c.status == state)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: kind.into(),
                status: state.into(),
                reason: reason.into(),
                message,
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect();
    status
}

/// `status.fairness` from what Redis holds of a Random room's shuffle.
pub fn fairness(record: &Fairness) -> FairnessStatus {
    let revealed = record.revealed.as_ref();
    FairnessStatus {
        commitment: record.commitment.clone(),
        seed: revealed.map(|r| r.seed.to_string()),
        salt: revealed.map(|r| r.salt.clone()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use usher_runtime::queue::Queueing;

    fn config() -> RoomConfig {
        RoomConfig {
            capacity: 100,
            admission_rate: None,
            session_duration_ms: 100_000,
            queueing: Queueing::Fifo,
            opens_at: None,
            closes_at: None,
            paused: false,
            abandon_timeout_ms: 120_000,
            claim_window_ms: 0,
            max_session_duration_ms: 0,
            message: String::new(),
            joins_per_address_per_minute: 0,
            sessions_per_address: 0,
            priority_share: 100,
            revision: 1,
            proof_of_work_bits: 0,
        }
    }

    fn observed(redis: Result<(Option<RoomConfig>, RoomCounts), String>) -> Observed {
        Observed {
            redis,
            brokers_desired: 3,
            brokers_ready: 3,
            dispatchers_ready: 1,
            now_ms: 1_000,
            drained: false,
        }
    }

    #[test]
    fn a_closed_drained_room_at_zero_pods_keeps_its_figures_and_stays_closed() {
        let mut closed = config();
        closed.closes_at = Some(500);
        let counts = RoomCounts {
            waiting: 0,
            active: 0,
            admitted_total: 1_234,
            opened: true,
        };
        let observed = Observed {
            brokers_desired: 0,
            brokers_ready: 0,
            dispatchers_ready: 0,
            drained: true,
            ..observed(Ok((Some(closed), counts)))
        };
        let status = build(
            None,
            &observed,
            Some(4),
            WaitingRoomStatus::default(),
            &time(1),
        );
        assert_eq!(status.phase, Some(Phase::Closed));
        assert_eq!(status.admitted_total, Some(1_234));
        assert_eq!((status.waiting, status.active), (Some(0), Some(0)));
        assert_eq!(status.brokers.as_ref().unwrap().desired, 0);
        assert_eq!(status.brokers.as_ref().unwrap().summary, "0/0");
        assert_eq!(condition(&status, "Scheduled").reason, "ScaledToZero");
        assert_eq!(condition(&status, "Ready").status, "True");
        assert_eq!(condition(&status, "RedisReachable").status, "True");
        // Redis gone meanwhile: degraded, as any room.
        let lost = Observed {
            redis: Err("no answer".into()),
            ..observed
        };
        let status = build(None, &lost, Some(4), WaitingRoomStatus::default(), &time(1));
        assert_eq!(status.phase, Some(Phase::Degraded));
    }

    fn time(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn condition<'a>(status: &'a WaitingRoomStatus, kind: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == kind).unwrap()
    }

    #[test]
    fn an_open_room_reports_its_line_and_is_ready() {
        let counts = RoomCounts {
            waiting: 1234,
            active: 100,
            admitted_total: 9000,
            opened: true,
        };
        let status = build(
            None,
            &observed(Ok((Some(config()), counts))),
            Some(4),
            WaitingRoomStatus::default(),
            &time(10),
        );
        assert_eq!(status.phase, Some(Phase::Open));
        assert_eq!(
            (status.waiting, status.active, status.admitted_total),
            (Some(1234), Some(100), Some(9000))
        );
        // 100 slots turned over every 100 s: one admission a second.
        assert_eq!(status.estimated_wait_seconds, Some(1234));
        assert_eq!(status.brokers.as_ref().unwrap().summary, "3/3");
        assert_eq!(condition(&status, "Ready").status, "True");
        assert_eq!(condition(&status, "Ready").observed_generation, Some(4));
    }

    #[test]
    fn unreachable_redis_degrades_the_room_with_a_clear_message() {
        let status = build(
            None,
            &observed(Err("Redis: connection refused".into())),
            Some(1),
            WaitingRoomStatus::default(),
            &time(10),
        );
        assert_eq!(status.phase, Some(Phase::Degraded));
        let redis = condition(&status, "RedisReachable");
        assert_eq!(
            (redis.status.as_str(), redis.reason.as_str()),
            ("False", "Unreachable")
        );
        assert!(redis.message.contains("connection refused"));
        assert_eq!(condition(&status, "Ready").status, "False");
    }

    #[test]
    fn phases_follow_the_rules_and_the_pods() {
        let counts = RoomCounts::default();
        let paused = RoomConfig {
            paused: true,
            ..config()
        };
        let status = build(
            None,
            &observed(Ok((Some(paused), counts.clone()))),
            None,
            WaitingRoomStatus::default(),
            &time(1),
        );
        assert_eq!(status.phase, Some(Phase::Paused));
        let later = RoomConfig {
            opens_at: Some(5_000),
            ..config()
        };
        let status = build(
            None,
            &observed(Ok((Some(later), counts.clone()))),
            None,
            WaitingRoomStatus::default(),
            &time(1),
        );
        assert_eq!(status.phase, Some(Phase::Scheduled));
        let unwritten = build(
            None,
            &observed(Ok((None, counts.clone()))),
            None,
            WaitingRoomStatus::default(),
            &time(1),
        );
        assert_eq!(unwritten.phase, Some(Phase::Pending));
        assert_eq!(condition(&unwritten, "RedisReachable").status, "True");
        let mut starting = observed(Ok((Some(config()), counts)));
        starting.brokers_ready = 0;
        let status = build(
            None,
            &starting,
            None,
            WaitingRoomStatus::default(),
            &time(1),
        );
        assert_eq!(status.phase, Some(Phase::Pending));
    }

    #[test]
    fn fairness_shows_the_commitment_then_the_seed() {
        use usher_runtime::queue::{Revealed, SealedSeed};
        let sealed = SealedSeed::new(42, "00ff".repeat(8));
        let committed = Fairness {
            commitment: sealed.commitment.clone(),
            revealed: None,
        };
        assert_eq!(
            fairness(&committed),
            FairnessStatus {
                commitment: sealed.commitment.clone(),
                seed: None,
                salt: None,
            }
        );
        let shuffled = Fairness {
            revealed: Some(Revealed {
                seed: 42,
                salt: sealed.salt.clone(),
                shuffled_at: 1_000,
                general: 7,
                priority: 2,
            }),
            ..committed
        };
        assert_eq!(
            fairness(&shuffled),
            FairnessStatus {
                commitment: sealed.commitment,
                seed: Some("42".into()),
                salt: Some(sealed.salt),
            }
        );
    }

    #[test]
    fn transition_times_move_only_when_a_condition_changes() {
        let counts = RoomCounts::default();
        let first = build(
            None,
            &observed(Ok((Some(config()), counts.clone()))),
            Some(1),
            WaitingRoomStatus::default(),
            &time(10),
        );
        let same = build(
            Some(&first),
            &observed(Ok((Some(config()), counts))),
            Some(1),
            WaitingRoomStatus::default(),
            &time(20),
        );
        assert_eq!(condition(&same, "Ready").last_transition_time, time(10));
        let broken = build(
            Some(&same),
            &observed(Err("down".into())),
            Some(1),
            WaitingRoomStatus::default(),
            &time(30),
        );
        assert_eq!(condition(&broken, "Ready").last_transition_time, time(30));
    }
}
