//! Opening a session's event stream, and the sequence of bytes it sends.
//! The route opens the stream; the listener writes it to the socket.

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use bytes::Bytes;
use tokio::sync::watch;

use super::Broker;
use super::error::ApiError;
use super::fanout::Subscription;
use super::sse::{self, ErrorData, Frame, KEEP_ALIVE, RETRY};
use crate::clock::now_ms;
use crate::metrics::EventKind;

impl Broker {
    /// Checks access to `sid` and subscribes to it. The feed first yields the
    /// session's current state, so a client reconnecting (with or without
    /// `Last-Event-ID`) is never behind: its place lives in the store.
    /// `sid` must have been checked with [`Broker::check_session`].
    pub(super) async fn open_events(self: &Arc<Self>, sid: &str) -> Result<EventFeed, ApiError> {
        // Subscribe before reading, so no change between the two is missed.
        let subscription = self.fanout.subscribe(sid).ok_or_else(|| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!(
                    "a session may hold at most {} streams at once",
                    super::fanout::MAX_STREAMS_PER_SESSION
                ),
            )
        })?;
        let generation = self.fanout.generation();
        let view = self.store.session(sid, Some(now_ms())).await?;
        self.show(&view, generation);
        // A stream opened while a message stands gets it too.
        let mut announcement = self.announcement.subscribe();
        if !announcement.borrow().text.is_empty() {
            announcement.mark_changed();
        }
        Ok(EventFeed {
            greeting: true,
            subscription,
            announcement,
            beats: self.beats.subscribe(),
            shutdown: self.shutdown.clone(),
            finished: false,
        })
    }
}

/// An opened stream, handed from the route to the listener in the
/// response's extensions: the listener writes it to the socket itself.
#[derive(Clone)]
pub(super) struct StreamHandoff(Arc<Mutex<Option<EventFeed>>>);

impl StreamHandoff {
    pub fn new(feed: EventFeed) -> Self {
        StreamHandoff(Arc::new(Mutex::new(Some(feed))))
    }

    pub fn take(&self) -> Option<EventFeed> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// What a stream sends, chunk by chunk: `retry:`, then frames of the
/// session as they change, keep-alive comments, and a last event.
pub(super) struct EventFeed {
    greeting: bool,
    subscription: Subscription,
    announcement: watch::Receiver<super::Announcement>,
    beats: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    finished: bool,
}

enum Step {
    Frame(Option<Arc<Frame>>),
    KeepAlive,
    Stop,
}

impl EventFeed {
    /// The next bytes to send, or `None` when the stream is over.
    pub async fn next(&mut self) -> Option<Bytes> {
        if std::mem::take(&mut self.greeting) {
            return Some(Bytes::from_static(RETRY));
        }
        while !self.finished {
            let step = tokio::select! {
                changed = self.subscription.frames.changed() => match changed {
                    Ok(()) => Step::Frame(self.subscription.frames.borrow_and_update().clone()),
                    Err(_) => Step::Stop,
                },
                changed = self.announcement.changed() => match changed {
                    Ok(()) => Step::Frame(Some(self.announcement.borrow_and_update().frame.clone())),
                    Err(_) => Step::Stop,
                },
                beat = self.beats.changed() => if beat.is_ok() { Step::KeepAlive } else { Step::Stop },
                _ = self.shutdown.wait_for(|stop| *stop) => Step::Frame(Some(shutting_down())),
            };
            match step {
                Step::Frame(Some(frame)) => {
                    self.finished = frame.last;
                    return Some(frame.bytes.clone());
                }
                Step::Frame(None) => {}
                Step::KeepAlive => return Some(Bytes::from_static(KEEP_ALIVE)),
                Step::Stop => return None,
            }
        }
        None
    }
}

/// The last event of streams cut by a broker shutdown; clients reconnect.
fn shutting_down() -> Arc<Frame> {
    let data = ErrorData {
        code: "shutting_down",
        message: "this broker is restarting; reconnect to keep your place".into(),
    };
    sse::frame(EventKind::Error, 0, &data)
}
