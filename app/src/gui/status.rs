// SPDX-License-Identifier: Apache-2.0
//! What the library says about a VM: its run state, a start that failed,
//! or settings that need attention.

use crate::worker::api::RunState;

/// A VM's state as the GUI shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmStatus {
    /// Its `vm.toml` cannot be used; nothing can be done to it until the
    /// user fixes the file.
    NeedsAttention,
    /// What the backend says.
    Run(RunState),
    /// The last start was refused before or by the backend (a missing
    /// disk, a cap, the backend's error).
    StartFailed(String),
}

impl VmStatus {
    /// The short label of the library list.
    pub fn label(&self) -> String {
        match self {
            VmStatus::NeedsAttention => "needs attention".to_string(),
            VmStatus::Run(RunState::Stopped) => "stopped".to_string(),
            VmStatus::Run(RunState::Starting) => "starting".to_string(),
            VmStatus::Run(RunState::Running) => "running".to_string(),
            VmStatus::Run(RunState::Paused) => "paused".to_string(),
            VmStatus::Run(RunState::Suspended) => "suspended".to_string(),
            VmStatus::Run(RunState::NotResponding(_)) => "not responding".to_string(),
            // The list stays one line; the details panel says what happened.
            VmStatus::Run(RunState::Failed(_)) => "stopped with an error".to_string(),
            VmStatus::StartFailed(message) => format!("failed: {message}"),
        }
    }

    /// The run state, for deciding what the toolbar offers (a failed start
    /// is a stopped VM).
    pub fn run_state(&self) -> Option<RunState> {
        match self {
            VmStatus::NeedsAttention => None,
            VmStatus::Run(state) => Some(state.clone()),
            VmStatus::StartFailed(_) => Some(RunState::Stopped),
        }
    }

    /// True while the VM is starting, running or paused (its screen is shown).
    pub fn is_live(&self) -> bool {
        self.run_state().is_some_and(|s| s.is_live())
    }
}
