//! `[reconcile]`: comparing the ledger with OpenAI's own usage and cost export, on
//! demand (`tollgate reconcile`, `GET /admin/reconcile`) and, with a `schedule`, daily
//! in the background.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::{Problems, UpstreamConfig};

/// The host of OpenAI's API: upstreams there are on OpenAI's bill.
pub const OPENAI_HOST: &str = "api.openai.com";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileConfig {
    /// A daily run at this UTC time (`HH:MM`), in the background of `serve`. Unset: no
    /// background run.
    pub schedule: Option<String>,
    /// Complete UTC days before today that a scheduled run compares (1: yesterday).
    pub days: u32,
    /// The environment variable holding the OpenAI organization admin key. Never a
    /// project key: the usage and costs endpoints refuse those.
    pub admin_key_env: String,
    /// OpenAI's API, where `/organization/usage/*` and `/organization/costs` live.
    pub base_url: String,
    /// How far apart the two sides may be, per figure and line, in percent.
    pub tolerance_percent: Tolerance,
    /// The upstreams (by name, as the ledger records them) whose requests OpenAI bills
    /// to this organization. Empty: every upstream whose base URL is api.openai.com.
    pub upstreams: Vec<String>,
    /// The longest one request to OpenAI may take, its answer included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of a request answered 429 or 5xx, or cut off; the wait doubles from
    /// `retry_backoff` (at most 8 s, or the `retry-after` OpenAI asks for up to 60 s).
    pub retries: u32,
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Pages read from one endpoint before giving up: a range of a year is 12 pages
    /// of usage and 3 of costs, so an export that keeps saying `has_more` is broken.
    pub max_pages: u32,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            schedule: None,
            days: 1,
            admin_key_env: "OPENAI_ADMIN_KEY".to_owned(),
            base_url: "https://api.openai.com/v1".to_owned(),
            tolerance_percent: Tolerance::DEFAULT,
            upstreams: Vec::new(),
            timeout: Duration::from_secs(30),
            retries: 3,
            retry_backoff: Duration::from_millis(500),
            max_pages: 50,
        }
    }
}

impl ReconcileConfig {
    pub(super) fn validate(&self, upstreams: &[UpstreamConfig], problems: &mut Problems) {
        if let Some(schedule) = &self.schedule {
            if daily_time(schedule).is_none() {
                problems.push(
                    "reconcile.schedule",
                    format!("`{schedule}` is not a UTC time of day like \"06:00\""),
                );
            }
        }
        if !(1..=31).contains(&self.days) {
            problems.push("reconcile.days", "must be from 1 to 31");
        }
        if self.admin_key_env.trim().is_empty() {
            problems.push(
                "reconcile.admin_key_env",
                "must name an environment variable",
            );
        }
        match url::Url::parse(&self.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => problems.push(
                "reconcile.base_url",
                format!("`{}` is not an http(s) URL", self.base_url),
            ),
        }
        for (i, name) in self.upstreams.iter().enumerate() {
            if !upstreams.iter().any(|upstream| &upstream.name == name) {
                problems.push(
                    format!("reconcile.upstreams[{i}]"),
                    format!("no upstream is named `{name}`"),
                );
            }
        }
        if self.timeout.is_zero() {
            problems.push("reconcile.timeout", "must be greater than 0");
        }
        if self.retries > 10 {
            problems.push("reconcile.retries", "must be at most 10");
        }
        if self.max_pages == 0 {
            problems.push("reconcile.max_pages", "must be greater than 0");
        }
    }

    /// The schedule as minutes after midnight UTC.
    pub fn schedule_minutes(&self) -> Option<u32> {
        self.schedule.as_deref().and_then(daily_time)
    }

    /// The ledger upstreams on OpenAI's bill: those named, else those at api.openai.com.
    pub fn billed_upstreams(&self, upstreams: &[UpstreamConfig]) -> Vec<String> {
        if !self.upstreams.is_empty() {
            return self.upstreams.clone();
        }
        upstreams
            .iter()
            .filter(|upstream| {
                url::Url::parse(&upstream.base_url)
                    .is_ok_and(|url| url.host_str() == Some(OPENAI_HOST))
            })
            .map(|upstream| upstream.name.clone())
            .collect()
    }
}

/// `HH:MM` (24-hour) as minutes after midnight.
fn daily_time(text: &str) -> Option<u32> {
    let (hours, minutes) = text.split_once(':')?;
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(hours) || !two_digits(minutes) {
        return None;
    }
    let (hours, minutes): (u32, u32) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}

/// A tolerance in percent, exact: `0.5` is 5,000 parts per million of the figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tolerance {
    ppm: u64,
}

impl Tolerance {
    pub const DEFAULT: Self = Self { ppm: 5_000 };
    /// Decimal places of a percentage it keeps.
    const PLACES: u32 = 4;

