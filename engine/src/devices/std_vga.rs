// SPDX-License-Identifier: Apache-2.0
//! The PCI "standard VGA" adapter (1234:1111, the ID of QEMU's `-vga std`,
//! so SeaVGABIOS's `vgabios-stdvga.bin` drives it): the legacy VGA ports,
//! the memory window at 0xA0000, the Bochs DISPI registers, and video memory
//! as BAR 0, mapped straight into the guest so framebuffer writes never exit.
//!
//! The VGA model itself lives in [`crate::devices::vga`]; this module puts
//! it on the buses and the PCI bus and gives the host a [`GuestScreen`] to render.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bus::{BusDevice, DeviceState};
use crate::device_ram::DeviceRam;
use crate::devices::pci::{BarKind, BarMapping, BarRam, ConfigSpace, PciDevice};
use crate::devices::vga::{CURSOR_BLINK_FRAMES, ScreenKind, VRAM_SIZE, Vga, Vram};
use crate::devices::virtio_vga::GpuOutput;
use crate::snapshot::{self, Persist, StateError};

/// PCI vendor and device ID of the Bochs/QEMU standard VGA.
pub const VENDOR_ID: u16 = 0x1234;
/// See [`VENDOR_ID`].
pub const DEVICE_ID: u16 = 0x1111;
/// The name SeaBIOS looks up in fw_cfg for this device's option ROM.
pub const ROM_FILE_NAME: &str = "pci1234,1111.rom";

/// First legacy VGA port decoded (0x3B0..=0x3DF).
pub const VGA_PORTS_START: u64 = 0x3b0;
/// Number of legacy VGA ports.
pub const VGA_PORTS_LEN: u64 = 0x30;
/// The Bochs DISPI index port (data is the next port).
pub const DISPI_PORT: u64 = 0x1ce;
/// Start of the legacy VGA memory window.
pub const WINDOW_START: u64 = crate::layout::VGA_WINDOW_START;
/// Length of the legacy VGA memory window.
pub const WINDOW_LEN: u64 = 0x2_0000;

/// How long the text cursor keeps blinking after the last user input or
/// change on screen; then it stays on, so an idle VM costs its viewer no
/// frames (as GNOME's `cursor-blink-timeout`, whose default this is).
pub const BLINK_TIMEOUT: Duration = Duration::from_secs(10);
/// Length of one display frame, which the blink phases count in.
const FRAME_MS: u128 = 16;

impl Vram for DeviceRam {
    fn len(&self) -> usize {
        DeviceRam::len(self)
    }

    fn read(&self, offset: usize, buf: &mut [u8]) {
        DeviceRam::read(self, offset, buf);
    }

    fn write(&self, offset: usize, data: &[u8]) {
        DeviceRam::write(self, offset, data);
    }
}

/// The adapter: its PCI function and the VGA model behind every window.
pub struct StdVga {
    config: ConfigSpace,
    vga: Arc<Mutex<Vga>>,
    vram: Arc<DeviceRam>,
}

impl StdVga {
    /// A new adapter with [`VRAM_SIZE`] bytes of video memory.
    pub fn new() -> Result<Self, crate::memory::MemoryError> {
        let vram = Arc::new(DeviceRam::new(VRAM_SIZE)?);
        let vga = Arc::new(Mutex::new(Vga::new(vram.clone())));
        // Display controller, VGA-compatible.
        let mut config = ConfigSpace::new(VENDOR_ID, DEVICE_ID, 0x03, 0x00, 0x02);
        config.set_u16(crate::devices::pci::reg::SUBSYSTEM_VENDOR_ID, 0x1af4);
        config.set_u16(crate::devices::pci::reg::SUBSYSTEM_ID, 0x1100);
        config.add_bar(0, VRAM_SIZE as u64, BarKind::Memory32);
        Ok(Self { config, vga, vram })
    }

    /// The bus devices for the legacy ports, DISPI ports and memory window.
    pub fn legacy_devices(&self) -> LegacyVga {
        LegacyVga {
            vga: self.vga.clone(),
        }
    }

    /// What the host renders the guest's screen from.
    pub fn screen(&self) -> GuestScreen {
        GuestScreen {
            vga: self.vga.clone(),
            vram: self.vram.clone(),
            started: Instant::now(),
            input_at: Arc::new(Mutex::new(None)),
            gpu: None,
        }
    }
}

