// SPDX-License-Identifier: Apache-2.0
//! The VGA register file behind ports 0x3B0..=0x3DF (miscellaneous output,
//! input status, sequencer, graphics controller, attribute controller,
//! CRTC, DAC) and the port dispatch, including the DISPI index/data pair
//! at 0x1CE/0x1CF and the QEMU-style MMIO register BAR.

use super::{VGA_PORT_FIRST, VGA_PORT_LAST, Vga};

/// Sequencer registers.
pub(super) const SEQ_COUNT: usize = 5;
/// Graphics controller registers.
pub(super) const GC_COUNT: usize = 9;
/// Attribute controller registers.
pub(super) const ATTR_COUNT: usize = 21;
/// CRTC registers.
pub(super) const CRTC_COUNT: usize = 25;

/// The DISPI index port.
pub const DISPI_INDEX_PORT: u16 = 0x1ce;
/// The DISPI data port.
pub const DISPI_DATA_PORT: u16 = 0x1cf;

/// Writable bits of each sequencer register.
const SEQ_MASK: [u8; SEQ_COUNT] = [0x03, 0x3d, 0x0f, 0x3f, 0x0e];
/// Writable bits of each graphics controller register.
const GC_MASK: [u8; GC_COUNT] = [0x0f, 0x0f, 0x0f, 0x1f, 0x03, 0x7b, 0x0f, 0x0f, 0xff];

/// Misc output bit 0: CRTC and input status 1 at 0x3Dx (else 0x3Bx).
const MISC_COLOR_IO: u8 = 0x01;
/// Attribute index bit 5: palette address source (clear = screen blank).
pub(super) const ATTR_PAS: u8 = 0x20;
/// CRTC 0x11 bit 7: registers 0-7 are write protected.
const CRTC_PROTECT: u8 = 0x80;
/// Input status 1: display enable (inverted) and vertical retrace.
const STATUS1_RETRACE: u8 = 0x09;

/// The register state, as the ports show it.
pub(super) struct Regs {
    pub misc: u8,
    pub feature: u8,
    pub video_enable: u8,
    pub seq_index: u8,
    pub seq: [u8; SEQ_COUNT],
    pub gc_index: u8,
    pub gc: [u8; GC_COUNT],
    /// Attribute index including the palette address source bit.
    pub attr_index: u8,
    /// The 0x3C0 flip-flop: the next write is data (else index).
    pub attr_data_next: bool,
    pub attr: [u8; ATTR_COUNT],
    pub crtc_index: u8,
    pub crtc: [u8; CRTC_COUNT],
    pub dac_mask: u8,
    pub dac_read_index: u8,
    pub dac_write_index: u8,
    /// Which of R, G, B the next 0x3C9 access is.
    pub dac_component: u8,
    /// The DAC state register: last index written was the read index.
    pub dac_reading: bool,
    pub dac: [u8; 768],
    /// Toggled on every input status 1 read so polling loops end.
    pub retrace: bool,
}

impl Default for Regs {
    fn default() -> Self {
        Self {
            misc: 0,
            feature: 0,
            video_enable: 1,
            seq_index: 0,
            seq: [0; SEQ_COUNT],
            gc_index: 0,
            gc: [0; GC_COUNT],
            attr_index: 0,
            attr_data_next: false,
            attr: [0; ATTR_COUNT],
            crtc_index: 0,
            crtc: [0; CRTC_COUNT],
            dac_mask: 0xff,
            dac_read_index: 0,
            dac_write_index: 0,
            dac_component: 0,
            dac_reading: false,
            dac: [0; 768],
            retrace: false,
        }
    }
}

impl Regs {
    /// Sequencer register `i` (0 when out of range).
    pub fn seq(&self, i: usize) -> u8 {
        self.seq.get(i).copied().unwrap_or(0)
    }

    /// Graphics controller register `i`.
    pub fn gc(&self, i: usize) -> u8 {
        self.gc.get(i).copied().unwrap_or(0)
    }

    /// Attribute controller register `i`.
    pub fn attr(&self, i: usize) -> u8 {
        self.attr.get(i).copied().unwrap_or(0)
    }

    /// CRTC register `i`.
    pub fn crtc(&self, i: usize) -> u8 {
        self.crtc.get(i).copied().unwrap_or(0)
    }

    /// Whether the CRTC and input status 1 live at 0x3Dx.
    fn color_io(&self) -> bool {
        self.misc & MISC_COLOR_IO != 0
    }

    /// Whether `port` is a CRTC/status port of the mode not selected.
    fn other_io(&self, port: u16) -> bool {
        let mono = matches!(port, 0x3b4 | 0x3b5 | 0x3ba);
        let color = matches!(port, 0x3d4 | 0x3d5 | 0x3da);
        (mono && self.color_io()) || (color && !self.color_io())
    }

