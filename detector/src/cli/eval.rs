//! `settlewatch eval`: how well, and how fast, each detector ranks the anomalies of labelled
//! CSV files, under the protocol of the reference datasets (fit on all rows without their
//! labels, score all rows, compare the ranking with the labels; several seeds). Prints, per
//! file, model and seed and as a mean over seeds: ROC-AUC, average precision, precision@k
//! (k = number of anomalies), fit seconds and scoring rows/s (timed apart from the fit: one
//! thread, as serving scores, and batch over every core with `training::batch`); the mean
//! line averages the metrics over seeds and gives the timings' median. Single detectors are
//! measured on their raw scores (calibration does not change a ranking); the ensemble on
//! its calibrated, combined score.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _};
use training::any_model::{EnsembleParams, ModelKind};
use training::batch::score_rows_parallel;
use training::dataset::{load_csv, DatasetOptions};
use training::metrics::{average_precision, precision_at_k, roc_auc};
use training::{Fit, Model};

/// Seeds one evaluation may run per model.
pub const SEEDS_MAX: u64 = 100;
/// Scoring passes are repeated until at least this long has been timed.
const SCORING_SECONDS_MIN: f64 = 0.05;
/// Scoring passes timed at most per fit.
const SCORING_PASSES_MAX: usize = 1_000;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Labelled CSV files (plain or gzip), each evaluated on its own.
    #[arg(long = "csv", required = true, num_args = 1..)]
    pub csv: Vec<PathBuf>,
    /// The 0/1 label column (1 = anomaly).
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// Detector: iforest, ecod, ..., ensemble, or all (every detector and the ensemble);
    /// several may be given separated by commas.
    #[arg(long, default_value = "all")]
    pub model: String,
    /// Seeds 0..N, one fit each.
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// Columns that are neither features nor the label (ids, text).
    #[arg(long = "ignore-column")]
    pub ignore_columns: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A detector under evaluation: one of the kinds, or the default ensemble.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Candidate {
    Single(ModelKind),
    Ensemble,
}

impl Candidate {
    fn name(self) -> &'static str {
        match self {
            Candidate::Single(kind) => kind.name(),
            Candidate::Ensemble => "ensemble",
        }
    }
}

fn parse_models(spec: &str) -> anyhow::Result<Vec<Candidate>> {
    let mut candidates = Vec::new();
    for name in spec.split(',').map(str::trim) {
        match name {
            "all" => {
                candidates.extend(ModelKind::ALL.iter().map(|&kind| Candidate::Single(kind)));
                candidates.push(Candidate::Ensemble);
            }
            "ensemble" => candidates.push(Candidate::Ensemble),
            other => match ModelKind::parse(other) {
                Some(kind) => candidates.push(Candidate::Single(kind)),
                None => {
                    let known: Vec<&str> = ModelKind::ALL.iter().map(|kind| kind.name()).collect();
                    bail!("--model {other:?}: not a detector (known: {}, ensemble, all)", known.join(", "));
                }
            },
        }
    }
    candidates.dedup();
    Ok(candidates)
}

/// One fit and scoring.
struct SeedResult {
    seed: u64,
    roc_auc: f64,
    average_precision: f64,
    precision_at_k: f64,
    fit_seconds: f64,
    /// One thread (`Model::score_rows`).
    rows_per_second: f64,
    /// Every core (`training::batch::score_rows_parallel`).
    batch_rows_per_second: f64,
}

struct Evaluation {
    dataset: String,
    rows: usize,
    features: usize,
    anomalies: usize,
    model: &'static str,
    seeds: Vec<SeedResult>,
}

impl Evaluation {
    fn mean(&self, pick: impl Fn(&SeedResult) -> f64) -> f64 {
        self.seeds.iter().map(pick).sum::<f64>() / self.seeds.len() as f64
    }

    fn median(&self, pick: impl Fn(&SeedResult) -> f64) -> f64 {
        let mut values: Vec<f64> = self.seeds.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        if values.len() % 2 == 1 {
            values[middle]
        } else {
            (values[middle - 1] + values[middle]) / 2.0
        }
    }

