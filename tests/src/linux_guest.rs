// SPDX-License-Identifier: Apache-2.0
//! Tier 4.5, "Linux on Nestbox here": the small test kernel
//! (`tests/guest/kernel/`) and the agent initramfs, booted by Nestbox's
//! own engine and driven over COM1. The agent (`tests/guest/init`,
//! `nestbox.test=agent`) reads one command per line and answers with
//! `NESTBOX-RESULT` lines, then `NESTBOX-DONE <command>`.
//!
//! On a software-only KVM host a boot takes ~35-60 s and every process
//! the agent starts costs an emulated kernel entry, so a test boots once
//! and runs many commands in one guest.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use engine::boot::linux::LinuxBoot;
use engine::{BootSource, Outcome, VmBuilder, VmConfig, VmHandle, VmIo};

use crate::{Capture, VmGuard, guest_dir, require_file};

/// The kernel command line of the agent guest. No `clearcpuid=`: on a
/// software-only KVM host the engine's CPUID keeps the features the host
/// cannot emulate from the guest (engine::cpu_quirks). The rest keeps
/// boot-time work that is cheap on hardware but slow when emulated out:
/// no timer or TSC calibration checks, no speculation mitigations (their
/// patching), a keyboard-controller reboot (the triple-fault path uses
/// int3) and a synchronous initramfs.
pub const AGENT_CMDLINE: &str = "console=ttyS0 no_timer_check tsc=reliable mitigations=off \
     print-fatal-signals=1 reboot=k initramfs_async=0 rodata=off nestbox.test=agent";

/// How long a boot to the agent may take (~35-60 s on a software-only
/// KVM host; more while other tests load both cores).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(400);

/// The small kernel and the agent initramfs, or None where the test
/// skips (or a panic under `NESTBOX_REQUIRE_KVM=1`).
pub fn small_guest_files(test: &str) -> Option<(PathBuf, PathBuf)> {
    let hint = "run tests/guest/build.sh";
    let kernel = require_file(test, &guest_dir().join("small-vmlinux"), hint)?;
    let initrd = require_file(test, &guest_dir().join("initramfs-agent.cpio"), hint)?;
    Some((kernel, initrd))
}

/// Debian's grub-mkrescue (packages grub-common and grub-pc-bin).
pub const GRUB_MKRESCUE: &str = "/usr/bin/grub-mkrescue";
/// GRUB's BIOS modules, which grub-mkrescue puts on the disc.
pub const GRUB_I386_PC: &str = "/usr/lib/grub/i386-pc";

