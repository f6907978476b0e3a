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
    /// Not running, with its whole state saved: the next start resumes it
    /// where it was.
    Suspended,
    /// It ended with an error (the guest crashed, the worker died, or it
    /// could not start); the message says what happened, in plain words,
    /// then maybe the technical details after [`DETAILS`] (see
    /// [`failure_message`] and [`split_failure`]).
    Failed(String),
    /// Its worker process (this pid) lives but does not answer on its
    /// socket: stopped (SIGSTOP) or hung. `nestbox kill` ends it.
    NotResponding(u32),
}

/// What separates a failure's plain words from its technical details.
pub const DETAILS: &str = "\nDetails: ";

/// The message of a VM that ended on `outcome` after running `ran_for`:
/// what happened and when, in plain words, then the details.
pub fn failure_message(
    outcome: &engine::Outcome,
    ran_for: std::time::Duration,
    software_kvm: bool,
) -> String {
    let summary = outcome.summary(software_kvm);
    let technical = outcome.to_string();
    let when = format!("after {}", human_duration(ran_for));
    if summary == technical {
        return format!("{summary} ({when})");
    }
    format!("{summary} ({when}).{DETAILS}{technical}")
}

/// A failure message's plain words and its details, if any.
pub fn split_failure(message: &str) -> (&str, Option<&str>) {
    match message.split_once(DETAILS) {
        Some((plain, details)) => (plain, Some(details)),
        None => (message, None),
    }
}

/// `d` as a person says it: "12 s", "1 min 30 s", "2 h 5 min".
pub fn human_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s} s"),
        (0, _) if s == 0 => format!("{m} min"),
        (0, _) => format!("{m} min {s} s"),
        (_, 0) => format!("{h} h"),
        _ => format!("{h} h {m} min"),
    }
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
    /// Save the VM's whole state in its directory and end it; the next
    /// start resumes it.
    Suspend,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn test_a_failure_says_what_and_when_in_plain_words_then_the_details() {
        let outcome = engine::Outcome::EmulationFailure {
            vcpu: 0,
            detail: "rip 0x1234".to_string(),
        };
        let message = failure_message(&outcome, Duration::from_secs(90), true);
        let (plain, details) = split_failure(&message);
        assert_eq!(
            plain,
            "The guest's CPU hit an instruction this computer cannot run \
             (it has no hardware virtualization) (after 1 min 30 s)."
        );
        assert_eq!(details, Some(outcome.to_string().as_str()));
        // An outcome with nothing more technical to say has no details.
        let host = engine::Outcome::HostError("disk gone".to_string());
        let message = failure_message(&host, Duration::from_secs(5), false);
        assert_eq!(
            split_failure(&message),
            ("The VM failed: disk gone (after 5 s)", None)
        );
        assert_eq!(human_duration(Duration::from_secs(7260)), "2 h 1 min");
        assert_eq!(human_duration(Duration::from_secs(120)), "2 min");
    }
}
