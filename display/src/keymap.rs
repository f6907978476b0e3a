// SPDX-License-Identifier: Apache-2.0
//! The key table: for every key Nestbox can send, its Linux evdev code
//! (`include/uapi/linux/input-event-codes.h`, what virtio-input carries)
//! and its PS/2 make codes in scan code set 1 (XT, what the i8042 delivers
//! after translation) and set 2 (AT, what the keyboard itself sends),
//! prefixes `E0`/`E1` included.
//!
//! Break codes are derived: set 2 puts `F0` before the last byte of each
//! code (`E0 74` -> `E0 F0 74`), set 1 sets bit 7 of it (`E0 4D` ->
//! `E0 CD`); keys whose make is several codes (PrintScreen) break them in
//! reverse order, and Pause (`E1 ...`) has no break at all.
//!
//! [`egui_key_to_evdev`] translates egui's keys. egui 0.37 reports keys by
//! position where the platform gives it (`Event::Key::physical_key`),
//! otherwise by their logical meaning, and it has no keypad keys: keypad
//! digits and operators arrive as the main-block keys (`Num7`, `Minus`,
//! `Enter`...), except `Plus`, which only the keypad produces physically
//! and is mapped to KP +. Shifted symbols that egui reports as their own
//! key (`Colon`, `Pipe`, `Questionmark`, `Exclamationmark`, the curly
//! brackets) map to the key that produces them on a US layout; the shift
//! itself comes from the modifier state. Modifier, lock and system keys do
//! exist in egui 0.37 as separate left/right variants, but are only sent
//! as `Event::Key` by some back-ends, so [`modifier_keys`] and
//! [`modifier_changes`] also derive them from `egui::Modifiers`.

use egui::{Key, Modifiers};

/// One key: its codes in every protocol Nestbox speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    /// Linux evdev code (`KEY_*`).
    pub evdev: u16,
    /// Scan code set 1 make code, prefixes included.
    pub set1: &'static [u8],
    /// Scan code set 2 make code, prefixes included.
    pub set2: &'static [u8],
    /// Lower-case name: the evdev name without `KEY_` (`esc`, `leftctrl`,
    /// `102nd`, `kpenter`, `sysrq` for PrintScreen, `compose` for Menu).
    pub name: &'static str,
    /// True for the 105 keys of an ISO PC keyboard.
    pub iso105: bool,
}

const fn key(
    evdev: u16,
    name: &'static str,
    set1: &'static [u8],
    set2: &'static [u8],
    iso105: bool,
) -> KeyInfo {
    KeyInfo {
        evdev,
        set1,
        set2,
        name,
        iso105,
    }
}

/// The table entry for an evdev code.
pub fn key_by_evdev(code: u16) -> Option<&'static KeyInfo> {
    KEYS.binary_search_by_key(&code, |k| k.evdev)
        .ok()
        .and_then(|i| KEYS.get(i))
}

/// The table entry for a name of [`KeyInfo::name`] (ASCII case ignored).
pub fn key_by_name(name: &str) -> Option<&'static KeyInfo> {
    KEYS.iter().find(|k| k.name.eq_ignore_ascii_case(name))
}

/// Splits a make sequence into its codes: `E0 xx` pairs and single bytes.
/// None for `E1` sequences (Pause), which have no break.
fn split_codes(make: &[u8]) -> Option<Vec<&[u8]>> {
    if make.first() == Some(&0xE1) {
        return None;
    }
    let mut codes = Vec::new();
    let mut rest = make;
    while !rest.is_empty() {
        let n = if rest[0] == 0xE0 {
            2.min(rest.len())
        } else {
            1
        };
        let (code, tail) = rest.split_at(n);
        codes.push(code);
        rest = tail;
    }
    Some(codes)
}

/// Set 2 make bytes of an evdev key (empty if the key is unknown).
pub fn set2_make(code: u16) -> Vec<u8> {
    key_by_evdev(code)
        .map(|k| k.set2.to_vec())
        .unwrap_or_default()
}

