//! Test denoisers with known answers: the exact denoiser of a Gaussian mixture and its exact
//! noisy classifier, so samplers and guidance are checked against ground truth rather than a
//! snapshot of themselves.

use crate::denoiser::{Denoised, Denoiser};
use crate::guidance::{Branches, NoisyClassifier};
use burn::prelude::*;
use ember_config::{DiffusionConfig, Prediction};
use ember_model::NoiseSchedule;

pub fn schedule() -> NoiseSchedule {
    NoiseSchedule::new(&DiffusionConfig::default())
}

pub fn values(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

/// A fixed, input-dependent "model" (noise prediction `x (0.5 + t / 4000)`), so determinism
/// tests need no training.
pub struct Shrink(pub NoiseSchedule);

impl Denoiser for Shrink {
    fn schedule(&self) -> &NoiseSchedule {
        &self.0
    }
    fn denoise(&self, x: Tensor<4>, t: usize) -> Denoised {
        let eps = x.clone().mul_scalar(0.5 + t as f64 / 4000.0);
        self.0.x0_from_eps(x, eps, t).into()
    }
}

/// The exact denoiser of a 2-D Gaussian mixture `sum_k w_k N(mu_k, std^2 I)`: under
/// `z = x0 + sigma eps`, `E[x0 | z] = sum_k r_k(z) (mu_k + std^2 / (std^2 + sigma^2) (z - mu_k))`
/// with responsibilities `r_k ~ w_k N(z; mu_k, (std^2 + sigma^2) I)`. Samples are `[n, 2, 1, 1]`.
pub struct Mixture {
    pub means: [[f64; 2]; 2],
    pub weights: [f64; 2],
    pub std: f64,
    pub schedule: NoiseSchedule,
}

impl Mixture {
    pub fn new() -> Self {
        Self::with_schedule(schedule())
    }

    pub fn with_schedule(schedule: NoiseSchedule) -> Self {
        Self {
            means: [[-0.5, -0.4], [0.4, 0.5]],
            weights: [0.3, 0.7],
            std: 0.1,
            schedule,
        }
    }

    /// `p(k | z)` for `z = x0 + noise` of variance `var - std^2` per component.
    pub fn responsibilities(&self, z: [f64; 2], var: f64) -> Vec<f64> {
        let logits: Vec<f64> = self
            .means
            .iter()
            .zip(self.weights)
            .map(|(mu, w)| w.ln() - ((z[0] - mu[0]).powi(2) + (z[1] - mu[1]).powi(2)) / (2.0 * var))
            .collect();
        let top = logits.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = logits.iter().map(|l| (l - top).exp()).collect();
        let total: f64 = e.iter().sum();
        e.iter().map(|v| v / total).collect()
    }

    pub fn mean_and_cov(&self) -> ([f64; 2], [[f64; 2]; 2]) {
        let mut mean = [0.0; 2];
        let mut second = [[0.0; 2]; 2];
        for (mu, w) in self.means.iter().zip(self.weights) {
            for i in 0..2 {
                mean[i] += w * mu[i];
                for j in 0..2 {
                    let var = if i == j { self.std * self.std } else { 0.0 };
                    second[i][j] += w * (var + mu[i] * mu[j]);
                }
            }
        }
        let cov = [0, 1].map(|i| [0, 1].map(|j| second[i][j] - mean[i] * mean[j]));
        (mean, cov)
    }
}

impl Denoiser for Mixture {
    fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// `E[x0 | x_t]`; at `abar = 0` the posterior is the prior, whose mean it returns.
    fn denoise(&self, x: Tensor<4>, t: usize) -> Denoised {
        self.posterior_mean(x, t, None).into()
    }
}

impl Mixture {
    /// `E[x0 | x_t]` under the whole mixture (`class = None`) or under one component, per row
    /// (`class = Some(labels)`: row `i` of component `labels[i]`, the exact class-conditional
    /// denoiser `mu_y + std^2 / var (z - mu_y)`).
    pub fn posterior_mean(&self, x: Tensor<4>, t: usize, class: Option<&[usize]>) -> Tensor<4> {
        let device = x.device();
        let shape = x.dims();
        let ab = self.schedule.alpha_bar(Some(t));
        let values = x.into_data().try_into_vec::<f32>().unwrap();
        let mut x0 = Vec::with_capacity(values.len());
        for (row, pair) in values.chunks_exact(2).enumerate() {
            let weights = match class {
                Some(labels) => {
                    let mut w = vec![0.0; self.means.len()];
                    w[labels[row]] = 1.0;
                    w
                }
                None => self.weights.to_vec(),
            };
            if ab == 0.0 {
                for i in 0..2 {
                    let m: f64 = self
                        .means
                        .iter()
                        .zip(&weights)
                        .map(|(mu, w)| w * mu[i])
                        .sum();
                    x0.push(m as f32);
                }
                continue;
            }
            let var = self.std * self.std + (1.0 - ab) / ab;
            let z = [pair[0] as f64 / ab.sqrt(), pair[1] as f64 / ab.sqrt()];
            let r = match class {
                Some(_) => weights,
                None => self.responsibilities(z, var),
            };
            for (i, zi) in z.iter().enumerate() {
                let d: f64 = self
                    .means
                    .iter()
                    .zip(&r)
                    .map(|(mu, rk)| rk * (mu[i] + self.std.powi(2) / var * (zi - mu[i])))
                    .sum();
                x0.push(d as f32);
            }
        }
        Tensor::from_data(TensorData::new(x0, shape), &device)
    }
}

/// A clean-image prediction at `x` reported as a network of the schedule's prediction type
/// would report it (noise, velocity or clean image).
pub fn as_output(s: &NoiseSchedule, x0: Tensor<4>, x: Tensor<4>, t: usize) -> Tensor<4> {
    let ab = s.alpha_bar(Some(t));
    match s.prediction() {
        Prediction::Epsilon => s.eps_from_x0(x, x0, t),
        Prediction::V => {
            let eps = s.eps_from_x0(x, x0.clone(), t);
            eps.mul_scalar(ab.sqrt()) - x0.mul_scalar((1.0 - ab).sqrt())
        }
        Prediction::X0 => x0,
    }
}

/// The mixture as a class-conditional network: the conditional branch is component
/// `labels[i]` of each row (exactly), the unconditional branch the whole mixture, both
/// reported in the schedule's parameterisation. With `blind`, the conditional branch is the
/// whole mixture too: a model that ignores its class.
pub struct MixtureBranches<'a> {
    pub mixture: &'a Mixture,
    pub labels: Vec<usize>,
    pub blind: bool,
}

