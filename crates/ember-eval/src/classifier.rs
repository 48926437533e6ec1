//! The domain classifier: a small LeNet-style conv net trained on the real training set. Its
//! logits say which class a sample looks like (the class accuracy of `ember eval`) and its
//! penultimate layer (`feature_dim` wide, after ReLU) is the feature space of the Fréchet
//! distance, precision/recall and diversity.
//!
//! A saved classifier is a folder:
//!
//! ```text
//! classifier/
//!   classifier.bpk    the weights (Burn burnpack)
//!   classifier.toml   ClassifierMeta: dataset fingerprint, test accuracy, shape, settings
//! ```
//!
//! The fingerprint is a hash of the training split as loaded (pixels and labels), so a
//! classifier is never silently used to score samples of a model trained on other data.

use crate::FeatureExtractor;
use burn::nn::conv::Conv2d;
use burn::nn::loss::CrossEntropyLoss;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::relu;
use ember_config::{ClassifierConfig, DatasetKind, DiffusionConfig};
use ember_data::{ImageDataset, pixel_to_unit};
use ember_model::NoiseSchedule;
use ember_model::hash::Fnv1a;
use ember_model::init::{conv3x3, seeded_init};
use ember_model::rng::{Rng, Stream, derive_seed};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const WEIGHTS_FILE: &str = "classifier.bpk";
pub const META_FILE: &str = "classifier.toml";
/// Bumped whenever the network or the folder layout changes; other versions are refused.
pub const FORMAT_VERSION: u32 = 1;

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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ClassifierError + '_ {
    move |source| ClassifierError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// FNV-1a (64 bits) of one byte string, as hex: the checksum of the weights file.
pub use ember_model::hash::fnv1a as checksum;

/// The dataset fingerprint: FNV-1a (64 bits) over the pixels, then the labels (u16
/// little-endian) of a training split as loaded. It depends on the decoded data only, so a
/// gzipped copy of an IDX file has the same fingerprint as the raw one.
pub fn dataset_fingerprint(train: &ImageDataset) -> String {
    let (pixels, labels) = train.raw_parts();
    let mut h = Fnv1a::new();
    h.update(pixels);
    for label in labels {
        h.update(&label.to_le_bytes());
    }
    h.hex()
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

/// Builds a [`ClassifierNet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifierNetConfig {
    pub num_classes: usize,
    /// Channels (1 grey, 3 RGB) and side of the square input.
    pub image_channels: usize,
    /// A noise-aware classifier takes one more input plane, constant `t / T`.
    pub time_channel: bool,
    pub image_size: usize,
    pub feature_dim: usize,
}

/// `conv3x3(channels→32) relu pool2 | conv3x3(32→64) relu pool2 | conv3x3(64→64) relu | linear(→
/// feature_dim) relu` = the features `|` `linear(→ num_classes)` = the logits.
#[derive(Module, Debug)]
pub struct ClassifierNet {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    pool: MaxPool2d,
    fc1: Linear,
    fc2: Linear,
}

impl ClassifierNetConfig {
    /// Width of the flattened last conv activation.
    fn flat_dim(&self) -> usize {
        let s = self.image_size / 4;
        64 * s * s
    }

    /// Estimated peak bytes of one training step at `batch` images: weights, gradients and
    /// AdamW's moments (4 copies of the parameters, dominated by `fc1` at large image sizes)
    /// and about 120 activation values per input pixel, twice for the backward pass.
    pub fn training_bytes(&self, batch: usize) -> f64 {
        let c_in = (self.image_channels + usize::from(self.time_channel)) as f64;
        let params = 9.0 * (c_in * 32.0 + 32.0 * 64.0 + 64.0 * 64.0)
            + self.flat_dim() as f64 * self.feature_dim as f64
            + (self.feature_dim * self.num_classes) as f64;
        let pixels = (self.image_size * self.image_size) as f64;
        64.0 * 1024.0 * 1024.0 + 16.0 * params + 4.0 * 2.0 * 120.0 * pixels * batch as f64
    }

