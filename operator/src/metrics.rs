//! The operator's Prometheus metrics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::crd::Phase;

#[derive(Default)]
pub struct Metrics {
    pub reconciles: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Sum of reconcile durations, in microseconds.
    pub reconcile_micros: AtomicU64,
    /// Rooms by phase, keyed by the room's uid.
    phases: Mutex<BTreeMap<String, Phase>>,
}

impl Metrics {
    pub fn error(&self, kind: &'static str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    pub fn set_phase(&self, uid: &str, phase: Option<Phase>) {
        let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        match phase {
            Some(phase) => phases.insert(uid.to_owned(), phase),
            None => phases.remove(uid),
        };
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let reconciles = self.reconciles.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP usher_operator_reconciles_total Reconciles run.\n# TYPE usher_operator_reconciles_total counter\nusher_operator_reconciles_total {reconciles}"
        );
        let _ = writeln!(
            out,
            "# HELP usher_operator_reconcile_duration_seconds Time spent reconciling.\n# TYPE usher_operator_reconcile_duration_seconds summary\nusher_operator_reconcile_duration_seconds_sum {:.6}\nusher_operator_reconcile_duration_seconds_count {reconciles}",
            self.reconcile_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "# HELP usher_operator_reconcile_errors_total Failed reconciles by kind.\n# TYPE usher_operator_reconcile_errors_total counter"
        );
        for (kind, count) in self.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "usher_operator_reconcile_errors_total{{kind=\"{kind}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP usher_operator_rooms WaitingRooms by phase.\n# TYPE usher_operator_rooms gauge"
        );
        let mut by_phase: BTreeMap<String, u64> = BTreeMap::new();
        for phase in self
            .phases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            *by_phase.entry(format!("{phase:?}")).or_default() += 1;
        }
        for (phase, count) in by_phase {
            let _ = writeln!(out, "usher_operator_rooms{{phase=\"{phase}\"}} {count}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_counted_by_phase() {
        let metrics = Metrics::default();
        metrics.set_phase("a", Some(Phase::Open));
        metrics.set_phase("b", Some(Phase::Open));
        metrics.set_phase("c", Some(Phase::Degraded));
        metrics.set_phase("c", None);
        metrics.error("redis");
        let text = metrics.render();
        assert!(
            text.contains("usher_operator_rooms{phase=\"Open\"} 2"),
            "{text}"
        );
        assert!(!text.contains("Degraded"), "{text}");
        assert!(
            text.contains("usher_operator_reconcile_errors_total{kind=\"redis\"} 1"),
            "{text}"
        );
    }
}
