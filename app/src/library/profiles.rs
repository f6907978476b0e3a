// SPDX-License-Identifier: Apache-2.0
//! OS profiles: the starting points of the New VM wizard, from the TOML
//! files in the repository's `profiles/` directory, embedded at build time.
//! Each gives recommended and minimum RAM, vCPUs and disk, the firmware,
//! the devices, the display scale mode and the input mode.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::{
    Boot, ConfigError, Created, Disk, DiskBus, Display, Network, SCHEMA, ScaleMode, Sound, VmFile,
    parse_versioned,
};

/// The embedded profile files, by file name.
const FILES: &[(&str, &str)] = &[
    (
        "linux-iso.toml",
        include_str!("../../../profiles/linux-iso.toml"),
    ),
    (
        "linux-kernel.toml",
        include_str!("../../../profiles/linux-kernel.toml"),
    ),
    (
        "generic-bios.toml",
        include_str!("../../../profiles/generic-bios.toml"),
    ),
    (
        "dos-retro.toml",
        include_str!("../../../profiles/dos-retro.toml"),
    ),
];

/// One OS profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Stable id, stored in each VM's `profile` field.
    pub id: String,
    /// Name shown in the wizard.
    pub name: String,
    /// One or two sentences for the wizard.
    pub description: String,
    /// OS label new VMs get.
    pub os: String,
    /// What boots the VM.
    pub firmware: ProfileFirmware,
    /// How the pointer reaches the guest.
    pub input: InputMode,
    /// RAM.
    pub memory: MemorySpec,
    /// vCPUs.
    pub vcpus: CpuSpec,
    /// Disk.
    pub disk: DiskSpec,
    /// Devices.
    pub devices: Devices,
    /// Display.
    pub display: Display,
}

/// What boots a profile's VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileFirmware {
    /// SeaBIOS.
    Seabios,
    /// No firmware: a Linux kernel is started directly.
    None,
}

/// How the host pointer reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputMode {
    /// An absolute pointer: no grab needed.
    Absolute,
    /// A relative mouse, grabbed (released with the release chord).
    Relative,
}

/// RAM a profile asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySpec {
    /// What new VMs get (capped by the host).
    pub recommended_mib: u64,
    /// Below this the OS is not expected to work.
    pub minimum_mib: u64,
}

/// vCPUs a profile asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuSpec {
    /// What new VMs get (capped by the host).
    pub recommended: u32,
    /// Below this the OS is not expected to work.
    pub minimum: u32,
}

/// Disk a profile asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// The new disk's size in the wizard.
    pub recommended_gib: u64,
    /// The smallest the OS installs on.
    pub minimum_gib: u64,
}

/// A profile's devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Devices {
    /// How disks are attached.
    pub disk_bus: DiskBus,
    /// Whether the wizard offers a CD-ROM (for an installer ISO).
    pub cdrom: bool,
    /// Networking.
    pub network: Network,
    /// Sound.
    pub sound: Sound,
}

/// What the New VM wizard chose, for [`Profile::new_vm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVm {
    /// The VM's name.
    pub name: String,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// What it boots.
    pub boot: Boot,
    /// Its disks and CD-ROMs.
    pub disks: Vec<Disk>,
    /// Whether it may use more than half the host's RAM.
    pub allow_overcommit: bool,
    /// A scale mode instead of the profile's (e.g. the user's preferred one).
    pub scale: Option<ScaleMode>,
}

impl Profile {
    /// The settings of a new VM from this profile: its OS label, network,
    /// sound and display scale, with what the wizard chose.
    pub fn new_vm(&self, choices: NewVm) -> VmFile {
        VmFile {
            schema: SCHEMA,
            name: choices.name,
            profile: self.id.clone(),
            memory_mib: choices.memory_mib,
            vcpus: choices.vcpus,
            os: self.os.clone(),
            network: self.devices.network,
            sound: self.devices.sound.into(),
            allow_overcommit: choices.allow_overcommit,
            suspend_on_host_shutdown: false,
            created: Created::now(),
            boot: choices.boot,
            display: Display {
                scale: choices.scale.unwrap_or(self.display.scale),
                adapter: self.display.adapter,
                resolution: self.display.resolution,
            },
            // Every disk and CD-ROM goes on the bus the OS can use.
            disks: choices
                .disks
                .into_iter()
                .map(|disk| Disk {
                    bus: self.devices.disk_bus,
                    ..disk
                })
                .collect(),
        }
    }
}

