// SPDX-License-Identifier: Apache-2.0
//! "Send keys": key chords written as text, such as `ctrl+alt+del`,
//! `ctrl+alt+f2`, `alt+tab`, `esc` or `f12`, turned into evdev key events
//! (press in order, release in reverse).
//!
//! Names are the [`KeyInfo::name`](crate::keymap::KeyInfo::name)s of the
//! key table (`leftctrl`, `sysrq`, `kpenter`...) plus the usual aliases
//! listed in [`ALIASES`]; case and blanks around names are ignored.

use crate::keymap::{self, evdev};

/// Short and common names, mapped to evdev codes. The generic modifier
/// names mean the left-hand key.
pub const ALIASES: &[(&str, u16)] = &[
    ("ctrl", evdev::KEY_LEFTCTRL),
    ("control", evdev::KEY_LEFTCTRL),
    ("lctrl", evdev::KEY_LEFTCTRL),
    ("rctrl", evdev::KEY_RIGHTCTRL),
    ("shift", evdev::KEY_LEFTSHIFT),
    ("lshift", evdev::KEY_LEFTSHIFT),
    ("rshift", evdev::KEY_RIGHTSHIFT),
    ("alt", evdev::KEY_LEFTALT),
    ("lalt", evdev::KEY_LEFTALT),
    ("ralt", evdev::KEY_RIGHTALT),
    ("altgr", evdev::KEY_RIGHTALT),
    ("super", evdev::KEY_LEFTMETA),
    ("meta", evdev::KEY_LEFTMETA),
    ("win", evdev::KEY_LEFTMETA),
    ("windows", evdev::KEY_LEFTMETA),
    ("cmd", evdev::KEY_LEFTMETA),
    ("del", evdev::KEY_DELETE),
    ("ins", evdev::KEY_INSERT),
    ("escape", evdev::KEY_ESC),
    ("return", evdev::KEY_ENTER),
    ("bksp", evdev::KEY_BACKSPACE),
    ("pgup", evdev::KEY_PAGEUP),
    ("pgdn", evdev::KEY_PAGEDOWN),
    ("pagedn", evdev::KEY_PAGEDOWN),
    ("print", evdev::KEY_SYSRQ),
    ("printscreen", evdev::KEY_SYSRQ),
    ("prtsc", evdev::KEY_SYSRQ),
    ("break", evdev::KEY_PAUSE),
    ("caps", evdev::KEY_CAPSLOCK),
    ("scroll", evdev::KEY_SCROLLLOCK),
    ("menu", evdev::KEY_COMPOSE),
    ("apps", evdev::KEY_COMPOSE),
    ("spc", evdev::KEY_SPACE),
    ("period", evdev::KEY_DOT),
    ("quote", evdev::KEY_APOSTROPHE),
    ("backtick", evdev::KEY_GRAVE),
    ("lbracket", evdev::KEY_LEFTBRACE),
    ("rbracket", evdev::KEY_RIGHTBRACE),
    ("less", evdev::KEY_102ND),
    ("-", evdev::KEY_MINUS),
    ("=", evdev::KEY_EQUAL),
    (",", evdev::KEY_COMMA),
    (".", evdev::KEY_DOT),
    ("/", evdev::KEY_SLASH),
    (";", evdev::KEY_SEMICOLON),
    ("'", evdev::KEY_APOSTROPHE),
    ("`", evdev::KEY_GRAVE),
    ("[", evdev::KEY_LEFTBRACE),
    ("]", evdev::KEY_RIGHTBRACE),
    ("\\", evdev::KEY_BACKSLASH),
];

/// Why a chord did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyChordError {
    /// Nothing to send (an empty string or an empty part, as in `ctrl++`).
    #[error("empty key name in chord {0:?}")]
    Empty(String),
    /// A name that is neither a key table name nor an alias.
    #[error("unknown key {0:?}")]
    UnknownKey(String),
    /// The same key twice in one chord.
    #[error("key {0:?} appears twice")]
    Duplicate(String),
}

