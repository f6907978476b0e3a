// SPDX-License-Identifier: Apache-2.0
//! Tier 3 with a screen: Debian's SeaBIOS and its VGA BIOS under
//! Nestbox's display adapters, the standard VGA (`vgabios-stdvga.bin`) and
//! virtio-vga (`vgabios-virtio.bin`, the same VGA in the virtio-gpu's PCI
//! function). The VGA BIOS sets text mode and loads its font; SeaBIOS
//! prints its banner; the rendered screen must show exactly the font's
//! glyphs for that text.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engine::devices::std_vga::{Frame, GuestScreen};
use engine::vm::DisplayAdapter;
use engine::{DisplayConfig, VmBuilder, VmConfig, VmIo};
use nestbox_tests::{Capture, SEABIOS, VmGuard, firmware_vm, kvm_available, require_file};

const VGA_BIOS: &str = "/usr/share/seabios/vgabios-stdvga.bin";
const VIRTIO_VGA_BIOS: &str = "/usr/share/seabios/vgabios-virtio.bin";

/// The VGA BIOS Debian ships for `adapter`.
fn vga_bios_of(adapter: DisplayAdapter) -> &'static str {
    match adapter {
        DisplayAdapter::StdVga => VGA_BIOS,
        DisplayAdapter::VirtioVga => VIRTIO_VGA_BIOS,
    }
}

/// The IBM VGA 8x16 glyph of 'A', to find the font inside the VGA BIOS.
const GLYPH_A: [u8; 16] = [
    0x00, 0x00, 0x10, 0x38, 0x6c, 0xc6, 0xc6, 0xfe, 0xc6, 0xc6, 0xc6, 0xc6, 0x00, 0x00, 0x00, 0x00,
];

/// SeaBIOS with a screen on `adapter`, serial mirrored into a capture.
fn start_seabios_with_screen(
    test: &str,
    adapter: DisplayAdapter,
) -> Option<(VmGuard, Capture, Vec<u8>)> {
    if !kvm_available(test) {
        return None;
    }
    let bios = require_file(test, Path::new(SEABIOS), "install Debian's seabios")?;
    let vga_bios = require_file(
        test,
        Path::new(vga_bios_of(adapter)),
        "install Debian's seabios",
    )?;
    let rom = std::fs::read(&vga_bios).unwrap();
    let serial = Capture::new();
    let config = VmConfig {
        display: Some(DisplayConfig {
            adapter,
            vga_bios: Some(vga_bios),
            size: None,
        }),
        ..firmware_vm(bios)
    };
    let io = VmIo {
        serial: serial.writer(),
        debugcon: None,
    };
    Some((VmGuard::start(VmBuilder::new(config, io)), serial, rom))
}

/// Waits until some text row contains `needle`; returns (row, column).
fn wait_for_text(screen: &GuestScreen, needle: &str, timeout: Duration) -> Option<(usize, usize)> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(rows) = screen.text() {
            for (r, row) in rows.iter().enumerate() {
                if let Some(c) = row.find(needle) {
                    return Some((r, c));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn save(frame: &Frame, name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    display::screenshot::write_png(&path, frame.width, frame.height, &frame.pixels).unwrap();
    path
}

fn pixel(frame: &Frame, x: usize, y: usize) -> [u8; 3] {
    let at = (y * frame.width as usize + x) * 4;
    [frame.pixels[at], frame.pixels[at + 1], frame.pixels[at + 2]]
}

#[test]
fn test_seabios_banner_is_drawn_in_vga_text_mode_with_the_bios_font() {
    banner_drawn_with_the_bios_font(
        "test_seabios_banner_is_drawn_in_vga_text_mode_with_the_bios_font",
        DisplayAdapter::StdVga,
    );
}

#[test]
fn test_seabios_banner_is_drawn_through_virtio_vga_with_the_bios_font() {
    banner_drawn_with_the_bios_font(
        "test_seabios_banner_is_drawn_through_virtio_vga_with_the_bios_font",
        DisplayAdapter::VirtioVga,
    );
}

/// SeaBIOS's banner, in VGA text mode 3 set by `adapter`'s VGA BIOS, is
/// drawn with exactly that BIOS's font.
fn banner_drawn_with_the_bios_font(test: &str, adapter: DisplayAdapter) {
    let Some((vm, serial, rom)) = start_seabios_with_screen(test, adapter) else {
        return;
    };
    let screen = vm.handle().screen().expect("the VM has a screen");
    let banner = "SeaBIOS (version";
    let found = wait_for_text(&screen, banner, Duration::from_secs(120));
    let mut frame = Frame::default();
    screen.render(&mut frame);
    let shot = save(&frame, &format!("seabios-{adapter:?}-text.png"));
    let (row, col) = found.unwrap_or_else(|| {
        panic!(
            "no banner on screen ({}); text: {:?}; serial: {}",
            shot.display(),
            screen.text(),
            serial.text()
        )
    });
    let text = screen.text().unwrap();
    drop(vm);

    // Mode 3: 80x25 cells of 9x16 pixels.
    assert_eq!(
        (frame.width, frame.height),
        (720, 400),
        "{}",
        shot.display()
    );
    assert_eq!(text.len(), 25);
    let (cell_w, cell_h) = (9, 16);
    let at = rom
        .windows(16)
        .position(|w| w == GLYPH_A)
        .expect("the VGA BIOS carries the VGA font");
    let font = &rom[at - 16 * 0x41..];
    for (i, ch) in banner.bytes().enumerate() {
        let glyph = &font[ch as usize * 16..ch as usize * 16 + 16];
        let (x0, y0) = ((col + i) * cell_w, row * cell_h);
        for (y, bits) in glyph.iter().enumerate() {
            for x in 0..cell_w {
                let lit = x < 8 && bits & (0x80 >> x) != 0;
                // SeaBIOS prints with attribute 7: light grey on black.
                let want = if lit { [0xaa; 3] } else { [0; 3] };
                assert_eq!(
                    pixel(&frame, x0 + x, y0 + y),
                    want,
                    "'{}' at cell ({}, {}), pixel ({x}, {y}); see {}",
                    ch as char,
                    col + i,
                    row,
                    shot.display()
                );
            }
        }
    }
}

#[test]
fn test_esc_on_the_ps2_keyboard_opens_the_seabios_boot_menu() {
    let test = "test_esc_on_the_ps2_keyboard_opens_the_seabios_boot_menu";
    let Some((vm, serial, _)) = start_seabios_with_screen(test, DisplayAdapter::VirtioVga) else {
        return;
    };
    let screen = vm.handle().screen().expect("the VM has a screen");
    let prompt = wait_for_text(&screen, "Press ESC for boot menu", Duration::from_secs(120));
    assert!(
        prompt.is_some(),
        "no boot menu prompt; text: {:?}; serial: {}",
        screen.text(),
        serial.text()
    );
    // Esc, as a PS/2 keyboard sends it in scan code set 2: make, break.
    let input = vm.handle().input();
    input.keyboard(&[0x76]);
    input.keyboard(&[0xf0, 0x76]);
    let menu = wait_for_text(&screen, "Select boot device", Duration::from_secs(60));
    let mut frame = Frame::default();
    screen.render(&mut frame);
    let shot = save(&frame, "seabios-boot-menu.png");
    assert!(
        menu.is_some(),
        "Esc did not open the boot menu ({}); text: {:?}",
        shot.display(),
        screen.text()
    );
}
