//! Ember's evaluation crate: how good are guided samples, scale by scale?
//!
//! - [`classifier`]: a small conv classifier trained on the real training set; its logits give
//!   the class accuracy of samples and its penultimate layer the feature space of the metrics.
//!   One folder, one concept per file: `classifier/mod.rs` the [`Classifier`] and where its
//!   folder goes, `net.rs` the network, `train.rs` training on any labelled image set (and the
//!   noise-aware inputs), `storage.rs` saving/loading with the checksum and dataset
//!   fingerprint, `noisy.rs` the gradient classifier guidance takes.
//! - [`metrics`]: Fréchet distance, precision/recall (k-NN manifolds) and intra-class diversity
//!   on feature vectors.
//! - [`score`]: scores a set of images against the real data (accuracy, the feature metrics,
//!   FID, CAS): the [`score::Judge`] every evaluation shares.
//! - [`eval`]: samples the same initial noise at each guidance scale, scores it, and keeps
//!   resumable results in `eval.json`.
//! - [`curve`]: time to quality: every kept checkpoint of a run (and samples another program
//!   exported) scored at one scale, against training minutes.
//! - [`study`]: several guidance methods, each over its own scales, from the same noise and
//!   scored as the sweep scores, with a CSV, a best-FD table and a Pareto plot; resumable in
//!   `study.json` (`study/spec.rs` the study file, `study/report.rs` the outputs).
//!
//! Features come through the [`FeatureExtractor`] trait, so another network (e.g. Inception for
//! a true FID) can replace the classifier's features without touching the metric or eval code.

pub mod classifier;
pub mod curve;
pub mod eval;
pub mod metrics;
pub mod score;
pub mod study;

pub use classifier::{Classifier, ClassifierError, ClassifierMeta, dataset_fingerprint};
pub use eval::{EvalError, EvalFile, EvalRequest, EvalSettings, Reference, ScaleRow};
pub use metrics::{FeatureSet, GaussianStats, PrecisionRecall};

use burn::prelude::*;

/// Maps images to feature vectors for the distribution metrics.
pub trait FeatureExtractor {
    /// A short stable identifier of the extractor and its weights (recorded in `eval.json`,
    /// so results computed with other features are never mixed).
    fn id(&self) -> String;

    /// Length of one feature vector.
    fn feature_dim(&self) -> usize;

    /// # Shapes
    /// - images: `[n, channels, h, w]` in [-1, 1] -> `[n, feature_dim]`
    fn features(&self, images: Tensor<4>) -> Tensor<2>;
}

/// The FID Inception-v3 of ember-fid (2048-d pool features): `--fid inception`, the standard
/// FID beside the classifier-feature Fréchet distance.
pub struct InceptionFeatures {
    net: ember_fid::InceptionFid,
    id: String,
}

impl InceptionFeatures {
    pub fn load(path: &std::path::Path, device: &Device) -> Result<Self, ember_fid::Error> {
        let net = ember_fid::InceptionFid::load(path, device)?;
        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            net,
            id: format!("inception-fid ({bytes} bytes)"),
        })
    }
}

impl FeatureExtractor for InceptionFeatures {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn feature_dim(&self) -> usize {
        ember_fid::FEATURE_DIM
    }

    fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.net.features(images)
    }
}

/// Runs `extractor` over `images` in batches of `batch` and collects the features on the host.
///
/// # Shapes
/// - images: `[n, channels, h, w]`
pub fn extract_features(
    extractor: &dyn FeatureExtractor,
    images: Tensor<4>,
    batch: usize,
) -> FeatureSet {
    let [n, _, _, _] = images.dims();
    let mut set = FeatureSet::new(extractor.feature_dim(), Vec::new());
    let mut start = 0;
    while start < n {
        let len = batch.max(1).min(n - start);
        set.extend(&to_feature_set(
            extractor.features(images.clone().narrow(0, start, len)),
        ));
        start += len;
    }
    set
}

/// Copies `[n, d]` features to the host.
pub fn to_feature_set(features: Tensor<2>) -> FeatureSet {
    let [_, d] = features.dims();
    let values = features
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("f32 features");
    FeatureSet::from_f32(d, &values)
}
