//! The errors of fitting, scoring and loading models.

/// Why a model could not be fitted, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    /// A hyper-parameter is out of its valid range (checked before any fitting work).
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter { name: &'static str, reason: String },
    /// The training data cannot fit this model (too few rows, no features, non-finite values).
    #[error("invalid training data: {0}")]
    InvalidData(String),
    /// A row or artifact has a different number of features than the model was trained on.
    #[error("feature count mismatch: model has {expected} features, input has {actual}")]
    FeatureCount { expected: usize, actual: usize },
    /// The artifact was trained on another feature schema than the one in use.
    #[error("feature schema mismatch: {0}")]
    SchemaMismatch(String),
    /// The artifact file could not be read or written.
    #[error("artifact {path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The artifact file is not a valid model artifact.
    #[error("artifact {path}: {reason}")]
    Artifact { path: String, reason: String },
}
