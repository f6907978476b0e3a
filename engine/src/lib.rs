// SPDX-License-Identifier: Apache-2.0
//! Nestbox's embedded KVM virtual machine monitor.
//!
//! The engine builds a PC-compatible VM on `/dev/kvm` (memory, vCPUs,
//! buses, platform devices, boot paths) and runs it; it knows nothing of
//! any GUI. Start with [`vm::VmBuilder`].

pub mod audio;
pub mod boot;
pub mod bus;
pub mod control;
pub mod cpu_quirks;
pub mod device_ram;
pub mod devices;
pub mod event_loop;
pub mod host;
pub mod image_lock;
pub mod layout;
pub mod memory;
pub mod net;
pub mod snapshot;
pub mod teardown;
#[cfg(test)]
mod test_skip;
pub mod threads;
pub mod vcpu;
pub mod vhost_user;
pub mod vm;

use std::path::PathBuf;

pub use control::{Outcome, VmControl};
pub use vm::{
    BootSource, DisplayConfig, NetConfig, SoundConfig, VmBuilder, VmConfig, VmHandle, VmIo,
    VmRemote,
};

/// Errors creating or starting a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// KVM is unusable.
    #[error(transparent)]
    Kvm(#[from] host::KvmError),
    /// KVM refused to create a VM.
    #[error("Cannot create a KVM virtual machine")]
    CreateVm(#[source] kvm_ioctls::Error),
    /// A KVM setup call failed.
    #[error("KVM setup failed")]
    Setup(#[source] kvm_ioctls::Error),
    /// Guest memory could not be set up.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// A file the VM needs could not be read.
    #[error("Cannot read {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The virtio console's output file could not be opened.
    #[error("Cannot open the console output {path}")]
    ConsoleOutput {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An interrupt line could not be created.
    #[error("Cannot create an interrupt line")]
    Irq(#[source] std::io::Error),
    /// Two devices claim the same addresses.
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    /// A PCI slot is taken.
    #[error(transparent)]
    Pci(#[from] devices::pci::PciError),
    /// The firmware configuration could not be built.
    #[error(transparent)]
    FwCfg(#[from] devices::fw_cfg::FwCfgError),
    /// A vCPU could not be created or configured.
    #[error("Cannot set up vCPU {index}")]
    Vcpu {
        /// The vCPU index.
        index: u32,
        /// The cause.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The kernel could not be loaded.
    #[error(transparent)]
    LinuxBoot(#[from] boot::linux::LinuxBootError),
    /// The ACPI tables could not be written.
    #[error(transparent)]
    Acpi(#[from] boot::acpi::AcpiError),
    /// A disk image could not be attached.
    #[error("Cannot attach disk {path}")]
    Disk {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: devices::virtio::block::BlockError,
    },
    /// More devices than PCI slots.
    #[error("Too many devices for one PCI bus")]
    TooManyDevices,
    /// A CD-ROM drive the VM does not have.
    #[error("The VM has no CD-ROM drive {index} (it has {count} IDE CD-ROM drives)")]
    NoSuchCdrom {
        /// The drive asked for (0 = the first).
        index: usize,
        /// How many it has.
        count: usize,
    },
    /// More IDE drives than the controller's two channels hold.
    #[error(
        "{0} IDE drives were asked for; the IDE controller takes at most 4 (attach the others as virtio)"
    )]
    TooManyIdeDrives(usize),
    /// User-mode networking (passt) could not be started.
    #[error("Cannot start user-mode networking")]
    Network(#[from] net::passt::PasstError),
    /// The sound card's host side could not be opened.
    #[error("Cannot open the sound output")]
    Sound(#[from] audio::AudioError),
    /// A VM thread could not be spawned.
    #[error("Cannot start a VM thread")]
    Thread(#[source] std::io::Error),
    /// A saved machine state could not be restored.
    #[error(transparent)]
    State(#[from] snapshot::StateError),
    /// The display adapter could not be set up (such as a virtio-gpu
    /// size out of range).
    #[error("Cannot set up the display: {0}")]
    Display(String),
}
