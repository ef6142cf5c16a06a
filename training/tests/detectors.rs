//! Behaviour every detector must show: bad parameters rejected by name, an obvious outlier
//! ranked first and explained by the feature that was perturbed, determinism by seed, an
//! identical model after a serde round trip, batch scoring equal to row scoring, and no
//! panic on degenerate data (constant columns, duplicate rows, fewer rows than a subsample).

use ndarray::{Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use training::ecod::{EcodParams, TRAINING_ROWS_MAX_LIMIT};
use training::gaussian_mixture::{GaussianMixtureParams, COMPONENTS_MAX, FITS_MAX};
use training::hbos::{HbosParams, BINS_MAX};
use training::isolation_forest::{IsolationForest, IsolationForestParams, SUBSAMPLE_ROWS_MAX, TREES_MAX};
use training::knn::{KnnParams, NEIGHBOURS_MAX};
use training::pca::{PcaParams, PcaScore};
use training::robust_baseline::{Aggregation, RobustBaselineParams};
use training::{Fit, Model, TrainingError};

/// The perturbed row and feature of [`rows_with_outlier`].
const OUTLIER_ROW: usize = 17;
const OUTLIER_FEATURE: usize = 2;
const OUTLIER_VALUE: f64 = 40.0;

/// 300 rows of 4 roughly normal features (sums of uniforms, unit scale); row `OUTLIER_ROW`
/// sits at the centre except `OUTLIER_FEATURE`, moved 40 standard deviations.
fn rows_with_outlier(seed: u64) -> Array2<f64> {
    rows_with_outlier_in(seed, &[OUTLIER_FEATURE])
}

/// As [`rows_with_outlier`], with the outlier row moved along all of `features`.
fn rows_with_outlier_in(seed: u64, features: &[usize]) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rows = Array2::from_shape_fn((300, 4), |_| (0..12).map(|_| rng.gen::<f64>()).sum::<f64>() - 6.0);
    rows.row_mut(OUTLIER_ROW).fill(0.0);
    for &feature in features {
        rows[[OUTLIER_ROW, feature]] = OUTLIER_VALUE;
    }
    rows
}

fn scores<M: Model>(model: &M, rows: ArrayView2<'_, f64>) -> Vec<f64> {
    rows.rows().into_iter().map(|row| model.score(row.as_slice().unwrap())).collect()
}

fn argmax(values: &[f64]) -> usize {
    (0..values.len()).max_by(|&a, &b| values[a].total_cmp(&values[b])).unwrap()
}

fn assert_invalid_parameter<P: Fit>(params: P, expected_name: &str) {
    match params.check() {
        Err(TrainingError::InvalidParameter { name, .. }) => assert_eq!(name, expected_name),
        other => panic!("expected invalid {expected_name}, got {other:?}"),
    }
    let rows = rows_with_outlier(0);
    assert!(matches!(params.fit(rows.view(), 0), Err(TrainingError::InvalidParameter { .. })));
}

/// The outlier scores highest, the explanation of a central row moved along
/// `OUTLIER_FEATURE` peaks on that feature, and batch scoring equals row-by-row scoring.
/// Detectors that add up independent per-feature terms (ECOD, HBOS) cannot rank a
/// one-feature outlier above every row that is merely unusual in all features, so for
/// them (`outlier_in_all_features`) the outlier row is moved along every feature.
fn check_outlier_found_and_explained<P: Fit>(params: &P, outlier_in_all_features: bool) {
    let rows = if outlier_in_all_features { rows_with_outlier_in(1, &[0, 1, 2, 3]) } else { rows_with_outlier(1) };
    let model = params.fit(rows.view(), 7).unwrap();
    assert_eq!(model.n_features(), 4);
    let row_scores = scores(&model, rows.view());
    assert_eq!(argmax(&row_scores), OUTLIER_ROW, "scores {row_scores:?}");
    assert_eq!(row_scores, model.score_rows(rows.view()).to_vec(), "batch and row scores differ");
    let mut probe = vec![0.0; 4];
    probe[OUTLIER_FEATURE] = OUTLIER_VALUE;
    let mut contributions = vec![f64::NAN; 4];
    model.explain(&probe, &mut contributions);
    assert!(contributions.iter().all(|value| value.is_finite()), "{contributions:?}");
    assert_eq!(argmax(&contributions), OUTLIER_FEATURE, "contributions {contributions:?}");
}

