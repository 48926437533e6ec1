//! `ember classifier train`: the domain classifier that `ember eval` scores samples with.

use crate::DeviceArg;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ember_config::ExperimentConfig;
use ember_data::{ImageDataset, Split};
use ember_eval::classifier::{
    Classifier, TrainSpec, dataset_fingerprint, default_dir, default_noisy_dir,
};
use ember_train::{format_duration, select_device};
use std::path::PathBuf;

#[derive(Args)]
pub struct ClassifierArgs {
    #[command(subcommand)]
    pub command: ClassifierCommand,
}

#[derive(Subcommand)]
pub enum ClassifierCommand {
    /// Train the classifier on the whole training split of the config's dataset (settings from
    /// its `[classifier]` table), print its test accuracy, and save it with a fingerprint of the
    /// training files.
    Train(TrainArgs),
}

#[derive(Args)]
pub struct TrainArgs {
    /// Experiment config; its `[data]` table says which dataset, `[classifier]` how to train.
    #[arg(long)]
    pub config: PathBuf,
    /// Output folder [default: <data root>.classifier, beside the data folder, where `ember eval`
    /// looks for it]. Must be missing, empty, or a classifier folder Ember made: Ember never
    /// replaces a folder it did not make.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Train a noise-aware classifier for classifier guidance instead: on images noised by the
    /// config's `[diffusion]` process at uniformly drawn timesteps, with the timestep as an
    /// extra input [default output: <data root>.classifier-noisy].
    #[arg(long)]
    pub noisy: bool,
    /// Epochs, overriding `classifier.epochs` of the config.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Device to train on.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
}

pub fn run(args: ClassifierArgs) -> Result<()> {
    match args.command {
        ClassifierCommand::Train(args) => train(args),
    }
}

fn train(args: TrainArgs) -> Result<()> {
    let mut config = ExperimentConfig::load(&args.config)?;
    if let Some(e) = args.epochs {
        if e == 0 {
            bail!("--epochs must be at least 1");
        }
        config.classifier.epochs = e;
    }
    let shape = ember_eval::classifier::ClassifierNetConfig {
        num_classes: config.model.num_classes,
        image_channels: config.model.image_channels,
        image_size: config.model.image_size,
        feature_dim: config.classifier.feature_dim,
        time_channel: args.noisy,
    };
    crate::resources::check_memory(
        shape.training_bytes(config.classifier.batch_size),
        &format!(
            "{}: training the classifier at classifier.batch_size = {}",
            args.config.display(),
            config.classifier.batch_size
        ),
        "lower classifier.batch_size or classifier.feature_dim",
    )?;
    let device = select_device(args.device.into())?;
    let root = config.data.resolved_root();
    let classes = config.model.num_classes;
    let train = ImageDataset::load(&config.data, &config.model, Split::Train, 0)?;
    let test = ImageDataset::load(&config.data, &config.model, Split::Test, 0)?;
    let fingerprint = dataset_fingerprint(&train);
    let out = args.out.unwrap_or_else(|| {
        if args.noisy {
            default_noisy_dir(&root)
        } else {
            default_dir(&root)
        }
    });
    // Refused before the data is read or anything trains.
    Classifier::check_destination(&out)?;
    let c = &config.classifier;
    println!(
        "training the {}classifier on {} ({} training, {} test images; fingerprint {fingerprint}) for {} epochs, batch {}, lr {}",
        if args.noisy { "noise-aware " } else { "" },
        root.display(),
        burn::data::dataset::Dataset::len(&train),
        burn::data::dataset::Dataset::len(&test),
        c.epochs,
        c.batch_size,
        c.learning_rate
    );
    let spec = TrainSpec {
        config: c,
        dataset: config.data.dataset,
        root: &root,
        num_classes: classes,
        train: &train,
        test: &test,
        noise: args.noisy.then_some(&config.diffusion),
    };
    let mut classifier =
        Classifier::train(&spec, fingerprint, &device, &mut |line| println!("{line}"))
            .context(crate::WhileWorking("classifier training stopped"))?;
    classifier
        .save(&out)
        .with_context(|| format!("cannot save the classifier into {}", out.display()))?;
    let meta = classifier.meta();
    println!(
        "test accuracy {:.4} ({} test images); trained in {}; saved to {}",
        meta.test_accuracy,
        meta.test_images,
        format_duration(meta.train_seconds),
        out.display()
    );
    Ok(())
}
