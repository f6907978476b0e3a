// SPDX-License-Identifier: Apache-2.0
//! What KVM holds of a VM: the in-kernel interrupt controllers (both
//! PICs and the IOAPIC), the PIT and the KVM clock ([`VmState`]), and for
//! each vCPU its registers, FPU/XSAVE, debug registers, local APIC, MSRs,
//! pending events and run state ([`VcpuState`]). Restored in the order
//! KVM needs: the MP state and registers first, the MSRs after the local
//! APIC (TSC deadline), the pending events last.

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_MAX_MSR_ENTRIES, Msrs,
    kvm_clock_data, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry,
    kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

use super::StateError;

/// The VM-wide state KVM keeps in the kernel.
#[derive(Clone, Serialize, Deserialize)]
pub struct VmState {
    pic_master: kvm_irqchip,
    pic_slave: kvm_irqchip,
    ioapic: kvm_irqchip,
    pit: kvm_pit_state2,
    clock: kvm_clock_data,
}

fn irqchip(vm: &VmFd, chip_id: u32) -> Result<kvm_irqchip, StateError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip).map_err(StateError::kvm(format!(
        "read interrupt controller {chip_id}"
    )))?;
    Ok(chip)
}

impl VmState {
    /// Reads it from a paused VM.
    pub fn capture(vm: &VmFd) -> Result<Self, StateError> {
        Ok(Self {
            pic_master: irqchip(vm, KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: irqchip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: irqchip(vm, KVM_IRQCHIP_IOAPIC)?,
            pit: vm.get_pit2().map_err(StateError::kvm("read the PIT"))?,
            clock: vm.get_clock().map_err(StateError::kvm("read the clock"))?,
        })
    }

    /// Puts it into a VM that has its irqchip and PIT.
    pub fn apply(&self, vm: &VmFd) -> Result<(), StateError> {
        for (chip, id) in [
            (&self.pic_master, KVM_IRQCHIP_PIC_MASTER),
            (&self.pic_slave, KVM_IRQCHIP_PIC_SLAVE),
            (&self.ioapic, KVM_IRQCHIP_IOAPIC),
        ] {
            if chip.chip_id != id {
                return Err(StateError::Device {
                    device: "interrupt controller".into(),
                    what: format!("chip {} saved where chip {id} belongs", chip.chip_id),
                });
            }
            vm.set_irqchip(chip)
                .map_err(StateError::kvm(format!("set interrupt controller {id}")))?;
        }
        vm.set_pit2(&self.pit)
            .map_err(StateError::kvm("set the PIT"))?;
        // The guest's clock goes on from where it was saved; no flags, so
        // KVM takes the value as is.
        let clock = kvm_clock_data {
            clock: self.clock.clock,
            ..Default::default()
        };
        vm.set_clock(&clock)
            .map_err(StateError::kvm("set the clock"))
    }
}

/// One vCPU's state.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    mp_state: kvm_mp_state,
    regs: kvm_regs,
    sregs: kvm_sregs,
    xsave: kvm_xsave,
    xcrs: kvm_xcrs,
    debugregs: kvm_debugregs,
    lapic: kvm_lapic_state,
    msrs: Vec<kvm_msr_entry>,
    events: kvm_vcpu_events,
}

/// The MSRs KVM says a VMM should save, or none when it will not say.
pub fn msrs_to_save(kvm: &Kvm) -> Vec<u32> {
    match kvm.get_msr_index_list() {
        Ok(list) => list.as_slice().to_vec(),
        Err(e) => {
            log::warn!("KVM does not list its MSRs ({e}); saved states will lack them");
            Vec::new()
        }
    }
}

