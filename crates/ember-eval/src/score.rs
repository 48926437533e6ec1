//! Scoring a set of images against the real data: what the guidance sweep, the checkpoint
//! curve and the guidance study share.
//!
//! - accuracy: how often the domain classifier gives the class an image was made for;
//! - Fréchet distance, k-NN precision/recall and intra-class diversity in the classifier's
//!   feature space (see [`crate::metrics`]), and the standard FID with `--fid`;
//! - CAS, the classification accuracy score (Ravuri & Vinyals 2019, "Classification Accuracy
//!   Score for Conditional Generative Models"): the domain classifier's network trained from
//!   scratch on the images alone (labelled by the class they were made for), then tested on the
//!   real test split. The reference trains the same way on as many real training images.

use crate::classifier::{Classifier, argmax_rows, dataset_batch, train_net};
use crate::metrics::{self, FeatureSet, GaussianStats};
use crate::{FeatureExtractor, extract_features, to_feature_set};
use burn::prelude::*;
use ember_config::ClassifierConfig;
use ember_data::ImageDataset;

/// Images per Inception batch: its activations at 299x299 are ~1000x the classifier's.
const FID_BATCH: usize = 16;
/// Images per classifier batch when scoring datasets.
const SCORE_BATCH: usize = 500;

/// What judges images: the domain classifier and its features, the real splits, and how CAS
/// trains.
pub struct Judge<'a> {
    pub classifier: &'a Classifier,
    /// The standard-FID network (Inception), when asked for.
    pub fid: Option<&'a dyn FeatureExtractor>,
    pub test: &'a ImageDataset,
    pub train: &'a ImageDataset,
    /// `k` of the k-nearest-neighbour manifolds.
    pub k: usize,
    /// How CAS trains its classifier; `None`: no CAS.
    pub cas: Option<ClassifierConfig>,
    pub num_classes: usize,
    pub device: Device,
}

/// The real test set, summarised once.
pub struct RealSide {
    pub(crate) features: FeatureSet,
    pub(crate) stats: GaussianStats,
    pub(crate) radii: Vec<f64>,
    /// Inception statistics of the first `samples per scale` test images (`--fid`).
    pub(crate) fid_stats: Option<GaussianStats>,
}

/// The metrics of one set of images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    pub accuracy: f64,
    pub fd: f64,
    pub precision: f64,
    pub recall: f64,
    pub diversity: f64,
    pub fid: Option<f64>,
    pub cas: Option<f64>,
    pub samples: usize,
}

impl Judge<'_> {
    /// The real side for sets of `n` images.
    pub fn real_side(&self, n: usize) -> RealSide {
        use burn::data::dataset::Dataset;
        let (features, _, _) = self.dataset_features(self.test, self.test.len());
        let fid_images = n.min(self.test.len());
        RealSide {
            stats: GaussianStats::of(&features),
            radii: metrics::knn_radii(&features, self.k),
            features,
            fid_stats: self
                .fid
                .map(|fid| self.dataset_fid_stats(fid, self.test, fid_images)),
        }
    }

    /// The same metrics for real images: `per_class` training images of each class (the floor
    /// a perfect generator reaches with that many samples).
    pub fn reference(&self, real: &RealSide, per_class: usize) -> Metrics {
        use burn::data::dataset::Dataset;
        let subset = self.train.first_per_class(per_class);
        let mut tally = self.tally();
        let mut start = 0;
        while start < subset.len() {
            let end = (start + SCORE_BATCH).min(subset.len());
            let (images, labels) = dataset_batch(&subset, start..end, &self.device);
            tally.add(images, &labels);
            start = end;
        }
        tally.finish(real)
    }

    /// An empty tally of images to score.
    pub fn tally(&self) -> Tally<'_> {
        Tally {
            judge: self,
            features: FeatureSet::new(self.classifier.feature_dim(), Vec::new()),
            fid_features: self
                .fid
                .map(|fid| FeatureSet::new(fid.feature_dim(), Vec::new())),
            correct: 0,
            labels: Vec::new(),
            pixels: Vec::new(),
            shape: None,
        }
    }

    /// Classifier features, labels and predicted classes of dataset images `0..n`.
    pub(crate) fn dataset_features(
        &self,
        dataset: &ImageDataset,
        n: usize,
    ) -> (FeatureSet, Vec<usize>, Vec<usize>) {
        let mut set = FeatureSet::new(self.classifier.feature_dim(), Vec::new());
        let (mut labels, mut predicted) = (Vec::new(), Vec::new());
        let mut start = 0;
        while start < n {
            let end = (start + SCORE_BATCH).min(n);
            let (images, l) = dataset_batch(dataset, start..end, &self.device);
            let (logits, features) = self.classifier.logits_and_features(images);
            predicted.extend(argmax_rows(logits));
            set.extend(&to_feature_set(features));
            labels.extend(l);
            start = end;
        }
        (set, labels, predicted)
    }

    /// Inception statistics of dataset images `0..n`.
    fn dataset_fid_stats(
        &self,
        fid: &dyn FeatureExtractor,
        dataset: &ImageDataset,
        n: usize,
    ) -> GaussianStats {
        let mut set = FeatureSet::new(fid.feature_dim(), Vec::new());
        let mut start = 0;
        while start < n {
            let end = (start + 100).min(n);
            let (images, _) = dataset_batch(dataset, start..end, &self.device);
            set.extend(&extract_features(fid, images, FID_BATCH));
            start = end;
        }
        GaussianStats::of(&set)
    }

    /// CAS: a classifier trained on `images` alone, tested on the real test split.
    fn cas(&self, config: &ClassifierConfig, images: ImageDataset) -> f64 {
        match train_net(
            config,
            self.num_classes,
            None,
            &images,
            self.test,
            &self.device,
            &mut |_| {},
        ) {
            Ok(trained) => trained.test_accuracy,
            // Images a classifier cannot learn from (none at all, say) score as nothing.
            Err(_) => f64::NAN,
        }
    }
}

