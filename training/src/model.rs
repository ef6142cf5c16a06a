//! The two traits every detector implements: [`Fit`] (checked parameters + seed + data →
//! model) and [`Model`] (score and explain one row). Keeping scoring per row, over `&[f64]`,
//! makes serving and batch evaluation the same code path.

use ndarray::{Array1, ArrayView2};

use crate::TrainingError;

/// Hyper-parameters of a detector. `check` runs before any fitting work (linfa's param
/// guard); `fit` calls it first, so an invalid parameter never reaches the algorithm.
pub trait Fit {
    type Model: Model;

    /// Rejects out-of-range hyper-parameters with the parameter's name and the reason.
    fn check(&self) -> Result<(), TrainingError>;

    /// Fits on `rows` (one row per observation, unlabelled). Deterministic for a given seed.
    fn fit(&self, rows: ArrayView2<'_, f64>, seed: u64) -> Result<Self::Model, TrainingError>;
}

/// A fitted detector.
pub trait Model {
    /// Number of features a row must have.
    fn n_features(&self) -> usize;

    /// The anomaly score of one row: higher is more anomalous. Single-threaded and free of
    /// allocation. The scale is the detector's own; see `calibrate` for comparable scores.
    fn score(&self, row: &[f64]) -> f64;

    /// Each feature's contribution to this row's score, written into `contributions`
    /// (same length as `row`): larger means the feature pushed the score up more.
    fn explain(&self, row: &[f64], contributions: &mut [f64]);

    /// Scores every row of `rows`.
    fn score_rows(&self, rows: ArrayView2<'_, f64>) -> Array1<f64> {
        debug_assert_eq!(rows.ncols(), self.n_features());
        rows.rows()
            .into_iter()
            .map(|row| match row.as_slice() {
                Some(slice) => self.score(slice),
                None => self.score(&row.to_vec()),
            })
            .collect()
    }
}

/// Checks that every value of `rows` is finite and that there is at least `rows_min` rows
/// and one feature: the shared precondition of every `fit`.
pub fn check_training_rows(rows: ArrayView2<'_, f64>, rows_min: usize) -> Result<(), TrainingError> {
    if rows.ncols() == 0 {
        return Err(TrainingError::InvalidData("no feature columns".into()));
    }
    if rows.nrows() < rows_min {
        return Err(TrainingError::InvalidData(format!("{} rows, at least {rows_min} needed", rows.nrows())));
    }
    if let Some((index, value)) = rows.iter().enumerate().find(|(_, value)| !value.is_finite()) {
        let (row, column) = (index / rows.ncols(), index % rows.ncols());
        return Err(TrainingError::InvalidData(format!("row {row}, feature {column}: {value} is not finite")));
    }
    Ok(())
}
