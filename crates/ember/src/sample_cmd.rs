//! `ember sample`: a PNG grid (one row per class) from a trained run.

use crate::DeviceArg;
use crate::sampling_args::{
    SamplingArgs, class_names, guidance_classifier, resolve_classes, validate_settings,
};
use anyhow::{Context, Result, bail};
use burn::prelude::{Device, Tensor, TensorData};
use clap::Args;
use ember_config::ExperimentConfig;
use ember_io::write_png;
use ember_sample::{Guidance, InitImage, NoisyClassifier, SampleRequest, sample_grid};
use ember_train::checkpoint::{Weights, load_model};
use ember_train::{RunDir, select_device};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct SampleArgs {
    /// Run directory written by `ember train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Guidance scale s: 1 = no guidance, 0 = unconditional [default: sample.guidance_scale].
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Class to sample, by number or by name as in the run's classes.txt (repeat or
    /// comma-separate for several rows; a value that is itself a class name, commas and
    /// all, means that class) [default: every class].
    #[arg(long = "class")]
    pub classes: Vec<String>,
    /// Images per class (grid columns) [default: sample.per_class].
    #[arg(long)]
    pub per_class: Option<usize>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// img2img: start from this PNG/JPEG (fitted to the model's size and channels), noised
    /// to the step --strength lets the sampler start at, for every row.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// img2img strength in (0, 1]: the fraction of the steps that run; higher strays
    /// further from --init [default: 0.6, or 1 with --mask].
    #[arg(long, requires = "init")]
    pub strength: Option<f64>,
    /// Inpainting: a PNG/JPEG mask of the --init image; white (> 127) is regenerated, the
    /// rest kept.
    #[arg(long, requires = "init")]
    pub mask: Option<PathBuf>,
    /// Checkpoint folder to load [default: the run's latest, checkpoints/latest].
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Use the raw training weights instead of the EMA weights.
    #[arg(long)]
    pub raw: bool,
    /// Load the weights from a safetensors file written by `ember export` instead of a
    /// checkpoint (the run still supplies the config).
    #[arg(long, conflicts_with_all = ["checkpoint", "raw"])]
    pub weights: Option<PathBuf>,
    /// Device to sample on.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Output PNG file.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: SampleArgs) -> Result<()> {
    // 1. the settings: the run's [sample] table, the flags over it, validated once
    let (run_dir, mut config) = RunDir::open(&args.run)?;
    let names = class_names(&run_dir, &config)?;
    let mut from_flags = args.sampling.apply(&mut config.sample, &names, &run_dir)?;
    if let Some(g) = args.guidance {
        config.sample.guidance_scale = g;
        from_flags.push("sample.guidance_scale");
    }
    if let Some(n) = args.per_class {
        config.sample.per_class = n;
        from_flags.push("sample.per_class");
    }
    validate_settings(&config, &from_flags, &run_dir)?;

    // 2. what to sample, bounded before anything is allocated
    let classes = if args.classes.is_empty() {
        (0..config.model.num_classes).collect()
    } else {
        resolve_classes(&args.classes, &names, &run_dir)?
    };
    let n = config.model.num_classes;
    if let Some(c) = classes.iter().find(|&&c| c >= n) {
        bail!("--class {c} is out of range: the model has classes 0..{n}");
    }
    let rows = classes.len() * config.sample.per_class;
    crate::resources::check_memory(
        ember_model::memory::sampling_bytes(&config.model, rows),
        &format!("a grid of {rows} images (classes x --per-class)"),
        "ask for fewer classes or a smaller --per-class",
    )?;
    let init = match &args.init {
        Some(path) => {
            let strength = args
                .strength
                .unwrap_or(if args.mask.is_some() { 1.0 } else { 0.6 });
            if !(strength > 0.0 && strength <= 1.0) {
                bail!("--strength must be in (0, 1], got {strength}");
            }
            Some(load_init(path, args.mask.as_deref(), strength, &config)?)
        }
        None => None,
    };

    // 3. the model and the classifier classifier guidance needs
    let device = select_device(args.device.into())?;
    let classifier = guidance_classifier(&run_dir, &config, &device)?;
    let model = match &args.weights {
        Some(file) => ember_model::weights::load_safetensors(
            ember_model::UNetConfig::from(&config.model).init(&device, 0),
            file,
        )?,
        None => {
            let checkpoint = match args.checkpoint {
                Some(c) => c,
                None => run_dir.latest_checkpoint()?,
            };
            let weights = if args.raw { Weights::Raw } else { Weights::Ema };
            load_model(&config, &checkpoint, weights, &device)?
        }
    };

    // 4. sample and write the grid
    let start = Instant::now();
    let m = &config.model;
    let schedule = ember_model::NoiseSchedule::new(&config.diffusion);
    let request = SampleRequest {
        classes,
        guidance: Guidance::new(
            &config.sample,
            classifier.as_ref().map(|c| c as &dyn NoisyClassifier),
        ),
        init: init.as_ref(),
    };
    let shape = [m.image_channels, m.image_size, m.image_size];
    let grid = sample_grid(&model, &schedule, &request, shape, &device);
    write_png(&grid, &args.out)?;
    let s = &config.sample;
    println!(
        "wrote {} ({} classes x {} samples, scale {}, {} {} steps, {:.1}s)",
        args.out.display(),
        request.classes.len(),
        s.per_class,
        s.guidance_scale,
        s.steps,
        s.sampler.name(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The `--init` image (and `--mask`) fitted to the model's size and channels.
fn load_init(
    path: &Path,
    mask: Option<&Path>,
    strength: f64,
    config: &ExperimentConfig,
) -> Result<InitImage> {
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
    Ok(InitImage {
        image: to_tensor(image, c, ember_data::pixel_to_unit),
        mask,
        strength,
    })
}
