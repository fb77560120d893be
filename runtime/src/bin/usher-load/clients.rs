//! The simulated users: a streaming client (join, then hold an SSE stream)
//! and a joins-only worker (joins over one keep-alive connection).

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::http::{
    Connector, Framing, HttpError, KeepAlive, Response, Target, encode_component, one_shot,
    read_body, read_head, request,
};
use crate::proof;
use crate::recorder::{OpenStream, Recorder};
use crate::sse::{BodyDecoder, ChunkedDecoder, EventKind, EventStream, FeedOutcome, SseEvent};

/// Size of the per-thread read buffer shared by all streams of that thread.
const READ_BUF_LEN: usize = 16 * 1024;

thread_local! {
    /// Streams read into this buffer and parse synchronously before the next
    /// `.await`, so no stream owns a read buffer of its own.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUF_LEN].into_boxed_slice());
}

/// What every client task shares.
#[derive(Debug)]
pub struct Ctx {
    pub rec: Recorder,
    pub connector: Arc<Connector>,
    pub target: Target,
    pub room: String,
    /// Per-request time limit (join, stream opening, complete).
    pub timeout: Duration,
    /// Complete admitted sessions after this delay.
    pub complete_after: Option<Duration>,
    /// Solve the room's proof of work before each join (`--solve-proof`).
    pub solve_proof: bool,
    /// The join request for a short connection.
    join_close: Vec<u8>,
    /// The join request for a keep-alive connection.
    join_keep_alive: Vec<u8>,
}

impl Ctx {
    pub fn new(
        clients: usize,
        connector: Arc<Connector>,
        target: Target,
        room: String,
        timeout: Duration,
        complete_after: Option<Duration>,
        solve_proof: bool,
    ) -> Self {
        let path = format!("/v1/rooms/{}/queue", encode_component(&room));
        let join_close = request("POST", &path, &target.host, &[], true);
        let join_keep_alive = request("POST", &path, &target.host, &[], false);
        Self {
            rec: Recorder::new(clients),
            connector,
            target,
            room,
            timeout,
            complete_after,
            solve_proof,
            join_close,
            join_keep_alive,
        }
    }

    /// The join request to send next: the prepared one, or one with a
    /// newly solved proof of work (`--solve-proof`).
    async fn join_request(&self, close: bool) -> Result<Cow<'_, [u8]>, HttpError> {
        if !self.solve_proof {
            return Ok(Cow::Borrowed(if close {
                &self.join_close
            } else {
                &self.join_keep_alive
            }));
        }
        let solving = proof::join_request(&self.connector, &self.target, &self.room, true, close);
        flatten(tokio::time::timeout(self.timeout, solving).await).map(Cow::Owned)
    }

    /// A join begins: with `join` to send, or failed already getting one.
    fn start_join<'a>(&self, join: Result<Cow<'a, [u8]>, HttpError>) -> Option<Cow<'a, [u8]>> {
        self.rec.join_started(Instant::now());
        join.map_err(|error| self.rec.join_failed(&error)).ok()
    }
}

/// The parts of the join answer that are used.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Joined {
    session_id: String,
    state: String,
    session_token: String,
    events_url: String,
}

impl Joined {
    fn admitted(&self) -> bool {
        self.state == "admitted"
    }

