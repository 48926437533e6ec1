//! Test data of the classifier's tests: 12x12 images of 3 classes, each class a bright bar at
//! its own position plus seeded noise, learnable in a few steps.

use ember_data::idx::encode_idx;
use ember_data::{ImageDataset, Split};
use ember_model::rng::Rng;
use std::path::{Path, PathBuf};

/// Pixels and labels of `n` fixture images (label `i % 3` for image `i`).
pub fn fixture(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
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

/// `n` fixture images as an in-memory labelled set (no files, no split).
pub fn labelled(n: usize, seed: u64) -> ImageDataset {
    let (pixels, labels) = fixture(n, seed);
    ImageDataset::from_parts(pixels, labels, 12, 12)
}

/// Writes `n` fixture images as the IDX split `prefix` (`train`, `t10k`) into `dir`.
pub fn write_split(dir: &Path, prefix: &str, n: usize, seed: u64) {
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

/// A split of the IDX fixture in `root`, read as the CLI reads it.
pub fn load(root: &Path, split: Split) -> ImageDataset {
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

/// An empty temporary folder of this test process.
pub fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
