//! `settlewatch train`: fits a detector (by default the ensemble) on feature rows and saves
//! it as an artifact with its metadata: the feature schema, seed, training source, window and
//! row count, metrics when labels are given, and calibrated alert thresholds.
//!
//! The rows come from either a features CSV (as `settlewatch features export` writes it;
//! its `provider` and `provider_tx_id` columns are skipped) or a store, whose transactions are
//! read in `seq` order and turned into features by the same streaming extractor that serves,
//! with the store's reconciliation break events replayed among them by time.
//! A features CSV must carry exactly this build's feature schema; another numeric CSV trains
//! a model recorded under a schema named after the file, which the service will refuse.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _};
use chrono::{SecondsFormat, Utc};
use ndarray::Array2;
use settlement::features::{BreakEvent, BreakReplay, FeatureConfig, FeatureExtractor, FEATURE_COUNT, SCHEMA};
use settlement::store::{Store, LIST_ROWS_MAX};
use training::any_model::{EnsembleParams, ModelKind};
use training::artifact::{
    column_medians, Artifact, FeatureSchemaRecord, Metadata, TrainingMetrics, TrainingSource, TrainingWindow,
    FORMAT_VERSION,
};
use training::dataset::{load_csv, read_header, DatasetOptions, CELLS_MAX};
use training::metrics::{average_precision, precision_at_k, roc_auc};
use training::thresholds::{for_alert_rate, for_precision};
use training::Fit;

/// Identifier columns of an exported features CSV, never features.
const ID_COLUMNS: [&str; 2] = ["provider", "provider_tx_id"];

#[derive(clap::Args)]
pub struct TrainArgs {
    /// A features CSV (plain or gzip) or a store URL (sqlite:PATH, postgres://...).
    #[arg(long)]
    pub data: String,
    /// Detector: ensemble (default) or one of the single detectors.
    #[arg(long, default_value = "ensemble")]
    pub model: String,
    /// Where to write the artifact: a directory (model.json + metadata.json) or a .json file.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A 0/1 label column in the CSV: not used to fit, only for metrics and --target-precision.
    #[arg(long)]
    pub label_column: Option<String>,
    /// With a store: a truth file (`settlewatch simulate`'s truth.csv: provider,provider_tx_id
    /// and optionally expected_outcome); stored transactions it names as accepted are the
    /// anomalies, for metrics and --target-precision only.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Share of the training rows the recorded alert threshold flags.
    #[arg(long, default_value_t = 0.001)]
    pub alert_rate: f64,
    /// With labels: also record the lowest threshold reaching this precision.
    #[arg(long)]
    pub target_precision: Option<f64>,
    /// The artifact's created-at (RFC 3339); default now. Fixed values make artifacts reproducible.
    #[arg(long)]
    pub created_at: Option<String>,
}

/// Training rows and what is known about where they came from.
struct TrainingData {
    rows: Array2<f64>,
    labels: Option<Vec<bool>>,
    schema: FeatureSchemaRecord,
    source: String,
    window: Option<TrainingWindow>,
}

fn this_schema() -> FeatureSchemaRecord {
    FeatureSchemaRecord {
        name: SCHEMA.name.to_string(),
        version: SCHEMA.version,
        names: SCHEMA.names.iter().map(|name| name.to_string()).collect(),
    }
}

fn is_store_url(data: &str) -> bool {
    data.starts_with("sqlite:") || data.starts_with("postgres://") || data.starts_with("postgresql://")
}

fn from_csv(path: &Path, label_column: Option<&str>) -> anyhow::Result<TrainingData> {
    let header = read_header(path)?;
    let ignore_columns: Vec<String> =
        ID_COLUMNS.iter().filter(|column| header.iter().any(|name| name == *column)).map(|c| c.to_string()).collect();
    let options = DatasetOptions { label_column: label_column.map(str::to_string), ignore_columns };
    let dataset = load_csv(path, &options)?;
    let schema = if dataset.feature_names.iter().map(String::as_str).eq(SCHEMA.names.iter().copied()) {
        this_schema()
    } else if dataset.feature_names.iter().any(|name| SCHEMA.names.contains(&name.as_str())) {
        // It looks like an export of ours, but of another schema: training on it would ship a
        // model the service refuses.
        let mismatch = SCHEMA.check(SCHEMA.name, SCHEMA.version, &dataset.feature_names).err();
        bail!(
            "{}: the feature columns are not this build's schema {SCHEMA}: {}",
            path.display(),
            mismatch.map_or_else(|| "they differ".to_string(), |error| error.to_string())
        );
    } else {
        let stem = path.file_name().map_or_else(String::new, |name| name.to_string_lossy().into_owned());
        FeatureSchemaRecord { name: format!("csv:{stem}"), version: 0, names: dataset.feature_names.clone() }
    };
    Ok(TrainingData {
        rows: dataset.rows,
        labels: dataset.labels,
        schema,
        source: path.display().to_string(),
        window: None,
    })
}

