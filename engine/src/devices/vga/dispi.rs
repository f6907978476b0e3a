// SPDX-License-Identifier: Apache-2.0
//! The Bochs DISPI ("VBE display interface") extension: an index/data
//! register pair that sets a linear framebuffer mode directly (resolution,
//! depth, virtual size, panning offsets, a 64 KiB bank for the legacy
//! window and an 8-bit DAC switch). Every mode is checked against the VRAM
//! size before it takes effect.

use super::Vga;

const INDEX_ID: u16 = 0;
const INDEX_XRES: u16 = 1;
const INDEX_YRES: u16 = 2;
const INDEX_BPP: u16 = 3;
const INDEX_ENABLE: u16 = 4;
const INDEX_BANK: u16 = 5;
const INDEX_VIRT_WIDTH: u16 = 6;
const INDEX_VIRT_HEIGHT: u16 = 7;
const INDEX_X_OFFSET: u16 = 8;
const INDEX_Y_OFFSET: u16 = 9;
const INDEX_VIDEO_MEMORY_64K: u16 = 10;

/// The first and the newest interface versions.
const ID0: u16 = 0xb0c0;
const ID5: u16 = 0xb0c5;

/// ENABLE bits.
const ENABLED: u16 = 0x01;
const GETCAPS: u16 = 0x02;
const DAC_8BIT: u16 = 0x20;
const LFB_ENABLED: u16 = 0x40;
const NOCLEARMEM: u16 = 0x80;
const ENABLE_BITS: u16 = ENABLED | GETCAPS | DAC_8BIT | LFB_ENABLED | NOCLEARMEM;

/// The largest mode offered (GETCAPS answers these).
pub(super) const MAX_XRES: u16 = 2560;
pub(super) const MAX_YRES: u16 = 1600;
pub(super) const MAX_BPP: u16 = 32;

const BANK_SIZE: usize = 0x10000;

/// The active DISPI mode, for the renderer and the wiring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispiMode {
    /// Visible width in pixels.
    pub width: u32,
    /// Visible height in pixels.
    pub height: u32,
    /// Bits per pixel: 4 (planar), 8, 15, 16, 24 or 32.
    pub bpp: u32,
    /// Bytes from one line to the next (plane bytes for 4 bpp).
    pub line_bytes: usize,
    /// VRAM offset of the first visible pixel (plane byte offset for 4 bpp).
    pub start: usize,
    /// Whether the guest asked for the linear framebuffer.
    pub lfb: bool,
}

/// Bytes per pixel of a DISPI depth (0 for the planar 4 bpp), or `None` for
/// a depth the adapter does not do.
fn bytes_per_pixel(bpp: u16) -> Option<usize> {
    match bpp {
        4 => Some(0),
        8 => Some(1),
        15 | 16 => Some(2),
        24 => Some(3),
        32 => Some(4),
        _ => None,
    }
}

/// The geometry a set of register values gives, if it fits in `vram_len`.
#[allow(clippy::too_many_arguments)]
fn geometry(
    xres: u16,
    yres: u16,
    bpp: u16,
    virt_width: u16,
    virt_height: u16,
    x_offset: u16,
    y_offset: u16,
    vram_len: usize,
) -> Option<DispiMode> {
    let bytes = bytes_per_pixel(bpp)?;
    if xres == 0 || yres == 0 || xres > MAX_XRES || yres > MAX_YRES {
        return None;
    }
    if virt_width < xres || virt_height < yres {
        return None;
    }
    let (vw, vh) = (usize::from(virt_width), usize::from(virt_height));
    let (x, y) = (usize::from(x_offset), usize::from(y_offset));
    let (line_bytes, start, row_bytes, vram_per_byte) = if bytes == 0 {
        // Planar: 8 pixels per plane byte, 4 VRAM bytes per plane byte.
        let line = vw.div_ceil(8);
        (
            line,
            y.checked_mul(line)?.checked_add(x / 8)?,
            usize::from(xres).div_ceil(8),
            4,
        )
    } else {
        let line = vw.checked_mul(bytes)?;
        let start = y.checked_mul(vw)?.checked_add(x)?.checked_mul(bytes)?;
        (line, start, usize::from(xres).checked_mul(bytes)?, 1)
    };
    let total = line_bytes.checked_mul(vh)?.checked_mul(vram_per_byte)?;
    let visible_end = usize::from(yres - 1)
        .checked_mul(line_bytes)?
        .checked_add(start)?
        .checked_add(row_bytes)?
        .checked_mul(vram_per_byte)?;
    if total > vram_len || visible_end > vram_len {
        return None;
    }
    Some(DispiMode {
        width: u32::from(xres),
        height: u32::from(yres),
        bpp: u32::from(bpp),
        line_bytes,
        start,
        lfb: false,
    })
}

