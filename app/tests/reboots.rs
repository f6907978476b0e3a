// SPDX-License-Identifier: Apache-2.0
//! A guest that reboots over and over costs the VMM nothing that lasts:
//! after 10,000 boots that each write 32 MiB of guest RAM and reset
//! (tests/payloads/reset_touch.S as the firmware, under `nestbox run` and
//! in a library VM's worker), and after boots through SeaBIOS that do the
//! same (the boot sector reset_touch_boot.S), open files, threads and
//! resident memory are where they were after the first few. Each reboot
//! used to leak the old machine (its devices, eventfds, VM fd and guest
//! memory) through a reference cycle between the PCI root and the port
//! bus.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nestbox_tests::{kvm_available, payload};

mod common;

use common::{Env, seabios_vm_usable};

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

/// Usage of process `pid` after `warm` reboots and after `total`, as
/// counted in `log`; panics if the guest did not reboot that often.
fn usage_across_reboots(
    pid: u32,
    log: &Path,
    warm: usize,
    total: usize,
) -> ((usize, usize, u64), (usize, usize, u64)) {
    let wait_for = |count: usize| {
        // A touching boot takes ~60 ms alone on software-only KVM, ~130 ms
        // beside the other test (23 minutes for both); SeaBIOS boots take
        // seconds.
        let allowed = Duration::from_millis(300 * count as u64).max(Duration::from_secs(300));
        let deadline = Instant::now() + allowed;
        while reboots(log) < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        reboots(log) >= count
    };
    // A machine's fds and threads come and go as its guest brings devices
    // up: the least of each between machines is what stays. The look
    // spans at least two whole reboots (and two seconds), sampled every
    // millisecond, so it sees the moment between two machines whether a
    // boot takes 60 ms or, through SeaBIOS, seconds.
    let settled = || {
        let mut least = usage(pid);
        let from = reboots(log);
        let at_least = Instant::now() + Duration::from_secs(2);
        let at_most = Instant::now() + Duration::from_secs(120);
        while (Instant::now() < at_least || reboots(log) < from + 2) && Instant::now() < at_most {
            let (fds, threads, rss) = usage(pid);
            least = (least.0.min(fds), least.1.min(threads), least.2.min(rss));
            std::thread::sleep(Duration::from_millis(1));
        }
        least
    };
    let warmed = wait_for(warm);
    let first = settled();
    let many = wait_for(total);
    let last = settled();
    assert!(warmed && many, "too few reboots: {}", reboots(log));
    (first, last)
}

/// Fails unless fds, threads and resident memory stayed within a small
/// constant (`rss_slack_kib` for memory) from `first` to `last`.
fn assert_flat(first: (usize, usize, u64), last: (usize, usize, u64), rss_slack_kib: u64) {
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
        rss_after <= rss_before + rss_slack_kib,
        "resident memory grew from {rss_before} KiB to {rss_after} KiB"
    );
}

/// Starts library VM `id` headless with its worker logging each reboot to
/// `worker.log` (it inherits RUST_LOG); returns the worker's pid.
fn start_logged_worker(env: &Env, id: &str) -> u32 {
    let started = env
        .command(&["start", id, "--headless"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "nestbox start: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    std::fs::read_to_string(env.vm_dir(id).join("worker.lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `nestbox run` with `args`, its log in `log`.
fn run_logged(env: &Env, args: &[&str], log: &Path) -> std::process::Child {
    env.command(&["run", "--memory", "64M", "--serial", "/dev/null"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("cannot run nestbox")
}

/// Resets each test waits for: the first `WARM` settle the process, the
/// rest must leave it where it was.
const WARM: usize = 300;
const RESETS: usize = 10_000;

#[test]
fn test_ten_thousand_reboots_that_each_touch_32_mib_leave_nestbox_run_flat() {
    let test = "test_ten_thousand_reboots_that_each_touch_32_mib_leave_nestbox_run_flat";
    if !kvm_available(test) {
        return;
    }
    let env = Env::new("reboots");
    let log = env.0.join("run.log");
    let image = payload::image("reset_touch");
    let mut child = run_logged(&env, &["--bios", image.to_str().unwrap()], &log);

    let (first, last) = usage_across_reboots(child.id(), &log, WARM, RESETS);
    let _ = child.kill();
    let _ = child.wait();

    // A machine kept after its reboot would add 32 MiB each time.
    assert_flat(first, last, 16 * 1024);
}

#[test]
fn test_ten_thousand_reboots_that_each_touch_32_mib_leave_a_library_worker_flat() {
    let test = "test_ten_thousand_reboots_that_each_touch_32_mib_leave_a_library_worker_flat";
    if !kvm_available(test) {
        return;
    }
    let env = Env::new("reboots-worker");
    let id = env.create_vm(&[
        "--name",
        "rebooter",
        "--profile",
        "generic-bios",
        "--memory",
        "64M",
        "--new-disk",
        "1M",
    ]);
    // A hand-edited vm.toml boots the payload as its firmware.
    let image = payload::image("reset_touch");
    let file = env.vm_dir(&id).join("vm.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = text.replace(
        "firmware = \"seabios\"",
        &format!("bios = {:?}", image.to_str().unwrap()),
    );
    assert_ne!(text, edited, "no firmware line in:\n{text}");
    std::fs::write(&file, edited).unwrap();
    let pid = start_logged_worker(&env, &id);
    let dir = env.vm_dir(&id);

    let (first, last) = usage_across_reboots(pid, &dir.join("worker.log"), WARM, RESETS);
    let _ = env.nestbox(&["kill", &id]);

    assert_flat(first, last, 16 * 1024);
}

#[test]
fn test_reboots_through_seabios_leave_a_library_worker_flat() {
    let test = "test_reboots_through_seabios_leave_a_library_worker_flat";
    if !seabios_vm_usable(test) {
        return;
    }
    let env = Env::new("reboots-seabios");
    // Each boot goes through SeaBIOS (its tables, option ROMs and boot
    // menu) to a boot sector that writes 32 MiB and resets.
    let disk = env.boot_disk("reset_touch_boot");
    let id = env.create_bios_vm("rebooter", &disk);
    let pid = start_logged_worker(&env, &id);
    let dir = env.vm_dir(&id);

    let (first, last) = usage_across_reboots(pid, &dir.join("worker.log"), 3, 20);
    let _ = env.nestbox(&["kill", &id]);

    assert_flat(first, last, 64 * 1024);
}
