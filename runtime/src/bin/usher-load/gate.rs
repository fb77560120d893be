//! Gate mode (`--gate`): the path an ingress takes. It admits `--clients`
//! visitors (the room's capacity must hold them), then asks the broker's
//! gate with their entry cookies (and binding cookies, for bound tokens) over `--connections` kept-alive
//! connections for `--hold` seconds, as a proxy does with its pooled
//! upstream connections. With `--checkout-key` it then revokes one visitor
//! through the checkout's API and times until the target and every
//! `--gate-brokers` broker refuse that visitor's token.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::info;

use crate::http::{Connector, KeepAlive, Target, encode_component, request};
use crate::proof;
use crate::stats::{Report, Summary, micros, ms, percentile, round};

/// How often a visitor not yet admitted asks for its status.
const STATUS_POLL: Duration = Duration::from_millis(50);
/// How often each broker is asked while waiting for a revocation to bite.
const REFUSAL_POLL: Duration = Duration::from_millis(1);
/// Longest wait for a revocation to be refused everywhere.
const REFUSAL_WAIT: Duration = Duration::from_secs(10);

pub struct GatePlan {
    pub connector: Arc<Connector>,
    pub target: Target,
    pub room: String,
    pub visitors: usize,
    pub connections: usize,
    pub hold: Duration,
    pub timeout: Duration,
    /// The room's checkout key, to time a revocation.
    pub checkout_key: Option<String>,
    /// Other brokers of the room that must refuse the revoked token too.
    pub other_brokers: Vec<Target>,
    pub source_addrs: u8,
    /// Solve the room's proof of work before each join.
    pub solve_proof: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionAnswer {
    entry_token: Option<String>,
    entry_binding: Option<String>,
    status_url: Option<String>,
}

/// What an admitted visitor shows the gate: its entry token, and the
/// binding secret of a bound one.
struct Pass {
    token: String,
    binding: Option<String>,
}

/// Sends `req` on `conn` and reads the session answer it gets.
async fn session_answer(
    conn: &mut KeepAlive,
    req: &[u8],
    timeout: Duration,
) -> anyhow::Result<SessionAnswer> {
    let (response, _) = tokio::time::timeout(timeout, conn.send(req))
        .await
        .context("timed out")??;
    if !response.is_success() {
        return Err(response.into_status_error().into());
    }
    serde_json::from_slice(&response.body).context("a session answer")
}

/// One visitor joined and waited until admitted: what it shows the gate.
async fn admitted_visitor(plan: &GatePlan, conn: &mut KeepAlive) -> anyhow::Result<Pass> {
    let join = proof::join_request(
        &plan.connector,
        &plan.target,
        &plan.room,
        plan.solve_proof,
        false,
    );
    let join = tokio::time::timeout(plan.timeout, join)
        .await
        .context("timed out")??;
    let mut answer = session_answer(conn, &join, plan.timeout).await?;
    let status_url = answer
        .status_url
        .clone()
        .context("the join answer has no statusUrl")?;
    let status = request("GET", &status_url, &plan.target.host, &[], false);
    let give_up = Instant::now() + plan.timeout;
    loop {
        if let Some(token) = answer.entry_token {
            return Ok(Pass {
                token,
                binding: answer.entry_binding,
            });
        }
        if Instant::now() >= give_up {
            bail!("a visitor was not admitted within {:?}", plan.timeout);
        }
        tokio::time::sleep(STATUS_POLL).await;
        answer = session_answer(conn, &status, plan.timeout).await?;
    }
}

/// Admits `plan.visitors` visitors over `plan.connections` connections.
async fn admit_all(plan: &Arc<GatePlan>) -> anyhow::Result<Vec<Pass>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..plan.connections.min(plan.visitors) {
        let (plan, next) = (Arc::clone(plan), Arc::clone(&next));
        workers.spawn(async move {
            let mut conn = KeepAlive::new(Arc::clone(&plan.connector));
            let mut passes = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < plan.visitors {
                passes.push(admitted_visitor(&plan, &mut conn).await?);
            }
            anyhow::Ok(passes)
        });
    }
    let mut passes = Vec::with_capacity(plan.visitors);
    while let Some(done) = workers.join_next().await {
        passes.extend(done.context("an admitting worker")??);
    }
    Ok(passes)
}

fn gate_request(room: &str, host: &str, pass: &Pass) -> Vec<u8> {
    let path = format!("/v1/rooms/{}/gate", encode_component(room));
    let mut cookie = format!("usher_entry={}", pass.token);
    if let Some(binding) = &pass.binding {
        cookie.push_str(&format!("; usher_bind={binding}"));
    }
    request("GET", &path, host, &[("Cookie", &cookie)], false)
}

/// What one checking connection saw.
#[derive(Default)]
struct Checks {
    latencies_us: Vec<u32>,
    by_status: BTreeMap<u16, u64>,
    errors: u64,
}

