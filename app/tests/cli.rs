// SPDX-License-Identifier: Apache-2.0
//! The `nestbox` command line as a user meets it: bad input gets one
//! clear line and a non-zero status, and a guest that crashes ends the
//! process with a clear error, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn nestbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nestbox"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("cannot run nestbox")
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

#[test]
fn test_cli_missing_kernel_names_the_file() {
    let output = nestbox(&["run", "--kernel", "/nonexistent/vmlinuz"]);
    assert_clean_failure(&output, "/nonexistent/vmlinuz does not exist");
}

#[test]
fn test_cli_missing_file_to_open_is_named_before_any_window() {
    let output = nestbox(&["/nonexistent/install.iso"]);
    assert_clean_failure(&output, "No such command or file: /nonexistent/install.iso");
    let output = nestbox(&["gui", "/nonexistent/install.iso"]);
    assert_clean_failure(&output, "/nonexistent/install.iso");
    let output = nestbox(&["/"]);
    assert_clean_failure(&output, "/ is not a file");
}

#[test]
fn test_cli_missing_firmware_names_the_file() {
    let output = nestbox(&["run", "--bios", "/nonexistent/bios.bin"]);
    assert_clean_failure(
        &output,
        "Firmware image /nonexistent/bios.bin does not exist",
    );
}

fn host_memory_mib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
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
fn test_cli_memory_over_half_of_host_is_refused_with_cap() {
    let asked = format!("{}M", host_memory_mib() * 6 / 10);
    let output = nestbox(&["run", "--memory", &asked, "--firmware", "seabios"]);
    assert_clean_failure(
        &output,
        &format!("is more than half of this host's {} MiB", host_memory_mib()),
    );
}

#[test]
fn test_cli_memory_over_host_is_refused_even_with_overcommit() {
    let asked = format!("{}M", host_memory_mib());
    let output = nestbox(&[
        "run",
        "--memory",
        &asked,
        "--allow-overcommit",
        "--bios",
        "/x",
    ]);
    assert_clean_failure(&output, "is more than this host can give");
}

#[test]
fn test_cli_more_cpus_than_host_is_refused() {
    let output = nestbox(&["run", "--cpus", "100000", "--firmware", "seabios"]);
    assert_clean_failure(&output, "vCPUs is more than this host's");
}

#[test]
fn test_cli_nothing_to_boot_says_what_to_give() {
    let output = nestbox(&["run"]);
    assert_clean_failure(&output, "Nothing to boot");
}

#[test]
fn test_cli_text_file_as_kernel_is_not_a_kernel() {
    if !kvm_usable("test_cli_text_file_as_kernel_is_not_a_kernel") {
        return;
    }
    let kernel = std::env::temp_dir().join(format!("nestbox-cli-notkernel-{}", std::process::id()));
    std::fs::write(&kernel, "this is not a kernel\n".repeat(400)).unwrap();
    let output = nestbox(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory",
        "64M",
    ]);
    std::fs::remove_file(&kernel).unwrap();
    assert_clean_failure(&output, "is not a Linux kernel");
}

