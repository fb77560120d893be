//! Incremental decoders for an event stream: the HTTP/1.1 chunked transfer
//! coding and Server-Sent Events frames.
//!
//! Both decoders are push-based state machines: bytes are fed in whatever
//! pieces the socket delivers them, and the only memory they keep between
//! feeds is a few words of state plus the bytes of a line that is not yet
//! complete. This is what lets one process hold a very large number of
//! streams: the read buffer itself is shared (see `clients.rs`).

use std::fmt;

/// Longest SSE line accepted before the stream is declared broken.
const MAX_LINE: usize = 64 * 1024;

/// Data buffers larger than this are released after each frame instead of
/// being kept for the next one, so one big frame does not pin memory.
const KEEP_DATA_CAPACITY: usize = 512;

/// A malformed chunked body or SSE stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The chunk-size line was not hexadecimal or overflowed.
    BadChunkSize,
    /// A chunk's data was not followed by CRLF.
    BadChunkEnd,
    /// An SSE line exceeded [`MAX_LINE`].
    LineTooLong,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadChunkSize => f.write_str("malformed chunk size"),
            Self::BadChunkEnd => f.write_str("chunk data not terminated by CRLF"),
            Self::LineTooLong => f.write_str("event-stream line too long"),
        }
    }
}

impl std::error::Error for DecodeError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hexadecimal size; `saw_digit` guards against empty sizes.
    Size { saw_digit: bool },
    /// Skipping a chunk extension (`;name=value`) up to the end of the line.
    Extension,
    /// Saw CR at the end of the size line, expecting LF.
    SizeLf,
    /// Inside chunk data with this many bytes left.
    Data(u64),
    /// Chunk data done, expecting CR.
    DataCr,
    /// Chunk data done, expecting LF.
    DataLf,
    /// After the last (zero-sized) chunk: trailer lines up to an empty line.
    /// `line_empty` is true while the current trailer line has no content.
    Trailer { line_empty: bool },
    /// The terminating empty line was read; nothing more belongs to the body.
    Done,
}

/// Decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1).
///
/// Chunk boundaries carry no meaning for the payload: a chunk may end in the
/// middle of an SSE line and one chunk may carry several frames.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self {
            state: ChunkState::Size { saw_digit: false },
            size: 0,
        }
    }

    /// True once the last chunk and the trailer section have been consumed.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes bytes from `input`, passing decoded payload pieces to `sink`.
    ///
    /// Returns how many bytes of `input` belong to the chunked body; this is
    /// less than `input.len()` only when the body ended inside `input`.
    pub fn feed(
        &mut self,
        input: &[u8],
        sink: &mut impl FnMut(&[u8]),
    ) -> Result<usize, DecodeError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::Data(left) => {
                    let available = (input.len() - i) as u64;
                    let take = left.min(available) as usize;
                    sink(&input[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                    continue;
                }
                ChunkState::Done => return Ok(i),
                _ => {}
            }
            let b = input[i];
            i += 1;
            self.state = match self.state {
                ChunkState::Size { saw_digit } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = u64::from(hex_value(b));
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(digit))
                            .ok_or(DecodeError::BadChunkSize)?;
                        ChunkState::Size { saw_digit: true }
                    }
                    b';' | b' ' | b'\t' if saw_digit => ChunkState::Extension,
                    b'\r' if saw_digit => ChunkState::SizeLf,
                    b'\n' if saw_digit => self.end_of_size_line(),
                    _ => return Err(DecodeError::BadChunkSize),
                },
                ChunkState::Extension => match b {
                    b'\r' => ChunkState::SizeLf,
                    b'\n' => self.end_of_size_line(),
                    _ => ChunkState::Extension,
                },
                ChunkState::SizeLf => match b {
                    b'\n' => self.end_of_size_line(),
                    _ => return Err(DecodeError::BadChunkSize),
                },
                ChunkState::DataCr => match b {
                    b'\r' => ChunkState::DataLf,
                    // Tolerate a bare LF after the data.
                    b'\n' => ChunkState::Size { saw_digit: false },
                    _ => return Err(DecodeError::BadChunkEnd),
                },
                ChunkState::DataLf => match b {
                    b'\n' => ChunkState::Size { saw_digit: false },
                    _ => return Err(DecodeError::BadChunkEnd),
                },
                ChunkState::Trailer { line_empty } => match b {
                    b'\n' if line_empty => ChunkState::Done,
                    b'\n' => ChunkState::Trailer { line_empty: true },
                    b'\r' => ChunkState::Trailer { line_empty },
                    _ => ChunkState::Trailer { line_empty: false },
                },
                // Handled before reading a byte.
                ChunkState::Data(_) | ChunkState::Done => self.state,
            };
        }
        Ok(i)
    }

    fn end_of_size_line(&mut self) -> ChunkState {
        let size = std::mem::take(&mut self.size);
        if size == 0 {
            ChunkState::Trailer { line_empty: true }
        } else {
            ChunkState::Data(size)
        }
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// The event types the load generator distinguishes. Other names are kept
/// as [`EventKind::Other`] without storing the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// No `event:` field (the SSE default type `message`).
    Message,
    Position,
    Admitted,
    Closed,
    Other,
}

