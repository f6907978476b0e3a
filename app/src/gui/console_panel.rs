// SPDX-License-Identifier: Apache-2.0
//! The right side for a running or paused VM: its screen through
//! [`GuestView`], with what the user does to it sent as
//! `VmCommand::Input`. While the screen has the keyboard, every key goes
//! to the guest except the release chord, which hands the keyboard back to
//! the app. A VM whose profile asks for a relative mouse (`input =
//! "relative"`) gets a view that grabs the pointer on a click; the release
//! chord lets go of it too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use display::scale::ScaleMode as ViewScale;
use display::view::{GuestView, PointerMode};
use display::watch::FrameWatcher;
use eframe::egui::{self, Key, Modifiers};

use super::ui_map::Mapped as _;

use crate::library::config::{ScaleMode, Sound, SoundSettings};
use crate::library::profiles::{self, InputMode};
use crate::worker::api::{RunState, VmBackend, VmCommand};

/// How often a running VM's screen is looked at.
const FRAME_INTERVAL: Duration = Duration::from_millis(16);

/// The view scale of a stored scale mode.
pub fn view_scale(scale: ScaleMode) -> ViewScale {
    match scale {
        ScaleMode::Fit => ViewScale::Fit,
        ScaleMode::OneToOne => ViewScale::OneToOne,
        ScaleMode::Integer => ViewScale::Integer,
        ScaleMode::Stretch => ViewScale::Stretch,
    }
}

/// The keys that take the keyboard back from the guest, e.g. `ctrl+alt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseChord {
    modifiers: Modifiers,
    key: Option<Key>,
    label: String,
}

impl ReleaseChord {
    /// Parses a chord of the preferences (`ctrl`, `alt`, `shift`, `super`
    /// and at most one other key, joined by `+`); `None` if it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let mut modifiers = Modifiers::NONE;
        let mut key = None;
        let mut labels = Vec::new();
        for part in text.split('+').map(str::trim) {
            let lower = part.to_ascii_lowercase();
            let label = match lower.as_str() {
                "ctrl" | "control" => {
                    modifiers.ctrl = true;
                    "Ctrl".to_string()
                }
                "alt" => {
                    modifiers.alt = true;
                    "Alt".to_string()
                }
                "shift" => {
                    modifiers.shift = true;
                    "Shift".to_string()
                }
                "super" | "meta" | "win" | "cmd" => {
                    modifiers.mac_cmd = true;
                    "Super".to_string()
                }
                _ => {
                    if key.is_some() {
                        return None;
                    }
                    let found = Key::from_name(part)
                        .or_else(|| Key::from_name(&part.to_ascii_uppercase()))
                        .or_else(|| Key::from_name(&capitalized(&lower)))?;
                    key = Some(found);
                    found.name().to_string()
                }
            };
            labels.push(label);
        }
        if modifiers.is_none() && key.is_none() {
            return None;
        }
        Some(Self {
            modifiers,
            key,
            label: labels.join("+"),
        })
    }

    /// The chord as shown to the user, e.g. "Ctrl+Alt".
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether the chord is held now.
    pub fn is_held(&self, input: &egui::InputState) -> bool {
        let m = input.modifiers;
        let mods = (!self.modifiers.ctrl || m.ctrl)
            && (!self.modifiers.alt || m.alt)
            && (!self.modifiers.shift || m.shift)
            && (!self.modifiers.mac_cmd || m.mac_cmd);
        mods && self.key.is_none_or(|k| input.key_down(k))
    }
}

/// `word` with its first letter upper-case ("backspace" → "Backspace").
fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

impl Default for ReleaseChord {
    fn default() -> Self {
        Self {
            modifiers: Modifiers {
                ctrl: true,
                alt: true,
                ..Modifiers::NONE
            },
            key: None,
            label: "Ctrl+Alt".to_string(),
        }
    }
}

/// The VM whose screen is shown.
pub struct ConsoleVm<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its state.
    pub state: &'a RunState,
    /// How its screen is scaled.
    pub scale: ScaleMode,
    /// Its sound settings (a mute toggle shows when it has a card).
    pub sound: SoundSettings,
    /// Id of the profile it was made from (its input mode comes from it).
    pub profile: &'a str,
    /// Whether the guest's display follows the console's size.
    pub follow_window: bool,
}

/// How long the console's size must stay the same before the guest is
/// asked for it (a window being dragged changes it every frame).
pub const RESIZE_SETTLE: Duration = Duration::from_millis(300);

/// Sizes the guest display would need to be at least, and at most.
const MIN_DISPLAY: (u32, u32) = (320, 200);
const MAX_DISPLAY: u32 = 8192;

