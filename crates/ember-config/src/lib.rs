//! Ember's experiment configuration: the TOML schema, its defaults and its validation.
//!
//! A config file is parsed into plain serde structs that reject unknown keys, then validated
//! once by [`ExperimentConfig::validate`]. Every default lives here, in one commented place;
//! the files in `configs/` are short overrides.
//!
//! # Guidance convention
//! Ember writes classifier-free guidance as in diffusers, DiT and the reference article:
//!
//! ```text
//! eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
//! ```
//!
//! `guidance_scale = 1` is the plain conditional model ("no guidance"), `0` the unconditional
//! model, and values above 1 push samples towards their class. Ho & Salimans' `w` is
//! `guidance_scale - 1`; [`ho_salimans_w_to_scale`] converts.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

mod validate;
pub use validate::{KeyError, check_guidance_scale, limits};

/// Errors from reading or validating a config file. Each names the file and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// A guidance scale as it appears in file names and tags: short and exact. Plain decimals
/// (`3`, `1.5`) while they are short, otherwise the shortest exponent form that reads back to
/// the same number (`1e-250`, not 250 zeros).
pub fn scale_label(scale: f64) -> String {
    let plain = format!("{scale}");
    if plain.len() <= 12 {
        plain
    } else {
        format!("{scale:e}")
    }
}

/// Converts Ho & Salimans' guidance weight `w` (0 = plain conditional) to Ember's scale.
pub fn ho_salimans_w_to_scale(w: f64) -> f64 {
    w + 1.0
}

/// One experiment: data, model, diffusion process, training and sampling settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentConfig {
    /// Seed for every random draw of the run (init, shuffling, noise, label dropout).
    pub seed: u64,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub diffusion: DiffusionConfig,
    pub train: TrainConfig,
    pub sample: SampleConfig,
    /// The domain classifier of `ember classifier train` / `ember eval` (not the diffusion run).
    pub classifier: ClassifierConfig,
    pub log: LogConfig,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            data: DataConfig::default(),
            model: ModelConfig::default(),
            diffusion: DiffusionConfig::default(),
            train: TrainConfig::default(),
            sample: SampleConfig::default(),
            classifier: ClassifierConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// Which IDX dataset a `format = "idx"` config reads: it names the classes and the default
/// folder. Both are 28x28 greyscale with ten classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    Mnist,
    FashionMnist,
}

impl DatasetKind {
    /// Where `scripts/setup.sh` puts the IDX files, relative to the repository root.
    pub fn default_root(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "datasets/mnist",
            DatasetKind::FashionMnist => "datasets/fashion-mnist",
        }
    }
}

/// How the files under `data.root` are laid out, i.e. which reader loads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// LeCun's IDX files (MNIST, Fashion-MNIST), raw or gzipped: `train-images-idx3-ubyte`,
    /// `train-labels-idx1-ubyte` and the `t10k-*` test pair. Greyscale.
    Idx,
    /// The CIFAR-10 binary version: `data_batch_*.bin` (training) and `test_batch.bin`, records of
    /// one label byte and 3x32x32 planar RGB pixels; class names from `batches.meta.txt`. RGB.
    Cifar10,
    /// One sub-folder per class of PNG/JPEG files; classes are the sorted folder names. Images are
    /// converted to `model.image_channels` (grey or RGB).
    ImageFolder,
}

impl DataFormat {
    /// The name a config file uses.
    pub fn name(self) -> &'static str {
        match self {
            DataFormat::Idx => "idx",
            DataFormat::Cifar10 => "cifar10",
            DataFormat::ImageFolder => "image-folder",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// The reader: "idx", "cifar10" or "image-folder".
    pub format: DataFormat,
    /// For `format = "idx"`: which dataset (class names and default folder).
    pub dataset: DatasetKind,
    /// Folder with the data files; relative paths are resolved against the working directory.
    /// Empty means the default folder under `datasets/` ("idx", "cifar10"); "image-folder" needs
    /// one.
    pub root: PathBuf,
    /// "image-folder" only: a second folder of class sub-folders (the same class names) used as
    /// the test split by `ember classifier train` and `ember eval`. Empty: no test split.
    pub test_root: PathBuf,
    /// Train on the first `limit` training images only (0 = all). For smoke tests.
    pub limit: usize,
    /// Flip each training image left-right with probability 1/2 (seeded per step and row).
    /// Not for digits, whose mirror images are not digits.
    pub random_flip: bool,
    /// Data-loader threads: 0 batches on the training thread; 1 (or more, which acts as 1)
    /// prepares the next batches on a background thread of Burn's data loader while the model
    /// trains. More would make a step's batch depend on thread timing (see ember-train).
    pub num_workers: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            format: DataFormat::Idx,
            dataset: DatasetKind::Mnist,
            root: PathBuf::new(),
            test_root: PathBuf::new(),
            limit: 0,
            random_flip: false,
            num_workers: 0,
        }
    }
}

