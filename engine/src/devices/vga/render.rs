// SPDX-License-Identifier: Apache-2.0
//! Turns the register state and video memory into a picture: the layout
//! the CRTC, sequencer, graphics and attribute registers describe (text,
//! 16-colour planar, CGA 4-colour, 256-colour chained or unchained, or a
//! DISPI mode), and the RGBX pixels of one frame of it.

use super::dispi::DispiMode;
use super::planes::PLANE_SIZE;
use super::regs::ATTR_PAS;
use super::{ScreenKind, Vga, VgaPicture};

/// Bytes of VRAM the standard modes can reach: four 64 KiB planes.
const PLANAR_BYTES: usize = PLANE_SIZE * 4;

/// Frames per cursor blink phase.
pub const CURSOR_BLINK_FRAMES: u64 = 16;
/// Frames per attribute blink phase.
const ATTR_BLINK_FRAMES: u64 = 32;

/// How the shift registers turn planes into pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shift {
    /// One bit from each of the four planes per pixel.
    Planar,
    /// Two bits per pixel from interleaved planes 0/1 (CGA modes 4/5).
    Cga,
    /// One byte per pixel, planes in turn (mode 13h and mode X).
    Packed,
}

/// CRTC addressing shared by text and graphics.
#[derive(Debug, Clone, Copy)]
struct Addressing {
    /// Start address in CRTC counter units.
    start: usize,
    /// Counter units from one character row to the next.
    row_units: usize,
    /// Plane bytes per counter unit (2 in word mode).
    scale: usize,
    /// Scan lines per character row.
    lines_per_row: usize,
    /// Row scan bit 0 replaces address bit 13 (CGA interleave).
    cga_bit13: bool,
    /// Row scan bit 1 replaces address bit 14 (Hercules interleave).
    herc_bit14: bool,
}

impl Addressing {
    /// The plane offset of counter unit `unit` on scan line `rs` of row
    /// `row`.
    fn plane_offset(&self, row: usize, rs: usize, unit: usize) -> usize {
        let counter = self
            .start
            .wrapping_add(row.wrapping_mul(self.row_units))
            .wrapping_add(unit)
            & 0xffff;
        let mut a = counter.wrapping_mul(self.scale);
        if self.cga_bit13 {
            a = (a & !0x2000) | ((rs & 1) << 13);
        }
        if self.herc_bit14 {
            a = (a & !0x4000) | ((rs >> 1 & 1) << 14);
        }
        a % PLANE_SIZE
    }

    /// Whether every scan line of a character row shows the same memory.
    fn rows_repeat(&self) -> bool {
        !self.cga_bit13 && !self.herc_bit14
    }
}

/// Text mode geometry.
#[derive(Debug, Clone, Copy)]
struct TextLayout {
    cols: usize,
    rows: usize,
    char_w: usize,
    char_h: usize,
    addr: Addressing,
}

/// Standard graphics mode geometry.
#[derive(Debug, Clone, Copy)]
struct GfxLayout {
    width: usize,
    height: usize,
    shift: Shift,
    addr: Addressing,
    /// Logical lines are whole character rows (scan lines repeat).
    merged: bool,
}

/// What the registers describe.
#[derive(Debug, Clone, Copy)]
enum Layout {
    Blank { width: usize, height: usize },
    Text(TextLayout),
    Graphics(GfxLayout),
    Dispi(DispiMode),
}

/// Widens a 6-bit DAC value to 8 bits.
fn dac6to8(v: u8) -> u8 {
    let v = v & 0x3f;
    (v << 2) | (v >> 4)
}

/// Row `y` of `out`, clipped to the buffer and the stride, `width` pixels
/// at most.
fn out_row(out: &mut [u8], stride: usize, y: usize, width: usize) -> Option<&mut [u8]> {
    let start = y.checked_mul(stride)?;
    let avail = out.len().checked_sub(start)?;
    let len = width.checked_mul(4)?.min(stride).min(avail);
    let len = len - len % 4;
    out.get_mut(start..start.checked_add(len)?)
}

fn put(px: &mut [u8], rgb: [u8; 3]) {
    let [r, g, b] = rgb;
    px.copy_from_slice(&[r, g, b, 0xff]);
}

