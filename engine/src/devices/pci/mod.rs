// SPDX-License-Identifier: Apache-2.0
//! The PCI root bus, reached through configuration mechanism #1: the
//! address register at 0xCF8 and the data window at 0xCFC-0xCFF. The byte
//! at 0xCF9 is the PIIX reset control register.
//!
//! Devices keep their 256-byte configuration space in a [`ConfigSpace`],
//! which applies a per-byte writable mask so the guest can only change
//! what real hardware lets it change.

pub mod host_bridge;
pub mod msix;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};

use crate::bus::{Bus, BusDevice, DeviceState};
use crate::control::{Outcome, VmControl};
use crate::snapshot::{self, Persist, StateError};

/// First port of the configuration mechanism.
pub const CONFIG_PORT: u64 = 0xcf8;
/// Ports decoded: address (4) and data (4).
pub const CONFIG_PORTS: u64 = 8;

/// The IRQs (I/O APIC inputs) PCI INTx lines are wired to: the PIIX PIRQ
/// lines firmware routes to 10 and 11.
pub const INTX_GSIS: [u8; 2] = [10, 11];

/// The IRQ of the INTA line of the function at `slot`: slots alternate
/// between [`INTX_GSIS`]. The engine wires devices so, and the ACPI
/// `_PRT` tells the guest the same.
pub fn intx_gsi(slot: u8) -> u8 {
    if slot % 2 == 0 {
        INTX_GSIS[0]
    } else {
        INTX_GSIS[1]
    }
}

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
    pub const BAR0: usize = 0x10;
    pub const CAPABILITIES: usize = 0x34;
    pub const INTERRUPT_LINE: usize = 0x3c;
    pub const INTERRUPT_PIN: usize = 0x3d;
}

/// Command register: I/O space decoding enabled.
pub const COMMAND_IO: u16 = 0x1;
/// Command register: memory space decoding enabled.
pub const COMMAND_MEMORY: u16 = 0x2;
/// Status register: the capabilities list is present.
const STATUS_CAPABILITIES: u16 = 0x10;
/// Where the first capability goes (after the type-0 header).
const FIRST_CAPABILITY: usize = 0x40;

/// What kind of space a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory.
    Memory32,
    /// I/O ports.
    Io,
}

/// A BAR as the guest programmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarMapping {
    /// BAR index (0..6).
    pub index: u8,
    /// Guest address (memory) or port (I/O).
    pub addr: u64,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// Its kind.
    pub kind: BarKind,
}

/// A device's configuration space with its writable-bits mask.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; 256],
    writable: [u8; 256],
    bars: [Option<(u64, BarKind)>; 6],
    next_capability: usize,
    last_capability: Option<usize>,
}

impl ConfigSpace {
    /// The registers as the guest sees them, for a saved state.
    pub fn saved_bytes(&self) -> Vec<u8> {
        self.bytes.to_vec()
    }

    /// Puts back registers [`saved_bytes`](Self::saved_bytes) returned
    /// (what the guest could not write must match: the device is the same
    /// one); `Err` says what is wrong.
    pub fn restore_bytes(&mut self, saved: &[u8]) -> Result<(), String> {
        let saved: &[u8; 256] = saved
            .try_into()
            .map_err(|_| format!("{} bytes of configuration space", saved.len()))?;
        for (offset, ((&now, &was), &writable)) in
            self.bytes.iter().zip(saved).zip(&self.writable).enumerate()
        {
            // BAR registers hold their address bits outside the mask.
            let bar = (reg::BAR0..reg::BAR0 + 24).contains(&offset);
            if !bar && now & !writable != was & !writable {
                return Err(format!(
                    "read-only register {offset:#x} is {was:#04x}, not {now:#04x}"
                ));
            }
        }
        self.bytes = *saved;
        Ok(())
    }

