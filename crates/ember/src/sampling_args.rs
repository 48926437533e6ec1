//! The sampling settings of `ember sample` and `ember eval`: one set of flags over the run's
//! `[sample]` table (`ember_config::SampleConfig`), validated once with the table, so an error
//! names the flag that set the value (or the config file that did); class names; the
//! noise-aware classifier of classifier guidance.

use anyhow::{Context, Result, bail};
use burn::prelude::Device;
use clap::Args;
use ember_config::{
    ExperimentConfig, GuidanceMethod, GuidanceSchedule, SampleConfig, SamplerKind, TimestepSpacing,
};
use ember_train::RunDir;
use std::path::{Path, PathBuf};

/// The flags `ember sample` and `ember eval` share; each overrides one key of the run's
/// `[sample]` table.
#[derive(Args, Debug, Clone, Default)]
pub struct SamplingArgs {
    /// Sampler: ddpm, ddim, dpmpp-2m, euler or heun [default: sample.sampler].
    #[arg(long)]
    pub sampler: Option<SamplerKind>,
    /// Timestep spacing: trailing, leading, linspace or karras [default: sample.spacing].
    #[arg(long)]
    pub spacing: Option<TimestepSpacing>,
    /// Denoising steps [default: sample.steps].
    #[arg(long)]
    pub steps: Option<usize>,
    /// DDIM eta: 0 deterministic, 1 DDPM-like [default: sample.eta].
    #[arg(long)]
    pub eta: Option<f64>,
    /// Seed of the noise; image j of class c always draws the same noise under one seed
    /// [default: sample.seed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Guide only at noise levels sigma in LOW,HIGH (Kynkaanniemi et al. 2024); outside it,
    /// one conditional forward per step; `0,inf` is every level, plain guidance, which overrides
    /// a config's interval [default: sample.guidance_interval, i.e. always].
    #[arg(long, value_delimiter = ',', value_name = "LOW,HIGH")]
    pub guidance_interval: Option<Vec<f64>>,
    /// CFG rescale phi in [0, 1] (Lin et al. 2023) [default: sample.cfg_rescale].
    #[arg(long)]
    pub cfg_rescale: Option<f64>,
    /// Dynamic thresholding percentile, e.g. 0.995 (Imagen); 0 = off
    /// [default: sample.dynamic_threshold].
    #[arg(long)]
    pub dynamic_threshold: Option<f64>,
    /// Class (number or name) whose prediction replaces the unconditional branch
    /// (negative prompting) [default: sample.negative_class, i.e. the null class].
    #[arg(long)]
    pub negative_class: Option<String>,
    /// Classifier guidance (Dhariwal & Nichol 2021) with this scale: adds
    /// `-scale * sqrt(1 - abar) * grad log p(class | x_t)` of a noise-aware classifier to the
    /// noise, on top of CFG (with --guidance 0, the unconditional model guided by the classifier
    /// alone); 0 = off [default: sample.classifier_guidance].
    #[arg(long)]
    pub classifier_guidance: Option<f64>,
    /// The noise-aware classifier of --classifier-guidance [default: sample.guidance_classifier,
    /// or <data root>.classifier-noisy from `ember classifier train --noisy`].
    #[arg(long)]
    pub guidance_classifier: Option<PathBuf>,
    /// Guidance method: cfg, apg (adaptive projected guidance), cfg-pp (CFG++; the scale is its
    /// lambda in [0, 1]), cfg-zero-star or autoguidance (needs --guide-run)
    /// [default: sample.guidance_method].
    #[arg(long)]
    pub guidance_method: Option<GuidanceMethod>,
    /// The scale over the timesteps: constant, linear-up, linear-down or cosine, between 1 (no
    /// guidance) and the scale [default: sample.guidance_schedule].
    #[arg(long)]
    pub guidance_schedule: Option<GuidanceSchedule>,
    /// APG: weight of the update's part parallel to the conditional prediction, in [0, 1]
    /// [default: sample.apg_eta].
    #[arg(long)]
    pub apg_eta: Option<f64>,
    /// APG: momentum of the update over the timesteps, in (-1, 1); 0 = off
    /// [default: sample.apg_momentum].
    #[arg(long, allow_negative_numbers = true)]
    pub apg_momentum: Option<f64>,
    /// APG: cap on the update's norm per sample; 0 = off [default: sample.apg_norm_threshold].
    #[arg(long)]
    pub apg_norm_threshold: Option<f64>,
    /// CFG-Zero*: zero the prediction of this many of the noisiest steps
    /// [default: sample.cfg_zero_init_steps].
    #[arg(long)]
    pub cfg_zero_init_steps: Option<usize>,
    /// Autoguidance: the run directory of the weak model (an earlier checkpoint of this run, or
    /// a smaller run with the same classes, image shape and [diffusion])
    /// [default: sample.guide_run].
    #[arg(long, value_name = "DIR")]
    pub guide_run: Option<PathBuf>,
    /// Autoguidance: the step of the weak model's checkpoint in --guide-run
    /// [default: sample.guide_checkpoint, or its latest].
    #[arg(long, value_name = "STEP")]
    pub guide_checkpoint: Option<usize>,
}

