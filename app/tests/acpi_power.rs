// SPDX-License-Identifier: Apache-2.0
//! A firmware-booted VM has a power button: SeaBIOS places the ACPI
//! tables Nestbox hands it, and a boot sector (tests/payloads/acpi_power.S)
//! finds them as an OS would, checks their checksums, enables the power
//! button event and waits; `nestbox stop` presses the button, the boot
//! sector sees the event with the SCI's line up at the PIC and powers the
//! machine off through S5, and `stop` reports the VM stopped.

use std::time::Duration;

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
