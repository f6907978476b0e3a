// SPDX-License-Identifier: Apache-2.0
//! The PIIX3 IDE controller (PCI 01.1, 8086:7010) in legacy mode: the
//! primary channel at ports 0x1F0-0x1F7 and 0x3F6 on IRQ 14, the secondary
//! at 0x170-0x177 and 0x376 on IRQ 15, two drives each, PIO only (the
//! function has no bus-master BAR, so drivers fall back to PIO).
//!
//! It is what retro guests can use without drivers of their own: the BIOS
//! boots from its disks and from its CD-ROM (El Torito through ATAPI),
//! DOS reaches the disks through the BIOS and the CD-ROM through an ATAPI
//! driver, and old Windows and Linux drive it with their built-in IDE
//! drivers.

pub mod atapi;
pub mod channel;
pub mod identify;

use std::sync::{Arc, Mutex};

use crate::bus::BusDevice;
use crate::devices::pci::host_bridge::VENDOR_INTEL;
use crate::devices::pci::{ConfigSpace, PciDevice};

pub use self::channel::{COMMAND_PORTS, Channel, DriveConfig, Medium};

/// The PIIX3 IDE function's device ID.
pub const DEVICE_PIIX3_IDE: u16 = 0x7010;
/// Where firmware and drivers look for it: device 1 (the ISA bridge),
/// function 1.
pub const PCI_FUNCTION: u8 = 1;
/// Drives the controller takes: two channels of two.
pub const MAX_DRIVES: usize = 4;

/// A channel's legacy resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelPorts {
    /// The command block (8 ports).
    pub command: u64,
    /// The device control / alternate status port.
    pub control: u64,
    /// Its ISA IRQ.
    pub irq: u32,
}

/// The primary channel's ports and IRQ.
pub const PRIMARY: ChannelPorts = ChannelPorts {
    command: 0x1f0,
    control: 0x3f6,
    irq: 14,
};
/// The secondary channel's ports and IRQ.
pub const SECONDARY: ChannelPorts = ChannelPorts {
    command: 0x170,
    control: 0x376,
    irq: 15,
};

/// IDE timing registers (primary at 0x40, secondary at 0x42); bit 15 is
/// "decode enable", which Linux's PIIX driver checks.
const IDETIM: usize = 0x40;

/// The IDE function's PCI configuration space (the channels themselves
/// sit at their fixed legacy ports).
pub struct IdeFunction {
    config: ConfigSpace,
}

impl Default for IdeFunction {
    fn default() -> Self {
        let mut config = ConfigSpace::new(VENDOR_INTEL, DEVICE_PIIX3_IDE, 0x01, 0x01, 0x00);
        // Programming interface 0: both channels in compatibility mode,
        // not switchable, no bus master.
        config.set_u8(crate::devices::pci::reg::PROG_IF, 0x00);
        config.set_u16(IDETIM, 0x8000);
        config.set_u16(IDETIM + 2, 0x8000);
        config.set_writable(IDETIM, &[0xff; 4]);
        Self { config }
    }
}

impl crate::snapshot::Persist for IdeFunction {
    fn save(&mut self) -> Result<Vec<u8>, crate::snapshot::StateError> {
        crate::snapshot::encode("IDE function", &self.config.saved_bytes())
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), crate::snapshot::StateError> {
        let saved: Vec<u8> = crate::snapshot::decode("IDE function", bytes)?;
        let mut config = self.config.clone();
        config
            .restore_bytes(&saved)
            .map_err(|what| crate::snapshot::invalid("IDE function", what))?;
        self.config = config;
        Ok(())
    }
}

impl PciDevice for IdeFunction {
    fn state(&mut self) -> crate::bus::DeviceState<'_> {
        crate::bus::DeviceState::Saved(self)
    }

    fn config_read(&mut self, offset: usize) -> u32 {
        self.config.read_dword(offset)
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.guest_write(offset, data);
    }
}

/// A channel's device control / alternate status port.
pub struct ControlPort {
    channel: Arc<Mutex<Channel>>,
}

impl ControlPort {
    /// The control port of `channel`.
    pub fn new(channel: Arc<Mutex<Channel>>) -> Self {
        Self { channel }
    }
}

impl BusDevice for ControlPort {
    fn state(&mut self) -> crate::bus::DeviceState<'_> {
        // The channel behind it holds the state.
        crate::bus::DeviceState::Stateless
    }

    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        let status = self
            .channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .alternate_status();
        data.fill(status);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(&value) = data.first() {
            self.channel
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write_control(value);
        }
    }
}

#[cfg(test)]
mod tests;
