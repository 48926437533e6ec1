//! What Ember writes for watching a run: TensorBoard event files, the per-step history
//! (`metrics.csv`), PNG plots and the progress display. Nothing here touches tensors; the
//! training loop (ember-train) and the evaluator decide what to record.

pub mod history;
pub mod plot;
pub mod progress;
pub mod tensorboard;

use std::path::PathBuf;

/// What the training loop reports after each optimiser step.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// Optimiser steps taken so far in the run (1 after the first).
    pub step: usize,
    pub total_steps: usize,
    pub epoch: usize,
    pub loss: f64,
    pub learning_rate: f64,
    pub grad_norm: f64,
    /// Averaged over this process's steps (a resumed run starts counting again).
    pub images_per_second: f64,
    /// Seconds since this process started training.
    pub elapsed_seconds: f64,
    /// The step this process started from (0, or the checkpoint it resumed).
    pub start_step: usize,
}

impl StepReport {
    pub fn steps_this_session(&self) -> usize {
        (self.step - self.start_step).max(1)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("cannot draw plot {path}: {message}")]
    Plot { path: PathBuf, message: String },
}
