//! Times one reconciliation of 1,000,000 ledger transactions against a 1,000,000-line
//! listing (and against the day's totals) and prints the wall time and the peak resident
//! memory (`VmHWM`), before and after the run.
//!
//! `cargo run --release -p settlement --example reconcile_bench [-- COUNT]`

use std::time::Instant;

use settlement::reconcile::{reconcile, ReconRules, StatementSide};

#[path = "../benches/common/reconcile_data.rs"]
mod data;

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn show(rss: Option<f64>) -> String {
    rss.map(|mib| format!("{mib:.0} MiB")).unwrap_or_else(|| "unknown (no /proc/self/status)".into())
}

fn main() {
    let count: usize = match std::env::args().nth(1) {
        Some(text) => text.parse().expect("COUNT must be a whole number"),
        None => 1_000_000,
    };
    let period = data::period();
    let rules = ReconRules::default();
    let started = Instant::now();
    let ledger = data::ledger(count);
    let listing = data::listing(&ledger);
    let totals = data::totals(&ledger);
    println!(
        "inputs: {count} ledger entries, {} lines, {} totals rows, built in {:.2?}",
        listing.len(),
        totals.len(),
        started.elapsed()
    );
    println!("peak RSS with the inputs built: {}", show(peak_rss_mib()));

    let started = Instant::now();
    let outcome = reconcile(&period, &rules, &ledger, StatementSide::Lines(&listing)).expect("reconcile");
    let elapsed = started.elapsed();
    println!(
        "listing by id: {:.3} s, {} matched by id, {} breaks; peak RSS {}",
        elapsed.as_secs_f64(),
        outcome.matches.by_id,
        outcome.breaks.len(),
        show(peak_rss_mib())
    );
    assert_eq!(outcome.matches.by_id, count as u64);
    assert!(outcome.breaks.is_empty());

    let started = Instant::now();
    let outcome = reconcile(&period, &rules, &ledger, StatementSide::Totals(&totals)).expect("reconcile");
    let elapsed = started.elapsed();
    println!(
        "totals: {:.3} s, {} rows agree, {} breaks; peak RSS {}",
        elapsed.as_secs_f64(),
        outcome.matches.totals_rows,
        outcome.breaks.len(),
        show(peak_rss_mib())
    );
    assert!(outcome.breaks.is_empty());
}
