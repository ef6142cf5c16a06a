//! `settlewatch eval` and `settlewatch train` through the real binary, on a tiny generated
//! CSV (and, for training from a store, the demo's SQLite ledger).

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use common::{examples_dir, run_in};
use rand::{Rng, SeedableRng};
use training::artifact::Artifact;

/// 240 rows of three correlated features, the last 12 far out (label 1), with an id column.
fn write_dataset(dir: &Path) -> PathBuf {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut text = String::from("id,f0,f1,f2,label\n");
    for index in 0..240 {
        let base: f64 = rng.gen_range(-1.0..1.0);
        let (f0, f1, mut f2) = (base, 2.0 * base + rng.gen_range(-0.2..0.2), rng.gen_range(-0.5..0.5));
        let anomaly = index >= 228;
        if anomaly {
            f2 += 8.0 + index as f64 * 0.01;
        }
        let _ = writeln!(text, "row{index},{f0},{f1},{f2},{}", u8::from(anomaly));
    }
    let path = dir.join("tiny.csv");
    std::fs::write(&path, text).unwrap();
    path
}

fn mean_roc_auc(stdout: &str, model: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() == 9 && fields[1] == model && fields[2] == "mean"
        })
        .unwrap_or_else(|| panic!("no mean line for {model}:\n{stdout}"));
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn eval_prints_every_metric_per_seed_and_mean_for_every_model() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_dataset(dir.path());
    let csv = csv.to_str().unwrap();
    let run = run_in(
        dir.path(),
        &["eval", "--csv", csv, "--label-column", "label", "--ignore-column", "id", "--model", "all", "--seeds", "2"],
    )
    .expect(0);
    let header = run.stdout.lines().next().unwrap();
    for column in ["dataset", "model", "seed", "roc_auc", "ap", "p@k", "fit_s", "rows/s", "batch_rows/s"] {
        assert!(header.contains(column), "header lacks {column}: {header}");
    }
    for model in training::any_model::ModelKind::ALL.iter().map(|kind| kind.name()).chain(["ensemble"]) {
        let seed_lines = run
            .stdout
            .lines()
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() == 9 && fields[0] == "tiny" && fields[1] == model
            })
            .count();
        assert_eq!(seed_lines, 3, "{model}: two seeds and a mean expected:\n{}", run.stdout);
        // The anomalies are far out on one feature: every detector ranks them high (ECOD
        // least: the 12 share one tail, which it weighs like two features' ordinary tails).
        let auc = mean_roc_auc(&run.stdout, model);
        assert!(auc > 0.75, "{model}: ROC-AUC {auc}\n{}", run.stdout);
        if model == "ensemble" || model == "iforest" {
            assert!(auc > 0.95, "{model}: ROC-AUC {auc}\n{}", run.stdout);
        }
    }

    let run = run_in(
        dir.path(),
        &["eval", "--csv", csv, "--ignore-column", "id", "--model", "iforest,ensemble", "--seeds", "1", "--json"],
    )
    .expect(0);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("eval --json prints JSON");
    let evaluations = json.as_array().unwrap();
    assert_eq!(evaluations.len(), 2);
    for evaluation in evaluations {
        assert_eq!(evaluation["rows"], 240);
        assert_eq!(evaluation["anomalies"], 12);
        for metric in [
            "roc_auc",
            "average_precision",
            "precision_at_k",
            "fit_seconds",
            "rows_per_second",
            "batch_rows_per_second",
        ] {
            let value = evaluation["mean"][metric].as_f64().unwrap_or_else(|| panic!("{metric} missing"));
            assert!(value > 0.0, "{metric} = {value}");
        }
    }
}

#[test]
fn eval_refuses_a_bad_csv_with_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.csv"), "f0,f1,label\n1,2,0\n3,oops,1\n").unwrap();
    let run = run_in(dir.path(), &["eval", "--csv", "bad.csv", "--model", "iforest", "--seeds", "1"]).expect(1);
    assert!(run.stderr.contains("bad.csv: line 3, column \"f1\": \"oops\" is not a finite number"), "{}", run.stderr);
    let run = run_in(dir.path(), &["eval", "--csv", "missing.csv"]).expect(1);
    assert!(run.stderr.contains("missing.csv"), "{}", run.stderr);
    let run = run_in(dir.path(), &["eval", "--csv", "bad.csv", "--model", "forest"]).expect(1);
    assert!(run.stderr.contains("--model \"forest\": not a detector"), "{}", run.stderr);
    let run = run_in(dir.path(), &["train", "--data", "bad.csv", "--out", "m"]).expect(1);
    assert!(run.stderr.contains("line 3, column \"f1\""), "{}", run.stderr);
    assert!(!dir.path().join("m").exists());
}