impl Vga {
    /// The CRTC addressing registers, decoded.
    fn addressing(&self) -> Addressing {
        let r = &self.regs;
        let dword = r.crtc(0x14) & 0x40 != 0;
        let byte_mode = r.crtc(0x17) & 0x40 != 0;
        Addressing {
            start: usize::from(r.crtc(0x0c)) << 8 | usize::from(r.crtc(0x0d)),
            row_units: usize::from(r.crtc(0x13)) * 2,
            scale: if dword || byte_mode { 1 } else { 2 },
            lines_per_row: usize::from(r.crtc(0x09) & 0x1f) + 1,
            cga_bit13: r.crtc(0x17) & 0x01 == 0,
            herc_bit14: r.crtc(0x17) & 0x02 == 0,
        }
    }

    fn layout(&self) -> Layout {
        if let Some(mode) = self.dispi.mode() {
            return Layout::Dispi(mode);
        }
        let r = &self.regs;
        let hde = usize::from(r.crtc(0x01)) + 1;
        let c7 = usize::from(r.crtc(0x07));
        let vde = (usize::from(r.crtc(0x12)) | (c7 >> 1 & 1) << 8 | (c7 >> 6 & 1) << 9) + 1;
        let double = if r.crtc(0x09) & 0x80 != 0 { 2 } else { 1 };
        let scan_lines = vde / double;
        let addr = self.addressing();
        let blank = r.seq(1) & 0x20 != 0 || r.attr_index & ATTR_PAS == 0;
        let layout = if r.gc(6) & 0x01 == 0 {
            let char_w = if r.seq(1) & 0x01 != 0 { 8 } else { 9 };
            let char_h = addr.lines_per_row;
            let rows = scan_lines / char_h;
            if rows == 0 {
                return Layout::Blank {
                    width: 0,
                    height: 0,
                };
            }
            Layout::Text(TextLayout {
                cols: hde,
                rows,
                char_w,
                char_h,
                addr,
            })
        } else {
            let shift = match r.gc(5) >> 5 & 3 {
                0 => Shift::Planar,
                1 => Shift::Cga,
                _ => Shift::Packed,
            };
            let width = if shift == Shift::Packed {
                hde * 4
            } else {
                hde * 8
            };
            let merged = addr.rows_repeat();
            let height = if merged {
                scan_lines / addr.lines_per_row
            } else {
                scan_lines
            };
            if height == 0 {
                return Layout::Blank {
                    width: 0,
                    height: 0,
                };
            }
            Layout::Graphics(GfxLayout {
                width,
                height,
                shift,
                addr,
                merged,
            })
        };
        if blank {
            let s = Self::layout_screen(&layout);
            return Layout::Blank {
                width: s.width as usize,
                height: s.height as usize,
            };
        }
        layout
    }

    fn layout_screen(layout: &Layout) -> VgaPicture {
        let (width, height, kind) = match *layout {
            Layout::Blank { width, height } => (width, height, ScreenKind::Blank),
            Layout::Text(t) => (
                t.cols * t.char_w,
                t.rows * t.char_h,
                ScreenKind::Text {
                    cols: t.cols as u32,
                    rows: t.rows as u32,
                },
            ),
            Layout::Graphics(g) => (g.width, g.height, ScreenKind::Graphics),
            Layout::Dispi(m) => (m.width as usize, m.height as usize, ScreenKind::Graphics),
        };
        VgaPicture {
            width: width as u32,
            height: height as u32,
            kind,
        }
    }

    /// What the screen currently shows: its size in pixels and whether it
    /// is text, graphics or blank.
    pub fn screen(&self) -> VgaPicture {
        Self::layout_screen(&self.layout())
    }

    /// The bytes of VRAM the current picture is made from (empty while the
    /// screen is blank): while they and [`Vga::generation`] stay the same,
    /// so does the picture, but for the blink phases.
    pub fn shown_vram(&self) -> std::ops::Range<usize> {
        let (start, end) = match self.layout() {
            Layout::Blank { .. } => (0, 0),
            Layout::Text(t) => (0, self.text_vram_end(&t)),
            Layout::Graphics(_) => (0, PLANAR_BYTES),
            Layout::Dispi(m) => {
                let (width, height) = (m.width as usize, m.height as usize);
                // Planar 4 bpp counts plane bytes: four VRAM bytes each.
                let (unit, row) = match m.bpp {
                    4 => (4, width.div_ceil(8)),
                    8 => (1, width),
                    15 | 16 => (1, width.saturating_mul(2)),
                    24 => (1, width.saturating_mul(3)),
                    _ => (1, width.saturating_mul(4)),
                };
                let start = m.start.saturating_mul(unit);
                let span = height
                    .saturating_sub(1)
                    .saturating_mul(m.line_bytes)
                    .saturating_add(row)
                    .saturating_mul(unit);
                (start, start.saturating_add(span))
            }
        };
        let len = self.vram.len();
        start.min(len)..end.min(len)
    }