/// `[sample]` keys and the flags that set them, for naming a flag in an error.
const FLAGS: &[(&str, &str)] = &[
    ("sample.sampler", "--sampler"),
    ("sample.spacing", "--spacing"),
    ("sample.steps", "--steps"),
    ("sample.eta", "--eta"),
    ("sample.seed", "--seed"),
    ("sample.guidance_interval", "--guidance-interval"),
    ("sample.cfg_rescale", "--cfg-rescale"),
    ("sample.dynamic_threshold", "--dynamic-threshold"),
    ("sample.negative_class", "--negative-class"),
    ("sample.classifier_guidance", "--classifier-guidance"),
    ("sample.guidance_classifier", "--guidance-classifier"),
    ("sample.guidance_scale", "--guidance"),
    ("sample.per_class", "--per-class"),
    ("sample.guidance_method", "--guidance-method"),
    ("sample.guidance_schedule", "--guidance-schedule"),
    ("sample.apg_eta", "--apg-eta"),
    ("sample.apg_momentum", "--apg-momentum"),
    ("sample.apg_norm_threshold", "--apg-norm-threshold"),
    ("sample.cfg_zero_init_steps", "--cfg-zero-init-steps"),
    ("sample.guide_run", "--guide-run"),
    ("sample.guide_checkpoint", "--guide-checkpoint"),
];

impl SamplingArgs {
    /// Applies the flags given onto `settings`; `--negative-class` is looked up in `names`.
    /// Returns the `[sample]` keys the flags set.
    pub fn apply(
        &self,
        settings: &mut SampleConfig,
        names: &[String],
        run: &RunDir,
    ) -> Result<Vec<&'static str>> {
        let mut set = Vec::new();
        let mut mark = |key: &'static str| set.push(key);
        if let Some(v) = self.sampler {
            settings.sampler = v;
            mark("sample.sampler");
        }
        if let Some(v) = self.spacing {
            settings.spacing = v;
            mark("sample.spacing");
        }
        if let Some(v) = self.steps {
            settings.steps = v;
            mark("sample.steps");
        }
        if let Some(v) = self.eta {
            settings.eta = v;
            mark("sample.eta");
        }
        if let Some(v) = self.seed {
            settings.seed = v;
            mark("sample.seed");
        }
        if let Some(v) = &self.guidance_interval {
            // Every noise level is no interval at all: stored as the config's "always" (empty),
            // so the settings an eval records are those of plain guidance.
            settings.guidance_interval = match v[..] {
                [low, high] if low == 0.0 && high == f64::INFINITY => Vec::new(),
                _ => v.clone(),
            };
            mark("sample.guidance_interval");
        }
        if let Some(v) = self.cfg_rescale {
            settings.cfg_rescale = v;
            mark("sample.cfg_rescale");
        }
        if let Some(v) = self.dynamic_threshold {
            settings.dynamic_threshold = v;
            mark("sample.dynamic_threshold");
        }
        if let Some(v) = &self.negative_class {
            settings.negative_class = Some(resolve_class(v, names, run, "--negative-class")?);
            mark("sample.negative_class");
        }
        if let Some(v) = self.classifier_guidance {
            settings.classifier_guidance = v;
            mark("sample.classifier_guidance");
        }
        if let Some(v) = &self.guidance_classifier {
            settings.guidance_classifier = v.clone();
            mark("sample.guidance_classifier");
        }
        if let Some(v) = self.guidance_method {
            settings.guidance_method = v;
            mark("sample.guidance_method");
        }
        if let Some(v) = self.guidance_schedule {
            settings.guidance_schedule = v;
            mark("sample.guidance_schedule");
        }
        if let Some(v) = self.apg_eta {
            settings.apg_eta = v;
            mark("sample.apg_eta");
        }
        if let Some(v) = self.apg_momentum {
            settings.apg_momentum = v;
            mark("sample.apg_momentum");
        }
        if let Some(v) = self.apg_norm_threshold {
            settings.apg_norm_threshold = v;
            mark("sample.apg_norm_threshold");
        }
        if let Some(v) = self.cfg_zero_init_steps {
            settings.cfg_zero_init_steps = v;
            mark("sample.cfg_zero_init_steps");
        }
        if let Some(v) = &self.guide_run {
            settings.guide_run = v.clone();
            mark("sample.guide_run");
        }
        if let Some(v) = self.guide_checkpoint {
            settings.guide_checkpoint = Some(v);
            mark("sample.guide_checkpoint");
        }
        Ok(set)
    }
}

