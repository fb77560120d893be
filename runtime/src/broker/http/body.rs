//! Request bodies: read whole before the request is routed, bounded in
//! size here and in time by the connection.

use axum::http::StatusCode;

use crate::broker::error::ApiError;

/// Largest request body accepted (joins carry at most a small JSON object).
pub const MAX_BODY: usize = 1024;
/// The most raw bytes a chunked body may take with its framing (sizes,
/// extensions, trailers) before it is refused.
const MAX_CHUNKED_RAW: usize = MAX_BODY + 4 * 1024;

pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the body is over {MAX_BODY} bytes"),
    )
}

fn malformed(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_chunked_body",
        format!("the chunked body is malformed: {message}"),
    )
}

fn crlf_at(raw: &[u8]) -> Option<usize> {
    raw.windows(2).position(|pair| pair == b"\r\n")
}

/// Decodes the chunked body at the start of `raw` (RFC 9112 §7.1):
/// `Ok(None)` until all of it is there, else the body and how many bytes
/// of `raw` it took. Extensions and trailers are read and ignored.
pub fn decode_chunked(raw: &[u8]) -> Result<Option<(Vec<u8>, usize)>, ApiError> {
    let need_more = || {
        if raw.len() > MAX_CHUNKED_RAW {
            Err(too_large())
        } else {
            Ok(None)
        }
    };
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = crlf_at(&raw[at..]) else {
            return need_more();
        };
        let line = &raw[at..at + line_end];
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        // Only blanks may precede an extension (RFC 9112 §7.1.1).
        let blanks = size_text
            .iter()
            .rev()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let size_text = &size_text[..size_text.len() - blanks];
        if size_text.is_empty()
            || size_text.len() > 8
            || !size_text.iter().all(u8::is_ascii_hexdigit)
        {
            return Err(malformed("a chunk size is not a hexadecimal number"));
        }
        let size = usize::from_str_radix(std::str::from_utf8(size_text).unwrap_or("0"), 16)
            .map_err(|_| malformed("a chunk size is out of range"))?;
        at += line_end + 2;
        if size == 0 {
            // The trailer section ends with an empty line.
            loop {
                let Some(end) = crlf_at(&raw[at..]) else {
                    return need_more();
                };
                at += end + 2;
                if end == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(too_large());
        }
        if raw.len() < at + size + 2 {
            return need_more();
        }
        body.extend_from_slice(&raw[at..at + size]);
        if &raw[at + size..at + size + 2] != b"\r\n" {
            return Err(malformed("a chunk is longer than its size"));
        }
        at += size + 2;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn chunked_bodies_decode_whole() {
        let raw = b"4 ;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\nGET";
        let (body, used) = decode_chunked(raw).unwrap().unwrap();
        assert_eq!(body, b"{\"a\":1}");
        assert_eq!(&raw[used..], b"GET");
        assert_eq!(decode_chunked(b"0\r\n\r\n").unwrap().unwrap().0, b"");
    }

    #[test]
    fn partial_chunked_bodies_ask_for_more() {
        let raw = b"4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        for end in 0..raw.len() {
            assert!(decode_chunked(&raw[..end]).unwrap().is_none(), "{end}");
        }
    }

    #[test]
    fn malformed_or_oversized_chunked_bodies_are_refused() {
        for raw in [
            &b"zz\r\nab\r\n0\r\n\r\n"[..],
            b"\r\n",
            b"-1\r\n",
            b"2\r\nabc\r\n0\r\n\r\n",
            b"123456789\r\n",
            b"1\n\r\na\r\n0\r\n\r\n",
            b"1\r\r\na\r\n0\r\n\r\n",
        ] {
            let error = decode_chunked(raw).unwrap_err();
            assert_eq!(error.code, "invalid_chunked_body", "{raw:?}");
        }
        let big = format!("{:x}\r\n", MAX_BODY + 1);
        assert_eq!(
            decode_chunked(big.as_bytes()).unwrap_err().code,
            "body_too_large"
        );
        let endless_trailer = format!("0\r\n{}", "x".repeat(MAX_CHUNKED_RAW));
        assert_eq!(
            decode_chunked(endless_trailer.as_bytes()).unwrap_err().code,
            "body_too_large"
        );
    }
}
