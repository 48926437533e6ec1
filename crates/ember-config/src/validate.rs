//! Validation, one function per config table, and the documented resource limits.
//!
//! Every value a user writes is untrusted until it is bounded here: the limits keep a typo
//! (`image_size = 100000`, `timesteps = 2000000000`) from turning into a multi-gigabyte
//! allocation or an arithmetic overflow before Ember has written a single file. Each error
//! carries its dotted key, so the command line can name the flag that set it.

use crate::*;

/// Upper bounds on config values (the README's "Bad input and exit codes" lists them).
pub mod limits {
    /// Labels are stored as `u16`, and the null class takes the index `num_classes`.
    pub const MAX_CLASSES: usize = 65_535;
    pub const MAX_IMAGE_SIZE: usize = 1024;
    pub const MAX_BASE_CHANNELS: usize = 1024;
    /// Channels of the widest level, `base_channels * max(channel_mults)`.
    pub const MAX_LEVEL_CHANNELS: usize = 4096;
    /// Entries of `channel_mults`: each level after the first halves the image.
    pub const MAX_LEVELS: usize = 8;
    pub const MAX_BLOCKS_PER_LEVEL: usize = 16;
    pub const MAX_TIMESTEPS: usize = 100_000;
    pub const MAX_BATCH_SIZE: usize = 65_536;
    /// Images per class of a grid (`sample.per_class`, `--per-class`).
    pub const MAX_PER_CLASS: usize = 1024;
    /// Guidance scales, in absolute value (`sample.guidance_scale`, `log.sample_scales`).
    pub const MAX_GUIDANCE_SCALE: f64 = 1000.0;
    pub const MAX_FEATURE_DIM: usize = 4096;
    pub const MAX_EPOCHS: usize = 100_000;
}

use limits::*;

/// A value that failed validation: its dotted key (`sample.steps`) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct KeyError {
    pub key: String,
    pub message: String,
}

pub(crate) fn bad(key: &str, message: impl Into<String>) -> KeyError {
    KeyError {
        key: key.to_string(),
        message: message.into(),
    }
}

fn at_most(key: &str, value: usize, max: usize) -> Result<(), KeyError> {
    if value > max {
        return Err(bad(key, format!("expected at most {max}, got {value}")));
    }
    Ok(())
}

fn positive_at_most(key: &str, value: usize, max: usize) -> Result<(), KeyError> {
    if value == 0 {
        return Err(bad(key, "expected at least 1"));
    }
    at_most(key, value, max)
}

/// A guidance scale: finite and within [`MAX_GUIDANCE_SCALE`].
pub fn check_guidance_scale(key: &str, scale: f64) -> Result<(), KeyError> {
    if !(scale.is_finite() && scale.abs() <= MAX_GUIDANCE_SCALE) {
        return Err(bad(
            key,
            format!(
                "expected a finite guidance scale in [-{MAX_GUIDANCE_SCALE}, {MAX_GUIDANCE_SCALE}], got {}",
                crate::scale_label(scale)
            ),
        ));
    }
    Ok(())
}

