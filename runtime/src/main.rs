use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;
use usher_runtime::config::{Cli, Command};
use usher_runtime::tokens::EntryTokenSigner;
use usher_runtime::{demo, serve};

/// jemalloc returns freed memory to the system and fragments less than the
/// system allocator under many long-lived connections.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    let result = match cli.command {
        Command::Broker(args) => serve::run_broker(args).await,
        Command::Dispatcher(args) => serve::run_dispatcher(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Keygen => {
            print!("{}", EntryTokenSigner::generate_pem());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("usher: {e:#}");
            ExitCode::FAILURE
        }
    }
}
