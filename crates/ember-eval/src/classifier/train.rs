//! Training the classifier network on any labelled image set, and the inputs it sees: batches
//! of a dataset, and for a noise-aware classifier those images noised at seeded timesteps with
//! a `t / T` plane.

use super::{ClassifierError, ClassifierNet, ClassifierNetConfig, argmax_rows};
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use ember_config::{ClassifierConfig, DatasetKind, DiffusionConfig};
use ember_data::{ImageDataset, pixel_to_unit};
use ember_model::NoiseSchedule;
use ember_model::rng::{Rng, Stream, derive_seed};
use std::path::Path;
use std::time::Instant;

/// What `Classifier::train` trains on: the dataset's training split, with where it came from.
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

/// What [`train_net`] returns.
#[derive(Debug)]
pub struct TrainedNet {
    /// The trained weights, on the inference device.
    pub net: ClassifierNet,
    /// Fraction of the test set classified correctly (see [`accuracy`]).
    pub test_accuracy: f64,
    pub train_seconds: f64,
}

/// Trains a classifier network on the labelled images of `train` for `config.epochs` epochs
/// (AdamW, cosine learning rate, batches shuffled from `(config.seed, epoch)`), then measures
/// its accuracy on `test`. Any labelled set will do: the dataset's training split
/// (`Classifier::train`), or generated samples tested on the real test split. With `noise`, the
/// network is noise-aware: it learns from images noised by that process at uniformly drawn
/// timesteps, with the timestep as an extra input plane. `progress` receives a line now and
/// then.
pub fn train_net(
    config: &ClassifierConfig,
    num_classes: usize,
    noise: Option<&DiffusionConfig>,
    train: &ImageDataset,
    test: &ImageDataset,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<TrainedNet, ClassifierError> {
    use burn::data::dataset::Dataset;
    check_data(num_classes, train, test)?;
    let c = config;
    let (size, _) = train.image_size();
    let schedule = noise.map(NoiseSchedule::new);
    let shape = ClassifierNetConfig {
        num_classes,
        image_channels: train.channels(),
        time_channel: schedule.is_some(),
        image_size: size,
        feature_dim: c.feature_dim,
    };
    let train_device = device.clone().autodiff();
    let mut net = shape.init(&train_device, derive_seed(c.seed, Stream::Init, 0));
    let mut optimizer = AdamWConfig::new()
        .with_weight_decay(c.weight_decay as f32)
        .init();
    let loss_fn = CrossEntropyLoss::new(None, &train_device);
    let n = train.len();
    let batches = n.div_ceil(c.batch_size);
    let total = batches * c.epochs;
    let report_every = (batches / 10).max(1);
    let start = Instant::now();
    let mut step = 0;
    for epoch in 0..c.epochs {
        let order = Rng::for_stream(c.seed, Stream::Shuffle, epoch as u64).permutation(n);
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        for (b, chunk) in order.chunks(c.batch_size).enumerate() {
            // 1. the batch (noised at seeded timesteps for a noise-aware network)
            let (images, labels) = dataset_batch(train, chunk.iter().copied(), &train_device);
            let images = match &schedule {
                Some(s) => noised_input(images, s, c.seed, step as u64),
                None => images,
            };
            // 2. forward and cross-entropy
            let targets = ember_model::labels_tensor(&labels, &train_device);
            let (logits, _) = net.forward(images);
            correct += argmax_rows(logits.clone())
                .iter()
                .zip(&labels)
                .filter(|(p, l)| p == l)
                .count();
            seen += labels.len();
            let loss = loss_fn.forward(logits, targets);
            loss_sum += loss.clone().into_scalar::<f32>() as f64;
            // 3. AdamW step at the cosine learning rate
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
    let net = net.valid();
    let test_accuracy = accuracy(&net, schedule.as_ref(), test, 500, device);
    Ok(TrainedNet {
        net,
        test_accuracy,
        train_seconds,
    })
}

/// Refuses data the network cannot learn from: images that are not square or smaller than
/// 4x4 (two poolings), a test set of another shape, labels outside `0..num_classes`, no
/// training images.
fn check_data(
    num_classes: usize,
    train: &ImageDataset,
    test: &ImageDataset,
) -> Result<(), ClassifierError> {
    let fail = |message: String| Err(ClassifierError::Data(message));
    let (h, w) = train.image_size();
    if h != w || h < 4 {
        return fail(format!(
            "the classifier needs square images of at least 4x4, not {h}x{w}"
        ));
    }
    if test.shape() != train.shape() {
        return fail(format!(
            "the test images are {:?} (channels, height, width), the training images {:?}",
            test.shape(),
            train.shape()
        ));
    }
    for (set, data) in [("training", train), ("test", test)] {
        if let Some(&label) = data.raw_parts().1.iter().max()
            && label as usize >= num_classes
        {
            return fail(format!(
                "a {set} image has label {label}, but there are {num_classes} classes"
            ));
        }
    }
    if train.raw_parts().1.is_empty() {
        return fail("there are no training images".into());
    }
    Ok(())
}

/// Fraction of `dataset` that `net` classifies correctly, in batches of `batch`. A noise-aware
/// network (`schedule`) is scored over uniformly drawn noise levels (a fixed draw).
pub fn accuracy(
    net: &ClassifierNet,
    schedule: Option<&NoiseSchedule>,
    dataset: &ImageDataset,
    batch: usize,
    device: &Device,
) -> f64 {
    use burn::data::dataset::Dataset;
    let n = dataset.len();
    let mut correct = 0;
    let mut start = 0;
    while start < n {
        let end = (start + batch.max(1)).min(n);
        let (images, labels) = dataset_batch(dataset, start..end, device);
        let images = match schedule {
            Some(s) => noised_input(images, s, u64::MAX, start as u64),
            None => images,
        };
        correct += argmax_rows(net.forward(images).0)
            .iter()
            .zip(&labels)
            .filter(|(p, l)| p == l)
            .count();
        start = end;
    }
    correct as f64 / n.max(1) as f64
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

#[cfg(test)]
mod tests {
    use super::super::fixture::labelled;
    use super::*;

    #[test]
    fn trains_on_any_labelled_set_reproducibly() {
        let device = Device::flex();
        let config = ClassifierConfig {
            epochs: 4,
            batch_size: 16,
            learning_rate: 3e-3,
            feature_dim: 16,
            ..ClassifierConfig::default()
        };
        let (train, test) = (labelled(96, 11), labelled(30, 12));
        let run = || train_net(&config, 3, None, &train, &test, &device, &mut |_| {}).unwrap();
        let trained = run();
        assert!(
            trained.test_accuracy >= 0.9,
            "a bar's position is easy to learn: {}",
            trained.test_accuracy
        );
        // Every draw (initial weights, batch order) is a function of the seed.
        let (images, _) = dataset_batch(&test, 0..8, &device);
        let logits = |net: &ClassifierNet| {
            net.forward(images.clone())
                .0
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
        };
        let again = run();
        assert_eq!(logits(&trained.net), logits(&again.net));
        assert_eq!(trained.test_accuracy, again.test_accuracy);
    }

    #[test]
    fn refuses_data_it_cannot_learn_from() {
        let device = Device::flex();
        let config = ClassifierConfig::default();
        let err = |train: &ImageDataset, test: &ImageDataset, classes| {
            train_net(&config, classes, None, train, test, &device, &mut |_| {})
                .unwrap_err()
                .to_string()
        };
        let (train, test) = (labelled(6, 1), labelled(3, 2));
        assert!(err(&train, &test, 2).contains("label 2, but there are 2 classes"));
        let small = ImageDataset::from_parts(vec![0; 9], vec![0], 3, 3);
        assert!(err(&small, &small, 3).contains("at least 4x4, not 3x3"));
        let other = ImageDataset::from_parts(vec![0; 64], vec![0], 8, 8);
        assert!(err(&train, &other, 3).contains("the test images are [1, 8, 8]"));
        let empty = ImageDataset::from_parts(vec![], vec![], 12, 12);
        assert!(err(&empty, &test, 3).contains("no training images"));
    }

    #[test]
    fn the_learning_rate_falls_from_its_peak_to_zero() {
        assert_eq!(cosine_lr(0.1, 0, 10), 0.1);
        assert!((cosine_lr(0.1, 5, 10) - 0.05).abs() < 1e-12);
        assert!(cosine_lr(0.1, 10, 10).abs() < 1e-12);
    }
}
