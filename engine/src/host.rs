// SPDX-License-Identifier: Apache-2.0
//! What the host offers: the KVM device (with errors that say how to fix
//! each problem), whether it is real hardware virtualization, and the
//! host's memory and CPU counts that cap what a VM may ask for.

use std::fs;
use std::io;
use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

/// Path of the KVM device node.
pub const KVM_PATH: &str = "/dev/kvm";

/// The KVM API version every modern kernel reports.
const KVM_API_VERSION: i32 = 12;

/// Capabilities the engine cannot run without.
const REQUIRED_CAPS: &[(Cap, &str)] = &[
    (
        Cap::Irqchip,
        "in-kernel interrupt controller (KVM_CAP_IRQCHIP)",
    ),
    (Cap::Pit2, "in-kernel PIT (KVM_CAP_PIT2)"),
    (Cap::Irqfd, "interrupt eventfds (KVM_CAP_IRQFD)"),
    (Cap::Ioeventfd, "I/O eventfds (KVM_CAP_IOEVENTFD)"),
    (
        Cap::ImmediateExit,
        "immediate exit (KVM_CAP_IMMEDIATE_EXIT)",
    ),
    (Cap::UserMemory, "user memory regions (KVM_CAP_USER_MEMORY)"),
    (Cap::SetTssAddr, "TSS address (KVM_CAP_SET_TSS_ADDR)"),
    (Cap::ExtCpuid, "CPUID setup (KVM_CAP_EXT_CPUID)"),
];

/// Why KVM cannot be used, each with what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// `/dev/kvm` does not exist.
    #[error(
        "/dev/kvm does not exist: enable virtualization (VT-x or AMD-V) in the firmware setup \
         and load the kvm_intel or kvm_amd module"
    )]
    Missing,
    /// `/dev/kvm` exists but this user may not open it.
    #[error(
        "Permission denied opening /dev/kvm: add your user to the 'kvm' group \
         (sudo usermod -aG kvm $USER) and log in again"
    )]
    PermissionDenied,
    /// Opening `/dev/kvm` failed for another reason.
    #[error("Cannot open /dev/kvm")]
    Open(#[source] io::Error),
    /// The kernel speaks another KVM API version.
    #[error("KVM API version {0} is not supported (expected {KVM_API_VERSION})")]
    ApiVersion(i32),
    /// A capability the engine relies on is missing.
    #[error("KVM lacks the {0}; a newer kernel is needed")]
    MissingCap(&'static str),
}

/// How guest code is executed by the host's KVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceleration {
    /// VT-x or AMD-V: guests run at native speed.
    Hardware,
    /// KVM without hardware support (for example `kvm_pvm` inside a cloud VM):
    /// guest kernel and firmware code is emulated and runs very slowly.
    Software,
}

impl Acceleration {
    /// Detects the acceleration behind `/dev/kvm` from sysfs and cpuinfo.
    pub fn detect() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self::from_host_facts(Path::new("/sys/module/kvm_pvm").exists(), &cpuinfo)
    }

    /// Decides from the facts: a loaded `kvm_pvm` module, or no `vmx`/`svm`
    /// CPU flag, means KVM is not hardware-backed.
    pub fn from_host_facts(kvm_pvm_loaded: bool, cpuinfo: &str) -> Self {
        let has_flag = cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
        if kvm_pvm_loaded || !has_flag {
            Acceleration::Software
        } else {
            Acceleration::Hardware
        }
    }

    /// A one-line warning for the user, if guests will be slow.
    pub fn warning(self) -> Option<&'static str> {
        match self {
            Acceleration::Hardware => None,
            Acceleration::Software => Some(
                "/dev/kvm is not hardware-accelerated (no VT-x/AMD-V, or kvm_pvm): \
                 guest kernel and firmware code will run very slowly",
            ),
        }
    }
}

/// Opens `/dev/kvm` and checks the API version and every capability the
/// engine needs.
pub fn open_kvm() -> Result<Kvm, KvmError> {
    open_kvm_at(Path::new(KVM_PATH))
}

fn open_kvm_at(path: &Path) -> Result<Kvm, KvmError> {
    let kvm = match Kvm::new_with_path(path_cstring(path)?) {
        Ok(kvm) => kvm,
        Err(e) => {
            return Err(match e.errno() {
                libc::ENOENT => KvmError::Missing,
                libc::EACCES | libc::EPERM => KvmError::PermissionDenied,
                errno => KvmError::Open(io::Error::from_raw_os_error(errno)),
            });
        }
    };
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION {
        return Err(KvmError::ApiVersion(version));
    }
    for (cap, name) in REQUIRED_CAPS {
        if !kvm.check_extension(*cap) {
            return Err(KvmError::MissingCap(name));
        }
    }
    Ok(kvm)
}

fn path_cstring(path: &Path) -> Result<std::ffi::CString, KvmError> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| KvmError::Missing)
}

/// The host's resources that cap a VM's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostResources {
    /// Total RAM in bytes.
    pub memory_bytes: u64,
    /// Logical CPUs this process may run on.
    pub cpus: u32,
}

/// Memory the host keeps for itself even when over-commit is allowed.
pub const HOST_RESERVE_BYTES: u64 = 2 << 30;

