//! Every sampler against ground truth: the exact denoiser of a Gaussian mixture.

use super::*;
use crate::noise::SeededNoise;
use crate::testing::*;
use crate::timesteps::timesteps;
use ember_config::{DiffusionConfig, Prediction, TimestepSpacing};
use ember_model::NoiseSchedule;

/// `n` mixture samples from `kind` with `steps` steps of `spacing`, seeded.
fn sample_mixture(
    denoiser: &dyn Denoiser,
    kind: SamplerKind,
    eta: f64,
    steps: usize,
    spacing: TimestepSpacing,
    n: usize,
    seed: u64,
) -> Vec<f32> {
    let device = Device::flex();
    let mut noise = SeededNoise::for_rows(seed, n);
    let x = noise.normal([n, 2, 1, 1], &device);
    let ts = timesteps(denoiser.schedule(), steps, spacing);
    values(sampler(kind, eta).sample(denoiser, x, &ts, &mut noise))
}

#[test]
fn every_sampler_is_reproducible_from_its_seed() {
    let shrink = Shrink(schedule());
    let device = Device::flex();
    for kind in SamplerKind::ALL {
        let run = |seed| {
            let mut noise = SeededNoise::for_rows(seed, 2);
            let x = noise.normal([2, 1, 4, 4], &device);
            let ts = timesteps(&shrink.0, 8, TimestepSpacing::Trailing);
            values(sampler(kind, 0.5).sample(&shrink, x, &ts, &mut noise))
        };
        let (a, b, c) = (run(1), run(1), run(2));
        assert_eq!(a, b, "{kind:?}");
        assert_ne!(a, c, "{kind:?}");
        assert!(
            a.iter().all(|v| v.is_finite() && v.abs() <= 1.0 + 1e-5),
            "{kind:?}"
        );
    }
}

#[test]
fn ddim_eta_one_draws_fresh_noise_and_ddpm_is_ddim_at_eta_one() {
    let shrink = Shrink(schedule());
    let device = Device::flex();
    let run = |s: &dyn Sampler| {
        let mut noise = SeededNoise::for_rows(5, 1);
        let x = noise.normal([1, 1, 4, 4], &device);
        let ts = timesteps(&shrink.0, 5, TimestepSpacing::Trailing);
        values(s.sample(&shrink, x, &ts, &mut noise))
    };
    assert_eq!(run(&Ddim { eta: 1.0 }), run(&Ddim { eta: 1.0 }));
    assert_ne!(run(&Ddim { eta: 1.0 }), run(&Ddim { eta: 0.0 }));
    assert_eq!(run(&Ddpm), run(&Ddim { eta: 1.0 }));
}

/// `SamplerKind::reads_eta` decides whether `ember eval` may resume a sweep under another
/// `--eta`; it must say exactly which samplers' output eta changes.
#[test]
fn eta_changes_the_samples_of_exactly_the_samplers_that_say_they_read_it() {
    let shrink = Shrink(schedule());
    for kind in SamplerKind::ALL {
        let run = |eta| sample_mixture(&shrink, kind, eta, 6, TimestepSpacing::Trailing, 2, 9);
        let differs = run(0.0) != run(0.5);
        assert_eq!(differs, kind.reads_eta(), "{kind:?}");
    }
}

#[test]
fn a_perfect_denoiser_recovers_the_clean_image() {
    /// Knows the clean image.
    struct Oracle(Tensor<4>, NoiseSchedule);
    impl Denoiser for Oracle {
        fn schedule(&self) -> &NoiseSchedule {
            &self.1
        }
        fn denoise(&self, _: Tensor<4>, _: usize) -> Denoised {
            self.0.clone().into()
        }
    }
    let device = Device::flex();
    let x0 = Tensor::<4>::from_floats([[[[0.5, -0.25], [0.75, -1.0]]]], &device);
    let oracle = Oracle(x0.clone(), schedule());
    for kind in SamplerKind::ALL {
        let mut noise = SeededNoise::for_rows(1, 1);
        let x_t = noise.normal([1, 1, 2, 2], &device);
        let ts = timesteps(&oracle.1, 20, TimestepSpacing::Trailing);
        let out = sampler(kind, 0.0).sample(&oracle, x_t, &ts, &mut noise);
        let err: f32 = (out - x0.clone()).abs().max().into_scalar();
        assert!(err < 1e-4, "{kind:?}: {err}");
    }
}

/// Names its own clean image as the re-noising prediction (CFG++ with nothing to guide).
struct SelfRenoise<'a>(&'a dyn Denoiser);

impl Denoiser for SelfRenoise<'_> {
    fn schedule(&self) -> &NoiseSchedule {
        self.0.schedule()
    }
    fn denoise(&self, x: Tensor<4>, t: usize) -> Denoised {
        let x0 = self.0.denoise(x, t).x0;
        Denoised {
            renoise: Some(x0.clone()),
            x0,
        }
    }
}

