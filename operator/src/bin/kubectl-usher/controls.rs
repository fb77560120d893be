//! The pure parts of `kubectl usher`: argument checks, the JSON merge
//! patches the controls send, and the status report.

use serde_json::{Value, json};

/// The most visitors one `admit` may ask for (the CRD's bound).
pub const MAX_ADMIT: i64 = 100_000;
/// The longest message (the CRD's bound, in characters).
pub const MAX_MESSAGE_CHARS: usize = 500;
/// The longest `sessionDuration` text (the CRD's bound).
const MAX_DURATION_CHARS: usize = 32;

/// `admit`'s count: a whole number from 1 to [`MAX_ADMIT`].
pub fn admit_count(text: &str) -> Result<i64, String> {
    let count: i64 = text
        .trim()
        .parse()
        .map_err(|_| format!("count {text:?} is not a whole number from 1 to {MAX_ADMIT}"))?;
    if !(1..=MAX_ADMIT).contains(&count) {
        return Err(format!("count must be from 1 to {MAX_ADMIT}, not {count}"));
    }
    Ok(count)
}

/// A message of at most [`MAX_MESSAGE_CHARS`] characters.
pub fn message_text(text: &str) -> Result<&str, String> {
    let chars = text.chars().count();
    if chars > MAX_MESSAGE_CHARS {
        return Err(format!(
            "message is {chars} characters long; at most {MAX_MESSAGE_CHARS} are allowed"
        ));
    }
    Ok(text)
}

/// A session duration as the CRD takes it: `15m`, `90s`, `1h30m`, `500ms`
/// (units ms, s, m, h), from 1ms to 168h.
pub fn session_duration(text: &str) -> Result<&str, String> {
    let bad = || {
        format!("{text:?} is not a session duration such as 15m, 90s or 1h30m (units ms, s, m, h)")
    };
    if text.is_empty() || text.len() > MAX_DURATION_CHARS {
        return Err(bad());
    }
    // `([0-9]+(ms|s|m|h))+`
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        rest = &rest[digits..];
        rest = ["ms", "s", "m", "h"]
            .iter()
            .find_map(|unit| rest.strip_prefix(unit))
            .ok_or_else(bad)?;
    }
    usher_runtime::config::parse_session_duration(text)
        .map_err(|_| format!("session duration {text:?} must be from 1ms to 168h (7 days)"))?;
    Ok(text)
}

/// An `admitNext.requestId`: the UTC time with milliseconds and a short
/// random suffix, e.g. `2026-12-01T10:00:00.250Z-k3f9q2` (characters
/// `[A-Za-z0-9._:-]`, at most 64).
pub fn request_id(now: std::time::SystemTime, suffix: &str) -> String {
    format!("{}-{suffix}", humantime::format_rfc3339_millis(now))
}

/// A random suffix of `len` lowercase letters and digits.
pub fn random_suffix(len: usize) -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// `closesAt` for "close now": `YYYY-MM-DDTHH:MM:SSZ`.
pub fn closes_at(now: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(now).to_string()
}

pub fn pause_patch(paused: bool) -> Value {
    json!({"spec": {"paused": paused}})
}

pub fn admit_patch(count: i64, request_id: &str) -> Value {
    json!({"spec": {"admitNext": {"count": count, "requestId": request_id}}})
}

/// `None` clears the message (a merge patch's `null` removes the field).
pub fn message_patch(text: Option<&str>) -> Value {
    json!({"spec": {"message": text}})
}

pub fn close_patch(closes_at: &str) -> Value {
    json!({"spec": {"closesAt": closes_at}})
}

pub fn session_duration_patch(duration: &str) -> Value {
    json!({"spec": {"sessionDuration": duration}})
}

/// A Random room's shuffle record: the commitment until the opening, then
/// the seed and salt that open it.
fn fairness(record: &Value) -> String {
    match (record["commitment"].as_str(), record["seed"].as_str()) {
        (None, _) => "-".into(),
        (Some(commitment), None) => format!("commitment {commitment} (sealed)"),
        (Some(commitment), Some(seed)) => format!(
            "commitment {commitment}, seed {seed}, salt {}",
            record["salt"].as_str().unwrap_or("-")
        ),
    }
}

