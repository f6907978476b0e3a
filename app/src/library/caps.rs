// SPDX-License-Identifier: Apache-2.0
//! Host-resource guardrails for new and changed VMs: the ranges the New VM
//! wizard's sliders offer, the defaults, and refusals that say why and what
//! the cap is. The RAM and vCPU decisions are the engine's
//! ([`HostResources::check_request`]); this module adds the numbers a user
//! sees, disk space, and the budget of RAM used by running VMs.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use engine::host::{HOST_RESERVE_BYTES, HostResources, ResourceError};

use crate::library::helpers::Installed;

const MIB: u64 = 1 << 20;

/// What a VM asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Size of a new disk image to create, in bytes (0 for none).
    pub new_disk_bytes: u64,
}

/// The host's caps: its RAM and CPUs, and the free space where new disks go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// RAM and CPUs.
    pub host: HostResources,
    /// Free bytes on the filesystem that holds the VM folder.
    pub free_disk_bytes: u64,
    /// Which helper files (firmware, passt) the host lacks.
    pub helpers: Installed,
}

/// A request over a cap, with the cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapError {
    /// The host's RAM or CPUs could not be read.
    HostUnknown(String),
    /// No memory at all.
    NoMemory,
    /// Zero vCPUs.
    NoCpus,
    /// More vCPUs than the host has.
    TooManyCpus {
        /// vCPUs asked for.
        asked: u32,
        /// The host's logical CPUs.
        host: u32,
    },
    /// Over half the host's RAM, without the over-commit switch.
    OverHalf {
        /// MiB asked for.
        asked_mib: u64,
        /// The host's RAM in MiB.
        host_mib: u64,
        /// The most the over-commit switch allows, in MiB.
        overcommit_mib: u64,
    },
    /// Over the host's RAM less what the host keeps for itself.
    OverHardCap {
        /// MiB asked for.
        asked_mib: u64,
        /// The host's RAM in MiB.
        host_mib: u64,
        /// The hard cap in MiB.
        cap_mib: u64,
    },
    /// A new disk larger than the free space.
    DiskTooLarge {
        /// Bytes asked for.
        asked_bytes: u64,
        /// Free bytes.
        free_bytes: u64,
    },
}

impl fmt::Display for CapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapError::HostUnknown(why) => {
                write!(f, "Cannot read this host's RAM and CPUs: {why}")
            }
            CapError::NoMemory => write!(f, "A VM needs some memory: ask for at least 1 MiB"),
            CapError::NoCpus => write!(f, "A VM needs at least one vCPU"),
            CapError::TooManyCpus { asked, host } => write!(
                f,
                "{asked} vCPUs is more than this host's {host} CPUs: use at most {host}"
            ),
            CapError::OverHalf {
                asked_mib,
                host_mib,
                overcommit_mib,
            } => write!(
                f,
                "{asked_mib} MiB is more than half of this host's {host_mib} MiB of RAM; \
                 turn on over-commit to go up to {overcommit_mib} MiB"
            ),
            CapError::OverHardCap {
                asked_mib,
                host_mib,
                cap_mib,
            } => write!(
                f,
                "{asked_mib} MiB is more than this host can give: of its {host_mib} MiB of RAM, \
                 {} MiB stay with the host, so a VM gets at most {cap_mib} MiB",
                HOST_RESERVE_BYTES / MIB
            ),
            CapError::DiskTooLarge {
                asked_bytes,
                free_bytes,
            } => write!(
                f,
                "A {} disk is more than the {} free where the VM goes: \
                 choose a smaller disk or free some space",
                human_size(*asked_bytes),
                human_size(*free_bytes)
            ),
        }
    }
}

impl std::error::Error for CapError {}

/// A size for people: whole GiB or MiB when exact, else GiB with one decimal.
pub fn human_size(bytes: u64) -> String {
    const GIB: u64 = 1 << 30;
    if bytes >= GIB && bytes % GIB == 0 {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{} MiB", bytes.div_ceil(MIB))
    }
}