    /// A type-0 header for `vendor:device` of class `class:subclass`.
    pub fn new(vendor: u16, device: u16, class: u8, subclass: u8, revision: u8) -> Self {
        let mut space = Self {
            bytes: [0; 256],
            writable: [0; 256],
            bars: [None; 6],
            next_capability: FIRST_CAPABILITY,
            last_capability: None,
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

    /// Declares BAR `index` of `size` bytes (a power of two, at least 16).
    pub fn add_bar(&mut self, index: usize, size: u64, kind: BarKind) {
        let Some(slot) = self.bars.get_mut(index) else {
            return;
        };
        *slot = Some((size, kind));
        let offset = reg::BAR0 + index * 4;
        let flags: u32 = match kind {
            BarKind::Memory32 => 0,
            BarKind::Io => 1,
        };
        // Size-aligned address bits are writable; the low bits read back
        // as the BAR's type, so writing all ones reveals the size.
        let mask = !(size.max(16) as u32 - 1);
        for (i, (value, writable)) in flags
            .to_le_bytes()
            .iter()
            .zip(mask.to_le_bytes())
            .enumerate()
        {
            self.set_u8(offset + i, *value);
            self.set_writable(offset + i, &[writable]);
        }
    }

    /// The BARs the guest has placed, if decoding for their kind is on.
    pub fn bar_mappings(&self) -> Vec<BarMapping> {
        let command = u16::from_le_bytes([self.u8_at(reg::COMMAND), self.u8_at(reg::COMMAND + 1)]);
        let mut mappings = Vec::new();
        for (index, bar) in self.bars.iter().enumerate() {
            let Some((size, kind)) = *bar else { continue };
            let enabled = match kind {
                BarKind::Memory32 => command & COMMAND_MEMORY != 0,
                BarKind::Io => command & COMMAND_IO != 0,
            };
            let raw = u64::from(self.read_dword(reg::BAR0 + index * 4));
            let addr = match kind {
                BarKind::Memory32 => raw & !0xf,
                BarKind::Io => raw & !0x3,
            };
            if enabled && addr != 0 {
                mappings.push(BarMapping {
                    index: index as u8,
                    addr,
                    size,
                    kind,
                });
            }
        }
        mappings
    }

    /// Appends a capability (`body` starts with its ID; the next pointer
    /// is filled in); returns its offset, or None when space runs out.
    pub fn add_capability(&mut self, body: &[u8]) -> Option<usize> {
        let offset = self.next_capability;
        let end = offset.checked_add(body.len())?;
        if body.len() < 2 || end > self.bytes.len() {
            return None;
        }
        for (i, &b) in body.iter().enumerate() {
            self.set_u8(offset + i, b);
        }
        self.set_u8(offset + 1, 0);
        match self.last_capability {
            Some(last) => self.set_u8(last + 1, offset as u8),
            None => self.set_u8(reg::CAPABILITIES, offset as u8),
        }
        let status = u16::from_le_bytes([self.u8_at(reg::STATUS), self.u8_at(reg::STATUS + 1)]);
        self.set_u16(reg::STATUS, status | STATUS_CAPABILITIES);
        self.last_capability = Some(offset);
        // Capabilities start on dword boundaries.
        self.next_capability = (end + 3) & !3;
        Some(offset)
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
    /// The BARs the guest has placed and enabled.
    fn bar_mappings(&self) -> Vec<BarMapping> {
        Vec::new()
    }
    /// Reads from BAR `bar` at `offset`.
    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        let _ = (bar, offset);
        data.fill(0xff);
    }
    /// Writes to BAR `bar` at `offset`.
    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        let _ = (bar, offset, data);
    }
    /// Host memory behind BAR `bar`, when the BAR is plain memory the
    /// guest should reach without exits (a framebuffer). Such a BAR is
    /// mapped into the guest, not put on the MMIO bus.
    fn bar_ram(&self, bar: u8) -> Option<BarRam> {
        let _ = bar;
        None
    }
    /// The root moved this function's BARs: `bars` are the windows it now
    /// decodes (empty when decoding is off). A device that registered
    /// addresses inside a BAR with KVM (ioeventfds) moves them here.
    fn bars_moved(&mut self, bars: &[BarMapping]) {
        let _ = bars;
    }
    /// What a saved machine state holds of this function (its
    /// configuration space and its own state); as for bus devices, one
    /// that does not say cannot be saved.
    fn state(&mut self) -> DeviceState<'_> {
        DeviceState::Unsupported(crate::bus::short_type_name(std::any::type_name::<Self>()))
    }
}