impl DataConfig {
    /// The folder this config reads.
    pub fn resolved_root(&self) -> PathBuf {
        if !self.root.as_os_str().is_empty() {
            return self.root.clone();
        }
        match self.format {
            DataFormat::Idx => PathBuf::from(self.dataset.default_root()),
            DataFormat::Cifar10 => PathBuf::from("datasets/cifar10"),
            // Rejected by validation; kept total for callers that skip it.
            DataFormat::ImageFolder => PathBuf::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Number of real classes; the class embedding has one more row, the null class.
    pub num_classes: usize,
    /// Image channels (1 for MNIST) and side length in pixels.
    pub image_channels: usize,
    pub image_size: usize,
    /// Channels of the first level; level `i` has `base_channels * channel_mults[i]`.
    pub base_channels: usize,
    pub channel_mults: Vec<usize>,
    /// Residual blocks per level on the down path (the up path has one more, as in DDPM).
    pub blocks_per_level: usize,
    /// Levels (0 = full resolution) whose residual blocks are followed by self-attention.
    pub attention_levels: Vec<usize>,
    pub attention_heads: usize,
    /// GroupNorm groups; every channel count must be a multiple of it.
    pub norm_groups: usize,
    pub dropout: f64,
    /// How a residual block takes the time + class embedding: `false` adds a per-channel bias
    /// after its first conv (DDPM); `true` scales and shifts its second GroupNorm's output,
    /// `norm(h) * (1 + scale) + shift` (adaptive GroupNorm; Dhariwal & Nichol 2021, section 3).
    pub scale_shift_norm: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            num_classes: 10,
            image_channels: 1,
            image_size: 28,
            base_channels: 32,
            channel_mults: vec![1, 2, 2],
            blocks_per_level: 1,
            attention_levels: vec![2],
            attention_heads: 4,
            norm_groups: 8,
            dropout: 0.0,
            scale_shift_norm: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BetaSchedule {
    /// DDPM's linear betas from `beta_start` to `beta_end`.
    Linear,
    /// Nichol & Dhariwal's cosine alpha-bar schedule (betas clipped at 0.999).
    Cosine,
}

/// What the network predicts (and is trained to predict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prediction {
    /// The noise `eps` (Ho et al. 2020).
    Epsilon,
    /// The velocity `v = sqrt(abar) eps - sqrt(1 - abar) x0` (Salimans & Ho 2022).
    V,
    /// The clean image `x0`.
    X0,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiffusionConfig {
    /// Number of diffusion steps T.
    pub timesteps: usize,
    pub beta_schedule: BetaSchedule,
    pub beta_start: f64,
    pub beta_end: f64,
    /// "epsilon", "v" or "x0": the network's output and training target.
    pub prediction: Prediction,
    /// Rescale the schedule so its last timestep is pure noise (`abar_T = 0`; Lin et al. 2023,
    /// Algorithm 1), so the model learns to start from the noise sampling starts from. Needs
    /// `prediction = "v"` or `"x0"`: noise is unpredictable from pure noise.
    pub zero_terminal_snr: bool,
}

impl Default for DiffusionConfig {
    fn default() -> Self {
        Self {
            timesteps: 1000,
            beta_schedule: BetaSchedule::Linear,
            beta_start: 1e-4,
            beta_end: 0.02,
            prediction: Prediction::Epsilon,
            zero_terminal_snr: false,
        }
    }
}

/// Where tensors live. CUDA needs a binary built with `--features cuda`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub device: DeviceKind,
    /// Optimiser steps to train for.
    pub steps: usize,
    pub batch_size: usize,
    /// Peak AdamW learning rate, reached linearly over `warmup_steps`.
    pub learning_rate: f64,
    pub warmup_steps: usize,
    /// After the warm-up: "constant", or "cosine" (half a cosine from `learning_rate` down to
    /// `final_learning_rate` at step `train.steps`; a resume that changes `train.steps`
    /// stretches the rest of the decay).
    pub lr_schedule: LrSchedule,
    /// Where the cosine schedule ends; ignored by "constant".
    pub final_learning_rate: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip (as torch's `clip_grad_norm_`); 0 disables it.
    pub grad_clip_norm: f64,
    /// EMA decay; the effective decay is `min(ema_decay, (1 + step) / (10 + step))` so the EMA
    /// tracks the weights early in short runs.
    pub ema_decay: f64,
    /// Probability that a label is replaced by the null class (classifier-free dropout).
    pub p_uncond: f64,
    /// Print a progress line every this many steps.
    pub log_every: usize,
    /// Save a checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: usize,
    /// Keep the newest this many checkpoints; older ones are deleted (0 = keep all).
    pub keep_checkpoints: usize,
    /// Also keep every checkpoint whose step is a multiple of this, however old (0 = none):
    /// the checkpoints a time-to-quality curve (`ember eval --checkpoints all`) evaluates.
    pub keep_every: usize,
    /// What a non-finite (NaN or infinite) loss does: stop the run, or skip that batch.
    pub on_nonfinite_loss: NonFiniteLoss,
    /// Min-SNR-gamma loss weighting (Hang et al. 2023): each sample's loss is weighted so that
    /// low-noise timesteps (SNR above gamma) count as if their SNR were gamma; 0 = off (the
    /// plain mean squared error). The paper uses 5.
    pub min_snr_gamma: f64,
    /// How each row's timestep is drawn: "uniform" over `0..T` (Ho et al. 2020), or
    /// "logit-normal" (Esser et al. 2024, SD3, sec. 3.1), which favours middle noise levels.
    pub timestep_sampling: TimestepSampling,
    /// Mean and standard deviation of the logit-normal's normal: SD3's rectified-flow time is
    /// `t = sigmoid(N(logit_mean, logit_std))`, whose noise-to-signal ratio is `t / (1 - t)`, so
    /// `ln sigma ~ N(logit_mean, logit_std)`. Ember draws that sigma and trains on the first
    /// timestep of the beta schedule that is at least as noisy, so the values mean the same under
    /// every schedule. SD3 uses 0 and 1. Ignored by "uniform".
    pub logit_mean: f64,
    pub logit_std: f64,
}

/// How training draws timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimestepSampling {
    /// Every timestep equally often.
    Uniform,
    /// `ln sigma ~ N(logit_mean, logit_std)`, mapped to the schedule's timesteps.
    LogitNormal,
}

/// The learning rate after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// `learning_rate` until the end.
    Constant,
    /// Half a cosine from `learning_rate` to `final_learning_rate` at the last step
    /// (Loshchilov & Hutter 2017, without restarts).
    Cosine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NonFiniteLoss {
    /// Stop with an error; the last checkpoint stays as it was.
    Stop,
    /// Skip the batch (no update, no EMA step) and warn.
    Skip,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            device: DeviceKind::Cpu,
            steps: 2000,
            batch_size: 64,
            learning_rate: 1e-3,
            warmup_steps: 100,
            lr_schedule: LrSchedule::Constant,
            final_learning_rate: 0.0,
            weight_decay: 0.0,
            grad_clip_norm: 1.0,
            ema_decay: 0.999,
            p_uncond: 0.1,
            log_every: 50,
            checkpoint_every: 500,
            keep_checkpoints: 3,
            keep_every: 0,
            on_nonfinite_loss: NonFiniteLoss::Stop,
            min_snr_gamma: 0.0,
            timestep_sampling: TimestepSampling::Uniform,
            logit_mean: 0.0,
            logit_std: 1.0,
        }
    }
}

