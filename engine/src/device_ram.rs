// SPDX-License-Identifier: Apache-2.0
//! Memory that devices own and the guest reaches without exits: a
//! memfd-backed [`DeviceRam`] (video memory) and the KVM memory slots that
//! put RAM-backed PCI BARs where the guest programmed them.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::{Arc, Mutex};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{FileOffset, MmapRegion, VolatileMemory};

use crate::devices::pci::{BarRam, BarRamMapper};
use crate::layout::{PCI_MMIO_END, PCI_MMIO_START};
use crate::memory::{MemoryError, create_memfd};

/// First KVM slot number for device RAM (guest RAM and flash use 0..8).
const FIRST_DEVICE_SLOT: u32 = 16;
/// Device RAM mappings a VM may hold at once.
const MAX_DEVICE_SLOTS: u32 = 16;

/// A block of shared memory owned by a device (e.g. VRAM), in a memfd so
/// another process (the GUI, a device sandbox) can map it too.
pub struct DeviceRam {
    file: Arc<File>,
    mapping: MmapRegion<()>,
}

impl DeviceRam {
    /// Creates `size` bytes of zeroed shared memory.
    pub fn new(size: usize) -> Result<Self, MemoryError> {
        let file = Arc::new(create_memfd(size as u64)?);
        let mapping = MmapRegion::<()>::from_file(FileOffset::from_arc(file.clone(), 0), size)
            .map_err(|e| MemoryError::Map(e.to_string()))?;
        Ok(Self { file, mapping })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.mapping.size()
    }

    /// True for a zero-length block.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The memfd behind it.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// What a BAR mapping this memory into the guest needs.
    pub fn bar_ram(&self) -> BarRam {
        BarRam {
            host_addr: self.mapping.as_ptr() as u64,
            size: self.len() as u64,
        }
    }

    /// Copies bytes at `offset` into `buf`; what lies past the end reads
    /// as 0xff.
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        buf.fill(0xff);
        let Some(len) = self.span(offset, buf.len()) else {
            return;
        };
        if let (Ok(slice), Some(dst)) = (self.mapping.get_slice(offset, len), buf.get_mut(..len)) {
            slice.copy_to(dst);
        }
    }

    /// Copies `data` to `offset`; what lies past the end is dropped.
    pub fn write(&self, offset: usize, data: &[u8]) {
        let Some(len) = self.span(offset, data.len()) else {
            return;
        };
        if let (Ok(slice), Some(src)) = (self.mapping.get_slice(offset, len), data.get(..len)) {
            slice.copy_from(src);
        }
    }

    /// How many of `len` bytes at `offset` lie inside the block.
    fn span(&self, offset: usize, len: usize) -> Option<usize> {
        let room = self.len().checked_sub(offset)?;
        Some(len.min(room)).filter(|&n| n > 0)
    }
}

/// Maps RAM-backed BARs as KVM memory slots, only inside the PCI MMIO
/// window, so a guest cannot place a BAR over its own RAM or the flash.
pub struct KvmBarMapper {
    vm: Arc<VmFd>,
    /// Guest address → (slot, size).
    slots: Mutex<BTreeMap<u64, (u32, u64)>>,
    /// Highest address a BAR may reach (the firmware flash starts there).
    limit: u64,
}

impl KvmBarMapper {
    /// A mapper for `vm`; BARs must end at or below `limit`.
    pub fn new(vm: Arc<VmFd>, limit: u64) -> Self {
        Self {
            vm,
            slots: Mutex::new(BTreeMap::new()),
            limit: limit.min(PCI_MMIO_END),
        }
    }

    fn set(&self, slot: u32, addr: u64, size: u64, host: u64) -> Result<(), String> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: addr,
            memory_size: size,
            userspace_addr: host,
        };
        // SAFETY: `host` is the start of a mapping of at least `size` bytes
        // owned by a device that lives as long as the VM (BarRam's
        // contract); a zero size deletes the slot.
        unsafe { self.vm.set_user_memory_region(region) }.map_err(|e| e.to_string())
    }
}

impl BarRamMapper for KvmBarMapper {
    fn map(&self, addr: u64, ram: BarRam) -> Result<(), String> {
        let end = addr
            .checked_add(ram.size)
            .ok_or_else(|| "address overflows".to_string())?;
        if addr < PCI_MMIO_START || end > self.limit || ram.size == 0 || ram.size % 4096 != 0 {
            return Err(format!(
                "outside the PCI MMIO window {PCI_MMIO_START:#x}..{:#x}",
                self.limit
            ));
        }
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let overlaps = slots
            .range(..end)
            .next_back()
            .is_some_and(|(&base, &(_, size))| base + size > addr);
        if overlaps {
            return Err("overlaps another device memory BAR".to_string());
        }
        let used: Vec<u32> = slots.values().map(|&(slot, _)| slot).collect();
        let slot = (FIRST_DEVICE_SLOT..FIRST_DEVICE_SLOT + MAX_DEVICE_SLOTS)
            .find(|s| !used.contains(s))
            .ok_or_else(|| "no free memory slot".to_string())?;
        self.set(slot, addr, ram.size, ram.host_addr)?;
        slots.insert(addr, (slot, ram.size));
        Ok(())
    }

    fn unmap(&self, addr: u64) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((slot, _)) = slots.remove(&addr)
            && let Err(e) = self.set(slot, addr, 0, 0)
        {
            log::warn!("cannot remove device memory slot {slot}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_device_ram_reads_and_writes_inside_only() {
        let ram = DeviceRam::new(8192).unwrap();
        ram.write(8190, &[1, 2, 3, 4]);
        let mut buf = [0u8; 4];
        ram.read(8190, &mut buf);
        assert_eq!(buf, [1, 2, 0xff, 0xff]);
        ram.read(usize::MAX, &mut buf);
        assert_eq!(buf, [0xff; 4]);
        ram.write(usize::MAX - 1, &[9; 4]);
    }

    #[test]
    fn test_device_ram_is_shared_through_its_memfd() {
        use std::os::unix::fs::FileExt;
        let ram = DeviceRam::new(4096).unwrap();
        ram.write(100, b"vram");
        let mut buf = [0u8; 4];
        ram.file().read_exact_at(&mut buf, 100).unwrap();
        assert_eq!(&buf, b"vram");
    }
}
