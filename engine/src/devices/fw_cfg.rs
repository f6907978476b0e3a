// SPDX-License-Identifier: Apache-2.0
//! A QEMU-compatible firmware configuration device (fw_cfg) on ports
//! 0x510-0x51B: the selector (0x510, 16-bit), the byte-wide data port
//! (0x511), and the DMA interface (0x514 high / 0x518 low dword of the
//! big-endian guest address of an access descriptor; the low write starts
//! the transfer). SeaBIOS, OVMF and Linux's `qemu_fw_cfg` read the RAM
//! size, CPU count, e820 map, boot order, ACPI tables and kernel from it.
//!
//! The guest hands us descriptor addresses and lengths: every access goes
//! through checked guest-memory calls and a failed one sets the error bit.

use std::collections::BTreeMap;

use vm_memory::{Bytes, GuestAddress};

use crate::bus::{BusDevice, DeviceState};
use crate::memory::GuestMemoryMmap;
use crate::snapshot::{self, Persist, StateError};

/// First port of the device.
pub const FW_CFG_PORT: u64 = 0x510;
/// Ports the device decodes.
pub const FW_CFG_PORTS: u64 = 12;

/// Well-known item selectors.
#[allow(missing_docs)]
pub mod key {
    pub const SIGNATURE: u16 = 0x00;
    pub const ID: u16 = 0x01;
    pub const UUID: u16 = 0x02;
    pub const RAM_SIZE: u16 = 0x03;
    pub const NOGRAPHIC: u16 = 0x04;
    pub const NB_CPUS: u16 = 0x05;
    pub const KERNEL_ADDR: u16 = 0x07;
    pub const KERNEL_SIZE: u16 = 0x08;
    pub const KERNEL_CMDLINE: u16 = 0x09;
    pub const INITRD_ADDR: u16 = 0x0a;
    pub const INITRD_SIZE: u16 = 0x0b;
    pub const BOOT_DEVICE: u16 = 0x0c;
    pub const BOOT_MENU: u16 = 0x0e;
    pub const MAX_CPUS: u16 = 0x0f;
    pub const KERNEL_ENTRY: u16 = 0x10;
    pub const KERNEL_DATA: u16 = 0x11;
    pub const INITRD_DATA: u16 = 0x12;
    pub const CMDLINE_ADDR: u16 = 0x13;
    pub const CMDLINE_SIZE: u16 = 0x14;
    pub const CMDLINE_DATA: u16 = 0x15;
    pub const SETUP_ADDR: u16 = 0x16;
    pub const SETUP_SIZE: u16 = 0x17;
    pub const SETUP_DATA: u16 = 0x18;
    pub const FILE_DIR: u16 = 0x19;
    pub const FILE_FIRST: u16 = 0x20;
    pub const FILE_LAST: u16 = 0x3fff;
}

const SIGNATURE: &[u8; 4] = b"QEMU";
const DMA_SIGNATURE: u64 = u64::from_be_bytes(*b"QEMU CFG");
/// Feature bits in the ID item: traditional interface and DMA.
const ID_TRADITIONAL: u32 = 1;
const ID_DMA: u32 = 2;

const DMA_CTL_ERROR: u32 = 0x01;
const DMA_CTL_READ: u32 = 0x02;
const DMA_CTL_SKIP: u32 = 0x04;
const DMA_CTL_SELECT: u32 = 0x08;
const DMA_CTL_WRITE: u32 = 0x10;
const FILE_NAME_LEN: usize = 56;

/// Errors building the item table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FwCfgError {
    /// A file name does not fit the 56-byte directory field.
    #[error("fw_cfg file name '{0}' is too long")]
    NameTooLong(String),
    /// The same file was added twice.
    #[error("fw_cfg file '{0}' already exists")]
    Duplicate(String),
    /// No selectors left for files.
    #[error("Too many fw_cfg files")]
    Full,
}

