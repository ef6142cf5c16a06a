//! Ranking metrics of an anomaly score against 0/1 labels (1 = anomaly): ROC-AUC, average
//! precision and precision at k, defined as scikit-learn defines them so our figures sit
//! beside published and peer ones without a footnote.

use std::cmp::Ordering;

/// Why a metric is undefined for these inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("{scores} scores but {labels} labels")]
    LengthMismatch { scores: usize, labels: usize },
    #[error("labels hold no anomalies (1) or no normal rows (0): the metric is undefined")]
    OneClass,
    #[error("score {index} is not a number")]
    NotANumber { index: usize },
}

/// Indices of `scores` sorted by descending score (stable: equal scores keep input order).
fn descending(scores: &[f64], labels: &[bool]) -> Result<Vec<usize>, MetricError> {
    if scores.len() != labels.len() {
        return Err(MetricError::LengthMismatch { scores: scores.len(), labels: labels.len() });
    }
    if let Some(index) = scores.iter().position(|score| score.is_nan()) {
        return Err(MetricError::NotANumber { index });
    }
    let positives = labels.iter().filter(|&&label| label).count();
    if positives == 0 || positives == labels.len() {
        return Err(MetricError::OneClass);
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap_or(Ordering::Equal));
    Ok(order)
}

/// Area under the ROC curve: the probability that a random anomaly scores above a random
/// normal row, ties counting one half (Mann-Whitney U with mid-ranks).
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    let order = descending(scores, labels)?;
    let positives = labels.iter().filter(|&&label| label).count() as f64;
    let negatives = labels.len() as f64 - positives;
    // Walk tie groups from the top; each positive beats every negative below its group and
    // half of the negatives inside it.
    let mut negatives_below = negatives;
    let mut wins = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let group_positives = order[start..end].iter().filter(|&&index| labels[index]).count() as f64;
        let group_negatives = (end - start) as f64 - group_positives;
        negatives_below -= group_negatives;
        wins += group_positives * (negatives_below + group_negatives / 2.0);
        start = end;
    }
    Ok(wins / (positives * negatives))
}

/// Average precision: the mean of the precision at each threshold weighted by the recall
/// it adds, thresholds at distinct scores (scikit-learn's `average_precision_score`).
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    let order = descending(scores, labels)?;
    let positives = labels.iter().filter(|&&label| label).count() as f64;
    let (mut true_positives, mut seen, mut recall_previous, mut sum) = (0.0, 0.0, 0.0, 0.0);
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        true_positives += order[start..end].iter().filter(|&&index| labels[index]).count() as f64;
        seen += (end - start) as f64;
        let recall = true_positives / positives;
        sum += (recall - recall_previous) * (true_positives / seen);
        recall_previous = recall;
        start = end;
    }
    Ok(sum)
}

/// The share of anomalies among the `k` highest scores (equal scores keep input order).
/// With `k` = the number of anomalies this is R-precision, PyOD's `precision_n_scores`.
pub fn precision_at_k(scores: &[f64], labels: &[bool], k: usize) -> Result<f64, MetricError> {
    let order = descending(scores, labels)?;
    let k = k.clamp(1, order.len());
    Ok(order[..k].iter().filter(|&&index| labels[index]).count() as f64 / k as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_inverted_rankings() {
        let labels = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &labels), Ok(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &labels), Ok(0.0));
        assert_eq!(average_precision(&[0.1, 0.2, 0.8, 0.9], &labels), Ok(1.0));
        assert_eq!(precision_at_k(&[0.1, 0.2, 0.8, 0.9], &labels, 2), Ok(1.0));
    }

    #[test]
    fn ties_count_half() {
        // All equal: every pair is a tie, AUC 0.5; AP is the base rate.
        let labels = [true, false, false, false];
        assert_eq!(roc_auc(&[1.0; 4], &labels), Ok(0.5));
        assert_eq!(average_precision(&[1.0; 4], &labels), Ok(0.25));
    }

    #[test]
    fn matches_scikit_learn_on_a_worked_example() {
        // sklearn.metrics: roc_auc_score(y, s) = 0.75, average_precision_score(y, s) = 0.8333...
        let labels = [false, false, true, true];
        let scores = [0.1, 0.4, 0.35, 0.8];
        assert_eq!(roc_auc(&scores, &labels), Ok(0.75));
        let ap = average_precision(&scores, &labels).unwrap();
        assert!((ap - 0.833_333_333_333_333_4).abs() < 1e-12, "{ap}");
        // With a tie across classes: roc_auc_score([0,1,0,1], [0.5,0.5,0.2,0.9]) = 0.875.
        assert_eq!(roc_auc(&[0.5, 0.5, 0.2, 0.9], &[false, true, false, true]), Ok(0.875));
    }

    #[test]
    fn undefined_inputs_are_errors() {
        assert_eq!(roc_auc(&[1.0, 2.0], &[true, true]), Err(MetricError::OneClass));
        assert_eq!(roc_auc(&[1.0], &[true, false]), Err(MetricError::LengthMismatch { scores: 1, labels: 2 }));
        assert_eq!(average_precision(&[f64::NAN, 1.0], &[true, false]), Err(MetricError::NotANumber { index: 0 }));
    }
}
