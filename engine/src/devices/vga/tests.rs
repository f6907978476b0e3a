// SPDX-License-Identifier: Apache-2.0
//! Tests for the VGA adapter: modes programmed the way a BIOS does,
//! the memory write/read modes, DISPI, and hostile register values.

use std::sync::Arc;

use super::*;

fn vga() -> (Vga, Arc<VecVram>) {
    let vram = Arc::new(VecVram::new(VRAM_SIZE));
    (Vga::new(vram.clone()), vram)
}

fn out8(v: &mut Vga, port: u16, value: u8) {
    v.port_write(port, &[value]);
}

fn in8(v: &mut Vga, port: u16) -> u8 {
    let mut b = [0];
    v.port_read(port, &mut b);
    b[0]
}

fn dispi_write(v: &mut Vga, reg: u16, value: u16) {
    v.port_write(0x1ce, &reg.to_le_bytes());
    v.port_write(0x1cf, &value.to_le_bytes());
}

fn dispi_read(v: &mut Vga, reg: u16) -> u16 {
    v.port_write(0x1ce, &reg.to_le_bytes());
    let mut b = [0; 2];
    v.port_read(0x1cf, &mut b);
    u16::from_le_bytes(b)
}

fn set_dac(v: &mut Vga, index: u8, rgb: [u8; 3]) {
    out8(v, 0x3c8, index);
    for c in rgb {
        out8(v, 0x3c9, c);
    }
}

fn seq(v: &mut Vga, index: u8, value: u8) {
    v.port_write(0x3c4, &[index, value]);
}

fn gc(v: &mut Vga, index: u8, value: u8) {
    v.port_write(0x3ce, &[index, value]);
}

pub(crate) fn crtc(v: &mut Vga, index: u8, value: u8) {
    v.port_write(0x3d4, &[index, value]);
}

/// Writes a whole standard register set, as a BIOS mode set does.
fn program(v: &mut Vga, misc: u8, seqs: &[u8], crtcs: &[u8], gcs: &[u8], attrs: &[u8]) {
    out8(v, 0x3c2, misc);
    seq(v, 0, 0x01);
    for (i, s) in seqs.iter().enumerate() {
        seq(v, i as u8 + 1, *s);
    }
    seq(v, 0, 0x03);
    crtc(v, 0x11, 0x00);
    for (i, c) in crtcs.iter().enumerate() {
        crtc(v, i as u8, *c);
    }
    for (i, g) in gcs.iter().enumerate() {
        gc(v, i as u8, *g);
    }
    in8(v, 0x3da);
    for (i, a) in attrs.iter().enumerate() {
        out8(v, 0x3c0, i as u8);
        out8(v, 0x3c0, *a);
    }
    out8(v, 0x3c0, 0x20);
}

/// The standard 16 colours as 6-bit DAC values.
const EGA_DAC: [[u8; 3]; 16] = [
    [0x00, 0x00, 0x00],
    [0x00, 0x00, 0x2a],
    [0x00, 0x2a, 0x00],
    [0x00, 0x2a, 0x2a],
    [0x2a, 0x00, 0x00],
    [0x2a, 0x00, 0x2a],
    [0x2a, 0x15, 0x00],
    [0x2a, 0x2a, 0x2a],
    [0x15, 0x15, 0x15],
    [0x15, 0x15, 0x3f],
    [0x15, 0x3f, 0x15],
    [0x15, 0x3f, 0x3f],
    [0x3f, 0x15, 0x15],
    [0x3f, 0x15, 0x3f],
    [0x3f, 0x3f, 0x15],
    [0x3f, 0x3f, 0x3f],
];

/// Loads the 64-entry EGA-compatible DAC table mode 3 uses: entry i has
/// bits r g b R G B (secondary low, primary high).
fn load_ega_dac(v: &mut Vga) {
    out8(v, 0x3c8, 0);
    for i in 0..64u8 {
        let c = |primary: u8, secondary: u8| {
            (if i >> primary & 1 != 0 { 0x2a } else { 0 })
                + (if i >> secondary & 1 != 0 { 0x15 } else { 0 })
        };
        let rgb = [c(2, 5), c(1, 4), c(0, 3)];
        // Entry 0x14 (brown) has half green, as the attribute palette
        // maps colour 6 there.
        let rgb = if i == 0x14 { [0x2a, 0x15, 0x00] } else { rgb };
        for comp in rgb {
            out8(v, 0x3c9, comp);
        }
    }
}

