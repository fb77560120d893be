//! Running a process: signals, HTTP serving, wiring of broker and dispatcher.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use tokio::sync::watch;

use crate::auth::{JwtSettings, UserAuth};
use crate::broker::{Broker, BrokerSettings};
use crate::config::{BrokerArgs, DispatcherArgs, StoreArgs, UserAuthArgs};
use crate::dispatcher::Dispatcher;
use crate::metrics::Metrics;
use crate::queue::{RedisStore, Store};
use crate::tokens::EntryTokenSigner;

/// A channel that turns true on SIGINT or SIGTERM.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! { _ = ctrl_c => {}, () = term => {} }
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

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

fn valid_room(room: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        crate::broker::valid_room_id(room),
        "room id {room:?} must be 1-63 lowercase letters, digits and dashes"
    );
    Ok(())
}

/// Connects to the room's Redis and writes the room's rules.
async fn connect_store(
    args: &StoreArgs,
    config: &crate::queue::RoomConfig,
) -> anyhow::Result<Arc<dyn Store>> {
    valid_room(&args.room)?;
    let store = RedisStore::connect(&args.redis_url, &args.room)
        .await
        .with_context(|| format!("cannot connect to Redis at {}", args.redis_url))?;
    let written = store
        .configure(config)
        .await
        .context("cannot write the room configuration")?;
    if !written {
        tracing::warn!(
            revision = config.revision,
            "the room has rules of a newer revision; keeping them"
        );
    }
    Ok(Arc::new(store))
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
    })?)
}

pub async fn run_broker(args: BrokerArgs) -> anyhow::Result<()> {
    let config = args.room.room_config().map_err(anyhow::Error::msg)?;
    let mut signer = EntryTokenSigner::from_file(&args.token_key)?;
    for path in &args.token_retired_keys {
        signer.retire(&EntryTokenSigner::from_file(path)?);
    }
    let signer = Arc::new(signer);
    let users = user_auth(&args.users, &signer)?;
    let store = connect_store(&args.store, &config).await?;
    let shutdown = shutdown_signal();
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
    };
    let metrics = Arc::new(Metrics::default());
    let visitors = listen(args.listen)?;
    let metrics_server = tokio::spawn(serve(
        listen(args.metrics_listen)?,
        crate::metrics_endpoint::router(Arc::clone(&store), Arc::clone(&metrics)),
        shutdown.clone(),
    ));
    let broker = Broker::new(
        args.store.room,
        store,
        signer,
        users,
        metrics,
        settings,
        shutdown,
    );
    broker.run(visitors).await;
    metrics_server.await.context("metrics server task failed")?
}

pub async fn run_dispatcher(args: DispatcherArgs) -> anyhow::Result<()> {
    let config = args.room.room_config().map_err(anyhow::Error::msg)?;
    let store = connect_store(&args.store, &config).await?;
    let shutdown = shutdown_signal();
    let metrics = Arc::new(Metrics::default());
    let dispatcher = Dispatcher::new(Arc::clone(&store), Arc::clone(&metrics), args.tick);
    let running = tokio::spawn(dispatcher.run(shutdown.clone()));
    serve(
        listen(args.listen)?,
        crate::dispatcher::health_router(store, metrics),
        shutdown,
    )
    .await?;
    running.await.context("dispatcher task failed")
}
