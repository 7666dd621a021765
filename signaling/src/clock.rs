//! The wall clock, read by the request shell and the sessions only, and its wire format
//! (WIRE.md §1.5).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openchat_core::UnixSeconds;

/// RFC 3339, UTC, second precision, `Z` suffix: `2026-02-14T18:44:11Z`.
pub fn rfc3339(at: UnixSeconds) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(at.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The current time in Unix seconds. Only the request shell calls this.
pub fn unix_now() -> UnixSeconds {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_second_precision_utc_with_z() {
        assert_eq!(rfc3339(1_771_094_651), "2026-02-14T18:44:11Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00Z");
    }
}
