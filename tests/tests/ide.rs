// SPDX-License-Identifier: Apache-2.0
//! Tier 3: Debian's SeaBIOS finds Nestbox's PIIX3 IDE controller, talks to
//! its drives with its own ATA and ATAPI drivers, and boots: from an ATA
//! hard disk, and from a CD-ROM image that Debian's `xorriso` made
//! bootable (El Torito, no emulation) — the way an installer ISO for a
//! guest without virtio drivers boots.

use std::path::{Path, PathBuf};

use engine::Outcome;
use engine::vm::{DiskBus, DiskConfig, DiskFormat};
use nestbox_tests::{boot_seabios_with, bootable_cd, payload};

const BOOTED: &str = "NESTBOX-BOOT-SECTOR-OK";

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("nestbox-ide-{name}-{}", std::process::id()))
}

fn boot_sector() -> Vec<u8> {
    let sector = std::fs::read(payload::image("boot_sector")).unwrap();
    assert_eq!(sector.len(), 512);
    sector
}

fn ide(path: &Path, cdrom: bool) -> DiskConfig {
    DiskConfig {
        path: path.to_path_buf(),
        format: DiskFormat::Raw,
        readonly: cdrom,
        bus: DiskBus::Ide,
        cdrom,
        ejected: false,
        dependencies: Default::default(),
        cache: Default::default(),
    }
}

#[test]
fn test_seabios_boots_boot_sector_from_ide_hard_disk() {
    let test = "test_seabios_boots_boot_sector_from_ide_hard_disk";
    let disk = scratch("disk.img");
    let mut image = boot_sector();
    image.resize(4 << 20, 0);
    std::fs::write(&disk, image).unwrap();

    let result = boot_seabios_with(test, vec![ide(&disk, false)]);
    std::fs::remove_file(&disk).unwrap();
    let Some((outcome, text)) = result else {
        return;
    };

    assert!(text.contains("Booting from Hard Disk"), "{text}");
    assert!(text.contains(BOOTED), "{text}");
    assert_eq!(outcome, Outcome::DebugExit(0x10), "{text}");
}

#[test]
fn test_seabios_boots_an_el_torito_cd_made_by_xorriso_from_the_ide_cdrom() {
    let test = "test_seabios_boots_an_el_torito_cd_made_by_xorriso_from_the_ide_cdrom";
    let tree = scratch("cd-tree");
    let iso = scratch("cd.iso");
    if bootable_cd(test, &tree, &iso).is_none() {
        return;
    }
    // A blank hard disk on the primary master, the disc on the primary
    // slave, as a new VM with an installer ISO: SeaBIOS tries the disk,
    // finds nothing to boot and boots the CD.
    let blank = scratch("blank.img");
    std::fs::write(&blank, vec![0u8; 1 << 20]).unwrap();

    let result = boot_seabios_with(test, vec![ide(&blank, false), ide(&iso, true)]);
    std::fs::remove_dir_all(&tree).unwrap();
    std::fs::remove_file(&iso).unwrap();
    std::fs::remove_file(&blank).unwrap();
    let Some((outcome, text)) = result else {
        return;
    };

    let disk_tried = text.find("Boot failed: not a bootable disk");
    let cd_booted = text.find("Booting from DVD/CD");
    assert!(disk_tried.is_some() && cd_booted > disk_tried, "{text}");
    assert!(text.contains(BOOTED), "{text}");
    assert_eq!(outcome, Outcome::DebugExit(0x10), "{text}");
}
