// SPDX-License-Identifier: Apache-2.0
//! Atomic file replacement: every file Nestbox writes goes through
//! [`write_atomic`], so a crash or power cut at any point leaves either the
//! old file or the new one, never a torn mix.
//!
//! The recipe: write a temporary file in the same directory (so the rename
//! stays on one filesystem), fsync it, rename it over the target, then fsync
//! the directory so the rename itself is durable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of temporary files; directory scans skip names starting with it.
pub const TEMP_PREFIX: &str = ".nestbox-tmp-";

/// Distinguishes temporary files written by one process at the same time.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Replaces `path` with `bytes` atomically and durably.
///
/// On error the target is untouched and the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let temp = dir.join(format!(
        "{TEMP_PREFIX}{}-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_temp(&temp, bytes).and_then(|()| fs::rename(&temp, path));
    if let Err(err) = result {
        // Best effort: the temporary file may not even exist.
        let _ = fs::remove_file(&temp);
        return Err(err);
    }
    sync_dir(&dir)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes and fsyncs a new temporary file (never an existing one).
fn write_temp(temp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::testdir::TestDir;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn test_write_atomic_creates_a_new_file() {
        let dir = TestDir::new("atomic-new");
        let path = dir.path().join("a.toml");
        write_atomic(&path, b"hello").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
    }

    #[test]
    fn test_write_atomic_replaces_and_leaves_no_temp_file() {
        let dir = TestDir::new("atomic-replace");
        let path = dir.path().join("a.toml");
        fs::write(&path, b"old contents").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["a.toml"]);
    }

    #[test]
    fn test_write_atomic_failure_keeps_the_old_file() {
        let dir = TestDir::new("atomic-fail");
        // The target is a non-empty directory: rename over it fails after
        // the temporary file was written, as a crash before rename would.
        let path = dir.path().join("busy");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"keep").unwrap();
        assert!(write_atomic(&path, b"new").is_err());
        assert_eq!(fs::read(path.join("inside")).unwrap(), b"keep");
        assert_eq!(names(dir.path()), ["busy"]);
    }

    #[test]
    fn test_write_atomic_leftover_temp_from_a_crash_does_not_matter() {
        let dir = TestDir::new("atomic-crash");
        let path = dir.path().join("a.toml");
        fs::write(&path, b"old").unwrap();
        // A crash between writing the temporary file and the rename.
        let stale = dir.path().join(format!("{TEMP_PREFIX}a.toml-1-0"));
        fs::write(&stale, b"half-writ").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"old");
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn test_write_atomic_missing_directory_is_an_error() {
        let dir = TestDir::new("atomic-nodir");
        assert!(write_atomic(&dir.path().join("no/such/a.toml"), b"x").is_err());
    }
}
