//! What a user owns is never destroyed: a full disk in the middle of a checkpoint, `--overwrite`,
//! failing sample grids, class names with commas.

mod common;

use common::*;
use ember_config::ExperimentConfig;
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The largest absolute difference `ember compare` prints for two weight files.
fn max_difference(a: &Path, b: &Path) -> String {
    let out = ember(&["compare", s(a), s(b)]);
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    log.lines()
        .find_map(|l| l.strip_prefix("max abs difference: "))
        .unwrap_or_else(|| panic!("{log}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn export(run: &Path, out: &Path) {
    let result = ember(&["export", "--run", s(run), "--raw", "--out", s(out)]);
    assert!(result.status.success(), "{}", text(&result));
}

#[test]
fn a_full_disk_mid_checkpoint_keeps_the_previous_one_and_resume_is_bit_identical() {
    let dir = workdir("disk-full");
    let config = smoke_config_on_fixture(&dir);

    // The uninterrupted run: 4 steps, checkpoints at 2 and 4.
    let whole = dir.join("whole");
    let out = train(&config, &whole);
    assert!(out.status.success(), "{}", text(&out));

    // The same run stopped at step 2 ...
    let run = dir.join("run");
    let out = ember(&["train", s(&config), "--run-dir", s(&run), "--steps", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let step2 = run.join("checkpoints/step-00000002");
    let model_bytes = std::fs::metadata(step2.join("model.bpk")).unwrap().len();
    let before: Vec<Vec<u8>> = ["model.bpk", "ema.bpk", "optimizer.bpk", "state.toml"]
        .iter()
        .map(|f| std::fs::read(step2.join(f)).unwrap())
        .collect();

    // ... resumed on a "disk" that fills up halfway through the next checkpoint's first file.
    let out = ember_with_file_limit(
        model_bytes / 2,
        &["train", "--resume", s(&run), "--steps", "4"],
    );
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "a failure while working: {log}");
    assert!(
        log.contains("error: ") && log.contains("model.bpk"),
        "names the file: {log}"
    );
    assert!(log.contains("step-00000004"), "{log}");
    // The previous checkpoint is intact, still the latest, and nothing half-written is left.
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    assert_eq!(latest.trim(), "step-00000002");
    let after: Vec<Vec<u8>> = ["model.bpk", "ema.bpk", "optimizer.bpk", "state.toml"]
        .iter()
        .map(|f| std::fs::read(step2.join(f)).unwrap())
        .collect();
    assert!(before == after, "checkpoint 2 changed");
    let names: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, vec!["latest", "step-00000002"]);

    // With room again, the resume continues from step 2 and lands exactly where the
    // uninterrupted run did.
    let out = ember(&["train", "--resume", s(&run), "--steps", "4"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("at step 2"), "{}", text(&out));
    let (a, b) = (
        dir.join("whole.safetensors"),
        dir.join("resumed.safetensors"),
    );
    export(&whole, &a);
    export(&run, &b);
    assert_eq!(max_difference(&a, &b), "0e0");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn overwrite_clears_the_whole_run_and_a_failed_grid_is_only_a_warning() {
    let dir = workdir("overwrite");
    let config = smoke_config_on_fixture(&dir);
    let run = dir.join("run");
    let out = train(&config, &run);
    assert!(out.status.success(), "{}", text(&out));
    // Things an earlier run left that a new run must not inherit.
    std::fs::create_dir_all(run.join("eval")).unwrap();
    std::fs::write(run.join("eval/eval.json"), "{}").unwrap();
    let old_events: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("events.out"))
        .collect();
    assert_eq!(old_events.len(), 1);

    // A grid scale so small that its old file name (250 zeros) could not be created: the
    // name is short now, and grids come after the checkpoint in any case.
    let mut edited = ExperimentConfig::load(&config).unwrap();
    edited.log.sample_scales = vec![1e-250, 3.0];
    let edited_path = dir.join("edited.toml");
    std::fs::write(&edited_path, edited.to_toml()).unwrap();
    let out = ember(&[
        "train",
        s(&edited_path),
        "--run-dir",
        s(&run),
        "--overwrite",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!run.join("eval").exists(), "the old eval results are gone");
    let events: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("events.out"))
        .collect();
    assert_eq!(events.len(), 1, "one event file, the new run's: {events:?}");
    assert!(
        run.join("samples/step-00000004_scale-1e-250_classes-0-9.png")
            .is_file()
    );

    // A grid that cannot be written (its folder replaced by a file) is a warning: the run
    // finishes with every checkpoint.
    let other = dir.join("other");
    let out = train(&config, &other);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::remove_dir_all(other.join("samples")).unwrap();
    std::fs::write(other.join("samples"), "in the way").unwrap();
    let out = ember(&["train", "--resume", s(&other), "--steps", "6"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("warning: no sample grid at step 6"), "{log}");
    let latest = std::fs::read_to_string(other.join("checkpoints/latest")).unwrap();
    assert_eq!(latest.trim(), "step-00000006");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn class_names_with_commas_stay_selectable_and_classifiers_stay_out_of_the_data() {
    let dir = workdir("names");
    let data = dir.join("data");
    write_image_folder(&data, &["apples,pears", "bread", "cheese"], 3);
    let mut config =
        ExperimentConfig::load(&manifest_dir().join("../../configs/smoke.toml")).unwrap();
    config.data.format = ember_config::DataFormat::ImageFolder;
    config.data.root = data.clone();
    config.data.test_root = data.clone();
    config.model.num_classes = 3;
    config.model.image_size = 8;
    config.classifier.epochs = 1;
    let path = dir.join("folder.toml");
    std::fs::write(&path, config.to_toml()).unwrap();

    // The classifier goes beside the data folder; training afterwards still sees 3 classes.
    let out = ember(&["classifier", "train", "--config", s(&path)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.join("data.classifier/classifier.toml").is_file());
    let run = dir.join("run");
    let out = train(&path, &run);
    assert!(out.status.success(), "{}", text(&out));

    // A name with a comma is one class; a list still splits.
    let grid = dir.join("grid.png");
    let sample = |class: &str| {
        ember(&[
            "sample",
            "--run",
            s(&run),
            "--class",
            class,
            "--per-class",
            "1",
            "--steps",
            "2",
            "--out",
            s(&grid),
        ])
    };
    let out = sample("apples,pears");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1 classes"), "{}", text(&out));
    let out = sample("bread,cheese");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 classes"), "{}", text(&out));
    std::fs::remove_dir_all(dir).unwrap();
}
