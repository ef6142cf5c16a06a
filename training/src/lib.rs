//! Anomaly models for settlewatch: fit, score, explain, evaluate and calibrate thresholds
//! (Isolation Forest, ECOD, robust baselines, mixtures, PCA error and their ensemble).
//!
//! This crate is intentionally empty until the models issue: it exists now so that the
//! workspace pins `ndarray` to the version `linfa` is built on (`cargo tree -d` shows a
//! single ndarray) before any numeric code depends on it.
