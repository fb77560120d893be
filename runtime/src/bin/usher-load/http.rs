//! A deliberately minimal HTTP/1.1 client over tokio `TcpStream`s.
//!
//! It knows exactly what the load generator needs: bodiless requests,
//! responses framed by `Content-Length`, `Transfer-Encoding: chunked` or
//! connection close, keep-alive reuse, and handing the socket over to the
//! event-stream reader once the response head of an SSE request is parsed.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::sse::{ChunkedDecoder, DecodeError};

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest non-streaming response body accepted.
const MAX_BODY: usize = 8 * 1024 * 1024;
/// How long a short connection waits for the server's FIN (see [`one_shot`]).
const FIN_WAIT: Duration = Duration::from_millis(500);

/// Why an exchange failed, in the categories the report counts.
#[derive(Debug)]
pub enum HttpError {
    /// The TCP connection could not be established.
    Connect(io::Error),
    /// Reading or writing failed, or the peer closed early.
    Io(io::Error),
    /// The response was not valid HTTP or not what the contract promises.
    Protocol(String),
    /// The exchange did not finish in time.
    Timeout,
    /// A well-formed error response; `code` is the JSON `code` when present.
    Status { status: u16, code: Option<String> },
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::Io(e) => write!(f, "i/o: {e}"),
            Self::Protocol(m) => write!(f, "protocol: {m}"),
            Self::Timeout => f.write_str("timed out"),
            Self::Status { status, code } => match code {
                Some(code) => write!(f, "HTTP {status} ({code})"),
                None => write!(f, "HTTP {status}"),
            },
        }
    }
}

impl std::error::Error for HttpError {}

impl From<DecodeError> for HttpError {
    fn from(e: DecodeError) -> Self {
        Self::Protocol(e.to_string())
    }
}

/// The broker's address and the `Host` header to send.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
}

impl Target {
    /// Parses `http://host[:port][/]` and resolves it (IPv4 preferred).
    pub async fn resolve(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("target {url:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        ensure!(
            path.is_empty() || path == "/",
            "target {url:?} must not contain a path"
        );
        ensure!(!authority.is_empty(), "target {url:?} has no host");
        let has_port = match authority.rfind(':') {
            Some(colon) => !authority[colon..].contains(']'),
            None => false,
        };
        let host_port = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&host_port)
            .await
            .with_context(|| format!("resolving {host_port}"))?
            .collect();
        let Some(addr) = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
        else {
            bail!("{host_port} resolved to no address");
        };
        Ok(Self {
            addr,
            host: authority.to_owned(),
        })
    }
}

/// Opens connections to the target, binding them round-robin to several
/// loopback source addresses.
///
/// A source IP offers roughly 28k ephemeral ports towards one server port,
/// so spreading sockets over 127.0.0.1..=127.0.0.K lifts the ceiling on
/// concurrent connections K-fold (all of 127.0.0.0/8 is local on Linux).
#[derive(Debug)]
pub struct Connector {
    target: SocketAddr,
    sources: Vec<IpAddr>,
    next: AtomicUsize,
}

impl Connector {
    /// Source binding applies only when the target is IPv4 loopback.
    pub fn new(target: SocketAddr, source_addrs: u8) -> Self {
        let sources = match target.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => (1..=source_addrs)
                .map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
                .collect(),
            _ => Vec::new(),
        };
        Self {
            target,
            sources,
            next: AtomicUsize::new(0),
        }
    }

    /// Number of source addresses connections are spread over (0: kernel's choice).
    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    pub async fn connect(&self) -> Result<TcpStream, HttpError> {
        let socket = if self.target.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(HttpError::Connect)?;
        if !self.sources.is_empty() {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sources.len();
            // Lets the port of a socket lingering in TIME_WAIT be bound again.
            socket.set_reuseaddr(true).map_err(HttpError::Connect)?;
            socket
                .bind(SocketAddr::new(self.sources[i], 0))
                .map_err(HttpError::Connect)?;
        }
        let stream = socket
            .connect(self.target)
            .await
            .map_err(HttpError::Connect)?;
        stream.set_nodelay(true).map_err(HttpError::Connect)?;
        Ok(stream)
    }
}

/// Builds a bodiless request. POST gets `Content-Length: 0`.
pub fn request(
    method: &str,
    path: &str,
    host: &str,
    extra: &[(&str, &str)],
    close: bool,
) -> Vec<u8> {
    let length = if method == "POST" { Some(0) } else { None };
    let mut out = request_head(method, path, host, extra, close, length);
    out.push_str("\r\n");
    out.into_bytes()
}

