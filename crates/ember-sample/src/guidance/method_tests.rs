//! The guidance methods beyond CFG (APG, CFG++, CFG-Zero*, autoguidance), guidance schedules
//! and outpainting: against the formulas they implement, against CFG where they reduce to it,
//! and against the exact mixture denoiser.

use super::branches::timesteps_tensor;
use super::tests::{inputs, max_abs_diff, model, model_seeded};
use super::*;
use crate::noise::{NoiseSource, SeededNoise};
use crate::request::{InitImage, sample_images};
use crate::samplers::sampler;
use crate::testing::{Mixture, MixtureBranches, assert_lands_on_mixture, schedule, values};
use crate::timesteps::timesteps;
use ember_config::{
    DiffusionConfig, GuidanceMethod, GuidanceSchedule, Prediction, SampleConfig, SamplerKind,
    TimestepSpacing,
};
use ember_model::labels_tensor;

fn schedule_of(prediction: Prediction) -> NoiseSchedule {
    NoiseSchedule::new(&DiffusionConfig {
        prediction,
        ..Default::default()
    })
}

/// Samples of `d` with `kind` (DDIM at eta 0.5, so its noise path runs too), from seeded noise
/// of `shape`.
fn run(
    d: &dyn Denoiser,
    kind: SamplerKind,
    shape: [usize; 4],
    steps: usize,
    spacing: TimestepSpacing,
    seed: u64,
) -> Vec<f32> {
    let device = Device::flex();
    let mut noise = SeededNoise::for_rows(seed, shape[0]);
    let x = noise.normal(shape, &device);
    let ts = timesteps(d.schedule(), steps, spacing);
    values(sampler(kind, 0.5).sample(d, x, &ts, &mut noise))
}

/// Rows of a `[n, 2, 1, 1]` mixture batch as f64 pairs.
fn pairs(t: Tensor<4>) -> Vec<[f64; 2]> {
    values(t)
        .chunks_exact(2)
        .map(|p| [p[0] as f64, p[1] as f64])
        .collect()
}

fn mixture_points(device: &Device) -> Tensor<4> {
    Tensor::<4>::from_floats(
        [
            [[[0.3]], [[-0.2]]],
            [[[-0.6]], [[0.1]]],
            [[[0.05]], [[0.7]]],
        ],
        device,
    )
}

fn dot(a: [f64; 2], b: [f64; 2]) -> f64 {
    a[0] * b[0] + a[1] * b[1]
}

// ---------------------------------------------------------------------------------------------
// APG

#[test]
fn apg_with_eta_one_and_no_momentum_or_cap_is_cfg_bit_for_bit() {
    let device = Device::flex();
    let m = model(&device);
    let (x, labels) = inputs(&device);
    let plain = ApgParams {
        eta: 1.0,
        momentum: 0.0,
        norm_threshold: 0.0,
    };
    // An x0-prediction network: CFG combines the very clean images APG combines, so the two
    // agree to the bit, at each step and over whole runs.
    let s = schedule_of(Prediction::X0);
    let cfg = ClassifierFreeGuidance::new(&m, &s, &labels, 4.0, None, &device);
    let apg = || {
        AdaptiveProjectedGuidance::new(
            ClassBranches::new(&m, &s, &labels, None, &device),
            4.0,
            plain,
        )
    };
    for t in [999, 500, 10] {
        assert_eq!(
            values(apg().denoise(x.clone(), t).x0),
            values(cfg.denoise(x.clone(), t).x0),
            "t = {t}"
        );
    }
    for kind in SamplerKind::ALL {
        let shape = [2, 1, 8, 8];
        let spacing = TimestepSpacing::Trailing;
        assert_eq!(
            run(&apg(), kind, shape, 5, spacing, 3),
            run(&cfg, kind, shape, 5, spacing, 3),
            "{kind:?}"
        );
    }
    // A noise-prediction network: CFG combines noise, APG clean images; the conversion is
    // affine, so they agree up to rounding.
    let s = schedule();
    let cfg = ClassifierFreeGuidance::new(&m, &s, &labels, 4.0, None, &device);
    let apg = AdaptiveProjectedGuidance::new(
        ClassBranches::new(&m, &s, &labels, None, &device),
        4.0,
        plain,
    );
    for t in [600, 100, 10] {
        let reference = cfg.denoise(x.clone(), t).x0;
        let size: f32 = reference.clone().abs().max().into_scalar();
        let err = max_abs_diff(apg.denoise(x.clone(), t).x0, reference);
        assert!(err <= 1e-5 * size.max(1.0), "t = {t}: {err}");
    }
}

