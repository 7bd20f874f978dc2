//! The trading tables: what goes in comes back, each write is all or nothing, and the
//! store refuses what it cannot keep (non-finite numbers, fills of unknown orders,
//! appends that go back in time).

use quantbox_store::SqliteStore;
use quantbox_trading::{
    Bar, Day, Fill, Heartbeat, Order, OrderState, SeriesKind, SeriesPoint, Side, Trade,
    TradingStore,
};

fn pts(v: &[(i64, f64)]) -> Vec<SeriesPoint> {
    v.iter()
        .map(|&(t_ms, value)| SeriesPoint { t_ms, value })
        .collect()
}

fn order(strategy: &str, id: &str, submit_ms: i64, state: OrderState) -> Order {
    Order {
        strategy: strategy.into(),
        id: id.into(),
        symbol: "AAPL".into(),
        side: Side::Buy,
        quantity: 100.0,
        order_type: "limit".into(),
        limit_price: Some(10.5),
        arrival_price: Some(10.0),
        decision_ms: submit_ms - 5,
        submit_ms,
        ack_ms: Some(submit_ms + 7),
        state,
        reject_reason: None,
        simulated: false,
    }
}

fn fill(strategy: &str, order_id: &str, t_ms: i64) -> Fill {
    Fill {
        strategy: strategy.into(),
        order_id: order_id.into(),
        t_ms,
        quantity: 50.0,
        price: 10.01,
        fee: 0.5,
        simulated: false,
    }
}

#[test]
fn series_replace_append_and_refusals() {
    let s = SqliteStore::open_in_memory().unwrap();
    assert!(s.series("mom").unwrap().is_none());
    s.replace_series(
        "mom",
        "import",
        SeriesKind::Returns,
        &pts(&[(0, 0.01), (86_400_000, -0.02)]),
    )
    .unwrap();
    let (kind, got) = s.series("mom").unwrap().unwrap();
    assert_eq!(kind, SeriesKind::Returns);
    assert_eq!(got, pts(&[(0, 0.01), (86_400_000, -0.02)]));
    // Replacing swaps the whole series (and may change its kind).
    s.replace_series("mom", "import", SeriesKind::Equity, &pts(&[(5, 100.0)]))
        .unwrap();
    assert_eq!(
        s.series("mom").unwrap().unwrap(),
        (SeriesKind::Equity, pts(&[(5, 100.0)]))
    );
    // Appending goes forward only, with the same kind.
    s.append_series(
        "mom",
        "agent",
        SeriesKind::Equity,
        &pts(&[(6, 101.0), (7, 99.0)]),
    )
    .unwrap();
    let e = s
        .append_series("mom", "agent", SeriesKind::Equity, &pts(&[(7, 1.0)]))
        .unwrap_err();
    assert!(e.0.contains("not after the last stored one"), "{e}");
    let e = s
        .append_series("mom", "agent", SeriesKind::Returns, &pts(&[(8, 0.1)]))
        .unwrap_err();
    assert!(e.0.contains("already has a equity series"), "{e}");
    let e = s
        .replace_series("mom", "import", SeriesKind::Returns, &pts(&[(1, f64::NAN)]))
        .unwrap_err();
    assert!(e.0.contains("not a finite number"), "{e}");
    // Nothing of the refused writes landed.
    assert_eq!(s.series("mom").unwrap().unwrap().1.len(), 3);
    let info = s.strategy("mom").unwrap().unwrap();
    assert_eq!(
        (info.points, info.first_ms, info.last_ms),
        (3, Some(5), Some(7))
    );
    assert_eq!(info.source, "import");
    assert_eq!(info.series_kind, Some(SeriesKind::Equity));
}