/// Builds a POST of the JSON `body`.
pub fn json_post(path: &str, host: &str, close: bool, body: &str) -> Vec<u8> {
    let content_type = [("Content-Type", "application/json")];
    let mut out = request_head("POST", path, host, &content_type, close, Some(body.len()));
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// A request head without its final blank line.
fn request_head(
    method: &str,
    path: &str,
    host: &str,
    extra: &[(&str, &str)],
    close: bool,
    content_length: Option<usize>,
) -> String {
    let mut out = String::with_capacity(128 + path.len());
    out.push_str(method);
    out.push(' ');
    out.push_str(path);
    out.push_str(" HTTP/1.1\r\nHost: ");
    out.push_str(host);
    out.push_str("\r\nUser-Agent: usher-load\r\n");
    if let Some(length) = content_length {
        out.push_str(&format!("Content-Length: {length}\r\n"));
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    for (name, value) in extra {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

/// The parsed status line and the headers that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    /// The connection cannot be reused after this response.
    pub close: bool,
    pub content_type: Option<String>,
}

/// Parses a response head (without the final empty line).
pub fn parse_head(bytes: &[u8]) -> Result<Head, HttpError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| HttpError::Protocol("response head is not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| HttpError::Protocol(format!("bad status line {status_line:?}")))?;
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Protocol(format!(
            "bad status line {status_line:?}"
        )));
    }
    let mut close = version == "HTTP/1.0";
    let mut length = None;
    let mut chunked = false;
    let mut content_type = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::Protocol(format!("bad header line {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| HttpError::Protocol(format!("bad content-length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_owned());
        }
    }
    let framing = if status < 200 || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        close = true;
        Framing::UntilClose
    };
    Ok(Head {
        status,
        framing,
        close,
        content_type,
    })
}

/// Reads more bytes into `buf`; `Ok(0)` means the peer closed.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, HttpError> {
    buf.reserve(1024);
    stream.read_buf(buf).await.map_err(HttpError::Io)
}

fn eof(what: &str) -> HttpError {
    HttpError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("connection closed {what}"),
    ))
}

/// Reads a response head. `buf` holds bytes already read from the
/// connection; on return it holds the bytes following the head.
/// Interim (1xx) responses are skipped.
pub async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Head, HttpError> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = parse_head(&buf[..end])?;
            buf.drain(..end + 4);
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            return Ok(head);
        }
        if buf.len() > MAX_HEAD {
            return Err(HttpError::Protocol("response head too large".into()));
        }
        if read_more(stream, buf).await? == 0 {
            return Err(eof("before the response head"));
        }
    }
}

/// Reads a whole (non-streaming) body framed as `head` says. Bytes after
/// the body stay in `buf` for the next response on the connection.
pub async fn read_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head: &Head,
) -> Result<Vec<u8>, HttpError> {
    match head.framing {
        Framing::Empty => Ok(Vec::new()),
        Framing::Length(n) => {
            if n > MAX_BODY {
                return Err(HttpError::Protocol(format!("body of {n} bytes too large")));
            }
            while buf.len() < n {
                if read_more(stream, buf).await? == 0 {
                    return Err(eof("inside the body"));
                }
            }
            let rest = buf.split_off(n);
            Ok(std::mem::replace(buf, rest))
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut body = Vec::new();
            loop {
                let used = decoder.feed(buf, &mut |d| body.extend_from_slice(d))?;
                buf.drain(..used);
                if decoder.is_done() {
                    return Ok(body);
                }
                if body.len() > MAX_BODY {
                    return Err(HttpError::Protocol("chunked body too large".into()));
                }
                if read_more(stream, buf).await? == 0 {
                    return Err(eof("inside the chunked body"));
                }
            }
        }
        Framing::UntilClose => {
            while read_more(stream, buf).await? != 0 {
                if buf.len() > MAX_BODY {
                    return Err(HttpError::Protocol("body too large".into()));
                }
            }
            Ok(std::mem::take(buf))
        }
    }
}

/// A complete non-streaming response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Turns an error response into [`HttpError::Status`], reading the
    /// broker's `{"code": ...}` when the body has one.
    pub fn into_status_error(self) -> HttpError {
        #[derive(serde::Deserialize)]
        struct ApiError {
            code: String,
        }
        let code = serde_json::from_slice::<ApiError>(&self.body)
            .ok()
            .map(|e| e.code);
        HttpError::Status {
            status: self.status,
            code,
        }
    }
}