    fn dac_slot(index: u8, component: u8) -> usize {
        usize::from(index) * 3 + usize::from(component % 3)
    }

    fn crtc_write(&mut self, value: u8) {
        let index = usize::from(self.crtc_index);
        let protected = self.crtc(0x11) & CRTC_PROTECT != 0;
        let Some(reg) = self.crtc.get_mut(index) else {
            log::debug!("vga: write to CRTC register {index:#04x} ignored");
            return;
        };
        if protected && index <= 7 {
            // Only the line compare bit 8 in the overflow register stays
            // writable.
            if index == 7 {
                *reg = (*reg & !0x10) | (value & 0x10);
            }
            return;
        }
        *reg = value;
    }

    fn attr_write(&mut self, value: u8) {
        if !self.attr_data_next {
            self.attr_index = value & 0x3f;
        } else {
            let index = usize::from(self.attr_index & 0x1f);
            let mask = match index {
                0..=0x0f => 0x3f,
                0x11 => 0xff,
                0x12 => 0x3f,
                0x13 | 0x14 => 0x0f,
                _ => 0xff,
            };
            match self.attr.get_mut(index) {
                Some(reg) => *reg = value & mask,
                None => log::debug!("vga: write to attribute register {index:#04x} ignored"),
            }
        }
        self.attr_data_next = !self.attr_data_next;
    }

    fn dac_data_write(&mut self, value: u8, eight_bit: bool) {
        let slot = Self::dac_slot(self.dac_write_index, self.dac_component);
        if let Some(entry) = self.dac.get_mut(slot) {
            *entry = if eight_bit { value } else { value & 0x3f };
        }
        self.dac_component += 1;
        if self.dac_component >= 3 {
            self.dac_component = 0;
            self.dac_write_index = self.dac_write_index.wrapping_add(1);
        }
    }

    fn dac_data_read(&mut self, eight_bit: bool) -> u8 {
        let slot = Self::dac_slot(self.dac_read_index, self.dac_component);
        let value = self.dac.get(slot).copied().unwrap_or(0);
        self.dac_component += 1;
        if self.dac_component >= 3 {
            self.dac_component = 0;
            self.dac_read_index = self.dac_read_index.wrapping_add(1);
        }
        if eight_bit { value } else { value & 0x3f }
    }

    /// One byte written to a VGA port.
    fn write_byte(&mut self, port: u16, value: u8, eight_bit_dac: bool) {
        if self.other_io(port) {
            log::debug!("vga: write {value:#04x} to inactive port {port:#x} ignored");
            return;
        }
        match port {
            0x3c0 => self.attr_write(value),
            0x3c2 => self.misc = value,
            0x3c3 => self.video_enable = value & 1,
            0x3c4 => self.seq_index = value & 0x07,
            0x3c5 => {
                let index = usize::from(self.seq_index);
                match (self.seq.get_mut(index), SEQ_MASK.get(index)) {
                    (Some(reg), Some(mask)) => *reg = value & mask,
                    _ => log::debug!("vga: write to sequencer register {index} ignored"),
                }
            }
            0x3c6 => self.dac_mask = value,
            0x3c7 => {
                self.dac_read_index = value;
                self.dac_component = 0;
                self.dac_reading = true;
            }
            0x3c8 => {
                self.dac_write_index = value;
                self.dac_component = 0;
                self.dac_reading = false;
            }
            0x3c9 => self.dac_data_write(value, eight_bit_dac),
            0x3ce => self.gc_index = value & 0x0f,
            0x3cf => {
                let index = usize::from(self.gc_index);
                match (self.gc.get_mut(index), GC_MASK.get(index)) {
                    (Some(reg), Some(mask)) => *reg = value & mask,
                    _ => log::debug!("vga: write to graphics register {index} ignored"),
                }
            }
            0x3b4 | 0x3d4 => self.crtc_index = value,
            0x3b5 | 0x3d5 => self.crtc_write(value),
            0x3ba | 0x3da => self.feature = value,
            _ => log::debug!("vga: write {value:#04x} to port {port:#x} ignored"),
        }
    }

    /// One byte read from a VGA port.
    fn read_byte(&mut self, port: u16, eight_bit_dac: bool) -> u8 {
        if self.other_io(port) {
            return 0xff;
        }
        match port {
            0x3c0 => self.attr_index,
            0x3c1 => self.attr(usize::from(self.attr_index & 0x1f)),
            // Input status 0: no switch sense, no pending interrupt.
            0x3c2 => 0x00,
            0x3c3 => self.video_enable,
            0x3c4 => self.seq_index,
            0x3c5 => self.seq(usize::from(self.seq_index)),
            0x3c6 => self.dac_mask,
            0x3c7 => {
                if self.dac_reading {
                    0x03
                } else {
                    0x00
                }
            }
            0x3c8 => self.dac_write_index,
            0x3c9 => self.dac_data_read(eight_bit_dac),
            0x3ca => self.feature,
            0x3cc => self.misc,
            0x3ce => self.gc_index,
            0x3cf => self.gc(usize::from(self.gc_index)),
            0x3b4 | 0x3d4 => self.crtc_index,
            0x3b5 | 0x3d5 => self.crtc(usize::from(self.crtc_index)),
            0x3ba | 0x3da => {
                self.attr_data_next = false;
                self.retrace = !self.retrace;
                if self.retrace { STATUS1_RETRACE } else { 0 }
            }
            _ => {
                log::debug!("vga: read from port {port:#x}");
                0xff
            }
        }
    }
}

