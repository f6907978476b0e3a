// SPDX-License-Identifier: Apache-2.0
//! What the app's process-level tests share: a private HOME and XDG data,
//! config and runtime directories for the `nestbox` binary, which kills
//! every VM still running in them and removes them on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nestbox_tests::{SEABIOS, kvm_available, payload, require_file};

/// True when KVM and Debian's SeaBIOS are there; otherwise the test
/// skips (saying why), or fails where `NESTBOX_REQUIRE_KVM=1`.
#[allow(dead_code)] // Each test binary compiles this module; not all use it.
pub fn seabios_vm_usable(test: &str) -> bool {
    kvm_available(test)
        && require_file(test, Path::new(SEABIOS), "install Debian's seabios").is_some()
}

/// A private HOME with XDG data, config and runtime directories.
pub struct Env(pub PathBuf);

impl Env {
    /// Fresh directories under the temporary directory, named by `tag`.
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nbt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["data", "config", "run"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        Self(dir)
    }

    /// `nestbox args…` with this environment (no Wayland, so a window
    /// opens on the X display the test gives it).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nestbox"));
        command
            .args(args)
            .env("HOME", &self.0)
            .env("XDG_DATA_HOME", self.0.join("data"))
            .env("XDG_CONFIG_HOME", self.0.join("config"))
            .env("XDG_RUNTIME_DIR", self.0.join("run"))
            .env("RUST_BACKTRACE", "0")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("NESTBOX_LOG");
        command
    }

    /// Runs `nestbox args…` to completion.
    pub fn nestbox(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("cannot run nestbox")
    }

    /// `nestbox create` with `args` (after `create`), then `nestbox start
    /// --headless` of the new VM; its id. Panics with nestbox's message
    /// when either fails.
    #[allow(dead_code)] // Each test binary compiles this module; not all use it.
    pub fn create_and_start(&self, args: &[&str]) -> String {
        let id = self.create_vm(args);
        self.start_headless(id.as_str());
        id
    }

    /// `nestbox create` with `args` (after `create`); the new VM's id.
    #[allow(dead_code)] // Each test binary compiles this module; not all use it.
    pub fn create_vm(&self, args: &[&str]) -> String {
        let create: Vec<&str> = std::iter::once("create")
            .chain(args.iter().copied())
            .collect();
        let created = self.nestbox(&create);
        assert!(
            created.status.success(),
            "nestbox create: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        String::from_utf8_lossy(&created.stdout).trim().to_string()
    }

    /// A 64 MiB library VM named `name` of the generic-bios profile (SeaBIOS,
    /// IDE) whose only disk is `disk`; its id.
    #[allow(dead_code)] // Each test binary compiles this module; not all use it.
    pub fn create_bios_vm(&self, name: &str, disk: &Path) -> String {
        self.create_vm(&[
            "--name",
            name,
            "--profile",
            "generic-bios",
            "--memory",
            "64M",
            "--disk",
            disk.to_str().unwrap(),
        ])
    }

    /// `nestbox start ID --headless`; panics with nestbox's message when
    /// it fails.
    #[allow(dead_code)] // Each test binary compiles this module; not all use it.
    pub fn start_headless(&self, id: &str) {
        let started = self.nestbox(&["start", id, "--headless"]);
        assert!(
            started.status.success(),
            "nestbox start: {}",
            String::from_utf8_lossy(&started.stderr)
        );
    }

    /// The library folder of VM `id`.
    #[allow(dead_code)] // Each test binary compiles this module; not all use it.
    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.0.join("data/nestbox/vms").join(id)
    }

    /// A sparse raw image of `bytes` zeros in this environment.
    #[allow(dead_code)] // Each test binary compiles this module; not all use it.
    pub fn blank_image(&self, name: &str, bytes: u64) -> PathBuf {
        let path = self.0.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        path
    }

    /// A 1 MiB raw disk in this environment whose first sector is the
    /// boot-sector payload `name` (tests/payloads/NAME.S).
    #[allow(dead_code)] // Each test binary compiles this module; not all use it.
    pub fn boot_disk(&self, name: &str) -> PathBuf {
        let boot_sector = std::fs::read(payload::image(name)).unwrap();
        assert_eq!(boot_sector.len(), 512, "{name} is not a boot sector");
        let disk = self.0.join(format!("{name}.img"));
        let mut bytes = vec![0u8; 1 << 20];
        bytes[..512].copy_from_slice(&boot_sector);
        std::fs::write(&disk, bytes).unwrap();
        disk
    }

    /// The text of library VM `id`'s serial log once it holds one of
    /// `needles`, or after `timeout` whatever it holds.
    #[allow(dead_code)] // Each test binary compiles this module; not all use it.
    pub fn wait_serial(&self, id: &str, needles: &[&str], timeout: Duration) -> String {
        let serial = self.vm_dir(id).join("serial.log");
        let text =
            || String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
        let deadline = Instant::now() + timeout;
        loop {
            let now = text();
            if needles.iter().any(|n| now.contains(n)) || Instant::now() >= deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs nestbox and insists that it succeeds; its standard output.
    #[allow(dead_code)] // Each test binary compiles this module; not all use it.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.nestbox(args);
        assert!(
            output.status.success(),
            "nestbox {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The STATE column of `nestbox list` for `id`.
    #[allow(dead_code)] // Each test binary compiles this module; not all use it.
    pub fn list_state(&self, id: &str) -> String {
        let out = self.ok(&["list"]);
        let line = out
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not in: {out}"));
        let header = out.lines().next().unwrap();
        line[header.find("STATE").unwrap()..].trim().to_string()
    }

    /// Everything library VM `id` wrote to its serial log so far.
    #[allow(dead_code)] // Each test binary compiles this module; not all use it.
    pub fn serial(&self, id: &str) -> String {
        let bytes = std::fs::read(self.vm_dir(id).join("serial.log")).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The control socket of VM `id`'s worker.
    #[allow(dead_code)] // Each test binary compiles this module; not all use it.
    pub fn socket(&self, id: &str) -> PathBuf {
        self.0.join("run/nestbox").join(format!("{id}.sock"))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(read) = std::fs::read_dir(self.0.join("run/nestbox")) {
            for entry in read.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".sock") {
                    let _ = self.nestbox(&["kill", id]);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `check` every 50 ms until it is true or `timeout` passes; its
/// last answer.
#[allow(dead_code)] // Each test binary compiles this module; not all use it.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// Presses Esc while SeaBIOS offers its boot menu, until the menu shows.
#[allow(dead_code)] // Each test binary compiles this module; not all use it.
pub fn open_boot_menu(env: &Env, id: &str) {
    let opened = wait_for(Duration::from_secs(120), || {
        let now = env.serial(id);
        if now.contains("Select boot device") {
            return true;
        }
        if now.contains("Press ESC for boot menu") {
            let _ = env.nestbox(&["send-keys", id, "esc"]);
        }
        false
    });
    assert!(opened, "no boot menu: {}", env.serial(id));
}

/// `nestbox screenshot` of VM `id` into `name` in the environment; the
/// PNG's bytes.
#[allow(dead_code)] // Each test binary compiles this module; not all use it.
pub fn screenshot(env: &Env, id: &str, name: &str) -> Vec<u8> {
    let path = env.0.join(name);
    env.ok(&["screenshot", id, path.to_str().unwrap()]);
    std::fs::read(&path).unwrap()
}

/// Whether a worker process of VM `id` runs.
#[allow(dead_code)] // Each test binary compiles this module; not all use it.
pub fn worker_alive(id: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", &format!("nestbox vm-worker {id}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Presses Esc in VM `id`, at SeaBIOS's boot menu, and waits for the
/// firmware to act on it: `booting` (a line it prints then) shows on the
/// serial console within 30 s.
#[allow(dead_code)] // Each test binary compiles this module; not all use it.
pub fn esc_boots(env: &Env, id: &str, booting: &str) {
    assert!(
        !env.serial(id).contains(booting),
        "{booting} before Esc: {}",
        env.serial(id)
    );
    env.ok(&["send-keys", id, "esc"]);
    assert!(
        wait_for(Duration::from_secs(30), || env.serial(id).contains(booting)),
        "Esc was not acted on: {}",
        env.serial(id)
    );
}
