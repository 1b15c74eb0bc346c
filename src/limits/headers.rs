//! The `x-ratelimit-*` headers, in OpenAI's formats: counts as integers, resets as
//! Go-style durations (`20ms`, `1s`, `1.5s`, `6m0s`, `23h47m36.648s`).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::Scope;
use super::local::{Bucket, ModelBuckets};

/// One per-minute limit as the headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub limit: u64,
    pub remaining: u64,
    /// Until the limit is wholly available again.
    pub reset: Duration,
}

impl Line {
    /// Of two lines, the one with less room left (on a tie, the later reset).
    fn tighter(self, other: Line) -> Line {
        if (other.remaining, std::cmp::Reverse(other.reset))
            < (self.remaining, std::cmp::Reverse(self.reset))
        {
            other
        } else {
            self
        }
    }

    fn of(bucket: &Bucket) -> Self {
        Self {
            limit: bucket.limit(),
            remaining: bucket.remaining(),
            reset: bucket.reset(),
        }
    }
}

/// A key's per-minute standing on one model; a kind without a limit sends no headers.
/// With totals across models, each line is the tightest of the model's, the key's and
/// the team's: the one the client must pace itself by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    pub requests: Option<Line>,
    pub tokens: Option<Line>,
}

impl Standing {
    pub(super) fn of(sets: &[(Scope, std::sync::Arc<ModelBuckets>)]) -> Self {
        let tightest = |lines: &mut dyn Iterator<Item = Line>| lines.reduce(Line::tighter);
        Self {
            requests: tightest(
                &mut sets
                    .iter()
                    .filter_map(|(_, s)| s.rpm.as_ref().map(Line::of)),
            ),
            tokens: tightest(
                &mut sets
                    .iter()
                    .filter_map(|(_, s)| s.tpm.as_ref().map(Line::of)),
            ),
        }
    }

    /// The standing from the shared backend's figures, one line per spec.
    pub(super) fn of_lines(specs: &[super::redis::Spec], lines: &[Line]) -> Self {
        let line = |kind| {
            specs
                .iter()
                .zip(lines)
                .filter(|(spec, _)| spec.kind == kind)
                .map(|(_, line)| *line)
                .reduce(Line::tighter)
        };
        Self {
            requests: line(super::Kind::Rpm),
            tokens: line(super::Kind::Tpm),
        }
    }

    /// Writes the six headers (three per limit present). On every limited response:
    /// static names and integer values, so nothing is formatted or parsed but the reset.
    pub fn apply(&self, headers: &mut HeaderMap) {
        // Constants: `from_static` called at run time validates its name every time.
        const REQUESTS: [HeaderName; 3] = [
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
        ];
        const TOKENS: [HeaderName; 3] = [
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ];
        for (names, line) in [(REQUESTS, self.requests), (TOKENS, self.tokens)] {
            let Some(line) = line else { continue };
            let [limit, remaining, reset] = names;
            headers.insert(limit, HeaderValue::from(line.limit));
            headers.insert(remaining, HeaderValue::from(line.remaining));
            if let Ok(value) = HeaderValue::try_from(go_duration(line.reset)) {
                headers.insert(reset, value);
            }
        }
    }
}

/// A duration as Go prints one, rounded up to the millisecond (a reset never reads
/// earlier than it is).
pub fn go_duration(duration: Duration) -> String {
    let ms = duration.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (hours, minutes) = (ms / 3_600_000, ms / 60_000 % 60);
    let (seconds, millis) = (ms / 1000 % 60, ms % 1000);
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    text.push_str(&seconds.to_string());
    if millis > 0 {
        let fraction = format!("{millis:03}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('s');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_prints_them() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ms"),
            (Duration::from_millis(17), "17ms"),
            (Duration::from_micros(19_400), "20ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(1200), "1.2s"),
            (Duration::from_secs(360), "6m0s"),
            (Duration::from_millis(150_500), "2m30.5s"),
            (Duration::from_millis(85_656_648), "23h47m36.648s"),
            (Duration::from_secs(3600), "1h0m0s"),
        ];
        for (duration, text) in cases {
            assert_eq!(go_duration(duration), text, "{duration:?}");
        }
    }

    #[test]
    fn a_standing_writes_six_headers() {
        let standing = Standing {
            requests: Some(Line {
                limit: 60,
                remaining: 59,
                reset: Duration::from_secs(1),
            }),
            tokens: Some(Line {
                limit: 150_000,
                remaining: 149_984,
                reset: Duration::from_millis(6),
            }),
        };
        let mut headers = HeaderMap::new();
        standing.apply(&mut headers);
        let read = |name: &str| headers[name].to_str().unwrap().to_owned();
        assert_eq!(read("x-ratelimit-limit-requests"), "60");
        assert_eq!(read("x-ratelimit-remaining-requests"), "59");
        assert_eq!(read("x-ratelimit-reset-requests"), "1s");
        assert_eq!(read("x-ratelimit-limit-tokens"), "150000");
        assert_eq!(read("x-ratelimit-remaining-tokens"), "149984");
        assert_eq!(read("x-ratelimit-reset-tokens"), "6ms");
        let mut none = HeaderMap::new();
        Standing::default().apply(&mut none);
        assert!(none.is_empty());
    }
}
