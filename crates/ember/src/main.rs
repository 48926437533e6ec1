//! `ember`: train class-conditional diffusion models with classifier-free guidance, and sample
//! class-guided grids from them.

//!
//! `main.rs` parses and dispatches; each command lives in its own file: `train_cmd.rs`,
//! `sample_cmd.rs`, `eval_cmd.rs` (and `study_cmd.rs`, its `--study`), `classifier_cmd.rs`,
//! `weights_cmd.rs` (export, compare).
//! `sampling_args.rs` holds the sampling flags `sample` and `eval` share, `metric_text.rs` how
//! eval and study print the optional metrics, `resources.rs` the memory check.

mod classifier_cmd;
mod eval_cmd;
mod metric_text;
mod resources;
mod sample_cmd;
mod sampling_args;
mod study_cmd;
mod train_cmd;
mod weights_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use ember_config::DeviceKind;
use std::path::PathBuf;

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
    Sample(sample_cmd::SampleArgs),
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
    /// With --study, several guidance methods each over its scales, compared on one plot.
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
            Some(run) => train_cmd::resume_training(&run, config.as_deref(), device, steps),
            None => train_cmd::train(
                &config.expect("clap requires a config without --resume"),
                run_dir,
                overwrite,
                device,
                steps,
            ),
        },
        Command::Sample(args) => sample_cmd::run(args),
        Command::Export {
            run,
            checkpoint,
            raw,
            out,
        } => weights_cmd::export(&run, checkpoint, raw, &out),
        Command::Compare { a, b } => weights_cmd::compare(&a, &b),
        Command::Classifier(args) => classifier_cmd::run(args),
        Command::Eval(args) => eval_cmd::run(args),
    }
}
