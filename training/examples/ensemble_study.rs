//! How the ensemble's members and combination were chosen: fits every detector once per
//! dataset and seed, calibrates each on its training scores, then measures every member
//! subset under each combination rule, on the same calibrated scores (so a difference
//! between two rules or two subsets is never a difference of fitting noise).
//!
//! Prints one line per subset and rule: the mean ROC-AUC over the datasets, the number of
//! datasets where it is at or above the best single peer's ROC-AUC, the mean average
//! precision (AP) and the mean R-precision (precision among the top `anomalies` rows), then
//! the per-dataset ROC-AUC and AP. ROC-AUC weighs the whole ranking; AP and R-precision
//! weigh its top, which is what an analyst reads, so a rule is judged on both.
//!
//! `cargo run --release -p training --example ensemble_study -- SEEDS PEERS.tsv FILE.csv.gz...`
//! (PEERS.tsv as `peer_baselines.py` writes it; `-` to skip the peer comparison).
//! `STUDY_MEMBERS='iforest;mad;gmm{"reg_covariance":0.1}'` sets the detectors (default: all of
//! `ModelKind::ALL` with default parameters): `;`-separated names, each optionally followed
//! by a JSON object of parameters that replace the defaults, so a member variant can be
//! measured beside the others.
//!
//! Besides the library's [`Combination`]s the study measures rules that are not (or not yet)
//! in the library, so that one can be judged before it is adopted: the maximum, the mean or
//! tail evidence over the most alarmed half of the members, tail evidence without the least
//! alarmed member, and the mean of tail evidence over every such truncation.

use std::collections::HashMap;
use std::path::Path;

use training::any_model::{AnyParams, ModelKind};
use training::dataset::{load_csv, DatasetOptions};
use training::ensemble::{combine, from_mean_log_tail, log_tail, CalibratedModel, Combination};
use training::metrics::{average_precision, precision_at_k, roc_auc};
use training::{Fit, Model};

/// A combination rule under study.
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// A rule the library implements.
    Library(Combination),
    /// The largest calibrated score.
    Max,
    /// The arithmetic mean of the `ceil(m/2)` largest calibrated scores.
    TopHalfMean,
    /// Tail evidence (geometric mean of `1 - p`) over the `ceil(m/2)` largest scores.
    TopHalfTail,
    /// Tail evidence over all members but the least alarmed one.
    DropLeastTail,
    /// The mean over every truncation `k = 1..m` of the tail evidence of the `k` most
    /// alarmed members (weights `Σ_{k≥rank} 1/k`): no single `k` is chosen.
    AllTruncationsTail,
}

impl Rule {
    fn name(self) -> String {
        match self {
            Rule::Library(combination) => format!("{combination:?}"),
            Rule::Max => "Max".into(),
            Rule::TopHalfMean => "TopHalfMean".into(),
            Rule::TopHalfTail => "TopHalfTail".into(),
            Rule::DropLeastTail => "DropLeastTail".into(),
            Rule::AllTruncationsTail => "AllTruncationsTail".into(),
        }
    }

    fn combine(self, scores: &mut [f64]) -> f64 {
        let top_half = |scores: &mut [f64]| {
            scores.sort_unstable_by(|a, b| b.total_cmp(a));
            scores.len().div_ceil(2)
        };
        match self {
            Rule::Library(combination) => combine(combination, scores),
            Rule::Max => scores.iter().copied().fold(0.0, f64::max),
            Rule::TopHalfMean => {
                let kept = top_half(scores);
                scores[..kept].iter().sum::<f64>() / kept as f64
            }
            Rule::TopHalfTail => {
                let kept = top_half(scores);
                combine(Combination::TailEvidence, &mut scores[..kept])
            }
            Rule::DropLeastTail => {
                scores.sort_unstable_by(|a, b| b.total_cmp(a));
                let kept = (scores.len() - 1).max(1);
                combine(Combination::TailEvidence, &mut scores[..kept])
            }
            Rule::AllTruncationsTail => {
                scores.sort_unstable_by(|a, b| b.total_cmp(a));
                let m = scores.len();
                let weights: Vec<f64> =
                    (1..=m).map(|rank| (rank..=m).map(|k| 1.0 / k as f64).sum::<f64>() / m as f64).collect();
                let mean_log_tail =
                    scores.iter().zip(&weights).map(|(score, weight)| weight * log_tail(*score)).sum::<f64>();
                from_mean_log_tail(mean_log_tail)
            }
        }
    }
}

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

/// Per-dataset means over seeds of one subset under one rule.
#[derive(Clone, Default)]
struct Figures {
    roc_auc: Vec<f64>,
    average_precision: Vec<f64>,
    r_precision: Vec<f64>,
}

