//! Running a process: HTTP serving, wiring of broker and dispatcher.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use tokio::sync::watch;

use crate::auth::{JwtSettings, UserAuth};
use crate::broker::{
    Broker, BrokerSettings, CheckoutKey, HumanCheck, follow_invites, read_invites,
};
use crate::config::{
    BrokerArgs, DispatcherArgs, HumanCheckArgs, RoomArgs, StoreArgs, UserAuthArgs,
};
use crate::dispatcher::Dispatcher;
use crate::metrics::Metrics;
use crate::queue::{RedisStore, Store};
use crate::rules::{RoomRules, RulesFrom};
use crate::supervisor::Supervisor;
use crate::tokens::EntryTokenSigner;

/// Listens on `addr` with a deep backlog, which absorbs join bursts.
pub fn listen(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("cannot listen on {addr}"))?;
    let listener = socket.listen(8192)?;
    tracing::info!(%addr, "listening");
    Ok(listener)
}

/// Serves `router` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .context("HTTP server failed")
}

/// Serves `/metrics` on `listener` under `supervisor`: a metrics server
/// that fails takes the process down like any other background task.
pub fn spawn_metrics_server(
    supervisor: &Supervisor,
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
) {
    let server = serve(
        listener,
        crate::metrics_endpoint::router(store, metrics),
        supervisor.shutdown(),
    );
    supervisor.spawn("metrics server", async move {
        if let Err(e) = server.await {
            tracing::error!(error = format!("{e:#}"), "the metrics server failed");
        }
    });
}

fn valid_room(room: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        crate::broker::valid_room_id(room),
        "room id {room:?} must be 1-63 lowercase letters, digits and dashes"
    );
    Ok(())
}

/// The room's Redis store, with the rules this process keeps in it (or
/// follows there). Does not wait for Redis: a process starts (not ready)
/// while Redis is away, and writes the rules once it answers.
fn room_rules(args: &StoreArgs, room: &RoomArgs) -> anyhow::Result<Arc<RoomRules>> {
    valid_room(&args.room)?;
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::open(&args.redis_url, &args.room)
            .with_context(|| format!("bad Redis URL {:?}", args.redis_url))?,
    );
    Ok(match room.rules_from {
        RulesFrom::Flags => RoomRules::new(store, room.room_config().map_err(anyhow::Error::msg)?),
        RulesFrom::Store => RoomRules::following(store),
    })
}

fn user_auth(args: &UserAuthArgs, signer: &EntryTokenSigner) -> anyhow::Result<UserAuth> {
    if args.user_auth == "anonymous" {
        return Ok(UserAuth::Anonymous {
            keys: signer.mac_keys("anonymous-user"),
        });
    }
    let algorithm = args.user_jwt_alg.parse().context("unknown JWT algorithm")?;
    Ok(UserAuth::jwt(&JwtSettings {
        algorithm,
        key: &args.user_jwt_key,
        issuer: args.user_jwt_issuer.as_deref(),
        audience: args.user_jwt_audience.as_deref(),
        priority_claim: args.priority_claim.clone(),
    })?)
}

fn human_check(args: HumanCheckArgs) -> anyhow::Result<Option<HumanCheck>> {
    let (Some(url), Some(secret)) = (args.human_check_url, args.human_check_secret) else {
        return Ok(None);
    };
    Ok(Some(HumanCheck::new(url, secret).context(
        "cannot read the root certificates for the human check",
    )?))
}

pub async fn run_broker(args: BrokerArgs) -> anyhow::Result<()> {
    let mut signer = EntryTokenSigner::from_file(&args.token_key)?;
    for path in &args.token_retired_keys {
        signer.retire(&EntryTokenSigner::from_file(path)?);
    }
    let signer = Arc::new(signer);
    let checkout_key = args
        .checkout_key
        .as_deref()
        .map(CheckoutKey::from_file)
        .transpose()?;
    let users = user_auth(&args.users, &signer)?;
    let rules = room_rules(&args.store, &args.room)?;
    let supervisor = Supervisor::with_signals();
    let broker_id = args
        .broker_id
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(crate::auth::random_id);
    let settings = BrokerSettings {
        position_interval: args.streams.position_interval,
        keep_alive: args.streams.keepalive_interval,
        abandon_timeout: args.room.abandon_timeout,
        broker_id,
        issuer: args.streams.token_issuer,
        checkout_key,
        return_origins: args.round_trip.return_origins,
        entry_cookie: args.round_trip.cookie_domain,
        waiting_page: args.round_trip.waiting_page,
        addresses: args.addresses.policy(),
        token_binding: args.round_trip.token_binding,
        human_check: human_check(args.human_check)?,
    };
    if let Some(path) = args.invite_codes {
        // A bad file stops the start; later edits are followed.
        let codes = read_invites(&args.store.room, &path)?;
        let (store, room) = (Arc::clone(rules.store()), args.store.room.clone());
        supervisor.spawn("invite codes", follow_invites(store, room, path, codes));
    }
    let metrics = Arc::new(Metrics::default());
    let visitors = listen(args.listen)?;
    spawn_metrics_server(
        &supervisor,
        listen(args.metrics_listen)?,
        Arc::clone(rules.store()),
        Arc::clone(&metrics),
    );
    let broker = Broker::new(
        args.store.room,
        rules,
        signer,
        users,
        metrics,
        settings,
        &supervisor,
    );
    broker.run(visitors).await;
    Ok(supervisor.outcome()?)
}

pub async fn run_dispatcher(args: DispatcherArgs) -> anyhow::Result<()> {
    let rules = room_rules(&args.store, &args.room)?;
    let supervisor = Supervisor::with_signals();
    let metrics = Arc::new(Metrics::default());
    Dispatcher::new(Arc::clone(&rules), Arc::clone(&metrics), args.tick).start(&supervisor);
    serve(
        listen(args.listen)?,
        crate::dispatcher::health_router(rules, metrics),
        supervisor.shutdown(),
    )
    .await?;
    Ok(supervisor.outcome()?)
}
