// SPDX-License-Identifier: Apache-2.0
//! Debug ports a guest uses to talk to its host without drivers:
//! the debug-exit port (QEMU's `isa-debug-exit` at 0x501: a write ends the
//! VM with that code), the debug console (0x402: firmware log output), and
//! the POST code port (0x80), whose last value is kept for diagnostics.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::bus::{BusDevice, DeviceState};
use crate::control::{Outcome, VmControl};
use crate::snapshot::{self, Persist, StateError};

/// Port of the debug-exit device.
pub const DEBUG_EXIT_PORT: u64 = 0x501;
/// Port of the debug console.
pub const DEBUG_CON_PORT: u64 = 0x402;
/// Port of the POST code register.
pub const POST_CODE_PORT: u64 = 0x80;

/// Ends the VM with the value written, as QEMU's isa-debug-exit does.
pub struct DebugExit {
    control: Arc<VmControl>,
}

impl DebugExit {
    /// A debug-exit port that stops `control`'s VM.
    pub fn new(control: Arc<VmControl>) -> Self {
        Self { control }
    }
}

impl BusDevice for DebugExit {
    fn state(&mut self) -> DeviceState<'_> {
        DeviceState::Stateless
    }

    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let code = data.first().copied().unwrap_or(0);
        self.control.request_stop(Outcome::DebugExit(code));
    }
}

/// Copies each byte written to a writer (QEMU's `debugcon`).
pub struct DebugCon {
    out: Box<dyn Write + Send>,
}

impl DebugCon {
    /// A debug console writing to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out }
    }
}

impl BusDevice for DebugCon {
    fn state(&mut self) -> DeviceState<'_> {
        DeviceState::Stateless
    }

    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Reading back 0xe9 tells firmware that a debug console is present.
        data.fill(0xe9);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Err(e) = self.out.write_all(data).and_then(|_| self.out.flush()) {
            log::warn!("debug console write failed: {e}");
        }
    }
}

/// Keeps the last POST code the guest wrote.
#[derive(Default)]
pub struct PostCode {
    last: Arc<AtomicU8>,
}

impl PostCode {
    /// A POST code port sharing its last value through `last`.
    pub fn new(last: Arc<AtomicU8>) -> Self {
        Self { last }
    }
}

impl Persist for PostCode {
    fn save(&mut self) -> Result<Vec<u8>, StateError> {
        snapshot::encode("POST code port", &self.last.load(Ordering::Relaxed))
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let code: u8 = snapshot::decode("POST code port", bytes)?;
        self.last.store(code, Ordering::Relaxed);
        Ok(())
    }
}

impl BusDevice for PostCode {
    fn state(&mut self) -> DeviceState<'_> {
        DeviceState::Saved(self)
    }

    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(self.last.load(Ordering::Relaxed));
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(&code) = data.first() {
            self.last.store(code, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_debug_exit_write_stops_with_code() {
        let control = Arc::new(VmControl::new());
        DebugExit::new(control.clone()).write(0, &[0x31]);
        assert_eq!(control.outcome(), Some(Outcome::DebugExit(0x31)));
    }

    #[test]
    fn test_post_code_keeps_last_value() {
        let last = Arc::new(AtomicU8::new(0));
        let mut port = PostCode::new(last.clone());
        port.write(0, &[0x12]);
        port.write(0, &[0x34]);
        assert_eq!(last.load(Ordering::Relaxed), 0x34);
    }
}
