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