/// The device and its items.
pub struct FwCfg {
    mem: GuestMemoryMmap,
    items: BTreeMap<u16, Vec<u8>>,
    files: BTreeMap<String, u16>,
    next_file_key: u16,
    selected: u16,
    offset: usize,
    dma_high: u32,
}

impl FwCfg {
    /// A device with the signature and ID items, reading and writing `mem`
    /// for DMA.
    pub fn new(mem: GuestMemoryMmap) -> Self {
        let mut dev = Self {
            mem,
            items: BTreeMap::new(),
            files: BTreeMap::new(),
            next_file_key: key::FILE_FIRST,
            selected: 0,
            offset: 0,
            dma_high: 0,
        };
        dev.set_item(key::SIGNATURE, SIGNATURE.to_vec());
        dev.set_item(key::ID, (ID_TRADITIONAL | ID_DMA).to_le_bytes().to_vec());
        dev.rebuild_directory();
        dev
    }

    /// Sets a numbered item.
    pub fn set_item(&mut self, key: u16, data: Vec<u8>) {
        self.items.insert(key, data);
    }

    /// Adds a named file, visible through the file directory.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<(), FwCfgError> {
        if name.len() >= FILE_NAME_LEN {
            return Err(FwCfgError::NameTooLong(name.to_string()));
        }
        if self.files.contains_key(name) {
            return Err(FwCfgError::Duplicate(name.to_string()));
        }
        if self.next_file_key > key::FILE_LAST {
            return Err(FwCfgError::Full);
        }
        let selector = self.next_file_key;
        self.next_file_key += 1;
        self.files.insert(name.to_string(), selector);
        self.items.insert(selector, data);
        self.rebuild_directory();
        Ok(())
    }

    fn rebuild_directory(&mut self) {
        let mut dir = Vec::with_capacity(4 + self.files.len() * 64);
        dir.extend_from_slice(&(self.files.len() as u32).to_be_bytes());
        // The directory is sorted by name, as firmware may binary-search it.
        for (name, &selector) in &self.files {
            let size = self.items.get(&selector).map_or(0, Vec::len) as u32;
            dir.extend_from_slice(&size.to_be_bytes());
            dir.extend_from_slice(&selector.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut field = [0u8; FILE_NAME_LEN];
            for (slot, byte) in field.iter_mut().zip(name.bytes()) {
                *slot = byte;
            }
            dir.extend_from_slice(&field);
        }
        self.items.insert(key::FILE_DIR, dir);
    }

    fn select(&mut self, selector: u16) {
        self.selected = selector;
        self.offset = 0;
    }

    fn selected_data(&self) -> &[u8] {
        self.items.get(&self.selected).map_or(&[], Vec::as_slice)
    }

    fn read_data_byte(&mut self) -> u8 {
        let byte = self.selected_data().get(self.offset).copied().unwrap_or(0);
        self.offset = self.offset.saturating_add(1);
        byte
    }

    /// Runs the DMA descriptor at `addr` and writes its status back.
    fn run_dma(&mut self, addr: u64) {
        let descriptor: [u8; 16] = match self.mem.read_obj(GuestAddress(addr)) {
            Ok(d) => d,
            Err(_) => {
                log::debug!("fw_cfg: DMA descriptor at {addr:#x} is outside guest memory");
                return;
            }
        };
        let field = |range: std::ops::Range<usize>| descriptor.get(range).unwrap_or(&[]).to_vec();
        let control = u32::from_be_bytes(field(0..4).try_into().unwrap_or([0; 4]));
        let length = u32::from_be_bytes(field(4..8).try_into().unwrap_or([0; 4]));
        let target = u64::from_be_bytes(field(8..16).try_into().unwrap_or([0; 8]));
        let status = match self.dma_transfer(control, length, target) {
            Ok(()) => 0,
            Err(()) => DMA_CTL_ERROR,
        };
        if self
            .mem
            .write_obj(status.to_be_bytes(), GuestAddress(addr))
            .is_err()
        {
            log::debug!("fw_cfg: cannot write DMA status at {addr:#x}");
        }
    }

    fn dma_transfer(&mut self, control: u32, length: u32, target: u64) -> Result<(), ()> {
        if control & DMA_CTL_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        if control & DMA_CTL_WRITE != 0 {
            // Items are read-only to the guest.
            return Err(());
        }
        let length = length as usize;
        if control & DMA_CTL_READ != 0 {
            let data = self.selected_data();
            let start = self.offset.min(data.len());
            let available = data.get(start..).unwrap_or(&[]);
            let copy_len = available.len().min(length);
            let copied = available.get(..copy_len).unwrap_or(&[]);
            self.mem
                .write_slice(copied, GuestAddress(target))
                .map_err(|_| ())?;
            // Past the item's end the guest reads zeros, as on QEMU.
            let zero_at = target.checked_add(copy_len as u64).ok_or(())?;
            write_zeros(&self.mem, zero_at, length - copy_len)?;
        }
        if control & (DMA_CTL_READ | DMA_CTL_SKIP) != 0 {
            self.offset = self.offset.saturating_add(length);
        }
        Ok(())
    }
}

