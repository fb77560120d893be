use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context as _;
use axum::http::{StatusCode, header};
use axum::routing::get;
use clap::{Args, Parser, Subcommand};
use kube::api::ListParams;
use kube::{Api, Client};
use tracing_subscriber::EnvFilter;
use usher_operator::children::DEFAULT_IMAGE;
use usher_operator::controller::{self, Settings};
use usher_operator::crd::WaitingRoom;
use usher_operator::leader::LeaseLock;
use usher_operator::metrics::Metrics;

#[derive(Parser, Debug)]
#[command(
    name = "usher-operator",
    version,
    about = "Runs Usher waiting rooms on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the WaitingRoom CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller.
    Run(RunArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The runtime image broker and dispatcher pods run.
    #[arg(long, env = "USHER_RUNTIME_IMAGE", default_value = DEFAULT_IMAGE)]
    image: String,
    /// How often each room's status is refreshed from Redis.
    #[arg(long, env = "USHER_STATUS_INTERVAL", default_value = "5s", value_parser = usher_runtime::config::parse_interval)]
    status_interval: Duration,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "USHER_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Elect a leader through a Lease so several replicas can run.
    #[arg(long, env = "USHER_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    #[arg(long, env = "USHER_LEASE_NAME", default_value = "usher-operator")]
    lease_name: String,
    /// Log filter, e.g. `info` or `usher_operator=debug`.
    #[arg(long, env = "USHER_LOG", default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => usher_operator::crd::crd_yaml()
            .map(|yaml| print!("{yaml}"))
            .context("cannot render the CRD"),
        Command::Run(args) => tokio::runtime::Runtime::new()
            .context("cannot start the runtime")
            .and_then(|rt| rt.block_on(run(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("usher-operator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .json()
        .with_current_span(true)
        .init();
    let client = Client::try_default()
        .await
        .context("cannot reach the Kubernetes API")?;
    Api::<WaitingRoom>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .context("cannot list WaitingRooms: is the CRD installed (usher-operator crd | kubectl apply -f -)?")?;

    let metrics = Arc::new(Metrics::default());
    let leading = Arc::new(AtomicBool::new(!args.leader_election));
    tokio::spawn(serve_health(
        args.listen,
        Arc::clone(&metrics),
        Arc::clone(&leading),
    ));

    if args.leader_election {
        let identity =
            std::env::var("HOSTNAME").unwrap_or_else(|_| usher_runtime::auth::random_id());
        let lock = Arc::new(LeaseLock::new(
            client.clone(),
            &args.lease_namespace,
            &args.lease_name,
            identity,
            Duration::from_secs(15),
        ));
        lock.acquire().await;
        leading.store(true, Relaxed);
        tokio::spawn(async move {
            lock.keep().await;
            tracing::error!("lost the lease; stopping so another replica leads");
            std::process::exit(1);
        });
    }
    let settings = Settings {
        image: args.image,
        status_interval: args.status_interval,
    };
    controller::run(client, settings, metrics).await;
    Ok(())
}

/// `/metrics`, `/healthz`, and `/readyz` (ready once leading or standing by).
async fn serve_health(addr: SocketAddr, metrics: Arc<Metrics>, leading: Arc<AtomicBool>) {
    let router = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = metrics.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let role = if leading.load(Relaxed) {
                    "leading"
                } else {
                    "standing by"
                };
                async move { (StatusCode::OK, role) }
            }),
        );
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "health server failed");
            }
        }
        Err(e) => tracing::error!(error = %e, %addr, "cannot listen for health and metrics"),
    }
}
