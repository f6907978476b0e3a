// SPDX-License-Identifier: Apache-2.0
//! The PCI root bus, reached through configuration mechanism #1: the
//! address register at 0xCF8 and the data window at 0xCFC-0xCFF. The byte
//! at 0xCF9 is the PIIX reset control register.
//!
//! Devices keep their 256-byte configuration space in a [`ConfigSpace`],
//! which applies a per-byte writable mask so the guest can only change
//! what real hardware lets it change.

pub mod host_bridge;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::bus::BusDevice;
use crate::control::{Outcome, VmControl};

/// First port of the configuration mechanism.
pub const CONFIG_PORT: u64 = 0xcf8;
/// Ports decoded: address (4) and data (4).
pub const CONFIG_PORTS: u64 = 8;

/// Standard configuration-space offsets.
#[allow(missing_docs)]
pub mod reg {
    pub const VENDOR_ID: usize = 0x00;
    pub const DEVICE_ID: usize = 0x02;
    pub const COMMAND: usize = 0x04;
    pub const STATUS: usize = 0x06;
    pub const REVISION: usize = 0x08;
    pub const PROG_IF: usize = 0x09;
    pub const SUBCLASS: usize = 0x0a;
    pub const CLASS: usize = 0x0b;
    pub const HEADER_TYPE: usize = 0x0e;
    pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
    pub const SUBSYSTEM_ID: usize = 0x2e;
    pub const INTERRUPT_LINE: usize = 0x3c;
    pub const INTERRUPT_PIN: usize = 0x3d;
}

/// A device's configuration space with its writable-bits mask.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; 256],
    writable: [u8; 256],
}

impl ConfigSpace {
    /// A type-0 header for `vendor:device` of class `class:subclass`.
    pub fn new(vendor: u16, device: u16, class: u8, subclass: u8, revision: u8) -> Self {
        let mut space = Self {
            bytes: [0; 256],
            writable: [0; 256],
        };
        space.set_u16(reg::VENDOR_ID, vendor);
        space.set_u16(reg::DEVICE_ID, device);
        space.set_u8(reg::REVISION, revision);
        space.set_u8(reg::SUBCLASS, subclass);
        space.set_u8(reg::CLASS, class);
        // Command: I/O, memory, bus master, interrupt disable are writable.
        space.set_writable(reg::COMMAND, &[0x07, 0x04]);
        space.set_writable(reg::INTERRUPT_LINE, &[0xff]);
        space
    }

    /// Sets one byte (host side, ignores the mask).
    pub fn set_u8(&mut self, offset: usize, value: u8) {
        if let Some(b) = self.bytes.get_mut(offset) {
            *b = value;
        }
    }

    /// Sets a little-endian u16 (host side).
    pub fn set_u16(&mut self, offset: usize, value: u16) {
        for (i, b) in value.to_le_bytes().into_iter().enumerate() {
            self.set_u8(offset + i, b);
        }
    }

    /// Marks bits the guest may change, starting at `offset`.
    pub fn set_writable(&mut self, offset: usize, mask: &[u8]) {
        for (i, &m) in mask.iter().enumerate() {
            if let Some(w) = self.writable.get_mut(offset + i) {
                *w = m;
            }
        }
    }

    /// Reads one byte.
    pub fn u8_at(&self, offset: usize) -> u8 {
        self.bytes.get(offset).copied().unwrap_or(0xff)
    }

    /// Reads the dword holding `offset`.
    pub fn read_dword(&self, dword_offset: usize) -> u32 {
        let base = dword_offset & !3;
        u32::from_le_bytes([
            self.u8_at(base),
            self.u8_at(base + 1),
            self.u8_at(base + 2),
            self.u8_at(base + 3),
        ])
    }

    /// Guest write of `data` at `offset`, through the writable mask.
    pub fn guest_write(&mut self, offset: usize, data: &[u8]) {
        for (i, &value) in data.iter().enumerate() {
            let at = offset + i;
            if let (Some(b), Some(&mask)) = (self.bytes.get_mut(at), self.writable.get(at)) {
                *b = (*b & !mask) | (value & mask);
            }
        }
    }
}

/// A function on the PCI bus.
pub trait PciDevice: Send {
    /// Reads the configuration dword at `offset & !3`.
    fn config_read(&mut self, offset: usize) -> u32;
    /// Writes `data` (1, 2 or 4 bytes) at `offset`.
    fn config_write(&mut self, offset: usize, data: &[u8]);
}

/// Bus 0 with its functions, addressed by device (0..32) and function (0..8).
pub struct PciRoot {
    control: Arc<VmControl>,
    address: u32,
    reset_control: u8,
    functions: BTreeMap<(u8, u8), Arc<Mutex<dyn PciDevice>>>,
}