    /// The network with weights drawn reproducibly from `seed`.
    pub fn init(&self, device: &Device, seed: u64) -> ClassifierNet {
        seeded_init(device, seed, || ClassifierNet {
            conv1: conv3x3(
                self.image_channels + usize::from(self.time_channel),
                32,
                device,
            ),
            conv2: conv3x3(32, 64, device),
            conv3: conv3x3(64, 64, device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: LinearConfig::new(self.flat_dim(), self.feature_dim).init(device),
            fc2: LinearConfig::new(self.feature_dim, self.num_classes).init(device),
        })
    }
}

impl ClassifierNet {
    /// # Shapes
    /// - x: `[n, channels, s, s]` in [-1, 1] -> (logits `[n, classes]`, features `[n, feature_dim]`)
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let x = self.pool.forward(relu(self.conv1.forward(x))); // [n, 32, s/2, s/2]
        let x = self.pool.forward(relu(self.conv2.forward(x))); // [n, 64, s/4, s/4]
        let x = relu(self.conv3.forward(x)); // [n, 64, s/4, s/4]
        let features = relu(self.fc1.forward(x.flatten(1, 3))); // [n, feature_dim]
        let logits = self.fc2.forward(features.clone()); // [n, classes]
        (logits, features)
    }
}

/// `classifier.toml`: what the classifier was trained on and how well it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierMeta {
    pub format_version: u32,
    pub dataset: DatasetKind,
    /// The folder it was trained on (for the reader; the fingerprint is what is checked).
    pub dataset_root: PathBuf,
    /// [`dataset_fingerprint`] of that folder.
    pub dataset_fingerprint: String,
    pub num_classes: usize,
    /// 1 (grey) or 3 (RGB); classifiers saved before RGB support are grey.
    #[serde(default = "grey")]
    pub image_channels: usize,
    /// For a noise-aware classifier (classifier guidance): the diffusion process whose noised
    /// images it was trained on. `None`: a classifier of clean images.
    #[serde(default)]
    pub noise: Option<DiffusionConfig>,
    pub image_size: usize,
    pub feature_dim: usize,
    pub train_images: usize,
    pub test_images: usize,
    /// Fraction of the test split classified correctly.
    pub test_accuracy: f64,
    pub train_seconds: f64,
    /// FNV-1a of `classifier.bpk`, to catch a truncated or replaced weights file.
    pub weights_checksum: String,
    /// The `[classifier]` settings it was trained with (epochs, batch size, ...).
    pub config: ClassifierConfig,
}

fn grey() -> usize {
    1
}

/// A trained classifier on an inference device.
#[derive(Debug, Clone)]
pub struct Classifier {
    net: ClassifierNet,
    meta: ClassifierMeta,
    /// The schedule of `meta.noise`, for noise-aware classifiers.
    schedule: Option<NoiseSchedule>,
}

/// What to train a classifier on.
pub struct TrainSpec<'a> {
    pub config: &'a ClassifierConfig,
    pub dataset: DatasetKind,
    pub root: &'a Path,
    pub num_classes: usize,
    pub train: &'a ImageDataset,
    pub test: &'a ImageDataset,
    /// Train a noise-aware classifier on images noised by this process at uniformly drawn
    /// timesteps (`ember classifier train --noisy`).
    pub noise: Option<&'a DiffusionConfig>,
}

/// A noise-aware classifier's input: the noisy images and a plane holding `t / T` per row.
///
/// # Shapes
/// - x_t: `[n, ch, h, w]` -> `[n, ch + 1, h, w]`
pub fn with_time_plane(x_t: Tensor<4>, timesteps: &[usize], t_max: usize) -> Tensor<4> {
    let [n, _, h, w] = x_t.dims();
    let plane: Vec<f32> = timesteps
        .iter()
        .flat_map(|&t| std::iter::repeat_n(t as f32 / t_max as f32, h * w))
        .collect();
    let plane = Tensor::<4>::from_data(TensorData::new(plane, [n, 1, h, w]), &x_t.device());
    Tensor::cat(vec![x_t, plane], 1)
}

/// Noises clean images at seeded uniform timesteps (`(seed, index)` picks the draw) and adds
/// the time plane: a noise-aware classifier's training (and test) input.
fn noised_input(images: Tensor<4>, schedule: &NoiseSchedule, seed: u64, index: u64) -> Tensor<4> {
    let dims = images.dims();
    let n = dims[0];
    let mut rng = Rng::for_stream(seed, Stream::Timesteps, index);
    let timesteps: Vec<usize> = (0..n)
        .map(|_| rng.below(schedule.len() as u64) as usize)
        .collect();
    let noise = Rng::for_stream(seed, Stream::Noise, index).normals(dims.iter().product());
    let noise = Tensor::<4>::from_data(TensorData::new(noise, dims), &images.device());
    let x_t = schedule.add_noise(images, noise, &timesteps);
    with_time_plane(x_t, &timesteps, schedule.len())
}

