//! The samplers besides DDIM (see [`crate::ddim`]): DDPM ancestral sampling, DPM-Solver++(2M),
//! and Karras et al.'s Euler and Heun steps. All share one signature: a denoiser
//! ([`EpsModel`], possibly wrapped in guidance), the schedule, the initial noise at the first
//! timestep, the options and a noise source; all finish at the clean image.
//!
//! The ODE samplers work in the variance-exploding view of the same process:
//! `z = x / sqrt(abar) = x0 + sigma * eps` with `sigma = sqrt((1 - abar) / abar)`, and the
//! denoised image `D(z, sigma)` is the model's predicted `x0` (clipped to the data range [-1, 1],
//! as DDIM does). They visit the schedule's discrete noise levels, so the model is only ever
//! asked about timesteps it was trained on.

use crate::ddim::{NoiseSource, SamplerOptions, ddim};
use crate::guidance::EpsModel;
use burn::prelude::*;
use ember_config::{SamplerKind, TimestepSpacing};
use ember_model::NoiseSchedule;

/// Runs the sampler `kind` from `x_t` (noise at the first timestep of the spacing).
///
/// # Shapes
/// - x_t: `[batch, ch, h, w]` -> `[batch, ch, h, w]`
pub fn sample(
    kind: SamplerKind,
    model: &dyn EpsModel,
    schedule: &NoiseSchedule,
    x_t: Tensor<4>,
    options: SamplerOptions,
    noise: &mut dyn NoiseSource,
) -> Tensor<4> {
    match kind {
        SamplerKind::Ddim => ddim(model, schedule, x_t, options, noise),
        SamplerKind::Ddpm => ddpm(model, schedule, x_t, options, noise),
        SamplerKind::DpmppTwoM => dpmpp_2m(model, schedule, x_t, options),
        SamplerKind::Euler => euler(model, schedule, x_t, options),
        SamplerKind::Heun => heun(model, schedule, x_t, options),
    }
}

/// `sigma = sqrt((1 - abar) / abar)` of a timestep; 0 for the clean image (`None`).
pub fn sigma(schedule: &NoiseSchedule, t: Option<usize>) -> f64 {
    let ab = schedule.alpha_bar(t);
    ((1.0 - ab) / ab).sqrt()
}

/// The timesteps a sampler visits, from the noisiest down, all distinct.
pub fn timesteps(schedule: &NoiseSchedule, steps: usize, spacing: TimestepSpacing) -> Vec<usize> {
    let t_max = schedule.len();
    let steps = steps.clamp(1, t_max);
    match spacing {
        TimestepSpacing::Trailing => (0..steps)
            .map(|i| (t_max * (steps - i)).div_ceil(steps) - 1)
            .collect(),
        TimestepSpacing::Leading => (0..steps).rev().map(|i| i * (t_max / steps)).collect(),
        TimestepSpacing::Linspace => {
            let mut ts: Vec<usize> = (0..steps)
                .map(|i| {
                    let f = if steps == 1 {
                        1.0
                    } else {
                        1.0 - i as f64 / (steps - 1) as f64
                    };
                    (f * (t_max - 1) as f64).round() as usize
                })
                .collect();
            ts.dedup();
            ts
        }
        TimestepSpacing::Karras => {
            let rho = 7.0;
            // The largest finite noise level (a zero-terminal-SNR schedule's last is infinite).
            let top = (0..t_max)
                .rev()
                .find(|&t| sigma(schedule, Some(t)).is_finite())
                .expect("abar_0 > 0");
            let (lo, hi) = (sigma(schedule, Some(0)), sigma(schedule, Some(top)));
            let log_sigmas: Vec<f64> = (0..t_max).map(|t| sigma(schedule, Some(t)).ln()).collect();
            let mut ts: Vec<usize> = (0..steps)
                .map(|i| {
                    let f = if steps == 1 {
                        0.0
                    } else {
                        i as f64 / (steps - 1) as f64
                    };
                    let s = (hi.powf(1.0 / rho) + f * (lo.powf(1.0 / rho) - hi.powf(1.0 / rho)))
                        .powf(rho);
                    let target = s.ln();
                    (0..t_max)
                        .min_by(|&a, &b| {
                            (log_sigmas[a] - target)
                                .abs()
                                .total_cmp(&(log_sigmas[b] - target).abs())
                        })
                        .expect("a non-empty schedule")
                })
                .collect();
            ts.dedup();
            ts
        }
    }
}

