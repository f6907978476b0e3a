// SPDX-License-Identifier: Apache-2.0
//! ACPI tables for every VM: written into guest memory for a Linux guest
//! booted directly, without firmware ([`write`]), and handed to firmware
//! (SeaBIOS, OVMF) through fw_cfg with QEMU's linker/loader script
//! ([`build_for_firmware`]), so an OS the firmware boots has the same
//! power button, S5, PM timer and interrupt routing.
//!
//! With no firmware to build them, the VMM has to hand Linux the tables that
//! describe the machine: how many CPUs there are and where the interrupt
//! controllers sit (MADT), where the power-management registers are (FADT),
//! what is on the platform (a DSDT with the PCI host bridge, COM1 and the
//! `_S5_` sleep-type package that makes `poweroff` work), and the FACS the
//! FADT must point at. An RSDP (ACPI 2.0+) leads to an XSDT that lists the
//! FADT and MADT, and to an RSDT that lists them too with 32-bit pointers
//! for ACPI 1.0 guests (Windows 9x and XP, DOS-era power tools read only
//! the RSDT); the FADT leads on to the DSDT and FACS.
//!
//! [`build`] serialises everything for a given guest address, and [`write`]
//! puts it into guest memory. The AML in the DSDT is encoded by small pure
//! helper functions, following the opcode and resource-descriptor layouts in
//! the ACPI specification. The PM register layout the tables advertise is
//! exported as constants so the PM device implements the same one.

use vm_memory::{Bytes, GuestAddress};

use crate::layout::{
    IOAPIC_START, LAPIC_START, PCI_MMIO_END, PCI_MMIO_START, ROM_AREA_START, VGA_WINDOW_START,
};
use crate::memory::GuestMemoryMmap;

// --- PM register block layout (offsets from `AcpiConfig::pm_base`) -------

/// Length of the PM1a event block (status word, then enable word).
pub const PM1_EVT_LEN: u16 = 4;
/// Offset of the PM1 enable register inside the PM1a event block.
pub const PM1_EN_OFFSET: u16 = 2;
/// Offset of the PM1a control block.
pub const PM1_CNT_OFFSET: u16 = 4;
/// Length of the PM1a control block.
pub const PM1_CNT_LEN: u16 = 2;
/// Offset of the PM timer (24-bit, 3.579545 MHz).
pub const PM_TMR_OFFSET: u16 = 8;
/// Length of the PM timer block.
pub const PM_TMR_LEN: u16 = 4;
/// Offset of the GPE0 block (status bytes, then enable bytes).
pub const GPE0_OFFSET: u16 = 0x10;
/// Length of the GPE0 block.
pub const GPE0_LEN: u16 = 4;
/// Offset of the GPE0 enable bytes inside the GPE0 block.
pub const GPE0_EN_OFFSET: u16 = GPE0_LEN / 2;
/// I/O ports the PM device has to claim from `pm_base`.
pub const PM_REGS_LEN: u16 = GPE0_OFFSET + GPE0_LEN;

/// PM1 status/enable bit of the PM timer carry.
pub const TMR_BIT: u32 = 0;
/// PM1 status/enable bit of the fixed-feature power button.
pub const PWRBTN_BIT: u32 = 8;
/// PM1 control bit that says the SCI is routed (ACPI mode). There is no SMI
/// command port, so the PM device should always read it back as set.
pub const SCI_EN_BIT: u32 = 0;
/// First bit of the 3-bit SLP_TYP field in PM1 control.
pub const SLP_TYP_SHIFT: u32 = 10;
/// PM1 control bit that starts the sleep state written in SLP_TYP.
pub const SLP_EN_BIT: u32 = 13;
/// The SLP_TYP value of S5 (soft off): what `_S5_` holds and what the guest
/// writes into PM1 control, together with SLP_EN, to power off.
pub const SLP_TYP_S5: u8 = 5;

/// The reset register the FADT advertises (the PIIX reset control port).
pub const RESET_PORT: u16 = 0xCF9;
/// The value the guest writes to [`RESET_PORT`] to reset.
pub const RESET_VALUE: u8 = 0x06;

/// Size of the ACPI 2.0+ RSDP.
pub const RSDP_LEN: usize = 36;

// --- Table identity -----------------------------------------------------

const OEM_ID: &[u8; 6] = b"NESTBX";
const OEM_TABLE_ID: &[u8; 8] = b"NESTBOX ";
const OEM_REVISION: u32 = 1;
const CREATOR_ID: &[u8; 4] = b"NBOX";
const CREATOR_REVISION: u32 = 1;

const HEADER_LEN: usize = 36;
const CHECKSUM_OFFSET: usize = 9;
const XSDT_LEN: usize = HEADER_LEN + 2 * 8;
const RSDT_LEN: usize = HEADER_LEN + 2 * 4;
const FADT_LEN: usize = 276;
const FACS_LEN: usize = 64;
const TABLE_ALIGN: u64 = 8;
const FACS_ALIGN: u64 = 64;
const RSDP_ALIGN: u64 = 16;

/// What the tables describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs, 1 to 255: local APIC IDs and processor UIDs run
    /// from 0 to `vcpus - 1`.
    pub vcpus: u32,
    /// I/O port base of the PM registers (see the `*_OFFSET` constants).
    pub pm_base: u16,
    /// ISA IRQ of the SCI, level-triggered and active-high.
    pub sci_irq: u8,
}

/// Serialised tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiTables {
    /// The RSDP, to go at the RSDP address.
    pub rsdp: Vec<u8>,
    /// XSDT, RSDT, FADT, MADT, DSDT and FACS one after another, each 8-byte
    /// aligned (the FACS 64-byte aligned), to go at the tables address.
    pub tables: Vec<u8>,
}

/// Errors building or placing the ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The MADT describes 1 to 255 local APICs.
    #[error("ACPI tables describe 1 to 255 vCPUs, not {0}")]
    VcpuCount(u32),
    /// The PM register block does not fit in the I/O port space.
    #[error("PM registers at I/O port {0:#x} run past port 0xFFFF")]
    PmBase(u16),
    /// The SCI must be an ISA IRQ other than the timer's.
    #[error("IRQ {0} cannot carry the SCI")]
    SciIrq(u8),
    /// A guest address is not aligned as ACPI requires.
    #[error("The {what} address {addr:#x} is not {align}-byte aligned")]
    Misaligned {
        /// Which structure.
        what: &'static str,
        /// The address given.
        addr: u64,
        /// The alignment needed.
        align: u64,
    },
    /// The tables would run past the end of the address space.
    #[error("ACPI tables at {0:#x} run past the end of the address space")]
    AddressOverflow(u64),
    /// The RSDP and the tables would overlap.
    #[error("The RSDP at {rsdp:#x} overlaps the ACPI tables at {tables:#x}")]
    Overlap {
        /// The RSDP address.
        rsdp: u64,
        /// The tables address.
        tables: u64,
    },
    /// Guest memory does not cover where the tables go.
    #[error("Cannot write the {what} into guest memory at {addr:#x}")]
    GuestMemory {
        /// What was being written.
        what: &'static str,
        /// Where it was going.
        addr: u64,
        /// The cause.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// Where each table of [`AcpiTables::tables`] starts, as an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placement {
    xsdt: u64,
    /// None when the tables sit above 4 GiB, out of the RSDT's reach.
    rsdt: Option<u64>,
    fadt: u64,
}

/// Builds the RSDP and the tables for a guest that finds them at
/// `tables_addr` (8-byte aligned).
pub fn build(config: &AcpiConfig, tables_addr: u64) -> Result<AcpiTables, AcpiError> {
    build_placed(config, tables_addr).map(|(tables, _)| tables)
}

