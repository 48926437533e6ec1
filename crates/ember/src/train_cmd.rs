//! `ember train`: a new run from a config, or `--resume` of an existing one.

use crate::{DeviceArg, WhileWorking};
use anyhow::{Context, Result, bail};
use ember_config::ExperimentConfig;
use ember_data::{ImageDataset, Split};
use ember_monitor::progress::ProgressMode;
use ember_train::monitor::RunMonitor;
use ember_train::{RunDir, Trainer, format_duration, select_device};
use std::path::{Path, PathBuf};

pub(crate) fn train(
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
pub(crate) fn resume_training(
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
    crate::resources::check_memory(
        step,
        &format!(
            "{}: one training step at train.batch_size = {}",
            source.display(),
            config.train.batch_size
        ),
        "lower train.batch_size, model.base_channels, model.image_size or model.attention_levels",
    )?;
    let grid_rows = m.num_classes * config.sample.per_class;
    crate::resources::check_memory(
        ember_model::memory::sampling_bytes(m, grid_rows),
        &format!(
            "{}: a sample grid of model.num_classes x sample.per_class = {grid_rows} images",
            source.display()
        ),
        "lower sample.per_class",
    )
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
