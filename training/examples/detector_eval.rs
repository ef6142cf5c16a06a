//! Quick development check of one detector on labelled CSV files: mean ROC-AUC over seeds,
//! fit seconds and single-threaded scoring rows/s. The real side-by-side evaluation is
//! `settlewatch eval`; this exists so a detector can be checked without the CLI.
//!
//! `cargo run --release -p training --example detector_eval -- iforest 5 FILE.csv.gz...`

use std::path::Path;
use std::time::Instant;

use ndarray::ArrayView2;
use training::dataset::{load_csv, DatasetOptions};
use training::ecod::EcodParams;
use training::gaussian_mixture::GaussianMixtureParams;
use training::hbos::HbosParams;
use training::isolation_forest::IsolationForestParams;
use training::knn::KnnParams;
use training::metrics::{average_precision, roc_auc};
use training::pca::{PcaParams, PcaScore};
use training::robust_baseline::{Aggregation, RobustBaselineParams};
use training::{Fit, Model};

fn run<P: Fit>(params: &P, rows: ArrayView2<'_, f64>, labels: &[bool], seed: u64) -> (f64, f64, f64, f64) {
    let started = Instant::now();
    let model = params.fit(rows, seed).expect("fit");
    let fit_seconds = started.elapsed().as_secs_f64();
    // SCORE_REPEAT=N scores N times (for CPU-time measurements on a busy machine).
    let repeat: usize = std::env::var("SCORE_REPEAT").ok().and_then(|value| value.parse().ok()).unwrap_or(1);
    let started = Instant::now();
    let mut scores = model.score_rows(rows);
    for _ in 1..repeat {
        scores = model.score_rows(rows);
    }
    let score_seconds = started.elapsed().as_secs_f64() / repeat as f64;
    let scores = scores.to_vec();
    let auc = roc_auc(&scores, labels).expect("auc");
    let ap = average_precision(&scores, labels).expect("ap");
    (auc, ap, fit_seconds, rows.nrows() as f64 / score_seconds)
}

/// Scores of `params` fitted on `rows`, as ranks in (0, 1] (ties share their mean rank).
fn ranks<P: Fit>(params: &P, rows: ArrayView2<'_, f64>, seed: u64) -> Vec<f64> {
    let scores = params.fit(rows, seed).expect("fit").score_rows(rows).to_vec();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut result = vec![0.0; scores.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let rank = (start + end + 1) as f64 / 2.0 / scores.len() as f64;
        for &index in &order[start..end] {
            result[index] = rank;
        }
        start = end;
    }
    result
}

/// A development-only rank-average ensemble of the detectors named in ENSEMBLE (comma
/// separated), to see what the detectors add up to; the real ensemble is the harness's.
fn run_ensemble(rows: ArrayView2<'_, f64>, labels: &[bool], seed: u64) -> (f64, f64, f64, f64) {
    let members = std::env::var("ENSEMBLE").unwrap_or_else(|_| "iforest,ecod,hbos,gmm,pca,knn,mad".into());
    let started = Instant::now();
    let mut total = vec![0.0; rows.nrows()];
    for member in members.split(',') {
        let member_ranks = match member {
            "iforest" => ranks(&IsolationForestParams::default(), rows, seed),
            "ecod" => ranks(&EcodParams::default(), rows, seed),
            "hbos" => ranks(&HbosParams::default(), rows, seed),
            "gmm" => ranks(&GaussianMixtureParams::default(), rows, seed),
            "pca" => ranks(&PcaParams::default(), rows, seed),
            "knn" => ranks(&KnnParams::default(), rows, seed),
            "mad" => ranks(&RobustBaselineParams::default(), rows, seed),
            other => panic!("unknown member {other}"),
        };
        // ENSEMBLE_COMBINE=fisher adds -ln(1 - rank) (tail evidence) instead of the rank.
        let fisher = std::env::var("ENSEMBLE_COMBINE").is_ok_and(|value| value == "fisher");
        let n = member_ranks.len() as f64;
        for (sum, rank) in total.iter_mut().zip(member_ranks) {
            *sum += if fisher { -(1.0 - rank + 1.0 / (n + 1.0)).ln() } else { rank };
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let auc = roc_auc(&total, labels).expect("auc");
    let ap = average_precision(&total, labels).expect("ap");
    (auc, ap, seconds, rows.nrows() as f64 / seconds)
}

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let detector = arguments[0].clone();
    let seeds: u64 = arguments[1].parse().expect("seeds");
    let options = DatasetOptions { label_column: Some("label".into()), ignore_columns: vec![] };
    println!("dataset\tdetector\troc_auc\tap\tfit_s\trows_per_s\tper_seed");
    for path in &arguments[2..] {
        let dataset = load_csv(Path::new(path), &options).expect("dataset");
        let labels = dataset.labels.clone().expect("labels");
        let rows = dataset.rows.view();
        let mut results = Vec::new();
        for seed in 0..seeds {
            let result = match detector.as_str() {
                "iforest" => run(&IsolationForestParams::default(), rows, &labels, seed),
                "ecod" => run(&EcodParams::default(), rows, &labels, seed),
                "mad" => run(&RobustBaselineParams::default(), rows, &labels, seed),
                "mad-max" => run(&RobustBaselineParams { aggregation: Aggregation::Max }, rows, &labels, seed),
                "gmm" => run(&GaussianMixtureParams::default(), rows, &labels, seed),
                "pca" => run(&PcaParams::default(), rows, &labels, seed),
                "pca-weighted" => {
                    run(&PcaParams { score: PcaScore::WeightedMinor, ..Default::default() }, rows, &labels, seed)
                }
                "pca-all" => {
                    run(&PcaParams { score: PcaScore::WeightedAll, ..Default::default() }, rows, &labels, seed)
                }
                "hbos" => run(&HbosParams::default(), rows, &labels, seed),
                "knn" => run(&KnnParams::default(), rows, &labels, seed),
                "ensemble" => run_ensemble(rows, &labels, seed),
                other => panic!("unknown detector {other}"),
            };
            results.push(result);
        }
        let count = results.len() as f64;
        let mean = |pick: fn(&(f64, f64, f64, f64)) -> f64| results.iter().map(pick).sum::<f64>() / count;
        let mut fits: Vec<f64> = results.iter().map(|r| r.2).collect();
        fits.sort_by(f64::total_cmp);
        let mut speeds: Vec<f64> = results.iter().map(|r| r.3).collect();
        speeds.sort_by(f64::total_cmp);
        let name = Path::new(path).file_name().unwrap().to_string_lossy().replace(".csv.gz", "");
        let per_seed: Vec<String> = results.iter().map(|r| format!("{:.4}", r.0)).collect();
        println!(
            "{name}\t{detector}\t{:.4}\t{:.4}\t{:.5}\t{:.0}\t{}",
            mean(|r| r.0),
            mean(|r| r.1),
            fits[fits.len() / 2],
            speeds[speeds.len() / 2],
            per_seed.join(";")
        );
    }
}
