// SPDX-License-Identifier: Apache-2.0
//! CPU features kept from guests on hosts whose KVM is not hardware
//! virtualization.
//!
//! On a `kvm_pvm` host (KVM inside a cloud VM, no VT-x/AMD-V) guest user
//! code runs natively, but guest kernel and firmware code is emulated, and
//! some instructions cannot be: the vCPU stops with an emulation failure.
//! A Linux guest uses those instructions only where the CPU says it has
//! the feature behind them (it patches its code at boot), so keeping the
//! feature from the guest makes it take its fallback and boot. On
//! hardware KVM nothing here applies.
//!
//! Two ways, because the host decides which CPUID leaves the VMM
//! controls. Measured on a `kvm_pvm` host (AMD EPYC, Debian's Linux 6.1 as
//! the guest, see `tests/guest/kernel/`):
//! - the hypervisor leaves (0x4000_0000 and up) are the VMM's: hiding the
//!   paravirtual features whose `vmcall` hangs there ([`CPUID_HIDDEN`])
//!   took a 2-vCPU guest from hanging at its first paravirtual IPI to
//!   booting;
//! - leaves 1 and 7 are not: the VM's CPUID table had XSAVE and POPCNT
//!   clear (KVM reports them so) and the guest kernel still used `xrstor`
//!   and `popcnt` and stopped. So the features of [`KERNEL_FEATURES_OFF`]
//!   are turned off through the kernel's command line
//!   ([`linux_cmdline_quirks`]), which the engine appends to a directly
//!   booted Linux kernel's.

use kvm_bindings::CpuId;

use crate::host::Acceleration;

/// A CPUID output register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    /// EAX.
    Eax,
    /// EBX.
    Ebx,
    /// ECX.
    Ecx,
    /// EDX.
    Edx,
}

/// One CPUID feature bit the engine clears on software-only KVM.
#[derive(Debug, Clone, Copy)]
pub struct HiddenFeature {
    /// CPUID leaf (EAX).
    pub leaf: u32,
    /// CPUID subleaf (ECX).
    pub subleaf: u32,
    /// Output register holding the bit.
    pub reg: Reg,
    /// Bit number in that register.
    pub bit: u8,
    /// The feature's name (QEMU's, for the same CPUID under QEMU).
    pub name: &'static str,
    /// Why the feature is hidden.
    pub why: &'static str,
}

/// KVM's paravirtual features whose hypercall (`vmcall`) never returns on
/// a `kvm_pvm` host: Linux sends IPIs, yields and kicks halted vCPUs with
/// them once it sees the bits, so a guest with more than one vCPU hangs
/// at its first IPI (seen: bringing up the second CPU). Without the bits
/// it uses the local APIC, which works.
pub const CPUID_HIDDEN: &[HiddenFeature] = &[
    HiddenFeature {
        leaf: 0x4000_0001,
        subleaf: 0,
        reg: Reg::Eax,
        bit: 11,
        name: "kvm-pv-ipi",
        why: "KVM_HC_SEND_IPI (vmcall) hangs",
    },
    HiddenFeature {
        leaf: 0x4000_0001,
        subleaf: 0,
        reg: Reg::Eax,
        bit: 13,
        name: "kvm-pv-sched-yield",
        why: "KVM_HC_SCHED_YIELD (vmcall) hangs",
    },
    HiddenFeature {
        leaf: 0x4000_0001,
        subleaf: 0,
        reg: Reg::Eax,
        bit: 7,
        name: "kvm-pv-unhalt",
        why: "KVM_HC_KICK_CPU (vmcall) hangs",
    },
];

/// A CPU feature a Linux guest is told to leave alone on software-only KVM.
#[derive(Debug, Clone, Copy)]
pub struct KernelFeatureOff {
    /// Linux's name for it (`clearcpuid=`, `/proc/cpuinfo`).
    pub name: &'static str,
    /// Why.
    pub why: &'static str,
}

const fn off(name: &'static str, why: &'static str) -> KernelFeatureOff {
    KernelFeatureOff { name, why }
}

/// Features Linux must not use in kernel mode on a `kvm_pvm` host.
pub const KERNEL_FEATURES_OFF: &[KernelFeatureOff] = &[
    off(
        "cx16",
        "lock cmpxchg16b (SLUB's double-word cmpxchg) is not emulated",
    ),
    off("smap", "clac/stac around user accesses are not emulated"),
    off("popcnt", "popcnt (the kernel's hweight) is not emulated"),
    off("serialize", "serialize (sync_core) is not emulated"),
    off("rdrand", "rdrand (boot-time seeding) is not emulated"),
    off("rdseed", "rdseed (boot-time seeding) is not emulated"),
    off("pcid", "PCID makes the kernel flush TLBs with invpcid"),
    off("invpcid", "invpcid is not emulated"),
    off(
        "erms",
        "kept out with fsrm in the measured working set (string copies)",
    ),
    off(
        "fsrm",
        "kept out with erms in the measured working set (string copies)",
    ),
];

