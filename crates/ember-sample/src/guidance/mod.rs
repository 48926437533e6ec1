//! Guidance as wrappers around the network: every wrapper is a [`Denoiser`] holding the
//! denoiser (or the [`Branches`]) it wraps, so samplers never know which guidance they run
//! with, and wrappers stack.
//!
//! - `branches.rs`: [`Branches`], the two predictions a method combines, and
//!   [`ClassBranches`] (one network, the requested and the null or a negative class, batched).
//! - `cfg.rs`: [`ClassifierFreeGuidance`] (Ho & Salimans 2022) with negative class and CFG
//!   rescale (Lin et al. 2023), and [`guide`], the one place the formula is written.
//! - `apg.rs`: [`AdaptiveProjectedGuidance`] (Sadat et al. 2024), with its momentum state.
//! - `cfg_pp.rs`: [`CfgPlusPlus`] (Chung et al. 2024): returns a re-noising prediction that
//!   the samplers step with ([`crate::denoiser::Denoised::renoise`]).
//! - `cfg_zero.rs`: [`CfgZeroStar`] (Fan et al. 2025) and its [`ZeroInit`].
//! - `autoguidance.rs`: [`ModelBranches`], a good and a weak model, which CFG's formula turns
//!   into autoguidance (Karras et al. 2024).
//! - `schedule.rs`: [`ScaleSchedule`], the scale as a function of the timestep.
//! - `interval.rs`: [`GuidanceInterval`] (Kynkaanniemi et al. 2024).
//! - `threshold.rs`: [`DynamicThreshold`] (Saharia et al. 2022, Imagen).
//! - `classifier.rs`: [`ClassifierGuidance`] (Dhariwal & Nichol 2021) and the
//!   [`NoisyClassifier`] it takes its gradient from.
//! - `inpaint.rs`: [`Inpaint`], which keeps a source image's pixels outside a mask (inpainting,
//!   and outpainting on a larger canvas).
//!
//! [`with_guidance`] stacks them as the sampling settings ask.

mod apg;
mod autoguidance;
mod branches;
mod cfg;
mod cfg_pp;
mod cfg_zero;
mod classifier;
mod inpaint;
mod interval;
mod schedule;
mod threshold;

pub use apg::{AdaptiveProjectedGuidance, ApgParams};
pub use autoguidance::ModelBranches;
pub use branches::{Branches, ClassBranches};
pub use cfg::{ClassifierFreeGuidance, guide, rescale};
pub use cfg_pp::CfgPlusPlus;
pub use cfg_zero::{CfgZeroStar, ZeroInit};
pub use classifier::{ClassifierGuidance, NoisyClassifier};
pub use inpaint::Inpaint;
pub use interval::GuidanceInterval;
pub use schedule::ScaleSchedule;
pub use threshold::DynamicThreshold;

use crate::denoiser::Denoiser;
use burn::prelude::*;
use ember_config::{GuidanceMethod, SampleConfig};
use ember_model::{NoiseSchedule, UNet};

/// How to guide one sampling run: the settings (every guidance option), the scale (the
/// settings' own, or a sweep's), the noise-aware classifier when
/// `settings.classifier_guidance` asks for one, and autoguidance's weak model when
/// `settings.guidance_method` is autoguidance.
#[derive(Clone, Copy)]
pub struct Guidance<'a> {
    pub settings: &'a SampleConfig,
    pub scale: f64,
    pub classifier: Option<&'a dyn NoisyClassifier>,
    pub weak_model: Option<&'a UNet>,
}

impl<'a> Guidance<'a> {
    /// The settings at their own scale, without a weak model.
    pub fn new(settings: &'a SampleConfig, classifier: Option<&'a dyn NoisyClassifier>) -> Self {
        Self {
            settings,
            scale: settings.guidance_scale,
            classifier,
            weak_model: None,
        }
    }

    /// The same options at another scale.
    pub fn at_scale(self, scale: f64) -> Self {
        Self { scale, ..self }
    }

    /// With autoguidance's weak model (`settings.guide_run`).
    pub fn with_weak_model(self, weak_model: Option<&'a UNet>) -> Self {
        Self { weak_model, ..self }
    }
}

/// Stacks the wrappers `guidance` asks for around `model` for rows of class `labels` sampled
/// at `timesteps`, and hands the resulting denoiser to `run` (e.g. a sampler): the guidance
/// method (CFG with its negative class and rescale, APG, CFG++, CFG-Zero* or autoguidance, at
/// a scale that follows the guidance schedule), inside a guidance interval if any (outside it
/// one plain conditional forward), plus classifier guidance if asked, under dynamic
/// thresholding if on, and CFG-Zero*'s zero-init over all of it.
///
/// # Panics
/// If `settings.classifier_guidance > 0` without a classifier, or autoguidance without a weak
/// model.
pub fn with_guidance<R>(
    model: &UNet,
    schedule: &NoiseSchedule,
    labels: &[usize],
    guidance: Guidance,
    timesteps: &[usize],
    device: &Device,
    run: impl FnOnce(&dyn Denoiser) -> R,
) -> R {
    let s = guidance.settings;
    let scale = ScaleSchedule::new(guidance.scale, s.guidance_schedule);
    let classes = || ClassBranches::new(model, schedule, labels, s.negative_class, device);
    let method: Box<dyn Denoiser + '_> = match s.guidance_method {
        GuidanceMethod::Cfg => {
            Box::new(ClassifierFreeGuidance::over(classes(), scale).with_rescale(s.cfg_rescale))
        }
        GuidanceMethod::Apg => {
            let params = ApgParams {
                eta: s.apg_eta,
                momentum: s.apg_momentum,
                norm_threshold: s.apg_norm_threshold,
            };
            Box::new(AdaptiveProjectedGuidance::new(classes(), scale, params))
        }
        GuidanceMethod::CfgPp => Box::new(CfgPlusPlus::new(classes(), scale)),
        GuidanceMethod::CfgZeroStar => Box::new(CfgZeroStar::new(classes(), scale)),
        GuidanceMethod::Autoguidance => {
            let weak = guidance
                .weak_model
                .expect("autoguidance needs its weak model");
            let models = ModelBranches::new(model, weak, schedule, labels, device);
            Box::new(ClassifierFreeGuidance::over(models, scale).with_rescale(s.cfg_rescale))
        }
    };
    let plain = ClassifierFreeGuidance::new(model, schedule, labels, 1.0, None, device);
    let interval;
    let guided: &dyn Denoiser = match s.guidance_interval[..] {
        [low, high] => {
            interval = GuidanceInterval::new(method.as_ref(), &plain, [low, high]);
            &interval
        }
        _ => method.as_ref(),
    };
    let classified;
    let guided: &dyn Denoiser = if s.classifier_guidance > 0.0 {
        let classifier = guidance
            .classifier
            .expect("classifier guidance needs its noise-aware classifier");
        classified = ClassifierGuidance::new(guided, classifier, labels, s.classifier_guidance);
        &classified
    } else {
        guided
    };
    let thresholded;
    let guided: &dyn Denoiser = if s.dynamic_threshold > 0.0 {
        thresholded = DynamicThreshold::new(guided, s.dynamic_threshold);
        &thresholded
    } else {
        guided
    };
    if s.guidance_method == GuidanceMethod::CfgZeroStar && s.cfg_zero_init_steps > 0 {
        run(&ZeroInit::new(guided, timesteps, s.cfg_zero_init_steps))
    } else {
        run(guided)
    }
}

#[cfg(test)]
mod method_tests;
#[cfg(test)]
mod tests;
