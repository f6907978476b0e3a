// SPDX-License-Identifier: Apache-2.0
//! The PCI "standard VGA" adapter (1234:1111, the ID of QEMU's `-vga std`,
//! so SeaVGABIOS's `vgabios-stdvga.bin` drives it): the legacy VGA ports,
//! the memory window at 0xA0000, the Bochs DISPI registers, and video memory
//! as BAR 0, mapped straight into the guest so framebuffer writes never exit.
//!
//! The VGA model itself lives in [`crate::devices::vga`]; this module puts
//! it on the buses and the PCI bus and gives the host a [`Screen`] to render.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::bus::BusDevice;
use crate::device_ram::DeviceRam;
use crate::devices::pci::{BarKind, BarMapping, BarRam, ConfigSpace, PciDevice};
use crate::devices::vga::{ScreenKind, VRAM_SIZE, Vga, Vram};

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
    pub fn screen(&self) -> Screen {
        Screen {
            vga: self.vga.clone(),
            vram: self.vram.clone(),
            started: Instant::now(),
        }
    }
}

impl PciDevice for StdVga {
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

/// The guest's screen as the host sees it; cheap to clone, usable from any
/// thread.
#[derive(Clone)]
pub struct Screen {
    vga: Arc<Mutex<Vga>>,
    vram: Arc<DeviceRam>,
    started: Instant,
}

impl Screen {
    /// Renders the current screen into `frame` (reusing its buffer).
    pub fn render(&self, frame: &mut Frame) {
        // Blink phases run at ~60 frames per second of wall time.
        let tick = (self.started.elapsed().as_millis() / 16) as u64;
        let mut vga = lock(&self.vga);
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

    /// The text on screen, one string per row, when in a text mode
    /// (code page 437 bytes; non-ASCII shown as '?').
    pub fn text(&self) -> Option<Vec<String>> {
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