/// Kernel parameters with no `clearcpuid=` name: `noxsave` (xrstor is not
/// emulated; the kernel then uses fxsave/fxrstor) and `nofsgsbase`
/// (rdfsbase/wrfsbase in the context switch are not emulated).
const KERNEL_PARAMS_OFF: &str = "noxsave nofsgsbase";

/// The CPUID bits cleared on a host with `acceleration`: none on
/// hardware KVM.
pub fn hidden_features(acceleration: Acceleration) -> &'static [HiddenFeature] {
    match acceleration {
        Acceleration::Hardware => &[],
        Acceleration::Software => CPUID_HIDDEN,
    }
}

/// Clears every feature of `hidden` in `cpuid`.
pub fn apply(cpuid: &mut CpuId, hidden: &[HiddenFeature]) {
    for entry in cpuid.as_mut_slice() {
        for feature in hidden
            .iter()
            .filter(|f| f.leaf == entry.function && f.subleaf == entry.index)
        {
            let reg = match feature.reg {
                Reg::Eax => &mut entry.eax,
                Reg::Ebx => &mut entry.ebx,
                Reg::Ecx => &mut entry.ecx,
                Reg::Edx => &mut entry.edx,
            };
            *reg &= !(1u32 << feature.bit);
        }
    }
}

/// What the engine appends to a directly booted Linux kernel's command
/// line `cmdline` on a host with `acceleration`: the parameters that keep
/// the kernel off [`KERNEL_FEATURES_OFF`] on software-only KVM; None on
/// hardware KVM, or where the command line already says `clearcpuid=`
/// (the user chose).
pub fn linux_cmdline_quirks(acceleration: Acceleration, cmdline: &str) -> Option<String> {
    if acceleration == Acceleration::Hardware
        || cmdline
            .split_whitespace()
            .any(|w| w.starts_with("clearcpuid="))
    {
        return None;
    }
    let names: Vec<&str> = KERNEL_FEATURES_OFF.iter().map(|f| f.name).collect();
    Some(format!(
        "{KERNEL_PARAMS_OFF} clearcpuid={}",
        names.join(",")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn table() -> CpuId {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ecx: u32::MAX,
                edx: u32::MAX,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x4000_0001,
                eax: u32::MAX,
                ..Default::default()
            },
        ];
        CpuId::from_entries(&entries).unwrap()
    }

    #[test]
    fn test_software_kvm_hides_the_hanging_pv_features_and_nothing_else() {
        let mut cpuid = table();
        apply(&mut cpuid, hidden_features(Acceleration::Software));
        let entries = cpuid.as_slice();
        assert_eq!(entries[0].ecx, u32::MAX);
        assert_eq!(entries[0].edx, u32::MAX);
        let pv = entries[1].eax;
        assert_eq!(pv & (1 << 11), 0, "PV IPI");
        assert_eq!(pv & (1 << 13), 0, "PV sched yield");
        assert_eq!(pv & (1 << 7), 0, "PV unhalt");
        assert_eq!(pv.count_zeros(), 3);
        assert_eq!(pv & (1 << 3), 1 << 3, "kvm-clock stays");
    }

    #[test]
    fn test_hardware_kvm_keeps_cpuid_and_cmdline_as_they_are() {
        let mut cpuid = table();
        apply(&mut cpuid, hidden_features(Acceleration::Hardware));
        assert_eq!(cpuid.as_slice(), table().as_slice());
        assert_eq!(
            linux_cmdline_quirks(Acceleration::Hardware, "console=ttyS0"),
            None
        );
    }

    #[test]
    fn test_software_kvm_linux_cmdline_turns_the_features_off() {
        let added = linux_cmdline_quirks(Acceleration::Software, "console=ttyS0").unwrap();
        assert!(added.starts_with("noxsave nofsgsbase clearcpuid=cx16,smap,popcnt,"));
        for feature in KERNEL_FEATURES_OFF {
            assert!(added.contains(feature.name));
            assert!(!feature.why.is_empty());
        }
        let chosen = "console=ttyS0 clearcpuid=cx16";
        assert_eq!(linux_cmdline_quirks(Acceleration::Software, chosen), None);
    }
}