/// What `status` prints: one `name: value` line per item, `-` when unset.
pub fn status_report(room: &Value) -> String {
    let status = &room["status"];
    let spec = &room["spec"];
    let text = |value: &Value| match value {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let rows = [
        ("phase", text(&status["phase"])),
        ("waiting", text(&status["waiting"])),
        ("active", text(&status["active"])),
        ("admittedTotal", text(&status["admittedTotal"])),
        ("brokers", text(&status["brokers"]["summary"])),
        (
            "paused",
            spec["paused"].as_bool().unwrap_or(false).to_string(),
        ),
        ("closesAt", text(&spec["closesAt"])),
        ("message", text(&spec["message"])),
        ("fairness", fairness(&status["fairness"])),
    ];
    rows.iter()
        .map(|(name, value)| format!("{:<15}{value}\n", format!("{name}:")))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn admit_takes_1_to_100000_only() {
        assert_eq!(admit_count("1"), Ok(1));
        assert_eq!(admit_count("100000"), Ok(100_000));
        for bad in [
            "0",
            "-3",
            "100001",
            "9999999999999999999999",
            "",
            "ten",
            "1.5",
        ] {
            assert!(admit_count(bad).is_err(), "{bad}");
        }
        assert_eq!(
            admit_count("0").unwrap_err(),
            "count must be from 1 to 100000, not 0"
        );
    }

    #[test]
    fn messages_are_at_most_500_characters() {
        assert!(message_text(&"a".repeat(500)).is_ok());
        assert!(
            message_text(&"é".repeat(500)).is_ok(),
            "characters, not bytes"
        );
        assert!(message_text("").is_ok());
        assert_eq!(
            message_text(&"a".repeat(501)).unwrap_err(),
            "message is 501 characters long; at most 500 are allowed"
        );
    }

    #[test]
    fn session_durations_follow_the_crd() {
        for good in ["15m", "90s", "1h30m", "500ms", "168h", "1ms"] {
            assert_eq!(session_duration(good), Ok(good), "{good}");
        }
        for bad in [
            "", "15", "m", "15 m", "1.5h", "15min", "-5m", "0s", "169h", "1d", "15M", "1h 30m",
        ] {
            assert!(session_duration(bad).is_err(), "{bad}");
        }
        assert!(session_duration(&"1s".repeat(17)).is_err(), "too long");
    }

    #[test]
    fn request_ids_use_the_allowed_characters() {
        let at = UNIX_EPOCH + Duration::from_millis(1_796_119_200_250);
        let suffix = random_suffix(6);
        assert_eq!(suffix.len(), 6);
        let id = request_id(at, &suffix);
        assert_eq!(id, format!("2026-12-01T10:00:00.250Z-{suffix}"));
        assert!(id.len() <= 64);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c)),
            "{id}"
        );
        assert_ne!(random_suffix(6), random_suffix(6));
    }

    #[test]
    fn close_now_is_a_whole_second_in_utc() {
        let at = UNIX_EPOCH + Duration::from_millis(1_796_119_200_250);
        assert_eq!(closes_at(at), "2026-12-01T10:00:00Z");
    }

    #[test]
    fn each_control_patches_one_spec_field() {
        assert_eq!(pause_patch(true), json!({"spec": {"paused": true}}));
        assert_eq!(pause_patch(false), json!({"spec": {"paused": false}}));
        assert_eq!(
            admit_patch(25, "id-1"),
            json!({"spec": {"admitNext": {"count": 25, "requestId": "id-1"}}})
        );
        assert_eq!(
            message_patch(Some("Back at 10")),
            json!({"spec": {"message": "Back at 10"}})
        );
        assert_eq!(message_patch(None), json!({"spec": {"message": null}}));
        assert_eq!(
            close_patch("2026-12-01T10:00:00Z"),
            json!({"spec": {"closesAt": "2026-12-01T10:00:00Z"}})
        );
        assert_eq!(
            session_duration_patch("10m"),
            json!({"spec": {"sessionDuration": "10m"}})
        );
    }

    #[test]
    fn status_reports_every_item() {
        let room = json!({
            "spec": {"paused": true, "message": "Hold on"},
            "status": {"phase": "Paused", "waiting": 1200, "active": 300,
                       "admittedTotal": 4500, "brokers": {"summary": "2/2"}}
        });
        assert_eq!(
            status_report(&room),
            "phase:         Paused\nwaiting:       1200\nactive:        300\n\
             admittedTotal: 4500\nbrokers:       2/2\npaused:        true\n\
             closesAt:      -\nmessage:       Hold on\nfairness:      -\n"
        );
        let sealed = json!({"status": {"fairness": {"commitment": "ab12"}}});
        assert!(status_report(&sealed).contains("fairness:      commitment ab12 (sealed)\n"));
        let opened =
            json!({"status": {"fairness": {"commitment": "ab12", "seed": "42", "salt": "cd"}}});
        assert!(
            status_report(&opened).contains("fairness:      commitment ab12, seed 42, salt cd\n")
        );
        let bare = status_report(&json!({"spec": {}}));
        assert!(bare.starts_with("phase:         -\n"), "{bare}");
        assert!(bare.contains("paused:        false\n"), "{bare}");
    }
}
