//! Time to quality: the kept checkpoints of one run, each sampled at one guidance scale and
//! scored like a sweep row (accuracy, FD, precision/recall, diversity, CAS), against the
//! minutes of training that led to it; optionally beside sample sets another program
//! exported (e.g. the PyTorch twin trained for the same minutes on the same CPU), scored by the
//! same judge.
//!
//! Output folder (default `<run>/curve/`):
//!
//! ```text
//! curve.json   settings, the real-data reference and one point per checkpoint or sample set
//! curve.csv    the points: source, step, minutes, then the sweep's columns
//! curve.png    FD, accuracy (and CAS) against training minutes, one line per source
//! ```
//!
//! `curve.json` is rewritten after every point; a rerun skips the points it holds (a checkpoint
//! whose weights changed is computed again), and other settings are refused unless restarted.

use crate::eval::{EvalError, EvalSettings, MetricColumns, Reference, ScaleRow, to_json_value};
use crate::score::Judge;
use burn::data::dataset::Dataset;
use ember_config::SampleConfig;
use ember_data::ImageDataset;
use ember_io::write_atomic;
use ember_model::{NoiseSchedule, UNet};
use ember_monitor::plot::{Panel, Series, write_panels};
use ember_sample::{Guidance, NoisyClassifier};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const CURVE_JSON: &str = "curve.json";
pub const CURVE_CSV: &str = "curve.csv";
pub const CURVE_PLOT: &str = "curve.png";
/// The source name of the run's own checkpoints.
pub const RUN_SOURCE: &str = "ember";

/// One point of a curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurvePoint {
    /// [`RUN_SOURCE`] for the run's checkpoints, the given label for exported samples.
    pub source: String,
    /// The checkpoint's optimiser step (`None` for exported samples).
    pub step: Option<usize>,
    /// Minutes of training behind the point.
    pub minutes: f64,
    /// What was scored: the checkpoint and its EMA checksum, or the samples' folder.
    pub weights: String,
    pub row: ScaleRow,
}

/// Contents of `curve.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurveFile {
    /// Everything but the weights, which each point records (`settings.weights` names the run).
    pub settings: EvalSettings,
    pub scale: f64,
    pub reference: Reference,
    /// Sorted by source, then minutes.
    pub points: Vec<CurvePoint>,
}

impl CurveFile {
    pub fn read(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| EvalError::Invalid {
            path: path.to_path_buf(),
            message: format!("not a curve file: {e}"),
        })
    }

    /// The points as CSV with a header line (the sweep's metric columns).
    pub fn to_csv(&self) -> String {
        let columns = MetricColumns::of(&self.settings);
        let mut out = format!("source,step,minutes,{}\n", columns.header());
        for p in &self.points {
            out.push_str(&format!(
                "{},{},{},{}\n",
                p.source,
                p.step.map(|s| s.to_string()).unwrap_or_default(),
                p.minutes,
                columns.fields(&p.row)
            ));
        }
        out
    }

    fn find(&self, source: &str, step: Option<usize>, weights: &str) -> Option<&CurvePoint> {
        self.points
            .iter()
            .find(|p| p.source == source && p.step == step && p.weights == weights)
    }
}

/// Where a point's images come from.
pub enum CurveSource {
    /// A checkpoint of the run, sampled here.
    Checkpoint {
        step: usize,
        minutes: f64,
        /// The checkpoint folder and its EMA checksum.
        weights: String,
        path: PathBuf,
    },
    /// Images another program made, one class per label.
    Images {
        label: String,
        minutes: f64,
        /// The folder they came from.
        weights: String,
        images: ImageDataset,
    },
}

/// One curve.
pub struct CurveRequest<'a> {
    pub judge: &'a Judge<'a>,
    pub schedule: &'a NoiseSchedule,
    /// `[channels, size, size]` of the model's images.
    pub image_shape: [usize; 3],
    pub sampling: &'a SampleConfig,
    pub guidance_classifier: Option<&'a dyn NoisyClassifier>,
    /// Autoguidance's weak model when `sampling.guidance_method` is autoguidance (the same
    /// weak model guides every checkpoint).
    pub weak_model: Option<&'a UNet>,
    pub scale: f64,
    pub batch_size: usize,
    pub settings: EvalSettings,
    pub sources: Vec<CurveSource>,
    /// Loads a checkpoint's EMA weights.
    pub load: &'a dyn Fn(&Path) -> Result<UNet, String>,
    pub out_dir: PathBuf,
    pub restart: bool,
}