/// Same seed, same scores; the serde round trip scores bit for bit the same.
fn check_deterministic_and_round_trips<P>(params: &P)
where
    P: Fit,
    P::Model: Serialize + DeserializeOwned,
{
    let rows = rows_with_outlier(2);
    let first = params.fit(rows.view(), 11).unwrap();
    let second = params.fit(rows.view(), 11).unwrap();
    let first_scores = scores(&first, rows.view());
    assert_eq!(first_scores, scores(&second, rows.view()));
    let json = serde_json::to_string(&first).unwrap();
    let loaded: P::Model = serde_json::from_str(&json).unwrap();
    assert_eq!(first_scores, scores(&loaded, rows.view()));
    let mut before = vec![0.0; 4];
    let mut after = vec![0.0; 4];
    first.explain(rows.row(3).as_slice().unwrap(), &mut before);
    loaded.explain(rows.row(3).as_slice().unwrap(), &mut after);
    assert_eq!(before, after);
}

/// Constant columns, all-duplicate rows, one row, a few rows: fits, finite scores and
/// explanations, no panic.
fn check_degenerate_data<P: Fit>(params: &P) {
    let mut constant_column = rows_with_outlier(3);
    constant_column.column_mut(1).fill(5.0);
    let duplicates = Array2::from_elem((50, 3), 1.5);
    let one_row = Array2::from_shape_vec((1, 3), vec![1.0, 2.0, 3.0]).unwrap();
    let few_rows = Array2::from_shape_vec((3, 2), vec![1.0, 2.0, 1.0, 2.0, 4.0, -1.0]).unwrap();
    for rows in [constant_column, duplicates, one_row, few_rows] {
        let model = params.fit(rows.view(), 5).unwrap();
        let mut contributions = vec![0.0; rows.ncols()];
        for row in rows.rows() {
            let row = row.as_slice().unwrap();
            assert!(model.score(row).is_finite(), "score of {row:?}");
            model.explain(row, &mut contributions);
            assert!(contributions.iter().all(|value| value.is_finite()), "{contributions:?}");
        }
        // A value never seen in training is scored too.
        let unseen = vec![1e6; rows.ncols()];
        assert!(model.score(&unseen).is_finite());
    }
}

/// Non-finite training values are rejected naming the row and feature.
fn check_rejects_non_finite<P: Fit>(params: &P) {
    let mut rows = rows_with_outlier(4);
    rows[[5, 1]] = f64::NAN;
    let error = match params.fit(rows.view(), 0) {
        Err(error) => error.to_string(),
        Ok(_) => panic!("a NaN feature was accepted"),
    };
    assert!(error.contains("row 5, feature 1"), "{error}");
}

#[test]
fn isolation_forest_rejects_bad_parameters() {
    assert_invalid_parameter(IsolationForestParams { trees: 0, ..Default::default() }, "trees");
    assert_invalid_parameter(IsolationForestParams { trees: TREES_MAX + 1, ..Default::default() }, "trees");
    assert_invalid_parameter(IsolationForestParams { subsample_rows: 1, ..Default::default() }, "subsample_rows");
    let too_many = SUBSAMPLE_ROWS_MAX + 1;
    assert_invalid_parameter(
        IsolationForestParams { subsample_rows: too_many, ..Default::default() },
        "subsample_rows",
    );
    assert!(IsolationForestParams::default().check().is_ok());
}

#[test]
fn isolation_forest_finds_and_explains_the_outlier() {
    check_outlier_found_and_explained(&IsolationForestParams::default(), false);
    // A number of trees that is not a multiple of the four walked together, and a depth
    // limit below the padded levels: batch and row scoring still agree.
    for params in
        [IsolationForestParams { trees: 37, subsample_rows: 64 }, IsolationForestParams { trees: 3, subsample_rows: 2 }]
    {
        let rows = rows_with_outlier(8);
        let model = params.fit(rows.view(), 1).unwrap();
        assert_eq!(scores(&model, rows.view()), model.score_rows(rows.view()).to_vec());
    }
}

#[test]
fn isolation_forest_batch_scores_equal_row_scores_for_every_layout() {
    // Batch scoring transposes groups of rows (narrow rows), descends rows one by one when a
    // group would not fit a block (wide rows), and scores the rows after the last whole
    // group one by one; every path gives the per-row score bit for bit, NaN values included
    // (they compare as "not greater" and go left, on both paths).
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (rows_count, features) in [(1_000, 5), (37, 3), (300, 64), (90, 300), (5, 5_000)] {
        let mut rows = Array2::from_shape_fn((rows_count, features), |_| rng.gen_range(-4.0..4.0));
        let model = IsolationForestParams::default().fit(rows.view(), 2).unwrap();
        rows[[rows_count / 2, features - 1]] = f64::NAN;
        rows[[rows_count - 1, 0]] = f64::NAN;
        let row_scores = scores(&model, rows.view());
        let batch_scores = model.score_rows(rows.view()).to_vec();
        assert_eq!(row_scores.len(), batch_scores.len());
        for (row, (one, batch)) in row_scores.iter().zip(&batch_scores).enumerate() {
            assert_eq!(one.to_bits(), batch.to_bits(), "{rows_count}x{features}: row {row}");
        }
    }
}

