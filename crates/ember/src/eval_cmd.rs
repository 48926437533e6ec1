//! `ember eval`: a guidance sweep of a trained run, scored by the domain classifier.

use crate::DeviceArg;
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use ember_config::{SamplerKind, TimestepSpacing};
use ember_data::{ImageDataset, Split};
use ember_eval::classifier::{Classifier, dataset_fingerprint, default_dir};
use ember_eval::eval::{
    EVAL_CSV, EVAL_JSON, EVAL_PLOT, EvalRequest, EvalSettings, FORMAT_VERSION, Progress,
    TENSORBOARD_DIR, grid_file_name, run_eval,
};
use ember_eval::metrics::DEFAULT_K;
use ember_train::checkpoint::{EMA_FILE, Weights, load_model, verify};
use ember_train::{RunDir, select_device};
use std::path::PathBuf;
use std::time::Instant;

/// Extra feature networks for a standard FID.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FidArg {
    /// The FID Inception-v3 (2048-d pool features; weights from scripts/fid/convert_inception.py)
    Inception,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Run directory written by `ember train`; its newest checkpoint's EMA weights are sampled.
    #[arg(long)]
    pub run: PathBuf,
    /// Guidance scales to evaluate (comma-separated; 1 = no guidance, 0 = unconditional). Scales
    /// an earlier eval into the same folder finished with the same settings are skipped, and
    /// kept in the outputs.
    #[arg(long, value_delimiter = ',', default_value = "0,1,1.5,2,3,5,8")]
    pub guidance: Vec<f64>,
    /// Samples per class at each scale (every class of the model is sampled).
    #[arg(long)]
    pub samples_per_class: usize,
    /// Denoising steps [default: sample.steps of the run's config].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Sampler: ddpm, ddim, dpmpp-2m, euler or heun [default: sample.sampler].
    #[arg(long)]
    pub sampler: Option<SamplerKind>,
    /// Timestep spacing: trailing, leading, linspace or karras [default: sample.spacing].
    #[arg(long)]
    pub spacing: Option<TimestepSpacing>,
    /// DDIM eta: 0 deterministic, 1 DDPM-like [default: sample.eta].
    #[arg(long)]
    pub eta: Option<f64>,
    /// Seed of the initial noise, the same at every scale [default: sample.seed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Images per sampler batch (memory: about 2 x this many UNet activations).
    #[arg(long, default_value_t = 250)]
    pub batch_size: usize,
    /// Checkpoint folder [default: the run's latest].
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Classifier folder written by `ember classifier train` [default: <data root>.classifier].
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Output folder [default: <run>/eval].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Discard results in the output folder that were computed with other settings.
    #[arg(long)]
    pub restart: bool,
    /// Samples per class shown in each grid_scale-<s>.png.
    #[arg(long, default_value_t = 10)]
    pub grid_columns: usize,
    /// Also compute the standard FID with this network, against as many real test images as
    /// samples per scale (slow on a CPU: about 2 images/s)
    #[arg(long, value_enum)]
    pub fid: Option<FidArg>,
    /// Classifier guidance on top of every --guidance scale, with this scale (--guidance 0
    /// guides the unconditional model by the classifier alone); see `ember sample --help`.
    #[arg(long)]
    pub classifier_guidance: Option<f64>,
    /// The noise-aware classifier of --classifier-guidance [default: <data root>.classifier-noisy].
    #[arg(long, requires = "classifier_guidance")]
    pub guidance_classifier: Option<PathBuf>,
    /// Weights of the FID network
    #[arg(long, default_value = ember_fid::DEFAULT_WEIGHTS)]
    pub fid_weights: PathBuf,
    /// Device to sample on.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let (run_dir, config) = RunDir::open(&args.run)?;
    let s = &config.sample;
    let steps = args.steps.unwrap_or(s.steps);
    let eta = args.eta.unwrap_or(s.eta);
    let t = config.diffusion.timesteps;
    if steps == 0 || steps > t {
        bail!("--steps must be in 1..={t} (the model's diffusion.timesteps)");
    }
    if !(0.0..=1.0).contains(&eta) {
        bail!("--eta must be in [0, 1]");
    }
    check_sizes(&args, &config)?;

    // The classifier, checked against the run's training data.
    let root = config.data.resolved_root();
    let run_config = run_dir.config_path();
    let hint = run_config.display().to_string();
    let classifier_dir = match args.classifier {
        Some(dir) => dir,
        None => default_classifier(&root, false)?,
    };
    let device = select_device(args.device.into())?;
    let classifier = Classifier::load(&classifier_dir, &device, &hint)?;
    if classifier.meta().noise.is_some() {
        bail!(
            "{} holds a noise-aware classifier (for classifier guidance); ember eval scores clean samples with the classifier of `ember classifier train` without --noisy",
            classifier_dir.display()
        );
    }
    let train = ImageDataset::load(&config.data, &config.model, Split::Train, 0)?;
    let fingerprint = dataset_fingerprint(&train);
    classifier.check_dataset(&classifier_dir, &root, &fingerprint, &hint)?;

    let checkpoint = match args.checkpoint {
        Some(c) => c,
        None => run_dir.latest_checkpoint()?,
    };
    let state = verify(&checkpoint)?;
    let inception = match args.fid {
        Some(FidArg::Inception) => {
            if !args.fid_weights.is_file() {
                bail!(
                    "--fid inception needs the FID Inception weights at {}: convert them once with `python3 scripts/fid/convert_inception.py` (or pass --fid-weights)",
                    args.fid_weights.display()
                );
            }
            Some(ember_eval::InceptionFeatures::load(
                &args.fid_weights,
                &device,
            )?)
        }
        None => None,
    };
    let guidance_classifier = match args.classifier_guidance {
        Some(scale) => {
            let dir = match args.guidance_classifier.clone() {
                Some(dir) => dir,
                None => default_classifier(&config.data.resolved_root(), true)?,
            };
            let c = crate::load_noisy_classifier(&dir, &run_dir, &config, &device)?;
            Some((c, scale))
        }
        None => None,
    };
    let model = load_model(&config, &checkpoint, Weights::Ema, &device)?;
    let classes = config.model.num_classes;
    let test = ImageDataset::load(&config.data, &config.model, Split::Test, 0)?;
    let out_dir = args.out.unwrap_or_else(|| args.run.join("eval"));
    let m = &config.model;
    let schedule = ember_model::NoiseSchedule::new(&config.diffusion);
    use ember_eval::FeatureExtractor;
    let settings = EvalSettings {
        format_version: FORMAT_VERSION,
        weights: format!(
            "{} {EMA_FILE} {}",
            checkpoint
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            state.checksums.get(EMA_FILE).cloned().unwrap_or_default()
        ),
        num_classes: classes,
        samples_per_class: args.samples_per_class,
        sampler: args.sampler.unwrap_or(s.sampler),
        spacing: args.spacing.unwrap_or(s.spacing),
        steps,
        eta,
        seed: args.seed.unwrap_or(s.seed),
        batch_size: args.batch_size,
        classifier: classifier.id(),
        features: classifier.id(),
        k: DEFAULT_K,
        fid: inception.as_ref().map(|i| i.id()),
        classifier_guidance: guidance_classifier
            .as_ref()
            .map(|(c, scale)| (c.id(), *scale)),
    };
    println!(
        "evaluating {} (step {}, EMA weights) at scales {:?}: {} samples per class x {classes} classes, {} steps, eta {eta}, seed {}; classifier {} (test accuracy {:.4}); output {}",
        args.run.display(),
        state.step,
        args.guidance,
        args.samples_per_class,
        steps,
        settings.seed,
        classifier_dir.display(),
        classifier.meta().test_accuracy,
        out_dir.display()
    );
    let request = EvalRequest {
        model: &model,
        schedule: &schedule,
        image_shape: [m.image_channels, m.image_size, m.image_size],
        classifier: &classifier,
        fid: inception
            .as_ref()
            .map(|i| i as &dyn ember_eval::FeatureExtractor),
        test: &test,
        train: &train,
        scales: args.guidance.clone(),
        guidance_classifier: guidance_classifier.map(|(c, _)| {
            std::sync::Arc::new(c) as std::sync::Arc<dyn ember_sample::NoisyClassifier>
        }),
        settings,
        out_dir: out_dir.clone(),
        restart: args.restart,
        grid_columns: args.grid_columns,
        device,
    };
    let start = Instant::now();
    let mut sampled = 0usize;
    let mut sampling_seconds = 0.0;
    let file = run_eval(&request, &mut |p| match p {
        Progress::Reference(r) => println!(
            "real data (first {} training vs {} test images): accuracy {:.4}, FD floor {:.4}, precision {:.4}, recall {:.4}, diversity {:.4}{}",
            r.images,
            r.test_images,
            r.accuracy,
            r.fd,
            r.precision,
            r.recall,
            r.diversity,
            fid_text(r.fid).replace("FID", "FID floor")
        ),
        Progress::Skipped(row) => println!("skipping scale {} (done)", row.scale),
        Progress::Sampling { scale, done, total } => {
            if total > args.batch_size {
                println!("scale {scale}: {done}/{total} samples");
            }
        }
        Progress::Finished(row) => {
            sampled += row.samples;
            sampling_seconds += row.seconds;
            println!(
                "scale {}: accuracy {:.4}, FD {:.4}, precision {:.4}, recall {:.4}, diversity {:.4}{} ({} samples in {:.1}s, {:.1}s per 1000) -> {}",
                row.scale,
                row.accuracy,
                row.fd,
                row.precision,
                row.recall,
                row.diversity,
                fid_text(row.fid),
                row.samples,
                row.seconds,
                1000.0 * row.seconds / row.samples as f64,
                out_dir.join(grid_file_name(row.scale)).display()
            );
        }
    });
    let file = match file {
        // Settings, request or an unreadable earlier eval.json: the input; the rest: the work.
        Err(
            e @ (ember_eval::EvalError::SettingsChanged { .. }
            | ember_eval::EvalError::Request(_)
            | ember_eval::EvalError::Invalid { .. }),
        ) => return Err(e.into()),
        other => other
            .with_context(|| format!("evaluation into {} stopped", out_dir.display()))
            .context(crate::WhileWorking("evaluation stopped"))?,
    };
    let fid_column = |fid: Option<f64>| fid.map(|f| format!(" {f:>10.4}")).unwrap_or_default();
    println!(
        "{:>6} {:>8} {:>10} {:>9} {:>8} {:>9}{}",
        "scale",
        "accuracy",
        "FD",
        "precision",
        "recall",
        "diversity",
        if file.settings.fid.is_some() {
            format!(" {:>10}", "FID")
        } else {
            String::new()
        }
    );
    let table_row = |label: String, m: [f64; 5], fid: Option<f64>| {
        println!(
            "{label:>6} {:>8.4} {:>10.4} {:>9.4} {:>8.4} {:>9.4}{}",
            m[0],
            m[1],
            m[2],
            m[3],
            m[4],
            fid_column(fid)
        );
    };
    for r in &file.rows {
        let metrics = [r.accuracy, r.fd, r.precision, r.recall, r.diversity];
        table_row(r.scale.to_string(), metrics, r.fid);
    }
    let r = &file.reference;
    let metrics = [r.accuracy, r.fd, r.precision, r.recall, r.diversity];
    table_row("real".into(), metrics, r.fid);
    if sampled > 0 {
        println!(
            "sampled and scored {sampled} images in {:.1}s ({:.1}s per 1000); total {:.1}s",
            sampling_seconds,
            1000.0 * sampling_seconds / sampled as f64,
            start.elapsed().as_secs_f64()
        );
    }
    println!(
        "wrote {}, {}, {}, grid_scale-*.png and {}/ in {}",
        EVAL_JSON,
        EVAL_CSV,
        EVAL_PLOT,
        TENSORBOARD_DIR,
        out_dir.display()
    );
    Ok(())
}

