//! The guidance sweep: for each scale, sample every class from the same initial noise, score
//! the samples with the classifier and the feature metrics, and keep the results resumable.
//!
//! Output folder (default `<run>/eval/`):
//!
//! ```text
//! eval.json             settings, the real-data reference and one row per finished scale
//! eval.csv              the rows, sorted by scale
//! eval.png              accuracy, Fréchet distance, precision/recall, diversity vs the scale
//! grid_scale-<s>.png    a grid per scale: one row per class, up to `grid_columns` samples
//! tensorboard/          the rows as scalars `eval/<metric>` at step round(scale * 100)
//! ```
//!
//! `eval.json` is rewritten (atomically) after every finished scale. A new eval with the same
//! [`EvalSettings`] skips the scales it already holds; other settings are refused unless the
//! caller asks to restart, so rows computed differently never mix.
//!
//! **Same noise across scales, and as `ember sample`.** Sample `j` of class `c` draws its initial
//! and step noise from `(seed, c, j)` alone (`ember_sample::SeededNoise`), so row `c`, column
//! `j` of every grid starts from the same `x_T`, adding classes or samples does not change the
//! others, the batch size does not matter, and `ember sample` with the same settings draws the
//! same images.
//!
//! **Every sampling option counts.** The sweep samples with the one settings type of sampling
//! (`ember_config::SampleConfig`: the run's `[sample]` table with the flags applied), at each
//! scale in turn; eval.json records all of it, so a rerun with another option is refused.

