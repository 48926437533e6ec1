//! The run directory: resolved config, checkpoints and sample grids of one training run.
//!
//! ```text
//! runs/mnist/
//!   config.toml                 the resolved config (every default written out)
//!   classes.txt                 the class names, one per line in label order
//!   checkpoints/step-00002000/  model.bpk, ema.bpk, optimizer.bpk, state.toml
//!   checkpoints/latest          name of the newest complete checkpoint
//!   samples/step-00002000_scale-3_classes-0-9.png   grids of the EMA weights, a row per class
//!   metrics.csv                 loss, smoothed loss, lr, grad norm, images/s of every step
//!   events.out.tfevents.*       TensorBoard scalars, grids and the config (one file per process)
//!   loss.png                    the loss curve, drawn when training ends
//! ```

use crate::Trainer;
use crate::checkpoint::{self, CheckpointError};
use ember_config::{ConfigError, ExperimentConfig};
use ember_io::write_atomic;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "run directory {0} already holds a run (config.toml exists); choose another --run-dir or pass --overwrite"
    )]
    Exists(PathBuf),
    #[error("cannot create run directory {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("no checkpoint in {0}: train first (checkpoints/latest is missing)")]
    NoCheckpoint(PathBuf),
    #[error("no usable checkpoint in {root}:\n  {reasons}")]
    NoUsableCheckpoint { root: PathBuf, reasons: String },
    #[error("data loading failed: {0}")]
    Data(String),
    #[error(
        "loss became {loss} at step {step}; stopping (the last checkpoint is intact). Lower train.learning_rate or check the data"
    )]
    NonFinite { step: usize, loss: f64 },
    #[error(transparent)]
    Monitor(#[from] ember_monitor::MonitorError),
    #[error("sampling failed: {0}")]
    Sample(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Creates a run directory and writes the resolved config into it.
    pub fn create(
        root: &Path,
        config: &ExperimentConfig,
        overwrite: bool,
    ) -> Result<Self, RunError> {
        let run = Self {
            root: root.to_path_buf(),
        };
        if run.config_path().exists() {
            if !overwrite {
                return Err(RunError::Exists(root.to_path_buf()));
            }
            for sub in ["checkpoints", "samples"] {
                let p = root.join(sub);
                if p.exists() {
                    std::fs::remove_dir_all(&p).map_err(io(&p))?;
                }
            }
        }
        let create = |source| RunError::Create {
            path: root.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(run.checkpoints_dir()).map_err(create)?;
        std::fs::create_dir_all(run.samples_dir()).map_err(create)?;
        run.update_config(config)?;
        Ok(run)
    }

    /// Opens an existing run and reads its resolved config.
    pub fn open(root: &Path) -> Result<(Self, ExperimentConfig), RunError> {
        let run = Self {
            root: root.to_path_buf(),
        };
        let config = ExperimentConfig::load(&run.config_path())?;
        Ok((run, config))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    pub fn checkpoints_dir(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    pub fn samples_dir(&self) -> PathBuf {
        self.root.join("samples")
    }

    /// `samples/step-00002000_scale-3_classes-0-9.png`: step, guidance scale and the classes of
    /// the rows readable from the name.
    pub fn sample_path(&self, step: usize, scale: f64, classes: &[usize]) -> PathBuf {
        self.samples_dir().join(format!(
            "step-{step:08}_scale-{scale}_classes-{}.png",
            classes_label(classes)
        ))
    }

    /// `classes.txt`: the class names of the training data, one per line in label order, so
    /// samplers can take a class by name.
    pub fn classes_path(&self) -> PathBuf {
        self.root.join("classes.txt")
    }

    /// Writes `classes.txt` atomically.
    pub fn write_class_names(&self, names: &[String]) -> Result<(), RunError> {
        let path = self.classes_path();
        let text: String = names.iter().map(|n| format!("{n}\n")).collect();
        write_atomic(&path, text.as_bytes()).map_err(io(&path))
    }

    /// The class names of `classes.txt`, or `None` for a run written before it existed.
    pub fn class_names(&self) -> Result<Option<Vec<String>>, RunError> {
        let path = self.classes_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.lines().map(String::from).collect())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RunError::Io { path, source }),
        }
    }

    /// Writes `config.toml`, atomically: at creation, and after a resume changed a resumable key
    /// such as `train.steps`.
    pub fn update_config(&self, config: &ExperimentConfig) -> Result<(), RunError> {
        let header = "# Resolved config of this run, written by `ember train`: every value, defaults included.\n";
        write_atomic(
            &self.config_path(),
            format!("{header}{}", config.to_toml()).as_bytes(),
        )
        .map_err(io(&self.config_path()))
    }

    /// Complete checkpoint folders (`step-NNNNNNNN`), newest first.
    pub fn checkpoints(&self) -> Result<Vec<(usize, PathBuf)>, RunError> {
        let dir = self.checkpoints_dir();
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            let step = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("step-"))
                .and_then(|n| n.parse::<usize>().ok());
            if let Some(step) = step
                && path.is_dir()
            {
                found.push((step, path));
            }
        }
        found.sort_by_key(|c| std::cmp::Reverse(c.0));
        Ok(found)
    }

    /// Resumes from the newest usable checkpoint: `latest` first, then older ones. Each
    /// checkpoint that cannot be used adds a warning naming its file and the reason.
    pub fn resume(
        &self,
        config: &ExperimentConfig,
        device: &burn::prelude::Device,
    ) -> Result<(Trainer, Vec<String>), RunError> {
        let mut candidates: Vec<PathBuf> = self.latest_checkpoint().into_iter().collect();
        for (_, path) in self.checkpoints()? {
            if !candidates.contains(&path) {
                candidates.push(path);
            }
        }
        let mut warnings = Vec::new();
        for path in candidates {
            match Trainer::from_checkpoint(config.clone(), &path, device) {
                Ok(trainer) => return Ok((trainer, warnings)),
                Err(e) => warnings.push(format!(
                    "skipping checkpoint {}: {e}; falling back to the previous one",
                    path.display()
                )),
            }
        }
        Err(RunError::NoUsableCheckpoint {
            root: self.root.clone(),
            reasons: warnings.join("\n  "),
        })
    }

    /// Writes a checkpoint into a temporary folder, renames it into place, then moves `latest`.
    pub fn save_checkpoint(&self, trainer: &Trainer) -> Result<PathBuf, RunError> {
        let dir = self.checkpoints_dir();
        let name = format!("step-{:08}", trainer.step);
        let tmp = dir.join(format!(".{name}.tmp"));
        let target = dir.join(&name);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        checkpoint::write(trainer, &tmp)?;
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(io(&target))?;
        }
        std::fs::rename(&tmp, &target).map_err(io(&target))?;
        let latest = dir.join("latest");
        write_atomic(&latest, format!("{name}\n").as_bytes()).map_err(io(&latest))?;
        let t = &trainer.config.train;
        self.prune(t.keep_checkpoints, t.keep_every, &target)?;
        Ok(target)
    }

    /// Deletes all but the newest `keep` checkpoints, except `current` and those whose step is
    /// a multiple of `keep_every` (when not 0).
    fn prune(&self, keep: usize, keep_every: usize, current: &Path) -> Result<(), RunError> {
        if keep == 0 {
            return Ok(());
        }
        for (step, path) in self.checkpoints()?.into_iter().skip(keep) {
            let kept_for_curves = keep_every > 0 && step.is_multiple_of(keep_every);
            if path != current && !kept_for_curves {
                std::fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        Ok(())
    }

    /// The newest complete checkpoint.
    pub fn latest_checkpoint(&self) -> Result<PathBuf, RunError> {
        let latest = self.checkpoints_dir().join("latest");
        let name = std::fs::read_to_string(&latest)
            .map_err(|_| RunError::NoCheckpoint(self.root.clone()))?;
        Ok(self.checkpoints_dir().join(name.trim()))
    }
}

/// `0-9` for a run of consecutive classes, `1+4+7` otherwise.
pub fn classes_label(classes: &[usize]) -> String {
    let consecutive = classes.windows(2).all(|w| w[1] == w[0] + 1);
    match classes {
        [] => String::from("none"),
        [one] => one.to_string(),
        [first, .., last] if consecutive => format!("{first}-{last}"),
        _ => classes
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join("+"),
    }
}
