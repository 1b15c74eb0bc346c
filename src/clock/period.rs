//! Calendar periods (a budget's, a spend window's): UTC calendar days, ISO weeks (from Monday), calendar months, or all
//! time. Pure arithmetic on Unix milliseconds.

use serde::{Deserialize, Serialize};

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
    Total,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
            Self::Total => "total",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "daily" => Some(Self::Daily),
            "weekly" => Some(Self::Weekly),
            "monthly" => Some(Self::Monthly),
            "total" => Some(Self::Total),
            _ => None,
        }
    }

    /// The start of the period holding `ts_ms`, in Unix milliseconds (UTC).
    pub fn start(self, ts_ms: i64) -> i64 {
        let day = ts_ms.div_euclid(DAY_MS);
        match self {
            Self::Daily => day * DAY_MS,
            // 1970-01-01 was a Thursday: shift so weeks start on Monday.
            Self::Weekly => (day - (day + 3).rem_euclid(7)) * DAY_MS,
            Self::Monthly => {
                let (year, month, _) = civil_from_days(day);
                days_from_civil(year, month, 1) * DAY_MS
            }
            Self::Total => 0,
        }
    }

    /// The start of the next period, when the budget resets (`None` for `total`).
    pub fn end(self, ts_ms: i64) -> Option<i64> {
        let start = self.start(ts_ms);
        match self {
            Self::Daily => Some(start + DAY_MS),
            Self::Weekly => Some(start + 7 * DAY_MS),
            Self::Monthly => {
                let (year, month, _) = civil_from_days(start / DAY_MS);
                let (year, month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                Some(days_from_civil(year, month, 1) * DAY_MS)
            }
            Self::Total => None,
        }
    }
}

// Howard Hinnant's proleptic Gregorian conversions (public domain algorithms).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(year: i64, month: u32, day: u32, hour: i64) -> i64 {
        days_from_civil(year, month, day) * DAY_MS + hour * 3_600_000
    }

    #[test]
    fn calendar_round_trips() {
        for days in [-800_000, -1, 0, 1, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn periods_start_at_utc_calendar_boundaries() {
        let t = ms(2026, 11, 24, 20); // a Tuesday evening
        assert_eq!(Period::Daily.start(t), ms(2026, 11, 24, 0));
        assert_eq!(Period::Weekly.start(t), ms(2026, 11, 23, 0), "Monday");
        assert_eq!(Period::Monthly.start(t), ms(2026, 11, 1, 0));
        assert_eq!(Period::Total.start(t), 0);
        assert_eq!(Period::Daily.end(t), Some(ms(2026, 11, 25, 0)));
        assert_eq!(Period::Weekly.end(t), Some(ms(2026, 11, 30, 0)));
        assert_eq!(Period::Monthly.end(t), Some(ms(2026, 12, 1, 0)));
        assert_eq!(
            Period::Monthly.end(ms(2026, 12, 31, 23)),
            Some(ms(2027, 1, 1, 0))
        );
        assert_eq!(Period::Total.end(t), None);
        // A Monday is its own week's start; Sunday belongs to the week before.
        assert_eq!(
            Period::Weekly.start(ms(2026, 11, 23, 0)),
            ms(2026, 11, 23, 0)
        );
        assert_eq!(
            Period::Weekly.start(ms(2026, 11, 29, 23)),
            ms(2026, 11, 23, 0)
        );
        // Before 1970 too.
        assert_eq!(Period::Monthly.start(ms(1969, 7, 20, 3)), ms(1969, 7, 1, 0));
    }

    #[test]
    fn names_round_trip() {
        for period in [
            Period::Daily,
            Period::Weekly,
            Period::Monthly,
            Period::Total,
        ] {
            assert_eq!(Period::parse(period.as_str()), Some(period));
        }
        assert_eq!(Period::parse("yearly"), None);
    }
}