/// The timesteps a sampler run visits: [`timesteps`] without the first `1 - strength` of them
/// (img2img), at least one.
pub fn visited_timesteps(schedule: &NoiseSchedule, options: SamplerOptions) -> Vec<usize> {
    let all = timesteps(schedule, options.steps, options.spacing);
    let run = ((all.len() as f64 * options.strength).round() as usize).clamp(1, all.len());
    all[all.len() - run..].to_vec()
}

/// The model's clean-image prediction at `x` (timestep `t`), clipped to [-1, 1].
fn denoise(model: &dyn EpsModel, schedule: &NoiseSchedule, x: Tensor<4>, t: usize) -> Tensor<4> {
    model.x0(x, t, schedule).clamp(-1.0, 1.0)
}

/// Where the ODE samplers start in `z = x / sqrt(abar)`, and the timesteps left. A first
/// timestep of zero terminal SNR (`abar = 0`, sigma infinite) is stepped exactly: in the limit
/// sigma -> infinity an Euler / DPM-Solver step lands on `x0 + sigma_next * eps`, with `eps = x`.
fn ode_start(
    model: &dyn EpsModel,
    schedule: &NoiseSchedule,
    x_t: Tensor<4>,
    ts: &[usize],
) -> (Tensor<4>, Vec<usize>) {
    let ab = schedule.alpha_bar(Some(ts[0]));
    if ab > 0.0 {
        return (x_t.div_scalar(ab.sqrt()), ts.to_vec());
    }
    let x0 = denoise(model, schedule, x_t.clone(), ts[0]);
    match ts.get(1) {
        Some(&next) => (
            x0 + x_t.mul_scalar(sigma(schedule, Some(next))),
            ts[1..].to_vec(),
        ),
        None => (x0, Vec::new()),
    }
}

/// DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) on a strided subset of timesteps:
/// each step draws `x_prev` from the posterior `q(x_prev | x_t, x0)` with the predicted `x0`.
/// That posterior is exactly DDIM's step with `eta = 1` (Song et al. 2021, eq. 16), so this is
/// [`ddim`] with `eta` fixed to 1.
pub fn ddpm(
    model: &dyn EpsModel,
    schedule: &NoiseSchedule,
    x_t: Tensor<4>,
    options: SamplerOptions,
    noise: &mut dyn NoiseSource,
) -> Tensor<4> {
    ddim(
        model,
        schedule,
        x_t,
        SamplerOptions {
            eta: 1.0,
            ..options
        },
        noise,
    )
}

/// Karras et al. 2022, Algorithm 1 without stochastic churn: Euler steps of
/// `dz/dsigma = (z - D(z, sigma)) / sigma`.
pub fn euler(
    model: &dyn EpsModel,
    schedule: &NoiseSchedule,
    x_t: Tensor<4>,
    options: SamplerOptions,
) -> Tensor<4> {
    ode_solve(model, schedule, x_t, options, false)
}

/// Karras et al. 2022, Algorithm 1 without churn: Heun's method (an Euler step, then the average
/// of the slopes at both ends), Euler for the last step to sigma = 0.
pub fn heun(
    model: &dyn EpsModel,
    schedule: &NoiseSchedule,
    x_t: Tensor<4>,
    options: SamplerOptions,
) -> Tensor<4> {
    ode_solve(model, schedule, x_t, options, true)
}

