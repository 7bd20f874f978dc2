//! Rough timings of the operations `quantbox bench` can time, on synthetic data:
//! `cargo run --release -p quantbox-analytics --example timing`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use quantbox_analytics::{ReportConfig, execution_stats, report, report_many, synthetic};

/// Median of `runs` timings of `f`.
fn median<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn main() {
    let cfg = ReportConfig {
        risk_free: 0.02,
        ..ReportConfig::default()
    };
    let one = synthetic::daily_returns(2520, 1, 0);
    let bench = synthetic::daily_returns(2520, 2, 0);
    let t = median(2001, || report(&one, None, &cfg).unwrap());
    println!("report, 2520 daily returns:                   {t:?}");
    let t = median(2001, || report(&one, Some(&bench), &cfg).unwrap());
    println!("report, 2520 daily returns + benchmark:       {t:?}");

    let many: Vec<_> = (0..1000)
        .map(|i| synthetic::daily_returns(2520, 100 + i, 0))
        .collect();
    let t = median(21, || report_many(&many, None, &cfg).unwrap());
    println!("report_many, 1000 x 2520 (2 threads):         {t:?}");
    let t = median(21, || {
        quantbox_analytics::report::report_many_with_threads(&many, None, &cfg, 1).unwrap()
    });
    println!("report_many, 1000 x 2520 (1 thread):          {t:?}");

    let (mut orders, mut fills) = synthetic::orders_and_fills(1_000_000, 7);
    let t = median(11, || execution_stats(&orders, &fills).unwrap());
    println!(
        "execution_stats, {} orders / {} fills, dense ids (table):  {t:?}",
        orders.len(),
        fills.len()
    );
    // The same data with ids spread over the whole u64 range: the hash-map index.
    let spread = |id: u64| id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    orders.iter_mut().for_each(|o| o.id = spread(o.id));
    fills
        .iter_mut()
        .for_each(|f| f.order_id = spread(f.order_id));
    let t = median(11, || execution_stats(&orders, &fills).unwrap());
    println!(
        "execution_stats, {} orders / {} fills, sparse ids (hash):  {t:?}",
        orders.len(),
        fills.len()
    );
}
