// SPDX-License-Identifier: Apache-2.0
//! Whether a VM's worker is alive, whatever state it is in: the worker
//! holds an exclusive `flock` on `worker.lock` in the VM's directory for
//! as long as its process lives (the kernel drops it when the process
//! ends, however it ends), with its pid written inside. A worker that is
//! stopped (SIGSTOP) or hung cannot answer on its socket, but its lock
//! still says it lives: such a VM is "not responding", never "stopped",
//! so `delete` refuses it and `kill` can end it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The lock file's name in the VM's directory.
pub const WORKER_LOCK: &str = "worker.lock";

/// The lock a live worker holds; released when the process ends.
#[derive(Debug)]
pub struct WorkerLock {
    _file: File,
}

impl WorkerLock {
    /// Takes VM `dir`'s worker lock and writes this process's pid into
    /// it; fails if another live worker holds it.
    pub fn claim(dir: &Path) -> io::Result<Self> {
        let mut file = open(dir)?;
        if !try_flock(&file, libc::LOCK_EX)? {
            let pid = read_pid(&mut file);
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "another worker (process {}) runs this VM",
                    pid.map_or("?".to_string(), |p| p.to_string())
                ),
            ));
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_data()?;
        Ok(Self { _file: file })
    }
}

/// The pid of the live worker of the VM in `dir`, or None when no worker
/// holds its lock (whatever its socket says).
pub fn live_worker(dir: &Path) -> Option<u32> {
    let mut file = File::open(dir.join(WORKER_LOCK)).ok()?;
    match try_flock(&file, libc::LOCK_SH | libc::LOCK_NB) {
        // We got it: nobody holds it (ours goes when `file` closes).
        Ok(true) => None,
        Ok(false) => Some(read_pid(&mut file).unwrap_or(0)),
        Err(_) => None,
    }
}

/// SIGKILLs process `pid`, which holds the worker lock of VM `id` in
/// `dir` (checked to be that VM's worker by its command line first), and
/// waits up to `timeout` for the lock to go; removes its socket then.
pub fn kill_worker(dir: &Path, id: &str, pid: u32, timeout: Duration) -> Result<(), String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let is_worker = args.contains(&b"vm-worker".as_slice()) && args.contains(&id.as_bytes());
    if !is_worker {
        return Err(format!(
            "Process {pid}, which holds VM {id}'s lock, is not its worker: not killing it"
        ));
    }
    let target = libc::pid_t::try_from(pid).map_err(|_| format!("Bad process id {pid}"))?;
    // SAFETY: kill(2) with a pid checked above to be this VM's worker (it
    // holds the VM's lock, so it has not exited and been reused).
    if unsafe { libc::kill(target, libc::SIGKILL) } != 0 {
        let err = io::Error::last_os_error();
        return Err(format!(
            "Cannot kill VM {id}'s worker (process {pid}): {err}"
        ));
    }
    let deadline = Instant::now() + timeout;
    while live_worker(dir).is_some() {
        if Instant::now() > deadline {
            return Err(format!(
                "VM {id}'s worker (process {pid}) did not exit within {} s",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(super::paths::socket_path(id));
    Ok(())
}

fn open(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(WORKER_LOCK))
}

/// Takes `operation` without blocking: false when another holds a
/// conflicting lock.
fn try_flock(file: &File, operation: libc::c_int) -> io::Result<bool> {
    // SAFETY: flock takes the descriptor of `file`, alive for the call.
    let ret = unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) };
    if ret == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(err)
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_worker_lock_is_seen_while_held_and_gone_after() {
        let dir = std::env::temp_dir().join(format!("nestbox-liveness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(live_worker(&dir), None, "no lock file");

        let lock = WorkerLock::claim(&dir).unwrap();
        let seen = live_worker(&dir);
        let second = WorkerLock::claim(&dir);
        drop(lock);
        let after = live_worker(&dir);
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(seen, Some(std::process::id()));
        assert!(second.is_err(), "a second worker took the lock");
        assert_eq!(after, None);
    }
}
