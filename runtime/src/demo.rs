//! `usher demo`: a broker and a dispatcher in one process on the in-memory
//! store, serving the waiting page, optionally with a simulated crowd.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::auth::{UserAuth, random_id};
use crate::broker::{Broker, BrokerSettings};
use crate::clock::now_ms;
use crate::config::{DEFAULT_JOINS_PER_ADDRESS, DEFAULT_SESSIONS_PER_ADDRESS, DemoArgs};
use crate::dispatcher::Dispatcher;
use crate::metrics::Metrics;
use crate::queue::{JoinRequest, MemoryStore, Queueing, RoomConfig, SessionState, Store};
use crate::rules::RoomRules;
use crate::serve::{listen, spawn_metrics_server};
use crate::supervisor::Supervisor;
use crate::tokens::EntryTokenSigner;

pub const DEMO_ROOM: &str = "demo";
const ABANDON_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let rules = RoomRules::new(
        Arc::clone(&store),
        RoomConfig {
            capacity: args.capacity,
            admission_rate: None,
            session_duration_ms: args.session_duration.as_millis() as i64,
            queueing: Queueing::Fifo,
            opens_at: None,
            closes_at: None,
            paused: false,
            abandon_timeout_ms: ABANDON_TIMEOUT.as_millis() as i64,
            claim_window_ms: 0,
            max_session_duration_ms: 0,
            message: String::new(),
            joins_per_address_per_minute: DEFAULT_JOINS_PER_ADDRESS,
            sessions_per_address: DEFAULT_SESSIONS_PER_ADDRESS,
            priority_share: 100,
            revision: 0,
            proof_of_work_bits: args.proof_of_work,
        },
    );
    rules.ensure().await?;
    let signer = Arc::new(EntryTokenSigner::generate());
    let users = UserAuth::Anonymous {
        keys: signer.mac_keys("anonymous-user"),
    };
    let metrics = Arc::new(Metrics::default());
    let supervisor = Supervisor::with_signals();
    let settings = BrokerSettings {
        position_interval: Duration::from_millis(500),
        keep_alive: Duration::from_secs(15),
        abandon_timeout: ABANDON_TIMEOUT,
        broker_id: "demo".into(),
        issuer: "usher-demo".into(),
        checkout_key: None,
        return_origins: Default::default(),
        entry_cookie: Default::default(),
        waiting_page: Default::default(),
        addresses: Default::default(),
        token_binding: true,
        human_check: None,
    };
    let broker = Broker::new(
        DEMO_ROOM.into(),
        Arc::clone(&rules),
        signer,
        users,
        Arc::clone(&metrics),
        settings,
        &supervisor,
    );
    if let Some(addr) = args.metrics_listen {
        spawn_metrics_server(
            &supervisor,
            listen(addr)?,
            Arc::clone(&store),
            Arc::clone(&metrics),
        );
    }
    Dispatcher::new(rules, metrics, args.tick).start(&supervisor);
    if args.simulate > 0 {
        supervisor.spawn("simulated crowd", simulate_crowd(store, args.simulate));
    }
    let listener = listen(args.listen)?;
    println!(
        "usher demo: open http://{}/ in a browser (room {DEMO_ROOM:?}, capacity {}, {} simulated visitors)",
        args.listen, args.capacity, args.simulate
    );
    broker.run(listener).await;
    Ok(supervisor.outcome()?)
}

/// Keeps `crowd` simulated visitors in the room: each waits, is admitted,
/// "shops" for a few seconds, completes, and joins again at the back.
async fn simulate_crowd(store: Arc<dyn Store>, crowd: u64) {
    let mut visitors: Vec<(String, Duration)> = Vec::new();
    let mut timer = tokio::time::interval(Duration::from_millis(500));
    loop {
        timer.tick().await;
        let now = now_ms();
        while (visitors.len() as u64) < crowd {
            let user = format!("simulated-{}", random_id());
            match store
                .join(&JoinRequest::new(&user, &random_id()), now)
                .await
            {
                Ok(outcome) => {
                    let shopping =
                        Duration::from_millis(rand::thread_rng().gen_range(1_000..6_000));
                    visitors.push((outcome.view.session.id, shopping));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "simulated visitor cannot join");
                    break;
                }
            }
        }
        let mut still_here = Vec::with_capacity(visitors.len());
        for (sid, shopping) in visitors.drain(..) {
            match store
                .session(&sid, Some(now))
                .await
                .map(|v| v.session.state)
            {
                Ok(SessionState::Waiting) => still_here.push((sid, shopping)),
                Ok(SessionState::Active { admitted_at, .. }) => {
                    if now - admitted_at >= shopping.as_millis() as i64 {
                        let _ = store.complete(&sid, now).await;
                    } else {
                        still_here.push((sid, shopping));
                    }
                }
                Ok(SessionState::Closed(_)) | Err(_) => {}
            }
        }
        visitors = still_here;
    }
}