use crate::score::{Judge, Metrics, RealSide};
use burn::prelude::*;
use ember_config::{ClassifierConfig, SampleConfig, SamplerKind};
use ember_io::{GridImage, write_atomic, write_png};
use ember_model::{NoiseSchedule, UNet};
use ember_monitor::plot::{Panel, Series, write_panels};
use ember_monitor::tensorboard::{EventLog, event_files};
use ember_sample::grid::make_grid;
use ember_sample::{Guidance, NoisyClassifier, sample_images};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const EVAL_JSON: &str = "eval.json";
pub const EVAL_CSV: &str = "eval.csv";
pub const EVAL_PLOT: &str = "eval.png";
pub const TENSORBOARD_DIR: &str = "tensorboard";
/// Bumped when the meaning of a field changes; other versions are treated as other settings.
/// 2: every sampling option recorded (`sampling`), noise drawn per image.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "{path} holds results of other settings ({differences}); pass --restart to discard them, or choose another --out"
    )]
    SettingsChanged { path: PathBuf, differences: String },
    #[error("{0}")]
    Request(String),
    #[error(transparent)]
    Monitor(#[from] ember_monitor::MonitorError),
    #[error(transparent)]
    Grid(#[from] ember_io::ImageError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Everything that changes what a row means. Rows are reused only under equal settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSettings {
    pub format_version: u32,
    /// The weights sampled: checkpoint folder and a checksum of its EMA file.
    pub weights: String,
    pub num_classes: usize,
    pub samples_per_class: usize,
    /// The sampling settings, key by key as in `[sample]` (see [`EvalSettings::sampling_of`]).
    pub sampling: serde_json::Map<String, serde_json::Value>,
    /// [`crate::FeatureExtractor::id`] of the accuracy classifier and of the feature network.
    pub classifier: String,
    pub features: String,
    /// `k` of the k-nearest-neighbour manifolds.
    pub k: usize,
    /// [`crate::FeatureExtractor::id`] of the standard-FID network (`--fid inception`), if used.
    pub fid: Option<String>,
    /// The noise-aware classifier of classifier guidance (`sampling.classifier_guidance > 0`).
    pub guidance_classifier: Option<String>,
    /// How CAS trains its classifier (`--cas`), if computed.
    #[serde(default)]
    pub cas: Option<ClassifierConfig>,
}

impl EvalSettings {
    /// The record of the sampling settings: every key of `[sample]` but those a sweep sets
    /// itself (`guidance_scale`: each row has its own; `per_class`: `samples_per_class`) or
    /// names otherwise (`guidance_classifier`: recorded by its id).
    pub fn sampling_of(settings: &SampleConfig) -> serde_json::Map<String, serde_json::Value> {
        let mut map = match serde_json::to_value(settings).expect("settings serialise") {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("a struct serialises to an object"),
        };
        for key in ["guidance_scale", "per_class", "guidance_classifier"] {
            map.remove(key);
        }
        map
    }

    /// `key: old -> new` for each differing field (`sampling.<key>` for sampling settings).
    /// No [`differences`](Self::differences): the rows of `self` hold for `other`.
    pub fn matches(&self, other: &Self) -> bool {
        self.differences(other).is_empty()
    }

    /// A `[sample]` key added after a file was written counts as its default there: that is
    /// how the file's rows were sampled, so results of older versions stay reusable. `eta` is
    /// compared only where a sampler reads it ([`SamplerKind::reads_eta`]): rows of DDPM or
    /// DPM-Solver++ are the same whatever it is, and files record it for every sampler.
    pub(crate) fn differences(&self, other: &Self) -> Vec<String> {
        let defaults = Self::sampling_of(&SampleConfig::default());
        let (mut a, mut b) = (self.clone(), other.clone());
        for sampling in [&mut a.sampling, &mut b.sampling] {
            for (key, value) in &defaults {
                sampling.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        let reads_eta = |sampling: &serde_json::Map<String, serde_json::Value>| {
            sampling
                .get("sampler")
                .and_then(|v| serde_json::from_value::<SamplerKind>(v.clone()).ok())
                .is_none_or(SamplerKind::reads_eta)
        };
        if !reads_eta(&a.sampling) && !reads_eta(&b.sampling) {
            a.sampling.remove("eta");
            b.sampling.remove("eta");
        }
        let a = serde_json::to_value(&a).expect("settings serialise");
        let b = serde_json::to_value(&b).expect("settings serialise");
        let mut out = Vec::new();
        diff_json("", &a, &b, &mut out);
        out
    }
}

/// `key: old -> new` for each differing leaf of two JSON values, keys prefixed by `prefix`.
pub(crate) fn diff_json(
    prefix: &str,
    a: &serde_json::Value,
    b: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                let null = Value::Null;
                diff_json(
                    &path,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{prefix}: {a} -> {b}")),
        _ => {}
    }
}

/// The metrics of one guidance scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRow {
    pub scale: f64,
    /// Fraction of samples the classifier assigns to the class they were sampled for.
    #[serde(deserialize_with = "null_as_nan")]
    pub accuracy: f64,
    /// Fréchet distance to the real test set, in the feature space.
    #[serde(deserialize_with = "null_as_nan")]
    pub fd: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub precision: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub recall: f64,
    /// [`metrics::intra_class_diversity`] of the samples, grouped by requested class.
    #[serde(deserialize_with = "null_as_nan")]
    pub diversity: f64,
    /// Standard FID (Inception pool features) against as many real test images as samples.
    #[serde(default)]
    pub fid: Option<f64>,
    /// Classification accuracy score: a classifier trained on these samples alone, tested on
    /// the real test split (`--cas`).
    #[serde(default)]
    pub cas: Option<f64>,
    pub samples: usize,
    /// Wall time of this scale (sampling and scoring).
    #[serde(deserialize_with = "null_as_nan")]
    pub seconds: f64,
}

/// The same metrics for real images: the first `images` of the training split (as many as one
/// scale samples) against the test split. The Fréchet distance here is the floor a perfect
/// generator reaches with this many samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub images: usize,
    pub test_images: usize,
    #[serde(deserialize_with = "null_as_nan")]
    pub accuracy: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub fd: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub precision: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub recall: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub diversity: f64,
    /// Standard FID of those training images against the same real test images as the rows.
    #[serde(default)]
    pub fid: Option<f64>,
    /// CAS of those training images: the same classifier training on real images.
    #[serde(default)]
    pub cas: Option<f64>,
}

impl Reference {
    pub(crate) fn from_metrics(m: Metrics, test_images: usize) -> Self {
        Self {
            images: m.samples,
            test_images,
            accuracy: m.accuracy,
            fd: m.fd,
            precision: m.precision,
            recall: m.recall,
            diversity: m.diversity,
            fid: m.fid,
            cas: m.cas,
        }
    }
}

impl ScaleRow {
    pub(crate) fn from_metrics(scale: f64, m: Metrics, seconds: f64) -> Self {
        Self {
            scale,
            accuracy: m.accuracy,
            fd: m.fd,
            precision: m.precision,
            recall: m.recall,
            diversity: m.diversity,
            fid: m.fid,
            cas: m.cas,
            samples: m.samples,
            seconds,
        }
    }
}

/// serde_json writes a NaN metric (a diverged model) as `null`; read it back as NaN so such a
/// file still resumes.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Contents of `eval.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalFile {
    pub settings: EvalSettings,
    pub reference: Reference,
    /// Sorted by scale.
    pub rows: Vec<ScaleRow>,
}

