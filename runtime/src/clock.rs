//! Wall-clock time as the queue engine counts it.

use crate::queue::Millis;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// RFC 3339 (UTC) for a Unix-millisecond instant.
pub fn rfc3339(at: Millis) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Parses RFC 3339 (`2026-12-01T10:00:00Z`) into Unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Result<Millis, String> {
    let time = humantime::parse_rfc3339_weak(text).map_err(|e| {
        format!("{text:?} is not an RFC 3339 time such as 2026-12-01T10:00:00Z: {e}")
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
}
