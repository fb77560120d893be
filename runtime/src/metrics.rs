//! Prometheus metrics of one process, rendered as text at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// SSE event kinds, for `usher_events_sent_total{event=...}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Position,
    Admitted,
    Closed,
    Error,
    /// The room's message to everyone waiting.
    Message,
}

impl EventKind {
    const ALL: [EventKind; 5] = [
        EventKind::Position,
        EventKind::Admitted,
        EventKind::Closed,
        EventKind::Error,
        EventKind::Message,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Position => "position",
            EventKind::Admitted => "admitted",
            EventKind::Closed => "closed",
            EventKind::Error => "error",
            EventKind::Message => "message",
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    /// Open SSE streams.
    pub connections: AtomicI64,
    pub joins: AtomicU64,
    /// Requests the gate let through (refusals count as errors by code).
    pub gate_passes: AtomicU64,
    /// Admissions made (dispatcher) or delivered to local streams (broker).
    pub admissions: AtomicU64,
    pub expirations: AtomicU64,
    pub abandonments: AtomicU64,
    /// Admitted sessions ended because nobody reached the gate in time
    /// (a dispatcher's steps, or a broker's gate seeing a late claim).
    pub unclaimed: AtomicU64,
    events_sent: [AtomicU64; EventKind::ALL.len()],
    errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Position broadcasts made by this broker.
    pub broker_ticks: AtomicU64,
    pub dispatcher_ticks: AtomicU64,
    /// Time the last position broadcast took, in microseconds.
    pub last_broadcast_micros: AtomicU64,
    pub line_resyncs: AtomicU64,
    pub store_errors: AtomicU64,
    /// Commands this process sent to Redis.
    pub store_commands: AtomicU64,
    /// The room's line as this process last saw it.
    pub waiting: AtomicU64,
    pub active: AtomicU64,
}

impl Metrics {
    pub fn event_sent(&self, kind: EventKind, count: u64) {
        self.events_sent[kind as usize].fetch_add(count, Relaxed);
    }

    pub fn error(&self, code: &'static str) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(code).or_default() += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let get = |a: &AtomicU64| a.load(Relaxed).to_string();
        metric(
            "usher_connections",
            "gauge",
            "Open SSE streams.",
            self.connections.load(Relaxed).to_string(),
        );
        metric(
            "usher_joins_total",
            "counter",
            "Joins answered.",
            get(&self.joins),
        );
        metric(
            "usher_gate_passes_total",
            "counter",
            "Requests the gate let through to the shop.",
            get(&self.gate_passes),
        );
        metric(
            "usher_admissions_total",
            "counter",
            "Admissions made (dispatcher) or seen for local streams (broker).",
            get(&self.admissions),
        );
        metric(
            "usher_expirations_total",
            "counter",
            "Sessions ended by their duration.",
            get(&self.expirations),
        );
        metric(
            "usher_abandonments_total",
            "counter",
            "Waiting sessions dropped as gone.",
            get(&self.abandonments),
        );
        metric(
            "usher_unclaimed_total",
            "counter",
            "Admitted sessions ended because the visitor did not reach the gate within the claim window.",
            get(&self.unclaimed),
        );
        metric(
            "usher_broker_ticks_total",
            "counter",
            "Position broadcasts.",
            get(&self.broker_ticks),
        );
        metric(
            "usher_dispatcher_ticks_total",
            "counter",
            "Dispatcher steps.",
            get(&self.dispatcher_ticks),
        );
        metric(
            "usher_broadcast_duration_seconds",
            "gauge",
            "Time the last position broadcast took to compute and enqueue.",
            format!(
                "{:.6}",
                self.last_broadcast_micros.load(Relaxed) as f64 / 1e6
            ),
        );
        metric(
            "usher_line_resyncs_total",
            "counter",
            "Times the local line was reloaded from the store.",
            get(&self.line_resyncs),
        );
        metric(
            "usher_store_errors_total",
            "counter",
            "Failed store calls.",
            get(&self.store_errors),
        );
        metric(
            "usher_store_commands_total",
            "counter",
            "Commands sent to Redis.",
            get(&self.store_commands),
        );
        metric(
            "usher_waiting",
            "gauge",
            "Sessions waiting in the room.",
            get(&self.waiting),
        );
        metric(
            "usher_active",
            "gauge",
            "Sessions admitted and active.",
            get(&self.active),
        );
        let _ = writeln!(
            out,
            "# HELP usher_events_sent_total SSE events sent.\n# TYPE usher_events_sent_total counter"
        );
        for kind in EventKind::ALL {
            let _ = writeln!(
                out,
                "usher_events_sent_total{{event=\"{}\"}} {}",
                kind.as_str(),
                get(&self.events_sent[kind as usize])
            );
        }
        let _ = writeln!(
            out,
            "# HELP usher_errors_total Error answers by code.\n# TYPE usher_errors_total counter"
        );
        for (code, count) in self.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "usher_errors_total{{code=\"{code}\"}} {count}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let metrics = Metrics::default();
        metrics.joins.fetch_add(3, Relaxed);
        metrics.event_sent(EventKind::Admitted, 2);
        metrics.error("invalid_room");
        let text = metrics.render();
        assert!(text.contains("usher_joins_total 3\n"));
        assert!(text.contains("usher_events_sent_total{event=\"admitted\"} 2\n"));
        assert!(text.contains("usher_errors_total{code=\"invalid_room\"} 1\n"));
        assert!(
            text.lines()
                .all(|l| l.starts_with('#') || l.starts_with("usher_"))
        );
    }
}
