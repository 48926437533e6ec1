//! Where samplers' random numbers come from: a parameter of every sampler, so tests can make it
//! deterministic, and one seeded source for `ember sample`, `ember eval` and the training grids.

use burn::prelude::*;
use ember_model::rng::{Rng, Stream, derive_seed};

/// Standard normal noise for a batch, one call per draw (the initial noise, then each
/// stochastic step's).
pub trait NoiseSource {
    /// Standard normal noise of `shape`.
    fn normal(&mut self, shape: [usize; 4], device: &Device) -> Tensor<4>;
}

/// Noise drawn per image from Ember's seeded host streams: image `index` of class `class`
/// gets draw `k` from a stream that depends only on `(seed, class, index, k)`. So image `j` of
/// class `c` starts from the same noise and sees the same step noise in a grid of
/// `ember sample`, in `ember eval` at every scale, and in any batch it shares with others.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    /// The seed of each row's stream.
    row_seeds: Vec<u64>,
    draws: u64,
}

impl SeededNoise {
    /// The noise of images `(class, index)`, one per batch row, in that order.
    pub fn for_images(seed: u64, images: &[(usize, usize)]) -> Self {
        Self {
            row_seeds: images
                .iter()
                .map(|&(class, index)| image_seed(seed, class, index))
                .collect(),
            draws: 0,
        }
    }

    /// Rows `0..n` of class 0: for tests and tools without classes.
    pub fn for_rows(seed: u64, n: usize) -> Self {
        let rows: Vec<(usize, usize)> = (0..n).map(|i| (0, i)).collect();
        Self::for_images(seed, &rows)
    }
}

/// The seed of image `index` of class `class` under `seed`.
fn image_seed(seed: u64, class: usize, index: usize) -> u64 {
    derive_seed(
        derive_seed(seed, Stream::SamplerInit, class as u64),
        Stream::SamplerInit,
        index as u64,
    )
}

impl NoiseSource for SeededNoise {
    /// # Panics
    /// If `shape[0]` is not the number of images the source was made for.
    fn normal(&mut self, shape: [usize; 4], device: &Device) -> Tensor<4> {
        let [rows, c, h, w] = shape;
        assert_eq!(
            rows,
            self.row_seeds.len(),
            "noise for {} images, asked for {rows}",
            self.row_seeds.len()
        );
        let (stream, index) = match self.draws {
            0 => (Stream::SamplerInit, 0),
            k => (Stream::SamplerStep, k),
        };
        let mut values = Vec::with_capacity(rows * c * h * w);
        for &row_seed in &self.row_seeds {
            values.extend(Rng::for_stream(row_seed, stream, index).normals(c * h * w));
        }
        self.draws += 1;
        Tensor::from_data(TensorData::new(values, shape), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn an_image_sees_the_same_noise_in_any_batch() {
        let device = Device::flex();
        let mut alone = SeededNoise::for_images(5, &[(3, 7)]);
        let mut shared = SeededNoise::for_images(5, &[(1, 0), (3, 7), (3, 8)]);
        for _ in 0..3 {
            let a = values(alone.normal([1, 1, 2, 2], &device));
            let b = values(shared.normal([3, 1, 2, 2], &device));
            assert_eq!(a, b[4..8]);
        }
        let mut other_seed = SeededNoise::for_images(6, &[(3, 7)]);
        let mut fresh = SeededNoise::for_images(5, &[(3, 7)]);
        assert_ne!(
            values(other_seed.normal([1, 1, 2, 2], &device)),
            values(fresh.normal([1, 1, 2, 2], &device))
        );
    }

    #[test]
    fn successive_draws_differ() {
        let device = Device::flex();
        let mut noise = SeededNoise::for_rows(1, 2);
        let first = values(noise.normal([2, 1, 2, 2], &device));
        let second = values(noise.normal([2, 1, 2, 2], &device));
        assert_ne!(first, second);
        assert_ne!(first[..4], first[4..], "rows differ");
    }
}
