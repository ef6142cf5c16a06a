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

const ARRIVAL_CONFIG: &str = r#"
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

[[providers]]
name = "evo-live"
[providers.adapter]
type = "json_webhook"
signing_secret = "test-secret"
[providers.adapter.fields]
id = "tx_id"
kind = "type"
account = "player_id"
amount = "amount"
currency = "currency"
occurred_at = "timestamp"
original_id = "ref_tx_id"
[providers.adapter.kinds]
DEBIT = "bet"
CANCEL = "rollback"
"#;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().into()
}

/// A capture-log line with `body` signed for evo-live, optionally recording its arrival.
fn capture_line(body: &str, received_at: Option<&str>) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"test-secret").unwrap();
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let received = received_at.map(|at| format!(",\"received_at\":\"{at}\"")).unwrap_or_default();
    format!(
        "{{\"headers\":{{\"X-Signature\":\"{signature}\"}}{received},\"body\":{}}}\n",
        serde_json::to_string(body).unwrap()
    )
}

async fn received_times(store: &settlement::store::Store) -> Vec<(String, DateTime<Utc>)> {
    let stored = store.transactions_in_seq_order(0, 1_000).await.unwrap();
    stored.into_iter().map(|row| (row.transaction.provider_tx_id, row.transaction.received_at)).collect()
}

// A batch file's arrival time (`FileOptions::received_at`) is stamped on its transactions;
// without it they arrived now; one from the future is refused before anything is read.
store_test!(a_file_arrival_time_is_stamped_on_its_transactions, |store: settlement::store::Store| async move {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, id: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!("txn_id,txn_type,merchant_account,currency,amount_minor,settled_at\n{id},DEP,a,KRW,1000,2026-11-24 10:00:00\n"),
        )
        .unwrap();
        path
    };
    let config = Config::parse(ARRIVAL_CONFIG).unwrap();
    let (committer, _writer) = Committer::spawn(store.writer().await.unwrap(), Arc::new(now));
    let ingestor = Ingestor::new(&config, store.clone(), committer).unwrap();
    let dropped = at("2026-11-24T16:00:00Z");
    let late = FileOptions { received_at: Some(dropped), ..FileOptions::default() };
    let report = ingestor.ingest_file("payfast", &write("late.csv", "A1"), &late, now(), &mut |_| {}).await.unwrap();
    assert_eq!(report.accepted, 1);
    ingestor
        .ingest_file("payfast", &write("now.csv", "A2"), &FileOptions::default(), now(), &mut |_| {})
        .await
        .unwrap();
    // Up to the future tolerance (300 s) is allowed; beyond it is an error naming both times.
    let slightly = FileOptions { received_at: Some(now() + chrono::Duration::seconds(300)), ..FileOptions::default() };
    ingestor.ingest_file("payfast", &write("skew.csv", "A3"), &slightly, now(), &mut |_| {}).await.unwrap();
    let future = FileOptions { received_at: Some(now() + chrono::Duration::hours(1)), ..FileOptions::default() };
    let error = ingestor.ingest_file("payfast", &write("future.csv", "A4"), &future, now(), &mut |_| {}).await;
    let message = error.expect_err("an arrival in the future is refused").to_string();
    assert!(message.contains("2026-11-25T01:00:00+00:00") && message.contains("after now"), "{message}");
    assert_eq!(
        received_times(&store).await,
        vec![("A1".into(), dropped), ("A2".into(), now()), ("A3".into(), now() + chrono::Duration::seconds(300))]
    );
});

// Capture-log lines carry their own arrival time; a dead-lettered record replayed later
// keeps it; an arrival time in the future is a `timestamp_in_future` rejection.
store_test!(a_capture_line_arrival_time_survives_dead_letter_replay, |store: settlement::store::Store| async move {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.jsonl");
    let cancel = r#"{"tx_id":"C1","type":"CANCEL","player_id":"p1","amount":"5.00","currency":"USD","timestamp":"2026-11-24T10:01:00Z","ref_tx_id":"B1"}"#;
    let bet = r#"{"tx_id":"B1","type":"DEBIT","player_id":"p1","amount":"5.00","currency":"USD","timestamp":"2026-11-24T10:00:00Z"}"#;
    let future = r#"{"tx_id":"F1","type":"DEBIT","player_id":"p1","amount":"1.00","currency":"USD","timestamp":"2026-11-24T10:00:00Z"}"#;
    let log = [
        capture_line(cancel, Some("2026-11-24T12:00:00Z")),
        capture_line(bet, Some("2026-11-24T12:00:01Z")),
        capture_line(future, Some("2026-11-25T02:00:00Z")),
    ]
    .concat();
    std::fs::write(&path, log).unwrap();
    let config = Config::parse(ARRIVAL_CONFIG).unwrap();
    let (committer, _writer) = Committer::spawn(store.writer().await.unwrap(), Arc::new(now));
    let ingestor = Ingestor::new(&config, store.clone(), committer).unwrap();
    let report = ingestor.ingest_file("evo-live", &path, &FileOptions::default(), now(), &mut |_| {}).await.unwrap();
    assert_eq!(report.accepted, 1, "{report:?}");
    let mut rejected: Vec<String> = report.rejected.keys().map(|code| code.to_string()).collect();
    rejected.sort();
    assert_eq!(rejected, ["rollback_unknown_original", "timestamp_in_future"], "{report:?}");
    let dead_letters = store
        .dead_letters(&settlement::store::DeadLetterFilter { provider: None, status: None, limit: 10 })
        .await
        .unwrap();
    let future_letter = dead_letters.iter().find(|letter| letter.record == 3).expect("line 3's dead letter");
    assert_eq!(future_letter.field.as_deref(), Some("received_at"), "{future_letter:?}");
    // The original is stored now: replaying the rollback a day later takes it, with the
    // arrival time its capture line recorded.
    let cancel_letter = dead_letters.iter().find(|letter| letter.record == 1).expect("line 1's dead letter");
    let replay = ingestor.replay_dead_letter(cancel_letter.id, at("2026-11-26T00:00:00Z")).await.unwrap();
    assert!(replay.resolved && replay.report.accepted == 1, "{replay:?}");
    assert_eq!(
        received_times(&store).await,
        vec![("B1".into(), at("2026-11-24T12:00:01Z")), ("C1".into(), at("2026-11-24T12:00:00Z"))]
    );
});
