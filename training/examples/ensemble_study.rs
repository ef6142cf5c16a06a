//! How the ensemble's members and combination were chosen: fits every detector once per
//! dataset and seed, calibrates each on its training scores, then measures the ROC-AUC of
//! every member subset (two or more members) under each combination, on the same scores.
//! Prints one line per subset and combination: the mean ROC-AUC over the datasets, the
//! per-dataset means, and the number of datasets where it beats the best single peer.
//!
//! `cargo run --release -p training --example ensemble_study -- SEEDS PEERS.tsv FILE.csv.gz...`
//! (PEERS.tsv as `peer_baselines.py` writes it; `-` to skip the peer comparison).

use std::collections::HashMap;
use std::path::Path;

use training::any_model::ModelKind;
use training::dataset::{load_csv, DatasetOptions};
use training::ensemble::{combine, CalibratedModel, Combination};
use training::metrics::roc_auc;
use training::{Fit, Model};

fn best_peers(path: &str) -> HashMap<String, f64> {
    let mut best = HashMap::new();
    if path == "-" {
        return best;
    }
    let text = std::fs::read_to_string(path).expect("peers file");
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split('\t').collect();
        let auc: f64 = fields[6].parse().expect("roc_auc column");
        let entry = best.entry(fields[0].to_string()).or_insert(0.0f64);
        *entry = entry.max(auc);
    }
    best
}

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let seeds: u64 = arguments[0].parse().expect("seeds");
    let peers = best_peers(&arguments[1]);
    let kinds = ModelKind::ALL;
    let options = DatasetOptions { label_column: Some("label".into()), ignore_columns: vec![] };
    let subsets: Vec<Vec<usize>> = (1u32..(1 << kinds.len()))
        .map(|mask| (0..kinds.len()).filter(|bit| mask & (1 << bit) != 0).collect::<Vec<_>>())
        .collect();
    let combinations = [Combination::Mean, Combination::Median, Combination::TailEvidence];
    // results[subset][combination] = per-dataset mean ROC-AUC
    let mut results = vec![vec![Vec::new(); combinations.len()]; subsets.len()];
    let mut names = Vec::new();
    for path in &arguments[2..] {
        let dataset = load_csv(Path::new(path), &options).expect("dataset");
        let labels = dataset.labels.clone().expect("labels");
        let rows = dataset.rows.view();
        let name = Path::new(path).file_name().unwrap().to_string_lossy().replace(".csv.gz", "");
        eprintln!("{name}");
        names.push(name);
        let mut sums = vec![vec![0.0; combinations.len()]; subsets.len()];
        for seed in 0..seeds {
            // Each member's calibrated scores of every row, computed once.
            let members: Vec<Vec<f64>> = kinds
                .iter()
                .map(|kind| {
                    let model = kind.default_params().fit(rows, seed).expect("fit");
                    let member = CalibratedModel::calibrate(model, rows).expect("calibrate");
                    let raw = member.model.score_rows(rows);
                    raw.iter().map(|&score| member.calibration.calibrate(score)).collect()
                })
                .collect();
            for (subset_index, subset) in subsets.iter().enumerate() {
                for (combination_index, &combination) in combinations.iter().enumerate() {
                    // The same combination rules as `Ensemble`.
                    let scores: Vec<f64> = (0..rows.nrows())
                        .map(|row| {
                            let mut values: Vec<f64> = subset.iter().map(|&member| members[member][row]).collect();
                            combine(combination, &mut values)
                        })
                        .collect();
                    sums[subset_index][combination_index] += roc_auc(&scores, &labels).expect("auc");
                }
            }
        }
        for (subset_index, row) in sums.iter().enumerate() {
            for (combination_index, sum) in row.iter().enumerate() {
                results[subset_index][combination_index].push(sum / seeds as f64);
            }
        }
    }
    println!("members\tcombination\tmean_roc_auc\twins_vs_best_peer\t{}", names.join("\t"));
    for (subset_index, subset) in subsets.iter().enumerate() {
        for (combination_index, combination) in combinations.iter().enumerate() {
            if subset.len() == 1 && combination_index > 0 {
                continue;
            }
            let values = &results[subset_index][combination_index];
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let wins = names
                .iter()
                .zip(values)
                .filter(|(name, value)| peers.get(*name).is_some_and(|best| **value >= *best))
                .count();
            let members: Vec<&str> = subset.iter().map(|&index| kinds[index].name()).collect();
            let per_dataset: Vec<String> = values.iter().map(|value| format!("{value:.4}")).collect();
            println!("{}\t{combination:?}\t{mean:.4}\t{wins}\t{}", members.join("+"), per_dataset.join("\t"));
        }
    }
}