/// What a saved state holds of the adapter: its configuration space, the
/// VGA's registers and the video memory's non-zero pages.
#[derive(serde::Serialize, serde::Deserialize)]
struct AdapterState {
    config: Vec<u8>,
    registers: Vec<u8>,
    vram: Vec<(u64, Vec<u8>)>,
}

impl Persist for StdVga {
    fn save(&mut self) -> Result<Vec<u8>, StateError> {
        let registers = lock(&self.vga).save_registers()?;
        let vram = snapshot::ram::device_pages(self.vram.file(), self.vram.len() as u64)?;
        snapshot::encode(
            "VGA",
            &AdapterState {
                config: self.config.saved_bytes(),
                registers,
                vram,
            },
        )
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let state: AdapterState = snapshot::decode("VGA", bytes)?;
        let mut config = self.config.clone();
        config
            .restore_bytes(&state.config)
            .map_err(|what| snapshot::invalid("VGA", what))?;
        lock(&self.vga).restore_registers(&state.registers)?;
        snapshot::ram::restore_device_pages(self.vram.file(), self.vram.len() as u64, &state.vram)
            .map_err(|what| snapshot::invalid("VGA", what))?;
        self.config = config;
        Ok(())
    }
}

impl PciDevice for StdVga {
    fn state(&mut self) -> DeviceState<'_> {
        DeviceState::Saved(self)
    }

    fn config_read(&mut self, offset: usize) -> u32 {
        self.config.read_dword(offset)
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.guest_write(offset, data);
    }

    fn bar_mappings(&self) -> Vec<BarMapping> {
        self.config.bar_mappings()
    }

    fn bar_ram(&self, bar: u8) -> Option<BarRam> {
        (bar == 0).then(|| self.vram.bar_ram())
    }

    // Without a RAM mapper (tests), BAR 0 is trapped and served here.
    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        match (bar, usize::try_from(offset)) {
            (0, Ok(offset)) => self.vram.read(offset, data),
            _ => data.fill(0xff),
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        if let (0, Ok(offset)) = (bar, usize::try_from(offset)) {
            self.vram.write(offset, data);
        }
    }
}

/// The VGA's fixed ISA windows: give one clone to each bus range.
#[derive(Clone)]
pub struct LegacyVga {
    vga: Arc<Mutex<Vga>>,
}

impl LegacyVga {
    /// The device for ports 0x3B0..=0x3DF.
    pub fn ports(&self) -> Arc<Mutex<dyn BusDevice>> {
        Arc::new(Mutex::new(PortWindow {
            vga: self.vga.clone(),
            base: VGA_PORTS_START as u16,
        }))
    }

    /// The device for the DISPI ports 0x1CE/0x1CF.
    pub fn dispi(&self) -> Arc<Mutex<dyn BusDevice>> {
        Arc::new(Mutex::new(PortWindow {
            vga: self.vga.clone(),
            base: DISPI_PORT as u16,
        }))
    }

    /// The device for the memory window 0xA0000..0xBFFFF.
    pub fn window(&self) -> Arc<Mutex<dyn BusDevice>> {
        Arc::new(Mutex::new(MemoryWindow {
            vga: self.vga.clone(),
        }))
    }
}

struct PortWindow {
    vga: Arc<Mutex<Vga>>,
    base: u16,
}

impl BusDevice for PortWindow {
    fn state(&mut self) -> DeviceState<'_> {
        // The adapter is saved with its PCI function.
        DeviceState::Stateless
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let port = self.base.wrapping_add(offset as u16);
        lock(&self.vga).port_read(port, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let port = self.base.wrapping_add(offset as u16);
        lock(&self.vga).port_write(port, data);
    }
}

struct MemoryWindow {
    vga: Arc<Mutex<Vga>>,
}

impl BusDevice for MemoryWindow {
    fn state(&mut self) -> DeviceState<'_> {
        DeviceState::Stateless
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        lock(&self.vga).window_read(offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        lock(&self.vga).window_write(offset, data);
    }
}

fn lock(vga: &Mutex<Vga>) -> std::sync::MutexGuard<'_, Vga> {
    vga.lock().unwrap_or_else(|e| e.into_inner())
}

