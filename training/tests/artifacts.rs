//! The trait-level parts around the detectors: calibrated ensembles, explanations, thresholds
//! and artifacts, exercised on every detector kind with small seeded data.

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use training::any_model::{AnyModel, EnsembleParams, ModelKind};
use training::artifact::{column_medians, Artifact, FeatureSchemaRecord, Metadata, TrainingSource, FORMAT_VERSION};
use training::ensemble::{CalibratedModel, Combination, Ensemble};
use training::thresholds::for_alert_rate;
use training::{Fit, Model, TrainingError};

/// 300 rows of 4 correlated features around the origin, and 6 rows far out on feature 2.
fn rows() -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut rows = Array2::zeros((306, 4));
    for (index, mut row) in rows.rows_mut().into_iter().enumerate() {
        let base: f64 = rng.gen_range(-1.0..1.0);
        for (feature, value) in row.iter_mut().enumerate() {
            *value = base * (feature as f64 + 1.0) + rng.gen_range(-0.3..0.3);
        }
        if index >= 300 {
            row[2] += 12.0 + index as f64;
        }
    }
    rows
}

fn schema(n_features: usize) -> FeatureSchemaRecord {
    FeatureSchemaRecord {
        name: "test_features".into(),
        version: 3,
        names: (0..n_features).map(|index| format!("feature_{index}")).collect(),
    }
}

fn artifact(params: EnsembleParams, rows: &Array2<f64>) -> Artifact {
    let model = params.fit(rows.view(), 9).unwrap();
    let scores = model.score_rows(rows.view()).to_vec();
    let threshold = for_alert_rate(&scores, 0.02).unwrap();
    Artifact {
        metadata: Metadata {
            format_version: FORMAT_VERSION,
            model_kind: "test".into(),
            params,
            feature_schema: schema(rows.ncols()),
            feature_medians: column_medians(rows.view()),
            seed: 9,
            training: TrainingSource {
                source: "memory".into(),
                window: None,
                rows: rows.nrows(),
                labelled_anomalies: None,
            },
            metrics: None,
            thresholds: vec![threshold],
            created_at: "2026-11-25T12:00:00Z".into(),
            crate_version: "test".into(),
        },
        model,
    }
}

fn every_params() -> Vec<(String, EnsembleParams)> {
    let mut all: Vec<(String, EnsembleParams)> = ModelKind::ALL
        .iter()
        .map(|kind| (kind.name().to_string(), EnsembleParams::single(kind.default_params())))
        .collect();
    all.push(("ensemble".into(), EnsembleParams::default()));
    all
}

#[test]
fn every_model_kind_round_trips_through_an_artifact_with_identical_scores() {
    let rows = rows();
    let dir = tempfile::tempdir().unwrap();
    for (name, params) in every_params() {
        let artifact = artifact(params, &rows);
        let before: Vec<f64> = artifact.model.score_rows(rows.view()).to_vec();
        for path in [dir.path().join(&name), dir.path().join(format!("{name}.json"))] {
            artifact.save(&path).unwrap();
            let loaded = Artifact::load(&path).unwrap();
            assert_eq!(loaded, artifact, "{name}: the loaded artifact differs");
            let after: Vec<f64> = loaded.model.score_rows(rows.view()).to_vec();
            // Bit for bit, not approximately.
            let same = before.iter().zip(&after).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{name}: scores changed across save/load at {}", path.display());
        }
        // Scores are calibrated to [0, 1], and the outliers rank high.
        assert!(before.iter().all(|score| (0.0..=1.0).contains(score)), "{name}");
        let labels: Vec<bool> = (0..rows.nrows()).map(|index| index >= 300).collect();
        let auc = training::metrics::roc_auc(&before, &labels).unwrap();
        // Per-feature detectors (ECOD, HBOS) also flag ordinary rows in the tails of the three
        // correlated features, so they rank these outliers less perfectly than the others.
        let auc_min = if name == "ensemble" || name == "iforest" { 0.95 } else { 0.7 };
        assert!(auc > auc_min, "{name}: ROC-AUC {auc} on outliers of one feature (random ranking: 0.5)");
    }
}

