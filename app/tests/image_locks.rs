// SPDX-License-Identifier: Apache-2.0
//! One writer per disk image, as QEMU enforces it: a second `nestbox run`
//! or library VM on an image a Nestbox VM writes is refused with a message
//! naming the holder, QEMU's `qemu-io` cannot write it, Nestbox refuses an
//! image a running QEMU holds, and read-only users share an image.
//!
//! The VMs boot SeaBIOS from a blank disk ("No bootable device", retried),
//! which keeps them running with their disks open.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nestbox_tests::qemu::QEMU as QEMU_SYSTEM;
use nestbox_tests::require_file;

mod common;

use common::{Env, seabios_vm_usable};

/// Kills a child on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether process `pid` has the file at `path` open.
fn has_open(pid: u32, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = std::fs::metadata(path) else {
        return false;
    };
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.flatten().any(|fd| {
            std::fs::metadata(fd.path())
                .is_ok_and(|m| m.dev() == target.dev() && m.ino() == target.ino())
        })
    })
}

/// Waits until `child` has `image` open (its disk is attached and
/// locked); panics with its stderr if it ends first.
fn wait_until_open(child: &mut Running, image: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !has_open(child.0.id(), image) {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            panic!("{what} ended ({status}) before opening the image: {stderr}");
        }
        assert!(Instant::now() < deadline, "{what} never opened the image");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `nestbox run` on SeaBIOS with `disk` as its only disk, running.
fn start_run(env: &Env, disk: &str) -> Running {
    let serial = env.0.join("serial.log");
    Running(
        env.command(&[
            "run",
            "--firmware",
            "seabios",
            "--memory",
            "32M",
            "--serial",
            serial.to_str().unwrap(),
            "--disk",
            disk,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run nestbox"),
    )
}

/// Runs `nestbox run` on `disk` expecting it to be refused: its stderr.
fn refused_run(env: &Env, disk: &str) -> String {
    let mut child = start_run(env, disk);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            assert!(!status.success(), "refused but exited 0: {stderr}");
            return stderr;
        }
        assert!(
            Instant::now() < deadline,
            "a second nestbox run on {disk} was not refused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn skip(test: &str) -> bool {
    !seabios_vm_usable(test)
}

#[test]
fn test_a_second_nestbox_run_on_a_written_image_is_refused_naming_the_first() {
    let test = "test_a_second_nestbox_run_on_a_written_image_is_refused_naming_the_first";
    if skip(test) {
        return;
    }
    let env = Env::new("lock-two-runs");
    let image = env.blank_image("disk.img", 8 << 20);
    let disk = image.to_str().unwrap();
    let mut first = start_run(&env, disk);
    wait_until_open(&mut first, &image, "the first nestbox run");

    let stderr = refused_run(&env, disk);
    assert!(stderr.contains("in use by"), "{stderr}");
    assert!(
        stderr.contains(&format!("(pid {})", first.0.id())),
        "the message does not name the first VM's process: {stderr}"
    );
    // A read-only user is refused too while the image is written.
    let stderr = refused_run(&env, &format!("{disk},readonly"));
    assert!(stderr.contains("in use by"), "{stderr}");
    assert!(first.0.try_wait().unwrap().is_none(), "the first VM ended");
}

#[test]
fn test_read_only_users_share_an_image() {
    let test = "test_read_only_users_share_an_image";
    if skip(test) {
        return;
    }
    let env = Env::new("lock-readers");
    let image = env.blank_image("shared.img", 8 << 20);
    let disk = format!("{},readonly", image.display());
    let mut first = start_run(&env, &disk);
    wait_until_open(&mut first, &image, "the first reader");
    let mut second = start_run(&env, &disk);
    wait_until_open(&mut second, &image, "the second reader");
    // QEMU's tools read it too (qemu-img takes a shared read lock).
    let info = Command::new("qemu-img")
        .args(["info", "-f", "raw"])
        .arg(&image)
        .output()
        .expect("qemu-img");
    assert!(
        info.status.success(),
        "qemu-img info: {}",
        String::from_utf8_lossy(&info.stderr)
    );
    // A writer is refused while they read.
    let stderr = refused_run(&env, image.to_str().unwrap());
    assert!(stderr.contains("in use by"), "{stderr}");
}

#[test]
fn test_qemu_and_nestbox_refuse_each_others_written_images() {
    let test = "test_qemu_and_nestbox_refuse_each_others_written_images";
    if skip(test) || require_file(test, Path::new(QEMU_SYSTEM), "install qemu-system-x86").is_none()
    {
        return;
    }
    let env = Env::new("lock-qemu");

    // Nestbox writes: qemu-io cannot.
    let image = env.blank_image("nestbox-writes.img", 8 << 20);
    let mut nestbox = start_run(&env, image.to_str().unwrap());
    wait_until_open(&mut nestbox, &image, "nestbox run");
    let qemu_io = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write 0 512"])
        .arg(&image)
        .output()
        .expect("qemu-io");
    let said = String::from_utf8_lossy(&qemu_io.stderr).into_owned()
        + &String::from_utf8_lossy(&qemu_io.stdout);
    assert!(
        !qemu_io.status.success() || said.contains("lock"),
        "qemu-io wrote an image Nestbox runs: {said}"
    );
    assert!(said.contains("lock"), "{said}");
    drop(nestbox);

    // QEMU writes: Nestbox refuses, naming it.
    let image = env.blank_image("qemu-writes.img", 8 << 20);
    let mut qemu = Running(
        Command::new(QEMU_SYSTEM)
            .args(["-accel", "tcg", "-S", "-display", "none", "-nodefaults"])
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", image.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run QEMU"),
    );
    wait_until_open(&mut qemu, &image, "QEMU");
    // QEMU takes its locks right after opening: give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    let stderr = refused_run(&env, image.to_str().unwrap());
    assert!(stderr.contains("in use by qemu-system-x86"), "{stderr}");
}

#[test]
fn test_a_second_library_vm_on_a_written_image_does_not_start() {
    let test = "test_a_second_library_vm_on_a_written_image_does_not_start";
    if skip(test) {
        return;
    }
    let env = Env::new("lock-library");
    let image = env.blank_image("library.img", 8 << 20);
    let args = |name: &'static str| {
        [
            "--name",
            name,
            "--profile",
            "generic-bios",
            "--memory",
            "32M",
            "--disk",
        ]
    };
    let mut first: Vec<&str> = args("first").to_vec();
    first.push(image.to_str().unwrap());
    let first_id = env.create_and_start(&first);

    let mut second: Vec<&str> = std::iter::once("create").chain(args("second")).collect();
    second.push(image.to_str().unwrap());
    let created = env.nestbox(&second);
    assert!(created.status.success());
    let second_id = String::from_utf8_lossy(&created.stdout).trim().to_string();
    let started = env.nestbox(&["start", &second_id, "--headless"]);
    let stderr = String::from_utf8_lossy(&started.stderr);
    assert!(!started.status.success(), "the second VM started");
    assert!(stderr.contains("in use by"), "{stderr}");

    let listed = env.nestbox(&["list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    let first_line = listed
        .lines()
        .find(|line| line.contains(&first_id))
        .unwrap_or_default();
    assert!(first_line.contains("running"), "{listed}");
}
