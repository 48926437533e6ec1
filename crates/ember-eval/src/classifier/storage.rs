//! A classifier on disk: the folder `ember classifier train` writes and `ember eval` reads,
//! its description ([`ClassifierMeta`]), and the fingerprints that tie it to its data.

use super::{Classifier, ClassifierError, ClassifierNetConfig};
use burn::prelude::*;
use ember_config::{ClassifierConfig, DatasetKind, DiffusionConfig};
use ember_data::ImageDataset;
use ember_io::checksum::Checksum;
use ember_model::NoiseSchedule;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const WEIGHTS_FILE: &str = "classifier.bpk";
pub const META_FILE: &str = "classifier.toml";
/// Bumped whenever the network or the folder layout changes; other versions are refused.
/// Version 2: the weights checksum and dataset fingerprint are CRC-32 instead of FNV-1a.
pub const FORMAT_VERSION: u32 = 2;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ClassifierError + '_ {
    move |source| ClassifierError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The checksum of the weights file (`crc32:` and 8 hex digits).
pub use ember_io::checksum::checksum;

/// The dataset fingerprint: the [`checksum`] of the pixels, then the labels (u16
/// little-endian) of a training split as loaded. It depends on the decoded data only, so a
/// gzipped copy of an IDX file has the same fingerprint as the raw one.
pub fn dataset_fingerprint(train: &ImageDataset) -> String {
    let (pixels, labels) = train.raw_parts();
    let mut h = Checksum::new();
    h.update(pixels);
    for label in labels {
        h.update(&label.to_le_bytes());
    }
    h.finish()
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
    /// [`checksum`] of `classifier.bpk`, to catch a truncated or replaced weights file.
    pub weights_checksum: String,
    /// The `[classifier]` settings it was trained with (epochs, batch size, ...).
    pub config: ClassifierConfig,
}

fn grey() -> usize {
    1
}

impl Classifier {
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

#[cfg(test)]
mod tests {
    use super::super::TrainSpec;
    use super::super::dataset_batch;
    use super::super::fixture::{load, workdir, write_split};
    use super::*;
    use crate::FeatureExtractor;
    use ember_data::Split;

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

        // Checksums say their algorithm; a classifier of an older format (FNV-1a checksums) is
        // refused with the command that retrains it.
        assert!(fingerprint.starts_with("crc32:"), "{fingerprint}");
        assert!(loaded.meta().weights_checksum.starts_with("crc32:"));
        let meta_path = saved.join(META_FILE);
        let text = std::fs::read_to_string(&meta_path).unwrap();
        let current = format!("format_version = {FORMAT_VERSION}");
        assert!(text.contains(&current), "{text}");
        std::fs::write(&meta_path, text.replace(&current, "format_version = 1")).unwrap();
        let err = Classifier::load(&saved, &device, "cfg.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("format version 1, but this ember reads version 2")
                && err.contains("retrain it with `ember classifier train --config cfg.toml`"),
            "{err}"
        );
        std::fs::write(&meta_path, &text).unwrap();

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
}
