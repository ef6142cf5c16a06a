//! Rank (empirical-CDF) calibration: maps a detector's raw score to the fraction of its
//! training rows that scored at or below it, in [0, 1]. Raw scores of different detectors
//! live on unrelated scales (path lengths, tail log-probabilities, squared errors); after
//! calibration 0.99 means "above 99% of the training data" for every detector, which is what
//! lets an ensemble average them and an operator read a threshold.
//!
//! Only a bounded set of quantiles of the training scores is kept ([`QUANTILES_MAX`]), so an
//! artifact stays small whatever the training set's size; a lookup is a binary search plus a
//! linear interpolation between neighbouring quantiles, with no allocation.

use serde::{Deserialize, Serialize};

use crate::TrainingError;

/// Quantiles kept from the training scores (the 0th to the 100th percentile in steps of 0.1%).
pub const QUANTILES_MAX: usize = 1_001;

/// A monotone map from raw scores to [0, 1], fitted on training scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Non-decreasing training-score quantiles at evenly spaced probabilities 0, 1/(n-1), …, 1.
    quantiles: Vec<f64>,
}

impl Calibration {
    /// Fits on the raw `scores` of the training rows (any order). Every score must be finite.
    pub fn fit(scores: &[f64]) -> Result<Self, TrainingError> {
        if scores.is_empty() {
            return Err(TrainingError::InvalidData("calibration needs at least one training score".into()));
        }
        if let Some(index) = scores.iter().position(|score| !score.is_finite()) {
            return Err(TrainingError::InvalidData(format!(
                "training score {index} is {}: a detector produced a non-finite score",
                scores[index]
            )));
        }
        let mut sorted = scores.to_vec();
        sorted.sort_by(f64::total_cmp);
        let count = sorted.len().clamp(2, QUANTILES_MAX);
        let last = (sorted.len() - 1) as f64;
        // Quantile at probability p = i/(count-1): linear interpolation between order statistics
        // (numpy's default "linear" method), so the extremes are the training min and max.
        let quantiles = (0..count)
            .map(|i| {
                let position = last * i as f64 / (count - 1) as f64;
                let below = position.floor() as usize;
                let above = (below + 1).min(sorted.len() - 1);
                let weight = position - below as f64;
                sorted[below] + (sorted[above] - sorted[below]) * weight
            })
            .collect();
        Ok(Self { quantiles })
    }

    /// The quantiles this calibration holds (non-decreasing), for inspection and tests.
    pub fn quantiles(&self) -> &[f64] {
        &self.quantiles
    }

    /// Checks a deserialised calibration: at least two finite, non-decreasing quantiles.
    pub fn check(&self) -> Result<(), String> {
        if self.quantiles.len() < 2 || self.quantiles.len() > QUANTILES_MAX {
            return Err(format!("calibration holds {} quantiles, 2 to {QUANTILES_MAX} expected", self.quantiles.len()));
        }
        if self.quantiles.iter().any(|value| !value.is_finite()) {
            return Err("calibration holds a non-finite quantile".into());
        }
        if self.quantiles.windows(2).any(|pair| pair[1] < pair[0]) {
            return Err("calibration quantiles are not in ascending order".into());
        }
        Ok(())
    }

    /// The calibrated score of a raw `score`: 0 at or below the training minimum, 1 at or
    /// above the training maximum, linear between neighbouring quantiles. Where several
    /// quantiles are equal (a tie in the training scores) a score equal to them maps to the
    /// middle of their probability range. Monotone non-decreasing in `score`; NaN maps to 1
    /// (an unscorable row is shown, not hidden).
    pub fn calibrate(&self, score: f64) -> f64 {
        let quantiles = &self.quantiles;
        let last = quantiles.len() - 1;
        if score.is_nan() {
            return 1.0;
        }
        // First index whose quantile is >= score, and first whose quantile is > score.
        let lower = quantiles.partition_point(|&quantile| quantile < score);
        let upper = quantiles.partition_point(|&quantile| quantile <= score);
        let step = 1.0 / last as f64;
        if lower < upper {
            // `score` equals quantiles[lower..upper]: the middle of their probabilities.
            return (lower + upper - 1) as f64 / 2.0 * step;
        }
        if lower == 0 {
            return 0.0;
        }
        if lower > last {
            return 1.0;
        }
        let (below, above) = (quantiles[lower - 1], quantiles[lower]);
        let weight = (score - below) / (above - below);
        ((lower - 1) as f64 + weight) * step
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn calibrated_scores_are_monotone_and_in_unit_interval() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // Heavy ties (rounded values) and a long tail, more rows than quantiles kept.
        let scores: Vec<f64> = (0..5_000).map(|_| (rng.gen::<f64>().powi(3) * 40.0).round() / 4.0 - 2.0).collect();
        let calibration = Calibration::fit(&scores).unwrap();
        assert_eq!(calibration.quantiles().len(), QUANTILES_MAX);
        calibration.check().unwrap();
        let mut probes: Vec<f64> = scores.clone();
        probes.extend((0..2_000).map(|i| -5.0 + i as f64 * 0.0087));
        probes.sort_by(f64::total_cmp);
        let calibrated: Vec<f64> = probes.iter().map(|&score| calibration.calibrate(score)).collect();
        assert!(calibrated.iter().all(|value| (0.0..=1.0).contains(value)));
        for (pair, probe) in calibrated.windows(2).zip(probes.windows(2)) {
            assert!(
                pair[0] <= pair[1],
                "not monotone between {} → {} and {} → {}",
                probe[0],
                pair[0],
                probe[1],
                pair[1]
            );
        }
        assert_eq!(calibration.calibrate(-100.0), 0.0);
        assert_eq!(calibration.calibrate(100.0), 1.0);
    }

    #[test]
    fn calibration_is_the_empirical_cdf_on_distinct_scores() {
        let scores: Vec<f64> = (0..101).map(|i| i as f64 * 2.0).collect();
        let calibration = Calibration::fit(&scores).unwrap();
        assert_eq!(calibration.calibrate(0.0), 0.0);
        assert_eq!(calibration.calibrate(100.0), 0.5);
        assert!((calibration.calibrate(101.0) - 0.505).abs() < 1e-12);
        assert_eq!(calibration.calibrate(200.0), 1.0);
    }

    #[test]
    fn constant_scores_and_bad_input() {
        let calibration = Calibration::fit(&[3.0, 3.0, 3.0]).unwrap();
        assert_eq!(calibration.calibrate(3.0), 0.5);
        assert_eq!(calibration.calibrate(2.0), 0.0);
        assert_eq!(calibration.calibrate(4.0), 1.0);
        assert!(Calibration::fit(&[]).is_err());
        let error = Calibration::fit(&[1.0, f64::NAN]).unwrap_err().to_string();
        assert!(error.contains("training score 1 is NaN"), "{error}");
    }
}