/// Turns the console's size, frame by frame, into display sizes to offer
/// the guest: one once the size has held for [`RESIZE_SETTLE`], and only
/// when it differs from the last one offered.
#[derive(Debug, Default)]
pub struct DisplaySizer {
    /// The size seen last and since when.
    seen: Option<((u32, u32), Instant)>,
    /// The size last offered.
    offered: Option<(u32, u32)>,
}

impl DisplaySizer {
    /// The console is `size` (physical pixels) at `now`: the size to offer
    /// now, if any, and otherwise how long until one may be due.
    pub fn observe(
        &mut self,
        size: (u32, u32),
        now: Instant,
    ) -> (Option<(u32, u32)>, Option<Duration>) {
        let size = (
            size.0.clamp(MIN_DISPLAY.0, MAX_DISPLAY),
            size.1.clamp(MIN_DISPLAY.1, MAX_DISPLAY),
        );
        let since = match self.seen {
            Some((seen, since)) if seen == size => since,
            _ => {
                self.seen = Some((size, now));
                now
            }
        };
        if self.offered == Some(size) {
            return (None, None);
        }
        let held = now.saturating_duration_since(since);
        if held >= RESIZE_SETTLE {
            self.offered = Some(size);
            (Some(size), None)
        } else {
            (None, Some(RESIZE_SETTLE - held))
        }
    }
}

/// The pointer mode for VMs of profile `id`: relative when the profile
/// says so, else (an unknown profile too) absolute.
pub fn pointer_mode(id: &str) -> PointerMode {
    match profiles::by_id(id).map(|p| p.input) {
        Some(InputMode::Relative) => PointerMode::Relative,
        Some(InputMode::Absolute) | None => PointerMode::Absolute,
    }
}

/// The console's state between frames.
#[derive(Default)]
pub struct ConsolePanel {
    vm: Option<String>,
    view: Option<GuestView>,
    view_id: Option<egui::Id>,
    focused: bool,
    /// The profile whose pointer mode the view has, and that mode (looked
    /// up once, not every frame).
    pointer: Option<(String, PointerMode)>,
    /// The last input the backend refused.
    last_error: Option<String>,
    /// Wakes the UI when the shown framebuffer changes (and only then).
    watcher: Option<(usize, FrameWatcher)>,
    /// The guest display's size following the console's.
    sizer: DisplaySizer,
}

impl ConsolePanel {
    /// Whether the guest screen had the keyboard at the end of the last frame.
    pub fn has_focus(&self) -> bool {
        self.focused
    }

    /// Forgets the VM shown (it stopped or another one is selected),
    /// letting go of the host pointer if its screen held it.
    pub fn clear(&mut self, ctx: &egui::Context) {
        if let Some(view) = &mut self.view {
            // The VM is gone: what it still held does not matter.
            let _ = view.release_grab(ctx);
        }
        *self = Self::default();
    }