#[test]
fn isolation_forest_is_deterministic_and_round_trips() {
    check_deterministic_and_round_trips(&IsolationForestParams::default());
    let rows = rows_with_outlier(2);
    let params = IsolationForestParams::default();
    let (a, b) = (params.fit(rows.view(), 1).unwrap(), params.fit(rows.view(), 2).unwrap());
    assert_ne!(scores(&a, rows.view()), scores(&b, rows.view()), "the seed must matter");
}

#[test]
fn isolation_forest_survives_degenerate_data() {
    check_degenerate_data(&IsolationForestParams::default());
    check_rejects_non_finite(&IsolationForestParams::default());
}

#[test]
fn isolation_forest_scores_like_the_literature() {
    // Scores lie in (0, 1]; an average row scores near 0.5 or below, the outlier well above.
    let rows = rows_with_outlier(6);
    let model = IsolationForestParams::default().fit(rows.view(), 3).unwrap();
    let all = scores(&model, rows.view());
    assert!(all.iter().all(|score| *score > 0.0 && *score <= 1.0));
    let mut sorted = all.clone();
    sorted.sort_by(f64::total_cmp);
    assert!(sorted[150] < 0.5, "median score {}", sorted[150]);
    assert!(all[OUTLIER_ROW] > 0.6, "outlier score {}", all[OUTLIER_ROW]);
    // Explanations add up to c(psi) - E[h(x)], which the score is 2^(-E[h]/c(psi)) of.
    let mut contributions = vec![0.0; 4];
    model.explain(rows.row(OUTLIER_ROW).as_slice().unwrap(), &mut contributions);
    let c = training::isolation_forest::average_path_length(model.subsample());
    let mean_path = -all[OUTLIER_ROW].log2() * c;
    let total: f64 = contributions.iter().sum();
    assert!((total - (c - mean_path)).abs() < 1e-9, "{total} vs {}", c - mean_path);
}

#[test]
fn average_path_length_matches_the_reference_values() {
    use training::isolation_forest::average_path_length;
    assert_eq!(average_path_length(1), 0.0);
    assert_eq!(average_path_length(2), 1.0);
    // scikit-learn's _average_path_length([256]) = 10.244770920119917
    assert!((average_path_length(256) - 10.244_770_920_119_917).abs() < 1e-12);
}

#[test]
fn ecod_rejects_bad_parameters() {
    assert_invalid_parameter(EcodParams { training_rows_max: 0 }, "training_rows_max");
    assert_invalid_parameter(EcodParams { training_rows_max: TRAINING_ROWS_MAX_LIMIT + 1 }, "training_rows_max");
    assert!(EcodParams::default().check().is_ok());
}

#[test]
fn ecod_finds_and_explains_the_outlier() {
    check_outlier_found_and_explained(&EcodParams::default(), true);
    // Subsampled columns still rank the outlier first when it is kept.
    check_outlier_found_and_explained(&EcodParams { training_rows_max: 299 }, true);
}

#[test]
fn ecod_is_deterministic_and_round_trips() {
    check_deterministic_and_round_trips(&EcodParams::default());
    check_deterministic_and_round_trips(&EcodParams { training_rows_max: 100 });
}

#[test]
fn ecod_survives_degenerate_data() {
    check_degenerate_data(&EcodParams::default());
    check_rejects_non_finite(&EcodParams::default());
}

#[test]
fn ecod_matches_hand_computed_tail_probabilities() {
    // One feature, values 1,2,2,3,10: skewness positive (right tail).
    let rows = Array2::from_shape_vec((5, 1), vec![1.0, 2.0, 2.0, 3.0, 10.0]).unwrap();
    let model = EcodParams::default().fit(rows.view(), 0).unwrap();
    let n = 5.0f64;
    // x = 10: F_left = 5/5, F_right = 1/5 -> max(0, ln 5, ln 5) = ln 5.
    assert!((model.score(&[10.0]) - n.ln()).abs() < 1e-12);
    // x = 2 (tied): F_left = 3/5, F_right = 4/5 -> left term -ln(3/5) is the larger.
    assert!((model.score(&[2.0]) - -(3.0f64 / n).ln()).abs() < 1e-12);
    // x = 1: F_left = 1/5 -> ln 5.
    assert!((model.score(&[1.0]) - n.ln()).abs() < 1e-12);
    // Beyond the training range: capped as if one training value were as extreme.
    assert!((model.score(&[-100.0]) - n.ln()).abs() < 1e-12);
    assert!((model.score(&[1e9]) - n.ln()).abs() < 1e-12);
}

