// SPDX-License-Identifier: Apache-2.0
//! Scanouts (the GPU's displays) and the host side that shows them: the
//! [`ScanoutSink`] the host implements, what it is handed ([`FrameUpdate`],
//! [`CursorUpdate`]), and [`RecordingSink`], a sink that keeps everything it
//! is shown, for tests.
//!
//! A scanout has a size the host prefers (what GET_DISPLAY_INFO and the
//! EDID report; the host changes it with `Gpu::request_display_size`), a
//! connected flag, and the resource rectangle the guest last set on it.

use std::sync::Mutex;

use super::protocol::{PixelFormat, Rect};

/// The pixels of a scanout the guest flushed.
#[derive(Clone, Copy, Debug)]
pub struct FrameUpdate<'a> {
    /// Which scanout.
    pub scanout: u32,
    /// The scanout's width in pixels (the rectangle set by SET_SCANOUT).
    pub width: u32,
    /// The scanout's height in pixels.
    pub height: u32,
    /// Bytes from one row to the next in `pixels`.
    pub stride: usize,
    /// The pixel format (always 4 bytes a pixel).
    pub format: PixelFormat,
    /// The scanout's pixels: row `y` starts at `y * stride` and holds
    /// `width * 4` bytes; the slice ends at the last row's last pixel.
    pub pixels: &'a [u8],
    /// What changed, in scanout coordinates (within `width` × `height`).
    pub dirty: Rect,
}

impl FrameUpdate<'_> {
    /// The bytes of row `y` of the rectangle `rect` (scanout coordinates).
    pub fn row(&self, rect: &Rect, y: u32) -> Option<&[u8]> {
        let start = (y as usize)
            .checked_mul(self.stride)?
            .checked_add((rect.x as usize).checked_mul(4)?)?;
        let len = (rect.width as usize).checked_mul(4)?;
        self.pixels.get(start..start.checked_add(len)?)
    }
}

/// The side length of a cursor image, in pixels.
pub const CURSOR_SIZE: u32 = 64;

/// A change to a scanout's cursor.
#[derive(Clone, Copy, Debug)]
pub enum CursorUpdate<'a> {
    /// A new image, with its hotspot at (`x`, `y`) on the scanout.
    Show {
        /// Hotspot position on the scanout.
        x: u32,
        /// Hotspot position on the scanout.
        y: u32,
        /// The hotspot within the image.
        hot_x: u32,
        /// The hotspot within the image.
        hot_y: u32,
        /// The image's pixel format.
        format: PixelFormat,
        /// 64 × 64 pixels, 256 bytes a row.
        image: &'a [u8],
    },
    /// The cursor's hotspot moved to (`x`, `y`), same image.
    Move {
        /// Hotspot position on the scanout.
        x: u32,
        /// Hotspot position on the scanout.
        y: u32,
    },
    /// The cursor is hidden.
    Hide,
}

/// Per scanout, its size, or None when disconnected: what a host side that
/// owns the displays reports ([`ScanoutSink::display_info`]).
pub type HostDisplays = Vec<Option<(u32, u32)>>;

