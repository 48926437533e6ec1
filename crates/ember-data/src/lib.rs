//! Ember's data crate: labelled greyscale image datasets read from IDX files, served through
//! burn-dataset's [`Dataset`] trait and batched by Burn's `DataLoader`.

pub mod idx;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use idx::{IdxError, read_idx};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Idx(#[from] IdxError),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "dataset files not found in {root} (missing {file}); run scripts/setup.sh to fetch them, or set data.root"
    )]
    Missing { root: PathBuf, file: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// File names as LeCun published them (and as both MNIST and Fashion-MNIST use).
    pub fn file_names(self) -> (&'static str, &'static str) {
        match self {
            Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        }
    }
}

/// One labelled image, kept as raw bytes until batching.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageItem {
    /// Row-major `[height, width]` pixels in 0..=255.
    pub pixels: Vec<u8>,
    pub label: usize,
}

/// A labelled image dataset held in memory (all of MNIST is 47 MB).
#[derive(Debug, Clone)]
pub struct ImageDataset {
    images: Vec<u8>,
    labels: Vec<u8>,
    height: usize,
    width: usize,
}

impl ImageDataset {
    /// Reads one split of an MNIST-style dataset from `root`, keeping at most `limit` images
    /// (0 = all), and checks every label is below `num_classes`.
    pub fn load(
        root: &Path,
        split: Split,
        num_classes: usize,
        limit: usize,
    ) -> Result<Self, DataError> {
        let (images_name, labels_name) = split.file_names();
        let find = |name: &str| {
            idx::find_idx_file(root, name).ok_or_else(|| DataError::Missing {
                root: root.to_path_buf(),
                file: format!("{name} (or {name}.gz)"),
            })
        };
        let images_path = find(images_name)?;
        let labels_path = find(labels_name)?;
        let images = read_idx(&images_path)?;
        let labels = read_idx(&labels_path)?;
        let invalid = |path: &Path, message: String| DataError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if images.dims.len() != 3 {
            return Err(invalid(
                &images_path,
                format!(
                    "expected 3 dimensions [count, height, width], found {:?}",
                    images.dims
                ),
            ));
        }
        if labels.dims.len() != 1 {
            return Err(invalid(
                &labels_path,
                format!("expected 1 dimension [count], found {:?}", labels.dims),
            ));
        }
        if images.dims[0] != labels.dims[0] {
            return Err(invalid(
                &labels_path,
                format!(
                    "{} labels for the {} images of {}",
                    labels.dims[0],
                    images.dims[0],
                    images_path.display()
                ),
            ));
        }
        if let Some((i, &l)) = labels
            .data
            .iter()
            .enumerate()
            .find(|(_, l)| **l as usize >= num_classes)
        {
            return Err(invalid(
                &labels_path,
                format!("record {i} has label {l}, expected 0..{num_classes} (model.num_classes)"),
            ));
        }
        let (height, width) = (images.dims[1], images.dims[2]);
        let count = if limit == 0 {
            images.dims[0]
        } else {
            limit.min(images.dims[0])
        };
        let mut image_data = images.data;
        image_data.truncate(count * height * width);
        let mut label_data = labels.data;
        label_data.truncate(count);
        Ok(Self {
            images: image_data,
            labels: label_data,
            height,
            width,
        })
    }

    /// Builds a dataset from raw parts (fixtures, tests).
    pub fn from_parts(images: Vec<u8>, labels: Vec<u8>, height: usize, width: usize) -> Self {
        assert_eq!(images.len(), labels.len() * height * width);
        Self {
            images,
            labels,
            height,
            width,
        }
    }

    pub fn image_size(&self) -> (usize, usize) {
        (self.height, self.width)
    }
}

