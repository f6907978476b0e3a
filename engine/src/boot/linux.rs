// SPDX-License-Identifier: Apache-2.0
//! Direct Linux boot, without firmware: an ELF `vmlinux` through its PVH
//! entry (32-bit protected mode, `hvm_start_info` in %ebx), or a bzImage
//! through its 64-bit entry (long mode, the zero page in %rsi). Both get
//! the command line, an initrd, an e820 map of the configured RAM and the
//! ACPI tables (RSDP also at 0xE0000, where Linux scans for it).
//!
//! The kernel file is user input: every size and address taken from it
//! goes through checked arithmetic and vm-memory's bounds checks.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress};

use crate::layout::{E820Entry, E820Type, EBDA_START, ONE_MIB, RamLayout};
use crate::memory::GuestMemoryMmap;

/// The boot GDT.
pub const GDT_ADDR: u64 = 0x500;
/// The (empty) boot IDT.
pub const IDT_ADDR: u64 = 0x520;
/// PVH start info, or the bzImage zero page.
const BOOT_INFO_ADDR: u64 = 0x7000;
/// PVH memory map (after the 56-byte start info).
const PVH_MEMMAP_ADDR: u64 = 0x7100;
/// PVH module list (the initrd).
const PVH_MODLIST_ADDR: u64 = 0x7f00;
/// Initial stack pointer.
pub const BOOT_STACK: u64 = 0x8ff0;
/// Identity-mapping page tables for long mode: PML4, PDPT, PD.
pub const PML4_ADDR: u64 = 0x9000;
const PDPT_ADDR: u64 = 0xa000;
const PD_ADDR: u64 = 0xb000;
/// The kernel command line.
const CMDLINE_ADDR: u64 = 0x2_0000;
/// Longest command line accepted.
pub const CMDLINE_MAX: usize = 4096;
/// Where the ACPI RSDP goes (inside the area Linux scans).
pub const RSDP_ADDR: u64 = 0xe_0000;
/// Where the other ACPI tables go.
pub const ACPI_TABLES_ADDR: u64 = 0xe_0040;
/// Start of the reserved BIOS area in the e820 map.
const BIOS_AREA_START: u64 = 0xe_0000;

const PVH_MAGIC: u32 = 0x336e_c578;
const ZERO_PAGE_SIZE: usize = 4096;
const HDR_OFFSET: usize = 0x1f1;
const E820_ENTRIES_OFFSET: usize = 0x1e8;
const E820_TABLE_OFFSET: usize = 0x2d0;
const E820_MAX: usize = 128;
const ACPI_RSDP_OFFSET: usize = 0x070;
const TYPE_OF_LOADER_OFFSET: usize = 0x210;
const LOADFLAGS_OFFSET: usize = 0x211;
const RAMDISK_IMAGE_OFFSET: usize = 0x218;
const RAMDISK_SIZE_OFFSET: usize = 0x21c;
const HEAP_END_PTR_OFFSET: usize = 0x224;
const CMD_LINE_PTR_OFFSET: usize = 0x228;
const LOADFLAGS_CAN_USE_HEAP: u8 = 0x80;
const XLF_KERNEL_64: u16 = 0x1;

/// Errors loading a kernel.
#[derive(Debug, thiserror::Error)]
pub enum LinuxBootError {
    /// The kernel or initrd could not be read.
    #[error("Cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel is neither a bzImage nor an ELF vmlinux.
    #[error("{0} is not a Linux kernel (neither a bzImage nor an ELF vmlinux)")]
    NotAKernel(PathBuf),
    /// The ELF kernel cannot be started directly.
    #[error(
        "{0} is an ELF kernel without a PVH entry point (CONFIG_PVH); boot its bzImage instead"
    )]
    NoPvhEntry(PathBuf),
    /// The bzImage is too old or 32-bit only.
    #[error(
        "{0} is a bzImage without a 64-bit entry point (boot protocol 2.12 or later is needed)"
    )]
    No64BitEntry(PathBuf),
    /// The kernel did not fit or was malformed.
    #[error("Cannot load the kernel {path}: {detail}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What the loader said.
        detail: String,
    },
    /// The command line is too long.
    #[error("The kernel command line is longer than {CMDLINE_MAX} bytes")]
    CmdlineTooLong,
    /// The initrd does not fit in RAM below 4 GiB.
    #[error("The initrd ({size} bytes) does not fit in the VM's memory")]
    InitrdTooLarge {
        /// Its size.
        size: u64,
    },
    /// Writing boot structures into guest memory failed.
    #[error("Cannot write the {0} into guest memory")]
    Write(&'static str),
}

/// What to boot directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxBoot {
    /// bzImage or ELF vmlinux.
    pub kernel: PathBuf,
    /// Optional initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
}

