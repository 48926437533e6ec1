//! `ember eval`: a guidance sweep of a trained run (`--guidance 1,2,3`), the time-to-quality
//! curve of its checkpoints at one scale (`--checkpoints all`), or a study of several guidance
//! methods (`--study FILE`, in `study_cmd.rs`), scored by the domain classifier.

use crate::DeviceArg;
use crate::metric_text::{input_or_work, reference_line, row_metrics};
use crate::sampling_args::{
    SamplingArgs, class_names, guidance_classifier, validate_settings, weak_model,
};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use ember_config::ExperimentConfig;
use ember_data::{ImageDataset, Split};
use ember_eval::classifier::{Classifier, dataset_fingerprint};
use ember_eval::curve::{CurveProgress, CurveRequest, CurveSource, run_curve};
use ember_eval::eval::{
    EVAL_CSV, EVAL_JSON, EVAL_PLOT, EvalRequest, EvalSettings, FORMAT_VERSION, Progress,
    TENSORBOARD_DIR, grid_file_name, run_eval,
};
use ember_eval::metrics::DEFAULT_K;
use ember_eval::score::Judge;
use ember_eval::study::load_study;
use ember_eval::{FeatureExtractor, ScaleRow};
use ember_train::checkpoint::{EMA_FILE, Weights, load_model, verify};
use ember_train::{RunDir, select_device};
use std::path::{Path, PathBuf};
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
    /// kept in the outputs. With --checkpoints: the one scale of the curve.
    #[arg(long, value_delimiter = ',', default_value = "0,1,1.5,2,3,5,8")]
    pub guidance: Vec<f64>,
    /// A guidance study instead of one sweep: a TOML file of [[method]] tables, each a name,
    /// its scales and its [sample] overrides (configs/studies/guidance-methods.toml); writes
    /// study.json, study.csv, study.md and the Pareto plot study.png [default output:
    /// <run>/study].
    #[arg(long, value_name = "FILE", conflicts_with_all = ["guidance", "checkpoints"])]
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
    #[arg(long, conflicts_with = "checkpoints")]
    pub checkpoint: Option<PathBuf>,
    /// Time to quality: evaluate these checkpoints of the run (`all`, or comma-separated
    /// steps) at the one --guidance scale, against the training minutes behind each (from
    /// metrics.csv), into curve.csv/.json/.png [default output: <run>/curve]. Keep the
    /// checkpoints with train.keep_every.
    #[arg(long, value_name = "all|STEP,...")]
    pub checkpoints: Option<String>,
    /// With --checkpoints: also score sample sets another program made (e.g. the PyTorch twin,
    /// `scripts/bench/torch_twin.py train-curve`): DIR holds one folder per set, `minutes-<M>` (M training
    /// minutes), each with one sub-folder of PNGs per class in label order.
    #[arg(long, value_name = "DIR", requires = "checkpoints")]
    pub compare: Option<PathBuf>,
    /// The name of the --compare sets in the outputs.
    #[arg(long, default_value = "pytorch", requires = "compare")]
    pub compare_label: String,
    /// Also compute the classification accuracy score: the classifier's network trained on the
    /// samples of each scale (or study pair) alone (settings of the run's [classifier] table), tested on the
    /// real test split; the reference row trains the same way on as many real images.
    #[arg(long)]
    pub cas: bool,
    /// CAS training epochs [default: as many optimiser steps as the domain classifier's own
    /// training on the whole training split, at most 100 epochs].
    #[arg(long, requires = "cas")]
    pub cas_epochs: Option<usize>,
    /// Classifier folder written by `ember classifier train` [default: <data root>.classifier].
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Output folder [default: <run>/eval, <run>/curve with --checkpoints, <run>/study with
    /// --study].
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
    // 1. the settings: the run's [sample] table, the flags over it, validated once
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
    if args.checkpoints.is_some() && args.guidance.len() != 1 {
        bail!(
            "--checkpoints draws a curve at one guidance scale; pass exactly one --guidance, got {}",
            args.guidance.len()
        );
    }
    // A study's methods, each validated as the config's own [sample] table, before anything
    // is loaded; a sweep's scales, each against the method.
    let study = match &args.study {
        Some(path) => Some((
            path,
            load_study(
                path,
                &config.sample,
                config.diffusion.timesteps,
                config.model.num_classes,
            )?,
        )),
        None => {
            for &scale in &args.guidance {
                config
                    .sample
                    .check_scale("--guidance", scale)
                    .map_err(|e| anyhow::anyhow!("--guidance: {}", e.message))?;
            }
            None
        }
    };

    // 2. the judge: the classifier (checked against the run's training data), the real
    //    splits, FID and CAS
    let root = config.data.resolved_root();
    let hint = run_dir.config_path().display().to_string();
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
    let test = ImageDataset::load(&config.data, &config.model, Split::Test, 0)?;
    let cas = args.cas.then(|| cas_recipe(&args, &config, &train));
    let judge = Judge {
        classifier: &classifier,
        fid: inception.as_ref().map(|i| i as &dyn FeatureExtractor),
        test: &test,
        train: &train,
        k: DEFAULT_K,
        cas: cas.clone(),
        num_classes: config.model.num_classes,
        device: device.clone(),
    };
    let schedule = ember_model::NoiseSchedule::new(&config.diffusion);
    let m = &config.model;
    let image_shape = [m.image_channels, m.image_size, m.image_size];

    // 3. a study of several methods: each loads its own noise-aware classifier and weak model
    if let Some((path, methods)) = study {
        let checkpoint = match args.checkpoint.clone() {
            Some(c) => c,
            None => run_dir.latest_checkpoint()?,
        };
        let state = verify(&checkpoint)?;
        let shared = EvalSettings {
            format_version: FORMAT_VERSION,
            weights: weights_id(&checkpoint, &state),
            num_classes: config.model.num_classes,
            samples_per_class: args.samples_per_class,
            sampling: Default::default(),
            classifier: classifier.id(),
            features: classifier.id(),
            k: DEFAULT_K,
            fid: inception.as_ref().map(|i| i.id()),
            guidance_classifier: None,
            cas: cas.clone(),
        };
        let study = crate::study_cmd::Study {
            path,
            methods,
            run: &args.run,
            out_dir: args.out.clone().unwrap_or_else(|| args.run.join("study")),
            batch_size: args.batch_size,
            restart: args.restart,
            grid_columns: args.grid_columns,
            judge: &judge,
            classifier_dir: &classifier_dir,
            checkpoint: &checkpoint,
            step: state.step,
            schedule: &schedule,
            image_shape,
            settings: shared,
        };
        return crate::study_cmd::run(study, &run_dir, &config);
    }

    let guidance_classifier = guidance_classifier(&run_dir, &config, &device)?;
    // Autoguidance's weak model, recorded by its weights as the guided model is.
    let weak = weak_model(&run_dir, &config, &device)?;
    let mut sampling = EvalSettings::sampling_of(&config.sample);
    if let Some((_, record)) = &weak {
        sampling.insert("guide_weights".into(), record.clone().into());
    }
    let settings = |weights: String| EvalSettings {
        format_version: FORMAT_VERSION,
        weights,
        num_classes: config.model.num_classes,
        samples_per_class: args.samples_per_class,
        sampling: sampling.clone(),
        classifier: classifier.id(),
        features: classifier.id(),
        k: DEFAULT_K,
        fid: inception.as_ref().map(|i| i.id()),
        guidance_classifier: guidance_classifier.as_ref().map(|c| c.id()),
        cas: cas.clone(),
    };
    let s = &config.sample;
    let eta = if s.sampler.reads_eta() {
        format!(", eta {}", s.eta)
    } else {
        String::new()
    };
    println!(
        "sampling {} samples per class x {} classes with {}, {} {} steps ({:?} spacing){eta}, seed {}; classifier {} (test accuracy {:.4}){}",
        args.samples_per_class,
        config.model.num_classes,
        s.guidance_method.name(),
        s.sampler.name(),
        s.steps,
        s.spacing,
        s.seed,
        classifier_dir.display(),
        classifier.meta().test_accuracy,
        cas.as_ref()
            .map(|c| format!("; CAS trains {} epochs", c.epochs))
            .unwrap_or_default()
    );
    let guidance_classifier = guidance_classifier
        .as_ref()
        .map(|c| c as &dyn ember_sample::NoisyClassifier);
    let weak_model = weak.as_ref().map(|(model, _)| model);

    // 4. a curve over checkpoints, or a sweep over scales
    if let Some(which) = &args.checkpoints {
        let out_dir = args.out.clone().unwrap_or_else(|| args.run.join("curve"));
        let mut sources = checkpoint_sources(&run_dir, which)?;
        if let Some(dir) = &args.compare {
            sources.extend(compare_sources(dir, &args.compare_label, &config)?);
        }
        let load = |path: &Path| {
            load_model(&config, path, Weights::Ema, &device).map_err(|e| e.to_string())
        };
        let request = CurveRequest {
            judge: &judge,
            schedule: &schedule,
            image_shape,
            sampling: &config.sample,
            guidance_classifier,
            weak_model,
            scale: args.guidance[0],
            batch_size: args.batch_size,
            settings: settings(format!("checkpoints of {}", args.run.display())),
            sources,
            load: &load,
            out_dir: out_dir.clone(),
            restart: args.restart,
        };
        return curve(&request, &out_dir);
    }

    let checkpoint = match args.checkpoint.clone() {
        Some(c) => c,
        None => run_dir.latest_checkpoint()?,
    };
    let state = verify(&checkpoint)?;
    let model = load_model(&config, &checkpoint, Weights::Ema, &device)?;
    let out_dir = args.out.clone().unwrap_or_else(|| args.run.join("eval"));
    println!(
        "evaluating {} (step {}, EMA weights) at scales {:?}; output {}",
        args.run.display(),
        state.step,
        args.guidance,
        out_dir.display()
    );
    let request = EvalRequest {
        model: &model,
        schedule: &schedule,
        image_shape,
        judge: &judge,
        scales: args.guidance.clone(),
        sampling: &config.sample,
        guidance_classifier,
        weak_model,
        batch_size: args.batch_size,
        settings: settings(weights_id(&checkpoint, &state)),
        out_dir: out_dir.clone(),
        restart: args.restart,
        grid_columns: args.grid_columns,
    };
    let start = Instant::now();
    let mut sampled = 0usize;
    let mut sampling_seconds = 0.0;
    let file = run_eval(&request, &mut |p| match p {
        Progress::Reference(r) => println!("{}", reference_line(r)),
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
                "scale {}: {} ({} samples in {:.1}s, {:.1}s per 1000) -> {}",
                row.scale,
                row_metrics(row),
                row.samples,
                row.seconds,
                1000.0 * row.seconds / row.samples as f64,
                out_dir.join(grid_file_name(row.scale)).display()
            );
        }
    });
    let file = input_or_work(
        file,
        || format!("evaluation into {} stopped", out_dir.display()),
        "evaluation stopped",
    )?;
    let (with_fid, with_cas) = (file.settings.fid.is_some(), file.settings.cas.is_some());
    let column = |on: bool, v: Option<f64>| match on {
        true => format!(" {:>10}", v.map(|v| format!("{v:.4}")).unwrap_or_default()),
        false => String::new(),
    };
    let header = |on: bool, name: &str| match on {
        true => format!(" {name:>10}"),
        false => String::new(),
    };
    println!(
        "{:>6} {:>8} {:>10} {:>9} {:>8} {:>9}{}{}",
        "scale",
        "accuracy",
        "FD",
        "precision",
        "recall",
        "diversity",
        header(with_fid, "FID"),
        header(with_cas, "CAS")
    );
    let table_row = |label: String, m: [f64; 5], fid: Option<f64>, cas: Option<f64>| {
        println!(
            "{label:>6} {:>8.4} {:>10.4} {:>9.4} {:>8.4} {:>9.4}{}{}",
            m[0],
            m[1],
            m[2],
            m[3],
            m[4],
            column(with_fid, fid),
            column(with_cas, cas)
        );
    };
    for r in &file.rows {
        let metrics = [r.accuracy, r.fd, r.precision, r.recall, r.diversity];
        table_row(r.scale.to_string(), metrics, r.fid, r.cas);
    }
    let r = &file.reference;
    let metrics = [r.accuracy, r.fd, r.precision, r.recall, r.diversity];
    table_row("real".into(), metrics, r.fid, r.cas);
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