impl EvalFile {
    pub fn read(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        serde_json::from_str(&text).map_err(|e| EvalError::Invalid {
            path: path.to_path_buf(),
            message: format!("not an eval result file: {e}"),
        })
    }

    pub fn row(&self, scale: f64) -> Option<&ScaleRow> {
        self.rows.iter().find(|r| r.scale == scale)
    }

    /// The rows as CSV with a header line; the `fid` and `cas` columns only when computed.
    pub fn to_csv(&self) -> String {
        let columns = MetricColumns::of(&self.settings);
        let mut out = format!("scale,{}\n", columns.header());
        for r in &self.rows {
            out.push_str(&format!("{},{}\n", r.scale, columns.fields(r)));
        }
        out
    }
}

/// The metric columns of every CSV `ember eval` writes (the sweep's, the curve's, the
/// study's), after each file's own leading columns: `fid` and `cas` only when computed.
#[derive(Debug, Clone, Copy)]
pub struct MetricColumns {
    pub fid: bool,
    pub cas: bool,
}

impl MetricColumns {
    pub fn of(settings: &EvalSettings) -> Self {
        Self {
            fid: settings.fid.is_some(),
            cas: settings.cas.is_some(),
        }
    }

    /// `accuracy,fd,precision,recall,diversity,[fid,][cas,]samples,seconds`
    pub fn header(self) -> String {
        let mut out = String::from("accuracy,fd,precision,recall,diversity,");
        if self.fid {
            out.push_str("fid,");
        }
        if self.cas {
            out.push_str("cas,");
        }
        out.push_str("samples,seconds");
        out
    }

    /// One row's values for [`header`](Self::header)'s columns (an empty field for an
    /// optional metric a row lacks).
    pub fn fields(self, r: &ScaleRow) -> String {
        let optional = |on: bool, v: Option<f64>| match (on, v) {
            (true, Some(v)) => format!("{v},"),
            (true, None) => ",".to_string(),
            (false, _) => String::new(),
        };
        format!(
            "{},{},{},{},{},{}{}{},{:.3}",
            r.accuracy,
            r.fd,
            r.precision,
            r.recall,
            r.diversity,
            optional(self.fid, r.fid),
            optional(self.cas, r.cas),
            r.samples,
            r.seconds
        )
    }
}

/// One guidance sweep.
pub struct EvalRequest<'a> {
    /// The (EMA) weights to sample from.
    pub model: &'a UNet,
    pub schedule: &'a NoiseSchedule,
    /// `[channels, size, size]` of the model's images.
    pub image_shape: [usize; 3],
    /// Scores the samples (`settings` names its classifier, FID network and CAS recipe).
    pub judge: &'a Judge<'a>,
    pub scales: Vec<f64>,
    /// How to sample and guide (the scale of each row replaces its `guidance_scale`).
    pub sampling: &'a SampleConfig,
    /// The noise-aware classifier when `sampling.classifier_guidance > 0`.
    pub guidance_classifier: Option<&'a dyn NoisyClassifier>,
    /// Autoguidance's weak model when `sampling.guidance_method` is autoguidance.
    pub weak_model: Option<&'a UNet>,
    /// Images per sampler batch: memory, not results.
    pub batch_size: usize,
    pub settings: EvalSettings,
    pub out_dir: PathBuf,
    /// Discard results of other settings instead of refusing.
    pub restart: bool,
    /// Samples per class shown in each grid (the first ones).
    pub grid_columns: usize,
}

