//! The domain classifier: a small LeNet-style conv net trained on the real training set. Its
//! logits say which class a sample looks like (the class accuracy of `ember eval`) and its
//! penultimate layer (`feature_dim` wide, after ReLU) is the feature space of the Fréchet
//! distance, precision/recall and diversity.
//!
//! A saved classifier is a folder beside the data folder ([`default_dir`]):
//!
//! ```text
//! classifier/
//!   classifier.bpk    the weights (Burn burnpack)
//!   classifier.toml   ClassifierMeta: dataset fingerprint, test accuracy, shape, settings
//! ```
//!
//! The fingerprint is a checksum of the training split as loaded (pixels and labels), so a
//! classifier is never silently used to score samples of a model trained on other data.
//!
//! - `mod.rs`: [`Classifier`] (a trained network and its description) and where its folder
//!   goes.
//! - `net.rs`: the network, [`ClassifierNet`] and [`ClassifierNetConfig`].
//! - `train.rs`: [`train_net`], training on any labelled image set; the inputs it sees
//!   ([`dataset_batch`], [`with_time_plane`] for noise-aware classifiers).
//! - `storage.rs`: saving and loading the folder, [`ClassifierMeta`], the weights checksum and
//!   the [`dataset_fingerprint`].
//! - `noisy.rs`: the gradient classifier guidance takes of a noise-aware classifier.

#[cfg(test)]
pub(crate) mod fixture;
mod net;
mod noisy;
mod storage;
mod train;

pub use net::{ClassifierNet, ClassifierNetConfig};
pub use storage::{
    ClassifierMeta, FORMAT_VERSION, META_FILE, WEIGHTS_FILE, checksum, dataset_fingerprint,
};
pub use train::{TrainSpec, TrainedNet, accuracy, dataset_batch, train_net, with_time_plane};

use crate::FeatureExtractor;
use burn::prelude::*;
use ember_data::ImageDataset;
use ember_model::NoiseSchedule;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no classifier in {dir} ({file} is missing); train one with `ember classifier train --config {config}`"
    )]
    Missing {
        dir: PathBuf,
        file: &'static str,
        config: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// The classifier was trained on other data (the message names both fingerprints and the
    /// command that retrains it).
    #[error("{0}")]
    FingerprintMismatch(String),
    #[error("{0}")]
    Data(String),
}

/// Where `ember classifier train` saves and `ember eval` looks for the classifier of the data in
/// `root` by default: `<root>.classifier`, a sibling of the data folder (e.g.
/// `datasets/mnist.classifier`). Never inside it, where an image-folder reader would take it
/// for a class.
pub fn default_dir(root: &Path) -> PathBuf {
    beside(root, "classifier")
}

/// Where `ember classifier train --noisy` saves, and `ember sample --classifier-guidance` looks
/// for, the noise-aware classifier of the data in `root`: `<root>.classifier-noisy`.
pub fn default_noisy_dir(root: &Path) -> PathBuf {
    beside(root, "classifier-noisy")
}

/// Where earlier versions kept the classifier: inside the data folder.
pub fn legacy_dir(root: &Path, noisy: bool) -> PathBuf {
    root.join(if noisy {
        "classifier-noisy"
    } else {
        "classifier"
    })
}

/// `<parent>/<name>.<suffix>` for the data folder `<parent>/<name>`; a root without a last
/// component of its own (`.`, `..`, `/`) is made absolute first.
fn beside(root: &Path, suffix: &str) -> PathBuf {
    let named = match root.file_name() {
        Some(_) if !root.ends_with("..") => root.to_path_buf(),
        _ => std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()),
    };
    match named.file_name() {
        Some(name) => {
            let mut file = name.to_os_string();
            file.push(format!(".{suffix}"));
            named.with_file_name(file)
        }
        None => named.join(format!("ember-{suffix}")),
    }
}