/// Images `indices` of a dataset as a `[n, channels, h, w]` tensor in [-1, 1], with their labels.
pub fn dataset_batch(
    dataset: &ImageDataset,
    indices: impl IntoIterator<Item = usize>,
    device: &Device,
) -> (Tensor<4>, Vec<usize>) {
    use burn::data::dataset::Dataset;
    let [c, h, w] = dataset.shape();
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for i in indices {
        let item = dataset.get(i).expect("index within the dataset");
        pixels.extend(item.pixels.iter().map(|&p| pixel_to_unit(p)));
        labels.push(item.label);
    }
    let n = labels.len();
    (
        Tensor::from_data(TensorData::new(pixels, [n, c, h, w]), device),
        labels,
    )
}

/// Learning rate at `step` of `total`: a cosine from `peak` down to zero.
fn cosine_lr(peak: f64, step: usize, total: usize) -> f64 {
    let t = step as f64 / total.max(1) as f64;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

impl Classifier {
    /// Trains on the whole of `spec.train` for `config.epochs` epochs (AdamW, cosine learning
    /// rate, batches shuffled from `(config.seed, epoch)`), then measures the test accuracy.
    /// `progress` receives a line now and then.
    pub fn train(
        spec: &TrainSpec,
        dataset_fingerprint: String,
        device: &Device,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Self, ClassifierError> {
        use burn::data::dataset::Dataset;
        let c = spec.config;
        let (h, w) = spec.train.image_size();
        if h != w || h < 4 {
            return Err(ClassifierError::Data(format!(
                "the classifier needs square images of at least 4x4, the data in {} is {h}x{w}",
                spec.root.display()
            )));
        }
        let schedule = spec.noise.map(NoiseSchedule::new);
        let shape = ClassifierNetConfig {
            num_classes: spec.num_classes,
            image_channels: spec.train.channels(),
            time_channel: schedule.is_some(),
            image_size: h,
            feature_dim: c.feature_dim,
        };
        let train_device = device.clone().autodiff();
        let mut net = shape.init(&train_device, derive_seed(c.seed, Stream::Init, 0));
        let mut optimizer = AdamWConfig::new()
            .with_weight_decay(c.weight_decay as f32)
            .init();
        let loss_fn = CrossEntropyLoss::new(None, &train_device);
        let n = spec.train.len();
        let batches = n.div_ceil(c.batch_size);
        let total = batches * c.epochs;
        let report_every = (batches / 10).max(1);
        let start = Instant::now();
        let mut step = 0;
        for epoch in 0..c.epochs {
            let mut order: Vec<usize> = (0..n).collect();
            let mut rng = Rng::for_stream(c.seed, Stream::Shuffle, epoch as u64);
            for i in (1..n).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
            for (b, chunk) in order.chunks(c.batch_size).enumerate() {
                let (images, labels) =
                    dataset_batch(spec.train, chunk.iter().copied(), &train_device);
                let images = match &schedule {
                    Some(s) => noised_input(images, s, c.seed, step as u64),
                    None => images,
                };
                let targets = ember_model::labels_tensor(&labels, &train_device);
                let (logits, _) = net.forward(images);
                let predicted = argmax_rows(logits.clone());
                correct += predicted
                    .iter()
                    .zip(&labels)
                    .filter(|(p, l)| p == l)
                    .count();
                seen += labels.len();
                let loss = loss_fn.forward(logits, targets);
                loss_sum += loss.clone().into_scalar::<f32>() as f64;
                let grads = GradientsParams::from_grads(loss.backward(), &net);
                net = optimizer.step(cosine_lr(c.learning_rate, step, total), net, grads);
                step += 1;
                if (b + 1) % report_every == 0 || b + 1 == batches {
                    let elapsed = start.elapsed().as_secs_f64();
                    progress(&format!(
                        "epoch {}/{} batch {:>5}/{batches} loss {:.4} train-acc {:.4} {:.0} img/s",
                        epoch + 1,
                        c.epochs,
                        b + 1,
                        loss_sum / (b + 1) as f64,
                        correct as f64 / seen as f64,
                        (epoch * n + seen) as f64 / elapsed
                    ));
                }
            }
        }
        let train_seconds = start.elapsed().as_secs_f64();
        let mut classifier = Self {
            net: net.valid(),
            schedule,
            meta: ClassifierMeta {
                format_version: FORMAT_VERSION,
                dataset: spec.dataset,
                dataset_root: spec.root.to_path_buf(),
                dataset_fingerprint,
                num_classes: spec.num_classes,
                image_channels: spec.train.channels(),
                noise: spec.noise.cloned(),
                image_size: h,
                feature_dim: c.feature_dim,
                train_images: n,
                test_images: spec.test.len(),
                test_accuracy: f64::NAN,
                train_seconds,
                weights_checksum: String::new(),
                config: c.clone(),
            },
        };
        classifier.meta.test_accuracy = classifier.accuracy(spec.test, 500, device);
        Ok(classifier)
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
        use burn::data::dataset::Dataset;
        let n = dataset.len();
        let mut correct = 0;
        let mut start = 0;
        while start < n {
            let end = (start + batch.max(1)).min(n);
            let (images, labels) = dataset_batch(dataset, start..end, device);
            // Noise-aware: the accuracy over uniformly drawn noise levels (a fixed draw).
            let images = match &self.schedule {
                Some(s) => noised_input(images, s, u64::MAX, start as u64),
                None => images,
            };
            let predicted = argmax_rows(self.net.forward(images).0);
            correct += predicted
                .iter()
                .zip(&labels)
                .filter(|(p, l)| p == l)
                .count();
            start = end;
        }
        correct as f64 / n.max(1) as f64
    }

    /// Checks, before any training, that `dir` can receive a classifier: missing, empty, or
    /// a classifier folder Ember made. Anything else is refused naming what it holds; Ember
    /// never replaces a folder it did not make.
    pub fn check_destination(dir: &Path) -> Result<(), ClassifierError> {
        if !dir.exists() {
            return Ok(());
        }
        if ember_io::owner_of(dir) == Some(ember_io::OwnerKind::Classifier) {
            return Ok(());
        }
        let not_ours = |message: String| ClassifierError::Invalid {
            path: dir.to_path_buf(),
            message,
        };
        if !dir.is_dir() {
            return Err(not_ours("exists and is not a folder".into()));
        }
        let entries: Vec<String> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok())
            .map(|e| format!("{:?}", e.file_name().to_string_lossy()))
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        let shown = entries
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let more = entries.len().saturating_sub(5);
        Err(not_ours(format!(
            "is not empty and was not made by `ember classifier train` (no {} marker); it holds {shown}{}. Ember only replaces folders it made: choose another --out",
            ember_io::MARKER_FILE,
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )))
    }

    /// Writes `classifier.bpk`, `classifier.toml` and Ember's marker into `dir`, through a
    /// temporary sibling folder swapped into place (an existing classifier of Ember's there is
    /// replaced, and deleted only once the new one is in place; see
    /// [`check_destination`](Self::check_destination)).
    pub fn save(&mut self, dir: &Path) -> Result<(), ClassifierError> {
        Self::check_destination(dir)?;
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "classifier".into());
        // Removed on every failure (dropped); kept by `keep()` once swapped in.
        let staged = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp-"))
            .tempdir_in(parent)
            .map_err(io(parent))?;
        let tmp = staged.path().to_path_buf();
        // A temporary folder is private (0700); the classifier folder is an ordinary one.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
                .map_err(io(&tmp))?;
        }
        ember_io::prepare_owned_dir(&tmp, ember_io::OwnerKind::Classifier, false, |_| false)
            .map_err(|e| ClassifierError::Invalid {
                path: tmp.clone(),
                message: e.to_string(),
            })?;
        let weights = tmp.join(WEIGHTS_FILE);
        self.net
            .clone()
            .save_file(&weights)
            .map_err(|e| ClassifierError::Invalid {
                path: weights.clone(),
                message: format!("cannot write: {e}"),
            })?;
        let bytes = std::fs::read(&weights).map_err(io(&weights))?;
        self.meta.weights_checksum = checksum(&bytes);
        let meta = tmp.join(META_FILE);
        let text = format!(
            "# Domain classifier of `ember eval`, written by `ember classifier train`.\n{}",
            toml::to_string_pretty(&self.meta).expect("metadata serialises")
        );
        std::fs::write(&meta, text).map_err(io(&meta))?;
        for f in [&weights, &meta] {
            std::fs::File::open(f)
                .and_then(|f| f.sync_all())
                .map_err(io(f))?;
        }
        ember_io::replace_dir(&tmp, dir).map_err(io(dir))?;
        // Swapped in: nothing is left at the temporary path to delete.
        let _ = staged.keep();
        Ok(())
    }

    /// Loads a classifier folder. `config_hint` is the config path the "train one" message
    /// names when the folder is missing.
    pub fn load(dir: &Path, device: &Device, config_hint: &str) -> Result<Self, ClassifierError> {
        let meta_path = dir.join(META_FILE);
        let weights_path = dir.join(WEIGHTS_FILE);
        for (path, file) in [(&meta_path, META_FILE), (&weights_path, WEIGHTS_FILE)] {
            if !path.is_file() {
                return Err(ClassifierError::Missing {
                    dir: dir.to_path_buf(),
                    file,
                    config: config_hint.to_string(),
                });
            }
        }
        let invalid = |path: &Path, message: String| ClassifierError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(&meta_path).map_err(io(&meta_path))?;
        let meta: ClassifierMeta = toml::from_str(&text)
            .map_err(|e| invalid(&meta_path, format!("not a classifier description: {e}")))?;
        if meta.format_version != FORMAT_VERSION {
            return Err(invalid(
                &meta_path,
                format!(
                    "format version {}, but this ember reads version {FORMAT_VERSION}; retrain it with `ember classifier train --config {config_hint}`",
                    meta.format_version
                ),
            ));
        }
        let bytes = std::fs::read(&weights_path).map_err(io(&weights_path))?;
        let got = checksum(&bytes);
        if got != meta.weights_checksum {
            return Err(invalid(
                &weights_path,
                format!(
                    "checksum {got} does not match weights_checksum {} in {META_FILE}: the file is truncated or replaced ({} bytes)",
                    meta.weights_checksum,
                    bytes.len()
                ),
            ));
        }
        let shape = ClassifierNetConfig {
            num_classes: meta.num_classes,
            image_channels: meta.image_channels,
            time_channel: meta.noise.is_some(),
            image_size: meta.image_size,
            feature_dim: meta.feature_dim,
        };
        let net = shape
            .init(device, 0)
            .try_load_file(&weights_path)
            .map_err(|e| invalid(&weights_path, e.to_string()))?;
        let schedule = meta.noise.as_ref().map(NoiseSchedule::new);
        Ok(Self {
            net,
            meta,
            schedule,
        })
    }

    /// Checks that this classifier was trained on the data in `root` (by fingerprint).
    pub fn check_dataset(
        &self,
        dir: &Path,
        root: &Path,
        fingerprint: &str,
        config_hint: &str,
    ) -> Result<(), ClassifierError> {
        if self.meta.dataset_fingerprint == fingerprint {
            return Ok(());
        }
        Err(ClassifierError::FingerprintMismatch(format!(
            "the classifier in {} was trained on other data: its dataset fingerprint is {} ({:?} in {}), but the training data in {} hashes to {fingerprint}; retrain it with `ember classifier train --config {config_hint}`",
            dir.display(),
            self.meta.dataset_fingerprint,
            self.meta.dataset,
            self.meta.dataset_root.display(),
            root.display(),
        )))
    }
}

