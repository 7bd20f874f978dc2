//! A calendar date as a day number, without a date library.
//!
//! [`Date`] counts days since 1970-01-01 in the proleptic Gregorian calendar (negative
//! before it). The conversions are Howard Hinnant's `days_from_civil` /
//! `civil_from_days`, exact for every `i32` day number whose year fits an `i32`.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A calendar date: days since 1970-01-01 (the Unix epoch's day). Ordered, `Copy`,
/// four bytes. Serialises as `"YYYY-MM-DD"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(i32);

const SECONDS_PER_DAY: i64 = 86_400;

/// Why a text or a year/month/day triple is not a date.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("{0:?} is not a date (expected YYYY-MM-DD)")]
    Syntax(String),
    #[error("{year:04}-{month:02}-{day:02} is not a calendar date")]
    Invalid { year: i32, month: u32, day: u32 },
    #[error("the day number is out of range")]
    OutOfRange,
}

/// Whether `year` is a Gregorian leap year.
pub fn is_leap_year(year: i32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days in `month` (1–12) of `year`; 0 for a month outside 1–12.
pub fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a (valid) civil date (Hinnant's `days_from_civil`).
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Date {
    /// 1970-01-01.
    pub const EPOCH: Date = Date(0);

    /// The date `days` days after 1970-01-01 (before it when negative).
    pub const fn from_days(days: i32) -> Date {
        Date(days)
    }

    /// Days since 1970-01-01.
    pub const fn days(self) -> i32 {
        self.0
    }

    /// The date of a calendar day, or why it is not one.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Result<Date, DateError> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return Err(DateError::Invalid { year, month, day });
        }
        i32::try_from(days_from_civil(year, month, day))
            .map(Date)
            .map_err(|_| DateError::OutOfRange)
    }

    /// The UTC date of a Unix time in seconds (floored: -1 s is 1969-12-31).
    pub fn from_unix_seconds(seconds: i64) -> Result<Date, DateError> {
        i32::try_from(seconds.div_euclid(SECONDS_PER_DAY))
            .map(Date)
            .map_err(|_| DateError::OutOfRange)
    }

    /// The UTC date of a Unix time in milliseconds (floored).
    pub fn from_unix_millis(millis: i64) -> Result<Date, DateError> {
        Date::from_unix_seconds(millis.div_euclid(1000))
    }

    /// Unix seconds at 00:00 UTC of this date.
    pub fn unix_seconds(self) -> i64 {
        i64::from(self.0) * SECONDS_PER_DAY
    }

    /// (year, month 1–12, day 1–31).
    pub fn ymd(self) -> (i32, u32, u32) {
        let (y, m, d) = civil_from_days(i64::from(self.0));
        // An i32 day number is about ±5.8 million years: the year always fits.
        (y as i32, m, d)
    }

    /// Calendar days from `earlier` to `self` (negative if `earlier` is later).
    pub fn days_since(self, earlier: Date) -> i64 {
        i64::from(self.0) - i64::from(earlier.0)
    }

    /// The date `days` days later (earlier when negative); `None` on overflow.
    pub fn checked_add_days(self, days: i32) -> Option<Date> {
        self.0.checked_add(days).map(Date)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        if (0..=9999).contains(&y) {
            write!(f, "{y:04}-{m:02}-{d:02}")
        } else {
            // ISO 8601 expanded years carry a sign.
            write!(f, "{y:+05}-{m:02}-{d:02}")
        }
    }
}

impl FromStr for Date {
    type Err = DateError;

