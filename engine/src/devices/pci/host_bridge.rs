// SPDX-License-Identifier: Apache-2.0
//! The i440FX-compatible chipset functions firmware looks for on bus 0:
//! the host bridge (00.0, 8086:1237) with its PAM registers, and the PIIX3
//! PCI-to-ISA bridge (01.0, 8086:7000) with the PIRQ routing registers.
//!
//! PAM (0x59-0x5F) is kept as plain registers: the BIOS area under 1 MiB
//! is always RAM holding a copy of the firmware, so the firmware's
//! "make the shadow writable, copy, make it read-only" sequence leaves the
//! same bytes in place. Honouring read-only PAM settings is a later step.

use super::{ConfigSpace, PciDevice, reg};
use crate::bus::DeviceState;
use crate::snapshot::{self, Persist, StateError};

/// Saves and restores a function whose whole state is its configuration
/// space.
fn save_config(name: &str, config: &ConfigSpace) -> Result<Vec<u8>, StateError> {
    snapshot::encode(name, &config.saved_bytes())
}

fn restore_config(name: &str, config: &mut ConfigSpace, bytes: &[u8]) -> Result<(), StateError> {
    let saved: Vec<u8> = snapshot::decode(name, bytes)?;
    config
        .restore_bytes(&saved)
        .map_err(|what| snapshot::invalid(name, what))
}

impl Persist for HostBridge {
    fn save(&mut self) -> Result<Vec<u8>, StateError> {
        save_config("host bridge", &self.config)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        restore_config("host bridge", &mut self.config, bytes)
    }
}

impl Persist for IsaBridge {
    fn save(&mut self) -> Result<Vec<u8>, StateError> {
        save_config("ISA bridge", &self.config)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        restore_config("ISA bridge", &mut self.config, bytes)
    }
}

/// Intel's PCI vendor ID.
pub const VENDOR_INTEL: u16 = 0x8086;
/// The 82441FX host bridge.
pub const DEVICE_I440FX: u16 = 0x1237;
/// The 82371SB PIIX3 ISA bridge.
pub const DEVICE_PIIX3_ISA: u16 = 0x7000;

/// The first PAM register.
pub const PAM0: usize = 0x59;
const PAM_COUNT: usize = 7;
const SMRAM: usize = 0x72;
/// The first PIRQ route register (PIRQA..PIRQD at 0x60..0x63).
pub const PIRQ_ROUTE: usize = 0x60;
/// A PIRQ route value with its "disabled" bit set.
const PIRQ_DISABLED: u8 = 0x80;

/// The host bridge at 00.0.
pub struct HostBridge {
    config: ConfigSpace,
}

impl Default for HostBridge {
    fn default() -> Self {
        let mut config = ConfigSpace::new(VENDOR_INTEL, DEVICE_I440FX, 0x06, 0x00, 0x02);
        config.set_writable(PAM0, &[0xff; PAM_COUNT]);
        config.set_writable(SMRAM, &[0xff]);
        config.set_u8(SMRAM, 0x02);
        Self { config }
    }
}

impl HostBridge {
    /// The PAM register values, 0x59..0x5F.
    pub fn pam(&self) -> [u8; PAM_COUNT] {
        std::array::from_fn(|i| self.config.u8_at(PAM0 + i))
    }
}

impl PciDevice for HostBridge {
    fn state(&mut self) -> DeviceState<'_> {
        DeviceState::Saved(self)
    }

    fn config_read(&mut self, offset: usize) -> u32 {
        self.config.read_dword(offset)
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.guest_write(offset, data);
    }
}

/// The ISA bridge at 01.0.
pub struct IsaBridge {
    config: ConfigSpace,
}

impl Default for IsaBridge {
    fn default() -> Self {
        let mut config = ConfigSpace::new(VENDOR_INTEL, DEVICE_PIIX3_ISA, 0x06, 0x01, 0x00);
        // A multi-function device: the PIIX has IDE, USB and ACPI functions.
        config.set_u8(reg::HEADER_TYPE, 0x80);
        for i in 0..4 {
            config.set_u8(PIRQ_ROUTE + i, PIRQ_DISABLED);
        }
        config.set_writable(PIRQ_ROUTE, &[0x8f; 4]);
        Self { config }
    }
}

impl IsaBridge {
    /// The ISA IRQ PIRQ line `pin` (0 = A) is routed to, if enabled.
    pub fn pirq_route(&self, pin: usize) -> Option<u8> {
        let value = self.config.u8_at(PIRQ_ROUTE + pin.min(3));
        (value & PIRQ_DISABLED == 0).then_some(value & 0x0f)
    }
}

impl PciDevice for IsaBridge {
    fn state(&mut self) -> DeviceState<'_> {
        DeviceState::Saved(self)
    }

    fn config_read(&mut self, offset: usize) -> u32 {
        self.config.read_dword(offset)
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.guest_write(offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_host_bridge_identifies_as_i440fx() {
        let mut bridge = HostBridge::default();
        assert_eq!(bridge.config_read(0), 0x1237_8086);
    }

    #[test]
    fn test_host_bridge_pam_is_writable() {
        let mut bridge = HostBridge::default();
        bridge.config_write(0x58, &[0x00, 0x30, 0x33, 0x33]);
        assert_eq!(&bridge.pam()[..3], &[0x30, 0x33, 0x33]);
    }

    #[test]
    fn test_isa_bridge_pirq_route_follows_writes() {
        let mut bridge = IsaBridge::default();
        bridge.config_write(PIRQ_ROUTE, &[0x0a, 0x0b, 0x80, 0x0b]);
        assert_eq!(
            [0, 1, 2, 3].map(|p| bridge.pirq_route(p)),
            [Some(10), Some(11), None, Some(11)]
        );
    }

    #[test]
    fn test_isa_bridge_is_multifunction() {
        let mut bridge = IsaBridge::default();
        assert_eq!((bridge.config_read(0x0c) >> 16) & 0xff, 0x80);
    }
}
