//! Feature extraction throughput on one core, over transactions from the seeded generator
//! (8 providers, 50,000 accounts, USD/EUR/KRW, about 1% rollbacks), with reconciliation
//! breaks open at most providers (so the break lookup is on the measured path). The goal is
//! at least 500,000 transactions per second.
//!
//! `cargo bench -p settlement --bench features`

use chrono::Duration;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use settlement::features::{extract_batch, BreakChange, BreakEvent, FeatureConfig, FeatureExtractor, FEATURE_COUNT};
use settlement::generate::{Generator, GeneratorConfig};
use settlement::model::Transaction;

const TRANSACTIONS: usize = 200_000;

fn transactions() -> Vec<Transaction> {
    Generator::new(GeneratorConfig::default())
        .take(TRANSACTIONS)
        .enumerate()
        .map(|(i, mut transaction)| {
            // Sessions on a third of them, so the session table is exercised too.
            if i % 3 == 0 {
                transaction.session_id = Some(format!("session-{}", i % 20_000));
            }
            transaction
        })
        .collect()
}

/// Breaks opened at six of the eight providers through the transactions' span (one every
/// second of it, 200 s), every third one closed again a second later.
fn break_events(transactions: &[Transaction]) -> Vec<BreakEvent> {
    let start = transactions[0].occurred_at;
    let seconds = (transactions[transactions.len() - 1].occurred_at - start).num_seconds();
    let mut events = Vec::new();
    for second in 0..seconds {
        let provider = format!("provider-{}", second % 6);
        let at = start + Duration::seconds(second);
        events.push(BreakEvent { provider: provider.clone(), at, change: BreakChange::Opened });
        if second % 3 == 0 {
            let closed_at = at + Duration::seconds(1);
            events.push(BreakEvent { provider, at: closed_at, change: BreakChange::Closed { opened_at: at } });
        }
    }
    events
}

fn bench(c: &mut Criterion) {
    let transactions = transactions();
    let events = break_events(&transactions);
    let mut group = c.benchmark_group("features");
    group.throughput(Throughput::Elements(TRANSACTIONS as u64));
    group.sample_size(10);

    // Steady state: one extractor whose tables already hold every entity (streaming).
    let mut extractor = FeatureExtractor::new(FeatureConfig::default());
    for event in &events {
        extractor.note_break(event);
    }
    let mut out = [0.0; FEATURE_COUNT];
    for transaction in &transactions {
        extractor.extract(transaction, &mut out);
    }
    group.bench_function("extract_steady_state", |b| {
        b.iter(|| {
            for transaction in &transactions {
                extractor.extract(black_box(transaction), &mut out);
            }
            black_box(&out);
        })
    });

    // The same without any break state: the cost of the break lookup, in the same run.
    let mut without_breaks = FeatureExtractor::new(FeatureConfig::default());
    for transaction in &transactions {
        without_breaks.extract(transaction, &mut out);
    }
    group.bench_function("extract_steady_state_without_breaks", |b| {
        b.iter(|| {
            for transaction in &transactions {
                without_breaks.extract(black_box(transaction), &mut out);
            }
            black_box(&out);
        })
    });

    // From empty state, with the output matrix (training).
    group.bench_function("extract_batch_from_empty", |b| {
        b.iter(|| black_box(extract_batch(FeatureConfig::default(), &transactions, &events)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
