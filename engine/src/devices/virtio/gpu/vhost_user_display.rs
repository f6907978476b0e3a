// SPDX-License-Identifier: Apache-2.0
//! The vhost-user-gpu display protocol (QEMU's docs/interop/vhost-user-gpu)
//! on the back-end side: [`VhostUserGpuSink`] forwards what the guest shows
//! to a vhost-user front-end over the socket it handed the back-end with
//! VHOST_USER_GPU_SET_SOCKET, through the `vhost` crate's [`GpuBackend`];
//! [`FrontendSink`] is the sink a GPU served over vhost-user is created
//! with: it hands everything to the local sink it was created with and,
//! once that socket arrives, to the front-end as well. `nestbox
//! vhost-user-gpu` (`app/src/cli/vhost_user.rs`) gives it a
//! [`NullSink`](super::NullSink), so there the guest's screen shows only
//! on the front-end's display (QEMU's); the tests that boot guests give it
//! a sink drawing into a Nestbox framebuffer (`tests/src/gpu.rs`).
//!
//! Frames go as VHOST_USER_GPU_SCANOUT (when a scanout's size changes) and
//! VHOST_USER_GPU_UPDATE with the dirty rectangle's pixels packed and
//! converted to x8r8g8b8 (bytes B, G, R, X); cursors as CURSOR_UPDATE,
//! CURSOR_POS and CURSOR_POS_HIDE.
//!
//! The front-end owns the displays: their sizes, the device's
//! `events_read` and the configuration interrupt (QEMU's vhost-user-gpu
//! answers `events_read` itself and raises VIRTIO_GPU_EVENT_DISPLAY when
//! its UI asks for a new size). So the device asks it GET_DISPLAY_INFO, and
//! GET_EDID once VHOST_USER_GPU_PROTOCOL_F_EDID is negotiated, whenever the
//! guest asks the device; a resize reaches the guest that way.

use std::sync::{Arc, Mutex, RwLock};

use vhost::vhost_user::GpuBackend;
use vhost::vhost_user::gpu_message::{
    VhostUserGpuCursorPos, VhostUserGpuCursorUpdate, VhostUserGpuEdidRequest, VhostUserGpuScanout,
    VhostUserGpuUpdate,
};
use vhost::vhost_user::message::VhostUserU64;

use super::protocol::{MAX_SCANOUTS, Rect};
use super::scanout::{CursorUpdate, FrameUpdate, HostDisplays, ScanoutSink};
use crate::devices::virtio::LogLimiter;

/// Bytes of a 64 × 64 cursor image.
const CURSOR_BYTES: usize = 4 * 64 * 64;
/// VHOST_USER_GPU_PROTOCOL_F_EDID: the front-end answers GET_EDID.
const PROTOCOL_F_EDID: u64 = 1 << 0;
/// The longest EDID blob a response carries.
const MAX_EDID_LEN: usize = 1024;

/// A sink that speaks the vhost-user-gpu display protocol to a front-end.
pub struct VhostUserGpuSink {
    backend: GpuBackend,
    /// The size last announced per scanout (0 × 0: none).
    sizes: Mutex<[(u32, u32); MAX_SCANOUTS as usize]>,
    /// Whether the front-end answers GET_EDID; None until negotiated.
    edid: Mutex<Option<bool>>,
    /// The scanouts the front-end last reported enabled (a bit each): the
    /// only ones GET_EDID is asked for, as QEMU does not answer for a
    /// scanout it does not have.
    enabled: Mutex<u32>,
    errors: Mutex<LogLimiter>,
}

impl VhostUserGpuSink {
    /// Forwards to the front-end behind `backend`. The protocol features
    /// are negotiated when first needed, on the thread serving the queues:
    /// not while the front-end waits for the back-end to take the socket
    /// (QEMU answers on its main loop, which is busy starting the device
    /// then).
    pub fn new(backend: GpuBackend) -> Self {
        Self {
            backend,
            sizes: Mutex::new([(0, 0); MAX_SCANOUTS as usize]),
            edid: Mutex::new(None),
            enabled: Mutex::new(0),
            errors: Mutex::new(LogLimiter::default()),
        }
    }

    /// Whether the front-end answers GET_EDID: on the first call, asks it
    /// for its protocol features and enables the ones the back-end uses
    /// (EDID). A front-end that does not answer gets none.
    fn edid_negotiated(&self) -> bool {
        let mut edid = self.edid.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(negotiated) = *edid {
            return negotiated;
        }
        let negotiated = match self.negotiate() {
            Ok(wanted) => wanted & PROTOCOL_F_EDID != 0,
            Err(err) => {
                self.report("protocol feature negotiation", Err(err));
                false
            }
        };
        *edid = Some(negotiated);
        negotiated
    }

