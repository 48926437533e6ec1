//! `ember sample`: a PNG grid (one row per class) from a trained run.

use crate::DeviceArg;
use crate::sampling_args::{
    SamplingArgs, class_names, guidance_classifier, resolve_classes, validate_settings, weak_model,
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
    /// further from --init [default: 0.6, or 1 with --mask or --outpaint].
    #[arg(long, requires = "init")]
    pub strength: Option<f64>,
    /// Inpainting: a PNG/JPEG mask of the --init image; white (> 127) is regenerated, the
    /// rest kept.
    #[arg(long, requires = "init")]
    pub mask: Option<PathBuf>,
    /// Outpainting: pixels added on each side of the --init image (fitted to the model's
    /// size); the border is generated around the image, whose pixels are kept exactly. The
    /// canvas must be divisible by 2^(levels - 1) of the model.
    #[arg(
        long,
        requires = "init",
        conflicts_with = "mask",
        value_delimiter = ',',
        value_name = "LEFT,TOP,RIGHT,BOTTOM"
    )]
    pub outpaint: Option<Vec<usize>>,
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
    let margins = match &args.outpaint {
        Some(m) => Some(outpaint_margins(m, &config)?),
        None => None,
    };
    let m = &config.model;
    let [height, width] = match margins {
        Some([l, t, r, b]) => [t + m.image_size + b, l + m.image_size + r],
        None => [m.image_size, m.image_size],
    };
    let rows = classes.len() * config.sample.per_class;
    // The activations grow with the canvas: estimated as a square of its longer side.
    let canvas_model = ember_config::ModelConfig {
        image_size: height.max(width),
        ..config.model.clone()
    };
    crate::resources::check_memory(
        ember_model::memory::sampling_bytes(&canvas_model, rows),
        &format!("a grid of {rows} images (classes x --per-class) of {width}x{height} pixels"),
        "ask for fewer classes, a smaller --per-class or a smaller --outpaint",
    )?;
    let init = match &args.init {
        Some(path) => {
            let full = args.mask.is_some() || margins.is_some();
            let strength = args.strength.unwrap_or(if full { 1.0 } else { 0.6 });
            if !(strength > 0.0 && strength <= 1.0) {
                bail!("--strength must be in (0, 1], got {strength}");
            }
            let init = load_init(path, args.mask.as_deref(), strength, &config)?;
            Some(match margins {
                Some(margins) => InitImage::outpaint(init.image, margins, strength),
                None => init,
            })
        }
        None => None,
    };

    // 3. the model, the classifier classifier guidance needs, autoguidance's weak model
    let device = select_device(args.device.into())?;
    let classifier = guidance_classifier(&run_dir, &config, &device)?;
    let weak = weak_model(&run_dir, &config, &device)?;
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
    let schedule = ember_model::NoiseSchedule::new(&config.diffusion);
    let request = SampleRequest {
        classes,
        guidance: Guidance::new(
            &config.sample,
            classifier.as_ref().map(|c| c as &dyn NoisyClassifier),
        )
        .with_weak_model(weak.as_ref().map(|(model, _)| model)),
        init: init.as_ref(),
    };
    let shape = [config.model.image_channels, height, width];
    let grid = sample_grid(&model, &schedule, &request, shape, &device);
    write_png(&grid, &args.out)?;
    let s = &config.sample;
    println!(
        "wrote {} ({} classes x {} samples, {} scale {}, {} {} steps, {:.1}s)",
        args.out.display(),
        request.classes.len(),
        s.per_class,
        s.guidance_method.name(),
        s.guidance_scale,
        s.steps,
        s.sampler.name(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The `--outpaint` margins `[left, top, right, bottom]`, checked: the canvas stays within the
/// image size limit and suits the network, whose levels each halve it.
fn outpaint_margins(given: &[usize], config: &ExperimentConfig) -> Result<[usize; 4]> {
    let [left, top, right, bottom] = given[..] else {
        bail!(
            "--outpaint takes four pixel counts LEFT,TOP,RIGHT,BOTTOM, got {} values",
            given.len()
        );
    };
    let m = &config.model;
    let max = ember_config::limits::MAX_IMAGE_SIZE;
    let side = |a: usize, b: usize| a.saturating_add(b).saturating_add(m.image_size);
    let (width, height) = (side(left, right), side(top, bottom));
    if width > max || height > max {
        bail!(
            "--outpaint {left},{top},{right},{bottom}: a {width}x{height} canvas is larger than {max} pixels a side"
        );
    }
    let unit = 1usize << (m.channel_mults.len() - 1);
    if !width.is_multiple_of(unit) || !height.is_multiple_of(unit) {
        bail!(
            "--outpaint {left},{top},{right},{bottom}: the canvas of {width}x{height} pixels must be divisible by {unit} (the model's {} levels halve it {} times); the model's own size is {}",
            m.channel_mults.len(),
            m.channel_mults.len() - 1,
            m.image_size
        );
    }
    Ok([left, top, right, bottom])
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
