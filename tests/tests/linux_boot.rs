// SPDX-License-Identifier: Apache-2.0
//! Direct Linux boot of the Debian test kernel (tests/guest/build.sh).
//!
//! Tier 2/3 (any /dev/kvm): the uncompressed vmlinux started through its
//! PVH entry prints its first lines on COM1: the version, the command line
//! Nestbox gave it and the e820 map of the configured memory. On software
//! KVM this alone takes about a minute, so it is one test.
//!
//! Tier 5 (hardware virtualization only): the same guest boots to its
//! marker and powers off through ACPI.

use std::time::Duration;

use engine::host::Acceleration;
use engine::{Outcome, VmBuilder, VmConfig, VmIo};
use nestbox_tests::linux_guest::direct_linux_vm;
use nestbox_tests::{Capture, VmGuard, guest_dir, kvm_available, require_file, skipped};

/// 4.5 GiB: 3 GiB below the PCI hole and 1.5 GiB above 4 GiB, so the map
/// shows both halves. Pages the guest never touches cost the host nothing.
const MEMORY: u64 = 0x1_2000_0000;

fn linux_config(kernel: &str, cmdline: &str, vcpus: u32, memory: u64) -> Option<VmConfig> {
    let hint = "run tests/guest/build.sh";
    let kernel = require_file(kernel, &guest_dir().join(kernel), hint)?;
    let initrd = require_file("initramfs", &guest_dir().join("initramfs.cpio.gz"), hint)?;
    Some(direct_linux_vm(kernel, initrd, cmdline, vcpus, memory))
}

#[test]
fn test_linux_pvh_boot_prints_version_cmdline_and_e820() {
    if !kvm_available("test_linux_pvh_boot_prints_version_cmdline_and_e820") {
        return;
    }
    let cmdline = "console=ttyS0 earlyprintk=serial,ttyS0 nestbox.test=poweroff";
    let Some(config) = linux_config("vmlinux", cmdline, 1, MEMORY) else {
        return;
    };
    let serial = Capture::new();
    let io = VmIo {
        serial: serial.writer(),
        debugcon: None,
    };
    let vm = VmGuard::start(VmBuilder::new(config, io));

    // The last of the lines we check; on software KVM it comes ~30-90 s in.
    let usable_high = "[mem 0x0000000100000000-0x000000015fffffff] usable";
    let reached = serial.wait_for(usable_high, Duration::from_secs(400));
    drop(vm);

    let text = serial.text();
    assert!(
        reached,
        "no e820 line for {MEMORY:#x} bytes; serial:\n{text}"
    );
    assert!(text.contains("Linux version 6."), "{text}");
    assert!(text.contains(&format!("Command line: {cmdline}")), "{text}");
    assert!(
        text.contains("BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable"),
        "{text}"
    );
    assert!(
        text.contains("BIOS-e820: [mem 0x0000000000100000-0x00000000bfffffff] usable"),
        "{text}"
    );
}

#[test]
fn test_linux_full_boot_reaches_marker_and_powers_off() {
    let test = "test_linux_full_boot_reaches_marker_and_powers_off";
    if Acceleration::detect() != Acceleration::Hardware {
        skipped(
            test,
            "/dev/kvm is not hardware virtualization (kvm_pvm or no vmx/svm), \
             where Debian's kernel cannot fully boot",
        );
        return;
    }
    if !kvm_available(test) {
        return;
    }
    let cmdline = "console=ttyS0 nestbox.test=poweroff";
    let Some(config) = linux_config("vmlinux", cmdline, 2, 256 << 20) else {
        return;
    };
    let serial = Capture::new();
    let io = VmIo {
        serial: serial.writer(),
        debugcon: None,
    };

    let outcome = VmGuard::start(VmBuilder::new(config, io)).wait(Duration::from_secs(120));

    let text = serial.text();
    assert!(text.contains("NESTBOX-GUEST-READY"), "{text}");
    assert!(text.contains("cpus=2"), "{text}");
    assert_eq!(outcome, Outcome::PowerOff, "{text}");
}