/// One request on a fresh connection that is closed afterwards.
///
/// Returns the response and the latency from the start of the request
/// write to the end of the response body.
///
/// The request asks for `Connection: close` and, when the server agrees,
/// waits briefly for its FIN before dropping the socket: the side that
/// closes first keeps the TIME_WAIT entry, and it is better kept by the
/// server (where it costs no ephemeral port) than by the load generator.
pub async fn one_shot(
    connector: &Connector,
    req: &[u8],
) -> Result<(Response, Duration), HttpError> {
    let mut stream = connector.connect().await?;
    let started = Instant::now();
    stream.write_all(req).await.map_err(HttpError::Io)?;
    let mut buf = Vec::new();
    let head = read_head(&mut stream, &mut buf).await?;
    let body = read_body(&mut stream, &mut buf, &head).await?;
    let latency = started.elapsed();
    if head.close && head.framing != Framing::UntilClose {
        let mut scratch = [0u8; 64];
        let _ = tokio::time::timeout(FIN_WAIT, stream.read(&mut scratch)).await;
    }
    Ok((
        Response {
            status: head.status,
            body,
        },
        latency,
    ))
}

/// A connection reused for sequential requests; reconnects after errors
/// or when the server closes it.
#[derive(Debug)]
pub struct KeepAlive {
    connector: Arc<Connector>,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl KeepAlive {
    pub fn new(connector: Arc<Connector>) -> Self {
        Self {
            connector,
            stream: None,
            buf: Vec::new(),
        }
    }

    /// Sends `req` (built with `close = false`) and reads the response.
    /// The latency excludes connection setup.
    pub async fn send(&mut self, req: &[u8]) -> Result<(Response, Duration), HttpError> {
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => {
                self.buf.clear();
                self.connector.connect().await?
            }
        };
        let started = Instant::now();
        let result = async {
            stream.write_all(req).await.map_err(HttpError::Io)?;
            let head = read_head(&mut stream, &mut self.buf).await?;
            let body = read_body(&mut stream, &mut self.buf, &head).await?;
            Ok::<_, HttpError>((head, body))
        }
        .await;
        let latency = started.elapsed();
        let (head, body) = result?;
        if !head.close {
            self.stream = Some(stream);
        }
        Ok((
            Response {
                status: head.status,
                body,
            },
            latency,
        ))
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_with_length_and_keep_alive() {
        let head = parse_head(
            b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 42",
        )
        .expect("valid head");
        assert_eq!(
            head,
            Head {
                status: 201,
                framing: Framing::Length(42),
                close: false,
                content_type: Some("application/json".into()),
            }
        );
    }

    #[test]
    fn head_chunked_event_stream() {
        let head = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked",
        )
        .expect("valid head");
        assert_eq!(head.framing, Framing::Chunked);
        assert!(!head.close);
    }

    #[test]
    fn head_close_and_until_close() {
        let head = parse_head(b"HTTP/1.1 200 OK\r\nConnection: close").expect("valid head");
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(head.close);
        let head = parse_head(b"HTTP/1.0 204 No Content").expect("valid head");
        assert_eq!(head.framing, Framing::Empty);
        assert!(head.close);
    }

    #[test]
    fn head_rejects_garbage() {
        assert!(parse_head(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_head(b"HTTP/1.1 abc OK").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nno colon here").is_err());
    }

    #[test]
    fn request_bytes() {
        let req = request("POST", "/v1/rooms/demo/queue", "127.0.0.1:8080", &[], true);
        assert_eq!(
            String::from_utf8_lossy(&req),
            "POST /v1/rooms/demo/queue HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
             User-Agent: usher-load\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn json_post_bytes() {
        let req = json_post("/v1/rooms/demo/queue", "h:1", false, "{}");
        assert_eq!(
            String::from_utf8_lossy(&req),
            "POST /v1/rooms/demo/queue HTTP/1.1\r\nHost: h:1\r\nUser-Agent: usher-load\r\n\
             Content-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"
        );
    }

    #[test]
    fn error_code_from_body() {
        let response = Response {
            status: 503,
            body: br#"{"code":"room_closed","message":"closed"}"#.to_vec(),
        };
        match response.into_status_error() {
            HttpError::Status { status, code } => {
                assert_eq!(status, 503);
                assert_eq!(code.as_deref(), Some("room_closed"));
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(encode_component("a.b-c_d~9"), "a.b-c_d~9");
        assert_eq!(encode_component("a b/+="), "a%20b%2F%2B%3D");
    }
}
