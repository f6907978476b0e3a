// SPDX-License-Identifier: Apache-2.0
//! Interrupt lines into KVM's in-kernel irqchip, as eventfds bound to GSIs,
//! and MSI messages sent with `KVM_SIGNAL_MSI`.

use std::io;

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// An edge-triggered interrupt line: writing the eventfd pulses the GSI.
pub struct IrqLine {
    gsi: u32,
    event: EventFd,
}

impl IrqLine {
    /// Binds a new eventfd to `gsi` with KVM_IRQFD.
    pub fn new(vm: &VmFd, gsi: u32) -> io::Result<Self> {
        let event = EventFd::new(EFD_NONBLOCK)?;
        vm.register_irqfd(&event, gsi)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        Ok(Self { gsi, event })
    }

    /// The GSI this line drives.
    pub fn gsi(&self) -> u32 {
        self.gsi
    }

    /// Another handle on the same line (the same eventfd).
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            gsi: self.gsi,
            event: self.event.try_clone()?,
        })
    }

    /// Pulses the line.
    pub fn trigger(&self) -> io::Result<()> {
        self.event.write(1)
    }
}

impl vm_superio::Trigger for IrqLine {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        IrqLine::trigger(self)
    }
}

/// Something that raises an interrupt: an [`IrqLine`] in a VM, a recorder in tests.
pub trait InterruptLine: Send {
    /// Pulses the interrupt.
    fn pulse(&self);
}

impl InterruptLine for IrqLine {
    fn pulse(&self) {
        if let Err(e) = self.trigger() {
            log::warn!("cannot raise GSI {}: {e}", self.gsi);
        }
    }
}

/// Level-triggered interrupt lines, by IRQ number (PCI INTx, the SCI).
pub trait LevelIrq: Send + Sync {
    /// Raises (true) or lowers (false) `irq`.
    fn set_level(&self, irq: u32, high: bool);
}

/// Several devices' level outputs on shared lines, wire-ORed: a line is
/// high while any of its sources holds it high, as PCI INTx lines are
/// shared (PIRQ routing puts many functions on IRQs 10 and 11). Without
/// it, one device lowering the line would hide another's pending
/// interrupt, which an INTx-only guest (DOS, older Windows) then never
/// services.
pub struct WiredOr {
    out: std::sync::Arc<dyn LevelIrq>,
    /// The sources holding each line high.
    high: std::sync::Mutex<std::collections::HashMap<u32, std::collections::HashSet<usize>>>,
    next: std::sync::atomic::AtomicUsize,
}

impl WiredOr {
    /// Lines driven into `out`.
    pub fn new(out: std::sync::Arc<dyn LevelIrq>) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            out,
            high: Default::default(),
            next: Default::default(),
        })
    }

    /// A new source: give one to each device.
    pub fn source(self: &std::sync::Arc<Self>) -> std::sync::Arc<dyn LevelIrq> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::sync::Arc::new(LevelSource {
            or: self.clone(),
            id,
        })
    }

    fn set(&self, id: usize, irq: u32, high: bool) {
        let mut lines = self.high.lock().unwrap_or_else(|e| e.into_inner());
        // A source drives one line: a call for another (the guest moved
        // the device's interrupt line) lets go of the old one, whether it
        // raises or lowers the new one.
        let mut changes = Vec::new();
        for (&line, holders) in lines.iter_mut() {
            if line != irq && holders.remove(&id) && holders.is_empty() {
                changes.push((line, false));
            }
        }
        let holders = lines.entry(irq).or_default();
        let was = !holders.is_empty();
        if high {
            holders.insert(id);
        } else {
            holders.remove(&id);
        }
        let now = !holders.is_empty();
        if was != now {
            changes.push((irq, now));
        }
        // In order, under the lock, so two sources cannot reorder a
        // raise and a lower of the same line.
        for (line, level) in changes {
            self.out.set_level(line, level);
        }
    }
}

