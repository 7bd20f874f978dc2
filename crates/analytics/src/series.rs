//! Input validation and alignment of dated series.
//!
//! A series comes in as `&[(Date, f64)]` (or as separate date and value vectors) and is
//! checked once, into a [`Returns`]: dates strictly increasing (so no duplicates), at
//! least one observation, and every value finite or NaN. NaN is a *missing* return:
//! metrics skip it in means and deviations, compound it as 0 and still count it in `n`
//! for annualisation (metrics.md). Infinite values are refused: they are never a return.
//!
//! Indexes in errors are 0-based positions in the input slice.

use crate::date::Date;

/// Why a series was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SeriesError {
    #[error("the series is empty")]
    Empty,
    #[error("an equity curve needs at least 2 points to make a return; it has {len}")]
    TooShort { len: usize },
    #[error("{dates} dates but {values} values")]
    LengthMismatch { dates: usize, values: usize },
    #[error(
        "dates are not sorted: index {index} ({date}) is earlier than index {} ({previous})",
        index - 1
    )]
    Unsorted {
        index: usize,
        previous: Date,
        date: Date,
    },
    #[error("duplicate date {date} at indexes {} and {index}", index - 1)]
    Duplicate { index: usize, date: Date },
    #[error(
        "the return at index {index} ({date}) is {value}; a return must be finite, or NaN when missing"
    )]
    NonFiniteReturn {
        index: usize,
        date: Date,
        value: f64,
    },
    #[error("the equity at index {index} ({date}) is {value}; equity must be finite")]
    NonFiniteEquity {
        index: usize,
        date: Date,
        value: f64,
    },
    #[error(
        "the equity at index {index} ({date}) is {value}; equity must be positive to make returns"
    )]
    NonPositiveEquity {
        index: usize,
        date: Date,
        value: f64,
    },
    #[error("the start date {start} is not before the first return's date {first}")]
    StartNotBefore { start: Date, first: Date },
}

/// Checks that `dates` strictly increase: the first offending index is reported, as
/// [`SeriesError::Duplicate`] or [`SeriesError::Unsorted`] with both dates.
pub fn check_dates(dates: impl IntoIterator<Item = Date>) -> Result<(), SeriesError> {
    let mut previous: Option<Date> = None;
    for (index, date) in dates.into_iter().enumerate() {
        if let Some(previous) = previous {
            if date == previous {
                return Err(SeriesError::Duplicate { index, date });
            }
            if date < previous {
                return Err(SeriesError::Unsorted {
                    index,
                    previous,
                    date,
                });
            }
        }
        previous = Some(date);
    }
    Ok(())
}

/// A validated series of simple period returns (0.01 = +1 %): non-empty, dates strictly
/// increasing, values finite or NaN (missing).
///
/// `start`, when known, is the date of the wealth anchor (1.0) *before* the first
/// return — an equity curve's first date, which [`equity_to_returns`] keeps. Drawdown
/// durations that begin at the anchor are measured from it; without it they are
/// measured from the first return's date.
#[derive(Clone, Debug, PartialEq)]
pub struct Returns {
    start: Option<Date>,
    dates: Vec<Date>,
    values: Vec<f64>,
}

impl Returns {
    /// Validates `(date, return)` points.
    pub fn new(points: &[(Date, f64)]) -> Result<Returns, SeriesError> {
        let dates: Vec<Date> = points.iter().map(|p| p.0).collect();
        let values: Vec<f64> = points.iter().map(|p| p.1).collect();
        Returns::from_parts(dates, values)
    }

    /// Validates separate date and value vectors of the same length.
    pub fn from_parts(dates: Vec<Date>, values: Vec<f64>) -> Result<Returns, SeriesError> {
        if dates.len() != values.len() {
            return Err(SeriesError::LengthMismatch {
                dates: dates.len(),
                values: values.len(),
            });
        }
        if dates.is_empty() {
            return Err(SeriesError::Empty);
        }
        check_dates(dates.iter().copied())?;
        if let Some(index) = values.iter().position(|v| v.is_infinite()) {
            return Err(SeriesError::NonFiniteReturn {
                index,
                date: dates[index],
                value: values[index],
            });
        }
        Ok(Returns {
            start: None,
            dates,
            values,
        })
    }

