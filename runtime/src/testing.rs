//! Helpers for tests: a real `redis-server` on a free loopback port, which a
//! test can stop and start again to play an outage.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process, stopped when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// Holds the append-only file of a server that keeps its data.
    data_dir: Option<PathBuf>,
}

impl RedisServer {
    /// Starts `redis-server` (from PATH) on a free port without persistence:
    /// it comes back empty after [`RedisServer::restart`].
    ///
    /// # Panics
    /// When `redis-server` cannot be started or does not answer within 10 s:
    /// this is a test helper, and a test without Redis cannot go on.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// Starts `redis-server` on a free port, keeping its data in an
    /// append-only file (written through on every change) in a temporary
    /// directory: it comes back with its data after [`RedisServer::restart`].
    ///
    /// # Panics
    /// As [`RedisServer::start`], or when the directory cannot be made.
    pub fn start_persistent() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "usher-redis-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("cannot make a directory for Redis's data");
        Self::launch(Some(dir))
    }

    fn launch(data_dir: Option<PathBuf>) -> Self {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            data_dir,
        };
        server.restart();
        server
    }

    /// Kills the server at once, as a crash would. Its port stays reserved
    /// for [`RedisServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (stopping it first if it
    /// runs): with its data if it keeps any, empty otherwise.
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let dir = self.data_dir.as_ref().map(|d| d.display().to_string());
        let mut args = vec!["--port", &port, "--bind", "127.0.0.1", "--save", ""];
        match &dir {
            Some(dir) => args.extend([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                dir,
            ]),
            None => args.extend(["--appendonly", "no"]),
        }
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
#[allow(clippy::unwrap_used, clippy::missing_panics_doc)]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