/// The sampler: every one calls the (guided) denoiser the same way, so each works with every
/// guidance option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerKind {
    /// Ho et al. 2020, ancestral sampling from the posterior q(x_prev | x_t, x0) (Algorithm 2,
    /// on the chosen subset of timesteps).
    Ddpm,
    /// Song et al. 2021, DDIM; `eta` = 0 deterministic, 1 DDPM-like.
    Ddim,
    /// Lu et al. 2022, DPM-Solver++(2M): second-order multistep, data prediction.
    #[serde(rename = "dpmpp-2m")]
    DpmppTwoM,
    /// Karras et al. 2022, Euler steps of the probability-flow ODE (Algorithm 1 without churn,
    /// first order).
    Euler,
    /// Karras et al. 2022, Heun's second-order method (Algorithm 1, no churn).
    Heun,
}

impl SamplerKind {
    /// Every sampler, in the order of the docs.
    pub const ALL: [SamplerKind; 5] = [
        SamplerKind::Ddpm,
        SamplerKind::Ddim,
        SamplerKind::DpmppTwoM,
        SamplerKind::Euler,
        SamplerKind::Heun,
    ];

    /// Whether `sample.eta` changes this sampler: only DDIM's (DDPM is DDIM with eta 1, the
    /// others are deterministic or have no such knob).
    pub fn reads_eta(self) -> bool {
        self == SamplerKind::Ddim
    }

    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Ddim => "ddim",
            SamplerKind::DpmppTwoM => "dpmpp-2m",
            SamplerKind::Euler => "euler",
            SamplerKind::Heun => "heun",
        }
    }
}

