//! Properties of ingestion against a real SQLite ledger: ingesting any batch twice changes
//! nothing, and the order and grouping of a batch do not change the resulting balances
//! (as long as every reversal comes after the transaction it reverses).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use settlement::generate::{Generator, GeneratorConfig};
use settlement::ingest::Committer;
use settlement::model::{Kind, Transaction};
use settlement::money::Currencies;
use settlement::store::{Item, Origin, Outcome, Store};
use settlement::validate::{validate, Rules};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z").unwrap().into()
}

fn items(transactions: &[Transaction]) -> Vec<Item> {
    let currencies = Currencies::iso();
    let rules =
        Rules { currencies: &currencies, allowed_currencies: None, future_tolerance: chrono::Duration::minutes(5) };
    transactions
        .iter()
        .map(|tx| {
            let raw = tx.provider_tx_id.as_bytes().to_vec();
            let valid = validate(tx.clone(), &rules, now()).expect("generated transactions are valid");
            Item::Transaction {
                valid,
                origin: Origin { source: Arc::from("prop"), record: 1, raw, context: Arc::from(&b""[..]) },
            }
        })
        .collect()
}

/// Ingests `transactions` in groups of the given sizes (cycled); returns all outcomes.
async fn ingest(store: &Store, transactions: &[Transaction], group_sizes: &[usize]) -> Vec<Outcome> {
    let (committer, writer) = Committer::spawn(store.writer().await.unwrap(), Arc::new(now));
    let mut outcomes = Vec::new();
    let mut rest = transactions;
    for size in group_sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (group, tail) = rest.split_at((*size).clamp(1, rest.len()));
        outcomes.extend(committer.commit(items(group)).await.unwrap());
        rest = tail;
    }
    drop(committer);
    writer.await.unwrap();
    outcomes
}

async fn state(store: &Store) -> (BTreeMap<(String, String), i64>, settlement::store::Counts) {
    let balances = store
        .balances("")
        .await
        .unwrap()
        .into_iter()
        .map(|balance| ((balance.account, balance.currency.to_string()), balance.balance_minor))
        .collect();
    (balances, store.counts().await.unwrap())
}

fn generated(seed: u64, count: usize) -> Vec<Transaction> {
    Generator::new(GeneratorConfig {
        seed,
        accounts: 40,
        providers: 3,
        rollbacks_per_mille: 60,
        ..GeneratorConfig::default()
    })
    .take(count)
    .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn ingesting_any_batch_twice_changes_nothing(
        seed in any::<u64>(),
        count in 1usize..300,
        group_sizes in proptest::collection::vec(1usize..120, 1..5),
    ) {
        runtime().block_on(async {
            let test_store = common::sqlite().await;
            let transactions = generated(seed, count);
            let first = ingest(&test_store.store, &transactions, &group_sizes).await;
            prop_assert!(first.iter().all(|outcome| matches!(outcome, Outcome::Accepted { .. })), "{first:?}");
            let before = state(&test_store.store).await;
            let second = ingest(&test_store.store, &transactions, &[count]).await;
            prop_assert!(second.iter().all(|outcome| matches!(outcome, Outcome::Duplicate { .. })), "{second:?}");
            prop_assert_eq!(state(&test_store.store).await, before);
            prop_assert!(test_store.store.verify().await.unwrap().is_clean());
            test_store.drop_database().await;
            Ok(())
        })?;
    }

    #[test]
    fn order_and_grouping_do_not_change_balances(
        seed in any::<u64>(),
        count in 1usize..300,
        shuffle_seed in any::<u64>(),
        group_sizes in proptest::collection::vec(1usize..120, 1..5),
    ) {
        runtime().block_on(async {
            let transactions = generated(seed, count);
            let in_order = common::sqlite().await;
            ingest(&in_order.store, &transactions, &[usize::MAX]).await;

            // Any order in which each reversal still follows its original: shuffle the
            // others, then the reversals, and put the reversals last.
            let (mut reversals, mut others): (Vec<_>, Vec<_>) =
                transactions.iter().cloned().partition(|tx| tx.kind == Kind::Rollback);
            let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(shuffle_seed);
            rand::seq::SliceRandom::shuffle(&mut others[..], &mut rng);
            rand::seq::SliceRandom::shuffle(&mut reversals[..], &mut rng);
            others.extend(reversals);
            let shuffled = common::sqlite().await;
            ingest(&shuffled.store, &others, &group_sizes).await;

            prop_assert_eq!(state(&shuffled.store).await, state(&in_order.store).await);
            prop_assert!(shuffled.store.verify().await.unwrap().is_clean());
            in_order.drop_database().await;
            shuffled.drop_database().await;
            Ok(())
        })?;
    }
}