fn ode_solve(
    model: &dyn EpsModel,
    schedule: &NoiseSchedule,
    x_t: Tensor<4>,
    options: SamplerOptions,
    second_order: bool,
) -> Tensor<4> {
    let ts = visited_timesteps(schedule, options);
    let (mut z, ts) = ode_start(model, schedule, x_t, &ts);
    for (i, &t) in ts.iter().enumerate() {
        let next = ts.get(i + 1).copied();
        let (s, s_next) = (sigma(schedule, Some(t)), sigma(schedule, next));
        let x = z.clone().mul_scalar(schedule.alpha_bar(Some(t)).sqrt());
        let d = (z.clone() - denoise(model, schedule, x, t)).div_scalar(s);
        let z_euler = z.clone() + d.clone().mul_scalar(s_next - s);
        z = match next {
            Some(tn) if second_order => {
                let x_euler = z_euler.clone().mul_scalar(schedule.alpha_bar(next).sqrt());
                let d_next = (z_euler - denoise(model, schedule, x_euler, tn)).div_scalar(s_next);
                z + (d + d_next).mul_scalar((s_next - s) / 2.0)
            }
            _ => z_euler,
        };
    }
    z // sigma = 0: z is the clean image
}

/// DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): a multistep solver of the
/// data-prediction ODE in `lambda = -log sigma`, second order from the second step on, first
/// order for the first step and for the last step to sigma = 0.
pub fn dpmpp_2m(
    model: &dyn EpsModel,
    schedule: &NoiseSchedule,
    x_t: Tensor<4>,
    options: SamplerOptions,
) -> Tensor<4> {
    let ts = visited_timesteps(schedule, options);
    let (mut z, ts) = ode_start(model, schedule, x_t, &ts);
    // (previous x0 prediction, previous step size in lambda)
    let mut previous: Option<(Tensor<4>, f64)> = None;
    for (i, &t) in ts.iter().enumerate() {
        let next = ts.get(i + 1).copied();
        let (s, s_next) = (sigma(schedule, Some(t)), sigma(schedule, next));
        let x = z.clone().mul_scalar(schedule.alpha_bar(Some(t)).sqrt());
        let x0 = denoise(model, schedule, x, t);
        if next.is_none() {
            z = x0; // the exact first-order step to sigma = 0
            break;
        }
        let h = s.ln() - s_next.ln(); // lambda_next - lambda
        let d = match &previous {
            Some((x0_prev, h_prev)) => {
                let r = h_prev / h;
                x0.clone().mul_scalar(1.0 + 1.0 / (2.0 * r))
                    - x0_prev.clone().mul_scalar(1.0 / (2.0 * r))
            }
            None => x0.clone(),
        };
        // z_next = (sigma_next / sigma) z - (exp(-h) - 1) D
        z = z.mul_scalar(s_next / s) - d.mul_scalar((-h).exp_m1());
        previous = Some((x0, h));
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ddim::SeededNoise;
    use ember_config::DiffusionConfig;

    fn schedule() -> NoiseSchedule {
        NoiseSchedule::new(&DiffusionConfig::default())
    }

    #[test]
    fn spacings_descend_without_repeats_and_end_low() {
        let s = schedule();
        for spacing in [
            TimestepSpacing::Trailing,
            TimestepSpacing::Leading,
            TimestepSpacing::Linspace,
            TimestepSpacing::Karras,
        ] {
            let ts = timesteps(&s, 20, spacing);
            assert!(ts.windows(2).all(|w| w[0] > w[1]), "{spacing:?}: {ts:?}");
            assert!(ts.len() <= 20 && ts.len() >= 15, "{spacing:?}: {ts:?}");
            assert!(*ts.last().unwrap() <= 50, "{spacing:?}: {ts:?}");
        }
        assert_eq!(
            timesteps(&s, 4, TimestepSpacing::Trailing),
            [999, 749, 499, 249]
        );
        assert_eq!(
            timesteps(&s, 4, TimestepSpacing::Leading),
            [750, 500, 250, 0]
        );
        assert_eq!(
            timesteps(&s, 4, TimestepSpacing::Linspace),
            [999, 666, 333, 0]
        );
        let karras = timesteps(&s, 10, TimestepSpacing::Karras);
        assert_eq!((karras[0], *karras.last().unwrap()), (999, 0));
        // Karras spends more steps at low noise: its second-to-last step is far below the
        // second-to-last evenly spaced one (199 of 999).
        assert!(karras[karras.len() - 2] < 50, "{karras:?}");
    }

    /// A fixed "model" so the determinism tests need no training.
    struct Shrink;
    impl EpsModel for Shrink {
        fn eps(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
            x.mul_scalar(0.5 + timestep as f64 / 4000.0)
        }
    }

    #[test]
    fn every_sampler_is_reproducible_from_its_seed() {
        let device = Device::flex();
        for kind in SamplerKind::ALL {
            let run = |seed| {
                let mut noise = SeededNoise::new(seed);
                let x = noise.normal([2, 1, 4, 4], &device);
                let options = SamplerOptions::steps(8);
                sample(kind, &Shrink, &schedule(), x, options, &mut noise)
                    .into_data()
                    .try_into_vec::<f32>()
                    .unwrap()
            };
            let (a, b, c) = (run(1), run(1), run(2));
            assert_eq!(a, b, "{kind:?}");
            assert_ne!(a, c, "{kind:?}");
            assert!(a.iter().all(|v| v.is_finite()), "{kind:?}");
        }
    }

    /// The exact denoiser of a 2-D Gaussian mixture `sum_k w_k N(mu_k, std^2 I)`: under
    /// `z = x0 + sigma eps`, `E[x0 | z] = sum_k r_k(z) (mu_k + std^2 / (std^2 + sigma^2) (z - mu_k))`
    /// with responsibilities `r_k ~ w_k N(z; mu_k, (std^2 + sigma^2) I)`.
    struct Mixture {
        means: [[f64; 2]; 2],
        weights: [f64; 2],
        std: f64,
        schedule: NoiseSchedule,
    }

    impl Mixture {
        fn new() -> Self {
            Self {
                means: [[-0.5, -0.4], [0.4, 0.5]],
                weights: [0.3, 0.7],
                std: 0.1,
                schedule: schedule(),
            }
        }

        /// `p(k | z)` for `z = x0 + noise` of variance `var - std^2` per component.
        fn responsibilities(&self, z: [f64; 2], var: f64) -> Vec<f64> {
            let logits: Vec<f64> = self
                .means
                .iter()
                .zip(self.weights)
                .map(|(mu, w)| {
                    w.ln() - ((z[0] - mu[0]).powi(2) + (z[1] - mu[1]).powi(2)) / (2.0 * var)
                })
                .collect();
            let top = logits.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = logits.iter().map(|l| (l - top).exp()).collect();
            let total: f64 = e.iter().sum();
            e.iter().map(|v| v / total).collect()
        }

        fn mean_and_cov(&self) -> ([f64; 2], [[f64; 2]; 2]) {
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

    impl EpsModel for Mixture {
        fn eps(&self, x: Tensor<4>, t: usize) -> Tensor<4> {
            let ab = self.schedule.alpha_bar(Some(t));
            let x0 = self.x0(x.clone(), t, &self.schedule);
            crate::guidance::eps_from_x0(x, x0, ab)
        }

        /// `E[x0 | x_t]`; at `abar = 0` the posterior is the prior, whose mean it returns.
        fn x0(&self, x: Tensor<4>, t: usize, _: &NoiseSchedule) -> Tensor<4> {
            let device = x.device();
            let shape = x.dims();
            let ab = self.schedule.alpha_bar(Some(t));
            let values = x.into_data().try_into_vec::<f32>().unwrap();
            let mut x0 = Vec::with_capacity(values.len());
            for pair in values.chunks_exact(2) {
                if ab == 0.0 {
                    let (mean, _) = self.mean_and_cov();
                    x0.extend(mean.map(|m| m as f32));
                    continue;
                }
                let var = self.std * self.std + (1.0 - ab) / ab;
                let z = [pair[0] as f64 / ab.sqrt(), pair[1] as f64 / ab.sqrt()];
                let r = self.responsibilities(z, var);
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

    /// The mixture's exact denoiser reporting in another parameterisation (v or x0), as a network
    /// trained for it would.
    struct Reparameterised<'a>(&'a Mixture, NoiseSchedule);
    impl EpsModel for Reparameterised<'_> {
        fn eps(&self, x: Tensor<4>, t: usize) -> Tensor<4> {
            let ab = self.1.alpha_bar(Some(t));
            let x0 = self.0.x0(x.clone(), t, &self.1);
            let eps = crate::guidance::eps_from_x0(x, x0.clone(), ab);
            match self.1.prediction() {
                ember_config::Prediction::Epsilon => eps,
                ember_config::Prediction::V => {
                    eps.mul_scalar(ab.sqrt()) - x0.mul_scalar((1.0 - ab).sqrt())
                }
                ember_config::Prediction::X0 => x0,
            }
        }
    }

    #[test]
    fn v_and_x0_prediction_models_sample_the_same_distribution_through_output_to_eps() {
        use crate::guidance::OutputToEps;
        let device = Device::flex();
        let mixture = Mixture::new();
        for prediction in [ember_config::Prediction::V, ember_config::Prediction::X0] {
            let schedule = NoiseSchedule::new(&ember_config::DiffusionConfig {
                prediction,
                ..Default::default()
            });
            let model = Reparameterised(&mixture, schedule.clone());
            let denoiser = OutputToEps::new(&model, &schedule);
            let mut noise = SeededNoise::new(7);
            let x = noise.normal([4000, 2, 1, 1], &device);
            let options = SamplerOptions {
                spacing: TimestepSpacing::Karras,
                ..SamplerOptions::steps(20)
            };
            let out = sample(
                SamplerKind::DpmppTwoM,
                &denoiser,
                &schedule,
                x,
                options,
                &mut noise,
            );
            let values = out.into_data().try_into_vec::<f32>().unwrap();
            assert_lands_on_mixture(&values, &mixture, &format!("{prediction:?}"));
        }
    }

    /// The exact noisy classifier of the mixture (a class per component): `p(y | x_t)` is the
    /// responsibility of component `y` for `z = x / sqrt(abar)`, whose gradient in `x` is
    /// `(sum_k r_k (z - mu_k) - (z - mu_y)) / (var sqrt(abar))`.
    impl crate::guidance::NoisyClassifier for Mixture {
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

    /// Bayes' rule made exact: the unconditional mixture denoiser guided by the exact noisy
    /// classifier at scale 1 samples the chosen component, N(mu_y, std^2 I).
    #[test]
    fn classifier_guidance_at_scale_one_samples_the_class_conditional() {
        use crate::guidance::ClassifierGuidance;
        let device = Device::flex();
        let mixture = Mixture::new();
        for y in [0, 1] {
            let labels = vec![y; 3000];
            let guided =
                ClassifierGuidance::new(&mixture, &mixture, &mixture.schedule, &labels, 1.0);
            let mut noise = SeededNoise::new(11);
            let x = noise.normal([3000, 2, 1, 1], &device);
            let out = sample(
                SamplerKind::Heun,
                &guided,
                &mixture.schedule,
                x,
                SamplerOptions {
                    spacing: TimestepSpacing::Karras,
                    ..SamplerOptions::steps(30)
                },
                &mut noise,
            );
            let values = out.into_data().try_into_vec::<f32>().unwrap();
            let (mean, cov, _) = moments(&values, &mixture);
            for i in 0..2 {
                assert!(
                    (mean[i] - mixture.means[y][i]).abs() < 0.02,
                    "class {y}: mean {mean:?}"
                );
                for j in 0..2 {
                    let want = if i == j { 0.01 } else { 0.0 };
                    assert!((cov[i][j] - want).abs() < 0.005, "class {y}: cov {cov:?}");
                }
            }
        }
    }

    /// Zero terminal SNR: the first step starts at abar = 0 (pure noise, infinite sigma); with
    /// a v-prediction denoiser every sampler still lands on the mixture.
    #[test]
    fn every_sampler_starts_from_pure_noise_under_zero_terminal_snr() {
        use crate::guidance::OutputToEps;
        let device = Device::flex();
        let schedule = NoiseSchedule::new(&ember_config::DiffusionConfig {
            prediction: ember_config::Prediction::V,
            zero_terminal_snr: true,
            ..Default::default()
        });
        assert_eq!(schedule.alpha_bar(Some(999)), 0.0);
        let mixture = Mixture {
            schedule: schedule.clone(),
            ..Mixture::new()
        };
        let model = Reparameterised(&mixture, schedule.clone());
        let denoiser = OutputToEps::new(&model, &schedule);
        for (kind, steps) in [
            (SamplerKind::Ddpm, 100),
            (SamplerKind::Ddim, 50),
            (SamplerKind::DpmppTwoM, 25),
            (SamplerKind::Euler, 60),
            (SamplerKind::Heun, 25),
        ] {
            let mut noise = SeededNoise::new(7);
            let x = noise.normal([4000, 2, 1, 1], &device);
            let out = sample(
                kind,
                &denoiser,
                &schedule,
                x,
                SamplerOptions::steps(steps),
                &mut noise,
            );
            let values = out.into_data().try_into_vec::<f32>().unwrap();
            assert!(values.iter().all(|v| v.is_finite()), "{kind:?}");
            assert_lands_on_mixture(&values, &mixture, &format!("{kind:?}"));
        }
    }

    /// Mean and covariance within 0.02 of the mixture's, mode weights within 0.025.
    fn assert_lands_on_mixture(values: &[f32], mixture: &Mixture, what: &str) {
        let (true_mean, true_cov) = mixture.mean_and_cov();
        let (mean, cov, second) = moments(values, mixture);
        for i in 0..2 {
            assert!(
                (mean[i] - true_mean[i]).abs() < 0.02,
                "{what}: mean {mean:?}"
            );
            for j in 0..2 {
                assert!(
                    (cov[i][j] - true_cov[i][j]).abs() < 0.02,
                    "{what}: cov {cov:?}"
                );
            }
        }
        let weight = mixture.weights[1];
        assert!(
            (second - weight).abs() < 0.025,
            "{what}: mode weight {second}"
        );
    }

    /// Sample mean, covariance and the fraction of samples nearer the second mode.
    fn moments(samples: &[f32], mixture: &Mixture) -> ([f64; 2], [[f64; 2]; 2], f64) {
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

    /// Each sampler, driven by the exact denoiser of a Gaussian mixture, lands on the mixture:
    /// sample mean and covariance within 0.02 of the truth (the Monte-Carlo standard error of
    /// the mean with 4000 samples is about 0.007) and the mode weights within 0.025.
    #[test]
    fn every_sampler_lands_on_a_gaussian_mixture_with_the_exact_denoiser() {
        let device = Device::flex();
        let mixture = Mixture::new();
        let (true_mean, true_cov) = mixture.mean_and_cov();
        let n = 4000;
        let cases = [
            (SamplerKind::Ddpm, TimestepSpacing::Trailing, 100, 0.0),
            (SamplerKind::Ddim, TimestepSpacing::Trailing, 50, 0.0),
            (SamplerKind::Ddim, TimestepSpacing::Trailing, 100, 1.0),
            (SamplerKind::DpmppTwoM, TimestepSpacing::Karras, 20, 0.0),
            (SamplerKind::Euler, TimestepSpacing::Karras, 60, 0.0),
            (SamplerKind::Heun, TimestepSpacing::Karras, 20, 0.0),
            (SamplerKind::Ddim, TimestepSpacing::Linspace, 50, 0.0),
            (SamplerKind::Ddim, TimestepSpacing::Leading, 50, 0.0),
        ];
        let mut report = Vec::new();
        for (kind, spacing, steps, eta) in cases {
            let mut noise = SeededNoise::new(7);
            let x = noise.normal([n, 2, 1, 1], &device);
            let options = SamplerOptions {
                steps,
                eta,
                spacing,
                strength: 1.0,
            };
            let out = sample(kind, &mixture, &mixture.schedule, x, options, &mut noise);
            let values = out.into_data().try_into_vec::<f32>().unwrap();
            let (mean, cov, second) = moments(&values, &mixture);
            let mean_err = (0..2)
                .map(|i| (mean[i] - true_mean[i]).abs())
                .fold(0.0, f64::max);
            let cov_err = (0..4)
                .map(|k| (cov[k / 2][k % 2] - true_cov[k / 2][k % 2]).abs())
                .fold(0.0, f64::max);
            let weight_err = (second - mixture.weights[1]).abs();
            report.push(format!(
                "{kind:?} {spacing:?} {steps} steps eta {eta}: mean err {mean_err:.4}, cov err {cov_err:.4}, mode weight err {weight_err:.4}"
            ));
            assert!(
                mean_err < 0.02 && cov_err < 0.02 && weight_err < 0.025,
                "{}",
                report.join("\n")
            );
        }
        println!("{}", report.join("\n"));
    }
}
