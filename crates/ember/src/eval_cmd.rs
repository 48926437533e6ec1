//! `ember eval`: a guidance sweep of a trained run, scored by the domain classifier.

use crate::DeviceArg;
use crate::sampling_args::{
    SamplingArgs, class_names, guidance_classifier, validate_settings, weak_model,
};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use ember_config::ExperimentConfig;
use ember_data::{ImageDataset, Split};
use ember_eval::FeatureExtractor;
use ember_eval::classifier::{Classifier, dataset_fingerprint};
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
    /// A guidance study instead of one sweep: a TOML file of [[method]] tables, each a name,
    /// its scales and its [sample] overrides (configs/studies/guidance-methods.toml); writes
    /// study.json, study.csv, study.md and the Pareto plot study.png [default out: <run>/study].
    #[arg(long, value_name = "FILE", conflicts_with = "guidance")]
    pub study: Option<PathBuf>,
    /// Samples per class at each scale (every class of the model is sampled).
    #[arg(long)]
    pub samples_per_class: usize,
    /// The sampler and every guidance option, as for `ember sample`: each flag overrides its
    /// key of the run's [sample] table; all of them are recorded in eval.json.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Images per sampler batch (memory: about 2 x this many UNet activations; the results
    /// do not depend on it).
    #[arg(long, default_value_t = 250)]
    pub batch_size: usize,
    /// Checkpoint folder [default: the run's latest].
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Classifier folder written by `ember classifier train` [default: <data root>.classifier].
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Output folder [default: <run>/eval, or <run>/study with --study].
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
    /// Weights of the FID network
    #[arg(long, default_value = ember_fid::DEFAULT_WEIGHTS)]
    pub fid_weights: PathBuf,
    /// Device to sample on.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
}

