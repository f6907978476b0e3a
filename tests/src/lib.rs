// SPDX-License-Identifier: Apache-2.0
//! Helpers for tests that boot real guests under Nestbox: deciding whether
//! KVM tests run or skip, capturing serial output and waiting for a marker,
//! and a guard that stops a VM even when an assertion fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use engine::vm::DiskConfig;
use engine::{BootSource, Outcome, VmBuilder, VmConfig, VmHandle, VmIo};

pub mod gpu;
pub mod linux_guest;
pub mod payload;
pub mod qemu;
pub mod xvfb;

/// Debian's SeaBIOS (package `seabios`).
pub const SEABIOS: &str = "/usr/share/seabios/bios.bin";

/// A VM booting firmware `bios` with its console mirrored to the serial
/// port: 128 MiB, one vCPU and no devices; callers add theirs.
pub fn firmware_vm(bios: PathBuf) -> VmConfig {
    VmConfig {
        console: None,
        input: None,
        memory_bytes: 128 << 20,
        vcpus: 1,
        boot: BootSource::Firmware {
            path: bios,
            serial_console: true,
        },
        disks: Vec::new(),
        display: None,
        network: None,
        sound: None,
        rng: false,
    }
}

/// Boots Debian's SeaBIOS with `disks` until the VM ends (120 s at most):
/// its outcome and serial output, or None where the test skips (no KVM,
/// no SeaBIOS).
pub fn boot_seabios_with(test: &str, disks: Vec<DiskConfig>) -> Option<(Outcome, String)> {
    if !kvm_available(test) {
        return None;
    }
    let bios = require_file(test, Path::new(SEABIOS), "install Debian's seabios")?;
    let serial = Capture::new();
    let config = VmConfig {
        disks,
        ..firmware_vm(bios)
    };
    let io = VmIo {
        serial: serial.writer(),
        debugcon: None,
    };
    let outcome = VmGuard::start(VmBuilder::new(config, io)).wait(Duration::from_secs(120));
    Some((outcome, serial.text()))
}

/// Debian's xorriso (package `xorriso`).
pub const XORRISO: &str = "/usr/bin/xorriso";

/// Makes `iso`, a CD image Debian's xorriso makes bootable (El Torito, no
/// emulation) from a folder `work`: its boot image is the payload
/// `boot_sector` (prints `NESTBOX-BOOT-SECTOR-OK` on COM1 and exits with
/// 0x10) padded to one CD sector. None where the test skips (no xorriso).
pub fn bootable_cd(test: &str, work: &Path, iso: &Path) -> Option<()> {
    let xorriso = require_file(test, Path::new(XORRISO), "install Debian's xorriso")?;
    std::fs::create_dir_all(work).unwrap();
    let mut boot_image = std::fs::read(payload::image("boot_sector")).unwrap();
    boot_image.resize(2048, 0);
    std::fs::write(work.join("boot.img"), boot_image).unwrap();
    std::fs::write(work.join("README.TXT"), "a disc made for a Nestbox test\n").unwrap();
    let made = Command::new(xorriso)
        .args(["-as", "mkisofs", "-quiet", "-no-emul-boot"])
        .args(["-boot-load-size", "4", "-b", "boot.img", "-o"])
        .arg(iso)
        .arg(work)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&made.stderr);
    assert!(made.status.success(), "xorriso failed: {log}");
    Some(())
}

/// Where `tests/guest/build.sh` put the test guest.
pub fn guest_dir() -> PathBuf {
    match std::env::var_os("NESTBOX_GUEST_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/guest"),
    }
}

/// True when KVM tests must run: `NESTBOX_REQUIRE_KVM=1` (set by CI).
pub fn kvm_required() -> bool {
    std::env::var("NESTBOX_REQUIRE_KVM").is_ok_and(|v| v == "1")
}

/// Reports that `test` cannot run here, for a reason no set-up fixes
/// (e.g. the host has no hardware virtualization): one line
/// `SKIPPED: <test>: <why>` on stderr, written past the test harness's
/// capture so that `.ci/run` sees it and counts the test as skipped, not
/// passed. The test then returns.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let line = format!("SKIPPED: {test}: {}\n", why.replace('\n', " "));
    // One write, so lines of parallel tests do not mix.
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Reports that `test` cannot run because something it needs is missing
/// (`/dev/kvm`, a tool, a built guest): [`skipped`], or a panic under
/// `NESTBOX_REQUIRE_KVM=1`, where a skip would hide a broken set-up.
pub fn skipped_missing(test: &str, why: &str) {
    if kvm_required() {
        panic!("{test}: NESTBOX_REQUIRE_KVM=1 but {why}");
    }
    skipped(test, why);
}

