// SPDX-License-Identifier: Apache-2.0
//! A 128-byte EDID 1.4 base block (VESA E-EDID) describing a scanout: a
//! digital display whose preferred (and only detailed) timing is the
//! scanout's size at up to 60 Hz, with sRGB chromaticity, a range-limits
//! descriptor and the monitor name "Nestbox".
//!
//! A detailed timing descriptor holds at most 4095 × 4095 pixels; larger
//! sizes are clamped to that (a DisplayID extension would be needed).

/// Length of an EDID base block.
pub const EDID_LEN: usize = 128;
/// The largest width or height a detailed timing descriptor can hold.
pub const MAX_DTD_PIXELS: u32 = 4095;

/// Horizontal blanking, CVT reduced-blanking style: front porch, sync, back porch.
const H_FRONT: u32 = 48;
const H_SYNC: u32 = 32;
const H_BLANK: u32 = 160;
/// Vertical front porch and sync; the back porch grows with the height.
const V_FRONT: u32 = 3;
const V_SYNC: u32 = 6;
const V_BLANK_MIN: u32 = 20;
const REFRESH_HZ: u64 = 60;
/// The size a pixel is given for the physical size fields (about 96 dpi).
const MICROMETRES_PER_PIXEL: u32 = 265;

/// sRGB primaries and white point, as EDID's 10-bit fractions (value × 1024).
const CHROMA: [u32; 8] = [655, 338, 307, 614, 154, 61, 320, 337];