/// Reads the MSRs in `indices` that KVM will read; one it refuses is left
/// out (KVM lists some a given CPU does not have).
fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, StateError> {
    let mut saved = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let batch = rest
            .get(..rest.len().min(KVM_MAX_MSR_ENTRIES))
            .unwrap_or(rest);
        let entries: Vec<kvm_msr_entry> = batch
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|e| StateError::Device {
            device: "vCPU".into(),
            what: format!("MSR list: {e:?}"),
        })?;
        let read = fd
            .get_msrs(&mut msrs)
            .map_err(StateError::kvm("read the MSRs"))?;
        saved.extend(msrs.as_slice().iter().take(read).copied());
        // KVM stops at the first MSR it refuses: skip that one.
        let skip = if read < batch.len() { read + 1 } else { read };
        if let Some(&refused) = batch.get(read).filter(|_| read < batch.len()) {
            log::debug!("MSR {refused:#x} is not readable; not saved");
        }
        rest = rest.get(skip..).unwrap_or(&[]);
    }
    Ok(saved)
}

impl VcpuState {
    /// Reads a stopped vCPU's state. A port or MMIO read the vCPU exited
    /// for must have been completed first (one `KVM_RUN` with
    /// `immediate_exit` set), or its result is lost.
    pub fn capture(fd: &VcpuFd, msr_indices: &[u32]) -> Result<Self, StateError> {
        Ok(Self {
            mp_state: fd
                .get_mp_state()
                .map_err(StateError::kvm("read the vCPU's run state"))?,
            regs: fd
                .get_regs()
                .map_err(StateError::kvm("read the registers"))?,
            sregs: fd
                .get_sregs()
                .map_err(StateError::kvm("read the system registers"))?,
            xsave: fd
                .get_xsave()
                .map_err(StateError::kvm("read the FPU and vector registers"))?,
            xcrs: fd
                .get_xcrs()
                .map_err(StateError::kvm("read the extended control registers"))?,
            debugregs: fd
                .get_debug_regs()
                .map_err(StateError::kvm("read the debug registers"))?,
            lapic: fd
                .get_lapic()
                .map_err(StateError::kvm("read the local APIC"))?,
            msrs: read_msrs(fd, msr_indices)?,
            events: fd
                .get_vcpu_events()
                .map_err(StateError::kvm("read the pending events"))?,
        })
    }

    /// Puts the state into a vCPU created with the same CPUID.
    pub fn apply(&self, fd: &VcpuFd) -> Result<(), StateError> {
        fd.set_mp_state(self.mp_state)
            .map_err(StateError::kvm("set the vCPU's run state"))?;
        fd.set_regs(&self.regs)
            .map_err(StateError::kvm("set the registers"))?;
        fd.set_sregs(&self.sregs)
            .map_err(StateError::kvm("set the system registers"))?;
        // SAFETY: the xsave area was read by KVM_GET_XSAVE from a vCPU with
        // the same CPUID, and KVM checks the header it is given.
        unsafe { fd.set_xsave(&self.xsave) }
            .map_err(StateError::kvm("set the FPU and vector registers"))?;
        fd.set_xcrs(&self.xcrs)
            .map_err(StateError::kvm("set the extended control registers"))?;
        fd.set_debug_regs(&self.debugregs)
            .map_err(StateError::kvm("set the debug registers"))?;
        fd.set_lapic(&self.lapic)
            .map_err(StateError::kvm("set the local APIC"))?;
        for chunk in self.msrs.chunks(KVM_MAX_MSR_ENTRIES) {
            let msrs = Msrs::from_entries(chunk).map_err(|e| StateError::Device {
                device: "vCPU".into(),
                what: format!("MSR list: {e:?}"),
            })?;
            let set = fd
                .set_msrs(&msrs)
                .map_err(StateError::kvm("set the MSRs"))?;
            if let Some(refused) = chunk.get(set) {
                return Err(StateError::Device {
                    device: "vCPU".into(),
                    what: format!("KVM refuses MSR {:#x}", refused.index),
                });
            }
        }
        fd.set_vcpu_events(&self.events)
            .map_err(StateError::kvm("set the pending events"))
    }
}
