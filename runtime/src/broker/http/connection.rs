//! One client connection, request after request: read and check the head,
//! read the whole body, route the request, write the answer. An event
//! stream takes the connection over until it ends. Every wait is bounded,
//! whichever request of the connection it is.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::watch;
use tokio::time::{Instant, timeout, timeout_at};
use tower::ServiceExt as _;

use super::body::{self, MAX_BODY};
use super::head::{self, BodyLength, RequestHead};
use crate::broker::client_address::Peer;
use crate::broker::error::ApiError;
use crate::broker::events::StreamHandoff;
use crate::metrics::Metrics;

/// A client must send a whole request head within this time of its first
/// byte (of connecting, for the first request).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A client must send a whole request body within this time of its head.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// A kept-alive connection may wait this long for its next request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// A client that takes longer than this to accept bytes is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The most a response body may be (responses are small JSON or the page).
const MAX_RESPONSE: usize = 1024 * 1024;
/// After a last answer, input is read and dropped for at most this long
/// and this much, before the connection closes.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;

/// A connection and the bytes read from it but not used yet (a pipelined
/// next request may follow a body).
pub struct Connection<S> {
    pub(super) io: S,
    buffer: Vec<u8>,
    /// [`WRITE_TIMEOUT`], shorter in tests.
    write_timeout: Duration,
    /// The client's end of the connection, given to every request.
    peer: Option<Peer>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(io: S, peer: Option<SocketAddr>) -> Self {
        Connection {
            io,
            buffer: Vec::new(),
            write_timeout: WRITE_TIMEOUT,
            peer: peer.map(Peer),
        }
    }

    /// Serves requests until the connection ends. Returns the connection
    /// and the stream when a request opened an event stream.
    pub async fn serve(
        mut self,
        router: &Router,
        metrics: &Metrics,
        mut shutdown: watch::Receiver<bool>,
    ) -> Option<(Self, Vec<u8>, StreamHandoff)> {
        let mut first = true;
        loop {
            let next = tokio::select! {
                next = self.next_request(first) => next,
                _ = shutdown.wait_for(|stop| *stop) => Ok(None),
            };
            first = false;
            let (head, body) = match next {
                Ok(Some(request)) => request,
                Ok(None) => return None,
                Err(error) => {
                    metrics.error(error.code);
                    if self
                        .respond(error.into_response(), false, false)
                        .await
                        .is_ok()
                    {
                        self.close().await;
                    }
                    return None;
                }
            };
            let head_only = head.method == Method::HEAD;
            let keep_alive = head.keep_alive;
            let mut response = router
                .clone()
                .oneshot(request(head, body, self.peer))
                .await
                .unwrap_or_else(|never| match never {});
            if let Some(stream) = response.extensions_mut().remove::<StreamHandoff>() {
                let head = encode_head(response.status(), response.headers(), None, false);
                self.buffer = Vec::new();
                return Some((self, head, stream));
            }
            let keep_alive = keep_alive && !*shutdown.borrow();
            match self.respond(response, head_only, keep_alive).await {
                Ok(()) if keep_alive => {}
                Ok(()) => {
                    self.close().await;
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    /// Reads the next request, head and body, within their time limits.
    /// `Ok(None)`: the client left or went quiet. `Err`: answer it, then
    /// close the connection.
    async fn next_request(
        &mut self,
        first: bool,
    ) -> Result<Option<(RequestHead, Bytes)>, ApiError> {
        let Some((head, length)) = self.read_head(first).await? else {
            return Ok(None);
        };
        self.buffer.drain(..length);
        let body = timeout(BODY_TIMEOUT, self.read_body(&head))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the request body did not arrive within {} s",
                        BODY_TIMEOUT.as_secs()
                    ),
                )
            })??;
        Ok(body.map(|body| (head, body)))
    }