/// How vCPU 0 enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelEntry {
    /// PVH: 32-bit protected mode, paging off, %ebx = start info.
    Pvh {
        /// Entry point (physical).
        entry: u64,
        /// `hvm_start_info` address.
        start_info: u64,
    },
    /// 64-bit boot protocol: long mode, identity-mapped, %rsi = zero page.
    Long64 {
        /// Entry point (physical).
        entry: u64,
        /// Zero page address.
        zero_page: u64,
    },
}

/// The e820 map a directly booted kernel gets.
pub fn direct_boot_e820(ram: RamLayout) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820Type::Ram,
        },
        E820Entry {
            addr: EBDA_START,
            size: crate::layout::VGA_WINDOW_START - EBDA_START,
            kind: E820Type::Reserved,
        },
        E820Entry {
            addr: BIOS_AREA_START,
            size: ONE_MIB - BIOS_AREA_START,
            kind: E820Type::Reserved,
        },
        E820Entry {
            addr: ONE_MIB,
            size: ram.below_4g - ONE_MIB,
            kind: E820Type::Ram,
        },
    ];
    if ram.above_4g > 0 {
        map.push(E820Entry {
            addr: crate::layout::FOUR_GIB,
            size: ram.above_4g,
            kind: E820Type::Ram,
        });
    }
    map
}

fn write_bytes(
    mem: &GuestMemoryMmap,
    addr: u64,
    bytes: &[u8],
    what: &'static str,
) -> Result<(), LinuxBootError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|_| LinuxBootError::Write(what))
}

fn open(path: &Path) -> Result<File, LinuxBootError> {
    File::open(path).map_err(|source| LinuxBootError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads the kernel, initrd, command line and boot structures; the ACPI
/// tables are written by the caller at [`RSDP_ADDR`].
pub fn load(
    mem: &GuestMemoryMmap,
    ram: RamLayout,
    boot: &LinuxBoot,
) -> Result<KernelEntry, LinuxBootError> {
    if boot.cmdline.len() >= CMDLINE_MAX {
        return Err(LinuxBootError::CmdlineTooLong);
    }
    let mut cmdline = boot.cmdline.as_bytes().to_vec();
    cmdline.push(0);
    write_bytes(mem, CMDLINE_ADDR, &cmdline, "command line")?;

    let mut kernel = open(&boot.kernel)?;
    let mut magic = [0u8; 4];
    kernel
        .read_exact(&mut magic)
        .map_err(|_| LinuxBootError::NotAKernel(boot.kernel.clone()))?;
    let e820 = direct_boot_e820(ram);
    if magic == *b"\x7fELF" {
        load_pvh(mem, ram, boot, &mut kernel, &e820)
    } else {
        load_bzimage(mem, ram, boot, &mut kernel, &e820)
    }
}

fn load_error(boot: &LinuxBoot, e: linux_loader::loader::Error) -> LinuxBootError {
    LinuxBootError::Load {
        path: boot.kernel.clone(),
        detail: e.to_string(),
    }
}

/// Reads the initrd to just under `max_end` (page aligned), above the kernel.
fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    max_end: u64,
    kernel_end: u64,
) -> Result<(u64, u64), LinuxBootError> {
    let mut file = open(path)?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|source| LinuxBootError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let size = data.len() as u64;
    let addr = max_end
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel_end)
        .ok_or(LinuxBootError::InitrdTooLarge { size })?;
    write_bytes(mem, addr, &data, "initrd")?;
    Ok((addr, size))
}