#[test]
fn a_mismatched_feature_count_or_schema_is_refused_with_a_clear_error() {
    let rows = rows();
    let artifact = artifact(EnsembleParams::default(), &rows);
    let error = artifact.score(&[1.0, 2.0, 3.0]).unwrap_err();
    assert!(matches!(error, TrainingError::FeatureCount { expected: 4, actual: 3 }), "{error}");
    assert_eq!(error.to_string(), "feature count mismatch: model has 4 features, input has 3");

    let mut other = schema(5);
    assert!(matches!(artifact.check_schema(&other), Err(TrainingError::FeatureCount { expected: 4, actual: 5 })));
    other.names.pop();
    artifact.check_schema(&other).unwrap();
    other.names[1] = "amount_log".into();
    let error = artifact.check_schema(&other).unwrap_err().to_string();
    assert_eq!(
        error,
        "feature schema mismatch: feature 1 is \"feature_1\" in the model and \"amount_log\" in the input"
    );
    let mut newer = schema(4);
    newer.version = 4;
    let error = artifact.check_schema(&newer).unwrap_err().to_string();
    assert!(
        error.contains("trained on test_features v3 (4 features), the input is test_features v4 (4 features)"),
        "{error}"
    );
    // A newer version with more features is refused for its version, which is the reason.
    let mut grown = schema(7);
    grown.version = 4;
    let error = artifact.check_schema(&grown).unwrap_err();
    assert!(matches!(error, TrainingError::SchemaMismatch(_)), "{error}");
    assert!(
        error
            .to_string()
            .contains("trained on test_features v3 (4 features), the input is test_features v4 (7 features)"),
        "{error}"
    );

    // An artifact whose schema disagrees with its model does not load.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model");
    artifact.save(&path).unwrap();
    let metadata_path = path.join("metadata.json");
    let mut metadata: serde_json::Value = serde_json::from_slice(&std::fs::read(&metadata_path).unwrap()).unwrap();
    metadata["feature_schema"]["names"].as_array_mut().unwrap().pop();
    std::fs::write(&metadata_path, serde_json::to_vec(&metadata).unwrap()).unwrap();
    let error = Artifact::load(&path).unwrap_err().to_string();
    assert!(error.contains("the model has 4 features but its schema names 3"), "{error}");
    std::fs::write(&metadata_path, b"{ not json").unwrap();
    let error = Artifact::load(&path).unwrap_err().to_string();
    assert!(error.contains("metadata.json") && error.contains("line 1"), "{error}");
}

#[test]
fn an_ensemble_of_identical_members_scores_and_explains_like_the_member() {
    let rows = rows();
    for kind in ModelKind::ALL {
        let model: AnyModel = kind.default_params().fit(rows.view(), 3).unwrap();
        let member = CalibratedModel::calibrate(model.clone(), rows.view()).unwrap();
        let single = Ensemble::new(vec![member.clone()], Combination::Mean).unwrap();
        for combination in
            [Combination::Mean, Combination::Median, Combination::TailEvidence, Combination::RankWeightedTailEvidence]
        {
            let triple = Ensemble::new(vec![member.clone(), member.clone(), member.clone()], combination).unwrap();
            let mut single_contributions = vec![0.0; 4];
            let mut triple_contributions = vec![0.0; 4];
            for row in rows.rows() {
                let row = row.as_slice().unwrap();
                let expected = member.score(row);
                assert!((triple.score(row) - expected).abs() < 1e-12, "{kind:?} {combination:?}");
                assert_eq!(single.score(row), expected);
                let batch = triple.score_rows(ndarray::ArrayView2::from_shape((1, 4), row).unwrap())[0];
                assert!((batch - expected).abs() < 1e-12, "{kind:?} {combination:?}: batch {batch} vs {expected}");
                single.explain(row, &mut single_contributions);
                triple.explain(row, &mut triple_contributions);
                for (a, b) in single_contributions.iter().zip(&triple_contributions) {
                    assert!((a - b).abs() < 1e-12, "{kind:?}: explanations differ");
                }
            }
        }
    }
}

#[test]
fn explanations_sum_to_the_score_and_name_the_feature_that_is_off() {
    let rows = rows();
    let artifact = artifact(EnsembleParams::default(), &rows);
    let outlier = rows.row(305).to_vec();
    let top = artifact.top_features(&outlier, 2).unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!(top[0].name, "feature_2");
    assert_eq!(top[0].value, outlier[2]);
    assert_eq!(top[0].typical_value, artifact.metadata.feature_medians[2]);
    assert!(top[0].contribution >= top[1].contribution);
    let all = artifact.top_features(&outlier, 10).unwrap();
    assert_eq!(all.len(), 4);
    let total: f64 = all.iter().map(|feature| feature.contribution).sum();
    let score = artifact.score(&outlier).unwrap();
    assert!((total - score).abs() < 1e-9, "contributions {total} vs score {score}");
}