/// A trained classifier on an inference device.
#[derive(Debug, Clone)]
pub struct Classifier {
    net: ClassifierNet,
    meta: ClassifierMeta,
    /// The schedule of `meta.noise`, for noise-aware classifiers.
    schedule: Option<NoiseSchedule>,
}

impl Classifier {
    /// Trains on the whole of `spec.train` (see [`train_net`]) and describes the result: what
    /// it was trained on (`spec.dataset`, `spec.root`, `dataset_fingerprint`) and its test
    /// accuracy on `spec.test`. `progress` receives a line now and then.
    pub fn train(
        spec: &TrainSpec,
        dataset_fingerprint: String,
        device: &Device,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Self, ClassifierError> {
        use burn::data::dataset::Dataset;
        let c = spec.config;
        let trained = train_net(
            c,
            spec.num_classes,
            spec.noise,
            spec.train,
            spec.test,
            device,
            progress,
        )
        .map_err(|e| match e {
            ClassifierError::Data(m) => {
                ClassifierError::Data(format!("the data in {}: {m}", spec.root.display()))
            }
            e => e,
        })?;
        Ok(Self {
            net: trained.net,
            schedule: spec.noise.map(NoiseSchedule::new),
            meta: ClassifierMeta {
                format_version: FORMAT_VERSION,
                dataset: spec.dataset,
                dataset_root: spec.root.to_path_buf(),
                dataset_fingerprint,
                num_classes: spec.num_classes,
                image_channels: spec.train.channels(),
                noise: spec.noise.cloned(),
                image_size: spec.train.image_size().0,
                feature_dim: c.feature_dim,
                train_images: spec.train.len(),
                test_images: spec.test.len(),
                test_accuracy: trained.test_accuracy,
                train_seconds: trained.train_seconds,
                weights_checksum: String::new(),
                config: c.clone(),
            },
        })
    }

    pub fn meta(&self) -> &ClassifierMeta {
        &self.meta
    }

    pub fn net(&self) -> &ClassifierNet {
        &self.net
    }

    /// # Shapes
    /// - images: `[n, channels, s, s]` in [-1, 1] -> `[n, classes]`
    pub fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.net.forward(images).0
    }

    /// The penultimate layer (after its ReLU).
    ///
    /// # Shapes
    /// - images: `[n, channels, s, s]` in [-1, 1] -> `[n, feature_dim]`
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.net.forward(images).1
    }

    /// Logits and penultimate features from one forward pass (the eval needs both).
    ///
    /// # Shapes
    /// - images: `[n, channels, s, s]` in [-1, 1] -> (`[n, classes]`, `[n, feature_dim]`)
    pub fn logits_and_features(&self, images: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        self.net.forward(images)
    }

    /// Predicted class of each image, in batches of `batch`.
    pub fn predict(&self, images: Tensor<4>, batch: usize) -> Vec<usize> {
        let [n, _, _, _] = images.dims();
        let mut out = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let len = batch.max(1).min(n - start);
            out.extend(argmax_rows(
                self.logits(images.clone().narrow(0, start, len)),
            ));
            start += len;
        }
        out
    }

    /// Fraction of `dataset` classified correctly (in batches of `batch`).
    pub fn accuracy(&self, dataset: &ImageDataset, batch: usize, device: &Device) -> f64 {
        accuracy(&self.net, self.schedule.as_ref(), dataset, batch, device)
    }
}

impl FeatureExtractor for Classifier {
    fn id(&self) -> String {
        format!("classifier-{}", self.meta.weights_checksum)
    }

    fn feature_dim(&self) -> usize {
        self.meta.feature_dim
    }

    fn features(&self, images: Tensor<4>) -> Tensor<2> {
        Classifier::features(self, images)
    }
}

/// Index of the largest value of each row.
pub fn argmax_rows(logits: Tensor<2>) -> Vec<usize> {
    logits
        .argmax(1)
        .into_data()
        .try_into_vec_as::<i64>()
        .expect("integer indices")
        .into_iter()
        .map(|i| i as usize)
        .collect()
}
