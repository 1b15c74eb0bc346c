//! Wall-clock time as Unix milliseconds, the unit every stored timestamp uses.

use std::time::{SystemTime, UNIX_EPOCH};

mod period;

pub use period::Period;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

const DAY_MS: i64 = 86_400_000;

/// Reads a point in time: a span back from `now_ms` (`30d`, `12h`, `45m`), a UTC day
/// (`2026-11-01`), an RFC 3339 timestamp (`2026-11-01T12:00:00Z`) or Unix seconds.
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    parse(text, now_ms, Span::Back)
}

/// As `parse_time`, but a span counts forward: `30d` is 30 days from now. For deadlines
/// such as a key's expiry, where a span meaning the past would make a dead key.
pub fn parse_deadline(text: &str, now_ms: i64) -> Result<i64, String> {
    parse(text, now_ms, Span::Ahead)
}

#[derive(Clone, Copy)]
enum Span {
    Back,
    Ahead,
}

fn parse(text: &str, now_ms: i64, direction: Span) -> Result<i64, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "`{text}` is not a time: use a span like 30d / 12h / 45m, a day like 2026-11-01, \
             an RFC 3339 timestamp or Unix seconds"
        )
    };
    if let Some((number, unit_ms)) = [("d", DAY_MS), ("h", 3_600_000), ("m", 60_000)]
        .iter()
        .find_map(|(suffix, ms)| text.strip_suffix(suffix).map(|n| (n, *ms)))
    {
        let number: u32 = number.parse().map_err(|_| bad())?;
        return i64::from(number)
            .checked_mul(unit_ms)
            .and_then(|span| match direction {
                Span::Back => now_ms.checked_sub(span),
                Span::Ahead => now_ms.checked_add(span),
            })
            .ok_or_else(bad);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let seconds: i64 = text.parse().map_err(|_| bad())?;
        return seconds.checked_mul(1000).ok_or_else(bad);
    }
    if text.len() == 10 {
        return humantime::parse_rfc3339_weak(&format!("{text} 00:00:00"))
            .map_err(|_| bad())
            .and_then(|time| system_ms(time).ok_or_else(bad));
    }
    humantime::parse_rfc3339_weak(text)
        .map_err(|_| bad())
        .and_then(|time| system_ms(time).ok_or_else(bad))
}

fn system_ms(time: SystemTime) -> Option<i64> {
    i64::try_from(time.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

/// Unix milliseconds as an RFC 3339 UTC timestamp (`2026-11-24T20:25:29Z`).
pub fn format_ms(ms: i64) -> String {
    let seconds = u64::try_from(ms.div_euclid(1000)).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(seconds))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_accepted_spelling() {
        let now = 1_764_000_000_000;
        assert_eq!(parse_time("30d", now), Ok(now - 30 * DAY_MS));
        assert_eq!(parse_time("2h", now), Ok(now - 7_200_000));
        assert_eq!(parse_time("1970-01-02", now), Ok(DAY_MS));
        assert_eq!(parse_time("1970-01-01T00:01:00Z", now), Ok(60_000));
        assert_eq!(parse_time("86400", now), Ok(DAY_MS));
        for bad in ["", "yesterday", "2026-13-01", "-5d", "1e9"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
        assert_eq!(format_ms(DAY_MS + 1500), "1970-01-02T00:00:01Z");
    }

    #[test]
    fn deadlines_count_spans_forward_and_read_the_rest_as_parse_time_does() {
        let now = 1_764_000_000_000;
        assert_eq!(parse_deadline("30d", now), Ok(now + 30 * DAY_MS));
        assert_eq!(parse_deadline("45m", now), Ok(now + 2_700_000));
        assert_eq!(parse_deadline("1970-01-02", now), Ok(DAY_MS));
        assert_eq!(parse_deadline("86400", now), Ok(DAY_MS));
        assert!(parse_deadline("soon", now).is_err());
    }
}
