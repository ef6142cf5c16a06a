//! HBOS, the histogram-based outlier score (Goldstein and Dengel 2012), scoring as PyOD's
//! `HBOS(n_bins=10, alpha=0.1, tol=0.5)` does.
//!
//! Why it exists: it is the fastest detector there is (one bin lookup per feature), it
//! ranks well where anomalies fall in sparsely populated value ranges (also between modes,
//! which tail-based ECOD misses), and "this value's bin holds 0.3% of the rows" is an
//! explanation anyone can read.
//!
//! Per feature, a histogram of `bins` equal-width bins over the training range (numpy's
//! `histogram(density=True)`: bins are `[edge_i, edge_i+1)`, the last one closed; a
//! constant feature gets the range `value ± 0.5`). The feature's term for a value is
//! `-log2(density of its bin + alpha)`, and the score is the sum of the terms. Bins are
//! looked up as PyOD does (numpy's `digitize(right=True)`: `(edge_i-1, edge_i]`); a value
//! outside the range but within `tol` bin widths of it takes the edge bin, and one farther
//! out takes the least dense bin of the feature.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::model::check_training_rows;
use crate::{Fit, Model, TrainingError};

/// Most bins per feature.
pub const BINS_MAX: usize = 100_000;

/// Hyper-parameters of [`Hbos`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HbosParams {
    /// Equal-width bins per feature. Default 10 (PyOD).
    pub bins: usize,
    /// Added to every bin density before the logarithm, so an empty bin scores finitely.
    /// Default 0.1 (PyOD).
    pub alpha: f64,
    /// How far outside the training range, in bin widths, a value still takes the edge bin.
    /// Default 0.5 (PyOD).
    pub tol: f64,
}

impl Default for HbosParams {
    fn default() -> Self {
        HbosParams { bins: 10, alpha: 0.1, tol: 0.5 }
    }
}

/// A fitted HBOS model: per feature, the bin edges and each bin's `log2(density + alpha)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hbos {
    n_features: usize,
    bins: usize,
    tol: f64,
    /// `n_features × (bins + 1)` edges, ascending per feature.
    edges: Vec<f64>,
    /// `n_features × bins` values of `log2(density + alpha)`.
    log_densities: Vec<f64>,
    /// Per feature, the smallest of its `log_densities` (for values far outside the range).
    log_density_min: Vec<f64>,
}

impl Fit for HbosParams {
    type Model = Hbos;

    fn check(&self) -> Result<(), TrainingError> {
        if self.bins < 2 || self.bins > BINS_MAX {
            return Err(TrainingError::InvalidParameter {
                name: "bins",
                reason: format!("{} is outside 2..={BINS_MAX}", self.bins),
            });
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(TrainingError::InvalidParameter {
                name: "alpha",
                reason: format!("{} is not strictly between 0 and 1", self.alpha),
            });
        }
        if !(self.tol >= 0.0 && self.tol.is_finite()) {
            return Err(TrainingError::InvalidParameter {
                name: "tol",
                reason: format!("{} is not a finite number >= 0", self.tol),
            });
        }
        Ok(())
    }

    fn fit(&self, rows: ArrayView2<'_, f64>, _seed: u64) -> Result<Hbos, TrainingError> {
        self.check()?;
        check_training_rows(rows, 1)?;
        let (n, n_features) = rows.dim();
        let bins = self.bins;
        let mut model = Hbos {
            n_features,
            bins,
            tol: self.tol,
            edges: Vec::with_capacity(n_features * (bins + 1)),
            log_densities: Vec::with_capacity(n_features * bins),
            log_density_min: Vec::with_capacity(n_features),
        };
        let mut counts = vec![0usize; bins];
        for column in rows.columns() {
            let (mut low, mut high) =
                column.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), &x| (low.min(x), high.max(x)));
            if low == high {
                (low, high) = (low - 0.5, high + 0.5);
            }
            let step = (high - low) / bins as f64;
            let start = model.edges.len();
            model.edges.extend((0..bins).map(|i| low + i as f64 * step));
            model.edges.push(high);
            let edges = &model.edges[start..];
            counts.fill(0);
            for &value in column {
                // [edge_i, edge_i+1), the last bin closed.
                let bin = edges.partition_point(|&edge| edge <= value).saturating_sub(1).min(bins - 1);
                counts[bin] += 1;
            }
            let mut minimum = f64::INFINITY;
            for (bin, &count) in counts.iter().enumerate() {
                let width = edges[bin + 1] - edges[bin];
                let density = count as f64 / (n as f64 * width);
                let log_density = (density + self.alpha).log2();
                minimum = minimum.min(log_density);
                model.log_densities.push(log_density);
            }
            model.log_density_min.push(minimum);
        }
        Ok(model)
    }
}

impl Hbos {
    /// `log2(density + alpha)` of the bin `value` falls in, for feature `feature`.
    #[inline]
    fn log_density(&self, feature: usize, value: f64) -> f64 {
        let bins = self.bins;
        let edges = &self.edges[feature * (bins + 1)..(feature + 1) * (bins + 1)];
        let log_densities = &self.log_densities[feature * bins..(feature + 1) * bins];
        // numpy digitize(right=True): the number of edges strictly below the value.
        let index = edges.partition_point(|&edge| edge < value);
        if index == 0 {
            let width = edges[1] - edges[0];
            if edges[0] - value <= width * self.tol {
                log_densities[0]
            } else {
                self.log_density_min[feature]
            }
        } else if index == bins + 1 {
            let width = edges[bins] - edges[bins - 1];
            if value - edges[bins] <= width * self.tol {
                log_densities[bins - 1]
            } else {
                self.log_density_min[feature]
            }
        } else {
            log_densities[index - 1]
        }
    }
}

impl Model for Hbos {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn score(&self, row: &[f64]) -> f64 {
        debug_assert_eq!(row.len(), self.n_features);
        row.iter().enumerate().map(|(feature, &value)| -self.log_density(feature, value)).sum()
    }

    /// Each feature's `-log2(density of its bin + alpha)`; they add up to the score.
    fn explain(&self, row: &[f64], contributions: &mut [f64]) {
        debug_assert_eq!(row.len(), self.n_features);
        for (feature, (&value, contribution)) in row.iter().zip(contributions.iter_mut()).enumerate() {
            *contribution = -self.log_density(feature, value);
        }
    }
}