#[test]
fn robust_baseline_finds_and_explains_the_outlier() {
    check_outlier_found_and_explained(&RobustBaselineParams::default(), false);
    check_outlier_found_and_explained(&RobustBaselineParams { aggregation: Aggregation::Max }, false);
    check_deterministic_and_round_trips(&RobustBaselineParams::default());
    check_degenerate_data(&RobustBaselineParams::default());
    check_rejects_non_finite(&RobustBaselineParams::default());
}

#[test]
fn robust_baseline_uses_median_and_mad() {
    // Median 3, |deviations| 2,1,0,1,97 -> MAD 1, scale 1.4826.
    let rows = Array2::from_shape_vec((5, 1), vec![1.0, 2.0, 3.0, 4.0, 100.0]).unwrap();
    let model = RobustBaselineParams::default().fit(rows.view(), 0).unwrap();
    assert_eq!(model.medians(), &[3.0]);
    assert!((model.scales()[0] - 1.4826).abs() < 1e-12);
    assert!((model.score(&[6.0]) - 3.0 / 1.4826).abs() < 1e-12);
    // MAD 0 (most values equal): the mean absolute deviation stands in.
    let rows = Array2::from_shape_vec((5, 1), vec![0.0, 0.0, 0.0, 0.0, 10.0]).unwrap();
    let model = RobustBaselineParams::default().fit(rows.view(), 0).unwrap();
    assert!((model.scales()[0] - 1.2533 * 2.0).abs() < 1e-12);
    // A constant feature: any other value is far, but finite.
    let rows = Array2::from_elem((4, 1), 7.0);
    let model = RobustBaselineParams::default().fit(rows.view(), 0).unwrap();
    assert_eq!(model.score(&[7.0]), 0.0);
    assert!(model.score(&[7.5]) > 1e6 && model.score(&[7.5]).is_finite());
}

#[test]
fn gaussian_mixture_rejects_bad_parameters() {
    let defaults = GaussianMixtureParams::default;
    assert_invalid_parameter(GaussianMixtureParams { component_counts: vec![], ..defaults() }, "component_counts");
    assert_invalid_parameter(GaussianMixtureParams { component_counts: vec![4, 0], ..defaults() }, "component_counts");
    let too_many = vec![COMPONENTS_MAX + 1];
    assert_invalid_parameter(GaussianMixtureParams { component_counts: too_many, ..defaults() }, "component_counts");
    let too_many_fits = vec![2; FITS_MAX + 1];
    assert_invalid_parameter(
        GaussianMixtureParams { component_counts: too_many_fits, ..defaults() },
        "component_counts",
    );
    assert_invalid_parameter(GaussianMixtureParams { reg_covariance: 0.0, ..defaults() }, "reg_covariance");
    assert_invalid_parameter(GaussianMixtureParams { reg_covariance: f64::NAN, ..defaults() }, "reg_covariance");
    assert_invalid_parameter(GaussianMixtureParams { iterations_max: 0, ..defaults() }, "iterations_max");
    assert_invalid_parameter(GaussianMixtureParams { tolerance: -1.0, ..defaults() }, "tolerance");
    assert_invalid_parameter(GaussianMixtureParams { training_rows_max: 0, ..defaults() }, "training_rows_max");
    assert_invalid_parameter(GaussianMixtureParams { component_weight_min: 1.0, ..defaults() }, "component_weight_min");
    assert!(defaults().check().is_ok());
}

#[test]
fn gaussian_mixture_finds_and_explains_the_outlier() {
    check_outlier_found_and_explained(&GaussianMixtureParams::default(), false);
    check_deterministic_and_round_trips(&GaussianMixtureParams::default());
    check_degenerate_data(&GaussianMixtureParams::default());
    check_rejects_non_finite(&GaussianMixtureParams::default());
}