/// One device's output into a [`WiredOr`].
struct LevelSource {
    or: std::sync::Arc<WiredOr>,
    id: usize,
}

impl LevelIrq for LevelSource {
    fn set_level(&self, irq: u32, high: bool) {
        self.or.set(self.id, irq, high);
    }
}

/// Level lines on KVM's in-kernel PIC and IOAPIC.
pub struct KvmIrqLevels {
    vm: std::sync::Arc<VmFd>,
}

impl KvmIrqLevels {
    /// Lines of `vm`'s in-kernel irqchip.
    pub fn new(vm: std::sync::Arc<VmFd>) -> Self {
        Self { vm }
    }
}

impl LevelIrq for KvmIrqLevels {
    fn set_level(&self, irq: u32, high: bool) {
        // IRQ 0 (the timer) and 2 (the cascade) are never device lines;
        // an unprogrammed interrupt-line register reads 0 or 0xff.
        if irq == 0 || irq == 2 || irq >= 24 {
            return;
        }
        if let Err(e) = self.vm.set_irq_line(irq, high) {
            log::warn!("cannot set IRQ {irq} level: {e}");
        }
    }
}

/// MSI messages into a VM with `KVM_SIGNAL_MSI`, from any thread. The
/// in-kernel irqchip's GSI routing is left as it is (the PIC/IOAPIC
/// pins), so no route has to be kept in step with the guest's table.
pub struct KvmMsi {
    vm: std::sync::Arc<VmFd>,
}

impl KvmMsi {
    /// Messages into `vm`.
    pub fn new(vm: std::sync::Arc<VmFd>) -> Self {
        Self { vm }
    }
}

impl crate::devices::pci::msix::MsiSink for KvmMsi {
    fn signal(&self, message: crate::devices::pci::msix::MsiMessage) {
        let msi = kvm_bindings::kvm_msi {
            address_lo: message.address as u32,
            address_hi: (message.address >> 32) as u32,
            data: message.data,
            ..Default::default()
        };
        // 0 means the interrupt was blocked (coalesced), which a guest
        // that masks its LAPIC vector can cause: not an error.
        if let Err(e) = self.vm.signal_msi(msi) {
            log::warn!(
                "cannot send MSI {:#x}/{:#x}: {e}",
                message.address,
                message.data
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records every level change it is given.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u32, bool)>>);

    impl LevelIrq for Recorder {
        fn set_level(&self, irq: u32, high: bool) {
            self.0.lock().unwrap().push((irq, high));
        }
    }

    #[test]
    fn test_shared_line_stays_high_while_any_source_holds_it() {
        let out = Arc::new(Recorder::default());
        let or = WiredOr::new(out.clone());
        let (a, b) = (or.source(), or.source());
        a.set_level(10, true);
        b.set_level(10, true);
        a.set_level(10, false);
        assert_eq!(*out.0.lock().unwrap(), [(10, true)], "b still holds it");
        a.set_level(10, false);
        b.set_level(10, false);
        assert_eq!(*out.0.lock().unwrap(), [(10, true), (10, false)]);
        // Lowering a line nobody holds changes nothing.
        b.set_level(10, false);
        assert_eq!(out.0.lock().unwrap().len(), 2);
    }

    #[test]
    fn test_lines_are_independent_and_a_moved_source_lets_go() {
        let out = Arc::new(Recorder::default());
        let or = WiredOr::new(out.clone());
        let (a, b) = (or.source(), or.source());
        a.set_level(10, true);
        b.set_level(11, true);
        // The guest routed a to IRQ 5 while it was high.
        a.set_level(5, true);
        assert_eq!(
            *out.0.lock().unwrap(),
            [(10, true), (11, true), (10, false), (5, true)]
        );
        // b moved to IRQ 12 while high, and its next call lowers it there.
        b.set_level(12, false);
        assert_eq!(out.0.lock().unwrap()[4..], [(11, false)]);
    }
}
