//! `settlewatch features export` end to end: the real binary over a real SQLite ledger
//! holding the example providers' files. The CSV must hold exactly the vectors the library
//! computes from the ledger in seq order, with labels from a truth file.

mod common;

use common::{copy_dir, examples_dir, open_store, run_in, runtime};
use settlement::features::{extract_batch, FeatureConfig, SCHEMA};

fn setup() -> (tempfile::TempDir, Vec<String>) {
    let temp = tempfile::tempdir().expect("a temp dir");
    copy_dir(&examples_dir(), &temp.path().join("examples"));
    let base = vec![
        "--config".to_string(),
        "examples/settlewatch.toml".to_string(),
        "--database-url".to_string(),
        format!("sqlite:{}", temp.path().join("ledger.db").display()),
    ];
    for (provider, file) in
        [("evo-live", "examples/evo-live/payloads.jsonl"), ("payfast", "examples/payfast/2026-11-24.csv")]
    {
        let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
        args.extend(["ingest", "--provider", provider, file]);
        run_in(temp.path(), &args).expect(0);
    }
    (temp, base)
}

fn run(temp: &tempfile::TempDir, base: &[String], extra: &[&str]) -> common::Run {
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    run_in(temp.path(), &args)
}

#[test]
fn export_writes_the_library_vectors_in_seq_order_with_labels() {
    let (temp, base) = setup();
    let stored = runtime().block_on(async {
        let store = open_store(&temp.path().join("ledger.db")).await;
        let stored = store.transactions_in_seq_order(0, 10_000).await.unwrap();
        store.close().await;
        stored
    });
    assert!(stored.len() >= 5, "the examples hold transactions");
    let flagged = &stored[2].transaction;
    let redelivered = &stored[3].transaction;
    // The simulator's truth.csv shape: a duplicate redelivery's row names the stored
    // original's key, but the original is not the anomaly.
    std::fs::write(
        temp.path().join("truth.csv"),
        format!(
            "provider,provider_tx_id,scenario,expected_outcome\n{},{},velocity_burst,accepted\n\
             {},{},duplicate_delivery,duplicate\nnobody,nothing,amount_spike,accepted\n",
            flagged.provider, flagged.provider_tx_id, redelivered.provider, redelivered.provider_tx_id
        ),
    )
    .unwrap();

    let out = run(&temp, &base, &["features", "export", "--out", "features.csv", "--labels", "truth.csv"]).expect(0);
    assert!(out.stdout.contains(&format!("exported {} transactions", stored.len())), "{}", out.stdout);
    assert!(out.stdout.contains("1 of 2 labelled keys are not among the exported transactions"), "{}", out.stdout);
    assert!(out.stdout.contains("1 label rows left out (expected_outcome not accepted)"), "{}", out.stdout);

    let text = std::fs::read_to_string(temp.path().join("features.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[..2], ["provider", "provider_tx_id"]);
    assert_eq!(&header[2..header.len() - 1], SCHEMA.names);
    assert_eq!(header.last(), Some(&"label"));

    let expected = extract_batch(FeatureConfig::default(), stored.iter().map(|stored| &stored.transaction), &[]);
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), stored.len());
    for (index, (row, stored)) in rows.iter().zip(&stored).enumerate() {
        let fields: Vec<&str> = row.split(',').collect();
        assert_eq!(fields[0], stored.transaction.provider);
        assert_eq!(fields[1], stored.transaction.provider_tx_id);
        let values: Vec<f64> = fields[2..fields.len() - 1].iter().map(|field| field.parse().unwrap()).collect();
        // Shortest round-trip formatting: the CSV holds the exact doubles.
        assert_eq!(values, expected.row(index), "row {index}");
        let label = if index == 2 { "1" } else { "0" };
        assert_eq!(fields.last(), Some(&label), "row {index}");
    }

    // --limit, and no label column without --labels.
    run(&temp, &base, &["features", "export", "--out", "first.csv", "--limit", "3"]).expect(0);
    let first = std::fs::read_to_string(temp.path().join("first.csv")).unwrap();
    assert_eq!(first.lines().count(), 4);
    assert!(!first.lines().next().unwrap().ends_with(",label"));
}

#[test]
fn a_plain_labels_file_labels_every_listed_key() {
    let (temp, base) = setup();
    let stored = runtime().block_on(async {
        let store = open_store(&temp.path().join("ledger.db")).await;
        let stored = store.transactions_in_seq_order(0, 10).await.unwrap();
        store.close().await;
        stored
    });
    let keys: Vec<String> = stored[..2]
        .iter()
        .map(|stored| format!("{},{}", stored.transaction.provider, stored.transaction.provider_tx_id))
        .collect();
    std::fs::write(temp.path().join("plain.csv"), keys.join("\n") + "\n").unwrap();
    run(&temp, &base, &["features", "export", "--out", "plain-out.csv", "--labels", "plain.csv"]).expect(0);
    let text = std::fs::read_to_string(temp.path().join("plain-out.csv")).unwrap();
    let labels: Vec<&str> = text.lines().skip(1).map(|line| line.rsplit(',').next().unwrap()).collect();
    assert_eq!(labels[..3], ["1", "1", "0"]);
}

#[test]
fn a_labels_file_with_one_column_is_refused_with_its_line() {
    let (temp, base) = setup();
    std::fs::write(temp.path().join("bad.csv"), "provider,provider_tx_id\nonly-one-column\n").unwrap();
    let out = run(&temp, &base, &["features", "export", "--out", "x.csv", "--labels", "bad.csv"]).expect(1);
    assert!(out.stderr.contains("bad.csv line 2: expected at least two columns"), "{}", out.stderr);
}