/// [`build`], and where the tables that point at others went.
fn build_placed(
    config: &AcpiConfig,
    tables_addr: u64,
) -> Result<(AcpiTables, Placement), AcpiError> {
    let vcpus = u8::try_from(config.vcpus)
        .ok()
        .filter(|&n| n > 0)
        .ok_or(AcpiError::VcpuCount(config.vcpus))?;
    config
        .pm_base
        .checked_add(PM_REGS_LEN - 1)
        .ok_or(AcpiError::PmBase(config.pm_base))?;
    if config.sci_irq == 0 || config.sci_irq == 2 || config.sci_irq > 15 {
        return Err(AcpiError::SciIrq(config.sci_irq));
    }
    check_aligned("ACPI tables", tables_addr, TABLE_ALIGN)?;

    let madt = madt(vcpus, config.sci_irq);
    let dsdt = dsdt();
    let facs = facs();

    let overflow = || AcpiError::AddressOverflow(tables_addr);
    let mut end = tables_addr;
    let xsdt_addr = place(&mut end, XSDT_LEN, TABLE_ALIGN).ok_or_else(overflow)?;
    let rsdt_addr = place(&mut end, RSDT_LEN, TABLE_ALIGN).ok_or_else(overflow)?;
    let fadt_addr = place(&mut end, FADT_LEN, TABLE_ALIGN).ok_or_else(overflow)?;
    let madt_addr = place(&mut end, madt.len(), TABLE_ALIGN).ok_or_else(overflow)?;
    let dsdt_addr = place(&mut end, dsdt.len(), TABLE_ALIGN).ok_or_else(overflow)?;
    let facs_addr = place(&mut end, facs.len(), FACS_ALIGN).ok_or_else(overflow)?;

    let fadt = fadt(config, dsdt_addr, facs_addr);
    let xsdt = xsdt(&[fadt_addr, madt_addr]);
    // The RSDT's 32-bit pointers reach only tables below 4 GiB; tables
    // placed higher have none (the RSDP's RSDT address stays 0).
    let rsdt_entries = [fadt_addr, madt_addr, rsdt_addr].map(|a| u32::try_from(a).ok());
    let (rsdt, rsdt_at) = match rsdt_entries {
        [Some(fadt), Some(madt), Some(at)] => (rsdt(&[fadt, madt]), Some(at)),
        _ => (Vec::new(), None),
    };

    let mut tables = Vec::new();
    for (addr, table) in [
        (xsdt_addr, &xsdt),
        (rsdt_addr, &rsdt),
        (fadt_addr, &fadt),
        (madt_addr, &madt),
        (dsdt_addr, &dsdt),
        (facs_addr, &facs),
    ] {
        let offset = addr
            .checked_sub(tables_addr)
            .and_then(|o| usize::try_from(o).ok())
            .ok_or_else(overflow)?;
        tables.resize(offset, 0);
        tables.extend_from_slice(table);
    }

    Ok((
        AcpiTables {
            rsdp: rsdp(xsdt_addr, rsdt_at.unwrap_or(0)),
            tables,
        },
        Placement {
            xsdt: xsdt_addr,
            rsdt: rsdt_at.map(u64::from),
            fadt: fadt_addr,
        },
    ))
}

/// The fw_cfg file firmware reads the tables from.
pub const FW_CFG_TABLES: &str = "etc/acpi/tables";
/// The fw_cfg file firmware reads the RSDP from.
pub const FW_CFG_RSDP: &str = "etc/acpi/rsdp";
/// The fw_cfg file with the commands that place and link them.
pub const FW_CFG_LOADER: &str = "etc/table-loader";

/// The tables as firmware written for QEMU (SeaBIOS, OVMF) takes them
/// from fw_cfg: two blobs whose pointers hold offsets into the tables
/// blob, and a script ("linker/loader") telling the firmware to allocate
/// each blob, add the tables' address to every pointer and fix the
/// checksums. The firmware then publishes the RSDP where an OS looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareTables {
    /// The XSDT, RSDT, FADT, MADT, DSDT and FACS, from offset 0.
    pub tables: Vec<u8>,
    /// The RSDP.
    pub rsdp: Vec<u8>,
    /// The loader script: 128-byte commands.
    pub loader: Vec<u8>,
}

/// Loader commands (QEMU's `bios-linker-loader` format, which SeaBIOS and
/// OVMF read): allocate a file, add a file's address to a pointer in
/// another, recompute a checksum.
const LOADER_ALLOCATE: u32 = 1;
const LOADER_ADD_POINTER: u32 = 2;
const LOADER_ADD_CHECKSUM: u32 = 3;
/// Allocation zones: anywhere below 4 GiB, or the BIOS's F segment
/// (where an OS scans for the RSDP).
const ZONE_HIGH: u8 = 1;
const ZONE_FSEG: u8 = 2;
/// Bytes of one loader command, and of a file name in it.
const LOADER_ENTRY_LEN: usize = 128;
const LOADER_NAME_LEN: usize = 56;
/// Pointer fields: the RSDP's RSDT and XSDT addresses; the FADT's
/// FIRMWARE_CTRL, DSDT and X_DSDT.
const RSDP_RSDT_AT: u32 = 16;
const RSDP_XSDT_AT: u32 = 24;
const FADT_FACS_AT: u64 = 36;
const FADT_DSDT_AT: u64 = 40;
const FADT_X_DSDT_AT: u64 = 140;

/// One loader command, in its 128 bytes.
struct LoaderEntry(Vec<u8>);

impl LoaderEntry {
    fn new(command: u32) -> Self {
        let mut bytes = Vec::with_capacity(LOADER_ENTRY_LEN);
        bytes.extend_from_slice(&command.to_le_bytes());
        Self(bytes)
    }

    fn name(mut self, name: &str) -> Self {
        let mut field = [0u8; LOADER_NAME_LEN];
        for (to, from) in field.iter_mut().zip(name.bytes()) {
            *to = from;
        }
        self.0.extend_from_slice(&field);
        self
    }

    fn u32(mut self, value: u32) -> Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    fn u8(mut self, value: u8) -> Self {
        self.0.push(value);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.resize(LOADER_ENTRY_LEN, 0);
        self.0
    }
}

fn allocate(file: &str, align: u32, zone: u8) -> Vec<u8> {
    LoaderEntry::new(LOADER_ALLOCATE)
        .name(file)
        .u32(align)
        .u8(zone)
        .finish()
}

fn add_pointer(dest: &str, src: &str, offset: u32, size: u8) -> Vec<u8> {
    LoaderEntry::new(LOADER_ADD_POINTER)
        .name(dest)
        .name(src)
        .u32(offset)
        .u8(size)
        .finish()
}

fn add_checksum(file: &str, offset: u32, start: u32, length: u32) -> Vec<u8> {
    LoaderEntry::new(LOADER_ADD_CHECKSUM)
        .name(file)
        .u32(offset)
        .u32(start)
        .u32(length)
        .finish()
}

/// Builds the tables for firmware to place (see [`FirmwareTables`]).
pub fn build_for_firmware(config: &AcpiConfig) -> Result<FirmwareTables, AcpiError> {
    let (built, at) = build_placed(config, 0)?;
    let overflow = || AcpiError::AddressOverflow(0);
    let offset = |value: u64| u32::try_from(value).map_err(|_| overflow());
    let table_len = |start: u64| -> Result<u32, AcpiError> {
        let start = usize::try_from(start).map_err(|_| overflow())?;
        built
            .tables
            .get(start + 4..start + 8)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(overflow)
    };
    let xsdt_len = table_len(at.xsdt)?;
    // Firmware places the tables below 4 GiB: the RSDT is always there.
    let rsdt = at.rsdt.ok_or_else(overflow)?;
    let rsdt_len = table_len(rsdt)?;
    let fadt_len = table_len(at.fadt)?;

    let mut loader = Vec::new();
    loader.extend(allocate(FW_CFG_RSDP, RSDP_ALIGN as u32, ZONE_FSEG));
    loader.extend(allocate(FW_CFG_TABLES, FACS_ALIGN as u32, ZONE_HIGH));
    loader.extend(add_pointer(FW_CFG_RSDP, FW_CFG_TABLES, RSDP_XSDT_AT, 8));
    loader.extend(add_pointer(FW_CFG_RSDP, FW_CFG_TABLES, RSDP_RSDT_AT, 4));
    // Every entry of the XSDT (8 bytes each) and of the RSDT (4 bytes).
    for (table, len, size) in [(at.xsdt, xsdt_len, 8u8), (rsdt, rsdt_len, 4)] {
        let entries = (len - HEADER_LEN as u32) / u32::from(size);
        for entry in 0..entries {
            let field = table + HEADER_LEN as u64 + u64::from(size) * u64::from(entry);
            loader.extend(add_pointer(
                FW_CFG_TABLES,
                FW_CFG_TABLES,
                offset(field)?,
                size,
            ));
        }
    }
    for (field, size) in [(FADT_FACS_AT, 4), (FADT_DSDT_AT, 4), (FADT_X_DSDT_AT, 8)] {
        let field = offset(at.fadt + field)?;
        loader.extend(add_pointer(FW_CFG_TABLES, FW_CFG_TABLES, field, size));
    }
    for (start, len) in [(at.xsdt, xsdt_len), (rsdt, rsdt_len), (at.fadt, fadt_len)] {
        let start = offset(start)?;
        loader.extend(add_checksum(
            FW_CFG_TABLES,
            start + CHECKSUM_OFFSET as u32,
            start,
            len,
        ));
    }
    // The RSDP's two checksums: over its first 20 bytes, then all of it.
    loader.extend(add_checksum(FW_CFG_RSDP, 8, 0, 20));
    loader.extend(add_checksum(FW_CFG_RSDP, 32, 0, RSDP_LEN as u32));
    Ok(FirmwareTables {
        tables: built.tables,
        rsdp: built.rsdp,
        loader,
    })
}