#[test]
fn train_writes_an_artifact_that_loads_and_scores_like_eval_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_dataset(dir.path());
    let out = dir.path().join("models/tiny");
    let train = |data: &std::path::Path| {
        let (data, out) = (data.to_str().unwrap(), out.to_str().unwrap());
        let arguments = ["--label-column", "label", "--out", out, "--seed", "4", "--alert-rate", "0.05"];
        let mut all = vec!["train", "--data", data];
        all.extend(arguments);
        all.extend(["--target-precision", "0.9", "--created-at", "2026-11-25T12:00:00Z"]);
        run_in(dir.path(), &all)
    };
    let run = train(&csv);
    // The id column is not numeric and not one of the exported id columns.
    let run = run.expect(1);
    assert!(run.stderr.contains("column \"id\""), "{}", run.stderr);

    let plain = dir.path().join("plain.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let without_id: String = text.lines().map(|line| line.split_once(',').unwrap().1.to_string() + "\n").collect();
    std::fs::write(&plain, without_id).unwrap();
    let run = train(&plain).expect(0);
    assert!(run.stdout.contains("trained ensemble on 240 rows × 3 features"), "{}", run.stdout);
    assert!(run.stdout.contains("ROC-AUC"), "{}", run.stdout);
    let artifact = Artifact::load(&out).unwrap();
    let metadata = &artifact.metadata;
    assert_eq!(metadata.created_at, "2026-11-25T12:00:00Z");
    assert_eq!(metadata.seed, 4);
    assert_eq!(metadata.training.rows, 240);
    assert_eq!(metadata.training.labelled_anomalies, Some(12));
    assert_eq!(metadata.feature_schema.names, ["f0", "f1", "f2"]);
    assert_eq!(metadata.thresholds.len(), 2);
    assert_eq!(metadata.thresholds[0].alerts, 12);
    assert!(metadata.thresholds[0].precision.unwrap() > 0.9, "{:?}", metadata.thresholds[0]);
    assert!(metadata.thresholds[1].precision.unwrap() >= 0.9);
    assert!(metadata.metrics.as_ref().unwrap().roc_auc > 0.95);
    // The first anomaly scores above the recorded alert threshold, a typical row below it.
    let threshold = metadata.thresholds[0].score;
    let anomaly = [0.1, 0.2, 8.5];
    let typical = [0.0, 0.0, 0.0];
    assert!(artifact.score(&anomaly).unwrap() >= threshold);
    assert!(artifact.score(&typical).unwrap() < threshold);
    assert_eq!(artifact.top_features(&anomaly, 1).unwrap()[0].name, "f2");
    assert!(artifact.score(&[1.0, 2.0]).is_err());
}

#[test]
fn train_reads_a_store_through_the_feature_extractor() {
    let dir = tempfile::tempdir().unwrap();
    run_in(dir.path(), &["demo", "--examples", examples_dir().to_str().unwrap()]).expect(0);
    let run = run_in(
        dir.path(),
        &["train", "--data", "sqlite:settlewatch-demo.db", "--model", "iforest", "--out", "demo-model.json"],
    )
    .expect(0);
    assert!(run.stdout.contains("trained iforest on 14 rows"), "{}", run.stdout);
    assert!(run.stdout.contains("training window: 2026-11-2"), "{}", run.stdout);
    let artifact = Artifact::load(&dir.path().join("demo-model.json")).unwrap();
    let schema = &artifact.metadata.feature_schema;
    settlement::features::SCHEMA.check(&schema.name, schema.version, &schema.names).unwrap();
    assert_eq!(artifact.metadata.training.source, "sqlite:settlewatch-demo.db");

    // The same ledger exported to CSV trains the same model: export and store read share the extractor.
    run_in(
        dir.path(),
        &["features", "export", "--database-url", "sqlite:settlewatch-demo.db", "--out", "features.csv"],
    )
    .expect(0);
    run_in(dir.path(), &["train", "--data", "features.csv", "--model", "iforest", "--out", "csv-model.json"]).expect(0);
    let from_csv = Artifact::load(&dir.path().join("csv-model.json")).unwrap();
    assert_eq!(from_csv.metadata.feature_schema, artifact.metadata.feature_schema);
    assert_eq!(from_csv.model, artifact.model, "a model trained on the export differs from one trained on the store");

    // An export whose header is not this build's schema is refused, naming the difference.
    let text = std::fs::read_to_string(dir.path().join("features.csv")).unwrap();
    let first = settlement::features::SCHEMA.names[0];
    std::fs::write(dir.path().join("renamed.csv"), text.replacen(first, "renamed_feature", 1)).unwrap();
    let run = run_in(dir.path(), &["train", "--data", "renamed.csv", "--out", "renamed.json"]).expect(1);
    assert!(run.stderr.contains("not this build's schema"), "{}", run.stderr);
    assert!(run.stderr.contains("renamed_feature"), "{}", run.stderr);
}

#[test]
fn the_shipped_default_model_loads_and_matches_this_builds_feature_schema() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default");
    let artifact = Artifact::load(&path).expect("models/default loads");
    let schema = &artifact.metadata.feature_schema;
    // A changed feature schema must come with a retrained default model (README has the command).
    if let Err(error) = settlement::features::SCHEMA.check(&schema.name, schema.version, &schema.names) {
        panic!("models/default is refused: {error}; retrain it with the command in README.md");
    }
    assert_eq!(artifact.metadata.model_kind, "ensemble");
    assert!(!artifact.metadata.thresholds.is_empty());
    let typical = artifact.metadata.feature_medians.clone();
    let score = artifact.score(&typical).unwrap();
    assert!((0.0..=1.0).contains(&score), "{score}");
    assert!(score < artifact.metadata.thresholds[0].score, "the typical row alerts: {score}");
    let top = artifact.top_features(&typical, 3).unwrap();
    assert_eq!(top.len(), 3);
}
