//! End-to-end tests of the `ember` binary on a generated MNIST-shaped fixture: train the smoke
//! config, sample from the run, and check the errors users see for bad input.

mod common;

use common::*;
use ember_config::ExperimentConfig;
use ember_io::read_png;
use ember_sample::grid::GRID_PADDING;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `ember sample` of classes 3 and 7, three each, scale 2, three steps, plus `extra` flags.
fn sample_two_classes(run: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "sample",
        "--run",
        run.to_str().unwrap(),
        "--guidance",
        "2",
        "--class",
        "3,7",
        "--per-class",
        "3",
        "--steps",
        "3",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ember(&args)
}

fn grid_size(rows: usize, cols: usize, side: usize) -> (usize, usize) {
    let p = GRID_PADDING;
    (cols * (side + p) + p, rows * (side + p) + p)
}

#[test]
fn smoke_config_trains_checkpoints_and_samples() {
    let dir = workdir("smoke");
    let config = smoke_config_on_fixture(&dir);
    let run = dir.join("run");

    let out = train(&config, &run);
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(
        log.contains("step      4/4"),
        "progress line with the step: {log}"
    );
    assert!(log.contains("img/s") && log.contains("loss"), "{log}");

    // The run directory: resolved config, checkpoints with model + EMA, a final grid.
    let resolved = ExperimentConfig::load(&run.join("config.toml")).unwrap();
    assert_eq!(resolved.train.steps, 4);
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    assert_eq!(latest.trim(), "step-00000004");
    for file in [
        "model.bpk",
        "ema.bpk",
        "optimizer.bpk",
        "config.toml",
        "state.toml",
    ] {
        assert!(
            run.join("checkpoints/step-00000004").join(file).is_file(),
            "{file}"
        );
    }
    assert!(run.join("checkpoints/step-00000002/ema.bpk").is_file());
    let grid = read_png(&run.join("samples/step-00000004_scale-3_classes-0-9.png")).unwrap();
    let per_class = resolved.sample.per_class;
    assert_eq!((grid.width, grid.height), grid_size(10, per_class, 28));

    // Sampling two classes from the run: one row each.
    let png = dir.join("two.png");
    let out = sample_two_classes(&run, &png, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let grid = read_png(&png).unwrap();
    assert_eq!((grid.width, grid.height), grid_size(2, 3, 28));

    // Same seed, same request: the same grid (deterministic DDIM, eta 0).
    let again = dir.join("again.png");
    let out = sample_two_classes(&run, &again, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(read_png(&again).unwrap(), grid);

    // Exported EMA weights give exactly the grid the checkpoint gives.
    let weights = dir.join("ema.safetensors");
    let out = ember(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--out",
        weights.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let from_file = dir.join("from-file.png");
    let out = sample_two_classes(&run, &from_file, &["--weights", weights.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(read_png(&from_file).unwrap(), grid);

    // Resuming with a changed model shape is refused by key; more steps are fine.
    let mut wider = ExperimentConfig::load(&config).unwrap();
    wider.model.base_channels = 16;
    let wider_path = dir.join("wider.toml");
    std::fs::write(&wider_path, wider.to_toml()).unwrap();
    let out = ember(&[
        "train",
        wider_path.to_str().unwrap(),
        "--resume",
        run.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("model.base_channels"), "{}", text(&out));
    let out = ember(&["train", "--resume", run.to_str().unwrap(), "--steps", "6"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("at step 4") && text(&out).contains("step      6/6"),
        "{}",
        text(&out)
    );

    // A second train into the same directory is refused rather than clobbering the run.
    let out = train(&config, &run);
    assert!(!out.status.success());
    assert!(text(&out).contains("already holds a run"), "{}", text(&out));

    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn gzipped_idx_files_train_like_raw_ones() {
    use std::io::Write;
    let dir = workdir("gzip");
    let config = smoke_config_on_fixture(&dir);
    for entry in std::fs::read_dir(dir.join("data")).unwrap() {
        let path = entry.unwrap().path();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&std::fs::read(&path).unwrap()).unwrap();
        let mut name = path.file_name().unwrap().to_os_string();
        name.push(".gz");
        std::fs::write(path.with_file_name(name), gz.finish().unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
    }
    let out = train(&config, &dir.join("run"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("step      4/4"), "{}", text(&out));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn every_sampler_runs_from_the_cli_with_every_guidance_option() {
    let (dir, _, run) = trained_smoke_run("samplers");
    let guidance: [&[&str]; 5] = [
        &[],
        &["--negative-class", "1"],
        &["--guidance-interval", "0.5,20"],
        &["--cfg-rescale", "0.7"],
        &[
            "--dynamic-threshold",
            "0.995",
            "--guidance-interval",
            "1,50",
            "--cfg-rescale",
            "0.5",
        ],
    ];
    for sampler in ["ddpm", "ddim", "dpmpp-2m", "euler", "heun"] {
        for (g, extra) in guidance.iter().enumerate() {
            let png = dir.join(format!("{sampler}-{g}.png"));
            let mut args = vec![
                "sample",
                "--run",
                run.to_str().unwrap(),
                "--guidance",
                "3",
                "--class",
                "2,5",
                "--per-class",
                "2",
                "--steps",
                "3",
                "--sampler",
                sampler,
                "--spacing",
                "karras",
                "--out",
                png.to_str().unwrap(),
            ];
            args.extend_from_slice(extra);
            let out = ember(&args);
            assert!(out.status.success(), "{sampler} {extra:?}: {}", text(&out));
            assert!(
                text(&out).contains(&format!("{sampler} steps")),
                "{}",
                text(&out)
            );
            let grid = read_png(&png).unwrap();
            assert_eq!((grid.width, grid.height), grid_size(2, 2, 28));
        }
    }
    // Out-of-range options name the flag.
    let out = sample_two_classes(&run, &dir.join("x.png"), &["--cfg-rescale", "2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--cfg-rescale"), "{}", text(&out));
    let out = sample_two_classes(&run, &dir.join("x.png"), &["--sampler", "plms"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("dpmpp-2m"), "{}", text(&out));
    // `--guidance-interval 0,inf` (every noise level) draws what no interval draws, and a
    // narrower interval draws something else.
    let draw = |name: &str, extra: &[&str]| {
        let png = dir.join(name);
        let out = sample_two_classes(&run, &png, extra);
        assert!(out.status.success(), "{extra:?}: {}", text(&out));
        std::fs::read(png).unwrap()
    };
    let plain = draw("plain.png", &[]);
    assert_eq!(plain, draw("all.png", &["--guidance-interval", "0,inf"]));
    assert_ne!(plain, draw("narrow.png", &["--guidance-interval", "0.5,2"]));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn img2img_and_inpainting_from_the_cli_keep_the_unmasked_pixels() {
    use ember_io::{GridImage, write_png};
    let (dir, _, run) = trained_smoke_run("inpaint");
    // A 28x28 source (a bright square) and a mask regenerating its right half.
    let source = GridImage {
        width: 28,
        height: 28,
        channels: 1,
        pixels: (0..28 * 28)
            .map(|i| {
                if (6..22).contains(&(i / 28)) && (6..22).contains(&(i % 28)) {
                    230
                } else {
                    10
                }
            })
            .collect(),
    };
    let mask = GridImage {
        pixels: (0..28 * 28)
            .map(|i| if i % 28 >= 14 { 255 } else { 0 })
            .collect(),
        ..source.clone()
    };
    let (init, mask_png) = (dir.join("init.png"), dir.join("mask.png"));
    write_png(&source, &init).unwrap();
    write_png(&mask, &mask_png).unwrap();
    for sampler in ["ddim", "heun", "dpmpp-2m"] {
        let png = dir.join(format!("inpaint-{sampler}.png"));
        let out = sample_two_classes(
            &run,
            &png,
            &[
                "--sampler",
                sampler,
                "--init",
                init.to_str().unwrap(),
                "--mask",
                mask_png.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        let grid = read_png(&png).unwrap();
        let p = GRID_PADDING;
        for tile in 0..6 {
            let (top, left) = (p + (tile / 3) * (28 + p), p + (tile % 3) * (28 + p));
            for y in 0..28 {
                for x in 0..14 {
                    let (got, want) = (grid.at(left + x, top + y, 0), source.at(x, y, 0));
                    assert!(
                        got.abs_diff(want) <= 1,
                        "{sampler} tile {tile} ({x},{y}): {got} vs {want}"
                    );
                }
            }
        }
    }
    let png = dir.join("img2img.png");
    let out = sample_two_classes(
        &run,
        &png,
        &["--init", init.to_str().unwrap(), "--strength", "0.5"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = sample_two_classes(
        &run,
        &png,
        &["--init", init.to_str().unwrap(), "--strength", "0"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("--strength must be in (0, 1]"),
        "{}",
        text(&out)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn v_and_x0_objectives_with_zero_terminal_snr_and_min_snr_weighting_train_and_sample() {
    let dir = workdir("objectives");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_fixture(&data);
    for prediction in ["v", "x0"] {
        let config = format_config(&dir, prediction, |c| {
            c.data.root = data.clone();
            c.diffusion.prediction = toml::Value::from(prediction).try_into().unwrap();
            c.diffusion.zero_terminal_snr = true;
            c.train.min_snr_gamma = 5.0;
        });
        let run = dir.join(format!("run-{prediction}"));
        let out = train(&config, &run);
        assert!(out.status.success(), "{}", text(&out));
        let resolved = std::fs::read_to_string(run.join("config.toml")).unwrap();
        assert!(
            resolved.contains(&format!("prediction = \"{prediction}\"")),
            "{resolved}"
        );
        assert!(resolved.contains("min_snr_gamma = 5.0"), "{resolved}");
        assert!(resolved.contains("zero_terminal_snr = true"), "{resolved}");
        let out = sample_two_classes(
            &run,
            &dir.join(format!("{prediction}.png")),
            &["--sampler", "heun"],
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn classifier_guidance_with_a_noise_aware_classifier_from_the_cli() {
    let (dir, config, run) = trained_smoke_run("classifier-guidance");
    let cfg = config.to_str().unwrap();
    let out = ember(&[
        "classifier",
        "train",
        "--config",
        cfg,
        "--epochs",
        "1",
        "--noisy",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("noise-aware classifier"),
        "{}",
        text(&out)
    );
    assert!(dir.join("data.classifier-noisy/classifier.toml").is_file());
    // CFG (scale 2) plus classifier guidance.
    let png = dir.join("cg.png");
    let out = sample_two_classes(&run, &png, &["--classifier-guidance", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(read_png(&png).unwrap().height, grid_size(2, 3, 28).1);
    // A clean classifier cannot guide; a noise-aware one cannot score an eval.
    let clean = dir.join("clean");
    let out = ember(&[
        "classifier",
        "train",
        "--config",
        cfg,
        "--epochs",
        "1",
        "--out",
        clean.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // The eval of classifier guidance (scored by the clean classifier) records it in its settings.
    let evals = dir.join("eval-cg");
    let out = eval_sweep(
        &run,
        &evals,
        "0",
        &[
            "--classifier",
            clean.to_str().unwrap(),
            "--classifier-guidance",
            "2",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let json = std::fs::read_to_string(evals.join("eval.json")).unwrap();
    assert!(json.contains("\"classifier_guidance\""), "{json}");
    let out = sample_two_classes(
        &run,
        &dir.join("x.png"),
        &[
            "--classifier-guidance",
            "3",
            "--guidance-classifier",
            clean.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("needs a noise-aware one"),
        "{}",
        text(&out)
    );
    let noisy = dir.join("data.classifier-noisy");
    let out = eval_sweep(
        &run,
        &dir.join("eval"),
        "1",
        &["--classifier", noisy.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("noise-aware classifier"),
        "{}",
        text(&out)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The smoke config with another data source: `format`, its folder, classes, channels, size.
fn format_config(dir: &Path, name: &str, edit: impl FnOnce(&mut ExperimentConfig)) -> PathBuf {
    let shipped = manifest_dir().join("../../configs/smoke.toml");
    let mut config = ExperimentConfig::load(&shipped).unwrap();
    config.train.steps = 2;
    config.sample.per_class = 1;
    edit(&mut config);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config.to_toml()).unwrap();
    path
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn cifar10_batches_train_in_rgb_and_sample_by_class_name() {
    let dir = workdir("cifar");
    let data = dir.join("cifar");
    write_cifar_fixture(&data, 16);
    let config = format_config(&dir, "cifar", |c| {
        c.data.format = ember_config::DataFormat::Cifar10;
        c.data.root = data.clone();
        c.model.image_channels = 3;
        c.model.image_size = 16; // 32x32 records, resized
    });
    let run = dir.join("run");
    let out = train(&config, &run);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("32 images, cifar10 3x16x16"),
        "{}",
        text(&out)
    );
    assert_eq!(lines(&run.join("classes.txt"))[9], "truck");
    let grid = read_png(&run.join("samples/step-00000002_scale-3_classes-0-9.png")).unwrap();
    assert_eq!(grid.channels, 3);
    assert_eq!((grid.width, grid.height), grid_size(10, 1, 16));

    let png = dir.join("trucks-cats.png");
    let out = ember(&[
        "sample",
        "--run",
        run.to_str().unwrap(),
        "--class",
        "Truck,cat",
        "--steps",
        "2",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let grid = read_png(&png).unwrap();
    assert_eq!(
        (grid.width, grid.height, grid.channels),
        (grid_size(2, 1, 16).0, grid_size(2, 1, 16).1, 3)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn image_folders_train_with_flips_identically_on_zero_or_one_loader_thread() {
    let dir = workdir("folder");
    let data = dir.join("images");
    write_image_folder(&data, &["cat", "dog", "sneaker"], 6);
    let run_with = |workers: usize| {
        let config = format_config(&dir, &format!("folder-{workers}"), |c| {
            c.data.format = ember_config::DataFormat::ImageFolder;
            c.data.root = data.clone();
            c.data.random_flip = true;
            c.data.num_workers = workers;
            c.model.num_classes = 3;
            c.model.image_channels = 1; // RGB files, converted to grey
            c.model.image_size = 8; // 20x14 and 16x16 files, fitted
            c.train.batch_size = 4;
            c.train.steps = 6; // more than one epoch of 18 images
        });
        let run = dir.join(format!("run-{workers}"));
        let out = train(&config, &run);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("18 images, image-folder 1x8x8"),
            "{}",
            text(&out)
        );
        run
    };
    let (run0, run1) = (run_with(0), run_with(1));
    assert_eq!(lines(&run0.join("classes.txt")), ["cat", "dog", "sneaker"]);
    // The loss of every step, hence every batch and flip, is the same on either loader.
    let losses = |run: &Path| -> Vec<String> {
        lines(&run.join("metrics.csv"))
            .iter()
            .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(losses(&run0).len(), 7, "header and 6 steps");
    assert_eq!(losses(&run0), losses(&run1));

    let png = dir.join("sneakers.png");
    let out = ember(&[
        "sample",
        "--run",
        run0.to_str().unwrap(),
        "--class",
        "sneaker",
        "--per-class",
        "3",
        "--steps",
        "2",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let grid = read_png(&png).unwrap();
    assert_eq!((grid.width, grid.height), grid_size(1, 3, 8));
    assert_eq!(grid.channels, 1);
    std::fs::remove_dir_all(dir).unwrap();
}

/// `ember eval --run RUN --guidance G --samples-per-class 2 --steps 2 --out OUT`, plus `extra`.
fn eval_sweep(run: &Path, out: &Path, guidance: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--guidance",
        guidance,
        "--samples-per-class",
        "2",
        "--steps",
        "2",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ember(&args)
}

#[test]
fn classifier_and_eval_write_every_output_and_a_rerun_skips_finished_scales() {
    use ember_eval::eval::{EvalFile, to_json};
    let (dir, config, run) = trained_smoke_run("eval");
    let evals = dir.join("eval");

    // Without a classifier, eval says which command makes one.
    let out = eval_sweep(&run, &evals, "1,3", &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("ember classifier train --config"),
        "{}",
        text(&out)
    );

    // The classifier goes beside the data by default, with the data's fingerprint.
    let out = ember(&[
        "classifier",
        "train",
        "--config",
        config.to_str().unwrap(),
        "--epochs",
        "2",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("test accuracy"), "{}", text(&out));
    let classifier = dir.join("data.classifier");
    let meta = std::fs::read_to_string(classifier.join("classifier.toml")).unwrap();
    assert!(meta.contains("dataset_fingerprint"), "{meta}");
    assert!(classifier.join("classifier.bpk").is_file());
    assert!(classifier.join(".ember").is_file(), "marked as Ember's");
    assert!(
        !dir.join("data/classifier").exists(),
        "nothing inside the data"
    );
    // Trained again, it replaces its own folder (and only that).
    let again = ember(&[
        "classifier",
        "train",
        "--config",
        config.to_str().unwrap(),
        "--epochs",
        "1",
    ]);
    assert!(again.status.success(), "{}", text(&again));
    assert_ne!(
        std::fs::read_to_string(classifier.join("classifier.toml")).unwrap(),
        meta
    );
    let siblings: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(siblings.is_empty(), "temporary folders left: {siblings:?}");

    // A sweep over two scales writes every output.
    let out = eval_sweep(&run, &evals, "1,3", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(
        log.contains("FD floor") && log.contains("scale 3: accuracy"),
        "{log}"
    );
    let first = EvalFile::read(&evals.join("eval.json")).unwrap();
    assert_eq!(
        first.rows.iter().map(|r| r.scale).collect::<Vec<_>>(),
        vec![1.0, 3.0]
    );
    for r in &first.rows {
        assert_eq!(r.samples, 20, "2 samples x 10 classes");
        assert!((0.0..=1.0).contains(&r.accuracy), "{r:?}");
        assert!((0.0..=1.0).contains(&r.precision) && (0.0..=1.0).contains(&r.recall));
        assert!(
            r.fd.is_finite() && r.fd >= 0.0 && r.diversity > 0.0,
            "{r:?}"
        );
    }
    assert_eq!(first.reference.images, 20);
    let csv = std::fs::read_to_string(evals.join("eval.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("scale,accuracy,fd,precision,recall,diversity"));
    for (line, row) in lines[1..].iter().zip(&first.rows) {
        let values: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
        assert_eq!((values[0], values[2]), (row.scale, row.fd), "{line}");
    }
    for scale in ["1", "3"] {
        let grid = read_png(&evals.join(format!("grid_scale-{scale}.png"))).unwrap();
        assert_eq!((grid.width, grid.height), grid_size(10, 2, 28));
    }
    let plot = std::fs::read(evals.join("eval.png")).unwrap();
    assert!(plot.starts_with(b"\x89PNG"), "eval.png is a PNG");
    let events: Vec<_> = std::fs::read_dir(evals.join("tensorboard"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let bytes = std::fs::read(&events[0]).unwrap();
    assert!(
        bytes.windows(13).any(|w| w == b"eval/accuracy"),
        "scalars in the event file"
    );

    // Simulate an eval killed after scale 1: drop scale 3's row and grid. The rerun skips
    // scale 1, recomputes scale 3 from the same noise, and gets the same numbers.
    let mut cut = first.clone();
    cut.rows.retain(|r| r.scale == 1.0);
    std::fs::write(evals.join("eval.json"), to_json(&cut)).unwrap();
    std::fs::remove_file(evals.join("grid_scale-3.png")).unwrap();
    let out = eval_sweep(&run, &evals, "1,3", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(log.contains("skipping scale 1 (done)"), "{log}");
    assert!(!log.contains("skipping scale 3"), "{log}");
    assert!(log.contains("scale 3: accuracy"), "{log}");
    let second = EvalFile::read(&evals.join("eval.json")).unwrap();
    assert_eq!(second.rows[0], first.rows[0], "scale 1 is kept as it was");
    let (a, b) = (&first.rows[1], &second.rows[1]);
    assert_eq!(
        (a.accuracy, a.precision, a.recall),
        (b.accuracy, b.precision, b.recall)
    );
    assert!((a.fd - b.fd).abs() <= 1e-6 * (1.0 + a.fd), "{a:?} {b:?}");
    assert!(evals.join("grid_scale-3.png").is_file());
    let events = std::fs::read_dir(evals.join("tensorboard"))
        .unwrap()
        .count();
    assert_eq!(events, 1, "the event file is rewritten, not duplicated");

    // A finished sweep reruns without sampling; other settings are refused, not mixed in.
    let out = eval_sweep(&run, &evals, "1,3", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("skipping scale 3 (done)"));
    let out = eval_sweep(&run, &evals, "1", &["--seed", "9"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("seed") && text(&out).contains("--restart"),
        "{}",
        text(&out)
    );
    // eta counts only for DDIM: a DDPM sweep reruns under another eta, a DDIM one does not.
    for (sampler, resumes, says) in [
        ("ddpm", true, "skipping scale 1 (done)"),
        ("ddim", false, "sampling.eta: 0.0 -> 0.5"),
    ] {
        let out_dir = dir.join(format!("eval-{sampler}"));
        let out = eval_sweep(&run, &out_dir, "1", &["--sampler", sampler, "--eta", "0"]);
        assert!(out.status.success(), "{}", text(&out));
        let out = eval_sweep(&run, &out_dir, "1", &["--sampler", sampler, "--eta", "0.5"]);
        assert_eq!(out.status.success(), resumes, "{}", text(&out));
        assert!(text(&out).contains(says), "{sampler}: {}", text(&out));
    }

    // Standard FID without its weights: says how to get them, before any work.
    let missing = dir.join("no-such-inception.safetensors");
    let out = eval_sweep(
        &run,
        &dir.join("eval-fid"),
        "1",
        &[
            "--fid",
            "inception",
            "--fid-weights",
            missing.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("scripts/fid/convert_inception.py"),
        "{}",
        text(&out)
    );
    assert!(!dir.join("eval-fid").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

/// The Python of `scripts/setup-python.sh` (or `EMBER_PYTHON`), which has TensorBoard.
fn python_with_tensorboard() -> PathBuf {
    let python = std::env::var_os("EMBER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("../../.venv/bin/python"));
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup-python.sh (the README's set-up does) to install TensorBoard for this test",
        python.display()
    );
    python
}

#[test]
fn tensorboard_reads_the_events_grids_and_history_of_a_resumed_run() {
    let dir = workdir("tensorboard");
    let config_path = smoke_config_on_fixture(&dir);
    let mut config = ExperimentConfig::load(&config_path).unwrap();
    config.log.sample_every = 2;
    config.log.sample_scales = vec![1.0, 3.0];
    std::fs::write(&config_path, config.to_toml()).unwrap();
    let run = dir.join("run");

    let out = train(&config_path, &run);
    assert!(out.status.success(), "{}", text(&out));
    // Plain lines, not a bar: the output is a pipe here.
    assert!(text(&out).contains("step      3/4"), "{}", text(&out));

    // A grid per (step, scale), one row per class, named by step, scale and classes.
    for step in [2, 4] {
        for scale in [1, 3] {
            let name = format!("samples/step-{step:08}_scale-{scale}_classes-0-9.png");
            let grid = read_png(&run.join(&name)).unwrap();
            assert_eq!(
                (grid.width, grid.height),
                grid_size(10, config.sample.per_class, 28),
                "{name}"
            );
        }
    }
    let loss_plot = std::fs::read(run.join("loss.png")).unwrap();
    assert_eq!(&loss_plot[1..4], b"PNG");

    // Kill-and-resume as seen by the logs: drop the last checkpoint, so the run resumes at
    // step 2 and takes steps 3 and 4 again. History and TensorBoard must show each step once.
    std::fs::remove_dir_all(run.join("checkpoints/step-00000004")).unwrap();
    let first_history = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let out = ember(&["train", "--resume", run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("at step 2"), "{}", text(&out));
    let history = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let steps: Vec<&str> = history
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(steps, ["1", "2", "3", "4"]);
    // Same seed, same batches: the replayed steps have the same loss.
    assert_eq!(
        first_history.lines().nth(4).unwrap().split(',').nth(1),
        history.lines().nth(4).unwrap().split(',').nth(1)
    );

    // TensorBoard's own reader: scalar tags, steps and values against metrics.csv, every
    // grid decoded at the size of its PNG file, the config text.
    let check = Command::new(python_with_tensorboard())
        .arg(manifest_dir().join("../../scripts/check_tensorboard.py"))
        .arg(&run)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    let report = text(&check);
    assert!(report.contains("ok  train/loss: 4 steps 1..4"), "{report}");
    assert!(report.contains("samples/scale-1 step 2"), "{report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `ember eval` honours every guidance option: with a negative class, a guidance interval and
/// CFG rescale it draws exactly the images `ember sample` draws with the same settings and
/// seed (in other batches), records them, and refuses a rerun that changes one.
#[test]
fn eval_samples_what_sample_samples_with_every_guidance_option() {
    use ember_eval::eval::EvalFile;
    let (dir, run) = judged_smoke_run("eval-options");
    let options = [
        "--negative-class",
        "1",
        "--guidance-interval",
        "0.3,20",
        "--cfg-rescale",
        "0.7",
        "--sampler",
        "ddpm",
        "--steps",
        "4",
        "--seed",
        "5",
    ];
    let evals = dir.join("eval");
    let mut args = vec![
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--guidance",
        "3",
        "--samples-per-class",
        "2",
        "--grid-columns",
        "2",
        "--batch-size",
        "3",
        "--out",
        evals.to_str().unwrap(),
    ];
    args.extend_from_slice(&options);
    let out = ember(&args);
    assert!(out.status.success(), "{}", text(&out));

    let grid = dir.join("sampled.png");
    let mut args = vec![
        "sample",
        "--run",
        run.to_str().unwrap(),
        "--guidance",
        "3",
        "--per-class",
        "2",
        "--out",
        grid.to_str().unwrap(),
    ];
    args.extend_from_slice(&options);
    let out = ember(&args);
    assert!(out.status.success(), "{}", text(&out));
    let (sampled, evaluated) = (
        read_png(&grid).unwrap(),
        read_png(&evals.join("grid_scale-3.png")).unwrap(),
    );
    assert_eq!(
        (sampled.width, sampled.height),
        (evaluated.width, evaluated.height)
    );
    let worst = sampled
        .pixels
        .iter()
        .zip(&evaluated.pixels)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(
        worst <= 1,
        "the eval grid differs from ember sample's by {worst} grey levels"
    );

    // Every option is recorded, and a changed one is refused by name.
    let file = EvalFile::read(&evals.join("eval.json")).unwrap();
    let sampling = &file.settings.sampling;
    assert_eq!(sampling["negative_class"], 1);
    assert_eq!(sampling["cfg_rescale"], 0.7);
    assert_eq!(
        sampling["guidance_interval"],
        serde_json::json!([0.3, 20.0])
    );
    assert_eq!(sampling["sampler"], "ddpm");
    let mut args = vec![
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--guidance",
        "3",
        "--samples-per-class",
        "2",
        "--out",
        evals.to_str().unwrap(),
    ];
    args.extend_from_slice(&[
        "--negative-class",
        "1",
        "--guidance-interval",
        "0.3,20",
        "--cfg-rescale",
        "0.5",
        "--sampler",
        "ddpm",
        "--steps",
        "4",
        "--seed",
        "5",
    ]);
    let out = ember(&args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("sampling.cfg_rescale: 0.7 -> 0.5"),
        "{}",
        text(&out)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// `ember sample` of classes 3 and 7, three each, three steps, plus `extra` flags (which
/// choose the scale, if not the config's 3).
fn sample_with(run: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "sample",
        "--run",
        run.to_str().unwrap(),
        "--class",
        "3,7",
        "--per-class",
        "3",
        "--steps",
        "3",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ember(&args)
}

#[test]
fn every_guidance_method_and_schedule_samples_from_the_cli_and_contradictions_name_the_flag() {
    let (dir, _, run) = trained_smoke_run("methods");
    let run_arg = run.to_str().unwrap();
    // The smoke run keeps its checkpoints of steps 2 and 4: step 2 is autoguidance's weak model.
    let methods: [&[&str]; 6] = [
        &[
            "--guidance-method",
            "apg",
            "--apg-momentum",
            "-0.5",
            "--apg-norm-threshold",
            "5",
        ],
        &["--guidance-method", "cfg-pp", "--guidance", "0.6"],
        &[
            "--guidance-method",
            "cfg-zero-star",
            "--cfg-zero-init-steps",
            "1",
        ],
        &[
            "--guidance-method",
            "autoguidance",
            "--guide-run",
            run_arg,
            "--guide-checkpoint",
            "2",
        ],
        &[
            "--guidance-schedule",
            "linear-up",
            "--guidance-interval",
            "0.5,20",
        ],
        &[
            "--guidance-method",
            "apg",
            "--guidance-schedule",
            "cosine",
            "--apg-eta",
            "0.5",
        ],
    ];
    for sampler in ["ddim", "heun", "dpmpp-2m"] {
        for (m, extra) in methods.iter().enumerate() {
            let png = dir.join(format!("{sampler}-{m}.png"));
            let mut args = vec!["--sampler", sampler];
            args.extend_from_slice(extra);
            let out = sample_with(&run, &png, &args);
            assert!(out.status.success(), "{sampler} {extra:?}: {}", text(&out));
            let grid = read_png(&png).unwrap();
            assert_eq!((grid.width, grid.height), grid_size(2, 3, 28));
        }
    }
    // Contradictions and out-of-range values name the flag (or the key), exit 2, write nothing.
    let png = dir.join("refused.png");
    for (extra, expected) in [
        (
            &["--guidance-method", "cfg-pp"][..],
            "key `sample.guidance_scale`: guidance_method \"cfg-pp\" takes lambda in [0, 1]",
        ),
        (&["--guidance-method", "cfg-pp"][..], "(or pass --guidance)"),
        (&["--guidance-method", "autoguidance"][..], "--guide-run"),
        (&["--guide-run", run_arg][..], "--guide-run"),
        (
            &["--guidance-method", "apg", "--cfg-rescale", "0.5"][..],
            "--cfg-rescale",
        ),
        (&["--apg-eta", "2"][..], "--apg-eta"),
        (
            &[
                "--guidance-method",
                "cfg-zero-star",
                "--cfg-zero-init-steps",
                "3",
            ][..],
            "--cfg-zero-init-steps",
        ),
        (
            &[
                "--guidance-method",
                "autoguidance",
                "--guide-run",
                run_arg,
                "--negative-class",
                "1",
            ][..],
            "--negative-class",
        ),
        (
            &[
                "--guidance-method",
                "autoguidance",
                "--guide-run",
                run_arg,
                "--guide-checkpoint",
                "3",
            ][..],
            "no checkpoint of that step; it has steps 4, 2",
        ),
        (&["--guidance-schedule", "exponential"][..], "linear-up"),
    ] {
        let out = sample_with(&run, &png, extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", text(&out));
        assert!(text(&out).contains(expected), "{extra:?}: {}", text(&out));
        assert!(!png.exists());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn outpainting_from_the_cli_keeps_every_pixel_of_the_init_image() {
    use ember_io::{GridImage, write_png};
    let (dir, _, run) = trained_smoke_run("outpaint");
    let source = GridImage {
        width: 28,
        height: 28,
        channels: 1,
        pixels: (0..28 * 28).map(|i| ((i * 37) % 251) as u8).collect(),
    };
    let init = dir.join("init.png");
    write_png(&source, &init).unwrap();
    // 2 left, 4 top, 6 right, 0 bottom: a 36 x 32 canvas (the smoke model halves it once).
    let (left, top, width, height) = (2, 4, 36, 32);
    for (sampler, method) in [("ddim", "cfg"), ("euler", "cfg-pp"), ("dpmpp-2m", "apg")] {
        let png = dir.join(format!("outpaint-{sampler}.png"));
        let scale = if method == "cfg-pp" { "0.5" } else { "2" };
        let out = sample_with(
            &run,
            &png,
            &[
                "--sampler",
                sampler,
                "--guidance-method",
                method,
                "--guidance",
                scale,
                "--init",
                init.to_str().unwrap(),
                "--outpaint",
                "2,4,6,0",
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        let grid = read_png(&png).unwrap();
        let p = GRID_PADDING;
        assert_eq!(
            (grid.width, grid.height),
            (3 * (width + p) + p, 2 * (height + p) + p)
        );
        for tile in 0..6 {
            let (tile_top, tile_left) =
                (p + (tile / 3) * (height + p), p + (tile % 3) * (width + p));
            for y in 0..28 {
                for x in 0..28 {
                    let got = grid.at(tile_left + left + x, tile_top + top + y, 0);
                    assert_eq!(got, source.at(x, y, 0), "{sampler} tile {tile} ({x},{y})");
                }
            }
            // the border is generated, not left mid-grey
            let border: Vec<u8> = (0..width)
                .map(|x| grid.at(tile_left + x, tile_top, 0))
                .collect();
            assert!(
                border.iter().any(|&v| v.abs_diff(128) > 2),
                "{sampler}: {border:?}"
            );
        }
    }
    // A canvas the model cannot halve, and a wrong number of margins, are refused by flag.
    for (margins, expected) in [("1,0,0,0", "divisible by 2"), ("2,2", "four pixel counts")] {
        let png = dir.join("refused.png");
        let out = sample_with(
            &run,
            &png,
            &["--init", init.to_str().unwrap(), "--outpaint", margins],
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains("--outpaint") && text(&out).contains(expected),
            "{}",
            text(&out)
        );
        assert!(!png.exists());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// `ember eval --study` on the run, into `out`, plus `extra` flags.
fn study(run: &Path, file: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--study",
        file.to_str().unwrap(),
        "--samples-per-class",
        "2",
        "--batch-size",
        "7",
        "--grid-columns",
        "2",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ember(&args)
}

#[test]
fn a_guidance_study_compares_methods_resumes_and_refuses_a_mismatched_weak_model() {
    use ember_eval::study::StudyFile;
    let (dir, run) = judged_smoke_run("study");
    // CFG, and autoguidance whose weak model is the run's checkpoint of step 2.
    let study_file = dir.join("study.toml");
    let write_study = |weak_run: &Path, weak_step: usize| {
        let text = format!(
            "[[method]]\nname = \"cfg\"\nscales = [1, 2]\n\n\
             [[method]]\nname = \"auto\"\nscales = [1.5]\n\
             sample = {{ guidance_method = \"autoguidance\", guide_run = {:?}, guide_checkpoint = {weak_step} }}\n",
            weak_run.to_str().unwrap()
        );
        std::fs::write(&study_file, text).unwrap();
    };
    write_study(&run, 2);
    let out_dir = dir.join("study-out");
    let out = study(&run, &study_file, &out_dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(
        printed.contains("| cfg |") && printed.contains("| auto |"),
        "{printed}"
    );
    for file in ["study.json", "study.csv", "study.md", "study.png"] {
        assert!(out_dir.join(file).is_file(), "{file}");
    }
    assert!(out_dir.join("cfg/grid_scale-2.png").is_file());
    assert!(out_dir.join("auto/grid_scale-1.5.png").is_file());
    let csv = std::fs::read_to_string(out_dir.join("study.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.contains("\nauto,1.5,"), "{csv}");
    let first = StudyFile::read(&out_dir.join("study.json")).unwrap();
    let auto = first.method("auto").unwrap();
    assert_eq!(auto.sampling["guidance_method"], "autoguidance");
    assert!(
        auto.sampling["guide_weights"]
            .as_str()
            .unwrap()
            .contains("step-00000002"),
        "{:?}",
        auto.sampling
    );

    // Resumed after losing one result: only that pair is sampled again, to the same numbers.
    let mut damaged = first.clone();
    let lost = damaged.methods[0].rows.remove(1);
    assert_eq!(lost.scale, 2.0);
    std::fs::write(
        out_dir.join("study.json"),
        serde_json::to_string_pretty(&damaged).unwrap(),
    )
    .unwrap();
    let out = study(&run, &study_file, &out_dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(
        printed.contains("skipping cfg at scale 1 (done)"),
        "{printed}"
    );
    assert!(
        printed.contains("skipping auto at scale 1.5 (done)"),
        "{printed}"
    );
    assert!(printed.contains("cfg at scale 2: accuracy"), "{printed}");
    let resumed = StudyFile::read(&out_dir.join("study.json")).unwrap();
    let again = resumed.method("cfg").unwrap().row(2.0).unwrap();
    assert_eq!(
        (again.accuracy, again.fd, again.precision, again.recall),
        (lost.accuracy, lost.fd, lost.precision, lost.recall)
    );

    // A method whose settings changed is refused by name, then restarted on request.
    write_study(&run, 4);
    let out = study(&run, &study_file, &out_dir, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("method \"auto\"") && text(&out).contains("guide_checkpoint: 2 -> 4"),
        "{}",
        text(&out)
    );
    let out = study(&run, &study_file, &out_dir, &["--restart"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("skipping cfg at scale 2 (done)"),
        "{}",
        text(&out)
    );

    // With --cas, every pair and the real data get a CAS, in the CSV and the best-FD table.
    let cas_dir = dir.join("study-cas");
    let out = study(&run, &study_file, &cas_dir, &["--cas", "--cas-epochs", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let csv = std::fs::read_to_string(cas_dir.join("study.csv")).unwrap();
    assert!(
        csv.starts_with("method,scale,accuracy,fd,precision,recall,diversity,cas,samples,"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 4, "{csv}");
    for row in csv.lines().skip(1) {
        let cas: f64 = row.split(',').nth(7).unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&cas), "{row}");
    }
    let table = std::fs::read_to_string(cas_dir.join("study.md")).unwrap();
    assert!(table.starts_with("| method | best FD | at scale | accuracy | recall | CAS |\n"));
    let with_cas = StudyFile::read(&cas_dir.join("study.json")).unwrap();
    assert!(with_cas.settings.cas.is_some() && with_cas.reference.cas.is_some());
    assert!(
        with_cas
            .methods
            .iter()
            .flat_map(|m| &m.rows)
            .all(|r| r.cas.is_some())
    );

    // Every method samples from the same noise: APG with eta 1 (no momentum, no cap) is CFG
    // combined on clean images instead of noise (an affine map of it for this epsilon model),
    // so in one study its images are CFG's (8-bit grids at most one level apart, where rounding
    // crosses a level) and its metrics equal CFG's up to rounding; other noise would move them
    // by far more.
    let same_noise = dir.join("same-noise.toml");
    std::fs::write(
        &same_noise,
        "[[method]]\nname = \"cfg\"\nscales = [2]\n\n\
         [[method]]\nname = \"apg\"\nscales = [2]\n\
         sample = { guidance_method = \"apg\", apg_eta = 1.0 }\n",
    )
    .unwrap();
    let same_dir = dir.join("study-same-noise");
    let out = study(&run, &same_noise, &same_dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let grid = |method: &str| read_png(&same_dir.join(method).join("grid_scale-2.png")).unwrap();
    let (cfg_grid, apg_grid) = (grid("cfg"), grid("apg"));
    assert_eq!(cfg_grid.pixels.len(), apg_grid.pixels.len());
    let apart = cfg_grid
        .pixels
        .iter()
        .zip(&apg_grid.pixels)
        .map(|(a, b)| a.abs_diff(*b))
        .max();
    assert!(apart <= Some(1), "{apart:?}");
    let same = StudyFile::read(&same_dir.join("study.json")).unwrap();
    let (cfg, apg) = (
        same.method("cfg").unwrap().row(2.0).unwrap(),
        same.method("apg").unwrap().row(2.0).unwrap(),
    );
    assert_eq!(
        (cfg.accuracy, cfg.precision, cfg.recall, cfg.samples),
        (apg.accuracy, apg.precision, apg.recall, apg.samples)
    );
    for (a, b) in [(cfg.fd, apg.fd), (cfg.diversity, apg.diversity)] {
        assert!(
            (a - b).abs() <= 1e-6 * a.abs().max(1e-3),
            "{cfg:?}\n{apg:?}"
        );
    }

    // A weak model of another image size is refused before anything is sampled.
    let small = format_config(&dir, "small", |c| {
        c.data.root = dir.join("data");
        c.model.image_size = 16;
    });
    let small_run = dir.join("small-run");
    let out = train(&small, &small_run);
    assert!(out.status.success(), "{}", text(&out));
    write_study(&small_run, 2);
    let refused = dir.join("refused");
    let out = study(&run, &study_file, &refused, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("method \"auto\"")
            && text(&out).contains("image size 16 where the guided run"),
        "{}",
        text(&out)
    );
    assert!(!refused.exists(), "nothing written");
    // ... and by ember sample too.
    let out = ember(&[
        "sample",
        "--run",
        run.to_str().unwrap(),
        "--guidance-method",
        "autoguidance",
        "--guide-run",
        small_run.to_str().unwrap(),
        "--out",
        dir.join("x.png").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("image size 16"), "{}", text(&out));
    std::fs::remove_dir_all(dir).unwrap();
}

/// The time-to-quality curve: every kept checkpoint at one scale (with CAS), beside sample sets
/// another program exported, and a rerun that skips what is done.
#[test]
fn checkpoint_curve_scores_every_checkpoint_and_exported_samples_and_resumes() {
    use ember_io::{GridImage, write_png};
    let (dir, run) = judged_smoke_run("curve");
    // Two images per class as another program would export them.
    let twin = dir.join("twin");
    for class in 0..10 {
        for j in 0..2 {
            let pixels = (0..28 * 28)
                .map(|i| ((i * 7 + class * 31 + j * 13) % 256) as u8)
                .collect();
            let image = GridImage {
                width: 28,
                height: 28,
                channels: 1,
                pixels,
            };
            let path = twin.join(format!("minutes-0.5/{class}/{j}.png"));
            write_png(&image, &path).unwrap();
        }
    }
    let curve_dir = dir.join("curve");
    let args = [
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--checkpoints",
        "all",
        "--guidance",
        "1",
        "--samples-per-class",
        "2",
        "--steps",
        "2",
        "--cas",
        "--cas-epochs",
        "1",
        "--compare",
        twin.to_str().unwrap(),
        "--out",
        curve_dir.to_str().unwrap(),
    ];
    let out = ember(&args);
    assert!(out.status.success(), "{}", text(&out));
    let csv = std::fs::read_to_string(curve_dir.join("curve.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(
        rows.len(),
        3,
        "checkpoints 2 and 4, and the exported set: {csv}"
    );
    assert!(
        rows[0].starts_with("ember,2,") && rows[1].starts_with("ember,4,"),
        "{csv}"
    );
    assert!(rows[2].starts_with("pytorch,,0.5,"), "{csv}");
    for row in &rows {
        let cas: f64 = row.split(',').nth(8).unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&cas), "{row}");
    }
    // Minutes grow with the step (the smoke run trains its four steps in well under a second).
    let curve = ember_eval::curve::CurveFile::read(&curve_dir.join("curve.json")).unwrap();
    let minutes = |step: usize| {
        let point = curve.points.iter().find(|p| p.step == Some(step));
        point.expect("a point per checkpoint").minutes
    };
    assert!(minutes(2) > 0.0 && minutes(2) < minutes(4), "{curve:?}");
    assert!(
        std::fs::read(curve_dir.join("curve.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );

    // A rerun computes nothing again.
    let again = ember(&args);
    assert!(again.status.success(), "{}", text(&again));
    let log = text(&again);
    for done in [
        "skipping ember step 2",
        "skipping ember step 4",
        "skipping pytorch",
    ] {
        assert!(log.contains(done), "{log}");
    }
    assert_eq!(
        std::fs::read_to_string(curve_dir.join("curve.csv")).unwrap(),
        csv
    );
    // A curve needs exactly one scale.
    let out = ember(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--checkpoints",
        "all",
        "--guidance",
        "1,2",
        "--samples-per-class",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("exactly one --guidance"),
        "{}",
        text(&out)
    );
    std::fs::remove_dir_all(dir).unwrap();
}