/// Makes `iso` in folder `work`: a CD that Debian's GRUB boots through
/// the BIOS (grub-mkrescue's El Torito image), whose only menu entry boots
/// the small kernel's bzImage with the agent initramfs and `cmdline` at
/// once; GRUB talks on COM1 as well as the screen. None where the test
/// skips (no GRUB, or the test guest not built).
pub fn grub_cd(test: &str, work: &Path, iso: &Path, cmdline: &str) -> Option<()> {
    let hint = "run tests/guest/build.sh";
    let bzimage = require_file(test, &guest_dir().join("small-bzImage"), hint)?;
    let initrd = require_file(test, &guest_dir().join("initramfs-agent.cpio"), hint)?;
    let grub_hint = "install Debian's grub-common and grub-pc-bin";
    let mkrescue = require_file(test, Path::new(GRUB_MKRESCUE), grub_hint)?;
    require_file(test, Path::new(GRUB_I386_PC), grub_hint)?;
    let boot = work.join("tree/boot");
    std::fs::create_dir_all(boot.join("grub")).unwrap();
    std::fs::copy(bzimage, boot.join("bzImage")).unwrap();
    std::fs::copy(initrd, boot.join("initramfs.cpio")).unwrap();
    let config = format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set timeout=0\n\
         menuentry \"Nestbox small test kernel\" {{\n\
         \techo \"NESTBOX-GRUB-LOADING\"\n\
         \tlinux /boot/bzImage {cmdline}\n\
         \tinitrd /boot/initramfs.cpio\n\
         }}\n"
    );
    std::fs::write(boot.join("grub/grub.cfg"), config).unwrap();
    let made = Command::new(mkrescue)
        .arg("-o")
        .arg(iso)
        .arg(work.join("tree"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "grub-mkrescue failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    Some(())
}

/// A VM that boots `kernel` and `initrd` with `cmdline`: 2 vCPUs, 256 MiB
/// and no devices; callers add theirs.
pub fn small_guest_config(kernel: PathBuf, initrd: PathBuf, cmdline: &str) -> VmConfig {
    direct_linux_vm(kernel, initrd, cmdline, 2, 256 << 20)
}

/// A VM of `vcpus` and `memory_bytes` that boots `kernel` and `initrd`
/// with `cmdline` directly, with no devices.
pub fn direct_linux_vm(
    kernel: PathBuf,
    initrd: PathBuf,
    cmdline: &str,
    vcpus: u32,
    memory_bytes: u64,
) -> VmConfig {
    VmConfig {
        memory_bytes,
        vcpus,
        boot: BootSource::Linux(LinuxBoot {
            kernel,
            initrd: Some(initrd),
            cmdline: cmdline.to_string(),
        }),
        disks: Vec::new(),
        display: None,
        network: None,
        sound: None,
        console: None,
        input: None,
        rng: false,
    }
}

/// A running agent guest and its serial output.
pub struct LinuxGuest {
    vm: Option<VmGuard>,
    serial: Capture,
}

impl LinuxGuest {
    /// Boots `config`.
    pub fn boot(config: VmConfig) -> Self {
        Self::start(config, None)
    }

    /// Starts `config` from the machine state saved in `state` (a guest
    /// whose agent was ready when it was saved).
    pub fn restore(config: VmConfig, state: &std::path::Path) -> Self {
        Self::start(config, Some(state))
    }

    fn start(config: VmConfig, state: Option<&std::path::Path>) -> Self {
        let serial = Capture::new();
        let io = VmIo {
            serial: serial.writer(),
            debugcon: None,
        };
        let mut builder = VmBuilder::new(config, io);
        if let Some(state) = state {
            builder = builder.restore_from(state);
        }
        Self {
            vm: Some(VmGuard::start(builder)),
            serial,
        }
    }

    /// The running VM.
    pub fn handle(&self) -> &VmHandle {
        self.vm.as_ref().expect("the guest has ended").handle()
    }

    /// Everything the guest printed so far.
    pub fn serial(&self) -> String {
        self.serial.text()
    }

    /// Waits for the agent's prompt; the serial output on failure.
    pub fn wait_ready(&self) -> Result<(), String> {
        match self
            .serial
            .wait_for_after(0, "NESTBOX-AGENT-READY", BOOT_TIMEOUT)
        {
            Some(_) => Ok(()),
            None => Err(format!(
                "the agent never got ready in {BOOT_TIMEOUT:?}; serial:\n{}",
                self.serial()
            )),
        }
    }

    /// Types `line` and a newline on COM1, waiting while the UART's FIFO
    /// is full.
    pub fn type_line(&self, line: &str) {
        let bytes = format!("{line}\n").into_bytes();
        let mut rest = bytes.as_slice();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !rest.is_empty() && std::time::Instant::now() < deadline {
            let taken = self.handle().serial_input(rest);
            rest = &rest[taken..];
            if taken == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    /// Runs `line` (a command and its arguments) in the agent and returns
    /// what the guest printed until the command ended, or an error with
    /// the serial output when it did not end within `timeout`.
    pub fn command(&self, line: &str, timeout: Duration) -> Result<String, String> {
        self.command_with(line, timeout, |_| {})
    }

    /// As [`command`](Self::command), calling `during` with the output so
    /// far whenever the guest prints `NESTBOX-*-READY` (a step where the
    /// host must act: type keys, send console input).
    pub fn command_with(
        &self,
        line: &str,
        timeout: Duration,
        mut during: impl FnMut(&str),
    ) -> Result<String, String> {
        let name = line.split_whitespace().next().unwrap_or_default();
        let from = self.serial.len();
        self.type_line(line);
        let done = format!("NESTBOX-DONE {name}");
        let deadline = std::time::Instant::now() + timeout;
        let mut ready_seen = 0;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "`{line}` did not finish in {timeout:?}; serial:\n{}",
                    self.serial()
                ));
            }
            let step = left.min(Duration::from_millis(200));
            if let Some(output) = self.serial.wait_for_after(from, &done, step) {
                return Ok(output);
            }
            let so_far = self.serial.text();
            let so_far = so_far.get(from..).unwrap_or_default();
            let ready = so_far.matches("-READY").count();
            if ready > ready_seen {
                ready_seen = ready;
                during(so_far);
            }
        }
    }

    /// Waits up to `timeout` for the guest to end by itself (stopping it
    /// after that); its outcome and everything it printed.
    pub fn wait_end(mut self, timeout: Duration) -> (Outcome, String) {
        let vm = self.vm.take().expect("the guest has ended");
        let outcome = vm.wait(timeout);
        (outcome, self.serial.text())
    }
}

/// The `key=value` fields of the first `NESTBOX-RESULT <name>` line of
/// `output`, as a lookup (missing keys read as "").
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// The fields of `name`'s result line in `output`, if it has one.
    pub fn of(output: &str, name: &str) -> Option<Self> {
        crate::qemu::result_fields(output, name).map(Self)
    }

    /// The value of `key`, or "".
    pub fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}