    /// `Ok(None)`: the client left or stayed idle. The first request of a
    /// connection must arrive within [`HEAD_TIMEOUT`] of connecting; a later
    /// one may idle first, then has as long from its first byte.
    async fn read_head(&mut self, first: bool) -> Result<Option<(RequestHead, usize)>, ApiError> {
        // A pipelined head already begun is not idle.
        let idle = !first && self.buffer.is_empty();
        let mut deadline = Instant::now() + if idle { IDLE_TIMEOUT } else { HEAD_TIMEOUT };
        loop {
            if !self.buffer.is_empty()
                && let Some(parsed) = head::parse(&self.buffer)?
            {
                return Ok(Some(parsed));
            }
            let was_empty = self.buffer.is_empty();
            match timeout_at(deadline, self.fill()).await {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(_) if was_empty => return Ok(None),
                Err(_) => {
                    return Err(ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "head_timeout",
                        format!(
                            "the request head did not arrive within {} s",
                            HEAD_TIMEOUT.as_secs()
                        ),
                    ));
                }
            }
            if was_empty && idle {
                deadline = Instant::now() + HEAD_TIMEOUT;
            }
        }
    }

    /// The whole body; `Ok(None)` when the client left half-way.
    async fn read_body(&mut self, head: &RequestHead) -> Result<Option<Bytes>, ApiError> {
        let wants_body = match head.body {
            BodyLength::Exact(length) if length > MAX_BODY as u64 => {
                return Err(body::too_large());
            }
            BodyLength::Exact(length) => length > 0,
            BodyLength::Chunked => true,
        };
        let continue_understood = head.version == axum::http::Version::HTTP_11;
        if head.expects_continue && continue_understood && wants_body && self.buffer.is_empty() {
            let sent = self.write(b"HTTP/1.1 100 Continue\r\n\r\n").await;
            if sent.is_err() {
                return Ok(None);
            }
        }
        loop {
            match head.body {
                BodyLength::Exact(length) if self.buffer.len() >= length as usize => {
                    let body: Vec<u8> = self.buffer.drain(..length as usize).collect();
                    return Ok(Some(body.into()));
                }
                BodyLength::Chunked => {
                    if let Some((body, used)) = body::decode_chunked(&self.buffer)? {
                        self.buffer.drain(..used);
                        return Ok(Some(body.into()));
                    }
                }
                BodyLength::Exact(_) => {}
            }
            if !self.fill().await {
                return Ok(None);
            }
        }
    }

    /// Reads more bytes; `false` when the client closed or failed.
    async fn fill(&mut self) -> bool {
        self.buffer.reserve(1024);
        matches!(self.io.read_buf(&mut self.buffer).await, Ok(n) if n > 0)
    }

    /// Writes all of `bytes`, or fails once the client stops accepting them
    /// for [`WRITE_TIMEOUT`].
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        timeout(self.write_timeout, self.io.write_all(bytes))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }

    /// Closes after a last answer: the client may still be sending (a body
    /// refused unread, pipelined requests), and closing on unread input
    /// would reset the connection and could destroy the answer before the
    /// client reads it. So the write side closes first, and what still
    /// comes in is read and dropped for a moment.
    async fn close(&mut self) {
        let _ = self.io.shutdown().await;
        let mut left = LINGER_BYTES;
        let _ = timeout(LINGER, async {
            let mut scratch = [0u8; 4096];
            while left > 0 {
                match self.io.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }

    async fn respond(
        &mut self,
        response: Response,
        head_only: bool,
        keep_alive: bool,
    ) -> std::io::Result<()> {
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, MAX_RESPONSE)
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot produce a response body");
                Bytes::new()
            });
        // A HEAD answer gives the length a GET would have.
        let length = head_only
            .then(|| parts.headers.get(header::CONTENT_LENGTH))
            .flatten()
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(body.len());
        let mut out = encode_head(parts.status, &parts.headers, Some(length), keep_alive);
        if !head_only {
            out.extend_from_slice(&body);
        }
        self.write(&out).await
    }
}

fn request(head: RequestHead, body: Bytes, peer: Option<Peer>) -> Request {
    let mut request = Request::new(Body::from(body));
    if let Some(peer) = peer {
        request.extensions_mut().insert(peer);
    }
    *request.method_mut() = head.method;
    *request.uri_mut() = head.uri;
    *request.version_mut() = head.version;
    *request.headers_mut() = head.headers;
    request
}

/// A response head. `length: None` delimits the body by closing the
/// connection (event streams), which then cannot be kept alive.
fn encode_head(
    status: StatusCode,
    headers: &HeaderMap,
    length: Option<usize>,
    keep_alive: bool,
) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(256);
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in headers {
        // This layer owns the framing.
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(length) = length {
        let _ = write!(out, "content-length: {length}\r\n");
    }
    let keep_alive = keep_alive && length.is_some();
    out.extend_from_slice(if keep_alive {
        b"connection: keep-alive\r\n\r\n"
    } else {
        b"connection: close\r\n\r\n"
    });
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
        let (server, _client) = tokio::io::duplex(64);
        let mut connection = Connection::new(server, None);
        connection.write_timeout = Duration::from_millis(50);
        connection.write(&[b'x'; 64]).await.unwrap();
        let error = connection.write(&[b'x'; 1]).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    }

    #[test]
    fn heads_own_the_framing() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        headers.insert(header::CONTENT_LENGTH, "999".parse().unwrap());
        let head = encode_head(StatusCode::OK, &headers, Some(5), true);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\n"
        );
        let head = encode_head(StatusCode::OK, &HeaderMap::new(), None, true);
        assert!(
            String::from_utf8(head)
                .unwrap()
                .ends_with("connection: close\r\n\r\n")
        );
    }
}