/// Validates the settings once, after the flags were applied: an error on a key a flag set
/// names the flag, any other names the run's config file and the key.
pub fn validate_settings(
    config: &ExperimentConfig,
    from_flags: &[&str],
    run: &RunDir,
) -> Result<()> {
    let Err(e) = config
        .sample
        .validate(config.diffusion.timesteps, config.model.num_classes)
    else {
        return Ok(());
    };
    match FLAGS.iter().find(|(key, _)| *key == e.key) {
        Some((key, flag)) if from_flags.contains(key) => bail!("{flag}: {}", e.message),
        // A value of the config that a flag made wrong (a method with other limits): say
        // which flag overrides it.
        Some((_, flag)) if !from_flags.is_empty() => bail!(
            "invalid config file {}: key `{}`: {} (or pass {flag})",
            run.config_path().display(),
            e.key,
            e.message
        ),
        _ => bail!(
            "invalid config file {}: key `{}`: {}",
            run.config_path().display(),
            e.key,
            e.message
        ),
    }
}

/// The noise-aware classifier classifier guidance asks for (`sample.classifier_guidance > 0`),
/// from `sample.guidance_classifier` or the default place, checked against the run: trained on
/// the same diffusion process, classes and image shape. `None` when classifier guidance is off.
pub(crate) fn guidance_classifier(
    run: &RunDir,
    config: &ExperimentConfig,
    device: &Device,
) -> Result<Option<ember_eval::classifier::Classifier>> {
    let s = &config.sample;
    if s.classifier_guidance == 0.0 {
        return Ok(None);
    }
    let dir = if s.guidance_classifier.as_os_str().is_empty() {
        default_classifier(&config.data.resolved_root(), true)?
    } else {
        s.guidance_classifier.clone()
    };
    load_noisy_classifier(&dir, run, config, device).map(Some)
}

/// The noise-aware classifier in `dir`, checked against the run.
fn load_noisy_classifier(
    dir: &Path,
    run: &RunDir,
    config: &ExperimentConfig,
    device: &Device,
) -> Result<ember_eval::classifier::Classifier> {
    let hint = run.config_path().display().to_string();
    let classifier = ember_eval::classifier::Classifier::load(dir, device, &hint)?;
    let meta = classifier.meta();
    let m = &config.model;
    match &meta.noise {
        None => bail!(
            "{} holds a classifier of clean images; classifier guidance needs a noise-aware one: `ember classifier train --config {hint} --noisy`",
            dir.display()
        ),
        Some(d) if *d != config.diffusion => bail!(
            "the classifier in {} was trained on another diffusion process than the run's [diffusion] ({d:?} vs {:?}); retrain it with `ember classifier train --config {hint} --noisy`",
            dir.display(),
            config.diffusion
        ),
        Some(_) => {}
    }
    if (meta.num_classes, meta.image_channels, meta.image_size)
        != (m.num_classes, m.image_channels, m.image_size)
    {
        bail!(
            "the classifier in {} takes {} classes of {}x{}x{} images, the run's model {} of {}x{}x{}",
            dir.display(),
            meta.num_classes,
            meta.image_channels,
            meta.image_size,
            meta.image_size,
            m.num_classes,
            m.image_channels,
            m.image_size,
            m.image_size
        );
    }
    Ok(classifier)
}

