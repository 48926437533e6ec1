//! Ember's data crate: labelled image datasets (IDX, CIFAR-10 binary batches, image folders),
//! held in memory at the model's size, served through burn-dataset's [`Dataset`] trait and
//! batched by Burn's `DataLoader`.
//!
//! Every file is read and checked when a dataset is loaded, before a run writes anything, so
//! bad input fails early with the file, the record and what was expected.

pub mod cifar;
pub mod fit;
pub mod folder;
pub mod idx;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use ember_config::{DataConfig, DataFormat, DatasetKind, ModelConfig};
use idx::{IdxError, read_idx_with};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Idx(#[from] IdxError),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("data folder {root} does not exist; {hint}")]
    NoFolder { root: PathBuf, hint: String },
    #[error("data folder {0} is a file; expected the folder that holds the dataset's files")]
    NotAFolder(PathBuf),
    #[error("dataset files not found in {root} (missing {file}); {hint}")]
    Missing {
        root: PathBuf,
        file: String,
        hint: String,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// IDX file names as LeCun published them (and as both MNIST and Fashion-MNIST use).
    pub fn file_names(self) -> (&'static str, &'static str) {
        match self {
            Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        }
    }
}

/// The class names of Fashion-MNIST, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

/// Images as a reader decoded them: planar `[channels, height, width]` each, before the checks
/// against the config.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub images: Vec<u8>,
    pub labels: Vec<u16>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub class_names: Vec<String>,
}

/// One labelled image, kept as raw bytes until batching.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageItem {
    /// Planar `[channels, height, width]` pixels in 0..=255.
    pub pixels: Vec<u8>,
    pub label: usize,
    /// Mirror left-right when batching (random flip augmentation).
    pub hflip: bool,
}

/// A labelled image dataset held in memory at the model's image size (all of MNIST is 47 MB,
/// CIFAR-10 150 MB).
#[derive(Debug, Clone)]
pub struct ImageDataset {
    images: Vec<u8>,
    labels: Vec<u16>,
    channels: usize,
    height: usize,
    width: usize,
    class_names: Vec<String>,
}

impl ImageDataset {
    /// Reads one split of the data a config describes: its format and folder, checked against
    /// the model's classes and channels, fitted to `model.image_size` (shorter side resized,
    /// centre cropped), keeping the first `limit` images (0 = all).
    pub fn load(
        data: &DataConfig,
        model: &ModelConfig,
        split: Split,
        limit: usize,
    ) -> Result<Self, DataError> {
        let root = match (data.format, split) {
            (DataFormat::ImageFolder, Split::Test) => {
                if data.test_root.as_os_str().is_empty() {
                    return Err(DataError::Missing {
                        root: data.resolved_root(),
                        file: "a test split".into(),
                        hint: "format \"image-folder\" reads its test split from data.test_root: set it to a folder with the same class sub-folders".into(),
                    });
                }
                data.test_root.clone()
            }
            _ => data.resolved_root(),
        };
        if root.is_file() {
            return Err(DataError::NotAFolder(root));
        }
        if !root.is_dir() {
            return Err(DataError::NoFolder {
                root: root.clone(),
                hint: setup_hint(data),
            });
        }
        let classes = model.num_classes;
        let decoded = match data.format {
            DataFormat::Idx => read_idx_split(&root, split, classes, data.dataset)?,
            DataFormat::Cifar10 => cifar::read_split(&root, split, classes)?,
            DataFormat::ImageFolder => {
                let decoded =
                    folder::read_folder(&root, model.image_channels, model.image_size, classes)?;
                if split == Split::Test {
                    let train: Vec<String> = folder::class_folders(&data.resolved_root())?
                        .into_iter()
                        .map(|(n, _)| n)
                        .collect();
                    if train != decoded.class_names {
                        return Err(DataError::Invalid {
                            path: root,
                            message: format!(
                                "test classes [{}] differ from the training classes [{}] of data.root",
                                decoded.class_names.join(", "),
                                train.join(", ")
                            ),
                        });
                    }
                }
                decoded
            }
        };
        if decoded.channels != model.image_channels {
            return Err(DataError::Invalid {
                path: root,
                message: format!(
                    "images have {} channels, but model.image_channels is {}",
                    decoded.channels, model.image_channels
                ),
            });
        }
        Ok(Self::from_decoded(
            decoded,
            model.image_size,
            limit,
            classes,
        ))
    }