    fn complete_path(&self, room: &str) -> String {
        format!(
            "/v1/rooms/{}/sessions/{}/complete?token={}",
            encode_component(room),
            encode_component(&self.session_id),
            encode_component(&self.session_token)
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmittedData {
    admitted_at_ms: u64,
}

#[derive(Debug, Deserialize)]
struct ClosedData {
    reason: Option<String>,
}

fn parse_join(response: Response) -> Result<Joined, HttpError> {
    if !response.is_success() {
        return Err(response.into_status_error());
    }
    serde_json::from_slice(&response.body)
        .map_err(|e| HttpError::Protocol(format!("join response: {e}")))
}

/// Records the outcome of a join and returns the session on success.
fn finish_join(ctx: &Ctx, result: Result<(Response, Duration), HttpError>) -> Option<Joined> {
    match result.and_then(|(response, latency)| Ok((parse_join(response)?, latency))) {
        Ok((joined, latency)) => {
            ctx.rec.join_ok(latency, joined.admitted());
            Some(joined)
        }
        Err(error) => {
            ctx.rec.join_failed(&error);
            None
        }
    }
}

fn flatten<T>(
    result: Result<Result<T, HttpError>, tokio::time::error::Elapsed>,
) -> Result<T, HttpError> {
    result.unwrap_or(Err(HttpError::Timeout))
}

/// Frees the session's slot after `--complete-after`.
fn spawn_complete(ctx: &Arc<Ctx>, path: String) {
    let Some(delay) = ctx.complete_after else {
        return;
    };
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let req = request("POST", &path, &ctx.target.host, &[], true);
        let result =
            flatten(tokio::time::timeout(ctx.timeout, one_shot(&ctx.connector, &req)).await)
                .and_then(|(response, _)| {
                    if response.is_success() {
                        Ok(())
                    } else {
                        Err(response.into_status_error())
                    }
                });
        match result {
            Ok(()) => {
                ctx.rec
                    .completes_ok
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(error) => {
                ctx.rec
                    .completes_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ctx.rec.error(&error);
            }
        }
    });
}

/// One simulated user in streaming mode: join on a short connection, open
/// the event stream on a new one and read it until the task is aborted at
/// the end of the run (or the stream ends by itself).
pub async fn streaming_client(ctx: Arc<Ctx>) {
    // The join and stream-opening futures are large and short-lived; boxing
    // them keeps them out of the long-lived task, which then holds little
    // more than the socket and the parser state while the stream is held.
    let Some((stream, leftover, body, mut state)) = Box::pin(setup_stream(&ctx)).await else {
        ctx.rec.settle();
        return;
    };
    let open = OpenStream::new(&ctx.rec);
    ctx.rec.settle();
    let end = read_stream(&ctx, &stream, leftover, EventStream::new(body), &mut state).await;
    match end {
        Ok(()) => ctx.rec.stream_ended_early(state.closed.as_deref()),
        Err(error) => {
            ctx.rec.error(&error);
            ctx.rec.stream_ended_early(None);
        }
    }
    drop(open);
}

/// Joins and opens the event stream, recording failures.
async fn setup_stream(ctx: &Arc<Ctx>) -> Option<(TcpStream, Vec<u8>, BodyDecoder, ClientState)> {
    let join = ctx.start_join(ctx.join_request(true).await)?;
    let result = flatten(tokio::time::timeout(ctx.timeout, one_shot(&ctx.connector, &join)).await);
    let joined = finish_join(ctx, result)?;
    let mut state = ClientState {
        waiting_at_join: !joined.admitted(),
        seen_position: false,
        closed: None,
        complete_path: ctx.complete_after.map(|_| joined.complete_path(&ctx.room)),
    };
    if joined.admitted()
        && let Some(path) = state.complete_path.take()
    {
        spawn_complete(ctx, path);
    }
    let opened =
        flatten(tokio::time::timeout(ctx.timeout, open_stream(ctx, &joined.events_url)).await);
    match opened {
        Ok((stream, leftover, body)) => Some((stream, leftover, body, state)),
        Err(error) => {
            ctx.rec
                .streams_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ctx.rec.error(&error);
            None
        }
    }
}

/// The little a stream remembers between reads.
#[derive(Debug)]
struct ClientState {
    /// The join said `waiting`, so an `admitted` event measures a real
    /// dispatcher admission.
    waiting_at_join: bool,
    /// A position event was already seen on this stream.
    seen_position: bool,
    /// Reason of a `closed` event, once received.
    closed: Option<String>,
    /// Where to complete the session (only with `--complete-after`).
    complete_path: Option<String>,
}

/// Connects and sends the events request; returns the socket, the body
/// bytes that came with the head, and the body framing.
async fn open_stream(
    ctx: &Ctx,
    events_url: &str,
) -> Result<(TcpStream, Vec<u8>, BodyDecoder), HttpError> {
    let path = path_of(events_url)
        .ok_or_else(|| HttpError::Protocol(format!("unusable eventsUrl {events_url:?}")))?;
    let mut stream = ctx.connector.connect().await?;
    // Closing with RST leaves no TIME_WAIT entry per stream on this side, so
    // back-to-back runs do not run out of source ports.
    stream.set_zero_linger().map_err(HttpError::Io)?;
    let req = request(
        "GET",
        path,
        &ctx.target.host,
        &[
            ("Accept", "text/event-stream"),
            ("Cache-Control", "no-cache"),
        ],
        false,
    );
    stream.write_all(&req).await.map_err(HttpError::Io)?;
    let mut buf = Vec::new();
    let head = read_head(&mut stream, &mut buf).await?;
    if head.status != 200 {
        let body = read_body(&mut stream, &mut buf, &head)
            .await
            .unwrap_or_default();
        return Err(Response {
            status: head.status,
            body,
        }
        .into_status_error());
    }
    let is_sse = head
        .content_type
        .as_deref()
        .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
    if !is_sse {
        return Err(HttpError::Protocol(format!(
            "events response has content type {:?}",
            head.content_type
        )));
    }
    let body = match head.framing {
        Framing::Chunked => BodyDecoder::Chunked(ChunkedDecoder::new()),
        Framing::UntilClose => BodyDecoder::Plain,
        Framing::Length(_) | Framing::Empty => {
            return Err(HttpError::Protocol(
                "events response has a fixed length".into(),
            ));
        }
    };
    buf.shrink_to_fit();
    Ok((stream, buf, body))
}

/// Path and query of `url`, which may be a path or an absolute http URL.
fn path_of(url: &str) -> Option<&str> {
    if url.starts_with('/') {
        return Some(url);
    }
    let rest = url.strip_prefix("http://")?;
    rest.find('/').map(|i| &rest[i..])
}

/// Reads the event stream until it ends. `Ok` when the server ended it
/// (EOF, end of the chunked body, or a `closed` event), `Err` on errors.
async fn read_stream(
    ctx: &Arc<Ctx>,
    stream: &TcpStream,
    leftover: Vec<u8>,
    mut events: EventStream,
    state: &mut ClientState,
) -> Result<(), HttpError> {
    if events.feed(&leftover, &mut |e| handle_event(ctx, state, e))? == FeedOutcome::Ended {
        return Ok(());
    }
    drop(leftover);
    loop {
        // A `closed` event ends the session; the server closes right after.
        if state.closed.is_some() {
            return Ok(());
        }
        // `poll_read_ready` parks the waker in the socket's own slot; unlike
        // the `readable()` future it adds nothing to the task's size.
        std::future::poll_fn(|cx| stream.poll_read_ready(cx))
            .await
            .map_err(HttpError::Io)?;
        let step = READ_BUF.with_borrow_mut(|buf| match stream.try_read(buf) {
            Ok(0) => Some(Ok(())),
            Ok(n) => match events.feed(&buf[..n], &mut |e| handle_event(ctx, state, e)) {
                Ok(FeedOutcome::Ended) => Some(Ok(())),
                Ok(FeedOutcome::More) => None,
                Err(e) => Some(Err(HttpError::from(e))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) => Some(Err(HttpError::Io(e))),
        });
        if let Some(result) = step {
            return result;
        }
    }
}

/// Applies one event to the client state and the shared recorder.
fn handle_event(ctx: &Arc<Ctx>, state: &mut ClientState, event: SseEvent<'_>) {
    let rec = &ctx.rec;
    match event.kind {
        EventKind::Position => {
            rec.position_events
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // The first position event of a stream may be the snapshot the
            // broker sends on connect rather than a live broadcast; its
            // arrival time says when the stream opened, not how fast the
            // broadcast fanned out, so it is left out of the spread.
            if let Some(id) = event.id
                && state.seen_position
            {
                rec.position(id, Instant::now());
            }
            state.seen_position = true;
        }
        EventKind::Admitted => {
            rec.admitted_events
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match serde_json::from_slice::<AdmittedData>(event.data) {
                Ok(data) if state.waiting_at_join => {
                    rec.admission_latency(admission_latency_us(
                        data.admitted_at_ms,
                        SystemTime::now(),
                    ));
                }
                Ok(_) => {}
                Err(_) => rec.protocol_error(),
            }
            state.waiting_at_join = false;
            if let Some(path) = state.complete_path.take() {
                spawn_complete(ctx, path);
            }
        }
        EventKind::Closed => {
            let reason = serde_json::from_slice::<ClosedData>(event.data)
                .ok()
                .and_then(|d| d.reason)
                .unwrap_or_else(|| "unknown".to_owned());
            state.closed.get_or_insert(reason);
        }
        EventKind::Message | EventKind::Other => {}
    }
}

/// Microseconds from the broker's admission instant to `now` (same clock;
/// the broker's millisecond truncation can add up to 1 ms).
fn admission_latency_us(admitted_at_ms: u64, now: SystemTime) -> u32 {
    let now_us = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let latency = now_us.saturating_sub(admitted_at_ms.saturating_mul(1000));
    u32::try_from(latency).unwrap_or(u32::MAX)
}

/// One of the `--connections` workers of joins-only mode: takes a permit
/// per join (the dispatcher releases them at the join rate) and sends the
/// join over its keep-alive connection. Ends when the permits are closed.
pub async fn joins_only_worker(ctx: Arc<Ctx>, permits: Arc<Semaphore>) {
    let mut conn = KeepAlive::new(Arc::clone(&ctx.connector));
    while let Ok(permit) = permits.acquire().await {
        permit.forget();
        let Some(join) = ctx.start_join(ctx.join_request(false).await) else {
            ctx.rec.settle();
            continue;
        };
        // A timed-out exchange drops its connection; the next one reconnects.
        let result = flatten(tokio::time::timeout(ctx.timeout, conn.send(&join)).await);
        if let Some(joined) = finish_join(&ctx, result)
            && joined.admitted()
            && ctx.complete_after.is_some()
        {
            spawn_complete(&ctx, joined.complete_path(&ctx.room));
        }
        ctx.rec.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_paths() {
        assert_eq!(
            path_of("/v1/rooms/demo/sessions/s1/events?token=t"),
            Some("/v1/rooms/demo/sessions/s1/events?token=t")
        );
        assert_eq!(
            path_of("http://127.0.0.1:8080/v1/x?token=t"),
            Some("/v1/x?token=t")
        );
        assert_eq!(path_of("https://example.com/v1/x"), None);
        assert_eq!(path_of("v1/x"), None);
    }

    #[test]
    fn admission_latency() {
        let now =
            UNIX_EPOCH + Duration::from_millis(1_763_740_000_123) + Duration::from_micros(4_500);
        assert_eq!(admission_latency_us(1_763_740_000_123, now), 4_500);
        assert_eq!(admission_latency_us(1_763_740_000_200, now), 0);
    }

    #[test]
    fn join_answer() {
        let body = br#"{"sessionId":"s-1","ticket":1,"state":"waiting","position":1,"waiting":1,
            "etaSeconds":null,"sessionToken":"a+b/c","eventsUrl":"/v1/rooms/demo/sessions/s-1/events?token=x",
            "statusUrl":"/v1/rooms/demo/sessions/s-1"}"#;
        let joined = parse_join(Response {
            status: 201,
            body: body.to_vec(),
        })
        .expect("valid join");
        assert!(!joined.admitted());
        assert_eq!(
            joined.complete_path("demo"),
            "/v1/rooms/demo/sessions/s-1/complete?token=a%2Bb%2Fc"
        );
        let error = parse_join(Response {
            status: 429,
            body: br#"{"code":"rate_limited","message":"slow down"}"#.to_vec(),
        });
        assert!(matches!(
            error,
            Err(HttpError::Status { status: 429, code: Some(ref c) }) if c == "rate_limited"
        ));
    }
}