    /// The end of the VRAM a text screen reads: its character cells
    /// (planes 0 and 1) and the two font banks its attributes may pick
    /// (plane 2), far less than all four planes.
    fn text_vram_end(&self, t: &TextLayout) -> usize {
        let cells = (0..t.rows)
            .flat_map(|row| (0..t.cols).map(move |col| (row, col)))
            .map(|(row, col)| t.addr.plane_offset(row, 0, col))
            .max()
            .unwrap_or(0);
        // 256 glyphs of 32 bytes from each bank's start.
        let (font_a, font_b) = self.font_bases();
        let end = (cells + 1).max(font_a.max(font_b) + 256 * 32);
        end.saturating_mul(4).min(PLANAR_BYTES)
    }

    /// The plane-2 offsets of the fonts of attributes with bit 3 set and
    /// clear (character map select, sequencer register 3).
    fn font_bases(&self) -> (usize, usize) {
        let map = self.regs.seq(3);
        let bank_a = usize::from((map >> 5 & 1) << 2 | (map >> 2 & 3));
        let bank_b = usize::from((map >> 4 & 1) << 2 | (map & 3));
        let base = |bank: usize| (bank & 3) * 0x4000 + (bank >> 2) * 0x2000;
        (base(bank_a), base(bank_b))
    }

    /// The blink phase display frame `frame` falls in for the current
    /// picture: text modes change every [`CURSOR_BLINK_FRAMES`] (the
    /// cursor; attribute blink takes two of those), graphics never blink.
    pub fn blink_phase(&self, frame: u64) -> u64 {
        match self.layout() {
            Layout::Text(_) => frame / CURSOR_BLINK_FRAMES,
            _ => 0,
        }
    }

    /// DAC entry `index` (after the pixel mask) as 8-bit RGB.
    fn dac_rgb(&self, index: u8) -> [u8; 3] {
        let i = usize::from(index & self.regs.dac_mask) * 3;
        let c = |k: usize| self.regs.dac.get(i + k).copied().unwrap_or(0);
        let (r, g, b) = (c(0), c(1), c(2));
        if self.dispi.dac_8bit() {
            [r, g, b]
        } else {
            [dac6to8(r), dac6to8(g), dac6to8(b)]
        }
    }

    /// The 256 DAC colours.
    fn dac_table(&self) -> Vec<[u8; 3]> {
        (0..=255u8).map(|i| self.dac_rgb(i)).collect()
    }

    /// The 16 attribute colours: colour plane enable, palette registers,
    /// colour select, DAC.
    fn palette16(&self) -> [[u8; 3]; 16] {
        let r = &self.regs;
        let mode = r.attr(0x10);
        let select = r.attr(0x14);
        let enable = r.attr(0x12) & 0x0f;
        let mut out = [[0u8; 3]; 16];
        for (c, slot) in out.iter_mut().enumerate() {
            let p = r.attr(c & usize::from(enable));
            let high = if mode & 0x80 != 0 {
                (select & 0x03) << 4
            } else {
                p & 0x30
            };
            let index = (p & 0x0f) | high | (select & 0x0c) << 4;
            *slot = self.dac_rgb(index);
        }
        out
    }

    /// Copies the planar VRAM (the first 256 KiB) into the scratch buffer.
    fn load_planes(&mut self) {
        self.scratch.resize(PLANAR_BYTES, 0);
        self.vram.read(0, &mut self.scratch);
    }

    /// Renders the whole current screen into `out` as RGBX8888 (bytes R,
    /// G, B, 0xff per pixel), rows `stride` bytes apart, at the size
    /// [`Vga::screen`] gives. `frame` counts display frames (~60 Hz) for
    /// the cursor and attribute blink. A too-small `out` gets what fits.
    pub fn render(&mut self, out: &mut [u8], stride: usize, frame: u64) {
        match self.layout() {
            Layout::Blank { width, height } => {
                for y in 0..height {
                    if let Some(row) = out_row(out, stride, y, width) {
                        row.chunks_exact_mut(4).for_each(|px| put(px, [0, 0, 0]));
                    }
                }
            }
            Layout::Text(t) => {
                self.load_planes();
                self.render_text(&t, out, stride, frame);
            }
            Layout::Graphics(g) => {
                self.load_planes();
                self.render_graphics(&g, out, stride);
            }
            Layout::Dispi(m) if m.bpp == 4 => self.render_dispi_planar(&m, out, stride),
            Layout::Dispi(m) => self.render_dispi(&m, out, stride),
        }
    }

