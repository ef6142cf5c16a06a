//! Times one reconciliation of 1,000,000 ledger transactions against a 1,000,000-line
//! listing, against the same lines without ids (a bank's statement,
//! matched by amount) and against the day's totals, and prints the wall time and the peak resident
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

/// CPU seconds this process has used (user + system), from `/proc/self/stat` (clock ticks
/// of 1/100 s): on a shared machine the wall time alone overstates the work.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// Runs `work` and returns its result with the wall seconds and CPU seconds it took.
fn timed<T>(work: impl FnOnce() -> T) -> (T, String) {
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let result = work();
    let wall = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, cpu_seconds()) {
        (Some(before), Some(after)) => format!("{:.2} s CPU", after - before),
        _ => "CPU unknown".to_string(),
    };
    (result, format!("{wall:.3} s wall, {cpu}"))
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

    let (outcome, time) = timed(|| reconcile(&period, &rules, &ledger, StatementSide::Lines(&listing)));
    let outcome = outcome.expect("reconcile");
    println!(
        "listing by id: {time}, {} matched by id, {} breaks; peak RSS {}",
        outcome.matches.by_id,
        outcome.breaks.len(),
        show(peak_rss_mib())
    );
    assert_eq!(outcome.matches.by_id, count as u64);
    assert!(outcome.breaks.is_empty());

    // A bank's statement: no ids, matched by currency, kind and amount alone.
    let mut bank = listing;
    for line in &mut bank {
        line.provider_tx_id = None;
    }
    let (outcome, time) = timed(|| reconcile(&period, &rules, &ledger, StatementSide::Lines(&bank)));
    let outcome = outcome.expect("reconcile");
    println!(
        "bank lines by amount: {time}, {} matched one-to-one, {} breaks; peak RSS {}",
        outcome.matches.by_reference,
        outcome.breaks.len(),
        show(peak_rss_mib())
    );
    assert!(outcome.breaks.is_empty());
    drop(bank);

    let (outcome, time) = timed(|| reconcile(&period, &rules, &ledger, StatementSide::Totals(&totals)));
    let outcome = outcome.expect("reconcile");
    println!(
        "totals: {time}, {} rows agree, {} breaks; peak RSS {}",
        outcome.matches.totals_rows,
        outcome.breaks.len(),
        show(peak_rss_mib())
    );
    assert!(outcome.breaks.is_empty());
}
