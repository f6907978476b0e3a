// SPDX-License-Identifier: Apache-2.0
//! Disk image locks that QEMU understands: open file description (OFD)
//! byte-range locks on the byte offsets QEMU's file driver uses, so a
//! Nestbox VM refuses an image that QEMU (or another Nestbox VM, or
//! `qemu-img`) is writing, and QEMU refuses an image a Nestbox VM writes.
//!
//! The scheme, as QEMU's `file-posix` driver lays it out: each block-layer
//! permission has a bit number (consistent read 0, write 1, write
//! unchanged 2, resize 3). A user holding permission `i` takes a shared
//! lock on byte `100 + i`; a user that does not let others have permission
//! `i` takes a shared lock on byte `200 + i`. Before taking permission `i`
//! a user checks that nobody else locks `200 + i`, and before refusing it
//! to others that nobody else locks `100 + i`. Shared (read) locks never
//! conflict with each other, so the check is a test for a write lock
//! (`F_OFD_GETLK`), which any other holder of the byte blocks.
//!
//! What Nestbox takes, as QEMU does for a guest disk: a writable image
//! holds read, write and resize and shares only read and unchanged
//! writes; a read-only image (or a CD) holds read and does not share
//! write. So two writers, or a writer and a reader, exclude each other;
//! any number of readers share an image.
//!
//! OFD locks belong to the open file description, not the process: two
//! VMs in one process exclude each other too, and the locks go with the
//! last descriptor of the [`ImageLock`] (whatever way the process ends).

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The first byte of the "holds permission i" locks.
const PERM_BASE: i64 = 100;
/// The first byte of the "does not share permission i" locks.
const SHARED_BASE: i64 = 200;

/// QEMU's block-layer permission bits (include/block/block-common.h).
const PERM_CONSISTENT_READ: u32 = 1 << 0;
const PERM_WRITE: u32 = 1 << 1;
const PERM_WRITE_UNCHANGED: u32 = 1 << 2;
const PERM_RESIZE: u32 = 1 << 3;
/// How many permission bits there are.
const PERM_COUNT: u32 = 4;
const PERM_ALL: u32 = (1 << PERM_COUNT) - 1;

/// Why an image could not be locked.
#[derive(Debug)]
pub enum LockError {
    /// Another open file description holds a conflicting lock.
    InUse {
        /// The image.
        path: PathBuf,
        /// What the other user has that conflicts ("write", "read").
        permission: &'static str,
        /// Processes that have the image open, where they could be found
        /// (`name (pid N)`).
        holders: Vec<String>,
    },
    /// The lock file could not be opened or the lock calls failed.
    Io {
        /// The image.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::InUse {
                path,
                permission,
                holders,
            } => {
                let by = if holders.is_empty() {
                    "another program".to_string()
                } else {
                    holders.join(", ")
                };
                write!(
                    f,
                    "{} is in use by {by} ({permission} lock): an image that one program \
                     writes cannot be shared (QEMU locks images the same way). Stop the other \
                     VM first; read-only users can share an image",
                    path.display()
                )
            }
            LockError::Io { path, source } => {
                write!(f, "Cannot lock {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for LockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LockError::Io { source, .. } => Some(source),
            LockError::InUse { .. } => None,
        }
    }
}

/// The locks one user holds on one image, for as long as it lives.
#[derive(Debug)]
pub struct ImageLock {
    /// A descriptor of its own: the locks belong to its open file
    /// description and go when it closes.
    _file: File,
}

impl ImageLock {
    /// Locks the image at `path` for writing (`writable`) or reading, or
    /// fails naming who holds the conflicting lock.
    pub fn acquire(path: &Path, writable: bool) -> Result<Self, LockError> {
        let io_error = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Read-only suffices for shared locks, and works on read-only files.
        let file = File::open(path).map_err(io_error)?;
        let (perm, shared) = if writable {
            (
                PERM_CONSISTENT_READ | PERM_WRITE | PERM_RESIZE,
                PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED,
            )
        } else {
            (
                PERM_CONSISTENT_READ,
                PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED | PERM_RESIZE,
            )
        };
        // Take ours first, then look for conflicts (as QEMU does): two
        // users starting together then both see the other.
        for bit in 0..PERM_COUNT {
            if perm & (1 << bit) != 0 {
                set_read_lock(&file, PERM_BASE + i64::from(bit)).map_err(io_error)?;
            }
            if !shared & PERM_ALL & (1 << bit) != 0 {
                set_read_lock(&file, SHARED_BASE + i64::from(bit)).map_err(io_error)?;
            }
        }
        // A lock outlives its closed fd while a process forked in that
        // moment (any thread's spawn of a helper) has not yet exec'd: such
        // a conflict is gone within milliseconds, a real user's is not.
        let mut tries = 0;
        loop {
            let Some(mask) = conflict(&file, perm, shared).map_err(io_error)? else {
                return Ok(Self { _file: file });
            };
            tries += 1;
            if tries >= CONFLICT_TRIES {
                return Err(LockError::InUse {
                    path: path.to_path_buf(),
                    permission: permission_name(mask),
                    holders: holders(path),
                });
            }
            std::thread::sleep(CONFLICT_RETRY);
        }
    }
}