/// The DISPI register file (saved as is with the machine's state).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Dispi {
    index: u16,
    id: u16,
    xres: u16,
    yres: u16,
    bpp: u16,
    enable: u16,
    bank: u16,
    virt_width: u16,
    virt_height: u16,
    x_offset: u16,
    y_offset: u16,
    vram_len: usize,
}

impl Dispi {
    /// The video memory size the registers were built for.
    pub fn vram_len(&self) -> usize {
        self.vram_len
    }

    pub fn new(vram_len: usize) -> Self {
        Self {
            index: 0,
            id: ID5,
            xres: 640,
            yres: 480,
            bpp: 8,
            enable: 0,
            bank: 0,
            virt_width: 640,
            virt_height: 480,
            x_offset: 0,
            y_offset: 0,
            vram_len,
        }
    }

    pub fn index(&self) -> u16 {
        self.index
    }

    pub fn set_index(&mut self, index: u16) {
        self.index = index;
    }

    pub fn enabled(&self) -> bool {
        self.enable & ENABLED != 0
    }

    pub fn dac_8bit(&self) -> bool {
        self.enable & DAC_8BIT != 0
    }

    /// The banked window's VRAM offset when the window shows packed pixels
    /// (DISPI on at 8 bpp or more); `None` when it shows the planes.
    pub fn packed_bank_base(&self) -> Option<usize> {
        (self.enabled() && self.bpp != 4).then(|| usize::from(self.bank) * BANK_SIZE)
    }

    /// The plane-byte offset the window adds in the planar 4 bpp mode.
    pub fn planar_bank_base(&self) -> usize {
        if self.enabled() {
            usize::from(self.bank) * BANK_SIZE
        } else {
            0
        }
    }

    fn current_geometry(&self) -> Option<DispiMode> {
        geometry(
            self.xres,
            self.yres,
            self.bpp,
            self.virt_width,
            self.virt_height,
            self.x_offset,
            self.y_offset,
            self.vram_len,
        )
    }

    pub fn mode(&self) -> Option<DispiMode> {
        if !self.enabled() {
            return None;
        }
        let mut mode = self.current_geometry()?;
        mode.lfb = self.enable & LFB_ENABLED != 0;
        Some(mode)
    }

    fn banks(&self) -> usize {
        self.vram_len / BANK_SIZE
    }

    /// Register `reg`'s value.
    pub fn read_reg(&self, reg: u16) -> u16 {
        let caps = self.enable & GETCAPS != 0;
        match reg {
            INDEX_ID => self.id,
            INDEX_XRES if caps => MAX_XRES,
            INDEX_YRES if caps => MAX_YRES,
            INDEX_BPP if caps => MAX_BPP,
            INDEX_XRES => self.xres,
            INDEX_YRES => self.yres,
            INDEX_BPP => self.bpp,
            INDEX_ENABLE => self.enable,
            INDEX_BANK => self.bank,
            INDEX_VIRT_WIDTH => self.virt_width,
            INDEX_VIRT_HEIGHT => self.virt_height,
            INDEX_X_OFFSET => self.x_offset,
            INDEX_Y_OFFSET => self.y_offset,
            INDEX_VIDEO_MEMORY_64K => u16::try_from(self.banks()).unwrap_or(u16::MAX),
            _ => 0,
        }
    }

    /// The register the index selects.
    pub fn read(&self) -> u16 {
        self.read_reg(self.index)
    }

