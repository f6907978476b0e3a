// SPDX-License-Identifier: Apache-2.0
//! Keys typed with xdotool into a Nestbox window under Xvfb reach Linux's
//! virtio_input driver: `nestbox vhost-user-input --window` serves a
//! virtio-input keyboard whose host side is the window, QEMU/TCG boots the
//! test guest with it (`vhost-user-input-pci`), and the guest's agent
//! prints the evdev codes it reads. Shift, Ctrl and Alt combinations and
//! F-keys must arrive as the right codes, in order. (Ctrl+Alt+F-keys are
//! taken by the X server itself, on Xvfb as on a desktop, which is why the
//! app has a Send keys menu for them; they are not typed here.)

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nestbox_tests::qemu::{boot_guest_watching, guest_files, key_results, temp_path};
use nestbox_tests::xvfb::Xvfb;

const KEY_A: u16 = 30;
const KEY_B: u16 = 48;
const KEY_LEFTCTRL: u16 = 29;
const KEY_LEFTSHIFT: u16 = 42;
const KEY_LEFTALT: u16 = 56;
const KEY_T: u16 = 20;
const KEY_F1: u16 = 59;
const KEY_F12: u16 = 88;

/// What xdotool types: a, Shift+b, Ctrl+Alt+t, Alt+F1, then F12, which
/// ends the guest's reading.
const TYPED: &[&str] = &["a", "shift+b", "ctrl+alt+t", "alt+F1", "F12"];

/// The evdev events that must reach the guest for [`TYPED`]. xdotool
/// presses a chord's keys in order and releases them in the same order.
const EXPECTED: &[(u16, bool)] = &[
    (KEY_A, true),
    (KEY_A, false),
    (KEY_LEFTSHIFT, true),
    (KEY_B, true),
    (KEY_LEFTSHIFT, false),
    (KEY_B, false),
    (KEY_LEFTCTRL, true),
    (KEY_LEFTALT, true),
    (KEY_T, true),
    (KEY_LEFTCTRL, false),
    (KEY_LEFTALT, false),
    (KEY_T, false),
    (KEY_LEFTALT, true),
    (KEY_F1, true),
    (KEY_LEFTALT, false),
    (KEY_F1, false),
    (KEY_F12, true),
    (KEY_F12, false),
];

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn test_keys_typed_into_the_window_reach_linux_virtio_input() {
    let test = "test_keys_typed_into_the_window_reach_linux_virtio_input";
    let Some((kernel, initrd)) = guest_files(test) else {
        return;
    };
    let Some(x) = Xvfb::start(test) else { return };
    let socket = temp_path("window-input.sock");
    let _ = std::fs::remove_file(&socket);
    let runtime = temp_path("window-input-runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_nestbox"))
        .args([
            "vhost-user-input",
            "--kind",
            "keyboard",
            "--window",
            "--socket",
        ])
        .arg(&socket)
        .env("DISPLAY", x.display())
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _nestbox = Killed(child);
    let window = x
        .wait_for_window("virtio-input", Duration::from_secs(60))
        .expect("the input window did not appear");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        socket.exists(),
        "nestbox does not listen on {}",
        socket.display()
    );

    let device = [
        "-chardev".to_string(),
        format!("socket,id=vu,path={}", socket.display()),
        "-device".to_string(),
        "vhost-user-input-pci,chardev=vu".to_string(),
    ];
    let mut typed = false;
    let serial = boot_guest_watching(
        &kernel,
        &initrd,
        &device,
        "nestbox.test=input",
        Duration::from_secs(120),
        |serial| {
            if !typed && serial.contains("NESTBOX-INPUT-READY") {
                typed = true;
                x.key(&window, TYPED);
            }
        },
    );
    assert!(typed, "the guest never got ready:\n{serial}");
    let keys = key_results(&serial);
    assert_eq!(keys, EXPECTED, "{serial}");
    let _ = std::fs::remove_dir_all(&runtime);
}
