// SPDX-License-Identifier: Apache-2.0
//! The small test kernel (tier 4.5, tests/guest/kernel/) as a user runs
//! it: under `nestbox run --kernel`, where a shell command typed on the
//! terminal comes back and a guest reboot boots it again; and as a library
//! VM of the `linux-kernel` profile, which `nestbox stop` (the ACPI power
//! button) powers off cleanly within 30 s.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nestbox_tests::linux_guest::{AGENT_CMDLINE, BOOT_TIMEOUT, small_guest_files};
use nestbox_tests::{Capture, kvm_available};

mod common;

use common::Env;

/// Kills `nestbox run` if the test ends early.
struct RunGuard(Child);

impl Drop for RunGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The flags that give a VM the small guest (the same for `run` and
/// `create`): its kernel, initramfs and agent command line, 256 MiB and
/// 2 vCPUs.
fn guest_args<'a>(kernel: &'a Path, initrd: &'a Path) -> [&'a str; 10] {
    [
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--cmdline",
        AGENT_CMDLINE,
        "--memory",
        "256M",
        "--cpus",
        "2",
    ]
}

/// A private environment and the small guest's kernel and initramfs, or
/// None where the test skips.
fn set_up(test: &str, tag: &str) -> Option<(Env, PathBuf, PathBuf)> {
    if !kvm_available(test) {
        return None;
    }
    let (kernel, initrd) = small_guest_files(test)?;
    Some((Env::new(tag), kernel, initrd))
}

#[test]
fn test_nestbox_run_boots_the_small_kernel_answers_a_shell_command_and_reboots() {
    let test = "test_nestbox_run_boots_the_small_kernel_answers_a_shell_command_and_reboots";
    let Some((env, kernel, initrd)) = set_up(test, "run-linux") else {
        return;
    };
    let mut child = env
        .command(&[&["run"][..], &guest_args(&kernel, &initrd)].concat())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run nestbox");
    let mut stdout = child.stdout.take().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let guard = RunGuard(child);
    let output = Capture::new();
    let mut sink = output.clone();
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut sink));
    // Waits for `needle` after byte `from` of the output; where it ends.
    let wait = |from: usize, needle: &str, timeout: Duration| {
        output
            .wait_for_after(from, needle, timeout)
            .map(|seen| from + seen.len())
            .ok_or_else(|| format!("no {needle:?} in {timeout:?}; output:\n{}", output.text()))
    };

    let first = wait(0, "NESTBOX-AGENT-READY", BOOT_TIMEOUT);
    let first = first.and_then(|at| {
        // The agent runs the rest of the line as shell; the arithmetic is
        // the guest's, so the answer cannot be the typed line's echo.
        writeln!(stdin, "sh echo answer-$((6 * 7))").unwrap();
        wait(at, "answer-42", Duration::from_secs(120))
    });
    let rebooted = first.clone().and_then(|at| {
        writeln!(stdin, "reboot").unwrap();
        wait(at, "NESTBOX-AGENT-READY", BOOT_TIMEOUT)
    });
    let ready_lines = output.text().matches("NESTBOX-GUEST-READY").count();
    let ended = rebooted.clone().and_then(|_| {
        writeln!(stdin, "poweroff").unwrap();
        let mut guard = guard;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = guard.0.try_wait().unwrap() {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err("nestbox run did not exit after the guest powered off".to_string());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });

    first.unwrap();
    rebooted.unwrap();
    assert_eq!(
        ready_lines,
        2,
        "one boot, then the reboot's:\n{}",
        output.text()
    );
    let status = ended.unwrap();
    assert!(status.success(), "nestbox run exited with {status}");
}

#[test]
fn test_library_vm_of_the_linux_kernel_profile_boots_and_stops_by_power_button() {
    let test = "test_library_vm_of_the_linux_kernel_profile_boots_and_stops_by_power_button";
    let Some((env, kernel, initrd)) = set_up(test, "lib-linux") else {
        return;
    };
    let id = env.create_and_start(
        &[
            &["--name", "small linux", "--profile", "linux-kernel"][..],
            &guest_args(&kernel, &initrd),
        ]
        .concat(),
    );
    let serial_log = env.vm_dir(&id).join("serial.log");
    let serial =
        || String::from_utf8_lossy(&std::fs::read(&serial_log).unwrap_or_default()).into_owned();
    let deadline = Instant::now() + BOOT_TIMEOUT;
    while !serial().contains("NESTBOX-AGENT-READY") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        serial().contains("NESTBOX-AGENT-READY"),
        "the library VM did not boot to the agent:\n{}",
        serial()
    );

    let pressed = Instant::now();
    let stopped = env.nestbox(&["stop", &id, "--timeout", "30"]);
    let took = pressed.elapsed();

    assert!(
        stopped.status.success(),
        "nestbox stop: {}\nserial:\n{}",
        String::from_utf8_lossy(&stopped.stderr),
        serial()
    );
    assert!(took <= Duration::from_secs(30), "stop took {took:?}");
    let text = serial();
    assert!(text.contains("NESTBOX-POWER-BUTTON"), "{text}");
    assert!(text.contains("reboot: Power down"), "{text}");
    // The worker is gone with its VM.
    let socket = env.socket(&id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!socket.exists(), "the worker's socket is still there");
    let list = env.nestbox(&["list"]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let line = list
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_default();
    assert!(line.contains("stopped"), "{list}");
}