/// Asks the gate over `plan.connections` connections until `end`, each
/// connection going round its share of the visitors.
async fn check_until(plan: &Arc<GatePlan>, requests: Arc<Vec<Vec<u8>>>, end: Instant) -> Checks {
    let mut workers = JoinSet::new();
    for first in 0..plan.connections {
        let (plan, requests) = (Arc::clone(plan), Arc::clone(&requests));
        workers.spawn(async move {
            let mut conn = KeepAlive::new(Arc::clone(&plan.connector));
            let mut checks = Checks::default();
            let mut i = first;
            while Instant::now() < end {
                let req = &requests[i % requests.len()];
                i += plan.connections;
                match tokio::time::timeout(plan.timeout, conn.send(req)).await {
                    Ok(Ok((response, latency))) => {
                        checks.latencies_us.push(micros(latency));
                        *checks.by_status.entry(response.status).or_default() += 1;
                    }
                    _ => checks.errors += 1,
                }
            }
            checks
        });
    }
    let mut all = Checks::default();
    while let Some(done) = workers.join_next().await {
        if let Ok(checks) = done {
            all.latencies_us.extend(checks.latencies_us);
            all.errors += checks.errors;
            for (status, n) in checks.by_status {
                *all.by_status.entry(status).or_default() += n;
            }
        }
    }
    all
}

/// Revokes the token of `pass` and returns, per broker, the time from
/// sending the revocation until that broker's gate refused the token
/// (`None`: not within [`REFUSAL_WAIT`]).
async fn time_revocation(
    plan: &GatePlan,
    key: &str,
    pass: &Pass,
) -> anyhow::Result<Vec<(String, Option<Duration>)>> {
    let brokers: Vec<Target> = std::iter::once(plan.target.clone())
        .chain(plan.other_brokers.iter().cloned())
        .collect();
    let mut conns: Vec<(String, KeepAlive, Vec<u8>)> = brokers
        .iter()
        .map(|broker| {
            let connector = Arc::new(Connector::new(broker.addr, plan.source_addrs));
            (
                broker.addr.to_string(),
                KeepAlive::new(connector),
                gate_request(&plan.room, &broker.host, pass),
            )
        })
        .collect();
    for (name, conn, req) in &mut conns {
        let (response, _) = conn.send(req).await?;
        if response.status != 200 {
            bail!("{name} refuses the visitor before the revocation");
        }
    }
    let body = json!({ "entryToken": pass.token }).to_string();
    let revoke = format!(
        "POST /v1/rooms/{}/checkout/revoke HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        encode_component(&plan.room),
        plan.target.host,
        body.len()
    );
    let mut conn = KeepAlive::new(Arc::clone(&plan.connector));
    let sent = Instant::now();
    let (response, _) = conn.send(revoke.as_bytes()).await?;
    if !response.is_success() {
        return Err(anyhow::Error::from(response.into_status_error()).context("the revocation"));
    }
    let mut refused = Vec::new();
    for (name, mut conn, req) in conns {
        let mut at = None;
        while sent.elapsed() < REFUSAL_WAIT {
            let (response, _) = conn.send(&req).await?;
            if response.status == 401 {
                at = Some(sent.elapsed());
                break;
            }
            tokio::time::sleep(REFUSAL_POLL).await;
        }
        refused.push((name, at));
    }
    Ok(refused)
}

pub async fn run(plan: GatePlan) -> anyhow::Result<Report> {
    let plan = Arc::new(plan);
    let started = Instant::now();
    info!(visitors = plan.visitors, "admitting the visitors");
    let passes = admit_all(&plan).await?;
    let admit_s = started.elapsed().as_secs_f64();
    let requests: Vec<Vec<u8>> = passes
        .iter()
        .map(|pass| gate_request(&plan.room, &plan.target.host, pass))
        .collect();
    info!(connections = plan.connections, hold = ?plan.hold, "asking the gate");
    let checking = Instant::now();
    let mut checks = check_until(&plan, Arc::new(requests), checking + plan.hold).await;
    let check_s = checking.elapsed().as_secs_f64();

    let mut r = Report::default();
    r.push("mode", "gate");
    r.push("target", plan.target.addr.to_string());
    r.push("room", plan.room.as_str());
    r.push("visitors_admitted", passes.len());
    r.push(
        "tokens_bound",
        passes.iter().filter(|pass| pass.binding.is_some()).count(),
    );
    r.push("admit_phase_s", round(admit_s, 3));
    r.push("gate_connections", plan.connections);
    r.push("gate_window_s", round(check_s, 3));
    let summary = Summary::of(&mut checks.latencies_us);
    r.push("gate_checks", summary.count);
    r.push(
        "gate_checks_per_s",
        round(summary.count as f64 / check_s.max(1e-9), 1),
    );
    let statuses: BTreeMap<String, u64> = checks
        .by_status
        .iter()
        .map(|(status, n)| (status.to_string(), *n))
        .collect();
    r.push("gate_answers", json!(statuses));
    r.push("gate_errors", checks.errors);
    r.push_summary("gate_latency", &summary, &["p50", "p90", "p99"]);
    r.push(
        "gate_latency_p999_ms",
        ms(percentile(&checks.latencies_us, 99.9)),
    );
    r.push_summary("gate_latency", &summary, &["max"]);

    if let (Some(key), Some(pass)) = (&plan.checkout_key, passes.first()) {
        let refused = time_revocation(&plan, key, pass).await?;
        let by_broker: serde_json::Map<String, Value> = refused
            .into_iter()
            .map(|(name, at)| {
                let value = at.map_or(Value::Null, |d| round(d.as_secs_f64() * 1000.0, 1));
                (name, value)
            })
            .collect();
        r.push("revocation_to_refusal_ms", Value::Object(by_broker));
    }
    r.push("elapsed_s", round(started.elapsed().as_secs_f64(), 3));
    Ok(r)
}