    fn render_text(&self, t: &TextLayout, out: &mut [u8], stride: usize, frame: u64) {
        let r = &self.regs;
        let planes = &self.scratch;
        let plane = |p: usize, off: usize| planes.get(off * 4 + p).copied().unwrap_or(0);
        let colors = self.palette16();
        let mode = r.attr(0x10);
        let blink_enabled = mode & 0x08 != 0;
        let line_graphics = mode & 0x04 != 0;
        let blink_on = (frame / ATTR_BLINK_FRAMES) % 2 == 0;
        let cursor_on = (frame / CURSOR_BLINK_FRAMES) % 2 == 0 && r.crtc(0x0a) & 0x20 == 0;
        let cursor_start = usize::from(r.crtc(0x0a) & 0x1f);
        let cursor_end = usize::from(r.crtc(0x0b) & 0x1f);
        let cursor_at = usize::from(r.crtc(0x0e)) << 8 | usize::from(r.crtc(0x0f));
        let underline = usize::from(r.crtc(0x14) & 0x1f);
        let (font_a, font_b) = self.font_bases();
        let a = t.addr;
        for row in 0..t.rows {
            for col in 0..t.cols {
                let off = a.plane_offset(row, 0, col);
                let ch = plane(0, off);
                let attr = plane(1, off);
                let font = if attr & 0x08 != 0 { font_a } else { font_b };
                let glyph_base = font + usize::from(ch) * 32;
                let mut fg = colors
                    .get(usize::from(attr & 0x0f))
                    .copied()
                    .unwrap_or_default();
                let bg_index = if blink_enabled {
                    attr >> 4 & 0x07
                } else {
                    attr >> 4
                };
                let bg = colors
                    .get(usize::from(bg_index))
                    .copied()
                    .unwrap_or_default();
                if blink_enabled && attr & 0x80 != 0 && !blink_on {
                    fg = bg;
                }
                let counter = (a.start + row * a.row_units + col) & 0xffff;
                let is_cursor = cursor_on && counter == cursor_at;
                for line in 0..t.char_h {
                    let y = row * t.char_h + line;
                    let mut bits = if line < 32 {
                        plane(2, glyph_base + line)
                    } else {
                        0
                    };
                    let full = (line == underline && attr & 0x77 == 0x01)
                        || (is_cursor && (cursor_start..=cursor_end).contains(&line));
                    if full {
                        bits = 0xff;
                    }
                    let ninth = t.char_w == 9
                        && bits & 1 != 0
                        && (full || line_graphics && (0xc0..=0xdf).contains(&ch));
                    let width = (col + 1) * t.char_w;
                    let Some(out_line) = out_row(out, stride, y, width) else {
                        continue;
                    };
                    let cell = out_line.get_mut(col * t.char_w * 4..).unwrap_or(&mut []);
                    for (x, px) in cell.chunks_exact_mut(4).enumerate() {
                        let on = if x < 8 {
                            bits >> (7 - x) & 1 != 0
                        } else {
                            ninth
                        };
                        put(px, if on { fg } else { bg });
                    }
                }
            }
        }
    }

    fn render_graphics(&self, g: &GfxLayout, out: &mut [u8], stride: usize) {
        let planes = &self.scratch;
        let plane = |p: usize, off: usize| planes.get(off * 4 + p).copied().unwrap_or(0);
        let colors = self.palette16();
        let dac = self.dac_table();
        let enable = self.regs.attr(0x12) & 0x0f;
        let a = g.addr;
        for y in 0..g.height {
            let (row, rs) = if g.merged {
                (y, 0)
            } else {
                (y / a.lines_per_row, y % a.lines_per_row)
            };
            let Some(line) = out_row(out, stride, y, g.width) else {
                continue;
            };
            for (x, px) in line.chunks_exact_mut(4).enumerate() {
                let rgb = match g.shift {
                    Shift::Planar => {
                        let off = a.plane_offset(row, rs, x / 8);
                        let bit = 7 - (x % 8);
                        let c = (0..4).fold(0u8, |c, p| c | (plane(p, off) >> bit & 1) << p);
                        colors.get(usize::from(c & enable)).copied()
                    }
                    Shift::Cga => {
                        let off = a.plane_offset(row, rs, x / 8);
                        let within = x % 8;
                        let (lo, hi) = if within < 4 { (0, 2) } else { (1, 3) };
                        let shift = 6 - 2 * (within % 4);
                        let c = (plane(lo, off) >> shift & 3) | (plane(hi, off) >> shift & 3) << 2;
                        colors.get(usize::from(c & enable)).copied()
                    }
                    Shift::Packed => {
                        let off = a.plane_offset(row, rs, x / 4);
                        dac.get(usize::from(plane(x % 4, off))).copied()
                    }
                };
                put(px, rgb.unwrap_or_default());
            }
        }
    }