#[test]
fn gaussian_mixture_scores_the_negative_log_likelihood() {
    // One component on standardized 1-D data: NLL(z) = ½ ln(2π σ²) + z² / (2σ²), σ² = 1 + reg.
    let rows = Array2::from_shape_vec((4, 1), vec![-1.0, -1.0, 1.0, 1.0]).unwrap();
    let params = GaussianMixtureParams { component_counts: vec![1], reg_covariance: 1e-3, ..Default::default() };
    let model = params.fit(rows.view(), 0).unwrap();
    let variance = 1.0 + 1e-3;
    for x in [0.0, 1.0, 3.0] {
        let expected = 0.5 * (2.0 * std::f64::consts::PI * variance).ln() + x * x / (2.0 * variance);
        assert!((model.score(&[x]) - expected).abs() < 1e-9, "x = {x}: {} vs {expected}", model.score(&[x]));
    }
    // Two well separated clusters: a point between them is less likely than either centre.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let rows = Array2::from_shape_fn((400, 2), |(row, _)| {
        let centre = if row % 2 == 0 { -5.0 } else { 5.0 };
        centre + rng.gen::<f64>() - 0.5
    });
    let model = GaussianMixtureParams::default().fit(rows.view(), 3).unwrap();
    assert!(model.fallback_reason().is_none(), "{:?}", model.fallback_reason());
    assert!(model.score(&[0.0, 0.0]) > model.score(&[5.0, 5.0]) + 5.0);
    assert!(model.score(&[0.0, 0.0]) > model.score(&[-5.0, -5.0]) + 5.0);
}

#[test]
fn gaussian_mixture_pools_fits_by_the_mean_negative_log_likelihood() {
    // A repeated count is fitted once: `[1, 1]` is the same model as `[1]`.
    let rows = rows_with_outlier(4);
    let single = GaussianMixtureParams { component_counts: vec![1], ..Default::default() };
    let pooled = GaussianMixtureParams { component_counts: vec![1, 1], ..Default::default() };
    let single = single.fit(rows.view(), 2).unwrap();
    let pooled = pooled.fit(rows.view(), 2).unwrap();
    assert_eq!((single.fits(), pooled.fits()), (1, 1));
    assert_eq!((single.components(), pooled.components()), (1, 1));
    let (mut single_contributions, mut pooled_contributions) = (vec![0.0; 4], vec![0.0; 4]);
    for row in rows.rows() {
        let row = row.as_slice().unwrap();
        assert!((single.score(row) - pooled.score(row)).abs() < 1e-9);
        single.explain(row, &mut single_contributions);
        pooled.explain(row, &mut pooled_contributions);
        for (a, b) in single_contributions.iter().zip(&pooled_contributions) {
            assert!((a - b).abs() < 1e-9, "{single_contributions:?} vs {pooled_contributions:?}");
        }
    }

    // Two well separated clusters, fitted with one and with two components: the pooled
    // score is the mean of the two fits' negative log-likelihoods, so the point between the
    // clusters (likely under the single broad Gaussian, unlikely under the two narrow ones)
    // sits between what each fit alone says.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let rows = Array2::from_shape_fn((400, 2), |(row, _)| {
        let centre = if row % 2 == 0 { -5.0 } else { 5.0 };
        centre + rng.gen::<f64>() - 0.5
    });
    let fit = |counts: Vec<usize>| {
        GaussianMixtureParams { component_counts: counts, ..Default::default() }.fit(rows.view(), 3).unwrap()
    };
    let (broad, narrow, pooled) = (fit(vec![1]), fit(vec![2]), fit(vec![1, 2]));
    assert_eq!(pooled.fits(), 2);
    assert!(pooled.fallback_reason().is_none(), "{:?}", pooled.fallback_reason());
    let between = [0.0, 0.0];
    let expected = (broad.score(&between) + narrow.score(&between)) / 2.0;
    // Same data, same one-component fit; the two-component fit may differ only by EM's
    // initialisation stream, which on clusters this far apart finds the same optimum.
    assert!(
        (pooled.score(&between) - expected).abs() < 1e-3 * expected.abs().max(1.0),
        "{} vs {expected}",
        pooled.score(&between)
    );
    assert!(narrow.score(&between) > pooled.score(&between) + 5.0);
    assert!(pooled.score(&between) > broad.score(&between) + 5.0);
}

#[test]
fn gaussian_mixture_fits_every_count_on_heavy_tailed_features() {
    // Transaction features have heavy tails (amounts spanning six orders of magnitude) and
    // rare indicators (a kind seen once in a thousand rows): rows whose density underflows
    // to 0 under every component. That must not make EM's responsibilities NaN
    // (linfa-clustering 0.8.1's EM failed on them, and the model fell back to one Gaussian).
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let normal = |rng: &mut ChaCha8Rng| (0..12).map(|_| rng.gen::<f64>()).sum::<f64>() - 6.0;
    let rows = Array2::from_shape_fn((3_000, 4), |(row, feature)| match feature {
        0 => (3.0 * normal(&mut rng)).exp(),
        1 => f64::from(row % 997 == 0),
        2 => f64::from(row % 2 == 0) * 10.0 + normal(&mut rng),
        _ => normal(&mut rng),
    });
    let model = GaussianMixtureParams::default().fit(rows.view(), 0).unwrap();
    assert!(model.fallback_reason().is_none(), "{:?}", model.fallback_reason());
    assert_eq!(model.fits(), 3);
    assert!(scores(&model, rows.view()).iter().all(|score| score.is_finite()));
}