    /// Fits decoded images to `size`, keeps the first `limit` (0 = all), and names exactly
    /// `num_classes` classes (by number where the reader had no name).
    pub fn from_decoded(decoded: Decoded, size: usize, limit: usize, num_classes: usize) -> Self {
        let Decoded {
            mut images,
            mut labels,
            channels,
            height,
            width,
            mut class_names,
        } = decoded;
        if limit > 0 && limit < labels.len() {
            labels.truncate(limit);
            images.truncate(limit * channels * height * width);
        }
        if (height, width) != (size, size) {
            images = images
                .chunks_exact(channels * height * width)
                .flat_map(|img| fit::fit_square(img, channels, height, width, size))
                .collect();
        }
        class_names.truncate(num_classes);
        class_names.extend((class_names.len()..num_classes).map(|i| i.to_string()));
        Self {
            images,
            labels,
            channels,
            height: size,
            width: size,
            class_names,
        }
    }

    /// Builds a greyscale dataset from raw parts (fixtures, tests); classes are named by number.
    pub fn from_parts(images: Vec<u8>, labels: Vec<u8>, height: usize, width: usize) -> Self {
        assert_eq!(images.len(), labels.len() * height * width);
        let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
        Self {
            images,
            labels: labels.into_iter().map(u16::from).collect(),
            channels: 1,
            height,
            width,
            class_names: (0..classes).map(|i| i.to_string()).collect(),
        }
    }

    /// Builds a dataset from images already at their size: planar `[channels, height, width]`
    /// pixels, image after image (generated samples, a subset of another dataset).
    ///
    /// # Panics
    /// If the pixel count does not match the labels and the shape.
    pub fn from_images(
        images: Vec<u8>,
        labels: Vec<u16>,
        [channels, height, width]: [usize; 3],
        class_names: Vec<String>,
    ) -> Self {
        assert_eq!(images.len(), labels.len() * channels * height * width);
        Self {
            images,
            labels,
            channels,
            height,
            width,
            class_names,
        }
    }

    /// The first `per_class` images of every class, in dataset order (fewer where a class has
    /// fewer).
    pub fn first_per_class(&self, per_class: usize) -> Self {
        let pixels = self.channels * self.height * self.width;
        let classes = self.class_names.len().max(1);
        let mut taken = vec![0usize; classes];
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        for (i, &label) in self.labels.iter().enumerate() {
            let count = &mut taken[(label as usize).min(classes - 1)];
            if *count < per_class {
                *count += 1;
                images.extend_from_slice(&self.images[i * pixels..(i + 1) * pixels]);
                labels.push(label);
            }
        }
        Self::from_images(images, labels, self.shape(), self.class_names.clone())
    }

    pub fn image_size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// `[channels, height, width]` of every image.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// Class names in label order.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// All pixels, image after image, and all labels: what a dataset fingerprint hashes.
    pub fn raw_parts(&self) -> (&[u8], &[u16]) {
        (&self.images, &self.labels)
    }
}

/// What to do when a dataset's folder is missing.
fn setup_hint(data: &DataConfig) -> String {
    match (data.format, data.dataset) {
        (DataFormat::Idx, DatasetKind::Mnist) => {
            "run scripts/setup.sh to fetch MNIST, or set data.root".into()
        }
        (DataFormat::Idx, DatasetKind::FashionMnist) => {
            "run scripts/setup.sh --fashion to fetch Fashion-MNIST, or set data.root".into()
        }
        (DataFormat::Cifar10, _) => {
            "see datasets/README.md for obtaining CIFAR-10, or set data.root".into()
        }
        (DataFormat::ImageFolder, _) => {
            "data.root must be a folder with one sub-folder of images per class".into()
        }
    }
}