/// Errors adding a function.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    /// The slot is taken or out of range.
    #[error("PCI slot {device:02x}.{function} is taken or invalid")]
    SlotTaken {
        /// Device number.
        device: u8,
        /// Function number.
        function: u8,
    },
}

impl PciRoot {
    /// An empty bus whose reset register stops `control`'s VM.
    pub fn new(control: Arc<VmControl>) -> Self {
        Self {
            control,
            address: 0,
            reset_control: 0,
            functions: BTreeMap::new(),
        }
    }

    /// Places a function at `device.function`.
    pub fn add(
        &mut self,
        device: u8,
        function: u8,
        dev: Arc<Mutex<dyn PciDevice>>,
    ) -> Result<(), PciError> {
        if device >= 32 || function >= 8 || self.functions.contains_key(&(device, function)) {
            return Err(PciError::SlotTaken { device, function });
        }
        self.functions.insert((device, function), dev);
        Ok(())
    }

    /// The function the address register points at, and the register offset.
    fn target(&self) -> Option<(Arc<Mutex<dyn PciDevice>>, usize)> {
        if self.address & 0x8000_0000 == 0 {
            return None;
        }
        let bus = (self.address >> 16) & 0xff;
        let device = ((self.address >> 11) & 0x1f) as u8;
        let function = ((self.address >> 8) & 0x7) as u8;
        let offset = (self.address & 0xfc) as usize;
        if bus != 0 {
            return None;
        }
        let dev = self.functions.get(&(device, function))?.clone();
        Some((dev, offset))
    }
}

impl BusDevice for PciRoot {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (0, 4) => crate::bus::fill_le(data, u64::from(self.address)),
            (1, 1) => crate::bus::fill_le(data, u64::from(self.reset_control)),
            (4..=7, _) => {
                let value = match self.target() {
                    Some((dev, reg)) => dev
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .config_read(reg),
                    None => 0xffff_ffff,
                };
                let shifted = u64::from(value) >> (8 * (offset - 4));
                crate::bus::fill_le(data, shifted);
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (0, 4) => self.address = crate::bus::le_value(data) as u32,
            (1, 1) => {
                let value = data.first().copied().unwrap_or(0);
                // Bit 2 starts the reset that bit 1 selects (hard or soft).
                if value & 0x04 != 0 {
                    self.control.request_stop(Outcome::Reset);
                }
                self.reset_control = value & 0x02;
            }
            (4..=7, _) => {
                if let Some((dev, reg)) = self.target() {
                    let at = reg + (offset as usize - 4);
                    dev.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .config_write(at, data);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(ConfigSpace);

    impl PciDevice for Fixed {
        fn config_read(&mut self, offset: usize) -> u32 {
            self.0.read_dword(offset)
        }
        fn config_write(&mut self, offset: usize, data: &[u8]) {
            self.0.guest_write(offset, data);
        }
    }

    fn root_with_device() -> PciRoot {
        let mut root = PciRoot::new(Arc::new(VmControl::new()));
        let dev = Fixed(ConfigSpace::new(0x1234, 0x5678, 0x06, 0x00, 1));
        root.add(3, 0, Arc::new(Mutex::new(dev))).unwrap();
        root
    }

    fn read_config(root: &mut PciRoot, device: u32, offset: u32) -> u32 {
        root.write(0, &(0x8000_0000 | (device << 11) | offset).to_le_bytes());
        let mut data = [0u8; 4];
        root.read(4, &mut data);
        u32::from_le_bytes(data)
    }

    #[test]
    fn test_pci_root_reads_present_device_ids() {
        let mut root = root_with_device();
        assert_eq!(read_config(&mut root, 3, 0), 0x5678_1234);
    }

    #[test]
    fn test_pci_root_empty_slot_reads_all_ones() {
        let mut root = root_with_device();
        assert_eq!(read_config(&mut root, 4, 0), 0xffff_ffff);
    }

    #[test]
    fn test_pci_config_write_respects_mask() {
        let mut root = root_with_device();
        root.write(0, &(0x8000_0000u32 | (3 << 11)).to_le_bytes());
        root.write(4, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(read_config(&mut root, 3, 0), 0x5678_1234);
    }

    #[test]
    fn test_pci_reset_control_requests_reset() {
        let control = Arc::new(VmControl::new());
        let mut root = PciRoot::new(control.clone());
        root.write(1, &[0x06]);
        assert_eq!(control.outcome(), Some(Outcome::Reset));
    }

    #[test]
    fn test_pci_add_taken_slot_is_refused() {
        let mut root = root_with_device();
        let dev = Fixed(ConfigSpace::new(1, 2, 3, 4, 5));
        assert!(root.add(3, 0, Arc::new(Mutex::new(dev))).is_err());
    }
}
