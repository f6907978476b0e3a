// SPDX-License-Identifier: Apache-2.0
//! Guest memory: RAM in one memfd (so device processes and vhost-user
//! back-ends can map the same pages), laid out around the legacy VGA window
//! and the 32-bit PCI hole, plus the read-only firmware flash under 4 GiB.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;

use kvm_bindings::{KVM_MEM_READONLY, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap,
    MmapRegion,
};

use crate::layout::{FOUR_GIB, ROM_AREA_START, RamLayout, VGA_WINDOW_START};

/// The guest memory type used throughout the engine.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// The smallest VM the PC layout supports.
pub const MIN_MEMORY_BYTES: u64 = 16 << 20;

/// Errors setting up guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Too little RAM for a PC.
    #[error("A VM needs at least {} MiB of memory", MIN_MEMORY_BYTES >> 20)]
    TooSmall,
    /// The memfd could not be created or sized.
    #[error("Cannot create the guest RAM file")]
    Memfd(#[source] io::Error),
    /// Mapping guest memory failed.
    #[error("Cannot map guest memory: {0}")]
    Map(String),
    /// Writing into guest memory failed.
    #[error("Cannot write {what} into guest memory")]
    Write {
        /// What was being written.
        what: &'static str,
    },
    /// KVM refused a memory slot.
    #[error("KVM refused memory slot {slot}")]
    Slot {
        /// The slot number.
        slot: u32,
        /// The cause.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The firmware image does not fit.
    #[error("Firmware image of {0} bytes is empty, not a multiple of 4 KiB, or over 16 MiB")]
    FirmwareSize(usize),
}

/// All of a VM's memory: RAM and the firmware flash.
pub struct VmMemory {
    /// Guest RAM.
    pub ram: GuestMemoryMmap,
    /// The memfd behind guest RAM.
    pub ram_file: Arc<File>,
    /// How RAM is split around the PCI hole.
    pub layout: RamLayout,
    /// The firmware flash mapped just under 4 GiB, if any.
    pub firmware: Option<FirmwareFlash>,
}

/// A firmware image mapped read-only just under 4 GiB.
pub struct FirmwareFlash {
    /// Guest address of the first byte.
    pub base: u64,
    mapping: MmapRegion<()>,
}

impl FirmwareFlash {
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.mapping.size() as u64
    }
}

impl VmMemory {
    /// Creates `total` bytes of RAM in a memfd, split around the holes.
    pub fn new(total: u64) -> Result<Self, MemoryError> {
        if total < MIN_MEMORY_BYTES {
            return Err(MemoryError::TooSmall);
        }
        let layout = RamLayout::new(total);
        let ram_file = Arc::new(create_memfd(total)?);
        let mut ranges = vec![
            (GuestAddress(0), VGA_WINDOW_START, 0),
            (
                GuestAddress(ROM_AREA_START),
                layout.below_4g - ROM_AREA_START,
                ROM_AREA_START,
            ),
        ];
        if layout.above_4g > 0 {
            ranges.push((GuestAddress(FOUR_GIB), layout.above_4g, layout.below_4g));
        }
        let mut regions = Vec::with_capacity(ranges.len());
        for (addr, size, offset) in ranges {
            let size = usize::try_from(size).map_err(|e| MemoryError::Map(e.to_string()))?;
            let file = FileOffset::from_arc(ram_file.clone(), offset);
            let region = GuestRegionMmap::from_range(addr, size, Some(file))
                .map_err(|e| MemoryError::Map(e.to_string()))?;
            regions.push(region);
        }
        let ram =
            GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Map(e.to_string()))?;
        Ok(Self {
            ram,
            ram_file,
            layout,
            firmware: None,
        })
    }

    /// Maps a firmware image so it ends at 4 GiB, and copies its last
    /// 128 KiB into RAM just under 1 MiB, where a PC's reset vector and
    /// BIOS segment expect it (the shadow the firmware would otherwise
    /// make through the chipset's PAM registers).
    pub fn load_firmware(&mut self, image: &[u8]) -> Result<(), MemoryError> {
        let size = image.len();
        if size == 0 || size % 4096 != 0 || size as u64 > crate::layout::MAX_FIRMWARE_SIZE {
            return Err(MemoryError::FirmwareSize(size));
        }
        let mapping = MmapRegion::<()>::new(size).map_err(|e| MemoryError::Map(e.to_string()))?;
        // SAFETY: the mapping is `size` bytes long and owned by us; the
        // source slice has exactly `size` bytes and does not overlap it.
        unsafe { std::ptr::copy_nonoverlapping(image.as_ptr(), mapping.as_ptr(), size) };
        let shadow_len = size.min(crate::layout::LEGACY_BIOS_WINDOW as usize);
        let shadow = image
            .get(size - shadow_len..)
            .ok_or(MemoryError::Write { what: "firmware" })?;
        let shadow_at = crate::layout::ONE_MIB - shadow_len as u64;
        self.ram
            .write_slice(shadow, GuestAddress(shadow_at))
            .map_err(|_| MemoryError::Write { what: "firmware" })?;
        self.firmware = Some(FirmwareFlash {
            base: FOUR_GIB - size as u64,
            mapping,
        });
        Ok(())
    }

    /// Where KVM's private real-mode pages go: just under the firmware, or
    /// at the conventional address when there is none.
    pub fn kvm_private_pages(&self) -> u64 {
        match &self.firmware {
            Some(fw) => fw.base - crate::layout::KVM_PRIVATE_PAGES,
            None => crate::layout::KVM_PRIVATE_DEFAULT,
        }
    }

    /// Registers every RAM region, and the firmware flash, as KVM slots.
    pub fn register(&self, vm: &VmFd, readonly_supported: bool) -> Result<(), MemoryError> {
        let mut slot = 0u32;
        for region in self.ram.iter() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|e| MemoryError::Map(e.to_string()))?;
            set_slot(
                vm,
                slot,
                0,
                region.start_addr().0,
                region.len(),
                host as u64,
            )?;
            slot += 1;
        }
        if let Some(fw) = &self.firmware {
            // Without read-only slots the flash is plain RAM to the guest:
            // writes stick until reset, which firmware does not rely on.
            let flags = if readonly_supported {
                KVM_MEM_READONLY
            } else {
                0
            };
            set_slot(
                vm,
                slot,
                flags,
                fw.base,
                fw.size(),
                fw.mapping.as_ptr() as u64,
            )?;
        }
        Ok(())
    }
}

