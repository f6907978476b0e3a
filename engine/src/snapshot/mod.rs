// SPDX-License-Identifier: Apache-2.0
//! A paused VM's complete state in a file, and a VM started from one
//! (suspend and resume, snapshots): the file's layout ([`file`]), what KVM
//! holds for the VM and each vCPU ([`kvm_state`]), guest RAM ([`ram`]),
//! the [`Persist`] contract every device model meets, and the
//! [`MachineShape`] a state only restores into.
//!
//! Device states are serde structs encoded with postcard; the file's
//! framing (sections with a kind, a length and a CRC-32) is the only
//! byte layout written by hand. docs/ARCHITECTURE.md describes the format.

pub mod disks;
pub mod file;
pub mod kvm_state;
pub mod machine;
pub mod ram;

use std::io;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The version of the state-file format this Nestbox writes and reads.
/// Raised whenever a section's content changes shape.
pub const FORMAT_VERSION: u32 = 1;

/// Errors saving or restoring a machine state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state file could not be written.
    #[error("Cannot write the machine state to {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The state file could not be read.
    #[error("Cannot read the machine state from {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not a machine-state file at all.
    #[error("{path} is not a Nestbox machine-state file")]
    NotAStateFile {
        /// The file.
        path: PathBuf,
    },
    /// The file is in a format this Nestbox does not read.
    #[error(
        "{path} holds a machine state in format {found}, but this Nestbox reads format {FORMAT_VERSION} only; start the VM afresh or use the Nestbox that saved it"
    )]
    WrongVersion {
        /// The file.
        path: PathBuf,
        /// The format it says it is in.
        found: u32,
    },
    /// The file ends before its last section.
    #[error("The machine state in {path} is cut short (the file is truncated)")]
    Truncated {
        /// The file.
        path: PathBuf,
    },
    /// A section's checksum or content is wrong.
    #[error("The machine state in {path} is damaged: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The state is from a VM of another shape.
    #[error(
        "The saved state is from a VM with {saved}, but this VM has {this}: it cannot be restored into it"
    )]
    WrongHardware {
        /// The saved VM's side of the difference.
        saved: String,
        /// This VM's side.
        this: String,
    },
    /// A device of the VM has no saved-state support yet.
    #[error("This VM cannot be saved yet: its {0} has no saved-state support")]
    Unsupported(String),
    /// A device's own state could not be encoded or applied.
    #[error("The {device}'s state: {what}")]
    Device {
        /// The device.
        device: String,
        /// What went wrong.
        what: String,
    },
    /// KVM refused a state call.
    #[error("KVM cannot {what}")]
    Kvm {
        /// What was asked.
        what: String,
        /// KVM's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A vCPU did not stop to have its state taken.
    #[error("vCPU {0} did not stop to have its state saved")]
    VcpuTimeout(u32),
    /// The VM stopped while its state was being taken.
    #[error("The VM stopped while its state was being saved")]
    Stopped,
    /// The VM could not be brought to rest for the save (its disks
    /// flushed, its host-side work stopped); it runs on.
    #[error("The VM could not be brought to rest for the save: {what}")]
    Quiesce {
        /// What could not be done.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl StateError {
    /// A KVM failure while doing `what`.
    pub fn kvm(what: impl Into<String>) -> impl FnOnce(kvm_ioctls::Error) -> Self {
        let what = what.into();
        move |source| Self::Kvm { what, source }
    }
}

/// A device model whose state can be saved and restored.
pub trait Persist {
    /// Brings the device to rest before anything of the machine is
    /// captured (the vCPUs are paused and the event loop held): requests
    /// it holds are completed and its backends flushed, so that what it
    /// saves next, guest RAM and the interrupt controllers agree. Nothing
    /// to do by default.
    fn quiesce(&mut self) -> Result<(), StateError> {
        Ok(())
    }
    /// The device's state (see [`encode`]).
    fn save(&mut self) -> Result<Vec<u8>, StateError>;
    /// Puts the device into the state `save` returned, in a VM built from
    /// the same configuration. The bytes come from a file: anything in
    /// them may be wrong, and a wrong state is an error, never a panic.
    fn restore(&mut self, state: &[u8]) -> Result<(), StateError>;
}

/// `state` as bytes.
pub fn encode<T: Serialize>(device: &str, state: &T) -> Result<Vec<u8>, StateError> {
    postcard::to_stdvec(state).map_err(|e| StateError::Device {
        device: device.to_string(),
        what: e.to_string(),
    })
}

/// The state `encode` wrote, or an error naming `device`.
pub fn decode<T: DeserializeOwned>(device: &str, bytes: &[u8]) -> Result<T, StateError> {
    postcard::from_bytes(bytes).map_err(|e| StateError::Device {
        device: device.to_string(),
        what: format!("unreadable ({e})"),
    })
}

/// A refusal to restore a value that cannot be right for `device`.
pub fn invalid(device: &str, what: impl Into<String>) -> StateError {
    StateError::Device {
        device: device.to_string(),
        what: what.into(),
    }
}

/// What a saved state only restores into: the same amount of RAM, the
/// same vCPUs, the same firmware size and the same devices at the same
/// addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineShape {
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Size of the firmware flash (0 for a direct kernel boot).
    pub firmware_bytes: u64,
    /// The saved devices, by where they sit (`port 0x3f8`, `mmio ...`).
    pub devices: Vec<String>,
}

