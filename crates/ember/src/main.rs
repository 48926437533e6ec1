//! `ember`: train class-conditional diffusion models with classifier-free guidance, and sample
//! class-guided grids from them.

mod classifier_cmd;
mod eval_cmd;

use anyhow::{Context, Result, bail};
use burn::prelude::{Device, Tensor, TensorData};
use clap::{Parser, Subcommand, ValueEnum};
use ember_config::{DeviceKind, ExperimentConfig};
use ember_data::{ImageDataset, Split};
use ember_io::write_png;
use ember_monitor::progress::ProgressMode;
use ember_sample::{SampleRequest, sample_grid};
use ember_train::checkpoint::{Weights, load_model};
use ember_train::monitor::RunMonitor;
use ember_train::{RunDir, Trainer, format_duration, select_device};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "ember",
    version,
    about = "Train class-conditional diffusion models with classifier-free guidance (CFG)",
    long_about = "Train class-conditional diffusion models with classifier-free guidance (CFG).\n\n\
Guidance convention: eps = eps_uncond + s * (eps_cond - eps_uncond). s = 1 is the plain \
conditional model (no guidance), s = 0 the unconditional model, s > 1 strengthens the class."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
    /// Burn's flex CPU backend (default; needs no set-up).
    Cpu,
    /// NVIDIA GPU 0 (binary built with `--features cuda`).
    Cuda,
}

