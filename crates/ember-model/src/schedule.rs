//! The noise schedule shared by training and sampling (Ho et al. 2020, "Denoising Diffusion
//! Probabilistic Models", eq. 4: `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`).
//!
//! Timestep indices run `0..T`; index `t` has `alphas_cumprod[t] = prod_{s<=t} (1 - beta_s)`.

use burn::prelude::*;
use ember_config::{BetaSchedule, DiffusionConfig, Prediction};

/// Betas and their cumulative products, in f64 on the host, and what the network predicts.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    prediction: Prediction,
}

impl NoiseSchedule {
    pub fn new(config: &DiffusionConfig) -> Self {
        let t = config.timesteps;
        let betas: Vec<f64> = match config.beta_schedule {
            BetaSchedule::Linear => (0..t)
                .map(|i| {
                    config.beta_start
                        + (config.beta_end - config.beta_start) * i as f64 / (t - 1) as f64
                })
                .collect(),
            // Nichol & Dhariwal 2021, eq. 17, with s = 0.008 and betas clipped at 0.999.
            BetaSchedule::Cosine => {
                let s = 0.008;
                let f = |i: usize| {
                    ((i as f64 / t as f64 + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..t).map(|i| (1.0 - f(i + 1) / f(i)).min(0.999)).collect()
            }
        };
        let mut alphas_cumprod: Vec<f64> = betas
            .iter()
            .scan(1.0, |acc, b| {
                *acc *= 1.0 - b;
                Some(*acc)
            })
            .collect();
        let mut betas = betas;
        if config.zero_terminal_snr {
            // Lin et al. 2023, Algorithm 1: shift and scale sqrt(abar) so that its first value
            // is kept and its last becomes 0, then recover the betas.
            let sqrt: Vec<f64> = alphas_cumprod.iter().map(|a| a.sqrt()).collect();
            let (first, last) = (sqrt[0], sqrt[t - 1]);
            alphas_cumprod = sqrt
                .iter()
                .map(|s| ((s - last) * first / (first - last)).powi(2))
                .collect();
            betas = (0..t)
                .map(|i| {
                    let previous = if i == 0 { 1.0 } else { alphas_cumprod[i - 1] };
                    1.0 - alphas_cumprod[i] / previous
                })
                .collect();
        }
        Self {
            betas,
            alphas_cumprod,
            prediction: config.prediction,
        }
    }

    /// What the network predicts.
    pub fn prediction(&self) -> Prediction {
        self.prediction
    }

    /// Signal-to-noise ratio `abar / (1 - abar)` of timestep `t`.
    pub fn snr(&self, t: usize) -> f64 {
        let ab = self.alphas_cumprod[t];
        ab / (1.0 - ab)
    }

    /// The training target of the network for `x0` noised with `noise` at `timesteps`: the noise,
    /// the velocity `sqrt(abar) eps - sqrt(1 - abar) x0`, or `x0`.
    ///
    /// # Shapes
    /// - x0, noise: `[batch, ch, h, w]`; `timesteps.len() == batch`
    pub fn target(&self, x0: Tensor<4>, noise: Tensor<4>, timesteps: &[usize]) -> Tensor<4> {
        match self.prediction {
            Prediction::Epsilon => noise,
            Prediction::X0 => x0,
            Prediction::V => {
                let (signal, sigma) = self.coefficients(timesteps, &x0.device());
                noise * signal - x0 * sigma
            }
        }
    }

    /// The noise implied by a network output at `x` (timestep `t`): the inverse of [`target`]
    /// given `x_t = sqrt(abar) x0 + sqrt(1 - abar) eps`.
    ///
    /// [`target`]: NoiseSchedule::target
    pub fn output_to_eps(&self, output: Tensor<4>, x: Tensor<4>, t: usize) -> Tensor<4> {
        let ab = self.alphas_cumprod[t];
        match self.prediction {
            Prediction::Epsilon => output,
            // eps = sqrt(abar) v + sqrt(1 - abar) x
            Prediction::V => output.mul_scalar(ab.sqrt()) + x.mul_scalar((1.0 - ab).sqrt()),
            Prediction::X0 => self.eps_from_x0(x, output, t),
        }
    }

    /// The noise level `sigma = sqrt((1 - abar) / abar)` of timestep `t` in the variance-
    /// exploding view `x / sqrt(abar) = x0 + sigma eps`; 0 for the clean image (`None`),
    /// infinite at zero terminal SNR.
    pub fn sigma(&self, t: Option<usize>) -> f64 {
        let ab = self.alpha_bar(t);
        ((1.0 - ab) / ab).sqrt()
    }

    /// The first timestep whose [`sigma`](NoiseSchedule::sigma) is at least `sigma` (the last
    /// timestep when none is): where a noise level drawn in the continuous view lands on this
    /// schedule. `sigma_t >= sigma` is `abar_t <= 1 / (1 + sigma^2)`, tested without the square
    /// root so that zero terminal SNR (`abar = 0`, infinite sigma) needs no special case.
    pub fn timestep_at_sigma(&self, sigma: f64) -> usize {
        let threshold = 1.0 / (1.0 + sigma * sigma);
        let t = self.alphas_cumprod.partition_point(|&ab| ab > threshold);
        t.min(self.len() - 1)
    }

    /// The noise implied by a clean-image prediction at `x`: `(x - sqrt(abar) x0) / sqrt(1 - abar)`.
    pub fn eps_from_x0(&self, x: Tensor<4>, x0: Tensor<4>, t: usize) -> Tensor<4> {
        let ab = self.alphas_cumprod[t];
        (x - x0.mul_scalar(ab.sqrt())).div_scalar((1.0 - ab).sqrt())
    }

    /// The clean image implied by a noise prediction at `x`: `(x - sqrt(1 - abar) eps) / sqrt(abar)`
    /// (undefined at `abar = 0`).
    pub fn x0_from_eps(&self, x: Tensor<4>, eps: Tensor<4>, t: usize) -> Tensor<4> {
        let ab = self.alphas_cumprod[t];
        (x - eps.mul_scalar((1.0 - ab).sqrt())).div_scalar(ab.sqrt())
    }

    /// The clean image implied by a network output at `x` (timestep `t`), computed without
    /// dividing by `sqrt(abar)` for v and x0 prediction (so it holds at `abar = 0` too).
    pub fn output_to_x0(&self, output: Tensor<4>, x: Tensor<4>, t: usize) -> Tensor<4> {
        let ab = self.alphas_cumprod[t];
        match self.prediction {
            Prediction::X0 => output,
            // x0 = sqrt(abar) x - sqrt(1 - abar) v
            Prediction::V => x.mul_scalar(ab.sqrt()) - output.mul_scalar((1.0 - ab).sqrt()),
            Prediction::Epsilon => self.x0_from_eps(x, output, t),
        }
    }

    /// `sqrt(abar_t)` and `sqrt(1 - abar_t)` per row, as `[batch, 1, 1, 1]` tensors.
    fn coefficients(&self, timesteps: &[usize], device: &Device) -> (Tensor<4>, Tensor<4>) {
        let b = timesteps.len();
        let (signal, sigma): (Vec<f32>, Vec<f32>) = timesteps
            .iter()
            .map(|&t| {
                let ab = self.alphas_cumprod[t];
                (ab.sqrt() as f32, (1.0 - ab).sqrt() as f32)
            })
            .unzip();
        let column = |v: Vec<f32>| {
            Tensor::<1>::from_data(TensorData::new(v, [b]), device).reshape([b, 1, 1, 1])
        };
        (column(signal), column(sigma))
    }

    /// Number of training timesteps T.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// `abar_t`, with `abar_{-1} = 1` (the clean image) for `t = None`.
    pub fn alpha_bar(&self, t: Option<usize>) -> f64 {
        t.map_or(1.0, |t| self.alphas_cumprod[t])
    }

    /// Forward noising `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`, one timestep per row.
    ///
    /// # Shapes
    /// - x0, noise: `[batch, ch, h, w]`; `timesteps.len() == batch`
    pub fn add_noise(&self, x0: Tensor<4>, noise: Tensor<4>, timesteps: &[usize]) -> Tensor<4> {
        let (signal, sigma) = self.coefficients(timesteps, &x0.device());
        x0 * signal + noise * sigma // [batch, ch, h, w]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(kind: BetaSchedule) -> NoiseSchedule {
        NoiseSchedule::new(&DiffusionConfig {
            timesteps: 1000,
            beta_schedule: kind,
            ..DiffusionConfig::default()
        })
    }

    #[test]
    fn alphas_cumprod_decrease_strictly_and_stay_in_unit_interval() {
        for kind in [BetaSchedule::Linear, BetaSchedule::Cosine] {
            let s = schedule(kind);
            let ab = s.alphas_cumprod();
            assert_eq!(ab.len(), 1000);
            assert!(
                ab.windows(2).all(|w| w[1] < w[0]),
                "{kind:?} not decreasing"
            );
            assert!(
                ab.iter().all(|&a| a > 0.0 && a < 1.0),
                "{kind:?} out of (0, 1)"
            );
        }
    }

    #[test]
    fn linear_endpoints_match_ddpm() {
        let s = schedule(BetaSchedule::Linear);
        assert!((s.betas()[0] - 1e-4).abs() < 1e-12);
        assert!((s.betas()[999] - 0.02).abs() < 1e-12);
        assert!((s.alphas_cumprod()[0] - (1.0 - 1e-4)).abs() < 1e-12);
        // DDPM's linear schedule ends almost at pure noise: abar_T ~ 4e-5.
        assert!(s.alphas_cumprod()[999] < 1e-4);
    }

    #[test]
    fn cosine_starts_near_one_and_ends_near_zero() {
        let s = schedule(BetaSchedule::Cosine);
        assert!(s.alphas_cumprod()[0] > 0.999);
        assert!(s.alphas_cumprod()[999] < 1e-6);
        assert!(s.betas().iter().all(|&b| b <= 0.999));
    }

    #[test]
    fn zero_terminal_snr_ends_at_pure_noise_and_keeps_the_start() {
        let plain = schedule(BetaSchedule::Linear);
        let zero = NoiseSchedule::new(&DiffusionConfig {
            zero_terminal_snr: true,
            prediction: Prediction::V,
            ..DiffusionConfig::default()
        });
        let (a, b) = (plain.alphas_cumprod(), zero.alphas_cumprod());
        assert!((a[0] - b[0]).abs() < 1e-12);
        assert_eq!(b[999], 0.0);
        assert!(b.windows(2).all(|w| w[1] < w[0]));
        assert_eq!(zero.betas()[999], 1.0);
        // At abar = 0, v prediction still gives the clean image (x0 = -v) and the noise (= x).
        let device = Device::flex();
        let x = Tensor::<4>::from_floats([[[[0.3, -1.2]]]], &device);
        let v = Tensor::<4>::from_floats([[[[-0.5, 0.25]]]], &device);
        let x0: Vec<f32> = zero
            .output_to_x0(v.clone(), x.clone(), 999)
            .into_data()
            .try_to_vec()
            .unwrap();
        assert_eq!(x0, vec![0.5, -0.25]);
        let eps: Vec<f32> = zero
            .output_to_eps(v, x, 999)
            .into_data()
            .try_to_vec()
            .unwrap();
        assert_eq!(eps, vec![0.3, -1.2]);
    }

    #[test]
    fn timestep_at_sigma_is_the_first_timestep_at_least_that_noisy() {
        for zero_terminal_snr in [false, true] {
            let s = NoiseSchedule::new(&DiffusionConfig {
                zero_terminal_snr,
                prediction: Prediction::V,
                ..DiffusionConfig::default()
            });
            for t in [0, 1, 137, 500, 998] {
                // A hair below sigma_t lands on t; a hair above needs the next timestep.
                let sigma = s.sigma(Some(t));
                assert_eq!(
                    s.timestep_at_sigma(sigma * (1.0 - 1e-9)),
                    t,
                    "{zero_terminal_snr}"
                );
                assert_eq!(s.timestep_at_sigma(sigma * (1.0 + 1e-6)), t + 1);
            }
            assert_eq!(s.timestep_at_sigma(0.0), 0);
            assert_eq!(s.timestep_at_sigma(1e30), 999);
            assert_eq!(s.timestep_at_sigma(f64::INFINITY), 999);
            // Monotone: more noise never maps to an earlier timestep.
            let ts: Vec<usize> = (-60..60)
                .map(|i| s.timestep_at_sigma((i as f64 / 10.0).exp()))
                .collect();
            assert!(ts.windows(2).all(|w| w[0] <= w[1]));
        }
    }

    #[test]
    fn every_prediction_round_trips_to_the_noise() {
        let device = Device::flex();
        let x0 = Tensor::<4>::from_floats([[[[0.5, -0.25]]], [[[0.9, 0.1]]]], &device);
        let noise = Tensor::<4>::from_floats([[[[1.5, -0.7]]], [[[-0.2, 0.3]]]], &device);
        for prediction in [Prediction::Epsilon, Prediction::V, Prediction::X0] {
            let s = NoiseSchedule::new(&DiffusionConfig {
                prediction,
                ..DiffusionConfig::default()
            });
            for t in [0, 400, 999] {
                let x_t = s.add_noise(x0.clone(), noise.clone(), &[t, t]);
                let target = s.target(x0.clone(), noise.clone(), &[t, t]);
                let eps = s.output_to_eps(target, x_t, t);
                let err: f32 = (eps - noise.clone()).abs().max().into_scalar();
                // x0 prediction divides by sqrt(1 - abar), about 0.01 at t = 0.
                assert!(err < 2e-3, "{prediction:?} t={t}: {err}");
            }
        }
        assert!(schedule(BetaSchedule::Linear).snr(0) > 1e3);
    }

    #[test]
    fn add_noise_mixes_with_the_schedule_coefficients() {
        let s = schedule(BetaSchedule::Linear);
        let device = Device::flex();
        let x0 = Tensor::<4>::ones([2, 1, 2, 2], &device);
        let noise = Tensor::<4>::ones([2, 1, 2, 2], &device).mul_scalar(2.0);
        let xt = s
            .add_noise(x0, noise, &[0, 999])
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        for (row, t) in [(0, 0usize), (1, 999)] {
            let ab = s.alphas_cumprod()[t];
            let expected = (ab.sqrt() + 2.0 * (1.0 - ab).sqrt()) as f32;
            assert!((xt[row * 4] - expected).abs() < 1e-5);
        }
    }
}
