// SPDX-License-Identifier: Apache-2.0
//! Snapshots as a user takes them with `nestbox snapshot`: a disk written
//! with a pattern between snapshots comes back with each pattern on
//! revert, deleting the snapshot in the middle of the chain keeps the
//! others and the current state readable, and every image passes
//! `qemu-img check` (QEMU's own reader of the chain Nestbox made; QEMU's
//! `qemu-io` writes and reads the patterns). A snapshot of a running VM
//! holds its running state: reverting to it and starting brings back the
//! same screen, and the firmware takes a key.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;

use common::{Env, esc_boots, open_boot_menu, screenshot};

const QEMU_IO: &str = "/usr/bin/qemu-io";
const QEMU_IMG: &str = "/usr/bin/qemu-img";
/// After this long without changes the text cursor stops blinking.
const STILL: Duration = Duration::from_secs(11);

fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?}: {text}");
    text
}

/// The image VM `id`'s first disk uses now, as vm.toml names it.
fn current_image(env: &Env, id: &str) -> PathBuf {
    let dir = env.vm_dir(id);
    let toml = std::fs::read_to_string(dir.join("vm.toml")).unwrap();
    let disks = toml.split("[[disks]]").nth(1).expect("a disk");
    let path = disks
        .lines()
        .find_map(|l| l.strip_prefix("path = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("the disk's path");
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

/// Writes 64 KiB of `byte` at the start of `image` (qcow2) with qemu-io.
fn write_pattern(image: &Path, byte: u8) {
    run(
        QEMU_IO,
        &[
            "-f",
            "qcow2",
            "-c",
            &format!("write -P {byte:#x} 0 64k"),
            image.to_str().unwrap(),
        ],
    );
}

/// Whether the first 64 KiB of `image` hold `byte` (qemu-io reads
/// through the whole backing chain).
fn holds_pattern(image: &Path, byte: u8) -> bool {
    let out = std::process::Command::new(QEMU_IO)
        .args(["-f", "qcow2", "-c", &format!("read -P {byte:#x} 0 64k")])
        .arg(image)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && text.contains("read 65536/65536") && !text.contains("Pattern")
}

fn check_clean(image: &Path) {
    let said = run(QEMU_IMG, &["check", image.to_str().unwrap()]);
    assert!(said.contains("No errors"), "{}: {said}", image.display());
}

/// Every qcow2 image in VM `id`'s snapshots folder.
fn snapshot_images(env: &Env, id: &str) -> Vec<PathBuf> {
    std::fs::read_dir(env.vm_dir(id).join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "qcow2"))
        .collect()
}

#[test]
fn test_disk_snapshots_revert_each_pattern_and_a_middle_one_deletes_cleanly() {
    let test = "test_disk_snapshots_revert_each_pattern_and_a_middle_one_deletes_cleanly";
    for tool in [QEMU_IO, QEMU_IMG] {
        if nestbox_tests::require_file(test, Path::new(tool), "install Debian's qemu-utils")
            .is_none()
        {
            return;
        }
    }
    let env = Env::new("snapshots-disk");
    // The user's raw disk, with the first pattern.
    let disk = env.blank_image("disk.img", 8 << 20);
    run(
        QEMU_IO,
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x11 0 64k",
            disk.to_str().unwrap(),
        ],
    );
    let id = env.create_bios_vm("snap", &disk);

    // one (0x11), then 0x22, two, 0x33, three, then 0x44 now.
    env.ok(&["snapshot", &id, "take", "one"]);
    write_pattern(&current_image(&env, &id), 0x22);
    env.ok(&["snapshot", &id, "take", "two"]);
    write_pattern(&current_image(&env, &id), 0x33);
    env.ok(&["snapshot", &id, "take", "three"]);
    write_pattern(&current_image(&env, &id), 0x44);
    // Images in the VM's folder name each other relatively: the folder
    // can move and the chain still reads.
    let info = run(
        QEMU_IMG,
        &["info", current_image(&env, &id).to_str().unwrap()],
    );
    assert!(info.contains("backing file: disk0-2.qcow2"), "{info}");
    let moved = env.0.join("moved-vm");
    let image = current_image(&env, &id);
    std::fs::rename(env.vm_dir(&id), &moved).unwrap();
    let in_moved = moved.join(image.strip_prefix(env.vm_dir(&id)).unwrap());
    let chain = run(
        QEMU_IMG,
        &["info", "--backing-chain", in_moved.to_str().unwrap()],
    );
    assert!(
        chain.contains(&moved.join("snapshots/disk0-1.qcow2").display().to_string())
            && chain.contains(disk.to_str().unwrap()),
        "the moved chain does not open: {chain}"
    );
    std::fs::rename(&moved, env.vm_dir(&id)).unwrap();
    let listed =
        String::from_utf8_lossy(&env.nestbox(&["snapshot", &id, "list"]).stdout).into_owned();
    assert!(
        listed.contains("\ns1  one") || listed.starts_with("s1  one"),
        "{listed}"
    );
    assert!(
        listed.contains("\n  s2  two")
            && listed.contains("\n    s3  three")
            && listed.ends_with("\n      > now\n"),
        "{listed}"
    );
    assert!(holds_pattern(&current_image(&env, &id), 0x44));

    // Revert: each snapshot's pattern is back, the dropped state is gone.
    for (name, byte) in [("two", 0x22), ("one", 0x11), ("three", 0x33)] {
        env.ok(&["snapshot", &id, "revert", name]);
        let now = current_image(&env, &id);
        assert!(
            holds_pattern(&now, byte),
            "{name} did not bring {byte:#x} back"
        );
        check_clean(&now);
    }
    // The user's disk was never written after the first snapshot.
    assert!(holds_pattern_raw(&disk, 0x11));

    // Delete "two", in the middle of the chain, while at "three".
    write_pattern(&current_image(&env, &id), 0x55);
    env.ok(&["snapshot", &id, "delete", "two"]);
    let listed =
        String::from_utf8_lossy(&env.nestbox(&["snapshot", &id, "list"]).stdout).into_owned();
    assert!(
        !listed.contains("two") && listed.contains("three"),
        "{listed}"
    );
    assert!(
        holds_pattern(&current_image(&env, &id), 0x55),
        "the current state changed"
    );
    for image in snapshot_images(&env, &id) {
        check_clean(&image);
    }
    env.ok(&["snapshot", &id, "revert", "three"]);
    assert!(holds_pattern(&current_image(&env, &id), 0x33));
    env.ok(&["snapshot", &id, "revert", "one"]);
    assert!(holds_pattern(&current_image(&env, &id), 0x11));
    assert!(
        !env.nestbox(&["snapshot", &id, "revert", "two"])
            .status
            .success(),
        "a deleted snapshot is gone"
    );
    for image in snapshot_images(&env, &id) {
        check_clean(&image);
    }
}

fn holds_pattern_raw(image: &Path, byte: u8) -> bool {
    let bytes = std::fs::read(image).unwrap();
    bytes[..65536].iter().all(|&b| b == byte)
}

#[test]
fn test_snapshot_of_a_running_vm_brings_back_its_screen_and_takes_a_key() {
    let test = "test_snapshot_of_a_running_vm_brings_back_its_screen_and_takes_a_key";
    if !common::seabios_vm_usable(test) {
        return;
    }
    let env = Env::new("snapshots-running");
    let disk = env.blank_image("blank.img", 1 << 20);
    let id = env.create_bios_vm("menu", &disk);
    env.start_headless(&id);
    open_boot_menu(&env, &id);
    std::thread::sleep(STILL);
    let at_menu = screenshot(&env, &id, "at-menu.png");

    let taken = env.nestbox(&["snapshot", &id, "take", "boot menu"]);
    let said = String::from_utf8_lossy(&taken.stderr).into_owned();
    assert!(
        taken.status.success() && said.contains("with its running state"),
        "{said}"
    );
    assert_eq!(
        env.list_state(&id),
        "running",
        "the VM goes on after the snapshot"
    );
    // It goes on from the menu: Esc boots (and finds nothing).
    esc_boots(&env, &id, "Booting from ");
    env.ok(&["kill", &id]);

    let reverted = env.nestbox(&["snapshot", &id, "revert", "boot menu"]);
    assert!(
        String::from_utf8_lossy(&reverted.stderr).contains("suspended there"),
        "{}",
        String::from_utf8_lossy(&reverted.stderr)
    );
    assert_eq!(env.list_state(&id), "suspended");
    env.start_headless(&id);
    std::thread::sleep(STILL);
    let again = screenshot(&env, &id, "again.png");
    assert!(
        again == at_menu,
        "the snapshot's screen differs: see {} and {}",
        env.0.join("at-menu.png").display(),
        env.0.join("again.png").display()
    );
    esc_boots(&env, &id, "Booting from ");
    env.ok(&["kill", &id]);
    for image in snapshot_images(&env, &id) {
        check_clean(&image);
    }
}
