//! Durable atomic writes: a file appears whole or not at all, and stays after a power cut.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same folder: written, fsynced,
/// renamed over `path`, then the folder fsynced so the rename itself is on disk. On any failure
/// the temporary file is removed and `path` is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent_of(path);
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp-");
    // Dropped (and so deleted) on every early return.
    let mut tmp = tempfile::Builder::new().prefix(&prefix).tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Puts the finished folder `staged` in place of `target` without a moment in which neither
/// exists: an old `target` is first renamed aside, `staged` renamed in, the parent folder
/// fsynced, and only then the old one deleted. `staged` must be a sibling of `target` whose
/// files are already on disk.
pub fn replace_dir(staged: &Path, target: &Path) -> std::io::Result<()> {
    let parent = parent_of(target);
    sync_dir(staged)?;
    let aside = if target.exists() {
        let mut name = std::ffi::OsString::from(".");
        name.push(target.file_name().unwrap_or_default());
        name.push(format!(".old-{}", std::process::id()));
        let aside = parent.join(name);
        std::fs::rename(target, &aside)?;
        Some(aside)
    } else {
        None
    };
    if let Err(e) = std::fs::rename(staged, target) {
        if let Some(aside) = &aside {
            // Put the old folder back; the error is the rename's.
            let _ = std::fs::rename(aside, target);
        }
        return Err(e);
    }
    sync_dir(parent)?;
    if let Some(aside) = aside {
        std::fs::remove_dir_all(&aside)?;
        sync_dir(parent)?;
    }
    Ok(())
}

/// Flushes a folder's entries (creations, renames, deletions) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The folder a path lives in (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-io-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn writes_replace_the_file_and_leave_nothing_else() {
        let dir = temp_dir("atomic");
        let path = dir.join("a.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn replace_dir_swaps_in_the_new_folder_and_removes_only_the_old_one() {
        let dir = temp_dir("replace");
        let target = dir.join("step-1");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("old.bin"), "old").unwrap();
        let staged = dir.join(".step-1.tmp");
        std::fs::create_dir_all(&staged).unwrap();
        std::fs::write(staged.join("new.bin"), "new").unwrap();
        replace_dir(&staged, &target).unwrap();
        assert_eq!(
            std::fs::read_to_string(target.join("new.bin")).unwrap(),
            "new"
        );
        assert!(!target.join("old.bin").exists());
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(
            names.len(),
            1,
            "neither the staged nor the old folder is left"
        );
        // Into a place where nothing was yet.
        let fresh = dir.join("step-2");
        std::fs::create_dir_all(&staged).unwrap();
        replace_dir(&staged, &fresh).unwrap();
        assert!(fresh.is_dir() && !staged.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file_and_the_target_as_it_was() {
        let dir = temp_dir("atomic-fail");
        // The target is a non-empty folder: the rename fails after the data was written.
        let target = dir.join("out");
        std::fs::create_dir_all(target.join("inside")).unwrap();
        assert!(write_atomic(&target, b"data").is_err());
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["out".to_string()]);
        assert!(target.join("inside").is_dir());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