/// `"dpmpp-2m".parse::<SamplerKind>()` etc.: the config's names, for command-line flags.
macro_rules! parse_by_config_name {
    ($($t:ty),*) => {$(
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                use serde::de::IntoDeserializer;
                Self::deserialize(s.into_deserializer())
                    .map_err(|e: serde::de::value::Error| e.to_string())
            }
        }
    )*};
}
parse_by_config_name!(
    SamplerKind,
    TimestepSpacing,
    GuidanceMethod,
    GuidanceSchedule
);

/// Which of the T training timesteps a sampler visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimestepSpacing {
    /// Evenly spaced, starting at the last timestep T-1 (Lin et al. 2024).
    Trailing,
    /// Evenly spaced multiples of T/steps from 0 (DDIM's original spacing); starts below T-1.
    Leading,
    /// Rounded evenly spaced values from T-1 down to 0.
    Linspace,
    /// Karras et al. 2022's noise levels (rho = 7) between the schedule's smallest and largest,
    /// each mapped to the training timestep of the nearest noise level (repeats dropped).
    Karras,
}

/// How the guided prediction is made from the network's branches. Each method's scale is
/// `guidance_scale`, in Ember's convention (1 = the plain conditional model) except CFG++'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuidanceMethod {
    /// Classifier-free guidance (Ho & Salimans 2022): `D_u + s (D_c - D_u)`.
    Cfg,
    /// Adaptive projected guidance (Sadat et al. 2024): CFG's update split into the parts
    /// parallel and orthogonal to the conditional prediction, the parallel part weighted by
    /// `apg_eta`, with optional momentum and norm cap.
    Apg,
    /// CFG++ (Chung et al. 2024): the clean image of CFG at scale lambda = `guidance_scale` in
    /// [0, 1], re-noised with the unconditional noise.
    CfgPp,
    /// CFG-Zero* (Fan et al. 2025): the unconditional branch scaled by its optimal projection
    /// onto the conditional one, and the first `cfg_zero_init_steps` steps zeroed.
    CfgZeroStar,
    /// Autoguidance (Karras et al. 2024): `D_weak + s (D_good - D_weak)`, both conditional,
    /// the weak model from `guide_run`.
    Autoguidance,
}

impl GuidanceMethod {
    /// Every method, in the order of the docs.
    pub const ALL: [GuidanceMethod; 5] = [
        GuidanceMethod::Cfg,
        GuidanceMethod::Apg,
        GuidanceMethod::CfgPp,
        GuidanceMethod::CfgZeroStar,
        GuidanceMethod::Autoguidance,
    ];

    /// The name a config file uses.
    pub fn name(self) -> &'static str {
        match self {
            GuidanceMethod::Cfg => "cfg",
            GuidanceMethod::Apg => "apg",
            GuidanceMethod::CfgPp => "cfg-pp",
            GuidanceMethod::CfgZeroStar => "cfg-zero-star",
            GuidanceMethod::Autoguidance => "autoguidance",
        }
    }
}

/// The guidance scale as a function of the timestep's position `p = 1 - t / (T - 1)` (0 at the
/// noisiest training timestep, 1 at the cleanest), so a denoiser needs no step counter:
/// `w(t) = 1 + (s - 1) f(p)`, between no guidance (1) and the set scale `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuidanceSchedule {
    /// `w = s` at every timestep.
    Constant,
    /// `f = p`: no guidance at the noisiest timestep, rising to `s` at the cleanest (MAR's
    /// linear CFG, Li et al. 2024).
    LinearUp,
    /// `f = 1 - p`: `s` at the noisiest timestep, falling to no guidance at the cleanest.
    LinearDown,
    /// `f = (1 - cos(pi p)) / 2`: rising like linear-up, flat at both ends.
    Cosine,
}