    fn negotiate(&self) -> std::io::Result<u64> {
        let offered = self.backend.get_protocol_features()?.value;
        let wanted = offered & PROTOCOL_F_EDID;
        self.backend
            .set_protocol_features(&VhostUserU64::new(wanted))?;
        log::debug!("vhost-user-gpu display: front-end offers {offered:#x}, using {wanted:#x}");
        Ok(wanted)
    }

    fn report(&self, what: &str, result: std::io::Result<()>) {
        if let Err(err) = result {
            let mut limiter = self.errors.lock().unwrap_or_else(|e| e.into_inner());
            if limiter.allow() {
                log::warn!("vhost-user-gpu display: {what} failed: {err}");
            }
        }
    }

    /// Announces `scanout`'s size if it changed.
    fn announce(&self, scanout: u32, width: u32, height: u32) {
        let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(last) = sizes.get_mut(scanout as usize) else {
            return;
        };
        if *last == (width, height) {
            return;
        }
        *last = (width, height);
        drop(sizes);
        let msg = VhostUserGpuScanout {
            scanout_id: scanout,
            width,
            height,
        };
        self.report("SCANOUT", self.backend.set_scanout(&msg));
    }
}

/// The pixels of `rect` of `update`, packed and converted to x8r8g8b8.
fn packed_bgrx(update: &FrameUpdate<'_>, rect: &Rect) -> Vec<u8> {
    let mut out =
        Vec::with_capacity((rect.width as usize).saturating_mul(rect.height as usize) * 4);
    for y in rect.y..rect.y.saturating_add(rect.height) {
        if let Some(row) = update.row(rect, y) {
            for px in row.chunks_exact(4) {
                if let Ok(px) = <[u8; 4]>::try_from(px) {
                    out.extend_from_slice(&update.format.to_bgra(px));
                }
            }
        }
    }
    out
}

impl ScanoutSink for VhostUserGpuSink {
    fn frame(&self, update: &FrameUpdate<'_>) {
        self.announce(update.scanout, update.width, update.height);
        let dirty = update.dirty;
        let data = packed_bgrx(update, &dirty);
        let msg = VhostUserGpuUpdate {
            scanout_id: update.scanout,
            x: dirty.x,
            y: dirty.y,
            width: dirty.width,
            height: dirty.height,
        };
        self.report("UPDATE", self.backend.update_scanout(&msg, &data));
    }

    fn cursor(&self, scanout: u32, update: &CursorUpdate<'_>) {
        match *update {
            CursorUpdate::Show {
                x,
                y,
                hot_x,
                hot_y,
                format,
                image,
            } => {
                let mut data = [0u8; CURSOR_BYTES];
                for (dst, src) in data.chunks_exact_mut(4).zip(image.chunks_exact(4)) {
                    if let Ok(px) = <[u8; 4]>::try_from(src) {
                        dst.copy_from_slice(&format.to_bgra(px));
                    }
                }
                let msg = VhostUserGpuCursorUpdate {
                    pos: VhostUserGpuCursorPos {
                        scanout_id: scanout,
                        x,
                        y,
                    },
                    hot_x,
                    hot_y,
                };
                self.report("CURSOR_UPDATE", self.backend.cursor_update(&msg, &data));
            }
            CursorUpdate::Move { x, y } => {
                let msg = VhostUserGpuCursorPos {
                    scanout_id: scanout,
                    x,
                    y,
                };
                self.report("CURSOR_POS", self.backend.cursor_pos(&msg));
            }
            CursorUpdate::Hide => {
                let msg = VhostUserGpuCursorPos {
                    scanout_id: scanout,
                    x: 0,
                    y: 0,
                };
                self.report("CURSOR_POS_HIDE", self.backend.cursor_pos_hide(&msg));
            }
        }
    }

    fn disabled(&self, scanout: u32) {
        self.announce(scanout, 0, 0);
    }

    fn display_info(&self) -> Option<HostDisplays> {
        self.edid_negotiated();
        let info = match self.backend.get_display_info() {
            Ok(info) => info,
            Err(err) => {
                self.report("GET_DISPLAY_INFO", Err(err));
                return None;
            }
        };
        let mut enabled = 0u32;
        let displays = info
            .pmodes
            .iter()
            .take(MAX_SCANOUTS as usize)
            .enumerate()
            .map(|(i, mode)| {
                // Copies: the message struct is packed.
                let (on, width, height) = (mode.enabled, mode.r.width, mode.r.height);
                (on != 0).then(|| {
                    enabled |= 1 << i;
                    (width, height)
                })
            })
            .collect();
        *self.enabled.lock().unwrap_or_else(|e| e.into_inner()) = enabled;
        Some(displays)
    }