    pub const fn from_ppm(ppm: u64) -> Self {
        Self { ppm }
    }

    pub const fn ppm(self) -> u64 {
        self.ppm
    }

    /// A percentage from 0 to 100 with at most 4 decimal places (`0.5`, `2`, `0.0125`).
    pub fn parse_percent(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a percentage from 0 to 100 (like 0.5)");
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits(whole)
            || !digits(fraction)
            || (text.contains('.') && fraction.is_empty())
        {
            return Err(bad());
        }
        if fraction.len() > Self::PLACES as usize {
            return Err(format!("`{text}` has more than 4 decimal places"));
        }
        let whole: u64 = whole.parse().map_err(|_| bad())?;
        let padded = format!("{fraction:0<4}");
        let fraction: u64 = padded.parse().map_err(|_| bad())?;
        let ppm = whole
            .checked_mul(10_000)
            .and_then(|w| w.checked_add(fraction))
            .filter(|&ppm| ppm <= 1_000_000)
            .ok_or_else(bad)?;
        Ok(Self { ppm })
    }

    /// The fraction of one, for a gauge (`0.005`).
    pub fn ratio(self) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "at most 10⁶: exact in an f64")]
        let ppm = self.ppm as f64;
        ppm / 1_000_000.0
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, fraction) = (self.ppm / 10_000, self.ppm % 10_000);
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{fraction:04}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl Serialize for Tolerance {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

// The config reader hands floats over as their text (`exact_toml`), so `0.5` arrives
// as "0.5" and never passes through an f64.
impl<'de> Deserialize<'de> for Tolerance {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Percent;
        impl Visitor<'_> for Percent {
            type Value = Tolerance;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage such as 0.5")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Tolerance, E> {
                Tolerance::parse_percent(text).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Tolerance, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Tolerance, E> {
                self.visit_str(&n.to_string())
            }
        }
        deserializer.deserialize_any(Percent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn tolerances_parse_exactly() {
        for (text, ppm) in [
            ("0.5", 5_000),
            ("2", 20_000),
            ("0.0125", 125),
            ("100", 1_000_000),
        ] {
            let tolerance = Tolerance::parse_percent(text).unwrap();
            assert_eq!(tolerance.ppm(), ppm, "{text}");
            assert_eq!(tolerance.to_string(), text);
        }
        for bad in [
            "", "-1", "0.5%", "1e-3", ".5", "5.", "100.01", "0.00001", "half",
        ] {
            assert!(Tolerance::parse_percent(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_section_parses_and_bad_fields_are_named() {
        let config = Config::from_toml(
            "[reconcile]\nschedule = \"06:30\"\ntolerance_percent = 0.25\n\
             upstreams = [\"openai\"]\n",
            "t.toml",
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.reconcile.schedule_minutes(), Some(390));
        assert_eq!(config.reconcile.tolerance_percent.ppm(), 2_500);
        let config = Config::from_toml(
            "[reconcile]\nschedule = \"6am\"\ndays = 0\nadmin_key_env = \"\"\n\
             base_url = \"ftp://x\"\nupstreams = [\"nope\"]\ntimeout = \"0s\"\n\
             retries = 11\nmax_pages = 0\n",
            "t.toml",
        )
        .unwrap();
        let problems = config.validate().unwrap_err();
        let paths: Vec<&str> = problems.paths().collect();
        assert_eq!(
            paths,
            [
                "reconcile.schedule",
                "reconcile.days",
                "reconcile.admin_key_env",
                "reconcile.base_url",
                "reconcile.upstreams[0]",
                "reconcile.timeout",
                "reconcile.retries",
                "reconcile.max_pages",
            ]
        );
        let error = Config::from_toml("[reconcile]\ntolerance_percent = 0.00001\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("reconcile.tolerance_percent"), "{error}");
        let error = Config::from_toml("[reconcile]\nevery = \"1d\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("every"), "{error}");
    }

    #[test]
    fn upstreams_at_openai_are_on_the_bill_by_default() {
        let mut local = UpstreamConfig::openai();
        local.name = "vllm".to_owned();
        local.base_url = "http://10.0.0.5:8000/v1".to_owned();
        let upstreams = [UpstreamConfig::openai(), local];
        let config = ReconcileConfig::default();
        assert_eq!(config.billed_upstreams(&upstreams), ["openai"]);
        let named = ReconcileConfig {
            upstreams: vec!["vllm".to_owned()],
            ..ReconcileConfig::default()
        };
        assert_eq!(named.billed_upstreams(&upstreams), ["vllm"]);
        for (text, minutes) in [("00:00", Some(0)), ("23:59", Some(1439)), ("24:00", None)] {
            assert_eq!(daily_time(text), minutes, "{text}");
        }
        assert_eq!(daily_time("6:00"), None);
    }
}