/// The evdev code for one key name (table name or alias, case ignored).
pub fn key_code(name: &str) -> Option<u16> {
    let name = name.trim();
    if let Some(k) = keymap::key_by_name(name) {
        return Some(k.evdev);
    }
    ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
        .map(|&(_, code)| code)
}

/// Parses a chord such as `ctrl+alt+del` into evdev codes, in the order
/// written.
pub fn parse_chord(chord: &str) -> Result<Vec<u16>, KeyChordError> {
    let mut codes = Vec::new();
    for part in chord.split('+') {
        let name = part.trim();
        if name.is_empty() {
            return Err(KeyChordError::Empty(chord.to_string()));
        }
        let code = key_code(name).ok_or_else(|| KeyChordError::UnknownKey(name.to_string()))?;
        if codes.contains(&code) {
            return Err(KeyChordError::Duplicate(name.to_string()));
        }
        codes.push(code);
    }
    Ok(codes)
}

/// The events that type a chord: each key pressed in order, then released
/// in reverse order, as `(evdev code, pressed)`.
pub fn chord_events(codes: &[u16]) -> Vec<(u16, bool)> {
    codes
        .iter()
        .map(|&c| (c, true))
        .chain(codes.iter().rev().map(|&c| (c, false)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use evdev::*;

    #[test]
    fn test_parse_common_chords() {
        assert_eq!(
            parse_chord("ctrl+alt+del").unwrap(),
            [KEY_LEFTCTRL, KEY_LEFTALT, KEY_DELETE]
        );
        assert_eq!(
            parse_chord("Ctrl + Alt + F2").unwrap(),
            [KEY_LEFTCTRL, KEY_LEFTALT, KEY_F2]
        );
        assert_eq!(parse_chord("alt+tab").unwrap(), [KEY_LEFTALT, KEY_TAB]);
        assert_eq!(parse_chord("esc").unwrap(), [KEY_ESC]);
        assert_eq!(parse_chord("F12").unwrap(), [KEY_F12]);
        assert_eq!(
            parse_chord("RightCtrl+SysRq").unwrap(),
            [KEY_RIGHTCTRL, KEY_SYSRQ]
        );
        assert_eq!(parse_chord("super+l").unwrap(), [KEY_LEFTMETA, KEY_L]);
        assert_eq!(parse_chord("shift+/").unwrap(), [KEY_LEFTSHIFT, KEY_SLASH]);
    }

    #[test]
    fn test_parse_errors() {
        assert_eq!(parse_chord(""), Err(KeyChordError::Empty(String::new())));
        assert!(matches!(
            parse_chord("ctrl++"),
            Err(KeyChordError::Empty(_))
        ));
        assert_eq!(
            parse_chord("ctrl+nosuchkey"),
            Err(KeyChordError::UnknownKey("nosuchkey".into()))
        );
        assert_eq!(
            parse_chord("ctrl+control+c"),
            Err(KeyChordError::Duplicate("control".into()))
        );
    }

    #[test]
    fn test_every_alias_and_table_name_resolves() {
        for (alias, code) in ALIASES {
            assert!(keymap::key_by_evdev(*code).is_some(), "{alias}");
            assert_eq!(key_code(alias), Some(*code));
            // An alias must not shadow a table name.
            assert!(keymap::key_by_name(alias).is_none(), "{alias}");
        }
        for k in keymap::KEYS {
            assert_eq!(parse_chord(k.name).unwrap(), [k.evdev]);
        }
    }

    #[test]
    fn test_chord_events_press_then_reverse_release() {
        let codes = parse_chord("ctrl+alt+del").unwrap();
        assert_eq!(
            chord_events(&codes),
            [
                (KEY_LEFTCTRL, true),
                (KEY_LEFTALT, true),
                (KEY_DELETE, true),
                (KEY_DELETE, false),
                (KEY_LEFTALT, false),
                (KEY_LEFTCTRL, false),
            ]
        );
        assert!(chord_events(&[]).is_empty());
    }
}
