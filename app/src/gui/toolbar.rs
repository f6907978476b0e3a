// SPDX-License-Identifier: Apache-2.0
//! The toolbar: what can be done to the selected VM, each button enabled
//! only when it applies to the VM's state, with its keyboard shortcut in
//! the hover text; Quit at its right end; and the shortcuts themselves.

use eframe::egui::{self, Key, KeyboardShortcut, Modifiers};

use super::status::VmStatus;
use super::ui_map::Mapped as _;
use crate::worker::api::RunState;

/// Something the user asked for from the toolbar or a shortcut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open the New VM wizard.
    New,
    /// Start the selected VM.
    Start,
    /// Pause it, or resume it when paused.
    PauseResume,
    /// Save its whole state and stop it; Start resumes it.
    Suspend,
    /// Take a snapshot of it while it runs (it is suspended briefly).
    Snapshot,
    /// Press its ACPI power button.
    ShutDown,
    /// Pull its plug.
    ForceOff,
    /// Reset it.
    Reset,
    /// Toggle the window's fullscreen mode.
    Fullscreen,
    /// Press a key chord in the guest (see `display::keys`).
    SendKeys(String),
    /// Choose a disc image for the VM's CD-ROM drive.
    InsertCd,
    /// Take the disc out of the VM's CD-ROM drive.
    EjectCd,
    /// Close the app; running VMs keep running in their workers.
    Quit,
}

/// The chords of the Send keys menu: label and chord.
pub fn send_key_chords() -> Vec<(String, String)> {
    let mut chords = vec![("Ctrl+Alt+Del".to_string(), "ctrl+alt+del".to_string())];
    for n in 1..=12 {
        chords.push((format!("Ctrl+Alt+F{n}"), format!("ctrl+alt+f{n}")));
    }
    chords.push((
        "Ctrl+Alt+Backspace".to_string(),
        "ctrl+alt+backspace".to_string(),
    ));
    chords
}

impl Action {
    /// The keyboard shortcut, if the action has one.
    pub fn shortcut(&self) -> Option<KeyboardShortcut> {
        let ctrl = Modifiers::COMMAND;
        let ctrl_shift = Modifiers::COMMAND | Modifiers::SHIFT;
        let shortcut = match self {
            Action::New => KeyboardShortcut::new(ctrl, Key::N),
            Action::Start => KeyboardShortcut::new(ctrl, Key::B),
            Action::PauseResume => KeyboardShortcut::new(ctrl_shift, Key::P),
            Action::ShutDown => KeyboardShortcut::new(ctrl, Key::E),
            Action::ForceOff => KeyboardShortcut::new(ctrl_shift, Key::E),
            Action::Reset => KeyboardShortcut::new(ctrl, Key::R),
            Action::Fullscreen => KeyboardShortcut::new(ctrl_shift, Key::F),
            Action::Quit => KeyboardShortcut::new(ctrl, Key::Q),
            Action::Suspend
            | Action::Snapshot
            | Action::SendKeys(_)
            | Action::InsertCd
            | Action::EjectCd => {
                return None;
            }
        };
        Some(shortcut)
    }

    /// Whether the action applies to the selected VM (`None`: nothing is
    /// selected).
    pub fn enabled(&self, selected: Option<&VmStatus>) -> bool {
        let state = selected.and_then(VmStatus::run_state);
        match self {
            Action::New | Action::Fullscreen | Action::Quit => true,
            Action::Start => matches!(
                state,
                Some(RunState::Stopped | RunState::Suspended | RunState::Failed(_))
            ),
            Action::PauseResume | Action::Reset | Action::Suspend | Action::Snapshot => {
                matches!(state, Some(RunState::Running | RunState::Paused))
            }
            Action::ShutDown | Action::SendKeys(_) => matches!(state, Some(RunState::Running)),
            Action::ForceOff => state.is_some_and(|s| s.is_live()),
            // Whether the VM has a drive is the caller's to know.
            Action::InsertCd | Action::EjectCd => selected.is_some(),
        }
    }

    /// What the hover text says the action does.
    fn describe(&self, paused: bool) -> &'static str {
        match self {
            Action::New => "Create a new VM",
            Action::Start => "Start the VM",
            Action::PauseResume if paused => "Resume the VM",
            Action::PauseResume => "Pause the VM",
            Action::Suspend => {
                "Suspend: save the VM's whole state and stop it; Start resumes it where it was"
            }
            Action::Snapshot => {
                "Snapshot: keep the VM's running state and disks to come back to (it is suspended for a moment)"
            }
            Action::ShutDown => "Shut down: press the VM's power button (the guest shuts down)",
            Action::ForceOff => "Force off: stop the VM at once, like pulling the plug",
            Action::Reset => "Reset the VM, like its reset button",
            Action::Fullscreen => "Fullscreen on or off",
            Action::SendKeys(_) => "Press a key combination in the guest",
            Action::InsertCd => "Put a disc image into the VM's CD-ROM drive",
            Action::EjectCd => "Take the disc out of the VM's CD-ROM drive",
            Action::Quit => "Quit (running VMs keep running)",
        }
    }
}

/// The actions whose shortcut was pressed this frame (and consumed), in
/// toolbar order, whether or not they are enabled.
pub fn pressed_shortcuts(ctx: &egui::Context) -> Vec<Action> {
    let actions = [
        Action::New,
        Action::Start,
        Action::PauseResume,
        // Ctrl+Shift+E before Ctrl+E, so the longer chord wins.
        Action::ForceOff,
        Action::ShutDown,
        Action::Reset,
        Action::Fullscreen,
        Action::Quit,
    ];
    actions
        .into_iter()
        .filter(|action| {
            action
                .shortcut()
                .is_some_and(|s| ctx.input_mut(|i| i.consume_shortcut(&s)))
        })
        .collect()
}

