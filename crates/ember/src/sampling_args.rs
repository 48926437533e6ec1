//! The sampling settings of `ember sample` and `ember eval`: one set of flags over the run's
//! `[sample]` table (`ember_config::SampleConfig`), validated once with the table, so an error
//! names the flag that set the value (or the config file that did); class names; the
//! noise-aware classifier of classifier guidance.

use anyhow::{Result, bail};
use burn::prelude::Device;
use clap::Args;
use ember_config::{ExperimentConfig, SampleConfig, SamplerKind, TimestepSpacing};
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
    /// one conditional forward per step [default: sample.guidance_interval, i.e. always].
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
            settings.guidance_interval = v.clone();
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
