//! A minimal benchmark harness: warm-up, then timed batches; per-operation median and spread.
//! It keeps the dependency tree small; figures go to docs/benchmarks.md.

use std::time::{Duration, Instant};

/// Runs `f` for about two seconds after a warm-up and prints median, p10 and p90.
pub fn bench(name: &str, mut f: impl FnMut()) {
    // Warm up for ~200 ms, then time batches until ~2 s have passed.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        f();
    }
    let mut per_op = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let batch = 20;
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        per_op.push(t.elapsed().as_secs_f64() / f64::from(batch));
    }
    per_op.sort_by(f64::total_cmp);
    let pct = |p: f64| per_op[((per_op.len() - 1) as f64 * p) as usize] * 1e6;
    println!(
        "{name:<28} median {:>9.1} µs   p10 {:>9.1} µs   p90 {:>9.1} µs   ({} batches)",
        pct(0.5),
        pct(0.1),
        pct(0.9),
        per_op.len()
    );
}