    /// Sets the anchor date (the wealth of 1.0 before the first return); it must be
    /// earlier than the first return's date.
    pub fn with_start(mut self, start: Date) -> Result<Returns, SeriesError> {
        if start >= self.dates[0] {
            return Err(SeriesError::StartNotBefore {
                start,
                first: self.dates[0],
            });
        }
        self.start = Some(start);
        Ok(self)
    }

    /// The anchor date, when known.
    pub fn start(&self) -> Option<Date> {
        self.start
    }

    /// The date the wealth curve starts from: `start`, else the first return's date.
    pub fn anchor_date(&self) -> Date {
        self.start.unwrap_or(self.dates[0])
    }

    pub fn dates(&self) -> &[Date] {
        &self.dates
    }

    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Number of observations, missing ones included (`n` for annualisation).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Always false: a `Returns` has at least one observation.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The first return's date.
    pub fn first_date(&self) -> Date {
        self.dates[0]
    }

    /// The last return's date.
    pub fn last_date(&self) -> Date {
        self.dates[self.dates.len() - 1]
    }

    /// Number of missing (NaN) observations.
    pub fn missing(&self) -> usize {
        self.values.iter().filter(|v| v.is_nan()).count()
    }
}

/// Turns an equity curve into simple returns: `r_i = e_i / e_(i-1) - 1` (pandas
/// `pct_change`). `n` points make `n - 1` returns, each dated at the later point; the
/// first point's date becomes the series' [`Returns::start`]. Equity must be finite and
/// positive, dates strictly increasing, and there must be at least two points.
pub fn equity_to_returns(equity: &[(Date, f64)]) -> Result<Returns, SeriesError> {
    if equity.is_empty() {
        return Err(SeriesError::Empty);
    }
    if equity.len() < 2 {
        return Err(SeriesError::TooShort { len: equity.len() });
    }
    check_dates(equity.iter().map(|p| p.0))?;
    for (index, &(date, value)) in equity.iter().enumerate() {
        if !value.is_finite() {
            return Err(SeriesError::NonFiniteEquity { index, date, value });
        }
        if value <= 0.0 {
            return Err(SeriesError::NonPositiveEquity { index, date, value });
        }
    }
    let dates = equity[1..].iter().map(|p| p.0).collect();
    let values = equity.windows(2).map(|w| w[1].1 / w[0].1 - 1.0).collect();
    Ok(Returns {
        start: Some(equity[0].0),
        dates,
        values,
    })
}

/// Two series on the dates both have (an inner join), in date order. NaNs are kept:
/// each metric drops the pairs where either side is missing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Aligned {
    pub dates: Vec<Date>,
    pub left: Vec<f64>,
    pub right: Vec<f64>,
}

impl Aligned {
    /// Number of common dates.
    pub fn len(&self) -> usize {
        self.dates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dates.is_empty()
    }
}

