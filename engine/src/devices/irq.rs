// SPDX-License-Identifier: Apache-2.0
//! Interrupt lines into KVM's in-kernel irqchip, as eventfds bound to GSIs.

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