fn fid_text(fid: Option<f64>) -> String {
    fid.map(|f| format!(", FID {f:.4}")).unwrap_or_default()
}

/// Most samples one eval scores per scale: their features (and the real images' of the FD
/// reference) are held in memory.
const MAX_EVAL_SAMPLES: usize = 1_000_000;

/// Bounds the sizes a user gives before anything is allocated.
fn check_sizes(args: &EvalArgs, config: &ember_config::ExperimentConfig) -> Result<()> {
    let classes = config.model.num_classes;
    let total = args.samples_per_class.saturating_mul(classes);
    if args.samples_per_class == 0 || total > MAX_EVAL_SAMPLES {
        bail!(
            "--samples-per-class must be at least 1 and give at most {MAX_EVAL_SAMPLES} samples per scale over the model's {classes} classes, got {}",
            args.samples_per_class
        );
    }
    let max_batch = ember_config::limits::MAX_BATCH_SIZE;
    if args.batch_size == 0 || args.batch_size > max_batch {
        bail!(
            "--batch-size must be in 1..={max_batch}, got {}",
            args.batch_size
        );
    }
    if args.grid_columns == 0 || args.grid_columns > ember_config::limits::MAX_PER_CLASS {
        bail!(
            "--grid-columns must be in 1..={}, got {}",
            ember_config::limits::MAX_PER_CLASS,
            args.grid_columns
        );
    }
    for &scale in &args.guidance {
        ember_config::check_guidance_scale("--guidance", scale)
            .map_err(|e| anyhow::anyhow!("--guidance: {}", e.message))?;
    }
    crate::check_memory(
        ember_model::memory::sampling_bytes(&config.model, args.batch_size),
        &format!("sampling --batch-size {} images at a time", args.batch_size),
        "lower --batch-size",
    )
}

/// The default classifier folder of a data folder, with the way out when only a classifier in
/// the old place (inside the data folder) exists.
pub(crate) fn default_classifier(root: &std::path::Path, noisy: bool) -> Result<PathBuf> {
    let dir = if noisy {
        ember_eval::classifier::default_noisy_dir(root)
    } else {
        default_dir(root)
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
