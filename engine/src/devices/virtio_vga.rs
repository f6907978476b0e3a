// SPDX-License-Identifier: Apache-2.0
//! virtio-vga: one PCI display function (1AF4:1050, class VGA) that is the
//! standard VGA (legacy ports, the 0xA0000 window, Bochs DISPI, video
//! memory as BAR 0, so SeaBIOS with SeaVGABIOS's `vgabios-virtio.bin`, DOS
//! and text modes work as on [`StdVga`]) and carries the virtio-gpu 2D
//! device, its modern virtio-pci registers in BAR 2 (as QEMU's
//! `virtio-vga` has them).
//!
//! The guest's screen is the VGA's until the virtio-gpu driver shows a
//! resource on scanout 0 (SET_SCANOUT, then a flush), then the GPU's
//! picture ([`GpuPicture`], the device's [`ScanoutSink`]); it goes back to
//! the VGA when the driver disables the scanout or resets the device
//! (a guest reboot brings a new adapter). The host reads either through
//! the same [`GuestScreen`](crate::devices::std_vga::GuestScreen).
//!
//! Everything the picture takes comes from the guest: a scanout larger
//! than [`MAX_PICTURE_PIXELS`] is not shown (logged, rate-limited), dirty
//! rectangles are clipped to the scanout, and no size or offset is used
//! unchecked.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::devices::pci::{BarMapping, BarRam, PciDevice};
use crate::devices::std_vga::StdVga;
use crate::devices::virtio::gpu::{
    CURSOR_SIZE, CursorUpdate, FrameUpdate, Gpu, PixelFormat, Rect, ScanoutSink,
};
use crate::devices::virtio::pci::SharedVirtioPci;
use crate::devices::virtio::shared::SharedVirtio;
use crate::snapshot::{self, Persist, StateError};

/// PCI vendor and device ID of virtio-vga (virtio 1.x GPU).
pub const DEVICE_ID: u16 = 0x1050;
/// The name SeaBIOS looks up in fw_cfg for this device's option ROM.
pub const ROM_FILE_NAME: &str = "pci1af4,1050.rom";
/// The BAR holding the virtio registers (BAR 0 is video memory).
pub const VIRTIO_BAR: u8 = 2;
/// The largest scanout shown, in pixels (8K UHD): a guest cannot make the
/// host hold a bigger picture.
pub const MAX_PICTURE_PIXELS: u64 = 7680 * 4320;

/// What the virtio-gpu shows on scanout 0, as the host keeps it: RGBX8888
/// pixels (bytes R, G, B, 0xFF), `width * 4` bytes a row.
#[derive(Debug, Default)]
pub struct Picture {
    /// Whether the driver shows a resource (the GPU's picture is the
    /// screen).
    pub active: bool,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The pixels.
    pub pixels: Vec<u8>,
    /// Counts every change, so a reader knows whether it has seen this one.
    pub generation: u64,
    /// What changed since the screen pump last took it
    /// ([`GuestScreen::take_gpu_update`](crate::devices::std_vga::GuestScreen::take_gpu_update)).
    pub dirty: Option<Rect>,
    /// When the guest flushed the oldest change not taken yet.
    pub flushed_at: Option<Instant>,
}

impl Picture {
    /// Adds `rect` (inside the picture), flushed `at`, to what changed
    /// since the last take.
    fn mark_dirty(&mut self, rect: Rect, at: Instant) {
        self.dirty = Some(match self.dirty {
            None => rect,
            Some(old) => {
                let x = old.x.min(rect.x);
                let y = old.y.min(rect.y);
                let right = (old.x + old.width).max(rect.x + rect.width);
                let bottom = (old.y + old.height).max(rect.y + rect.height);
                Rect::new(x, y, right - x, bottom - y)
            }
        });
        self.flushed_at.get_or_insert(at);
    }

    /// Marks the whole picture changed (a reader that failed to take it
    /// looks at all of it again).
    pub fn mark_all_dirty(&mut self) {
        let at = self.flushed_at.unwrap_or_else(Instant::now);
        self.mark_dirty(Rect::new(0, 0, self.width, self.height), at);
    }
}

/// Called when the picture or the pointer changed (the screen pump's
/// wake-up).
pub type PictureWaker = Arc<dyn Fn() + Send + Sync>;

/// The guest's pointer image on scanout 0 (the virtio-gpu cursor queue),
/// for the host to draw as its own pointer over the guest's screen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestCursor {
    /// Whether the guest shows a pointer.
    pub visible: bool,
    /// 64 × 64 RGBA8 pixels (non-premultiplied), 256 bytes a row; empty
    /// until the guest sets an image.
    pub image: Vec<u8>,
    /// The hotspot within the image.
    pub hot: (u32, u32),
    /// Where the guest put the hotspot on the scanout.
    pub at: (u32, u32),
    /// Counts every change.
    pub generation: u64,
}