impl EventKind {
    fn from_name(name: &[u8]) -> Self {
        match name {
            b"" | b"message" => Self::Message,
            b"position" => Self::Position,
            b"admitted" => Self::Admitted,
            b"closed" => Self::Closed,
            _ => Self::Other,
        }
    }
}

/// One dispatched SSE event, borrowed from the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    pub kind: EventKind,
    /// The frame's own `id:` field when it is a decimal integer.
    ///
    /// Unlike the browser `EventSource`, the id does not carry over to later
    /// frames that lack one: the load generator wants "this frame's id".
    pub id: Option<u64>,
    /// The joined `data:` lines. Empty for `position` events whose `event:`
    /// line preceded the data: their payload is not needed and not stored.
    pub data: &'a [u8],
}

/// Incremental SSE frame parser (WHATWG HTML "event stream interpretation").
///
/// Handles CRLF, LF and CR line endings (also a CRLF split across feeds),
/// comments (`: keep-alive`), multi-line data and an optional leading BOM.
/// `retry:` and unknown fields are ignored.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line whose end has not been seen yet.
    partial: Vec<u8>,
    data: Vec<u8>,
    kind: Option<EventKind>,
    id: Option<u64>,
    has_data: bool,
    /// The previous feed ended with CR: a leading LF belongs to that line end.
    skip_lf: bool,
    /// At least one byte was seen (the BOM may only appear first).
    started: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `input`, calling `on_event` for each complete frame.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        on_event: &mut impl FnMut(SseEvent<'_>),
    ) -> Result<(), DecodeError> {
        if input.is_empty() {
            return Ok(());
        }
        if !self.started {
            self.started = true;
            if let Some(rest) = input.strip_prefix(b"\xEF\xBB\xBF") {
                input = rest;
            }
        }
        if self.skip_lf {
            self.skip_lf = false;
            if let Some(rest) = input.strip_prefix(b"\n") {
                input = rest;
            }
        }
        while !input.is_empty() {
            let Some(end) = input.iter().position(|&b| b == b'\n' || b == b'\r') else {
                if self.partial.len() + input.len() > MAX_LINE {
                    return Err(DecodeError::LineTooLong);
                }
                self.partial.extend_from_slice(input);
                break;
            };
            let terminator = input[end];
            if self.partial.is_empty() {
                self.line(&input[..end], on_event);
            } else {
                if self.partial.len() + end > MAX_LINE {
                    return Err(DecodeError::LineTooLong);
                }
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&input[..end]);
                self.line(&line, on_event);
                line.clear();
                self.partial = line;
            }
            input = &input[end + 1..];
            if terminator == b'\r' {
                match input.first() {
                    Some(b'\n') => input = &input[1..],
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"event" => self.kind = Some(EventKind::from_name(value)),
            b"data" => {
                // Position payloads are never looked at; skip copying them.
                if self.kind != Some(EventKind::Position) {
                    if self.has_data {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                }
                self.has_data = true;
            }
            b"id" => self.id = parse_u64(value),
            _ => {}
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(SseEvent<'_>)) {
        if self.has_data {
            on_event(SseEvent {
                kind: self.kind.unwrap_or(EventKind::Message),
                id: self.id,
                data: &self.data,
            });
        }
        self.kind = None;
        self.id = None;
        self.has_data = false;
        if self.data.capacity() > KEEP_DATA_CAPACITY {
            self.data = Vec::new();
        } else {
            self.data.clear();
        }
    }
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// How the event-stream body is framed on the wire.
#[derive(Debug)]
pub enum BodyDecoder {
    Chunked(ChunkedDecoder),
    /// Body runs until the connection closes.
    Plain,
}

/// Whether the body can carry more bytes after a feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedOutcome {
    More,
    /// The chunked body ended (the server finished the response).
    Ended,
}

/// The body framing and the SSE parser of one stream.
#[derive(Debug)]
pub struct EventStream {
    body: BodyDecoder,
    parser: SseParser,
}

impl EventStream {
    pub fn new(body: BodyDecoder) -> Self {
        Self {
            body,
            parser: SseParser::new(),
        }
    }

    /// Feeds raw body bytes from the socket.
    pub fn feed(
        &mut self,
        input: &[u8],
        on_event: &mut impl FnMut(SseEvent<'_>),
    ) -> Result<FeedOutcome, DecodeError> {
        match &mut self.body {
            BodyDecoder::Plain => {
                self.parser.feed(input, on_event)?;
                Ok(FeedOutcome::More)
            }
            BodyDecoder::Chunked(chunks) => {
                let parser = &mut self.parser;
                let mut result = Ok(());
                chunks.feed(input, &mut |payload| {
                    if result.is_ok() {
                        result = parser.feed(payload, on_event);
                    }
                })?;
                result?;
                Ok(if chunks.is_done() {
                    FeedOutcome::Ended
                } else {
                    FeedOutcome::More
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Owned {
        kind: EventKind,
        id: Option<u64>,
        data: String,
    }

    fn ev(kind: EventKind, id: Option<u64>, data: &str) -> Owned {
        Owned {
            kind,
            id,
            data: data.to_owned(),
        }
    }

    fn collect_sse(pieces: &[&[u8]]) -> Vec<Owned> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for piece in pieces {
            parser
                .feed(piece, &mut |e| {
                    out.push(Owned {
                        kind: e.kind,
                        id: e.id,
                        data: String::from_utf8_lossy(e.data).into_owned(),
                    })
                })
                .expect("valid stream");
        }
        out
    }

    fn decode_chunked(pieces: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        for piece in pieces {
            decoder
                .feed(piece, &mut |d| body.extend_from_slice(d))
                .expect("valid chunked body");
        }
        (body, decoder.is_done())
    }

    /// Encodes `payload` as chunks of the given sizes (last chunk takes the rest).
    fn chunk(payload: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = payload;
        for &size in sizes {
            let size = size.min(rest.len());
            if size == 0 {
                break;
            }
            out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
            out.extend_from_slice(&rest[..size]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[size..];
        }
        if !rest.is_empty() {
            out.extend_from_slice(format!("{:X}\r\n", rest.len()).as_bytes());
            out.extend_from_slice(rest);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    const STREAM: &[u8] = b"retry: 3000\n\n\
id: 17\nevent: position\ndata: {\"position\":3,\"waiting\":10,\"etaSeconds\":12}\n\n\
id: 18\nevent: admitted\ndata: {\"entryToken\":\"abc\",\"admittedAtMs\":1763740000123}\n\n\
: keep-alive\n\n\
event: closed\ndata: {\"reason\":\"expired\"}\n\n";

    fn expected() -> Vec<Owned> {
        vec![
            ev(EventKind::Position, Some(17), ""),
            ev(
                EventKind::Admitted,
                Some(18),
                "{\"entryToken\":\"abc\",\"admittedAtMs\":1763740000123}",
            ),
            ev(EventKind::Closed, None, "{\"reason\":\"expired\"}"),
        ]
    }

    #[test]
    fn whole_stream_in_one_piece() {
        assert_eq!(collect_sse(&[STREAM]), expected());
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        for cut in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(cut);
            assert_eq!(collect_sse(&[a, b]), expected(), "cut at {cut}");
        }
    }

    #[test]
    fn byte_by_byte() {
        let pieces: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(collect_sse(&pieces), expected());
    }

    #[test]
    fn crlf_and_cr_line_endings_split_across_feeds() {
        let crlf = String::from_utf8_lossy(STREAM).replace('\n', "\r\n");
        let bytes = crlf.as_bytes();
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(collect_sse(&[a, b]), expected(), "crlf cut at {cut}");
        }
        let cr = String::from_utf8_lossy(STREAM).replace('\n', "\r");
        assert_eq!(collect_sse(&[cr.as_bytes()]), expected());
    }

    #[test]
    fn keep_alive_comments_dispatch_nothing() {
        assert_eq!(
            collect_sse(&[b": keep-alive\n\n: keep-alive\r\n\r\n"]),
            vec![]
        );
        // A comment between the fields of a frame does not end the frame.
        let events = collect_sse(&[b"event: closed\n: keep-alive\ndata: {}\n\n"]);
        assert_eq!(events, vec![ev(EventKind::Closed, None, "{}")]);
    }

    #[test]
    fn multi_line_data_and_default_type() {
        let events = collect_sse(&[b"data: a\ndata:b\ndata\n\n"]);
        assert_eq!(events, vec![ev(EventKind::Message, None, "a\nb\n")]);
    }

    #[test]
    fn frame_without_data_is_not_dispatched_and_fields_reset() {
        let events = collect_sse(&[b"id: 4\nevent: position\n\ndata: x\n\n"]);
        assert_eq!(events, vec![ev(EventKind::Message, None, "x")]);
    }

    #[test]
    fn data_before_event_line_is_kept() {
        let events = collect_sse(&[b"data: {}\nevent: position\nid: 9\n\n"]);
        assert_eq!(events, vec![ev(EventKind::Position, Some(9), "{}")]);
    }

    #[test]
    fn non_numeric_id_and_bom() {
        let events = collect_sse(&[b"\xEF\xBB\xBFid: abc\nevent: other\ndata: 1\n\n"]);
        assert_eq!(events, vec![ev(EventKind::Other, None, "1")]);
    }

    #[test]
    fn overlong_line_is_an_error() {
        let mut parser = SseParser::new();
        let long = vec![b'a'; MAX_LINE + 1];
        assert_eq!(
            parser.feed(&long, &mut |_| {}),
            Err(DecodeError::LineTooLong)
        );
    }

    #[test]
    fn chunked_basic_with_extension_and_trailer() {
        let body = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let used = decoder
            .feed(body, &mut |d| out.extend_from_slice(d))
            .expect("valid");
        assert_eq!(out, b"hello world");
        assert!(decoder.is_done());
        assert_eq!(&body[used..], b"NEXT");
    }

    #[test]
    fn chunked_every_split_point() {
        let wire = chunk(b"hello world, this is a body", &[3, 17]);
        let mut full = wire.clone();
        full.extend_from_slice(b"0\r\n\r\n");
        for cut in 0..=full.len() {
            let (a, b) = full.split_at(cut);
            let (body, done) = decode_chunked(&[a, b]);
            assert_eq!(body, b"hello world, this is a body", "cut at {cut}");
            assert!(done);
        }
    }

    #[test]
    fn chunked_rejects_garbage() {
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(
            decoder.feed(b"zz\r\n", &mut |_| {}),
            Err(DecodeError::BadChunkSize)
        );
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(
            decoder.feed(b"1\r\nab\r\n", &mut |_| {}),
            Err(DecodeError::BadChunkEnd)
        );
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(
            decoder.feed(b"\r\n", &mut |_| {}),
            Err(DecodeError::BadChunkSize)
        );
    }

    fn collect_stream(stream: &mut EventStream, pieces: &[&[u8]]) -> (Vec<Owned>, FeedOutcome) {
        let mut out = Vec::new();
        let mut outcome = FeedOutcome::More;
        for piece in pieces {
            outcome = stream
                .feed(piece, &mut |e| {
                    out.push(Owned {
                        kind: e.kind,
                        id: e.id,
                        data: String::from_utf8_lossy(e.data).into_owned(),
                    })
                })
                .expect("valid stream");
        }
        (out, outcome)
    }

    #[test]
    fn frames_split_across_chunks_and_reads() {
        // Chunks cut through lines and frames; reads cut through chunk headers.
        let wire = chunk(STREAM, &[5, 40, 1, 2, 90, 7]);
        for cut1 in (0..wire.len()).step_by(3) {
            let cut2 = (cut1 + 11).min(wire.len());
            let mut stream = EventStream::new(BodyDecoder::Chunked(ChunkedDecoder::new()));
            let (events, outcome) = collect_stream(
                &mut stream,
                &[&wire[..cut1], &wire[cut1..cut2], &wire[cut2..]],
            );
            assert_eq!(events, expected(), "cuts at {cut1}/{cut2}");
            assert_eq!(outcome, FeedOutcome::More);
        }
    }

    #[test]
    fn multiple_events_in_one_chunk_then_end_of_body() {
        let mut wire = chunk(STREAM, &[STREAM.len()]);
        wire.extend_from_slice(b"0\r\n\r\n");
        let mut stream = EventStream::new(BodyDecoder::Chunked(ChunkedDecoder::new()));
        let (events, outcome) = collect_stream(&mut stream, &[&wire]);
        assert_eq!(events, expected());
        assert_eq!(outcome, FeedOutcome::Ended);
    }

    #[test]
    fn plain_body_stream() {
        let mut stream = EventStream::new(BodyDecoder::Plain);
        let (a, b) = STREAM.split_at(50);
        let (events, outcome) = collect_stream(&mut stream, &[a, b]);
        assert_eq!(events, expected());
        assert_eq!(outcome, FeedOutcome::More);
    }

    #[test]
    fn parse_u64_bounds() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"1a"), None);
    }
}