/// What [`run_eval`] reports as it goes.
pub enum Progress<'a> {
    Reference(&'a Reference),
    Skipped(&'a ScaleRow),
    Sampling {
        scale: f64,
        done: usize,
        total: usize,
    },
    Finished(&'a ScaleRow),
}

/// `grid_scale-<s>.png`, the scale written as Rust prints it (`3`, `1.5`).
pub fn grid_file_name(scale: f64) -> String {
    format!("grid_scale-{}.png", ember_config::scale_label(scale))
}

/// The TensorBoard step of a scale: `round(scale * 100)`, so the x axis reads as the scale in
/// hundredths (TensorBoard steps are integers).
pub fn tensorboard_step(scale: f64) -> usize {
    (scale * 100.0).round().max(0.0) as usize
}

/// Checks the request before any work: scales finite, non-negative and distinct; enough
/// samples for the k-NN radii and the diversity.
fn check(req: &EvalRequest) -> Result<(), EvalError> {
    let s = &req.settings;
    if req.scales.is_empty() {
        return Err(EvalError::Request(
            "--guidance needs at least one scale".into(),
        ));
    }
    for (i, &g) in req.scales.iter().enumerate() {
        if !g.is_finite() || g < 0.0 {
            return Err(EvalError::Request(format!(
                "--guidance {g}: expected finite scales >= 0"
            )));
        }
        if req.scales[..i].contains(&g) {
            return Err(EvalError::Request(format!("--guidance lists {g} twice")));
        }
    }
    if s.samples_per_class < 2 {
        return Err(EvalError::Request(
            "--samples-per-class must be at least 2 (the diversity compares pairs)".into(),
        ));
    }
    let n = s.samples_per_class * s.num_classes;
    if n <= s.k {
        return Err(EvalError::Request(format!(
            "{n} samples per scale are too few for k = {} nearest neighbours; raise --samples-per-class",
            s.k
        )));
    }
    if req.batch_size == 0 {
        return Err(EvalError::Request("--batch-size must be at least 1".into()));
    }
    if req.sampling.classifier_guidance > 0.0 && req.guidance_classifier.is_none() {
        return Err(EvalError::Request(
            "classifier guidance needs a noise-aware classifier".into(),
        ));
    }
    use burn::data::dataset::Dataset;
    let test = req.judge.test.len();
    if test <= s.k {
        return Err(EvalError::Request(format!(
            "the test split has {test} images, too few for k = {}",
            s.k
        )));
    }
    Ok(())
}

/// Runs the sweep: reuses finished scales of `eval.json`, samples and scores the others, and
/// writes every output after each scale. Returns the final contents of `eval.json`.
pub fn run_eval(
    req: &EvalRequest,
    progress: &mut dyn FnMut(Progress),
) -> Result<EvalFile, EvalError> {
    check(req)?;
    let s = &req.settings;
    let json_path = req.out_dir.join(EVAL_JSON);
    std::fs::create_dir_all(&req.out_dir).map_err(io(&req.out_dir))?;
    let previous = if json_path.is_file() {
        let old = EvalFile::read(&json_path);
        match old {
            // Settings equal up to keys newer than the file: continued under today's names.
            Ok(old) if old.settings.matches(s) => Some(EvalFile {
                settings: s.clone(),
                ..old
            }),
            Ok(old) if !req.restart => {
                return Err(EvalError::SettingsChanged {
                    path: json_path,
                    differences: old.settings.differences(s).join(", "),
                });
            }
            Err(e) if !req.restart => return Err(e),
            _ => None,
        }
    } else {
        None
    };

    // The real side: test features (stats and k-NN radii), only when something is computed.
    let n = s.samples_per_class * s.num_classes;
    let needs_real = previous
        .as_ref()
        .is_none_or(|file| req.scales.iter().any(|&scale| file.row(scale).is_none()));
    let real = needs_real.then(|| req.judge.real_side(n));
    let mut file = match previous {
        Some(file) => file,
        None => {
            let real = real.as_ref().expect("a new file computes the real side");
            let reference = req.judge.reference(real, s.samples_per_class);
            EvalFile {
                settings: s.clone(),
                reference: Reference::from_metrics(reference, real.features.len()),
                rows: Vec::new(),
            }
        }
    };
    progress(Progress::Reference(&file.reference));
    save_json(&file, &json_path)?;

    for &scale in &req.scales {
        if let Some(row) = file.row(scale) {
            progress(Progress::Skipped(row));
            continue;
        }
        let real = real.as_ref().expect("computed when a scale is missing");
        let row = evaluate_scale(req, real, scale, progress)?;
        file.rows.push(row);
        file.rows.sort_by(|a, b| a.scale.total_cmp(&b.scale));
        save_json(&file, &json_path)?;
        let csv = req.out_dir.join(EVAL_CSV);
        write_atomic(&csv, file.to_csv().as_bytes()).map_err(io(&csv))?;
        progress(Progress::Finished(file.row(scale).expect("just added")));
    }
    let csv = req.out_dir.join(EVAL_CSV);
    write_atomic(&csv, file.to_csv().as_bytes()).map_err(io(&csv))?;
    write_plot(&file, &req.out_dir.join(EVAL_PLOT))?;
    write_tensorboard(&file, &req.out_dir)?;
    Ok(file)
}

/// The text of `eval.json`.
pub fn to_json(file: &EvalFile) -> String {
    to_json_value(file)
}

/// Pretty JSON with a final newline.
pub(crate) fn to_json_value(value: &impl Serialize) -> String {
    let text = serde_json::to_string_pretty(value).expect("results serialise");
    format!("{text}\n")
}

fn save_json(file: &EvalFile, path: &Path) -> Result<(), EvalError> {
    write_atomic(path, to_json(file).as_bytes()).map_err(io(path))
}

/// Samples and scores one scale; writes its grid into `req.out_dir`.
pub(crate) fn evaluate_scale(
    req: &EvalRequest,
    real: &RealSide,
    scale: f64,
    progress: &mut dyn FnMut(Progress),
) -> Result<ScaleRow, EvalError> {
    let start = Instant::now();
    let s = &req.settings;
    let guidance = Guidance::new(req.sampling, req.guidance_classifier)
        .with_weak_model(req.weak_model)
        .at_scale(scale);
    let sampled = SampledSet {
        model: req.model,
        schedule: req.schedule,
        image_shape: req.image_shape,
        guidance,
        num_classes: s.num_classes,
        samples_per_class: s.samples_per_class,
        batch_size: req.batch_size,
        grid_columns: req.grid_columns,
    };
    let (metrics, grid) = sampled.score(req.judge, real, &mut |done, total| {
        progress(Progress::Sampling { scale, done, total })
    });
    write_png(&grid, &req.out_dir.join(grid_file_name(scale)))?;
    Ok(ScaleRow::from_metrics(
        scale,
        metrics,
        start.elapsed().as_secs_f64(),
    ))
}

/// `samples_per_class` images of every class from one model and guidance, sampled in batches
/// and scored as they come (image `j` of class `c` always from the same noise).
pub struct SampledSet<'a> {
    pub model: &'a UNet,
    pub schedule: &'a NoiseSchedule,
    /// `[channels, size, size]` of the model's images.
    pub image_shape: [usize; 3],
    pub guidance: Guidance<'a>,
    pub num_classes: usize,
    pub samples_per_class: usize,
    /// Images per sampler batch: memory, not results.
    pub batch_size: usize,
    /// Samples per class kept for the grid (the first ones).
    pub grid_columns: usize,
}

impl SampledSet<'_> {
    /// Samples and scores the set; returns its metrics and a grid of its first images (one row
    /// per class). `progress(done, total)` after each batch.
    pub fn score(
        &self,
        judge: &Judge,
        real: &RealSide,
        progress: &mut dyn FnMut(usize, usize),
    ) -> (Metrics, GridImage) {
        let device = &judge.device;
        let [c, h, w] = self.image_shape;
        let pixels = c * h * w;
        let jobs: Vec<(usize, usize)> = (0..self.num_classes)
            .flat_map(|class| (0..self.samples_per_class).map(move |j| (class, j)))
            .collect();
        let columns = self.grid_columns.clamp(1, self.samples_per_class);
        let mut grid_pixels = vec![0f32; self.num_classes * columns * pixels];
        let mut tally = judge.tally();
        let mut done = 0;
        for chunk in jobs.chunks(self.batch_size.max(1)) {
            let labels: Vec<usize> = chunk.iter().map(|&(class, _)| class).collect();
            let images = sample_images(
                self.model,
                self.schedule,
                chunk,
                self.guidance,
                None,
                self.image_shape,
                device,
            );
            if chunk.iter().any(|&(_, j)| j < columns) {
                let values = images
                    .clone()
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .expect("f32 images");
                for (i, &(class, j)) in chunk.iter().enumerate() {
                    if j < columns {
                        let at = (class * columns + j) * pixels;
                        grid_pixels[at..at + pixels]
                            .copy_from_slice(&values[i * pixels..(i + 1) * pixels]);
                    }
                }
            }
            tally.add(images, &labels);
            done += chunk.len();
            progress(done, jobs.len());
        }
        let grid_images = Tensor::<4>::from_data(
            TensorData::new(grid_pixels, [self.num_classes * columns, c, h, w]),
            device,
        );
        (
            tally.finish(real),
            make_grid(grid_images, self.num_classes, columns),
        )
    }
}

