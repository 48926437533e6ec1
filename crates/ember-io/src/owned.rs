//! Folders Ember made, and the one rule for replacing them: Ember deletes only what it made.
//!
//! Every folder Ember creates for its output (a run directory, a classifier folder) gets a
//! marker file, [`MARKER_FILE`], naming what it is. [`prepare_owned_dir`] makes or reuses such
//! a folder and refuses a non-empty folder without Ember's marker of the same kind, naming the
//! folder and what is in it. Data readers skip folders that carry the marker, so Ember's own
//! output under a data folder is never taken for data.

use std::path::{Path, PathBuf};

/// The marker file in every folder Ember made. A dot file, so listings and image-folder readers
/// pass over it; it also serves as the lock file of a run.
pub const MARKER_FILE: &str = ".ember";

/// What a folder Ember made holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerKind {
    /// A training run (`ember train`).
    Run,
    /// A domain or noise-aware classifier (`ember classifier train`).
    Classifier,
}

impl OwnerKind {
    fn name(self) -> &'static str {
        match self {
            OwnerKind::Run => "run",
            OwnerKind::Classifier => "classifier",
        }
    }

    fn marker_text(self) -> String {
        format!("ember {}\n", self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OwnedDirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} exists and is not a folder")]
    NotAFolder { path: PathBuf },
    #[error(
        "{path} is not empty and was not made by ember as a {kind} folder (no {MARKER_FILE} marker); it holds {listing}. Ember only replaces folders it made: choose another path or empty it yourself"
    )]
    NotOurs {
        path: PathBuf,
        kind: &'static str,
        listing: String,
    },
    #[error("{path} already holds an ember {kind}; choose another path or pass --overwrite")]
    Exists { path: PathBuf, kind: &'static str },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OwnedDirError + '_ {
    move |source| OwnedDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The kind of Ember folder `dir` is, from its marker; `None` for any other folder.
pub fn owner_of(dir: &Path) -> Option<OwnerKind> {
    let text = std::fs::read_to_string(dir.join(MARKER_FILE)).ok()?;
    [OwnerKind::Run, OwnerKind::Classifier]
        .into_iter()
        .find(|k| text == k.marker_text())
}

/// Whether `dir` carries Ember's marker (of any kind).
pub fn is_owned_by_ember(dir: &Path) -> bool {
    dir.join(MARKER_FILE).is_file()
}

/// Makes `dir` ready to receive a new `kind` of output, and returns whether it was emptied.
///
/// - a missing or empty folder is created (with its parents) and marked;
/// - a folder with Ember's marker of this `kind` is emptied (every entry but the marker) when
///   `overwrite`, and refused with [`OwnedDirError::Exists`] otherwise, unless `holds_output`
///   says it holds nothing worth keeping yet;
/// - any other non-empty folder is refused with [`OwnedDirError::NotOurs`], naming its entries;
///   nothing in it is touched.
pub fn prepare_owned_dir(
    dir: &Path,
    kind: OwnerKind,
    overwrite: bool,
    holds_output: impl Fn(&Path) -> bool,
) -> Result<bool, OwnedDirError> {
    if dir.exists() && !dir.is_dir() {
        return Err(OwnedDirError::NotAFolder {
            path: dir.to_path_buf(),
        });
    }
    let entries = list(dir)?;
    let others: Vec<&String> = entries.iter().filter(|n| *n != MARKER_FILE).collect();
    if others.is_empty() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        mark(dir, kind)?;
        return Ok(false);
    }
    if owner_of(dir) != Some(kind) {
        const SHOWN: usize = 5;
        let mut listing = others
            .iter()
            .take(SHOWN)
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        if others.len() > SHOWN {
            listing.push_str(&format!(" and {} more", others.len() - SHOWN));
        }
        return Err(OwnedDirError::NotOurs {
            path: dir.to_path_buf(),
            kind: kind.name(),
            listing,
        });
    }
    if !holds_output(dir) {
        return Ok(false);
    }
    if !overwrite {
        return Err(OwnedDirError::Exists {
            path: dir.to_path_buf(),
            kind: kind.name(),
        });
    }
    for name in others {
        let path = dir.join(name);
        let removed = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io(&path))?;
    }
    crate::sync_dir(dir).map_err(io(dir))?;
    Ok(true)
}

/// Writes the marker of `kind` into `dir` (durably).
fn mark(dir: &Path, kind: OwnerKind) -> Result<(), OwnedDirError> {
    let path = dir.join(MARKER_FILE);
    if owner_of(dir) == Some(kind) {
        return Ok(());
    }
    crate::write_atomic(&path, kind.marker_text().as_bytes()).map_err(io(&path))
}

/// Entry names of `dir`, sorted (empty when it does not exist).
fn list(dir: &Path) -> Result<Vec<String>, OwnedDirError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        names.push(
            entry
                .map_err(io(dir))?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-owned-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn always(_: &Path) -> bool {
        true
    }

    #[test]
    fn a_new_folder_is_created_and_marked() {
        let dir = temp_dir("new").join("nested");
        assert!(!prepare_owned_dir(&dir, OwnerKind::Run, false, always).unwrap());
        assert_eq!(owner_of(&dir), Some(OwnerKind::Run));
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_foreign_folder_is_refused_by_name_and_left_alone() {
        let dir = temp_dir("foreign");
        std::fs::create_dir_all(dir.join("photos")).unwrap();
        std::fs::write(dir.join("thesis.tex"), "mine").unwrap();
        let err = prepare_owned_dir(&dir, OwnerKind::Classifier, true, always).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("thesis.tex") && text.contains("photos"),
            "{text}"
        );
        assert!(text.contains("not made by ember"), "{text}");
        assert_eq!(
            std::fs::read_to_string(dir.join("thesis.tex")).unwrap(),
            "mine"
        );
        assert!(!dir.join(MARKER_FILE).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_folder_of_another_kind_is_refused() {
        let dir = temp_dir("kind");
        prepare_owned_dir(&dir, OwnerKind::Run, false, always).unwrap();
        std::fs::write(dir.join("config.toml"), "x").unwrap();
        let err = prepare_owned_dir(&dir, OwnerKind::Classifier, true, always).unwrap_err();
        assert!(matches!(err, OwnedDirError::NotOurs { .. }), "{err}");
        assert!(dir.join("config.toml").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_own_folder_is_refused_without_overwrite_and_emptied_with_it() {
        let dir = temp_dir("own");
        prepare_owned_dir(&dir, OwnerKind::Run, false, always).unwrap();
        std::fs::create_dir_all(dir.join("checkpoints/step-1")).unwrap();
        std::fs::write(dir.join("events.out.tfevents.1"), "e").unwrap();
        let err = prepare_owned_dir(&dir, OwnerKind::Run, false, always).unwrap_err();
        assert!(matches!(err, OwnedDirError::Exists { .. }), "{err}");
        assert!(dir.join("checkpoints/step-1").is_dir());
        assert!(prepare_owned_dir(&dir, OwnerKind::Run, true, always).unwrap());
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(MARKER_FILE)]);
        // Nothing worth keeping yet: reused without --overwrite.
        std::fs::write(dir.join("classes.txt"), "a").unwrap();
        assert!(!prepare_owned_dir(&dir, OwnerKind::Run, false, |_| false).unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_in_the_way_is_refused() {
        let dir = temp_dir("file");
        std::fs::write(&dir, "x").unwrap();
        let err = prepare_owned_dir(&dir, OwnerKind::Run, true, always).unwrap_err();
        assert!(matches!(err, OwnedDirError::NotAFolder { .. }), "{err}");
        std::fs::remove_file(dir).unwrap();
    }
}
