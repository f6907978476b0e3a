// SPDX-License-Identifier: Apache-2.0
//! Temporary directories for the library's unit tests, removed on drop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty directory under the system temp dir.
pub struct TestDir(PathBuf);

impl TestDir {
    /// Creates `nestbox-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "nestbox-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