#[test]
fn apg_keeps_eta_of_the_parallel_part_and_caps_the_update() {
    let device = Device::flex();
    let mixture = Mixture::with_schedule(schedule_of(Prediction::X0));
    let labels = vec![0, 1, 1];
    let branches = || MixtureBranches {
        mixture: &mixture,
        labels: labels.clone(),
        blind: false,
    };
    let x = mixture_points(&device);
    let (scale, t) = (5.0, 300);
    let (dc, du) = branches().both_x0(x.clone(), t);
    let (dc, du) = (pairs(dc), pairs(du));
    for (eta, r) in [(0.0, 0.0), (0.5, 0.0), (0.0, 0.05), (1.0, 0.05)] {
        let params = ApgParams {
            eta,
            momentum: 0.0,
            norm_threshold: r,
        };
        let apg = AdaptiveProjectedGuidance::new(branches(), scale, params);
        let got = pairs(apg.denoise(x.clone(), t).x0);
        for ((c, u), g) in dc.iter().zip(&du).zip(&got) {
            // Algorithm 1 in f64: cap, project onto D_c, weight the parallel part by eta.
            let mut d = [c[0] - u[0], c[1] - u[1]];
            let norm = dot(d, d).sqrt();
            if r > 0.0 && norm > r {
                d = d.map(|v| v * r / norm);
            }
            let along = dot(d, *c) / dot(*c, *c);
            let update = [0, 1].map(|i| d[i] - (1.0 - eta) * along * c[i]);
            for i in 0..2 {
                let want = c[i] + (scale - 1.0) * update[i];
                assert!(
                    (g[i] - want).abs() < 1e-5,
                    "eta {eta}, r {r}: {g:?} vs {want}"
                );
            }
            if eta == 0.0 {
                // what is left is orthogonal to the conditional prediction
                let update = [0, 1].map(|i| (g[i] - c[i]) / (scale - 1.0));
                assert!(dot(update, *c).abs() < 1e-5 * dot(*c, *c).sqrt());
            }
        }
    }
}

/// Branches that ignore their input: fixed clean images under an x0-prediction schedule.
struct Fixed {
    schedule: NoiseSchedule,
    cond: Tensor<4>,
    uncond: Tensor<4>,
}

impl Branches for Fixed {
    fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }
    fn cond(&self, _: Tensor<4>, _: usize) -> Tensor<4> {
        self.cond.clone()
    }
    fn uncond(&self, _: Tensor<4>, _: usize) -> Tensor<4> {
        self.uncond.clone()
    }
    fn both(&self, x: Tensor<4>, t: usize) -> (Tensor<4>, Tensor<4>) {
        (self.cond(x.clone(), t), self.uncond(x, t))
    }
}

