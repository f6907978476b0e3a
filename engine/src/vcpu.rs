// SPDX-License-Identifier: Apache-2.0
//! One thread per vCPU, each looping on `KVM_RUN` and dispatching its exits
//! to the port-I/O and MMIO buses. Every way a guest can stop a vCPU
//! (triple fault, emulation failure, failed entry) becomes an [`Outcome`];
//! none panics.
//!
//! The VMM interrupts a vCPU with a real-time signal: the handler sets
//! `immediate_exit` in that vCPU's `kvm_run`, so the signal is never lost,
//! whether it lands inside `KVM_RUN` (which returns `EINTR`) or just
//! before it (which then returns at once).

use std::cell::Cell;
use std::os::raw::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_HALTED, kvm_run};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use vmm_sys_util::signal::{SIGRTMIN, register_signal_handler};

use crate::bus::Bus;
use crate::control::{Outcome, VmControl};
use crate::snapshot::StateError;
use crate::snapshot::kvm_state::VcpuState;

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;
/// `KVM_INTERNAL_ERROR_EMULATION`.
const INTERNAL_ERROR_EMULATION: u32 = 1;

thread_local! {
    // The running vCPU's kvm_run page, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(ptr::null_mut()) };
}

/// The size of one access of the port I/O exit being handled, out of
/// `total` bytes: a string instruction (`rep insw`) exits once for up to a
/// page of accesses, which devices must see one by one.
fn io_element_size(total: usize) -> usize {
    let run = KVM_RUN.with(Cell::get);
    if run.is_null() {
        return total;
    }
    // SAFETY: `run` is this thread's kvm_run mapping, valid while its vCPU
    // runs; after a KVM_EXIT_IO exit the union's `io` member is the one
    // KVM filled in, and it lies apart from the data bytes the caller
    // holds, so only plain data no reference covers is read.
    let size = usize::from(unsafe { (*run).__bindgen_anon_1.io.size });
    if size == 0 || total % size != 0 {
        total
    } else {
        size
    }
}

/// The signal that kicks a vCPU out of `KVM_RUN`.
pub fn kick_signal() -> c_int {
    SIGRTMIN()
}

extern "C" fn handle_kick(_num: c_int, _info: *mut libc::siginfo_t, _ctx: *mut c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is this thread's own kvm_run mapping, set while
        // the vCPU fd is alive and cleared before it is dropped; a volatile
        // byte store is async-signal-safe.
        unsafe { ptr::write_volatile(ptr::addr_of_mut!((*run).immediate_exit), 1) };
    }
}

/// Installs the kick handler once per process.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| result = register_signal_handler(kick_signal(), handle_kick));
    result
}

/// What a probe found a vCPU doing, for hang detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ProbeState {
    /// No probe answered yet, or the vCPU can still run.
    Running = 0,
    /// Halted with interrupts disabled: only NMI/INIT can wake it.
    HaltedInterruptsOff = 1,
    /// Waiting for INIT/SIPI (an AP never started).
    NotStarted = 2,
}

/// A request for a paused vCPU's state, and its answer.
#[derive(Default)]
enum Capture {
    #[default]
    Idle,
    /// Wanted, with the MSRs to read.
    Requested(Arc<[u32]>),
    /// Taken (or failed).
    Done(Result<Box<VcpuState>, StateError>),
}

/// Flags the VMM shares with one vCPU thread.
#[derive(Default)]
pub struct VcpuShared {
    probe_requested: AtomicBool,
    probe_state: AtomicU8,
    probe_rip: std::sync::atomic::AtomicU64,
    capture: Mutex<Capture>,
    captured: Condvar,
}

impl VcpuShared {
    /// Asks the vCPU to report its run state at its next exit.
    pub fn request_probe(&self) {
        self.probe_requested.store(true, Ordering::SeqCst);
    }

    fn capture_slot(&self) -> std::sync::MutexGuard<'_, Capture> {
        self.capture.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the (paused) vCPU for its state, with the MSRs in `msrs`;
    /// the VM's control must then be [poked](VmControl::poke).
    pub fn request_state(&self, msrs: Arc<[u32]>) {
        *self.capture_slot() = Capture::Requested(msrs);
    }

    /// Forgets a request for the vCPU's state and any answer not taken (a
    /// save that failed), so a later save never takes a stale answer.
    pub fn cancel_state_request(&self) {
        *self.capture_slot() = Capture::Idle;
    }