    fn render_dispi(&self, m: &DispiMode, out: &mut [u8], stride: usize) {
        let dac = self.dac_table();
        let (width, height) = (m.width as usize, m.height as usize);
        let bytes = match m.bpp {
            8 => 1,
            15 | 16 => 2,
            24 => 3,
            _ => 4,
        };
        let mut line = vec![0u8; width * bytes];
        for y in 0..height {
            let Some(out_line) = out_row(out, stride, y, width) else {
                continue;
            };
            let start = y
                .checked_mul(m.line_bytes)
                .and_then(|o| o.checked_add(m.start));
            match start {
                Some(start) => self.vram.read(start, &mut line),
                None => line.fill(0),
            }
            for (px, src) in out_line.chunks_exact_mut(4).zip(line.chunks_exact(bytes)) {
                let rgb = match (m.bpp, src) {
                    (8, [i]) => dac.get(usize::from(*i)).copied().unwrap_or_default(),
                    (15, [lo, hi]) => {
                        let v = u16::from_le_bytes([*lo, *hi]);
                        let c5 = |s: u16| {
                            let c = (v >> s & 0x1f) as u8;
                            (c << 3) | (c >> 2)
                        };
                        [c5(10), c5(5), c5(0)]
                    }
                    (16, [lo, hi]) => {
                        let v = u16::from_le_bytes([*lo, *hi]);
                        let r = (v >> 11 & 0x1f) as u8;
                        let g = (v >> 5 & 0x3f) as u8;
                        let b = (v & 0x1f) as u8;
                        [
                            (r << 3) | (r >> 2),
                            (g << 2) | (g >> 4),
                            (b << 3) | (b >> 2),
                        ]
                    }
                    (_, [b, g, r, ..]) => [*r, *g, *b],
                    _ => [0, 0, 0],
                };
                put(px, rgb);
            }
        }
    }

    fn render_dispi_planar(&mut self, m: &DispiMode, out: &mut [u8], stride: usize) {
        let (width, height) = (m.width as usize, m.height as usize);
        let units = width.div_ceil(8);
        let colors = self.palette16();
        let enable = self.regs.attr(0x12) & 0x0f;
        let mut line = vec![0u8; units * 4];
        for y in 0..height {
            let Some(out_line) = out_row(out, stride, y, width) else {
                continue;
            };
            let start = y
                .checked_mul(m.line_bytes)
                .and_then(|o| o.checked_add(m.start))
                .and_then(|o| o.checked_mul(4));
            match start {
                Some(start) => self.vram.read(start, &mut line),
                None => line.fill(0),
            }
            for (x, px) in out_line.chunks_exact_mut(4).enumerate() {
                let bit = 7 - (x % 8);
                let base = (x / 8) * 4;
                let c = (0..4).fold(0u8, |c, p| {
                    c | (line.get(base + p).copied().unwrap_or(0) >> bit & 1) << p
                });
                put(
                    px,
                    colors
                        .get(usize::from(c & enable))
                        .copied()
                        .unwrap_or_default(),
                );
            }
        }
    }

    /// In text mode, the characters of each row (code page 437 bytes,
    /// trailing spaces kept); `None` in graphics modes.
    pub fn text_rows(&self) -> Option<Vec<Vec<u8>>> {
        let Layout::Text(t) = self.layout() else {
            return None;
        };
        let rows = (0..t.rows)
            .map(|row| {
                (0..t.cols)
                    .map(|col| {
                        let off = t.addr.plane_offset(row, 0, col);
                        self.vram_byte(off * 4)
                    })
                    .collect()
            })
            .collect();
        Some(rows)
    }
}
