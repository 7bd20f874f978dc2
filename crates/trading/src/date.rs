//! Calendar dates of daily data: days since 1970-01-01, parsed from the forms price and
//! return files use (`2012-05-18`, `5/18/2012`, an RFC 3339 time's date part).

use std::fmt;

use quantbox_sandbox::time::{civil_from_days, days_from_civil};
use serde::{Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i32);

const MS_PER_DAY: i64 = 86_400_000;

impl Day {
    pub fn from_ymd(y: i64, m: i64, d: i64) -> Option<Self> {
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1..=9999).contains(&y) {
            return None;
        }
        let days = days_from_civil(y, m, d);
        // 2023-02-30 would silently become March 2nd: refuse it.
        (civil_from_days(days) == (y, m, d)).then_some(Self(days as i32))
    }

    /// `YYYY-MM-DD` (also with a time after it: `T…` or a space), or `M/D/YYYY`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Some((m, rest)) = s.split_once('/') {
            let (d, y) = rest.split_once('/')?;
            return Self::from_ymd(num(y, 4)?, num(m, 2)?, num(d, 2)?);
        }
        let date = s.get(..10)?;
        if s.len() > 10 && !matches!(s.as_bytes()[10], b'T' | b't' | b' ') {
            return None;
        }
        let mut parts = date.split('-');
        let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return None;
        }
        Self::from_ymd(num(y, 4)?, num(m, 2)?, num(d, 2)?)
    }

    pub fn from_ms(t_ms: i64) -> Self {
        Self(t_ms.div_euclid(MS_PER_DAY) as i32)
    }

    /// 00:00 UTC of the day.
    pub fn start_ms(self) -> i64 {
        i64::from(self.0) * MS_PER_DAY
    }

    pub fn ymd(self) -> (i64, i64, i64) {
        civil_from_days(i64::from(self.0))
    }
}

fn num(s: &str, max_len: usize) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl Serialize for Day {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_data_files_use() {
        let d = Day::parse("2012-05-18").unwrap();
        assert_eq!(d.to_string(), "2012-05-18");
        assert_eq!(Day::parse("5/18/2012"), Some(d));
        assert_eq!(Day::parse("05/18/2012"), Some(d));
        assert_eq!(Day::parse("2012-05-18T16:00:00Z"), Some(d));
        assert_eq!(Day::parse("2012-05-18 16:00:00"), Some(d));
        assert_eq!(Day::parse(" 2012-05-18 "), Some(d));
        assert_eq!(Day::parse("1970-01-01"), Some(Day(0)));
        assert_eq!(Day::from_ms(d.start_ms() + 86_399_999), d);
        assert_eq!(Day::from_ms(-1), Day(-1));
    }

    #[test]
    fn refuses_what_is_not_a_date() {
        for bad in [
            "",
            "2012-02-30",
            "2012-13-01",
            "2012-5-18",
            "18.05.2012",
            "2012/05/18",
            "2012-05-18x",
            "13/1/2012",
            "1/1/12345",
            "abcd-ef-gh",
            "2012-05",
            "+012-05-18",
        ] {
            assert_eq!(Day::parse(bad), None, "{bad}");
        }
        assert!(Day::parse("2012-02-29").is_some());
        assert!(Day::parse("2013-02-29").is_none());
    }
}