/// Renders `vga`'s screen at display frame `tick` into `frame`.
fn render_into(vga: &mut Vga, frame: &mut Frame, tick: u64) {
    let screen = vga.screen();
    let (width, height) = match screen.kind {
        ScreenKind::Blank => (0, 0),
        _ => (screen.width, screen.height),
    };
    let len = (width as usize)
        .saturating_mul(height as usize)
        .saturating_mul(4);
    frame.width = width;
    frame.height = height;
    frame.pixels.clear();
    frame.pixels.resize(len, 0);
    if len > 0 {
        vga.render(&mut frame.pixels, width as usize * 4, tick);
    }
}

/// A rendered frame: RGBX8888 pixels, `width * 4` bytes per row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    /// Width in pixels (0 when the screen is blank or off).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The pixels, row after row.
    pub pixels: Vec<u8>,
}

/// The virtio-gpu's picture as [`GuestScreen::take_gpu_update`] hands it.
#[derive(Debug)]
pub struct GpuUpdate<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RGBX8888 pixels, `width * 4` bytes a row.
    pub pixels: &'a [u8],
    /// What changed since the last take (inside the picture); None:
    /// nothing.
    pub dirty: Option<crate::devices::virtio::gpu::Rect>,
    /// When the guest flushed the oldest of those changes.
    pub flushed_at: Option<Instant>,
}

/// What the frame [`GuestScreen::render_changed`] rendered last was made of.
#[derive(Debug, Default)]
pub struct Shown {
    generation: Option<u64>,
    vram_start: usize,
    vram: Vec<u8>,
    scratch: Vec<u8>,
    phase: u64,
    changed_at: Option<Instant>,
    /// The picture has blink phases (a text mode).
    blinks: bool,
    /// The frame was the virtio-gpu's picture (`generation` is its).
    from_gpu: bool,
}

impl Shown {
    /// When the picture itself last changed (not just blinked).
    pub fn changed_at(&self) -> Option<Instant> {
        self.changed_at
    }
}

/// The guest's screen as the host sees it; cheap to clone, usable from any
/// thread.
#[derive(Clone)]
pub struct GuestScreen {
    vga: Arc<Mutex<Vga>>,
    vram: Arc<DeviceRam>,
    started: Instant,
    /// When the user last sent the guest input (restarts the blinking).
    input_at: Arc<Mutex<Option<Instant>>>,
    /// A virtio-vga's GPU, whose picture is the screen while it shows one.
    gpu: Option<GpuOutput>,
}

impl GuestScreen {
    /// This screen with a virtio-gpu beside the VGA (a virtio-vga).
    pub fn with_gpu(mut self, gpu: GpuOutput) -> Self {
        self.gpu = Some(gpu);
        self
    }

    /// Asks the guest for a `width` × `height` display (what the next
    /// GET_DISPLAY_INFO and EDID report, with a display-change event), as a
    /// resized window does. False when the screen has no virtio-gpu or the
    /// size is not one a display may have.
    pub fn request_display_size(&self, width: u32, height: u32) -> bool {
        let Some(gpu) = &self.gpu else {
            return false;
        };
        match gpu.gpu.lock().request_display_size(0, width, height) {
            Ok(()) => true,
            Err(err) => {
                log::warn!("virtio-vga: display size {width}x{height} refused: {err}");
                false
            }
        }
    }

    /// The guest's pointer, while the virtio-gpu's picture is the screen
    /// and the guest shows one (its cursor queue).
    pub fn cursor(&self) -> Option<crate::devices::virtio_vga::GuestCursor> {
        self.cursor_generation()?;
        let cursor = self.gpu.as_ref()?.picture.guest_cursor();
        (cursor.visible && !cursor.image.is_empty()).then_some(cursor)
    }

    /// The generation of [`cursor`](Self::cursor) (None: no pointer), a
    /// cheap look for a caller that only wants to know whether it changed.
    pub fn cursor_generation(&self) -> Option<u64> {
        if !self.shows_gpu() {
            return None;
        }
        self.gpu.as_ref()?.picture.shown_cursor_generation()
    }

    /// Copies the virtio-gpu's picture into `frame` when it is the screen
    /// and its generation is not `seen`; returns its generation, or None
    /// (the VGA is the screen).
    fn gpu_frame(&self, frame: &mut Frame, seen: Option<u64>) -> Option<u64> {
        let picture = self.gpu.as_ref()?.picture.lock();
        if !picture.active {
            return None;
        }
        if seen != Some(picture.generation) {
            frame.width = picture.width;
            frame.height = picture.height;
            frame.pixels.clear();
            frame.pixels.extend_from_slice(&picture.pixels);
        }
        Some(picture.generation)
    }

