// SPDX-License-Identifier: Apache-2.0
//! The small test kernel (tier 4.5, tests/guest/kernel/) as a user runs
//! it: under `nestbox run --kernel`, where a shell command typed on the
//! terminal comes back and a guest reboot boots it again; and as a library
//! VM of the `linux-kernel` profile, which `nestbox stop` (the ACPI power
//! button) powers off cleanly within 30 s.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nestbox_tests::kvm_available;
use nestbox_tests::linux_guest::{AGENT_CMDLINE, BOOT_TIMEOUT, small_guest_files};

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

/// The lines a child prints, collected on a thread.
struct Lines {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    /// Waits for a line containing `needle` after those already seen.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(_) => {
                    return Err(format!(
                        "no line with {needle:?} in {timeout:?}; output:\n{}",
                        self.seen.join("\n")
                    ));
                }
            }
        }
    }
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
        .command(&[
            "run",
            "--memory",
            "256M",
            "--cpus",
            "2",
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--cmdline",
            AGENT_CMDLINE,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run nestbox");
    let stdout = child.stdout.take().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let guard = RunGuard(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Lines {
        rx,
        seen: Vec::new(),
    };

    let first = lines.wait_for("NESTBOX-AGENT-READY", BOOT_TIMEOUT);
    let first = first.and_then(|_| {
        // The agent runs the rest of the line as shell; the arithmetic is
        // the guest's, so the answer cannot be the typed line's echo.
        writeln!(stdin, "sh echo answer-$((6 * 7))").unwrap();
        lines.wait_for("answer-42", Duration::from_secs(120))
    });
    let rebooted = first.clone().and_then(|_| {
        writeln!(stdin, "reboot").unwrap();
        lines.wait_for("NESTBOX-AGENT-READY", BOOT_TIMEOUT)
    });
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
    let ready_lines = lines
        .seen
        .iter()
        .filter(|l| l.contains("NESTBOX-GUEST-READY"))
        .count();
    rebooted.unwrap();
    assert_eq!(
        ready_lines,
        2,
        "one boot, then the reboot's:\n{}",
        lines.seen.join("\n")
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
    let id = env.create_and_start(&[
        "--name",
        "small linux",
        "--profile",
        "linux-kernel",
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
    ]);
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