/// Autoguidance's weak model (`sample.guide_run`, at `sample.guide_checkpoint` or its latest
/// checkpoint; EMA weights), checked against the run it guides: the same classes (and class
/// names), image shape and diffusion process, or an error naming the mismatch. Returns the
/// model and a record of it (run, checkpoint and EMA checksum). `None` for other methods.
pub(crate) fn weak_model(
    run: &RunDir,
    config: &ExperimentConfig,
    device: &Device,
) -> Result<Option<(ember_model::UNet, String)>> {
    let s = &config.sample;
    if s.guidance_method != GuidanceMethod::Autoguidance {
        return Ok(None);
    }
    let dir = &s.guide_run;
    let (weak_run, weak) = RunDir::open(dir)
        .with_context(|| format!("the weak model of autoguidance, {}", dir.display()))?;
    let (m, w) = (&config.model, &weak.model);
    let mismatch = |what: &str, ours: String, theirs: String| {
        anyhow::anyhow!(
            "the weak model of autoguidance, {}, has {what} {theirs} where the guided run {} has {ours}; autoguidance needs a weak model of the same classes, image shape and diffusion process",
            dir.display(),
            run.root().display()
        )
    };
    if w.num_classes != m.num_classes {
        return Err(mismatch(
            "classes",
            m.num_classes.to_string(),
            w.num_classes.to_string(),
        ));
    }
    if w.image_size != m.image_size {
        return Err(mismatch(
            "image size",
            m.image_size.to_string(),
            w.image_size.to_string(),
        ));
    }
    if w.image_channels != m.image_channels {
        return Err(mismatch(
            "image channels",
            m.image_channels.to_string(),
            w.image_channels.to_string(),
        ));
    }
    if weak.diffusion != config.diffusion {
        return Err(mismatch(
            "diffusion process",
            format!("{:?}", config.diffusion),
            format!("{:?}", weak.diffusion),
        ));
    }
    if let (Some(ours), Some(theirs)) = (run.class_names()?, weak_run.class_names()?)
        && ours != theirs
    {
        return Err(mismatch("class names", ours.join(","), theirs.join(",")));
    }
    let checkpoint = match s.guide_checkpoint {
        None => weak_run.latest_checkpoint()?,
        Some(step) => {
            let all = weak_run.checkpoints()?;
            match all.iter().find(|(s, _)| *s == step) {
                Some((_, path)) => path.clone(),
                None => bail!(
                    "--guide-checkpoint {step}: {} has no checkpoint of that step; it has steps {}",
                    weak_run.checkpoints_dir().display(),
                    all.iter()
                        .map(|(s, _)| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    };
    let state = ember_train::checkpoint::verify(&checkpoint)?;
    let model = ember_train::checkpoint::load_model(
        &weak,
        &checkpoint,
        ember_train::checkpoint::Weights::Ema,
        device,
    )?;
    let ema = ember_train::checkpoint::EMA_FILE;
    let record = format!(
        "{} {ema} {}",
        checkpoint.display(),
        state.checksums.get(ema).cloned().unwrap_or_default()
    );
    Ok(Some((model, record)))
}

/// The class names of a run: its classes.txt, or numbers for runs written before it existed.
/// A classes.txt with another number of lines than the model has classes is refused: picking
/// classes by name from it would select the wrong rows.
pub(crate) fn class_names(run: &RunDir, config: &ExperimentConfig) -> Result<Vec<String>> {
    let n = config.model.num_classes;
    match run.class_names()? {
        Some(names) if names.len() != n => bail!(
            "{} lists {} class names, but the run's model has {n} classes; the file is damaged",
            run.classes_path().display(),
            names.len()
        ),
        Some(names) => Ok(names),
        None => Ok((0..n).map(|i| i.to_string()).collect()),
    }
}

/// The `--class` values: each one a class name or number, or a comma-separated list of them.
/// A value that names a class as a whole is that class, so names with commas stay selectable.
pub(crate) fn resolve_classes(
    given: &[String],
    names: &[String],
    run: &RunDir,
) -> Result<Vec<usize>> {
    let mut classes = Vec::new();
    for value in given {
        if let Some(i) = names.iter().position(|n| class_key(n) == class_key(value)) {
            classes.push(i);
            continue;
        }
        for part in value.split(',') {
            classes.push(resolve_class(part, names, run, "--class")?);
        }
    }
    Ok(classes)
}

/// How class names compare: case-insensitive; spaces, `_` and `-` alike.
fn class_key(s: &str) -> String {
    s.trim().to_lowercase().replace([' ', '_'], "-")
}

/// A class given by name (case-insensitive; spaces, `_` and `-` alike) or by number.
pub(crate) fn resolve_class(
    given: &str,
    names: &[String],
    run: &RunDir,
    flag: &str,
) -> Result<usize> {
    if let Some(i) = names.iter().position(|n| class_key(n) == class_key(given)) {
        return Ok(i);
    }
    if let Ok(i) = given.trim().parse::<usize>() {
        return Ok(i);
    }
    let listed: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if *n == i.to_string() {
                n.clone()
            } else {
                format!("{i} {n}")
            }
        })
        .collect();
    bail!(
        "{flag} {given}: no class of that name in {}; the classes are: {}",
        run.classes_path().display(),
        listed.join(", ")
    )
}

/// The default classifier folder of a data folder, with the way out when only a classifier in
/// the old place (inside the data folder) exists.
pub(crate) fn default_classifier(root: &std::path::Path, noisy: bool) -> Result<PathBuf> {
    let dir = if noisy {
        ember_eval::classifier::default_noisy_dir(root)
    } else {
        ember_eval::classifier::default_dir(root)
    };
    let legacy = ember_eval::classifier::legacy_dir(root, noisy);
    if !dir.exists() && legacy.join(ember_eval::classifier::META_FILE).is_file() {
        bail!(
            "no classifier in {}: classifiers now live beside the data folder, not inside it (where an image-folder reader takes them for a class). Move yours with `mv {} {}`",
            dir.display(),
            legacy.display(),
            dir.display()
        );
    }
    Ok(dir)
}
