//! Ingestion of files through the `Ingestor` (adapter → validation → group commit) on a
//! real SQLite ledger: what is acknowledged, and what a failing chunk does to the others.

mod common;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use settlement::config::Config;
use settlement::ingest::{Committer, FileOptions, Ingestor, Progress, CHUNK_ITEMS_MAX};
use settlement::validate::AMOUNT_MINOR_MAX;

const CONFIG: &str = r#"
[[providers]]
name = "payfast"
timezone = "Asia/Seoul"
currencies = ["KRW"]
[providers.adapter]
type = "csv_settlement"
[providers.adapter.columns]
id = "txn_id"
kind = "txn_type"
account = "merchant_account"
currency = "currency"
amount = "amount_minor"
occurred_at = "settled_at"
[providers.adapter.kinds]
DEP = "deposit"
"#;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z").unwrap().into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_nothing_is_acknowledged_after_a_failed_chunk() {
    // Chunks 1 and 2 are deposits of the largest allowed amount to one account, chunk 3
    // would push its balance past 64 bits (its write fails), chunk 4 is small deposits to
    // another account. The ingest stops at the failure; chunk 4 may or may not have been
    // submitted (and committed) by then, but no progress may be reported past chunk 2, as
    // chunk 3's records are not stored.
    let test_store = common::sqlite().await;
    let store = test_store.store.clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deposits.csv");
    let mut csv = String::from("txn_id,txn_type,merchant_account,currency,amount_minor,settled_at\n");
    for row in 0..CHUNK_ITEMS_MAX * 4 {
        let (account, amount) = if row < CHUNK_ITEMS_MAX * 3 { ("big", AMOUNT_MINOR_MAX) } else { ("small", 1) };
        writeln!(csv, "T{row},DEP,{account},KRW,{amount},2026-11-24 10:00:00").unwrap();
    }
    std::fs::write(&path, csv).unwrap();

    let config = Config::parse(CONFIG).unwrap();
    let (committer, _writer) = Committer::spawn(store.writer().await.unwrap(), Arc::new(now));
    let ingestor = Ingestor::new(&config, store.clone(), committer).unwrap();
    let acknowledged = Arc::new(Mutex::new(Vec::<Progress>::new()));
    let seen = acknowledged.clone();
    let mut progress = move |progress: Progress| seen.lock().unwrap().push(progress);
    let result = ingestor.ingest_file("payfast", &path, &FileOptions::default(), now(), &mut progress).await;
    assert!(result.is_err(), "the overflowing chunk fails the ingest: {result:?}");

    let acknowledged = acknowledged.lock().unwrap().clone();
    let last_record = acknowledged.last().map(|progress| progress.record).unwrap_or(0);
    // Record numbers are line numbers: the header is line 1.
    assert!(last_record <= (CHUNK_ITEMS_MAX * 2 + 1) as u64, "acknowledged up to {last_record}: {acknowledged:?}");
    let big = store.balances("player:big").await.unwrap();
    assert_eq!(big[0].balance_minor, -(CHUNK_ITEMS_MAX as i64 * 2) * AMOUNT_MINOR_MAX, "chunk 3 is not stored");
    let stored = store.counts().await.unwrap().transactions;
    assert!(
        stored == (CHUNK_ITEMS_MAX * 2) as u64 || stored == (CHUNK_ITEMS_MAX * 3) as u64,
        "chunks 1 and 2, and chunk 4 only if it was submitted before the failure: {stored}"
    );
    assert!(store.verify().await.unwrap().is_clean());
    drop(ingestor);
    test_store.drop_database().await;
}
