#[test]
fn probe() {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut bad = 0;
    for _ in 0..2_000_000 {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        let f = f64::from_bits(x);
        if !f.is_finite() { continue; }
        let s = serde_json::to_string(&f).unwrap();
        let g: f64 = serde_json::from_str(&s).unwrap();
        if g.to_bits() != f.to_bits() { if bad < 5 { println!("{f:e} {s} -> {g:e}"); } bad += 1; }
    }
    println!("bad {bad}");
    assert_eq!(bad, 0);
}
