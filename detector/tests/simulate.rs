//! `settlewatch simulate` end to end: the real binary simulates a few hours into a temp
//! dir, then `settlewatch ingest` takes every file with the written settlewatch.toml and
//! reports, file by file, exactly what the manifest (and so the truth file) expects.

mod common;

use std::collections::BTreeMap;

use common::{open_store, run_in, runtime};

fn manifest(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    lines
        .map(|line| header.iter().map(|name| name.to_string()).zip(line.split(',').map(str::to_string)).collect())
        .collect()
}

#[test]
fn simulated_files_ingest_exactly_as_the_manifest_and_truth_say() {
    let temp = tempfile::tempdir().expect("a temp dir");
    let dir = temp.path();
    let run = run_in(dir, &["simulate", "--seed", "7", "--duration", "3h", "--rate", "4/s", "--out", "sim"]).expect(0);
    assert!(run.stdout.contains("simulated "), "{}", run.stdout);
    for scenario in ["amount_spike", "velocity_burst", "duplicate_delivery", "malformed_batch", "settlement_mismatch"] {
        assert!(run.stdout.contains(scenario), "the summary lacks {scenario}:\n{}", run.stdout);
    }
    let rows = manifest(&std::fs::read_to_string(dir.join("sim/manifest.csv")).expect("manifest.csv"));
    let truth = std::fs::read_to_string(dir.join("sim/truth.csv")).expect("truth.csv");
    assert!(truth.starts_with("provider,provider_tx_id,"));
    let url = format!("sqlite:{}", dir.join("ledger.db").display());
    let (mut accepted, mut not_accepted) = (0u64, 0u64);
    for row in &rows {
        let file = format!("sim/{}", row["file"]);
        let ingest = run_in(
            dir,
            &[
                "--config",
                "sim/settlewatch.toml",
                "--database-url",
                &url,
                "ingest",
                "--provider",
                &row["provider"],
                &file,
            ],
        )
        .expect(0);
        let expected = format!(
            "{} units: {} accepted, {} duplicates, {} conflicts, {} rejected",
            row["units"], row["accepted"], row["duplicates"], row["conflicts"], row["rejected"]
        );
        assert!(ingest.stdout.contains(&expected), "{file}: expected {expected:?}, ingest said:\n{}", ingest.stdout);
        for part in row["rejected_by_code"].split(';').filter(|part| !part.is_empty()) {
            let (code, count) = part.split_once('=').expect("code=count");
            assert!(ingest.stdout.contains(&format!("{code} {count}")), "{file}: {part} not in\n{}", ingest.stdout);
        }
        accepted += row["accepted"].parse::<u64>().expect("a count");
        not_accepted +=
            row["units"].parse::<u64>().expect("a count") - row["accepted"].parse::<u64>().expect("a count");
    }
    // Every unit not accepted is a labelled record in the truth file (a broken batch is one
    // unit for all its records).
    let labelled_not_accepted = truth.lines().skip(1).filter(|line| !line.contains(",accepted,")).count() as u64;
    assert!(not_accepted > 0 && labelled_not_accepted >= not_accepted, "{not_accepted} vs {labelled_not_accepted}");
    assert!(accepted > 30_000, "{accepted}");
    let verify = run_in(dir, &["--config", "sim/settlewatch.toml", "--database-url", &url, "verify"]).expect(0);
    assert!(verify.stdout.contains("ledger verified"), "{}", verify.stdout);
}

#[test]
fn streaming_to_a_target_is_refused_until_the_ingest_api_exists() {
    let temp = tempfile::tempdir().expect("a temp dir");
    let run = run_in(temp.path(), &["simulate", "--rate", "2000/s", "--target", "http://127.0.0.1:9"]).expect(1);
    assert!(run.stderr.contains("HTTP ingest API is not available yet"), "{}", run.stderr);
    let bad = run_in(temp.path(), &["simulate", "--duration", "3 weeks", "--out", "x"]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("duration"), "{}", bad.stderr);
}

#[test]
fn a_run_that_ends_in_the_future_warns_that_ingest_will_reject_its_later_records() {
    // The manifest promised `accepted` for records ingest must refuse as timestamp_in_future,
    // and nothing said so.
    let temp = tempfile::tempdir().expect("a temp dir");
    let dir = temp.path();
    let start = (chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    std::fs::write(dir.join("sim.toml"), format!("start = \"{start}\"\n")).expect("a config file");
    let run =
        run_in(dir, &["simulate", "--duration", "2h", "--rate", "1/s", "--out", "future", "--config-file", "sim.toml"])
            .expect(0);
    assert!(run.stderr.contains("after now") && run.stderr.contains("timestamp_in_future"), "{}", run.stderr);
    // Its batch files are dropped after now too, which `ingest --manifest` refuses.
    assert!(run.stderr.contains("cannot arrive in the future"), "{}", run.stderr);
    let past = run_in(dir, &["simulate", "--duration", "2h", "--rate", "1/s", "--out", "past"]).expect(0);
    assert!(!past.stderr.contains("after now"), "{}", past.stderr);
}

fn csv_rows(path: &std::path::Path) -> Vec<BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).expect("a CSV file");
    let headers = reader.headers().expect("a header").clone();
    reader
        .records()
        .map(|record| {
            let record = record.expect("a CSV row");
            headers.iter().zip(record.iter()).map(|(name, value)| (name.to_string(), value.to_string())).collect()
        })
        .collect()
}