impl From<DeviceArg> for DeviceKind {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Cpu => DeviceKind::Cpu,
            DeviceArg::Cuda => DeviceKind::Cuda,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a TOML experiment config; writes a run directory with the resolved
    /// config, checkpoints and a guided sample grid of the final EMA weights.
    Train {
        /// Experiment config, e.g. configs/mnist.toml. With --resume it is optional (the run's
        /// own config.toml is used) and may only change resumable keys such as train.steps.
        #[arg(required_unless_present = "resume")]
        config: Option<PathBuf>,
        /// Continue the run in this directory from its newest usable checkpoint, exactly as if
        /// it had never stopped.
        #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["run_dir", "overwrite"])]
        resume: Option<PathBuf>,
        /// Run directory [default: runs/<config file stem>].
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Replace an existing run in the run directory.
        #[arg(long)]
        overwrite: bool,
        /// Device, overriding `train.device` of the config.
        #[arg(long, value_enum)]
        device: Option<DeviceArg>,
        /// Optimiser steps, overriding `train.steps` of the config.
        #[arg(long)]
        steps: Option<usize>,
    },
    /// Sample a PNG grid (one row per class) from a trained run's latest checkpoint.
    Sample {
        /// Run directory written by `ember train`.
        #[arg(long)]
        run: PathBuf,
        /// Guidance scale s: 1 = no guidance, 0 = unconditional [default: sample.guidance_scale].
        #[arg(long)]
        guidance: Option<f64>,
        /// Class to sample, by number or by name as in the run's classes.txt (repeat or
        /// comma-separate for several rows; a value that is itself a class name, commas and
        /// all, means that class) [default: every class].
        #[arg(long = "class")]
        classes: Vec<String>,
        /// Class (number or name) whose prediction replaces the unconditional branch
        /// (negative prompting).
        #[arg(long)]
        negative_class: Option<String>,
        /// Images per class (grid columns) [default: sample.per_class].
        #[arg(long)]
        per_class: Option<usize>,
        /// Sampler: ddpm, ddim, dpmpp-2m, euler or heun [default: sample.sampler].
        #[arg(long)]
        sampler: Option<ember_config::SamplerKind>,
        /// Timestep spacing: trailing, leading, linspace or karras [default: sample.spacing].
        #[arg(long)]
        spacing: Option<ember_config::TimestepSpacing>,
        /// Denoising steps [default: sample.steps].
        #[arg(long)]
        steps: Option<usize>,
        /// DDIM eta: 0 deterministic, 1 DDPM-like [default: sample.eta].
        #[arg(long)]
        eta: Option<f64>,
        /// Guide only at noise levels sigma in LOW,HIGH (Kynkaanniemi et al. 2024); outside it,
        /// one conditional forward per step [default: sample.guidance_interval, i.e. always].
        #[arg(long, value_delimiter = ',', value_name = "LOW,HIGH")]
        guidance_interval: Option<Vec<f64>>,
        /// CFG rescale phi in [0, 1] (Lin et al. 2023) [default: sample.cfg_rescale].
        #[arg(long)]
        cfg_rescale: Option<f64>,
        /// Dynamic thresholding percentile, e.g. 0.995 (Imagen); 0 = off
        /// [default: sample.dynamic_threshold].
        #[arg(long)]
        dynamic_threshold: Option<f64>,
        /// Seed of the initial noise [default: sample.seed].
        #[arg(long)]
        seed: Option<u64>,
        /// img2img: start from this PNG/JPEG (fitted to the model's size and channels), noised
        /// to the step --strength lets the sampler start at, for every row.
        #[arg(long)]
        init: Option<PathBuf>,
        /// img2img strength in (0, 1]: the fraction of the steps that run; higher strays
        /// further from --init [default: 0.6, or 1 with --mask].
        #[arg(long, requires = "init")]
        strength: Option<f64>,
        /// Classifier guidance (Dhariwal & Nichol 2021) with this scale: adds
        /// `-scale * sqrt(1 - abar) * grad log p(class | x_t)` of a noise-aware classifier to the
        /// noise, on top of --guidance (use --guidance 0 to guide the unconditional model).
        #[arg(long)]
        classifier_guidance: Option<f64>,
        /// The noise-aware classifier of --classifier-guidance
        /// [default: <data root>.classifier-noisy, from `ember classifier train --noisy`].
        #[arg(long, requires = "classifier_guidance")]
        guidance_classifier: Option<PathBuf>,
        /// Inpainting: a PNG/JPEG mask of the --init image; white (> 127) is regenerated, the
        /// rest kept.
        #[arg(long, requires = "init")]
        mask: Option<PathBuf>,
        /// Checkpoint folder to load [default: the run's latest, checkpoints/latest].
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Use the raw training weights instead of the EMA weights.
        #[arg(long)]
        raw: bool,
        /// Load the weights from a safetensors file written by `ember export` instead of a
        /// checkpoint (the run still supplies the config).
        #[arg(long, conflicts_with_all = ["checkpoint", "raw"])]
        weights: Option<PathBuf>,
        /// Device to sample on.
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceArg,
        /// Output PNG file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Export a checkpoint's EMA (or raw) weights as a safetensors file; tensor names are the
    /// module paths, e.g. `class_embedding.weight` (last row = null class).
    Export {
        /// Run directory written by `ember train`.
        #[arg(long)]
        run: PathBuf,
        /// Checkpoint folder [default: the run's latest].
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Export the raw training weights instead of the EMA weights.
        #[arg(long)]
        raw: bool,
        /// Output file, e.g. model.safetensors.
        #[arg(long)]
        out: PathBuf,
    },
    /// Compare two safetensors weight files tensor by tensor; prints the largest absolute
    /// difference (0 means bit-identical values).
    Compare { a: PathBuf, b: PathBuf },
    /// The domain classifier that `ember eval` scores samples with (`ember classifier train`).
    Classifier(classifier_cmd::ClassifierArgs),
    /// Guidance sweep: sample every class at each scale from the same noise and report class
    /// accuracy, Frechet distance, precision/recall and diversity (eval.csv, eval.json, eval.png,
    /// a grid per scale, TensorBoard scalars); an interrupted eval resumes where it stopped.
    Eval(eval_cmd::EvalArgs),
}

fn main() {
    ember_train::allocator::keep_freed_memory();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("error: {}", error_chain(&err));
        std::process::exit(exit_code(&err));
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message before
/// it already quotes (many errors here name their source themselves).
fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Exit codes: 0 done; 2 bad input (arguments, config, data, paths), reported before anything
/// is written; 1 a failure while working (a non-finite loss, a disk filling up mid-run).
/// Command-line syntax errors also exit with 2 (clap).
fn exit_code(err: &anyhow::Error) -> i32 {
    if err.downcast_ref::<WhileWorking>().is_some() {
        1
    } else {
        2
    }
}

/// Context that marks an error as a failure of the work itself rather than of its input.
#[derive(Debug)]
pub(crate) struct WhileWorking(pub &'static str);

impl std::fmt::Display for WhileWorking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train {
            config,
            resume,
            run_dir,
            overwrite,
            device,
            steps,
        } => match resume {
            Some(run) => resume_training(&run, config.as_deref(), device, steps),
            None => train(
                &config.expect("clap requires a config without --resume"),
                run_dir,
                overwrite,
                device,
                steps,
            ),
        },
        Command::Export {
            run,
            checkpoint,
            raw,
            out,
        } => {
            let (run_dir, config) = RunDir::open(&run)?;
            let checkpoint = match checkpoint {
                Some(c) => c,
                None => run_dir.latest_checkpoint()?,
            };
            let weights = if raw { Weights::Raw } else { Weights::Ema };
            let device = select_device(DeviceKind::Cpu)?;
            let model = load_model(&config, &checkpoint, weights, &device)?;
            let bytes = ember_model::weights::to_safetensors(&model);
            ember_io::write_atomic(&out, &bytes)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "wrote {} ({} weights of {}, {} bytes)",
                out.display(),
                if raw { "raw" } else { "EMA" },
                checkpoint.display(),
                bytes.len()
            );
            Ok(())
        }
        Command::Compare { a, b } => compare(&a, &b),
        Command::Classifier(args) => classifier_cmd::run(args),
        Command::Eval(args) => eval_cmd::run(args),
        Command::Sample {
            run,
            guidance,
            classes,
            negative_class,
            per_class,
            sampler,
            spacing,
            steps,
            eta,
            guidance_interval,
            cfg_rescale,
            dynamic_threshold,
            seed,
            init,
            strength,
            mask,
            classifier_guidance,
            guidance_classifier,
            checkpoint,
            raw,
            weights: weights_file,
            device,
            out,
        } => {
            let (run_dir, mut config) = RunDir::open(&run)?;
            // Flags override the run's [sample] table and are validated with it.
            let s = &mut config.sample;
            s.sampler = sampler.unwrap_or(s.sampler);
            s.spacing = spacing.unwrap_or(s.spacing);
            s.guidance_interval = guidance_interval.unwrap_or(s.guidance_interval.clone());
            s.cfg_rescale = cfg_rescale.unwrap_or(s.cfg_rescale);
            s.dynamic_threshold = dynamic_threshold.unwrap_or(s.dynamic_threshold);
            config
                .validate(Path::new("the command line"))
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{}",
                        e.to_string()
                            .replace(
                                "invalid config file the command line: key `sample.",
                                "flag `--"
                            )
                            .replace('_', "-")
                    )
                })?;
            let names = class_names(&run_dir, &config)?;
            let mut request = SampleRequest::from_config(&config);
            if let Some(g) = guidance {
                request.guidance.scale = g;
            }
            if !classes.is_empty() {
                request.classes = resolve_classes(&classes, &names, &run_dir)?;
            }
            request.guidance.negative_class = negative_class
                .map(|c| resolve_class(&c, &names, &run_dir, "--negative-class"))
                .transpose()?;
            if let Some(n) = per_class {
                request.per_class = n;
            }
            if let Some(s) = steps {
                request.options.steps = s;
            }
            if let Some(e) = eta {
                request.options.eta = e;
            }
            if let Some(s) = seed {
                request.seed = s;
            }
            if let Some(path) = init {
                let strength = strength.unwrap_or(if mask.is_some() { 1.0 } else { 0.6 });
                if !(strength > 0.0 && strength <= 1.0) {
                    bail!("--strength must be in (0, 1], got {strength}");
                }
                request.options.strength = strength;
                request.init = Some(load_init(&path, mask.as_deref(), &config)?);
            }
            check_request(&request, &config)?;
            let weights = if raw { Weights::Raw } else { Weights::Ema };
            let device = select_device(device.into())?;
            if let Some(scale) = classifier_guidance {
                let dir = match guidance_classifier {
                    Some(dir) => dir,
                    None => eval_cmd::default_classifier(&config.data.resolved_root(), true)?,
                };
                let classifier = load_noisy_classifier(&dir, &run_dir, &config, &device)?;
                request.guidance.classifier = Some((std::sync::Arc::new(classifier), scale));
            }
            let model = match weights_file {
                Some(file) => ember_model::weights::load_safetensors(
                    ember_model::UNetConfig::from(&config.model).init(&device, 0),
                    &file,
                )?,
                None => {
                    let checkpoint = match checkpoint {
                        Some(c) => c,
                        None => run_dir.latest_checkpoint()?,
                    };
                    load_model(&config, &checkpoint, weights, &device)?
                }
            };
            let start = Instant::now();
            write_sample_grid(&model, &config, &request, &device, &out)?;
            println!(
                "wrote {} ({} classes x {} samples, scale {}, {} {} steps, {:.1}s)",
                out.display(),
                request.classes.len(),
                request.per_class,
                request.guidance.scale,
                request.options.steps,
                request.sampler.name(),
                start.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}