fn load_pvh(
    mem: &GuestMemoryMmap,
    ram: RamLayout,
    boot: &LinuxBoot,
    kernel: &mut File,
    e820: &[E820Entry],
) -> Result<KernelEntry, LinuxBootError> {
    let loaded = Elf::load(mem, None, kernel, Some(GuestAddress(ONE_MIB)))
        .map_err(|e| load_error(boot, e))?;
    let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
        return Err(LinuxBootError::NoPvhEntry(boot.kernel.clone()));
    };
    let initrd = match &boot.initrd {
        Some(path) => Some(load_initrd(mem, path, ram.below_4g, loaded.kernel_end)?),
        None => None,
    };

    let mut memmap = Vec::with_capacity(e820.len() * 24);
    for entry in e820 {
        memmap.extend_from_slice(&entry.addr.to_le_bytes());
        memmap.extend_from_slice(&entry.size.to_le_bytes());
        memmap.extend_from_slice(&(entry.kind as u32).to_le_bytes());
        memmap.extend_from_slice(&0u32.to_le_bytes());
    }
    write_bytes(mem, PVH_MEMMAP_ADDR, &memmap, "PVH memory map")?;

    let mut modules = 0u32;
    if let Some((addr, size)) = initrd {
        let mut module = Vec::with_capacity(32);
        module.extend_from_slice(&addr.to_le_bytes());
        module.extend_from_slice(&size.to_le_bytes());
        module.extend_from_slice(&0u64.to_le_bytes());
        module.extend_from_slice(&0u64.to_le_bytes());
        write_bytes(mem, PVH_MODLIST_ADDR, &module, "PVH module list")?;
        modules = 1;
    }

    let mut info = Vec::with_capacity(56);
    info.extend_from_slice(&PVH_MAGIC.to_le_bytes());
    info.extend_from_slice(&1u32.to_le_bytes()); // version
    info.extend_from_slice(&0u32.to_le_bytes()); // flags
    info.extend_from_slice(&modules.to_le_bytes());
    let modlist = if modules > 0 { PVH_MODLIST_ADDR } else { 0 };
    info.extend_from_slice(&modlist.to_le_bytes());
    info.extend_from_slice(&CMDLINE_ADDR.to_le_bytes());
    info.extend_from_slice(&RSDP_ADDR.to_le_bytes());
    info.extend_from_slice(&PVH_MEMMAP_ADDR.to_le_bytes());
    info.extend_from_slice(&(e820.len() as u32).to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());
    write_bytes(mem, BOOT_INFO_ADDR, &info, "PVH start info")?;
    write_gdt(mem)?;
    Ok(KernelEntry::Pvh {
        entry: entry.0,
        start_info: BOOT_INFO_ADDR,
    })
}

fn load_bzimage(
    mem: &GuestMemoryMmap,
    ram: RamLayout,
    boot: &LinuxBoot,
    kernel: &mut File,
    e820: &[E820Entry],
) -> Result<KernelEntry, LinuxBootError> {
    let loaded =
        BzImage::load(mem, None, kernel, Some(GuestAddress(ONE_MIB))).map_err(|e| match e {
            linux_loader::loader::Error::Bzimage(_) => {
                LinuxBootError::NotAKernel(boot.kernel.clone())
            }
            other => load_error(boot, other),
        })?;
    let header = loaded
        .setup_header
        .ok_or_else(|| LinuxBootError::NotAKernel(boot.kernel.clone()))?;
    let xloadflags = header.xloadflags;
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(LinuxBootError::No64BitEntry(boot.kernel.clone()));
    }

    // The zero page starts as the kernel's own setup header, as the boot
    // protocol asks: bytes 0x1f1 up to the end the header declares.
    let mut raw_header = [0u8; 0x202 - HDR_OFFSET + 256];
    kernel
        .seek(SeekFrom::Start(HDR_OFFSET as u64))
        .and_then(|_| kernel.read_exact(&mut raw_header))
        .map_err(|_| LinuxBootError::NotAKernel(boot.kernel.clone()))?;
    let header_end = 0x202 + usize::from(raw_header.get(0x201 - HDR_OFFSET).copied().unwrap_or(0));
    let header_len = header_end - HDR_OFFSET;
    let mut zero_page = vec![0u8; ZERO_PAGE_SIZE];
    let header_bytes = raw_header.get(..header_len).unwrap_or(&[]);
    zero_page
        .get_mut(HDR_OFFSET..header_end)
        .ok_or(LinuxBootError::Write("zero page"))?
        .copy_from_slice(header_bytes);

    let put = |page: &mut Vec<u8>, offset: usize, bytes: &[u8]| -> Result<(), LinuxBootError> {
        page.get_mut(offset..offset + bytes.len())
            .ok_or(LinuxBootError::Write("zero page"))?
            .copy_from_slice(bytes);
        Ok(())
    };
    put(&mut zero_page, TYPE_OF_LOADER_OFFSET, &[0xff])?;
    let loadflags = header.loadflags | LOADFLAGS_CAN_USE_HEAP;
    put(&mut zero_page, LOADFLAGS_OFFSET, &[loadflags])?;
    // Heap end relative to the real-mode setup start, as the protocol defines.
    put(
        &mut zero_page,
        HEAP_END_PTR_OFFSET,
        &0xfe00u16.to_le_bytes(),
    )?;
    put(
        &mut zero_page,
        CMD_LINE_PTR_OFFSET,
        &(CMDLINE_ADDR as u32).to_le_bytes(),
    )?;
    put(&mut zero_page, ACPI_RSDP_OFFSET, &RSDP_ADDR.to_le_bytes())?;

    if let Some(path) = &boot.initrd {
        let max_end = ram.below_4g.min(u64::from(header.initrd_addr_max) + 1);
        let (addr, size) = load_initrd(mem, path, max_end, loaded.kernel_end)?;
        put(
            &mut zero_page,
            RAMDISK_IMAGE_OFFSET,
            &(addr as u32).to_le_bytes(),
        )?;
        put(
            &mut zero_page,
            RAMDISK_SIZE_OFFSET,
            &(size as u32).to_le_bytes(),
        )?;
    }

    let entries = e820.len().min(E820_MAX);
    put(&mut zero_page, E820_ENTRIES_OFFSET, &[entries as u8])?;
    for (i, entry) in e820.iter().take(entries).enumerate() {
        let at = E820_TABLE_OFFSET + i * 20;
        put(&mut zero_page, at, &entry.addr.to_le_bytes())?;
        put(&mut zero_page, at + 8, &entry.size.to_le_bytes())?;
        put(&mut zero_page, at + 16, &(entry.kind as u32).to_le_bytes())?;
    }
    write_bytes(mem, BOOT_INFO_ADDR, &zero_page, "zero page")?;
    write_gdt(mem)?;
    write_identity_page_tables(mem)?;
    // The 64-bit entry is 0x200 past the start of the protected-mode code.
    let entry = loaded
        .kernel_load
        .0
        .checked_add(0x200)
        .ok_or(LinuxBootError::Write("entry point"))?;
    Ok(KernelEntry::Long64 {
        entry,
        zero_page: BOOT_INFO_ADDR,
    })
}