/// A little-endian value of up to two bytes.
fn le16(data: &[u8]) -> u16 {
    data.iter()
        .take(2)
        .enumerate()
        .fold(0, |acc, (i, b)| acc | u16::from(*b) << (8 * i))
}

/// Stores `value` little-endian into up to two bytes, the rest 0xff.
fn put_le16(data: &mut [u8], value: u16) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = match i {
            0 => value as u8,
            1 => (value >> 8) as u8,
            _ => 0xff,
        };
    }
}

impl Vga {
    /// Reads the legacy VGA ports 0x3B0..=0x3DF and the DISPI ports
    /// 0x1CE/0x1CF. `port` is the absolute port number; a multi-byte access
    /// to a VGA port reads consecutive ports, one to a DISPI port is one
    /// 16-bit register.
    pub fn port_read(&mut self, port: u16, data: &mut [u8]) {
        match port {
            DISPI_INDEX_PORT => put_le16(data, self.dispi.index()),
            DISPI_DATA_PORT => {
                let value = self.dispi.read();
                put_le16(data, value);
            }
            _ => {
                let eight = self.dispi.dac_8bit();
                for (i, b) in data.iter_mut().enumerate() {
                    let p = u16::try_from(i).ok().and_then(|i| port.checked_add(i));
                    *b = match p {
                        Some(p @ VGA_PORT_FIRST..=VGA_PORT_LAST) => self.regs.read_byte(p, eight),
                        _ => 0xff,
                    };
                }
            }
        }
    }

    /// Writes the legacy VGA ports and the DISPI ports; a 16-bit write to
    /// an index port (0x3C4, 0x3CE, 0x3D4, 0x3B4, 0x3C0) is index then
    /// data, as on hardware.
    pub fn port_write(&mut self, port: u16, data: &[u8]) {
        self.note_write();
        match port {
            DISPI_INDEX_PORT => self.dispi.set_index(le16(data)),
            DISPI_DATA_PORT => self.dispi_write(le16(data)),
            _ => {
                let eight = self.dispi.dac_8bit();
                for (i, b) in data.iter().enumerate() {
                    let p = u16::try_from(i).ok().and_then(|i| port.checked_add(i));
                    match p {
                        Some(p @ VGA_PORT_FIRST..=VGA_PORT_LAST) => {
                            self.regs.write_byte(p, *b, eight)
                        }
                        _ => log::debug!("vga: write to port {port:#x}+{i} ignored"),
                    }
                }
            }
        }
    }

    /// Reads the QEMU std-VGA MMIO BAR (BAR 2): EDID at 0x000 (none: reads
    /// 0), VGA ports 0x3C0..=0x3DF at 0x400, DISPI registers at 0x500 (16
    /// bits each) and the extended registers at 0x600.
    pub fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            0x000..=0x0ff => data.fill(0),
            0x400..=0x41f => {
                let port = 0x3c0 + (offset - 0x400) as u16;
                self.port_read(port, data);
            }
            0x500..=0x517 => {
                let reg = ((offset - 0x500) / 2) as u16;
                let value = self.dispi.read_reg(reg);
                put_le16(data, value);
            }
            // Extended register region size, then framebuffer endianness
            // (little endian).
            0x600 => put_le32(data, 8),
            0x604 => put_le32(data, 0x1e1e_1e1e),
            _ => data.fill(0xff),
        }
    }

    /// Writes the MMIO BAR (see [`Vga::mmio_read`]).
    pub fn mmio_write(&mut self, offset: u64, data: &[u8]) {
        self.note_write();
        match offset {
            0x400..=0x41f => {
                let port = 0x3c0 + (offset - 0x400) as u16;
                self.port_write(port, data);
            }
            0x500..=0x517 => {
                let reg = ((offset - 0x500) / 2) as u16;
                let saved = self.dispi.index();
                self.dispi.set_index(reg);
                self.dispi_write(le16(data));
                self.dispi.set_index(saved);
            }
            _ => log::debug!("vga: MMIO write at {offset:#x} ignored"),
        }
    }
}

fn put_le32(data: &mut [u8], value: u32) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = if i < 4 { (value >> (8 * i)) as u8 } else { 0 };
    }
}
