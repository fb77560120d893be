//! The broker's listener: accepts connections, arms every socket against
//! dead peers, serves each with [`Connection`], and writes event streams
//! straight to the socket. Streams are the connections a broker holds by
//! the ten thousand, so once one starts the connection keeps no buffers:
//! only the socket and the session's feed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use axum::Router;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::connection::Connection;
use crate::broker::events::EventFeed;
use crate::metrics::Metrics;

/// A connection whose bytes stay unacknowledged this long is dead (a phone
/// that vanished without closing): the kernel drops it, so the user stops
/// counting as present and the abandon timeout can apply.
const UNACKED_LIMIT: Duration = Duration::from_secs(45);
/// Idle connections are probed after this long, then every
/// [`PROBE_INTERVAL`].
const PROBE_AFTER: Duration = Duration::from_secs(30);
const PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// How long shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown`, then waits for them to drain.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let (router, metrics, shutdown, open) = (
                    router.clone(),
                    Arc::clone(&metrics),
                    shutdown.clone(),
                    Arc::clone(&open),
                );
                open.fetch_add(1, Relaxed);
                tokio::spawn(async move {
                    handle(stream, peer, router, metrics, shutdown).await;
                    open.fetch_sub(1, Relaxed);
                });
            }
            Err(e) => {
                // Usually out of file descriptors: wait for some to close.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // New clients are refused at once and go to another broker, rather
    // than wait unanswered through the drain.
    drop(listener);
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while open.load(Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn handle(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    router: Router,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    detect_dead_peers(&stream);
    // Boxed, so a held stream does not keep the request phase's memory:
    // its state lives in this task's future only until it is done.
    let served =
        Box::pin(Connection::new(stream, Some(peer)).serve(&router, &metrics, shutdown)).await;
    drop((router, metrics));
    if let Some((connection, head, handoff)) = served
        && let Some(feed) = handoff.take()
    {
        stream_events(connection, head, feed).await;
    }
}

/// TCP keep-alive probes find idle dead peers; the user timeout finds peers
/// that stopped acknowledging what we send (keep-alive comments included),
/// or that keep their receive window shut.
fn detect_dead_peers(stream: &TcpStream) {
    let socket = socket2::SockRef::from(stream);
    let probes = socket2::TcpKeepalive::new()
        .with_time(PROBE_AFTER)
        .with_interval(PROBE_INTERVAL);
    let _ = socket.set_tcp_keepalive(&probes);
    #[cfg(target_os = "linux")]
    let _ = socket.set_tcp_user_timeout(Some(UNACKED_LIMIT));
}

/// Writes the feed to the socket until it ends or the client leaves. The
/// body runs until the connection closes (no chunking needed).
async fn stream_events(mut connection: Connection<TcpStream>, head: Vec<u8>, mut feed: EventFeed) {
    if connection.write(&head).await.is_err() {
        return;
    }
    drop(head);
    loop {
        let bytes = tokio::select! {
            bytes = feed.next() => bytes,
            () = client_spoke(&connection.io) => None,
        };
        let Some(bytes) = bytes else { break };
        if connection.write(&bytes).await.is_err() {
            return;
        }
    }
    let _ = connection.io.shutdown().await;
}

/// Waits until the client closes the connection, fails, or sends anything:
/// a stream's client has nothing more to say, so any of these ends it.
async fn client_spoke(stream: &TcpStream) {
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        let mut scratch = [0u8; 1];
        match stream.try_read(&mut scratch) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => return,
        }
    }
}
