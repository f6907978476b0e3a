// SPDX-License-Identifier: Apache-2.0
//! Host input for a virtio-input device: the events a guest screen view
//! reports ([`GuestInput`]) as the Linux input events the device delivers,
//! one group (ending with `SYN_REPORT`) per host action.

use display::view::GuestInput;
use engine::devices::virtio::input::{InputEvent, InputKind, codes};

/// The button bits of [`GuestInput::Buttons`] and their evdev codes.
const BUTTONS: [(u8, u16); 3] = [
    (0x1, codes::BTN_LEFT),
    (0x2, codes::BTN_RIGHT),
    (0x4, codes::BTN_MIDDLE),
];

/// Turns host input into virtio-input events for a device of `kind`,
/// given the buttons held before; returns the events (empty when the
/// device has no use for this input) and the buttons held after.
pub fn to_events(kind: InputKind, event: GuestInput, held: u8) -> (Vec<InputEvent>, u8) {
    let mut out = Vec::new();
    let mut now = held;
    match (kind, event) {
        (InputKind::Keyboard, GuestInput::Key { evdev, pressed }) => {
            out.push(InputEvent::key(evdev, pressed));
        }
        (InputKind::Tablet, GuestInput::PointerAbsolute { x, y }) => {
            out.push(InputEvent::new(codes::EV_ABS, codes::ABS_X, i32::from(x)));
            out.push(InputEvent::new(codes::EV_ABS, codes::ABS_Y, i32::from(y)));
        }
        (InputKind::Mouse, GuestInput::PointerRelative { dx, dy }) => {
            if dx != 0 {
                out.push(InputEvent::new(codes::EV_REL, codes::REL_X, dx));
            }
            if dy != 0 {
                out.push(InputEvent::new(codes::EV_REL, codes::REL_Y, dy));
            }
        }
        (InputKind::Tablet | InputKind::Mouse, GuestInput::Buttons(buttons)) => {
            for (bit, code) in BUTTONS {
                if (held ^ buttons) & bit != 0 {
                    out.push(InputEvent::key(code, buttons & bit != 0));
                }
            }
            now = buttons;
        }
        (InputKind::Tablet | InputKind::Mouse, GuestInput::Wheel(notches)) if notches != 0 => {
            out.push(InputEvent::new(codes::EV_REL, codes::REL_WHEEL, notches));
        }
        _ => {}
    }
    if !out.is_empty() {
        out.push(InputEvent::syn());
    }
    (out, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_key_is_one_event_and_a_report() {
        let (events, _) = to_events(
            InputKind::Keyboard,
            GuestInput::Key {
                evdev: 30,
                pressed: true,
            },
            0,
        );
        assert_eq!(events, vec![InputEvent::key(30, true), InputEvent::syn()]);
    }

    #[test]
    fn test_tablet_reports_absolute_position_and_changed_buttons_only() {
        let (events, _) = to_events(
            InputKind::Tablet,
            GuestInput::PointerAbsolute { x: 100, y: 0x7fff },
            0,
        );
        assert_eq!(
            events,
            vec![
                InputEvent::new(codes::EV_ABS, codes::ABS_X, 100),
                InputEvent::new(codes::EV_ABS, codes::ABS_Y, 0x7fff),
                InputEvent::syn()
            ]
        );
        let (events, held) = to_events(InputKind::Tablet, GuestInput::Buttons(0x3), 0x1);
        assert_eq!(
            events,
            vec![InputEvent::key(codes::BTN_RIGHT, true), InputEvent::syn()]
        );
        assert_eq!(held, 0x3);
    }

    #[test]
    fn test_devices_ignore_input_they_do_not_have() {
        let key = GuestInput::Key {
            evdev: 30,
            pressed: true,
        };
        assert!(to_events(InputKind::Mouse, key, 0).0.is_empty());
        let moved = GuestInput::PointerAbsolute { x: 1, y: 1 };
        assert!(to_events(InputKind::Keyboard, moved, 0).0.is_empty());
        assert!(
            to_events(InputKind::Mouse, GuestInput::Wheel(0), 0)
                .0
                .is_empty()
        );
    }
}
