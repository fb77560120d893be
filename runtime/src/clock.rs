//! Wall-clock time as the queue engine counts it.

use crate::queue::Millis;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// The last instant RFC 3339 can write (four-digit years):
/// 9999-12-31T23:59:59Z, in Unix milliseconds.
const LAST_WRITABLE_MS: Millis = 253_402_300_799_000;

/// RFC 3339 (UTC) for a Unix-millisecond instant. Instants outside 1970 to
/// 9999 are clamped to those years: a formatting helper never panics.
pub fn rfc3339(at: Millis) -> String {
    let ms = at.clamp(0, LAST_WRITABLE_MS).unsigned_abs();
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Parses RFC 3339 in UTC (`2026-12-01T10:00:00Z`) into Unix milliseconds;
/// the years 1970 to 9999.
pub fn parse_rfc3339(text: &str) -> Result<Millis, String> {
    let time = humantime::parse_rfc3339_weak(text).map_err(|e| match e {
        humantime::TimestampError::OutOfRange => {
            format!("{text:?} is not a valid instant from 1970 to 9999")
        }
        _ => format!("{text:?} is not an RFC 3339 time in UTC such as 2026-12-01T10:00:00Z: {e}"),
    })?;
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{text:?} is before 1970"))?;
    Ok(since.as_millis() as Millis)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let at = parse_rfc3339("2026-12-01T10:00:00Z").unwrap();
        assert_eq!(at, 1_796_119_200_000);
        assert_eq!(rfc3339(at), "2026-12-01T10:00:00Z");
        assert!(parse_rfc3339("tomorrow").is_err());
    }

    #[test]
    fn formatting_never_panics_and_clamps_to_what_rfc3339_can_write() {
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1970-01-01T00:00:00Z");
        let last = parse_rfc3339("9999-12-31T23:59:59Z").unwrap();
        assert_eq!(rfc3339(last), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(last + 1_000), "9999-12-31T23:59:59Z");
        // Five-digit and pre-1970 years are refused with a reason.
        assert!(parse_rfc3339("10000-01-01T00:00:00Z").is_err());
        assert!(
            parse_rfc3339("1969-12-31T23:59:59Z")
                .unwrap_err()
                .contains("1970")
        );
    }
}
