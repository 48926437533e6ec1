//! Classifier guidance's side of a noise-aware classifier: the gradient that
//! `ember_sample::NoisyClassifier` asks of it.

use super::{Classifier, with_time_plane};
use burn::prelude::*;

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

#[cfg(test)]
mod tests {
    use super::super::fixture::{load, workdir, write_split};
    use super::super::{TrainSpec, dataset_batch, dataset_fingerprint};
    use super::*;
    use ember_config::{ClassifierConfig, DatasetKind, DiffusionConfig};
    use ember_data::Split;
    use ember_sample::NoisyClassifier;

    #[test]
    fn a_noise_aware_classifier_trains_and_its_input_gradient_matches_finite_differences() {
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
}
