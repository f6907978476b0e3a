// SPDX-License-Identifier: Apache-2.0
//! A firmware-booted VM has a power button: SeaBIOS places the ACPI
//! tables Nestbox hands it, and a boot sector (tests/payloads/acpi_power.S)
//! finds them as an OS would, checks their checksums, enables the power
//! button event and waits; `nestbox stop` presses the button, the boot
//! sector sees the event with the SCI's line up at the PIC and powers the
//! machine off through S5, and `stop` reports the VM stopped.
//!
//! The same with a real OS: Debian's GRUB, booted by SeaBIOS from a CD on
//! the IDE controller, boots the small test kernel (its bzImage), which
//! takes the tables SeaBIOS placed; `nestbox stop` presses the button and
//! Linux powers off in order.

use std::time::{Duration, Instant};

use nestbox_tests::linux_guest::{AGENT_CMDLINE, BOOT_TIMEOUT, grub_cd};

mod common;

use common::{Env, seabios_vm_usable};

#[test]
fn test_nestbox_stop_powers_off_a_firmware_booted_guest_through_acpi() {
    let test = "test_nestbox_stop_powers_off_a_firmware_booted_guest_through_acpi";
    if !seabios_vm_usable(test) {
        return;
    }
    let env = Env::new("acpi-power");
    let disk = env.boot_disk("acpi_power");
    let id = env.create_bios_vm("acpi", &disk);
    env.start_headless(&id);
    let booted = env.wait_serial(&id, &["NESTBOX-ACPI-"], Duration::from_secs(120));
    assert!(booted.contains("NESTBOX-ACPI-OK sci=09"), "{booted}");

    let stopped = env.nestbox(&["stop", &id, "--timeout", "30"]);

    let serial = env.wait_serial(&id, &[], Duration::ZERO);
    assert!(
        stopped.status.success(),
        "nestbox stop: {}\n{serial}",
        String::from_utf8_lossy(&stopped.stderr),
    );
    let irr = serial
        .split("NESTBOX-SCI irr=")
        .nth(1)
        .and_then(|rest| u8::from_str_radix(rest.get(..2)?, 16).ok())
        .unwrap_or_else(|| panic!("the guest saw no power button event:\n{serial}"));
    // IRQ 9 is the slave PIC's line 1.
    assert_ne!(irr & 0x02, 0, "the SCI line was down (IRR {irr:#04x})");
}

#[test]
fn test_nestbox_stop_powers_off_linux_booted_by_grub_through_seabios() {
    let test = "test_nestbox_stop_powers_off_linux_booted_by_grub_through_seabios";
    if !seabios_vm_usable(test) {
        return;
    }
    let env = Env::new("acpi-grub");
    let iso = env.0.join("grub.iso");
    // The engine cannot hide every feature a software-only KVM host fails
    // to emulate from a firmware-booted kernel's CPUID: GRUB's command
    // line turns them off, as a user's would on such a host.
    let acceleration = engine::host::Acceleration::detect();
    let cmdline = match engine::cpu_quirks::linux_cmdline_quirks(acceleration, AGENT_CMDLINE) {
        Some(extra) => format!("{AGENT_CMDLINE} {extra}"),
        None => AGENT_CMDLINE.to_string(),
    };
    if grub_cd(test, &env.0.join("grub"), &iso, &cmdline).is_none() {
        return;
    }
    let id = env.create_vm(&[
        "--name",
        "grub linux",
        "--profile",
        "generic-bios",
        "--memory",
        "256M",
        "--cpus",
        "2",
        "--iso",
        iso.to_str().unwrap(),
    ]);
    env.start_headless(&id);
    let booted = env.wait_serial(&id, &["NESTBOX-AGENT-READY"], BOOT_TIMEOUT);
    assert!(
        booted.contains("NESTBOX-GRUB-LOADING") && booted.contains("NESTBOX-AGENT-READY"),
        "GRUB did not boot Linux to the agent:\n{booted}"
    );
    // Linux found the tables SeaBIOS placed from Nestbox's fw_cfg files.
    assert!(booted.contains("NESTBX"), "{booted}");

    let pressed = Instant::now();
    let stopped = env.nestbox(&["stop", &id, "--timeout", "30"]);
    let took = pressed.elapsed();

    let serial = env.wait_serial(&id, &[], Duration::ZERO);
    assert!(
        stopped.status.success(),
        "nestbox stop: {}\n{serial}",
        String::from_utf8_lossy(&stopped.stderr),
    );
    assert!(took <= Duration::from_secs(30), "stop took {took:?}");
    assert!(serial.contains("NESTBOX-POWER-BUTTON"), "{serial}");
    assert!(serial.contains("reboot: Power down"), "{serial}");
}
