// SPDX-License-Identifier: Apache-2.0
//! The guest physical address map of a Nestbox PC, shared by the memory
//! setup, the boot paths and the firmware tables.
//!
//! ```text
//! 0x0000_0000 ..0x000A_0000  conventional RAM (the top 1 KiB is the EBDA)
//! 0x000A_0000 ..0x000C_0000  legacy VGA window (no RAM: MMIO)
//! 0x000C_0000 ..0x0010_0000  option ROMs and the BIOS shadow (RAM)
//! 0x0010_0000 ..LOW_RAM_END  RAM
//! 0xC000_0000 ..0xFEC0_0000  32-bit PCI hole (BARs)
//! 0xFEC0_0000                IOAPIC
//! 0xFEE0_0000                local APIC
//! 4 GiB - firmware size      firmware flash (read-only)
//! 0x1_0000_0000 ..           RAM above 4 GiB
//! ```

/// End of conventional memory; the VGA window starts here.
pub const VGA_WINDOW_START: u64 = 0xA_0000;
/// Start of option ROM space; RAM resumes here.
pub const ROM_AREA_START: u64 = 0xC_0000;
/// Start of the 64 KiB system BIOS segment.
pub const BIOS_SEGMENT_START: u64 = 0xF_0000;
/// The first megabyte ends here.
pub const ONE_MIB: u64 = 0x10_0000;
/// Start of the extended BIOS data area that the e820 map reserves.
pub const EBDA_START: u64 = 0x9_FC00;
/// Start of the 32-bit PCI hole: RAM below 4 GiB ends here at most.
pub const PCI_HOLE_START: u64 = 0xC000_0000;
/// Start of the 32-bit MMIO area for PCI BARs.
pub const PCI_MMIO_START: u64 = PCI_HOLE_START;
/// End (exclusive) of the 32-bit MMIO area for PCI BARs.
pub const PCI_MMIO_END: u64 = IOAPIC_START;
/// The IOAPIC's registers.
pub const IOAPIC_START: u64 = 0xFEC0_0000;
/// The local APIC's registers.
pub const LAPIC_START: u64 = 0xFEE0_0000;
/// 4 GiB: RAM above the hole starts here.
pub const FOUR_GIB: u64 = 0x1_0000_0000;
/// The largest firmware image that fits under 4 GiB above the APIC.
pub const MAX_FIRMWARE_SIZE: u64 = 16 << 20;
/// Size of the legacy BIOS window just under 1 MiB.
pub const LEGACY_BIOS_WINDOW: u64 = 128 << 10;
/// Pages KVM needs for its real-mode TSS (3) and identity map (1) on Intel.
pub const KVM_PRIVATE_PAGES: u64 = 4 * 4096;
/// Where KVM's private pages go when no firmware sits under 4 GiB.
pub const KVM_PRIVATE_DEFAULT: u64 = 0xFFFB_C000;

/// Guest RAM split around the PCI hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamLayout {
    /// Bytes of RAM below the PCI hole (from address 0).
    pub below_4g: u64,
    /// Bytes of RAM from 4 GiB up.
    pub above_4g: u64,
}

impl RamLayout {
    /// Splits `total` bytes of RAM around the 32-bit PCI hole.
    pub fn new(total: u64) -> Self {
        let below_4g = total.min(PCI_HOLE_START);
        Self {
            below_4g,
            above_4g: total - below_4g,
        }
    }

    /// Total RAM in bytes.
    pub fn total(&self) -> u64 {
        self.below_4g + self.above_4g
    }
}

/// An e820 memory type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    /// Usable RAM.
    Ram = 1,
    /// Reserved.
    Reserved = 2,
    /// ACPI tables, reclaimable after boot.
    Acpi = 3,
}

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range is.
    pub kind: E820Type,
}

/// The RAM map firmware gets: plain RAM ranges, as QEMU's `etc/e820` lists
/// them (the firmware reserves its own areas below 1 MiB).
pub fn firmware_e820(ram: RamLayout) -> Vec<E820Entry> {
    let mut map = vec![E820Entry {
        addr: 0,
        size: ram.below_4g,
        kind: E820Type::Ram,
    }];
    if ram.above_4g > 0 {
        map.push(E820Entry {
            addr: FOUR_GIB,
            size: ram.above_4g,
            kind: E820Type::Ram,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ram_layout_small_vm_is_all_low() {
        let ram = RamLayout::new(512 << 20);
        assert_eq!(
            ram,
            RamLayout {
                below_4g: 512 << 20,
                above_4g: 0
            }
        );
    }

    #[test]
    fn test_ram_layout_large_vm_splits_at_pci_hole() {
        let ram = RamLayout::new(5 << 30);
        assert_eq!(
            ram,
            RamLayout {
                below_4g: 3 << 30,
                above_4g: 2 << 30
            }
        );
    }

    #[test]
    fn test_firmware_e820_large_vm_has_high_range() {
        let map = firmware_e820(RamLayout::new(5 << 30));
        assert_eq!(
            map[1],
            E820Entry {
                addr: FOUR_GIB,
                size: 2 << 30,
                kind: E820Type::Ram
            }
        );
    }
}