/// How to sample and guide: the one settings type of sampling. The config's `[sample]` table,
/// the flags of `ember sample` and `ember eval` (which override it, then validation runs once)
/// and the training grids all build their samples from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SampleConfig {
    /// "ddpm", "ddim", "dpmpp-2m", "euler" or "heun".
    pub sampler: SamplerKind,
    /// "trailing", "leading", "linspace" or "karras".
    pub spacing: TimestepSpacing,
    /// Denoising steps (at most T; Karras spacing may visit fewer distinct timesteps).
    pub steps: usize,
    /// DDIM stochasticity: 0 = deterministic DDIM, 1 = DDPM-like. Other samplers ignore it.
    pub eta: f64,
    /// `eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)`; 1 = no guidance. For
    /// `guidance_method = "cfg-pp"` it is CFG++'s lambda in [0, 1].
    pub guidance_scale: f64,
    /// "cfg", "apg", "cfg-pp", "cfg-zero-star" or "autoguidance" (see [`GuidanceMethod`]).
    pub guidance_method: GuidanceMethod,
    /// The scale over the timesteps: "constant", "linear-up", "linear-down" or "cosine" (see
    /// [`GuidanceSchedule`]); applies to every method.
    pub guidance_schedule: GuidanceSchedule,
    /// APG only: the weight of the update's part parallel to the conditional prediction
    /// (0 = drop it, as the paper recommends; 1 = keep it, plain CFG without momentum or cap).
    pub apg_eta: f64,
    /// APG only: momentum beta of the running average of the update over the timesteps of one
    /// sampling run, `avg = diff + beta * avg_previous` (0 = off; the paper uses negative
    /// values, e.g. -0.5).
    pub apg_momentum: f64,
    /// APG only: the update's norm per sample is capped at this radius r (0 = no cap).
    pub apg_norm_threshold: f64,
    /// CFG-Zero* only: the prediction of this many of the noisiest steps is zeroed (a
    /// rectified-flow velocity of zero: the step leaves `x / (sqrt(abar) + sqrt(1 - abar))`
    /// unchanged); 0 = off.
    pub cfg_zero_init_steps: usize,
    /// Autoguidance only: the run directory of the weak model (an earlier checkpoint of the
    /// same run, or a run of a smaller config with the same classes, image shape and
    /// [diffusion]). Empty: none.
    pub guide_run: PathBuf,
    /// Autoguidance only: the step of the weak model's checkpoint in `guide_run`. Unset: its
    /// latest.
    pub guide_checkpoint: Option<usize>,
    /// Guide only while the noise level sigma = sqrt((1 - abar) / abar) lies in `[low, high]`
    /// (Kynkaanniemi et al. 2024); elsewhere one plain conditional forward. Empty: always.
    pub guidance_interval: Vec<f64>,
    /// CFG rescale phi (Lin et al. 2023): 0 = plain CFG, 1 = the guided prediction rescaled to
    /// the conditional prediction's standard deviation.
    pub cfg_rescale: f64,
    /// Dynamic thresholding (Saharia et al. 2022) of the predicted clean image at this
    /// percentile of |x0| per sample, e.g. 0.995; 0 = off (plain clipping to [-1, 1]).
    pub dynamic_threshold: f64,
    /// Negative prompting: this class's prediction replaces the unconditional branch of CFG.
    /// Unset: the null class.
    pub negative_class: Option<usize>,
    /// Classifier guidance (Dhariwal & Nichol 2021) on top of CFG with this scale, from a
    /// noise-aware classifier; 0 = off.
    pub classifier_guidance: f64,
    /// The noise-aware classifier of `classifier_guidance` (`ember classifier train --noisy`).
    /// Empty: `<data root>.classifier-noisy`.
    pub guidance_classifier: PathBuf,
    /// Images per class in a grid.
    pub per_class: usize,
    /// Seed of the initial noise, so grids are comparable across checkpoints and scales.
    pub seed: u64,
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self {
            sampler: SamplerKind::Ddim,
            spacing: TimestepSpacing::Trailing,
            steps: 50,
            eta: 0.0,
            guidance_scale: 3.0,
            guidance_method: GuidanceMethod::Cfg,
            guidance_schedule: GuidanceSchedule::Constant,
            apg_eta: 0.0,
            apg_momentum: 0.0,
            apg_norm_threshold: 0.0,
            cfg_zero_init_steps: 1,
            guide_run: PathBuf::new(),
            guide_checkpoint: None,
            guidance_interval: Vec::new(),
            cfg_rescale: 0.0,
            dynamic_threshold: 0.0,
            negative_class: None,
            classifier_guidance: 0.0,
            guidance_classifier: PathBuf::new(),
            per_class: 8,
            seed: 0,
        }
    }
}

/// The domain classifier that `ember eval` scores samples with (`ember classifier train`).
/// It always trains on the whole training split of `[data]` (`data.limit` does not apply) and is
/// tested on the whole test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierConfig {
    /// Passes over the training set.
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak AdamW learning rate; it decays to zero along a cosine over the training.
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Width of the penultimate layer: the features of the Frechet distance, precision and
    /// recall.
    pub feature_dim: usize,
    /// Seed of the initial weights and the shuffling.
    pub seed: u64,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            epochs: 3,
            batch_size: 64,
            learning_rate: 1e-3,
            weight_decay: 1e-4,
            feature_dim: 128,
            seed: 0,
        }
    }
}

/// What a run writes for watching it: TensorBoard events, periodic sample grids, the loss
/// history. None of it changes the training itself, so every key may change on resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Write TensorBoard event files into the run directory.
    pub tensorboard: bool,
    /// Sample a grid per scale every this many steps (0: only after the last step).
    pub sample_every: usize,
    /// Guidance scales of those grids; empty means `[sample.guidance_scale]`.
    pub sample_scales: Vec<f64>,
    /// Decay of the exponential moving average logged as the smoothed loss.
    pub loss_smoothing: f64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            tensorboard: true,
            sample_every: 0,
            sample_scales: Vec::new(),
            loss_smoothing: 0.95,
        }
    }
}

