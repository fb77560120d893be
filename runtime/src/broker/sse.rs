//! Server-Sent Events framing. Frames are encoded once into `Bytes` and the
//! same buffer is handed to every stream that sends it.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::metrics::EventKind;

/// One encoded SSE event.
#[derive(Debug)]
pub struct Frame {
    pub kind: EventKind,
    pub bytes: Bytes,
    /// The stream ends after this frame (`closed`).
    pub last: bool,
}

/// Sent first on every stream: how long browsers wait before reconnecting.
pub const RETRY: &[u8] = b"retry: 3000\n\n";
/// A comment line that keeps proxies and mobile networks from idling out.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Encodes `data` as one event. `data` is single-line JSON, so one `data:` line.
pub fn frame(kind: EventKind, id: u64, data: &impl Serialize) -> Arc<Frame> {
    let json = serde_json::to_string(data).unwrap_or_else(|e| {
        unreachable!("event payloads are plain structs that always serialize: {e}")
    });
    let text = format!("id: {id}\nevent: {}\ndata: {json}\n\n", kind.as_str());
    Arc::new(Frame {
        kind,
        bytes: Bytes::from(text),
        last: kind == EventKind::Closed || kind == EventKind::Error,
    })
}

/// A `message` event's data: the room's message to everyone waiting
/// (empty: the message was withdrawn).
#[derive(Serialize)]
pub struct MessageData<'a> {
    pub text: &'a str,
}

/// A `position` event's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PositionData {
    pub position: u64,
    pub waiting: u64,
    pub eta_seconds: Option<u64>,
}

impl PositionData {
    /// The encoded event. Broadcasts make one per waiting session, so this
    /// writes the JSON by hand in a single allocation.
    pub fn frame(&self, id: u64) -> Arc<Frame> {
        use std::fmt::Write as _;
        let mut text = String::with_capacity(96);
        let _ = write!(
            text,
            "id: {id}\nevent: position\ndata: {{\"position\":{},\"waiting\":{},\"etaSeconds\":",
            self.position, self.waiting
        );
        let _ = match self.eta_seconds {
            Some(eta) => write!(text, "{eta}}}\n\n"),
            None => write!(text, "null}}\n\n"),
        };
        Arc::new(Frame {
            kind: EventKind::Position,
            bytes: Bytes::from(text),
            last: false,
        })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmittedData {
    pub entry_token: String,
    pub expires_at: String,
    pub admitted_at_ms: i64,
}

/// The `closed` reason of a session the store no longer knows: Redis lost
/// the room's data, and with it the visitor's place. Joining again gives a
/// new place at the back of the line.
pub const LOST_REASON: &str = "lost";

#[derive(Serialize)]
pub struct ClosedData {
    pub reason: &'static str,
}

#[derive(Serialize)]
pub struct ErrorData {
    pub code: &'static str,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_single_events() {
        let f = PositionData {
            position: 3,
            waiting: 9,
            eta_seconds: None,
        }
        .frame(7);
        assert_eq!(
            std::str::from_utf8(&f.bytes).unwrap_or_default(),
            "id: 7\nevent: position\ndata: {\"position\":3,\"waiting\":9,\"etaSeconds\":null}\n\n"
        );
        assert!(!f.last);
        let f = PositionData {
            position: 1,
            waiting: 20,
            eta_seconds: Some(42),
        }
        .frame(8);
        let data = std::str::from_utf8(&f.bytes)
            .unwrap_or_default()
            .lines()
            .nth(2)
            .unwrap_or_default();
        let json: serde_json::Value =
            serde_json::from_str(data.trim_start_matches("data: ")).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"position": 1, "waiting": 20, "etaSeconds": 42})
        );
        assert!(frame(EventKind::Closed, 8, &ClosedData { reason: "left" }).last);
    }
}