impl Dataset<ImageItem> for ImageDataset {
    fn get(&self, index: usize) -> Result<ImageItem, burn::data::dataset::DatasetError> {
        let n = self.height * self.width;
        let label = *self.labels.get(index).ok_or_else(|| {
            burn::data::dataset::DatasetError::new(std::io::Error::other(format!(
                "index {index} out of range for {} items",
                self.labels.len()
            )))
        })?;
        Ok(ImageItem {
            pixels: self.images[index * n..(index + 1) * n].to_vec(),
            label: label as usize,
        })
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}

/// A batch of images scaled to [-1, 1] with their class labels (host-side, so label dropout
/// can be drawn from Ember's own seeded stream).
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// `[batch, 1, height, width]`
    pub images: Tensor<4>,
    pub labels: Vec<usize>,
}

/// Scales `u8` pixels to [-1, 1]: `x / 127.5 - 1`.
pub fn pixel_to_unit(p: u8) -> f32 {
    p as f32 / 127.5 - 1.0
}

#[derive(Debug, Clone, Default)]
pub struct ImageBatcher;

impl Batcher<ImageItem, ImageBatch> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> ImageBatch {
        let b = items.len();
        let n = items.first().map_or(0, |i| i.pixels.len());
        let side = (n as f64).sqrt() as usize;
        assert_eq!(side * side, n, "square images expected");
        let mut pixels = Vec::with_capacity(b * n);
        let mut labels = Vec::with_capacity(b);
        for item in items {
            pixels.extend(item.pixels.iter().map(|&p| pixel_to_unit(p)));
            labels.push(item.label);
        }
        let images = Tensor::from_data(TensorData::new(pixels, [b, 1, side, side]), device);
        ImageBatch { images, labels }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::data::dataloader::DataLoaderBuilder;
    use idx::encode_idx;

    fn fixture_dir(name: &str, n: usize, label_max: u8) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-data-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pixels: Vec<u8> = (0..n * 16).map(|i| (i * 7 % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i as u8) % (label_max + 1)).collect();
        std::fs::write(
            dir.join("train-images-idx3-ubyte"),
            encode_idx(&[n, 4, 4], &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join("train-labels-idx1-ubyte"),
            encode_idx(&[n], &labels),
        )
        .unwrap();
        dir
    }

    #[test]
    fn loads_a_generated_split_with_limit() {
        let dir = fixture_dir("limit", 10, 2);
        let ds = ImageDataset::load(&dir, Split::Train, 3, 6).unwrap();
        assert_eq!(ds.len(), 6);
        let item = ds.get(5).unwrap();
        assert_eq!(item.label, 2);
        assert_eq!(item.pixels[0], (5 * 16 * 7 % 256) as u8);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn label_out_of_range_names_the_record() {
        let dir = fixture_dir("labels", 10, 5);
        let err = ImageDataset::load(&dir, Split::Train, 3, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("record 3 has label 3"), "{err}");
        assert!(err.contains("train-labels-idx1-ubyte"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_files_point_at_setup() {
        let err = ImageDataset::load(Path::new("/nonexistent/ember"), Split::Test, 10, 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("scripts/setup.sh") && err.contains("t10k-images"),
            "{err}"
        );
    }

    #[test]
    fn pixels_scale_to_unit_interval() {
        assert_eq!(pixel_to_unit(0), -1.0);
        assert_eq!(pixel_to_unit(255), 1.0);
    }

    #[test]
    fn seeded_shuffle_is_reproducible_through_burns_dataloader() {
        let ds = ImageDataset::from_parts(
            (0..64 * 4).map(|i| i as u8).collect(),
            (0..64).map(|i| i % 10).collect(),
            2,
            2,
        );
        let order = |seed| {
            let loader = DataLoaderBuilder::new(ImageBatcher)
                .batch_size(8)
                .shuffle(seed)
                .set_device(Device::flex())
                .build(ds.clone());
            loader
                .iter()
                .flat_map(|b| b.unwrap().labels)
                .collect::<Vec<_>>()
        };
        assert_eq!(order(1), order(1));
        assert_ne!(order(1), order(2));
        let mut sorted = order(1);
        sorted.sort();
        assert_eq!(sorted.len(), 64);
    }
}