impl Branches for MixtureBranches<'_> {
    fn schedule(&self) -> &NoiseSchedule {
        &self.mixture.schedule
    }
    fn cond(&self, x: Tensor<4>, t: usize) -> Tensor<4> {
        let class = (!self.blind).then_some(&self.labels[..]);
        let x0 = self.mixture.posterior_mean(x.clone(), t, class);
        as_output(&self.mixture.schedule, x0, x, t)
    }
    fn uncond(&self, x: Tensor<4>, t: usize) -> Tensor<4> {
        let x0 = self.mixture.posterior_mean(x.clone(), t, None);
        as_output(&self.mixture.schedule, x0, x, t)
    }
    fn both(&self, x: Tensor<4>, t: usize) -> (Tensor<4>, Tensor<4>) {
        (self.cond(x.clone(), t), self.uncond(x, t))
    }
}

/// The exact noisy classifier of the mixture (a class per component): `p(y | x_t)` is the
/// responsibility of component `y` for `z = x / sqrt(abar)`, whose gradient in `x` is
/// `(sum_k r_k (z - mu_k) - (z - mu_y)) / (var sqrt(abar))`.
impl NoisyClassifier for Mixture {
    fn grad_log_prob(&self, x: Tensor<4>, t: usize, labels: &[usize]) -> Tensor<4> {
        let device = x.device();
        let shape = x.dims();
        let ab = self.schedule.alpha_bar(Some(t));
        let var = self.std * self.std + (1.0 - ab) / ab;
        let values = x.into_data().try_into_vec::<f32>().unwrap();
        let mut grad = Vec::with_capacity(values.len());
        for (pair, &y) in values.chunks_exact(2).zip(labels) {
            let z = [pair[0] as f64 / ab.sqrt(), pair[1] as f64 / ab.sqrt()];
            let r = self.responsibilities(z, var);
            for (i, zi) in z.iter().enumerate() {
                let mixed: f64 = (0..2).map(|k| r[k] * (zi - self.means[k][i])).sum();
                let g = (mixed - (zi - self.means[y][i])) / (var * ab.sqrt());
                grad.push(g as f32);
            }
        }
        Tensor::from_data(TensorData::new(grad, shape), &device)
    }
}

