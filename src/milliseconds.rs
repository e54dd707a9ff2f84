//! Unix milliseconds: how times and durations cross into Redis scripts and outbox entries.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

/// A time as decimal Unix milliseconds.
pub fn text(time: DateTime<Utc>) -> String {
    time.timestamp_millis().to_string()
}

/// An optional time as decimal Unix milliseconds; empty for none, as the scripts expect.
pub fn optional_text(time: Option<DateTime<Utc>>) -> String {
    time.map(text).unwrap_or_default()
}

/// Milliseconds since the Unix epoch as a UTC time.
pub fn to_time(milliseconds: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(milliseconds).single().unwrap_or_default()
}

/// A duration in whole milliseconds, saturating.
pub fn of_duration(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_none_is_empty() {
        let time = to_time(1_700_000_000_123);
        assert_eq!(text(time), "1700000000123");
        assert_eq!(optional_text(Some(time)), "1700000000123");
        assert_eq!(optional_text(None), "");
        assert_eq!(of_duration(Duration::from_secs(2)), 2000);
        assert_eq!(of_duration(Duration::MAX), u64::MAX);
    }
}
