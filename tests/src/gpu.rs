// SPDX-License-Identifier: Apache-2.0
//! The host side of a virtio-gpu for tests that boot guests: a
//! [`ScanoutSink`] that draws scanout 0 into a [`SharedFramebuffer`] (the
//! framebuffer the Nestbox window shows), converting the device's pixel
//! formats to the framebuffer's B, G, R, X; and QEMU's D-Bus display, through
//! which the host asks for a new display size: that is how a host-side
//! resize reaches a guest behind QEMU's `vhost-user-gpu-pci`, whose
//! front-end owns the displays; and what the guest's `nestbox.test=gpu`
//! draws (colour bands), to check a screen against.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use display::framebuffer::{PixelFormat as FbFormat, SharedFramebuffer};
use display::rect::Rect as FbRect;
use engine::devices::virtio::gpu::{CursorUpdate, FrameUpdate, ScanoutSink};

/// Draws scanout 0 into a shared framebuffer, setting its mode to the
/// scanout's size when that changes.
pub struct FramebufferSink {
    fb: Arc<SharedFramebuffer>,
    mode: Mutex<(u32, u32)>,
    /// Rows converted to B, G, R, X, reused.
    scratch: Mutex<Vec<u8>>,
}

impl FramebufferSink {
    /// Draws into `fb`.
    pub fn new(fb: Arc<SharedFramebuffer>) -> Self {
        Self {
            fb,
            mode: Mutex::new((0, 0)),
            scratch: Mutex::new(Vec::new()),
        }
    }

    /// The size the framebuffer was last set to (0 × 0: none yet).
    pub fn mode(&self) -> (u32, u32) {
        *self.mode.lock().unwrap()
    }
}

impl ScanoutSink for FramebufferSink {
    fn frame(&self, update: &FrameUpdate<'_>) {
        if update.scanout != 0 {
            return;
        }
        let mut mode = self.mode.lock().unwrap();
        if *mode != (update.width, update.height) {
            if let Err(err) = self
                .fb
                .set_mode(update.width, update.height, FbFormat::Bgrx8888)
            {
                eprintln!("framebuffer sink: {err}");
                return;
            }
            *mode = (update.width, update.height);
        }
        let dirty = update.dirty;
        let mut rows = self.scratch.lock().unwrap();
        rows.clear();
        for y in dirty.y..dirty.y + dirty.height {
            let Some(row) = update.row(&dirty, y) else {
                return;
            };
            for px in row.chunks_exact(4) {
                rows.extend_from_slice(&update.format.to_bgra(px.try_into().unwrap()));
            }
        }
        let rect = FbRect::new(dirty.x, dirty.y, dirty.width, dirty.height);
        let written = self
            .fb
            .write_rows(rect, &rows, dirty.width as usize * 4)
            .and_then(|()| self.fb.publish(rect));
        if let Err(err) = written {
            eprintln!("framebuffer sink: {err}");
        }
    }

    fn cursor(&self, _scanout: u32, _update: &CursorUpdate<'_>) {}
}

/// A private D-Bus bus (a `dbus-daemon` of its own) for QEMU's
/// `-display dbus`, the one QEMU display that takes a vhost-user-gpu
/// console without a GL render node (VNC, SPICE and the others want DMABUF
/// support), and that lets a client ask for a new display size
/// (org.qemu.Display1.Console.SetUIInfo).
pub struct DbusDisplay {
    daemon: Child,
    address: String,
}

impl DbusDisplay {
    /// Starts the bus on a socket at `path`; None (the skip of `test`
    /// reported) when `dbus-daemon` is missing.
    pub fn start(test: &str, path: &Path) -> Option<Self> {
        let _ = std::fs::remove_file(path);
        let address = format!("unix:path={}", path.display());
        let daemon = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn();
        let daemon = match daemon {
            Ok(daemon) => daemon,
            Err(err) => {
                crate::skipped_missing(
                    test,
                    &format!("cannot start dbus-daemon ({err}); install dbus-daemon"),
                );
                return None;
            }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(Self { daemon, address })
    }

    /// QEMU's arguments for a D-Bus display on this bus.
    pub fn qemu_args(&self) -> Vec<String> {
        vec![
            "-display".to_string(),
            format!("dbus,gl=off,addr={}", self.address),
        ]
    }

    /// Asks QEMU's console 0 for a `width` × `height` display, as a
    /// resized window would; QEMU hands it to the graphics device.
    pub fn set_ui_info(&self, width: u32, height: u32) -> Result<(), String> {
        let output = Command::new("dbus-send")
            .arg(format!("--bus={}", self.address))
            .args([
                "--dest=org.qemu",
                "--type=method_call",
                "--print-reply",
                "/org/qemu/Display1/Console_0",
                "org.qemu.Display1.Console.SetUIInfo",
                "uint16:0",
                "uint16:0",
                "int32:0",
                "int32:0",
            ])
            .arg(format!("uint32:{width}"))
            .arg(format!("uint32:{height}"))
            .output()
            .map_err(|e| format!("cannot run dbus-send: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

impl Drop for DbusDisplay {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// The colour (R, G, B) the guest's agent has the framebuffer console draw
/// on pixel row `y` of a `height` rows screen: text row r (16 pixels high)
/// gets ANSI background colour r * 8 / rows, which the console's default
/// palette shows as these (ANSI order: black, red, green, brown, blue,
/// magenta, cyan, grey). Rows below the last text row stay black.
pub fn band_colour(y: u32, height: u32) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 8] = [
        [0x00, 0x00, 0x00],
        [0xaa, 0x00, 0x00],
        [0x00, 0xaa, 0x00],
        [0xaa, 0x55, 0x00],
        [0x00, 0x00, 0xaa],
        [0xaa, 0x00, 0xaa],
        [0x00, 0xaa, 0xaa],
        [0xaa, 0xaa, 0xaa],
    ];
    let rows = height / 16;
    let row = y / 16;
    if row >= rows {
        return [0; 3];
    }
    PALETTE[(row * 8 / rows) as usize]
}

/// Pixels of `rgba` (`width` × `height`, 4 bytes a pixel, the fourth
/// ignored) that are not the bands.
pub fn mismatches(width: u32, height: u32, rgba: &[u8]) -> usize {
    rgba.chunks_exact(4)
        .enumerate()
        .filter(|(i, px)| {
            let y = *i as u32 / width;
            px[..3] != band_colour(y, height)
        })
        .count()
}

/// A `key=value` field of a marker line such as `NESTBOX-GPU-DRAWN w=.. h=..`.
pub fn marker_field(serial: &str, marker: &str, key: &str) -> Option<u32> {
    let line = serial.lines().find(|l| l.starts_with(marker))?;
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)?
        .1
        .parse()
        .ok()
}
