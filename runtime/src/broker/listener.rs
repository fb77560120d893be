//! The broker's HTTP listener. Event streams are the connections a broker
//! holds by the ten thousand, so it serves them itself: it reads the request
//! head, and for `GET .../events` writes the stream straight to the socket,
//! keeping no per-connection buffers. Every other request (and any later
//! request on a kept-alive connection) goes to the axum router through hyper.

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::Broker;
use super::error::ApiError;
use crate::auth;

/// The most a request head may take (long cookies and tokens included).
const MAX_HEAD: usize = 16 * 1024;
/// A client must send its request head within this time.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A stream whose client takes longer than this to accept bytes is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// A stream whose bytes stay unacknowledged this long is dead (a phone that
/// vanished without closing): the kernel drops it, so the user stops
/// counting as present and the abandon timeout can apply.
const UNACKED_LIMIT: Duration = Duration::from_secs(45);
/// How long shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown`, then waits for them to drain.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let (broker, router, shutdown, open) = (
                    Arc::clone(&broker),
                    router.clone(),
                    shutdown.clone(),
                    Arc::clone(&open),
                );
                open.fetch_add(1, Relaxed);
                tokio::spawn(async move {
                    handle(stream, broker, router, shutdown).await;
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
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while open.load(Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a request head said, as far as the native path cares.
enum Head {
    /// `GET /v1/rooms/{room}/sessions/{sid}/events`.
    Events {
        room: String,
        sid: String,
        /// Session token candidates, in the order to try them.
        tokens: Vec<String>,
    },
    /// Anything else: hand the connection to the router.
    Other,
}

async fn handle(
    mut stream: TcpStream,
    broker: Arc<Broker>,
    router: Router,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::with_capacity(1024);
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream, &mut buffer)).await {
        Ok(Ok(head)) => head,
        Ok(Err(Some(error))) => return write_error(&mut stream, &broker, error).await,
        Ok(Err(None)) | Err(_) => return,
    };
    match head {
        Head::Events { room, sid, tokens } => {
            drop(buffer);
            let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
            let opened = match broker.check_session(&room, &sid, &tokens) {
                Ok(()) => broker.open_events(&sid).await,
                Err(error) => Err(error),
            };
            match opened {
                Ok(feed) => stream_events(stream, feed).await,
                Err(error) => write_error(&mut stream, &broker, error).await,
            }
        }
        Head::Other => {
            serve_with_router(
                Prefixed {
                    prefix: buffer,
                    read: 0,
                    inner: stream,
                },
                router,
                shutdown,
            )
            .await
        }
    }
}

/// Reads until a whole request head is in `buffer`. `Err(None)`: the
/// client went away; `Err(Some)`: a malformed or oversized head.
async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<Head, Option<ApiError>> {
    use tokio::io::AsyncReadExt as _;
    loop {
        if buffer.len() >= MAX_HEAD {
            return Err(Some(ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "head_too_large",
                "the request head is over 16 KiB",
            )));
        }
        buffer.reserve(1024);
        if stream.read_buf(buffer).await.map_err(|_| None)? == 0 {
            return Err(None);
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(buffer) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(_)) => return Ok(classify(&request)),
            // Let hyper answer what it makes of a malformed request.
            Err(_) => return Ok(Head::Other),
        }
    }
}