#[test]
fn orders_fills_and_trades_round_trip() {
    let s = SqliteStore::open_in_memory().unwrap();
    let o1 = order("a", "o1", 1_000, OrderState::Filled);
    let mut o2 = order("a", "o2", 2_000, OrderState::Rejected);
    o2.reject_reason = Some("insufficient cash".into());
    o2.ack_ms = None;
    let o3 = order("b", "o1", 3_000, OrderState::PartiallyFilled);
    s.put_orders(&[o1.clone(), o2.clone(), o3.clone()]).unwrap();
    assert_eq!(
        s.orders(None, 0, i64::MAX).unwrap(),
        vec![o1.clone(), o2.clone(), o3.clone()]
    );
    assert_eq!(s.orders(Some("a"), 1_500, 5_000).unwrap(), vec![o2.clone()]);
    // Upsert by (strategy, id).
    let mut o1b = o1.clone();
    o1b.state = OrderState::Cancelled;
    s.put_orders(&[o1b.clone()]).unwrap();
    assert_eq!(s.orders(Some("a"), 0, 1_500).unwrap(), vec![o1b]);

    s.put_fills(&[
        fill("a", "o1", 1_100),
        fill("b", "o1", 3_100),
        fill("a", "o1", 1_050),
    ])
    .unwrap();
    let f = s.fills(Some("a"), 0, i64::MAX).unwrap();
    assert_eq!(f.iter().map(|f| f.t_ms).collect::<Vec<_>>(), [1_050, 1_100]);
    // Fills follow their orders' submit window.
    assert_eq!(s.fills(None, 2_500, 5_000).unwrap().len(), 1);
    // A fill of an unknown order is refused, and the batch with it writes nothing.
    let e = s
        .put_fills(&[fill("a", "o1", 1_200), fill("a", "nope", 1_300)])
        .unwrap_err();
    assert!(e.0.contains("order nope of a"), "{e}");
    assert_eq!(s.fills(None, 0, i64::MAX).unwrap().len(), 3);
    assert_eq!(
        s.known_orders("a", &["o1", "o2", "nope"]).unwrap(),
        ["o1", "o2"]
    );

    let t = Trade {
        strategy: "a".into(),
        id: "t1".into(),
        symbol: "AAPL".into(),
        side: Side::Sell,
        quantity: 10.0,
        entry_ms: 1,
        exit_ms: 2,
        entry_price: 10.0,
        exit_price: 9.0,
        pnl: 9.0,
        fees: 1.0,
        simulated: true,
    };
    s.put_trades(std::slice::from_ref(&t)).unwrap();
    assert_eq!(s.trades("a").unwrap(), vec![t]);
    assert!(s.trades("b").unwrap().is_empty());
    let info = s.strategy("a").unwrap().unwrap();
    assert_eq!((info.orders, info.fills, info.trades), (2, 2, 1));
    assert_eq!(info.series_kind, None);
    assert_eq!(
        s.strategies()
            .unwrap()
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
}

#[test]
fn heartbeats_and_bars() {
    let s = SqliteStore::open_in_memory().unwrap();
    assert_eq!(s.last_heartbeat("x").unwrap(), None);
    let hb = |t_ms, kind: &str| Heartbeat {
        strategy: "x".into(),
        t_ms,
        kind: kind.into(),
    };
    s.put_heartbeats(&[
        hb(10, "bar"),
        hb(30, "heartbeat"),
        hb(20, "bar"),
        hb(30, "heartbeat"),
    ])
    .unwrap();
    assert_eq!(s.last_heartbeat("x").unwrap(), Some(30));

    let bar = |d: i32, c: f64| Bar {
        day: Day(d),
        open: c,
        high: c + 1.0,
        low: c - 1.0,
        close: c,
        adj_close: c / 2.0,
        volume: 1e6,
    };
    s.replace_bars(
        "SPX",
        "bundled",
        &[bar(1, 10.0), bar(2, 11.0), bar(3, 12.0)],
    )
    .unwrap();
    assert_eq!(
        s.bars("SPX", Day(2), Day(9)).unwrap(),
        vec![bar(2, 11.0), bar(3, 12.0)]
    );
    s.replace_bars("SPX", "import", &[bar(5, 1.0)]).unwrap();
    assert_eq!(s.bars("SPX", Day(0), Day(9)).unwrap(), vec![bar(5, 1.0)]);
    let mut bad = bar(6, 1.0);
    bad.volume = f64::INFINITY;
    assert!(
        s.replace_bars("SPX", "import", &[bar(7, 1.0), bad])
            .is_err()
    );
    let syms = s.symbols().unwrap();
    assert_eq!(syms.len(), 1);
    assert_eq!(
        (syms[0].bars, syms[0].first, syms[0].source.as_str()),
        (1, Day(5), "import")
    );
}

#[test]
fn a_reset_strategy_starts_empty() {
    let s = SqliteStore::open_in_memory().unwrap();
    s.replace_series("r", "import", SeriesKind::Equity, &pts(&[(1, 100.0)]))
        .unwrap();
    s.put_orders(&[order("r", "o1", 1_000, OrderState::Filled)])
        .unwrap();
    s.put_fills(&[fill("r", "o1", 1_100)]).unwrap();
    s.put_orders(&[order("other", "o1", 1_000, OrderState::Filled)])
        .unwrap();
    s.put_fills(&[fill("other", "o1", 1_100)]).unwrap();
    s.reset_strategy("r", "agent", Some(60_000)).unwrap();
    let info = s.strategy("r").unwrap().unwrap();
    assert_eq!((info.points, info.orders, info.fills), (0, 0, 0));
    assert_eq!(info.source, "agent");
    assert_eq!(info.feed_interval_ms, Some(60_000));
    assert!(s.series("r").unwrap().is_none());
    // Other strategies keep theirs.
    assert_eq!(s.fills(Some("other"), 0, i64::MAX).unwrap().len(), 1);
}