/// Host memory a BAR maps into the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarRam {
    /// Host virtual address of the first byte; the mapping must stay valid
    /// for as long as the VM exists.
    pub host_addr: u64,
    /// Its length in bytes (the BAR's size).
    pub size: u64,
}

/// Maps RAM-backed BARs into guest physical memory (KVM memory slots).
pub trait BarRamMapper: Send + Sync {
    /// Maps `ram` at guest address `addr`.
    fn map(&self, addr: u64, ram: BarRam) -> Result<(), String>;
    /// Removes what `map` put at `addr`.
    fn unmap(&self, addr: u64);
}

/// A PCI function shared between the root and its BAR windows.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// Puts one BAR of a PCI function on a bus.
struct BarWindow {
    device: Arc<Mutex<dyn PciDevice>>,
    bar: u8,
}

impl BusDevice for BarWindow {
    fn state(&mut self) -> DeviceState<'_> {
        // The function behind it is saved with the PCI root.
        DeviceState::Stateless
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bar_read(self.bar, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bar_write(self.bar, offset, data);
    }
}

/// Bus 0 with its functions, addressed by device (0..32) and function (0..8).
/// When the guest moves or enables a BAR, the root moves the function's
/// window on the port or MMIO bus to match.
pub struct PciRoot {
    control: Arc<VmControl>,
    // Weak: the root itself sits on the port bus, and a strong reference
    // back would keep the bus, every PCI device and the disks they own
    // alive after the VM ends (a qcow2 image would never write its
    // metadata; every guest reboot would leak a machine).
    pio: Weak<Bus>,
    mmio: Weak<Bus>,
    address: u32,
    reset_control: u8,
    functions: BTreeMap<(u8, u8), Arc<Mutex<dyn PciDevice>>>,
    mapped: BTreeMap<(u8, u8), Vec<(BarMapping, bool)>>,
    ram_mapper: Option<Arc<dyn BarRamMapper>>,
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
    /// An empty bus whose reset register stops `control`'s VM and whose
    /// BARs appear on `pio` and `mmio`.
    pub fn new(control: Arc<VmControl>, pio: Arc<Bus>, mmio: Arc<Bus>) -> Self {
        Self {
            control,
            pio: Arc::downgrade(&pio),
            mmio: Arc::downgrade(&mmio),
            address: 0,
            reset_control: 0,
            functions: BTreeMap::new(),
            mapped: BTreeMap::new(),
            ram_mapper: None,
        }
    }

    /// Lets RAM-backed BARs be mapped into the guest through `mapper`;
    /// without one they are trapped on the MMIO bus like any other BAR.
    pub fn set_ram_mapper(&mut self, mapper: Arc<dyn BarRamMapper>) {
        self.ram_mapper = Some(mapper);
    }

    /// Moves `slot`'s BAR windows to where its configuration now puts them.
    fn remap_bars(&mut self, slot: (u8, u8)) {
        let Some(device) = self.functions.get(&slot).cloned() else {
            return;
        };
        let (now, ram): (Vec<BarMapping>, Vec<Option<BarRam>>) = {
            let dev = device.lock().unwrap_or_else(|e| e.into_inner());
            let now = dev.bar_mappings();
            let ram = now
                .iter()
                .map(|bar| match bar.kind {
                    BarKind::Memory32 => dev.bar_ram(bar.index),
                    BarKind::Io => None,
                })
                .collect();
            (now, ram)
        };
        let before = self.mapped.get(&slot).cloned().unwrap_or_default();
        if before.iter().map(|(bar, _)| *bar).eq(now.iter().copied()) {
            return;
        }
        for (old, in_ram) in &before {
            match (in_ram, &self.ram_mapper) {
                (true, Some(mapper)) => mapper.unmap(old.addr),
                _ => {
                    if let Some(bus) = self.bus_for(old.kind) {
                        bus.remove(old.addr);
                    }
                }
            }
        }
        let mut placed = Vec::new();
        for (bar, ram) in now.into_iter().zip(ram) {
            if let (Some(ram), Some(mapper)) = (ram, &self.ram_mapper) {
                match mapper.map(bar.addr, ram) {
                    Ok(()) => placed.push((bar, true)),
                    Err(e) => log::warn!(
                        "PCI {:02x}.{}: BAR {} at {:#x} not mapped: {e}",
                        slot.0,
                        slot.1,
                        bar.index,
                        bar.addr
                    ),
                }
                continue;
            }
            let window = Arc::new(Mutex::new(BarWindow {
                device: device.clone(),
                bar: bar.index,
            }));
            let Some(bus) = self.bus_for(bar.kind) else {
                // The VM is being torn down.
                continue;
            };
            match bus.insert(window, bar.addr, bar.size) {
                Ok(()) => placed.push((bar, false)),
                Err(e) => log::warn!(
                    "PCI {:02x}.{}: BAR {} not mapped: {e}",
                    slot.0,
                    slot.1,
                    bar.index
                ),
            }
        }
        let bars: Vec<BarMapping> = placed.iter().map(|(bar, _)| *bar).collect();
        device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bars_moved(&bars);
        self.mapped.insert(slot, placed);
    }