#[test]
fn gaussian_mixture_keeps_every_count_when_components_lose_their_rows() {
    // Three distinct points repeated: EM with 4 or 8 components empties some of them. Such a
    // component is dropped (the weight floor would drop it anyway), not the whole fit.
    let rows = Array2::from_shape_fn((100, 2), |(row, column)| ((row % 3) * (column + 1)) as f64);
    let model = GaussianMixtureParams::default().fit(rows.view(), 0).unwrap();
    assert!(model.fallback_reason().is_none(), "{:?}", model.fallback_reason());
    assert_eq!(model.fits(), 3);
    // Capped at the rows, counts that become equal are fitted once: [2, 3, 3] is [2, 3].
    let rows = Array2::from_shape_vec((3, 2), vec![0.0, 1.0, 2.0, 0.5, 4.0, -1.0]).unwrap();
    let model = GaussianMixtureParams::default().fit(rows.view(), 0).unwrap();
    assert!(model.fits() <= 2, "{} fits", model.fits());
}

#[test]
fn gaussian_mixture_scores_an_extreme_row_as_infinitely_unlikely_not_nan() {
    // The Mahalanobis terms overflow to +∞ under every component: the density is 0.
    let model = GaussianMixtureParams::default().fit(rows_with_outlier(4).view(), 0).unwrap();
    let extreme = [0.0, 0.0, 1e160, 0.0];
    assert_eq!(model.score(&extreme), f64::INFINITY);
    let mut contributions = vec![0.0; 4];
    model.explain(&extreme, &mut contributions);
    assert!(!contributions.iter().any(|value| value.is_nan()), "{contributions:?}");
}

