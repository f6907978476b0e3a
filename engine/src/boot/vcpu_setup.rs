// SPDX-License-Identifier: Apache-2.0
//! Register state for vCPU 0 at a direct kernel entry (PVH's 32-bit flat
//! protected mode, or the 64-bit boot protocol's identity-mapped long
//! mode), and the per-vCPU state a kernel expects without firmware: FPU
//! control words, MTRRs enabled with write-back default, and the local
//! APIC's LINT0/LINT1 wired as ExtINT/NMI.

use kvm_bindings::{Msrs, kvm_fpu, kvm_msr_entry, kvm_segment};
use kvm_ioctls::VcpuFd;

use super::linux::{BOOT_STACK, GDT_ADDR, IDT_ADDR, KernelEntry, PML4_ADDR};

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default memory type write-back.
const MTRR_ENABLE_WRITEBACK: u64 = (1 << 11) | 6;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn segment(selector: u16, type_: u8, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Puts vCPU 0 at the kernel's entry point.
pub fn enter_kernel(vcpu: &VcpuFd, entry: KernelEntry) -> Result<(), kvm_ioctls::Error> {
    let mut sregs = vcpu.get_sregs()?;
    let mut regs = vcpu.get_regs()?;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (super::linux::GDT.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    regs.rflags = 0x2;
    match entry {
        KernelEntry::Pvh { entry, start_info } => {
            sregs.cs = segment(0x20, 0xb, false);
            let data = segment(0x18, 0x3, false);
            (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = entry;
            regs.rbx = start_info;
        }
        KernelEntry::Long64 { entry, zero_page } => {
            sregs.cs = segment(0x10, 0xb, true);
            let data = segment(0x18, 0x3, false);
            (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 = CR4_PAE;
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.efer = EFER_LME | EFER_LMA;
            regs.rip = entry;
            regs.rsi = zero_page;
            regs.rsp = BOOT_STACK;
            regs.rbp = BOOT_STACK;
        }
    }
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&regs)
}

/// State every vCPU needs when no firmware initialised it.
pub fn prepare_without_firmware(vcpu: &VcpuFd) -> Result<(), kvm_ioctls::Error> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu)?;
    let entries = [
        kvm_msr_entry {
            index: MSR_IA32_MISC_ENABLE,
            data: MISC_ENABLE_FAST_STRING,
            ..Default::default()
        },
        kvm_msr_entry {
            index: MSR_MTRR_DEF_TYPE,
            data: MTRR_ENABLE_WRITEBACK,
            ..Default::default()
        },
    ];
    let msrs = Msrs::from_entries(&entries).map_err(|_| kvm_ioctls::Error::new(libc::EINVAL))?;
    vcpu.set_msrs(&msrs)?;

    let mut lapic = vcpu.get_lapic()?;
    set_lvt_mode(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
    set_lvt_mode(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic)
}

fn set_lvt_mode(regs: &mut [i8; 1024], offset: usize, mode: u32) {
    let Some(bytes) = regs.get_mut(offset..offset + 4) else {
        return;
    };
    let mut raw = [0u8; 4];
    for (dst, src) in raw.iter_mut().zip(bytes.iter()) {
        *dst = *src as u8;
    }
    let value = (u32::from_le_bytes(raw) & !0x700) | (mode << 8);
    for (dst, src) in bytes.iter_mut().zip(value.to_le_bytes()) {
        *dst = src as i8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_set_lvt_mode_replaces_delivery_mode_only() {
        let mut regs = [0i8; 1024];
        regs[APIC_LVT0] = 0x30;
        regs[APIC_LVT0 + 1] = 0x05;
        set_lvt_mode(&mut regs, APIC_LVT0, APIC_MODE_EXTINT);
        assert_eq!(
            (regs[APIC_LVT0] as u8, regs[APIC_LVT0 + 1] as u8),
            (0x30, 0x07)
        );
    }
}