/// How often a conflict is looked at before it is reported, and the pause
/// between looks (see [`ImageLock::acquire`]).
const CONFLICT_TRIES: u32 = 5;
const CONFLICT_RETRY: std::time::Duration = std::time::Duration::from_millis(40);

/// The first permission on which another user's locks conflict with ours
/// (`perm` wanted, `shared` allowed to others), if any.
fn conflict(file: &File, perm: u32, shared: u32) -> io::Result<Option<u32>> {
    for bit in 0..PERM_COUNT {
        let mask = 1 << bit;
        // Wanting a permission another user does not share.
        let conflict = (perm & mask != 0 && locked_by_other(file, SHARED_BASE + i64::from(bit))?)
            // Not sharing a permission another user holds.
            || (shared & mask == 0 && locked_by_other(file, PERM_BASE + i64::from(bit))?);
        if conflict {
            return Ok(Some(mask));
        }
    }
    Ok(None)
}

fn permission_name(mask: u32) -> &'static str {
    match mask {
        PERM_CONSISTENT_READ => "consistent read",
        PERM_WRITE => "write",
        PERM_WRITE_UNCHANGED => "unchanged write",
        _ => "resize",
    }
}

fn flock_at(kind: libc::c_short, byte: i64) -> libc::flock {
    libc::flock {
        l_type: kind,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: byte,
        l_len: 1,
        // OFD locks require 0.
        l_pid: 0,
    }
}

/// Takes a shared OFD lock on one byte.
fn set_read_lock(file: &File, byte: i64) -> io::Result<()> {
    let mut lock = flock_at(libc::F_RDLCK as libc::c_short, byte);
    // SAFETY: F_OFD_SETLK reads the flock struct, which lives across the
    // call; the descriptor belongs to `file`.
    let ret = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether another open file description holds any lock on one byte.
fn locked_by_other(file: &File, byte: i64) -> io::Result<bool> {
    let mut lock = flock_at(libc::F_WRLCK as libc::c_short, byte);
    // SAFETY: F_OFD_GETLK reads and writes the flock struct, which lives
    // across the call; the descriptor belongs to `file`.
    let ret = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

/// The processes (other than this one) that have the file at `path` open,
/// as `name (pid N)`, as far as /proc lets this user see them. OFD locks
/// carry no owner, so this is the best guess at who holds one.
fn holders(path: &Path) -> Vec<String> {
    let Ok(target) = std::fs::metadata(path) else {
        return Vec::new();
    };
    let own = std::process::id();
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let has_it = fds.flatten().any(|fd| {
            std::fs::metadata(fd.path())
                .is_ok_and(|m| m.dev() == target.dev() && m.ino() == target.ino())
        });
        if has_it {
            let name = std::fs::read_to_string(entry.path().join("comm"))
                .map(|comm| comm.trim().to_string())
                .unwrap_or_else(|_| "?".to_string());
            found.push(format!("{name} (pid {pid})"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "nestbox-lock-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, [0u8; 4096]).unwrap();
        path
    }

    #[test]
    fn test_image_lock_a_second_writer_is_refused() {
        let path = image("writers");
        let _first = ImageLock::acquire(&path, true).unwrap();
        let second = ImageLock::acquire(&path, true);
        assert!(matches!(second, Err(LockError::InUse { .. })), "{second:?}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn test_image_lock_readers_share_and_exclude_a_writer() {
        let path = image("readers");
        let _first = ImageLock::acquire(&path, false).unwrap();
        let _second = ImageLock::acquire(&path, false).unwrap();
        let writer = ImageLock::acquire(&path, true);
        let message = writer.unwrap_err().to_string();
        assert!(message.contains("in use"), "{message}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn test_image_lock_a_reader_is_refused_while_a_writer_holds_it() {
        let path = image("reader-after-writer");
        let _writer = ImageLock::acquire(&path, true).unwrap();
        let reader = ImageLock::acquire(&path, false);
        assert!(
            matches!(
                reader,
                Err(LockError::InUse {
                    permission: "write",
                    ..
                })
            ),
            "{reader:?}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn test_image_lock_is_released_when_dropped() {
        let path = image("released");
        drop(ImageLock::acquire(&path, true).unwrap());
        let again = ImageLock::acquire(&path, true);
        assert!(again.is_ok(), "{again:?}");
        std::fs::remove_file(&path).unwrap();
    }
}
