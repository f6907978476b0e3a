// SPDX-License-Identifier: Apache-2.0
//! The terminal as the guest's console: keystrokes (or piped input) go to
//! COM1, or to the virtio console with `--console stdio` and a serial port
//! that is not on stdio. On a terminal, input is raw, so keys such as Ctrl-C
//! reach the guest; Ctrl-A then `x` stops the VM, as in QEMU.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::VmControl;
use engine::devices::virtio::console::ConsoleSender;
use engine::vm::SerialPort;

/// Ctrl-A: the escape key.
const ESCAPE: u8 = 0x01;

/// Where typed input goes.
#[derive(Clone)]
pub enum ConsoleInput {
    /// COM1.
    Serial(SerialPort),
    /// The virtio console.
    Virtio(ConsoleSender),
}

impl ConsoleInput {
    /// Queues `bytes`; returns how many were taken.
    fn input(&self, bytes: &[u8]) -> usize {
        match self {
            Self::Serial(port) => port.input(bytes),
            Self::Virtio(sender) => sender.send(bytes),
        }
    }
}

/// A running VM's input port and its control.
type Attached = (ConsoleInput, Arc<VmControl>);

/// The VM the console currently types into (a reboot replaces it).
#[derive(Clone, Default)]
pub struct ConsoleTarget {
    current: Arc<Mutex<Option<Attached>>>,
}

impl ConsoleTarget {
    /// Points the console at a newly started VM.
    pub fn attach(&self, port: ConsoleInput, control: Arc<VmControl>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((port, control));
    }

    fn get(&self) -> Option<Attached> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Feeds `bytes` to the guest, waiting while its FIFO is full.
    fn type_bytes(&self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            // Input typed before the VM exists waits for it.
            let Some((port, control)) = self.get() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            if control.is_stopping() {
                return;
            }
            let taken = port.input(bytes);
            bytes = bytes.get(taken..).unwrap_or(&[]);
            if taken == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    fn stop(&self) {
        if let Some((_, control)) = self.get() {
            control.request_stop(engine::Outcome::Stopped);
        }
    }
}

/// Puts the terminal in raw mode until dropped (only if stdin is one).
pub struct RawTerminal {
    saved: Option<libc::termios>,
}

impl RawTerminal {
    /// Switches stdin to raw mode if it is a terminal.
    pub fn enable() -> Self {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
            return Self { saved: None };
        }
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor and pointer to a termios.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Self { saved: None };
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // Keep output post-processing so the host's own lines stay intact.
        raw.c_oflag |= libc::OPOST;
        // SAFETY: valid descriptor and termios.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) };
        Self { saved: Some(saved) }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: restores the settings read in `enable`.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved) };
        }
    }
}

/// Reads stdin on a background thread and types it into the target.
pub fn spawn_input(target: ConsoleTarget) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("console-input".to_string())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buffer = [0u8; 256];
            let mut escaped = false;
            loop {
                let n = match stdin.read(&mut buffer) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut out = Vec::with_capacity(n);
                for &byte in buffer.get(..n).unwrap_or(&[]) {
                    match (escaped, byte) {
                        (true, b'x') => {
                            target.stop();
                            return;
                        }
                        (true, ESCAPE) => {
                            out.push(ESCAPE);
                            escaped = false;
                        }
                        (true, other) => {
                            out.push(other);
                            escaped = false;
                        }
                        (false, ESCAPE) => escaped = true,
                        (false, other) => out.push(other),
                    }
                }
                target.type_bytes(&out);
            }
        })
        .map(|_| ())
}