fn time(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text).expect("an RFC 3339 time").with_timezone(&chrono::Utc)
}

/// After `ingest --manifest`, every record an outage held back for longer than its
/// provider's `late_after_seconds` is late in the ledger (received_at − occurred_at above
/// it), and no unlabelled record is: the simulator's delivery times and thresholds make
/// outages visible to reconciliation without false timing breaks.
#[test]
fn outage_backlogs_are_late_in_the_ledger_and_normal_traffic_is_not() {
    let temp = tempfile::tempdir().expect("a temp dir");
    let dir = temp.path();
    // Many outages, and no broken fixed-width batches (whose held-back records arrive in a
    // later batch without a label of their own; see the simulator's module doc).
    std::fs::write(dir.join("sim.toml"), "[scenarios]\nprovider_outage = 8.0\nmalformed_batch = 0.0\n")
        .expect("a config file");
    run_in(
        dir,
        &[
            "simulate",
            "--seed",
            "11",
            "--duration",
            "12h",
            "--rate",
            "1/s",
            "--out",
            "sim",
            "--config-file",
            "sim.toml",
        ],
    )
    .expect(0);
    let url = format!("sqlite:{}", dir.join("ledger.db").display());
    run_in(
        dir,
        &["--config", "sim/settlewatch.toml", "--database-url", &url, "ingest", "--manifest", "sim/manifest.csv"],
    )
    .expect(0);

    let manifest = csv_rows(&dir.join("sim/manifest.csv"));
    assert!(manifest.iter().all(|row| !row["delivered_at"].is_empty()), "every file has a delivered_at");
    let config = settlement::config::Config::load(&dir.join("sim/settlewatch.toml")).expect("settlewatch.toml");
    let late_after: BTreeMap<String, i64> = config
        .providers
        .iter()
        .map(|provider| (provider.name.clone(), provider.reconciliation.late_after_seconds as i64 * 1000))
        .collect();
    let labelled: std::collections::BTreeSet<(String, String)> = csv_rows(&dir.join("sim/truth.csv"))
        .into_iter()
        .map(|row| (row["provider"].clone(), row["provider_tx_id"].clone()))
        .collect();
    let outages: Vec<(String, i64, i64)> = csv_rows(&dir.join("sim/episodes.csv"))
        .into_iter()
        .filter(|row| row["scenario"] == "provider_outage")
        .map(|row| {
            (row["provider"].clone(), time(&row["start"]).timestamp_millis(), time(&row["end"]).timestamp_millis())
        })
        .collect();
    assert!(outages.len() >= 6, "{outages:?}");

    let stored = runtime().block_on(async {
        let store = open_store(&dir.join("ledger.db")).await;
        let mut all = Vec::new();
        loop {
            let from = all.last().map_or(0, |row: &settlement::store::StoredTransaction| row.seq + 1);
            let page = store.transactions_in_seq_order(from, 10_000).await.expect("transactions");
            if page.is_empty() {
                break;
            }
            all.extend(page);
        }
        store.close().await;
        all
    });
    assert!(stored.len() > 30_000, "{}", stored.len());
    let mut held_back: BTreeMap<String, u64> = BTreeMap::new();
    for row in &stored {
        let tx = &row.transaction;
        let occurred = tx.occurred_at.timestamp_millis();
        let lateness = tx.received_at.timestamp_millis() - occurred;
        let threshold = late_after[&tx.provider];
        assert!(
            lateness >= -1_000,
            "{} {} was received before it occurred: {lateness} ms",
            tx.provider,
            tx.provider_tx_id
        );
        if !labelled.contains(&(tx.provider.clone(), tx.provider_tx_id.clone())) {
            assert!(
                lateness <= threshold,
                "{} {} is unlabelled but {lateness} ms late (threshold {threshold} ms)",
                tx.provider,
                tx.provider_tx_id
            );
        }
        // Held back by an outage and delivered at its end (or later, at a batch drop).
        let held = outages
            .iter()
            .any(|(provider, start, end)| provider == &tx.provider && *start <= occurred && occurred < end - threshold);
        if held {
            assert!(
                lateness > threshold,
                "{} {} occurred in an outage, {} ms before its end, but is only {lateness} ms late",
                tx.provider,
                tx.provider_tx_id,
                threshold
            );
            *held_back.entry(tx.provider.clone()).or_default() += 1;
        }
    }
    // Webhook providers show every long outage; here each of them had records held back.
    for provider in ["spinhub", "livedealer", "cardpay"] {
        let had_long_outage = outages
            .iter()
            .any(|(name, start, end)| name == provider && end - start > late_after[provider] + 5 * 60_000);
        if had_long_outage {
            assert!(held_back.get(provider).copied().unwrap_or(0) > 0, "{provider}: {held_back:?}");
        }
    }
    // An hourly batch file shows an outage that outlasts the hour's drop (seed 11 has two).
    assert!(held_back.get("globalwire").copied().unwrap_or(0) > 0, "{held_back:?}");
    assert!(held_back.values().sum::<u64>() > 100, "{held_back:?}");
}