/// The noise-aware classifier of `--classifier-guidance`, checked against the run: trained on
/// the same diffusion process, classes and image shape.
pub(crate) fn load_noisy_classifier(
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

/// The `--init` image (and `--mask`) fitted to the model's size and channels.
fn load_init(
    path: &Path,
    mask: Option<&Path>,
    config: &ExperimentConfig,
) -> Result<ember_sample::InitImage> {
    let (c, size) = (config.model.image_channels, config.model.image_size);
    let device = Device::flex();
    let to_tensor = |pixels: Vec<u8>, channels: usize, f: fn(u8) -> f32| {
        let values: Vec<f32> = pixels.into_iter().map(f).collect();
        Tensor::<4>::from_data(TensorData::new(values, [1, channels, size, size]), &device)
    };
    let image = ember_data::folder::decode_file(path, c, size).context("--init image")?;
    let mask = match mask {
        Some(m) => {
            let pixels = ember_data::folder::decode_file(m, 1, size).context("--mask image")?;
            Some(to_tensor(pixels, 1, |p| if p > 127 { 1.0 } else { 0.0 }))
        }
        None => None,
    };
    Ok(ember_sample::InitImage {
        image: to_tensor(image, c, ember_data::pixel_to_unit),
        mask,
    })
}

/// The class names of a run: its classes.txt, or numbers for runs written before it existed.
/// A classes.txt with another number of lines than the model has classes is refused: picking
/// classes by name from it would select the wrong rows.
fn class_names(run: &RunDir, config: &ExperimentConfig) -> Result<Vec<String>> {
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
fn resolve_classes(given: &[String], names: &[String], run: &RunDir) -> Result<Vec<usize>> {
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
fn resolve_class(given: &str, names: &[String], run: &RunDir, flag: &str) -> Result<usize> {
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

fn check_request(request: &SampleRequest, config: &ExperimentConfig) -> Result<()> {
    let n = config.model.num_classes;
    if let Some(c) = request.classes.iter().find(|&&c| c >= n) {
        bail!("--class {c} is out of range: the model has classes 0..{n}");
    }
    if let Some(c) = request.guidance.negative_class.filter(|&c| c >= n) {
        bail!("--negative-class {c} is out of range: the model has classes 0..{n}");
    }
    let max_per_class = ember_config::limits::MAX_PER_CLASS;
    if request.per_class == 0 || request.per_class > max_per_class {
        bail!(
            "--per-class must be in 1..={max_per_class}, got {}",
            request.per_class
        );
    }
    let t = config.diffusion.timesteps;
    if request.options.steps == 0 || request.options.steps > t {
        bail!("--steps must be in 1..={t} (the model's diffusion.timesteps)");
    }
    if !(0.0..=1.0).contains(&request.options.eta) {
        bail!("--eta must be in [0, 1]");
    }
    ember_config::check_guidance_scale("--guidance", request.guidance.scale)
        .map_err(|e| anyhow::anyhow!("--guidance: {}", e.message))?;
    let rows = request.classes.len() * request.per_class;
    check_memory(
        ember_model::memory::sampling_bytes(&config.model, rows),
        &format!("a grid of {rows} images (classes x --per-class)"),
        "ask for fewer classes or a smaller --per-class",
    )
}

fn write_sample_grid(
    model: &ember_model::UNet,
    config: &ExperimentConfig,
    request: &SampleRequest,
    device: &burn::prelude::Device,
    out: &Path,
) -> Result<()> {
    let m = &config.model;
    let schedule = ember_model::NoiseSchedule::new(&config.diffusion);
    let shape = [m.image_channels, m.image_size, m.image_size];
    let grid = sample_grid(model, &schedule, request, shape, device);
    write_png(&grid, out)?;
    Ok(())
}

fn train(
    config_path: &Path,
    run_dir: Option<PathBuf>,
    overwrite: bool,
    device: Option<DeviceArg>,
    steps: Option<usize>,
) -> Result<()> {
    let mut config = ExperimentConfig::load(config_path)?;
    apply_overrides(&mut config, device, steps)?;
    check_training_memory(&config, config_path)?;
    let device = select_device(config.train.device)?;
    let dataset = load_training_data(&config, config_path)?;
    let run_root = run_dir.unwrap_or_else(|| {
        let stem = config_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        PathBuf::from("runs").join(stem)
    });
    // Everything that can be refused has been checked and the model is built: only now does
    // the run directory appear.
    let trainer = Trainer::new(config, &device);
    let run = RunDir::create(&run_root, &trainer.config, overwrite)?;
    run.write_class_names(dataset.class_names())?;
    run_training(trainer, dataset, &run, config_path)
}

/// `ember train --resume`: the run's config (or a compatible new one) and its newest usable
/// checkpoint.
fn resume_training(
    run_root: &Path,
    config_path: Option<&Path>,
    device: Option<DeviceArg>,
    steps: Option<usize>,
) -> Result<()> {
    let (mut run, saved) = RunDir::open(run_root)?;
    run.lock_for_training()?;
    let mut config = match config_path {
        Some(path) => {
            let new = ExperimentConfig::load(path)?;
            let changed = saved.fixed_keys_changed(&new);
            if !changed.is_empty() {
                bail!(
                    "{} cannot resume {}: it changes {}, which cannot change mid-run (only {} can)",
                    path.display(),
                    run_root.display(),
                    changed.join(", "),
                    ember_config::RESUMABLE_KEYS.join(", ")
                );
            }
            new
        }
        None => saved,
    };
    apply_overrides(&mut config, device, steps)?;
    check_training_memory(&config, &run.config_path())?;
    let device = select_device(config.train.device)?;
    let dataset = load_training_data(&config, &run.config_path())?;
    let (trainer, warnings) = run.resume(&config, &device)?;
    if run.class_names()?.is_none() {
        run.write_class_names(dataset.class_names())?;
    }
    for w in warnings {
        eprintln!("warning: {w}");
    }
    run.update_config(&config)?;
    println!("resuming {} at step {}", run.root().display(), trainer.step);
    run_training(trainer, dataset, &run, &run.config_path())
}

/// Refuses a config whose training step, or whose sample grids, would need more memory than
/// the machine has: a clear error before anything is allocated or written, not an abort.
fn check_training_memory(config: &ExperimentConfig, source: &Path) -> Result<()> {
    let m = &config.model;
    let step = ember_model::memory::training_bytes(m, config.train.batch_size);
    check_memory(
        step,
        &format!(
            "{}: one training step at train.batch_size = {}",
            source.display(),
            config.train.batch_size
        ),
        "lower train.batch_size, model.base_channels, model.image_size or model.attention_levels",
    )?;
    let grid_rows = m.num_classes * config.sample.per_class;
    check_memory(
        ember_model::memory::sampling_bytes(m, grid_rows),
        &format!(
            "{}: a sample grid of model.num_classes x sample.per_class = {grid_rows} images",
            source.display()
        ),
        "lower sample.per_class",
    )
}

/// Compares an estimate with the memory this machine has available.
pub(crate) fn check_memory(needed: f64, what: &str, advice: &str) -> Result<()> {
    use ember_model::memory::human_bytes;
    if let Some(available) = ember_io::available_memory_bytes()
        && needed > available as f64
    {
        bail!(
            "{what} needs about {}, but this machine has {} available; {advice}",
            human_bytes(needed),
            human_bytes(available as f64)
        );
    }
    Ok(())
}

fn apply_overrides(
    config: &mut ExperimentConfig,
    device: Option<DeviceArg>,
    steps: Option<usize>,
) -> Result<()> {
    if let Some(d) = device {
        config.train.device = d.into();
    }
    if let Some(s) = steps {
        if s == 0 {
            bail!("--steps must be at least 1");
        }
        config.train.steps = s;
    }
    Ok(())
}

fn load_training_data(config: &ExperimentConfig, config_path: &Path) -> Result<ImageDataset> {
    ImageDataset::load(&config.data, &config.model, Split::Train, config.data.limit)
        .with_context(|| format!("cannot load the training data of {}", config_path.display()))
}

/// Trains to `train.steps`, recording as it goes (see ember_train::monitor): grids of the EMA
/// weights at each `log.sample_scales` scale at the end (and every `log.sample_every` steps),
/// TensorBoard events, metrics.csv and the loss curve.
fn run_training(
    mut trainer: Trainer,
    dataset: ImageDataset,
    run: &RunDir,
    config_path: &Path,
) -> Result<()> {
    let config = trainer.config.clone();
    let [c, h, w] = dataset.shape();
    println!(
        "training {} on {} ({} images, {} {c}x{h}x{w}) for {} steps, batch {}, device {:?}; run directory {}",
        config_path.display(),
        config.data.resolved_root().display(),
        burn::data::dataset::Dataset::len(&dataset),
        config.data.format.name(),
        config.train.steps,
        config.train.batch_size,
        config.train.device,
        run.root().display()
    );

    let mode = ProgressMode::detect(config.train.log_every);
    let mut monitor = RunMonitor::open(run, &config, trainer.step, mode)?;
    let summary = match trainer.train(dataset, Some(run), &mut monitor) {
        Ok(summary) => summary,
        Err(e) => {
            monitor.abandon();
            return Err(e).context(WhileWorking("training stopped"));
        }
    };
    if summary.steps == 0 {
        println!(
            "nothing to train: the run is at step {} of train.steps = {} (pass --steps to go on)",
            trainer.step, config.train.steps
        );
    } else {
        println!(
            "trained {} steps in {} ({:.1} img/s), final loss {:.4}",
            summary.steps,
            format_duration(summary.seconds),
            summary.images_per_second,
            summary.final_loss
        );
    }
    if let Some(loss_plot) = monitor.finish() {
        println!("loss curve: {}", loss_plot.display());
    }
    if config.log.tensorboard {
        println!(
            "TensorBoard: tensorboard --logdir {}",
            run.root().parent().unwrap_or(run.root()).display()
        );
    }
    Ok(())
}

fn compare(a: &Path, b: &Path) -> Result<()> {
    use ember_model::weights::read_safetensors;
    let (ta, tb) = (read_safetensors(a)?, read_safetensors(b)?);
    if ta.keys().ne(tb.keys()) {
        bail!(
            "{} and {} hold different tensor names",
            a.display(),
            b.display()
        );
    }
    let mut max_diff = 0f32;
    let mut worst = String::new();
    for (name, (shape_a, va)) in &ta {
        let (shape_b, vb) = &tb[name];
        if shape_a != shape_b {
            bail!(
                "tensor `{name}`: shape {shape_a:?} in {}, {shape_b:?} in {}",
                a.display(),
                b.display()
            );
        }
        for (x, y) in va.iter().zip(vb) {
            let d = (x - y).abs();
            if d > max_diff || d.is_nan() {
                max_diff = d;
                worst = name.clone();
            }
        }
    }
    println!("tensors: {}", ta.len());
    println!(
        "max abs difference: {max_diff:e}{}",
        if worst.is_empty() {
            String::new()
        } else {
            format!(" (in {worst})")
        }
    );
    Ok(())
}