/// Boot GDT entries: null, null, 0x10 code64, 0x18 data, 0x20 code32.
pub const GDT: [u64; 5] = [
    0,
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x00cf_9b00_0000_ffff,
];

fn write_gdt(mem: &GuestMemoryMmap) -> Result<(), LinuxBootError> {
    let bytes: Vec<u8> = GDT.iter().flat_map(|e| e.to_le_bytes()).collect();
    write_bytes(mem, GDT_ADDR, &bytes, "GDT")?;
    write_bytes(mem, IDT_ADDR, &0u64.to_le_bytes(), "IDT")
}

/// Identity-maps the first 1 GiB with 2 MiB pages for the 64-bit entry.
fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<(), LinuxBootError> {
    write_bytes(
        mem,
        PML4_ADDR,
        &(PDPT_ADDR | 0x03).to_le_bytes(),
        "page tables",
    )?;
    write_bytes(
        mem,
        PDPT_ADDR,
        &(PD_ADDR | 0x03).to_le_bytes(),
        "page tables",
    )?;
    let pd: Vec<u8> = (0..512u64)
        .flat_map(|i| ((i << 21) | 0x83).to_le_bytes())
        .collect();
    write_bytes(mem, PD_ADDR, &pd, "page tables")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap()
    }

    fn boot(kernel: &Path) -> LinuxBoot {
        LinuxBoot {
            kernel: kernel.to_path_buf(),
            initrd: None,
            cmdline: "console=ttyS0".into(),
        }
    }

    #[test]
    fn test_direct_boot_e820_reserves_bios_areas() {
        let map = direct_boot_e820(RamLayout::new(64 << 20));
        assert_eq!(map.len(), 4);
        assert_eq!(
            map[3],
            E820Entry {
                addr: ONE_MIB,
                size: 63 << 20,
                kind: E820Type::Ram
            }
        );
        assert_eq!(map[2].kind, E820Type::Reserved);
    }

    #[test]
    fn test_load_text_file_is_not_a_kernel() {
        let dir = std::env::temp_dir().join(format!("nestbox-notkernel-{}", std::process::id()));
        std::fs::write(&dir, vec![b'x'; 8192]).unwrap();
        let err = load(&mem(), RamLayout::new(64 << 20), &boot(&dir)).unwrap_err();
        std::fs::remove_file(&dir).unwrap();
        assert!(matches!(err, LinuxBootError::NotAKernel(_)), "{err}");
    }

    #[test]
    fn test_load_missing_kernel_names_file() {
        let err = load(
            &mem(),
            RamLayout::new(64 << 20),
            &boot(Path::new("/nonexistent/vmlinuz")),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinuz"));
    }

    #[test]
    fn test_load_overlong_cmdline_is_refused() {
        let mut b = boot(Path::new("/nonexistent"));
        b.cmdline = "x".repeat(CMDLINE_MAX);
        let err = load(&mem(), RamLayout::new(64 << 20), &b).unwrap_err();
        assert!(matches!(err, LinuxBootError::CmdlineTooLong));
    }

    #[test]
    fn test_load_initrd_too_large_is_refused() {
        let path = std::env::temp_dir().join(format!("nestbox-initrd-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 2 << 20]).unwrap();
        let err = load_initrd(&mem(), &path, 2 << 20, ONE_MIB).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(err, LinuxBootError::InitrdTooLarge { .. }));
    }
}