/// Parses every embedded profile, failing on the first broken one.
pub fn load_all() -> Result<Vec<Profile>, ConfigError> {
    FILES
        .iter()
        .map(|(file, text)| parse_versioned(&Path::new("profiles").join(file), text))
        .collect()
}

/// Every embedded profile (a broken one, which the tests rule out, is
/// logged and skipped).
pub fn all() -> Vec<Profile> {
    FILES
        .iter()
        .filter_map(
            |(file, text)| match parse_versioned(&Path::new("profiles").join(file), text) {
                Ok(profile) => Some(profile),
                Err(err) => {
                    log::error!("{err}");
                    None
                }
            },
        )
        .collect()
}

/// The profile with this id.
pub fn by_id(id: &str) -> Option<Profile> {
    all().into_iter().find(|p| p.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::config::Media;

    #[test]
    fn test_every_profile_parses() {
        let profiles = load_all().unwrap();
        assert_eq!(profiles.len(), FILES.len());
        assert_eq!(all().len(), FILES.len());
    }

    #[test]
    fn test_minimums_are_at_most_recommended() {
        for p in all() {
            assert!(p.memory.minimum_mib <= p.memory.recommended_mib, "{}", p.id);
            assert!(p.vcpus.minimum <= p.vcpus.recommended, "{}", p.id);
            assert!(p.disk.minimum_gib <= p.disk.recommended_gib, "{}", p.id);
            assert!(p.memory.minimum_mib > 0 && p.vcpus.minimum > 0, "{}", p.id);
        }
    }

    #[test]
    fn test_ids_are_unique_and_match_file_names() {
        let profiles = all();
        for (p, (file, _)) in profiles.iter().zip(FILES) {
            assert_eq!(format!("{}.toml", p.id), *file);
        }
        let mut ids: Vec<_> = profiles.iter().map(|p| p.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), FILES.len());
    }

    #[test]
    fn test_by_id() {
        let dos = by_id("dos-retro").unwrap();
        assert_eq!(dos.display.scale, ScaleMode::Integer);
        assert_eq!(dos.input, InputMode::Relative);
        assert_eq!(
            by_id("linux-kernel").unwrap().firmware,
            ProfileFirmware::None
        );
        assert!(by_id("beos").is_none());
    }

    #[test]
    fn test_new_vm_takes_profile_devices() {
        let p = by_id("dos-retro").unwrap();
        let vm = p.new_vm(NewVm {
            name: "Doom".to_string(),
            memory_mib: 32,
            vcpus: 1,
            boot: Boot::Firmware(super::super::config::Firmware::Seabios),
            disks: vec![
                disk("disk.img", Media::Disk),
                disk("/isos/freedos.iso", Media::Cdrom),
            ],
            allow_overcommit: false,
            scale: None,
        });
        assert_eq!(vm.profile, "dos-retro");
        assert_eq!(vm.network, Network::None);
        assert_eq!(vm.display.scale, ScaleMode::Integer);
        assert_eq!(vm.os, "DOS");
        // DOS has no virtio drivers and boots installers from CD: IDE.
        assert!(vm.disks.iter().all(|d| d.bus == DiskBus::Ide));
        let linux = by_id("linux-iso").unwrap().new_vm(NewVm {
            name: "Debian".to_string(),
            memory_mib: 2048,
            vcpus: 2,
            boot: Boot::Firmware(super::super::config::Firmware::Seabios),
            disks: vec![disk("disk.img", Media::Disk)],
            allow_overcommit: false,
            scale: None,
        });
        assert_eq!(linux.disks[0].bus, DiskBus::Virtio);
    }

    fn disk(path: &str, media: Media) -> Disk {
        Disk {
            path: path.into(),
            format: Default::default(),
            readonly: media == Media::Cdrom,
            media,
            bus: DiskBus::Virtio,
            ejected: false,
            backing: Vec::new(),
            cache: Default::default(),
        }
    }
}