/// Rows of a truth file that name stored anomalies: (provider, provider_tx_id) of every row
/// whose `expected_outcome` (when the column exists) is `accepted`.
fn read_truth(path: &Path) -> anyhow::Result<HashSet<(String, String)>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let header = reader.headers().with_context(|| format!("{}: header", path.display()))?.clone();
    let column = |name: &str| header.iter().position(|column| column == name);
    let (Some(provider), Some(id)) = (column("provider"), column("provider_tx_id")) else {
        bail!(
            "{}: needs provider and provider_tx_id columns (has {})",
            path.display(),
            header.iter().collect::<Vec<_>>().join(",")
        );
    };
    let outcome = column("expected_outcome");
    let mut anomalies = HashSet::new();
    for (index, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: record {}", path.display(), index + 1))?;
        if outcome.is_some_and(|outcome| record.get(outcome) != Some("accepted")) {
            continue;
        }
        anomalies.insert((record.get(provider).unwrap_or("").to_string(), record.get(id).unwrap_or("").to_string()));
    }
    Ok(anomalies)
}

/// Every stored transaction, in `seq` order, through the streaming extractor, with the
/// store's reconciliation break events replayed among them by time.
async fn from_store(url: &str, truth: Option<&HashSet<(String, String)>>) -> anyhow::Result<TrainingData> {
    let store = Store::open(url).await.with_context(|| format!("opening the store at {}", super::redact(url)))?;
    let break_events = super::break_events(&store).await?;
    let data = extract_from_store(&store, url, truth, &break_events).await;
    store.close().await;
    data
}

async fn extract_from_store(
    store: &Store,
    url: &str,
    truth: Option<&HashSet<(String, String)>>,
    break_events: &[BreakEvent],
) -> anyhow::Result<TrainingData> {
    let mut replay = BreakReplay::new(break_events);
    let mut extractor = FeatureExtractor::new(FeatureConfig::default());
    let mut values: Vec<f64> = Vec::new();
    let mut labels = truth.map(|_| Vec::new());
    let mut row = [0.0; FEATURE_COUNT];
    let (mut first, mut last) = (None, None);
    let mut from_seq = 0;
    loop {
        let page = store.transactions_in_seq_order(from_seq, LIST_ROWS_MAX).await?;
        let Some(tail) = page.last() else { break };
        from_seq = tail.seq + 1;
        for stored in &page {
            if values.len() + FEATURE_COUNT > CELLS_MAX {
                bail!(
                    "{}: more than {} transactions; train on an exported sample",
                    super::redact(url),
                    CELLS_MAX / FEATURE_COUNT
                );
            }
            let occurred_at = stored.transaction.occurred_at;
            first = Some(first.map_or(occurred_at, |first: chrono::DateTime<Utc>| first.min(occurred_at)));
            last = Some(last.map_or(occurred_at, |last: chrono::DateTime<Utc>| last.max(occurred_at)));
            replay.extract(&mut extractor, &stored.transaction, &mut row);
            values.extend_from_slice(&row);
            if let (Some(labels), Some(truth)) = (labels.as_mut(), truth) {
                let key = (stored.transaction.provider.clone(), stored.transaction.provider_tx_id.clone());
                labels.push(truth.contains(&key));
            }
        }
    }
    let n_rows = values.len() / FEATURE_COUNT;
    if n_rows == 0 {
        bail!("{}: the store holds no transactions to train on", super::redact(url));
    }
    let rows = Array2::from_shape_vec((n_rows, FEATURE_COUNT), values).context("rows × features")?;
    let window = first.zip(last).map(|(from, to)| TrainingWindow {
        from: from.to_rfc3339_opts(SecondsFormat::Secs, true),
        to: to.to_rfc3339_opts(SecondsFormat::Secs, true),
    });
    Ok(TrainingData { rows, labels, schema: this_schema(), source: super::redact(url), window })
}