    /// Waits up to `timeout` for the state [`request_state`] asked for;
    /// None when the vCPU did not answer in time.
    ///
    /// [`request_state`]: Self::request_state
    pub fn take_state(&self, timeout: Duration) -> Option<Result<Box<VcpuState>, StateError>> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.capture_slot();
        loop {
            if matches!(*slot, Capture::Done(_)) {
                return match std::mem::take(&mut *slot) {
                    Capture::Done(result) => Some(result),
                    _ => None,
                };
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            slot = self
                .captured
                .wait_timeout(slot, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The state the last probe found, and the rip it saw.
    pub fn probe_result(&self) -> (ProbeState, u64) {
        let state = match self.probe_state.load(Ordering::SeqCst) {
            1 => ProbeState::HaltedInterruptsOff,
            2 => ProbeState::NotStarted,
            _ => ProbeState::Running,
        };
        (state, self.probe_rip.load(Ordering::SeqCst))
    }
}

/// A vCPU ready to run on its own thread.
pub struct Vcpu {
    index: u32,
    fd: VcpuFd,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    control: Arc<VmControl>,
    shared: Arc<VcpuShared>,
}

impl Vcpu {
    /// Wraps a configured vCPU fd.
    pub fn new(
        index: u32,
        fd: VcpuFd,
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
        control: Arc<VmControl>,
        shared: Arc<VcpuShared>,
    ) -> Self {
        Self {
            index,
            fd,
            pio,
            mmio,
            control,
            shared,
        }
    }

    /// Runs until the VM stops. Any stop this vCPU causes is recorded in
    /// the VM's control.
    pub fn run(mut self) {
        let run_ptr: *mut kvm_run = self.fd.get_kvm_run();
        KVM_RUN.with(|c| c.set(run_ptr));
        let mut pokes_seen = 0;
        while !self.control.is_stopping() {
            if self.control.is_paused() {
                self.answer_state_request();
                self.control.wait_while_paused(&mut pokes_seen);
                continue;
            }
            if let Some(outcome) = self.run_once() {
                self.control.request_stop(outcome);
            }
        }
        KVM_RUN.with(|c| c.set(ptr::null_mut()));
    }

    /// Enters the guest once and handles the exit.
    fn run_once(&mut self) -> Option<Outcome> {
        let vcpu = self.index;
        match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                let size = io_element_size(data.len());
                for element in data.chunks_mut(size) {
                    if !self.pio.read(u64::from(port), element) {
                        log::trace!("vcpu{vcpu}: unhandled in from port {port:#x}");
                        element.fill(0xff);
                    }
                }
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                let size = io_element_size(data.len());
                for element in data.chunks(size) {
                    if !self.pio.write(u64::from(port), element) {
                        log::trace!("vcpu{vcpu}: unhandled out to port {port:#x}: {element:02x?}");
                    }
                }
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !self.mmio.read(addr, data) {
                    log::debug!("vcpu{vcpu}: unhandled MMIO read at {addr:#x}");
                    data.fill(0xff);
                }
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !self.mmio.write(addr, data) {
                    log::debug!("vcpu{vcpu}: unhandled MMIO write at {addr:#x}");
                }
                None
            }
            Ok(VcpuExit::Shutdown) => {
                if let (Ok(regs), Ok(sregs)) = (self.fd.get_regs(), self.fd.get_sregs()) {
                    log::warn!(
                        "vcpu{vcpu}: triple fault at cs base {:#x} rip {:#x}, cr0 {:#x}, idt {:#x}+{:#x}",
                        sregs.cs.base,
                        regs.rip,
                        sregs.cr0,
                        sregs.idt.base,
                        sregs.idt.limit
                    );
                }
                Some(Outcome::TripleFault { vcpu })
            }
            Ok(VcpuExit::Hlt) => Some(Outcome::HaltedWithInterruptsOff {
                rip: self.fd.get_regs().map(|r| r.rip).unwrap_or(0),
            }),
            Ok(VcpuExit::InternalError) => Some(self.internal_error()),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(Outcome::KvmError {
                vcpu,
                detail: format!("VM entry failed: hardware reason {reason:#x} on host CPU {cpu}"),
            }),
            Ok(VcpuExit::SystemEvent(kind, _)) => Some(match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => Outcome::PowerOff,
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => Outcome::Reset,
                other => Outcome::KvmError {
                    vcpu,
                    detail: format!("system event {other}"),
                },
            }),
            Ok(VcpuExit::Intr) => {
                self.after_kick();
                None
            }
            Ok(other) => Some(Outcome::KvmError {
                vcpu,
                detail: format!("unexpected exit {other:?}"),
            }),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.after_kick();
                None
            }
            Err(e) => Some(Outcome::HostError(format!(
                "KVM_RUN on vCPU {vcpu} failed: {e}"
            ))),
        }
    }

    /// While paused: takes this vCPU's state if it was asked for. A port
    /// or MMIO read the vCPU exited for is completed first (one entry
    /// with `immediate_exit` set, which does not run the guest), so its
    /// result is in the registers saved.
    fn answer_state_request(&mut self) {
        let msrs = match &*self.shared.capture_slot() {
            Capture::Requested(msrs) => msrs.clone(),
            _ => return,
        };
        self.fd.set_kvm_immediate_exit(1);
        match self.fd.run() {
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => log::warn!("vcpu{}: completing I/O before a save: {e}", self.index),
            Ok(exit) => log::warn!(
                "vcpu{}: unexpected exit {exit:?} while completing I/O before a save",
                self.index
            ),
        }
        self.fd.set_kvm_immediate_exit(0);
        let result = VcpuState::capture(&self.fd, &msrs).map(Box::new);
        *self.shared.capture_slot() = Capture::Done(result);
        self.shared.captured.notify_all();
    }

    fn after_kick(&mut self) {
        self.fd.set_kvm_immediate_exit(0);
        if self.shared.probe_requested.swap(false, Ordering::SeqCst) {
            self.probe();
        }
    }

    fn probe(&self) {
        let mp_state = self.fd.get_mp_state().map(|s| s.mp_state);
        let regs = self.fd.get_regs();
        let state = match (mp_state, &regs) {
            (Ok(KVM_MP_STATE_HALTED), Ok(regs)) if regs.rflags & RFLAGS_IF == 0 => {
                ProbeState::HaltedInterruptsOff
            }
            (Ok(kvm_bindings::KVM_MP_STATE_UNINITIALIZED), _)
            | (Ok(kvm_bindings::KVM_MP_STATE_INIT_RECEIVED), _) => ProbeState::NotStarted,
            _ => ProbeState::Running,
        };
        self.shared.probe_state.store(state as u8, Ordering::SeqCst);
        let rip = regs.map(|r| r.rip).unwrap_or(0);
        self.shared.probe_rip.store(rip, Ordering::SeqCst);
    }

    fn internal_error(&mut self) -> Outcome {
        let vcpu = self.index;
        // SAFETY: after a KVM_EXIT_INTERNAL_ERROR exit, the `internal` member
        // of the kvm_run union is the one KVM filled in.
        let internal = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal };
        let where_ = match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(regs), Ok(sregs)) => format!(
                "cs base {:#x} rip {:#x}, cr0 {:#x}",
                sregs.cs.base, regs.rip, sregs.cr0
            ),
            _ => "registers unavailable".to_string(),
        };
        let count = (internal.ndata as usize).min(internal.data.len());
        let data = internal.data.get(..count).unwrap_or(&[]);
        if internal.suberror == INTERNAL_ERROR_EMULATION {
            Outcome::EmulationFailure {
                vcpu,
                detail: format!("{where_}; data {data:x?}"),
            }
        } else {
            Outcome::KvmError {
                vcpu,
                detail: format!(
                    "internal error, suberror {}; {where_}; data {data:x?}",
                    internal.suberror
                ),
            }
        }
    }
}