fn write_zeros(mem: &GuestMemoryMmap, mut addr: u64, mut len: usize) -> Result<(), ()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while len > 0 {
        let chunk = len.min(ZEROS.len());
        mem.write_slice(ZEROS.get(..chunk).unwrap_or(&[]), GuestAddress(addr))
            .map_err(|_| ())?;
        addr = addr.checked_add(chunk as u64).ok_or(())?;
        len -= chunk;
    }
    Ok(())
}

/// What a saved state holds: where the guest is reading (the items are
/// built from the VM's configuration and read-only to the guest).
impl Persist for FwCfg {
    fn save(&mut self) -> Result<Vec<u8>, StateError> {
        snapshot::encode(
            "firmware configuration",
            &(self.selected, self.offset as u64, self.dma_high),
        )
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let (selected, offset, dma_high): (u16, u64, u32) =
            snapshot::decode("firmware configuration", bytes)?;
        self.selected = selected;
        self.offset = usize::try_from(offset).unwrap_or(usize::MAX);
        self.dma_high = dma_high;
        Ok(())
    }
}

impl BusDevice for FwCfg {
    fn state(&mut self) -> DeviceState<'_> {
        DeviceState::Saved(self)
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            1 => {
                for byte in data.iter_mut() {
                    *byte = self.read_data_byte();
                }
            }
            4..=11 => {
                let signature = DMA_SIGNATURE.to_be_bytes();
                for (i, byte) in data.iter_mut().enumerate() {
                    *byte = signature.get(offset as usize - 4 + i).copied().unwrap_or(0);
                }
            }
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (0, &[a, b]) => self.select(u16::from_le_bytes([a, b])),
            (4, &[a, b, c, d]) => self.dma_high = u32::from_be_bytes([a, b, c, d]),
            (8, &[a, b, c, d]) => {
                let low = u32::from_be_bytes([a, b, c, d]);
                let addr = (u64::from(self.dma_high) << 32) | u64::from(low);
                self.dma_high = 0;
                self.run_dma(addr);
            }
            _ => log::debug!("fw_cfg: ignored write at +{offset} of {} bytes", data.len()),
        }
    }
}

