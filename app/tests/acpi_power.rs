// SPDX-License-Identifier: Apache-2.0
//! A firmware-booted VM has a power button: SeaBIOS places the ACPI
//! tables Nestbox hands it, and a boot sector (tests/payloads/acpi_power.S)
//! finds them as an OS would, checks their checksums, enables the power
//! button event and waits; `nestbox stop` presses the button, the boot
//! sector sees the event with the SCI's line up at the PIC and powers the
//! machine off through S5, and `stop` reports the VM stopped.

use std::path::Path;
use std::time::{Duration, Instant};

use nestbox_tests::{SEABIOS, kvm_available, payload, require_file};

mod common;

use common::Env;

#[test]
fn test_nestbox_stop_powers_off_a_firmware_booted_guest_through_acpi() {
    let test = "test_nestbox_stop_powers_off_a_firmware_booted_guest_through_acpi";
    if !kvm_available(test)
        || require_file(test, Path::new(SEABIOS), "install Debian's seabios").is_none()
    {
        return;
    }
    let env = Env::new("acpi-power");
    let boot_sector = std::fs::read(payload::image("acpi_power")).unwrap();
    assert_eq!(boot_sector.len(), 512);
    let disk = env.0.join("acpi.img");
    let mut bytes = vec![0u8; 1 << 20];
    bytes[..512].copy_from_slice(&boot_sector);
    std::fs::write(&disk, bytes).unwrap();
    let id = env.create_and_start(&[
        "--name",
        "acpi",
        "--profile",
        "generic-bios",
        "--memory",
        "64M",
        "--disk",
        disk.to_str().unwrap(),
    ]);
    let serial = env.vm_dir(&id).join("serial.log");
    let text = || String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !text().contains("NESTBOX-ACPI-") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(text().contains("NESTBOX-ACPI-OK sci=09"), "{}", text());

    let stopped = env.nestbox(&["stop", &id, "--timeout", "30"]);

    assert!(
        stopped.status.success(),
        "nestbox stop: {}\n{}",
        String::from_utf8_lossy(&stopped.stderr),
        text()
    );
    let serial = text();
    let irr = serial
        .split("NESTBOX-SCI irr=")
        .nth(1)
        .and_then(|rest| u8::from_str_radix(rest.get(..2)?, 16).ok())
        .unwrap_or_else(|| panic!("the guest saw no power button event:\n{serial}"));
    // IRQ 9 is the slave PIC's line 1.
    assert_ne!(irr & 0x02, 0, "the SCI line was down (IRR {irr:#04x})");
}