    /// Parses `YYYY-MM-DD` (four-digit year, two-digit month and day).
    fn from_str(s: &str) -> Result<Date, DateError> {
        let syntax = || DateError::Syntax(s.to_owned());
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(syntax());
        }
        let digits = |range: std::ops::Range<usize>| -> Result<u32, DateError> {
            let part = &b[range];
            if !part.iter().all(u8::is_ascii_digit) {
                return Err(syntax());
            }
            Ok(part.iter().fold(0, |acc, c| acc * 10 + u32::from(c - b'0')))
        };
        let year = digits(0..4)? as i32;
        let month = digits(5..7)?;
        let day = digits(8..10)?;
        Date::from_ymd(year, month, day)
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected day numbers from Python:
    //   date(y, m, d).toordinal() - date(1970, 1, 1).toordinal()
    #[test]
    fn known_day_numbers() {
        let cases = [
            ((1970, 1, 1), 0),
            ((1969, 12, 31), -1),
            ((2000, 2, 29), 11_016),
            ((2000, 3, 1), 11_017),
            ((1900, 3, 1), -25_508),
            ((2024, 12, 31), 20_088),
            ((1, 1, 1), -719_162),
            ((9999, 12, 31), 2_932_896),
        ];
        for ((y, m, d), days) in cases {
            let date = Date::from_ymd(y, m, d).unwrap();
            assert_eq!(date.days(), days, "{y}-{m}-{d}");
            assert_eq!(date.ymd(), (y, m, d));
        }
    }

    #[test]
    fn round_trips_every_day_of_four_centuries() {
        // 1600-01-01 .. 2400-12-31 covers both century rules twice.
        let first = Date::from_ymd(1600, 1, 1).unwrap().days();
        let last = Date::from_ymd(2400, 12, 31).unwrap().days();
        let mut expected = (1600, 1, 1);
        for n in first..=last {
            let date = Date::from_days(n);
            assert_eq!(date.ymd(), expected);
            assert_eq!(Date::from_ymd(expected.0, expected.1, expected.2), Ok(date));
            // Next civil date.
            let (y, m, d) = expected;
            expected = if d < days_in_month(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn rejects_invalid_dates() {
        assert!(Date::from_ymd(2023, 2, 29).is_err());
        assert!(Date::from_ymd(1900, 2, 29).is_err());
        assert!(Date::from_ymd(2024, 13, 1).is_err());
        assert!(Date::from_ymd(2024, 4, 31).is_err());
        assert!(Date::from_ymd(2024, 1, 0).is_err());
        assert!(Date::from_ymd(2000, 2, 29).is_ok());
    }

    #[test]
    fn parses_and_displays() {
        let d: Date = "2024-02-29".parse().unwrap();
        assert_eq!(d.to_string(), "2024-02-29");
        assert_eq!(d.ymd(), (2024, 2, 29));
        assert!("2024-2-29".parse::<Date>().is_err());
        assert!("2024-02-30".parse::<Date>().is_err());
        assert!("2024/02/28".parse::<Date>().is_err());
        assert!("+024-02-28".parse::<Date>().is_err());
        assert_eq!(Date::from_days(-719_163).to_string(), "0000-12-31");
        assert_eq!(
            Date::from_ymd(10_000, 1, 1).unwrap().to_string(),
            "+10000-01-01"
        );
        assert_eq!(Date::from_ymd(-1, 3, 1).unwrap().to_string(), "-0001-03-01");
    }

    #[test]
    fn unix_times_floor_to_the_utc_day() {
        assert_eq!(Date::from_unix_seconds(0), Ok(Date::EPOCH));
        assert_eq!(Date::from_unix_seconds(86_399), Ok(Date::EPOCH));
        assert_eq!(Date::from_unix_seconds(-1), Ok(Date::from_days(-1)));
        // Python: datetime.fromtimestamp(1700000000, timezone.utc).date() == date(2023, 11, 14)
        assert_eq!(
            Date::from_unix_seconds(1_700_000_000),
            Date::from_ymd(2023, 11, 14)
        );
        assert_eq!(
            Date::from_unix_millis(1_700_000_000_123),
            Date::from_ymd(2023, 11, 14)
        );
        assert_eq!(
            Date::from_ymd(2023, 11, 14).unwrap().unix_seconds(),
            1_699_920_000
        );
        assert!(Date::from_unix_seconds(i64::MAX).is_err());
    }
}
