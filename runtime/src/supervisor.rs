//! Keeping a process whole. Its background tasks (the broker's change-stream
//! follower and timers, the dispatcher's loop) run under a [`Supervisor`].
//! They are meant to run until shutdown: one that panics, or stops early,
//! would leave a process that still answers probes but no longer does its
//! job. So the supervisor logs it and shuts the process down the same
//! graceful way as SIGTERM (streams get their `shutting_down` event), and
//! the process exits non-zero, for Kubernetes to restart it.

use std::any::Any;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Why a supervised process stopped on its own.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum TaskFailure {
    #[error("background task {task} panicked: {message}")]
    Panicked { task: &'static str, message: String },
    #[error("background task {task} stopped before shutdown")]
    Stopped { task: &'static str },
}

/// Starts background tasks and turns shutdown on, on a signal or when a
/// task fails. Clones share the same tasks and shutdown.
#[derive(Clone)]
pub struct Supervisor {
    stop: watch::Sender<bool>,
    failure: Arc<Mutex<Option<TaskFailure>>>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor {
            stop: watch::Sender::new(false),
            failure: Arc::default(),
        }
    }
}

impl Supervisor {
    /// A supervisor that also shuts down on SIGINT or SIGTERM.
    pub fn with_signals() -> Self {
        let supervisor = Self::default();
        let stop = supervisor.stop.clone();
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
            stop.send_replace(true);
        });
        supervisor
    }

    /// Turns true when the process is to stop.
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Runs `task` until shutdown. If it panics or ends before shutdown,
    /// the failure is logged and recorded, and the process shuts down.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut shutdown = self.shutdown();
        let running = tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => true,
                () = task => false,
            }
        });
        let supervisor = self.clone();
        tokio::spawn(async move {
            let failure = match running.await {
                Ok(true) => return,
                // Ending together with shutdown is no failure.
                Ok(false) if *supervisor.stop.borrow() => return,
                Ok(false) => TaskFailure::Stopped { task: name },
                Err(e) if e.is_panic() => TaskFailure::Panicked {
                    task: name,
                    message: panic_message(e.into_panic()),
                },
                // Cancelled: only happens when the runtime itself shuts down.
                Err(_) => return,
            };
            supervisor.fail(failure);
        });
    }

    fn fail(&self, failure: TaskFailure) {
        tracing::error!(error = %failure, "shutting down: a background task failed");
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(failure);
        self.stop.send_replace(true);
    }

    /// After shutdown: the first task failure, if one caused it.
    pub fn outcome(&self) -> Result<(), TaskFailure> {
        match self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::time::Duration;

    use super::*;

    async fn stopped(supervisor: &Supervisor) {
        tokio::time::timeout(
            Duration::from_secs(5),
            supervisor.shutdown().wait_for(|stop| *stop),
        )
        .await
        .unwrap()
        .unwrap();
    }

    #[tokio::test]
    async fn a_panicking_task_shuts_the_process_down() {
        let supervisor = Supervisor::default();
        let mut shutdown = supervisor.shutdown();
        // A sibling task sees the same shutdown and is stopped with it.
        supervisor.spawn("idle", std::future::pending());
        supervisor.spawn("follower", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            panic!("formatting overflowed");
        });
        stopped(&supervisor).await;
        assert!(*shutdown.borrow_and_update());
        assert_eq!(
            supervisor.outcome(),
            Err(TaskFailure::Panicked {
                task: "follower",
                message: "formatting overflowed".into()
            })
        );
    }

    #[tokio::test]
    async fn a_task_that_ends_early_shuts_the_process_down() {
        let supervisor = Supervisor::default();
        supervisor.spawn("timer", async {});
        stopped(&supervisor).await;
        assert_eq!(
            supervisor.outcome(),
            Err(TaskFailure::Stopped { task: "timer" })
        );
    }

    #[tokio::test]
    async fn tasks_stopped_by_shutdown_are_no_failure() {
        let supervisor = Supervisor::default();
        supervisor.spawn("idle", std::future::pending());
        supervisor.stop.send_replace(true);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(supervisor.outcome(), Ok(()));
    }
}