/// Every sampler's CFG++ arithmetic (slopes along the re-noising prediction, plus the offset of
/// the clean image from it) reduces to its ordinary arithmetic, bit for bit, when the two
/// predictions are the same: the offsets are exact zeros.
#[test]
fn renoising_with_the_clean_image_itself_is_the_ordinary_step_bit_for_bit() {
    let shrink = Shrink(schedule());
    let mixture = Mixture::new();
    let ztsnr = Mixture::with_schedule(NoiseSchedule::new(&DiffusionConfig {
        prediction: Prediction::V,
        zero_terminal_snr: true,
        ..Default::default()
    }));
    let v_model = Reparameterised(&ztsnr);
    let cases: [(&dyn Denoiser, usize, TimestepSpacing); 3] = [
        (&shrink, 8, TimestepSpacing::Trailing),
        (&mixture, 12, TimestepSpacing::Karras),
        (&v_model, 10, TimestepSpacing::Trailing),
    ];
    for (denoiser, steps, spacing) in cases {
        for kind in SamplerKind::ALL {
            for eta in [0.0, 1.0] {
                let plain = sample_mixture(denoiser, kind, eta, steps, spacing, 64, 3);
                let renoised =
                    sample_mixture(&SelfRenoise(denoiser), kind, eta, steps, spacing, 64, 3);
                assert_eq!(plain, renoised, "{kind:?} eta {eta} {spacing:?}");
            }
        }
    }
}

/// Each sampler, driven by the exact denoiser of a Gaussian mixture, lands on the mixture:
/// sample mean and covariance within 0.02 of the truth (the Monte-Carlo standard error of
/// the mean with 4000 samples is about 0.007) and the mode weights within 0.025.
#[test]
fn every_sampler_lands_on_a_gaussian_mixture_with_the_exact_denoiser() {
    let mixture = Mixture::new();
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
        let samples = sample_mixture(&mixture, kind, eta, steps, spacing, 4000, 7);
        let (mean_err, cov_err, weight_err) = mixture_errors(&samples, &mixture);
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

#[test]
fn v_and_x0_prediction_models_sample_the_same_distribution() {
    for prediction in [Prediction::V, Prediction::X0] {
        let mixture = Mixture::with_schedule(NoiseSchedule::new(&DiffusionConfig {
            prediction,
            ..Default::default()
        }));
        let model = Reparameterised(&mixture);
        let samples = sample_mixture(
            &model,
            SamplerKind::DpmppTwoM,
            0.0,
            20,
            TimestepSpacing::Karras,
            4000,
            7,
        );
        assert_lands_on_mixture(&samples, &mixture, &format!("{prediction:?}"));
    }
}

/// Zero terminal SNR: the first step starts at abar = 0 (pure noise, infinite sigma); with
/// a v-prediction denoiser every sampler still lands on the mixture.
#[test]
fn every_sampler_starts_from_pure_noise_under_zero_terminal_snr() {
    let schedule = NoiseSchedule::new(&DiffusionConfig {
        prediction: Prediction::V,
        zero_terminal_snr: true,
        ..Default::default()
    });
    assert_eq!(schedule.alpha_bar(Some(999)), 0.0);
    let mixture = Mixture::with_schedule(schedule);
    let model = Reparameterised(&mixture);
    for (kind, steps) in [
        (SamplerKind::Ddpm, 100),
        (SamplerKind::Ddim, 50),
        (SamplerKind::DpmppTwoM, 25),
        (SamplerKind::Euler, 60),
        (SamplerKind::Heun, 25),
    ] {
        let samples = sample_mixture(&model, kind, 0.0, steps, TimestepSpacing::Trailing, 4000, 7);
        assert!(samples.iter().all(|v| v.is_finite()), "{kind:?}");
        assert_lands_on_mixture(&samples, &mixture, &format!("{kind:?}"));
    }
}

/// Bayes' rule made exact: the unconditional mixture denoiser guided by the exact noisy
/// classifier at scale 1 samples the chosen component, N(mu_y, std^2 I).
#[test]
fn classifier_guidance_at_scale_one_samples_the_class_conditional() {
    use crate::guidance::ClassifierGuidance;
    let mixture = Mixture::new();
    for y in [0, 1] {
        let labels = vec![y; 3000];
        let guided = ClassifierGuidance::new(&mixture, &mixture, &labels, 1.0);
        let samples = sample_mixture(
            &guided,
            SamplerKind::Heun,
            0.0,
            30,
            TimestepSpacing::Karras,
            3000,
            11,
        );
        let (mean, cov, _) = moments(&samples, &mixture);
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
