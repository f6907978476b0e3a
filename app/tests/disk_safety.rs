// SPDX-License-Identifier: Apache-2.0
//! A guest's writes that it never flushed are in its qcow2 image after
//! the VM ends, however it ends short of SIGKILL: `nestbox run` ended by
//! SIGTERM, SIGINT, SIGHUP, Ctrl-A x or a guest reset under
//! `--no-reboot`; a library VM ended by `stop --force`, SIGTERM to its
//! worker or `nestbox kill`. Writes the guest flushed survive SIGKILL of
//! the worker. The guest is a boot sector
//! (tests/payloads/cluster_writes.S) that SeaBIOS loads from the image
//! and that writes one sector into each of 24 new clusters without a
//! flush, as DOS and most older systems write; `qemu-img check` must find
//! the image clean and every write must be there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nestbox_tests::payload;

mod common;

use common::{Env, seabios_vm_usable};

/// The end where the guest resets the machine under `--no-reboot`.
const RESET_END: &str = "guest reset (--no-reboot)";
/// Clusters the boot sector writes (CLUSTERS in cluster_writes.S).
const CLUSTERS: usize = 24;
/// Sectors in one 64 KiB cluster.
const SECTORS_PER_CLUSTER: usize = 128;

/// A 4 MiB qcow2 image whose first sector is the boot sector.
fn make_image(dir: &Path, boot_sector: &[u8]) -> PathBuf {
    let raw = dir.join("disk.raw");
    let mut bytes = vec![0u8; 4 << 20];
    bytes[..512].copy_from_slice(boot_sector);
    std::fs::write(&raw, bytes).unwrap();
    let image = dir.join("disk.qcow2");
    qemu_img(
        &["convert", "-q", "-f", "raw", "-O", "qcow2"],
        &[&raw, &image],
    );
    image
}

fn qemu_img(args: &[&str], paths: &[&Path]) -> std::process::Output {
    Command::new("qemu-img")
        .args(args)
        .args(paths)
        .output()
        .expect("qemu-img")
}

/// Which of the boot sector's writes the image holds, and what
/// `qemu-img check` says of it (None when it is clean).
fn check_image(image: &Path, boot_sector: &[u8]) -> (Vec<usize>, Option<String>) {
    let check = qemu_img(&["check", "-q"], &[image]);
    let problems = (!check.status.success()).then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        )
    });
    let raw = image.with_extension("back.raw");
    let converted = qemu_img(
        &["convert", "-q", "-f", "qcow2", "-O", "raw"],
        &[image, &raw],
    );
    assert!(converted.status.success(), "qemu-img convert failed");
    let bytes = std::fs::read(&raw).unwrap();
    let present = (1..=CLUSTERS)
        .filter(|k| {
            let at = k * SECTORS_PER_CLUSTER * 512;
            let sector = &bytes[at..at + 512];
            sector[..16] == boot_sector[..16] && sector[510..] == [0x55, 0xaa]
        })
        .collect();
    (present, problems)
}

/// What is wrong with `image` after the VM ended by `end`: missing writes,
/// or what `qemu-img check` found.
fn image_failures(end: &str, image: &Path, boot_sector: &[u8]) -> Vec<String> {
    let (present, problems) = check_image(image, boot_sector);
    let mut failures = Vec::new();
    if present.len() != CLUSTERS {
        failures.push(format!(
            "{end}: {} of {CLUSTERS} writes in the image ({present:?})",
            present.len()
        ));
    }
    if let Some(problems) = problems {
        failures.push(format!("{end}: qemu-img check: {problems}"));
    }
    failures
}

