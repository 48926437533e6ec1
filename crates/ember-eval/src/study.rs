//! A guidance study: several guidance methods, each swept over its own scales, every
//! (method, scale) sampled from the same initial noise and scored as the sweep scores a scale
//! ([`crate::eval`]'s sampling and [`crate::score::Judge`], reused, CAS included when the
//! judge computes it), resumable like the sweep.
//!
//! - `study/spec.rs`: the study file (methods, scales, `[sample]` overrides) and its checks.
//! - `study/report.rs`: the CSV, the best-FD table and the Pareto plot.
//!
//! Output folder (default `<run>/study/`):
//!
//! ```text
//! study.json              shared settings, the real-data reference, and per method its
//!                         settings and one row per finished scale
//! study.csv               one row per (method, scale)
//! study.png               Pareto plot: FD against accuracy, precision against recall,
//!                         one line per method through its scales
//! study.md                each method's best FD, its scale, and accuracy and recall there
//! <method>/grid_scale-<s>.png
//! ```
//!
//! **Same noise.** Image `j` of class `c` draws its noise from `(seed, c, j)` alone
//! (`ember_sample::SeededNoise`), and no method may change the seed, so every (method, scale)
//! starts from the same `x_T`: differences between methods are the methods'.
//!
//! **Resuming.** `study.json` is rewritten after every finished (method, scale). A rerun
//! skips the pairs it holds. The shared settings (weights, classifier, sample counts) must
//! match, and so must each listed method's settings (every `[sample]` key, its weak model and
//! guidance classifier), or the study is refused naming what changed, unless the caller asks
//! to restart: then the changed methods (or, for shared settings, all) start over. Methods no
//! longer listed keep their rows, and stay in the outputs.

mod report;
mod spec;

pub use report::{best_fd_table, to_csv, write_plot};
pub use spec::{MAX_METHODS, MAX_SCALES, MethodSpec, StudySpecError, load_study, parse_study};

use crate::eval::{self, EvalError, EvalRequest, EvalSettings, Progress};
use crate::score::Judge;
use crate::{Reference, ScaleRow};
use ember_config::SampleConfig;
use ember_io::write_atomic;
use ember_model::{NoiseSchedule, UNet};
use ember_sample::NoisyClassifier;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const STUDY_JSON: &str = "study.json";
pub const STUDY_CSV: &str = "study.csv";
pub const STUDY_PLOT: &str = "study.png";
pub const STUDY_TABLE: &str = "study.md";

/// Contents of `study.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyFile {
    /// What every method shares: the sweep's settings with an empty `sampling` and no
    /// guidance classifier (each method records its own).
    pub settings: EvalSettings,
    pub reference: Reference,
    /// In the order they were first studied.
    pub methods: Vec<MethodResult>,
}

/// One method's settings and finished rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodResult {
    pub name: String,
    /// Its sampling settings, key by key (`EvalSettings::sampling_of`, plus `guide_weights`
    /// for autoguidance's weak model).
    pub sampling: serde_json::Map<String, serde_json::Value>,
    /// The noise-aware classifier of its classifier guidance, if any.
    pub guidance_classifier: Option<String>,
    /// Sorted by scale.
    pub rows: Vec<ScaleRow>,
}

impl StudyFile {
    pub fn read(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| EvalError::Invalid {
            path: path.to_path_buf(),
            message: format!("not a study result file: {e}"),
        })
    }

    pub fn method(&self, name: &str) -> Option<&MethodResult> {
        self.methods.iter().find(|m| m.name == name)
    }
}

impl MethodResult {
    pub fn row(&self, scale: f64) -> Option<&ScaleRow> {
        self.rows.iter().find(|r| r.scale == scale)
    }
}

/// One method of a study request.
pub struct StudyMethod<'a> {
    pub name: String,
    pub scales: Vec<f64>,
    /// How to sample and guide (each row's scale replaces `guidance_scale`).
    pub sampling: SampleConfig,
    /// What its rows depend on beyond the shared settings (see [`MethodResult::sampling`]).
    pub record: serde_json::Map<String, serde_json::Value>,
    /// The noise-aware classifier when `sampling.classifier_guidance > 0`, and its id.
    pub guidance_classifier: Option<(&'a dyn NoisyClassifier, String)>,
    /// Autoguidance's weak model.
    pub weak_model: Option<&'a UNet>,
}