fn classify(request: &httparse::Request<'_, '_>) -> Head {
    let (Some("GET"), Some(target)) = (request.method, request.path) else {
        return Head::Other;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.split('/').collect();
    let ["", "v1", "rooms", room, "sessions", sid, "events"] = parts[..] else {
        return Head::Other;
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let query_token = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(percent_decode);
    let tokens = auth::session_token_candidates(
        query_token.as_deref(),
        header("authorization"),
        header("cookie"),
    );
    Head::Events {
        room: room.to_owned(),
        sid: sid.to_owned(),
        tokens: tokens.into_iter().map(str::to_owned).collect(),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            (byte, ..) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

const STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nx-accel-buffering: no\r\nconnection: close\r\n\r\n";

/// Writes the feed to the socket until it ends or the client leaves. The
/// body runs until the connection closes (no chunking needed).
async fn stream_events(mut stream: TcpStream, mut feed: super::events::EventFeed) {
    detect_dead_peers(&stream);
    if write(&mut stream, STREAM_HEAD).await.is_err() {
        return;
    }
    loop {
        let bytes = tokio::select! {
            bytes = feed.next() => bytes,
            gone = client_left(&stream) => if gone { None } else { continue },
        };
        let Some(bytes) = bytes else { break };
        if write(&mut stream, &bytes).await.is_err() {
            return;
        }
    }
    let _ = stream.shutdown().await;
}

/// TCP keep-alive probes find idle dead peers; the user timeout finds peers
/// that stopped acknowledging what we send (keep-alive comments included).
fn detect_dead_peers(stream: &TcpStream) {
    let socket = socket2::SockRef::from(stream);
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    let _ = socket.set_tcp_keepalive(&probes);
    #[cfg(target_os = "linux")]
    let _ = socket.set_tcp_user_timeout(Some(UNACKED_LIMIT));
}

async fn write(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(bytes))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Waits for the socket to become readable: `true` when the client closed
/// it or it failed, `false` when it merely sent bytes (which are ignored).
async fn client_left(stream: &TcpStream) -> bool {
    if stream.readable().await.is_err() {
        return true;
    }
    let mut scratch = [0u8; 64];
    match stream.try_read(&mut scratch) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

async fn write_error(stream: &mut TcpStream, broker: &Broker, error: ApiError) {
    broker.metrics.error(error.code);
    let body = serde_json::json!({"code": error.code, "message": error.message}).to_string();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        error.status.as_u16(),
        error.status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let _ = write(stream, format!("{head}{body}").as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn serve_with_router(io: Prefixed, router: Router, mut shutdown: watch::Receiver<bool>) {
    let service = TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// A socket whose first bytes were already read: they are replayed first.
struct Prefixed {
    prefix: Vec<u8>,
    read: usize,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.read < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.read);
            let start = self.read;
            buf.put_slice(&self.prefix[start..start + n]);
            self.read += n;
            if self.read == self.prefix.len() {
                self.prefix = Vec::new();
                self.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Head {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        assert!(matches!(
            request.parse(raw.as_bytes()),
            Ok(httparse::Status::Complete(_))
        ));
        classify(&request)
    }

    #[test]
    fn event_requests_are_recognised_with_their_token() {
        let Head::Events { room, sid, tokens } = parse(
            "GET /v1/rooms/r/sessions/s1/events?x=1&token=r.s1.m%2Bc HTTP/1.1\r\nHost: a\r\n\r\n",
        ) else {
            panic!("an events request")
        };
        assert_eq!(
            (room.as_str(), sid.as_str(), tokens),
            ("r", "s1", vec!["r.s1.m+c".to_owned()])
        );
        let Head::Events { tokens, .. } = parse(
            "GET /v1/rooms/r/sessions/s1/events HTTP/1.1\r\nAuthorization: Bearer jwt\r\nCookie: a=b; usher_session=tok\r\n\r\n",
        ) else {
            panic!("an events request")
        };
        assert_eq!(tokens, ["tok", "jwt"]);
        let Head::Events { tokens, .. } =
            parse("GET /v1/rooms/r/sessions/s1/events HTTP/1.1\r\n\r\n")
        else {
            panic!("an events request")
        };
        assert!(tokens.is_empty());
    }

    #[test]
    fn other_requests_go_to_the_router() {
        assert!(matches!(
            parse("POST /v1/rooms/r/sessions/s1/events HTTP/1.1\r\n\r\n"),
            Head::Other
        ));
        assert!(matches!(
            parse("GET /v1/rooms/r/sessions/s1 HTTP/1.1\r\n\r\n"),
            Head::Other
        ));
        assert!(matches!(
            parse("GET /v1/rooms/r/sessions/s1/events/x HTTP/1.1\r\n\r\n"),
            Head::Other
        ));
    }
}