/// The CPUID table for vCPU `index` of `count`: the host's supported set,
/// with each vCPU's APIC ID and a one-package topology of `count` cores.
pub fn cpuid_for(kvm: &Kvm, index: u32, count: u32) -> Result<CpuId, kvm_ioctls::Error> {
    let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)?;
    let core_bits = u32::BITS - count.saturating_sub(1).leading_zeros();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ebx = (entry.ebx & 0x0000_ffff) | (index << 24) | (count.min(255) << 16);
                // The hypervisor bit; HTT when there is more than one CPU.
                entry.ecx |= 1 << 31;
                if count > 1 {
                    entry.edx |= 1 << 28;
                }
            }
            4 => {
                let level = (entry.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                entry.eax = (entry.eax & 0x3fff) | ((count - 1).min(63) << 26) | (sharing << 14);
            }
            0xb | 0x1f => {
                let (eax, ebx, level_type) = match entry.index {
                    0 => (0, 1, 1),
                    1 => (core_bits, count, 2),
                    _ => (0, 0, 0),
                };
                entry.eax = eax;
                entry.ebx = ebx;
                entry.ecx = (level_type << 8) | (entry.index & 0xff);
                entry.edx = index;
            }
            0x8000_0008 => {
                entry.ecx = (entry.ecx & !0xff) | (count - 1).min(255);
            }
            _ => {}
        }
    }
    Ok(cpuid)
}