/// The inner join of two validated series by date (a merge: O(n + m)).
pub fn align(left: &Returns, right: &Returns) -> Aligned {
    let capacity = left.len().min(right.len());
    let mut out = Aligned {
        dates: Vec::with_capacity(capacity),
        left: Vec::with_capacity(capacity),
        right: Vec::with_capacity(capacity),
    };
    let (ld, rd) = (left.dates(), right.dates());
    let (mut i, mut j) = (0, 0);
    while i < ld.len() && j < rd.len() {
        match ld[i].cmp(&rd[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.dates.push(ld[i]);
                out.left.push(left.values()[i]);
                out.right.push(right.values()[j]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(day: i32) -> Date {
        Date::from_days(day)
    }

    #[test]
    fn accepts_a_valid_series_with_missing_values() {
        let r = Returns::new(&[(d(1), 0.01), (d(2), f64::NAN), (d(5), -0.02)]).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.missing(), 1);
        assert_eq!(r.first_date(), d(1));
        assert_eq!(r.last_date(), d(5));
        assert_eq!(r.start(), None);
        assert_eq!(r.anchor_date(), d(1));
    }

    #[test]
    fn refuses_empty() {
        assert_eq!(Returns::new(&[]), Err(SeriesError::Empty));
        assert_eq!(equity_to_returns(&[]), Err(SeriesError::Empty));
    }

    #[test]
    fn refuses_unsorted_dates_naming_both() {
        let err = Returns::new(&[(d(1), 0.0), (d(3), 0.0), (d(2), 0.0)]).unwrap_err();
        assert_eq!(
            err,
            SeriesError::Unsorted {
                index: 2,
                previous: d(3),
                date: d(2)
            }
        );
        assert_eq!(
            err.to_string(),
            "dates are not sorted: index 2 (1970-01-03) is earlier than index 1 (1970-01-04)"
        );
    }

    #[test]
    fn refuses_duplicate_dates() {
        let err = Returns::new(&[(d(1), 0.0), (d(2), 0.0), (d(2), 0.1)]).unwrap_err();
        assert_eq!(
            err,
            SeriesError::Duplicate {
                index: 2,
                date: d(2)
            }
        );
        assert_eq!(
            err.to_string(),
            "duplicate date 1970-01-03 at indexes 1 and 2"
        );
    }

    #[test]
    fn refuses_infinite_returns_but_not_nan() {
        let err = Returns::new(&[(d(1), 0.0), (d(2), f64::INFINITY)]).unwrap_err();
        assert!(matches!(
            err,
            SeriesError::NonFiniteReturn { index: 1, value, .. } if value == f64::INFINITY
        ));
        assert!(Returns::new(&[(d(1), f64::NAN)]).is_ok());
    }

    #[test]
    fn refuses_mismatched_parts() {
        assert_eq!(
            Returns::from_parts(vec![d(1)], vec![]),
            Err(SeriesError::LengthMismatch {
                dates: 1,
                values: 0
            })
        );
    }

    #[test]
    fn start_must_precede_the_first_date() {
        let r = Returns::new(&[(d(5), 0.0)]).unwrap();
        assert!(r.clone().with_start(d(5)).is_err());
        assert_eq!(r.with_start(d(4)).unwrap().anchor_date(), d(4));
    }

    #[test]
    fn equity_to_returns_dates_each_return_at_the_later_point() {
        // Python: pd.Series([100.0, 110.0, 99.0, 99.0]).pct_change().tolist()[1:]
        //   -> [0.10000000000000009, -0.09999999999999998, 0.0]
        let r =
            equity_to_returns(&[(d(0), 100.0), (d(1), 110.0), (d(3), 99.0), (d(4), 99.0)]).unwrap();
        assert_eq!(r.dates(), &[d(1), d(3), d(4)]);
        assert_eq!(
            r.values(),
            &[0.10000000000000009, -0.09999999999999998, 0.0]
        );
        assert_eq!(r.start(), Some(d(0)));
    }

    #[test]
    fn equity_must_be_positive_finite_and_long_enough() {
        assert_eq!(
            equity_to_returns(&[(d(0), 1.0)]),
            Err(SeriesError::TooShort { len: 1 })
        );
        assert!(matches!(
            equity_to_returns(&[(d(0), 1.0), (d(1), 0.0)]),
            Err(SeriesError::NonPositiveEquity { index: 1, .. })
        ));
        assert!(matches!(
            equity_to_returns(&[(d(0), -1.0), (d(1), 1.0)]),
            Err(SeriesError::NonPositiveEquity { index: 0, .. })
        ));
        assert!(matches!(
            equity_to_returns(&[(d(0), 1.0), (d(1), f64::NAN)]),
            Err(SeriesError::NonFiniteEquity { index: 1, .. })
        ));
        assert!(matches!(
            equity_to_returns(&[(d(1), 1.0), (d(0), 2.0)]),
            Err(SeriesError::Unsorted { index: 1, .. })
        ));
        assert!(matches!(
            equity_to_returns(&[(d(1), 1.0), (d(1), 2.0)]),
            Err(SeriesError::Duplicate { index: 1, .. })
        ));
    }

    #[test]
    fn align_is_an_inner_join() {
        let a = Returns::new(&[(d(1), 0.1), (d(2), 0.2), (d(4), f64::NAN), (d(6), 0.6)]).unwrap();
        let b = Returns::new(&[(d(0), 1.0), (d(2), 2.0), (d(4), 4.0), (d(5), 5.0)]).unwrap();
        let j = align(&a, &b);
        assert_eq!(j.dates, vec![d(2), d(4)]);
        assert_eq!(j.left[0], 0.2);
        assert!(j.left[1].is_nan());
        assert_eq!(j.right, vec![2.0, 4.0]);

        let c = Returns::new(&[(d(10), 0.1)]).unwrap();
        assert!(align(&a, &c).is_empty());
    }
}