/// `step-00002000 ema.bpk crc32:...`: which weights a row was computed from.
pub(crate) fn weights_id(
    checkpoint: &Path,
    state: &ember_train::checkpoint::CheckpointState,
) -> String {
    format!(
        "{} {EMA_FILE} {}",
        checkpoint
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        state.checksums.get(EMA_FILE).cloned().unwrap_or_default()
    )
}

/// How CAS trains: the run's [classifier] table, with as many optimiser steps as the domain
/// classifier's own training on the whole split (at most 100 epochs) unless --cas-epochs.
fn cas_recipe(
    args: &EvalArgs,
    config: &ExperimentConfig,
    train: &ImageDataset,
) -> ember_config::ClassifierConfig {
    use burn::data::dataset::Dataset;
    let mut recipe = config.classifier.clone();
    let generated = (args.samples_per_class * config.model.num_classes).max(1);
    recipe.epochs = args.cas_epochs.unwrap_or_else(|| {
        (recipe.epochs * train.len())
            .div_ceil(generated)
            .clamp(1, 100)
    });
    recipe
}

/// The checkpoints `--checkpoints` names, with the training minutes behind each.
fn checkpoint_sources(run: &RunDir, which: &str) -> Result<Vec<CurveSource>> {
    let all = run.checkpoints()?;
    let wanted: Vec<(usize, PathBuf)> = if which.trim() == "all" {
        let mut all = all;
        all.reverse();
        all
    } else {
        let mut out = Vec::new();
        for part in which.split(',') {
            let step: usize = part.trim().parse().with_context(|| {
                format!("--checkpoints {which}: expected `all` or comma-separated steps")
            })?;
            match all.iter().find(|(s, _)| *s == step) {
                Some(found) => out.push(found.clone()),
                None => bail!(
                    "--checkpoints: {} holds no checkpoint of step {step}; it has {}",
                    run.checkpoints_dir().display(),
                    all.iter()
                        .map(|(s, _)| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        out
    };
    if wanted.is_empty() {
        bail!(
            "--checkpoints: {} holds no checkpoint",
            run.checkpoints_dir().display()
        );
    }
    let history = run.root().join(ember_train::monitor::HISTORY_FILE);
    let seconds =
        ember_monitor::history::training_seconds(&ember_monitor::history::read_rows(&history)?);
    let mut sources = Vec::new();
    for (step, path) in wanted {
        let state = verify(&path)?;
        let Some(&(_, secs)) = seconds.iter().rev().find(|(s, _)| *s == step) else {
            bail!(
                "{} has no row for step {step}, so the training minutes of {} are unknown",
                history.display(),
                path.display()
            );
        };
        sources.push(CurveSource::Checkpoint {
            step,
            minutes: secs / 60.0,
            weights: weights_id(&path, &state),
            path,
        });
    }
    Ok(sources)
}

/// The sample sets of `--compare DIR`: `minutes-<M>` folders of class folders.
fn compare_sources(dir: &Path, label: &str, config: &ExperimentConfig) -> Result<Vec<CurveSource>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("--compare {}", dir.display()))?;
    let m = &config.model;
    let mut sources = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(minutes) = name.strip_prefix("minutes-") else {
            continue;
        };
        let minutes: f64 = minutes.parse().ok().filter(|m: &f64| m.is_finite() && *m >= 0.0).with_context(|| {
            format!("--compare: {}: expected a folder named minutes-<M> with M the training minutes", path.display())
        })?;
        let decoded =
            ember_data::folder::read_folder(&path, m.image_channels, m.image_size, m.num_classes)
                .with_context(|| format!("--compare: the samples in {}", path.display()))?;
        let images = ImageDataset::from_decoded(decoded, m.image_size, 0, m.num_classes);
        sources.push(CurveSource::Images {
            label: label.to_string(),
            minutes,
            weights: path.display().to_string(),
            images,
        });
    }
    if sources.is_empty() {
        bail!("--compare {}: no minutes-<M> folders in it", dir.display());
    }
    Ok(sources)
}

/// Runs a curve and prints it as a table.
fn curve(request: &CurveRequest, out_dir: &Path) -> Result<()> {
    let result = run_curve(request, &mut |p| match p {
        CurveProgress::Reference(r) => println!("{}", reference_line(r)),
        CurveProgress::Skipped(p) => println!(
            "skipping {} {} ({:.1} min, done)",
            p.source,
            p.step.map(|s| format!("step {s}")).unwrap_or_default(),
            p.minutes
        ),
        CurveProgress::Started {
            source,
            step,
            minutes,
        } => println!(
            "{source} {}at {minutes:.1} min ...",
            step.map(|s| format!("step {s} ")).unwrap_or_default()
        ),
        CurveProgress::Finished(p) => {
            println!("  {} ({:.0}s)", row_metrics(&p.row), p.row.seconds)
        }
    });
    let file = input_or_work(
        result,
        || format!("the curve in {} stopped", out_dir.display()),
        "the checkpoint curve stopped",
    )?;
    println!(
        "{:>8} {:>6} {:>8} {:>8} {:>10} {:>8} {:>8}",
        "source", "step", "minutes", "accuracy", "FD", "recall", "CAS"
    );
    for p in &file.points {
        let r: &ScaleRow = &p.row;
        println!(
            "{:>8} {:>6} {:>8.1} {:>8.4} {:>10.4} {:>8.4} {:>8}",
            p.source,
            p.step.map(|s| s.to_string()).unwrap_or_default(),
            p.minutes,
            r.accuracy,
            r.fd,
            r.recall,
            r.cas.map(|c| format!("{c:.4}")).unwrap_or_default()
        );
    }
    println!(
        "wrote curve.csv, curve.json and curve.png in {}",
        out_dir.display()
    );
    Ok(())
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
    crate::resources::check_memory(
        ember_model::memory::sampling_bytes(&config.model, args.batch_size),
        &format!("sampling --batch-size {} images at a time", args.batch_size),
        "lower --batch-size",
    )
}