pub(crate) fn set_mode3(v: &mut Vga) {
    program(
        v,
        0x67,
        &[0x00, 0x03, 0x00, 0x02],
        &[
            0x5f, 0x4f, 0x50, 0x82, 0x55, 0x81, 0xbf, 0x1f, 0x00, 0x4f, 0x0d, 0x0e, 0x00, 0x00,
            0x00, 0x00, 0x9c, 0x8e, 0x8f, 0x28, 0x1f, 0x96, 0xb9, 0xa3, 0xff,
        ],
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0e, 0x00, 0xff],
        &[
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d,
            0x3e, 0x3f, 0x0c, 0x00, 0x0f, 0x08, 0x00,
        ],
    );
    load_ega_dac(v);
}

fn set_mode13(v: &mut Vga) {
    program(
        v,
        0x63,
        &[0x01, 0x0f, 0x00, 0x0e],
        &[
            0x5f, 0x4f, 0x50, 0x82, 0x54, 0x80, 0xbf, 0x1f, 0x00, 0x41, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x9c, 0x0e, 0x8f, 0x28, 0x40, 0x96, 0xb9, 0xa3, 0xff,
        ],
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x05, 0x0f, 0xff],
        &[
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d,
            0x0e, 0x0f, 0x41, 0x00, 0x0f, 0x00, 0x00,
        ],
    );
}

fn set_mode12(v: &mut Vga) {
    program(
        v,
        0xe3,
        &[0x01, 0x0f, 0x00, 0x06],
        &[
            0x5f, 0x4f, 0x50, 0x82, 0x54, 0x80, 0x0b, 0x3e, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0xea, 0x8c, 0xdf, 0x28, 0x00, 0xe7, 0x04, 0xe3, 0xff,
        ],
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x0f, 0xff],
        &[
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d,
            0x3e, 0x3f, 0x01, 0x00, 0x0f, 0x00, 0x00,
        ],
    );
    load_ega_dac(v);
}

/// A recognisable 16-line glyph.
const GLYPH: [u8; 16] = [
    0x00, 0x00, 0x10, 0x38, 0x6c, 0xc6, 0xc6, 0xfe, 0xc6, 0xc6, 0xc6, 0xc6, 0x00, 0x00, 0x00, 0x01,
];

/// Loads `glyph` for `ch` into plane 2 the way vgabios does, then
/// restores text mode addressing.
pub(crate) fn load_glyph(v: &mut Vga, ch: u8, glyph: &[u8]) {
    seq(v, 2, 0x04);
    seq(v, 4, 0x06);
    gc(v, 4, 0x02);
    gc(v, 5, 0x00);
    gc(v, 6, 0x04);
    for (i, b) in glyph.iter().enumerate() {
        v.window_write(u64::from(ch) * 32 + i as u64, &[*b]);
    }
    seq(v, 2, 0x03);
    seq(v, 4, 0x02);
    gc(v, 4, 0x00);
    gc(v, 5, 0x10);
    gc(v, 6, 0x0e);
}

fn pixel(buf: &[u8], stride: usize, x: usize, y: usize) -> [u8; 3] {
    let i = y * stride + x * 4;
    [buf[i], buf[i + 1], buf[i + 2]]
}

fn render(v: &mut Vga, frame: u64) -> (Vec<u8>, usize) {
    let s = v.screen();
    let stride = s.width as usize * 4;
    let mut buf = vec![0; stride * s.height as usize];
    v.render(&mut buf, stride, frame);
    (buf, stride)
}