/// Scores accumulated batch by batch.
pub struct Tally<'a> {
    judge: &'a Judge<'a>,
    features: FeatureSet,
    fid_features: Option<FeatureSet>,
    correct: usize,
    labels: Vec<usize>,
    /// The images as 8-bit pixels (as a PNG holds them), kept for CAS.
    pixels: Vec<u8>,
    shape: Option<[usize; 3]>,
}

impl Tally<'_> {
    /// Adds images in [-1, 1] made for classes `labels`.
    ///
    /// # Shapes
    /// - images: `[labels.len(), channels, h, w]`
    pub fn add(&mut self, images: Tensor<4>, labels: &[usize]) {
        let [_, c, h, w] = images.dims();
        self.shape = Some([c, h, w]);
        let (logits, features) = self.judge.classifier.logits_and_features(images.clone());
        self.correct += argmax_rows(logits)
            .iter()
            .zip(labels)
            .filter(|(p, l)| p == l)
            .count();
        self.features.extend(&to_feature_set(features));
        if let (Some(fid), Some(set)) = (self.judge.fid, self.fid_features.as_mut()) {
            set.extend(&extract_features(fid, images.clone(), FID_BATCH));
        }
        if self.judge.cas.is_some() {
            let values = images
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("f32 images");
            self.pixels.extend(
                values
                    .iter()
                    .map(|v| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8),
            );
        }
        self.labels.extend_from_slice(labels);
    }

    /// The metrics of everything added.
    pub fn finish(self, real: &RealSide) -> Metrics {
        let judge = self.judge;
        let n = self.labels.len();
        let pr =
            metrics::precision_recall(&real.features, Some(&real.radii), &self.features, judge.k);
        let cas = match (&judge.cas, self.shape) {
            (Some(config), Some(shape)) => {
                let names = (0..judge.num_classes).map(|i| i.to_string()).collect();
                let labels = self.labels.iter().map(|&l| l as u16).collect();
                let images = ImageDataset::from_images(self.pixels, labels, shape, names);
                Some(judge.cas(config, images))
            }
            _ => None,
        };
        Metrics {
            accuracy: self.correct as f64 / n.max(1) as f64,
            fd: metrics::frechet_distance(&GaussianStats::of(&self.features), &real.stats),
            precision: pr.precision,
            recall: pr.recall,
            diversity: metrics::intra_class_diversity(&self.features, &self.labels),
            fid: self
                .fid_features
                .zip(real.fid_stats.as_ref())
                .map(|(set, real_stats)| {
                    metrics::frechet_distance(&GaussianStats::of(&set), real_stats)
                }),
            cas,
            samples: n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifier::TrainSpec;
    use crate::classifier::fixture::labelled;
    use burn::data::dataset::Dataset;

    /// CAS of "samples" that are real images is the same training on real images: the
    /// reference, exactly (same images, same order, same seed), and the same twice.
    #[test]
    fn cas_of_real_images_is_the_real_data_reference_and_reproducible() {
        let device = Device::flex();
        let (train, test) = (labelled(90, 21), labelled(45, 22));
        let recipe = ClassifierConfig {
            epochs: 3,
            batch_size: 16,
            learning_rate: 3e-3,
            feature_dim: 16,
            ..ClassifierConfig::default()
        };
        let spec = TrainSpec {
            config: &recipe,
            dataset: ember_config::DatasetKind::Mnist,
            root: std::path::Path::new("fixture"),
            num_classes: 3,
            train: &train,
            test: &test,
            noise: None,
        };
        let classifier = Classifier::train(&spec, "fixture".into(), &device, &mut |_| {}).unwrap();
        let judge = Judge {
            classifier: &classifier,
            fid: None,
            test: &test,
            train: &train,
            k: 3,
            cas: Some(recipe.clone()),
            num_classes: 3,
            device: device.clone(),
        };
        let per_class = 10;
        let real = judge.real_side(3 * per_class);
        let reference = judge.reference(&real, per_class);
        let real_cas = reference.cas.expect("CAS was asked for");
        assert!(real_cas > 0.8, "the bars are easy to learn: {real_cas}");

        // The same images, given as if they had been sampled.
        let subset = train.first_per_class(per_class);
        let score = || {
            let mut tally = judge.tally();
            let (images, labels) = dataset_batch(&subset, 0..subset.len(), &device);
            tally.add(images, &labels);
            tally.finish(&real)
        };
        let first = score();
        assert_eq!(first.cas, Some(real_cas));
        assert_eq!(first.samples, 30);
        assert_eq!(first.accuracy, reference.accuracy);
        assert_eq!(score().cas, first.cas, "a seeded CAS is the same twice");

        // Images of the wrong class score as noise would: near chance.
        let mut tally = judge.tally();
        let (images, labels) = dataset_batch(&subset, 0..subset.len(), &device);
        let shifted: Vec<usize> = labels.iter().map(|l| (l + 1) % 3).collect();
        tally.add(images, &shifted);
        let wrong = tally.finish(&real);
        assert!(wrong.cas.unwrap() < 0.2, "{:?}", wrong.cas);
        assert!(wrong.accuracy < 0.2, "{}", wrong.accuracy);
    }
}
