//! Per-feature standardization and bounded row sampling shared by the detectors that work
//! in standardized units (Gaussian mixture, PCA, k-nearest neighbours) or on a capped
//! training sample (ECOD), so all of them scale and sample alike.

use ndarray::{Array2, ArrayView2, Axis};
use rand::seq::index;
use rand::Rng;

/// The indices of the rows to train on, ascending: all `n` rows when `n <= rows_max`,
/// otherwise a uniform sample of `rows_max` without replacement drawn from `rng`.
pub(crate) fn kept_rows(n: usize, rows_max: usize, rng: &mut impl Rng) -> Vec<usize> {
    if n <= rows_max {
        return (0..n).collect();
    }
    let mut kept = index::sample(rng, n, rows_max).into_vec();
    kept.sort_unstable();
    kept
}

/// The kept rows of `rows` (see [`kept_rows`]) standardized by their own means and scales,
/// with those means and scales.
pub(crate) fn standardized_sample(
    rows: ArrayView2<'_, f64>,
    rows_max: usize,
    rng: &mut impl Rng,
) -> (Array2<f64>, Vec<f64>, Vec<f64>) {
    let mut sample = if rows.nrows() > rows_max {
        rows.select(Axis(0), &kept_rows(rows.nrows(), rows_max, rng))
    } else {
        rows.to_owned()
    };
    let (means, scales) = means_and_scales(sample.view());
    for mut row in sample.rows_mut() {
        for ((value, mean), scale) in row.iter_mut().zip(&means).zip(&scales) {
            *value = (*value - mean) / scale;
        }
    }
    (sample, means, scales)
}

/// Per-feature mean and population standard deviation of `rows`; a constant feature gets
/// scale 1, so standardizing it yields 0 on training data instead of a division by zero.
pub(crate) fn means_and_scales(rows: ArrayView2<'_, f64>) -> (Vec<f64>, Vec<f64>) {
    let n = rows.nrows() as f64;
    let means: Vec<f64> = rows.columns().into_iter().map(|column| column.sum() / n).collect();
    let scales = rows
        .columns()
        .into_iter()
        .zip(&means)
        .map(|(column, mean)| {
            let variance = column.iter().map(|value| (value - mean).powi(2)).sum::<f64>() / n;
            if variance > 0.0 {
                variance.sqrt()
            } else {
                1.0
            }
        })
        .collect();
    (means, scales)
}
