// SPDX-License-Identifier: Apache-2.0
//! Tier 4 harness: Linux's own drivers as the client of a Nestbox device.
//! QEMU under TCG (no KVM needed) boots the test guest with guest memory
//! in a shared memfd, and a `vhost-user-*-pci` device whose back-end is
//! Nestbox's device code on a UNIX socket. The guest's agent runs the test
//! named on the command line and prints `NESTBOX-RESULT` lines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{guest_dir, require_file};

/// QEMU's binary.
pub const QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// Guest RAM for tier-4 guests.
const MEMORY_MIB: u32 = 512;

/// The test guest's files, or None (with a printed reason) when missing.
pub fn guest_files(test: &str) -> Option<(PathBuf, PathBuf)> {
    require_file(test, Path::new(QEMU), "install qemu-system-x86")?;
    let hint = "run tests/guest/build.sh";
    let kernel = require_file(test, &guest_dir().join("vmlinux"), hint)?;
    let initrd = require_file(test, &guest_dir().join("initramfs.cpio.gz"), hint)?;
    Some((kernel, initrd))
}

/// The sound guest's files (Linux 6.12, whose Debian build has
/// snd-virtio, and an initramfs with aplay/arecord), or None (with a
/// printed reason) when missing.
pub fn sound_guest_files(test: &str) -> Option<(PathBuf, PathBuf)> {
    require_file(
        test,
        Path::new(QEMU),
        "install qemu-system-x86 (10.x from bookworm-backports)",
    )?;
    let hint = "run tests/guest/build.sh";
    let kernel = require_file(test, &guest_dir().join("vmlinuz-6.12"), hint)?;
    let initrd = require_file(test, &guest_dir().join("initramfs-snd.cpio.gz"), hint)?;
    Some((kernel, initrd))
}

/// A unique path in the temp directory for this test process.
pub fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("nestbox-{name}-{}", std::process::id()))
}

/// Kills QEMU if the test ends early.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boots the test guest under QEMU/TCG with `device_args` (which may
/// override `-display none`) and `cmdline` appended, until it powers off or `timeout` passes; returns its serial
/// output.
pub fn boot_guest(
    kernel: &Path,
    initrd: &Path,
    device_args: &[String],
    cmdline: &str,
    timeout: Duration,
) -> String {
    boot_guest_watching(kernel, initrd, device_args, cmdline, timeout, |_| {})
}

/// Like [`boot_guest`], and calls `watch` with the serial output so far
/// about every 100 ms while the guest runs (to act on what it prints).
pub fn boot_guest_watching(
    kernel: &Path,
    initrd: &Path,
    device_args: &[String],
    cmdline: &str,
    timeout: Duration,
    mut watch: impl FnMut(&str),
) -> String {
    let boot = [
        "-kernel".to_string(),
        kernel.display().to_string(),
        "-initrd".to_string(),
        initrd.display().to_string(),
        "-append".to_string(),
        format!("console=ttyS0 {cmdline}"),
    ];
    run_qemu(&boot, device_args, timeout, |so_far| {
        watch(so_far);
        false
    })
}

/// Boots QEMU's own firmware (Debian's SeaBIOS) under TCG with
/// `device_args`, its text console mirrored to the serial port, until
/// `done` says so (it sees the serial output so far about every 100 ms),
/// the machine powers off or `timeout` passes; returns the serial output.
pub fn boot_firmware_until(
    device_args: &[String],
    timeout: Duration,
    done: impl FnMut(&str) -> bool,
) -> String {
    // SeaBIOS's "sercon": COM1's port number as a little-endian u16.
    let sercon = temp_path("sercon-port");
    std::fs::write(&sercon, 0x3f8u16.to_le_bytes()).expect("cannot write the sercon file");
    let boot = [
        "-fw_cfg".to_string(),
        format!("name=etc/sercon-port,file={}", sercon.display()),
    ];
    let serial = run_qemu(&boot, device_args, timeout, done);
    let _ = std::fs::remove_file(&sercon);
    serial
}