/// Classifier guidance's gradient: `grad_x log p(y | x_t, t)` of a noise-aware classifier, by
/// backpropagating to the input (the weights stay constant).
impl ember_sample::NoisyClassifier for Classifier {
    fn grad_log_prob(&self, x: Tensor<4>, timestep: usize, labels: &[usize]) -> Tensor<4> {
        let schedule = self
            .schedule
            .as_ref()
            .expect("classifier guidance needs a noise-aware classifier (checked when loading)");
        let device = x.device();
        let n = labels.len();
        let x = x.autodiff().require_grad();
        let input = with_time_plane(x.clone(), &vec![timestep; n], schedule.len());
        let (logits, _) = self.net.forward(input);
        let log_probs = burn::tensor::activation::log_softmax(logits, 1); // [n, classes]
        let labels = ember_model::labels_tensor(labels, &log_probs.device()).reshape([n, 1]);
        let picked = log_probs.gather(1, labels).sum();
        let grads = picked.backward();
        x.grad(&grads)
            .expect("the input requires a gradient")
            .to_device(&device)
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

#[cfg(test)]
mod tests {
    use super::*;
    use ember_data::Split;
    use ember_data::idx::encode_idx;

    /// `n` 12x12 images of 3 classes, each a bright bar whose position is the class, plus
    /// seeded noise: learnable in a few steps.
    fn fixture(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
        let mut rng = Rng::new(seed);
        let mut pixels = Vec::with_capacity(n * 144);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let label = (i % 3) as u8;
            for y in 0..12 {
                for x in 0..12 {
                    let bar = x / 4 == label as usize && (2..10).contains(&y);
                    let base = if bar { 200 } else { 20 };
                    pixels.push((base + rng.below(40) as usize) as u8);
                }
            }
            labels.push(label);
        }
        (pixels, labels)
    }

    fn write_split(dir: &Path, prefix: &str, n: usize, seed: u64) {
        let (pixels, labels) = fixture(n, seed);
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            encode_idx(&[n, 12, 12], &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            encode_idx(&[n], &labels),
        )
        .unwrap();
    }

    /// A split of the 3-class 12x12 IDX fixture in `root`.
    fn load(root: &Path, split: Split) -> ImageDataset {
        let data_config = ember_config::DataConfig {
            root: root.to_path_buf(),
            ..Default::default()
        };
        let model = ember_config::ModelConfig {
            num_classes: 3,
            image_size: 12,
            ..Default::default()
        };
        ImageDataset::load(&data_config, &model, split, 0).unwrap()
    }

    fn workdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-eval-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn trains_saves_loads_exactly_and_refuses_other_data() {
        let dir = workdir("classifier");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        write_split(&data, "train", 96, 1);
        write_split(&data, "t10k", 30, 2);
        let device = Device::flex();
        let train = load(&data, Split::Train);
        let test = load(&data, Split::Test);
        let config = ClassifierConfig {
            epochs: 4,
            batch_size: 16,
            learning_rate: 3e-3,
            feature_dim: 16,
            ..ClassifierConfig::default()
        };
        let spec = TrainSpec {
            config: &config,
            dataset: DatasetKind::Mnist,
            root: &data,
            num_classes: 3,
            train: &train,
            test: &test,
            noise: None,
        };
        let fingerprint = dataset_fingerprint(&train);
        let mut lines = Vec::new();
        let mut classifier = Classifier::train(&spec, fingerprint.clone(), &device, &mut |l| {
            lines.push(l.to_string())
        })
        .unwrap();
        assert!(lines.iter().any(|l| l.contains("epoch 4/4")), "{lines:?}");
        assert!(
            classifier.meta().test_accuracy >= 0.9,
            "a bar's position is easy to learn: {}",
            classifier.meta().test_accuracy
        );

        // Save and load: the same logits and features, bit for bit.
        let saved = dir.join("classifier");
        classifier.save(&saved).unwrap();
        let loaded = Classifier::load(&saved, &device, "cfg.toml").unwrap();
        assert_eq!(loaded.meta(), classifier.meta());
        let (images, _) = dataset_batch(&test, 0..10, &device);
        let values = |t: Tensor<2>| t.into_data().try_into_vec_as::<f32>().unwrap();
        assert_eq!(
            values(loaded.logits(images.clone())),
            values(classifier.logits(images.clone()))
        );
        assert_eq!(
            values(loaded.features(images.clone())),
            values(classifier.features(images))
        );
        assert_eq!(loaded.feature_dim(), 16);
        assert!(loaded.id().starts_with("classifier-"));
        loaded
            .check_dataset(&saved, &data, &fingerprint, "cfg.toml")
            .unwrap();

        // Other training data: a different fingerprint, refused with the command to run.
        let other = dir.join("other");
        std::fs::create_dir_all(&other).unwrap();
        write_split(&other, "train", 96, 3);
        write_split(&other, "t10k", 30, 2);
        let other_fp = dataset_fingerprint(&load(&other, Split::Train));
        assert_ne!(other_fp, fingerprint);
        let err = loaded
            .check_dataset(&saved, &other, &other_fp, "cfg.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&other_fp)
                && err.contains(&fingerprint)
                && err.contains("ember classifier train --config cfg.toml"),
            "{err}"
        );

        // A garbled weights file is named; a missing folder says which command makes one.
        let weights = saved.join(WEIGHTS_FILE);
        let mut bytes = std::fs::read(&weights).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&weights, &bytes).unwrap();
        let err = Classifier::load(&saved, &device, "cfg.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(WEIGHTS_FILE) && err.contains("checksum"),
            "{err}"
        );
        let err = Classifier::load(&dir.join("nothing"), &device, "cfg.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ember classifier train --config cfg.toml"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_noise_aware_classifier_trains_and_its_input_gradient_matches_finite_differences() {
        use ember_sample::NoisyClassifier;
        let dir = workdir("noisy");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        write_split(&data, "train", 96, 1);
        write_split(&data, "t10k", 30, 2);
        let (train, test) = (load(&data, Split::Train), load(&data, Split::Test));
        let config = ClassifierConfig {
            epochs: 6,
            batch_size: 16,
            learning_rate: 3e-3,
            feature_dim: 16,
            ..ClassifierConfig::default()
        };
        let diffusion = DiffusionConfig {
            timesteps: 100,
            ..DiffusionConfig::default()
        };
        let spec = TrainSpec {
            config: &config,
            dataset: DatasetKind::Mnist,
            root: &data,
            num_classes: 3,
            train: &train,
            test: &test,
            noise: Some(&diffusion),
        };
        let device = Device::flex();
        let mut classifier =
            Classifier::train(&spec, dataset_fingerprint(&train), &device, &mut |_| {}).unwrap();
        // Over uniformly drawn noise levels some images are pure noise; chance is 1/3.
        let acc = classifier.meta().test_accuracy;
        assert!(acc > 0.5, "noisy test accuracy {acc}");
        let saved = dir.join("noisy");
        classifier.save(&saved).unwrap();
        let classifier = Classifier::load(&saved, &device, "cfg.toml").unwrap();
        assert_eq!(classifier.meta().noise.as_ref(), Some(&diffusion));

        // Along the gradient's direction u, d/dh log p(y | x + h u) at h = 0 is |grad|. (The net
        // is piecewise linear (ReLU, max-pool), so finite differences are taken small.)
        let (x, _) = dataset_batch(&test, 0..2, &device);
        let labels = [0, 2];
        let t = 30;
        let log_p = |x: Tensor<4>| -> f64 {
            let input = with_time_plane(x, &[t, t], 100);
            let lp = burn::tensor::activation::log_softmax(classifier.net.forward(input).0, 1);
            let v = lp.into_data().try_into_vec::<f32>().unwrap();
            (v[labels[0]] + v[3 + labels[1]]) as f64
        };
        let grad = classifier.grad_log_prob(x.clone(), t, &labels);
        let norm = (grad.clone().square().sum().into_scalar::<f32>() as f64).sqrt();
        assert!(norm > 1e-3, "a non-trivial gradient: {norm}");
        let u = grad.div_scalar(norm);
        let h = 1e-3;
        let numeric =
            (log_p(x.clone() + u.clone().mul_scalar(h)) - log_p(x - u.mul_scalar(h))) / (2.0 * h);
        assert!(
            (numeric - norm).abs() < 0.15 * norm,
            "directional derivative {numeric} vs gradient norm {norm}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn initialisation_is_a_function_of_the_seed() {
        let device = Device::flex();
        let shape = ClassifierNetConfig {
            num_classes: 3,
            image_channels: 1,
            time_channel: false,
            image_size: 8,
            feature_dim: 4,
        };
        let x = Tensor::<4>::ones([2, 1, 8, 8], &device);
        let out = |seed| {
            shape
                .init(&device, seed)
                .forward(x.clone())
                .0
                .into_data()
                .try_into_vec_as::<f32>()
                .unwrap()
        };
        assert_eq!(out(1), out(1));
        assert_ne!(out(1), out(2));
    }
}