    fn edid(&self, scanout: u32) -> Option<Vec<u8>> {
        let enabled = *self.enabled.lock().unwrap_or_else(|e| e.into_inner());
        if scanout >= MAX_SCANOUTS || !self.edid_negotiated() || enabled & (1 << scanout) == 0 {
            return None;
        }
        let request = VhostUserGpuEdidRequest {
            scanout_id: scanout,
        };
        match self.backend.get_edid(&request) {
            Ok(resp) => {
                let len = (resp.size as usize).min(MAX_EDID_LEN);
                resp.edid.get(..len).map(<[u8]>::to_vec)
            }
            Err(err) => {
                self.report("GET_EDID", Err(err));
                None
            }
        }
    }
}

/// The sink of a GPU served over vhost-user: everything goes to `local`
/// and, once the front-end has handed over its display socket
/// ([`connect`](Self::connect)), to the front-end, which also answers for
/// the displays' sizes and EDIDs.
pub struct FrontendSink {
    frontend: RwLock<Option<VhostUserGpuSink>>,
    local: Arc<dyn ScanoutSink>,
}

impl FrontendSink {
    /// Shows frames on `local` and, once connected, on the front-end.
    pub fn new(local: Arc<dyn ScanoutSink>) -> Self {
        Self {
            frontend: RwLock::new(None),
            local,
        }
    }

    /// The front-end's display socket (VHOST_USER_GPU_SET_SOCKET): forwards
    /// from now on, replacing an earlier connection. Sends nothing yet: the
    /// front-end is waiting for the back-end's answer.
    pub fn connect(&self, backend: GpuBackend) {
        let sink = VhostUserGpuSink::new(backend);
        *self.frontend.write().unwrap_or_else(|e| e.into_inner()) = Some(sink);
    }

    /// Whether a front-end display is connected.
    pub fn is_connected(&self) -> bool {
        self.frontend
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn with_frontend<T>(&self, f: impl FnOnce(&VhostUserGpuSink) -> T) -> Option<T> {
        self.frontend
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(f)
    }
}

impl ScanoutSink for FrontendSink {
    fn frame(&self, update: &FrameUpdate<'_>) {
        self.local.frame(update);
        self.with_frontend(|f| f.frame(update));
    }

    fn cursor(&self, scanout: u32, update: &CursorUpdate<'_>) {
        self.local.cursor(scanout, update);
        self.with_frontend(|f| f.cursor(scanout, update));
    }

    fn disabled(&self, scanout: u32) {
        self.local.disabled(scanout);
        self.with_frontend(|f| f.disabled(scanout));
    }

    fn display_info(&self) -> Option<HostDisplays> {
        self.with_frontend(VhostUserGpuSink::display_info)
            .flatten()
            .or_else(|| self.local.display_info())
    }

    fn edid(&self, scanout: u32) -> Option<Vec<u8>> {
        self.with_frontend(|f| f.edid(scanout))
            .flatten()
            .or_else(|| self.local.edid(scanout))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    use super::super::protocol::PixelFormat;
    use super::*;

    /// Reads one message: (request, payload).
    fn message(sock: &mut UnixStream) -> (u32, Vec<u8>) {
        let mut header = [0u8; 12];
        sock.read_exact(&mut header).unwrap();
        let word = |i: usize| u32::from_ne_bytes(header[i * 4..i * 4 + 4].try_into().unwrap());
        let mut body = vec![0u8; word(2) as usize];
        sock.read_exact(&mut body).unwrap();
        (word(0), body)
    }

    fn words(bytes: &[u8]) -> Vec<u32> {
        bytes
            .chunks_exact(4)
            .map(|w| u32::from_ne_bytes(w.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn test_vhost_user_sink_sends_scanout_once_then_updates_in_bgrx() {
        // Arrange
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let sink = VhostUserGpuSink::new(GpuBackend::from_stream(ours));
        // A 2x2 R8G8B8A8 scanout: pixel i is (r, g, b, a) = (i, 10 + i, 20 + i, 255).
        let pixels: Vec<u8> = (0..4u8).flat_map(|i| [i, 10 + i, 20 + i, 255]).collect();
        let update = FrameUpdate {
            scanout: 0,
            width: 2,
            height: 2,
            stride: 8,
            format: PixelFormat::R8G8B8A8,
            pixels: &pixels,
            dirty: Rect::new(1, 0, 1, 2),
        };

        // Act
        sink.frame(&update);
        sink.frame(&update);
        sink.cursor(0, &CursorUpdate::Move { x: 5, y: 6 });

        // Assert
        let (kind, body) = message(&mut theirs);
        assert_eq!((kind, words(&body)), (7, vec![0, 2, 2]));
        let (kind, body) = message(&mut theirs);
        assert_eq!(kind, 8);
        assert_eq!(words(&body[..20]), [0, 1, 0, 1, 2]);
        assert_eq!(body[20..], [21, 11, 1, 255, 23, 13, 3, 255]);
        let (kind, _) = message(&mut theirs);
        assert_eq!(kind, 8, "the size is announced once");
        let (kind, body) = message(&mut theirs);
        assert_eq!((kind, words(&body)), (4, vec![0, 5, 6]));
    }
}