/// Runs QEMU/TCG with shared guest memory, `boot_args` and `device_args`
/// until `done` (called with the serial output so far about every 100 ms)
/// returns true, QEMU exits or `timeout` passes; returns the serial output.
fn run_qemu(
    boot_args: &[String],
    device_args: &[String],
    timeout: Duration,
    mut done: impl FnMut(&str) -> bool,
) -> String {
    let serial = temp_path("qemu-serial.log");
    let _ = std::fs::remove_file(&serial);
    let memory = format!("memory-backend-memfd,id=mem,size={MEMORY_MIB}M,share=on");
    let child = Command::new(QEMU)
        .args(["-accel", "tcg", "-M", "pc", "-cpu", "max", "-smp", "1"])
        .args(["-m", &format!("{MEMORY_MIB}M"), "-object", &memory])
        .args(["-machine", "memory-backend=mem"])
        .args(boot_args)
        // Before the device arguments, which may choose another display.
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .args(device_args)
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start QEMU");
    let mut guard = ChildGuard(child);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = guard.0.try_wait() {
            break;
        }
        let so_far = std::fs::read(&serial).unwrap_or_default();
        if done(&String::from_utf8_lossy(&so_far)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(guard);
    let output = std::fs::read(&serial).unwrap_or_default();
    let _ = std::fs::remove_file(&serial);
    String::from_utf8_lossy(&output).into_owned()
}

/// The `key=value` fields of the agent's `NESTBOX-RESULT <test>` line.
pub fn result_fields(serial: &str, test: &str) -> Option<Vec<(String, String)>> {
    let prefix = format!("NESTBOX-RESULT {test} ");
    let line = serial
        .lines()
        .find_map(|l| l.trim_end().strip_prefix(&prefix))?;
    Some(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The key presses (true) and releases the guest's input agent printed as
/// `NESTBOX-RESULT key code=N value=V` lines, in order. The guest's input
/// core adds autorepeats (value 2) for keys it thinks are held; they are
/// left out.
pub fn key_results(serial: &str) -> Vec<(u16, bool)> {
    result_lines(serial, "key")
        .iter()
        .filter_map(|fields| {
            let field = |key: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
            };
            let code = field("code")?.parse().ok()?;
            match field("value")? {
                "1" => Some((code, true)),
                "0" => Some((code, false)),
                _ => None,
            }
        })
        .collect()
}

/// The `key=value` fields of every `NESTBOX-RESULT <test>` line, in order.
pub fn result_lines(serial: &str, test: &str) -> Vec<Vec<(String, String)>> {
    let prefix = format!("NESTBOX-RESULT {test} ");
    serial
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix(&prefix))
        .map(|line| {
            line.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// A Nestbox device served over vhost-user on a fresh socket, on a thread
/// that ends when QEMU disconnects.
pub struct VhostUserServer {
    socket: PathBuf,
    thread: std::thread::JoinHandle<Result<(), engine::vhost_user::VhostUserError>>,
    /// Another socket of the server's, removed with its own.
    also_remove: Option<PathBuf>,
}

impl VhostUserServer {
    /// Starts serving `device` and waits for its socket to appear.
    pub fn start<D: engine::devices::virtio::device_core::QueueDevice + 'static>(
        name: &str,
        device: D,
    ) -> Self {
        Self::start_with(name, move |socket| {
            engine::vhost_user::serve(socket, device)
        })
    }

    /// Starts `serve` on a fresh socket (it creates the socket) and waits
    /// for the socket to appear.
    pub fn start_with(
        name: &str,
        serve: impl FnOnce(&Path) -> Result<(), engine::vhost_user::VhostUserError> + Send + 'static,
    ) -> Self {
        let socket = temp_path(&format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let thread_socket = socket.clone();
        let thread = std::thread::spawn(move || serve(&thread_socket));
        while !socket.exists() && !thread.is_finished() {
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            socket,
            thread,
            also_remove: None,
        }
    }

    /// Starts serving a virtio-net device with MAC `mac` and its own
    /// `passt` (on a socket next to this one) as its host side, and waits
    /// for its socket to appear.
    pub fn start_net(name: &str, mac: [u8; 6]) -> Self {
        let passt_socket = temp_path(&format!("{name}.passt"));
        let _ = std::fs::remove_file(&passt_socket);
        let passt = engine::net::passt::Passt::start(&passt_socket).expect("cannot start passt");
        let sender = passt.sender().expect("cannot talk to passt");
        let net = engine::devices::virtio::net::Net::new(mac, Box::new(sender));
        let socket = temp_path(&format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let thread_socket = socket.clone();
        let thread =
            std::thread::spawn(move || engine::vhost_user::serve_net(&thread_socket, net, passt));
        while !socket.exists() && !thread.is_finished() {
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            socket,
            thread,
            also_remove: Some(passt_socket),
        }
    }

    /// QEMU arguments for a virtio-net-pci NIC on a vhost-user netdev on
    /// this socket.
    pub fn qemu_net_args(&self, mac: [u8; 6]) -> Vec<String> {
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        vec![
            "-chardev".to_string(),
            format!("socket,id=vu,path={}", self.socket.display()),
            "-netdev".to_string(),
            "vhost-user,id=net0,chardev=vu".to_string(),
            "-device".to_string(),
            format!("virtio-net-pci,netdev=net0,mac={mac}"),
        ]
    }

    /// The socket QEMU connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// QEMU arguments for a `vhost-user-<kind>-pci` device on this socket.
    pub fn qemu_args(&self, kind: &str) -> Vec<String> {
        vec![
            "-chardev".to_string(),
            format!("socket,id=vu,path={}", self.socket.display()),
            "-device".to_string(),
            format!("vhost-user-{kind}-pci,chardev=vu"),
        ]
    }

    /// Waits for the server to end; true if it ended cleanly.
    pub fn finish(self) -> bool {
        let result = self.thread.join();
        let _ = std::fs::remove_file(&self.socket);
        if let Some(path) = &self.also_remove {
            let _ = std::fs::remove_file(path);
        }
        if let Ok(Err(err)) = &result {
            eprintln!("vhost-user server: {err}");
        }
        matches!(result, Ok(Ok(())))
    }
}
