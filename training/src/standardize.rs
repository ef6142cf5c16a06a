//! Per-feature standardization shared by the detectors that work in standardized units
//! (Gaussian mixture, PCA, k-nearest neighbours), so all of them scale features alike.

use ndarray::ArrayView2;

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
