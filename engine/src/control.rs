// SPDX-License-Identifier: Apache-2.0
//! How a running VM is told to stop, pause and resume, and how the reason
//! it stopped (its [`Outcome`]) is recorded once, by whichever thread saw it
//! first: a vCPU, a device, or the host.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Why a VM stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest wrote `code` to the debug-exit port.
    DebugExit(u8),
    /// The guest asked for a reset (keyboard controller, port 0xCF9 or 0x92).
    Reset,
    /// A vCPU hit a triple fault.
    TripleFault {
        /// The vCPU index.
        vcpu: u32,
    },
    /// Every vCPU is halted with interrupts disabled: nothing can wake it.
    HaltedWithInterruptsOff {
        /// Instruction pointer of the boot vCPU.
        rip: u64,
    },
    /// KVM could not emulate an instruction.
    EmulationFailure {
        /// The vCPU index.
        vcpu: u32,
        /// Instruction pointer and bytes, as far as KVM reported them.
        detail: String,
    },
    /// Another KVM internal error or failed VM entry.
    KvmError {
        /// The vCPU index.
        vcpu: u32,
        /// What KVM said.
        detail: String,
    },
    /// The host stopped the VM.
    Stopped,
    /// A host-side failure stopped the VM.
    HostError(String),
}

impl Outcome {
    /// Whether a PC would start again: a reset request, or a triple fault
    /// (which resets a real PC's CPU; firmware such as iPXE and OSes use
    /// it to reboot). The VMM boots a fresh machine unless told not to.
    pub fn restarts(&self) -> bool {
        matches!(self, Outcome::Reset | Outcome::TripleFault { .. })
    }

    /// True when the guest did not end by its own choice.
    pub fn is_failure(&self) -> bool {
        !matches!(
            self,
            Outcome::PowerOff | Outcome::DebugExit(_) | Outcome::Reset | Outcome::Stopped
        )
    }

    /// What happened, in plain words for someone who is not a VMM
    /// developer (the [`Display`](std::fmt::Display) text has the
    /// technical details). `software_kvm`: the host's KVM has no hardware
    /// virtualization, which explains most instructions it cannot run.
    pub fn summary(&self, software_kvm: bool) -> String {
        match self {
            Outcome::TripleFault { .. } => {
                "The guest crashed: its CPU met a fault it could not handle and reset".to_string()
            }
            Outcome::HaltedWithInterruptsOff { .. } => {
                "The guest stopped itself: it halted with nothing left to wake it".to_string()
            }
            Outcome::EmulationFailure { .. } if software_kvm => {
                "The guest's CPU hit an instruction this computer cannot run \
                 (it has no hardware virtualization)"
                    .to_string()
            }
            Outcome::EmulationFailure { .. } => {
                "The guest's CPU hit an instruction this computer cannot run".to_string()
            }
            Outcome::KvmError { .. } => {
                "The guest stopped on an error of the host's KVM".to_string()
            }
            other => other.to_string(),
        }
    }

    /// The process exit status that reports this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::PowerOff | Outcome::Reset | Outcome::Stopped => 0,
            // As QEMU's isa-debug-exit: (value << 1) | 1.
            Outcome::DebugExit(code) => (i32::from(*code) << 1) | 1,
            _ => 2,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::PowerOff => write!(f, "The guest powered off"),
            Outcome::DebugExit(code) => write!(f, "The guest exited with code {code}"),
            Outcome::Reset => write!(f, "The guest reset"),
            Outcome::TripleFault { vcpu } => {
                write!(f, "The guest crashed: triple fault on vCPU {vcpu}")
            }
            Outcome::HaltedWithInterruptsOff { rip } => write!(
                f,
                "The guest hung: all vCPUs halted with interrupts disabled (rip {rip:#x})"
            ),
            Outcome::EmulationFailure { vcpu, detail } => write!(
                f,
                "The guest stopped: KVM could not emulate an instruction on vCPU {vcpu} ({detail})"
            ),
            Outcome::KvmError { vcpu, detail } => {
                write!(f, "The guest stopped: KVM error on vCPU {vcpu} ({detail})")
            }
            Outcome::Stopped => write!(f, "The VM was stopped"),
            Outcome::HostError(e) => write!(f, "The VM failed: {e}"),
        }
    }
}

#[derive(Default)]
struct State {
    outcome: Option<Outcome>,
    paused: bool,
    /// Counts [`VmControl::poke`]s, so a paused vCPU sees each one.
    pokes: u64,
}

/// Shared stop/pause state of one VM.
#[derive(Default)]
pub struct VmControl {
    state: Mutex<State>,
    changed: Condvar,
    stopping: AtomicBool,
}

impl VmControl {
    /// A running, unpaused VM.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records why the VM stops; the first reason wins.
    pub fn request_stop(&self, outcome: Outcome) {
        let mut state = self.lock();
        if state.outcome.is_none() {
            log::debug!("stop requested: {outcome}");
            state.outcome = Some(outcome);
        }
        self.stopping.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// True once a stop was requested (cheap, for vCPU loops).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The outcome, once the VM is stopping.
    pub fn outcome(&self) -> Option<Outcome> {
        self.lock().outcome.clone()
    }

    /// Waits up to `timeout` for a stop; returns the outcome if there is one.
    pub fn wait_stop(&self, timeout: Duration) -> Option<Outcome> {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| s.outcome.is_none())
            .unwrap_or_else(|e| e.into_inner());
        state.outcome.clone()
    }

    /// Pauses or resumes the vCPUs.
    pub fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
        self.changed.notify_all();
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Blocks a vCPU while the VM is paused and not stopping, and until
    /// a [`poke`](Self::poke) it has not seen (`seen` counts them).
    pub fn wait_while_paused(&self, seen: &mut u64) {
        let state = self.lock();
        let state = self
            .changed
            .wait_while(state, |s| {
                s.paused && s.outcome.is_none() && s.pokes == *seen
            })
            .unwrap_or_else(|e| e.into_inner());
        *seen = state.pokes;
    }

    /// Wakes paused vCPUs to look at a request (such as one for their
    /// state) without resuming them.
    pub fn poke(&self) {
        self.lock().pokes += 1;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_request_stop_first_reason_wins() {
        let control = VmControl::new();
        control.request_stop(Outcome::TripleFault { vcpu: 0 });
        control.request_stop(Outcome::Stopped);
        assert_eq!(control.outcome(), Some(Outcome::TripleFault { vcpu: 0 }));
    }

    #[test]
    fn test_debug_exit_code_matches_qemu_convention() {
        assert_eq!(Outcome::DebugExit(0x10).exit_code(), 0x21);
    }

    #[test]
    fn test_wait_stop_times_out_without_stop() {
        let control = VmControl::new();
        assert_eq!(control.wait_stop(Duration::from_millis(1)), None);
    }
}