/// One study: the sweep's inputs, with methods in place of one set of sampling settings.
pub struct StudyRequest<'a> {
    pub model: &'a UNet,
    pub schedule: &'a NoiseSchedule,
    pub image_shape: [usize; 3],
    /// Scores every (method, scale) (`settings` names its classifier, FID network and CAS
    /// recipe).
    pub judge: &'a Judge<'a>,
    pub methods: Vec<StudyMethod<'a>>,
    pub batch_size: usize,
    /// The shared settings (`sampling` empty, `guidance_classifier` None).
    pub settings: EvalSettings,
    pub out_dir: PathBuf,
    /// Start over the methods (or, for changed shared settings, the study) whose settings
    /// changed, instead of refusing.
    pub restart: bool,
    pub grid_columns: usize,
}

/// What [`run_study`] reports as it goes.
pub enum StudyProgress<'a> {
    Reference(&'a Reference),
    Skipped {
        method: &'a str,
        row: &'a ScaleRow,
    },
    Sampling {
        method: &'a str,
        scale: f64,
        done: usize,
        total: usize,
    },
    Finished {
        method: &'a str,
        row: &'a ScaleRow,
    },
}

impl<'a> StudyRequest<'a> {
    /// The sweep request that scores `method` (its grids in `<out>/<name>/`).
    fn eval_request(&'a self, method: &'a StudyMethod<'a>) -> EvalRequest<'a> {
        EvalRequest {
            model: self.model,
            schedule: self.schedule,
            image_shape: self.image_shape,
            judge: self.judge,
            scales: method.scales.clone(),
            sampling: &method.sampling,
            guidance_classifier: method.guidance_classifier.as_ref().map(|(c, _)| *c),
            weak_model: method.weak_model,
            batch_size: self.batch_size,
            settings: EvalSettings {
                sampling: method.record.clone(),
                guidance_classifier: method
                    .guidance_classifier
                    .as_ref()
                    .map(|(_, id)| id.clone()),
                ..self.settings.clone()
            },
            out_dir: self.out_dir.join(&method.name),
            restart: false,
            grid_columns: self.grid_columns,
        }
    }
}

/// Checks the request before any work.
fn check(req: &StudyRequest) -> Result<(), EvalError> {
    let s = &req.settings;
    if req.methods.is_empty() {
        return Err(EvalError::Request(
            "a study needs at least one method".into(),
        ));
    }
    if s.samples_per_class < 2 {
        return Err(EvalError::Request(
            "--samples-per-class must be at least 2 (the diversity compares pairs)".into(),
        ));
    }
    if s.samples_per_class * s.num_classes <= s.k {
        return Err(EvalError::Request(format!(
            "{} samples per scale are too few for k = {} nearest neighbours; raise --samples-per-class",
            s.samples_per_class * s.num_classes,
            s.k
        )));
    }
    if req.batch_size == 0 {
        return Err(EvalError::Request("--batch-size must be at least 1".into()));
    }
    use burn::data::dataset::Dataset;
    let test = req.judge.test.len();
    if test <= s.k {
        return Err(EvalError::Request(format!(
            "the test split has {test} images, too few for k = {}",
            s.k
        )));
    }
    for m in &req.methods {
        if m.sampling.classifier_guidance > 0.0 && m.guidance_classifier.is_none() {
            return Err(EvalError::Request(format!(
                "method \"{}\": classifier guidance needs a noise-aware classifier",
                m.name
            )));
        }
    }
    Ok(())
}

/// The study file as it continues: the previous one where its settings hold, the changed
/// methods emptied (with `restart`) or refused. `None`: a new study.
fn resume(req: &StudyRequest, path: &Path) -> Result<Option<StudyFile>, EvalError> {
    if !path.is_file() {
        return Ok(None);
    }
    let mut file = match StudyFile::read(path) {
        Ok(file) => file,
        Err(_) if req.restart => return Ok(None),
        Err(e) => return Err(e),
    };
    if !file.settings.matches(&req.settings) {
        if req.restart {
            return Ok(None);
        }
        return Err(EvalError::SettingsChanged {
            path: path.to_path_buf(),
            differences: file.settings.differences(&req.settings).join(", "),
        });
    }
    for m in &req.methods {
        let classifier = m.guidance_classifier.as_ref().map(|(_, id)| id.clone());
        match file.methods.iter_mut().find(|r| r.name == m.name) {
            Some(r) if r.sampling == m.record && r.guidance_classifier == classifier => {}
            Some(r) if req.restart => {
                r.sampling = m.record.clone();
                r.guidance_classifier = classifier;
                r.rows.clear();
            }
            Some(r) => {
                let mut differences = Vec::new();
                let old = serde_json::json!({
                    "sampling": r.sampling, "guidance_classifier": r.guidance_classifier
                });
                let new = serde_json::json!({
                    "sampling": m.record, "guidance_classifier": classifier
                });
                eval::diff_json("", &old, &new, &mut differences);
                return Err(EvalError::SettingsChanged {
                    path: path.to_path_buf(),
                    differences: format!("method \"{}\": {}", m.name, differences.join(", ")),
                });
            }
            None => {}
        }
    }
    Ok(Some(file))
}

/// Runs the study: reuses the finished (method, scale) pairs of `study.json`, samples and
/// scores the others, and rewrites the outputs after each. Returns the final `study.json`.
pub fn run_study(
    req: &StudyRequest,
    progress: &mut dyn FnMut(StudyProgress),
) -> Result<StudyFile, EvalError> {
    check(req)?;
    let json_path = req.out_dir.join(STUDY_JSON);
    std::fs::create_dir_all(&req.out_dir).map_err(|source| EvalError::Io {
        path: req.out_dir.clone(),
        source,
    })?;
    let previous = resume(req, &json_path)?;
    let missing = |file: &StudyFile| {
        req.methods.iter().any(|m| {
            let done = file.method(&m.name);
            m.scales
                .iter()
                .any(|&s| done.and_then(|d| d.row(s)).is_none())
        })
    };
    // The real side (shared by every method), only when something is computed.
    let s = &req.settings;
    let real = previous
        .as_ref()
        .is_none_or(missing)
        .then(|| req.judge.real_side(s.samples_per_class * s.num_classes));
    let mut file = match previous {
        Some(file) => file,
        None => {
            let real = real.as_ref().expect("a new study computes the real side");
            let reference = req.judge.reference(real, s.samples_per_class);
            StudyFile {
                settings: s.clone(),
                reference: Reference::from_metrics(reference, real.features.len()),
                methods: Vec::new(),
            }
        }
    };
    for m in &req.methods {
        if file.method(&m.name).is_none() {
            file.methods.push(MethodResult {
                name: m.name.clone(),
                sampling: m.record.clone(),
                guidance_classifier: m.guidance_classifier.as_ref().map(|(_, id)| id.clone()),
                rows: Vec::new(),
            });
        }
    }
    progress(StudyProgress::Reference(&file.reference));
    save(&file, &req.out_dir)?;

    for m in &req.methods {
        let sweep = req.eval_request(m);
        for &scale in &m.scales {
            let index = file
                .methods
                .iter()
                .position(|r| r.name == m.name)
                .expect("every listed method has an entry");
            if let Some(row) = file.methods[index].row(scale) {
                progress(StudyProgress::Skipped {
                    method: &m.name,
                    row,
                });
                continue;
            }
            std::fs::create_dir_all(&sweep.out_dir).map_err(|source| EvalError::Io {
                path: sweep.out_dir.clone(),
                source,
            })?;
            let real = real.as_ref().expect("computed when a pair is missing");
            let row = eval::evaluate_scale(&sweep, real, scale, &mut |p| {
                if let Progress::Sampling { scale, done, total } = p {
                    progress(StudyProgress::Sampling {
                        method: &m.name,
                        scale,
                        done,
                        total,
                    });
                }
            })?;
            let rows = &mut file.methods[index].rows;
            rows.push(row);
            rows.sort_by(|a, b| a.scale.total_cmp(&b.scale));
            save(&file, &req.out_dir)?;
            let row = file.methods[index].row(scale).expect("just added");
            progress(StudyProgress::Finished {
                method: &m.name,
                row,
            });
        }
    }
    write_plot(&file, &req.out_dir.join(STUDY_PLOT))?;
    Ok(file)
}

/// Writes `study.json`, `study.csv` and `study.md`.
fn save(file: &StudyFile, out_dir: &Path) -> Result<(), EvalError> {
    for (name, contents) in [
        (STUDY_JSON, eval::to_json_value(file)),
        (STUDY_CSV, to_csv(file)),
        (STUDY_TABLE, best_fd_table(file)),
    ] {
        let path = out_dir.join(name);
        write_atomic(&path, contents.as_bytes())
            .map_err(|source| EvalError::Io { path, source })?;
    }
    Ok(())
}
