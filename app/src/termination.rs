// SPDX-License-Identifier: Apache-2.0
//! SIGTERM, SIGINT and SIGHUP end the running VM as a stop does, so the
//! process closes its disks on the way out (a qcow2 image writes its
//! cached metadata then) instead of dying with the guest's writes half
//! recorded; or, for a VM whose settings ask for it, suspend it (the
//! computer is shutting down), falling back to a stop if its state cannot
//! be saved. Used by `nestbox run` and by VM workers.
//!
//! The handler only writes the signal's number to a pipe (write(2) is
//! async-signal-safe); a thread reads the pipe and stops the VM. It is
//! installed with SA_RESTART, so other threads' blocking calls carry on.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::raw::{c_int, c_void};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::screen::LiveVm;

/// The signals that end a VM in order.
const SIGNALS: [c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// The pipe's write end, for the handler (-1 until installed).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: c_int, _info: *mut libc::siginfo_t, _context: *mut c_void) {
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = u8::try_from(signal).unwrap_or(0);
        // SAFETY: write(2) is async-signal-safe; `byte` is a live local
        // of one byte and `fd` the pipe's write end, never closed.
        unsafe { libc::write(fd, (&raw const byte).cast(), 1) };
    }
}

fn name(signal: u8) -> &'static str {
    match c_int::from(signal) {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "a termination signal",
    }
}

/// What a termination signal does to the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnTermination {
    /// Stops it.
    Stop,
    /// Saves its state to this file and ends it (the next start resumes);
    /// stops it when the state cannot be saved.
    Suspend(PathBuf),
}

/// From now on, a termination signal stops (or suspends, as `then` says)
/// the VM `live` runs, and keeps a guest reset from starting another.
pub fn end_vm_on_termination(live: Arc<LiveVm>, then: OnTermination) -> io::Result<()> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: pipe2 writes two new fds into `fds`, which has room for two.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created by pipe2 and nothing else owns them.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The write end lives as long as the process: the handler may run
    // at any time.
    WAKE_FD.store(write_end.into_raw_fd(), Ordering::SeqCst);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut pipe = File::from(read_end);
            let mut signal = [0u8; 1];
            while pipe.read_exact(&mut signal).is_ok() {
                let signal = name(signal[0]);
                if let OnTermination::Suspend(path) = &then {
                    match live.suspend(path) {
                        Ok(said) => {
                            eprintln!("nestbox: {signal}: VM suspended ({said})");
                            continue;
                        }
                        Err(e) => eprintln!("nestbox: {signal}: {e}; stopping the VM instead"),
                    }
                }
                eprintln!("nestbox: {signal}: stopping the VM");
                live.stop_current();
            }
        })?;
    for signal in SIGNALS {
        // SAFETY: an all-zero sigaction is a valid value to fill in.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_signal as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // SAFETY: `action.sa_mask` is a valid sigset_t to fill.
        unsafe { libc::sigfillset(&mut action.sa_mask) };
        // SAFETY: `action` is fully initialised and its handler only does
        // async-signal-safe work; the old action is not wanted.
        if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
