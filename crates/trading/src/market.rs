//! The market data compiled into quantbox: real daily prices of five stocks and two
//! indices, so that agents, tests and examples have prices without a download. The files
//! are `data/market/*.csv.gz` at the repository root; their sources and licences are in
//! `data/market/LICENSES.md`.
//!
//! | symbol | name | days |
//! |---|---|---|
//! | `AAPL`, `IBM`, `MSFT` | Apple, IBM, Microsoft | 2000-03-01 to 2013-03-01 |
//! | `GOOG` | Alphabet (Google) | 2004-08-19 to 2013-03-01 |
//! | `FB` | Meta Platforms (Facebook) | 2012-05-18 to 2013-03-01 |
//! | `SPX` | S&P 500 | 1999-01-04 to 2018-12-31 |
//! | `IXIC` | NASDAQ Composite | 1999-01-04 to 2018-12-31 |
//!
//! The stocks' open, high, low, close and volume are unadjusted (AAPL split 2:1 in 2005);
//! their adjusted close accounts for splits and dividends. The indices' adjusted close is
//! their close.

use std::io::Read;

use flate2::read::GzDecoder;

use crate::import::{ImportError, parse_prices, parse_prices_by_symbol};
use crate::model::Bar;

/// The benchmark a strategy is compared with unless it names another.
pub const DEFAULT_BENCHMARK: &str = "SPX";

/// One bundled symbol and its daily bars, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct BundledSymbol {
    pub symbol: String,
    pub name: String,
    /// Where the data came from, and its licence, in one line.
    pub source_note: String,
    pub bars: Vec<Bar>,
}

const STOCKS_GZ: &[u8] = include_bytes!("../../../data/market/stocks.csv.gz");
const SP500_GZ: &[u8] = include_bytes!("../../../data/market/sp500.csv.gz");
const NASDAQ_GZ: &[u8] = include_bytes!("../../../data/market/nasdaq.csv.gz");

const STOCKS_NOTE: &str = "Quandl WIKI Prices (public domain), as redistributed by the PyPI \
                           package bokeh_sampledata 2026.1 (BSD-3-Clause)";
const INDEX_NOTE: &str = "example data of the PyPI package arch 8.0.0 (NCSA licence)";

/// The stocks of `stocks.csv.gz`, in the order they are listed.
const STOCKS: [(&str, &str); 5] = [
    ("AAPL", "Apple"),
    ("IBM", "IBM"),
    ("MSFT", "Microsoft"),
    ("GOOG", "Alphabet (Google)"),
    ("FB", "Meta Platforms (Facebook)"),
];

/// The symbols [`bundled`] returns, in its order (known without decompressing anything).
pub const SYMBOLS: [&str; 7] = ["AAPL", "IBM", "MSFT", "GOOG", "FB", "SPX", "IXIC"];

/// The bundled symbols: AAPL, IBM, MSFT, GOOG, FB, then SPX and IXIC. Decompresses and
/// parses the embedded files (a few milliseconds in a release build); an error means the
/// embedded data is not what the tests checked.
pub fn bundled() -> Result<Vec<BundledSymbol>, ImportError> {
    let mut stocks = parse_prices_by_symbol(&gunzip("stocks.csv.gz", STOCKS_GZ)?, &[])
        .map_err(|e| e.in_file("bundled stocks.csv.gz"))?;
    let mut out = Vec::with_capacity(STOCKS.len() + 2);
    for (symbol, name) in STOCKS {
        let i = stocks
            .iter()
            .position(|(s, _)| s == symbol)
            .ok_or_else(|| ImportError {
                file: Some("bundled stocks.csv.gz".to_owned()),
                line: None,
                column: None,
                source_column: None,
                reason: format!("no rows of {symbol}"),
            })?;
        let (symbol, bars) = stocks.swap_remove(i);
        out.push(BundledSymbol {
            symbol,
            name: name.to_owned(),
            source_note: STOCKS_NOTE.to_owned(),
            bars,
        });
    }
    for (symbol, name, file, gz) in [
        ("SPX", "S&P 500", "sp500.csv.gz", SP500_GZ),
        ("IXIC", "NASDAQ Composite", "nasdaq.csv.gz", NASDAQ_GZ),
    ] {
        let bars = parse_prices(&gunzip(file, gz)?, &[])
            .map_err(|e| e.in_file(format!("bundled {file}")))?;
        out.push(BundledSymbol {
            symbol: symbol.to_owned(),
            name: name.to_owned(),
            source_note: INDEX_NOTE.to_owned(),
            bars,
        });
    }
    Ok(out)
}

