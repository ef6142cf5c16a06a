//! Anomaly models for settlewatch: fit, score, explain, evaluate and calibrate thresholds
//! (Isolation Forest, ECOD, robust baselines, mixtures, PCA error and their ensemble).
//!
//! Every detector is fitted from checked parameters and a seed ([`Fit`]) into a [`Model`]
//! that scores one row at a time without allocating and explains each score per feature.
//! Models are plain data (`serde`), so an artifact on disk scores exactly like the model
//! that was saved. This crate knows nothing of transactions: it sees rows of `f64`
//! features; the feature schema a model was trained on travels in its artifact metadata.

pub mod any_model;
pub mod artifact;
pub mod batch;
pub mod calibration;
pub mod dataset;
pub mod ecod;
pub mod ensemble;
pub mod error;
pub mod gaussian_mixture;
pub mod hbos;
pub mod isolation_forest;
pub mod knn;
pub mod metrics;
pub mod model;
pub mod pca;
pub mod robust_baseline;
mod standardize;
pub mod thresholds;

pub use error::TrainingError;
pub use model::{Fit, Model};