/// Returns true if `/dev/kvm` can be used. Otherwise reports the skip
/// ([`skipped_missing`]) and returns false.
pub fn kvm_available(test: &str) -> bool {
    match engine::host::open_kvm() {
        Ok(_) => true,
        Err(e) => {
            skipped_missing(test, &format!("KVM is unusable: {e}"));
            false
        }
    }
}

/// Returns `path` if it exists; otherwise reports the skip
/// ([`skipped_missing`]) and returns None.
pub fn require_file(test: &str, path: &Path, hint: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path.to_path_buf());
    }
    skipped_missing(test, &format!("{} is missing ({hint})", path.display()));
    None
}

#[derive(Default)]
struct CaptureState {
    bytes: Vec<u8>,
}

/// A writer that keeps everything written and lets a test wait for text.
#[derive(Clone, Default)]
pub struct Capture {
    inner: Arc<(Mutex<CaptureState>, Condvar)>,
}

impl Capture {
    /// An empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything captured so far, lossily decoded.
    pub fn text(&self) -> String {
        let state = self.inner.0.lock().unwrap();
        String::from_utf8_lossy(&state.bytes).into_owned()
    }

    /// Everything captured so far, as raw bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.inner.0.lock().unwrap().bytes.clone()
    }

    /// Waits until the output contains `needle`; false on timeout.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_after(0, needle, timeout).is_some()
    }

    /// How many bytes were captured so far.
    pub fn len(&self) -> usize {
        self.inner.0.lock().unwrap().bytes.len()
    }

    /// Whether nothing was captured yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until `needle` appears in the output after byte `from`; the
    /// output from `from` to the end of the needle, or None on timeout.
    pub fn wait_for_after(&self, from: usize, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.inner;
        let mut state = lock.lock().unwrap();
        loop {
            let tail = state.bytes.get(from..).unwrap_or_default();
            let text = String::from_utf8_lossy(tail);
            if let Some(at) = text.find(needle) {
                return Some(text[..at + needle.len()].to_string());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state = cond.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// A boxed writer feeding this capture.
    pub fn writer(&self) -> Box<dyn Write + Send> {
        Box::new(self.clone())
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (lock, cond) = &*self.inner;
        lock.lock().unwrap().bytes.extend_from_slice(buf);
        cond.notify_all();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Stops the VM when dropped, so a failed assertion never leaves it running.
pub struct VmGuard {
    handle: Option<VmHandle>,
}

impl VmGuard {
    /// Starts the VM built by `builder`.
    pub fn start(builder: VmBuilder) -> Self {
        Self {
            handle: Some(builder.start().expect("VM failed to start")),
        }
    }

    /// The running VM.
    pub fn handle(&self) -> &VmHandle {
        self.handle.as_ref().expect("VM already stopped")
    }

    /// Waits for the VM to stop by itself, up to `timeout`; stops it after.
    pub fn wait(mut self, timeout: Duration) -> Outcome {
        let handle = self.handle.take().expect("VM already waited for");
        let control = handle.control();
        let waiter = std::thread::spawn(move || handle.wait());
        if control.wait_stop(timeout).is_none() {
            control.request_stop(Outcome::HostError(format!(
                "test timeout after {timeout:?}"
            )));
        }
        waiter.join().expect("VM wait panicked")
    }

    /// Stops the VM now and returns its outcome.
    pub fn stop(mut self) -> Outcome {
        let handle = self.handle.take().expect("VM already stopped");
        handle.stop();
        handle.wait()
    }
}

impl Drop for VmGuard {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop();
            handle.wait();
        }
    }
}

/// Removes ANSI escape sequences (iPXE colours its text and moves the
/// cursor; SeaBIOS's serial console forwards those as escapes).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // Parameters, then one final byte in 0x40..=0x7e.
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

/// The host's default gateway and the IPv4 address of its interface
/// (what passt hands the guest), from `ip`.
pub fn host_route() -> Option<(String, String)> {
    let route = Command::new("ip")
        .args(["-4", "-o", "route", "show", "default"])
        .output()
        .ok()?;
    let route = String::from_utf8_lossy(&route.stdout).into_owned();
    let words: Vec<&str> = route.split_whitespace().collect();
    let after = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
            .map(|w| w.to_string())
    };
    let gateway = after("via")?;
    let dev = after("dev")?;
    let addr = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &dev])
        .output()
        .ok()?;
    let addr = String::from_utf8_lossy(&addr.stdout).into_owned();
    let address = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)?
        .split('/')
        .next()?
        .to_string();
    Some((address, gateway))
}
