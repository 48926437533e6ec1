//! What a checkpoint folder holds, and how it is written and checked.
//!
//! `model.bpk`, `ema.bpk` and `optimizer.bpk` are Burn burnpack records (AdamW moments and step
//! count included); `state.toml` holds the format version, the step, a hash of the resolved
//! config and a checksum of every other file. Nothing else is needed to resume exactly: every
//! random draw of step `n` is a function of `(seed, n)` (see `ember_model::rng`), and the data
//! loader's position is `n` modulo the batches per epoch.

use crate::Trainer;
use burn::prelude::*;
use ember_config::ExperimentConfig;
use ember_model::{UNet, UNetConfig};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "model.bpk";
pub const EMA_FILE: &str = "ema.bpk";
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
pub const CONFIG_FILE: &str = "config.toml";
pub const STATE_FILE: &str = "state.toml";
/// Bumped whenever the checkpoint layout changes; older or newer checkpoints are refused.
/// Version 2: checksums are CRC-32 (`crc32:` and 8 hex digits) instead of FNV-1a.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write checkpoint file {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("cannot load checkpoint file {path}: {message}")]
    Load { path: PathBuf, message: String },
}

fn load_error(path: &Path, message: impl Into<String>) -> CheckpointError {
    CheckpointError::Load {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Contents of `state.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointState {
    pub format_version: u32,
    /// Optimiser steps taken when the checkpoint was written.
    pub step: usize,
    /// [`checksum`] of `config.toml`, the resolved config the run was trained with.
    pub config_hash: String,
    /// [`checksum`] of each data file, to catch truncated or garbled files.
    pub checksums: std::collections::BTreeMap<String, String>,
}

use ember_io::checksum::checksum;

/// Writes every file of a checkpoint into `dir`, each flushed to disk, `state.toml` last.
pub fn write(trainer: &Trainer, dir: &Path) -> Result<(), CheckpointError> {
    let fail = |path: &Path, e: &dyn std::fmt::Display| CheckpointError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut checksums = std::collections::BTreeMap::new();
    for file in [MODEL_FILE, EMA_FILE, OPTIMIZER_FILE] {
        let p = dir.join(file);
        match file {
            MODEL_FILE => trainer
                .model
                .clone()
                .save_file(&p)
                .map_err(|e| fail(&p, &e))?,
            EMA_FILE => trainer
                .ema
                .clone()
                .save_file(&p)
                .map_err(|e| fail(&p, &e))?,
            _ => trainer.optimizer().save(&p).map_err(|e| fail(&p, &e))?,
        }
        let bytes = std::fs::read(&p).map_err(|e| fail(&p, &e))?;
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(|e| fail(&p, &e))?;
        checksums.insert(file.to_string(), checksum(&bytes));
    }
    let config_text = trainer.config.to_toml();
    let p = dir.join(CONFIG_FILE);
    write_synced(&p, config_text.as_bytes()).map_err(|e| fail(&p, &e))?;
    let state = CheckpointState {
        format_version: FORMAT_VERSION,
        step: trainer.step,
        config_hash: checksum(config_text.as_bytes()),
        checksums,
    };
    let p = dir.join(STATE_FILE);
    let text = toml::to_string(&state).expect("state serialises");
    write_synced(&p, text.as_bytes()).map_err(|e| fail(&p, &e))?;
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The resolved config stored in a checkpoint, checked against its hash.
pub fn read_config(
    dir: &Path,
    state: &CheckpointState,
) -> Result<ExperimentConfig, CheckpointError> {
    let p = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&p).map_err(|e| load_error(&p, e.to_string()))?;
    if checksum(text.as_bytes()) != state.config_hash {
        return Err(load_error(
            &p,
            "does not match config_hash in state.toml: the file is corrupted",
        ));
    }
    ExperimentConfig::parse(&text, &p).map_err(|e| load_error(&p, e.to_string()))
}

/// Reads `state.toml` and checks the format version and every file's checksum.
pub fn verify(dir: &Path) -> Result<CheckpointState, CheckpointError> {
    let p = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&p).map_err(|e| load_error(&p, e.to_string()))?;
    let state: CheckpointState = toml::from_str(&text)
        .map_err(|e| load_error(&p, format!("not a checkpoint state: {e}")))?;
    if state.format_version != FORMAT_VERSION {
        return Err(load_error(
            &p,
            format!(
                "checkpoint format version {}, but this ember reads version {FORMAT_VERSION}",
                state.format_version
            ),
        ));
    }
    for file in [MODEL_FILE, EMA_FILE, OPTIMIZER_FILE] {
        let fp = dir.join(file);
        let bytes = std::fs::read(&fp).map_err(|e| load_error(&fp, e.to_string()))?;
        let expected = state
            .checksums
            .get(file)
            .ok_or_else(|| load_error(&p, format!("no checksum for {file}")))?;
        let got = checksum(&bytes);
        if &got != expected {
            return Err(load_error(
                &fp,
                format!(
                    "checksum {got} does not match {expected} in state.toml: the file is truncated or corrupted ({} bytes)",
                    bytes.len()
                ),
            ));
        }
    }
    Ok(state)
}

/// Which weights to load for sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    Ema,
    Raw,
}

impl Weights {
    fn file(self) -> &'static str {
        match self {
            Weights::Ema => EMA_FILE,
            Weights::Raw => MODEL_FILE,
        }
    }
}

/// Loads one weights file of a checkpoint into a model built from `config`.
pub fn load_weights(
    config: &ExperimentConfig,
    path: &Path,
    device: &Device,
) -> Result<UNet, CheckpointError> {
    if !path.is_file() {
        return Err(load_error(path, "file not found"));
    }
    UNetConfig::from(&config.model)
        .init(device, 0)
        .try_load_file(path)
        .map_err(|e| {
            load_error(
                path,
                format!(
                    "{} (is it from a run with this config's model shape?)",
                    shorten(&e.to_string(), 400)
                ),
            )
        })
}

/// Loads the EMA (or raw) weights of a checkpoint, after checking its files.
pub fn load_model(
    config: &ExperimentConfig,
    dir: &Path,
    weights: Weights,
    device: &Device,
) -> Result<UNet, CheckpointError> {
    verify(dir)?;
    load_weights(config, &dir.join(weights.file()), device)
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
