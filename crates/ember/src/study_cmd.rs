//! `ember eval --study FILE`: several guidance methods, each over its own scales, sampled from
//! the same noise, scored as the sweep scores, and compared on one plot (`ember_eval::study`).

use crate::eval_cmd::{EvalArgs, Scoring, fid_text};
use crate::sampling_args::{guidance_classifier, weak_model};
use anyhow::{Context, Result};
use ember_config::ExperimentConfig;
use ember_eval::study::{
    STUDY_CSV, STUDY_JSON, STUDY_PLOT, STUDY_TABLE, StudyMethod, StudyProgress, StudyRequest,
    best_fd_table, load_study, run_study,
};
use ember_eval::{EvalSettings, FeatureExtractor};
use ember_sample::NoisyClassifier;
use ember_train::RunDir;
use std::path::Path;
use std::time::Instant;

pub fn run(
    args: &EvalArgs,
    study: &Path,
    run_dir: &RunDir,
    config: &ExperimentConfig,
) -> Result<()> {
    // 1. the methods: the run's [sample] with the flags applied, each method's overrides over
    //    it, validated as the config's own table
    let m = &config.model;
    let specs = load_study(
        study,
        &config.sample,
        config.diffusion.timesteps,
        m.num_classes,
    )?;

    // 2. what scores, and what each method needs (its noise-aware classifier, its weak
    //    model), loaded and checked before any sampling
    let scoring = Scoring::load(args, run_dir, config)?;
    let mut needs = Vec::with_capacity(specs.len());
    for spec in &specs {
        let method_config = ExperimentConfig {
            sample: spec.sampling.clone(),
            ..config.clone()
        };
        let in_method = || format!("study {}: method \"{}\"", study.display(), spec.name);
        let classifier = guidance_classifier(run_dir, &method_config, &scoring.device)
            .with_context(in_method)?;
        let weak = weak_model(run_dir, &method_config, &scoring.device).with_context(in_method)?;
        needs.push((classifier, weak));
    }
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
    let out_dir = args.out.clone().unwrap_or_else(|| args.run.join("study"));
    let pairs: usize = specs.iter().map(|s| s.scales.len()).sum();
    println!(
        "studying {} (step {}, EMA weights): {} methods ({}), {pairs} (method, scale) pairs of {} samples per class x {} classes; classifier {} (test accuracy {:.4}); output {}",
        args.run.display(),
        scoring.step,
        specs.len(),
        specs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        args.samples_per_class,
        m.num_classes,
        scoring.classifier_dir.display(),
        scoring.classifier.meta().test_accuracy,
        out_dir.display()
    );
    let request = StudyRequest {
        model: &scoring.model,
        schedule: &scoring.schedule,
        image_shape: [m.image_channels, m.image_size, m.image_size],
        classifier: &scoring.classifier,
        fid: scoring
            .inception
            .as_ref()
            .map(|i| i as &dyn ember_eval::FeatureExtractor),
        test: &scoring.test,
        train: &scoring.train,
        methods,
        batch_size: args.batch_size,
        settings: scoring.settings(args, config),
        out_dir: out_dir.clone(),
        restart: args.restart,
        grid_columns: args.grid_columns,
        device: scoring.device.clone(),
    };

    // 3. every pair not done yet
    let start = Instant::now();
    let (mut sampled, mut seconds) = (0usize, 0.0);
    let file = run_study(&request, &mut |p| match p {
        StudyProgress::Reference(r) => println!(
            "real data (first {} training vs {} test images): accuracy {:.4}, FD floor {:.4}, precision {:.4}, recall {:.4}, diversity {:.4}{}",
            r.images,
            r.test_images,
            r.accuracy,
            r.fd,
            r.precision,
            r.recall,
            r.diversity,
            fid_text(r.fid).replace("FID", "FID floor")
        ),
        StudyProgress::Skipped { method, row } => {
            println!("skipping {method} at scale {} (done)", row.scale)
        }
        StudyProgress::Sampling {
            method,
            scale,
            done,
            total,
        } => {
            if total > args.batch_size {
                println!("{method} at scale {scale}: {done}/{total} samples");
            }
        }
        StudyProgress::Finished { method, row } => {
            sampled += row.samples;
            seconds += row.seconds;
            println!(
                "{method} at scale {}: accuracy {:.4}, FD {:.4}, precision {:.4}, recall {:.4}, diversity {:.4}{} ({} samples in {:.1}s)",
                row.scale,
                row.accuracy,
                row.fd,
                row.precision,
                row.recall,
                row.diversity,
                fid_text(row.fid),
                row.samples,
                row.seconds
            );
        }
    });
    let file = match file {
        // Settings, request or an unreadable earlier study.json: the input; the rest: the work.
        Err(
            e @ (ember_eval::EvalError::SettingsChanged { .. }
            | ember_eval::EvalError::Request(_)
            | ember_eval::EvalError::Invalid { .. }),
        ) => return Err(e.into()),
        other => other
            .with_context(|| format!("study into {} stopped", out_dir.display()))
            .context(crate::WhileWorking("study stopped"))?,
    };
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