/// Builds the tables and writes them into guest memory: the RSDP at
/// `rsdp_addr` (16-byte aligned, as the guest scans for it on 16-byte
/// boundaries) and the rest at `tables_addr`.
pub fn write(
    mem: &GuestMemoryMmap,
    config: &AcpiConfig,
    rsdp_addr: u64,
    tables_addr: u64,
) -> Result<(), AcpiError> {
    check_aligned("RSDP", rsdp_addr, RSDP_ALIGN)?;
    let built = build(config, tables_addr)?;
    let rsdp_end = rsdp_addr
        .checked_add(RSDP_LEN as u64)
        .ok_or(AcpiError::AddressOverflow(rsdp_addr))?;
    let tables_end = tables_addr
        .checked_add(built.tables.len() as u64)
        .ok_or(AcpiError::AddressOverflow(tables_addr))?;
    if rsdp_addr < tables_end && tables_addr < rsdp_end {
        return Err(AcpiError::Overlap {
            rsdp: rsdp_addr,
            tables: tables_addr,
        });
    }
    for (what, addr, bytes) in [
        ("ACPI tables", tables_addr, &built.tables),
        ("RSDP", rsdp_addr, &built.rsdp),
    ] {
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(|source| AcpiError::GuestMemory { what, addr, source })?;
    }
    log::debug!(
        "ACPI: RSDP at {rsdp_addr:#x}, {} bytes of tables at {tables_addr:#x}",
        built.tables.len()
    );
    Ok(())
}

fn check_aligned(what: &'static str, addr: u64, align: u64) -> Result<(), AcpiError> {
    if addr % align == 0 {
        Ok(())
    } else {
        Err(AcpiError::Misaligned { what, addr, align })
    }
}

/// Reserves `len` bytes at the next `align`-aligned address from `end`,
/// moves `end` past them, and returns their address.
fn place(end: &mut u64, len: usize, align: u64) -> Option<u64> {
    let addr = end.checked_next_multiple_of(align)?;
    *end = addr.checked_add(u64::try_from(len).ok()?)?;
    Some(addr)
}

// --- Table serialisation --------------------------------------------------

/// The byte that makes `bytes` sum to zero mod 256.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

fn set_byte(bytes: &mut [u8], at: usize, value: u8) {
    if let Some(slot) = bytes.get_mut(at) {
        *slot = value;
    }
}

/// A System Description Table: the standard 36-byte header, then `body`,
/// with the length and checksum filled in.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(HEADER_LEN + body.len()).unwrap_or(u32::MAX);
    let mut table = Vec::with_capacity(HEADER_LEN + body.len());
    table.extend_from_slice(signature);
    table.extend_from_slice(&len.to_le_bytes());
    table.push(revision);
    table.push(0); // checksum, below
    table.extend_from_slice(OEM_ID);
    table.extend_from_slice(OEM_TABLE_ID);
    table.extend_from_slice(&OEM_REVISION.to_le_bytes());
    table.extend_from_slice(CREATOR_ID);
    table.extend_from_slice(&CREATOR_REVISION.to_le_bytes());
    table.extend_from_slice(body);
    let sum = checksum(&table);
    set_byte(&mut table, CHECKSUM_OFFSET, sum);
    table
}

/// The ACPI 2.0+ Root System Description Pointer.
fn rsdp(xsdt_addr: u64, rsdt_addr: u32) -> Vec<u8> {
    const V1_LEN: usize = 20;
    const CHECKSUM_AT: usize = 8;
    const EXTENDED_CHECKSUM_AT: usize = 32;
    let mut rsdp = Vec::with_capacity(RSDP_LEN);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0); // checksum of the first 20 bytes, below
    rsdp.extend_from_slice(OEM_ID);
    rsdp.push(2); // revision: ACPI 2.0+
    rsdp.extend_from_slice(&rsdt_addr.to_le_bytes());
    rsdp.extend_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    rsdp.extend_from_slice(&xsdt_addr.to_le_bytes());
    rsdp.push(0); // extended checksum, below
    rsdp.extend_from_slice(&[0; 3]);
    let sum = checksum(rsdp.get(..V1_LEN).unwrap_or_default());
    set_byte(&mut rsdp, CHECKSUM_AT, sum);
    let sum = checksum(&rsdp);
    set_byte(&mut rsdp, EXTENDED_CHECKSUM_AT, sum);
    rsdp
}

fn xsdt(entries: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = entries.iter().flat_map(|a| a.to_le_bytes()).collect();
    sdt(b"XSDT", 1, &body)
}

fn rsdt(entries: &[u32]) -> Vec<u8> {
    let body: Vec<u8> = entries.iter().flat_map(|a| a.to_le_bytes()).collect();
    sdt(b"RSDT", 1, &body)
}

/// Generic Address Structure address space: system I/O.
const GAS_SYSTEM_IO: u8 = 1;
/// GAS access sizes.
const ACCESS_BYTE: u8 = 1;
const ACCESS_WORD: u8 = 2;
const ACCESS_DWORD: u8 = 3;

/// A Generic Address Structure for `len` bytes of I/O ports at `port`.
fn io_gas(port: u16, len: u16, access_size: u8) -> [u8; 12] {
    let mut gas = [0u8; 12];
    let bit_width = u8::try_from(len * 8).unwrap_or(u8::MAX);
    let head = [GAS_SYSTEM_IO, bit_width, 0, access_size];
    for (slot, byte) in gas
        .iter_mut()
        .zip(head.iter().chain(&u64::from(port).to_le_bytes()))
    {
        *slot = *byte;
    }
    gas
}

/// The Fixed ACPI Description Table, revision 6.
fn fadt(config: &AcpiConfig, dsdt_addr: u64, facs_addr: u64) -> Vec<u8> {
    const FLAG_WBINVD: u32 = 1 << 0;
    const FLAG_PROC_C1: u32 = 1 << 2;
    const FLAG_SLP_BUTTON: u32 = 1 << 5;
    const FLAG_RESET_REG_SUP: u32 = 1 << 10;
    const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
    const IAPC_8042: u16 = 1 << 1;
    const CMOS_CENTURY: u8 = 0x32;

    let base = config.pm_base;
    let pm1_evt = base;
    let pm1_cnt = base.wrapping_add(PM1_CNT_OFFSET);
    let pm_tmr = base.wrapping_add(PM_TMR_OFFSET);
    let gpe0 = base.wrapping_add(GPE0_OFFSET);
    // The 64-bit field takes over when the FACS sits above 4 GiB.
    let (firmware_ctrl, x_firmware_ctrl) = match u32::try_from(facs_addr) {
        Ok(addr) => (addr, 0),
        Err(_) => (0, facs_addr),
    };
    let dsdt32 = u32::try_from(dsdt_addr).unwrap_or(0);
    let len8 = |len: u16| u8::try_from(len).unwrap_or(u8::MAX);

    let mut b = Vec::with_capacity(FADT_LEN - HEADER_LEN);
    b.extend_from_slice(&firmware_ctrl.to_le_bytes());
    b.extend_from_slice(&dsdt32.to_le_bytes());
    b.push(0); // reserved (was INT_MODEL)
    b.push(0); // Preferred_PM_Profile: unspecified
    b.extend_from_slice(&u16::from(config.sci_irq).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // SMI_CMD: always in ACPI mode
    b.push(0); // ACPI_ENABLE
    b.push(0); // ACPI_DISABLE
    b.push(0); // S4BIOS_REQ
    b.push(0); // PSTATE_CNT
    for port in [pm1_evt, 0, pm1_cnt, 0, 0, pm_tmr, gpe0, 0] {
        // PM1a/b EVT, PM1a/b CNT, PM2 CNT, PM_TMR, GPE0, GPE1
        b.extend_from_slice(&u32::from(port).to_le_bytes());
    }
    b.push(len8(PM1_EVT_LEN));
    b.push(len8(PM1_CNT_LEN));
    b.push(0); // PM2_CNT_LEN
    b.push(len8(PM_TMR_LEN));
    b.push(len8(GPE0_LEN));
    b.push(0); // GPE1_BLK_LEN
    b.push(0); // GPE1_BASE
    b.push(0); // CST_CNT
    b.extend_from_slice(&101u16.to_le_bytes()); // P_LVL2_LAT: no C2
    b.extend_from_slice(&1001u16.to_le_bytes()); // P_LVL3_LAT: no C3
    b.extend_from_slice(&0u16.to_le_bytes()); // FLUSH_SIZE
    b.extend_from_slice(&0u16.to_le_bytes()); // FLUSH_STRIDE
    b.push(0); // DUTY_OFFSET
    b.push(0); // DUTY_WIDTH
    b.push(0); // DAY_ALRM
    b.push(0); // MON_ALRM
    b.push(CMOS_CENTURY);
    b.extend_from_slice(&(IAPC_LEGACY_DEVICES | IAPC_8042).to_le_bytes());
    b.push(0); // reserved
    let flags = FLAG_WBINVD | FLAG_PROC_C1 | FLAG_SLP_BUTTON | FLAG_RESET_REG_SUP;
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&io_gas(RESET_PORT, 1, ACCESS_BYTE));
    b.push(RESET_VALUE);
    b.extend_from_slice(&0u16.to_le_bytes()); // ARM_BOOT_ARCH
    b.push(0); // FADT minor version
    b.extend_from_slice(&x_firmware_ctrl.to_le_bytes());
    b.extend_from_slice(&dsdt_addr.to_le_bytes());
    let none = [0u8; 12];
    b.extend_from_slice(&io_gas(pm1_evt, PM1_EVT_LEN, ACCESS_WORD));
    b.extend_from_slice(&none); // X_PM1b_EVT_BLK
    b.extend_from_slice(&io_gas(pm1_cnt, PM1_CNT_LEN, ACCESS_WORD));
    b.extend_from_slice(&none); // X_PM1b_CNT_BLK
    b.extend_from_slice(&none); // X_PM2_CNT_BLK
    b.extend_from_slice(&io_gas(pm_tmr, PM_TMR_LEN, ACCESS_DWORD));
    b.extend_from_slice(&io_gas(gpe0, GPE0_LEN, ACCESS_BYTE));
    b.extend_from_slice(&none); // X_GPE1_BLK
    b.extend_from_slice(&none); // SLEEP_CONTROL_REG
    b.extend_from_slice(&none); // SLEEP_STATUS_REG
    b.extend_from_slice(b"NESTBOX\0"); // hypervisor vendor identity
    sdt(b"FACP", 6, &b)
}

