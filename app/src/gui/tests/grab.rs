// SPDX-License-Identifier: Apache-2.0
//! Pointer grab for guests with a relative mouse: a click into a
//! relative-mode [`GuestView`] grabs the host pointer, raw motion becomes
//! relative moves, and the release chord (or the window losing the focus)
//! lets go; an absolute-mode view never grabs.

use display::scale::ScaleMode;
use display::view::{GuestInput, GuestView, PointerMode};
use eframe::egui::{
    self, CursorGrab, Event, Key, Modifiers, PointerButton, ViewportCommand, ViewportId,
};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

use super::*;

/// A view under test, what it sent, and a release asked for by the test.
struct Bench {
    view: GuestView,
    sent: Vec<GuestInput>,
    release: bool,
}

fn bench(mode: PointerMode) -> Harness<'static, Bench> {
    let mut view = GuestView::new(ScaleMode::Fit);
    view.set_pointer_mode(mode);
    let bench = Bench {
        view,
        sent: Vec::new(),
        release: false,
    };
    let mut harness = Harness::builder().with_size([400.0, 300.0]).build_ui_state(
        |ui, b: &mut Bench| {
            if std::mem::take(&mut b.release) {
                let ctx = ui.ctx().clone();
                b.sent.extend(b.view.release_grab(&ctx));
            }
            b.sent.extend(b.view.show(ui));
        },
        bench,
    );
    harness.run();
    harness
}

/// The viewport commands of the last step.
fn commands(harness: &Harness<'_, Bench>) -> Vec<ViewportCommand> {
    harness
        .output()
        .viewport_output
        .get(&ViewportId::ROOT)
        .map(|v| v.commands.clone())
        .unwrap_or_default()
}

/// Clicks the middle of the window; returns the commands of each step.
fn click(harness: &mut Harness<'_, Bench>) -> Vec<ViewportCommand> {
    let pos = egui::pos2(200.0, 150.0);
    harness.hover_at(pos);
    harness.step();
    let mut seen = Vec::new();
    for pressed in [true, false] {
        harness.event(Event::PointerButton {
            pos,
            button: PointerButton::Primary,
            pressed,
            modifiers: Modifiers::NONE,
        });
        harness.step();
        seen.extend(commands(harness));
    }
    seen
}

fn relative_moves(sent: &[GuestInput]) -> Vec<(i32, i32)> {
    sent.iter()
        .filter_map(|e| match e {
            GuestInput::PointerRelative { dx, dy } => Some((*dx, *dy)),
            _ => None,
        })
        .collect()
}

#[test]
fn test_gui_relative_view_grabs_on_click_and_sends_raw_motion() {
    let mut harness = bench(PointerMode::Relative);
    assert!(!harness.state().view.is_grabbed());
    let seen = click(&mut harness);
    assert!(harness.state().view.is_grabbed());
    assert!(seen.contains(&ViewportCommand::CursorGrab(CursorGrab::Locked)));
    assert!(seen.contains(&ViewportCommand::CursorGrab(CursorGrab::Confined)));
    assert!(seen.contains(&ViewportCommand::CursorVisible(false)));
    // The grabbing click is the host's: the guest saw no button.
    assert!(
        !harness.state().sent.iter().any(|e| matches!(
            e,
            GuestInput::Buttons(_) | GuestInput::PointerAbsolute { .. }
        )),
        "{:?}",
        harness.state().sent
    );
    harness.state_mut().sent.clear();
    // Raw motion becomes relative moves; fractions carry over.
    harness.event(Event::MouseMoved(egui::vec2(3.5, -2.0)));
    harness.step();
    harness.event(Event::MouseMoved(egui::vec2(0.5, 0.25)));
    harness.step();
    assert_eq!(relative_moves(&harness.state().sent), [(3, -2), (1, 0)]);
    // Buttons go to the guest while grabbed.
    let pos = egui::pos2(200.0, 150.0);
    harness.event(Event::PointerButton {
        pos,
        button: PointerButton::Secondary,
        pressed: true,
        modifiers: Modifiers::NONE,
    });
    harness.step();
    assert!(harness.state().sent.contains(&GuestInput::Buttons(2)));
    // Releasing lets go of the pointer and of the held button.
    harness.state_mut().release = true;
    harness.step();
    assert!(!harness.state().view.is_grabbed());
    let seen = commands(&harness);
    assert!(seen.contains(&ViewportCommand::CursorGrab(CursorGrab::None)));
    assert!(seen.contains(&ViewportCommand::CursorVisible(true)));
    assert_eq!(harness.state().sent.last(), Some(&GuestInput::Buttons(0)));
    // Ungrabbed, motion no longer reaches the guest.
    harness.state_mut().sent.clear();
    harness.event(Event::MouseMoved(egui::vec2(5.0, 5.0)));
    harness.step();
    assert!(relative_moves(&harness.state().sent).is_empty());
}

