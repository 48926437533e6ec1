//! What a checkpoint folder holds: model, EMA and optimizer state in Burn's burnpack format,
//! and `state.toml` with the step.

use crate::Trainer;
use burn::prelude::*;
use ember_config::ExperimentConfig;
use ember_model::{UNet, UNetConfig};
use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "model.bpk";
pub const EMA_FILE: &str = "ema.bpk";
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
pub const STATE_FILE: &str = "state.toml";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write checkpoint file {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error(
        "cannot load checkpoint file {path}: {message} (is it from a run with this config's model shape?)"
    )]
    Load { path: PathBuf, message: String },
}

/// Writes every file of a checkpoint into `dir`.
pub fn write(trainer: &Trainer, dir: &Path) -> Result<(), CheckpointError> {
    let fail = |path: PathBuf, e: &dyn std::fmt::Display| CheckpointError::Write {
        path,
        message: e.to_string(),
    };
    let p = dir.join(MODEL_FILE);
    trainer
        .model
        .clone()
        .save_file(&p)
        .map_err(|e| fail(p, &e))?;
    let p = dir.join(EMA_FILE);
    trainer.ema.clone().save_file(&p).map_err(|e| fail(p, &e))?;
    let p = dir.join(OPTIMIZER_FILE);
    trainer.optimizer().save(&p).map_err(|e| fail(p, &e))?;
    let p = dir.join(STATE_FILE);
    std::fs::write(&p, format!("step = {}\n", trainer.step)).map_err(|e| fail(p, &e))?;
    Ok(())
}

/// Which weights to load for sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    Ema,
    Raw,
}

/// Loads the EMA (or raw) weights of a checkpoint into a model built from `config`.
pub fn load_model(
    config: &ExperimentConfig,
    dir: &Path,
    weights: Weights,
    device: &Device,
) -> Result<UNet, CheckpointError> {
    let path = dir.join(match weights {
        Weights::Ema => EMA_FILE,
        Weights::Raw => MODEL_FILE,
    });
    if !path.is_file() {
        return Err(CheckpointError::Load {
            message: "file not found".into(),
            path,
        });
    }
    UNetConfig::from(&config.model)
        .init(device)
        .try_load_file(&path)
        .map_err(|e| CheckpointError::Load {
            message: shorten(&e.to_string(), 400),
            path,
        })
}

/// Burn lists every mismatched tensor; the first few say enough.
fn shorten(message: &str, max_chars: usize) -> String {
    match message.char_indices().nth(max_chars) {
        Some((cut, _)) => format!(
            "{} ... ({} more characters)",
            &message[..cut],
            message.len() - cut
        ),
        None => message.to_string(),
    }
}