    /// Sets the virtual width and the largest virtual height VRAM holds,
    /// if the result still fits the visible mode.
    fn set_virt_width(&mut self, value: u16) {
        let Some(bytes) = bytes_per_pixel(self.bpp) else {
            return;
        };
        let line = if bytes == 0 {
            usize::from(value).div_ceil(8) * 4
        } else {
            usize::from(value) * bytes
        };
        let height = self.vram_len.checked_div(line).unwrap_or(0);
        let height = u16::try_from(height).unwrap_or(u16::MAX);
        let (old_w, old_h) = (self.virt_width, self.virt_height);
        self.virt_width = value;
        self.virt_height = height;
        if self.enabled() && self.current_geometry().is_none() {
            log::debug!("vga: DISPI virtual width {value} rejected");
            self.virt_width = old_w;
            self.virt_height = old_h;
        }
    }

    /// Sets a register that changes the geometry, undoing it when the mode
    /// is on and the result no longer fits.
    fn set_checked(&mut self, reg: u16, value: u16) {
        let field = match reg {
            INDEX_VIRT_HEIGHT => &mut self.virt_height,
            INDEX_X_OFFSET => &mut self.x_offset,
            INDEX_Y_OFFSET => &mut self.y_offset,
            _ => return,
        };
        let old = std::mem::replace(field, value);
        if self.enabled() && self.current_geometry().is_none() {
            log::debug!("vga: DISPI register {reg} value {value} rejected");
            let field = match reg {
                INDEX_VIRT_HEIGHT => &mut self.virt_height,
                INDEX_X_OFFSET => &mut self.x_offset,
                _ => &mut self.y_offset,
            };
            *field = old;
        }
    }
}

impl Vga {
    /// A write to the DISPI data port, to the register the index selects.
    pub(super) fn dispi_write(&mut self, value: u16) {
        let d = &mut self.dispi;
        let enabled = d.enabled();
        match d.index {
            INDEX_ID => {
                if (ID0..=ID5).contains(&value) {
                    d.id = value;
                } else {
                    log::debug!("vga: DISPI id {value:#06x} refused");
                }
            }
            INDEX_XRES | INDEX_YRES | INDEX_BPP if enabled => {
                log::debug!(
                    "vga: DISPI register {} written while enabled, ignored",
                    d.index
                );
            }
            INDEX_XRES if value <= MAX_XRES => d.xres = value,
            INDEX_YRES if value <= MAX_YRES => d.yres = value,
            INDEX_BPP => {
                let bpp = if value == 0 { 8 } else { value };
                if bytes_per_pixel(bpp).is_some() {
                    d.bpp = bpp;
                } else {
                    log::debug!("vga: DISPI depth {value} refused");
                }
            }
            INDEX_ENABLE => self.dispi_enable(value),
            INDEX_BANK => {
                if usize::from(value) < d.banks() {
                    d.bank = value;
                } else {
                    log::debug!("vga: DISPI bank {value} beyond VRAM");
                }
            }
            INDEX_VIRT_WIDTH => d.set_virt_width(value),
            reg @ (INDEX_VIRT_HEIGHT | INDEX_X_OFFSET | INDEX_Y_OFFSET) => {
                d.set_checked(reg, value);
            }
            reg => log::debug!("vga: DISPI write {value:#06x} to register {reg} ignored"),
        }
    }

    fn dispi_enable(&mut self, value: u16) {
        let value = value & ENABLE_BITS;
        let d = &mut self.dispi;
        if value & ENABLED == 0 || d.enabled() {
            // Turning off, or changing GETCAPS/DAC/LFB bits of a running
            // mode: the geometry stays.
            d.enable = value;
            return;
        }
        d.virt_width = d.xres;
        d.virt_height = d.yres;
        d.x_offset = 0;
        d.y_offset = 0;
        d.bank = 0;
        let Some(mode) = d.current_geometry() else {
            log::debug!(
                "vga: DISPI mode {}x{}x{} does not fit VRAM, staying disabled",
                d.xres,
                d.yres,
                d.bpp
            );
            d.enable = value & !ENABLED;
            return;
        };
        d.enable = value;
        if value & NOCLEARMEM == 0 {
            let per = if mode.bpp == 4 { 4 } else { 1 };
            let len = mode
                .line_bytes
                .saturating_mul(usize::from(d.virt_height))
                .saturating_mul(per)
                .min(d.vram_len);
            let zeros = vec![0u8; BANK_SIZE];
            let mut off = 0;
            while off < len {
                let n = (len - off).min(BANK_SIZE);
                self.vram.write(off, zeros.get(..n).unwrap_or(&[]));
                off += n;
            }
        }
    }
}