impl HostResources {
    /// Reads the host's total RAM and usable CPU count.
    pub fn detect() -> io::Result<Self> {
        let meminfo = fs::read_to_string("/proc/meminfo")?;
        let memory_bytes = parse_mem_total(&meminfo).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "no MemTotal in /proc/meminfo")
        })?;
        let cpus = std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1);
        Ok(Self { memory_bytes, cpus })
    }

    /// The default RAM ceiling: half the host's RAM.
    pub fn memory_default_cap(&self) -> u64 {
        self.memory_bytes / 2
    }

    /// The hard ceiling with over-commit allowed: host RAM minus a reserve.
    pub fn memory_hard_cap(&self) -> u64 {
        self.memory_bytes.saturating_sub(HOST_RESERVE_BYTES)
    }

    /// Checks a VM's requested size against this host's caps.
    pub fn check_request(
        &self,
        memory_bytes: u64,
        vcpus: u32,
        allow_overcommit: bool,
    ) -> Result<(), ResourceError> {
        let mib = |b: u64| b >> 20;
        if vcpus == 0 {
            return Err(ResourceError::NoCpus);
        }
        if vcpus > self.cpus {
            return Err(ResourceError::TooManyCpus {
                asked: vcpus,
                host: self.cpus,
            });
        }
        if memory_bytes > self.memory_hard_cap() {
            return Err(ResourceError::MemoryOverHardCap {
                asked_mib: mib(memory_bytes),
                cap_mib: mib(self.memory_hard_cap()),
            });
        }
        if memory_bytes > self.memory_default_cap() && !allow_overcommit {
            return Err(ResourceError::MemoryOverDefaultCap {
                asked_mib: mib(memory_bytes),
                cap_mib: mib(self.memory_default_cap()),
            });
        }
        Ok(())
    }
}

/// A VM asks for more than the host can give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// Zero vCPUs.
    #[error("A VM needs at least one vCPU")]
    NoCpus,
    /// More vCPUs than the host has.
    #[error("{asked} vCPUs asked, but this host has {host} CPUs: use at most {host}")]
    TooManyCpus {
        /// vCPUs asked for.
        asked: u32,
        /// The host's logical CPUs.
        host: u32,
    },
    /// More memory than half the host without the over-commit switch.
    #[error(
        "{asked_mib} MiB of memory asked, over the cap of {cap_mib} MiB (half of this host's RAM); \
         ask for less, or allow over-commit"
    )]
    MemoryOverDefaultCap {
        /// MiB asked for.
        asked_mib: u64,
        /// The cap in MiB.
        cap_mib: u64,
    },
    /// More memory than the host minus its reserve, even with over-commit.
    #[error(
        "{asked_mib} MiB of memory asked, over the hard cap of {cap_mib} MiB \
         (this host's RAM less 2 GiB for the host itself)"
    )]
    MemoryOverHardCap {
        /// MiB asked for.
        asked_mib: u64,
        /// The cap in MiB.
        cap_mib: u64,
    },
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn host_8g_4cpu() -> HostResources {
        HostResources {
            memory_bytes: 8 * GIB,
            cpus: 4,
        }
    }

    #[test]
    fn test_acceleration_kvm_pvm_loaded_is_software() {
        let accel = Acceleration::from_host_facts(true, "flags\t: fpu vmx sse\n");
        assert_eq!(accel, Acceleration::Software);
    }

    #[test]
    fn test_acceleration_vmx_flag_is_hardware() {
        let accel = Acceleration::from_host_facts(false, "flags\t: fpu vmx sse\n");
        assert_eq!(accel, Acceleration::Hardware);
    }

    #[test]
    fn test_acceleration_no_flag_is_software() {
        let accel = Acceleration::from_host_facts(false, "flags\t: fpu sse hypervisor\n");
        assert_eq!(accel, Acceleration::Software);
    }

    #[test]
    fn test_parse_mem_total_reads_kib() {
        let total = parse_mem_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n");
        assert_eq!(total, Some(24_576_000 * 1024));
    }

    #[test]
    fn test_check_request_half_ram_is_allowed() {
        assert_eq!(host_8g_4cpu().check_request(4 * GIB, 2, false), Ok(()));
    }

    #[test]
    fn test_check_request_over_half_without_switch_names_cap() {
        let err = host_8g_4cpu().check_request(5 * GIB, 1, false).unwrap_err();
        assert_eq!(
            err,
            ResourceError::MemoryOverDefaultCap {
                asked_mib: 5120,
                cap_mib: 4096
            }
        );
        assert!(err.to_string().contains("4096 MiB"));
    }

    #[test]
    fn test_check_request_over_half_with_switch_is_allowed() {
        assert_eq!(host_8g_4cpu().check_request(6 * GIB, 1, true), Ok(()));
    }

    #[test]
    fn test_check_request_over_hard_cap_is_refused_even_with_switch() {
        let err = host_8g_4cpu().check_request(7 * GIB, 1, true).unwrap_err();
        assert_eq!(
            err,
            ResourceError::MemoryOverHardCap {
                asked_mib: 7168,
                cap_mib: 6144
            }
        );
    }

    #[test]
    fn test_check_request_too_many_cpus_is_refused() {
        let err = host_8g_4cpu().check_request(GIB, 5, false).unwrap_err();
        assert_eq!(err, ResourceError::TooManyCpus { asked: 5, host: 4 });
    }

    #[test]
    fn test_open_kvm_missing_path_says_how_to_fix() {
        let err = open_kvm_at(Path::new("/nonexistent/kvm")).unwrap_err();
        assert!(matches!(err, KvmError::Missing));
        assert!(err.to_string().contains("VT-x"));
    }
}