fn gunzip(file: &str, gz: &[u8]) -> Result<String, ImportError> {
    let mut text = String::new();
    GzDecoder::new(gz)
        .read_to_string(&mut text)
        .map_err(|e| ImportError {
            file: Some(format!("bundled {file}")),
            line: None,
            column: None,
            source_column: None,
            reason: format!("cannot decompress: {e}"),
        })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::date::Day;

    fn day(s: &str) -> Day {
        Day::parse(s).unwrap()
    }

    #[test]
    fn embedded_files_are_the_documented_ones() {
        // The sums of data/market/README.md and LICENSES.md.
        for (gz, sum) in [
            (
                STOCKS_GZ,
                "5abadf99b2d394f920120a27de6f0df129859d71d4cfb0bf661bcc99446ab1fd",
            ),
            (
                SP500_GZ,
                "1e028cbb9c400cc018c816ccc439b33c919387e726c3ed5ca2c05c82746059de",
            ),
            (
                NASDAQ_GZ,
                "b2009535343ebb14e0aa11ed086788d2997a416ffe4f9450eed9a561ae30ac59",
            ),
        ] {
            let hex: String = Sha256::digest(gz)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(hex, sum);
        }
    }

    #[test]
    fn bundled_symbols() {
        let all = bundled().unwrap();
        assert_eq!(
            all.iter().map(|s| s.symbol.as_str()).collect::<Vec<_>>(),
            SYMBOLS
        );
        let summary: Vec<(&str, usize, String, String)> = all
            .iter()
            .map(|s| {
                (
                    s.symbol.as_str(),
                    s.bars.len(),
                    s.bars[0].day.to_string(),
                    s.bars[s.bars.len() - 1].day.to_string(),
                )
            })
            .collect();
        let expect = [
            ("AAPL", 3270, "2000-03-01", "2013-03-01"),
            ("IBM", 3270, "2000-03-01", "2013-03-01"),
            ("MSFT", 3270, "2000-03-01", "2013-03-01"),
            ("GOOG", 2148, "2004-08-19", "2013-03-01"),
            ("FB", 196, "2012-05-18", "2013-03-01"),
            ("SPX", 5031, "1999-01-04", "2018-12-31"),
            ("IXIC", 5031, "1999-01-04", "2018-12-31"),
        ];
        assert_eq!(
            summary,
            expect
                .iter()
                .map(|&(s, n, a, b)| (s, n, a.to_owned(), b.to_owned()))
                .collect::<Vec<_>>()
        );
        // Rows per the README: 12,154 in stocks.csv.gz.
        assert_eq!(all[..5].iter().map(|s| s.bars.len()).sum::<usize>(), 12_154);
        for s in &all {
            assert!(
                s.bars.windows(2).all(|w| w[0].day < w[1].day),
                "{}",
                s.symbol
            );
            assert!(!s.name.is_empty() && !s.source_note.is_empty());
        }
        assert!(all.iter().any(|s| s.symbol == DEFAULT_BENCHMARK));
        assert_eq!(all[5].name, "S&P 500");

        let aapl = &all[0].bars[0];
        assert_eq!(
            *aapl,
            Bar {
                day: day("2000-03-01"),
                open: 118.56,
                high: 132.06,
                low: 118.5,
                close: 130.31,
                adj_close: 4.186662803811,
                volume: 9_616_100.0,
            }
        );
        let spx = all[5].bars.last().unwrap();
        assert_eq!(spx.day, day("2018-12-31"));
        assert_eq!((spx.close, spx.adj_close), (2506.850098, 2506.850098));
        assert_eq!(spx.volume, 3_442_870_000.0);
        let ixic = &all[6].bars[0];
        assert_eq!((ixic.day, ixic.open), (day("1999-01-04"), 2207.540039));
    }
}
