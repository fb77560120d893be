//! Parsing and checking one request head. Every request of every
//! connection passes here first, so the framing rules (one `Host`, one
//! unambiguous body length, bounded size) hold whatever comes after.

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri, Version};

use crate::broker::error::ApiError;

/// The most a request head may take, long cookies and tokens included.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most header fields a head may carry.
const MAX_HEADERS: usize = 100;

/// How the body of a request is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLength {
    /// `Content-Length: n` (no header: 0).
    Exact(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A checked request head.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: BodyLength,
    /// The connection may carry another request after this one.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub expects_continue: bool,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// The answer to a head that grew past [`MAX_HEAD`].
pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "head_too_large",
        format!("the request head is over {} KiB", MAX_HEAD / 1024),
    )
}

/// Parses the head at the start of `buffer`: the head and how many bytes
/// it took, or `None` when the head is not all there yet.
pub fn parse(buffer: &[u8]) -> Result<Option<(RequestHead, usize)>, ApiError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let length = match request.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buffer.len() >= MAX_HEAD => return Err(too_large()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too_many_headers",
                format!("a request may carry at most {MAX_HEADERS} header fields"),
            ));
        }
        Err(e) => return Err(bad("malformed_request", format!("malformed request: {e}"))),
    };
    if length > MAX_HEAD {
        return Err(too_large());
    }
    Ok(Some((check(&request)?, length)))
}

fn check(request: &httparse::Request<'_, '_>) -> Result<RequestHead, ApiError> {
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| bad("malformed_request", "the method is not a token"))?;
    let uri: Uri = request
        .path
        .unwrap_or_default()
        .parse()
        .map_err(|_| bad("invalid_target", "the request target is not a valid URI"))?;
    if uri.path_and_query().is_none() && method != Method::OPTIONS {
        return Err(bad("invalid_target", "the request target has no path"));
    }
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for field in request.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| bad("malformed_request", "a header name is not a token"))?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| {
            bad(
                "malformed_request",
                format!("header {name} has a forbidden byte"),
            )
        })?;
        headers.append(name, value);
    }
    let hosts = headers.get_all(header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && version == Version::HTTP_11) {
        return Err(bad(
            "invalid_host",
            "an HTTP/1.1 request carries exactly one Host header",
        ));
    }
    let body = body_length(&headers, version)?;
    let expects_continue = match headers.get(header::EXPECT) {
        None => false,
        Some(value) if value.as_bytes().eq_ignore_ascii_case(b"100-continue") => true,
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::EXPECTATION_FAILED,
                "expectation_failed",
                "the only expectation understood is 100-continue",
            ));
        }
    };
    let keep_alive = keeps_alive(&headers, version);
    Ok(RequestHead {
        method,
        uri,
        version,
        headers,
        body,
        keep_alive,
        expects_continue,
    })
}

/// The body framing, refusing every ambiguity a proxy in front could read
/// differently (RFC 9112 §6.3): both headers, several lengths, odd codings.
fn body_length(headers: &HeaderMap, version: Version) -> Result<BodyLength, ApiError> {
    let lengths: Vec<&HeaderValue> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
    let codings: Vec<&HeaderValue> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err(bad(
                "ambiguous_length",
                "a request carries Content-Length or Transfer-Encoding, not both",
            ));
        }
        if version == Version::HTTP_10 {
            return Err(bad(
                "ambiguous_length",
                "HTTP/1.0 requests cannot use Transfer-Encoding",
            ));
        }
        let chunked = codings.len() == 1
            && codings[0]
                .to_str()
                .is_ok_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        if !chunked {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "unsupported_transfer_encoding",
                "the only transfer coding understood is chunked",
            ));
        }
        return Ok(BodyLength::Chunked);
    }
    match lengths[..] {
        [] => Ok(BodyLength::Exact(0)),
        [value] => {
            let digits = value.as_bytes();
            if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
                return Err(bad(
                    "invalid_content_length",
                    "Content-Length must be a decimal number of bytes",
                ));
            }
            let text = std::str::from_utf8(digits).unwrap_or_default();
            Ok(BodyLength::Exact(text.parse().unwrap_or(u64::MAX)))
        }
        _ => Err(bad(
            "invalid_content_length",
            "a request carries one Content-Length header",
        )),
    }
}

/// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 closes it
/// unless told `keep-alive`.
fn keeps_alive(headers: &HeaderMap, version: Version) -> bool {
    let has = |option: &str| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case(option))
    };
    match version {
        Version::HTTP_10 => has("keep-alive"),
        _ => !has("close"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn head(raw: &str) -> Result<RequestHead, ApiError> {
        let (head, length) = parse(raw.as_bytes())?.expect("a whole head");
        assert_eq!(length, raw.len());
        Ok(head)
    }

    fn refused(raw: &str) -> (u16, &'static str) {
        let error = head(raw).unwrap_err();
        (error.status.as_u16(), error.code)
    }

    #[test]
    fn a_plain_request_is_understood() {
        let h =
            head("POST /v1/rooms/r/queue?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n")
                .unwrap();
        assert_eq!(h.method, Method::POST);
        assert_eq!(h.uri.path(), "/v1/rooms/r/queue");
        assert_eq!(h.body, BodyLength::Exact(12));
        assert!(h.keep_alive && !h.expects_continue);
        let h = head("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!h.keep_alive);
        assert_eq!(h.body, BodyLength::Exact(0));
        let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(h.keep_alive);
        let h = head("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n").unwrap();
        assert!(!h.keep_alive);
        let h = head(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.body, BodyLength::Chunked);
        assert!(h.expects_continue);
    }

    #[test]
    fn partial_heads_ask_for_more_until_the_limit() {
        assert!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(parse(long.as_bytes()).unwrap_err().code, "head_too_large");
    }

    #[test]
    fn framing_ambiguities_are_refused() {
        for (raw, expected) in [
            ("GET / HTTP/1.1\r\n\r\n", (400, "invalid_host")),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                (400, "invalid_host"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                (400, "invalid_content_length"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
                (400, "invalid_content_length"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
                (400, "invalid_content_length"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                (400, "ambiguous_length"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                (501, "unsupported_transfer_encoding"),
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                (400, "ambiguous_length"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n",
                (417, "expectation_failed"),
            ),
        ] {
            assert_eq!(refused(raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn malformed_heads_are_refused_as_json_errors() {
        for raw in [
            "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x01b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost a\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\n",
        ] {
            let error = parse(raw.as_bytes()).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{raw:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(refused(&raw), (431, "too_many_headers"));
    }
}
