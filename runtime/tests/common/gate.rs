//! A TCP relay in front of Redis that a test can cut and restore: a network
//! path that comes back later than Redis itself.

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Gate {
    port: u16,
    open: watch::Sender<bool>,
    relay: JoinHandle<()>,
}

impl Gate {
    /// An open gate to `127.0.0.1:target`.
    pub async fn to(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = watch::Sender::new(true);
        let state = open.clone();
        let relay = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut open = state.subscribe();
                if !*open.borrow_and_update() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = open.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Gate { port, open, relay }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn close(&self) {
        self.open.send_replace(false);
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.relay.abort();
    }
}
