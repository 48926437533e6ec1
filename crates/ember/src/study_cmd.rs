//! `ember eval --study FILE`: several guidance methods, each over its own scales, sampled from
//! the same noise, scored as the sweep scores, and compared on one plot (`ember_eval::study`).

use crate::metric_text::{input_or_work, reference_line, row_metrics};
use crate::sampling_args::{guidance_classifier, weak_model};
use anyhow::{Context, Result};
use ember_config::ExperimentConfig;
use ember_eval::score::Judge;
use ember_eval::study::{
    MethodSpec, STUDY_CSV, STUDY_JSON, STUDY_PLOT, STUDY_TABLE, StudyMethod, StudyProgress,
    StudyRequest, best_fd_table, run_study,
};
use ember_eval::{EvalSettings, FeatureExtractor};
use ember_model::NoiseSchedule;
use ember_sample::NoisyClassifier;
use ember_train::RunDir;
use ember_train::checkpoint::{Weights, load_model};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `ember eval` hands a study: the study file's methods (resolved and validated against
/// the run's [sample] with the flags applied), the judge every pair is scored by, the
/// checkpoint sampled, and the command's flags a study takes.
pub(crate) struct Study<'a> {
    pub path: &'a Path,
    pub methods: Vec<MethodSpec>,
    /// `--run`, `--out` (resolved), `--batch-size`, `--restart`, `--grid-columns`.
    pub run: &'a Path,
    pub out_dir: PathBuf,
    pub batch_size: usize,
    pub restart: bool,
    pub grid_columns: usize,
    pub judge: &'a Judge<'a>,
    pub classifier_dir: &'a Path,
    pub checkpoint: &'a Path,
    pub step: usize,
    pub schedule: &'a NoiseSchedule,
    pub image_shape: [usize; 3],
    /// What every method shares (no sampling settings, no guidance classifier).
    pub settings: EvalSettings,
}

pub(crate) fn run(study: Study, run_dir: &RunDir, config: &ExperimentConfig) -> Result<()> {
    // 1. what each method needs (its noise-aware classifier, its weak model), loaded and
    //    checked before any sampling
    let specs = &study.methods;
    let device = &study.judge.device;
    let mut needs = Vec::with_capacity(specs.len());
    for spec in specs {
        let method_config = ExperimentConfig {
            sample: spec.sampling.clone(),
            ..config.clone()
        };
        let in_method = || format!("study {}: method \"{}\"", study.path.display(), spec.name);
        let classifier =
            guidance_classifier(run_dir, &method_config, device).with_context(in_method)?;
        let weak = weak_model(run_dir, &method_config, device).with_context(in_method)?;
        needs.push((classifier, weak));
    }
    let model = load_model(config, study.checkpoint, Weights::Ema, device)?;
    let methods: Vec<StudyMethod> = specs
        .iter()
        .zip(&needs)
        .map(|(spec, (classifier, weak))| {
            let mut record = EvalSettings::sampling_of(&spec.sampling);
            if let Some((_, weights)) = weak {
                record.insert("guide_weights".into(), weights.clone().into());
            }
            StudyMethod {
                name: spec.name.clone(),
                scales: spec.scales.clone(),
                sampling: spec.sampling.clone(),
                record,
                guidance_classifier: classifier
                    .as_ref()
                    .map(|c| (c as &dyn NoisyClassifier, c.id())),
                weak_model: weak.as_ref().map(|(model, _)| model),
            }
        })
        .collect();
    let out_dir = study.out_dir.clone();
    let pairs: usize = specs.iter().map(|s| s.scales.len()).sum();
    let classifier = study.judge.classifier;
    println!(
        "studying {} (step {}, EMA weights): {} methods ({}), {pairs} (method, scale) pairs of {} samples per class x {} classes; classifier {} (test accuracy {:.4}){}; output {}",
        study.run.display(),
        study.step,
        specs.len(),
        specs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        study.settings.samples_per_class,
        config.model.num_classes,
        study.classifier_dir.display(),
        classifier.meta().test_accuracy,
        study
            .settings
            .cas
            .as_ref()
            .map(|c| format!("; CAS trains {} epochs", c.epochs))
            .unwrap_or_default(),
        out_dir.display()
    );
    let request = StudyRequest {
        model: &model,
        schedule: study.schedule,
        image_shape: study.image_shape,
        judge: study.judge,
        methods,
        batch_size: study.batch_size,
        settings: study.settings.clone(),
        out_dir: out_dir.clone(),
        restart: study.restart,
        grid_columns: study.grid_columns,
    };

    // 2. every pair not done yet
    let start = Instant::now();
    let (mut sampled, mut seconds) = (0usize, 0.0);
    let file = run_study(&request, &mut |p| match p {
        StudyProgress::Reference(r) => println!("{}", reference_line(r)),
        StudyProgress::Skipped { method, row } => {
            println!("skipping {method} at scale {} (done)", row.scale)
        }
        StudyProgress::Sampling {
            method,
            scale,
            done,
            total,
        } => {
            if total > study.batch_size {
                println!("{method} at scale {scale}: {done}/{total} samples");
            }
        }
        StudyProgress::Finished { method, row } => {
            sampled += row.samples;
            seconds += row.seconds;
            println!(
                "{method} at scale {}: {} ({} samples in {:.1}s)",
                row.scale,
                row_metrics(row),
                row.samples,
                row.seconds
            );
        }
    });
    let file = input_or_work(
        file,
        || format!("study into {} stopped", out_dir.display()),
        "study stopped",
    )?;
    print!("{}", best_fd_table(&file));
    if sampled > 0 {
        println!(
            "sampled and scored {sampled} images in {seconds:.1}s; total {:.1}s",
            start.elapsed().as_secs_f64()
        );
    }
    println!(
        "wrote {STUDY_JSON}, {STUDY_CSV}, {STUDY_TABLE}, {STUDY_PLOT} and a folder of grids per method in {}",
        out_dir.display()
    );
    Ok(())
}
