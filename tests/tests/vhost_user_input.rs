// SPDX-License-Identifier: Apache-2.0
//! Tier 4: Linux's virtio_input driver (and evdev) as the client of
//! Nestbox's virtio-input keyboard, served over vhost-user to QEMU/TCG.
//! Once the guest's agent has the "Nestbox Keyboard" event device open, the
//! host pushes key strokes through the device's `InputSender`; the guest
//! must read exactly those key codes and values, in order.

use std::time::Duration;

use engine::devices::virtio::input::{Input, InputEvent, InputKind};
use nestbox_tests::qemu::{VhostUserServer, boot_guest_watching, guest_files, key_results};

const KEY_A: u16 = 30;
const KEY_B: u16 = 48;
const KEY_LEFTCTRL: u16 = 29;
const KEY_LEFTSHIFT: u16 = 42;
const KEY_LEFTALT: u16 = 56;
const KEY_F1: u16 = 59;
const KEY_F2: u16 = 60;
const KEY_F12: u16 = 88;

/// The key strokes, one (code, pressed) per host action: A, Shift+B,
/// Ctrl+Alt+F2, F1, and F12, the guest's sentinel.
const STROKES: &[(u16, bool)] = &[
    (KEY_A, true),
    (KEY_A, false),
    (KEY_LEFTSHIFT, true),
    (KEY_B, true),
    (KEY_B, false),
    (KEY_LEFTSHIFT, false),
    (KEY_LEFTCTRL, true),
    (KEY_LEFTALT, true),
    (KEY_F2, true),
    (KEY_F2, false),
    (KEY_LEFTALT, false),
    (KEY_LEFTCTRL, false),
    (KEY_F1, true),
    (KEY_F1, false),
    (KEY_F12, true),
    (KEY_F12, false),
];

#[test]
fn test_linux_virtio_input_reads_pushed_keys_in_order() {
    let test = "test_linux_virtio_input_reads_pushed_keys_in_order";
    let Some((kernel, initrd)) = guest_files(test) else {
        return;
    };
    let keyboard = Input::new(InputKind::Keyboard).unwrap();
    let sender = keyboard.sender();
    let server = VhostUserServer::start("vhost-input", keyboard);

    let mut pushed = false;
    let serial = boot_guest_watching(
        &kernel,
        &initrd,
        &server.qemu_args("input"),
        "nestbox.test=input",
        Duration::from_secs(120),
        |serial| {
            if !pushed && serial.contains("NESTBOX-INPUT-READY") {
                pushed = true;
                // One group (ending with SYN_REPORT) per stroke.
                let events: Vec<InputEvent> = STROKES
                    .iter()
                    .flat_map(|&(code, pressed)| {
                        [InputEvent::key(code, pressed), InputEvent::syn()]
                    })
                    .collect();
                sender.push_events(&events);
            }
        },
    );
    let served = server.finish();

    assert!(pushed, "the guest never got ready:\n{serial}");
    let keys = key_results(&serial);
    assert_eq!(keys, STROKES, "{serial}");
    assert_eq!(sender.dropped_groups(), 0);
    assert!(served, "the vhost-user server failed");
}