#[test]
fn test_vga_mode3_text_cell_renders_glyph_and_colors() {
    let (mut v, _) = vga();
    set_mode3(&mut v);
    load_glyph(&mut v, b'A', &GLYPH);
    v.window_write(0x18000, &[b'A', 0x1f]);
    assert_eq!(
        v.screen(),
        VgaPicture {
            width: 720,
            height: 400,
            kind: ScreenKind::Text { cols: 80, rows: 25 }
        }
    );
    // Cursor elsewhere so it does not cover the cell.
    crtc(&mut v, 0x0f, 100);
    let (buf, stride) = render(&mut v, 0);
    let white = [0xff, 0xff, 0xff];
    let blue = [0x00, 0x00, 0xaa];
    for (line, bits) in GLYPH.iter().enumerate() {
        for x in 0..9 {
            let on = x < 8 && bits >> (7 - x) & 1 != 0;
            let want = if on { white } else { blue };
            assert_eq!(pixel(&buf, stride, x, line), want, "x {x} line {line}");
        }
    }
    // The next cell is blank memory: black on black.
    assert_eq!(pixel(&buf, stride, 9, 3), [0, 0, 0]);
    // The attribute palette picks the standard 16 colours from the DAC.
    let palette = [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e,
        0x3f,
    ];
    for (entry, want) in palette.iter().zip(EGA_DAC) {
        out8(&mut v, 0x3c7, *entry);
        let got = [in8(&mut v, 0x3c9), in8(&mut v, 0x3c9), in8(&mut v, 0x3c9)];
        assert_eq!(got, want, "DAC entry {entry:#04x}");
    }
    let rows = v.text_rows().unwrap();
    assert_eq!(rows.len(), 25);
    assert_eq!(rows[0].len(), 80);
    assert_eq!(rows[0][0], b'A');
    assert_eq!(rows[1][0], 0);
}

#[test]
fn test_vga_text_cursor_blinks_and_line_graphics_ninth_column() {
    let (mut v, _) = vga();
    set_mode3(&mut v);
    load_glyph(&mut v, 0xc4, &[0xff; 16]);
    load_glyph(&mut v, b'B', &[0xff; 16]);
    v.window_write(0x18000, &[0xc4, 0x07, b'B', 0x07, b' ', 0x07]);
    // Cursor on cell 2, scan lines 13-14.
    crtc(&mut v, 0x0e, 0);
    crtc(&mut v, 0x0f, 2);
    let (buf, stride) = render(&mut v, 0);
    let grey = [0xaa, 0xaa, 0xaa];
    assert_eq!(pixel(&buf, stride, 8, 0), grey, "0xC4 repeats column 8");
    assert_eq!(
        pixel(&buf, stride, 17, 0),
        [0, 0, 0],
        "'B' has a background 9th column"
    );
    assert_eq!(pixel(&buf, stride, 18, 13), grey, "cursor on");
    assert_eq!(pixel(&buf, stride, 18, 12), [0, 0, 0]);
    let (buf, stride) = render(&mut v, 16);
    assert_eq!(pixel(&buf, stride, 18, 13), [0, 0, 0], "cursor off phase");
    // Cursor disable bit.
    crtc(&mut v, 0x0a, 0x2d);
    let (buf, stride) = render(&mut v, 0);
    assert_eq!(pixel(&buf, stride, 18, 13), [0, 0, 0]);
}

#[test]
fn test_vga_text_blink_attribute() {
    let (mut v, _) = vga();
    set_mode3(&mut v);
    load_glyph(&mut v, b'X', &[0xff; 16]);
    v.window_write(0x18000, &[b'X', 0x9e]);
    crtc(&mut v, 0x0f, 100);
    let (buf, stride) = render(&mut v, 0);
    assert_eq!(
        pixel(&buf, stride, 0, 0),
        [0xff, 0xff, 0x55],
        "yellow while on"
    );
    let (buf, stride) = render(&mut v, 32);
    assert_eq!(
        pixel(&buf, stride, 0, 0),
        [0x00, 0x00, 0xaa],
        "background while off"
    );
}

#[test]
fn test_vga_mode13_pixels_through_dac() {
    let (mut v, vram) = vga();
    set_mode13(&mut v);
    assert_eq!(
        v.screen(),
        VgaPicture {
            width: 320,
            height: 200,
            kind: ScreenKind::Graphics
        }
    );
    set_dac(&mut v, 5, [0x3f, 0x00, 0x20]);
    set_dac(&mut v, 200, [0x01, 0x3f, 0x02]);
    v.window_write(199 * 320 + 319, &[5]);
    v.window_write(10 * 320 + 3, &[200]);
    let mut b = [0];
    vram.read(199 * 320 + 319, &mut b);
    assert_eq!(b[0], 5, "chain-4 byte address is the VRAM address");
    let mut back = [0];
    v.window_read(10 * 320 + 3, &mut back);
    assert_eq!(back[0], 200);
    let (buf, stride) = render(&mut v, 0);
    assert_eq!(pixel(&buf, stride, 319, 199), [0xff, 0x00, 0x82]);
    assert_eq!(pixel(&buf, stride, 3, 10), [0x04, 0xff, 0x08]);
    assert_eq!(pixel(&buf, stride, 4, 10), [0, 0, 0]);
    // DAC readback, 6-bit.
    out8(&mut v, 0x3c7, 5);
    assert_eq!(in8(&mut v, 0x3c7), 0x03);
    let mut rgb = [0; 3];
    v.port_read(0x3c9, &mut rgb[..1]);
    v.port_read(0x3c9, &mut rgb[1..2]);
    v.port_read(0x3c9, &mut rgb[2..]);
    assert_eq!(rgb, [0x3f, 0x00, 0x20]);
}