/// What [`run_curve`] reports as it goes.
pub enum CurveProgress<'a> {
    Reference(&'a Reference),
    Skipped(&'a CurvePoint),
    Started {
        source: &'a str,
        step: Option<usize>,
        minutes: f64,
    },
    Finished(&'a CurvePoint),
}

/// Computes the missing points, writing every output after each.
pub fn run_curve(
    req: &CurveRequest,
    progress: &mut dyn FnMut(CurveProgress),
) -> Result<CurveFile, EvalError> {
    let s = &req.settings;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EvalError::Io { path, source }
    };
    std::fs::create_dir_all(&req.out_dir).map_err(io(&req.out_dir))?;
    let json = req.out_dir.join(CURVE_JSON);
    let previous = match json.is_file() {
        false => None,
        true => match CurveFile::read(&json) {
            Ok(old) if old.settings.matches(s) && old.scale == req.scale => Some(CurveFile {
                settings: s.clone(),
                ..old
            }),
            Ok(old) if !req.restart => {
                let mut differences = old.settings.differences(s);
                if old.scale != req.scale {
                    differences.push(format!("scale: {} -> {}", old.scale, req.scale));
                }
                return Err(EvalError::SettingsChanged {
                    path: json,
                    differences: differences.join(", "),
                });
            }
            Err(e) if !req.restart => return Err(e),
            _ => None,
        },
    };
    let n = s.samples_per_class * s.num_classes;
    let key = |src: &CurveSource| match src {
        CurveSource::Checkpoint { step, weights, .. } => {
            (RUN_SOURCE.to_string(), Some(*step), weights.clone())
        }
        CurveSource::Images { label, weights, .. } => (label.clone(), None, weights.clone()),
    };
    let missing: Vec<&CurveSource> = req
        .sources
        .iter()
        .filter(|src| {
            let (source, step, weights) = key(src);
            previous
                .as_ref()
                .is_none_or(|f| f.find(&source, step, &weights).is_none())
        })
        .collect();
    let real = (!missing.is_empty() || previous.is_none()).then(|| req.judge.real_side(n));
    let mut file = match previous {
        Some(file) => file,
        None => {
            let real = real.as_ref().expect("computed for a new file");
            let reference = req.judge.reference(real, s.samples_per_class);
            CurveFile {
                settings: s.clone(),
                scale: req.scale,
                reference: Reference::from_metrics(reference, real.features.len()),
                points: Vec::new(),
            }
        }
    };
    progress(CurveProgress::Reference(&file.reference));
    for src in &req.sources {
        let (source, step, weights) = key(src);
        if let Some(point) = file.find(&source, step, &weights) {
            progress(CurveProgress::Skipped(point));
            continue;
        }
        let real = real.as_ref().expect("computed when a point is missing");
        let start = Instant::now();
        let (minutes, metrics) = match src {
            CurveSource::Checkpoint {
                minutes,
                path,
                step,
                ..
            } => {
                progress(CurveProgress::Started {
                    source: &source,
                    step: Some(*step),
                    minutes: *minutes,
                });
                let model = (req.load)(path).map_err(|message| EvalError::Invalid {
                    path: path.clone(),
                    message,
                })?;
                let set = crate::eval::SampledSet {
                    model: &model,
                    schedule: req.schedule,
                    image_shape: req.image_shape,
                    guidance: Guidance::new(req.sampling, req.guidance_classifier)
                        .with_weak_model(req.weak_model)
                        .at_scale(req.scale),
                    num_classes: s.num_classes,
                    samples_per_class: s.samples_per_class,
                    batch_size: req.batch_size,
                    grid_columns: 1,
                };
                let (metrics, _) = set.score(req.judge, real, &mut |_, _| {});
                (*minutes, metrics)
            }
            CurveSource::Images {
                minutes, images, ..
            } => {
                progress(CurveProgress::Started {
                    source: &source,
                    step: None,
                    minutes: *minutes,
                });
                let mut tally = req.judge.tally();
                let mut start = 0;
                while start < images.len() {
                    let end = (start + req.batch_size.max(1)).min(images.len());
                    let (batch, labels) =
                        crate::classifier::dataset_batch(images, start..end, &req.judge.device);
                    tally.add(batch, &labels);
                    start = end;
                }
                (*minutes, tally.finish(real))
            }
        };
        let point = CurvePoint {
            source: source.clone(),
            step,
            minutes,
            weights: weights.clone(),
            row: ScaleRow::from_metrics(req.scale, metrics, start.elapsed().as_secs_f64()),
        };
        // A checkpoint of the same step with other weights (a retrained run) is replaced.
        file.points
            .retain(|p| !(p.source == point.source && p.step == point.step && step.is_some()));
        file.points.push(point);
        file.points.sort_by(|a, b| {
            a.source
                .cmp(&b.source)
                .then(a.minutes.total_cmp(&b.minutes))
        });
        save(&file, &req.out_dir)?;
        progress(CurveProgress::Finished(
            file.find(&source, step, &weights).expect("just added"),
        ));
    }
    save(&file, &req.out_dir)?;
    write_curve_plot(&file, &req.out_dir.join(CURVE_PLOT))?;
    Ok(file)
}

fn save(file: &CurveFile, dir: &Path) -> Result<(), EvalError> {
    for (name, text) in [
        (CURVE_JSON, to_json_value(file)),
        (CURVE_CSV, file.to_csv()),
    ] {
        let path = dir.join(name);
        write_atomic(&path, text.as_bytes()).map_err(|source| EvalError::Io { path, source })?;
    }
    Ok(())
}

/// `curve.png`: FD, class accuracy and (when computed) CAS against training minutes, one line
/// per source, with the real-data reference.
pub fn write_curve_plot(file: &CurveFile, path: &Path) -> Result<(), EvalError> {
    let mut sources: Vec<&str> = file.points.iter().map(|p| p.source.as_str()).collect();
    sources.dedup();
    let Some(hi) = file.points.iter().map(|p| p.minutes).reduce(f64::max) else {
        return Ok(());
    };
    let lines = |f: &dyn Fn(&ScaleRow) -> f64| -> Vec<Series> {
        sources
            .iter()
            .map(|&src| Series {
                name: src.to_string(),
                points: file
                    .points
                    .iter()
                    .filter(|p| p.source == src)
                    .map(|p| (p.minutes, f(&p.row)))
                    .collect(),
            })
            .collect()
    };
    let flat = |name: &str, y: f64| Series {
        name: name.to_string(),
        points: vec![(0.0, y), (hi, y)],
    };
    let r = &file.reference;
    let scale = ember_config::scale_label(file.scale);
    let mut fd = lines(&|r| r.fd);
    fd.push(flat("real (floor)", r.fd));
    let mut accuracy = lines(&|r| r.accuracy);
    accuracy.push(flat("real", r.accuracy));
    let mut panels = vec![
        Panel {
            title: format!("Frechet distance at scale {scale}"),
            y_label: "FD (classifier features)".into(),
            series: fd,
            markers: true,
        },
        Panel {
            title: format!("class accuracy at scale {scale}"),
            y_label: "accuracy".into(),
            series: accuracy,
            markers: true,
        },
    ];
    if let Some(real_cas) = r.cas {
        let mut cas = lines(&|r| r.cas.unwrap_or(f64::NAN));
        cas.push(flat("trained on real", real_cas));
        panels.push(Panel {
            title: format!("CAS at scale {scale}"),
            y_label: "test accuracy".into(),
            series: cas,
            markers: true,
        });
    }
    let columns = panels.len();
    write_panels(path, "training minutes", &panels, columns)?;
    Ok(())
}
