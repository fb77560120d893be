//! `usher-load`: load generator and benchmark for the Usher waiting-room
//! broker.
//!
//! A run (besides `--gate`, see `gate.rs`) has three phases, all bounded:
//! 1. **Joins** at a fixed rate. In streaming mode each join is a short
//!    connection, followed by opening the user's event stream on a new
//!    connection; in `--joins-only` mode joins go over `--connections`
//!    keep-alive connections and no stream is opened.
//! 2. **Hold** for `--hold` seconds with every stream open, bracketed by
//!    probes of the broker's `/metrics` (on its metrics port, `--metrics`),
//!    Redis `INFO commandstats` and the broker's RSS.
//! 3. **Teardown** and report.
//!
//! The tool shares a small machine with the broker and Redis, so it keeps
//! per-stream state to a few dozen bytes (see `clients.rs` and `sse.rs`)
//! and runs on one runtime thread unless told otherwise.
//!
//! Many connections need a raised open-files limit, e.g.
//! `ulimit -n $(ulimit -Hn) && usher-load --clients 100000 --join-rate 2000`.

mod clients;
mod gate;
mod http;
mod probes;
mod proof;
mod recorder;
mod sse;
mod stats;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use crate::clients::{Ctx, joins_only_worker, streaming_client};
use crate::http::{Connector, Target};
use crate::probes::{BrokerMetrics, MetricsEndpoint, commandstats_delta};
use crate::stats::{Report, Summary, broadcast_spread, number, round};

/// How often the join dispatcher wakes up.
const DISPATCH_PERIOD: Duration = Duration::from_millis(10);
/// A broadcast counts towards the spread when this share of the
/// best-covered broadcast's clients received it.
const SPREAD_COVERAGE: f64 = 0.99;
/// Longest wait for aborted stream tasks to release their sockets.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// File descriptors kept in reserve beyond the connections.
const FD_RESERVE: u64 = 100;

/// Load generator and benchmark for the Usher waiting-room broker.
#[derive(Debug, Parser)]
#[command(
    name = "usher-load",
    version,
    about = "Load generator and benchmark for the Usher waiting-room broker",
    after_help = "Many streams need a raised open-files limit: ulimit -n $(ulimit -Hn)"
)]
struct Args {
    /// Broker base URL (http only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,

    /// Base URL of the broker's metrics port (its USHER_METRICS_LISTEN).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9090")]
    metrics: String,

    /// Room to join.
    #[arg(long, default_value = "demo")]
    room: String,

    /// Number of users to join (and, unless --joins-only, SSE streams to open).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    clients: u32,

    /// Joins per second.
    #[arg(long, value_name = "R", default_value_t = 1000.0, value_parser = positive_f64)]
    join_rate: f64,

    /// Seconds to hold all streams open after the last join.
    #[arg(long, value_name = "SECS", default_value_t = 20.0, value_parser = non_negative_f64)]
    hold: f64,

    /// Bind client sockets round-robin to 127.0.0.1..=127.0.0.K (loopback
    /// targets only; 0 leaves the source address to the kernel).
    #[arg(long, value_name = "K", default_value_t = 8, value_parser = clap::value_parser!(u8).range(0..=254))]
    source_addrs: u8,

    /// Only measure joins (throughput and latency); open no streams.
    #[arg(long)]
    joins_only: bool,

    /// Measure the shop's gate instead: admit --clients visitors, then ask
    /// the gate with their entry cookies over --connections keep-alive
    /// connections for --hold seconds (the room's capacity must hold them).
    #[arg(long, conflicts_with_all = ["joins_only", "complete_after"])]
    gate: bool,

    /// With --gate: the file holding the room's checkout key; the run then
    /// revokes one visitor and times until every broker refuses it.
    #[arg(long, value_name = "FILE", requires = "gate")]
    checkout_key: Option<String>,

    /// With --checkout-key: other brokers of the room (http://host:port,
    /// comma-separated) that must refuse the revoked visitor too.
    #[arg(
        long,
        value_name = "URLS",
        value_delimiter = ',',
        requires = "checkout_key"
    )]
    gate_brokers: Vec<String>,

    /// Keep-alive connections carrying the joins in --joins-only mode (and
    /// the gate checks in --gate mode).
    #[arg(long, value_name = "J", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,

    /// Broker process id: report its RSS before the run and with all
    /// streams held, and the growth per held connection.
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,

    /// Redis URL: report Redis commands per broker tick over the hold window.
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,

    /// redis-cli executable used with --redis-url.
    #[arg(long, value_name = "PATH", default_value = "redis-cli")]
    redis_cli: String,

    /// Complete admitted sessions this many milliseconds after admission,
    /// so the line keeps moving.
    #[arg(long, value_name = "MS")]
    complete_after: Option<u64>,

    /// Safety limit on the run, in seconds: cuts the join phase and the hold
    /// window short (the final probes and teardown take a few seconds more
    /// at most).
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    max_seconds: u64,

    /// Time limit for each request (join, stream opening, complete), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,

    /// Runtime worker threads of the load generator itself.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,

    /// Print the report as one JSON object instead of `key: value` lines.
    #[arg(long)]
    json: bool,

    /// Solve the room's proof of work before each join, as the waiting page
    /// does (a room of anonymous visitors asks for one unless its rules
    /// say 0). The solving is not part of the join latency.
    #[arg(long)]
    solve_proof: bool,
}

fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

fn non_negative_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("{s:?} is not a non-negative number")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match try_main(&args) {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("usher-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main(args: &Args) -> anyhow::Result<Report> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.threads))
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(run(args))
}

/// The broker-side readings taken at one edge of the hold window.
#[derive(Debug, Default)]
struct Edge {
    metrics: Option<BrokerMetrics>,
    redis: Option<BTreeMap<String, u64>>,
}

async fn probe_edge(metrics: &MetricsEndpoint, args: &Args) -> Edge {
    let metrics = metrics.scrape();
    let redis = async {
        match &args.redis_url {
            Some(url) => Some(probes::redis_commandstats(&args.redis_cli, url).await),
            None => None,
        }
    };
    let (metrics, redis) = tokio::join!(metrics, redis);
    Edge {
        metrics: metrics
            .map_err(|e| warn!("scraping /metrics failed: {e:#}"))
            .ok(),
        redis: redis.and_then(|r| r.map_err(|e| warn!("redis INFO failed: {e:#}")).ok()),
    }
}

fn broker_rss(pid: Option<u32>) -> Option<u64> {
    let pid = pid?;
    probes::read_rss_kib(pid)
        .map_err(|e| warn!("broker RSS: {e:#}"))
        .ok()
}

fn check_open_files(needed: u64) {
    match probes::nofile_soft_limit() {
        Some(limit) if limit < needed => warn!(
            "the soft open-files limit is {limit}, below the {needed} this run needs; \
             raise it first, e.g. `ulimit -n $(ulimit -Hn)`"
        ),
        Some(_) => {}
        None => warn!("could not read the open-files limit from /proc/self/limits"),
    }
}

/// The running clients.
enum Workload {
    /// One task per user. Only abort handles are kept (a pointer each,
    /// where a `JoinSet` entry costs several words per task).
    Streaming(Vec<AbortHandle>),
    JoinsOnly {
        workers: JoinSet<()>,
        permits: Arc<Semaphore>,
    },
}

impl Workload {
    fn start(ctx: &Arc<Ctx>, args: &Args) -> Self {
        if !args.joins_only {
            return Self::Streaming(Vec::with_capacity(args.clients as usize));
        }
        let permits = Arc::new(Semaphore::new(0));
        let mut workers = JoinSet::new();
        for _ in 0..args.connections {
            workers.spawn(joins_only_worker(Arc::clone(ctx), Arc::clone(&permits)));
        }
        Self::JoinsOnly { workers, permits }
    }

    /// Starts `n` more joins.
    fn dispatch(&mut self, ctx: &Arc<Ctx>, n: usize) {
        match self {
            Self::Streaming(tasks) => {
                for _ in 0..n {
                    tasks.push(tokio::spawn(streaming_client(Arc::clone(ctx))).abort_handle());
                }
            }
            Self::JoinsOnly { permits, .. } => permits.add_permits(n),
        }
    }

    /// Stops every client and waits (briefly) until their sockets are closed.
    async fn shutdown(self, ctx: &Ctx) {
        match self {
            Self::Streaming(tasks) => {
                for task in &tasks {
                    task.abort();
                }
                let give_up = Instant::now() + SHUTDOWN_WAIT;
                while ctx.rec.streams_open.load(Ordering::Relaxed) > 0 && Instant::now() < give_up {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Self::JoinsOnly {
                mut workers,
                permits,
            } => {
                permits.close();
                workers.shutdown().await;
            }
        }
    }
}

/// Dispatches the joins at the configured rate and waits until each has
/// finished (joined and, when streaming, opened its stream) or the
/// deadline passes. Returns false when the deadline cut it short.
async fn join_phase(
    ctx: &Arc<Ctx>,
    args: &Args,
    workload: &mut Workload,
    deadline: Instant,
) -> bool {
    let clients = args.clients as usize;
    let started = Instant::now();
    let mut dispatched = 0usize;
    let mut ticker = tokio::time::interval(DISPATCH_PERIOD);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    while dispatched < clients {
        ticker.tick().await;
        if Instant::now() >= deadline {
            return false;
        }
        // Join k (0-based) is due at k / rate seconds; catching up after a
        // late tick keeps the average rate.
        let due = (started.elapsed().as_secs_f64() * args.join_rate).floor() as usize + 1;
        let due = due.min(clients);
        if due > dispatched {
            workload.dispatch(ctx, due - dispatched);
            dispatched = due;
        }
    }
    info!(dispatched, "all joins sent; waiting for answers");
    while ctx.rec.settled.load(Ordering::Acquire) < clients {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

fn spawn_progress(ctx: &Arc<Ctx>) -> tokio::task::JoinHandle<()> {
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let rec = &ctx.rec;
            info!(
                joins_sent = rec.joins_sent.load(Ordering::Relaxed),
                joins_ok = rec.joins_ok.load(Ordering::Relaxed),
                joins_failed = rec.joins_failed.load(Ordering::Relaxed),
                streams_open = rec.streams_open.load(Ordering::Relaxed),
                admitted = rec.admitted_events.load(Ordering::Relaxed),
                "progress"
            );
        }
    })
}

/// `--gate`: see `gate.rs`.
async fn run_gate(args: &Args) -> anyhow::Result<Report> {
    check_open_files(u64::from(args.connections) + FD_RESERVE);
    let target = Target::resolve(&args.target).await?;
    let mut other_brokers = Vec::new();
    for url in &args.gate_brokers {
        other_brokers.push(Target::resolve(url).await?);
    }
    let checkout_key = match &args.checkout_key {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the checkout key {path}"))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let hold = Duration::from_secs_f64(args.hold).min(Duration::from_secs(args.max_seconds));
    gate::run(gate::GatePlan {
        connector: Arc::new(Connector::new(target.addr, args.source_addrs)),
        target,
        room: args.room.clone(),
        visitors: args.clients as usize,
        connections: args.connections as usize,
        hold,
        timeout: Duration::from_secs(args.timeout),
        checkout_key,
        other_brokers,
        source_addrs: args.source_addrs,
        solve_proof: args.solve_proof,
    })
    .await
}

async fn run(args: &Args) -> anyhow::Result<Report> {
    if args.gate {
        return run_gate(args).await;
    }
    let run_started = Instant::now();
    let deadline = run_started + Duration::from_secs(args.max_seconds);
    let clients = u64::from(args.clients);
    check_open_files(if args.joins_only {
        u64::from(args.connections) + FD_RESERVE
    } else {
        clients + FD_RESERVE
    });

    let target = Target::resolve(&args.target).await?;
    let connector = Arc::new(Connector::new(target.addr, args.source_addrs));
    let metrics = MetricsEndpoint::resolve(&args.metrics).await?;
    if args.source_addrs > 0 && connector.source_count() == 0 {
        warn!(
            "--source-addrs applies to IPv4 loopback targets only; {} is not",
            target.addr
        );
    }
    let ctx = Arc::new(Ctx::new(
        args.clients as usize,
        Arc::clone(&connector),
        target.clone(),
        args.room.clone(),
        Duration::from_secs(args.timeout),
        args.complete_after.map(Duration::from_millis),
        args.solve_proof,
    ));

    // Fail early and clearly when nothing listens at the target.
    if let Err(e) = connector.connect().await {
        return Err(anyhow::Error::new(e))
            .with_context(|| format!("broker not reachable at {}", target.addr));
    }
    let rss_before = broker_rss(args.broker_pid);

    let progress = spawn_progress(&ctx);
    let mut workload = Workload::start(&ctx, args);
    info!(
        clients,
        rate = args.join_rate,
        mode = if args.joins_only {
            "joins-only"
        } else {
            "streaming"
        },
        "join phase"
    );
    let joins_complete = join_phase(&ctx, args, &mut workload, deadline).await;
    if !joins_complete {
        warn!("--max-seconds reached during the join phase");
    }

    info!(hold_s = args.hold, "hold window");
    let hold_started = Instant::now();
    let edge_before = probe_edge(&metrics, args).await;
    let planned_end = hold_started + Duration::from_secs_f64(args.hold);
    tokio::time::sleep_until(planned_end.min(deadline)).await;
    let held = ctx.rec.streams_open.load(Ordering::Relaxed).max(0);
    let own_rss = probes::own_rss_kib();
    let (edge_after, rss_end) = tokio::join!(probe_edge(&metrics, args), async {
        broker_rss(args.broker_pid)
    });
    let hold_s = hold_started.elapsed().as_secs_f64();

    progress.abort();
    workload.shutdown(&ctx).await;

    let readings = Readings {
        held,
        hold_s,
        rss_before,
        rss_end,
        own_rss,
        edge_before,
        edge_after,
        deadline_hit: !joins_complete || planned_end > deadline,
        elapsed: run_started.elapsed(),
    };
    Ok(build_report(args, &ctx, &readings))
}

/// What the run measured besides the recorder's counters.
#[derive(Debug)]
struct Readings {
    /// Streams open at the end of the hold window.
    held: i64,
    /// Length of the hold window including its probes.
    hold_s: f64,
    rss_before: Option<u64>,
    rss_end: Option<u64>,
    own_rss: Option<u64>,
    edge_before: Edge,
    edge_after: Edge,
    /// `--max-seconds` cut the join phase or the hold window short.
    deadline_hit: bool,
    elapsed: Duration,
}

fn build_report(args: &Args, ctx: &Ctx, readings: &Readings) -> Report {
    let Readings {
        held,
        hold_s,
        rss_before,
        rss_end,
        own_rss,
        ref edge_before,
        ref edge_after,
        deadline_hit,
        elapsed,
    } = *readings;
    let rec = &ctx.rec;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut r = Report::default();

    r.push(
        "mode",
        if args.joins_only {
            "joins-only"
        } else {
            "streaming"
        },
    );
    r.push("target", ctx.target.addr.to_string());
    r.push("room", args.room.as_str());
    r.push("clients_requested", args.clients);
    r.push("joins_sent", load(&rec.joins_sent));
    r.push("joins_ok", load(&rec.joins_ok));
    r.push("joins_failed", load(&rec.joins_failed));
    r.push("joins_admitted_immediately", load(&rec.joins_admitted));
    let phase = rec.join_phase();
    r.push(
        "join_phase_s",
        phase.map_or(Value::Null, |d| round(d.as_secs_f64(), 3)),
    );
    let throughput = phase.filter(|d| !d.is_zero()).map_or(Value::Null, |d| {
        round(load(&rec.joins_ok) as f64 / d.as_secs_f64(), 1)
    });
    r.push("join_throughput_per_s", throughput);
    let joins = Summary::of(&mut rec.take_join_latencies());
    r.push_summary("join_latency", &joins, &["p50", "p90", "p99", "max"]);

    if !args.joins_only {
        r.push("streams_opened", load(&rec.streams_opened));
        r.push("streams_open_failed", load(&rec.streams_failed));
        r.push("streams_held_end", held);
        r.push("streams_ended_early", load(&rec.streams_ended_early));
        r.push(
            "streams_ended_by_closed_event",
            load(&rec.streams_closed_event),
        );
        r.push("closed_reasons", json!(rec.closed_reasons()));
    }
    r.push("hold_s", round(hold_s, 3));
    r.push(
        "broker_connections_end",
        edge_after
            .metrics
            .and_then(|m| m.connections)
            .map_or(Value::Null, number),
    );

    if args.broker_pid.is_some() {
        r.push("broker_rss_before_kib", rss_before);
        r.push("broker_rss_end_kib", rss_end);
        let per_conn = match (rss_before, rss_end) {
            (Some(before), Some(end)) if held > 0 => {
                round((end as f64 - before as f64) / held as f64, 2)
            }
            _ => Value::Null,
        };
        r.push("broker_rss_per_conn_kib", per_conn);
    }

    if !args.joins_only {
        let admission = Summary::of(&mut rec.take_admission_latencies());
        r.push("admitted_events", load(&rec.admitted_events));
        r.push("admission_latency_count", admission.count);
        r.push_summary("admission_latency", &admission, &["p50", "p99", "max"]);

        let spread = broadcast_spread(&rec.take_broadcasts(), SPREAD_COVERAGE);
        r.push("position_events_received", load(&rec.position_events));
        r.push("position_broadcasts_seen", spread.seen);
        r.push("position_broadcast_max_clients", spread.max_clients);
        r.push("position_broadcasts_considered", spread.considered);
        r.push_summary("position_spread", &spread.spread, &["p50", "p99", "max"]);
    }

    let ticks = match (
        edge_before.metrics.and_then(|m| m.ticks),
        edge_after.metrics.and_then(|m| m.ticks),
    ) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    r.push("broker_ticks_window", ticks.map_or(Value::Null, number));
    // The broker's own Redis commands, whatever else uses the same Redis.
    let broker_commands = match (
        edge_before.metrics.and_then(|m| m.store_commands),
        edge_after.metrics.and_then(|m| m.store_commands),
    ) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    r.push(
        "broker_redis_commands_window",
        broker_commands.map_or(Value::Null, number),
    );
    r.push(
        "broker_redis_commands_per_tick",
        match (broker_commands, ticks) {
            (Some(commands), Some(ticks)) if ticks > 0.0 => round(commands / ticks, 2),
            _ => Value::Null,
        },
    );
    if args.redis_url.is_some() {
        let delta = match (&edge_before.redis, &edge_after.redis) {
            (Some(before), Some(after)) => Some(commandstats_delta(before, after)),
            _ => None,
        };
        let total = delta.as_ref().map(|d| d.values().sum::<u64>());
        r.push("redis_commands_window", total);
        let per_tick = match (total, ticks) {
            (Some(total), Some(ticks)) if ticks > 0.0 => round(total as f64 / ticks, 2),
            _ => Value::Null,
        };
        r.push("redis_commands_per_tick", per_tick);
        r.push(
            "redis_commands_by_name",
            delta.map_or(Value::Null, |d| json!(d)),
        );
    }

    if args.complete_after.is_some() {
        r.push("completes_ok", load(&rec.completes_ok));
        r.push("completes_failed", load(&rec.completes_failed));
    }
    r.push("errors_connect", load(&rec.errors_connect));
    r.push("errors_io", load(&rec.errors_io));
    r.push("errors_timeout", load(&rec.errors_timeout));
    r.push("errors_protocol", load(&rec.errors_protocol));
    r.push("errors_http", json!(rec.errors_http()));
    r.push("load_generator_rss_end_kib", own_rss);
    r.push("deadline_hit", deadline_hit);
    r.push("elapsed_s", round(elapsed.as_secs_f64(), 3));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HttpError;

    #[test]
    fn cli_defaults_and_flags() {
        let args = Args::try_parse_from(["usher-load"]).expect("defaults parse");
        assert_eq!(args.target, "http://127.0.0.1:8080");
        assert_eq!(args.metrics, "http://127.0.0.1:9090");
        assert_eq!(args.room, "demo");
        assert_eq!(args.clients, 1000);
        assert_eq!(args.join_rate, 1000.0);
        assert_eq!(args.hold, 20.0);
        assert_eq!(args.source_addrs, 8);
        assert_eq!(args.connections, 64);
        assert_eq!(args.max_seconds, 600);
        assert_eq!(args.redis_cli, "redis-cli");
        assert!(!args.joins_only && !args.json);

        let args = Args::try_parse_from([
            "usher-load",
            "--clients",
            "50000",
            "--join-rate",
            "2500.5",
            "--hold",
            "0",
            "--joins-only",
            "--complete-after",
            "250",
            "--broker-pid",
            "42",
            "--metrics",
            "http://127.0.0.1:9191",
            "--redis-url",
            "redis://127.0.0.1:6379",
            "--json",
        ])
        .expect("flags parse");
        assert_eq!(args.clients, 50_000);
        assert_eq!(args.join_rate, 2500.5);
        assert_eq!(args.complete_after, Some(250));
        assert_eq!(args.broker_pid, Some(42));
        assert_eq!(args.metrics, "http://127.0.0.1:9191");
        assert!(args.joins_only && args.json);

        let args = Args::try_parse_from([
            "usher-load",
            "--gate",
            "--checkout-key",
            "/tmp/key",
            "--gate-brokers",
            "http://127.0.0.1:8081,http://127.0.0.1:8082",
        ])
        .expect("gate flags parse");
        assert!(args.gate);
        assert_eq!(args.gate_brokers.len(), 2);
        assert!(Args::try_parse_from(["usher-load", "--gate", "--joins-only"]).is_err());
        assert!(Args::try_parse_from(["usher-load", "--checkout-key", "/tmp/key"]).is_err());
        assert!(Args::try_parse_from(["usher-load", "--join-rate", "0"]).is_err());
        assert!(Args::try_parse_from(["usher-load", "--clients", "0"]).is_err());
        assert!(Args::try_parse_from(["usher-load", "--source-addrs", "255"]).is_err());
    }

    #[test]
    fn http_error_categories() {
        let rec = recorder::Recorder::new(0);
        rec.error(&HttpError::Timeout);
        rec.error(&HttpError::Status {
            status: 503,
            code: Some("room_closed".into()),
        });
        rec.error(&HttpError::Status {
            status: 500,
            code: None,
        });
        assert_eq!(rec.errors_timeout.load(Ordering::Relaxed), 1);
        let http = rec.errors_http();
        assert_eq!(http["503_room_closed"], 1);
        assert_eq!(http["500"], 1);
    }
}
