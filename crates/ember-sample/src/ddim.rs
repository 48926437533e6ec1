//! DDIM sampling (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12), with
//! `eta` interpolating between deterministic DDIM (0) and DDPM-like ancestral steps (1).

use crate::guidance::EpsModel;
use crate::samplers::visited_timesteps;
use burn::prelude::*;
use ember_config::TimestepSpacing;
use ember_model::NoiseSchedule;
use ember_model::rng::{Rng, Stream};

/// Where a sampler's random numbers come from, so tests can make them deterministic.
pub trait NoiseSource {
    /// Standard normal noise of `shape`.
    fn normal(&mut self, shape: [usize; 4], device: &Device) -> Tensor<4>;
}

/// Noise drawn from Ember's seeded host streams: draw `k` under `seed` is always the same.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    seed: u64,
    draws: u64,
}

impl SeededNoise {
    pub fn new(seed: u64) -> Self {
        Self { seed, draws: 0 }
    }
}

impl NoiseSource for SeededNoise {
    fn normal(&mut self, shape: [usize; 4], device: &Device) -> Tensor<4> {
        let stream = if self.draws == 0 {
            Stream::SamplerInit
        } else {
            Stream::SamplerStep
        };
        let n = shape.iter().product();
        let values = Rng::for_stream(self.seed, stream, self.draws).normals(n);
        self.draws += 1;
        Tensor::from_data(TensorData::new(values, shape), device)
    }
}

/// Options shared by every sampler.
#[derive(Debug, Clone, Copy)]
pub struct SamplerOptions {
    /// Denoising steps (the timesteps visited; see [`crate::samplers::timesteps`]).
    pub steps: usize,
    /// DDIM's stochasticity (other samplers ignore it).
    pub eta: f64,
    pub spacing: TimestepSpacing,
    /// img2img strength: the fraction of the steps that run (the rest are skipped, and the
    /// sampler starts from a noised image at the first step that runs); 1 = from pure noise.
    pub strength: f64,
}

impl SamplerOptions {
    /// `steps` with trailing spacing and eta 0.
    pub fn steps(steps: usize) -> Self {
        Self {
            steps,
            eta: 0.0,
            spacing: TimestepSpacing::Trailing,
            strength: 1.0,
        }
    }
}

/// Runs DDIM from `x_t` (pure noise at T) down to a clean sample in [-1, 1].
///
/// # Shapes
/// - x_t: `[batch, ch, h, w]` -> `[batch, ch, h, w]`
pub fn ddim(
    model: &dyn EpsModel,
    schedule: &NoiseSchedule,
    x_t: Tensor<4>,
    options: SamplerOptions,
    noise: &mut dyn NoiseSource,
) -> Tensor<4> {
    let device = x_t.device();
    let shape = x_t.dims();
    let ts = visited_timesteps(schedule, options);
    let mut x = x_t;
    for (i, &t) in ts.iter().enumerate() {
        let prev = ts.get(i + 1).copied();
        let ab_t = schedule.alpha_bar(Some(t));
        let ab_prev = schedule.alpha_bar(prev);

        // 1. predict the noise and the clean image it implies; clip the image to the data range
        //    and re-derive the noise from it so the two stay consistent.
        let x0 = model.x0(x.clone(), t, schedule).clamp(-1.0, 1.0);
        let eps = crate::guidance::eps_from_x0(x, x0.clone(), ab_t);

        // 2. step to the previous timestep (eq. 12), adding sigma-scaled noise when eta > 0.
        let sigma = options.eta * ((1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev)).sqrt();
        let dir = (1.0 - ab_prev - sigma * sigma).max(0.0).sqrt();
        x = x0.mul_scalar(ab_prev.sqrt()) + eps.mul_scalar(dir);
        if sigma > 0.0 {
            x = x + noise.normal(shape, &device).mul_scalar(sigma);
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samplers::timesteps;
    use ember_config::DiffusionConfig;

    /// A fixed, input-dependent "model" so the tests need no training.
    struct Shrink;
    impl EpsModel for Shrink {
        fn eps(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
            x.mul_scalar(0.5 + timestep as f64 / 4000.0)
        }
    }

    fn schedule() -> NoiseSchedule {
        NoiseSchedule::new(&DiffusionConfig::default())
    }

    #[test]
    fn trailing_timesteps_start_at_the_end_and_descend() {
        let s = schedule();
        assert_eq!(
            timesteps(&s, 4, TimestepSpacing::Trailing),
            vec![999, 749, 499, 249]
        );
        let ten = NoiseSchedule::new(&DiffusionConfig {
            timesteps: 10,
            ..DiffusionConfig::default()
        });
        let all: Vec<usize> = (0..10).rev().collect();
        assert_eq!(timesteps(&ten, 10, TimestepSpacing::Trailing), all);
    }

    #[test]
    fn eta_zero_with_fixed_seed_is_deterministic() {
        let device = Device::flex();
        let run = |seed| {
            let mut noise = SeededNoise::new(seed);
            let x = noise.normal([2, 1, 4, 4], &device);
            let opts = SamplerOptions::steps(10);
            ddim(&Shrink, &schedule(), x, opts, &mut noise)
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
        };
        let (a, b, c) = (run(3), run(3), run(4));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|v| v.is_finite() && v.abs() <= 1.0 + 1e-5));
    }

    #[test]
    fn eta_one_draws_fresh_noise_but_is_seeded() {
        let device = Device::flex();
        let run = |eta| {
            let mut noise = SeededNoise::new(5);
            let x = noise.normal([1, 1, 4, 4], &device);
            let opts = SamplerOptions {
                eta,
                ..SamplerOptions::steps(5)
            };
            ddim(&Shrink, &schedule(), x, opts, &mut noise)
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
        };
        assert_eq!(run(1.0), run(1.0));
        assert_ne!(run(1.0), run(0.0));
    }

    #[test]
    fn perfect_denoiser_recovers_the_clean_image() {
        // If the model knows x0, DDIM with eta 0 lands exactly on it.
        struct Oracle(Tensor<4>, NoiseSchedule);
        impl EpsModel for Oracle {
            fn eps(&self, x: Tensor<4>, t: usize) -> Tensor<4> {
                let ab = self.1.alpha_bar(Some(t));
                (x - self.0.clone().mul_scalar(ab.sqrt())).div_scalar((1.0 - ab).sqrt())
            }
        }
        let device = Device::flex();
        let x0 = Tensor::<4>::from_floats([[[[0.5, -0.25], [0.75, -1.0]]]], &device);
        let mut noise = SeededNoise::new(1);
        let x_t = noise.normal([1, 1, 2, 2], &device);
        let oracle = Oracle(x0.clone(), schedule());
        let opts = SamplerOptions::steps(20);
        let out = ddim(&oracle, &schedule(), x_t, opts, &mut noise);
        let err: f32 = (out - x0).abs().max().into_scalar();
        assert!(err < 1e-4, "{err}");
    }
}
