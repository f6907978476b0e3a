// SPDX-License-Identifier: Apache-2.0
//! Tier 3: real firmware nobody here wrote, booted by Nestbox. Debian's
//! SeaBIOS finds our chipset through PCI, reads the machine's shape from
//! fw_cfg and CMOS, and prints to COM1 through its serial console.

use std::path::Path;
use std::time::Duration;

use engine::{BootSource, Outcome, VmBuilder, VmConfig, VmIo};
use nestbox_tests::{Capture, VmGuard, kvm_available, require_file};

const SEABIOS: &str = "/usr/share/seabios/bios.bin";

#[test]
fn test_seabios_prints_banner_and_reaches_no_bootable_device() {
    let test = "test_seabios_prints_banner_and_reaches_no_bootable_device";
    if !kvm_available(test) {
        return;
    }
    let Some(bios) = require_file(test, Path::new(SEABIOS), "install Debian's seabios") else {
        return;
    };
    let serial = Capture::new();
    let config = VmConfig {
        memory_bytes: 128 << 20,
        vcpus: 2,
        boot: BootSource::Firmware {
            path: bios,
            serial_console: true,
        },
    };
    let io = VmIo {
        serial: serial.writer(),
        debugcon: None,
    };
    let vm = VmGuard::start(VmBuilder::new(config, io));

    let reached = serial.wait_for("No bootable device", Duration::from_secs(120));
    let outcome = vm.stop();

    let text = serial.text();
    assert!(reached, "SeaBIOS did not finish; serial so far:\n{text}");
    assert!(text.contains("SeaBIOS (version"), "{text}");
    assert_eq!(outcome, Outcome::Stopped);
}