impl MachineShape {
    /// Checks that a state saved from `saved` fits this machine; the error
    /// names each difference from both sides.
    pub fn check_fits(&self, saved: &Self) -> Result<(), StateError> {
        let mut theirs = Vec::new();
        let mut ours = Vec::new();
        if saved.memory_bytes != self.memory_bytes {
            theirs.push(format!("{} MiB of memory", saved.memory_bytes >> 20));
            ours.push(format!("{} MiB", self.memory_bytes >> 20));
        }
        if saved.vcpus != self.vcpus {
            theirs.push(format!("{} vCPUs", saved.vcpus));
            ours.push(format!("{} vCPUs", self.vcpus));
        }
        if saved.firmware_bytes != self.firmware_bytes {
            theirs.push(format!("{} KiB of firmware", saved.firmware_bytes >> 10));
            ours.push(format!("{} KiB of firmware", self.firmware_bytes >> 10));
        }
        let only_saved: Vec<&String> = saved
            .devices
            .iter()
            .filter(|d| !self.devices.contains(d))
            .collect();
        let only_ours: Vec<&String> = self
            .devices
            .iter()
            .filter(|d| !saved.devices.contains(d))
            .collect();
        if !only_saved.is_empty() || !only_ours.is_empty() {
            theirs.push(device_list(&only_saved));
            ours.push(device_list(&only_ours));
        }
        if theirs.is_empty() {
            return Ok(());
        }
        Err(StateError::WrongHardware {
            saved: theirs.join(", "),
            this: ours.join(", "),
        })
    }
}

fn device_list(devices: &[&String]) -> String {
    if devices.is_empty() {
        return "no other devices".to_string();
    }
    let names: Vec<&str> = devices.iter().map(|d| d.as_str()).collect();
    format!("the devices at {}", names.join(", "))
}

/// The first section of a state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The Nestbox version that wrote it.
    pub nestbox: String,
    /// The machine it was saved from.
    pub shape: MachineShape,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> MachineShape {
        MachineShape {
            memory_bytes: 64 << 20,
            vcpus: 1,
            firmware_bytes: 64 << 10,
            devices: vec!["port 0x3f8".into(), "port 0x60".into()],
        }
    }

    #[test]
    fn test_same_shape_fits() {
        assert!(shape().check_fits(&shape()).is_ok());
    }

    #[test]
    fn test_other_memory_and_devices_are_named_from_both_sides() {
        let mut saved = shape();
        saved.memory_bytes = 128 << 20;
        saved.devices.push("port 0x1f0".into());
        let error = shape().check_fits(&saved).unwrap_err().to_string();
        assert!(error.contains("128 MiB of memory"), "{error}");
        assert!(error.contains("this VM has 64 MiB"), "{error}");
        assert!(error.contains("port 0x1f0"), "{error}");
        assert!(error.contains("no other devices"), "{error}");
    }

    #[test]
    fn test_decode_of_garbage_is_an_error() {
        let result: Result<(u64, String), _> = decode("test device", &[0xff; 3]);
        assert!(matches!(result, Err(StateError::Device { .. })));
    }
}
