// SPDX-License-Identifier: Apache-2.0
//! An emulated VGA adapter with the Bochs DISPI extension (the QEMU "std
//! VGA" that SeaVGABIOS programs directly): the register file behind the
//! legacy ports 0x3B0..=0x3DF and 0x1CE/0x1CF, the four-plane memory
//! behind the window at 0xA0000, and a renderer that turns the current
//! state into RGBX pixels.
//!
//! The device is a pure model: it owns no bus, window or PCI state. The
//! wiring routes port and window accesses here, maps [`Vram`] into the
//! guest as the linear framebuffer, and calls [`Vga::render`] at the
//! display rate.
//!
//! Memory layout: byte `a` of plane `p` lives at VRAM offset `a * 4 + p`,
//! so a chain-4 (mode 13h) byte address is a VRAM byte address and the
//! planar memory of the standard modes is the first 256 KiB of VRAM.

mod dispi;
mod persist;
mod planes;
mod regs;
mod render;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::{Arc, Mutex, PoisonError};

pub use dispi::DispiMode;
pub use regs::{DISPI_DATA_PORT, DISPI_INDEX_PORT};
pub use render::CURSOR_BLINK_FRAMES;

/// The video memory size the adapter is built with: 16 MiB, enough for
/// 2560x1600 at 32 bits per pixel.
pub const VRAM_SIZE: usize = 16 << 20;

/// The first legacy VGA port.
pub const VGA_PORT_FIRST: u16 = 0x3b0;
/// The last legacy VGA port.
pub const VGA_PORT_LAST: u16 = 0x3df;

/// Guest physical address of the legacy memory window.
pub const WINDOW_BASE: u64 = 0xa0000;
/// Size of the legacy memory window at 0xA0000.
pub const WINDOW_SIZE: u64 = 0x20000;

/// Size of the QEMU-style MMIO register BAR (EDID, VGA ports, DISPI).
pub const MMIO_BAR_SIZE: u64 = 0x1000;

/// Video memory shared with the guest (the linear framebuffer BAR is the
/// same memory, mapped into the guest by KVM).
pub trait Vram: Send + Sync {
    /// The size in bytes.
    fn len(&self) -> usize;
    /// Whether the memory has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset`; parts beyond the end read as 0xff.
    fn read(&self, offset: usize, buf: &mut [u8]);
    /// Stores `data` at `offset`; parts beyond the end are dropped.
    fn write(&self, offset: usize, data: &[u8]);
}

/// A [`Vram`] held in process memory, for tests and for wiring without a
/// shared mapping.
pub struct VecVram(Mutex<Vec<u8>>);

impl VecVram {
    /// A zeroed memory of `size` bytes.
    pub fn new(size: usize) -> Self {
        Self(Mutex::new(vec![0; size]))
    }
}

impl Vram for VecVram {
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn read(&self, offset: usize, buf: &mut [u8]) {
        let mem = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let src = mem.get(offset..).unwrap_or(&[]);
        let n = src.len().min(buf.len());
        let (head, tail) = buf.split_at_mut(n);
        head.copy_from_slice(src.get(..n).unwrap_or(&[]));
        tail.fill(0xff);
    }

    fn write(&self, offset: usize, data: &[u8]) {
        let mut mem = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(dst) = mem.get_mut(offset..) {
            let n = dst.len().min(data.len());
            if let (Some(d), Some(s)) = (dst.get_mut(..n), data.get(..n)) {
                d.copy_from_slice(s);
            }
        }
    }
}

/// What kind of picture the adapter currently produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScreenKind {
    /// Alphanumeric mode with a grid of character cells.
    Text {
        /// Character columns.
        cols: u32,
        /// Character rows.
        rows: u32,
    },
    /// An all-points-addressable mode (planar, packed or DISPI).
    Graphics,
    /// The display is off (screen-off bit, palette being loaded, or
    /// registers describing no picture); renders black.
    Blank,
}

/// The picture's size in pixels and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VgaPicture {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Text, graphics or blank.
    pub kind: ScreenKind,
}

/// The VGA adapter: registers, latches and the DISPI extension over a
/// shared [`Vram`].
pub struct Vga {
    vram: Arc<dyn Vram>,
    regs: regs::Regs,
    dispi: dispi::Dispi,
    latch: [u8; 4],
    /// Reused copy of the part of VRAM a frame reads.
    scratch: Vec<u8>,
    /// Counts port and window writes (anything that may change the
    /// picture other than a write straight into the linear framebuffer).
    generation: u64,
}

impl Vga {
    /// An adapter in its power-on state (display blank until firmware
    /// programs it) over `vram`.
    pub fn new(vram: Arc<dyn Vram>) -> Self {
        let vram_len = vram.len();
        Self {
            vram,
            regs: regs::Regs::default(),
            dispi: dispi::Dispi::new(vram_len),
            latch: [0; 4],
            scratch: Vec::new(),
            generation: 0,
        }
    }

    /// Whether the DISPI (VBE) mode is on: the picture then comes from the
    /// linear framebuffer and the 0xA0000 window is a bank of it.
    pub fn dispi_enabled(&self) -> bool {
        self.dispi.enabled()
    }

    /// The DISPI mode's geometry while it is on.
    pub fn dispi_mode(&self) -> Option<DispiMode> {
        self.dispi.mode()
    }

    /// Moves on with every port or window write: while it stays put, the
    /// picture can only change through the linear framebuffer (see
    /// [`Vga::shown_vram`]) or the blink phases.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn note_write(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    fn vram_byte(&self, offset: usize) -> u8 {
        let mut b = [0xff];
        self.vram.read(offset, &mut b);
        let [v] = b;
        v
    }

    fn set_vram_byte(&self, offset: usize, value: u8) {
        self.vram.write(offset, &[value]);
    }
}