/// What the selected VM's first IDE CD-ROM drive holds: None without
/// such a drive, `Some(None)` when it is empty, else the disc's file name.
pub type CdState = Option<Option<String>>;

/// Draws the toolbar and returns the clicked action.
pub fn show(ui: &mut egui::Ui, selected: Option<&VmStatus>, cd: &CdState) -> Option<Action> {
    let has_cd = cd.is_some();
    let mut clicked = None;
    let paused = selected.and_then(VmStatus::run_state) == Some(RunState::Paused);
    ui.horizontal(|ui| {
        let buttons = [
            (Action::New, "New"),
            (Action::Start, "Start"),
            (Action::PauseResume, if paused { "Resume" } else { "Pause" }),
            (Action::Suspend, "Suspend"),
            (Action::Snapshot, "Snapshot"),
            (Action::ShutDown, "Shut down"),
            (Action::ForceOff, "Force off"),
            (Action::Reset, "Reset"),
            (Action::Fullscreen, "Fullscreen"),
        ];
        // Pause and Resume take the same room, so nothing after them moves
        // when one becomes the other.
        let pause_width = ["Pause", "Resume"]
            .iter()
            .map(|text| {
                egui::WidgetText::from(*text)
                    .into_galley(ui, None, f32::INFINITY, egui::TextStyle::Button)
                    .size()
                    .x
            })
            .fold(0.0, f32::max)
            + 2.0 * ui.spacing().button_padding.x;
        for (action, label) in buttons {
            let enabled = action.enabled(selected);
            let hover = hover_text(ui.ctx(), &action, paused);
            let mut button = egui::Button::new(label);
            if action == Action::PauseResume {
                button = button.min_size(egui::vec2(pause_width, 0.0));
            }
            let response = ui
                .add_enabled(enabled, button)
                .on_hover_text(&hover)
                .on_disabled_hover_text(format!("{hover} (not available in this state)"))
                .mapped(label);
            if response.clicked() {
                clicked = Some(action);
            }
        }
        let keys_enabled = Action::SendKeys(String::new()).enabled(selected);
        ui.add_enabled_ui(keys_enabled, |ui| {
            ui.menu_button("Send keys", |ui| {
                for (label, chord) in send_key_chords() {
                    if ui.button(label).clicked() {
                        clicked = Some(Action::SendKeys(chord));
                        ui.close();
                    }
                }
            })
            .response
            .on_hover_text("Press a key combination in the guest")
            .on_disabled_hover_text("Send keys: only while the VM runs")
            .mapped("Send keys");
        });
        ui.add_enabled_ui(has_cd && Action::InsertCd.enabled(selected), |ui| {
            ui.menu_button("CD-ROM", |ui| {
                for (action, label) in [
                    (Action::InsertCd, "Insert disc…"),
                    (Action::EjectCd, "Eject disc"),
                ] {
                    if ui
                        .button(label)
                        .on_hover_text(action.describe(false))
                        .mapped(label)
                        .clicked()
                    {
                        clicked = Some(action);
                        ui.close();
                    }
                }
            })
            .response
            .on_hover_text(match cd {
                Some(Some(disc)) => format!("The CD-ROM drive holds {disc}; change or eject it"),
                _ => "The CD-ROM drive is empty; insert a disc image".to_string(),
            })
            .on_disabled_hover_text("CD-ROM: the VM has no IDE CD-ROM drive")
            .mapped("CD-ROM");
        });
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            let hover = hover_text(ui.ctx(), &Action::Quit, paused);
            if ui
                .button("Quit")
                .on_hover_text(hover)
                .mapped("Quit")
                .clicked()
            {
                clicked = Some(Action::Quit);
            }
        });
    });
    clicked
}

fn hover_text(ctx: &egui::Context, action: &Action, paused: bool) -> String {
    match action.shortcut() {
        Some(shortcut) => format!(
            "{} ({})",
            action.describe(paused),
            ctx.format_shortcut(&shortcut)
        ),
        None => action.describe(paused).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(state: RunState) -> VmStatus {
        VmStatus::Run(state)
    }

    #[test]
    fn test_gui_actions_follow_the_state() {
        let stopped = run(RunState::Stopped);
        let running = run(RunState::Running);
        let paused = run(RunState::Paused);
        let failed = VmStatus::StartFailed("no disk".to_string());
        let attention = VmStatus::NeedsAttention;
        assert!(Action::Start.enabled(Some(&stopped)));
        assert!(Action::Start.enabled(Some(&failed)));
        assert!(!Action::Start.enabled(Some(&running)));
        assert!(!Action::Start.enabled(Some(&attention)));
        assert!(!Action::Start.enabled(None));
        assert!(Action::ShutDown.enabled(Some(&running)));
        assert!(!Action::ShutDown.enabled(Some(&paused)));
        assert!(Action::PauseResume.enabled(Some(&paused)));
        assert!(Action::ForceOff.enabled(Some(&run(RunState::Starting))));
        assert!(!Action::ForceOff.enabled(Some(&stopped)));
        assert!(Action::New.enabled(None));
        assert!(Action::Fullscreen.enabled(Some(&attention)));
        assert!(Action::Quit.enabled(Some(&running)) && Action::Quit.enabled(None));
    }

    #[test]
    fn test_gui_send_keys_menu_has_every_chord() {
        let chords = send_key_chords();
        assert_eq!(chords.len(), 14);
        for (_, chord) in &chords {
            assert!(display::keys::parse_chord(chord).is_ok(), "{chord}");
        }
    }
}