    /// The "mean" line: quality metrics averaged over seeds, timings as their median (as the
    /// peer script reports them; one slow fit on a busy machine does not move a median).
    fn summary(&self) -> SeedResult {
        SeedResult {
            seed: 0,
            roc_auc: self.mean(|result| result.roc_auc),
            average_precision: self.mean(|result| result.average_precision),
            precision_at_k: self.mean(|result| result.precision_at_k),
            fit_seconds: self.median(|result| result.fit_seconds),
            rows_per_second: self.median(|result| result.rows_per_second),
            batch_rows_per_second: self.median(|result| result.batch_rows_per_second),
        }
    }
}

fn dataset_name(path: &Path) -> String {
    let name = path.file_name().map_or_else(|| path.display().to_string(), |name| name.to_string_lossy().into_owned());
    name.trim_end_matches(".gz").trim_end_matches(".csv").to_string()
}

fn evaluate(
    candidate: Candidate,
    rows: ndarray::ArrayView2<'_, f64>,
    labels: &[bool],
    seed: u64,
) -> anyhow::Result<SeedResult> {
    let started = Instant::now();
    let model: Box<dyn Model + Sync> = match candidate {
        Candidate::Single(kind) => Box::new(kind.default_params().fit(rows, seed)?),
        Candidate::Ensemble => Box::new(EnsembleParams::default().fit(rows, seed)?),
    };
    let fit_seconds = started.elapsed().as_secs_f64();
    let scores = model.score_rows(rows);
    let score_seconds = seconds_per_pass(|| model.score_rows(rows));
    let batch_score_seconds = seconds_per_pass(|| score_rows_parallel(model.as_ref(), rows));
    let scores = scores.as_slice().context("scores are contiguous")?;
    let anomalies = labels.iter().filter(|&&label| label).count();
    Ok(SeedResult {
        seed,
        roc_auc: roc_auc(scores, labels)?,
        average_precision: average_precision(scores, labels)?,
        precision_at_k: precision_at_k(scores, labels, anomalies)?,
        fit_seconds,
        rows_per_second: rows.nrows() as f64 / score_seconds.max(1e-9),
        batch_rows_per_second: rows.nrows() as f64 / batch_score_seconds.max(1e-9),
    })
}