/// `eval.png`: four panels against the guidance scale, each with the real-data reference as a
/// flat line.
pub fn write_plot(file: &EvalFile, path: &Path) -> Result<(), EvalError> {
    let xs: Vec<f64> = file.rows.iter().map(|r| r.scale).collect();
    let (lo, hi) = match (xs.first(), xs.last()) {
        (Some(&lo), Some(&hi)) => (lo, hi),
        _ => return Ok(()),
    };
    let line = |name: &str, f: &dyn Fn(&ScaleRow) -> f64| Series {
        name: name.to_string(),
        points: file.rows.iter().map(|r| (r.scale, f(r))).collect(),
    };
    let flat = |name: &str, y: f64| Series {
        name: name.to_string(),
        points: vec![(lo, y), (hi, y)],
    };
    let r = &file.reference;
    let mut panels = vec![
        Panel {
            title: "class accuracy (classifier)".into(),
            y_label: "accuracy".into(),
            series: vec![line("samples", &|r| r.accuracy), flat("real", r.accuracy)],
            markers: true,
        },
        Panel {
            title: "Frechet distance to the test set".into(),
            y_label: "FD (classifier features)".into(),
            series: vec![line("samples", &|r| r.fd), flat("real train (floor)", r.fd)],
            markers: true,
        },
        Panel {
            title: format!("precision / recall (k = {})", file.settings.k),
            y_label: "fraction".into(),
            series: vec![
                line("precision", &|r| r.precision),
                line("recall", &|r| r.recall),
                flat("real precision", r.precision),
                flat("real recall", r.recall),
            ],
            markers: true,
        },
        Panel {
            title: "intra-class diversity".into(),
            y_label: "mean pairwise feature distance".into(),
            series: vec![line("samples", &|r| r.diversity), flat("real", r.diversity)],
            markers: true,
        },
    ];
    if let Some(real_cas) = r.cas {
        panels.push(Panel {
            title: "classification accuracy score (trained on samples)".into(),
            y_label: "test accuracy".into(),
            series: vec![
                line("CAS", &|r| r.cas.unwrap_or(f64::NAN)),
                flat("trained on real", real_cas),
            ],
            markers: true,
        });
    }
    if let Some(real_fid) = r.fid {
        panels.push(Panel {
            title: "standard FID (Inception-v3 pool features)".into(),
            y_label: "FID".into(),
            series: vec![
                line("samples", &|r| r.fid.unwrap_or(f64::NAN)),
                flat("real train (floor)", real_fid),
            ],
            markers: true,
        });
    }
    write_panels(
        path,
        "guidance scale",
        &panels,
        if panels.len() > 4 { 3 } else { 2 },
    )?;
    Ok(())
}

