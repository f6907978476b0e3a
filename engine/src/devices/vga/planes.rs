// SPDX-License-Identifier: Apache-2.0
//! CPU access to video memory through the legacy window at 0xA0000: the
//! memory map select, chain-4, odd/even and sequential plane addressing,
//! the four latches, write modes 0-3 (set/reset, rotate, logical
//! function, bit mask, map mask) and read modes 0-1, plus the banked
//! packed-pixel window of the DISPI modes.

use super::{Vga, WINDOW_SIZE};

/// Sequencer memory mode bits.
const SEQ4_SEQUENTIAL: u8 = 0x04;
const SEQ4_CHAIN4: u8 = 0x08;
/// Graphics mode register: odd/even read addressing.
const GC5_ODD_EVEN: u8 = 0x10;

/// Bytes in one standard VGA plane; plane addresses wrap here.
pub(super) const PLANE_SIZE: usize = 0x10000;

/// Where a window offset lands.
enum Target {
    /// A VRAM byte (chain-4 or DISPI packed pixels).
    Byte(usize),
    /// A plane byte offset, addressed through the planar logic.
    Planar(usize),
}

/// Rotates right by the data rotate count.
fn rotate(value: u8, count: u8) -> u8 {
    value.rotate_right(u32::from(count & 7))
}

/// Expands bit `p` of `bits` to a whole byte.
fn expand(bits: u8, p: usize) -> u8 {
    if bits >> p & 1 != 0 { 0xff } else { 0x00 }
}

impl Vga {
    /// The offset inside the selected memory map, if `offset` falls in it.
    fn map_offset(&self, offset: u64) -> Option<usize> {
        let (base, size) = match (self.regs.gc(6) >> 2) & 3 {
            0 => (0, 0x20000),
            1 => (0, 0x10000),
            2 => (0x10000, 0x8000),
            _ => (0x18000, 0x8000),
        };
        let a = offset.checked_sub(base)?;
        if a < size {
            usize::try_from(a).ok()
        } else {
            None
        }
    }

    fn target(&self, offset: u64) -> Option<Target> {
        if offset >= WINDOW_SIZE {
            return None;
        }
        if let Some(bank) = self.dispi.packed_bank_base() {
            let a = usize::try_from(offset).ok().filter(|a| *a < 0x10000)?;
            return bank.checked_add(a).map(Target::Byte);
        }
        let a = self.map_offset(offset)?;
        if self.regs.seq(4) & SEQ4_CHAIN4 != 0 {
            return Some(Target::Byte(a));
        }
        Some(Target::Planar(a))
    }

    /// The VRAM offset of byte `offset` of plane `plane`.
    fn plane_slot(&self, offset: usize, plane: usize) -> Option<usize> {
        let offset = if self.dispi.enabled() {
            offset.checked_add(self.dispi.planar_bank_base())?
        } else {
            offset % PLANE_SIZE
        };
        offset.checked_mul(4)?.checked_add(plane)
    }

    fn load_latches(&mut self, offset: usize) {
        for p in 0..4 {
            let v = self
                .plane_slot(offset, p)
                .map_or(0xff, |slot| self.vram_byte(slot));
            if let Some(l) = self.latch.get_mut(p) {
                *l = v;
            }
        }
    }

    fn planar_read(&mut self, a: usize) -> u8 {
        let odd_even = self.regs.gc(5) & GC5_ODD_EVEN != 0;
        let offset = if odd_even { a & !1 } else { a };
        self.load_latches(offset);
        if self.regs.gc(5) & 0x08 == 0 {
            // Read mode 0: one plane.
            let select = usize::from(self.regs.gc(4) & 3);
            let plane = if odd_even {
                (select & 2) | (a & 1)
            } else {
                select
            };
            self.latch.get(plane).copied().unwrap_or(0xff)
        } else {
            // Read mode 1: colour compare over the planes that count.
            let compare = self.regs.gc(2);
            let care = self.regs.gc(7);
            let mut differ = 0u8;
            for (p, latch) in self.latch.iter().enumerate() {
                if care >> p & 1 != 0 {
                    differ |= latch ^ expand(compare, p);
                }
            }
            !differ
        }
    }

    fn planar_write(&mut self, a: usize, value: u8) {
        let mut planes = self.regs.seq(2) & 0x0f;
        let mut offset = a;
        if self.regs.seq(4) & SEQ4_SEQUENTIAL == 0 {
            // Odd/even: even addresses reach planes 0 and 2, odd 1 and 3.
            planes &= if a & 1 == 0 { 0b0101 } else { 0b1010 };
            offset = a & !1;
        }
        let gc = |i| self.regs.gc(i);
        let (set_reset, enable_sr) = (gc(0), gc(1));
        let rot = gc(3) & 7;
        let function = (gc(3) >> 3) & 3;
        let mode = gc(5) & 3;
        let mask = gc(8);
        let rotated = rotate(value, rot);
        for p in 0..4usize {
            if planes >> p & 1 == 0 {
                continue;
            }
            let latch = self.latch.get(p).copied().unwrap_or(0);
            let byte = match mode {
                1 => latch,
                _ => {
                    let data = match mode {
                        0 if enable_sr >> p & 1 != 0 => expand(set_reset, p),
                        0 => rotated,
                        2 => expand(value, p),
                        _ => expand(set_reset, p),
                    };
                    let bit_mask = if mode == 3 { mask & rotated } else { mask };
                    let result = match function {
                        0 => data,
                        1 => data & latch,
                        2 => data | latch,
                        _ => data ^ latch,
                    };
                    (result & bit_mask) | (latch & !bit_mask)
                }
            };
            if let Some(slot) = self.plane_slot(offset, p) {
                self.set_vram_byte(slot, byte);
            }
        }
    }

    fn window_read_byte(&mut self, offset: u64) -> u8 {
        match self.target(offset) {
            Some(Target::Byte(b)) => {
                if !self.dispi.enabled() {
                    self.load_latches(b / 4);
                }
                self.vram_byte(b)
            }
            Some(Target::Planar(a)) => self.planar_read(a),
            None => 0xff,
        }
    }

    fn window_write_byte(&mut self, offset: u64, value: u8) {
        match self.target(offset) {
            Some(Target::Byte(b)) => {
                let plane_enabled = self.dispi.enabled() || self.regs.seq(2) >> (b & 3) & 1 != 0;
                if plane_enabled {
                    self.set_vram_byte(b, value);
                }
            }
            Some(Target::Planar(a)) => self.planar_write(a, value),
            None => {}
        }
    }

    /// Reads the legacy memory window 0xA0000..0xC0000; `offset` is from
    /// 0xA0000 and consecutive bytes are read in order. Offsets outside
    /// the selected memory map read 0xff.
    pub fn window_read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = match offset.checked_add(i as u64) {
                Some(o) => self.window_read_byte(o),
                None => 0xff,
            };
        }
    }

    /// Writes the legacy memory window; bytes outside the selected memory
    /// map are dropped.
    pub fn window_write(&mut self, offset: u64, data: &[u8]) {
        self.note_write();
        for (i, b) in data.iter().enumerate() {
            if let Some(o) = offset.checked_add(i as u64) {
                self.window_write_byte(o, *b);
            }
        }
    }
}