    /// The bus a BAR of `kind` sits on; None once the VM is gone.
    fn bus_for(&self, kind: BarKind) -> Option<Arc<Bus>> {
        match kind {
            BarKind::Memory32 => self.mmio.upgrade(),
            BarKind::Io => self.pio.upgrade(),
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

    /// The function the address register points at, its slot and the
    /// register offset.
    fn target(&self) -> Option<(SharedPciDevice, (u8, u8), usize)> {
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
        Some((dev, (device, function), offset))
    }
}

/// What a saved state holds of the bus: the address register, the reset
/// control register and each function's own state, by slot.
#[derive(Serialize, Deserialize)]
struct BusState {
    address: u32,
    reset_control: u8,
    functions: Vec<((u8, u8), Vec<u8>)>,
}

const NAME: &str = "PCI bus";

fn function_name(slot: (u8, u8)) -> String {
    format!("PCI function {:02x}.{}", slot.0, slot.1)
}

impl Persist for PciRoot {
    fn quiesce(&mut self) -> Result<(), StateError> {
        for (&slot, device) in &self.functions {
            let mut device = device.lock().unwrap_or_else(|e| e.into_inner());
            match device.state() {
                DeviceState::Saved(persist) => persist.quiesce()?,
                DeviceState::Stateless => {}
                DeviceState::Unsupported(what) => {
                    return Err(StateError::Unsupported(format!(
                        "{what} ({})",
                        function_name(slot)
                    )));
                }
            }
        }
        Ok(())
    }

    fn save(&mut self) -> Result<Vec<u8>, StateError> {
        let mut functions = Vec::with_capacity(self.functions.len());
        for (&slot, device) in &self.functions {
            let mut device = device.lock().unwrap_or_else(|e| e.into_inner());
            let bytes = match device.state() {
                DeviceState::Saved(persist) => persist.save()?,
                DeviceState::Stateless => Vec::new(),
                DeviceState::Unsupported(what) => {
                    return Err(StateError::Unsupported(format!(
                        "{what} ({})",
                        function_name(slot)
                    )));
                }
            };
            functions.push((slot, bytes));
        }
        snapshot::encode(
            NAME,
            &BusState {
                address: self.address,
                reset_control: self.reset_control,
                functions,
            },
        )
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let state: BusState = snapshot::decode(NAME, bytes)?;
        let saved_slots: Vec<(u8, u8)> = state.functions.iter().map(|(slot, _)| *slot).collect();
        let slots: Vec<(u8, u8)> = self.functions.keys().copied().collect();
        if saved_slots != slots {
            let list = |slots: &[(u8, u8)]| {
                slots
                    .iter()
                    .map(|&s| function_name(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(StateError::WrongHardware {
                saved: list(&saved_slots),
                this: list(&slots),
            });
        }
        for (slot, bytes) in &state.functions {
            let Some(device) = self.functions.get(slot) else {
                continue;
            };
            let mut device = device.lock().unwrap_or_else(|e| e.into_inner());
            match device.state() {
                DeviceState::Saved(persist) => persist.restore(bytes)?,
                DeviceState::Stateless => {}
                DeviceState::Unsupported(what) => {
                    return Err(StateError::Unsupported(format!(
                        "{what} ({})",
                        function_name(*slot)
                    )));
                }
            }
        }
        self.address = state.address;
        self.reset_control = state.reset_control;
        for slot in slots {
            self.remap_bars(slot);
        }
        Ok(())
    }
}

impl BusDevice for PciRoot {
    fn state(&mut self) -> DeviceState<'_> {
        DeviceState::Saved(self)
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (0, 4) => crate::bus::fill_le(data, u64::from(self.address)),
            (1, 1) => crate::bus::fill_le(data, u64::from(self.reset_control)),
            (4..=7, _) => {
                let value = match self.target() {
                    Some((dev, _, reg)) => dev
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
                if let Some((dev, slot, reg)) = self.target() {
                    let at = reg + (offset as usize - 4);
                    dev.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .config_write(at, data);
                    self.remap_bars(slot);
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

    /// A root on buses that live as long as the test (the root only holds
    /// them weakly, as a VM's buses outlive its root).
    fn empty_root(control: Arc<VmControl>) -> PciRoot {
        let pio: &'static Arc<Bus> = Box::leak(Box::new(Arc::new(Bus::new())));
        let mmio: &'static Arc<Bus> = Box::leak(Box::new(Arc::new(Bus::new())));
        PciRoot::new(control, pio.clone(), mmio.clone())
    }

    fn root_with_device() -> PciRoot {
        let mut root = empty_root(Arc::new(VmControl::new()));
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
        let mut root = empty_root(control.clone());
        root.write(1, &[0x06]);
        assert_eq!(control.outcome(), Some(Outcome::Reset));
    }

    struct WithBar {
        config: ConfigSpace,
        last_write: Option<(u8, u64, Vec<u8>)>,
        moved: Vec<Vec<u64>>,
    }

    impl PciDevice for WithBar {
        fn config_read(&mut self, offset: usize) -> u32 {
            self.config.read_dword(offset)
        }
        fn config_write(&mut self, offset: usize, data: &[u8]) {
            self.config.guest_write(offset, data);
        }
        fn bar_mappings(&self) -> Vec<BarMapping> {
            self.config.bar_mappings()
        }
        fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
            self.last_write = Some((bar, offset, data.to_vec()));
        }
        fn bars_moved(&mut self, bars: &[BarMapping]) {
            self.moved.push(bars.iter().map(|bar| bar.addr).collect());
        }
    }

    fn write_config(root: &mut PciRoot, device: u32, offset: u32, value: u32) {
        root.write(0, &(0x8000_0000 | (device << 11) | offset).to_le_bytes());
        root.write(4, &value.to_le_bytes());
    }

    #[test]
    fn test_config_space_bar_sizing_reads_back_size_mask() {
        let mut config = ConfigSpace::new(1, 2, 3, 4, 5);
        config.add_bar(0, 0x4000, BarKind::Memory32);
        config.guest_write(reg::BAR0, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(config.read_dword(reg::BAR0), 0xffff_c000);
    }

    #[test]
    fn test_config_space_capabilities_are_chained() {
        let mut config = ConfigSpace::new(1, 2, 3, 4, 5);
        let first = config.add_capability(&[0x09, 0, 4, 1]).unwrap();
        let second = config.add_capability(&[0x11, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!((first, second), (0x40, 0x44));
        assert_eq!(config.u8_at(reg::CAPABILITIES), 0x40);
        assert_eq!(config.u8_at(0x41), 0x44);
        assert_eq!(config.u8_at(0x45), 0);
        assert_eq!(config.u8_at(reg::STATUS) & 0x10, 0x10);
    }

    #[test]
    fn test_pci_root_maps_bar_when_memory_decoding_is_enabled() {
        let mmio = Arc::new(Bus::new());
        let mut root = PciRoot::new(
            Arc::new(VmControl::new()),
            Arc::new(Bus::new()),
            mmio.clone(),
        );
        let mut config = ConfigSpace::new(1, 2, 3, 4, 5);
        config.add_bar(0, 0x1000, BarKind::Memory32);
        let dev = Arc::new(Mutex::new(WithBar {
            config,
            last_write: None,
            moved: Vec::new(),
        }));
        root.add(5, 0, dev.clone()).unwrap();

        write_config(&mut root, 5, 0x10, 0xd000_0000);
        let before_enable = mmio.write(0xd000_0010, &[1]);
        write_config(&mut root, 5, 0x04, u32::from(COMMAND_MEMORY));
        let after_enable = mmio.write(0xd000_0010, &[2]);

        assert_eq!((before_enable, after_enable), (false, true));
        assert_eq!(dev.lock().unwrap().last_write, Some((0, 0x10, vec![2])));
    }

    #[test]
    fn test_pci_root_moves_bar_window() {
        let mmio = Arc::new(Bus::new());
        let mut root = PciRoot::new(
            Arc::new(VmControl::new()),
            Arc::new(Bus::new()),
            mmio.clone(),
        );
        let mut config = ConfigSpace::new(1, 2, 3, 4, 5);
        config.add_bar(0, 0x1000, BarKind::Memory32);
        root.add(
            5,
            0,
            Arc::new(Mutex::new(WithBar {
                config,
                last_write: None,
                moved: Vec::new(),
            })),
        )
        .unwrap();
        write_config(&mut root, 5, 0x04, u32::from(COMMAND_MEMORY));
        write_config(&mut root, 5, 0x10, 0xd000_0000);

        write_config(&mut root, 5, 0x10, 0xe000_0000);

        assert!(!mmio.write(0xd000_0000, &[1]));
        assert!(mmio.write(0xe000_0000, &[1]));
    }

    #[test]
    fn test_pci_root_tells_the_device_where_its_bars_moved() {
        let mut root = empty_root(Arc::new(VmControl::new()));
        let mut config = ConfigSpace::new(1, 2, 3, 4, 5);
        config.add_bar(0, 0x1000, BarKind::Memory32);
        let dev = Arc::new(Mutex::new(WithBar {
            config,
            last_write: None,
            moved: Vec::new(),
        }));
        root.add(5, 0, dev.clone()).unwrap();

        write_config(&mut root, 5, 0x10, 0xd000_0000);
        write_config(&mut root, 5, 0x04, u32::from(COMMAND_MEMORY));
        write_config(&mut root, 5, 0x04, u32::from(COMMAND_MEMORY));
        write_config(&mut root, 5, 0x10, 0xe000_0000);
        write_config(&mut root, 5, 0x04, 0);

        // Only changes are reported; decoding off reports no BARs.
        let moved = dev.lock().unwrap().moved.clone();
        assert_eq!(moved, vec![vec![0xd000_0000], vec![0xe000_0000], vec![]]);
    }

    #[test]
    fn test_pci_root_does_not_keep_its_buses_alive() {
        // The root sits on the port bus: holding it strongly would be a
        // cycle that keeps every device of an ended VM alive.
        let pio = Arc::new(Bus::new());
        let mmio = Arc::new(Bus::new());
        let root = PciRoot::new(Arc::new(VmControl::new()), pio.clone(), mmio.clone());
        let watch = Arc::downgrade(&pio);
        pio.insert(Arc::new(Mutex::new(root)), 0xcf8, 8).unwrap();

        drop(pio);

        assert!(watch.upgrade().is_none(), "the port bus outlived the VM");
    }

    #[test]
    fn test_pci_add_taken_slot_is_refused() {
        let mut root = root_with_device();
        let dev = Fixed(ConfigSpace::new(1, 2, 3, 4, 5));
        assert!(root.add(3, 0, Arc::new(Mutex::new(dev))).is_err());
    }

    #[test]
    fn test_saved_config_space_cannot_change_read_only_registers() {
        let mut space = ConfigSpace::new(0x1234, 0x5678, 0x06, 0x00, 1);
        let mut saved = space.saved_bytes();
        saved[reg::INTERRUPT_LINE] = 9;
        space.restore_bytes(&saved).unwrap();
        assert_eq!(space.u8_at(reg::INTERRUPT_LINE), 9);
        let mut forged = space.saved_bytes();
        forged[reg::VENDOR_ID] = 0xaa;
        assert!(space.restore_bytes(&forged).is_err());
        assert!(space.restore_bytes(&[0; 12]).is_err());
        assert_eq!(space.u8_at(reg::VENDOR_ID), 0x34);
    }
}