impl ExperimentConfig {
    /// The guidance scales of the grids a run writes while training.
    pub fn log_sample_scales(&self) -> Vec<f64> {
        if self.log.sample_scales.is_empty() {
            vec![self.sample.guidance_scale]
        } else {
            self.log.sample_scales.clone()
        }
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// The resolved config as TOML, as written into a run directory.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("an ExperimentConfig always serialises")
    }
}

/// Keys that may differ between a run's config and the config it is resumed with: they change
/// how long the run goes on and what it reports, not what it computes.
pub const RESUMABLE_KEYS: &[&str] = &[
    "train.steps",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.keep_every",
    "train.on_nonfinite_loss",
    "train.device",
    "data.root",
    "data.test_root",
    "data.num_workers",
    "sample",
    "log",
    "classifier",
];

impl ExperimentConfig {
    /// Dotted keys whose values differ between `self` and `other`, ignoring
    /// [`RESUMABLE_KEYS`]. Empty means `other` can continue a run of `self`.
    pub fn fixed_keys_changed(&self, other: &Self) -> Vec<String> {
        let a = toml::Value::try_from(self).expect("config serialises");
        let b = toml::Value::try_from(other).expect("config serialises");
        let mut changed = Vec::new();
        diff_values("", &a, &b, &mut changed);
        changed.retain(|key| {
            !RESUMABLE_KEYS
                .iter()
                .any(|r| key == r || key.starts_with(&format!("{r}.")))
        });
        changed
    }
}

