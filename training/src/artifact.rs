//! A trained model as it is shipped: the fitted, calibrated model plus the metadata that
//! makes a score traceable (which data, which schema, which seed, which thresholds, which
//! version of this crate). Saved as a directory (`model.json` + `metadata.json`, so the
//! metadata can be read without the model) or as one JSON file holding both.
//!
//! Loading refuses what cannot score correctly: another format version, a model whose
//! feature count disagrees with its schema, and (through [`Artifact::check_schema`]) a feature
//! schema other than the one the caller extracts. This crate does not know the schema
//! itself: the caller (which owns feature extraction) passes its name, version and names.
//!
//! Scores are exact across a round trip: models hold only finite `f64`s and JSON is written
//! and read with shortest round-trip formatting (`serde_json`'s `float_roundtrip`).

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::any_model::{AnyModel, EnsembleParams};
use crate::ensemble::Ensemble;
use crate::thresholds::Threshold;
use crate::{Model, TrainingError};

/// Version of the artifact layout; bumped when a field changes meaning.
pub const FORMAT_VERSION: u32 = 1;
/// Largest artifact file read (model or metadata): a forest of 10,000 trees fits well below.
pub const ARTIFACT_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// The model file inside an artifact directory.
pub const MODEL_FILE: &str = "model.json";
/// The metadata file inside an artifact directory.
pub const METADATA_FILE: &str = "metadata.json";

/// The feature schema a model was trained on, as plain data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSchemaRecord {
    pub name: String,
    pub version: u32,
    pub names: Vec<String>,
}

/// The time span of the training data (RFC 3339), when the source has one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingWindow {
    pub from: String,
    pub to: String,
}

/// Where the training rows came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingSource {
    /// A file path or a store URL (without password).
    pub source: String,
    pub window: Option<TrainingWindow>,
    pub rows: usize,
    /// Rows labelled as anomalies, when the source had labels (used only for metrics and thresholds).
    pub labelled_anomalies: Option<usize>,
}

/// Quality on the training rows, when labels were given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingMetrics {
    pub roc_auc: f64,
    pub average_precision: f64,
    /// Precision among the `k` highest scores, `k` = the number of labelled anomalies.
    pub precision_at_k: f64,
    pub k: usize,
}

/// Everything about a model except its fitted numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub format_version: u32,
    /// `ensemble`, or the single detector's kind.
    pub model_kind: String,
    pub params: EnsembleParams,
    pub feature_schema: FeatureSchemaRecord,
    /// Each feature's median over the training rows: the "typical value" in explanations.
    pub feature_medians: Vec<f64>,
    pub seed: u64,
    pub training: TrainingSource,
    pub metrics: Option<TrainingMetrics>,
    /// Thresholds on the calibrated score (a row alerts at or above `score`).
    pub thresholds: Vec<Threshold>,
    /// RFC 3339, given by the caller.
    pub created_at: String,
    /// Version of the `training` crate that wrote the artifact.
    pub crate_version: String,
}

/// A fitted, calibrated model with its metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub metadata: Metadata,
    pub model: Ensemble<AnyModel>,
}

/// One feature's part in a score, for an analyst.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeatureContribution {
    pub name: String,
    pub value: f64,
    pub contribution: f64,
    /// The feature's training median.
    pub typical_value: f64,
}

/// Each column's median (mean of the two middle values for an even count).
pub fn column_medians(rows: ArrayView2<'_, f64>) -> Vec<f64> {
    rows.columns()
        .into_iter()
        .map(|column| {
            let mut values = column.to_vec();
            if values.is_empty() {
                return 0.0;
            }
            values.sort_by(f64::total_cmp);
            let middle = values.len() / 2;
            if values.len() % 2 == 1 {
                values[middle]
            } else {
                (values[middle - 1] + values[middle]) / 2.0
            }
        })
        .collect()
}