#[test]
fn gaussian_mixture_params_written_before_pooling_keep_their_count() {
    let old = r#"{"kind":"gmm","components":4,"reg_covariance":0.001,"iterations_max":200,"tolerance":0.001,"training_rows_max":100000,"component_weight_min":0.1}"#;
    match serde_json::from_str::<training::any_model::AnyParams>(old).unwrap() {
        training::any_model::AnyParams::Gmm(params) => assert_eq!(params.component_counts, vec![4]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn gaussian_mixture_refuses_an_artifact_whose_fits_do_not_split_its_components() {
    let model = GaussianMixtureParams::default().fit(rows_with_outlier(6).view(), 1).unwrap();
    let json = serde_json::to_value(&model).unwrap();
    let components = json["components"].as_u64().unwrap();
    for (fit_ends, why) in [
        (serde_json::json!([0, components]), "an empty fit"),
        (serde_json::json!([components + 1]), "past the components"),
        (serde_json::json!([components, components]), "not ascending"),
    ] {
        let mut broken = json.clone();
        broken["fit_ends"] = fit_ends;
        let error = serde_json::from_value::<training::gaussian_mixture::GaussianMixture>(broken).unwrap_err();
        assert!(error.to_string().contains("fit ends"), "{why}: {error}");
    }
    let mut short = json.clone();
    short["means"].as_array_mut().unwrap().pop();
    let error = serde_json::from_value::<training::gaussian_mixture::GaussianMixture>(short).unwrap_err();
    assert!(error.to_string().contains("means has"), "{error}");
}

#[test]
fn gaussian_mixture_loads_an_artifact_written_before_fits_were_pooled() {
    // Such an artifact has no `fit_ends`: all its components are one mixture.
    let rows = rows_with_outlier(6);
    let params = GaussianMixtureParams { component_counts: vec![3], ..Default::default() };
    let model = params.fit(rows.view(), 1).unwrap();
    let mut json: serde_json::Value = serde_json::to_value(&model).unwrap();
    json.as_object_mut().unwrap().remove("fit_ends").expect("the model records its fits");
    let old: training::gaussian_mixture::GaussianMixture = serde_json::from_value(json).unwrap();
    assert_eq!(old.fits(), 1);
    assert_eq!(scores(&old, rows.view()), scores(&model, rows.view()));
}

#[test]
fn pca_rejects_bad_parameters() {
    assert_invalid_parameter(PcaParams { variance_kept: 0.0, ..Default::default() }, "variance_kept");
    assert_invalid_parameter(PcaParams { variance_kept: 1.0, ..Default::default() }, "variance_kept");
    assert_invalid_parameter(PcaParams { variance_kept: f64::NAN, ..Default::default() }, "variance_kept");
    assert_invalid_parameter(PcaParams { training_rows_max: 1, ..Default::default() }, "training_rows_max");
    assert!(PcaParams::default().check().is_ok());
}

#[test]
fn pca_finds_and_explains_the_outlier() {
    // Only the default score finds a one-feature outlier: with the others, the outlier's
    // own variance makes its feature a principal axis, so its residual is small (see
    // pca_flags_a_broken_correlation... for what they do find).
    check_outlier_found_and_explained(&PcaParams::default(), false);
    for score in [PcaScore::Reconstruction, PcaScore::WeightedMinor, PcaScore::WeightedAll] {
        let params = PcaParams { score, ..Default::default() };
        check_deterministic_and_round_trips(&params);
        check_degenerate_data(&params);
        check_rejects_non_finite(&params);
    }
}

#[test]
fn pca_flags_a_broken_correlation_and_its_contributions_add_up() {
    // Feature 1 follows feature 0; feature 2 is independent noise.
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let rows = Array2::from_shape_fn((500, 3), |_| rng.gen::<f64>() * 2.0 - 1.0);
    let mut rows = rows;
    for mut row in rows.rows_mut() {
        row[1] = row[0] + 0.01 * row[1];
    }
    for score in [PcaScore::Reconstruction, PcaScore::WeightedMinor, PcaScore::WeightedAll] {
        let model = PcaParams { score, ..Default::default() }.fit(rows.view(), 0).unwrap();
        // Ordinary in each feature, but against the relation between 0 and 1.
        let broken = [0.5, -0.5, 0.0];
        let usual = [0.9, 0.9, 0.9];
        assert!(model.score(&broken) > 10.0 * model.score(&usual), "{score:?}");
        let mut contributions = [0.0; 3];
        model.explain(&broken, &mut contributions);
        assert!(contributions[0] > contributions[2] && contributions[1] > contributions[2], "{contributions:?}");
        let total: f64 = contributions.iter().sum();
        assert!((total - model.score(&broken)).abs() < 1e-9 * total.max(1.0), "{score:?}: {total}");
    }
}

#[test]
fn hbos_rejects_bad_parameters() {
    assert_invalid_parameter(HbosParams { bins: 1, ..Default::default() }, "bins");
    assert_invalid_parameter(HbosParams { bins: BINS_MAX + 1, ..Default::default() }, "bins");
    assert_invalid_parameter(HbosParams { alpha: 0.0, ..Default::default() }, "alpha");
    assert_invalid_parameter(HbosParams { tol: -0.1, ..Default::default() }, "tol");
    assert!(HbosParams::default().check().is_ok());
}

#[test]
fn hbos_finds_and_explains_the_outlier() {
    check_outlier_found_and_explained(&HbosParams::default(), true);
    check_deterministic_and_round_trips(&HbosParams::default());
    check_degenerate_data(&HbosParams::default());
    check_rejects_non_finite(&HbosParams::default());
}

#[test]
fn hbos_matches_hand_computed_densities() {
    // Values 0..=9 and one 19: range [0, 19], 10 bins of width 1.9; bin 0 holds 0 and 1,
    // the last bin holds 19 only, bins in between hold 0 to 2 values.
    let values: Vec<f64> = (0..10).map(f64::from).chain([19.0]).collect();
    let rows = Array2::from_shape_vec((11, 1), values).unwrap();
    let model = HbosParams::default().fit(rows.view(), 0).unwrap();
    let density = |count: f64| count / (11.0 * 1.9);
    // 19 is the last edge: digitize(right=True) puts it in the last bin (1 value).
    assert!((model.score(&[19.0]) - -(density(1.0) + 0.1).log2()).abs() < 1e-12);
    // 12 falls in (11.4, 13.3], an empty bin.
    assert!((model.score(&[12.0]) - -(0.1f64).log2()).abs() < 1e-12);
    // Within tol = 0.5 bin widths below the range: the first bin (values 0 and 1).
    assert!((model.score(&[-0.9]) - -(density(2.0) + 0.1).log2()).abs() < 1e-12);
    // Farther out: the least dense bin.
    assert!((model.score(&[-5.0]) - -(0.1f64).log2()).abs() < 1e-12);
}

#[test]
fn knn_rejects_bad_parameters() {
    assert_invalid_parameter(KnnParams { neighbours: 0, ..Default::default() }, "neighbours");
    assert_invalid_parameter(KnnParams { neighbours: NEIGHBOURS_MAX + 1, ..Default::default() }, "neighbours");
    assert_invalid_parameter(KnnParams { reference_rows_max: 1, ..Default::default() }, "reference_rows_max");
    assert!(KnnParams::default().check().is_ok());
}

#[test]
fn knn_finds_and_explains_the_outlier() {
    check_outlier_found_and_explained(&KnnParams::default(), false);
    // A reference sample smaller than the data.
    check_outlier_found_and_explained(&KnnParams { neighbours: 3, reference_rows_max: 100 }, false);
    check_deterministic_and_round_trips(&KnnParams { neighbours: 3, reference_rows_max: 100 });
    check_degenerate_data(&KnnParams::default());
    check_rejects_non_finite(&KnnParams::default());
}

#[test]
fn knn_measures_the_kth_neighbour_without_the_row_itself() {
    // 1-D points 0, 1, 3, 6 (standard deviation 2.2913): for k = 1 the point 3 is nearest
    // to 1 (distance 2), not to itself.
    let rows = Array2::from_shape_vec((4, 1), vec![0.0, 1.0, 3.0, 6.0]).unwrap();
    let model = KnnParams { neighbours: 1, reference_rows_max: 100 }.fit(rows.view(), 0).unwrap();
    let scale = (((0.0f64 - 2.5).powi(2) + 1.5f64.powi(2) + 0.25 + 3.5f64.powi(2)) / 4.0).sqrt();
    assert!((model.score(&[3.0]) - 2.0 / scale).abs() < 1e-12);
    assert!((model.score(&[6.0]) - 3.0 / scale).abs() < 1e-12);
    // A new point: its nearest is 6.
    assert!((model.score(&[7.0]) - 1.0 / scale).abs() < 1e-12);
}

#[test]
fn isolation_forest_rejects_a_damaged_artifact_and_short_rows() {
    let rows = rows_with_outlier(12);
    let model = IsolationForestParams { trees: 5, subsample_rows: 16 }.fit(rows.view(), 0).unwrap();
    let mut json: serde_json::Value = serde_json::to_value(&model).unwrap();
    // A split on a feature the model does not have would index past the row.
    json["split_features"][0] = serde_json::json!(4);
    let error = serde_json::from_value::<IsolationForest>(json.clone()).unwrap_err().to_string();
    assert!(error.contains("split feature 4 of 4 features"), "{error}");
    // Arrays that do not match the tree shape.
    json["split_features"][0] = serde_json::json!(0);
    json["leaf_path_lengths"].as_array_mut().unwrap().pop();
    let error = serde_json::from_value::<IsolationForest>(json).unwrap_err().to_string();
    assert!(error.contains("leaf_path_lengths"), "{error}");
    // A row of the wrong length scores NaN instead of reading out of bounds.
    assert!(model.score(&[1.0, 2.0]).is_nan());
    assert!(model.score_rows(rows.slice(ndarray::s![.., ..2])).iter().all(|score| score.is_nan()));
    let mut contributions = vec![0.0; 2];
    model.explain(&[1.0, 2.0], &mut contributions);
    assert!(contributions.iter().all(|value| value.is_nan()));
}

#[test]
fn isolation_forest_loads_an_artifact_with_a_split_on_a_feature_index_past_2_pow_28() {
    // A valid artifact may split on any feature below `n_features`; the batch-scoring
    // offset derived on load (`feature * 16`) must not overflow `u32` for such a feature
    // (it panicked in debug builds: input must never panic).
    let feature = 1u32 << 28;
    let json = serde_json::json!({
        "n_features": feature as usize + 1,
        "trees": 1,
        "depth": 1,
        "subsample": 2,
        "average_path_length_subsample": 1.0,
        "split_features": [feature],
        "split_thresholds": [0.5],
        "leaf_path_lengths": [1.0, 1.0],
        "node_rows": [2, 1, 1],
    });
    let model: IsolationForest = serde_json::from_value(json).expect("a valid artifact loads");
    assert_eq!(model.n_features(), feature as usize + 1);
    assert_eq!(model.subsample(), 2);
}

#[test]
fn isolation_forest_scores_values_beyond_f32_range_like_the_range_edge() {
    // Values past f32::MAX round to infinity; they must still land in real leaves (the
    // padding under a shallow leaf is walked on its right side too) and score finitely.
    let rows = rows_with_outlier(13);
    let model = IsolationForestParams::default().fit(rows.view(), 0).unwrap();
    for extreme in [1e300, -1e300, f64::MAX] {
        let row = [extreme, 0.0, 0.0, 0.0];
        let score = model.score(&row);
        assert!(score.is_finite() && score > 0.0 && score <= 1.0, "{extreme}: {score}");
        let batch = model.score_rows(ndarray::ArrayView2::from_shape((1, 4), &row).unwrap());
        assert_eq!(batch[0], score);
        let mut contributions = [0.0; 4];
        model.explain(&row, &mut contributions);
        assert!(contributions.iter().all(|value| value.is_finite()), "{contributions:?}");
    }
}
