// SPDX-License-Identifier: Apache-2.0
//! Closing a finished VM quickly.
//!
//! When a VM's last file closes, the kernel tears down the in-kernel PIT
//! and with it the PIT's tick-reinjection hooks: two unregisters, each
//! waiting for an SRCU grace period on the VM's interrupt routes, one
//! right after the other. SRCU expedites a wait that finds it idle, but
//! not one that comes within 25 µs of the last grace period's end: that
//! one waits a normal grace period, four timer ticks (16 ms at 250 Hz),
//! most of a short VM's life (docs/BENCHMARKS.md, "Boot").
//!
//! Which of the two the second unregister gets depends on the CPU of the
//! thread waiting. A new SRCU structure (each VM has its own) runs its
//! callbacks on the boot CPU; a waiter there is woken the moment the first
//! grace period ends and asks again within the 25 µs, while a waiter on
//! another CPU is woken by an interrupt from it and, measured on the
//! development host, always asks later. So [`prepare_close`] turns PIT
//! reinjection off itself (the same two unregisters, after which the
//! close has none to do) from a thread kept off the boot CPU: closing a
//! VM with the irqchip and PIT that had lived 3 ms took 20.3 ms from the
//! boot CPU, 4.3 ms so (the rest is the irqchip's own deferred frees).
//! Reinjection only matters while the guest runs, so this is for a VM
//! whose vCPUs have stopped.

use std::mem;

use kvm_bindings::kvm_reinject_control;
use kvm_ioctls::VmFd;
use vmm_sys_util::errno;
use vmm_sys_util::ioctl::ioctl_with_ref;

use self::numbers::KVM_REINJECT_CONTROL;

mod numbers {
    use kvm_bindings::KVMIO;
    use vmm_sys_util::ioctl_io_nr;

    // The kernel defines it with _IO although it takes a pointer.
    ioctl_io_nr!(KVM_REINJECT_CONTROL, KVMIO, 0x71);
}

/// The CPU SRCU runs a new structure's callbacks on (x86 boots on CPU 0).
const BOOT_CPU: usize = 0;

/// Takes the PIT's reinjection hooks down ahead of the VM's close, from
/// a thread off the boot CPU, on a VM whose vCPUs have all stopped.
/// Errors are the kernel's (or a thread that could not start); the close
/// still works after one, only as slowly as without this.
pub fn prepare_close(vm: &VmFd) -> Result<(), kvm_ioctls::Error> {
    std::thread::scope(|scope| {
        let closer = std::thread::Builder::new()
            .name("vm-close".into())
            .spawn_scoped(scope, || {
                keep_off_boot_cpu();
                disable_pit_reinjection(vm)
            })
            .map_err(|e| errno::Error::new(e.raw_os_error().unwrap_or(libc::EAGAIN)))?;
        closer
            .join()
            .unwrap_or_else(|_| Err(errno::Error::new(libc::EINTR)))
    })
}

/// Moves the calling thread off the boot CPU when it may run elsewhere.
/// Best effort: where it cannot move, it stays and is only slower.
fn keep_off_boot_cpu() {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut allowed: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: the kernel writes at most `size_of::<cpu_set_t>()` bytes
    // into `allowed`, which lives for the call.
    let got = unsafe { libc::sched_getaffinity(0, mem::size_of_val(&allowed), &mut allowed) };
    if got != 0 {
        return;
    }
    if let Some(elsewhere) = without_boot_cpu(allowed) {
        // SAFETY: the kernel reads one cpu_set_t that lives for the call.
        let _ = unsafe { libc::sched_setaffinity(0, mem::size_of_val(&elsewhere), &elsewhere) };
    }
}

/// `allowed` without the boot CPU, when it holds the boot CPU and another.
fn without_boot_cpu(mut allowed: libc::cpu_set_t) -> Option<libc::cpu_set_t> {
    // SAFETY: CPU_ISSET reads the set it is given; BOOT_CPU is below
    // CPU_SETSIZE.
    let on_boot_cpu = unsafe { libc::CPU_ISSET(BOOT_CPU, &allowed) };
    // SAFETY: CPU_COUNT reads the set it is given.
    let count = unsafe { libc::CPU_COUNT(&allowed) };
    if !on_boot_cpu || count < 2 {
        return None;
    }
    // SAFETY: CPU_CLR writes the set it is given; BOOT_CPU is below
    // CPU_SETSIZE.
    unsafe { libc::CPU_CLR(BOOT_CPU, &mut allowed) };
    Some(allowed)
}

fn disable_pit_reinjection(vm: &VmFd) -> Result<(), kvm_ioctls::Error> {
    let control = kvm_reinject_control {
        pit_reinject: 0,
        reserved: [0; 31],
    };
    // SAFETY: the kernel reads one `kvm_reinject_control`, which lives
    // for the whole call; `vm` is an open VM file.
    let ret = unsafe { ioctl_with_ref(vm, KVM_REINJECT_CONTROL(), &control) };
    if ret == 0 {
        Ok(())
    } else {
        Err(errno::Error::last())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config};

    fn cpus(list: &[usize]) -> libc::cpu_set_t {
        // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
        for &cpu in list {
            // SAFETY: CPU_SET writes the set it is given; cpu < 64.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        set
    }

    fn members(set: &libc::cpu_set_t) -> Vec<usize> {
        // SAFETY: CPU_ISSET reads the set, for CPUs below CPU_SETSIZE.
        (0..64)
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, set) })
            .collect()
    }

    #[test]
    fn the_closer_leaves_the_boot_cpu_only_when_it_has_somewhere_to_go() {
        let moved = without_boot_cpu(cpus(&[0, 1, 3])).unwrap();
        assert_eq!(members(&moved), vec![1, 3]);
        assert!(without_boot_cpu(cpus(&[0])).is_none());
        assert!(without_boot_cpu(cpus(&[1, 2])).is_none());
    }

    fn kvm_or_skip() -> Option<kvm_ioctls::Kvm> {
        match crate::host::open_kvm() {
            Ok(kvm) => Some(kvm),
            Err(e) => {
                crate::test_skip::skipped_missing(module_path!(), &format!("KVM is unusable: {e}"));
                None
            }
        }
    }

    #[test]
    fn a_vm_with_a_pit_is_prepared_and_preparing_again_is_harmless() {
        let Some(kvm) = kvm_or_skip() else { return };
        let vm = kvm.create_vm().unwrap();
        vm.create_irq_chip().unwrap();
        vm.create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .unwrap();
        prepare_close(&vm).unwrap();
        prepare_close(&vm).unwrap();
    }

    #[test]
    fn a_vm_without_a_pit_reports_the_kernels_error() {
        let Some(kvm) = kvm_or_skip() else { return };
        let vm = kvm.create_vm().unwrap();
        vm.create_irq_chip().unwrap();
        assert_eq!(prepare_close(&vm).unwrap_err().errno(), libc::ENXIO);
    }
}
