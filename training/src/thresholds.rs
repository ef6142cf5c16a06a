//! Alert thresholds on calibrated scores: a row alerts when its score is at or above the
//! threshold. Two ways to choose one, both recorded in the model artifact so that serving
//! applies exactly what training measured:
//! - from a target alert rate (no labels): the score that flags that share of the training
//!   rows, which is how an operator sizes the review queue;
//! - from labels and a target precision: the lowest threshold whose alerts are at least that
//!   precise, with the recall it gives.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::TrainingError;

/// How a threshold was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum ThresholdRule {
    /// Flag this share of the training rows (0 < rate < 1).
    AlertRate { target: f64 },
    /// The lowest threshold whose alerts on labelled rows reach this precision.
    Precision { target: f64 },
}

/// A threshold and what it did on the rows it was chosen on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    #[serde(flatten)]
    pub rule: ThresholdRule,
    /// Alert when the calibrated score is >= this.
    pub score: f64,
    /// Share of the rows at or above `score`.
    pub alert_rate: f64,
    /// Rows at or above `score`.
    pub alerts: usize,
    /// With labels: share of the alerts that are anomalies, and share of the anomalies alerted.
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

fn descending(scores: &[f64]) -> Result<Vec<f64>, TrainingError> {
    if scores.is_empty() {
        return Err(TrainingError::InvalidData("no scores to choose a threshold from".into()));
    }
    if let Some(index) = scores.iter().position(|score| score.is_nan()) {
        return Err(TrainingError::InvalidData(format!("score {index} is NaN")));
    }
    let mut sorted = scores.to_vec();
    sorted.sort_by(|a, b| b.partial_cmp(a).unwrap_or(Ordering::Equal));
    Ok(sorted)
}

impl Threshold {
    /// Fills in the precision and recall this threshold has against `labels` (`true` = anomaly)
    /// on the `scores` it was chosen from.
    pub fn with_labels(mut self, scores: &[f64], labels: &[bool]) -> Result<Threshold, TrainingError> {
        if scores.len() != labels.len() {
            return Err(TrainingError::InvalidData(format!("{} scores but {} labels", scores.len(), labels.len())));
        }
        let positives = labels.iter().filter(|&&label| label).count();
        let (alerts, true_alerts) = scores
            .iter()
            .zip(labels)
            .filter(|(&score, _)| score >= self.score)
            .fold((0usize, 0usize), |(alerts, hits), (_, &label)| (alerts + 1, hits + usize::from(label)));
        self.precision = (alerts > 0).then(|| true_alerts as f64 / alerts as f64);
        self.recall = (positives > 0).then(|| true_alerts as f64 / positives as f64);
        Ok(self)
    }
}

/// The threshold that flags the share `rate` of `scores`: as close to `rate × n` rows as ties
/// allow (at least one row).
pub fn for_alert_rate(scores: &[f64], rate: f64) -> Result<Threshold, TrainingError> {
    if !(rate > 0.0 && rate < 1.0) {
        return Err(TrainingError::InvalidParameter {
            name: "alert_rate",
            reason: format!("{rate} is not strictly between 0 and 1"),
        });
    }
    let sorted = descending(scores)?;
    let n = sorted.len();
    let wanted = ((rate * n as f64).round() as usize).clamp(1, n);
    // Candidate A: the wanted-th highest score (flags every row tied with it).
    let score_a = sorted[wanted - 1];
    let alerts_a = sorted.partition_point(|&score| score >= score_a);
    // Candidate B: just above that tie group (flags fewer rows), if that still flags any.
    let above_ties = sorted.partition_point(|&score| score > score_a);
    let (score, alerts) = if alerts_a > wanted && above_ties > 0 && wanted - above_ties < alerts_a - wanted {
        (sorted[above_ties - 1], above_ties)
    } else {
        (score_a, alerts_a)
    };
    Ok(Threshold {
        rule: ThresholdRule::AlertRate { target: rate },
        score,
        alert_rate: alerts as f64 / n as f64,
        alerts,
        precision: None,
        recall: None,
    })
}

