// SPDX-License-Identifier: Apache-2.0
//! What the GUI and the CLI ask of running VMs, independent of how it is
//! done. The real [`VmBackend`] talks to one worker process per VM; GUI
//! tests use a fake one.

use std::sync::Arc;

use display::framebuffer::SharedFramebuffer;
use display::view::GuestInput;
use serde::{Deserialize, Serialize};

/// Where a VM is in its life, as the GUI shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunState {
    /// Not running.
    Stopped,
    /// Its worker is starting.
    Starting,
    /// Running.
    Running,
    /// Paused (vCPUs stopped, memory kept).
    Paused,
    /// It ended with an error (the guest crashed, the worker died, or it
    /// could not start); the message says what happened.
    Failed(String),
    /// Its worker process (this pid) lives but does not answer on its
    /// socket: stopped (SIGSTOP) or hung. `nestbox kill` ends it.
    NotResponding(u32),
}

impl RunState {
    /// True while the VM holds host memory (starting, running or paused).
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            RunState::Starting | RunState::Running | RunState::Paused | RunState::NotResponding(_)
        )
    }
}

/// Something to do to a running VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum VmCommand {
    /// Stop the vCPUs.
    Pause,
    /// Start them again.
    Resume,
    /// Press the ACPI power button (a clean shutdown for guests with ACPI).
    PowerButton,
    /// Reset the machine.
    Reset,
    /// Pull the plug.
    Kill,
    /// Keyboard or pointer input.
    Input(#[serde(with = "super::protocol::GuestInputDef")] GuestInput),
    /// Press a key chord such as "ctrl+alt+del" (see `display::keys`).
    SendKeys(String),
    /// Save the screen as a PNG at this path.
    Screenshot(std::path::PathBuf),
    /// Set the sound card's playback volume, in percent (0..=100); it
    /// holds across guest reboots of this run.
    SetVolume(u8),
    /// Mute (true) or unmute the sound card; holds across guest reboots.
    SetMute(bool),
    /// Put a disc into IDE CD-ROM drive `cd` (0 = the first), or take it
    /// out (`image` None); holds across guest reboots. The client records
    /// it in the VM's settings.
    ChangeCd {
        /// The drive.
        cd: usize,
        /// The disc image (raw, read-only).
        image: Option<std::path::PathBuf>,
    },
    /// Offer the guest this display size (physical pixels), as a resized
    /// window does: a virtio-gpu guest's driver switches to it. Holds
    /// across guest reboots of this run; a plain VGA has no such size.
    SetDisplaySize {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
}

/// Something a VM did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum VmEvent {
    /// It changed state.
    State(RunState),
    /// A command failed (the message says why).
    Error(String),
}

/// Called (from any thread) when a backend has news for its
/// [`VmBackend::poll`]: the app repaints then instead of polling on a timer.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// Starts, drives and watches VMs by id (the ids of `library::store`).
pub trait VmBackend {
    /// Its current state.
    fn state(&self, id: &str) -> RunState;
    /// Starts its worker (headless: no window needed to keep it running).
    fn start(&mut self, id: &str) -> Result<(), String>;
    /// Sends a command to a running VM.
    fn command(&mut self, id: &str, command: VmCommand) -> Result<(), String>;
    /// The shared framebuffer of a running VM's screen.
    fn framebuffer(&mut self, id: &str) -> Option<Arc<SharedFramebuffer>>;
    /// Events since the last call, oldest first.
    fn poll(&mut self) -> Vec<(String, VmEvent)>;
    /// Memory (MiB) held by VMs that are live now, for the budget bar.
    fn running_memory_mib(&self) -> u64;
    /// Asks to be woken when `poll` would have news (events from workers).
    /// Backends that only change when called need not.
    fn set_waker(&mut self, _waker: Waker) {}
    /// Makes the next `poll` look for VMs started elsewhere at once (the
    /// caller saw a new worker socket).
    fn rescan(&mut self) {}
}