#[test]
fn test_vga_mode_x_unchained_pixels() {
    let (mut v, _) = vga();
    set_mode13(&mut v);
    // Unchain: sequential addressing, byte mode CRTC.
    seq(&mut v, 4, 0x06);
    crtc(&mut v, 0x14, 0x00);
    crtc(&mut v, 0x17, 0xe3);
    set_dac(&mut v, 9, [0x3f, 0x3f, 0x3f]);
    // Pixel (5, 2): plane 1, offset 2 * 80 + 1.
    seq(&mut v, 2, 0x02);
    v.window_write(2 * 80 + 1, &[9]);
    let (buf, stride) = render(&mut v, 0);
    assert_eq!(pixel(&buf, stride, 5, 2), [0xff, 0xff, 0xff]);
    assert_eq!(pixel(&buf, stride, 4, 2), [0, 0, 0]);
}

#[test]
fn test_vga_mode12_planar_write_modes_and_read_mode1() {
    let (mut v, _) = vga();
    set_mode12(&mut v);
    assert_eq!(
        v.screen(),
        VgaPicture {
            width: 640,
            height: 480,
            kind: ScreenKind::Graphics
        }
    );
    // Write mode 2: colour 0x0c at pixel 0 only (bit mask 0x80).
    gc(&mut v, 5, 0x02);
    gc(&mut v, 8, 0x80);
    let mut tmp = [0];
    v.window_read(0, &mut tmp); // load latches
    v.window_write(0, &[0x0c]);
    // Write mode 0 with set/reset on all planes: colour 0x09 at pixel 1.
    gc(&mut v, 5, 0x00);
    gc(&mut v, 0, 0x09);
    gc(&mut v, 1, 0x0f);
    gc(&mut v, 8, 0x40);
    v.window_read(0, &mut tmp);
    v.window_write(0, &[0x00]);
    gc(&mut v, 1, 0x00);
    // Write mode 3: colour from set/reset, mask from data: pixel 2 = 0x0e.
    gc(&mut v, 5, 0x03);
    gc(&mut v, 0, 0x0e);
    gc(&mut v, 8, 0xff);
    v.window_read(0, &mut tmp);
    v.window_write(0, &[0x20]);
    let (buf, stride) = render(&mut v, 0);
    assert_eq!(pixel(&buf, stride, 0, 0), [0xff, 0x55, 0x55], "light red");
    assert_eq!(pixel(&buf, stride, 1, 0), [0x55, 0x55, 0xff], "light blue");
    assert_eq!(pixel(&buf, stride, 2, 0), [0xff, 0xff, 0x55], "yellow");
    assert_eq!(pixel(&buf, stride, 3, 0), [0, 0, 0]);
    // Read mode 1: which pixels are colour 0x0e (pixel 2 only)?
    gc(&mut v, 5, 0x08);
    gc(&mut v, 2, 0x0e);
    gc(&mut v, 7, 0x0f);
    v.window_read(0, &mut tmp);
    assert_eq!(tmp[0], 0x20);
    // Don't care about planes 1-3: colour bit 0 clear everywhere but pixel 1.
    gc(&mut v, 7, 0x01);
    gc(&mut v, 2, 0x00);
    v.window_read(0, &mut tmp);
    assert_eq!(tmp[0], !0x40);
    // Write mode 1 copies latches: copy byte 0 to byte 1.
    gc(&mut v, 5, 0x01);
    v.window_read(0, &mut tmp);
    v.window_write(1, &[0x00]);
    let (buf, stride) = render(&mut v, 0);
    assert_eq!(pixel(&buf, stride, 8, 0), [0xff, 0x55, 0x55]);
    assert_eq!(pixel(&buf, stride, 10, 0), [0xff, 0xff, 0x55]);
    // Read mode 0 with read map select.
    gc(&mut v, 5, 0x00);
    gc(&mut v, 4, 0x03);
    v.window_read(1, &mut tmp);
    assert_eq!(tmp[0], 0xe0, "plane 3 has pixels 0, 1 and 2");
}