pub fn run(args: EvalArgs) -> Result<()> {
    // The settings: the run's [sample] table, the flags over it, validated once.
    let (run_dir, mut config) = RunDir::open(&args.run)?;
    let names = class_names(&run_dir, &config)?;
    let mut from_flags = args.sampling.apply(&mut config.sample, &names, &run_dir)?;
    // Each row has its own scale: the config's is none of them. The sweep's first scale (a
    // study's neutral 1) stands in for it, so it is checked against the method as a flag.
    config.sample.guidance_scale = match args.study {
        Some(_) => 1.0,
        None => args.guidance.first().copied().unwrap_or(1.0),
    };
    from_flags.push("sample.guidance_scale");
    validate_settings(&config, &from_flags, &run_dir)?;
    check_sizes(&args, &config)?;
    if let Some(study) = &args.study {
        return crate::study_cmd::run(&args, study, &run_dir, &config);
    }
    for &scale in &args.guidance {
        config
            .sample
            .check_scale("--guidance", scale)
            .map_err(|e| anyhow::anyhow!("--guidance: {}", e.message))?;
    }

    let scoring = Scoring::load(&args, &run_dir, &config)?;
    let guidance_classifier = guidance_classifier(&run_dir, &config, &scoring.device)?;
    let weak = weak_model(&run_dir, &config, &scoring.device)?;
    let out_dir = args.out.clone().unwrap_or_else(|| args.run.join("eval"));
    let mut settings = scoring.settings(&args, &config);
    settings.sampling = EvalSettings::sampling_of(&config.sample);
    settings.guidance_classifier = guidance_classifier.as_ref().map(|c| c.id());
    // Autoguidance's weak model by its weights, as the guided model is recorded.
    if let Some((_, record)) = &weak {
        settings
            .sampling
            .insert("guide_weights".into(), record.clone().into());
    }
    let s = &config.sample;
    println!(
        "evaluating {} (step {}, EMA weights) with {} at scales {:?}: {} samples per class x {} classes, {} {} steps ({:?} spacing), eta {}, seed {}; classifier {} (test accuracy {:.4}); output {}",
        args.run.display(),
        scoring.step,
        s.guidance_method.name(),
        args.guidance,
        args.samples_per_class,
        config.model.num_classes,
        s.sampler.name(),
        s.steps,
        s.spacing,
        s.eta,
        s.seed,
        scoring.classifier_dir.display(),
        scoring.classifier.meta().test_accuracy,
        out_dir.display()
    );
    let m = &config.model;
    let request = EvalRequest {
        model: &scoring.model,
        schedule: &scoring.schedule,
        image_shape: [m.image_channels, m.image_size, m.image_size],
        classifier: &scoring.classifier,
        fid: scoring
            .inception
            .as_ref()
            .map(|i| i as &dyn ember_eval::FeatureExtractor),
        test: &scoring.test,
        train: &scoring.train,
        scales: args.guidance.clone(),
        sampling: &config.sample,
        guidance_classifier: guidance_classifier
            .as_ref()
            .map(|c| c as &dyn ember_sample::NoisyClassifier),
        weak_model: weak.as_ref().map(|(model, _)| model),
        batch_size: args.batch_size,
        settings,
        out_dir: out_dir.clone(),
        restart: args.restart,
        grid_columns: args.grid_columns,
        device: scoring.device.clone(),
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

/// What every evaluation of a run loads once: the classifier (checked against the run's
/// training data), both data splits, the checkpoint's EMA weights, and Inception if asked.
pub(crate) struct Scoring {
    pub classifier: Classifier,
    pub classifier_dir: PathBuf,
    pub train: ImageDataset,
    pub test: ImageDataset,
    /// The checkpoint's folder name, its step and the checksum of its EMA file.
    pub checkpoint_name: String,
    pub step: usize,
    pub ema_checksum: String,
    pub inception: Option<ember_eval::InceptionFeatures>,
    pub model: ember_model::UNet,
    pub schedule: ember_model::NoiseSchedule,
    pub device: burn::prelude::Device,
}

impl Scoring {
    pub(crate) fn load(
        args: &EvalArgs,
        run_dir: &RunDir,
        config: &ExperimentConfig,
    ) -> Result<Self> {
        // The classifier, checked against the run's training data.
        let root = config.data.resolved_root();
        let run_config = run_dir.config_path();
        let hint = run_config.display().to_string();
        let classifier_dir = match &args.classifier {
            Some(dir) => dir.clone(),
            None => crate::sampling_args::default_classifier(&root, false)?,
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

        let checkpoint = match &args.checkpoint {
            Some(c) => c.clone(),
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
        let model = load_model(config, &checkpoint, Weights::Ema, &device)?;
        let test = ImageDataset::load(&config.data, &config.model, Split::Test, 0)?;
        Ok(Self {
            classifier,
            classifier_dir,
            train,
            test,
            checkpoint_name: checkpoint
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            step: state.step,
            ema_checksum: state.checksums.get(EMA_FILE).cloned().unwrap_or_default(),
            inception,
            model,
            schedule: ember_model::NoiseSchedule::new(&config.diffusion),
            device,
        })
    }

    /// The settings every row depends on, with no sampling settings yet.
    pub(crate) fn settings(&self, args: &EvalArgs, config: &ExperimentConfig) -> EvalSettings {
        EvalSettings {
            format_version: FORMAT_VERSION,
            weights: format!("{} {EMA_FILE} {}", self.checkpoint_name, self.ema_checksum),
            num_classes: config.model.num_classes,
            samples_per_class: args.samples_per_class,
            sampling: Default::default(),
            classifier: self.classifier.id(),
            features: self.classifier.id(),
            k: DEFAULT_K,
            fid: self.inception.as_ref().map(|i| i.id()),
            guidance_classifier: None,
        }
    }
}

pub(crate) fn fid_text(fid: Option<f64>) -> String {
    fid.map(|f| format!(", FID {f:.4}")).unwrap_or_default()
}

/// Most samples one eval scores per scale: their features (and the real images' of the FD
/// reference) are held in memory.
const MAX_EVAL_SAMPLES: usize = 1_000_000;

/// Bounds the sizes a user gives before anything is allocated.
fn check_sizes(args: &EvalArgs, config: &ExperimentConfig) -> Result<()> {
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
    crate::resources::check_memory(
        ember_model::memory::sampling_bytes(&config.model, args.batch_size),
        &format!("sampling --batch-size {} images at a time", args.batch_size),
        "lower --batch-size",
    )
}
