//! Measurements taken outside the streams: broker RSS from `/proc`, the
//! broker's Prometheus `/metrics`, Redis `INFO commandstats` via
//! `redis-cli`, and this process's open-files limit.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail, ensure};

use crate::http::{Connector, Target, one_shot, request};

/// Time allowed for one probe (metrics scrape or redis-cli run).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Extracts `VmRSS` in KiB from the text of `/proc/PID/status`.
pub fn parse_vmrss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Resident set size of `pid` in KiB.
pub fn read_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vmrss_kib(&status).with_context(|| format!("no VmRSS line in {path}"))
}

/// This process's own resident set size in KiB.
pub fn own_rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| parse_vmrss_kib(&status))
}

/// Soft `Max open files` limit from the text of `/proc/self/limits`;
/// `Some(u64::MAX)` when unlimited.
pub fn parse_nofile_soft(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// This process's soft open-files limit, if it can be read.
pub fn nofile_soft_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| parse_nofile_soft(&limits))
}

/// Sums all samples of metric `name` in Prometheus text exposition format,
/// across label sets. `None` when the metric has no sample.
pub fn parse_metric(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // Either labels or whitespace must follow, else it is a longer name.
        let value_part = if let Some(labels) = rest.strip_prefix('{') {
            match labels.rfind('}') {
                Some(close) => &labels[close + 1..],
                None => continue,
            }
        } else if rest.starts_with([' ', '\t']) {
            rest
        } else {
            continue;
        };
        let Some(value) = value_part
            .split_whitespace()
            .next()
            .and_then(parse_prometheus_float)
        else {
            continue;
        };
        *total.get_or_insert(0.0) += value;
    }
    total
}

fn parse_prometheus_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// The broker metrics the report uses.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BrokerMetrics {
    /// `usher_connections`: open client connections (gauge).
    pub connections: Option<f64>,
    /// `usher_broker_ticks_total`: position broadcasts so far (counter).
    pub ticks: Option<f64>,
    /// `usher_store_commands_total`: Redis commands the broker sent (counter).
    pub store_commands: Option<f64>,
}

impl BrokerMetrics {
    pub fn parse(text: &str) -> Self {
        Self {
            connections: parse_metric(text, "usher_connections"),
            ticks: parse_metric(text, "usher_broker_ticks_total"),
            store_commands: parse_metric(text, "usher_store_commands_total"),
        }
    }
}

/// Where the broker serves `/metrics`: its metrics port, which is not the
/// visitors' port the load goes to.
pub struct MetricsEndpoint {
    connector: Connector,
    target: Target,
}

impl MetricsEndpoint {
    /// Parses and resolves `http://host:port`.
    pub async fn resolve(url: &str) -> anyhow::Result<Self> {
        let target = Target::resolve(url).await?;
        Ok(Self {
            connector: Connector::new(target.addr, 0),
            target,
        })
    }

    /// Fetches and parses `GET /metrics`.
    pub async fn scrape(&self) -> anyhow::Result<BrokerMetrics> {
        let req = request("GET", "/metrics", &self.target.host, &[], true);
        let (response, _) = tokio::time::timeout(PROBE_TIMEOUT, one_shot(&self.connector, &req))
            .await
            .context("GET /metrics timed out")?
            .context("GET /metrics")?;
        ensure!(
            response.is_success(),
            "GET /metrics answered {}",
            response.status
        );
        let text = String::from_utf8_lossy(&response.body);
        Ok(BrokerMetrics::parse(&text))
    }
}

/// Calls per command from `INFO commandstats` output
/// (`cmdstat_<name>:calls=N,usec=...`).
pub fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for line in info.lines() {
        let Some(rest) = line.trim().strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, fields)) = rest.split_once(':') else {
            continue;
        };
        let count = fields
            .split(',')
            .find_map(|field| field.strip_prefix("calls="))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(count) = count {
            calls.insert(name.to_owned(), count);
        }
    }
    calls
}