/// A detector's parameters from `name` or `name{json overrides}`.
fn member_params(spec: &str) -> AnyParams {
    let (name, overrides) = match spec.find('{') {
        Some(brace) => (&spec[..brace], &spec[brace..]),
        None => (spec, "{}"),
    };
    let kind = ModelKind::parse(name).unwrap_or_else(|| panic!("{name} is not a detector"));
    let mut params = serde_json::to_value(kind.default_params()).expect("parameters serialise");
    let overrides: serde_json::Value = serde_json::from_str(overrides).expect("overrides are a JSON object");
    for (key, value) in overrides.as_object().expect("overrides are a JSON object") {
        assert!(params.get(key).is_some(), "{name} has no parameter {key}");
        params[key] = value.clone();
    }
    serde_json::from_value(params).expect("valid parameters")
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let seeds: u64 = arguments[0].parse().expect("seeds");
    let peers = best_peers(&arguments[1]);
    let specs: Vec<String> = match std::env::var("STUDY_MEMBERS") {
        Ok(specs) => specs.split(';').map(str::to_string).collect(),
        Err(_) => ModelKind::ALL.iter().map(|kind| kind.name().to_string()).collect(),
    };
    let kinds: Vec<AnyParams> = specs.iter().map(|spec| member_params(spec)).collect();
    let options = DatasetOptions { label_column: Some("label".into()), ignore_columns: vec![] };
    let subsets: Vec<Vec<usize>> = (1u32..(1 << kinds.len()))
        .map(|mask| (0..kinds.len()).filter(|bit| mask & (1 << bit) != 0).collect::<Vec<_>>())
        .collect();
    let rules = [
        Rule::Library(Combination::Mean),
        Rule::Library(Combination::Median),
        Rule::Library(Combination::TailEvidence),
        Rule::Library(Combination::RankWeightedTailEvidence),
        Rule::Max,
        Rule::TopHalfMean,
        Rule::TopHalfTail,
        Rule::DropLeastTail,
        Rule::AllTruncationsTail,
    ];
    let mut results = vec![vec![Figures::default(); rules.len()]; subsets.len()];
    let mut names = Vec::new();
    for path in &arguments[2..] {
        let dataset = load_csv(Path::new(path), &options).expect("dataset");
        let labels = dataset.labels.clone().expect("labels");
        let anomalies = labels.iter().filter(|&&label| label).count();
        let rows = dataset.rows.view();
        let name = Path::new(path).file_name().unwrap().to_string_lossy().replace(".csv.gz", "");
        eprintln!("{name}");
        names.push(name);
        let mut sums = vec![vec![[0.0; 3]; rules.len()]; subsets.len()];
        for seed in 0..seeds {
            // Each member's calibrated scores of every row, computed once.
            let members: Vec<Vec<f64>> = kinds
                .iter()
                .map(|params| {
                    let model = params.fit(rows, seed).expect("fit");
                    let member = CalibratedModel::calibrate(model, rows).expect("calibrate");
                    let raw = member.model.score_rows(rows);
                    raw.iter().map(|&score| member.calibration.calibrate(score)).collect()
                })
                .collect();
            for (subset_index, subset) in subsets.iter().enumerate() {
                for (rule_index, &rule) in rules.iter().enumerate() {
                    if subset.len() == 1 && rule_index > 0 {
                        continue;
                    }
                    let mut values = vec![0.0; subset.len()];
                    let scores: Vec<f64> = (0..rows.nrows())
                        .map(|row| {
                            for (value, &member) in values.iter_mut().zip(subset) {
                                *value = members[member][row];
                            }
                            rule.combine(&mut values)
                        })
                        .collect();
                    let sum = &mut sums[subset_index][rule_index];
                    sum[0] += roc_auc(&scores, &labels).expect("auc");
                    sum[1] += average_precision(&scores, &labels).expect("ap");
                    sum[2] += precision_at_k(&scores, &labels, anomalies).expect("r-precision");
                }
            }
        }
        for (subset_index, row) in sums.iter().enumerate() {
            for (rule_index, sum) in row.iter().enumerate() {
                let figures = &mut results[subset_index][rule_index];
                figures.roc_auc.push(sum[0] / seeds as f64);
                figures.average_precision.push(sum[1] / seeds as f64);
                figures.r_precision.push(sum[2] / seeds as f64);
            }
        }
    }
    let auc_headers: Vec<String> = names.iter().map(|name| format!("auc:{name}")).collect();
    let ap_headers: Vec<String> = names.iter().map(|name| format!("ap:{name}")).collect();
    println!(
        "members\tcombination\tmean_roc_auc\twins_vs_best_peer\tmean_ap\tmean_r_precision\t{}\t{}",
        auc_headers.join("\t"),
        ap_headers.join("\t")
    );
    for (subset_index, subset) in subsets.iter().enumerate() {
        for (rule_index, rule) in rules.iter().enumerate() {
            if subset.len() == 1 && rule_index > 0 {
                continue;
            }
            let figures = &results[subset_index][rule_index];
            let wins = names
                .iter()
                .zip(&figures.roc_auc)
                .filter(|(name, value)| peers.get(*name).is_some_and(|best| **value >= *best))
                .count();
            let members: Vec<&str> = subset.iter().map(|&index| specs[index].as_str()).collect();
            let aucs: Vec<String> = figures.roc_auc.iter().map(|value| format!("{value:.4}")).collect();
            let aps: Vec<String> = figures.average_precision.iter().map(|value| format!("{value:.4}")).collect();
            println!(
                "{}\t{}\t{:.4}\t{wins}\t{:.4}\t{:.4}\t{}\t{}",
                members.join("+"),
                if subset.len() == 1 { "single".into() } else { rule.name() },
                mean(&figures.roc_auc),
                mean(&figures.average_precision),
                mean(&figures.r_precision),
                aucs.join("\t"),
                aps.join("\t")
            );
        }
    }
}
