//! Feature extraction throughput on one core, over transactions from the seeded generator
//! (8 providers, 50,000 accounts, USD/EUR/KRW, about 1% rollbacks). The goal is at least
//! 500,000 transactions per second.
//!
//! `cargo bench -p settlement --bench features`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use settlement::features::{extract_batch, FeatureConfig, FeatureExtractor, FEATURE_COUNT};
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

fn bench(c: &mut Criterion) {
    let transactions = transactions();
    let mut group = c.benchmark_group("features");
    group.throughput(Throughput::Elements(TRANSACTIONS as u64));
    group.sample_size(10);

    // Steady state: one extractor whose tables already hold every entity (streaming).
    let mut extractor = FeatureExtractor::new(FeatureConfig::default());
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

    // From empty state, with the output matrix (training).
    group.bench_function("extract_batch_from_empty", |b| {
        b.iter(|| black_box(extract_batch(FeatureConfig::default(), &transactions)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
