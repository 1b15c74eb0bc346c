//! What an upstream's answer says about its limits: `retry-after` on a refusal, and
//! the organisation's standing in `x-ratelimit-*` on every answer (OpenAI's names and
//! formats: counts as integers, resets as Go durations such as `6m0s` or `20ms`).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, header};

const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

/// The two kinds of limit an upstream reports: index 0 requests, 1 tokens.
pub const REQUESTS: usize = 0;
pub const TOKENS: usize = 1;
pub const KINDS: [&str; 2] = ["requests", "tokens"];

/// One answer's report of the organisation's limits on a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    pub remaining: [Option<u64>; 2],
    pub limit: [Option<u64>; 2],
    /// Until that limit is wholly available again.
    pub reset: [Option<Duration>; 2],
}

/// The report in `headers`, or `None` when the answer carries no remaining count.
pub fn reported(headers: &HeaderMap) -> Option<Reported> {
    let remaining = [
        number(headers, &REMAINING_REQUESTS),
        number(headers, &REMAINING_TOKENS),
    ];
    if remaining == [None, None] {
        return None;
    }
    Some(Reported {
        remaining,
        limit: [
            number(headers, &LIMIT_REQUESTS),
            number(headers, &LIMIT_TOKENS),
        ],
        reset: [
            text(headers, &RESET_REQUESTS).and_then(go_duration),
            text(headers, &RESET_TOKENS).and_then(go_duration),
        ],
    })
}

/// How long the upstream asked to be left alone: `retry-after-ms`, else `retry-after`
/// in seconds (fractions allowed). An HTTP date is not honoured: clocks differ, and
/// the providers tollgate fronts send seconds.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = text(headers, &RETRY_AFTER_MS).and_then(|t| t.trim().parse::<f64>().ok()) {
        return seconds(ms / 1000.0);
    }
    let secs = text(headers, &header::RETRY_AFTER)?
        .trim()
        .parse::<f64>()
        .ok()?;
    seconds(secs)
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

fn text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn number(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    text(headers, name).and_then(|text| text.trim().parse().ok())
}

/// A Go duration: `1h2m3.5s`, `20ms`, `6m0s`, `1.5s`, `750us` (also `µs`, `ns`), or a
/// bare number of seconds.
pub fn go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(secs) = text.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0.0_f64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn go_durations_parse_as_openai_writes_them() {
        let ms = |text| go_duration(text).map(|d| d.as_millis());
        assert_eq!(ms("20ms"), Some(20));
        assert_eq!(ms("1s"), Some(1000));
        assert_eq!(ms("1.5s"), Some(1500));
        assert_eq!(ms("6m0s"), Some(360_000));
        assert_eq!(ms("23h47m36.648s"), Some(85_656_648));
        assert_eq!(ms("750us"), Some(0));
        assert_eq!(ms("2"), Some(2000));
        for bad in ["", "s", "1x", "ms", "-1s", "1h-2m"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_report_reads_remaining_limits_and_resets() {
        let mut headers = HeaderMap::new();
        assert_eq!(reported(&headers), None);
        for (name, value) in [
            ("x-ratelimit-remaining-requests", "499"),
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-reset-requests", "120ms"),
            ("x-ratelimit-remaining-tokens", "1200"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        let report = reported(&headers).unwrap();
        assert_eq!(report.remaining, [Some(499), Some(1200)]);
        assert_eq!(report.limit, [Some(500), None]);
        assert_eq!(
            report.reset,
            [
                Some(Duration::from_millis(120)),
                Some(Duration::from_secs(360))
            ]
        );
    }

    #[test]
    fn retry_after_prefers_milliseconds_and_ignores_dates() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("20"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(20)));
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        let mut dated = HeaderMap::new();
        dated.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&dated), None);
        dated.insert("retry-after", HeaderValue::from_static("0"));
        assert_eq!(retry_after(&dated), None);
    }
}