    /// Hands what changed in the virtio-gpu's picture since the last call
    /// to `write`, while that picture is the screen (None: the VGA is).
    /// `write` gets the whole picture and the changed area (None: nothing
    /// changed) and says whether it took it; what it did not take stays
    /// changed, all of it. One caller (the screen pump) takes the changes.
    pub fn take_gpu_update<R>(&self, write: impl FnOnce(&GpuUpdate<'_>) -> (bool, R)) -> Option<R> {
        let mut picture = self.gpu.as_ref()?.picture.lock();
        if !picture.active {
            return None;
        }
        let update = GpuUpdate {
            width: picture.width,
            height: picture.height,
            pixels: &picture.pixels,
            dirty: picture.dirty,
            flushed_at: picture.flushed_at,
        };
        let (taken, result) = write(&update);
        if taken {
            picture.dirty = None;
            picture.flushed_at = None;
        } else {
            picture.mark_all_dirty();
        }
        Some(result)
    }

    /// Whether the virtio-gpu's picture is the screen now (not the VGA).
    pub fn shows_gpu(&self) -> bool {
        self.gpu.as_ref().is_some_and(|gpu| gpu.picture.active())
    }

    /// Has `waker` called whenever the virtio-gpu's picture or pointer
    /// changes (None: stop); nothing for a screen without one.
    pub fn set_gpu_waker(&self, waker: Option<crate::devices::virtio_vga::PictureWaker>) {
        if let Some(gpu) = &self.gpu {
            gpu.picture.set_waker(waker);
        }
    }

    /// Renders the current screen into `frame` (reusing its buffer), the
    /// cursor in its blink phase of now.
    pub fn render(&self, frame: &mut Frame) {
        if self.gpu_frame(frame, None).is_some() {
            return;
        }
        let tick = self.tick(Instant::now());
        let mut vga = lock(&self.vga);
        render_into(&mut vga, frame, tick);
    }

    /// Renders the current screen into `frame` as it looks when nothing
    /// changed for a while (the text cursor shown, not blinking), so two
    /// renders of the same state are the same pixels.
    pub fn render_still(&self, frame: &mut Frame) {
        if self.gpu_frame(frame, None).is_some() {
            return;
        }
        render_into(&mut lock(&self.vga), frame, 0);
    }

    /// Renders the screen into `frame` only if it looks different at `now`
    /// from when `shown` was last rendered: its registers or the VRAM it
    /// shows changed, or the cursor blinked. Returns whether it rendered.
    /// The cursor stops blinking (and stays on) [`BLINK_TIMEOUT`] after the
    /// last change or [`GuestScreen::note_input`].
    pub fn render_changed(&self, frame: &mut Frame, shown: &mut Shown, now: Instant) -> bool {
        let seen = shown.generation.filter(|_| shown.from_gpu);
        if let Some(generation) = self.gpu_frame(frame, seen) {
            if seen == Some(generation) {
                return false;
            }
            *shown = Shown {
                generation: Some(generation),
                changed_at: Some(now),
                from_gpu: true,
                ..Shown::default()
            };
            return true;
        }
        if shown.from_gpu {
            // Back to the VGA: render it afresh.
            *shown = Shown::default();
        }
        let range = lock(&self.vga).shown_vram();
        // Copied and compared without the adapter's lock, which vCPUs take
        // on every VGA port and window access (the guest writes the
        // linear framebuffer under no lock anyway).
        shown.scratch.clear();
        shown.scratch.resize(range.len(), 0);
        self.vram.read(range.start, &mut shown.scratch);
        let vram_changed = range.start != shown.vram_start || shown.scratch != shown.vram;
        if vram_changed {
            std::mem::swap(&mut shown.scratch, &mut shown.vram);
            shown.vram_start = range.start;
        }
        // A write since the copy counts too (the next look copies it).
        let mut vga = lock(&self.vga);
        let generation = vga.generation();
        let changed = vram_changed || shown.generation != Some(generation);
        if changed {
            shown.generation = Some(generation);
            shown.changed_at = Some(now);
        }
        shown.blinks = vga.blink_phase(CURSOR_BLINK_FRAMES) != vga.blink_phase(0);
        // Frame 0 is in the phase with the cursor on.
        let tick = if self.blinking(shown, now) {
            self.tick(now)
        } else {
            0
        };
        let phase = vga.blink_phase(tick);
        if !changed && phase == shown.phase {
            return false;
        }
        shown.phase = phase;
        render_into(&mut vga, frame, tick);
        true
    }

    /// How long after `now` the cursor next blinks, while it does (a text
    /// mode within [`BLINK_TIMEOUT`] of the last change or input): when a
    /// caller of [`GuestScreen::render_changed`] should look again at the latest.
    pub fn next_blink(&self, shown: &Shown, now: Instant) -> Option<Duration> {
        if !shown.blinks || !self.blinking(shown, now) {
            return None;
        }
        let elapsed = now.saturating_duration_since(self.started).as_millis();
        let phase_ms = FRAME_MS * u128::from(CURSOR_BLINK_FRAMES);
        let next = (elapsed / phase_ms + 1) * phase_ms;
        Some(Duration::from_millis((next - elapsed) as u64))
    }

    /// Whether the cursor blinks at `now`: the last change on screen or
    /// user input is less than [`BLINK_TIMEOUT`] ago.
    fn blinking(&self, shown: &Shown, now: Instant) -> bool {
        let input_at = *self.input_at.lock().unwrap_or_else(|e| e.into_inner());
        shown
            .changed_at
            .max(input_at)
            .is_some_and(|t| now.saturating_duration_since(t) < BLINK_TIMEOUT)
    }

    /// Whether `other` is a view of the same adapter (not a new VM's).
    pub fn is_same(&self, other: &GuestScreen) -> bool {
        Arc::ptr_eq(&self.vga, &other.vga)
    }

    /// Notes that the user sent the guest input now: the cursor blinks
    /// again.
    pub fn note_input(&self) {
        *self.input_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Display frames (about 60 a second) from the start to `now`.
    fn tick(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.started).as_millis() / FRAME_MS) as u64
    }