/// Runs `redis-cli -u URL INFO commandstats` and parses the result.
pub async fn redis_commandstats(cli: &str, url: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let output = tokio::time::timeout(
        PROBE_TIMEOUT,
        tokio::process::Command::new(cli)
            .args(["-u", url, "INFO", "commandstats"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{cli} timed out"))?
    .with_context(|| format!("running {cli}"))?;
    if !output.status.success() {
        bail!(
            "{cli} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let stats = parse_commandstats(&text);
    ensure!(
        text.contains("# Commandstats") || !stats.is_empty(),
        "{cli} did not print command stats: {}",
        text.trim()
    );
    Ok(stats)
}

/// Per-command call increase between two snapshots, leaving out `info`
/// (the probes' own calls). Commands absent before count from zero.
pub fn commandstats_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .filter_map(|(name, &calls)| {
            let delta = calls.saturating_sub(before.get(name).copied().unwrap_or(0));
            (delta > 0).then(|| (name.clone(), delta))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmrss() {
        let status = "Name:\tusher\nVmPeak:\t  200000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss_kib(status), Some(12345));
        assert_eq!(parse_vmrss_kib("Name: x\n"), None);
    }

    #[test]
    fn nofile_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            1024                 1048576              files     \n";
        assert_eq!(parse_nofile_soft(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_nofile_soft(unlimited), Some(u64::MAX));
        assert_eq!(parse_nofile_soft("nothing"), None);
    }

    const METRICS: &str = "\
# HELP usher_connections Open client connections.
# TYPE usher_connections gauge
usher_connections 1500
# HELP usher_connections_opened_total Connections ever opened.
usher_connections_opened_total 99999
# TYPE usher_broker_ticks_total counter
usher_broker_ticks_total{room=\"demo\"} 120
usher_broker_ticks_total{room=\"other\",note=\"a } b\"} 3 1700000000000
usher_broker_ticks_total_bogus 7
";

    #[test]
    fn prometheus_parsing() {
        assert_eq!(parse_metric(METRICS, "usher_connections"), Some(1500.0));
        assert_eq!(
            parse_metric(METRICS, "usher_broker_ticks_total"),
            Some(123.0)
        );
        assert_eq!(parse_metric(METRICS, "usher_missing"), None);
        let metrics = BrokerMetrics::parse(METRICS);
        assert_eq!(metrics.connections, Some(1500.0));
        assert_eq!(metrics.ticks, Some(123.0));
        assert_eq!(parse_metric("x_total 1.5e3\n", "x_total"), Some(1500.0));
        assert_eq!(parse_metric("x_total NaN-ish\n", "x_total"), None);
    }

    const INFO: &str = "# Commandstats\r\n\
cmdstat_evalsha:calls=1200,usec=50000,usec_per_call=41.67,rejected_calls=0,failed_calls=0\r\n\
cmdstat_info:calls=3,usec=300,usec_per_call=100.00,rejected_calls=0,failed_calls=0\r\n\
cmdstat_client|setname:calls=2,usec=2,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n\
cmdstat_zrange:calls=40,usec=80,usec_per_call=2.00\r\n\
\r\n";

    #[test]
    fn commandstats_parsing() {
        let stats = parse_commandstats(INFO);
        assert_eq!(stats.len(), 4);
        assert_eq!(stats["evalsha"], 1200);
        assert_eq!(stats["client|setname"], 2);
        assert_eq!(stats["zrange"], 40);
    }

    #[test]
    fn commandstats_difference_skips_info() {
        let before = parse_commandstats(INFO);
        let mut after = before.clone();
        after.insert("evalsha".into(), 1300);
        after.insert("info".into(), 5);
        after.insert("publish".into(), 10);
        let delta = commandstats_delta(&before, &after);
        assert_eq!(
            delta.into_iter().collect::<Vec<_>>(),
            vec![("evalsha".to_owned(), 100), ("publish".to_owned(), 10)]
        );
    }
}
