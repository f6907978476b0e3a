// SPDX-License-Identifier: Apache-2.0
//! `nestbox list`, `create` and `delete` as a user meets them, each test
//! with its own data and config directories: VMs are created and listed, a
//! broken `vm.toml` shows as needing attention and is left byte for byte,
//! and refusals are one clear line that leaves nothing behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A private HOME, XDG_DATA_HOME and XDG_CONFIG_HOME, removed on drop.
struct Home(PathBuf);

impl Home {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nestbox-lib-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn nestbox(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_nestbox"))
            .args(args)
            .env("HOME", &self.0)
            .env("XDG_DATA_HOME", self.0.join("data"))
            .env("XDG_CONFIG_HOME", self.0.join("config"))
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .output()
            .expect("cannot run nestbox")
    }

    fn vms(&self) -> PathBuf {
        self.0.join("data/nestbox/vms")
    }

    fn file(&self, name: &str) -> String {
        let path = self.0.join(name);
        fs::write(&path, b"").unwrap();
        path.to_str().unwrap().to_string()
    }

    /// Creates a VM and returns its id.
    fn create(&self, args: &[&str]) -> String {
        let output = self.nestbox(&[&["create"], args].concat());
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output).trim().to_string()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_clean_failure(output: &Output, needle: &str) {
    let err = stderr(output);
    assert!(!output.status.success(), "unexpected success: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(!err.contains("panicked"), "nestbox panicked: {err}");
}

fn dir_count(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |d| d.count())
}

fn host_memory_mib() -> u64 {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    kib / 1024
}

#[test]
fn test_create_then_list_shows_the_vm() {
    let home = Home::new("create");
    let iso = home.file("debian.iso");
    let id = home.create(&[
        "--name",
        "My Debian",
        "--profile",
        "linux-iso",
        "--iso",
        &iso,
        "--memory",
        "256M",
        "--cpus",
        "1",
        "--new-disk",
        "64M",
    ]);
    let dir = home.vms().join(&id);
    assert_eq!(fs::metadata(dir.join("disk.img")).unwrap().len(), 64 << 20);
    let toml = fs::read_to_string(dir.join("vm.toml")).unwrap();
    assert!(
        toml.contains("schema = 1") && toml.contains("media = \"cdrom\""),
        "{toml}"
    );
    assert!(
        !toml.contains("bus = "),
        "Linux disks stay on virtio: {toml}"
    );

    let output = home.nestbox(&["list"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let list = stdout(&output);
    let line = list.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(line.contains("My Debian"), "{list}");
    assert!(line.contains("256 MiB"), "{list}");
    assert!(line.contains("stopped"), "{list}");
}

#[test]
fn test_a_dos_vm_gets_its_disk_and_cdrom_on_ide() {
    let home = Home::new("dos-ide");
    let iso = home.file("freedos.iso");
    let id = home.create(&[
        "--name",
        "FreeDOS",
        "--profile",
        "dos-retro",
        "--iso",
        &iso,
        "--new-disk",
        "16M",
    ]);
    let toml = fs::read_to_string(home.vms().join(&id).join("vm.toml")).unwrap();
    assert_eq!(toml.matches("bus = \"ide\"").count(), 2, "{toml}");
}

#[test]
fn test_corrupt_vm_file_needs_attention_and_is_unchanged() {
    let home = Home::new("corrupt");
    let iso = home.file("a.iso");
    let good = home.create(&["--name", "good", "--profile", "generic-bios", "--iso", &iso]);
    let bad = home.create(&["--name", "bad", "--profile", "generic-bios", "--iso", &iso]);
    let path = home.vms().join(&bad).join("vm.toml");
    let text = fs::read_to_string(&path).unwrap();
    let broken: String = text
        .lines()
        .map(|l| {
            if l.starts_with("memory = ") {
                "memory = \"lots\""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(&path, &broken).unwrap();

    let output = home.nestbox(&["list"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let list = stdout(&output);
    let line = list.lines().find(|l| l.starts_with(&bad)).unwrap();
    assert!(line.contains("needs attention"), "{list}");
    assert!(line.contains("vm.toml line 4, column 10"), "{list}");
    assert!(line.contains("expected u64"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with(&good) && l.contains("stopped")),
        "{list}"
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), broken);
}

#[test]
fn test_memory_over_the_cap_is_refused_and_creates_nothing() {
    let home = Home::new("overcap");
    let iso = home.file("a.iso");
    let host = host_memory_mib();
    let asked = host * 6 / 10;
    let output = home.nestbox(&[
        "create",
        "--name",
        "big",
        "--profile",
        "linux-iso",
        "--iso",
        &iso,
        "--memory",
        &format!("{asked}M"),
    ]);
    if asked <= host.saturating_sub(2048) {
        assert_clean_failure(
            &output,
            &format!(
                "{asked} MiB is more than half of this host's {host} MiB of RAM; turn on over-commit"
            ),
        );
    } else {
        assert_clean_failure(&output, "is more than this host can give");
    }
    assert_eq!(dir_count(&home.vms()), 0);

    let output = home.nestbox(&[
        "create",
        "--name",
        "huge",
        "--profile",
        "linux-iso",
        "--iso",
        &iso,
        "--memory",
        &format!("{host}M"),
        "--allow-overcommit",
    ]);
    assert_clean_failure(&output, "is more than this host can give");
    assert_eq!(dir_count(&home.vms()), 0);
}

#[test]
fn test_missing_iso_is_a_clear_error() {
    let home = Home::new("noiso");
    let output = home.nestbox(&[
        "create",
        "--name",
        "x",
        "--profile",
        "linux-iso",
        "--iso",
        "/nonexistent/debian.iso",
    ]);
    assert_clean_failure(&output, "ISO image /nonexistent/debian.iso does not exist");
    assert_eq!(dir_count(&home.vms()), 0);
}

#[test]
fn test_unknown_profile_lists_the_known_ones() {
    let home = Home::new("noprofile");
    let iso = home.file("a.iso");
    let output = home.nestbox(&["create", "--name", "x", "--profile", "beos", "--iso", &iso]);
    assert_clean_failure(&output, "choose one of linux-iso, linux-kernel");
}

#[test]
fn test_new_disk_over_free_space_is_refused() {
    let home = Home::new("bigdisk");
    let output = home.nestbox(&[
        "create",
        "--name",
        "x",
        "--profile",
        "linux-iso",
        "--new-disk",
        "900000000G",
    ]);
    assert_clean_failure(&output, "free where the VM goes");
    assert_eq!(dir_count(&home.vms()), 0);
}

#[test]
fn test_delete_needs_confirmation_then_removes_the_vm() {
    let home = Home::new("delete");
    let id = home.create(&[
        "--name",
        "gone",
        "--profile",
        "dos-retro",
        "--new-disk",
        "16M",
    ]);
    let output = home.nestbox(&["delete", &id]);
    assert_clean_failure(&output, "pass --yes");
    assert!(home.vms().join(&id).is_dir());
    let output = home.nestbox(&["delete", &id, "--yes"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!home.vms().join(&id).exists());
    assert_clean_failure(&home.nestbox(&["delete", &id, "--yes"]), "No VM with id");
}

#[test]
fn test_empty_library_lists_nothing() {
    let home = Home::new("empty");
    let output = home.nestbox(&["list"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("No VMs"));
}
