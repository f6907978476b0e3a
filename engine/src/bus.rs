// SPDX-License-Identifier: Apache-2.0
//! Port-I/O and MMIO dispatch: a sorted table of non-overlapping ranges,
//! each owned by one device. A vCPU exit looks up the range holding the
//! address and hands the device the offset into its range.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::snapshot::Persist;

/// A device that answers reads and writes on a bus.
pub trait BusDevice: Send {
    /// Reads `data.len()` bytes at `offset` into the device's range.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset` into the device's range.
    fn write(&mut self, offset: u64, data: &[u8]);
    /// What a saved machine state holds of this device. A device that
    /// does not say cannot be saved, and neither can a VM that has it.
    fn state(&mut self) -> DeviceState<'_> {
        DeviceState::Unsupported(short_type_name(std::any::type_name::<Self>()))
    }
}

/// What a saved machine state holds of one bus device.
pub enum DeviceState<'a> {
    /// Its state, saved and restored through [`Persist`].
    Saved(&'a mut dyn Persist),
    /// Nothing: it keeps no state of its own (a debug port), or it is a
    /// window onto a device saved elsewhere (a PCI BAR).
    Stateless,
    /// It cannot be saved yet; the device's kind, for the error.
    Unsupported(&'static str),
}

/// `a::b::Name<T>` as `Name`.
pub(crate) fn short_type_name(full: &'static str) -> &'static str {
    let plain = full.split('<').next().unwrap_or(full);
    plain.rsplit("::").next().unwrap_or(plain)
}

/// A device shared between the bus and whoever else drives it.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors inserting a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty or wraps around.
    #[error("Bus range at {base:#x} of length {len:#x} is invalid")]
    InvalidRange {
        /// Start of the range.
        base: u64,
        /// Its length.
        len: u64,
    },
    /// The range overlaps one already taken.
    #[error("Bus range at {base:#x} of length {len:#x} overlaps another device")]
    Overlap {
        /// Start of the range.
        base: u64,
        /// Its length.
        len: u64,
    },
}

#[derive(Clone)]
struct Entry {
    len: u64,
    device: SharedDevice,
}

/// One address space (port I/O or MMIO).
#[derive(Default)]
pub struct Bus {
    ranges: RwLock<BTreeMap<u64, Entry>>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives `device` the range `[base, base + len)`.
    pub fn insert(&self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        let before_overlaps = ranges
            .range(..end)
            .next_back()
            .is_some_and(|(&b, e)| b + e.len > base);
        if before_overlaps {
            return Err(BusError::Overlap { base, len });
        }
        ranges.insert(base, Entry { len, device });
        Ok(())
    }

    /// Takes the device at exactly `base` off the bus; true if one was there.
    pub fn remove(&self, base: u64) -> bool {
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        ranges.remove(&base).is_some()
    }

    /// Every device on the bus with the start and length of its range,
    /// in address order.
    pub fn devices(&self) -> Vec<(u64, u64, SharedDevice)> {
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        ranges
            .iter()
            .map(|(&base, entry)| (base, entry.len, entry.device.clone()))
            .collect()
    }

    fn find(&self, addr: u64) -> Option<(u64, SharedDevice)> {
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        let (&base, entry) = ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset < entry.len).then(|| (offset, entry.device.clone()))
    }

    /// Dispatches a read; returns false when no device owns `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, device)) => {
                device
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; returns false when no device owns `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, device)) => {
                device
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Packs up to 8 little-endian bytes into a u64 (for register-style devices).
pub fn le_value(data: &[u8]) -> u64 {
    data.iter()
        .take(8)
        .enumerate()
        .fold(0u64, |acc, (i, &b)| acc | (u64::from(b) << (8 * i)))
}

/// Fills `data` with the little-endian bytes of `value`.
pub fn fill_le(data: &mut [u8], value: u64) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = value.checked_shr(8 * i as u32).unwrap_or(0) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder {
        last: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last.push((offset, data.to_vec()));
        }
    }

    fn recorder() -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder { last: vec![] }))
    }

    #[test]
    fn test_bus_write_reaches_device_with_offset() {
        let bus = Bus::new();
        let dev = recorder();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        assert!(bus.write(0x3fb, &[7]));
        assert_eq!(dev.lock().unwrap().last, vec![(3, vec![7])]);
    }

    #[test]
    fn test_bus_read_outside_any_range_is_unhandled() {
        let bus = Bus::new();
        bus.insert(recorder(), 0x3f8, 8).unwrap();
        let mut data = [0u8; 1];
        assert!(!bus.read(0x400, &mut data));
        assert!(!bus.read(0x3f7, &mut data));
    }

    #[test]
    fn test_bus_overlapping_insert_is_refused() {
        let bus = Bus::new();
        bus.insert(recorder(), 0x100, 0x10).unwrap();
        assert_eq!(
            bus.insert(recorder(), 0x10f, 1),
            Err(BusError::Overlap {
                base: 0x10f,
                len: 1
            })
        );
        assert_eq!(
            bus.insert(recorder(), 0xf8, 0x10),
            Err(BusError::Overlap {
                base: 0xf8,
                len: 0x10
            })
        );
    }

    #[test]
    fn test_bus_removed_range_is_unhandled() {
        let bus = Bus::new();
        bus.insert(recorder(), 0x100, 0x10).unwrap();
        assert!(bus.remove(0x100));
        assert!(!bus.write(0x100, &[1]));
    }

    #[test]
    fn test_bus_wrapping_range_is_refused() {
        let bus = Bus::new();
        assert!(matches!(
            bus.insert(recorder(), u64::MAX, 2),
            Err(BusError::InvalidRange { .. })
        ));
    }

    #[test]
    fn test_le_value_round_trips() {
        let mut data = [0u8; 4];
        fill_le(&mut data, 0x1234_5678);
        assert_eq!(le_value(&data), 0x1234_5678);
    }
}