#[test]
fn apg_momentum_averages_the_update_once_per_timestep() {
    let device = Device::flex();
    let point = |a: f32, b: f32| Tensor::<4>::from_floats([[[[a]], [[b]]]], &device);
    let fixed = Fixed {
        schedule: schedule_of(Prediction::X0),
        cond: point(1.0, 0.0),
        uncond: point(0.0, 0.5),
    };
    let (beta, scale) = (-0.5, 3.0);
    let params = ApgParams {
        eta: 1.0,
        momentum: beta,
        norm_threshold: 0.0,
    };
    let apg = AdaptiveProjectedGuidance::new(fixed, scale, params);
    let x = point(0.0, 0.0);
    let diff = [1.0, -0.5];
    // Heun asks twice at 700 (the end of one step, the start of the next): one term.
    for (t, factor) in [
        (900, 1.0),
        (700, 1.0 + beta),
        (700, 1.0 + beta),
        (500, 1.0 + beta + beta * beta),
    ] {
        let got = pairs(apg.denoise(x.clone(), t).x0)[0];
        let want = [0, 1].map(|i| [1.0, 0.0][i] + (scale - 1.0) * factor * diff[i]);
        for i in 0..2 {
            assert!(
                (got[i] - want[i]).abs() < 1e-6,
                "t {t}: {got:?} vs {want:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CFG++

#[test]
fn cfg_pp_at_lambda_zero_is_the_unconditional_sampler_for_every_sampler() {
    let device = Device::flex();
    let (m, s) = (model(&device), schedule());
    let (_, labels) = inputs(&device);
    // The UNet, bit for bit: the samplers' CFG++ arithmetic with an offset of exactly zero is
    // their ordinary arithmetic.
    let uncond = ClassifierFreeGuidance::new(&m, &s, &labels, 0.0, None, &device);
    let cfg_pp = CfgPlusPlus::new(ClassBranches::new(&m, &s, &labels, None, &device), 0.0);
    for kind in SamplerKind::ALL {
        for spacing in [TimestepSpacing::Trailing, TimestepSpacing::Karras] {
            let shape = [2, 1, 8, 8];
            assert_eq!(
                run(&cfg_pp, kind, shape, 6, spacing, 5),
                run(&uncond, kind, shape, 6, spacing, 5),
                "{kind:?} {spacing:?}"
            );
        }
    }
    // The exact mixture: conditioned on class 0, CFG++ at lambda 0 samples the whole mixture.
    let mixture = Mixture::new();
    let n = 4000;
    let cfg_pp = CfgPlusPlus::new(
        MixtureBranches {
            mixture: &mixture,
            labels: vec![0; n],
            blind: false,
        },
        0.0,
    );
    let samples = run(
        &cfg_pp,
        SamplerKind::Heun,
        [n, 2, 1, 1],
        20,
        TimestepSpacing::Karras,
        7,
    );
    assert_lands_on_mixture(&samples, &mixture, "CFG++ at lambda 0");
}

#[test]
fn cfg_pp_steps_to_the_guided_image_with_the_unconditional_noise() {
    let device = Device::flex();
    let mixture = Mixture::new();
    let labels = vec![0, 1, 0];
    let lambda = 0.6;
    let cfg_pp = CfgPlusPlus::new(
        MixtureBranches {
            mixture: &mixture,
            labels: labels.clone(),
            blind: false,
        },
        lambda,
    );
    let s = &mixture.schedule;
    let (t0, t1) = (400, 150);
    let x = mixture_points(&device);
    // Chung et al.'s step, from the mixture's exact posterior means: the guided clean image
    // x0_l = x0_u + lambda (x0_c - x0_u), re-noised with the unconditional noise.
    let x0_u = mixture.posterior_mean(x.clone(), t0, None);
    let x0_c = mixture.posterior_mean(x.clone(), t0, Some(&labels));
    let x0_l = x0_u.clone() + (x0_c - x0_u.clone()).mul_scalar(lambda);
    let eps_u = s.eps_from_x0(x.clone(), x0_u, t0);
    let ab1 = s.alpha_bar(Some(t1));
    let x1 = x0_l.mul_scalar(ab1.sqrt()) + eps_u.mul_scalar((1.0 - ab1).sqrt());
    // The last step, to the clean image, lands on the guided clean image at x1.
    let want = cfg_pp.denoise(x1, t1).x0.clamp(-1.0, 1.0);
    // DDIM is that step; Euler on z = x / sqrt(abar) is the same step (`g + sigma_next eps_u`).
    for kind in [SamplerKind::Ddim, SamplerKind::Euler] {
        let mut noise = SeededNoise::for_rows(0, 3);
        let got = sampler(kind, 0.0).sample(&cfg_pp, x.clone(), &[t0, t1], &mut noise);
        let err = max_abs_diff(got, want.clone());
        assert!(err < 1e-4, "{kind:?}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// CFG-Zero*

#[test]
fn cfg_zero_star_leaves_a_model_whose_branches_agree_unchanged() {
    // The exact mixture, class-blind (conditional = unconditional), every objective: each
    // prediction is the unguided one, and sampling lands on the mixture.
    let device = Device::flex();
    let n = 4000;
    for prediction in [Prediction::Epsilon, Prediction::V, Prediction::X0] {
        let mixture = Mixture::with_schedule(schedule_of(prediction));
        let zero_star = CfgZeroStar::new(
            MixtureBranches {
                mixture: &mixture,
                labels: vec![0; n],
                blind: true,
            },
            4.0,
        );
        let x = mixture_points(&device);
        let few = CfgZeroStar::new(
            MixtureBranches {
                mixture: &mixture,
                labels: vec![0; 3],
                blind: true,
            },
            4.0,
        );
        for t in [700, 300, 20] {
            let err = max_abs_diff(
                few.denoise(x.clone(), t).x0,
                mixture.denoise(x.clone(), t).x0,
            );
            assert!(err < 1e-4, "{prediction:?} t {t}: {err}");
        }
        let samples = run(
            &zero_star,
            SamplerKind::DpmppTwoM,
            [n, 2, 1, 1],
            20,
            TimestepSpacing::Karras,
            7,
        );
        assert_lands_on_mixture(&samples, &mixture, &format!("{prediction:?}"));
    }
    // The UNet with the row's own class as the negative class, through `with_guidance` with no
    // zero-init: the conditional sampler, for every sampler.
    let (m, s) = (model(&device), schedule());
    let (x, _) = inputs(&device);
    let labels = vec![1, 1];
    let settings = SampleConfig {
        guidance_method: GuidanceMethod::CfgZeroStar,
        guidance_scale: 4.0,
        negative_class: Some(1),
        cfg_zero_init_steps: 0,
        ..Default::default()
    };
    let plain = ClassifierFreeGuidance::new(&m, &s, &labels, 1.0, None, &device);
    let ts = timesteps(&s, 5, TimestepSpacing::Trailing);
    for kind in SamplerKind::ALL {
        let sample = |d: &dyn Denoiser| {
            let mut noise = SeededNoise::for_rows(2, 2);
            sampler(kind, 0.0).sample(d, x.clone(), &ts, &mut noise)
        };
        let guidance = Guidance::new(&settings, None);
        let guided = with_guidance(&m, &s, &labels, guidance, &ts, &device, sample);
        let err = max_abs_diff(guided, sample(&plain));
        assert!(err < 1e-4, "{kind:?}: {err}");
    }
}

#[test]
fn cfg_zero_star_scales_the_unconditional_velocity_by_its_projection() {
    let device = Device::flex();
    let mixture = Mixture::new();
    let labels = vec![0, 1, 1];
    let w = 3.0;
    let zero_star = CfgZeroStar::new(
        MixtureBranches {
            mixture: &mixture,
            labels: labels.clone(),
            blind: false,
        },
        w,
    );
    let (s, t) = (&mixture.schedule, 250);
    let x = mixture_points(&device);
    let (sa, sn) = {
        let ab = s.alpha_bar(Some(t));
        (ab.sqrt(), (1.0 - ab).sqrt())
    };
    let got = pairs(zero_star.denoise(x.clone(), t).x0);
    let xs = pairs(x.clone());
    let x0_c = pairs(mixture.posterior_mean(x.clone(), t, Some(&labels)));
    let x0_u = pairs(mixture.posterior_mean(x, t, None));
    for row in 0..3 {
        // rectified-flow velocities eps - x0 of both branches
        let v = |x0: [f64; 2]| [0, 1].map(|i| (xs[row][i] - sa * x0[i]) / sn - x0[i]);
        let (v_c, v_u) = (v(x0_c[row]), v(x0_u[row]));
        let s_star = dot(v_c, v_u) / dot(v_u, v_u);
        let guided = [0, 1].map(|i| s_star * v_u[i] + w * (v_c[i] - s_star * v_u[i]));
        for i in 0..2 {
            let want = (xs[row][i] - sn * guided[i]) / (sa + sn);
            assert!(
                (got[row][i] - want).abs() < 1e-4,
                "{:?} vs {want}",
                got[row]
            );
        }
    }
}

#[test]
fn zero_init_leaves_the_flow_state_in_place_for_the_first_steps() {
    let device = Device::flex();
    let mixture = Mixture::new();
    let s = &mixture.schedule;
    let ts = timesteps(s, 10, TimestepSpacing::Trailing);
    let zeroed = ZeroInit::new(&mixture, &ts, 2);
    let x = mixture_points(&device);
    let flow_scale = |t: usize| {
        let ab = s.alpha_bar(Some(t));
        1.0 / (ab.sqrt() + (1.0 - ab).sqrt())
    };
    for (i, &t) in ts.iter().enumerate() {
        let got = zeroed.denoise(x.clone(), t).x0;
        if i < 2 {
            let want = x.clone().mul_scalar(flow_scale(t));
            assert!(max_abs_diff(got, want) < 1e-6, "step {i}");
        } else {
            assert_eq!(values(got), values(mixture.denoise(x.clone(), t).x0));
        }
    }
    // Two zeroed DDIM steps keep x / (sqrt(abar) + sqrt(1 - abar)); the third step (to the
    // clean image) is the mixture's at that point.
    let run_ts = &ts[..3];
    let mut noise = SeededNoise::for_rows(0, 3);
    let got = sampler(SamplerKind::Ddim, 0.0).sample(&zeroed, x.clone(), run_ts, &mut noise);
    let x2 = x.mul_scalar(flow_scale(ts[0]) / flow_scale(ts[2]));
    let want = mixture.denoise(x2, ts[2]).x0.clamp(-1.0, 1.0);
    assert!(max_abs_diff(got, want) < 1e-5);
    // K never covers the whole run.
    let all = ZeroInit::new(&mixture, &ts[..2], 5);
    assert_eq!(
        values(all.denoise(mixture_points(&device), ts[1]).x0),
        values(mixture.denoise(mixture_points(&device), ts[1]).x0)
    );
}

// ---------------------------------------------------------------------------------------------
// Autoguidance

#[test]
fn autoguidance_with_the_good_model_as_weak_model_is_the_conditional_sampler() {
    let device = Device::flex();
    let (m, s) = (model(&device), schedule());
    let (x, labels) = inputs(&device);
    let settings = SampleConfig {
        guidance_method: GuidanceMethod::Autoguidance,
        guide_run: "weak-run".into(),
        guidance_scale: 2.5,
        ..Default::default()
    };
    settings.validate(1000, 3).unwrap();
    let plain = ClassifierFreeGuidance::new(&m, &s, &labels, 1.0, None, &device);
    let ts = timesteps(&s, 6, TimestepSpacing::Trailing);
    for kind in SamplerKind::ALL {
        let sample = |d: &dyn Denoiser| {
            let mut noise = SeededNoise::for_rows(4, 2);
            values(sampler(kind, 0.5).sample(d, x.clone(), &ts, &mut noise))
        };
        let guidance = Guidance::new(&settings, None).with_weak_model(Some(&m));
        let guided = with_guidance(&m, &s, &labels, guidance, &ts, &device, sample);
        assert_eq!(guided, sample(&plain), "{kind:?}");
    }
    // Another weak model: D_weak + w (D_good - D_weak), both conditional on the row's class.
    let weak = model_seeded(&device, 1);
    let t = timesteps_tensor(300, 2, &device);
    let y = labels_tensor(&labels, &device);
    let good_out = m.forward(x.clone(), t.clone(), y.clone());
    let weak_out = weak.forward(x.clone(), t, y);
    assert!(max_abs_diff(good_out.clone(), weak_out.clone()) > 1e-4);
    let guidance = Guidance::new(&settings, None).with_weak_model(Some(&weak));
    with_guidance(&m, &s, &labels, guidance, &ts, &device, |d| {
        let err = max_abs_diff(d.eps(x.clone(), 300), guide(good_out, weak_out, 2.5));
        assert!(err < 1e-5, "{err}");
    });
}

// ---------------------------------------------------------------------------------------------
// Guidance schedules

#[test]
fn a_constant_schedule_is_plain_cfg_and_the_others_move_between_one_and_the_scale() {
    use GuidanceSchedule::*;
    let s = schedule();
    let at = |kind, t| ScaleSchedule::new(4.0, kind).at(t, &s);
    for t in [999, 500, 0] {
        assert_eq!(at(Constant, t), 4.0);
    }
    assert_eq!((at(LinearUp, 999), at(LinearUp, 0)), (1.0, 4.0));
    assert_eq!((at(LinearDown, 999), at(LinearDown, 0)), (4.0, 1.0));
    assert_eq!(at(Cosine, 999), 1.0);
    assert!((at(Cosine, 0) - 4.0).abs() < 1e-12);
    // cosine: below linear-up in the noisy half, above it in the clean half, symmetric
    assert!(at(Cosine, 800) < at(LinearUp, 800) && at(Cosine, 200) > at(LinearUp, 200));
    assert!((at(Cosine, 900) - 1.0 + at(Cosine, 99) - 4.0).abs() < 1e-12);

    let device = Device::flex();
    let m = model(&device);
    let (x, labels) = inputs(&device);
    let branches = || ClassBranches::new(&m, &s, &labels, None, &device);
    let cfg = ClassifierFreeGuidance::new(&m, &s, &labels, 3.0, None, &device);
    let constant = ClassifierFreeGuidance::over(branches(), ScaleSchedule::new(3.0, Constant));
    for t in [999, 400, 3] {
        assert_eq!(
            values(constant.output(x.clone(), t)),
            values(cfg.output(x.clone(), t))
        );
    }
    // Linear-up is the bare conditional network at the noisiest timestep, CFG at the
    // interpolated scale in between.
    let up = ClassifierFreeGuidance::over(branches(), ScaleSchedule::new(3.0, LinearUp));
    let forward = |t: usize, ys: &[usize]| {
        m.forward(
            x.clone(),
            timesteps_tensor(t, 2, &device),
            labels_tensor(ys, &device),
        )
    };
    assert_eq!(
        values(up.output(x.clone(), 999)),
        values(forward(999, &labels))
    );
    let mid = guide(
        forward(333, &labels),
        forward(333, &[3, 3]),
        1.0 + 2.0 * (1.0 - 333.0 / 999.0),
    );
    assert!(max_abs_diff(up.output(x, 333), mid) < 1e-4);
}

// ---------------------------------------------------------------------------------------------
// Every method with every sampler, spacing and objective

#[test]
fn every_method_runs_with_every_sampler_spacing_and_objective() {
    let device = Device::flex();
    let good = model(&device);
    let weak = model_seeded(&device, 1);
    let (x, labels) = inputs(&device);
    let spacings = [
        TimestepSpacing::Trailing,
        TimestepSpacing::Leading,
        TimestepSpacing::Linspace,
        TimestepSpacing::Karras,
    ];
    let predictions = [Prediction::Epsilon, Prediction::V, Prediction::X0];
    for (p, prediction) in predictions.into_iter().enumerate() {
        let s = schedule_of(prediction);
        for method in GuidanceMethod::ALL {
            let settings = SampleConfig {
                guidance_method: method,
                guidance_scale: if method == GuidanceMethod::CfgPp {
                    0.6
                } else {
                    3.0
                },
                guidance_schedule: GuidanceSchedule::Cosine,
                guidance_interval: if prediction == Prediction::V {
                    vec![0.2, 20.0]
                } else {
                    vec![]
                },
                apg_momentum: -0.5,
                apg_norm_threshold: 5.0,
                guide_run: if method == GuidanceMethod::Autoguidance {
                    "weak".into()
                } else {
                    Default::default()
                },
                ..Default::default()
            };
            settings.validate(1000, 3).unwrap();
            // every spacing with every sampler over the three objectives
            for (k, kind) in SamplerKind::ALL.into_iter().enumerate() {
                let spacing = spacings[(p + k) % spacings.len()];
                let ts = timesteps(&s, 4, spacing);
                let guidance = Guidance::new(&settings, None).with_weak_model(Some(&weak));
                let out = with_guidance(&good, &s, &labels, guidance, &ts, &device, |d| {
                    let mut noise = SeededNoise::for_rows(1, 2);
                    values(sampler(kind, 0.5).sample(d, x.clone(), &ts, &mut noise))
                });
                assert!(
                    out.iter().all(|v| v.is_finite() && v.abs() <= 1.0 + 1e-5),
                    "{prediction:?} {method:?} {kind:?} {spacing:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Outpainting

#[test]
fn outpainting_keeps_the_original_pixels_for_every_sampler() {
    let device = Device::flex();
    let (m, s) = (model(&device), schedule());
    let (x, _) = inputs(&device);
    let source = x.narrow(0, 0, 1).tanh(); // [1, 1, 8, 8], any image in [-1, 1]
    // left 2, top 4, right 2, bottom 0: a 12 x 12 canvas, divisible by the UNet's 2
    let init = InitImage::outpaint(source.clone(), [2, 4, 2, 0], 1.0);
    assert_eq!(init.image.dims(), [1, 1, 12, 12]);
    let images = [(0, 0), (2, 1)];
    for method in [GuidanceMethod::Cfg, GuidanceMethod::CfgPp] {
        for kind in SamplerKind::ALL {
            let settings = SampleConfig {
                sampler: kind,
                steps: 6,
                guidance_method: method,
                guidance_scale: if method == GuidanceMethod::CfgPp {
                    0.5
                } else {
                    3.0
                },
                ..Default::default()
            };
            let guidance = Guidance::new(&settings, None);
            let out = sample_images(&m, &s, &images, guidance, Some(&init), [1, 12, 12], &device);
            let kept = out.clone().slice([0..2, 0..1, 4..12, 2..10]);
            let kept_err = max_abs_diff(kept, source.clone().repeat_dim(0, 2));
            assert!(
                kept_err < 1e-5,
                "{method:?} {kind:?}: kept pixels moved by {kept_err}"
            );
            let border: f32 = out
                .slice([0..2, 0..1, 0..4, 0..12])
                .abs()
                .max()
                .into_scalar();
            assert!(
                border > 1e-2,
                "{method:?} {kind:?}: the border was not generated"
            );
        }
    }
}