/// Free bytes (for an unprivileged user) on the filesystem holding `path`,
/// or its nearest existing ancestor when `path` does not exist yet.
pub fn free_space(path: &Path) -> io::Result<u64> {
    let probe = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("."));
    let c_path = CString::new(probe.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string and `stat` a valid,
    // writable statvfs, both alive for the call.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between libcs
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

impl Caps {
    /// Caps for `host` with `free_disk_bytes` free for new disks.
    pub fn new(host: HostResources, free_disk_bytes: u64) -> Self {
        Self {
            host,
            free_disk_bytes,
            helpers: Installed::default(),
        }
    }

    /// These caps on a host that has only some of the helper files.
    pub fn with_helpers(mut self, helpers: Installed) -> Self {
        self.helpers = helpers;
        self
    }

    /// Checks a VM about to start (nothing to create on disk) against this
    /// host's RAM and CPUs: every way a VM starts (`nestbox run`, a library
    /// VM from the CLI or the GUI, a hand-edited vm.toml) goes through
    /// here and [`Caps::check`], so each gets the same answer and message
    /// as `nestbox create`.
    pub fn check_start(memory_mib: u64, vcpus: u32, overcommit: bool) -> Result<(), CapError> {
        let host = HostResources::detect().map_err(|e| CapError::HostUnknown(e.to_string()))?;
        let request = Request {
            memory_mib,
            vcpus,
            new_disk_bytes: 0,
        };
        Self::new(host, u64::MAX).check(&request, overcommit)
    }

    /// Reads this host's RAM and CPUs and the free space where `vm_folder`
    /// is (or will be).
    pub fn detect(vm_folder: &Path) -> io::Result<Self> {
        Ok(Self::new(HostResources::detect()?, free_space(vm_folder)?)
            .with_helpers(Installed::detect()))
    }

    /// The host's RAM in MiB.
    pub fn host_memory_mib(&self) -> u64 {
        self.host.memory_bytes / MIB
    }

    /// The top of the RAM slider in MiB: half the host's RAM, or with
    /// `overcommit` the host's RAM less 2 GiB; never more than the latter.
    pub fn memory_max_mib(&self, overcommit: bool) -> u64 {
        let hard = self.host.memory_hard_cap();
        let cap = if overcommit {
            hard
        } else {
            self.host.memory_default_cap().min(hard)
        };
        cap / MIB
    }

    /// The RAM a new VM starts with: the profile's recommendation, at most
    /// half the host's RAM (and at least 1 MiB).
    pub fn memory_default_mib(&self, recommended_mib: u64) -> u64 {
        recommended_mib.min(self.memory_max_mib(false)).max(1)
    }

    /// The top of the vCPU slider: the host's logical CPUs.
    pub fn vcpus_max(&self) -> u32 {
        self.host.cpus.max(1)
    }

    /// The vCPUs a new VM starts with: the profile's recommendation, at most
    /// half the host's CPUs, at least 1.
    pub fn vcpus_default(&self, recommended: u32) -> u32 {
        recommended.min(self.host.cpus / 2).max(1)
    }

    /// The largest new disk in bytes: the free space (images are sparse,
    /// but a guest may fill them).
    pub fn disk_max_bytes(&self) -> u64 {
        self.free_disk_bytes
    }

    /// Checks a request against every cap.
    pub fn check(&self, request: &Request, overcommit: bool) -> Result<(), CapError> {
        if request.memory_mib == 0 {
            return Err(CapError::NoMemory);
        }
        let memory_bytes = request.memory_mib.saturating_mul(MIB);
        let host_mib = self.host_memory_mib();
        self.host
            .check_request(memory_bytes, request.vcpus, overcommit)
            .map_err(|err| match err {
                ResourceError::NoCpus => CapError::NoCpus,
                ResourceError::TooManyCpus { asked, host } => CapError::TooManyCpus { asked, host },
                ResourceError::MemoryOverDefaultCap { asked_mib, .. } => CapError::OverHalf {
                    asked_mib,
                    host_mib,
                    overcommit_mib: self.memory_max_mib(true),
                },
                ResourceError::MemoryOverHardCap { asked_mib, cap_mib } => CapError::OverHardCap {
                    asked_mib,
                    host_mib,
                    cap_mib,
                },
            })?;
        if request.new_disk_bytes > self.free_disk_bytes {
            return Err(CapError::DiskTooLarge {
                asked_bytes: request.new_disk_bytes,
                free_bytes: self.free_disk_bytes,
            });
        }
        Ok(())
    }

    /// Whether starting a VM of `new_vm_mib` while VMs using
    /// `running_total_mib` run would commit more than half the host's RAM
    /// (the GUI asks before doing so).
    pub fn would_overcommit(&self, running_total_mib: u64, new_vm_mib: u64) -> bool {
        running_total_mib.saturating_add(new_vm_mib) > self.host.memory_default_cap() / MIB
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn caps(gib: u64, cpus: u32) -> Caps {
        Caps::new(
            HostResources {
                memory_bytes: gib * GIB,
                cpus,
            },
            100 * GIB,
        )
    }

    fn ask(memory_mib: u64, vcpus: u32) -> Request {
        Request {
            memory_mib,
            vcpus,
            new_disk_bytes: 0,
        }
    }

    #[test]
    fn test_8g_host_offers_4g_without_switch_6g_with() {
        let c = caps(8, 4);
        assert_eq!(c.memory_max_mib(false), 4096);
        assert_eq!(c.memory_max_mib(true), 6144);
        assert_eq!(c.check(&ask(4096, 1), false), Ok(()));
        assert_eq!(c.check(&ask(6144, 1), true), Ok(()));
        assert!(c.check(&ask(4097, 1), false).is_err());
        assert!(c.check(&ask(6145, 1), true).is_err());
    }

    #[test]
    fn test_over_half_message_names_both_caps() {
        let err = caps(8, 4).check(&ask(5000, 1), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "5000 MiB is more than half of this host's 8192 MiB of RAM; \
             turn on over-commit to go up to 6144 MiB"
        );
    }

    #[test]
    fn test_over_hard_cap_message_names_cap() {
        let err = caps(8, 4).check(&ask(8192, 1), true).unwrap_err();
        assert!(matches!(err, CapError::OverHardCap { cap_mib: 6144, .. }));
        assert!(err.to_string().contains("at most 6144 MiB"), "{err}");
    }

    #[test]
    fn test_small_host_keeps_its_reserve() {
        // 3 GiB: half is 1.5 GiB, but the host keeps 2 GiB.
        let c = caps(3, 1);
        assert_eq!(c.memory_max_mib(false), 1024);
        assert_eq!(c.memory_max_mib(true), 1024);
        assert_eq!(c.memory_default_mib(2048), 1024);
    }

    #[test]
    fn test_default_memory_is_min_of_profile_and_half() {
        let c = caps(8, 4);
        assert_eq!(c.memory_default_mib(2048), 2048);
        assert_eq!(c.memory_default_mib(16384), 4096);
    }

    #[test]
    fn test_cpus_2_host_default_1_max_2() {
        let c = caps(8, 2);
        assert_eq!(c.vcpus_default(4), 1);
        assert_eq!(c.vcpus_max(), 2);
        assert_eq!(c.check(&ask(512, 2), false), Ok(()));
        let err = c.check(&ask(512, 3), false).unwrap_err();
        assert_eq!(err, CapError::TooManyCpus { asked: 3, host: 2 });
        assert!(err.to_string().contains("at most 2"));
    }

    #[test]
    fn test_one_cpu_host_default_is_one() {
        assert_eq!(caps(8, 1).vcpus_default(2), 1);
        assert_eq!(caps(8, 16).vcpus_default(2), 2);
        assert_eq!(caps(8, 16).vcpus_default(12), 8);
    }

    #[test]
    fn test_zero_memory_or_cpus_refused() {
        assert_eq!(caps(8, 4).check(&ask(0, 1), false), Err(CapError::NoMemory));
        assert_eq!(caps(8, 4).check(&ask(64, 0), false), Err(CapError::NoCpus));
    }

    #[test]
    fn test_disk_over_free_space_refused() {
        let c = Caps::new(caps(8, 4).host, 10 * GIB);
        assert_eq!(c.disk_max_bytes(), 10 * GIB);
        let mut request = ask(512, 1);
        request.new_disk_bytes = 10 * GIB;
        assert_eq!(c.check(&request, false), Ok(()));
        request.new_disk_bytes = 20 * GIB;
        let err = c.check(&request, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "A 20 GiB disk is more than the 10 GiB free where the VM goes: \
             choose a smaller disk or free some space"
        );
    }

    #[test]
    fn test_ram_budget() {
        let c = caps(8, 4);
        assert!(!c.would_overcommit(2048, 2048));
        assert!(c.would_overcommit(2048, 2049));
        assert!(c.would_overcommit(0, 5000));
    }

    #[test]
    fn test_human_size() {
        assert_eq!(human_size(20 * GIB), "20 GiB");
        assert_eq!(human_size(GIB + GIB / 2), "1.5 GiB");
        assert_eq!(human_size(512 * MIB), "512 MiB");
    }

    #[test]
    fn test_free_space_of_a_missing_path_uses_its_parent() {
        let tmp = std::env::temp_dir();
        let free = free_space(&tmp.join("nestbox-no-such-dir/deeper")).unwrap();
        assert_eq!(free / GIB, free_space(&tmp).unwrap() / GIB);
    }
}
