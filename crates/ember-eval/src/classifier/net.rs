//! The classifier network: a small LeNet-style conv net whose logits say which class an image
//! looks like and whose penultimate layer is the feature space of the metrics.

use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use ember_model::init::{conv3x3, seeded_init};

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

#[cfg(test)]
mod tests {
    use super::*;

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
