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
//!   .ember                      Ember's marker (see ember_io), locked while a process trains
//! ```
//!
//! Only a folder that carries Ember's run marker is ever emptied (`--overwrite`), and only
//! while holding its lock, so a second `ember train` can neither clear nor continue a run that
//! another process is training.

use crate::Trainer;
use crate::checkpoint::{self, CheckpointError};
use ember_config::{ConfigError, ExperimentConfig};
use ember_io::{MARKER_FILE, OwnedDirError, OwnerKind, owner_of, prepare_owned_dir, write_atomic};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "run directory {0} already holds a run (config.toml exists); choose another --run-dir or pass --overwrite"
    )]
    Exists(PathBuf),
    #[error("cannot use it as the run directory: {1}")]
    NotUsable(PathBuf, OwnedDirError),
    #[error(
        "run directory {path} is in use by another `ember train` (it holds the lock on {lock}); wait for it to finish or stop it first"
    )]
    InUse { path: PathBuf, lock: PathBuf },
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
    #[error(
        "no checkpoint in {0}: the run stopped before writing its first one (checkpoints/latest is missing), so there is nothing to resume; start it again with `ember train <config> --run-dir {0} --overwrite`"
    )]
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
    /// The marker file, locked exclusively while this process trains the run.
    lock: Option<Arc<std::fs::File>>,
}

impl RunDir {
    /// Creates a run directory (marked as Ember's), takes its lock and writes the resolved
    /// config. An existing run is refused unless `overwrite`, which empties it completely
    /// (events, grids, eval results and all); a folder Ember did not make is never touched.
    pub fn create(
        root: &Path,
        config: &ExperimentConfig,
        overwrite: bool,
    ) -> Result<Self, RunError> {
        // A run of Ember's is locked before anything in it changes: never clear a run that
        // another process is training.
        let early_lock = match owner_of(root) {
            Some(OwnerKind::Run) => Some(lock_run(root)?),
            _ => None,
        };
        let holds_run = |dir: &Path| dir.join("config.toml").exists();
        match prepare_owned_dir(root, OwnerKind::Run, overwrite, holds_run) {
            Ok(_) => {}
            Err(OwnedDirError::Exists { .. }) => return Err(RunError::Exists(root.to_path_buf())),
            Err(e @ OwnedDirError::Io { .. }) => {
                return Err(RunError::Create {
                    path: root.to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                });
            }
            Err(e) => return Err(RunError::NotUsable(root.to_path_buf(), e)),
        }
        let lock = match early_lock {
            Some(lock) => lock,
            None => lock_run(root)?,
        };
        let run = Self {
            root: root.to_path_buf(),
            lock: Some(lock),
        };
        let create = |source| RunError::Create {
            path: root.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(run.checkpoints_dir()).map_err(create)?;
        std::fs::create_dir_all(run.samples_dir()).map_err(create)?;
        run.update_config(config)?;
        Ok(run)
    }

    /// Opens an existing run and reads its resolved config (for reading: no lock).
    pub fn open(root: &Path) -> Result<(Self, ExperimentConfig), RunError> {
        let run = Self {
            root: root.to_path_buf(),
            lock: None,
        };
        let config = ExperimentConfig::load(&run.config_path())?;
        Ok((run, config))
    }

    /// Takes the run's exclusive lock for training on (`--resume`), refusing a run another
    /// process holds. A run written before runs carried a marker gets one now.
    pub fn lock_for_training(&mut self) -> Result<(), RunError> {
        if self.lock.is_none() {
            self.lock = Some(lock_run(&self.root)?);
        }
        Ok(())
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
            "step-{step:08}_scale-{}_classes-{}.png",
            ember_config::scale_label(scale),
            classes_label(classes)
        ))
    }

    /// `classes.txt`: the class names of the training data, one per line in label order, so
    /// samplers can take a class by name.
    pub fn classes_path(&self) -> PathBuf {
        self.root.join("classes.txt")
    }

    /// Writes `classes.txt` atomically. A name with a control character (a newline would
    /// shift every later line) is refused; the data readers refuse such names already.
    pub fn write_class_names(&self, names: &[String]) -> Result<(), RunError> {
        let path = self.classes_path();
        if let Some(name) = names.iter().find(|n| n.chars().any(char::is_control)) {
            return Err(RunError::Data(format!(
                "class name {name:?} holds a control character; rename that class"
            )));
        }
        let text: String = names.iter().map(|n| format!("{n}\n")).collect();
        write_atomic(&path, text.as_bytes()).map_err(io(&path))
    }

    /// The class names of `classes.txt`, or `None` for a run written before it existed.
    pub fn class_names(&self) -> Result<Option<Vec<String>>, RunError> {
        let path = self.classes_path();
        // Ember writes one short line per class; anything far larger is not its file.
        const MAX_BYTES: u64 = 16 * 1024 * 1024;
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.len() > MAX_BYTES
        {
            return Err(RunError::Io {
                path,
                source: std::io::Error::other(format!(
                    "{} bytes; a class list is at most {MAX_BYTES}",
                    meta.len()
                )),
            });
        }
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
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(io(&dir)(e)),
        };
        for entry in entries {
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
        if candidates.is_empty() {
            return Err(RunError::NoCheckpoint(self.root.clone()));
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

    /// Writes a checkpoint durably: every file into a temporary folder and fsynced, the folder
    /// fsynced and renamed into place (a checkpoint of the same step, saved again after a
    /// fallback, is deleted only once its replacement is in place), `checkpoints/` fsynced,
    /// then `latest` moved the same way. A failure leaves the previous checkpoints and
    /// `latest` as they were, and no temporary folder.
    pub fn save_checkpoint(&self, trainer: &Trainer) -> Result<PathBuf, RunError> {
        let dir = self.checkpoints_dir();
        let name = format!("step-{:08}", trainer.step);
        let tmp = dir.join(format!(".{name}.tmp"));
        let target = dir.join(&name);
        // Left by a process of this run that was killed mid-write (this one holds the lock).
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let written = checkpoint::write(trainer, &tmp)
            .map_err(RunError::from)
            .and_then(|()| ember_io::replace_dir(&tmp, &target).map_err(io(&target)));
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
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

/// Opens (creating if needed) the run's marker file and locks it exclusively for as long as
/// the returned handle lives; the kernel releases it when the process ends, however it ends.
fn lock_run(root: &Path) -> Result<Arc<std::fs::File>, RunError> {
    let path = root.join(MARKER_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)
        .map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => {
            // A run from before runs were marked: resuming it says it is one.
            if owner_of(root).is_none() {
                use std::io::Write;
                let mut f = &file;
                f.set_len(0)
                    .and_then(|()| f.write_all(b"ember run\n"))
                    .and_then(|()| f.sync_all())
                    .map_err(io(&path))?;
            }
            Ok(Arc::new(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(RunError::InUse {
            path: root.to_path_buf(),
            lock: path,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(&path)(e)),
    }
}