/// Reads an IDX split: images `[count, height, width]` and labels `[count]`.
fn read_idx_split(
    root: &Path,
    split: Split,
    num_classes: usize,
    dataset: DatasetKind,
) -> Result<Decoded, DataError> {
    let (images_name, labels_name) = split.file_names();
    let find = |name: &str| {
        idx::find_idx_file(root, name).ok_or_else(|| DataError::Missing {
            root: root.to_path_buf(),
            file: format!("{name} (or {name}.gz)"),
            hint: "run scripts/setup.sh to fetch them, or set data.root".into(),
        })
    };
    let images_path = find(images_name)?;
    let labels_path = find(labels_name)?;
    // The shapes are checked from the headers, before any data is read.
    let images = read_idx_with(&images_path, |dims| {
        let &[count, height, width] = dims else {
            return Err(format!(
                "expected 3 dimensions [count, height, width] (greyscale images), found {dims:?}"
            ));
        };
        if count == 0 || height == 0 || width == 0 {
            return Err(format!(
                "expected at least one non-empty image, found dimensions {dims:?}"
            ));
        }
        // Images of another size are fitted to the model's: the same bounds as image files.
        fit::check_fittable(width as u64, height as u64).map_err(|m| format!("images of {m}"))
    })?;
    let labels = read_idx_with(&labels_path, |dims| match dims {
        [_] => Ok(()),
        _ => Err(format!("expected 1 dimension [count], found {dims:?}")),
    })?;
    let invalid = |path: &Path, message: String| DataError::Invalid {
        path: path.to_path_buf(),
        message,
    };
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
    let class_names = match dataset {
        DatasetKind::Mnist => (0..10).map(|d| d.to_string()).collect(),
        DatasetKind::FashionMnist => FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    Ok(Decoded {
        images: images.data,
        labels: labels.data.into_iter().map(u16::from).collect(),
        channels: 1,
        height: images.dims[1],
        width: images.dims[2],
        class_names,
    })
}

impl Dataset<ImageItem> for ImageDataset {
    fn get(&self, index: usize) -> Result<ImageItem, burn::data::dataset::DatasetError> {
        let n = self.channels * self.height * self.width;
        let label = *self.labels.get(index).ok_or_else(|| {
            burn::data::dataset::DatasetError::new(std::io::Error::other(format!(
                "index {index} out of range for {} items",
                self.labels.len()
            )))
        })?;
        Ok(ImageItem {
            pixels: self.images[index * n..(index + 1) * n].to_vec(),
            label: label as usize,
            hflip: false,
        })
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}

/// One epoch of a dataset in a given order, with a flip decision per position: the order and
/// the flips are drawn by the trainer from its seeded streams, so the batch of any step is a
/// function of (seed, step) whatever thread prepares it.
pub struct EpochView {
    dataset: Arc<ImageDataset>,
    order: Vec<usize>,
    flips: Vec<bool>,
}

impl EpochView {
    /// `flips` is empty (no flipping) or as long as `order`.
    pub fn new(dataset: Arc<ImageDataset>, order: Vec<usize>, flips: Vec<bool>) -> Self {
        assert!(flips.is_empty() || flips.len() == order.len());
        Self {
            dataset,
            order,
            flips,
        }
    }
}

impl Dataset<ImageItem> for EpochView {
    fn get(&self, index: usize) -> Result<ImageItem, burn::data::dataset::DatasetError> {
        let mut item = self.dataset.get(*self.order.get(index).ok_or_else(|| {
            burn::data::dataset::DatasetError::new(std::io::Error::other(format!(
                "position {index} out of range for an epoch of {} items",
                self.order.len()
            )))
        })?)?;
        item.hflip = self.flips.get(index).copied().unwrap_or(false);
        Ok(item)
    }

    fn len(&self) -> usize {
        self.order.len()
    }
}

/// A batch of images scaled to [-1, 1] with their class labels (host-side, so label dropout
/// can be drawn from Ember's own seeded stream).
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// `[batch, channels, height, width]`
    pub images: Tensor<4>,
    pub labels: Vec<usize>,
}

/// Scales `u8` pixels to [-1, 1]: `x / 127.5 - 1`.
pub fn pixel_to_unit(p: u8) -> f32 {
    p as f32 / 127.5 - 1.0
}

/// Turns items of one image shape into a batch: the flip augmentation and the scaling to
/// [-1, 1] happen here, i.e. on the data loader's thread.
#[derive(Debug, Clone)]
pub struct ImageBatcher {
    /// `[channels, height, width]` of every item.
    pub shape: [usize; 3],
}

impl ImageBatcher {
    pub fn new(shape: [usize; 3]) -> Self {
        Self { shape }
    }
}

impl Batcher<ImageItem, ImageBatch> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> ImageBatch {
        let [c, h, w] = self.shape;
        let b = items.len();
        let mut pixels = Vec::with_capacity(b * c * h * w);
        let mut labels = Vec::with_capacity(b);
        for item in items {
            assert_eq!(item.pixels.len(), c * h * w, "item of another shape");
            if item.hflip {
                for row in item.pixels.chunks_exact(w) {
                    pixels.extend(row.iter().rev().map(|&p| pixel_to_unit(p)));
                }
            } else {
                pixels.extend(item.pixels.iter().map(|&p| pixel_to_unit(p)));
            }
            labels.push(item.label);
        }
        let images = Tensor::from_data(TensorData::new(pixels, [b, c, h, w]), device);
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

    fn configs(
        root: &Path,
        format: DataFormat,
        channels: usize,
        size: usize,
        classes: usize,
    ) -> (DataConfig, ModelConfig) {
        let data = DataConfig {
            format,
            root: root.to_path_buf(),
            ..DataConfig::default()
        };
        let model = ModelConfig {
            num_classes: classes,
            image_channels: channels,
            image_size: size,
            ..ModelConfig::default()
        };
        (data, model)
    }

    fn load_idx(dir: &Path, classes: usize, limit: usize) -> Result<ImageDataset, DataError> {
        let (data, model) = configs(dir, DataFormat::Idx, 1, 4, classes);
        ImageDataset::load(&data, &model, Split::Train, limit)
    }

    #[test]
    fn loads_a_generated_split_with_limit() {
        let dir = fixture_dir("limit", 10, 2);
        let ds = load_idx(&dir, 3, 6).unwrap();
        assert_eq!(ds.len(), 6);
        let item = ds.get(5).unwrap();
        assert_eq!(item.label, 2);
        assert_eq!(item.pixels[0], (5 * 16 * 7 % 256) as u8);
        assert_eq!(ds.class_names(), ["0", "1", "2"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn label_out_of_range_names_the_record() {
        let dir = fixture_dir("labels", 10, 5);
        let err = load_idx(&dir, 3, 0).unwrap_err().to_string();
        assert!(err.contains("record 3 has label 3"), "{err}");
        assert!(err.contains("train-labels-idx1-ubyte"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn idx_images_of_an_odd_shape_are_refused_before_fitting() {
        // [2, 1, 4000]: fitting 1-pixel rows to 4 would stretch them to 4 x 16000.
        let dir = fixture_dir("odd-shape", 2, 1);
        let images = dir.join("train-images-idx3-ubyte");
        let file = encode_idx(&[2, 1, 4000], &[0; 8000]);
        // Refused from the header: the same error when the data is not even there.
        for bytes in [&file[..], &file[..16]] {
            std::fs::write(&images, bytes).unwrap();
            let err = load_idx(&dir, 2, 0).unwrap_err().to_string();
            assert!(err.contains("train-images-idx3-ubyte"), "{err}");
            assert!(
                err.contains("images of 4000 x 1 pixels") && err.contains("aspect ratio 4000:1"),
                "{err}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_files_point_at_setup() {
        let (data, model) = configs(Path::new("/nonexistent/ember"), DataFormat::Idx, 1, 28, 10);
        let err = ImageDataset::load(&data, &model, Split::Test, 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("scripts/setup.sh") && err.contains("/nonexistent/ember"),
            "{err}"
        );
        let dir = fixture_dir("missing-test", 4, 1);
        let err = load_idx(&dir, 2, 0).map(|_| ()).and_then(|_| {
            let (data, model) = configs(&dir, DataFormat::Idx, 1, 4, 2);
            ImageDataset::load(&data, &model, Split::Test, 0).map(|_| ())
        });
        assert!(err.unwrap_err().to_string().contains("t10k-images"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn cifar_batches_load_as_rgb_with_their_class_names() {
        let dir = std::env::temp_dir().join(format!("ember-data-cifar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pixels: Vec<u8> = (0..3 * 3072).map(|i| (i % 256) as u8).collect();
        std::fs::write(
            dir.join("data_batch_1.bin"),
            cifar::encode_batch(&[0, 1, 9], &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join("data_batch_2.bin"),
            cifar::encode_batch(&[4], &pixels[..3072]),
        )
        .unwrap();
        let (data, model) = configs(&dir, DataFormat::Cifar10, 3, 32, 10);
        let ds = ImageDataset::load(&data, &model, Split::Train, 0).unwrap();
        assert_eq!(ds.len(), 4);
        assert_eq!(ds.shape(), [3, 32, 32]);
        assert_eq!(ds.get(3).unwrap().label, 4);
        assert_eq!(ds.get(1).unwrap().pixels, pixels[3072..6144]);
        assert_eq!(ds.class_names()[9], "truck");
        // Fitted to 16x16: a quarter of the pixels, still RGB.
        let (data, model) = configs(&dir, DataFormat::Cifar10, 3, 16, 10);
        let small = ImageDataset::load(&data, &model, Split::Train, 2).unwrap();
        assert_eq!(
            (small.len(), small.get(0).unwrap().pixels.len()),
            (2, 3 * 256)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn write_png(path: &Path, width: u32, height: u32, rgb: [u8; 3]) {
        let image = image::RgbImage::from_pixel(width, height, image::Rgb(rgb));
        image.save(path).unwrap();
    }

    #[test]
    fn image_folders_label_by_sorted_folder_and_convert_channels() {
        let dir = std::env::temp_dir().join(format!("ember-data-folder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for class in ["zebra", "ant"] {
            std::fs::create_dir_all(dir.join(class)).unwrap();
        }
        write_png(&dir.join("ant/a.png"), 12, 8, [255, 0, 0]);
        write_png(&dir.join("ant/b.png"), 8, 8, [0, 255, 0]);
        let jpeg = image::RgbImage::from_pixel(20, 20, image::Rgb([0, 0, 200]));
        jpeg.save(dir.join("zebra/c.jpg")).unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored: not in a class folder").unwrap();
        let (data, model) = configs(&dir, DataFormat::ImageFolder, 3, 4, 2);
        let ds = ImageDataset::load(&data, &model, Split::Train, 0).unwrap();
        assert_eq!(ds.class_names(), ["ant", "zebra"]);
        let labels: Vec<usize> = (0..3).map(|i| ds.get(i).unwrap().label).collect();
        assert_eq!(labels, [0, 0, 1]);
        let red = ds.get(0).unwrap().pixels;
        assert!(red[..16].iter().all(|&v| v == 255) && red[16..].iter().all(|&v| v == 0));
        let blue = ds.get(2).unwrap().pixels;
        assert!(
            blue[32..].iter().all(|&v| (195..=205).contains(&v)),
            "{blue:?}"
        );
        // The same folder as grey: one channel of luma.
        let (data, model) = configs(&dir, DataFormat::ImageFolder, 1, 4, 2);
        let grey = ImageDataset::load(&data, &model, Split::Train, 0).unwrap();
        assert_eq!(grey.get(1).unwrap().pixels.len(), 16);
        assert!(
            grey.get(1)
                .unwrap()
                .pixels
                .iter()
                .all(|&v| (181..=183).contains(&v))
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn pixels_scale_to_unit_interval() {
        assert_eq!(pixel_to_unit(0), -1.0);
        assert_eq!(pixel_to_unit(255), 1.0);
    }

    #[test]
    fn batcher_flips_marked_items_and_keeps_channels_apart() {
        let items = vec![ImageItem {
            pixels: vec![0, 255, 0, 0, 255, 255, 0, 0], // 2 channels of 2x2
            label: 1,
            hflip: true,
        }];
        let batch = ImageBatcher::new([2, 2, 2]).batch(items, &Device::flex());
        let v = batch.images.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(v, vec![1.0, -1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0]);
    }

    #[test]
    fn epoch_views_serve_in_the_given_order_through_burns_dataloader() {
        let ds = Arc::new(ImageDataset::from_parts(
            (0..64 * 4).map(|i| i as u8).collect(),
            (0..64).map(|i| i % 10).collect(),
            2,
            2,
        ));
        let order: Vec<usize> = (0..64).rev().collect();
        let labels = |workers| {
            let view = EpochView::new(ds.clone(), order.clone(), vec![]);
            let loader = DataLoaderBuilder::new(ImageBatcher::new([1, 2, 2]))
                .batch_size(8)
                .num_workers(workers)
                .set_device(Device::flex())
                .build(view);
            loader
                .iter()
                .flat_map(|b| b.unwrap().labels)
                .collect::<Vec<_>>()
        };
        let expected: Vec<usize> = order.iter().map(|&i| i % 10).collect();
        assert_eq!(labels(0), expected);
        // One background worker keeps the order (the trainer uses at most one).
        assert_eq!(labels(1), expected);
    }
}