fn artifact_error(path: &Path, reason: impl Into<String>) -> TrainingError {
    TrainingError::Artifact { path: path.display().to_string(), reason: reason.into() }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TrainingError + '_ {
    move |source| TrainingError::Io { path: path.display().to_string(), source }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TrainingError> {
    let size = fs::metadata(path).map_err(io_error(path))?.len();
    if size > ARTIFACT_BYTES_MAX {
        return Err(artifact_error(path, format!("{size} bytes, at most {ARTIFACT_BYTES_MAX} read")));
    }
    let text = fs::read(path).map_err(io_error(path))?;
    serde_json::from_slice(&text).map_err(|error| artifact_error(path, error.to_string()))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TrainingError> {
    let text = serde_json::to_vec(value).map_err(|error| artifact_error(path, error.to_string()))?;
    // Write beside, then rename: a reader never sees half a file.
    let partial = path.with_extension("json.partial");
    fs::write(&partial, text).map_err(io_error(&partial))?;
    fs::rename(&partial, path).map_err(io_error(path))
}

fn is_single_file(path: &Path) -> bool {
    path.extension().is_some_and(|extension| extension == "json")
}

impl Artifact {
    /// Writes the artifact: one file if `path` ends in `.json`, else a directory holding
    /// `model.json` and `metadata.json` (created if missing).
    pub fn save(&self, path: &Path) -> Result<(), TrainingError> {
        self.check(path)?;
        if is_single_file(path) {
            if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(io_error(parent))?;
            }
            return write_json(path, self);
        }
        fs::create_dir_all(path).map_err(io_error(path))?;
        write_json(&path.join(MODEL_FILE), &self.model)?;
        write_json(&path.join(METADATA_FILE), &self.metadata)
    }

    /// Reads an artifact written by [`Artifact::save`] and checks it is consistent.
    pub fn load(path: &Path) -> Result<Artifact, TrainingError> {
        let artifact = if is_single_file(path) {
            read_json(path)?
        } else {
            let metadata_path: PathBuf = path.join(METADATA_FILE);
            let metadata: Metadata = read_json(&metadata_path)?;
            if metadata.format_version != FORMAT_VERSION {
                return Err(artifact_error(
                    &metadata_path,
                    format!("format version {}, this build reads {FORMAT_VERSION}", metadata.format_version),
                ));
            }
            Artifact { metadata, model: read_json(&path.join(MODEL_FILE))? }
        };
        artifact.check(path)?;
        Ok(artifact)
    }

    /// The consistency checks shared by save and load.
    fn check(&self, path: &Path) -> Result<(), TrainingError> {
        let metadata = &self.metadata;
        if metadata.format_version != FORMAT_VERSION {
            return Err(artifact_error(
                path,
                format!("format version {}, this build reads {FORMAT_VERSION}", metadata.format_version),
            ));
        }
        self.model.check().map_err(|reason| artifact_error(path, reason))?;
        let n_features = self.model.n_features();
        let names = metadata.feature_schema.names.len();
        if names != n_features {
            return Err(artifact_error(
                path,
                format!("the model has {n_features} features but its schema names {names}"),
            ));
        }
        if metadata.feature_medians.len() != n_features {
            return Err(artifact_error(
                path,
                format!("{} feature medians for {n_features} features", metadata.feature_medians.len()),
            ));
        }
        Ok(())
    }

    /// Refuses an artifact trained on another feature schema than `expected`, naming what
    /// differs: the schema name or version first (a model of an older schema version usually
    /// has another feature count too, and the version is the reason), then the count, then
    /// the first feature whose name differs.
    pub fn check_schema(&self, expected: &FeatureSchemaRecord) -> Result<(), TrainingError> {
        let trained = &self.metadata.feature_schema;
        if trained.name != expected.name || trained.version != expected.version {
            return Err(TrainingError::SchemaMismatch(format!(
                "the model was trained on {} v{} ({} features), the input is {} v{} ({} features)",
                trained.name,
                trained.version,
                trained.names.len(),
                expected.name,
                expected.version,
                expected.names.len()
            )));
        }
        if trained.names.len() != expected.names.len() {
            return Err(TrainingError::FeatureCount { expected: trained.names.len(), actual: expected.names.len() });
        }
        if let Some(index) = trained.names.iter().zip(&expected.names).position(|(a, b)| a != b) {
            return Err(TrainingError::SchemaMismatch(format!(
                "feature {index} is {:?} in the model and {:?} in the input",
                trained.names[index], expected.names[index]
            )));
        }
        Ok(())
    }

    /// Refuses rows with another feature count than the model's.
    pub fn check_features(&self, n_features: usize) -> Result<(), TrainingError> {
        let expected = self.model.n_features();
        if n_features != expected {
            return Err(TrainingError::FeatureCount { expected, actual: n_features });
        }
        Ok(())
    }

    /// The calibrated score of `row`, in [0, 1] (a wrong feature count is an error).
    pub fn score(&self, row: &[f64]) -> Result<f64, TrainingError> {
        self.check_features(row.len())?;
        Ok(self.model.score(row))
    }

    /// The `k` features that contributed most to `row`'s score, largest first, with the row's
    /// value and the training median of each.
    pub fn top_features(&self, row: &[f64], k: usize) -> Result<Vec<FeatureContribution>, TrainingError> {
        self.check_features(row.len())?;
        let mut contributions = vec![0.0; row.len()];
        self.model.explain(row, &mut contributions);
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| contributions[b].partial_cmp(&contributions[a]).unwrap_or(Ordering::Equal));
        Ok(order
            .into_iter()
            .take(k)
            .map(|index| FeatureContribution {
                name: self.metadata.feature_schema.names[index].clone(),
                value: row[index],
                contribution: contributions[index],
                typical_value: self.metadata.feature_medians[index],
            })
            .collect())
    }
}
