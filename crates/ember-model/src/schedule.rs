//! The noise schedule shared by training and sampling (Ho et al. 2020, "Denoising Diffusion
//! Probabilistic Models", eq. 4: `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`).
//!
//! Timestep indices run `0..T`; index `t` has `alphas_cumprod[t] = prod_{s<=t} (1 - beta_s)`.

use burn::prelude::*;
use ember_config::{BetaSchedule, DiffusionConfig};

/// Betas and their cumulative products, in f64 on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
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
        let alphas_cumprod = betas
            .iter()
            .scan(1.0, |acc, b| {
                *acc *= 1.0 - b;
                Some(*acc)
            })
            .collect();
        Self {
            betas,
            alphas_cumprod,
        }
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
        let device = x0.device();
        let b = timesteps.len();
        let (signal, sigma): (Vec<f32>, Vec<f32>) = timesteps
            .iter()
            .map(|&t| {
                let ab = self.alphas_cumprod[t];
                (ab.sqrt() as f32, (1.0 - ab).sqrt() as f32)
            })
            .unzip();
        let signal =
            Tensor::<1>::from_data(TensorData::new(signal, [b]), &device).reshape([b, 1, 1, 1]);
        let sigma =
            Tensor::<1>::from_data(TensorData::new(sigma, [b]), &device).reshape([b, 1, 1, 1]);
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