/// What the host does with what the guest shows. Called on the thread that
/// serves the device's queues; implementations copy what they need and
/// return quickly.
pub trait ScanoutSink: Send + Sync {
    /// The guest flushed `update.dirty` of a scanout.
    fn frame(&self, update: &FrameUpdate<'_>);
    /// The guest changed a scanout's cursor.
    fn cursor(&self, scanout: u32, update: &CursorUpdate<'_>);
    /// The guest stopped showing anything on `scanout`.
    fn disabled(&self, _scanout: u32) {}
    /// The displays as the host side has them, when it owns them (a
    /// vhost-user front-end does): per scanout, its size, or None when
    /// disconnected. The device asks before it answers GET_DISPLAY_INFO or
    /// GET_EDID and takes the answer as its own state; None (the default)
    /// leaves the device's sizes.
    fn display_info(&self) -> Option<HostDisplays> {
        None
    }
    /// The EDID blob (at most 1024 bytes) of `scanout` when the host side
    /// makes it; None (the default): the device makes its own from the
    /// scanout's size.
    fn edid(&self, _scanout: u32) -> Option<Vec<u8>> {
        None
    }
}

/// A sink that shows nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullSink;

impl ScanoutSink for NullSink {
    fn frame(&self, _update: &FrameUpdate<'_>) {}
    fn cursor(&self, _scanout: u32, _update: &CursorUpdate<'_>) {}
}

/// A frame as [`RecordingSink`] keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedFrame {
    /// Which scanout.
    pub scanout: u32,
    /// The scanout's size.
    pub width: u32,
    /// The scanout's size.
    pub height: u32,
    /// The stride it was handed.
    pub stride: usize,
    /// The pixel format.
    pub format: PixelFormat,
    /// The dirty rectangle.
    pub dirty: Rect,
    /// The dirty rectangle's pixels, rows packed (`dirty.width * 4` bytes each).
    pub pixels: Vec<u8>,
}

/// A cursor change as [`RecordingSink`] keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordedCursor {
    /// A new image.
    Show {
        /// Which scanout.
        scanout: u32,
        /// Position and hotspot: x, y, hot_x, hot_y.
        at: [u32; 4],
        /// The image.
        image: Vec<u8>,
    },
    /// A move.
    Move {
        /// Which scanout.
        scanout: u32,
        /// The new position.
        x: u32,
        /// The new position.
        y: u32,
    },
    /// Hidden.
    Hide {
        /// Which scanout.
        scanout: u32,
    },
}

/// A sink that records every frame (the dirty pixels only), cursor change
/// and disabled scanout, for tests.
#[derive(Debug, Default)]
pub struct RecordingSink {
    frames: Mutex<Vec<RecordedFrame>>,
    cursors: Mutex<Vec<RecordedCursor>>,
    disabled: Mutex<Vec<u32>>,
    host_displays: Mutex<Option<HostDisplays>>,
}

impl RecordingSink {
    /// The frames so far.
    pub fn frames(&self) -> Vec<RecordedFrame> {
        self.frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The cursor changes so far.
    pub fn cursors(&self) -> Vec<RecordedCursor> {
        self.cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes the sink answer [`ScanoutSink::display_info`] with `displays`,
    /// as a host side that owns the displays does.
    pub fn set_host_displays(&self, displays: HostDisplays) {
        *self.host_displays.lock().unwrap_or_else(|e| e.into_inner()) = Some(displays);
    }

    /// The scanouts disabled so far, in order.
    pub fn disabled_scanouts(&self) -> Vec<u32> {
        self.disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ScanoutSink for RecordingSink {
    fn frame(&self, update: &FrameUpdate<'_>) {
        let dirty = update.dirty;
        let mut pixels = Vec::new();
        for y in dirty.y..dirty.y.saturating_add(dirty.height) {
            if let Some(row) = update.row(&dirty, y) {
                pixels.extend_from_slice(row);
            }
        }
        self.frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(RecordedFrame {
                scanout: update.scanout,
                width: update.width,
                height: update.height,
                stride: update.stride,
                format: update.format,
                dirty,
                pixels,
            });
    }

    fn cursor(&self, scanout: u32, update: &CursorUpdate<'_>) {
        let record = match *update {
            CursorUpdate::Show {
                x,
                y,
                hot_x,
                hot_y,
                image,
                ..
            } => RecordedCursor::Show {
                scanout,
                at: [x, y, hot_x, hot_y],
                image: image.to_vec(),
            },
            CursorUpdate::Move { x, y } => RecordedCursor::Move { scanout, x, y },
            CursorUpdate::Hide => RecordedCursor::Hide { scanout },
        };
        self.cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
    }

    fn disabled(&self, scanout: u32) {
        self.disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(scanout);
    }

    fn display_info(&self) -> Option<HostDisplays> {
        self.host_displays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// One scanout's state.
#[derive(Clone, Copy, Debug)]
pub(super) struct Scanout {
    /// Whether a display is connected (reported as `enabled`).
    pub connected: bool,
    /// The size the host prefers.
    pub width: u32,
    /// The size the host prefers.
    pub height: u32,
    /// The resource shown and the part of it, once the guest set one.
    pub shown: Option<(u32, Rect)>,
}

impl Scanout {
    /// A connected scanout preferring `width` × `height`, showing nothing.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            connected: true,
            width,
            height,
            shown: None,
        }
    }
}