/// Serialises an e820 map in the `etc/e820` file format (little-endian
/// address, length, type).
pub fn e820_file(map: &[crate::layout::E820Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(map.len() * 20);
    for entry in map {
        out.extend_from_slice(&entry.addr.to_le_bytes());
        out.extend_from_slice(&entry.size.to_le_bytes());
        out.extend_from_slice(&(entry.kind as u32).to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn select(dev: &mut FwCfg, key: u16) {
        dev.write(0, &key.to_le_bytes());
    }

    fn read_bytes(dev: &mut FwCfg, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let mut b = [0u8];
                dev.read(1, &mut b);
                b[0]
            })
            .collect()
    }

    fn dma(dev: &mut FwCfg, mem: &GuestMemoryMmap, control: u32, len: u32, target: u64) -> u32 {
        let mut desc = Vec::new();
        desc.extend_from_slice(&control.to_be_bytes());
        desc.extend_from_slice(&len.to_be_bytes());
        desc.extend_from_slice(&target.to_be_bytes());
        mem.write_slice(&desc, GuestAddress(0x100)).unwrap();
        dev.write(4, &0u32.to_be_bytes());
        dev.write(8, &0x100u32.to_be_bytes());
        u32::from_be_bytes(mem.read_obj(GuestAddress(0x100)).unwrap())
    }

    #[test]
    fn test_fw_cfg_signature_reads_qemu() {
        let mut dev = FwCfg::new(mem());
        select(&mut dev, key::SIGNATURE);
        assert_eq!(read_bytes(&mut dev, 4), b"QEMU");
    }

    #[test]
    fn test_fw_cfg_directory_lists_files_sorted() {
        let mut dev = FwCfg::new(mem());
        dev.add_file("etc/z", vec![1, 2, 3]).unwrap();
        dev.add_file("etc/a", vec![4]).unwrap();
        select(&mut dev, key::FILE_DIR);
        let dir = read_bytes(&mut dev, 4 + 64);
        assert_eq!(&dir[..4], &2u32.to_be_bytes());
        assert_eq!(&dir[4..8], &1u32.to_be_bytes());
        assert_eq!(&dir[8..10], &(key::FILE_FIRST + 1).to_be_bytes());
        assert_eq!(&dir[12..17], b"etc/a");
    }

    #[test]
    fn test_fw_cfg_dma_read_copies_and_zero_fills() {
        let mem = mem();
        let mut dev = FwCfg::new(mem.clone());
        dev.add_file("etc/x", vec![9, 8, 7]).unwrap();
        mem.write_slice(&[0xff; 5], GuestAddress(0x200)).unwrap();
        let control = (u32::from(key::FILE_FIRST) << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
        let status = dma(&mut dev, &mem, control, 5, 0x200);
        let mut out = [0u8; 5];
        mem.read_slice(&mut out, GuestAddress(0x200)).unwrap();
        assert_eq!((status, out), (0, [9, 8, 7, 0, 0]));
    }

    #[test]
    fn test_fw_cfg_dma_target_outside_memory_sets_error() {
        let mem = mem();
        let mut dev = FwCfg::new(mem.clone());
        let control = (u32::from(key::SIGNATURE) << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
        let status = dma(&mut dev, &mem, control, 4, 0xffff_ffff_ffff_fffe);
        assert_eq!(status, DMA_CTL_ERROR);
    }

    #[test]
    fn test_fw_cfg_dma_huge_length_past_memory_sets_error() {
        let mem = mem();
        let mut dev = FwCfg::new(mem.clone());
        let control = (u32::from(key::SIGNATURE) << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
        let status = dma(&mut dev, &mem, control, u32::MAX, 0x1000);
        assert_eq!(status, DMA_CTL_ERROR);
    }

    #[test]
    fn test_fw_cfg_dma_write_is_refused() {
        let mem = mem();
        let mut dev = FwCfg::new(mem.clone());
        let status = dma(&mut dev, &mem, DMA_CTL_WRITE, 4, 0x200);
        assert_eq!(status, DMA_CTL_ERROR);
    }

    #[test]
    fn test_fw_cfg_descriptor_outside_memory_is_ignored() {
        let mut dev = FwCfg::new(mem());
        dev.write(4, &1u32.to_be_bytes());
        dev.write(8, &0u32.to_be_bytes());
        select(&mut dev, key::SIGNATURE);
        assert_eq!(read_bytes(&mut dev, 1), b"Q");
    }

    #[test]
    fn test_fw_cfg_duplicate_file_is_refused() {
        let mut dev = FwCfg::new(mem());
        dev.add_file("bootorder", vec![]).unwrap();
        assert_eq!(
            dev.add_file("bootorder", vec![]),
            Err(FwCfgError::Duplicate("bootorder".into()))
        );
    }
}