fn diff_values(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
    match (a, b) {
        (toml::Value::Table(ta), toml::Value::Table(tb)) => {
            let mut keys: Vec<&String> = ta.keys().chain(tb.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (ta.get(k), tb.get(k)) {
                    (Some(va), Some(vb)) => diff_values(&path, va, vb, out),
                    _ => out.push(path),
                }
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ExperimentConfig, ConfigError> {
        ExperimentConfig::parse(text, Path::new("test.toml"))
    }

    /// Each `(lines, key)` case, under `[table]`, is refused with an error naming `key`.
    fn assert_each_refused_by_key(table: &str, cases: &[(&str, &str)]) {
        for (text, key) in cases {
            let err = parse(&format!("[{table}]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "[{table}] {text}: {err}");
        }
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        assert_eq!(parse("").unwrap(), ExperimentConfig::default());
    }

    #[test]
    fn unknown_key_is_rejected_by_name_and_file() {
        let err = parse("[train]\nstepz = 10\n").unwrap_err().to_string();
        assert!(err.contains("stepz"), "{err}");
        assert!(err.contains("test.toml"), "{err}");
    }

    #[test]
    fn unknown_table_is_rejected_by_name() {
        let err = parse("[trian]\nsteps = 10\n").unwrap_err().to_string();
        assert!(err.contains("trian"), "{err}");
    }

    #[test]
    fn logit_normal_timestep_sampling_parses_and_bad_spreads_are_rejected_by_key() {
        let c =
            parse("[train]\ntimestep_sampling = \"logit-normal\"\nlogit_mean = -0.5\n").unwrap();
        assert_eq!(c.train.timestep_sampling, TimestepSampling::LogitNormal);
        assert_eq!((c.train.logit_mean, c.train.logit_std), (-0.5, 1.0));
        assert_each_refused_by_key(
            "train",
            &[
                ("logit_std = 0.0", "train.logit_std"),
                ("logit_std = nan", "train.logit_std"),
                ("logit_mean = 1e9", "train.logit_mean"),
                ("logit_mean = inf", "train.logit_mean"),
            ],
        );
        let err = parse("[train]\ntimestep_sampling = \"normal\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("timestep_sampling"), "{err}");
    }

    #[test]
    fn p_uncond_outside_unit_interval_is_rejected() {
        let err = parse("[train]\np_uncond = 1.5\n").unwrap_err().to_string();
        assert!(err.contains("train.p_uncond"), "{err}");
    }

    #[test]
    fn log_table_is_validated_and_its_scales_default_to_the_sample_scale() {
        let err = parse("[log]\nloss_smoothing = 1.0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.loss_smoothing"), "{err}");
        let err = parse("[log]\nsample_scales = [1.0, nan]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.sample_scales"), "{err}");
        let cfg = parse("[sample]\nguidance_scale = 4.0\n").unwrap();
        assert_eq!(cfg.log_sample_scales(), vec![4.0]);
        let cfg = parse("[log]\nsample_scales = [1.0, 2.5]\n").unwrap();
        assert_eq!(cfg.log_sample_scales(), vec![1.0, 2.5]);
        // Logging never blocks a resume.
        assert!(
            ExperimentConfig::default()
                .fixed_keys_changed(&cfg)
                .is_empty()
        );
    }

    #[test]
    fn zero_classes_is_rejected() {
        let err = parse("[model]\nnum_classes = 0\n").unwrap_err().to_string();
        assert!(err.contains("model.num_classes"), "{err}");
    }

    #[test]
    fn enum_values_are_checked() {
        let err = parse("[diffusion]\nbeta_schedule = \"quadratic\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("quadratic"), "{err}");
        let cfg = parse("[diffusion]\nbeta_schedule = \"cosine\"\n").unwrap();
        assert_eq!(cfg.diffusion.beta_schedule, BetaSchedule::Cosine);
    }

    #[test]
    fn resolved_config_round_trips_through_toml() {
        let mut cfg = ExperimentConfig::default();
        cfg.train.steps = 7;
        cfg.model.attention_levels = vec![];
        let back = parse(&cfg.to_toml()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn shipped_configs_are_valid() {
        // At run time, not env!(): a test binary built in another clone sharing the target
        // directory is reused by cargo and would look in that clone.
        let manifest =
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
        let root = Path::new(&manifest).join("../../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&root).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                ExperimentConfig::load(&path).unwrap();
                n += 1;
            }
        }
        assert!(n >= 3, "expected the three shipped configs, found {n}");
    }

    #[test]
    fn resume_diff_names_fixed_keys_and_ignores_resumable_ones() {
        let a = ExperimentConfig::default();
        let mut b = a.clone();
        b.train.steps = 99;
        b.sample.guidance_scale = 7.0;
        assert!(a.fixed_keys_changed(&b).is_empty());
        b.model.base_channels = 64;
        b.diffusion.beta_schedule = BetaSchedule::Cosine;
        assert_eq!(
            a.fixed_keys_changed(&b),
            vec!["diffusion.beta_schedule", "model.base_channels"]
        );
    }

    #[test]
    fn classifier_table_is_validated_and_resumable() {
        let err = parse("[classifier]\nepochs = 0\n").unwrap_err().to_string();
        assert!(err.contains("classifier.epochs"), "{err}");
        let err = parse("[classifier]\nepoch = 2\n").unwrap_err().to_string();
        assert!(err.contains("epoch"), "{err}");
        let cfg = parse("[classifier]\nepochs = 5\nfeature_dim = 64\n").unwrap();
        assert_eq!((cfg.classifier.epochs, cfg.classifier.feature_dim), (5, 64));
        assert!(
            ExperimentConfig::default()
                .fixed_keys_changed(&cfg)
                .is_empty()
        );
    }

    #[test]
    fn sampler_options_parse_and_validate() {
        assert_eq!(
            "dpmpp-2m".parse::<SamplerKind>(),
            Ok(SamplerKind::DpmppTwoM)
        );
        assert_eq!(
            "karras".parse::<TimestepSpacing>(),
            Ok(TimestepSpacing::Karras)
        );
        let err = "plms".parse::<SamplerKind>().unwrap_err();
        assert!(err.contains("plms") && err.contains("heun"), "{err}");
        let cfg = parse("[sample]\nsampler = \"heun\"\nspacing = \"karras\"\nguidance_interval = [0.3, 5.0]\ncfg_rescale = 0.7\n").unwrap();
        assert_eq!(cfg.sample.sampler.name(), "heun");
        assert_each_refused_by_key(
            "sample",
            &[
                ("guidance_interval = [5.0, 0.3]", "sample.guidance_interval"),
                ("guidance_interval = [1.0]", "sample.guidance_interval"),
                ("cfg_rescale = 1.5", "sample.cfg_rescale"),
                ("dynamic_threshold = 0.2", "sample.dynamic_threshold"),
            ],
        );
    }

    #[test]
    fn guidance_methods_parse_and_contradictions_are_refused_by_key() {
        assert_eq!(
            "cfg-zero-star".parse::<GuidanceMethod>(),
            Ok(GuidanceMethod::CfgZeroStar)
        );
        assert_eq!(
            "linear-up".parse::<GuidanceSchedule>(),
            Ok(GuidanceSchedule::LinearUp)
        );
        for method in GuidanceMethod::ALL {
            assert_eq!(method.name().parse::<GuidanceMethod>(), Ok(method));
        }
        let err = "pag".parse::<GuidanceMethod>().unwrap_err();
        assert!(err.contains("pag") && err.contains("autoguidance"), "{err}");
        let cfg = parse(
            "[sample]\nguidance_method = \"apg\"\napg_eta = 0.0\napg_momentum = -0.5\napg_norm_threshold = 2.5\nguidance_schedule = \"cosine\"\n",
        )
        .unwrap();
        assert_eq!(cfg.sample.guidance_method, GuidanceMethod::Apg);
        let cfg = parse("[sample]\nguidance_method = \"autoguidance\"\nguide_run = \"runs/small\"\nguide_checkpoint = 500\n").unwrap();
        assert_eq!(cfg.sample.guide_checkpoint, Some(500));
        assert_eq!(parse(&cfg.to_toml()).unwrap(), cfg);
        assert_each_refused_by_key(
            "sample",
            &[
                ("guidance_method = \"cfg-pp\"", "sample.guidance_scale"),
                (
                    "guidance_method = \"cfg-pp\"\nguidance_scale = 0.5\ncfg_rescale = 0.7",
                    "sample.cfg_rescale",
                ),
                (
                    "guidance_method = \"apg\"\ncfg_rescale = 0.7",
                    "sample.cfg_rescale",
                ),
                ("apg_eta = 1.5", "sample.apg_eta"),
                ("apg_momentum = -1.0", "sample.apg_momentum"),
                ("apg_norm_threshold = -1.0", "sample.apg_norm_threshold"),
                (
                    "guidance_method = \"cfg-zero-star\"\nsteps = 4\ncfg_zero_init_steps = 4",
                    "sample.cfg_zero_init_steps",
                ),
                ("guidance_method = \"autoguidance\"", "sample.guide_run"),
                (
                    "guidance_method = \"autoguidance\"\nguide_run = \"w\"\nnegative_class = 1",
                    "sample.negative_class",
                ),
                ("guide_run = \"w\"", "sample.guide_run"),
                ("guide_checkpoint = 100", "sample.guide_checkpoint"),
                ("guidance_schedule = \"exponential\"", "exponential"),
            ],
        );
        // CFG++'s lambda bounds the training grids' scales too.
        let err = parse("[sample]\nguidance_method = \"cfg-pp\"\nguidance_scale = 0.5\n[log]\nsample_scales = [0.5, 3.0]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.sample_scales"), "{err}");
        // Other methods' keys are checked for range, then ignored.
        parse("[sample]\napg_eta = 1.0\ncfg_zero_init_steps = 80\n").unwrap();
    }

    #[test]
    fn scale_labels_are_short_and_exact() {
        for (scale, label) in [
            (3.0, "3"),
            (1.5, "1.5"),
            (0.0, "0"),
            (-2.25, "-2.25"),
            (1e-250, "1e-250"),
            (123456.789, "123456.789"),
            (1234567.891234, "1.234567891234e6"),
        ] {
            assert_eq!(scale_label(scale), label);
        }
        for scale in [1e-250, 0.1 + 0.2, 7.0 / 3.0, 999.999_999_9] {
            let label = scale_label(scale);
            assert!(label.len() <= 24, "{label}");
            assert_eq!(label.parse::<f64>().unwrap(), scale, "{label}");
        }
    }

    #[test]
    fn values_beyond_the_limits_are_refused_by_key() {
        for (text, key) in [
            ("[model]\nnum_classes = 1000000000", "model.num_classes"),
            ("[model]\nimage_size = 100000", "model.image_size"),
            ("[model]\nbase_channels = 100000", "model.base_channels"),
            (
                "[model]\nchannel_mults = [1, 2, 4, 8, 16, 32, 64, 128, 256]",
                "model.channel_mults",
            ),
            (
                "[model]\nbase_channels = 512\nchannel_mults = [1, 16]",
                "model.channel_mults",
            ),
            ("[model]\nblocks_per_level = 100", "model.blocks_per_level"),
            ("[diffusion]\ntimesteps = 2000000000", "diffusion.timesteps"),
            ("[train]\nbatch_size = 10000000", "train.batch_size"),
            ("[sample]\nper_class = 1000000000", "sample.per_class"),
            ("[sample]\nguidance_scale = 1e300", "sample.guidance_scale"),
            ("[log]\nsample_scales = [1.0, -5000.0]", "log.sample_scales"),
            (
                "[classifier]\nfeature_dim = 100000",
                "classifier.feature_dim",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
            assert!(err.contains("expected"), "{text}: {err}");
        }
        // A 65-entry channel_mults used to wrap `1 << 64` inside validation.
        let mults = vec!["1"; 65].join(", ");
        let err = parse(&format!("[model]\nchannel_mults = [{mults}]"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.channel_mults"), "{err}");
    }

    #[test]
    fn guidance_conventions_convert() {
        assert_eq!(ho_salimans_w_to_scale(0.0), 1.0);
    }
}
