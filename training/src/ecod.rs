//! ECOD, empirical-cumulative-distribution outlier detection (Li et al., TKDE 2022),
//! scoring as PyOD's `ECOD` does.
//!
//! Why it exists: it is parameter-free, deterministic and fast, ranks well wherever
//! anomalies sit in the tails of individual features, and its per-feature tail
//! probabilities are the easiest explanation an analyst can read ("this amount is rarer
//! than 99.9% of the account's history").
//!
//! For every feature `j` the model keeps the training column sorted. A value `x` gets
//! a left-tail probability `F_left(x) = #{x_i <= x} / n` and a right-tail probability
//! `F_right(x) = #{x_i >= x} / n` (the ECDF of `X` and of `-X`, ties counted in full, as
//! PyOD's `column_ecdf`), turned into `u_left = -ln F_left`, `u_right = -ln F_right`. The
//! skewness-corrected tail uses the sign of the training column's (biased) skewness:
//! the left tail for negative skew, the right tail for positive, both summed at exactly
//! zero. The feature's outlier term is `max(u_left, u_right, u_skew)` and the score is the
//! sum of the terms over features — PyOD's `decision_function`, which takes the maximum per
//! dimension before summing (the paper's text takes it after; PyOD is what is measured).
//!
//! Training rows score exactly as PyOD scores them, since each is counted in its own ECDF.
//! A new value outside the training range would have probability 0; it is counted as if
//! one training value were as extreme, so a feature's term is capped at `ln n` (a value more
//! extreme than everything seen is as rare as the rarest value seen, not infinitely rare).
//!
//! Columns longer than [`EcodParams::training_rows_max`] are stored as a seeded uniform
//! subsample of rows (same rows for every feature), keeping memory and binary-search depth
//! bounded; the skewness is always computed on all rows.

use ndarray::ArrayView2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::model::check_training_rows;
use crate::{Fit, Model, TrainingError};

/// Largest allowed `training_rows_max`: 10 million rows per stored column.
pub const TRAINING_ROWS_MAX_LIMIT: usize = 10_000_000;

/// Hyper-parameters of [`Ecod`]. ECOD itself has none; this only bounds the model size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EcodParams {
    /// Most training rows kept per column; more rows are subsampled (seeded, without
    /// replacement). Default 100,000 — 0.8 MB per feature, exact for every dataset of the
    /// development benchmark (the largest has 49,097 rows).
    pub training_rows_max: usize,
}

impl Default for EcodParams {
    fn default() -> Self {
        EcodParams { training_rows_max: 100_000 }
    }
}

/// Which tail the skewness correction picks for a feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkewTail {
    /// Negative skewness: the left tail.
    Left,
    /// Positive skewness: the right tail.
    Right,
    /// Zero (or undefined) skewness: both tails summed.
    Both,
}

/// A fitted ECOD model: every training column, sorted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ecod {
    n_features: usize,
    /// Rows kept per column.
    rows: usize,
    /// `n_features × rows`, column after column, each ascending.
    sorted_columns: Vec<f64>,
    skew_tails: Vec<SkewTail>,
}

impl Fit for EcodParams {
    type Model = Ecod;

    fn check(&self) -> Result<(), TrainingError> {
        if self.training_rows_max == 0 || self.training_rows_max > TRAINING_ROWS_MAX_LIMIT {
            return Err(TrainingError::InvalidParameter {
                name: "training_rows_max",
                reason: format!("{} is outside 1..={TRAINING_ROWS_MAX_LIMIT}", self.training_rows_max),
            });
        }
        Ok(())
    }

    fn fit(&self, rows: ArrayView2<'_, f64>, seed: u64) -> Result<Ecod, TrainingError> {
        self.check()?;
        check_training_rows(rows, 1)?;
        let (n, n_features) = rows.dim();
        let kept = crate::standardize::kept_rows(n, self.training_rows_max, &mut ChaCha8Rng::seed_from_u64(seed));
        let mut sorted_columns = Vec::with_capacity(n_features * kept.len());
        let mut skew_tails = Vec::with_capacity(n_features);
        for column in rows.columns() {
            let start = sorted_columns.len();
            sorted_columns.extend(kept.iter().map(|&row| column[row]));
            sorted_columns[start..].sort_unstable_by(f64::total_cmp);
            skew_tails.push(skew_tail(column.iter().copied(), n));
        }
        Ok(Ecod { n_features, rows: kept.len(), sorted_columns, skew_tails })
    }
}

/// The sign of the biased sample skewness `m3 / m2^1.5` (scipy's `skew`), as a tail.
/// A constant column has zero tail terms anyway, so its choice does not matter.
fn skew_tail(values: impl Iterator<Item = f64> + Clone, n: usize) -> SkewTail {
    let mean = values.clone().sum::<f64>() / n as f64;
    let (mut m2, mut m3) = (0.0, 0.0);
    for value in values {
        let deviation = value - mean;
        m2 += deviation * deviation;
        m3 += deviation * deviation * deviation;
    }
    if m2 <= 0.0 || m3 == 0.0 {
        SkewTail::Both
    } else if m3 < 0.0 {
        SkewTail::Left
    } else {
        SkewTail::Right
    }
}

impl Ecod {
    /// The outlier term of feature `feature` for value `value`: `max(u_left, u_right, u_skew)`.
    #[inline]
    fn feature_term(&self, feature: usize, value: f64) -> f64 {
        let column = &self.sorted_columns[feature * self.rows..(feature + 1) * self.rows];
        let rows = self.rows as f64;
        let at_most = column.partition_point(|&stored| stored <= value).max(1) as f64;
        let at_least = (self.rows - column.partition_point(|&stored| stored < value)).max(1) as f64;
        let left = -(at_most / rows).ln();
        let right = -(at_least / rows).ln();
        let skew_corrected = match self.skew_tails[feature] {
            SkewTail::Left => left,
            SkewTail::Right => right,
            SkewTail::Both => left + right,
        };
        left.max(right).max(skew_corrected)
    }

    /// Training rows kept per column.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

impl Model for Ecod {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn score(&self, row: &[f64]) -> f64 {
        debug_assert_eq!(row.len(), self.n_features);
        row.iter().enumerate().map(|(feature, &value)| self.feature_term(feature, value)).sum()
    }

    /// The per-feature term, `max(u_left, u_right, u_skew)`: minus the log of the tail
    /// probability of the value. The terms add up to the score.
    fn explain(&self, row: &[f64], contributions: &mut [f64]) {
        debug_assert_eq!(row.len(), self.n_features);
        for (feature, (&value, contribution)) in row.iter().zip(contributions.iter_mut()).enumerate() {
            *contribution = self.feature_term(feature, value);
        }
    }
}