pub async fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let params = match args.model.as_str() {
        "ensemble" => EnsembleParams::default(),
        name => match ModelKind::parse(name) {
            Some(kind) => EnsembleParams::single(kind.default_params()),
            None => {
                let known: Vec<&str> = ModelKind::ALL.iter().map(|kind| kind.name()).collect();
                bail!("--model {name:?}: not a detector (known: ensemble, {})", known.join(", "));
            }
        },
    };
    params.check()?;
    let created_at = match &args.created_at {
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .with_context(|| format!("--created-at {text:?} is not an RFC 3339 time"))?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let data = if is_store_url(&args.data) {
        if args.label_column.is_some() {
            bail!("--label-column applies to a CSV; label a store's transactions with --labels truth.csv");
        }
        let truth = args.labels.as_deref().map(read_truth).transpose()?;
        from_store(&args.data, truth.as_ref()).await?
    } else {
        if args.labels.is_some() {
            bail!("--labels applies to a store; a CSV carries its labels in --label-column");
        }
        from_csv(Path::new(&args.data), args.label_column.as_deref())?
    };
    let started = Instant::now();
    let model = params.fit(data.rows.view(), args.seed)?;
    let fit_seconds = started.elapsed().as_secs_f64();
    let scores = training::batch::score_rows_parallel(&model, data.rows.view()).to_vec();
    let mut thresholds = vec![for_alert_rate(&scores, args.alert_rate)?];
    let mut metrics = None;
    if let Some(labels) = &data.labels {
        let anomalies = labels.iter().filter(|&&label| label).count();
        if anomalies > 0 && anomalies < labels.len() {
            metrics = Some(TrainingMetrics {
                roc_auc: roc_auc(&scores, labels)?,
                average_precision: average_precision(&scores, labels)?,
                precision_at_k: precision_at_k(&scores, labels, anomalies)?,
                k: anomalies,
            });
        }
        thresholds[0] = thresholds[0].clone().with_labels(&scores, labels)?;
        if let Some(target) = args.target_precision {
            thresholds.push(for_precision(&scores, labels, target)?);
        }
    } else if args.target_precision.is_some() {
        bail!("--target-precision needs labels (--label-column)");
    }
    let artifact = Artifact {
        metadata: Metadata {
            format_version: FORMAT_VERSION,
            model_kind: args.model.clone(),
            params,
            feature_medians: column_medians(data.rows.view()),
            feature_schema: data.schema,
            seed: args.seed,
            training: TrainingSource {
                source: data.source,
                window: data.window,
                rows: data.rows.nrows(),
                labelled_anomalies: data.labels.as_ref().map(|labels| labels.iter().filter(|&&label| label).count()),
            },
            metrics,
            thresholds,
            created_at: created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
        },
        model,
    };
    artifact.save(&args.out)?;
    let metadata = &artifact.metadata;
    println!(
        "trained {} on {} rows × {} features ({} v{}) in {fit_seconds:.2} s, seed {}",
        metadata.model_kind,
        metadata.training.rows,
        metadata.feature_schema.names.len(),
        metadata.feature_schema.name,
        metadata.feature_schema.version,
        metadata.seed
    );
    if let Some(window) = &metadata.training.window {
        println!("training window: {} to {}", window.from, window.to);
    }
    if let Some(metrics) = &metadata.metrics {
        println!(
            "on the training rows: ROC-AUC {:.4}, average precision {:.4}, precision@{} {:.4}",
            metrics.roc_auc, metrics.average_precision, metrics.k, metrics.precision_at_k
        );
    }
    for threshold in &metadata.thresholds {
        print!(
            "threshold {:.6}: {} alerts ({:.4}% of the training rows)",
            threshold.score,
            threshold.alerts,
            threshold.alert_rate * 100.0
        );
        match (threshold.precision, threshold.recall) {
            (Some(precision), Some(recall)) => println!(", precision {precision:.4}, recall {recall:.4}"),
            _ => println!(),
        }
    }
    println!("artifact written to {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