/// The mixture's exact denoiser as a network trained for another parameterisation would be
/// used: it reports its output in the schedule's prediction type (v or x0), which is turned
/// back into the clean image by the schedule's own conversion, as for the UNet.
pub struct Reparameterised<'a>(pub &'a Mixture);

impl Denoiser for Reparameterised<'_> {
    fn schedule(&self) -> &NoiseSchedule {
        &self.0.schedule
    }
    fn denoise(&self, x: Tensor<4>, t: usize) -> Denoised {
        let s = &self.0.schedule;
        let x0 = self.0.denoise(x.clone(), t).x0;
        let output = as_output(s, x0, x.clone(), t);
        s.output_to_x0(output, x, t).into()
    }
}

/// Sample mean, covariance and the fraction of samples nearer the second mode.
pub fn moments(samples: &[f32], mixture: &Mixture) -> ([f64; 2], [[f64; 2]; 2], f64) {
    let n = samples.len() / 2;
    let pts: Vec<[f64; 2]> = samples
        .chunks_exact(2)
        .map(|p| [p[0] as f64, p[1] as f64])
        .collect();
    let mean = [0, 1].map(|i| pts.iter().map(|p| p[i]).sum::<f64>() / n as f64);
    let cov = [0, 1].map(|i| {
        [0, 1].map(|j| {
            pts.iter()
                .map(|p| (p[i] - mean[i]) * (p[j] - mean[j]))
                .sum::<f64>()
                / (n - 1) as f64
        })
    });
    let dist = |p: &[f64; 2], m: &[f64; 2]| (p[0] - m[0]).powi(2) + (p[1] - m[1]).powi(2);
    let second = pts
        .iter()
        .filter(|p| dist(p, &mixture.means[1]) < dist(p, &mixture.means[0]))
        .count() as f64
        / n as f64;
    (mean, cov, second)
}

/// The largest errors of `samples` against the mixture: (mean, covariance, mode weight).
pub fn mixture_errors(samples: &[f32], mixture: &Mixture) -> (f64, f64, f64) {
    let (true_mean, true_cov) = mixture.mean_and_cov();
    let (mean, cov, second) = moments(samples, mixture);
    let mean_err = (0..2)
        .map(|i| (mean[i] - true_mean[i]).abs())
        .fold(0.0, f64::max);
    let cov_err = (0..4)
        .map(|k| (cov[k / 2][k % 2] - true_cov[k / 2][k % 2]).abs())
        .fold(0.0, f64::max);
    (mean_err, cov_err, (second - mixture.weights[1]).abs())
}

/// Mean and covariance within 0.02 of the mixture's, mode weights within 0.025.
pub fn assert_lands_on_mixture(samples: &[f32], mixture: &Mixture, what: &str) {
    let (mean_err, cov_err, weight_err) = mixture_errors(samples, mixture);
    assert!(
        mean_err < 0.02 && cov_err < 0.02 && weight_err < 0.025,
        "{what}: mean err {mean_err:.4}, cov err {cov_err:.4}, mode weight err {weight_err:.4}"
    );
}