/// The GPU's scanout 0 as the host sees it: the device's sink, read by the
/// screen.
#[derive(Default)]
pub struct GpuPicture {
    picture: Mutex<Picture>,
    cursor: Mutex<GuestCursor>,
    oversized: Mutex<crate::devices::virtio::LogLimiter>,
    waker: Mutex<Option<PictureWaker>>,
}

impl std::fmt::Debug for GpuPicture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuPicture")
            .field("picture", &self.picture)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl GpuPicture {
    /// The picture, locked (held briefly: the device's queue thread
    /// writes it on every flush).
    pub fn lock(&self) -> MutexGuard<'_, Picture> {
        self.picture.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Has `waker` called after every change of the picture or the
    /// pointer (None: nobody is called).
    pub fn set_waker(&self, waker: Option<PictureWaker>) {
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = waker;
    }

    fn wake(&self) {
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(waker) = waker {
            waker();
        }
    }

    /// Whether the GPU's picture is the screen now.
    pub fn active(&self) -> bool {
        self.lock().active
    }

    /// The generation of the guest's pointer while it shows one with an
    /// image (None: hidden), without copying the image.
    pub fn shown_cursor_generation(&self) -> Option<u64> {
        let cursor = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        (cursor.visible && !cursor.image.is_empty()).then_some(cursor.generation)
    }

    /// The guest's pointer now.
    pub fn guest_cursor(&self) -> GuestCursor {
        self.cursor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ScanoutSink for GpuPicture {
    fn frame(&self, update: &FrameUpdate<'_>) {
        if update.scanout != 0 {
            return;
        }
        // The guest's flush, as the latency benchmark counts from it.
        let flushed_at = Instant::now();
        let (width, height) = (update.width, update.height);
        let pixels = u64::from(width) * u64::from(height);
        if pixels == 0 || pixels > MAX_PICTURE_PIXELS {
            let mut limiter = self.oversized.lock().unwrap_or_else(|e| e.into_inner());
            if limiter.allow() {
                log::warn!("virtio-vga: a {width}x{height} scanout is not shown (too large)");
            }
            return;
        }
        let mut picture = self.lock();
        let row_bytes = width as usize * 4;
        let mut dirty = update.dirty;
        if (picture.width, picture.height) != (width, height) || !picture.active {
            // A new mode (or the first picture): all of it is new.
            picture.width = width;
            picture.height = height;
            picture.pixels.clear();
            picture.pixels.resize(row_bytes * height as usize, 0);
            // What changed in the old mode is part of the new whole.
            picture.dirty = None;
            dirty = Rect {
                x: 0,
                y: 0,
                width,
                height,
            };
        }
        let Some(dirty) = clip(dirty, width, height) else {
            return;
        };
        for y in dirty.y..dirty.y + dirty.height {
            let Some(src) = update.row(&dirty, y) else {
                break;
            };
            let start = y as usize * row_bytes + dirty.x as usize * 4;
            let Some(dst) = picture.pixels.get_mut(start..start + src.len()) else {
                break;
            };
            to_rgbx(update.format, src, dst);
        }
        picture.active = true;
        picture.generation = picture.generation.wrapping_add(1);
        picture.mark_dirty(dirty, flushed_at);
        drop(picture);
        self.wake();
    }

    fn cursor(&self, scanout: u32, update: &CursorUpdate<'_>) {
        if scanout != 0 {
            return;
        }
        let mut cursor = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        match *update {
            CursorUpdate::Show {
                x,
                y,
                hot_x,
                hot_y,
                format,
                image,
            } => {
                let len = (CURSOR_SIZE * CURSOR_SIZE * 4) as usize;
                let Some(image) = image.get(..len) else {
                    return;
                };
                cursor.image.clear();
                for px in image.chunks_exact(4) {
                    let Ok(px) = <[u8; 4]>::try_from(px) else {
                        break;
                    };
                    let [b, g, r, a] = format.to_bgra(px);
                    let alpha = if format.has_alpha() { a } else { 0xff };
                    cursor.image.extend_from_slice(&[r, g, b, alpha]);
                }
                cursor.hot = (hot_x.min(CURSOR_SIZE - 1), hot_y.min(CURSOR_SIZE - 1));
                cursor.at = (x, y);
                cursor.visible = true;
            }
            CursorUpdate::Move { x, y } => cursor.at = (x, y),
            CursorUpdate::Hide => cursor.visible = false,
        }
        cursor.generation = cursor.generation.wrapping_add(1);
        drop(cursor);
        self.wake();
    }

    fn disabled(&self, scanout: u32) {
        if scanout != 0 {
            return;
        }
        let mut picture = self.lock();
        if picture.active {
            picture.active = false;
            picture.generation = picture.generation.wrapping_add(1);
            picture.dirty = None;
            picture.flushed_at = None;
        }
        drop(picture);
        // The driver let go: no guest pointer over the VGA.
        let mut cursor = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        if cursor.visible {
            cursor.visible = false;
            cursor.generation = cursor.generation.wrapping_add(1);
        }
        drop(cursor);
        self.wake();
    }
}

/// Converts a row of the guest's `format` into RGBX8888 (the fourth byte
/// 0xff). One match a row, so each loop is specialised (and vectorised).
fn to_rgbx(format: PixelFormat, src: &[u8], dst: &mut [u8]) {
    fn each(src: &[u8], dst: &mut [u8], rgbx: impl Fn([u8; 4]) -> [u8; 4]) {
        for (out, px) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
            if let (Ok(out), Ok(px)) = (<&mut [u8; 4]>::try_from(out), <[u8; 4]>::try_from(px)) {
                *out = rgbx(px);
            }
        }
    }
    match format {
        PixelFormat::B8G8R8A8 | PixelFormat::B8G8R8X8 => {
            each(src, dst, |[b, g, r, _]| [r, g, b, 0xff])
        }
        PixelFormat::A8R8G8B8 | PixelFormat::X8R8G8B8 => {
            each(src, dst, |[_, r, g, b]| [r, g, b, 0xff])
        }
        PixelFormat::R8G8B8A8 | PixelFormat::R8G8B8X8 => {
            each(src, dst, |[r, g, b, _]| [r, g, b, 0xff])
        }
        PixelFormat::A8B8G8R8 | PixelFormat::X8B8G8R8 => {
            each(src, dst, |[_, b, g, r]| [r, g, b, 0xff])
        }
    }
}

/// `rect` within a `width` × `height` scanout, or None when nothing of it
/// is.
fn clip(rect: Rect, width: u32, height: u32) -> Option<Rect> {
    let x = rect.x.min(width);
    let y = rect.y.min(height);
    let right = rect.x.saturating_add(rect.width).min(width);
    let bottom = rect.y.saturating_add(rect.height).min(height);
    (right > x && bottom > y).then_some(Rect {
        x,
        y,
        width: right - x,
        height: bottom - y,
    })
}

/// The host's handle on a virtio-vga's GPU: its picture, and the device,
/// to ask for a new display size.
#[derive(Clone)]
pub struct GpuOutput {
    /// What scanout 0 shows.
    pub picture: Arc<GpuPicture>,
    /// The device.
    pub gpu: SharedVirtio<Gpu>,
}

/// The virtio-vga PCI function: the standard VGA's model and memory, and
/// the virtio-gpu's transport, which owns the configuration space.
pub struct VirtioVga {
    vga: StdVga,
    virtio: SharedVirtioPci,
}

impl VirtioVga {
    /// The function of `vga` and `virtio` (a virtio-gpu transport placed
    /// on [`VIRTIO_BAR`] with class VGA, whose BAR 0 the caller added as
    /// the VGA's video memory).
    pub fn new(vga: StdVga, virtio: SharedVirtioPci) -> Self {
        Self { vga, virtio }
    }

    fn virtio(&self) -> std::sync::MutexGuard<'_, crate::devices::virtio::pci::VirtioPciDevice> {
        self.virtio.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a saved state holds of the function: the VGA half (registers,
/// video memory) and the virtio-gpu half (transport and device).
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedVirtioVga {
    vga: Vec<u8>,
    virtio: Vec<u8>,
}

impl Persist for VirtioVga {
    fn quiesce(&mut self) -> Result<(), StateError> {
        self.virtio().quiesce()
    }

    fn save(&mut self) -> Result<Vec<u8>, StateError> {
        let vga = self.vga.save()?;
        let virtio = self.virtio().save()?;
        snapshot::encode("virtio-vga", &SavedVirtioVga { vga, virtio })
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let saved: SavedVirtioVga = snapshot::decode("virtio-vga", bytes)?;
        self.vga.restore(&saved.vga)?;
        // The GPU hands the scanouts it shows back to the picture, which
        // then is the screen again.
        self.virtio().restore(&saved.virtio)
    }
}

impl PciDevice for VirtioVga {
    fn state(&mut self) -> crate::bus::DeviceState<'_> {
        crate::bus::DeviceState::Saved(self)
    }

    fn config_read(&mut self, offset: usize) -> u32 {
        self.virtio().config_read(offset)
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.virtio().config_write(offset, data);
    }

    fn bar_mappings(&self) -> Vec<BarMapping> {
        self.virtio().bar_mappings()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        if bar == 0 {
            self.vga.bar_read(0, offset, data);
        } else {
            self.virtio().bar_read(bar, offset, data);
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        if bar == 0 {
            self.vga.bar_write(0, offset, data);
        } else {
            self.virtio().bar_write(bar, offset, data);
        }
    }

    fn bar_ram(&self, bar: u8) -> Option<BarRam> {
        self.vga.bar_ram(bar)
    }

    fn bars_moved(&mut self, bars: &[BarMapping]) {
        self.virtio().bars_moved(bars);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::gpu::PixelFormat;

    fn update<'a>(pixels: &'a [u8], width: u32, height: u32, dirty: Rect) -> FrameUpdate<'a> {
        FrameUpdate {
            scanout: 0,
            width,
            height,
            stride: width as usize * 4,
            format: PixelFormat::B8G8R8X8,
            pixels,
            dirty,
        }
    }

    #[test]
    fn test_picture_takes_flushes_as_rgbx_and_goes_back_on_disable() {
        // Arrange
        let sink = GpuPicture::default();
        let pixels: Vec<u8> = [10u8, 20, 30, 0].repeat(4 * 2);
        let all = Rect {
            x: 0,
            y: 0,
            width: 4,
            height: 2,
        };

        // Act
        sink.frame(&update(&pixels, 4, 2, all));
        let shown = {
            let p = sink.lock();
            (
                p.active,
                p.width,
                p.height,
                p.pixels[..4].to_vec(),
                p.generation,
            )
        };
        sink.disabled(0);

        // Assert
        assert_eq!(shown, (true, 4, 2, vec![30, 20, 10, 0xff], 1));
        assert!(!sink.active());
    }

    #[test]
    fn test_picture_refuses_oversized_scanouts_and_clips_hostile_rectangles() {
        // Arrange
        let sink = GpuPicture::default();
        let pixels = vec![0u8; 16];
        let outside = Rect {
            x: u32::MAX - 1,
            y: 1,
            width: u32::MAX,
            height: u32::MAX,
        };

        // Act: a scanout past the limit, then a rectangle far outside a
        // 2 x 2 one (the device checks rectangles; the sink does again).
        sink.frame(&update(&[], 100_000, 100_000, outside));
        let after_huge = sink.active();
        sink.frame(&update(&pixels, 2, 2, outside));

        // Assert: nothing huge was taken; the first picture of a mode is
        // taken whole whatever the rectangle says.
        assert!(!after_huge);
        let p = sink.lock();
        assert_eq!(
            (p.active, p.width, p.height, p.pixels.len()),
            (true, 2, 2, 16)
        );
    }

    #[test]
    fn test_cursor_image_hotspot_moves_and_hides_and_short_images_are_ignored() {
        // Arrange
        let sink = GpuPicture::default();
        let image: Vec<u8> = [1u8, 2, 3, 0x80].repeat(64 * 64);
        fn show(image: &[u8]) -> CursorUpdate<'_> {
            CursorUpdate::Show {
                x: 10,
                y: 20,
                hot_x: 3,
                hot_y: 999,
                format: PixelFormat::B8G8R8A8,
                image,
            }
        }

        // Act and assert
        sink.cursor(0, &show(&image[..100]));
        assert_eq!(
            sink.guest_cursor(),
            GuestCursor::default(),
            "a short image is ignored"
        );
        sink.cursor(0, &show(&image));
        let shown = sink.guest_cursor();
        assert!(shown.visible);
        assert_eq!(&shown.image[..4], &[3, 2, 1, 0x80]);
        assert_eq!(shown.image.len(), 64 * 64 * 4);
        assert_eq!((shown.hot, shown.at), ((3, 63), (10, 20)));
        assert_eq!(sink.shown_cursor_generation(), Some(shown.generation));
        sink.cursor(0, &CursorUpdate::Move { x: 5, y: 6 });
        assert_eq!(sink.guest_cursor().at, (5, 6));
        sink.cursor(1, &CursorUpdate::Hide);
        assert!(sink.guest_cursor().visible, "another scanout's");
        sink.cursor(0, &CursorUpdate::Hide);
        assert!(!sink.guest_cursor().visible);
        assert_eq!(sink.shown_cursor_generation(), None);
        assert!(sink.guest_cursor().generation > shown.generation);
    }

    #[test]
    fn test_clip_keeps_rectangles_inside_the_scanout() {
        let r = |x, y, width, height| Rect {
            x,
            y,
            width,
            height,
        };
        assert_eq!(clip(r(1, 1, 10, 10), 4, 4), Some(r(1, 1, 3, 3)));
        assert_eq!(clip(r(5, 0, 1, 1), 4, 4), None);
        assert_eq!(clip(r(u32::MAX, 0, u32::MAX, 1), 4, 4), None);
    }
}
