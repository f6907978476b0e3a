// SPDX-License-Identifier: Apache-2.0
//! Where workers keep their sockets (`$XDG_RUNTIME_DIR/nestbox/<id>.sock`,
//! a directory only the user can enter) and their files in the VM's
//! directory (`worker.log`, `serial.log` and the last start's
//! `serial.log.1`, `thumbnail.png`).

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The worker's own log (its stdout and stderr), in the VM's directory.
pub const WORKER_LOG: &str = "worker.log";
/// The guest's serial output since the worker started (reboots append),
/// in the VM's directory.
pub const SERIAL_LOG: &str = "serial.log";
/// The previous start's serial output, kept by [`rotate_serial_log`].
pub const SERIAL_LOG_PREVIOUS: &str = "serial.log.1";
/// A small picture of the guest's screen, in the VM's directory.
pub const THUMBNAIL: &str = "thumbnail.png";
/// The guest's whole screen when its VM last stopped with an error (the
/// app shows it beside what happened); removed at the next start.
pub const LAST_SCREEN: &str = "last-screen.png";
/// What happened when the VM last stopped with an error (the message of
/// its failed state), kept after its worker is gone; removed at the next
/// start.
pub const LAST_FAILURE: &str = "last-failure.txt";
/// A suspended VM's machine state: the next start resumes from it, then
/// deletes it.
pub const SUSPENDED_STATE: &str = "suspended.state";
/// What a worker's socket file name ends with.
pub const SOCKET_SUFFIX: &str = ".sock";
/// The first line a worker writes to its log on every start.
pub const LOG_MARKER: &str = "--- nestbox vm-worker";

/// The directory of worker sockets: `nestbox/` in `$XDG_RUNTIME_DIR`, else
/// `nestbox-<uid>` in the temporary directory. Not created.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("nestbox"),
        None => {
            // SAFETY: getuid cannot fail and touches no memory.
            let uid = unsafe { libc::getuid() };
            std::env::temp_dir().join(format!("nestbox-{uid}"))
        }
    }
}

/// Creates [`runtime_dir`] with mode 0700 if needed and checks that it is
/// this user's and closed to others.
pub fn ensure_runtime_dir() -> io::Result<PathBuf> {
    let dir = runtime_dir();
    match DirBuilder::new().recursive(true).mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("Cannot create {}: {e}", dir.display()),
            ));
        }
    }
    let meta = fs::metadata(&dir)?;
    // SAFETY: getuid cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    if meta.uid() != uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to another user: set XDG_RUNTIME_DIR to a directory of yours",
                dir.display()
            ),
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(dir)
}

/// The socket of VM `id`'s worker.
pub fn socket_path(id: &str) -> PathBuf {
    runtime_dir().join(format!("{id}{SOCKET_SUFFIX}"))
}

/// The ids of every socket in [`runtime_dir`] (live or stale).
pub fn socket_ids() -> Vec<String> {
    let Ok(read) = fs::read_dir(runtime_dir()) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = read
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(SOCKET_SUFFIX).map(str::to_string)
        })
        .filter(|id| !id.is_empty())
        .collect();
    ids.sort();
    ids
}

/// The last `lines` lines the latest run of a worker wrote to the log in
/// `vm_dir`, joined with " | "; empty if there is no log.
pub fn log_tail(vm_dir: &Path, lines: usize) -> String {
    let Ok(text) = fs::read_to_string(vm_dir.join(WORKER_LOG)) else {
        return String::new();
    };
    let run = text.rsplit(LOG_MARKER).next().unwrap_or("");
    let kept: Vec<&str> = run
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    kept[kept.len().saturating_sub(lines)..].join(" | ")
}

/// At a worker's start: the last start's `serial.log` becomes
/// `serial.log.1` (replacing the one before), so the log holds this run
/// only and a search of it never finds an old boot's lines.
pub fn rotate_serial_log(dir: &Path) -> io::Result<()> {
    match fs::rename(dir.join(SERIAL_LOG), dir.join(SERIAL_LOG_PREVIOUS)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        result => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::testdir::TestDir;

    #[test]
    fn test_rotate_serial_log_keeps_the_last_start_only() {
        let dir = TestDir::new("serial-rotate");
        rotate_serial_log(dir.path()).unwrap();
        assert!(!dir.path().join(SERIAL_LOG_PREVIOUS).exists());
        for run in ["first boot", "second boot"] {
            rotate_serial_log(dir.path()).unwrap();
            fs::write(dir.path().join(SERIAL_LOG), run).unwrap();
        }
        rotate_serial_log(dir.path()).unwrap();
        assert!(!dir.path().join(SERIAL_LOG).exists());
        let previous = fs::read_to_string(dir.path().join(SERIAL_LOG_PREVIOUS)).unwrap();
        assert_eq!(previous, "second boot");
    }

    #[test]
    fn test_log_tail_reads_the_latest_run_only() {
        let dir = TestDir::new("worker-log-tail");
        assert_eq!(log_tail(dir.path(), 3), "");
        let log = format!(
            "{LOG_MARKER} 1 for a\nold failure\n{LOG_MARKER} 2 for a\nfirst\n\nsecond\nthird\n"
        );
        fs::write(dir.path().join(WORKER_LOG), log).unwrap();
        assert_eq!(log_tail(dir.path(), 2), "second | third");
        assert_eq!(log_tail(dir.path(), 9), "first | second | third");
    }
}