    /// Draws VM `id`'s screen into the rest of `ui`; returns the sound
    /// settings when the user changed them (already sent to the VM; the
    /// caller saves them).
    pub fn show(
        &mut self,
        ui: &mut egui::Ui,
        screen: &ConsoleVm<'_>,
        backend: &mut dyn VmBackend,
        release: &ReleaseChord,
    ) -> Option<SoundSettings> {
        let ConsoleVm {
            id,
            name,
            state,
            scale,
            sound,
            profile,
            follow_window,
        } = *screen;
        let mut changed = None;
        if self.vm.as_deref() != Some(id) {
            self.clear(ui.ctx());
            self.vm = Some(id.to_string());
        }
        let view = self
            .view
            .get_or_insert_with(|| GuestView::new(view_scale(scale)));
        view.set_scale(view_scale(scale));
        if self.pointer.as_ref().is_none_or(|(p, _)| p != profile) {
            self.pointer = Some((profile.to_string(), pointer_mode(profile)));
        }
        if let Some((_, mode)) = &self.pointer {
            view.set_pointer_mode(*mode);
        }
        ui.horizontal(|ui| {
            ui.strong(name);
            ui.label(match state {
                RunState::Starting => "starting…",
                RunState::Paused => "paused: Resume to continue",
                _ => "running",
            });
            if sound.output == Sound::Host {
                let mut muted = sound.mute;
                if ui
                    .toggle_value(&mut muted, "Mute sound")
                    .on_hover_text("Mute or unmute the VM's sound")
                    .clicked()
                {
                    match backend.command(id, VmCommand::SetMute(muted)) {
                        Ok(()) => {
                            changed = Some(SoundSettings {
                                mute: muted,
                                ..sound
                            });
                        }
                        Err(err) => self.last_error = Some(err),
                    }
                }
            }
            if view.is_grabbed() {
                let hint = format!("Press {} to release the mouse", release.label());
                ui.strong(&hint).mapped(&hint);
            }
            if let Some(err) = &self.last_error {
                ui.colored_label(ui.visuals().error_fg_color, err);
            }
        });
        let ctx = ui.ctx().clone();
        if let Some(fb) = backend.framebuffer(id) {
            view.update(&ctx, &fb);
            if let Some(upload) = view.take_uploaded_flush() {
                crate::timing::screen_uploaded(upload);
            }
            // Repaint when the guest's screen changes, not on a timer: an
            // idle VM then costs the app no frames.
            let key = Arc::as_ptr(&fb) as usize;
            if self.watcher.as_ref().is_none_or(|(k, _)| *k != key) {
                let wake = ctx.clone();
                self.watcher = FrameWatcher::spawn(fb.clone(), move || {
                    display::watch::request_one_pass(&wake)
                })
                .ok()
                .map(|w| (key, w));
            }
        }
        // The release chord is the app's, never the guest's: it lets go of
        // the pointer and the keyboard.
        let mut events = Vec::new();
        if ctx.input(|i| release.is_held(i)) {
            events.extend(view.release_grab(&ctx));
            if let Some(view_id) = self.view_id
                && self.focused
            {
                ctx.memory_mut(|m| m.surrender_focus(view_id));
            }
        }
        let view_id = ui.next_auto_id();
        // The view takes all the space that is left.
        let area = ui.available_rect_before_wrap();
        super::ui_map::record(&ctx, "Console", area);
        if follow_window && *state == RunState::Running {
            follow(&mut self.sizer, &ctx, area, id, backend);
        }
        events.extend(view.show(ui));
        self.view_id = Some(view_id);
        self.focused = ctx.memory(|m| m.has_focus(view_id));
        for event in events {
            if let Err(err) = backend.command(id, VmCommand::Input(event)) {
                self.last_error = Some(err);
            }
        }
        if self.watcher.is_none() && (*state == RunState::Running || *state == RunState::Starting) {
            // No framebuffer yet (the worker is starting): look again soon.
            ctx.request_repaint_after(FRAME_INTERVAL);
        }
        changed
    }
}

/// Offers the guest the console's size in physical pixels once it has
/// settled (a guest without virtio-gpu refuses, quietly).
fn follow(
    sizer: &mut DisplaySizer,
    ctx: &egui::Context,
    area: egui::Rect,
    id: &str,
    backend: &mut dyn VmBackend,
) {
    let physical = area.size() * ctx.pixels_per_point();
    let size = (physical.x.round() as u32, physical.y.round() as u32);
    match sizer.observe(size, Instant::now()) {
        (Some((width, height)), _) => {
            if let Err(err) = backend.command(id, VmCommand::SetDisplaySize { width, height }) {
                log::debug!("display size {width}x{height} not offered: {err}");
            }
        }
        (None, Some(wait)) => ctx.request_repaint_after(wait),
        (None, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_display_sizer_offers_a_size_once_it_has_settled_and_only_new_ones() {
        let mut sizer = DisplaySizer::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // A window being dragged: nothing while the size moves.
        assert_eq!(sizer.observe((1000, 700), at(0)).0, None);
        assert_eq!(sizer.observe((1010, 705), at(100)).0, None);
        let (none, wait) = sizer.observe((1010, 705), at(200));
        assert_eq!((none, wait), (None, Some(Duration::from_millis(200))));
        // Settled for 300 ms: offered once.
        assert_eq!(sizer.observe((1010, 705), at(400)).0, Some((1010, 705)));
        assert_eq!(sizer.observe((1010, 705), at(900)), (None, None));
        // Tiny or huge areas are offered within the display limits.
        sizer.observe((10, 10), at(1000));
        assert_eq!(sizer.observe((10, 10), at(1400)).0, Some((320, 200)));
        sizer.observe((100_000, 900), at(1500));
        assert_eq!(sizer.observe((100_000, 900), at(1900)).0, Some((8192, 900)));
    }

    #[test]
    fn test_gui_release_chord_parses_and_labels() {
        let chord = ReleaseChord::parse("ctrl+alt").unwrap();
        assert_eq!(chord, ReleaseChord::default());
        let with_key = ReleaseChord::parse("ctrl+shift+g").unwrap();
        assert_eq!(with_key.label(), "Ctrl+Shift+G");
        assert_eq!(ReleaseChord::parse("ctrl+f12").unwrap().label(), "Ctrl+F12");
        assert!(ReleaseChord::parse("ctrl+nosuchkey").is_none());
        assert!(ReleaseChord::parse("a+b").is_none());
    }
}