/// Rewrites `tensorboard/` from scratch: scalars `eval/accuracy`, `eval/fd`, `eval/precision`,
/// `eval/recall`, `eval/diversity` and the image `eval/grid` at step [`tensorboard_step`], plus
/// the reference as `eval/real_*` at step 0. Rewriting (instead of appending) keeps a resumed
/// eval from duplicating the rows of its earlier runs.
pub fn write_tensorboard(file: &EvalFile, out_dir: &Path) -> Result<(), EvalError> {
    let dir = out_dir.join(TENSORBOARD_DIR);
    for old in event_files(&dir) {
        std::fs::remove_file(&old).map_err(io(&old))?;
    }
    let mut log = EventLog::create(&dir)?;
    let r = &file.reference;
    for (tag, v) in [
        ("eval/real_accuracy", r.accuracy),
        ("eval/real_fd", r.fd),
        ("eval/real_precision", r.precision),
        ("eval/real_recall", r.recall),
        ("eval/real_diversity", r.diversity),
    ] {
        log.scalar(tag, 0, v);
    }
    if let Some(fid) = r.fid {
        log.scalar("eval/real_fid", 0, fid);
    }
    for row in &file.rows {
        let step = tensorboard_step(row.scale);
        log.scalar("eval/accuracy", step, row.accuracy);
        log.scalar("eval/fd", step, row.fd);
        log.scalar("eval/precision", step, row.precision);
        log.scalar("eval/recall", step, row.recall);
        log.scalar("eval/diversity", step, row.diversity);
        if let Some(fid) = row.fid {
            log.scalar("eval/fid", step, fid);
        }
        let grid = out_dir.join(grid_file_name(row.scale));
        if let Ok(image) = ember_io::read_png(&grid) {
            log.image("eval/grid", step, &image);
        }
    }
    log.flush();
    Ok(())
}

