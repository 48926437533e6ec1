//! The shape of the workspace, checked: the tensor-free crates stay free of Burn, and no crate's
//! files import each other in a circle.

mod common;

use common::manifest_dir;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    manifest_dir().join("../..")
}

/// Every package `name` depends on, directly or not, according to Cargo.lock.
fn dependency_closure(lock: &str, name: &str) -> BTreeSet<String> {
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for package in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            package
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        let Some(pkg) = field("name") else { continue };
        let list = package
            .split_once("dependencies = [")
            .map(|(_, rest)| rest.split(']').next().unwrap_or(""))
            .unwrap_or("");
        let names = list
            .split(',')
            .map(|d| d.trim().trim_matches('"'))
            .filter(|d| !d.is_empty())
            // "name version" when several versions are locked
            .map(|d| d.split_whitespace().next().unwrap().to_string());
        deps.entry(pkg).or_default().extend(names);
    }
    let mut seen = BTreeSet::new();
    let mut stack = vec![name.to_string()];
    while let Some(p) = stack.pop() {
        for d in deps.get(&p).into_iter().flatten() {
            if seen.insert(d.clone()) {
                stack.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn the_tensor_free_crates_do_not_depend_on_burn() {
    let lock = std::fs::read_to_string(workspace().join("Cargo.lock")).unwrap();
    for krate in ["ember-io", "ember-monitor"] {
        let closure = dependency_closure(&lock, krate);
        assert!(!closure.is_empty(), "{krate} is in Cargo.lock");
        let burn: Vec<&String> = closure.iter().filter(|d| d.starts_with("burn")).collect();
        assert!(burn.is_empty(), "{krate} depends on {burn:?}");
    }
    // The check itself sees Burn where it is.
    assert!(dependency_closure(&lock, "ember-sample").contains("burn"));
}

/// The source file a `crate::a::b` or `super::a` path names, if it is a file of the crate.
fn module_file(src: &Path, dir: &Path, segments: &[&str]) -> Option<PathBuf> {
    let mut best = None;
    let mut base = dir.to_path_buf();
    for seg in segments {
        let file = base.join(format!("{seg}.rs"));
        let folder = base.join(seg).join("mod.rs");
        if file.is_file() {
            best = Some(file);
        } else if folder.is_file() {
            best = Some(folder);
        } else {
            break;
        }
        base = base.join(seg);
    }
    best.filter(|p| p.starts_with(src))
}

/// Files `from` refers to through `crate::` and `super::` paths, leaving out a module root's
/// references to its own sub-modules (its `mod x;` and re-exports).
fn references(src: &Path, from: &Path) -> BTreeSet<PathBuf> {
    let text = std::fs::read_to_string(from).unwrap();
    let dir = from.parent().unwrap();
    let is_root = matches!(
        from.file_name().and_then(|n| n.to_str()),
        Some("lib.rs" | "main.rs" | "mod.rs")
    );
    let mut out = BTreeSet::new();
    for (prefix, base) in [
        ("crate::", src.to_path_buf()),
        ("super::", {
            if is_root {
                dir.parent().unwrap_or(dir).to_path_buf()
            } else {
                dir.to_path_buf()
            }
        }),
    ] {
        for (i, _) in text.match_indices(prefix) {
            let rest = &text[i + prefix.len()..];
            let path: Vec<&str> = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("")
                .split("::")
                .filter(|s| !s.is_empty())
                .collect();
            if let Some(target) = module_file(src, &base, &path)
                && target != from
                && !(is_root && target.starts_with(dir))
            {
                out.insert(target);
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_crate_has_an_import_circle() {
    let crates = workspace().join("crates");
    let mut circles = Vec::new();
    let mut edges_seen = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = files
            .iter()
            .map(|f| (f.clone(), references(&src, f)))
            .collect();
        edges_seen += graph.values().map(|v| v.len()).sum::<usize>();
        // A depth-first search for a back edge.
        fn visit(
            node: &PathBuf,
            graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
            state: &mut BTreeMap<PathBuf, u8>,
            path: &mut Vec<PathBuf>,
            circles: &mut Vec<String>,
        ) {
            state.insert(node.clone(), 1);
            path.push(node.clone());
            for next in graph.get(node).into_iter().flatten() {
                match state.get(next) {
                    Some(1) => {
                        let start = path.iter().position(|p| p == next).unwrap();
                        let names: Vec<String> = path[start..]
                            .iter()
                            .chain([next])
                            .map(|p| p.display().to_string())
                            .collect();
                        circles.push(names.join(" -> "));
                    }
                    Some(_) => {}
                    None => visit(next, graph, state, path, circles),
                }
            }
            path.pop();
            state.insert(node.clone(), 2);
        }
        let mut state = BTreeMap::new();
        for node in graph.keys() {
            if !state.contains_key(node) {
                visit(node, &graph, &mut state, &mut Vec::new(), &mut circles);
            }
        }
    }
    assert!(edges_seen > 20, "the scan found only {edges_seen} imports");
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}
