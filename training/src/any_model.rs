//! The closed set of detectors, as one type: [`ModelKind`] names them (as the CLI and the
//! artifact spell them), [`AnyParams`] holds one's checked hyper-parameters and [`AnyModel`]
//! one fitted model. An ensemble and an artifact hold `AnyModel`s, so a saved model names
//! its own kind (`"kind": "iforest"`) and loads without the caller knowing what it is.

use ndarray::{Array1, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::ecod::{Ecod, EcodParams};
use crate::ensemble::{Combination, Ensemble};
use crate::gaussian_mixture::{GaussianMixture, GaussianMixtureParams};
use crate::hbos::{Hbos, HbosParams};
use crate::isolation_forest::{IsolationForest, IsolationForestParams};
use crate::knn::{Knn, KnnParams};
use crate::pca::{Pca, PcaParams};
use crate::robust_baseline::{RobustBaseline, RobustBaselineParams};
use crate::{Fit, Model, TrainingError};

/// Declares the closed set once: each line is `Variant "name" Params Model, "description"`.
macro_rules! detectors {
    ($($variant:ident $name:literal $params:ident $model:ident, $doc:literal;)+) => {
        /// A detector's name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ModelKind {
            $(#[doc = $doc] #[serde(rename = $name)] $variant,)+
        }

        impl ModelKind {
            /// Every detector, in the order tables list them.
            pub const ALL: &'static [ModelKind] = &[$(ModelKind::$variant),+];

            /// The name the CLI and the artifact use.
            pub fn name(self) -> &'static str {
                match self {
                    $(ModelKind::$variant => $name,)+
                }
            }

            /// The default hyper-parameters: the literature's, the same for every dataset.
            pub fn default_params(self) -> AnyParams {
                match self {
                    $(ModelKind::$variant => AnyParams::$variant($params::default()),)+
                }
            }
        }

        /// One detector's hyper-parameters.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind")]
        pub enum AnyParams {
            $(#[serde(rename = $name)] $variant($params),)+
        }

        impl AnyParams {
            pub fn kind(&self) -> ModelKind {
                match self {
                    $(AnyParams::$variant(_) => ModelKind::$variant,)+
                }
            }
        }

        impl Fit for AnyParams {
            type Model = AnyModel;

            fn check(&self) -> Result<(), TrainingError> {
                match self {
                    $(AnyParams::$variant(params) => params.check(),)+
                }
            }

            fn fit(&self, rows: ArrayView2<'_, f64>, seed: u64) -> Result<AnyModel, TrainingError> {
                Ok(match self {
                    $(AnyParams::$variant(params) => AnyModel::$variant(params.fit(rows, seed)?),)+
                })
            }
        }

        /// One fitted detector.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind")]
        pub enum AnyModel {
            $(#[serde(rename = $name)] $variant($model),)+
        }

        impl AnyModel {
            pub fn kind(&self) -> ModelKind {
                match self {
                    $(AnyModel::$variant(_) => ModelKind::$variant,)+
                }
            }
        }

        // `match` on a closed enum keeps scoring free of virtual calls and allocation.
        impl Model for AnyModel {
            fn n_features(&self) -> usize {
                match self {
                    $(AnyModel::$variant(model) => model.n_features(),)+
                }
            }

            fn score(&self, row: &[f64]) -> f64 {
                match self {
                    $(AnyModel::$variant(model) => model.score(row),)+
                }
            }

            fn explain(&self, row: &[f64], contributions: &mut [f64]) {
                match self {
                    $(AnyModel::$variant(model) => model.explain(row, contributions),)+
                }
            }

            fn score_rows(&self, rows: ArrayView2<'_, f64>) -> Array1<f64> {
                match self {
                    $(AnyModel::$variant(model) => model.score_rows(rows),)+
                }
            }
        }
    };
}

detectors! {
    Iforest "iforest" IsolationForestParams IsolationForest, "Isolation Forest: rows isolated by few random splits.";
    Ecod "ecod" EcodParams Ecod, "ECOD: empirical-CDF tail probabilities per feature.";
    Mad "mad" RobustBaselineParams RobustBaseline, "Robust per-feature baseline: distance from the median in MADs.";
    Gmm "gmm" GaussianMixtureParams GaussianMixture, "Gaussian mixture: low likelihood under every component.";
    Pca "pca" PcaParams Pca, "PCA: distance from the principal linear structure.";
    Hbos "hbos" HbosParams Hbos, "HBOS: low histogram density per feature.";
    Knn "knn" KnnParams Knn, "k-NN: distance to the k-th nearest training row.";
}

impl ModelKind {
    /// The kind called `name` (as [`ModelKind::name`] spells it).
    pub fn parse(name: &str) -> Option<ModelKind> {
        Self::ALL.iter().copied().find(|kind| kind.name() == name)
    }
}

/// The ensemble's members and combination: the defaults every dataset gets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnsembleParams {
    pub members: Vec<AnyParams>,
    pub combination: Combination,
}

impl EnsembleParams {
    /// A one-member "ensemble": a single calibrated detector, so that every artifact has the
    /// same shape and every score is in [0, 1].
    pub fn single(params: AnyParams) -> Self {
        EnsembleParams { members: vec![params], combination: Combination::Mean }
    }
}

/// The default ensemble's members: detectors that see anomalies differently (random
/// isolation; density under mixtures of clusters; per-feature histogram density). Chosen by
/// mean ROC-AUC over the 14 development datasets among every subset of the detectors
/// (`examples/ensemble_study.rs`; BENCHMARKS.md has the figures and the caveat). The
/// robust baseline (distance from each feature's median) was a member until the mixture
/// pooled several component counts; since then it only dilutes the histogram's view of the
/// same per-feature tails (3 seeds: 0.8944 mean ROC-AUC with it, 0.8975 without).
pub const ENSEMBLE_MEMBERS: [ModelKind; 3] = [ModelKind::Iforest, ModelKind::Gmm, ModelKind::Hbos];

impl Default for EnsembleParams {
    /// The default ensemble: [`ENSEMBLE_MEMBERS`] with their default parameters, combined by
    /// rank-weighted tail evidence ([`Combination::RankWeightedTailEvidence`]). In the
    /// development study tail evidence ranked better than the mean for 119 of the 120 member
    /// subsets (by 0.010 mean ROC-AUC on average), and weighting the members' tail evidence
    /// by their alarm rank ranked better than plain tail evidence for 119 of 120 (by 0.004),
    /// at a cost of 0.003 in mean average precision.
    fn default() -> Self {
        EnsembleParams {
            members: ENSEMBLE_MEMBERS.iter().map(|kind| kind.default_params()).collect(),
            combination: Combination::RankWeightedTailEvidence,
        }
    }
}

impl Fit for EnsembleParams {
    type Model = Ensemble<AnyModel>;

    fn check(&self) -> Result<(), TrainingError> {
        if self.members.is_empty() || self.members.len() > crate::ensemble::MEMBERS_MAX {
            return Err(TrainingError::InvalidParameter {
                name: "members",
                reason: format!("{} members, 1 to {} allowed", self.members.len(), crate::ensemble::MEMBERS_MAX),
            });
        }
        self.members.iter().try_for_each(Fit::check)
    }

    /// Fits every member on `rows` with the same seed, then calibrates each on its scores of `rows`.
    fn fit(&self, rows: ArrayView2<'_, f64>, seed: u64) -> Result<Ensemble<AnyModel>, TrainingError> {
        self.check()?;
        let models = self.members.iter().map(|params| params.fit(rows, seed)).collect::<Result<Vec<_>, _>>()?;
        Ensemble::calibrate(models, rows, self.combination)
    }
}
