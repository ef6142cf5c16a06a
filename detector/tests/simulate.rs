//! `settlewatch simulate` end to end: the real binary simulates a few hours into a temp
//! dir, then `settlewatch ingest` takes every file with the written settlewatch.toml and
//! reports, file by file, exactly what the manifest (and so the truth file) expects.

mod common;

use std::collections::BTreeMap;

use common::run_in;

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
    let past = run_in(dir, &["simulate", "--duration", "2h", "--rate", "1/s", "--out", "past"]).expect(0);
    assert!(!past.stderr.contains("after now"), "{}", past.stderr);
}