/// The EDID of a `width` × `height` display (each clamped to 1..=4095).
pub fn edid(width: u32, height: u32) -> [u8; EDID_LEN] {
    let w = width.clamp(1, MAX_DTD_PIXELS);
    let h = height.clamp(1, MAX_DTD_PIXELS);
    let mut e = [0u8; EDID_LEN];
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = e.get_mut(at..at.saturating_add(bytes.len())) {
            dst.copy_from_slice(bytes);
        }
    };
    put(0, &[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
    // Manufacturer "NBX" (three 5-bit letters, big-endian), product 1, no serial.
    let letters = |c: u8| u16::from(c - b'A' + 1);
    let maker = (letters(b'N') << 10) | (letters(b'B') << 5) | letters(b'X');
    put(8, &maker.to_be_bytes());
    put(10, &1u16.to_le_bytes());
    // Week unspecified, model year 2024 (1990 + 34); EDID 1.4.
    put(16, &[0, 34, 1, 4]);
    let w_mm = w.saturating_mul(MICROMETRES_PER_PIXEL) / 1000;
    let h_mm = h.saturating_mul(MICROMETRES_PER_PIXEL) / 1000;
    let cm = |mm: u32| u8::try_from((mm / 10).clamp(1, 255)).unwrap_or(255);
    // Digital, 8 bits per colour, DisplayPort; size in cm; gamma 2.2;
    // sRGB default, preferred timing is native, RGB 4:4:4.
    put(20, &[0xa5, cm(w_mm), cm(h_mm), 120, 0x06]);
    put(25, &chromaticity());
    // No established timings; standard timings unused (0x01 0x01).
    put(38, &[0x01; 16]);
    put(54, &detailed_timing(w, h, w_mm, h_mm));
    // Range limits: 1-75 Hz vertical, 1-255 kHz horizontal, 660 MHz
    // pixel clock, no timing formula.
    put(
        72,
        &[
            0, 0, 0, 0xfd, 0, 1, 75, 1, 255, 66, 0x01, 0x0a, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
        ],
    );
    let mut name = [0x20u8; 18];
    if let Some(head) = name.get_mut(..13) {
        head.copy_from_slice(b"\0\0\0\xfc\0Nestbox\n");
    }
    put(90, &name);
    // Dummy descriptor.
    put(108, &[0, 0, 0, 0x10]);
    // No extensions; then the checksum makes the block sum to 0 mod 256.
    let sum = e
        .iter()
        .take(EDID_LEN - 1)
        .fold(0u8, |acc, &b| acc.wrapping_add(b));
    if let Some(last) = e.last_mut() {
        *last = 0u8.wrapping_sub(sum);
    }
    e
}

/// The ten chromaticity bytes: the low two bits of each coordinate packed
/// into two bytes, then the high eight bits of each.
fn chromaticity() -> [u8; 10] {
    let low = |i: usize| CHROMA.get(i).map_or(0, |v| (v & 3) as u8);
    let mut out = [0u8; 10];
    out[0] = (low(0) << 6) | (low(1) << 4) | (low(2) << 2) | low(3);
    out[1] = (low(4) << 6) | (low(5) << 4) | (low(6) << 2) | low(7);
    for (dst, v) in out.iter_mut().skip(2).zip(CHROMA) {
        *dst = (v >> 2) as u8;
    }
    out
}

/// The 18-byte detailed timing descriptor of a `w` × `h` mode (both at most
/// 4095) of `w_mm` × `h_mm` millimetres.
fn detailed_timing(w: u32, h: u32, w_mm: u32, h_mm: u32) -> [u8; 18] {
    let v_blank = (h / 30).max(V_BLANK_MIN);
    let total = u64::from(w + H_BLANK) * u64::from(h + v_blank);
    // In 10 kHz units; a large mode's refresh drops below 60 Hz to fit.
    let clock = (total * REFRESH_HZ).div_ceil(10_000).clamp(1, 0xffff) as u16;
    let lo = |v: u32| (v & 0xff) as u8;
    let hi4 = |v: u32| ((v >> 8) & 0xf) as u8;
    let [c0, c1] = clock.to_le_bytes();
    let w_mm = w_mm.min(4095);
    let h_mm = h_mm.min(4095);
    [
        c0,
        c1,
        lo(w),
        lo(H_BLANK),
        (hi4(w) << 4) | hi4(H_BLANK),
        lo(h),
        lo(v_blank),
        (hi4(h) << 4) | hi4(v_blank),
        lo(H_FRONT),
        lo(H_SYNC),
        ((V_FRONT as u8 & 0xf) << 4) | (V_SYNC as u8 & 0xf),
        0,
        lo(w_mm),
        lo(h_mm),
        (hi4(w_mm) << 4) | hi4(h_mm),
        0,
        0,
        // Digital separate sync, +hsync, -vsync.
        0x1a,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The preferred mode's size, decoded from the first descriptor.
    pub(crate) fn preferred_mode(e: &[u8]) -> (u32, u32) {
        let d = &e[54..72];
        let w = u32::from(d[2]) | (u32::from(d[4] >> 4) << 8);
        let h = u32::from(d[5]) | (u32::from(d[7] >> 4) << 8);
        (w, h)
    }

    #[test]
    fn test_edid_checksum_header_version_and_preferred_mode() {
        for (w, h) in [(1024, 768), (1920, 1080), (1, 1), (4095, 4095), (640, 480)] {
            // Act
            let e = edid(w, h);

            // Assert
            let sum = e.iter().fold(0u8, |a, &b| a.wrapping_add(b));
            assert_eq!(sum, 0, "{w}x{h}");
            assert_eq!(e[..8], [0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
            assert_eq!((e[18], e[19]), (1, 4));
            assert_eq!(preferred_mode(&e), (w, h));
            let clock = u16::from_le_bytes([e[54], e[55]]);
            assert!(clock > 0);
            assert_eq!(e[126], 0);
        }
    }

    #[test]
    fn test_edid_clamps_sizes_beyond_a_timing_descriptor() {
        // Act
        let e = edid(16384, 0);

        // Assert
        assert_eq!(preferred_mode(&e), (4095, 1));
        assert_eq!(e.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
    }

    #[test]
    fn test_edid_1080p_runs_at_60_hz() {
        // Act
        let e = edid(1920, 1080);

        // Assert: clock / (htotal * vtotal) is 60 Hz.
        let clock = u64::from(u16::from_le_bytes([e[54], e[55]])) * 10_000;
        let htotal = 1920 + u64::from(e[57]) + (u64::from(e[58] & 0xf) << 8);
        let vtotal = 1080 + u64::from(e[60]) + (u64::from(e[61] & 0xf) << 8);
        assert_eq!(clock / (htotal * vtotal), 60);
    }
}