    /// The text on screen, one string per row, when in a text mode
    /// (code page 437 bytes; non-ASCII shown as '?').
    pub fn text(&self) -> Option<Vec<String>> {
        if self.shows_gpu() {
            return None;
        }
        let rows = lock(&self.vga).text_rows()?;
        Some(
            rows.into_iter()
                .map(|row| {
                    row.into_iter()
                        .map(|b| {
                            if (0x20..0x7f).contains(&b) {
                                b as char
                            } else if b == 0 {
                                ' '
                            } else {
                                '?'
                            }
                        })
                        .collect()
                })
                .collect(),
        )
    }

    /// The memfd holding video memory (for sharing with another process).
    pub fn vram_file(&self) -> &Arc<std::fs::File> {
        self.vram.file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::vga::tests::{crtc, load_glyph, set_mode3};

    /// Blink phases of the cursor, in wall time.
    const PHASE: Duration = Duration::from_millis(16 * 16);

    /// An adapter in text mode 3 with a solid 'B' in the top-left cell and
    /// the cursor on cell 2, and its screen.
    fn text_screen() -> (StdVga, GuestScreen) {
        let vga = StdVga::new().unwrap();
        {
            let mut v = lock(&vga.vga);
            set_mode3(&mut v);
            load_glyph(&mut v, b'B', &[0xff; 16]);
            v.window_write(0x18000, &[b'B', 0x07, b' ', 0x07, b' ', 0x07]);
            crtc(&mut v, 0x0e, 0);
            crtc(&mut v, 0x0f, 2);
        }
        let screen = vga.screen();
        (vga, screen)
    }

    /// Whether the cursor (cell 2, scan line 13 of 16) is lit in `frame`.
    fn cursor_lit(frame: &Frame) -> bool {
        let i = (13 * frame.width as usize + 18) * 4;
        frame.pixels[i] != 0
    }

    #[test]
    fn test_screen_renders_only_what_changed_through_any_path() {
        let (vga, screen) = text_screen();
        let (mut frame, mut shown) = (Frame::default(), Shown::default());
        let t0 = Instant::now();
        assert!(screen.render_changed(&mut frame, &mut shown, t0));
        assert_eq!((frame.width, frame.height), (720, 400));
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(!screen.render_changed(&mut frame, &mut shown, ms(1)));
        // A write through the legacy window.
        lock(&vga.vga).window_write(0x18000, b"A");
        assert!(screen.render_changed(&mut frame, &mut shown, ms(2)));
        assert!(!screen.render_changed(&mut frame, &mut shown, ms(3)));
        // A write straight into VRAM, as the guest's mapping of BAR 0 makes
        // (no exit, no register write): the character of cell 3 (plane 0,
        // plane offset 6).
        vga.vram.write(6 * 4, b"C");
        assert!(screen.render_changed(&mut frame, &mut shown, ms(4)));
        assert!(!screen.render_changed(&mut frame, &mut shown, ms(5)));
        // A register write (the cursor moves).
        crtc(&mut lock(&vga.vga), 0x0f, 3);
        assert!(screen.render_changed(&mut frame, &mut shown, ms(6)));
    }

    /// A virtio-vga's screen: VGA text on it, a GPU beside it (its
    /// picture, as the device's queue thread writes it).
    fn virtio_vga_screen() -> (
        StdVga,
        GuestScreen,
        Arc<crate::devices::virtio_vga::GpuPicture>,
    ) {
        use crate::devices::virtio::gpu::{Gpu, GpuConfig};
        use crate::devices::virtio::shared::SharedVirtio;
        use crate::devices::virtio_vga::{GpuOutput, GpuPicture};
        let (vga, screen) = text_screen();
        let picture = Arc::new(GpuPicture::default());
        let gpu = SharedVirtio::new(Gpu::new(GpuConfig::default(), picture.clone()).unwrap());
        let screen = screen.with_gpu(GpuOutput {
            picture: picture.clone(),
            gpu,
        });
        (vga, screen, picture)
    }

    #[test]
    fn test_virtio_vga_screen_shows_the_gpu_picture_then_the_vga_again() {
        use crate::devices::virtio::gpu::{FrameUpdate, PixelFormat, Rect, ScanoutSink};

        // Arrange: VGA text on screen, a GPU beside it.
        let (_vga, screen, picture) = virtio_vga_screen();
        let (mut frame, mut shown) = (Frame::default(), Shown::default());
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let pixels = [1u8, 2, 3, 0].repeat(4 * 2);
        let flush = FrameUpdate {
            scanout: 0,
            width: 4,
            height: 2,
            stride: 16,
            format: PixelFormat::B8G8R8X8,
            pixels: &pixels,
            dirty: Rect::new(0, 0, 4, 2),
        };

        // Act and assert: the VGA first.
        assert!(screen.render_changed(&mut frame, &mut shown, t0));
        assert_eq!((frame.width, frame.height), (720, 400));
        // The driver shows a resource: the GPU's picture is the screen.
        picture.frame(&flush);
        assert!(screen.render_changed(&mut frame, &mut shown, ms(1)));
        assert_eq!((frame.width, frame.height), (4, 2));
        assert_eq!(&frame.pixels[..4], &[3, 2, 1, 0xff]);
        assert!(screen.text().is_none());
        assert!(!screen.render_changed(&mut frame, &mut shown, ms(2)));
        picture.frame(&flush);
        assert!(screen.render_changed(&mut frame, &mut shown, ms(3)));
        // The driver lets go (scanout disabled, device reset): the VGA.
        picture.disabled(0);
        assert!(screen.render_changed(&mut frame, &mut shown, ms(4)));
        assert_eq!((frame.width, frame.height), (720, 400));
        assert!(screen.text().is_some());
        assert!(screen.request_display_size(1280, 800));
        assert!(!screen.request_display_size(0, 800));
    }

    #[test]
    fn test_gpu_updates_hand_over_only_what_changed_and_wake_the_pump() {
        use crate::devices::virtio::gpu::{FrameUpdate, PixelFormat, Rect, ScanoutSink};
        use std::sync::atomic::{AtomicU32, Ordering};

        // Arrange: a virtio-vga screen whose pump counts its wake-ups.
        let (_vga, screen, picture) = virtio_vga_screen();
        let wakes = Arc::new(AtomicU32::new(0));
        let counter = wakes.clone();
        screen.set_gpu_waker(Some(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })));
        let pixels = [1u8, 2, 3, 0].repeat(8 * 8);
        let flush = |dirty: Rect| FrameUpdate {
            scanout: 0,
            width: 8,
            height: 8,
            stride: 32,
            format: PixelFormat::B8G8R8X8,
            pixels: &pixels,
            dirty,
        };
        let take = |taken: bool| {
            screen.take_gpu_update(|u| (taken, (u.dirty, u.flushed_at.is_some(), u.pixels.len())))
        };