#[test]
fn test_vga_write_mode0_rotate_and_logic_functions() {
    let (mut v, vram) = vga();
    set_mode12(&mut v);
    seq(&mut v, 2, 0x01);
    v.window_write(0, &[0xf0]);
    let mut tmp = [0];
    v.window_read(0, &mut tmp);
    // XOR with latch, rotate right 4: 0x0f ^ 0xf0 -> 0xff... data 0xf0 rotated 4 = 0x0f.
    gc(&mut v, 3, 0x18 | 4);
    v.window_write(0, &[0xf0]);
    let mut b = [0];
    vram.read(0, &mut b);
    assert_eq!(b[0], 0xff);
    // AND.
    v.window_read(0, &mut tmp);
    gc(&mut v, 3, 0x08);
    v.window_write(0, &[0x3c]);
    vram.read(0, &mut b);
    assert_eq!(b[0], 0x3c);
}

#[test]
fn test_vga_memory_map_select_hides_other_windows() {
    let (mut v, _) = vga();
    set_mode3(&mut v);
    let mut b = [0];
    v.window_write(0x0, &[0x55]);
    v.window_read(0x0, &mut b);
    assert_eq!(b[0], 0xff, "A0000 is outside the B8000 map");
    v.window_read(0x1ffff + 1, &mut b);
    assert_eq!(b[0], 0xff);
    v.window_write(0x18002, &[0x41]);
    v.window_read(0x18002, &mut b);
    assert_eq!(b[0], 0x41);
    let mut wide = [0; 8];
    v.window_read(0x18000, &mut wide);
    assert_eq!(wide[2], 0x41);
}

#[test]
fn test_vga_crtc_write_protect() {
    let (mut v, _) = vga();
    set_mode3(&mut v);
    crtc(&mut v, 0x11, 0x8e);
    crtc(&mut v, 0x01, 0x27);
    crtc(&mut v, 0x07, 0x00);
    out8(&mut v, 0x3d4, 0x01);
    assert_eq!(in8(&mut v, 0x3d5), 0x4f);
    out8(&mut v, 0x3d4, 0x07);
    assert_eq!(in8(&mut v, 0x3d5), 0x0f, "only line compare bit 8 changed");
    crtc(&mut v, 0x12, 0x10);
    out8(&mut v, 0x3d4, 0x12);
    assert_eq!(in8(&mut v, 0x3d5), 0x10, "registers past 7 stay writable");
    crtc(&mut v, 0x11, 0x0e);
    crtc(&mut v, 0x01, 0x27);
    out8(&mut v, 0x3d4, 0x01);
    assert_eq!(in8(&mut v, 0x3d5), 0x27);
}

#[test]
fn test_vga_attribute_flip_flop_reset_by_status_read() {
    let (mut v, _) = vga();
    set_mode3(&mut v);
    in8(&mut v, 0x3da);
    out8(&mut v, 0x3c0, 0x05); // index, flip-flop now at data
    in8(&mut v, 0x3da); // back to index
    out8(&mut v, 0x3c0, 0x21); // index 1 with PAS
    out8(&mut v, 0x3c0, 0x2a); // data
    out8(&mut v, 0x3c0, 0x21);
    assert_eq!(in8(&mut v, 0x3c1), 0x2a);
    assert_eq!(in8(&mut v, 0x3c0), 0x21);
    // The status register toggles retrace so polling loops end.
    let a = in8(&mut v, 0x3da) & 0x08;
    let b = in8(&mut v, 0x3da) & 0x08;
    assert_ne!(a, b);
    // Mono ports are dead in colour mode.
    assert_eq!(in8(&mut v, 0x3ba), 0xff);
}

