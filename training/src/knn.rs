//! k-nearest-neighbour distance: the Euclidean distance, in standardized units, from a row
//! to its k-th nearest neighbour among a reference sample of the training rows.
//!
//! Why it exists: it is among the strongest unsupervised detectors on benchmark data
//! (Campos et al. 2016; ADBench), it needs no distributional assumption, and it finds local
//! anomalies (a row far from every cluster, even if it is inside the range of each feature)
//! that per-feature detectors cannot.
//!
//! Fitting standardizes the features (mean 0, standard deviation 1; a constant feature
//! keeps scale 1) and keeps a reference sample of at most `reference_rows_max` standardized
//! training rows (all of them when there are fewer; otherwise a seeded uniform subsample):
//! scoring is `O(reference rows × d)` per row, so the sample bounds the cost. The score is
//! the distance to the k-th nearest reference row (PyOD's `KNN(method="largest")`).
//!
//! A row scored against a sample it belongs to would find itself at distance 0. As PyOD
//! does on its training data, the model excludes the row itself: one reference row at
//! distance exactly 0 is skipped (a new row identical to a reference row is thereby treated
//! as that row, which changes its score only when duplicates are fewer than k).
//!
//! Explanation: per feature, the squared standardized difference to the k-th nearest
//! reference row, scaled so the contributions add up to the score (the distance).

use ndarray::ArrayView2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::model::check_training_rows;
use crate::{Fit, Model, TrainingError};

/// Largest k: scoring keeps the k nearest distances in a fixed array on the stack.
pub const NEIGHBOURS_MAX: usize = 64;
/// Largest reference sample.
pub const REFERENCE_ROWS_MAX_LIMIT: usize = 1_000_000;

/// Hyper-parameters of [`Knn`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnnParams {
    /// Which neighbour's distance is the score. Default 5 (PyOD).
    pub neighbours: usize,
    /// Most training rows kept as the reference sample. Default 2,048: about 20k
    /// multiply-adds per row for 10 features.
    pub reference_rows_max: usize,
}

impl Default for KnnParams {
    fn default() -> Self {
        KnnParams { neighbours: 5, reference_rows_max: 2_048 }
    }
}

/// A fitted k-NN detector: standardization and the standardized reference rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Knn {
    n_features: usize,
    /// `k`, at most the reference rows less one.
    neighbours: usize,
    feature_means: Vec<f64>,
    feature_scales: Vec<f64>,
    /// `reference rows × d`, standardized, row-major.
    reference: Vec<f64>,
}

impl Fit for KnnParams {
    type Model = Knn;

    fn check(&self) -> Result<(), TrainingError> {
        if self.neighbours == 0 || self.neighbours > NEIGHBOURS_MAX {
            return Err(TrainingError::InvalidParameter {
                name: "neighbours",
                reason: format!("{} is outside 1..={NEIGHBOURS_MAX}", self.neighbours),
            });
        }
        if self.reference_rows_max < 2 || self.reference_rows_max > REFERENCE_ROWS_MAX_LIMIT {
            return Err(TrainingError::InvalidParameter {
                name: "reference_rows_max",
                reason: format!("{} is outside 2..={REFERENCE_ROWS_MAX_LIMIT}", self.reference_rows_max),
            });
        }
        Ok(())
    }

    fn fit(&self, rows: ArrayView2<'_, f64>, seed: u64) -> Result<Knn, TrainingError> {
        self.check()?;
        check_training_rows(rows, 1)?;
        let (n, d) = rows.dim();
        let (feature_means, feature_scales) = crate::standardize::means_and_scales(rows);
        let kept = crate::standardize::kept_rows(n, self.reference_rows_max, &mut ChaCha8Rng::seed_from_u64(seed));
        let mut reference = Vec::with_capacity(kept.len() * d);
        for &row in &kept {
            for (feature, value) in rows.row(row).iter().enumerate() {
                reference.push((value - feature_means[feature]) / feature_scales[feature]);
            }
        }
        // With one reference row there is no other neighbour: k = 1 then measures the
        // distance to it (and 0 for itself).
        let neighbours = self.neighbours.min(kept.len().saturating_sub(1)).max(1);
        Ok(Knn { n_features: d, neighbours, feature_means, feature_scales, reference })
    }
}

impl Knn {
    /// Index of the k-th nearest reference row and its squared distance (one exact match,
    /// the row itself, skipped while another reference row remains).
    fn kth_nearest(&self, row: &[f64]) -> (usize, f64) {
        let d = self.n_features;
        let k = self.neighbours;
        // The k smallest squared distances so far, ascending, with their reference rows.
        let mut nearest = [(f64::INFINITY, 0usize); NEIGHBOURS_MAX];
        let mut skipped_self = self.reference.len() / d.max(1) <= 1;
        for (index, reference) in self.reference.chunks_exact(d).enumerate() {
            let mut squared = 0.0;
            for ((value, reference_value), (mean, scale)) in
                row.iter().zip(reference).zip(self.feature_means.iter().zip(&self.feature_scales))
            {
                let difference = (value - mean) / scale - reference_value;
                squared += difference * difference;
            }
            if squared == 0.0 && !skipped_self {
                skipped_self = true;
                continue;
            }
            if squared < nearest[k - 1].0 {
                let mut position = k - 1;
                while position > 0 && nearest[position - 1].0 > squared {
                    nearest[position] = nearest[position - 1];
                    position -= 1;
                }
                nearest[position] = (squared, index);
            }
        }
        let (squared, index) = nearest[k - 1];
        if squared.is_finite() {
            (index, squared)
        } else {
            // Fewer than k other reference rows (only with a single reference row).
            (0, 0.0)
        }
    }

    /// Rows in the reference sample.
    pub fn reference_rows(&self) -> usize {
        self.reference.len() / self.n_features.max(1)
    }
}

impl Model for Knn {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn score(&self, row: &[f64]) -> f64 {
        debug_assert_eq!(row.len(), self.n_features);
        self.kth_nearest(row).1.sqrt()
    }

    /// Squared standardized differences to the k-th nearest reference row, scaled to add up
    /// to the distance.
    fn explain(&self, row: &[f64], contributions: &mut [f64]) {
        debug_assert_eq!(row.len(), self.n_features);
        let d = self.n_features;
        let (index, squared) = self.kth_nearest(row);
        let reference = &self.reference[index * d..(index + 1) * d];
        let scale_to_distance = if squared > 0.0 { 1.0 / squared.sqrt() } else { 0.0 };
        for (feature, contribution) in contributions.iter_mut().enumerate() {
            let difference =
                (row[feature] - self.feature_means[feature]) / self.feature_scales[feature] - reference[feature];
            *contribution = difference * difference * scale_to_distance;
        }
    }
}