        // Act and assert: the VGA is the screen, nothing to take.
        assert_eq!(take(true), None);
        // The first picture is new all over, whatever the guest said.
        picture.frame(&flush(Rect::new(1, 1, 1, 1)));
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        assert_eq!(take(true), Some((Some(Rect::new(0, 0, 8, 8)), true, 256)));
        assert_eq!(take(true), Some((None, false, 256)));
        // Two flushes before a take: their union, stamped at the first.
        picture.frame(&flush(Rect::new(1, 1, 2, 2)));
        picture.frame(&flush(Rect::new(5, 4, 1, 3)));
        assert_eq!(take(true), Some((Some(Rect::new(1, 1, 5, 6)), true, 256)));
        // A writer that could not take it gets all of it next time.
        picture.frame(&flush(Rect::new(2, 2, 1, 1)));
        assert_eq!(take(false), Some((Some(Rect::new(2, 2, 1, 1)), true, 256)));
        assert_eq!(take(true), Some((Some(Rect::new(0, 0, 8, 8)), true, 256)));
        // Hostile rectangles are clipped; the driver letting go wakes too.
        picture.frame(&flush(Rect::new(7, 7, u32::MAX, u32::MAX)));
        assert_eq!(take(true), Some((Some(Rect::new(7, 7, 1, 1)), true, 256)));
        let before = wakes.load(Ordering::SeqCst);
        picture.disabled(0);
        assert_eq!(wakes.load(Ordering::SeqCst), before + 1);
        assert_eq!(take(true), None);
    }

    #[test]
    fn test_text_screen_looks_only_at_its_cells_and_fonts() {
        let (vga, screen) = text_screen();
        let range = lock(&vga.vga).shown_vram();
        // 80x25 cells and font bank 0: the first 8 KiB of each plane.
        assert_eq!(range, 0..0x2000 * 4);
        let (mut frame, mut shown) = (Frame::default(), Shown::default());
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(screen.render_changed(&mut frame, &mut shown, t0));
        // A glyph byte (plane 2) written through the BAR shows.
        vga.vram.write(0x100 * 4 + 2, &[0x55]);
        assert!(screen.render_changed(&mut frame, &mut shown, ms(1)));
        // Memory no cell or font reaches does not.
        vga.vram.write(0x3_0000, &[0x55]);
        assert!(!screen.render_changed(&mut frame, &mut shown, ms(2)));
    }

    #[test]
    fn test_cursor_blinks_then_stays_on_until_input() {
        let (_vga, screen) = text_screen();
        let (mut frame, mut shown) = (Frame::default(), Shown::default());
        let t0 = Instant::now();
        assert!(screen.render_changed(&mut frame, &mut shown, t0));
        // While active, each blink phase is a new frame, lit and unlit.
        let mut lit = Vec::new();
        for k in 1..=4u32 {
            if screen.render_changed(&mut frame, &mut shown, t0 + PHASE * k) {
                lit.push(cursor_lit(&frame));
            }
        }
        assert!(lit.len() >= 3, "{lit:?}");
        assert!(lit.contains(&true) && lit.contains(&false), "{lit:?}");
        // Past the timeout: at most one more frame, with the cursor on,
        // then nothing however long the screen stays as it is.
        let late = t0 + BLINK_TIMEOUT + PHASE;
        if screen.render_changed(&mut frame, &mut shown, late) {
            assert!(cursor_lit(&frame));
        }
        for k in 1..100u32 {
            assert!(!screen.render_changed(&mut frame, &mut shown, late + PHASE * k));
        }
        assert_eq!(screen.next_blink(&shown, late), None, "stopped blinking");
        // Input makes it blink again (relative to the real clock).
        screen.note_input();
        let now = Instant::now();
        let blinks = (1..=4u32)
            .filter(|&k| screen.render_changed(&mut frame, &mut shown, now + PHASE * k))
            .count();
        assert!(blinks >= 3, "{blinks}");
        // Looking when it says finds the next blink.
        let at = now + PHASE * 4;
        let wait = screen.next_blink(&shown, at).expect("blinking");
        assert!(wait <= PHASE, "{wait:?}");
        assert!(screen.render_changed(&mut frame, &mut shown, at + wait));
    }
}