#[test]
fn test_vga_palette_source_clear_blanks_screen() {
    let (mut v, _) = vga();
    set_mode3(&mut v);
    in8(&mut v, 0x3da);
    out8(&mut v, 0x3c0, 0x00);
    let s = v.screen();
    assert_eq!(s.kind, ScreenKind::Blank);
    assert_eq!((s.width, s.height), (720, 400));
    out8(&mut v, 0x3c0, 0x00);
    out8(&mut v, 0x3c0, 0x20);
    assert!(matches!(v.screen().kind, ScreenKind::Text { .. }));
}

#[test]
fn test_vga_dispi_1920x1080x32() {
    let (mut v, vram) = vga();
    dispi_write(&mut v, 0, 0xb0c0);
    assert_eq!(dispi_read(&mut v, 0), 0xb0c0);
    dispi_write(&mut v, 0, 0xb0c5);
    assert_eq!(dispi_read(&mut v, 0), 0xb0c5);
    dispi_write(&mut v, 0, 0x1234);
    assert_eq!(dispi_read(&mut v, 0), 0xb0c5);
    assert_eq!(dispi_read(&mut v, 10), 256);
    let en = dispi_read(&mut v, 4);
    dispi_write(&mut v, 4, en | 0x02);
    assert_eq!(dispi_read(&mut v, 1), 2560);
    assert_eq!(dispi_read(&mut v, 2), 1600);
    assert_eq!(dispi_read(&mut v, 3), 32);
    dispi_write(&mut v, 4, en);
    vram.write(0, &[0x77; 16]);
    dispi_write(&mut v, 3, 32);
    dispi_write(&mut v, 1, 1920);
    dispi_write(&mut v, 2, 1080);
    dispi_write(&mut v, 5, 0);
    dispi_write(&mut v, 4, 0x41);
    assert!(v.dispi_enabled());
    let mut b = [0; 4];
    vram.read(0, &mut b);
    assert_eq!(b, [0; 4], "enabling clears VRAM");
    let mode = v.dispi_mode().unwrap();
    assert_eq!(
        (mode.width, mode.height, mode.bpp, mode.line_bytes),
        (1920, 1080, 32, 7680)
    );
    assert!(mode.lfb);
    assert_eq!(
        v.screen(),
        VgaPicture {
            width: 1920,
            height: 1080,
            kind: ScreenKind::Graphics
        }
    );
    // Pixel (100, 50) in BGRX.
    vram.write((50 * 1920 + 100) * 4, &[0x10, 0x20, 0x30, 0x00]);
    // And through the banked window: bank 1 offset 4 is byte 65540 = pixel (16385 % 1920, ..).
    dispi_write(&mut v, 5, 1);
    v.window_write(4, &[0x01, 0x02, 0x03, 0x00]);
    let (buf, stride) = render(&mut v, 0);
    assert_eq!(pixel(&buf, stride, 100, 50), [0x30, 0x20, 0x10]);
    let p = 65540 / 4;
    assert_eq!(pixel(&buf, stride, p % 1920, p / 1920), [0x03, 0x02, 0x01]);
    assert_eq!(pixel(&buf, stride, 0, 0), [0, 0, 0]);
    // Panning by y offset.
    dispi_write(&mut v, 9, 50);
    let (buf, stride) = render(&mut v, 0);
    assert_eq!(pixel(&buf, stride, 100, 0), [0x30, 0x20, 0x10]);
    // Disable: back to VGA.
    dispi_write(&mut v, 4, 0);
    assert!(!v.dispi_enabled());
}

#[test]
fn test_vga_dispi_rejects_mode_beyond_vram() {
    let vram = Arc::new(VecVram::new(4 << 20));
    let mut v = Vga::new(vram);
    dispi_write(&mut v, 3, 32);
    dispi_write(&mut v, 1, 1920);
    dispi_write(&mut v, 2, 1080);
    dispi_write(&mut v, 4, 0x01);
    assert!(!v.dispi_enabled());
    assert_eq!(v.dispi_mode(), None);
    // A fitting mode then a hostile virtual width / offset.
    dispi_write(&mut v, 1, 1024);
    dispi_write(&mut v, 2, 768);
    dispi_write(&mut v, 4, 0x01);
    assert!(v.dispi_enabled());
    dispi_write(&mut v, 6, 0xffff);
    assert_eq!(dispi_read(&mut v, 6), 1024);
    dispi_write(&mut v, 9, 0xffff);
    assert_eq!(dispi_read(&mut v, 9), 0);
    dispi_write(&mut v, 5, 64);
    assert_eq!(dispi_read(&mut v, 5), 0, "bank beyond VRAM refused");
    // Resolution beyond the maxima is refused.
    dispi_write(&mut v, 4, 0);
    dispi_write(&mut v, 1, 4096);
    assert_eq!(dispi_read(&mut v, 1), 1024);
}