/// Seconds one scoring pass takes, timed over whole passes until SCORING_SECONDS_MIN has
/// elapsed, so that a small dataset's millisecond pass is not lost in timer and scheduler
/// noise.
fn seconds_per_pass<T>(mut pass: impl FnMut() -> T) -> f64 {
    let started = Instant::now();
    let mut passes = 0;
    while passes == 0 || (started.elapsed().as_secs_f64() < SCORING_SECONDS_MIN && passes < SCORING_PASSES_MAX) {
        std::hint::black_box(pass());
        passes += 1;
    }
    started.elapsed().as_secs_f64() / passes as f64
}

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    if args.seeds == 0 || args.seeds > SEEDS_MAX {
        bail!("--seeds {}: between 1 and {SEEDS_MAX}", args.seeds);
    }
    let candidates = parse_models(&args.model)?;
    let options =
        DatasetOptions { label_column: Some(args.label_column.clone()), ignore_columns: args.ignore_columns.clone() };
    let mut evaluations = Vec::new();
    if !args.json {
        println!(
            "{:<14} {:<9} {:>5} {:>8} {:>8} {:>8} {:>10} {:>11} {:>11}",
            "dataset", "model", "seed", "roc_auc", "ap", "p@k", "fit_s", "rows/s", "batch_rows/s"
        );
    }
    for path in &args.csv {
        let dataset = load_csv(path, &options)?;
        let labels = dataset.labels.clone().context("the label column was read")?;
        let anomalies = labels.iter().filter(|&&label| label).count();
        if anomalies == 0 || anomalies == labels.len() {
            bail!("{}: the label column needs both 0 and 1 rows to rank against", path.display());
        }
        let name = dataset_name(path);
        for &candidate in &candidates {
            let mut evaluation = Evaluation {
                dataset: name.clone(),
                rows: dataset.rows.nrows(),
                features: dataset.rows.ncols(),
                anomalies,
                model: candidate.name(),
                seeds: Vec::new(),
            };
            for seed in 0..args.seeds {
                let result = evaluate(candidate, dataset.rows.view(), &labels, seed)
                    .with_context(|| format!("{}: {} seed {seed}", path.display(), candidate.name()))?;
                if !args.json {
                    print_line(&evaluation.dataset, evaluation.model, &result.seed.to_string(), &result);
                }
                evaluation.seeds.push(result);
            }
            if !args.json {
                print_line(&evaluation.dataset, evaluation.model, "mean", &evaluation.summary());
            }
            evaluations.push(evaluation);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&evaluations))?);
    } else if args.csv.len() > 1 {
        print!("{}", summary(&evaluations, &candidates));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_line(dataset: &str, model: &str, seed: &str, result: &SeedResult) {
    println!(
        "{dataset:<14} {model:<9} {seed:>5} {:>8.4} {:>8.4} {:>8.4} {:>10.6} {:>11.0} {:>11.0}",
        result.roc_auc,
        result.average_precision,
        result.precision_at_k,
        result.fit_seconds,
        result.rows_per_second,
        result.batch_rows_per_second
    );
}

/// Mean ROC-AUC per dataset and model, then each model's mean over the datasets.
fn summary(evaluations: &[Evaluation], candidates: &[Candidate]) -> String {
    let mut text = String::from("\nmean ROC-AUC over seeds\n");
    let _ = write!(text, "{:<14}", "dataset");
    for candidate in candidates {
        let _ = write!(text, " {:>9}", candidate.name());
    }
    text.push('\n');
    let mut datasets: Vec<&str> = Vec::new();
    for evaluation in evaluations {
        if !datasets.contains(&evaluation.dataset.as_str()) {
            datasets.push(&evaluation.dataset);
        }
    }
    let cell = |dataset: &str, model: &str| {
        evaluations
            .iter()
            .find(|evaluation| evaluation.dataset == dataset && evaluation.model == model)
            .map(|evaluation| evaluation.mean(|result| result.roc_auc))
    };
    for dataset in &datasets {
        let _ = write!(text, "{dataset:<14}");
        for candidate in candidates {
            let _ = write!(text, " {:>9.4}", cell(dataset, candidate.name()).unwrap_or(f64::NAN));
        }
        text.push('\n');
    }
    let _ = write!(text, "{:<14}", "mean");
    for candidate in candidates {
        let values: Vec<f64> = datasets.iter().filter_map(|dataset| cell(dataset, candidate.name())).collect();
        let _ = write!(text, " {:>9.4}", values.iter().sum::<f64>() / values.len() as f64);
    }
    text.push('\n');
    text
}

fn without_seed(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(object) = value.as_object_mut() {
        object.remove("seed");
    }
    value
}

fn to_json(evaluations: &[Evaluation]) -> serde_json::Value {
    let seed_json = |result: &SeedResult| {
        serde_json::json!({
            "seed": result.seed,
            "roc_auc": result.roc_auc,
            "average_precision": result.average_precision,
            "precision_at_k": result.precision_at_k,
            "fit_seconds": result.fit_seconds,
            "rows_per_second": result.rows_per_second,
            "batch_rows_per_second": result.batch_rows_per_second,
        })
    };
    serde_json::Value::Array(
        evaluations
            .iter()
            .map(|evaluation| {
                serde_json::json!({
                    "dataset": evaluation.dataset,
                    "rows": evaluation.rows,
                    "features": evaluation.features,
                    "anomalies": evaluation.anomalies,
                    "model": evaluation.model,
                    "mean": without_seed(seed_json(&evaluation.summary())),
                    "seeds": evaluation.seeds.iter().map(seed_json).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}