impl ModelConfig {
    pub fn validate(&self) -> Result<(), KeyError> {
        positive_at_most("model.num_classes", self.num_classes, MAX_CLASSES)?;
        if !(self.image_channels == 1 || self.image_channels == 3) {
            return Err(bad(
                "model.image_channels",
                format!("expected 1 (grey) or 3 (RGB), got {}", self.image_channels),
            ));
        }
        positive_at_most("model.image_size", self.image_size, MAX_IMAGE_SIZE)?;
        positive_at_most("model.base_channels", self.base_channels, MAX_BASE_CHANNELS)?;
        let mults = &self.channel_mults;
        if mults.is_empty() || mults.len() > MAX_LEVELS || mults.contains(&0) {
            return Err(bad(
                "model.channel_mults",
                format!(
                    "expected 1 to {MAX_LEVELS} positive multipliers, got {} entries",
                    mults.len()
                ),
            ));
        }
        for mult in mults {
            let ch = self.base_channels.saturating_mul(*mult);
            if ch > MAX_LEVEL_CHANNELS {
                return Err(bad(
                    "model.channel_mults",
                    format!(
                        "base_channels {} x {mult} = {ch} channels; expected at most {MAX_LEVEL_CHANNELS} per level",
                        self.base_channels
                    ),
                ));
            }
        }
        let downsamples = mults.len() - 1;
        if !self.image_size.is_multiple_of(1 << downsamples) {
            return Err(bad(
                "model.channel_mults",
                format!(
                    "{} levels halve the image {downsamples} times, but image_size {} is not divisible by {}",
                    mults.len(),
                    self.image_size,
                    1 << downsamples
                ),
            ));
        }
        positive_at_most(
            "model.blocks_per_level",
            self.blocks_per_level,
            MAX_BLOCKS_PER_LEVEL,
        )?;
        if let Some(level) = self.attention_levels.iter().find(|&&l| l >= mults.len()) {
            return Err(bad(
                "model.attention_levels",
                format!(
                    "level {level} does not exist; levels are 0..{}",
                    mults.len()
                ),
            ));
        }
        if self.norm_groups == 0 {
            return Err(bad("model.norm_groups", "expected at least 1"));
        }
        for mult in mults {
            let ch = self.base_channels * mult;
            if !ch.is_multiple_of(self.norm_groups) {
                return Err(bad(
                    "model.norm_groups",
                    format!(
                        "{ch} channels are not divisible into {} groups",
                        self.norm_groups
                    ),
                ));
            }
            if !self.attention_levels.is_empty()
                && (self.attention_heads == 0 || !ch.is_multiple_of(self.attention_heads))
            {
                return Err(bad(
                    "model.attention_heads",
                    format!(
                        "{ch} channels are not divisible into {} heads",
                        self.attention_heads
                    ),
                ));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(bad(
                "model.dropout",
                format!("expected [0, 1), got {}", self.dropout),
            ));
        }
        Ok(())
    }
}

impl DataConfig {
    pub fn validate(&self, model: &ModelConfig) -> Result<(), KeyError> {
        if self.format == DataFormat::ImageFolder && self.root.as_os_str().is_empty() {
            return Err(bad(
                "data.root",
                "format \"image-folder\" needs the folder that holds one sub-folder per class",
            ));
        }
        if self.format != DataFormat::ImageFolder && !self.test_root.as_os_str().is_empty() {
            return Err(bad(
                "data.test_root",
                format!(
                    "only format \"image-folder\" takes a separate test folder; \"{}\" reads its test split from data.root",
                    self.format.name()
                ),
            ));
        }
        let fixed_channels = match self.format {
            DataFormat::Idx => Some(1),
            DataFormat::Cifar10 => Some(3),
            DataFormat::ImageFolder => None,
        };
        if let Some(c) = fixed_channels.filter(|&c| c != model.image_channels) {
            return Err(bad(
                "model.image_channels",
                format!(
                    "data.format \"{}\" holds {c}-channel images, but model.image_channels is {}",
                    self.format.name(),
                    model.image_channels
                ),
            ));
        }
        Ok(())
    }
}

impl DiffusionConfig {
    pub fn validate(&self) -> Result<(), KeyError> {
        if self.timesteps < 2 || self.timesteps > MAX_TIMESTEPS {
            return Err(bad(
                "diffusion.timesteps",
                format!("expected 2 to {MAX_TIMESTEPS}, got {}", self.timesteps),
            ));
        }
        if self.beta_schedule == BetaSchedule::Linear
            && !(0.0 < self.beta_start && self.beta_start < self.beta_end && self.beta_end < 1.0)
        {
            return Err(bad(
                "diffusion.beta_end",
                format!(
                    "expected 0 < beta_start < beta_end < 1, got {} and {}",
                    self.beta_start, self.beta_end
                ),
            ));
        }
        if self.zero_terminal_snr && self.prediction == Prediction::Epsilon {
            return Err(bad(
                "diffusion.zero_terminal_snr",
                "needs diffusion.prediction = \"v\" or \"x0\": at zero terminal SNR the input is pure noise, from which the noise itself cannot be predicted",
            ));
        }
        Ok(())
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), KeyError> {
        if self.steps == 0 {
            return Err(bad("train.steps", "expected at least 1"));
        }
        positive_at_most("train.batch_size", self.batch_size, MAX_BATCH_SIZE)?;
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(bad(
                "train.learning_rate",
                format!("expected a positive number, got {}", self.learning_rate),
            ));
        }
        if !(self.final_learning_rate >= 0.0 && self.final_learning_rate <= self.learning_rate) {
            return Err(bad(
                "train.final_learning_rate",
                format!(
                    "expected 0 <= final_learning_rate <= learning_rate ({}), got {}",
                    self.learning_rate, self.final_learning_rate
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.p_uncond) {
            return Err(bad(
                "train.p_uncond",
                format!("expected [0, 1], got {}", self.p_uncond),
            ));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(bad(
                "train.ema_decay",
                format!("expected [0, 1), got {}", self.ema_decay),
            ));
        }
        if self.grad_clip_norm.is_nan() || self.grad_clip_norm < 0.0 {
            return Err(bad("train.grad_clip_norm", "expected >= 0 (0 disables)"));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(bad("train.weight_decay", "expected >= 0"));
        }
        if !(self.min_snr_gamma >= 0.0 && self.min_snr_gamma.is_finite()) {
            return Err(bad(
                "train.min_snr_gamma",
                format!("expected >= 0 (0 = off), got {}", self.min_snr_gamma),
            ));
        }
        // Bounded so that exp() of a few standard deviations stays finite and meaningful: beyond
        // |ln sigma| = 20 every draw lands on the schedule's first or last timestep.
        if self.logit_mean.is_nan() || self.logit_mean.abs() > 20.0 {
            return Err(bad(
                "train.logit_mean",
                format!("expected a number in [-20, 20], got {}", self.logit_mean),
            ));
        }
        if !(self.logit_std > 0.0 && self.logit_std <= 10.0) {
            return Err(bad(
                "train.logit_std",
                format!("expected a number in (0, 10], got {}", self.logit_std),
            ));
        }
        if self.log_every == 0 {
            return Err(bad("train.log_every", "expected at least 1"));
        }
        Ok(())
    }
}

impl SampleConfig {
    /// `timesteps` is the model's `diffusion.timesteps`, the most steps a sampler can take;
    /// `num_classes` its classes.
    pub fn validate(&self, timesteps: usize, num_classes: usize) -> Result<(), KeyError> {
        if self.steps == 0 || self.steps > timesteps {
            return Err(bad(
                "sample.steps",
                format!(
                    "expected 1..={timesteps} (diffusion.timesteps), got {}",
                    self.steps
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.eta) {
            return Err(bad(
                "sample.eta",
                format!("expected [0, 1], got {}", self.eta),
            ));
        }
        self.check_scale("sample.guidance_scale", self.guidance_scale)?;
        positive_at_most("sample.per_class", self.per_class, MAX_PER_CLASS)?;
        self.validate_method()?;
        match self.guidance_interval[..] {
            [] => {}
            [low, high] if 0.0 <= low && low <= high && high.is_finite() => {}
            _ => {
                return Err(bad(
                    "sample.guidance_interval",
                    format!(
                        "expected [] or [low, high] noise levels with 0 <= low <= high, got {:?}",
                        self.guidance_interval
                    ),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.cfg_rescale) {
            return Err(bad(
                "sample.cfg_rescale",
                format!("expected [0, 1], got {}", self.cfg_rescale),
            ));
        }
        if !(self.dynamic_threshold == 0.0 || (0.5..1.0).contains(&self.dynamic_threshold)) {
            return Err(bad(
                "sample.dynamic_threshold",
                format!(
                    "expected 0 (off) or a percentile in [0.5, 1), got {}",
                    self.dynamic_threshold
                ),
            ));
        }
        if let Some(c) = self.negative_class.filter(|&c| c >= num_classes) {
            return Err(bad(
                "sample.negative_class",
                format!("class {c} is out of range: the model has classes 0..{num_classes}"),
            ));
        }
        if !(self.classifier_guidance >= 0.0 && self.classifier_guidance <= MAX_GUIDANCE_SCALE) {
            return Err(bad(
                "sample.classifier_guidance",
                format!(
                    "expected a scale in [0, {MAX_GUIDANCE_SCALE}] (0 = off), got {}",
                    crate::scale_label(self.classifier_guidance)
                ),
            ));
        }
        Ok(())
    }
}

impl SampleConfig {
    /// A guidance scale for this method: finite, within the limit, and CFG++'s lambda in [0, 1].
    /// `key` names where the scale came from (`sample.guidance_scale`, or a sweep's flag).
    pub fn check_scale(&self, key: &str, scale: f64) -> Result<(), KeyError> {
        check_guidance_scale(key, scale)?;
        if self.guidance_method == GuidanceMethod::CfgPp && !(0.0..=1.0).contains(&scale) {
            return Err(bad(
                key,
                format!(
                    "guidance_method \"cfg-pp\" takes lambda in [0, 1] (0 = unconditional, 1 = the conditional clean image), got {}",
                    crate::scale_label(scale)
                ),
            ));
        }
        Ok(())
    }

    /// The guidance method's own keys, and the combinations that contradict it. Keys of other
    /// methods are range-checked but ignored.
    fn validate_method(&self) -> Result<(), KeyError> {
        use GuidanceMethod::*;
        let method = self.guidance_method;
        if !(0.0..=1.0).contains(&self.apg_eta) {
            return Err(bad(
                "sample.apg_eta",
                format!(
                    "expected [0, 1] (0 = drop the parallel part, 1 = keep it), got {}",
                    self.apg_eta
                ),
            ));
        }
        if !(self.apg_momentum > -1.0 && self.apg_momentum < 1.0) {
            return Err(bad(
                "sample.apg_momentum",
                format!(
                    "expected (-1, 1) (0 = off; the paper uses negative values), got {}",
                    self.apg_momentum
                ),
            ));
        }
        if !(self.apg_norm_threshold >= 0.0 && self.apg_norm_threshold.is_finite()) {
            return Err(bad(
                "sample.apg_norm_threshold",
                format!(
                    "expected a radius >= 0 (0 = no cap), got {}",
                    self.apg_norm_threshold
                ),
            ));
        }
        if method == CfgZeroStar && self.cfg_zero_init_steps >= self.steps {
            return Err(bad(
                "sample.cfg_zero_init_steps",
                format!(
                    "zeroing {} of {} steps leaves none to sample with; expected fewer than sample.steps",
                    self.cfg_zero_init_steps, self.steps
                ),
            ));
        }
        if self.cfg_rescale > 0.0 && !matches!(method, Cfg | Autoguidance) {
            return Err(bad(
                "sample.cfg_rescale",
                format!(
                    "CFG rescale applies to guidance_method \"cfg\" and \"autoguidance\", not \"{}\"; set it to 0",
                    method.name()
                ),
            ));
        }
        if method == Autoguidance {
            if let Some(c) = self.negative_class {
                return Err(bad(
                    "sample.negative_class",
                    format!(
                        "autoguidance has no unconditional branch for class {c} to replace: both of its models are conditional"
                    ),
                ));
            }
            if self.guide_run.as_os_str().is_empty() {
                return Err(bad(
                    "sample.guide_run",
                    "guidance_method \"autoguidance\" needs the weak model's run directory",
                ));
            }
        } else {
            if !self.guide_run.as_os_str().is_empty() {
                return Err(bad(
                    "sample.guide_run",
                    format!(
                        "a weak model guides only guidance_method \"autoguidance\", not \"{}\"",
                        method.name()
                    ),
                ));
            }
            if self.guide_checkpoint.is_some() {
                return Err(bad(
                    "sample.guide_checkpoint",
                    format!(
                        "a weak model guides only guidance_method \"autoguidance\", not \"{}\"",
                        method.name()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl LogConfig {
    pub fn validate(&self) -> Result<(), KeyError> {
        for scale in &self.sample_scales {
            check_guidance_scale("log.sample_scales", *scale)?;
        }
        if !(0.0..1.0).contains(&self.loss_smoothing) {
            return Err(bad(
                "log.loss_smoothing",
                format!("expected [0, 1), got {}", self.loss_smoothing),
            ));
        }
        Ok(())
    }
}

impl ClassifierConfig {
    pub fn validate(&self) -> Result<(), KeyError> {
        positive_at_most("classifier.epochs", self.epochs, MAX_EPOCHS)?;
        positive_at_most("classifier.batch_size", self.batch_size, MAX_BATCH_SIZE)?;
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(bad(
                "classifier.learning_rate",
                format!("expected a positive number, got {}", self.learning_rate),
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(bad("classifier.weight_decay", "expected >= 0"));
        }
        if !(2..=MAX_FEATURE_DIM).contains(&self.feature_dim) {
            return Err(bad(
                "classifier.feature_dim",
                format!("expected 2 to {MAX_FEATURE_DIM}, got {}", self.feature_dim),
            ));
        }
        Ok(())
    }
}

impl ExperimentConfig {
    /// Checks every value and cross-field constraint once, table by table, so later code can
    /// trust the values. `path` names the source in the error.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.validate_keys().map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: e.key,
            message: e.message,
        })
    }

    /// [`validate`](Self::validate) without a file: the error names only the key.
    pub fn validate_keys(&self) -> Result<(), KeyError> {
        self.model.validate()?;
        self.data.validate(&self.model)?;
        self.diffusion.validate()?;
        self.train.validate()?;
        self.sample
            .validate(self.diffusion.timesteps, self.model.num_classes)?;
        self.log.validate()?;
        for &scale in &self.log.sample_scales {
            self.sample.check_scale("log.sample_scales", scale)?;
        }
        self.classifier.validate()
    }
}
