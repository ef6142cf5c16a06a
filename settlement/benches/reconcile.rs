//! Reconciliation matching on one core: a day of 1,000,000 ledger transactions against the
//! provider's 1,000,000-line listing (matched by id), against the same lines without ids (a
//! bank's statement, matched by currency, kind and amount), and against its end-of-day totals.
//! The goal is at most 5 s for the listing.
//!
//! `cargo bench -p settlement --bench reconcile`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use settlement::reconcile::{reconcile, ReconRules, StatementSide};

#[path = "common/reconcile_data.rs"]
mod data;

const TRANSACTIONS: usize = 1_000_000;

fn bench(c: &mut Criterion) {
    let period = data::period();
    let rules = ReconRules::default();
    let ledger = data::ledger(TRANSACTIONS);
    let listing = data::listing(&ledger);
    let totals = data::totals(&ledger);
    let mut bank = data::listing(&ledger);
    for line in &mut bank {
        line.provider_tx_id = None;
    }
    let mut group = c.benchmark_group("reconcile");
    group.throughput(Throughput::Elements(TRANSACTIONS as u64));
    group.sample_size(10);
    group.bench_function("listing_by_id_1m", |b| {
        b.iter(|| {
            let outcome = reconcile(&period, &rules, black_box(&ledger), StatementSide::Lines(&listing)).unwrap();
            assert!(outcome.breaks.is_empty());
            outcome
        })
    });
    group.bench_function("bank_lines_by_amount_1m", |b| {
        b.iter(|| {
            let outcome = reconcile(&period, &rules, black_box(&ledger), StatementSide::Lines(&bank)).unwrap();
            assert!(outcome.breaks.is_empty());
            outcome
        })
    });
    group.bench_function("totals_1m", |b| {
        b.iter(|| {
            let outcome = reconcile(&period, &rules, black_box(&ledger), StatementSide::Totals(&totals)).unwrap();
            assert!(outcome.breaks.is_empty());
            outcome
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