/// A grid image in memory (for tests).
pub fn read_grid(out_dir: &Path, scale: f64) -> Result<GridImage, EvalError> {
    Ok(ember_io::read_png(&out_dir.join(grid_file_name(scale)))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_with(sampling: &SampleConfig) -> EvalSettings {
        EvalSettings {
            format_version: FORMAT_VERSION,
            weights: "step-00000004 ema.bpk 0123".into(),
            num_classes: 10,
            samples_per_class: 2,
            sampling: EvalSettings::sampling_of(sampling),
            classifier: "classifier-ab".into(),
            features: "classifier-ab".into(),
            k: 3,
            fid: None,
            guidance_classifier: None,
            cas: None,
        }
    }

    fn settings() -> EvalSettings {
        settings_with(&SampleConfig::default())
    }

    #[test]
    fn a_sampling_key_newer_than_the_file_counts_as_its_default() {
        let current = settings();
        let mut older = current.clone();
        older.sampling.remove("guidance_method");
        older.sampling.remove("apg_eta");
        assert!(older.differences(&current).is_empty());
        let mut apg = current.clone();
        apg.sampling = EvalSettings::sampling_of(&SampleConfig {
            guidance_method: ember_config::GuidanceMethod::Apg,
            ..Default::default()
        });
        assert_eq!(
            older.differences(&apg),
            vec!["sampling.guidance_method: \"cfg\" -> \"apg\""]
        );
    }

    #[test]
    fn eta_counts_only_for_a_sampler_that_reads_it() {
        let with = |sampler, eta| {
            settings_with(&SampleConfig {
                sampler,
                eta,
                ..Default::default()
            })
        };
        for sampler in [SamplerKind::Ddpm, SamplerKind::DpmppTwoM, SamplerKind::Heun] {
            assert!(
                with(sampler, 0.0).matches(&with(sampler, 0.5)),
                "{sampler:?}"
            );
        }
        assert_eq!(
            with(SamplerKind::Ddim, 0.0).differences(&with(SamplerKind::Ddim, 0.5)),
            vec!["sampling.eta: 0.0 -> 0.5"]
        );
        // Between a sampler that reads it and one that does not, both differences are named.
        assert_eq!(
            with(SamplerKind::Ddpm, 0.0).differences(&with(SamplerKind::Ddim, 0.5)),
            vec![
                "sampling.eta: 0.0 -> 0.5",
                "sampling.sampler: \"ddpm\" -> \"ddim\""
            ]
        );
    }

    #[test]
    fn changed_settings_are_named_with_old_and_new_values() {
        let a = settings();
        let mut b = a.clone();
        assert!(a.differences(&b).is_empty());
        b.samples_per_class = 5;
        let mut sampling = SampleConfig {
            seed: 9,
            cfg_rescale: 0.7,
            negative_class: Some(3),
            ..Default::default()
        };
        b.sampling = EvalSettings::sampling_of(&sampling);
        let d = a.differences(&b);
        assert_eq!(
            d,
            vec![
                "samples_per_class: 2 -> 5",
                "sampling.cfg_rescale: 0.0 -> 0.7",
                "sampling.negative_class: null -> 3",
                "sampling.seed: 0 -> 9",
            ]
        );
        // The scale and the grid width are each run's own, not settings of the rows.
        sampling = SampleConfig {
            guidance_scale: 7.0,
            per_class: 3,
            ..Default::default()
        };
        assert!(a.differences(&settings_with(&sampling)).is_empty());
    }

    #[test]
    fn csv_and_file_names_and_tensorboard_steps() {
        let row = |scale| ScaleRow {
            scale,
            accuracy: 0.5,
            fd: 1.25,
            precision: 0.75,
            recall: 0.25,
            diversity: 2.0,
            fid: None,
            cas: None,
            samples: 20,
            seconds: 1.0,
        };
        let file = EvalFile {
            settings: settings(),
            reference: Reference {
                images: 20,
                test_images: 64,
                accuracy: 1.0,
                fd: 0.5,
                precision: 0.9,
                recall: 0.9,
                diversity: 3.0,
                fid: None,
                cas: None,
            },
            rows: vec![row(1.0), row(1.5)],
        };
        assert_eq!(
            file.to_csv(),
            "scale,accuracy,fd,precision,recall,diversity,samples,seconds\n\
             1,0.5,1.25,0.75,0.25,2,20,1.000\n\
             1.5,0.5,1.25,0.75,0.25,2,20,1.000\n"
        );
        let back: EvalFile = serde_json::from_str(&to_json(&file)).unwrap();
        assert_eq!(back, file);
        assert_eq!(grid_file_name(3.0), "grid_scale-3.png");
        assert_eq!(grid_file_name(1.5), "grid_scale-1.5.png");
        assert_eq!(tensorboard_step(1.5), 150);
        assert_eq!(tensorboard_step(0.0), 0);

        // A diverged model's NaN metrics are written as null and read back as NaN, so the
        // file still resumes.
        let mut diverged = file.clone();
        diverged.rows[0].fd = f64::NAN;
        diverged.reference.recall = f64::NAN;
        let text = to_json(&diverged);
        assert!(text.contains("null"), "{text}");
        let back: EvalFile = serde_json::from_str(&text).unwrap();
        assert!(back.rows[0].fd.is_nan() && back.reference.recall.is_nan());
        assert_eq!(back.rows[1], diverged.rows[1]);
    }
}