/// Set 2 break bytes of an evdev key: `F0` before the last byte of each
/// code, codes in reverse order. Empty for unknown keys and for Pause,
/// which has no break.
pub fn set2_break(code: u16) -> Vec<u8> {
    let Some(codes) = key_by_evdev(code).and_then(|k| split_codes(k.set2)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in codes.iter().rev() {
        if let Some((last, prefix)) = c.split_last() {
            out.extend_from_slice(prefix);
            out.push(0xF0);
            out.push(*last);
        }
    }
    out
}

/// Set 1 make bytes of an evdev key (empty if the key is unknown).
pub fn set1_make(code: u16) -> Vec<u8> {
    key_by_evdev(code)
        .map(|k| k.set1.to_vec())
        .unwrap_or_default()
}

/// Set 1 break bytes of an evdev key: bit 7 set on the last byte of each
/// code (`E0` kept), codes in reverse order. Empty for unknown keys and for
/// Pause, which has no break.
pub fn set1_break(code: u16) -> Vec<u8> {
    let Some(codes) = key_by_evdev(code).and_then(|k| split_codes(k.set1)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in codes.iter().rev() {
        if let Some((last, prefix)) = c.split_last() {
            out.extend_from_slice(prefix);
            out.push(last | 0x80);
        }
    }
    out
}

/// The evdev code of an egui key, None for keys without a PC-keyboard
/// equivalent: `Copy`, `Cut`, `Paste`, `F13`..`F35`, `Fn`, `Eject`, `Help`
/// and `Clear`. See the module documentation for keypad keys and shifted
/// symbols.
pub fn egui_key_to_evdev(key: Key) -> Option<u16> {
    use evdev::*;
    let code = match key {
        Key::ArrowDown => KEY_DOWN,
        Key::ArrowLeft => KEY_LEFT,
        Key::ArrowRight => KEY_RIGHT,
        Key::ArrowUp => KEY_UP,
        Key::Escape => KEY_ESC,
        Key::Tab => KEY_TAB,
        Key::Backspace => KEY_BACKSPACE,
        Key::Enter => KEY_ENTER,
        Key::Space => KEY_SPACE,
        Key::Insert => KEY_INSERT,
        Key::Delete => KEY_DELETE,
        Key::Home => KEY_HOME,
        Key::End => KEY_END,
        Key::PageUp => KEY_PAGEUP,
        Key::PageDown => KEY_PAGEDOWN,
        Key::Copy | Key::Cut | Key::Paste => return None,
        Key::Colon | Key::Semicolon => KEY_SEMICOLON,
        Key::Comma => KEY_COMMA,
        Key::Backslash | Key::Pipe => KEY_BACKSLASH,
        Key::Slash | Key::Questionmark => KEY_SLASH,
        Key::Exclamationmark => KEY_1,
        Key::OpenBracket | Key::OpenCurlyBracket => KEY_LEFTBRACE,
        Key::CloseBracket | Key::CloseCurlyBracket => KEY_RIGHTBRACE,
        Key::Backtick => KEY_GRAVE,
        Key::Minus => KEY_MINUS,
        Key::Period => KEY_DOT,
        Key::Plus => KEY_KPPLUS,
        Key::Equals => KEY_EQUAL,
        Key::Quote => KEY_APOSTROPHE,
        Key::Num0 => KEY_0,
        Key::Num1 => KEY_1,
        Key::Num2 => KEY_2,
        Key::Num3 => KEY_3,
        Key::Num4 => KEY_4,
        Key::Num5 => KEY_5,
        Key::Num6 => KEY_6,
        Key::Num7 => KEY_7,
        Key::Num8 => KEY_8,
        Key::Num9 => KEY_9,
        Key::A => KEY_A,
        Key::B => KEY_B,
        Key::C => KEY_C,
        Key::D => KEY_D,
        Key::E => KEY_E,
        Key::F => KEY_F,
        Key::G => KEY_G,
        Key::H => KEY_H,
        Key::I => KEY_I,
        Key::J => KEY_J,
        Key::K => KEY_K,
        Key::L => KEY_L,
        Key::M => KEY_M,
        Key::N => KEY_N,
        Key::O => KEY_O,
        Key::P => KEY_P,
        Key::Q => KEY_Q,
        Key::R => KEY_R,
        Key::S => KEY_S,
        Key::T => KEY_T,
        Key::U => KEY_U,
        Key::V => KEY_V,
        Key::W => KEY_W,
        Key::X => KEY_X,
        Key::Y => KEY_Y,
        Key::Z => KEY_Z,
        Key::F1 => KEY_F1,
        Key::F2 => KEY_F2,
        Key::F3 => KEY_F3,
        Key::F4 => KEY_F4,
        Key::F5 => KEY_F5,
        Key::F6 => KEY_F6,
        Key::F7 => KEY_F7,
        Key::F8 => KEY_F8,
        Key::F9 => KEY_F9,
        Key::F10 => KEY_F10,
        Key::F11 => KEY_F11,
        Key::F12 => KEY_F12,
        Key::F13
        | Key::F14
        | Key::F15
        | Key::F16
        | Key::F17
        | Key::F18
        | Key::F19
        | Key::F20
        | Key::F21
        | Key::F22
        | Key::F23
        | Key::F24
        | Key::F25
        | Key::F26
        | Key::F27
        | Key::F28
        | Key::F29
        | Key::F30
        | Key::F31
        | Key::F32
        | Key::F33
        | Key::F34
        | Key::F35 => return None,
        Key::BrowserBack => KEY_BACK,
        Key::BrowserForward => KEY_FORWARD,
        Key::BrowserRefresh => KEY_REFRESH,
        Key::BrowserSearch => KEY_SEARCH,
        Key::BrowserHome => KEY_HOMEPAGE,
        Key::BrowserFavorites => KEY_BOOKMARKS,
        Key::BrowserStop => KEY_STOP,
        Key::MediaPlayPause => KEY_PLAYPAUSE,
        Key::MediaTrackNext => KEY_NEXTSONG,
        Key::MediaTrackPrevious => KEY_PREVIOUSSONG,
        Key::MediaStop => KEY_STOPCD,
        Key::AudioVolumeMute => KEY_MUTE,
        Key::AudioVolumeDown => KEY_VOLUMEDOWN,
        Key::AudioVolumeUp => KEY_VOLUMEUP,
        Key::LaunchMail => KEY_MAIL,
        Key::LaunchApp1 => KEY_COMPUTER,
        Key::LaunchApp2 => KEY_CALC,
        Key::ShiftLeft => KEY_LEFTSHIFT,
        Key::ShiftRight => KEY_RIGHTSHIFT,
        Key::ControlLeft => KEY_LEFTCTRL,
        Key::ControlRight => KEY_RIGHTCTRL,
        Key::AltLeft => KEY_LEFTALT,
        Key::AltRight => KEY_RIGHTALT,
        Key::SuperLeft => KEY_LEFTMETA,
        Key::SuperRight => KEY_RIGHTMETA,
        Key::IntlBackslash => KEY_102ND,
        Key::CapsLock => KEY_CAPSLOCK,
        Key::NumLock => KEY_NUMLOCK,
        Key::ScrollLock => KEY_SCROLLLOCK,
        Key::PrintScreen => KEY_SYSRQ,
        Key::Pause => KEY_PAUSE,
        Key::Menu => KEY_COMPOSE,
        Key::Power => KEY_POWER,
        Key::Sleep => KEY_SLEEP,
        Key::Fn | Key::Eject | Key::Help | Key::Clear => return None,
    };
    Some(code)
}

/// The evdev codes of the modifiers held in `m`, in press order: left
/// Ctrl, left Shift, left Alt. egui's state does not tell left from right
/// nor report Super, so the left keys stand for both and Super is left out
/// (`command`/`mac_cmd` are ignored: on Linux `command` is Ctrl).
pub fn modifier_keys(m: Modifiers) -> Vec<u16> {
    let mut keys = Vec::with_capacity(3);
    if m.ctrl {
        keys.push(evdev::KEY_LEFTCTRL);
    }
    if m.shift {
        keys.push(evdev::KEY_LEFTSHIFT);
    }
    if m.alt {
        keys.push(evdev::KEY_LEFTALT);
    }
    keys
}

/// The key events (evdev code, pressed) that take the guest from modifier
/// state `old` to `new`: releases first, then presses.
pub fn modifier_changes(old: Modifiers, new: Modifiers) -> Vec<(u16, bool)> {
    let before = modifier_keys(old);
    let after = modifier_keys(new);
    let released = before
        .iter()
        .filter(|k| !after.contains(k))
        .map(|&k| (k, false));
    let pressed = after
        .iter()
        .filter(|k| !before.contains(k))
        .map(|&k| (k, true));
    released.chain(pressed).collect()
}

/// Linux evdev key codes (`KEY_*` of `input-event-codes.h`) of every key in [`KEYS`].
pub mod evdev {
    /// `KEY_ESC`.
    pub const KEY_ESC: u16 = 1;
    /// `KEY_1`.
    pub const KEY_1: u16 = 2;
    /// `KEY_2`.
    pub const KEY_2: u16 = 3;
    /// `KEY_3`.
    pub const KEY_3: u16 = 4;
    /// `KEY_4`.
    pub const KEY_4: u16 = 5;
    /// `KEY_5`.
    pub const KEY_5: u16 = 6;
    /// `KEY_6`.
    pub const KEY_6: u16 = 7;
    /// `KEY_7`.
    pub const KEY_7: u16 = 8;
    /// `KEY_8`.
    pub const KEY_8: u16 = 9;
    /// `KEY_9`.
    pub const KEY_9: u16 = 10;
    /// `KEY_0`.
    pub const KEY_0: u16 = 11;
    /// `KEY_MINUS`.
    pub const KEY_MINUS: u16 = 12;
    /// `KEY_EQUAL`.
    pub const KEY_EQUAL: u16 = 13;
    /// `KEY_BACKSPACE`.
    pub const KEY_BACKSPACE: u16 = 14;
    /// `KEY_TAB`.
    pub const KEY_TAB: u16 = 15;
    /// `KEY_Q`.
    pub const KEY_Q: u16 = 16;
    /// `KEY_W`.
    pub const KEY_W: u16 = 17;
    /// `KEY_E`.
    pub const KEY_E: u16 = 18;
    /// `KEY_R`.
    pub const KEY_R: u16 = 19;
    /// `KEY_T`.
    pub const KEY_T: u16 = 20;
    /// `KEY_Y`.
    pub const KEY_Y: u16 = 21;
    /// `KEY_U`.
    pub const KEY_U: u16 = 22;
    /// `KEY_I`.
    pub const KEY_I: u16 = 23;
    /// `KEY_O`.
    pub const KEY_O: u16 = 24;
    /// `KEY_P`.
    pub const KEY_P: u16 = 25;
    /// `KEY_LEFTBRACE`.
    pub const KEY_LEFTBRACE: u16 = 26;
    /// `KEY_RIGHTBRACE`.
    pub const KEY_RIGHTBRACE: u16 = 27;
    /// `KEY_ENTER`.
    pub const KEY_ENTER: u16 = 28;
    /// `KEY_LEFTCTRL`.
    pub const KEY_LEFTCTRL: u16 = 29;
    /// `KEY_A`.
    pub const KEY_A: u16 = 30;
    /// `KEY_S`.
    pub const KEY_S: u16 = 31;
    /// `KEY_D`.
    pub const KEY_D: u16 = 32;
    /// `KEY_F`.
    pub const KEY_F: u16 = 33;
    /// `KEY_G`.
    pub const KEY_G: u16 = 34;
    /// `KEY_H`.
    pub const KEY_H: u16 = 35;
    /// `KEY_J`.
    pub const KEY_J: u16 = 36;
    /// `KEY_K`.
    pub const KEY_K: u16 = 37;
    /// `KEY_L`.
    pub const KEY_L: u16 = 38;
    /// `KEY_SEMICOLON`.
    pub const KEY_SEMICOLON: u16 = 39;
    /// `KEY_APOSTROPHE`.
    pub const KEY_APOSTROPHE: u16 = 40;
    /// `KEY_GRAVE`.
    pub const KEY_GRAVE: u16 = 41;
    /// `KEY_LEFTSHIFT`.
    pub const KEY_LEFTSHIFT: u16 = 42;
    /// `KEY_BACKSLASH`.
    pub const KEY_BACKSLASH: u16 = 43;
    /// `KEY_Z`.
    pub const KEY_Z: u16 = 44;
    /// `KEY_X`.
    pub const KEY_X: u16 = 45;
    /// `KEY_C`.
    pub const KEY_C: u16 = 46;
    /// `KEY_V`.
    pub const KEY_V: u16 = 47;
    /// `KEY_B`.
    pub const KEY_B: u16 = 48;
    /// `KEY_N`.
    pub const KEY_N: u16 = 49;
    /// `KEY_M`.
    pub const KEY_M: u16 = 50;
    /// `KEY_COMMA`.
    pub const KEY_COMMA: u16 = 51;
    /// `KEY_DOT`.
    pub const KEY_DOT: u16 = 52;
    /// `KEY_SLASH`.
    pub const KEY_SLASH: u16 = 53;
    /// `KEY_RIGHTSHIFT`.
    pub const KEY_RIGHTSHIFT: u16 = 54;
    /// `KEY_KPASTERISK`.
    pub const KEY_KPASTERISK: u16 = 55;
    /// `KEY_LEFTALT`.
    pub const KEY_LEFTALT: u16 = 56;
    /// `KEY_SPACE`.
    pub const KEY_SPACE: u16 = 57;
    /// `KEY_CAPSLOCK`.
    pub const KEY_CAPSLOCK: u16 = 58;
    /// `KEY_F1`.
    pub const KEY_F1: u16 = 59;
    /// `KEY_F2`.
    pub const KEY_F2: u16 = 60;
    /// `KEY_F3`.
    pub const KEY_F3: u16 = 61;
    /// `KEY_F4`.
    pub const KEY_F4: u16 = 62;
    /// `KEY_F5`.
    pub const KEY_F5: u16 = 63;
    /// `KEY_F6`.
    pub const KEY_F6: u16 = 64;
    /// `KEY_F7`.
    pub const KEY_F7: u16 = 65;
    /// `KEY_F8`.
    pub const KEY_F8: u16 = 66;
    /// `KEY_F9`.
    pub const KEY_F9: u16 = 67;
    /// `KEY_F10`.
    pub const KEY_F10: u16 = 68;
    /// `KEY_NUMLOCK`.
    pub const KEY_NUMLOCK: u16 = 69;
    /// `KEY_SCROLLLOCK`.
    pub const KEY_SCROLLLOCK: u16 = 70;
    /// `KEY_KP7`.
    pub const KEY_KP7: u16 = 71;
    /// `KEY_KP8`.
    pub const KEY_KP8: u16 = 72;
    /// `KEY_KP9`.
    pub const KEY_KP9: u16 = 73;
    /// `KEY_KPMINUS`.
    pub const KEY_KPMINUS: u16 = 74;
    /// `KEY_KP4`.
    pub const KEY_KP4: u16 = 75;
    /// `KEY_KP5`.
    pub const KEY_KP5: u16 = 76;
    /// `KEY_KP6`.
    pub const KEY_KP6: u16 = 77;
    /// `KEY_KPPLUS`.
    pub const KEY_KPPLUS: u16 = 78;
    /// `KEY_KP1`.
    pub const KEY_KP1: u16 = 79;
    /// `KEY_KP2`.
    pub const KEY_KP2: u16 = 80;
    /// `KEY_KP3`.
    pub const KEY_KP3: u16 = 81;
    /// `KEY_KP0`.
    pub const KEY_KP0: u16 = 82;
    /// `KEY_KPDOT`.
    pub const KEY_KPDOT: u16 = 83;
    /// `KEY_102ND`.
    pub const KEY_102ND: u16 = 86;
    /// `KEY_F11`.
    pub const KEY_F11: u16 = 87;
    /// `KEY_F12`.
    pub const KEY_F12: u16 = 88;
    /// `KEY_KPENTER`.
    pub const KEY_KPENTER: u16 = 96;
    /// `KEY_RIGHTCTRL`.
    pub const KEY_RIGHTCTRL: u16 = 97;
    /// `KEY_KPSLASH`.
    pub const KEY_KPSLASH: u16 = 98;
    /// `KEY_SYSRQ`.
    pub const KEY_SYSRQ: u16 = 99;
    /// `KEY_RIGHTALT`.
    pub const KEY_RIGHTALT: u16 = 100;
    /// `KEY_HOME`.
    pub const KEY_HOME: u16 = 102;
    /// `KEY_UP`.
    pub const KEY_UP: u16 = 103;
    /// `KEY_PAGEUP`.
    pub const KEY_PAGEUP: u16 = 104;
    /// `KEY_LEFT`.
    pub const KEY_LEFT: u16 = 105;
    /// `KEY_RIGHT`.
    pub const KEY_RIGHT: u16 = 106;
    /// `KEY_END`.
    pub const KEY_END: u16 = 107;
    /// `KEY_DOWN`.
    pub const KEY_DOWN: u16 = 108;
    /// `KEY_PAGEDOWN`.
    pub const KEY_PAGEDOWN: u16 = 109;
    /// `KEY_INSERT`.
    pub const KEY_INSERT: u16 = 110;
    /// `KEY_DELETE`.
    pub const KEY_DELETE: u16 = 111;
    /// `KEY_MUTE`.
    pub const KEY_MUTE: u16 = 113;
    /// `KEY_VOLUMEDOWN`.
    pub const KEY_VOLUMEDOWN: u16 = 114;
    /// `KEY_VOLUMEUP`.
    pub const KEY_VOLUMEUP: u16 = 115;
    /// `KEY_POWER`.
    pub const KEY_POWER: u16 = 116;
    /// `KEY_PAUSE`.
    pub const KEY_PAUSE: u16 = 119;
    /// `KEY_LEFTMETA`.
    pub const KEY_LEFTMETA: u16 = 125;
    /// `KEY_RIGHTMETA`.
    pub const KEY_RIGHTMETA: u16 = 126;
    /// `KEY_COMPOSE`.
    pub const KEY_COMPOSE: u16 = 127;
    /// `KEY_STOP`.
    pub const KEY_STOP: u16 = 128;
    /// `KEY_CALC`.
    pub const KEY_CALC: u16 = 140;
    /// `KEY_SLEEP`.
    pub const KEY_SLEEP: u16 = 142;
    /// `KEY_MAIL`.
    pub const KEY_MAIL: u16 = 155;
    /// `KEY_BOOKMARKS`.
    pub const KEY_BOOKMARKS: u16 = 156;
    /// `KEY_COMPUTER`.
    pub const KEY_COMPUTER: u16 = 157;
    /// `KEY_BACK`.
    pub const KEY_BACK: u16 = 158;
    /// `KEY_FORWARD`.
    pub const KEY_FORWARD: u16 = 159;
    /// `KEY_NEXTSONG`.
    pub const KEY_NEXTSONG: u16 = 163;
    /// `KEY_PLAYPAUSE`.
    pub const KEY_PLAYPAUSE: u16 = 164;
    /// `KEY_PREVIOUSSONG`.
    pub const KEY_PREVIOUSSONG: u16 = 165;
    /// `KEY_STOPCD`.
    pub const KEY_STOPCD: u16 = 166;
    /// `KEY_HOMEPAGE`.
    pub const KEY_HOMEPAGE: u16 = 172;
    /// `KEY_REFRESH`.
    pub const KEY_REFRESH: u16 = 173;
    /// `KEY_SEARCH`.
    pub const KEY_SEARCH: u16 = 217;
}

/// Every key Nestbox can send, sorted by evdev code: the 105 keys of an ISO
/// PC keyboard (`iso105`) and the multimedia / browser / power keys that
/// egui can report.
pub static KEYS: &[KeyInfo] = &[
    key(evdev::KEY_ESC, "esc", &[0x01], &[0x76], true),
    key(evdev::KEY_1, "1", &[0x02], &[0x16], true),
    key(evdev::KEY_2, "2", &[0x03], &[0x1E], true),
    key(evdev::KEY_3, "3", &[0x04], &[0x26], true),
    key(evdev::KEY_4, "4", &[0x05], &[0x25], true),
    key(evdev::KEY_5, "5", &[0x06], &[0x2E], true),
    key(evdev::KEY_6, "6", &[0x07], &[0x36], true),
    key(evdev::KEY_7, "7", &[0x08], &[0x3D], true),
    key(evdev::KEY_8, "8", &[0x09], &[0x3E], true),
    key(evdev::KEY_9, "9", &[0x0A], &[0x46], true),
    key(evdev::KEY_0, "0", &[0x0B], &[0x45], true),
    key(evdev::KEY_MINUS, "minus", &[0x0C], &[0x4E], true),
    key(evdev::KEY_EQUAL, "equal", &[0x0D], &[0x55], true),
    key(evdev::KEY_BACKSPACE, "backspace", &[0x0E], &[0x66], true),
    key(evdev::KEY_TAB, "tab", &[0x0F], &[0x0D], true),
    key(evdev::KEY_Q, "q", &[0x10], &[0x15], true),
    key(evdev::KEY_W, "w", &[0x11], &[0x1D], true),
    key(evdev::KEY_E, "e", &[0x12], &[0x24], true),
    key(evdev::KEY_R, "r", &[0x13], &[0x2D], true),
    key(evdev::KEY_T, "t", &[0x14], &[0x2C], true),
    key(evdev::KEY_Y, "y", &[0x15], &[0x35], true),
    key(evdev::KEY_U, "u", &[0x16], &[0x3C], true),
    key(evdev::KEY_I, "i", &[0x17], &[0x43], true),
    key(evdev::KEY_O, "o", &[0x18], &[0x44], true),
    key(evdev::KEY_P, "p", &[0x19], &[0x4D], true),
    key(evdev::KEY_LEFTBRACE, "leftbrace", &[0x1A], &[0x54], true),
    key(evdev::KEY_RIGHTBRACE, "rightbrace", &[0x1B], &[0x5B], true),
    key(evdev::KEY_ENTER, "enter", &[0x1C], &[0x5A], true),
    key(evdev::KEY_LEFTCTRL, "leftctrl", &[0x1D], &[0x14], true),
    key(evdev::KEY_A, "a", &[0x1E], &[0x1C], true),
    key(evdev::KEY_S, "s", &[0x1F], &[0x1B], true),
    key(evdev::KEY_D, "d", &[0x20], &[0x23], true),
    key(evdev::KEY_F, "f", &[0x21], &[0x2B], true),
    key(evdev::KEY_G, "g", &[0x22], &[0x34], true),
    key(evdev::KEY_H, "h", &[0x23], &[0x33], true),
    key(evdev::KEY_J, "j", &[0x24], &[0x3B], true),
    key(evdev::KEY_K, "k", &[0x25], &[0x42], true),
    key(evdev::KEY_L, "l", &[0x26], &[0x4B], true),
    key(evdev::KEY_SEMICOLON, "semicolon", &[0x27], &[0x4C], true),
    key(evdev::KEY_APOSTROPHE, "apostrophe", &[0x28], &[0x52], true),
    key(evdev::KEY_GRAVE, "grave", &[0x29], &[0x0E], true),
    key(evdev::KEY_LEFTSHIFT, "leftshift", &[0x2A], &[0x12], true),
    key(evdev::KEY_BACKSLASH, "backslash", &[0x2B], &[0x5D], true),
    key(evdev::KEY_Z, "z", &[0x2C], &[0x1A], true),
    key(evdev::KEY_X, "x", &[0x2D], &[0x22], true),
    key(evdev::KEY_C, "c", &[0x2E], &[0x21], true),
    key(evdev::KEY_V, "v", &[0x2F], &[0x2A], true),
    key(evdev::KEY_B, "b", &[0x30], &[0x32], true),
    key(evdev::KEY_N, "n", &[0x31], &[0x31], true),
    key(evdev::KEY_M, "m", &[0x32], &[0x3A], true),
    key(evdev::KEY_COMMA, "comma", &[0x33], &[0x41], true),
    key(evdev::KEY_DOT, "dot", &[0x34], &[0x49], true),
    key(evdev::KEY_SLASH, "slash", &[0x35], &[0x4A], true),
    key(evdev::KEY_RIGHTSHIFT, "rightshift", &[0x36], &[0x59], true),
    key(evdev::KEY_KPASTERISK, "kpasterisk", &[0x37], &[0x7C], true),
    key(evdev::KEY_LEFTALT, "leftalt", &[0x38], &[0x11], true),
    key(evdev::KEY_SPACE, "space", &[0x39], &[0x29], true),
    key(evdev::KEY_CAPSLOCK, "capslock", &[0x3A], &[0x58], true),
    key(evdev::KEY_F1, "f1", &[0x3B], &[0x05], true),
    key(evdev::KEY_F2, "f2", &[0x3C], &[0x06], true),
    key(evdev::KEY_F3, "f3", &[0x3D], &[0x04], true),
    key(evdev::KEY_F4, "f4", &[0x3E], &[0x0C], true),
    key(evdev::KEY_F5, "f5", &[0x3F], &[0x03], true),
    key(evdev::KEY_F6, "f6", &[0x40], &[0x0B], true),
    key(evdev::KEY_F7, "f7", &[0x41], &[0x83], true),
    key(evdev::KEY_F8, "f8", &[0x42], &[0x0A], true),
    key(evdev::KEY_F9, "f9", &[0x43], &[0x01], true),
    key(evdev::KEY_F10, "f10", &[0x44], &[0x09], true),
    key(evdev::KEY_NUMLOCK, "numlock", &[0x45], &[0x77], true),
    key(evdev::KEY_SCROLLLOCK, "scrolllock", &[0x46], &[0x7E], true),
    key(evdev::KEY_KP7, "kp7", &[0x47], &[0x6C], true),
    key(evdev::KEY_KP8, "kp8", &[0x48], &[0x75], true),
    key(evdev::KEY_KP9, "kp9", &[0x49], &[0x7D], true),
    key(evdev::KEY_KPMINUS, "kpminus", &[0x4A], &[0x7B], true),
    key(evdev::KEY_KP4, "kp4", &[0x4B], &[0x6B], true),
    key(evdev::KEY_KP5, "kp5", &[0x4C], &[0x73], true),
    key(evdev::KEY_KP6, "kp6", &[0x4D], &[0x74], true),
    key(evdev::KEY_KPPLUS, "kpplus", &[0x4E], &[0x79], true),
    key(evdev::KEY_KP1, "kp1", &[0x4F], &[0x69], true),
    key(evdev::KEY_KP2, "kp2", &[0x50], &[0x72], true),
    key(evdev::KEY_KP3, "kp3", &[0x51], &[0x7A], true),
    key(evdev::KEY_KP0, "kp0", &[0x52], &[0x70], true),
    key(evdev::KEY_KPDOT, "kpdot", &[0x53], &[0x71], true),
    key(evdev::KEY_102ND, "102nd", &[0x56], &[0x61], true),
    key(evdev::KEY_F11, "f11", &[0x57], &[0x78], true),
    key(evdev::KEY_F12, "f12", &[0x58], &[0x07], true),
    key(
        evdev::KEY_KPENTER,
        "kpenter",
        &[0xE0, 0x1C],
        &[0xE0, 0x5A],
        true,
    ),
    key(
        evdev::KEY_RIGHTCTRL,
        "rightctrl",
        &[0xE0, 0x1D],
        &[0xE0, 0x14],
        true,
    ),
    key(
        evdev::KEY_KPSLASH,
        "kpslash",
        &[0xE0, 0x35],
        &[0xE0, 0x4A],
        true,
    ),
    key(
        evdev::KEY_SYSRQ,
        "sysrq",
        &[0xE0, 0x2A, 0xE0, 0x37],
        &[0xE0, 0x12, 0xE0, 0x7C],
        true,
    ),
    key(
        evdev::KEY_RIGHTALT,
        "rightalt",
        &[0xE0, 0x38],
        &[0xE0, 0x11],
        true,
    ),
    key(evdev::KEY_HOME, "home", &[0xE0, 0x47], &[0xE0, 0x6C], true),
    key(evdev::KEY_UP, "up", &[0xE0, 0x48], &[0xE0, 0x75], true),
    key(
        evdev::KEY_PAGEUP,
        "pageup",
        &[0xE0, 0x49],
        &[0xE0, 0x7D],
        true,
    ),
    key(evdev::KEY_LEFT, "left", &[0xE0, 0x4B], &[0xE0, 0x6B], true),
    key(
        evdev::KEY_RIGHT,
        "right",
        &[0xE0, 0x4D],
        &[0xE0, 0x74],
        true,
    ),
    key(evdev::KEY_END, "end", &[0xE0, 0x4F], &[0xE0, 0x69], true),
    key(evdev::KEY_DOWN, "down", &[0xE0, 0x50], &[0xE0, 0x72], true),
    key(
        evdev::KEY_PAGEDOWN,
        "pagedown",
        &[0xE0, 0x51],
        &[0xE0, 0x7A],
        true,
    ),
    key(
        evdev::KEY_INSERT,
        "insert",
        &[0xE0, 0x52],
        &[0xE0, 0x70],
        true,
    ),
    key(
        evdev::KEY_DELETE,
        "delete",
        &[0xE0, 0x53],
        &[0xE0, 0x71],
        true,
    ),
    key(evdev::KEY_MUTE, "mute", &[0xE0, 0x20], &[0xE0, 0x23], false),
    key(
        evdev::KEY_VOLUMEDOWN,
        "volumedown",
        &[0xE0, 0x2E],
        &[0xE0, 0x21],
        false,
    ),
    key(
        evdev::KEY_VOLUMEUP,
        "volumeup",
        &[0xE0, 0x30],
        &[0xE0, 0x32],
        false,
    ),
    key(
        evdev::KEY_POWER,
        "power",
        &[0xE0, 0x5E],
        &[0xE0, 0x37],
        false,
    ),
    key(
        evdev::KEY_PAUSE,
        "pause",
        &[0xE1, 0x1D, 0x45, 0xE1, 0x9D, 0xC5],
        &[0xE1, 0x14, 0x77, 0xE1, 0xF0, 0x14, 0xF0, 0x77],
        true,
    ),
    key(
        evdev::KEY_LEFTMETA,
        "leftmeta",
        &[0xE0, 0x5B],
        &[0xE0, 0x1F],
        true,
    ),
    key(
        evdev::KEY_RIGHTMETA,
        "rightmeta",
        &[0xE0, 0x5C],
        &[0xE0, 0x27],
        true,
    ),
    key(
        evdev::KEY_COMPOSE,
        "compose",
        &[0xE0, 0x5D],
        &[0xE0, 0x2F],
        true,
    ),
    key(evdev::KEY_STOP, "stop", &[0xE0, 0x68], &[0xE0, 0x28], false),
    key(evdev::KEY_CALC, "calc", &[0xE0, 0x21], &[0xE0, 0x2B], false),
    key(
        evdev::KEY_SLEEP,
        "sleep",
        &[0xE0, 0x5F],
        &[0xE0, 0x3F],
        false,
    ),
    key(evdev::KEY_MAIL, "mail", &[0xE0, 0x6C], &[0xE0, 0x48], false),
    key(
        evdev::KEY_BOOKMARKS,
        "bookmarks",
        &[0xE0, 0x66],
        &[0xE0, 0x18],
        false,
    ),
    key(
        evdev::KEY_COMPUTER,
        "computer",
        &[0xE0, 0x6B],
        &[0xE0, 0x40],
        false,
    ),
    key(evdev::KEY_BACK, "back", &[0xE0, 0x6A], &[0xE0, 0x38], false),
    key(
        evdev::KEY_FORWARD,
        "forward",
        &[0xE0, 0x69],
        &[0xE0, 0x30],
        false,
    ),
    key(
        evdev::KEY_NEXTSONG,
        "nextsong",
        &[0xE0, 0x19],
        &[0xE0, 0x4D],
        false,
    ),
    key(
        evdev::KEY_PLAYPAUSE,
        "playpause",
        &[0xE0, 0x22],
        &[0xE0, 0x34],
        false,
    ),
    key(
        evdev::KEY_PREVIOUSSONG,
        "previoussong",
        &[0xE0, 0x10],
        &[0xE0, 0x15],
        false,
    ),
    key(
        evdev::KEY_STOPCD,
        "stopcd",
        &[0xE0, 0x24],
        &[0xE0, 0x3B],
        false,
    ),
    key(
        evdev::KEY_HOMEPAGE,
        "homepage",
        &[0xE0, 0x32],
        &[0xE0, 0x3A],
        false,
    ),
    key(
        evdev::KEY_REFRESH,
        "refresh",
        &[0xE0, 0x67],
        &[0xE0, 0x20],
        false,
    ),
    key(
        evdev::KEY_SEARCH,
        "search",
        &[0xE0, 0x65],
        &[0xE0, 0x10],
        false,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn test_table_sorted_and_evdev_unique() {
        assert!(KEYS.windows(2).all(|w| w[0].evdev < w[1].evdev));
        let names: HashSet<_> = KEYS.iter().map(|k| k.name).collect();
        assert_eq!(names.len(), KEYS.len());
        for k in KEYS {
            assert_eq!(key_by_evdev(k.evdev), Some(k));
            assert_eq!(key_by_name(&k.name.to_uppercase()), Some(k));
        }
        assert_eq!(key_by_evdev(0), None);
        assert_eq!(key_by_evdev(u16::MAX), None);
    }

    #[test]
    fn test_scan_code_sequences_unique() {
        let set1: HashSet<_> = KEYS.iter().map(|k| k.set1).collect();
        let set2: HashSet<_> = KEYS.iter().map(|k| k.set2).collect();
        assert_eq!(set1.len(), KEYS.len());
        assert_eq!(set2.len(), KEYS.len());
        let b1: HashSet<_> = KEYS.iter().map(|k| set1_break(k.evdev)).collect();
        let b2: HashSet<_> = KEYS.iter().map(|k| set2_break(k.evdev)).collect();
        // Unique (Pause's empty break is the only empty one).
        assert_eq!(b1.len(), KEYS.len());
        assert_eq!(b2.len(), KEYS.len());
    }

    #[test]
    fn test_exactly_105_iso_keys() {
        assert_eq!(KEYS.iter().filter(|k| k.iso105).count(), 105);
        for name in ["102nd", "backslash", "compose", "kpenter", "pause", "sysrq"] {
            assert!(key_by_name(name).unwrap().iso105, "{name}");
        }
        for name in ["mute", "power", "search"] {
            assert!(!key_by_name(name).unwrap().iso105, "{name}");
        }
    }

    /// Set 1 code -> set 2 code for the low 7 bits: the inverse of the
    /// i8042's set 2 to set 1 translation, which works byte by byte and
    /// keeps the E0 prefix. F7 is the one exception (set 2 0x83 does not
    /// fit 7 bits; the controller special-cases it).
    const XT_TO_AT: [u8; 128] = [
        0x00, 0x76, 0x16, 0x1E, 0x26, 0x25, 0x2E, 0x36, 0x3D, 0x3E, 0x46, 0x45, 0x4E, 0x55, 0x66,
        0x0D, 0x15, 0x1D, 0x24, 0x2D, 0x2C, 0x35, 0x3C, 0x43, 0x44, 0x4D, 0x54, 0x5B, 0x5A, 0x14,
        0x1C, 0x1B, 0x23, 0x2B, 0x34, 0x33, 0x3B, 0x42, 0x4B, 0x4C, 0x52, 0x0E, 0x12, 0x5D, 0x1A,
        0x22, 0x21, 0x2A, 0x32, 0x31, 0x3A, 0x41, 0x49, 0x4A, 0x59, 0x7C, 0x11, 0x29, 0x58, 0x05,
        0x06, 0x04, 0x0C, 0x03, 0x0B, 0x02, 0x0A, 0x01, 0x09, 0x77, 0x7E, 0x6C, 0x75, 0x7D, 0x7B,
        0x6B, 0x73, 0x74, 0x79, 0x69, 0x72, 0x7A, 0x70, 0x71, 0x7F, 0x60, 0x61, 0x78, 0x07, 0x0F,
        0x17, 0x1F, 0x27, 0x2F, 0x37, 0x3F, 0x47, 0x4F, 0x56, 0x5E, 0x08, 0x10, 0x18, 0x20, 0x28,
        0x30, 0x38, 0x40, 0x48, 0x50, 0x57, 0x6F, 0x13, 0x19, 0x39, 0x51, 0x53, 0x5C, 0x5F, 0x62,
        0x63, 0x64, 0x65, 0x67, 0x68, 0x6A, 0x6D, 0x6E,
    ];

    #[test]
    fn test_set1_and_set2_agree_through_translation() {
        for k in KEYS {
            if k.evdev == evdev::KEY_PAUSE || k.evdev == evdev::KEY_F7 {
                continue;
            }
            let c1 = split_codes(k.set1).unwrap();
            let c2 = split_codes(k.set2).unwrap();
            assert_eq!(c1.len(), c2.len(), "{}", k.name);
            for (a, b) in c1.iter().zip(&c2) {
                let (la, pa) = a.split_last().unwrap();
                let (lb, pb) = b.split_last().unwrap();
                assert_eq!(pa, pb, "{} prefix", k.name);
                assert_eq!(XT_TO_AT[usize::from(*la & 0x7f)], *lb, "{}", k.name);
            }
        }
    }

    #[test]
    fn test_known_codes() {
        use evdev::*;
        let cases: &[(u16, &[u8], &[u8])] = &[
            (KEY_ESC, &[0x01], &[0x76]),
            (KEY_A, &[0x1E], &[0x1C]),
            (KEY_ENTER, &[0x1C], &[0x5A]),
            (KEY_LEFTCTRL, &[0x1D], &[0x14]),
            (KEY_RIGHTCTRL, &[0xE0, 0x1D], &[0xE0, 0x14]),
            (KEY_KPENTER, &[0xE0, 0x1C], &[0xE0, 0x5A]),
            (KEY_F12, &[0x58], &[0x07]),
            (KEY_102ND, &[0x56], &[0x61]),
            (KEY_F7, &[0x41], &[0x83]),
            (KEY_KPSLASH, &[0xE0, 0x35], &[0xE0, 0x4A]),
            (KEY_LEFTMETA, &[0xE0, 0x5B], &[0xE0, 0x1F]),
        ];
        for &(code, s1, s2) in cases {
            assert_eq!(set1_make(code), s1, "set1 {code}");
            assert_eq!(set2_make(code), s2, "set2 {code}");
        }
    }

    #[test]
    fn test_break_codes() {
        use evdev::*;
        assert_eq!(set2_break(KEY_A), [0xF0, 0x1C]);
        assert_eq!(set2_break(KEY_RIGHT), [0xE0, 0xF0, 0x74]);
        assert_eq!(set2_make(KEY_SYSRQ), [0xE0, 0x12, 0xE0, 0x7C]);
        assert_eq!(set2_break(KEY_SYSRQ), [0xE0, 0xF0, 0x7C, 0xE0, 0xF0, 0x12]);
        assert_eq!(
            set2_make(KEY_PAUSE),
            [0xE1, 0x14, 0x77, 0xE1, 0xF0, 0x14, 0xF0, 0x77]
        );
        assert!(set2_break(KEY_PAUSE).is_empty());
        assert_eq!(set1_break(KEY_A), [0x9E]);
        assert_eq!(set1_break(KEY_RIGHT), [0xE0, 0xCD]);
        assert_eq!(set1_break(KEY_SYSRQ), [0xE0, 0xB7, 0xE0, 0xAA]);
        assert_eq!(set1_make(KEY_PAUSE), [0xE1, 0x1D, 0x45, 0xE1, 0x9D, 0xC5]);
        assert!(set1_break(KEY_PAUSE).is_empty());
        assert!(set1_make(0).is_empty() && set2_break(999).is_empty());
    }

    #[test]
    fn test_set1_matches_evdev_for_plain_keys() {
        // evdev codes 1..=88 were taken from set 1.
        for k in KEYS.iter().filter(|k| k.evdev <= 88) {
            assert_eq!(k.set1, [k.evdev as u8], "{}", k.name);
        }
    }

    #[test]
    fn test_every_mapped_egui_key_is_in_table() {
        let mut mapped = HashSet::new();
        for &key in Key::ALL {
            if let Some(code) = egui_key_to_evdev(key) {
                assert!(key_by_evdev(code).is_some(), "{key:?} -> {code}");
                mapped.insert(code);
            }
        }
        // Only the keypad keys (other than +), which egui reports as their
        // main-block twins, are left without an egui key.
        let unmapped: Vec<_> = KEYS
            .iter()
            .filter(|k| !mapped.contains(&k.evdev))
            .map(|k| k.name)
            .collect();
        for name in &unmapped {
            assert!(name.starts_with("kp"), "{name} has no egui key");
        }
        assert_eq!(egui_key_to_evdev(Key::Copy), None);
        assert_eq!(egui_key_to_evdev(Key::F13), None);
        assert_eq!(
            egui_key_to_evdev(Key::IntlBackslash),
            Some(evdev::KEY_102ND)
        );
    }

    #[test]
    fn test_modifier_helpers() {
        use evdev::*;
        let none = Modifiers::NONE;
        let cs = Modifiers {
            ctrl: true,
            shift: true,
            ..Modifiers::NONE
        };
        assert_eq!(modifier_keys(cs), [KEY_LEFTCTRL, KEY_LEFTSHIFT]);
        assert_eq!(
            modifier_changes(none, cs),
            [(KEY_LEFTCTRL, true), (KEY_LEFTSHIFT, true)]
        );
        let ca = Modifiers {
            ctrl: true,
            alt: true,
            ..Modifiers::NONE
        };
        assert_eq!(
            modifier_changes(cs, ca),
            [(KEY_LEFTSHIFT, false), (KEY_LEFTALT, true)]
        );
        assert!(modifier_changes(ca, ca).is_empty());
    }
}
