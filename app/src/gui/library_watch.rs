// SPDX-License-Identifier: Apache-2.0
//! Waking the app when the library changes behind its back: a thread that
//! looks once a second at what the library shows from files (the VM
//! folders, their `vm.toml` and `thumbnail.png`, the workers' sockets) and
//! asks for a repaint only when that changed. With it, an idle app draws
//! no frames instead of one every few seconds.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::thumbnail::THUMBNAIL_FILE;
use crate::library::config::VM_FILE;
use crate::worker::paths::socket_ids;

/// How often the files are looked at.
const INTERVAL: Duration = Duration::from_secs(1);

/// One file's identity as far as changes go.
type Stamp = Option<(SystemTime, u64)>;

/// What the library looks like on disk.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    /// Each VM folder's name with its config's and thumbnail's stamps.
    folders: Vec<(String, Stamp, Stamp)>,
    /// Ids of the VMs with a worker socket.
    sockets: Vec<String>,
}

fn stamp(path: &Path) -> Stamp {
    let meta = fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn fingerprint(root: &Path) -> Fingerprint {
    let mut folders: Vec<(String, Stamp, Stamp)> = fs::read_dir(root)
        .map(|read| {
            read.filter_map(|e| e.ok())
                .map(|e| {
                    let dir = e.path();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        stamp(&dir.join(VM_FILE)),
                        stamp(&dir.join(THUMBNAIL_FILE)),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    folders.sort();
    Fingerprint {
        folders,
        sockets: socket_ids(),
    }
}

/// Watches one VM folder until dropped.
pub struct LibraryWatch {
    stop: Arc<AtomicBool>,
    changes: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl LibraryWatch {
    /// Starts watching the VM folder `root`; `wake` runs on the watcher's
    /// thread after each change.
    pub fn spawn(root: PathBuf, wake: impl Fn() + Send + 'static) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, changes) = (stop.clone(), changes.clone());
            std::thread::Builder::new()
                .name("library-watch".into())
                .spawn(move || {
                    let mut seen = fingerprint(&root);
                    while !stop.load(Ordering::SeqCst) {
                        std::thread::park_timeout(INTERVAL);
                        let now = fingerprint(&root);
                        if now != seen {
                            seen = now;
                            changes.fetch_add(1, Ordering::SeqCst);
                            wake();
                        }
                    }
                })?
        };
        Ok(Self {
            stop,
            changes,
            thread: Some(thread),
        })
    }

    /// How many changes were seen so far.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }
}

impl Drop for LibraryWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::library::testdir::TestDir;

    #[test]
    fn test_wakes_when_a_config_or_thumbnail_changes_and_not_otherwise() {
        let dir = TestDir::new("library-watch");
        let vm = dir.path().join("a1b2");
        fs::create_dir(&vm).unwrap();
        fs::write(vm.join(VM_FILE), "x").unwrap();
        let (tx, rx) = mpsc::channel();
        let watch = LibraryWatch::spawn(dir.path().to_path_buf(), move || {
            let _ = tx.send(());
        })
        .unwrap();
        assert!(rx.recv_timeout(INTERVAL * 3).is_err(), "woke while idle");
        assert_eq!(watch.changes(), 0);
        fs::write(vm.join(VM_FILE), "longer").unwrap();
        rx.recv_timeout(INTERVAL * 3).expect("no wake for vm.toml");
        fs::write(vm.join(THUMBNAIL_FILE), "png").unwrap();
        rx.recv_timeout(INTERVAL * 3)
            .expect("no wake for a thumbnail");
        fs::create_dir(dir.path().join("c3d4")).unwrap();
        rx.recv_timeout(INTERVAL * 3).expect("no wake for a new VM");
        assert_eq!(watch.changes(), 3);
    }
}