#[test]
fn test_gui_relative_view_lets_go_when_the_window_loses_focus() {
    let mut harness = bench(PointerMode::Relative);
    click(&mut harness);
    assert!(harness.state().view.is_grabbed());
    harness.input_mut().focused = false;
    harness.step();
    assert!(!harness.state().view.is_grabbed());
    assert!(commands(&harness).contains(&ViewportCommand::CursorGrab(CursorGrab::None)));
}

#[test]
fn test_gui_absolute_view_never_grabs() {
    let mut harness = bench(PointerMode::Absolute);
    let seen = click(&mut harness);
    harness.run();
    assert!(!harness.state().view.is_grabbed());
    assert!(
        !seen.iter().any(|c| matches!(
            c,
            ViewportCommand::CursorGrab(_) | ViewportCommand::CursorVisible(_)
        )),
        "{seen:?}"
    );
    harness.state_mut().sent.clear();
    harness.event(Event::MouseMoved(egui::vec2(5.0, 5.0)));
    harness.step();
    assert!(relative_moves(&harness.state().sent).is_empty());
}

#[test]
fn test_gui_console_grabs_for_relative_profiles_until_the_chord() {
    let fx = Fixture::new("gui-grab");
    let id = fx.vm("Dos", 32, &[]);
    let mut vm = fx.store.get(&id).unwrap();
    vm.profile = "dos-retro".to_string();
    fx.store.update(&id, &vm).unwrap();
    fx.backend
        .0
        .borrow_mut()
        .states
        .insert(id.clone(), RunState::Running);
    let mut harness = super::harness(fx.app(host(8, 2, 100), FakePicker::default()));
    let hint = "Press Ctrl+Alt to release the mouse";
    assert!(harness.query_by_label(hint).is_none());
    click_console(&mut harness);
    assert!(harness.query_by_label(hint).is_some());
    harness.event(Event::MouseMoved(egui::vec2(4.0, 3.0)));
    harness.run();
    let moved = fx.backend.0.borrow().commands.iter().any(|(_, c)| {
        matches!(
            c,
            VmCommand::Input(GuestInput::PointerRelative { dx: 4, dy: 3 })
        )
    });
    assert!(moved, "the guest saw the motion");
    // Ctrl+Alt lets go of the mouse and the keyboard.
    harness.key_down_modifiers(Modifiers::CTRL | Modifiers::ALT, Key::A);
    harness.run();
    harness.key_up_modifiers(Modifiers::CTRL | Modifiers::ALT, Key::A);
    harness.run();
    assert!(harness.query_by_label(hint).is_none());
    assert!(
        harness
            .query_by_label("Press Ctrl+Alt to release the keyboard and mouse")
            .is_none()
    );
}

#[test]
fn test_gui_console_does_not_grab_for_absolute_profiles() {
    let fx = Fixture::new("gui-nograb");
    let id = fx.vm("Linux", 256, &[]);
    fx.backend
        .0
        .borrow_mut()
        .states
        .insert(id, RunState::Running);
    let mut harness = super::harness(fx.app(host(8, 2, 100), FakePicker::default()));
    click_console(&mut harness);
    // The keyboard is the guest's, the pointer is not grabbed.
    assert!(
        harness
            .query_by_label("Press Ctrl+Alt to release the keyboard and mouse")
            .is_some()
    );
    assert!(
        harness
            .query_by_label("Press Ctrl+Alt to release the mouse")
            .is_none()
    );
}

#[test]
fn test_gui_view_draws_the_guests_pointer_as_the_host_pointer_over_the_screen() {
    use display::framebuffer::{CURSOR_BYTES, PixelFormat, PointerImage, SharedFramebuffer};

    // A framebuffer with a 320x200 screen and a guest pointer.
    let fb = std::sync::Arc::new(SharedFramebuffer::create(320, 200).unwrap());
    fb.set_mode(320, 200, PixelFormat::Rgbx8888).unwrap();
    let image = vec![0xffu8; CURSOR_BYTES];
    fb.set_pointer(Some(PointerImage {
        rgba: &image,
        hot: (1, 1),
        at: (10, 10),
    }))
    .unwrap();
    let shown = fb.clone();
    let mut harness = Harness::builder().with_size([400.0, 300.0]).build_ui_state(
        move |ui, view: &mut GuestView| {
            let ctx = ui.ctx().clone();
            view.update(&ctx, &shown);
            view.show(ui);
        },
        GuestView::new(ScaleMode::Fit),
    );
    harness.run();
    let icon = |h: &Harness<'_, GuestView>| h.output().platform_output.cursor_icon;

    // Over the screen: the host's own pointer is hidden (the guest's is
    // drawn there instead).
    harness.hover_at(egui::pos2(200.0, 150.0));
    harness.step();
    let over = icon(&harness);
    let had = harness.state().has_guest_pointer();
    // The guest hides its pointer: the host's shows again.
    fb.set_pointer(None).unwrap();
    harness.step();
    let hidden = icon(&harness);

    assert!(had);
    assert_eq!(over, egui::CursorIcon::None);
    assert!(!harness.state().has_guest_pointer());
    assert_ne!(hidden, egui::CursorIcon::None);
}
