// SPDX-License-Identifier: Apache-2.0
//! A guest that reboots over and over costs `nestbox run` nothing that
//! lasts: after thousands of resets (tests/payloads/reset_loop.S resets
//! as soon as it starts), its open files, threads and resident memory are
//! where they were after the first few hundred. Each reboot used to leak
//! the old machine (its devices, eventfds, VM fd and guest memory) through
//! a reference cycle between the PCI root and the port bus.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nestbox_tests::{kvm_available, payload};

mod common;

use common::Env;

/// Open fds, threads and resident KiB of process `pid`.
fn usage(pid: u32) -> (usize, usize, u64) {
    let count = |dir: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{dir}"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (count("fd"), count("task"), rss)
}

/// How many reboots `nestbox run` has logged so far.
fn reboots(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("guest reset: rebooting")
        .count()
}

#[test]
fn test_thousands_of_guest_reboots_leave_fds_threads_and_memory_flat() {
    let test = "test_thousands_of_guest_reboots_leave_fds_threads_and_memory_flat";
    if !kvm_available(test) {
        return;
    }
    let env = Env::new("reboots");
    let log = env.0.join("run.log");
    let mut child = env
        .command(&["run", "--memory", "64M", "--serial", "/dev/null", "--bios"])
        .arg(payload::image("reset_loop"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("cannot run nestbox");
    let wait_for = |count: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while reboots(&log) < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        reboots(&log) >= count
    };

    let warmed = wait_for(300);
    let first = usage(child.id());
    let many = wait_for(3_000);
    let last = usage(child.id());
    let _ = child.kill();
    let _ = child.wait();

    assert!(warmed && many, "too few reboots: {}", reboots(&log));
    let (fds_before, threads_before, rss_before) = first;
    let (fds_after, threads_after, rss_after) = last;
    assert!(
        fds_after <= fds_before + 4,
        "open fds grew from {fds_before} to {fds_after}"
    );
    assert!(
        threads_after <= threads_before + 2,
        "threads grew from {threads_before} to {threads_after}"
    );
    assert!(
        rss_after <= rss_before + 16 * 1024,
        "resident memory grew from {rss_before} KiB to {rss_after} KiB"
    );
}