#[test]
fn test_vga_dispi_8bpp_uses_dac_and_8bit_dac() {
    let (mut v, vram) = vga();
    dispi_write(&mut v, 3, 8);
    dispi_write(&mut v, 1, 640);
    dispi_write(&mut v, 2, 480);
    dispi_write(&mut v, 4, 0x41);
    set_dac(&mut v, 7, [0x3f, 0x00, 0x00]);
    vram.write(640 + 1, &[7]);
    let (buf, stride) = render(&mut v, 0);
    assert_eq!(pixel(&buf, stride, 1, 1), [0xff, 0, 0]);
    dispi_write(&mut v, 4, 0x61);
    assert!(v.dispi_enabled());
    set_dac(&mut v, 7, [0x80, 0x81, 0x82]);
    let (buf, stride) = render(&mut v, 0);
    assert_eq!(pixel(&buf, stride, 1, 1), [0x80, 0x81, 0x82]);
    assert_eq!(vram.len(), VRAM_SIZE);
}

#[test]
fn test_vga_dispi_16bpp_pixels() {
    let (mut v, vram) = vga();
    dispi_write(&mut v, 3, 16);
    dispi_write(&mut v, 1, 800);
    dispi_write(&mut v, 2, 600);
    dispi_write(&mut v, 4, 0x41);
    vram.write(2 * (800 * 3 + 2), &0xf800u16.to_le_bytes());
    let (buf, stride) = render(&mut v, 0);
    assert_eq!(pixel(&buf, stride, 2, 3), [0xff, 0, 0]);
}

#[test]
fn test_vga_port_word_and_dispi_byte_accesses() {
    let (mut v, _) = vga();
    v.port_write(0x3c4, &[0x02, 0x0f]);
    out8(&mut v, 0x3c4, 0x02);
    assert_eq!(in8(&mut v, 0x3c5), 0x0f);
    let mut w = [0; 2];
    v.port_read(0x3c4, &mut w);
    assert_eq!(w, [0x02, 0x0f]);
    v.port_write(0x1ce, &[0x0a]);
    let mut w = [0; 2];
    v.port_read(0x1cf, &mut w);
    assert_eq!(u16::from_le_bytes(w), 256);
}

/// A tiny deterministic generator for the hostile-input test.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn test_vga_hostile_inputs_never_panic() {
    let vram = Arc::new(VecVram::new(1 << 20));
    let mut v = Vga::new(vram);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..8 {
        if round % 2 == 1 {
            set_mode3(&mut v);
        }
        for _ in 0..4000 {
            let r = rng.next();
            let value = (r >> 16) as u16;
            match r % 8 {
                0 | 1 => {
                    let port = 0x3b0 + (r >> 8) as u16 % 0x30;
                    let len = if r & 0x80 != 0 { 2 } else { 1 };
                    v.port_write(port, &value.to_le_bytes()[..len]);
                }
                2 => {
                    let port = 0x3b0 + (r >> 8) as u16 % 0x30;
                    let mut b = [0; 2];
                    v.port_read(port, &mut b);
                }
                3 => {
                    v.port_write(0x1ce, &((r >> 8) as u16 % 12).to_le_bytes());
                    v.port_write(0x1cf, &value.to_le_bytes());
                }
                4 => v.window_write((r >> 8) % 0x30000, &value.to_le_bytes()),
                5 => {
                    let mut b = [0; 8];
                    v.window_read((r >> 8) % 0x30000, &mut b);
                }
                6 => v.mmio_write((r >> 8) % 0x1000, &value.to_le_bytes()),
                _ => {
                    let mut b = [0; 4];
                    v.mmio_read((r >> 8) % 0x1000, &mut b);
                }
            }
        }
        let s = v.screen();
        let full = s.width as usize * 4 * s.height as usize;
        for (len, stride) in [
            (0, 0),
            (7, 3),
            (full / 3 + 1, s.width as usize * 4),
            (full, 5),
        ] {
            let mut buf = vec![0; len];
            v.render(&mut buf, stride, rng.next());
        }
        let _ = v.text_rows();
    }
}