#[test]
fn test_cli_triple_fault_guest_exits_nonzero_with_one_line() {
    if !kvm_usable("test_cli_triple_fault_guest_exits_nonzero_with_one_line") {
        return;
    }
    let image = assemble_payload("triple_fault");
    let output = nestbox(&[
        "run",
        "--bios",
        image.to_str().unwrap(),
        "--memory",
        "64M",
        "--no-reboot",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_clean_failure(&output, "The guest crashed: triple fault on vCPU 0");
}

#[test]
fn test_cli_triple_fault_resets_the_machine_as_a_pc_does() {
    if !kvm_usable("test_cli_triple_fault_resets_the_machine_as_a_pc_does") {
        return;
    }
    let image = assemble_payload("triple_fault");
    let log = std::env::temp_dir().join(format!("nestbox-triple-{}.log", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_nestbox"))
        .args(["run", "--bios", image.to_str().unwrap(), "--memory", "64M"])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let reboots = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("guest reset: rebooting")
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while reboots() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);

    assert!(still_running, "the VM ended: {said}");
    assert!(
        said.matches("guest reset: rebooting").count() >= 3,
        "{said}"
    );
}

#[test]
fn test_cli_stdin_reaches_guest_serial_port() {
    if !kvm_usable("test_cli_stdin_reaches_guest_serial_port") {
        return;
    }
    let image = assemble_payload("serial_echo");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nestbox"))
        .args(["run", "--bios", image.to_str().unwrap(), "--memory", "64M"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"A").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    // The guest exits with the byte it read: (0x41 << 1) | 1.
    assert_eq!(output.status.code(), Some(0x83), "{}", stderr(&output));
}

fn kvm_usable(test: &str) -> bool {
    nestbox_tests::kvm_available(test)
}

/// Assembles tests/payloads/NAME.S into a flat firmware image.
fn assemble_payload(name: &str) -> PathBuf {
    let payloads = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/payloads");
    let dir = std::env::temp_dir().join(format!("nestbox-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let object = dir.join(format!("{name}.o"));
    let image = dir.join(format!("{name}.bin"));
    let status = Command::new("gcc")
        .args(["-m32", "-nostdlib", "-c", "-I"])
        .arg(&payloads)
        .arg(payloads.join(format!("{name}.S")))
        .arg("-o")
        .arg(&object)
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("ld")
        .args([
            "-m",
            "elf_i386",
            "-Ttext=0",
            "-e",
            "0",
            "--oformat",
            "binary",
            "-o",
        ])
        .arg(&image)
        .arg(&object)
        .status()
        .unwrap();
    assert!(status.success());
    image
}

#[test]
fn test_cli_window_without_a_graphical_session_says_so() {
    let output = Command::new(env!("CARGO_BIN_EXE_nestbox"))
        .args(["run", "--firmware", "seabios", "--display", "window"])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .expect("cannot run nestbox");
    assert_clean_failure(&output, "No graphical session");
}

#[test]
fn test_cli_screenshot_saves_the_seabios_screen_as_png() {
    let test = "test_cli_screenshot_saves_the_seabios_screen_as_png";
    if !kvm_usable(test) || !Path::new("/usr/share/seabios/vgabios-virtio.bin").exists() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("nestbox-shot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("screen.png");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nestbox"))
        .args(["run", "--firmware", "seabios", "--screenshot-after", "4"])
        .arg("--screenshot")
        .arg(&shot)
        .arg("--serial")
        .arg(dir.join("serial.log"))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !shot.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(shot.exists(), "no screenshot: {err}");
    assert!(err.contains("screenshot (720x400) saved to"), "{err}");
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // The IHDR chunk holds the size.
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 720);
    assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 400);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn test_cli_screenshot_after_the_vm_ended_says_so_and_fails() {
    let test = "test_cli_screenshot_after_the_vm_ended_says_so_and_fails";
    if !kvm_usable(test) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("nestbox-late-shot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("screen.png");
    // The halt payload ends the VM at once, long before the picture.
    let output = Command::new(env!("CARGO_BIN_EXE_nestbox"))
        .args(["run", "--screenshot-after", "30", "--serial", "/dev/null"])
        .arg("--bios")
        .arg(nestbox_tests::payload::image("halt"))
        .arg("--screenshot")
        .arg(&shot)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{err}");
    assert!(
        err.contains("no screenshot: the VM ended before --screenshot-after (30 s)"),
        "{err}"
    );
    assert!(!shot.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn test_cli_vhost_user_input_unknown_kind_lists_the_kinds() {
    let output = nestbox(&[
        "vhost-user-input",
        "--socket",
        "/tmp/x",
        "--kind",
        "joystick",
    ]);
    assert_clean_failure(&output, "keyboard, tablet, mouse");
}

#[test]
fn test_cli_vhost_user_input_listens_on_its_socket() {
    let socket =
        std::env::temp_dir().join(format!("nestbox-cli-input-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let mut child = Command::new(env!("CARGO_BIN_EXE_nestbox"))
        .args(["vhost-user-input", "--kind", "tablet", "--socket"])
        .arg(&socket)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !socket.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let listening = socket.exists();
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&socket);
    assert!(listening, "no socket: {}", stderr(&output));
}