fn set_slot(
    vm: &VmFd,
    slot: u32,
    flags: u32,
    guest_phys_addr: u64,
    memory_size: u64,
    userspace_addr: u64,
) -> Result<(), MemoryError> {
    let region = kvm_userspace_memory_region {
        slot,
        flags,
        guest_phys_addr,
        memory_size,
        userspace_addr,
    };
    // SAFETY: the host range belongs to a mapping owned by `VmMemory`, which
    // the VM keeps alive for as long as the VM fd exists.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|source| MemoryError::Slot { slot, source })
}

pub(crate) fn create_memfd(size: u64) -> Result<File, MemoryError> {
    const NAME: &CStr = c"nestbox-guest-ram";
    // SAFETY: NAME is a valid NUL-terminated string; the call has no other
    // memory effects.
    let fd = unsafe { libc::memfd_create(NAME.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::Memfd(io::Error::last_os_error()));
    }
    // SAFETY: memfd_create returned a fresh fd that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    let len = i64::try_from(size).map_err(|_| MemoryError::TooSmall)?;
    // SAFETY: ftruncate on a valid fd we own.
    if unsafe { libc::ftruncate(file.as_raw_fd(), len) } < 0 {
        return Err(MemoryError::Memfd(io::Error::last_os_error()));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_vm_memory_leaves_vga_window_unmapped() {
        let mem = VmMemory::new(64 << 20).unwrap();
        assert!(mem.ram.address_in_range(GuestAddress(0x9_FFFF)));
        assert!(!mem.ram.address_in_range(GuestAddress(VGA_WINDOW_START)));
        assert!(mem.ram.address_in_range(GuestAddress(ROM_AREA_START)));
        assert!(!mem.ram.address_in_range(GuestAddress(64 << 20)));
    }

    #[test]
    fn test_vm_memory_too_small_is_refused() {
        assert!(matches!(VmMemory::new(1 << 20), Err(MemoryError::TooSmall)));
    }

    #[test]
    fn test_load_firmware_shadows_tail_under_1mib() {
        let mut mem = VmMemory::new(64 << 20).unwrap();
        let mut image = vec![0u8; 256 << 10];
        *image.last_mut().unwrap() = 0xAB;
        mem.load_firmware(&image).unwrap();
        let byte: u8 = mem.ram.read_obj(GuestAddress(0xF_FFFF)).unwrap();
        assert_eq!(byte, 0xAB);
        assert_eq!(mem.firmware.as_ref().unwrap().base, FOUR_GIB - (256 << 10));
    }

    #[test]
    fn test_load_firmware_odd_size_is_refused() {
        let mut mem = VmMemory::new(64 << 20).unwrap();
        assert!(matches!(
            mem.load_firmware(&[0u8; 1000]),
            Err(MemoryError::FirmwareSize(1000))
        ));
    }
}