fn set_mode4(v: &mut Vga) {
    program(
        v,
        0x63,
        &[0x09, 0x03, 0x00, 0x02],
        &[
            0x2d, 0x27, 0x28, 0x90, 0x2b, 0x80, 0xbf, 0x1f, 0x00, 0xc1, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x9c, 0x8e, 0x8f, 0x14, 0x00, 0x96, 0xb9, 0xa2, 0xff,
        ],
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0x30, 0x0f, 0x00, 0xff],
        &[
            0x00, 0x13, 0x15, 0x17, 0x02, 0x04, 0x06, 0x07, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
            0x16, 0x17, 0x01, 0x00, 0x03, 0x00, 0x00,
        ],
    );
    load_ega_dac(v);
}

#[test]
fn test_vga_mode4_cga_interleave() {
    let (mut v, _) = vga();
    set_mode4(&mut v);
    assert_eq!(
        v.screen(),
        VgaPicture {
            width: 320,
            height: 200,
            kind: ScreenKind::Graphics
        }
    );
    // Even line 0: pixels 0 (colour 3) and 5 (colour 1) in bytes 0 and 1.
    v.window_write(0x18000, &[0xc0, 0x10]);
    // Odd line 1 lives 8 KiB up; pixel 1 colour 2.
    v.window_write(0x1a000, &[0x20]);
    // Line 2 is the second row of the even bank.
    v.window_write(0x18000 + 80, &[0x03]);
    let (buf, stride) = render(&mut v, 0);
    let c1 = [0x00, 0xff, 0xaa]; // DAC 0x13
    let c2 = [0xaa, 0x55, 0xaa]; // DAC 0x15
    let c3 = [0xaa, 0xff, 0xaa]; // DAC 0x17
    assert_eq!(pixel(&buf, stride, 0, 0), c3);
    assert_eq!(pixel(&buf, stride, 1, 0), [0, 0, 0]);
    assert_eq!(pixel(&buf, stride, 5, 0), c1);
    assert_eq!(pixel(&buf, stride, 1, 1), c2);
    assert_eq!(pixel(&buf, stride, 3, 2), c3);
    assert_eq!(pixel(&buf, stride, 3, 3), [0, 0, 0]);
}

#[test]
fn test_vga_dispi_planar_4bpp_banked() {
    let (mut v, _) = vga();
    set_mode12(&mut v);
    dispi_write(&mut v, 3, 4);
    dispi_write(&mut v, 1, 1024);
    dispi_write(&mut v, 2, 768);
    dispi_write(&mut v, 4, 0x01);
    assert!(v.dispi_enabled());
    assert_eq!(
        v.screen(),
        VgaPicture {
            width: 1024,
            height: 768,
            kind: ScreenKind::Graphics
        }
    );
    // Line 600 starts at plane byte 600 * 128 = 76800: bank 1, offset 11264.
    dispi_write(&mut v, 5, 1);
    gc(&mut v, 5, 0x02);
    gc(&mut v, 8, 0x80);
    let mut tmp = [0];
    v.window_read(11264, &mut tmp);
    v.window_write(11264, &[0x0c]);
    let (buf, stride) = render(&mut v, 0);
    assert_eq!(pixel(&buf, stride, 0, 600), [0xff, 0x55, 0x55]);
    assert_eq!(pixel(&buf, stride, 1, 600), [0, 0, 0]);
    assert_eq!(pixel(&buf, stride, 0, 599), [0, 0, 0]);
}

#[test]
fn test_vga_text_start_address_scrolls() {
    let (mut v, _) = vga();
    set_mode3(&mut v);
    v.window_write(0x18000 + 160, &[b'Z', 0x07, b'Y', 0x07]);
    assert_eq!(&v.text_rows().unwrap()[1][..2], b"ZY");
    crtc(&mut v, 0x0c, 0);
    crtc(&mut v, 0x0d, 80);
    assert_eq!(&v.text_rows().unwrap()[0][..2], b"ZY");
    set_mode13(&mut v);
    assert_eq!(v.text_rows(), None);
}