/// The Firmware ACPI Control Structure (no checksum).
fn facs() -> Vec<u8> {
    let mut facs = Vec::with_capacity(FACS_LEN);
    facs.extend_from_slice(b"FACS");
    facs.extend_from_slice(&(FACS_LEN as u32).to_le_bytes());
    facs.extend_from_slice(&0u32.to_le_bytes()); // hardware signature
    facs.extend_from_slice(&0u32.to_le_bytes()); // firmware waking vector
    facs.extend_from_slice(&0u32.to_le_bytes()); // global lock
    facs.extend_from_slice(&0u32.to_le_bytes()); // flags
    facs.extend_from_slice(&0u64.to_le_bytes()); // X firmware waking vector
    facs.push(2); // version
    facs.resize(FACS_LEN, 0); // reserved, OSPM flags, reserved
    facs
}

/// The Multiple APIC Description Table.
fn madt(vcpus: u8, sci_irq: u8) -> Vec<u8> {
    const PCAT_COMPAT: u32 = 1;
    const LAPIC: u8 = 0;
    const IOAPIC: u8 = 1;
    const SOURCE_OVERRIDE: u8 = 2;
    const LAPIC_NMI: u8 = 4;
    const LAPIC_ENABLED: u32 = 1;
    const CONFORMING: u16 = 0;
    const ACTIVE_HIGH: u16 = 0b01;
    const EDGE: u16 = 0b01 << 2;
    const LEVEL: u16 = 0b11 << 2;
    const ALL_PROCESSORS: u8 = 0xFF;

    let mut b = Vec::new();
    b.extend_from_slice(&(LAPIC_START as u32).to_le_bytes());
    b.extend_from_slice(&PCAT_COMPAT.to_le_bytes());
    for id in 0..vcpus {
        b.extend_from_slice(&[LAPIC, 8, id, id]);
        b.extend_from_slice(&LAPIC_ENABLED.to_le_bytes());
    }
    // The I/O APIC takes the first ID after the local APICs.
    b.extend_from_slice(&[IOAPIC, 12, vcpus, 0]);
    b.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // GSI base
    for (irq, gsi, flags) in [
        (0, 2, CONFORMING),
        (sci_irq, u32::from(sci_irq), ACTIVE_HIGH | LEVEL),
    ] {
        b.extend_from_slice(&[SOURCE_OVERRIDE, 10, 0, irq]);
        b.extend_from_slice(&gsi.to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
    }
    b.extend_from_slice(&[LAPIC_NMI, 6, ALL_PROCESSORS]);
    b.extend_from_slice(&(ACTIVE_HIGH | EDGE).to_le_bytes());
    b.push(1); // LINT1
    sdt(b"APIC", 4, &b)
}

// --- AML ----------------------------------------------------------------

const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const NAME_OP: u8 = 0x08;
const BYTE_PREFIX: u8 = 0x0A;
const WORD_PREFIX: u8 = 0x0B;
const DWORD_PREFIX: u8 = 0x0C;
const QWORD_PREFIX: u8 = 0x0E;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const DUAL_NAME_PREFIX: u8 = 0x2E;
const MULTI_NAME_PREFIX: u8 = 0x2F;
const EXT_OP_PREFIX: u8 = 0x5B;
const DEVICE_OP: u8 = 0x82;
const ROOT_CHAR: u8 = b'\\';
const NULL_NAME: u8 = 0x00;

/// A NameSeg: 1 to 4 characters, padded with '_'.
fn name_seg(seg: &str) -> [u8; 4] {
    debug_assert!(
        (1..=4).contains(&seg.len())
            && seg
                .bytes()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
            && !seg.starts_with(|c: char| c.is_ascii_digit()),
        "bad AML name segment {seg:?}"
    );
    let mut out = [b'_'; 4];
    for (slot, byte) in out.iter_mut().zip(seg.bytes()) {
        *slot = byte;
    }
    out
}

/// A NameString: an optional leading `\`, then dot-separated segments.
fn name_string(path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let relative = match path.strip_prefix('\\') {
        Some(rest) => {
            out.push(ROOT_CHAR);
            rest
        }
        None => path,
    };
    let segs: Vec<[u8; 4]> = if relative.is_empty() {
        Vec::new()
    } else {
        relative.split('.').map(name_seg).collect()
    };
    match segs.len() {
        0 => out.push(NULL_NAME),
        1 => {}
        2 => out.push(DUAL_NAME_PREFIX),
        n => {
            out.push(MULTI_NAME_PREFIX);
            out.push(u8::try_from(n).unwrap_or(u8::MAX));
        }
    }
    out.extend(segs.iter().flatten());
    out
}

/// Encodes `value` as a PkgLength in the shortest form (1 to 4 bytes).
fn pkg_length_encoding(value: usize) -> Vec<u8> {
    debug_assert!(value <= 0x0FFF_FFFF, "AML package too long");
    if value <= 0x3F {
        return vec![value as u8];
    }
    let follow: usize = match value {
        0..=0xFFF => 1,
        0x1000..=0xF_FFFF => 2,
        _ => 3,
    };
    let lead = ((follow as u8) << 6) | (value & 0x0F) as u8;
    std::iter::once(lead)
        .chain((0..follow).map(|i| (value >> (4 + 8 * i)) as u8))
        .collect()
}

/// The PkgLength in front of `payload_len` bytes. It counts its own bytes
/// too, so the form is chosen on the total.
fn pkg_length(payload_len: usize) -> Vec<u8> {
    let own = (1..=4)
        .find(|&n| pkg_length_encoding(payload_len + n).len() == n)
        .unwrap_or(4);
    pkg_length_encoding(payload_len + own)
}

/// `opcode`, a PkgLength, then `body`.
fn with_pkg_length(opcode: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = opcode.to_vec();
    out.extend(pkg_length(body.len()));
    out.extend_from_slice(body);
    out
}

/// An integer constant in its shortest encoding.
fn integer(value: u64) -> Vec<u8> {
    match value {
        0 => vec![ZERO_OP],
        1 => vec![ONE_OP],
        2..=0xFF => vec![BYTE_PREFIX, value as u8],
        0x100..=0xFFFF => [&[WORD_PREFIX][..], &(value as u16).to_le_bytes()].concat(),
        0x1_0000..=0xFFFF_FFFF => [&[DWORD_PREFIX][..], &(value as u32).to_le_bytes()].concat(),
        _ => [&[QWORD_PREFIX][..], &value.to_le_bytes()].concat(),
    }
}

/// The 32-bit compressed form of an EISA ID such as "PNP0A03": three
/// letters in five bits each, then four hex digits, stored big-endian.
fn eisa_id(id: &[u8; 7]) -> u32 {
    let (letters, digits) = id.split_at(3);
    let vendor = letters.iter().fold(0u16, |acc, c| {
        (acc << 5) | u16::from(c.wrapping_sub(b'@') & 0x1F)
    });
    let product = digits.iter().fold(0u16, |acc, c| {
        (acc << 4) | char::from(*c).to_digit(16).map_or(0, |d| d as u16)
    });
    let [v0, v1] = vendor.to_be_bytes();
    let [p0, p1] = product.to_be_bytes();
    u32::from_le_bytes([v0, v1, p0, p1])
}

/// `Name(path, value)`.
fn name(path: &str, value: Vec<u8>) -> Vec<u8> {
    let mut out = vec![NAME_OP];
    out.extend(name_string(path));
    out.extend(value);
    out
}

/// `Package(n) { elements }`.
fn package(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut body = vec![u8::try_from(elements.len()).unwrap_or(u8::MAX)];
    body.extend(elements.iter().flatten());
    with_pkg_length(&[PACKAGE_OP], &body)
}

/// `Buffer(n) { bytes }`.
fn buffer(bytes: &[u8]) -> Vec<u8> {
    let mut body = integer(bytes.len() as u64);
    body.extend_from_slice(bytes);
    with_pkg_length(&[BUFFER_OP], &body)
}

fn named_block(opcode: &[u8], path: &str, terms: &[Vec<u8>]) -> Vec<u8> {
    let mut body = name_string(path);
    body.extend(terms.iter().flatten());
    with_pkg_length(opcode, &body)
}

/// `Scope(path) { terms }`.
fn scope(path: &str, terms: &[Vec<u8>]) -> Vec<u8> {
    named_block(&[SCOPE_OP], path, terms)
}

/// `Device(path) { terms }`.
fn device(path: &str, terms: &[Vec<u8>]) -> Vec<u8> {
    named_block(&[EXT_OP_PREFIX, DEVICE_OP], path, terms)
}

// --- Resource descriptors -------------------------------------------------

const IO_PORT_TAG: u8 = 0x47;
const IRQ_NO_FLAGS_TAG: u8 = 0x22;
const END_TAG: u8 = 0x79;
const DWORD_ADDRESS_TAG: u8 = 0x87;
const WORD_ADDRESS_TAG: u8 = 0x88;

const SPACE_MEMORY: u8 = 0;
const SPACE_IO: u8 = 1;
const SPACE_BUS: u8 = 2;
/// General flags of a bridge window: producer, positive decode, fixed
/// minimum and maximum.
const PRODUCER_FIXED: u8 = (1 << 2) | (1 << 3);
/// I/O type-specific flags: both ISA and non-ISA ranges.
const IO_ENTIRE_RANGE: u8 = 0b11;
/// Memory type-specific flags.
const MEM_READ_WRITE: u8 = 1;
const MEM_CACHEABLE: u8 = 1 << 1;

/// `IO(Decode16, base, base, 1, len)`: a fixed range of I/O ports.
fn io_port(base: u16, len: u8) -> Vec<u8> {
    const DECODE16: u8 = 1;
    let mut d = vec![IO_PORT_TAG, DECODE16];
    d.extend_from_slice(&base.to_le_bytes());
    d.extend_from_slice(&base.to_le_bytes());
    d.push(1); // alignment
    d.push(len);
    d
}

/// `IRQNoFlags() { irq }`: an edge-triggered, active-high ISA IRQ.
fn irq_no_flags(irq: u8) -> Vec<u8> {
    let mask = 1u16.checked_shl(u32::from(irq)).unwrap_or(0);
    let mut d = vec![IRQ_NO_FLAGS_TAG];
    d.extend_from_slice(&mask.to_le_bytes());
    d
}

/// A Word Address Space Descriptor for `min..=max`.
fn word_address(space: u8, type_flags: u8, min: u16, max: u16) -> Vec<u8> {
    let len = max.wrapping_sub(min).wrapping_add(1);
    let mut d = vec![WORD_ADDRESS_TAG];
    d.extend_from_slice(&13u16.to_le_bytes());
    d.extend_from_slice(&[space, PRODUCER_FIXED, type_flags]);
    for field in [0, min, max, 0, len] {
        // granularity, minimum, maximum, translation, length
        d.extend_from_slice(&field.to_le_bytes());
    }
    d
}

/// A DWord Address Space Descriptor for memory `min..=max`.
fn dword_memory(type_flags: u8, min: u32, max: u32) -> Vec<u8> {
    let len = max.wrapping_sub(min).wrapping_add(1);
    let mut d = vec![DWORD_ADDRESS_TAG];
    d.extend_from_slice(&23u16.to_le_bytes());
    d.extend_from_slice(&[SPACE_MEMORY, PRODUCER_FIXED, type_flags]);
    for field in [0, min, max, 0, len] {
        d.extend_from_slice(&field.to_le_bytes());
    }
    d
}

/// `ResourceTemplate() { descriptors }`, with the End Tag (checksum 0:
/// not checked).
fn resource_template(descriptors: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes: Vec<u8> = descriptors.concat();
    bytes.extend_from_slice(&[END_TAG, 0]);
    buffer(&bytes)
}

// --- DSDT -----------------------------------------------------------------

const PCI_CONFIG_PORT: u16 = 0xCF8;
const COM1_PORT: u16 = 0x3F8;
const COM1_IRQ: u8 = 4;

/// `Device(PCI0)`: the host bridge, with bus 0, the I/O ports around the
/// config-space ports, the VGA window and the 32-bit MMIO hole as the
/// windows it forwards. It has a `_HID` and so no `_ADR`: the spec allows
/// one or the other, and `iasl` warns about both.
fn pci_host_bridge() -> Vec<u8> {
    let crs = resource_template(&[
        word_address(SPACE_BUS, 0, 0, 0xFF),
        io_port(PCI_CONFIG_PORT, 8),
        word_address(SPACE_IO, IO_ENTIRE_RANGE, 0, PCI_CONFIG_PORT - 1),
        word_address(SPACE_IO, IO_ENTIRE_RANGE, 0x0D00, 0xFFFF),
        dword_memory(
            MEM_READ_WRITE | MEM_CACHEABLE,
            VGA_WINDOW_START as u32,
            (ROM_AREA_START - 1) as u32,
        ),
        dword_memory(
            MEM_READ_WRITE,
            PCI_MMIO_START as u32,
            (PCI_MMIO_END - 1) as u32,
        ),
    ]);
    device(
        "PCI0",
        &[
            name("_HID", dword_integer(eisa_id(b"PNP0A03"))),
            name("_UID", integer(0)),
            name("_BBN", integer(0)),
            name("_CRS", crs),
            name("_PRT", pci_routing_table()),
        ],
    )
}

/// Slots that can hold a device with an INTx line (0 is the host bridge,
/// 1 the PIIX3, whose IDE function uses the legacy IRQs 14 and 15).
const INTX_SLOTS: std::ops::Range<u8> = 2..32;

/// `_PRT`: the GSI of INTA of every device slot, as the engine wires it
/// (`devices::pci::intx_gsi`). Each entry is `Package { address (slot in
/// the high word, 0xFFFF: any function), pin 0 (INTA), source 0 (a GSI,
/// level-triggered and active-low, which KVM's I/O APIC takes as
/// asserted-high anyway), the GSI }`. Without it Linux falls back to the
/// interrupt line register and programs the line edge-triggered.
fn pci_routing_table() -> Vec<u8> {
    let entries: Vec<Vec<u8>> = INTX_SLOTS
        .map(|slot| {
            package(&[
                integer((u64::from(slot) << 16) | 0xFFFF),
                integer(0),
                integer(0),
                integer(u64::from(crate::devices::pci::intx_gsi(slot))),
            ])
        })
        .collect();
    package(&entries)
}

/// `Device(COM1)`: the first 16550 UART, so the guest's PNP layer finds it.
fn com1() -> Vec<u8> {
    device(
        "COM1",
        &[
            name("_HID", dword_integer(eisa_id(b"PNP0501"))),
            name("_UID", integer(1)),
            name(
                "_CRS",
                resource_template(&[io_port(COM1_PORT, 8), irq_no_flags(COM1_IRQ)]),
            ),
        ],
    )
}

/// An EISA ID always goes out as a DWord, as ASL compilers emit it.
fn dword_integer(value: u32) -> Vec<u8> {
    [&[DWORD_PREFIX][..], &value.to_le_bytes()].concat()
}

/// The Differentiated System Description Table (revision 2: 64-bit
/// integers).
fn dsdt() -> Vec<u8> {
    let s5 = u64::from(SLP_TYP_S5);
    let aml = [
        name(
            "_S5_",
            package(&[integer(s5), integer(s5), integer(0), integer(0)]),
        ),
        scope("\\_SB_", &[pci_host_bridge(), com1()]),
    ]
    .concat();
    sdt(b"DSDT", 2, &aml)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLES_ADDR: u64 = 0xE_0000 + 0x100;

    fn config(vcpus: u32) -> AcpiConfig {
        AcpiConfig {
            vcpus,
            pm_base: 0x600,
            sci_irq: 9,
        }
    }

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    fn u16_at(bytes: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap())
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    fn u64_at(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    /// The table (as long as its header says) at guest address `addr`.
    fn table_at(built: &AcpiTables, addr: u64) -> &[u8] {
        let offset = (addr - TABLES_ADDR) as usize;
        let len = u32_at(&built.tables, offset + 4) as usize;
        &built.tables[offset..offset + len]
    }

    fn xsdt_of(built: &AcpiTables) -> &[u8] {
        table_at(built, TABLES_ADDR)
    }

    fn fadt_of(built: &AcpiTables) -> &[u8] {
        table_at(built, u64_at(xsdt_of(built), 36))
    }

    fn madt_of(built: &AcpiTables) -> &[u8] {
        table_at(built, u64_at(xsdt_of(built), 44))
    }

    fn dsdt_of(built: &AcpiTables) -> &[u8] {
        table_at(built, u64_at(fadt_of(built), 140))
    }

    /// The MADT's interrupt controller structures, as (type, bytes).
    fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut entries = Vec::new();
        let mut at = 44;
        while at < madt.len() {
            let len = madt[at + 1] as usize;
            entries.push((madt[at], madt[at..at + len].to_vec()));
            at += len;
        }
        entries
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn test_build_default_config_table_checksums_zero() {
        // Arrange
        let built = build(&config(2), TABLES_ADDR).unwrap();

        // Act
        let sums = [
            sum(xsdt_of(&built)),
            sum(fadt_of(&built)),
            sum(madt_of(&built)),
            sum(dsdt_of(&built)),
        ];

        // Assert
        assert_eq!(sums, [0; 4]);
    }

    #[test]
    fn test_build_rsdp_both_checksums_zero() {
        // Arrange
        let built = build(&config(2), TABLES_ADDR).unwrap();

        // Act
        let rsdp = &built.rsdp;

        // Assert
        assert_eq!(rsdp.len(), RSDP_LEN);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(rsdp[15], 2);
        assert_eq!(sum(&rsdp[..20]), 0);
        assert_eq!(sum(rsdp), 0);
    }

    #[test]
    fn test_build_rsdp_points_at_xsdt_and_rsdt() {
        // Arrange
        let built = build(&config(2), TABLES_ADDR).unwrap();

        // Act
        let rsdt = u32_at(&built.rsdp, 16);
        let xsdt = u64_at(&built.rsdp, 24);

        // Assert
        assert_eq!(xsdt, TABLES_ADDR);
        assert_eq!(&built.tables[..4], b"XSDT");
        assert_eq!(&table_at(&built, u64::from(rsdt))[..4], b"RSDT");
    }

    #[test]
    fn test_build_rsdt_lists_the_xsdt_entries_in_32_bits() {
        // Arrange
        let built = build(&config(2), TABLES_ADDR).unwrap();

        // Act
        let rsdt = table_at(&built, u64::from(u32_at(&built.rsdp, 16)));
        let entries: Vec<u64> = (36..rsdt.len())
            .step_by(4)
            .map(|at| u64::from(u32_at(rsdt, at)))
            .collect();

        // Assert
        assert_eq!(sum(rsdt), 0);
        assert_eq!(
            entries,
            [u64_at(xsdt_of(&built), 36), u64_at(xsdt_of(&built), 44)]
        );
    }

    #[test]
    fn test_build_xsdt_entries_point_at_fadt_and_madt() {
        // Arrange
        let built = build(&config(2), TABLES_ADDR).unwrap();

        // Act
        let xsdt = xsdt_of(&built);

        // Assert
        assert_eq!(xsdt.len(), 36 + 16);
        assert_eq!(&fadt_of(&built)[..4], b"FACP");
        assert_eq!(&madt_of(&built)[..4], b"APIC");
    }

    #[test]
    fn test_build_tables_header_identity_matches() {
        // Arrange
        let built = build(&config(2), TABLES_ADDR).unwrap();

        // Act
        let fadt = fadt_of(&built);

        // Assert
        assert_eq!(&fadt[10..16], b"NESTBX");
        assert_eq!(&fadt[16..24], b"NESTBOX ");
        assert_eq!(u32_at(fadt, 24), 1);
        assert_eq!(&fadt[28..32], b"NBOX");
        assert_eq!(u32_at(fadt, 32), 1);
    }

    #[test]
    fn test_build_four_vcpus_madt_has_four_lapic_entries() {
        // Arrange
        let built = build(&config(4), TABLES_ADDR).unwrap();

        // Act
        let entries = madt_entries(madt_of(&built));
        let lapics: Vec<&Vec<u8>> = entries
            .iter()
            .filter(|(kind, _)| *kind == 0)
            .map(|(_, bytes)| bytes)
            .collect();

        // Assert
        assert_eq!(lapics.len(), 4);
        assert_eq!(lapics[3], &vec![0, 8, 3, 3, 1, 0, 0, 0]);
    }

    #[test]
    fn test_build_four_vcpus_madt_ioapic_id_follows_lapics() {
        // Arrange
        let built = build(&config(4), TABLES_ADDR).unwrap();

        // Act
        let entries = madt_entries(madt_of(&built));
        let ioapic = entries.iter().find(|(kind, _)| *kind == 1).unwrap();

        // Assert
        assert_eq!(ioapic.1.len(), 12);
        assert_eq!(ioapic.1[2], 4);
        assert_eq!(u32_at(&ioapic.1, 4), IOAPIC_START as u32);
        assert_eq!(u32_at(&ioapic.1, 8), 0);
    }

    #[test]
    fn test_build_madt_header_lapic_address_and_pcat_compat() {
        // Arrange
        let built = build(&config(1), TABLES_ADDR).unwrap();

        // Act
        let madt = madt_of(&built);

        // Assert
        assert_eq!(u32_at(madt, 36), LAPIC_START as u32);
        assert_eq!(u32_at(madt, 40), 1);
    }

    #[test]
    fn test_build_madt_overrides_timer_and_level_sci() {
        // Arrange
        let built = build(&config(1), TABLES_ADDR).unwrap();

        // Act
        let entries = madt_entries(madt_of(&built));
        let overrides: Vec<&Vec<u8>> = entries
            .iter()
            .filter(|(kind, _)| *kind == 2)
            .map(|(_, bytes)| bytes)
            .collect();

        // Assert
        assert_eq!(
            overrides,
            [
                &vec![2, 10, 0, 0, 2, 0, 0, 0, 0, 0],
                &vec![2, 10, 0, 9, 9, 0, 0, 0, 0x0D, 0]
            ]
        );
    }

    #[test]
    fn test_build_madt_lapic_nmi_on_lint1_for_all() {
        // Arrange
        let built = build(&config(1), TABLES_ADDR).unwrap();

        // Act
        let entries = madt_entries(madt_of(&built));
        let nmi = entries.iter().find(|(kind, _)| *kind == 4).unwrap();

        // Assert
        assert_eq!(nmi.1, vec![4, 6, 0xFF, 0x05, 0x00, 1]);
    }

    #[test]
    fn test_build_fadt_pm_blocks_follow_pm_base() {
        // Arrange
        let built = build(&config(2), TABLES_ADDR).unwrap();

        // Act
        let fadt = fadt_of(&built);

        // Assert
        assert_eq!(u32_at(fadt, 56), 0x600);
        assert_eq!(u32_at(fadt, 64), 0x604);
        assert_eq!(u32_at(fadt, 76), 0x608);
        assert_eq!(u32_at(fadt, 80), 0x610);
        assert_eq!(&fadt[88..93], &[4, 2, 0, 4, 4]);
    }

    #[test]
    fn test_build_fadt_sci_int_is_sci_irq() {
        // Arrange
        let built = build(&config(2), TABLES_ADDR).unwrap();

        // Act
        let sci = u16_at(fadt_of(&built), 46);

        // Assert
        assert_eq!(sci, 9);
    }

    #[test]
    fn test_build_fadt_revision_6_is_276_bytes() {
        // Arrange
        let built = build(&config(2), TABLES_ADDR).unwrap();

        // Act
        let fadt = fadt_of(&built);

        // Assert
        assert_eq!(fadt.len(), 276);
        assert_eq!(fadt[8], 6);
        assert_eq!(&fadt[268..276], b"NESTBOX\0");
    }

    #[test]
    fn test_build_fadt_x_pm1a_cnt_is_io_word_gas() {
        // Arrange
        let built = build(&config(2), TABLES_ADDR).unwrap();

        // Act
        let gas = &fadt_of(&built)[172..184];

        // Assert
        assert_eq!(gas, &[1, 16, 0, 2, 0x04, 0x06, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn test_build_fadt_flags_and_reset_register() {
        // Arrange
        let built = build(&config(2), TABLES_ADDR).unwrap();

        // Act
        let fadt = fadt_of(&built);

        // Assert
        assert_eq!(u32_at(fadt, 112), 0x0425);
        assert_eq!(
            &fadt[116..129],
            &[1, 8, 0, 1, 0xF9, 0x0C, 0, 0, 0, 0, 0, 0, 6]
        );
        assert_eq!(u16_at(fadt, 109), 3);
        assert_eq!(fadt[108], 0x32);
    }

    #[test]
    fn test_build_fadt_facs_below_4g_uses_32bit_field() {
        // Arrange
        let built = build(&config(2), TABLES_ADDR).unwrap();

        // Act
        let fadt = fadt_of(&built);
        let facs_addr = u32_at(fadt, 36) as u64;
        let facs = &built.tables[(facs_addr - TABLES_ADDR) as usize..];

        // Assert
        assert_eq!(u64_at(fadt, 132), 0);
        assert_eq!(facs_addr % 64, 0);
        assert_eq!(&facs[..8], &[b'F', b'A', b'C', b'S', 64, 0, 0, 0]);
        assert_eq!(facs[32], 2);
        assert_eq!(facs.len(), 64);
    }

    #[test]
    fn test_build_fadt_dsdt_both_fields_agree() {
        // Arrange
        let built = build(&config(2), TABLES_ADDR).unwrap();

        // Act
        let fadt = fadt_of(&built);

        // Assert
        assert_eq!(u32_at(fadt, 40) as u64, u64_at(fadt, 140));
        assert_eq!(&dsdt_of(&built)[..4], b"DSDT");
        assert_eq!(dsdt_of(&built)[8], 2);
    }

    #[test]
    fn test_build_tables_above_4g_use_64bit_fields() {
        // Arrange
        let high = 0x1_0000_0000;

        // Act
        let built = build(&config(2), high).unwrap();
        let fadt_addr = u64_at(&built.tables, 36);
        let fadt = &built.tables[(fadt_addr - high) as usize..];

        // Assert
        assert_eq!(u32_at(fadt, 36), 0);
        assert_eq!(u64_at(fadt, 132) % 64, 0);
        assert_eq!(u32_at(fadt, 40), 0);
        assert!(u64_at(fadt, 140) > high);
        assert_eq!(u32_at(&built.rsdp, 16), 0, "no RSDT reaches 4 GiB and up");
    }

    #[test]
    fn test_build_dsdt_contains_s5_package() {
        // Arrange
        let built = build(&config(2), TABLES_ADDR).unwrap();

        // Act
        let dsdt = dsdt_of(&built);

        // Assert
        assert!(contains(
            dsdt,
            &[
                0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00
            ]
        ));
    }

    #[test]
    fn test_build_dsdt_contains_pci0_hid() {
        // Arrange
        let built = build(&config(2), TABLES_ADDR).unwrap();

        // Act
        let dsdt = dsdt_of(&built);

        // Assert
        assert!(contains(
            dsdt,
            &[0x08, b'_', b'H', b'I', b'D', 0x0C, 0x41, 0xD0, 0x0A, 0x03]
        ));
    }

    #[test]
    fn test_build_dsdt_routes_each_slot_inta_to_the_engines_gsi() {
        // Arrange
        let built = build(&config(2), TABLES_ADDR).unwrap();

        // Act
        let dsdt = dsdt_of(&built);

        // Assert: Name(_PRT, Package(30) {...}) with slot 2 on IRQ 10 and
        // slot 3 on IRQ 11, as devices::pci::intx_gsi wires them.
        assert!(contains(dsdt, b"_PRT"));
        let entry = |slot: u8, gsi: u8| {
            [
                0x12, 0x0B, 0x04, 0x0C, 0xFF, 0xFF, slot, 0x00, 0x00, 0x00, 0x0A, gsi,
            ]
        };
        assert!(contains(dsdt, &entry(2, 10)));
        assert!(contains(dsdt, &entry(3, 11)));
        assert!(contains(dsdt, &entry(31, 11)));
        assert!(
            !contains(dsdt, &entry(1, 11)),
            "the PIIX3 has no INTx entry"
        );
    }

    #[test]
    fn test_build_zero_vcpus_fails() {
        // Act
        let result = build(&config(0), TABLES_ADDR);

        // Assert
        assert!(matches!(result, Err(AcpiError::VcpuCount(0))));
    }

    #[test]
    fn test_build_256_vcpus_fails() {
        // Act
        let result = build(&config(256), TABLES_ADDR);

        // Assert
        assert!(matches!(result, Err(AcpiError::VcpuCount(256))));
    }

    #[test]
    fn test_build_255_vcpus_succeeds() {
        // Act
        let built = build(&config(255), TABLES_ADDR).unwrap();

        // Assert
        assert_eq!(sum(madt_of(&built)), 0);
    }

    #[test]
    fn test_build_pm_base_near_top_fails() {
        // Arrange
        let cfg = AcpiConfig {
            pm_base: 0xFFF0,
            ..config(1)
        };

        // Act
        let result = build(&cfg, TABLES_ADDR);

        // Assert
        assert!(matches!(result, Err(AcpiError::PmBase(0xFFF0))));
    }

    #[test]
    fn test_build_sci_irq_above_15_fails() {
        // Arrange
        let cfg = AcpiConfig {
            sci_irq: 16,
            ..config(1)
        };

        // Act
        let result = build(&cfg, TABLES_ADDR);

        // Assert
        assert!(matches!(result, Err(AcpiError::SciIrq(16))));
    }

    #[test]
    fn test_build_misaligned_address_fails() {
        // Act
        let result = build(&config(1), TABLES_ADDR + 4);

        // Assert
        assert!(matches!(result, Err(AcpiError::Misaligned { .. })));
    }

    #[test]
    fn test_build_address_at_top_fails() {
        // Act
        let result = build(&config(1), u64::MAX - 7);

        // Assert
        assert!(matches!(result, Err(AcpiError::AddressOverflow(_))));
    }

    #[test]
    fn test_write_fitting_memory_stores_rsdp_and_tables() {
        // Arrange
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let built = build(&config(2), TABLES_ADDR).unwrap();

        // Act
        write(&mem, &config(2), 0xE_0000, TABLES_ADDR).unwrap();
        let mut rsdp = [0u8; RSDP_LEN];
        mem.read_slice(&mut rsdp, GuestAddress(0xE_0000)).unwrap();
        let mut tables = vec![0u8; built.tables.len()];
        mem.read_slice(&mut tables, GuestAddress(TABLES_ADDR))
            .unwrap();

        // Assert
        assert_eq!(rsdp.to_vec(), built.rsdp);
        assert_eq!(tables, built.tables);
    }

    #[test]
    fn test_write_small_memory_returns_error() {
        // Arrange
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();

        // Act
        let result = write(&mem, &config(2), 0x800, 0x0F00);

        // Assert
        assert!(matches!(result, Err(AcpiError::GuestMemory { .. })));
    }

    #[test]
    fn test_write_overlapping_rsdp_fails() {
        // Arrange
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();

        // Act
        let result = write(&mem, &config(2), TABLES_ADDR + 0x10, TABLES_ADDR);

        // Assert
        assert!(matches!(result, Err(AcpiError::Overlap { .. })));
    }

    #[test]
    fn test_write_misaligned_rsdp_fails() {
        // Arrange
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();

        // Act
        let result = write(&mem, &config(2), 0xE_0008, TABLES_ADDR);

        // Assert
        assert!(matches!(result, Err(AcpiError::Misaligned { .. })));
    }

    #[test]
    fn test_pkg_length_encoding_0x3f_one_byte() {
        assert_eq!(pkg_length_encoding(0x3F), vec![0x3F]);
    }

    #[test]
    fn test_pkg_length_encoding_0x40_two_bytes() {
        assert_eq!(pkg_length_encoding(0x40), vec![0x40, 0x04]);
    }

    #[test]
    fn test_pkg_length_encoding_0xfff_two_bytes() {
        assert_eq!(pkg_length_encoding(0xFFF), vec![0x4F, 0xFF]);
    }

    #[test]
    fn test_pkg_length_encoding_0x1000_three_bytes() {
        assert_eq!(pkg_length_encoding(0x1000), vec![0x80, 0x00, 0x01]);
    }

    #[test]
    fn test_pkg_length_encoding_0x100000_four_bytes() {
        assert_eq!(pkg_length_encoding(0x10_0000), vec![0xC0, 0x00, 0x00, 0x01]);
    }

    #[test]
    fn test_pkg_length_payload_0x3e_counts_itself_in_one_byte() {
        assert_eq!(pkg_length(0x3E), vec![0x3F]);
    }

    #[test]
    fn test_pkg_length_payload_0x3f_counts_itself_in_two_bytes() {
        assert_eq!(pkg_length(0x3F), vec![0x41, 0x04]);
    }

    #[test]
    fn test_pkg_length_payload_0xffe_counts_itself_in_three_bytes() {
        assert_eq!(pkg_length(0xFFE), vec![0x81, 0x00, 0x01]);
    }

    #[test]
    fn test_integer_each_size_shortest_form() {
        assert_eq!(integer(0), vec![0x00]);
        assert_eq!(integer(1), vec![0x01]);
        assert_eq!(integer(0xFF), vec![0x0A, 0xFF]);
        assert_eq!(integer(0x100), vec![0x0B, 0x00, 0x01]);
        assert_eq!(integer(0x1_0000), vec![0x0C, 0, 0, 1, 0]);
        assert_eq!(integer(1 << 32), vec![0x0E, 0, 0, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn test_eisa_id_pnp0a03_compresses() {
        assert_eq!(eisa_id(b"PNP0A03"), 0x030A_D041);
    }

    #[test]
    fn test_eisa_id_pnp0501_compresses() {
        assert_eq!(eisa_id(b"PNP0501"), 0x0105_D041);
    }

    #[test]
    fn test_name_string_rooted_segment_prefixed() {
        assert_eq!(name_string("\\_SB_"), b"\\_SB_".to_vec());
    }

    #[test]
    fn test_name_string_short_segment_padded() {
        assert_eq!(name_string("_SB"), b"_SB_".to_vec());
    }

    #[test]
    fn test_name_string_two_segments_dual_prefix() {
        assert_eq!(name_string("_SB_.PCI0"), b"\x2E_SB_PCI0".to_vec());
    }

    #[test]
    fn test_name_string_three_segments_multi_prefix() {
        assert_eq!(
            name_string("\\_SB_.PCI0.COM1"),
            b"\\\x2F\x03_SB_PCI0COM1".to_vec()
        );
    }

    #[test]
    fn test_device_empty_body_wraps_name() {
        assert_eq!(device("COM1", &[]), b"\x5B\x82\x05COM1".to_vec());
    }

    #[test]
    fn test_resource_template_io_port_encodes_descriptor() {
        // Act
        let template = resource_template(&[io_port(0x3F8, 8)]);

        // Assert
        assert_eq!(
            template,
            vec![
                0x11, 0x0D, 0x0A, 0x0A, 0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08, 0x79, 0x00
            ]
        );
    }

    #[test]
    fn test_word_address_bus_range_encodes_descriptor() {
        assert_eq!(
            word_address(SPACE_BUS, 0, 0, 0xFF),
            vec![
                0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00, 0, 0, 0, 0, 0xFF, 0, 0, 0, 0x00, 0x01
            ]
        );
    }

    #[test]
    fn test_irq_no_flags_irq4_sets_bit4() {
        assert_eq!(irq_no_flags(4), vec![0x22, 0x10, 0x00]);
    }

    /// Writes the tables to `$TMPDIR/nestbox-acpi/*.dat` for `iasl -d`.
    #[test]
    #[ignore = "writes files for manual checking with iasl"]
    fn test_build_dump_requested_writes_table_files() {
        // Arrange
        let built = build(&config(4), TABLES_ADDR).unwrap();
        let dir = std::env::temp_dir().join("nestbox-acpi");
        std::fs::create_dir_all(&dir).unwrap();

        // Act
        std::fs::write(dir.join("rsdp.dat"), &built.rsdp).unwrap();
        std::fs::write(dir.join("xsdt.dat"), xsdt_of(&built)).unwrap();
        std::fs::write(dir.join("facp.dat"), fadt_of(&built)).unwrap();
        std::fs::write(dir.join("apic.dat"), madt_of(&built)).unwrap();
        std::fs::write(dir.join("dsdt.dat"), dsdt_of(&built)).unwrap();
        let facs_addr = u32_at(fadt_of(&built), 36) as u64;
        let facs_at = (facs_addr - TABLES_ADDR) as usize;
        std::fs::write(dir.join("facs.dat"), &built.tables[facs_at..facs_at + 64]).unwrap();

        // Assert
        assert!(dir.join("dsdt.dat").exists());
    }

    /// Runs a loader script as SeaBIOS does, with the tables blob at
    /// `tables_at` and the RSDP at `rsdp_at`; returns both blobs linked.
    fn link(fw: &FirmwareTables, tables_at: u64, rsdp_at: u64) -> (Vec<u8>, Vec<u8>) {
        let mut tables = fw.tables.clone();
        let mut rsdp = fw.rsdp.clone();
        let name = |bytes: &[u8]| {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            String::from_utf8(bytes[..end].to_vec()).unwrap()
        };
        let le = |bytes: &[u8]| u32::from_le_bytes(bytes.try_into().unwrap());
        for entry in fw.loader.chunks(LOADER_ENTRY_LEN) {
            assert_eq!(entry.len(), LOADER_ENTRY_LEN);
            match le(&entry[0..4]) {
                LOADER_ALLOCATE => {
                    let file = name(&entry[4..60]);
                    assert!(file == FW_CFG_TABLES || file == FW_CFG_RSDP, "{file}");
                }
                LOADER_ADD_POINTER => {
                    let dest = name(&entry[4..60]);
                    let src = name(&entry[60..116]);
                    let offset = le(&entry[116..120]) as usize;
                    let size = entry[120] as usize;
                    let base = if src == FW_CFG_TABLES {
                        tables_at
                    } else {
                        rsdp_at
                    };
                    let blob = if dest == FW_CFG_TABLES {
                        &mut tables
                    } else {
                        &mut rsdp
                    };
                    let mut value = [0u8; 8];
                    value[..size].copy_from_slice(&blob[offset..offset + size]);
                    let patched = u64::from_le_bytes(value) + base;
                    blob[offset..offset + size].copy_from_slice(&patched.to_le_bytes()[..size]);
                }
                LOADER_ADD_CHECKSUM => {
                    let file = name(&entry[4..60]);
                    let offset = le(&entry[60..64]) as usize;
                    let start = le(&entry[64..68]) as usize;
                    let length = le(&entry[68..72]) as usize;
                    let blob = if file == FW_CFG_TABLES {
                        &mut tables
                    } else {
                        &mut rsdp
                    };
                    let sum = blob[start..start + length]
                        .iter()
                        .fold(0u8, |a, &b| a.wrapping_add(b));
                    blob[offset] = blob[offset].wrapping_sub(sum);
                }
                other => panic!("unknown loader command {other}"),
            }
        }
        (tables, rsdp)
    }

    #[test]
    fn test_firmware_tables_linked_by_the_loader_equal_tables_built_in_place() {
        // Arrange: where SeaBIOS might allocate the blobs.
        let tables_at = 0x1ffd_0000;
        let rsdp_at = 0xf_5a40;
        for vcpus in [1, 2, 4] {
            let fw = build_for_firmware(&config(vcpus)).unwrap();

            // Act
            let (tables, rsdp) = link(&fw, tables_at, rsdp_at);

            // Assert: the same bytes as tables built at that address for a
            // direct boot, checksums included.
            let direct = build(&config(vcpus), tables_at).unwrap();
            assert_eq!(tables, direct.tables, "{vcpus} vCPUs");
            assert_eq!(rsdp, direct.rsdp, "{vcpus} vCPUs");
        }
    }

    #[test]
    fn test_firmware_loader_commands_are_whole_and_allocate_first() {
        let fw = build_for_firmware(&config(2)).unwrap();
        assert_eq!(fw.loader.len() % LOADER_ENTRY_LEN, 0);
        let commands: Vec<u32> = fw
            .loader
            .chunks(LOADER_ENTRY_LEN)
            .map(|e| u32::from_le_bytes(e[0..4].try_into().unwrap()))
            .collect();
        assert_eq!(&commands[..2], &[LOADER_ALLOCATE, LOADER_ALLOCATE]);
        assert!(commands[2..].iter().all(|&c| c != LOADER_ALLOCATE));
    }
}