/// Runs the boot sector under `nestbox run` until it has written, then
/// ends it with `end`; the serial output on failure.
fn run_and_end(env: &Env, image: &Path, end: &str) -> Result<(), String> {
    let serial = env.0.join(format!("serial-{end}.log"));
    // The serial console on the terminal (stdout into a file), so that
    // Ctrl-A x typed on stdin quits as it does for a user.
    let reset = end == RESET_END;
    let mut child = env
        .command(&[
            "run",
            "--firmware",
            "seabios",
            "--memory",
            "64M",
            "--serial",
            "stdio",
        ])
        .args(reset.then_some("--no-reboot"))
        .arg("--disk")
        .arg(image)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&serial).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run nestbox");
    let text = || String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    // A guest that resets when done may not get its last line out (the
    // reset comes right after): the VM's end is the sign there.
    let done = |child: &mut std::process::Child| {
        text().contains("NESTBOX-WRITES-DONE")
            || (reset && child.try_wait().ok().flatten().is_some())
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(&mut child) && Instant::now() < deadline {
        if text().contains("NESTBOX-WRITE-FAILED") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !done(&mut child) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "the boot sector did not finish its writes:\n{}",
            text()
        ));
    }
    let pid = child.id() as i32;
    let signal = match end {
        "SIGTERM" => Some(libc::SIGTERM),
        "SIGINT" => Some(libc::SIGINT),
        "SIGHUP" => Some(libc::SIGHUP),
        _ => None,
    };
    match signal {
        // The guest resets itself, which ends the VM under --no-reboot.
        _ if reset => {}
        // SAFETY: kill(2) on our own child's pid, which has not been
        // waited for, so it cannot have been reused.
        Some(signal) => unsafe {
            libc::kill(pid, signal);
        },
        // Ctrl-A x on the terminal, as a user quits.
        None => child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(&[0x01, b'x'])
            .unwrap(),
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("nestbox run did not end after {end}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn test_unflushed_qcow2_writes_survive_every_end_of_nestbox_run() {
    let test = "test_unflushed_qcow2_writes_survive_every_end_of_nestbox_run";
    if !seabios_vm_usable(test) {
        return;
    }
    let env = Env::new("disk-safety");
    let mut failures = Vec::new();
    for end in ["SIGTERM", "SIGINT", "SIGHUP", "Ctrl-A x", RESET_END] {
        // The reset end's boot sector resets the machine when it is done.
        let name = if end == RESET_END {
            "cluster_writes_reset"
        } else {
            "cluster_writes"
        };
        let boot_sector = std::fs::read(payload::image(name)).unwrap();
        assert_eq!(boot_sector.len(), 512);
        let dir = env.0.join(end.replace([' ', '(', ')'], "-"));
        std::fs::create_dir_all(&dir).unwrap();
        let image = make_image(&dir, &boot_sector);
        if let Err(why) = run_and_end(&env, &image, end) {
            failures.push(format!("{end}: {why}"));
            continue;
        }
        failures.extend(image_failures(end, &image, &boot_sector));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The pid of VM `id`'s worker, from its socket's peer credentials.
fn worker_pid(env: &Env, id: &str) -> Option<i32> {
    use std::os::unix::net::UnixStream;
    let stream = UnixStream::connect(env.socket(id)).ok()?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a ucred of `len` bytes at `cred`.
    let got = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    (got == 0 && cred.pid > 0).then_some(cred.pid)
}

#[test]
fn test_unflushed_qcow2_writes_survive_a_library_vm_stopped_or_terminated() {
    let test = "test_unflushed_qcow2_writes_survive_a_library_vm_stopped_or_terminated";
    if !seabios_vm_usable(test) {
        return;
    }
    let env = Env::new("disk-safety-lib");
    let boot_sector = std::fs::read(payload::image("cluster_writes")).unwrap();

    let mut failures = Vec::new();
    for end in ["stop --force", "SIGTERM to the worker", "nestbox kill"] {
        let dir = env.0.join(end.replace(' ', "-"));
        std::fs::create_dir_all(&dir).unwrap();
        let image = make_image(&dir, &boot_sector);
        // The generic BIOS profile puts the disk on IDE.
        let id = env.create_bios_vm("writer", &image);
        env.start_headless(&id);
        let serial = env.wait_serial(&id, &["NESTBOX-WRITES-DONE"], Duration::from_secs(120));
        if !serial.contains("NESTBOX-WRITES-DONE") {
            failures.push(format!("{end}: the boot sector did not finish:\n{serial}"));
            let _ = env.nestbox(&["kill", &id]);
            continue;
        }
        if end == "stop --force" {
            // The boot sector does not answer the power button: the plug
            // is pulled after 1 s.
            let _ = env.nestbox(&["stop", &id, "--timeout", "1", "--force"]);
        } else if end == "nestbox kill" {
            let _ = env.nestbox(&["kill", &id]);
        } else if let Some(pid) = worker_pid(&env, &id) {
            // SAFETY: kill(2) on the worker's pid, read from its socket
            // while it runs.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        } else {
            failures.push(format!("{end}: no worker pid"));
        }
        let socket = env.socket(&id);
        let deadline = Instant::now() + Duration::from_secs(30);
        while socket.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if socket.exists() {
            failures.push(format!("{end}: the worker did not end"));
            let _ = env.nestbox(&["kill", &id]);
            continue;
        }
        failures.extend(image_failures(end, &image, &boot_sector));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn test_flushed_writes_survive_sigkill_of_the_worker() {
    let test = "test_flushed_writes_survive_sigkill_of_the_worker";
    if !seabios_vm_usable(test) {
        return;
    }
    let env = Env::new("disk-safety-kill");
    // Each write is followed by ATA FLUSH CACHE, so each is durable once
    // the next starts; nothing runs at the end but the kernel's clean-up.
    let boot_sector = std::fs::read(payload::image("cluster_writes_flushed")).unwrap();
    let image = make_image(&env.0, &boot_sector);
    let id = env.create_bios_vm("flusher", &image);
    env.start_headless(&id);
    let serial = env.wait_serial(
        &id,
        &["NESTBOX-WRITES-DONE", "NESTBOX-WRITE-FAILED"],
        Duration::from_secs(120),
    );
    assert!(serial.contains("NESTBOX-WRITES-DONE"), "{serial}");
    let pid = worker_pid(&env, &id).expect("no worker pid");

    // SAFETY: kill(2) on the worker's pid, read from its socket while it runs.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }

    let failures = image_failures("SIGKILL", &image, &boot_sector);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
