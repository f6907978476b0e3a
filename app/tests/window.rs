// SPDX-License-Identifier: Apache-2.0
//! `nestbox run --display window` as a person uses it, under Xvfb: the
//! window opens showing SeaBIOS's screen, a key typed into it with xdotool
//! reaches the guest's PS/2 keyboard (Esc opens SeaBIOS's boot menu), and
//! the screenshot of the window shows the guest's text.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nestbox_tests::xvfb::Xvfb;
use nestbox_tests::{kvm_available, require_file};

struct Nestbox(Child);

impl Drop for Nestbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_file_text(path: &Path, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Decodes a PNG into (width, height, RGB(A) bytes, bytes per pixel).
fn read_png(path: &Path) -> (u32, u32, Vec<u8>, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bpp = info.color_type.samples();
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf, bpp)
}

#[test]
fn test_window_shows_seabios_and_esc_typed_into_it_opens_the_boot_menu() {
    let test = "test_window_shows_seabios_and_esc_typed_into_it_opens_the_boot_menu";
    if !kvm_available(test)
        || require_file(
            test,
            Path::new("/usr/share/seabios/vgabios-virtio.bin"),
            "install seabios",
        )
        .is_none()
    {
        return;
    }
    let Some(x) = Xvfb::start(test) else { return };
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("window-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let serial = dir.join("serial.log");
    let child = Command::new(env!("CARGO_BIN_EXE_nestbox"))
        .args([
            "run",
            "--firmware",
            "seabios",
            "--display",
            "window",
            "--scale",
            "1:1",
            "--no-reboot",
        ])
        .arg("--serial")
        .arg(&serial)
        .env("DISPLAY", x.display())
        .env("XDG_RUNTIME_DIR", &dir)
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut nestbox = Nestbox(child);

    let Some(window) = x.wait_for_window("Nestbox", Duration::from_secs(60)) else {
        let _ = nestbox.0.kill();
        let mut err = String::new();
        if let Some(mut stderr) = nestbox.0.stderr.take() {
            std::io::Read::read_to_string(&mut stderr, &mut err).unwrap();
        }
        panic!("the Nestbox window did not appear; nestbox said: {err}");
    };
    assert!(
        wait_for_file_text(&serial, "Press ESC for boot menu", Duration::from_secs(120)),
        "SeaBIOS did not offer the boot menu: {:?}",
        std::fs::read_to_string(&serial)
    );
    // The prompt waits 3 s; press until the menu opens, as a person would.
    let mut opened = false;
    for _ in 0..10 {
        x.key(&window, &["Escape"]);
        if wait_for_file_text(&serial, "Select boot device", Duration::from_millis(300)) {
            opened = true;
            break;
        }
    }
    assert!(
        opened || wait_for_file_text(&serial, "Select boot device", Duration::from_secs(5)),
        "Esc typed into the window did not open the boot menu: {:?}",
        std::fs::read_to_string(&serial)
    );
    // Give the screen pump a few frames, then look at the window.
    std::thread::sleep(Duration::from_millis(500));
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("window-boot-menu.png");
    x.screenshot(&window, &shot);
    drop(nestbox);

    let (width, height, pixels, bpp) = read_png(&shot);
    assert_eq!(
        (width, height),
        (720, 400),
        "window follows the guest's mode: {}",
        shot.display()
    );
    // SeaBIOS's text is light grey on black: a screen of text has many
    // light-grey pixels and nearly all others black.
    let grey = pixels
        .chunks_exact(bpp)
        .filter(|p| p[..3] == [0xaa, 0xaa, 0xaa])
        .count();
    let black = pixels
        .chunks_exact(bpp)
        .filter(|p| p[..3] == [0, 0, 0])
        .count();
    let total = (width * height) as usize;
    assert!(
        grey > 2000,
        "too little text on screen ({grey} px): {}",
        shot.display()
    );
    assert!(
        grey + black > total * 99 / 100,
        "unexpected colours: {}",
        shot.display()
    );
}