/// The lowest threshold at which the alerts among `scores` reach `target` precision against
/// `labels` (`true` = anomaly). An error names the best precision reachable when none does.
pub fn for_precision(scores: &[f64], labels: &[bool], target: f64) -> Result<Threshold, TrainingError> {
    if !(target > 0.0 && target <= 1.0) {
        return Err(TrainingError::InvalidParameter {
            name: "target_precision",
            reason: format!("{target} is not in (0, 1]"),
        });
    }
    if scores.len() != labels.len() {
        return Err(TrainingError::InvalidData(format!("{} scores but {} labels", scores.len(), labels.len())));
    }
    let positives = labels.iter().filter(|&&label| label).count();
    if positives == 0 {
        return Err(TrainingError::InvalidData("no anomalies among the labels".into()));
    }
    descending(scores)?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap_or(Ordering::Equal));
    let (mut true_alerts, mut best) = (0usize, None::<(f64, usize, usize)>);
    let mut best_precision = 0.0f64;
    let mut start = 0;
    while start < order.len() {
        // A cut can only fall between tie groups.
        let score = scores[order[start]];
        let mut end = start;
        while end < order.len() && scores[order[end]] == score {
            true_alerts += usize::from(labels[order[end]]);
            end += 1;
        }
        let precision = true_alerts as f64 / end as f64;
        best_precision = best_precision.max(precision);
        if precision >= target {
            best = Some((score, end, true_alerts));
        }
        start = end;
    }
    let Some((score, alerts, true_alerts)) = best else {
        return Err(TrainingError::InvalidData(format!(
            "no threshold reaches precision {target}: the best is {best_precision:.4}"
        )));
    };
    Ok(Threshold {
        rule: ThresholdRule::Precision { target },
        score,
        alert_rate: alerts as f64 / scores.len() as f64,
        alerts,
        precision: Some(true_alerts as f64 / alerts as f64),
        recall: Some(true_alerts as f64 / positives as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_rate_threshold_flags_the_target_share_within_one_row() {
        // 1,000 distinct scores in a scrambled order.
        let scores: Vec<f64> = (0..1_000).map(|i| ((i * 7_919) % 1_000) as f64 / 1_000.0).collect();
        for rate in [0.001, 0.01, 0.0125, 0.05, 0.5] {
            let threshold = for_alert_rate(&scores, rate).unwrap();
            let flagged = scores.iter().filter(|&&score| score >= threshold.score).count();
            assert_eq!(flagged, threshold.alerts);
            assert!((flagged as f64 - rate * 1_000.0).abs() <= 1.0, "rate {rate}: {flagged} flagged");
        }
        assert_eq!(for_alert_rate(&scores, 0.01).unwrap().score, 0.99);
        // Against labels marking the top 20 scores: the top 1% are all anomalies, half of them found.
        let labels: Vec<bool> = scores.iter().map(|&score| score >= 0.98).collect();
        let threshold = for_alert_rate(&scores, 0.01).unwrap().with_labels(&scores, &labels).unwrap();
        assert_eq!((threshold.precision, threshold.recall), (Some(1.0), Some(0.5)));
    }

    #[test]
    fn ties_pick_the_closer_count() {
        let mut scores = vec![0.0; 90];
        scores.extend([0.5; 9]);
        scores.push(1.0);
        // 5 rows wanted: the tie group flags 10 (5 too many), the row above it 1 (4 too few).
        let threshold = for_alert_rate(&scores, 0.05).unwrap();
        assert_eq!((threshold.score, threshold.alerts), (1.0, 1));
        let threshold = for_alert_rate(&scores, 0.08).unwrap();
        assert_eq!((threshold.score, threshold.alerts), (0.5, 10));
        assert!(for_alert_rate(&scores, 0.0).is_err());
        assert!(for_alert_rate(&scores, 1.0).is_err());
    }

    #[test]
    fn precision_threshold_is_the_lowest_reaching_the_target() {
        // Scores descending 10..1; labels: the top 3 are anomalies, then a normal, then an anomaly.
        let scores = [10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0];
        let labels = [true, true, true, false, true, false, false, false, false, false];
        let threshold = for_precision(&scores, &labels, 0.8).unwrap();
        assert_eq!(threshold.score, 6.0);
        assert_eq!(threshold.alerts, 5);
        assert_eq!(threshold.precision, Some(0.8));
        assert_eq!(threshold.recall, Some(1.0));
        let threshold = for_precision(&scores, &labels, 1.0).unwrap();
        assert_eq!((threshold.score, threshold.recall), (8.0, Some(0.75)));
        let error = for_precision(&[1.0, 2.0], &[true, false], 0.9).unwrap_err().to_string();
        assert!(error.contains("the best is 0.5000"), "{error}");
    }
}
