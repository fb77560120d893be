//! `kubectl usher`: live controls for a sale, as a kubectl plugin. Each
//! control is a JSON merge patch of one WaitingRoom's spec (field manager
//! `kubectl-usher`); `status` reads the room.

mod controls;

use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, Parser, Subcommand};
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::Value;
use usher_operator::crd::WaitingRoom;

#[derive(Parser, Debug)]
#[command(
    name = "kubectl usher",
    bin_name = "kubectl usher",
    version,
    about = "Live controls for an Usher waiting room"
)]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Target {
    /// The room's namespace; default: the current context's.
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// The kubeconfig context to use; default: the current one.
    #[arg(long, global = true)]
    context: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Stop admissions; the line keeps its order.
    Pause { room: String },
    /// Resume admissions.
    Resume { room: String },
    /// Admit the next N visitors now (1 to 100000), past a pause and the
    /// admission rate, never past capacity.
    Admit {
        room: String,
        #[arg(allow_negative_numbers = true, value_name = "N")]
        count: String,
    },
    /// Show a message to everyone waiting (up to 500 characters), or
    /// remove it with --clear.
    Message {
        room: String,
        #[arg(
            required_unless_present = "clear",
            conflicts_with = "clear",
            allow_hyphen_values = true
        )]
        text: Option<String>,
        #[arg(long)]
        clear: bool,
    },
    /// Close the room now: new joins are refused.
    Close { room: String },
    /// Set how long an admitted visitor keeps the slot, e.g. 10m, 90s, 1h30m.
    SessionDuration { room: String, duration: String },
    /// Print the room's phase, counts and controls.
    Status { room: String },
}

impl Command {
    fn room(&self) -> &str {
        match self {
            Command::Pause { room }
            | Command::Resume { room }
            | Command::Admit { room, .. }
            | Command::Message { room, .. }
            | Command::Close { room }
            | Command::SessionDuration { room, .. }
            | Command::Status { room } => room,
        }
    }

    /// The patch this control sends, checked locally first; `None` for
    /// `status`.
    fn patch(&self, now: SystemTime) -> Result<Option<Value>, String> {
        Ok(Some(match self {
            Command::Pause { .. } => controls::pause_patch(true),
            Command::Resume { .. } => controls::pause_patch(false),
            Command::Admit { count, .. } => {
                let count = controls::admit_count(count)?;
                let id = controls::request_id(now, &controls::random_suffix(6));
                controls::admit_patch(count, &id)
            }
            Command::Message { text, clear, .. } => match (text, clear) {
                (_, true) => controls::message_patch(None),
                (Some(text), false) => controls::message_patch(Some(controls::message_text(text)?)),
                (None, false) => return Err("give a message, or --clear".into()),
            },
            Command::Close { .. } => controls::close_patch(&controls::closes_at(now)),
            Command::SessionDuration { duration, .. } => {
                controls::session_duration_patch(controls::session_duration(duration)?)
            }
            Command::Status { .. } => return Ok(None),
        }))
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            return ExitCode::FAILURE;
        }
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command; what to print, or a one-line error.
async fn run(cli: Cli) -> Result<String, String> {
    let room = cli.command.room();
    // Argument checks come before any connection.
    let patch = cli.command.patch(SystemTime::now())?;
    let config = client_config(&cli.target).await?;
    let namespace = cli
        .target
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| format!("cannot connect: {e}"))?;
    let rooms: Api<WaitingRoom> = Api::namespaced(client, &namespace);
    let explain = |e: kube::Error| api_error(e, &namespace, room);
    match patch {
        None => {
            let object: Value = serde_json::to_value(rooms.get(room).await.map_err(explain)?)
                .map_err(|e| format!("cannot read waitingroom {namespace}/{room}: {e}"))?;
            Ok(controls::status_report(&object))
        }
        Some(patch) => {
            let params = PatchParams {
                field_manager: Some("kubectl-usher".into()),
                ..PatchParams::default()
            };
            rooms
                .patch(room, &params, &Patch::Merge(&patch))
                .await
                .map_err(explain)?;
            Ok(format!("waitingroom {namespace}/{room} patched\n"))
        }
    }
}

/// The standard kubeconfig (`KUBECONFIG` or `~/.kube/config`) with
/// `--context`; in a pod without one, its service account.
async fn client_config(target: &Target) -> Result<Config, String> {
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..KubeConfigOptions::default()
    };
    match Kubeconfig::read() {
        Ok(kubeconfig) => Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| format!("cannot use the kubeconfig: {e}")),
        Err(_) if target.context.is_none() && std::env::var_os("KUBECONFIG").is_none() => {
            Config::incluster().map_err(|_| {
                "no kubeconfig found: set KUBECONFIG or write ~/.kube/config".to_string()
            })
        }
        Err(e) => Err(format!("cannot read the kubeconfig: {e}")),
    }
}

/// The API server's refusal as one line.
fn api_error(error: kube::Error, namespace: &str, room: &str) -> String {
    match error {
        kube::Error::Api(status) if status.code == 404 => {
            format!("waitingroom {namespace}/{room} not found")
        }
        kube::Error::Api(status) => {
            let message = status.message.replace('\n', " ");
            if message.is_empty() {
                format!(
                    "the API server refused ({}): {}",
                    status.code, status.reason
                )
            } else {
                message
            }
        }
        other => format!("{other}").replace('\n', " "),
    }
}
