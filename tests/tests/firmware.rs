// SPDX-License-Identifier: Apache-2.0
//! Tier 3: real firmware nobody here wrote, booted by Nestbox. Debian's
//! SeaBIOS finds our chipset through PCI, reads the machine's shape from
//! fw_cfg and CMOS, and prints to COM1 through its serial console.

use std::path::Path;
use std::time::Duration;

use engine::vm::{DiskBus, DiskConfig, DiskFormat};
use engine::{Outcome, VmBuilder, VmConfig, VmIo};
use nestbox_tests::{
    Capture, SEABIOS, VmGuard, boot_seabios_with, firmware_vm, kvm_available, payload, require_file,
};

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
        vcpus: 2,
        ..firmware_vm(bios)
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

/// A 1 MiB raw image whose first sector is tests/payloads/boot_sector.S.
fn boot_disk(name: &str) -> std::path::PathBuf {
    let sector = std::fs::read(payload::image("boot_sector")).unwrap();
    assert_eq!(sector.len(), 512);
    let path = std::env::temp_dir().join(format!("nestbox-{name}-{}.img", std::process::id()));
    let mut image = sector;
    image.resize(1 << 20, 0);
    std::fs::write(&path, image).unwrap();
    path
}

#[test]
fn test_seabios_boots_boot_sector_from_raw_virtio_blk() {
    let disk = boot_disk("raw-boot");
    let config = DiskConfig {
        path: disk.clone(),
        format: DiskFormat::Raw,
        readonly: false,
        bus: DiskBus::Virtio,
        cdrom: false,
        ejected: false,
        dependencies: Default::default(),
        cache: Default::default(),
    };
    let result = boot_seabios_with(
        "test_seabios_boots_boot_sector_from_raw_virtio_blk",
        vec![config],
    );
    std::fs::remove_file(&disk).unwrap();
    let Some((outcome, text)) = result else {
        return;
    };
    assert_eq!(outcome, Outcome::DebugExit(0x10), "{text}");
    assert!(text.contains("NESTBOX-BOOT-SECTOR-OK"), "{text}");
}

#[test]
fn test_seabios_boots_boot_sector_from_qcow2_made_by_qemu_img() {
    let test = "test_seabios_boots_boot_sector_from_qcow2_made_by_qemu_img";
    let Some(qemu_img) = require_file(test, Path::new("/usr/bin/qemu-img"), "install qemu-utils")
    else {
        return;
    };
    let raw = boot_disk("qcow2-src");
    let qcow2 = raw.with_extension("qcow2");
    let converted = std::process::Command::new(&qemu_img)
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2)
        .status()
        .unwrap();
    assert!(converted.success());
    let config = DiskConfig {
        path: qcow2.clone(),
        format: DiskFormat::Qcow2,
        readonly: false,
        bus: DiskBus::Virtio,
        cdrom: false,
        ejected: false,
        dependencies: Default::default(),
        cache: Default::default(),
    };

    let result = boot_seabios_with(test, vec![config]);
    let check = std::process::Command::new(&qemu_img)
        .args(["check", "-q"])
        .arg(&qcow2)
        .status()
        .unwrap();
    std::fs::remove_file(&raw).unwrap();
    std::fs::remove_file(&qcow2).unwrap();
    let Some((outcome, text)) = result else {
        return;
    };

    assert_eq!(outcome, Outcome::DebugExit(0x10), "{text}");
    assert!(text.contains("NESTBOX-BOOT-SECTOR-OK"), "{text}");
    assert!(check.success(), "qemu-img check failed after the boot");
}
