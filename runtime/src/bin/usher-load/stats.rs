//! Percentiles over latency samples and the report printer.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::{Map, Value};

/// Nearest-rank percentile of an ascending slice (`p` in 0..=100).
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Summary of a set of microsecond samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub count: usize,
    pub p50: Option<u32>,
    pub p90: Option<u32>,
    pub p99: Option<u32>,
    pub max: Option<u32>,
}

impl Summary {
    /// Sorts `samples` in place and summarises them.
    pub fn of(samples: &mut [u32]) -> Self {
        samples.sort_unstable();
        Self {
            count: samples.len(),
            p50: percentile(samples, 50.0),
            p90: percentile(samples, 90.0),
            p99: percentile(samples, 99.0),
            max: samples.last().copied(),
        }
    }
}

/// Arrival record of one position broadcast (one SSE event id).
#[derive(Debug, Clone, Copy)]
pub struct Broadcast {
    pub first: Instant,
    pub last: Instant,
    pub clients: u32,
}

/// Spread of position broadcasts that reached nearly every waiting client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpreadReport {
    /// Distinct broadcast ids seen.
    pub seen: usize,
    /// Most clients that received any single broadcast (the denominator).
    pub max_clients: u32,
    /// Broadcasts received by at least `threshold` of `max_clients`.
    pub considered: usize,
    /// last − first arrival of the considered broadcasts, microseconds.
    pub spread: Summary,
}

/// Spreads (last − first arrival) of the broadcasts that at least
/// `threshold` (e.g. 0.99) of the best-covered broadcast's clients got.
///
/// The best-covered broadcast stands in for "the clients that were
/// waiting": broadcasts that went out while streams were still opening, or
/// after some clients were admitted, reach fewer clients and their spread
/// would describe a different population.
pub fn broadcast_spread(broadcasts: &HashMap<u64, Broadcast>, threshold: f64) -> SpreadReport {
    let max_clients = broadcasts.values().map(|b| b.clients).max().unwrap_or(0);
    let needed = (f64::from(max_clients) * threshold).ceil() as u32;
    let mut spreads: Vec<u32> = broadcasts
        .values()
        .filter(|b| b.clients >= needed.max(1))
        .map(|b| micros(b.last.saturating_duration_since(b.first)))
        .collect();
    SpreadReport {
        seen: broadcasts.len(),
        max_clients,
        considered: spreads.len(),
        spread: Summary::of(&mut spreads),
    }
}

/// A duration as whole microseconds, saturating at `u32::MAX` (~71 min).
pub fn micros(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Microseconds as milliseconds with microsecond precision, for reporting.
pub fn ms(us: Option<u32>) -> Value {
    us.map_or(Value::Null, |us| Value::from(f64::from(us) / 1000.0))
}

/// A number rounded to `digits` decimals, or null when not finite.
pub fn round(x: f64, digits: i32) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    let scale = 10f64.powi(digits);
    Value::from((x * scale).round() / scale)
}

/// A number as an integer when it is one (counters and gauges scraped as
/// floats), else as a float; null when not finite.
pub fn number(x: f64) -> Value {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        round(x, 3)
    }
}

/// Ordered key/value report, printed as `key: value` lines or one JSON object.
#[derive(Debug, Default)]
pub struct Report {
    entries: Vec<(String, Value)>,
}

impl Report {
    pub fn push(&mut self, key: &str, value: impl Into<Value>) {
        self.entries.push((key.to_owned(), value.into()));
    }

    /// Adds `prefix_p50_ms`, `_p90_ms`, `_p99_ms`, `_max_ms` (those listed).
    pub fn push_summary(&mut self, prefix: &str, summary: &Summary, which: &[&str]) {
        for &name in which {
            let value = match name {
                "p50" => summary.p50,
                "p90" => summary.p90,
                "p99" => summary.p99,
                "max" => summary.max,
                _ => continue,
            };
            self.push(&format!("{prefix}_{name}_ms"), ms(value));
        }
    }

    /// One line per metric; object values become `key.sub: value` lines,
    /// nulls print as `n/a`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (key, value) in &self.entries {
            match value {
                Value::Object(map) if map.is_empty() => {
                    out.push_str(&format!("{key}: none\n"));
                }
                Value::Object(map) => {
                    for (sub, v) in map {
                        out.push_str(&format!("{key}.{sub}: {}\n", scalar(v)));
                    }
                }
                other => out.push_str(&format!("{key}: {}\n", scalar(other))),
            }
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let map: Map<String, Value> = self.entries.iter().cloned().collect();
        Value::Object(map)
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "n/a".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<u32> = (1..=100).rev().collect();
        let s = Summary::of(&mut samples);
        assert_eq!(s.count, 100);
        assert_eq!(s.p50, Some(50));
        assert_eq!(s.p90, Some(90));
        assert_eq!(s.p99, Some(99));
        assert_eq!(s.max, Some(100));
        assert_eq!(percentile(&[7], 0.0), Some(7));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2, 3], 50.0), Some(2));
        assert_eq!(percentile(&[1, 2], 50.0), Some(1));
        assert_eq!(percentile(&[1, 2], 51.0), Some(2));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(Summary::of(&mut []), Summary::default());
    }

    #[test]
    fn spread_only_counts_well_covered_broadcasts() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut map = HashMap::new();
        map.insert(
            1,
            Broadcast {
                first: at(0),
                last: at(900),
                clients: 500,
            },
        );
        map.insert(
            2,
            Broadcast {
                first: at(1000),
                last: at(1010),
                clients: 1000,
            },
        );
        map.insert(
            3,
            Broadcast {
                first: at(2000),
                last: at(2030),
                clients: 990,
            },
        );
        map.insert(
            4,
            Broadcast {
                first: at(3000),
                last: at(3500),
                clients: 989,
            },
        );
        let report = broadcast_spread(&map, 0.99);
        assert_eq!(report.seen, 4);
        assert_eq!(report.max_clients, 1000);
        assert_eq!(report.considered, 2);
        assert_eq!(report.spread.p50, Some(10_000));
        assert_eq!(report.spread.max, Some(30_000));
        assert_eq!(
            broadcast_spread(&HashMap::new(), 0.99),
            SpreadReport::default()
        );
    }

    #[test]
    fn report_text_and_json() {
        let mut report = Report::default();
        report.push("clients_requested", 10);
        report.push("rss_kib", Value::Null);
        report.push("errors_http", serde_json::json!({"503_room_full": 2}));
        report.push("closed_reasons", serde_json::json!({}));
        report.push_summary(
            "join_latency",
            &Summary {
                count: 1,
                p50: Some(1500),
                p90: None,
                p99: None,
                max: Some(2000),
            },
            &["p50", "max"],
        );
        assert_eq!(
            report.to_text(),
            "clients_requested: 10\nrss_kib: n/a\nerrors_http.503_room_full: 2\n\
             closed_reasons: none\njoin_latency_p50_ms: 1.5\njoin_latency_max_ms: 2.0\n"
        );
        let json = report.to_json();
        assert_eq!(json["clients_requested"], 10);
        assert_eq!(json["join_latency_p50_ms"], 1.5);
        assert_eq!(json["errors_http"]["503_room_full"], 2);
    }

    #[test]
    fn rounding() {
        assert_eq!(round(1.23456, 2), Value::from(1.23));
        assert_eq!(round(f64::NAN, 2), Value::Null);
        assert_eq!(micros(Duration::from_secs(1)), 1_000_000);
        assert_eq!(number(1992.0), Value::from(1992));
        assert_eq!(number(2.5), Value::from(2.5));
        assert_eq!(number(f64::INFINITY), Value::Null);
    }
}
