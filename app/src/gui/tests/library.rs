// SPDX-License-Identifier: Apache-2.0
//! The library, details, settings, toolbar, console and budget, with a
//! fake backend.

use eframe::egui::accesskit::Role;
use eframe::egui::{Event, Key, Modifiers};
use egui_kittest::kittest::Queryable;

use super::*;
use crate::library::config::{CacheMode, VM_FILE};

#[test]
fn test_gui_settings_save_writes_vm_toml() {
    let fx = Fixture::new("gui-settings");
    let id = fx.vm("Server", 1024, &[]);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    assert_eq!(harness.state().selected(), Some(id.as_str()));
    assert!(!enabled(&harness, "Save"), "nothing changed yet");
    harness
        .get_by_role_and_label(Role::Slider, "Memory")
        .set_value_accesskit(512.0);
    harness.run();
    harness.get_by_label("No sound").click();
    harness.run();
    harness.get_by_label("Save").click();
    harness.run();
    let vm = fx.store.get(&id).unwrap();
    assert_eq!(vm.memory_mib, 512);
    assert_eq!(vm.sound.output, crate::library::config::Sound::None);
    assert!(harness.query_by_label("Saved.").is_some());
    assert!(
        harness.query_by_label("512 MiB").is_some(),
        "details follow"
    );
}

#[test]
fn test_gui_settings_volume_and_mute_save_to_vm_toml() {
    let fx = Fixture::new("gui-sound");
    let id = fx.vm("Player", 256, &[]);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    harness
        .get_by_role_and_label(Role::Slider, "Volume")
        .set_value_accesskit(35.0);
    harness.run();
    harness.get_by_label("Mute").click();
    harness.run();
    harness.get_by_label("Save").click();
    harness.run();
    let vm = fx.store.get(&id).unwrap();
    assert_eq!((vm.sound.volume, vm.sound.mute), (35, true));
    let text = std::fs::read_to_string(fx.store.dir(&id).unwrap().join(VM_FILE)).unwrap();
    assert!(text.contains("[sound]"), "{text}");
    assert!(text.contains("volume = 35"), "{text}");
}

#[test]
fn test_gui_settings_suspend_on_host_shutdown_saves_to_vm_toml() {
    let fx = Fixture::new("gui-suspend-on-shutdown");
    let id = fx.vm("Desktop", 256, &[]);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    harness
        .get_by_label(crate::gui::settings_panel::SUSPEND_ON_HOST_SHUTDOWN)
        .click();
    harness.run();
    harness.get_by_label("Save").click();
    harness.run();
    assert!(fx.store.get(&id).unwrap().suspend_on_host_shutdown);
    let text = std::fs::read_to_string(fx.store.dir(&id).unwrap().join(VM_FILE)).unwrap();
    assert!(text.contains("suspend_on_host_shutdown = true"), "{text}");
}

#[test]
fn test_gui_console_speaker_toggle_mutes_the_running_vm_and_saves() {
    let fx = Fixture::new("gui-speaker");
    let id = fx.vm("Player", 256, &[]);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    harness.get_by_label("Start").click();
    harness.run();
    harness.get_by_label("Mute sound").click();
    harness.run();
    assert!(
        fx.backend
            .0
            .borrow()
            .commands
            .contains(&(id.clone(), VmCommand::SetMute(true))),
        "the worker is told"
    );
    assert!(
        fx.store.get(&id).unwrap().sound.mute,
        "and vm.toml keeps it"
    );
    // Again: unmuted.
    harness.get_by_label("Mute sound").click();
    harness.run();
    assert_eq!(
        fx.backend.0.borrow().commands.last(),
        Some(&(id.clone(), VmCommand::SetMute(false)))
    );
    assert!(!fx.store.get(&id).unwrap().sound.mute);
}

#[test]
fn test_gui_cdrom_menu_changes_the_disc_of_a_stopped_and_a_running_vm() {
    let fx = Fixture::new("gui-cd");
    let iso = fx.file("installer.iso");
    let drivers = fx.file("drivers.iso");
    let id = fx.vm("Retro", 64, &[&iso]);
    let mut vm = fx.store.get(&id).unwrap();
    vm.disks[0].media = crate::library::config::Media::Cdrom;
    vm.disks[0].bus = DiskBus::Ide;
    fx.store.update(&id, &vm).unwrap();
    let picker = FakePicker(vec![(PickKind::Iso, drivers.clone())]);
    let mut harness = harness(fx.app(host(8, 2, 100), picker));
    assert!(enabled(&harness, "CD-ROM"));

    // Stopped: the settings change.
    harness.get_by_label("CD-ROM").click();
    harness.run();
    harness.get_by_label("Eject disc").click();
    harness.run();
    assert!(fx.store.get(&id).unwrap().disks[0].ejected);
    assert!(
        fx.backend.0.borrow().commands.is_empty(),
        "no worker to tell"
    );
    assert!(
        harness
            .query_by_label_contains("CD-ROM (IDE): empty (last disc")
            .is_some(),
        "the details show the empty drive"
    );

    // Running: the worker is told as well.
    harness.get_by_label("Start").click();
    harness.run();
    harness.get_by_label("CD-ROM").click();
    harness.run();
    harness.get_by_label("Insert disc…").click();
    harness.run();
    let command = VmCommand::ChangeCd {
        cd: 0,
        image: Some(drivers.clone()),
    };
    assert_eq!(
        fx.backend.0.borrow().commands.last(),
        Some(&(id.clone(), command))
    );
    let saved = fx.store.get(&id).unwrap();
    assert_eq!(
        (saved.disks[0].path.clone(), saved.disks[0].ejected),
        (drivers, false)
    );
}

#[test]
fn test_gui_settings_show_a_disks_backing_files_and_save_its_write_cache() {
    let fx = Fixture::new("gui-cache");
    let disk = fx.file("system.qcow2");
    let base = fx.file("base.qcow2");
    let id = fx.vm("Linux", 512, &[&disk]);
    let mut vm = fx.store.get(&id).unwrap();
    vm.disks[0].backing = vec![base.clone()];
    fx.store.update(&id, &vm).unwrap();
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    assert!(
        harness
            .query_by_label(&format!("may use {}", base.display()))
            .is_some(),
        "the settings name the backing file the image may use"
    );
    harness
        .get_by_label(crate::gui::settings_panel::WRITE_THROUGH)
        .click();
    harness.run();
    harness.get_by_label("Save").click();
    harness.run();
    let saved = fx.store.get(&id).unwrap();
    assert_eq!(saved.disks[0].cache, CacheMode::Writethrough);
    let text = std::fs::read_to_string(fx.store.dir(&id).unwrap().join(VM_FILE)).unwrap();
    assert!(text.contains("cache = \"writethrough\""), "{text}");
}

#[test]
fn test_gui_settings_move_every_disk_to_ide_and_back() {
    let fx = Fixture::new("gui-bus");
    let disk = fx.file("disk.img");
    let iso = fx.file("setup.iso");
    let id = fx.vm("Windows", 512, &[&disk, &iso]);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    harness
        .get_by_label(crate::gui::settings_panel::IDE_DISKS)
        .click();
    harness.run();
    harness.get_by_label("Save").click();
    harness.run();
    let vm = fx.store.get(&id).unwrap();
    assert!(
        vm.disks.iter().all(|d| d.bus == DiskBus::Ide),
        "{:?}",
        vm.disks
    );
    assert_eq!(
        harness.query_all_by_label_contains("disk (IDE): ").count(),
        2,
        "the details say where the disks are"
    );
    harness
        .get_by_label(crate::gui::settings_panel::VIRTIO_DISKS)
        .click();
    harness.run();
    harness.get_by_label("Save").click();
    harness.run();
    let vm = fx.store.get(&id).unwrap();
    assert!(vm.disks.iter().all(|d| d.bus == DiskBus::Virtio));
}

#[test]
fn test_gui_cdrom_menu_is_off_for_a_vm_without_an_ide_cdrom() {
    let fx = Fixture::new("gui-no-cd");
    let disk = fx.file("disk.img");
    fx.vm("Server", 256, &[&disk]);
    let harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    assert!(!enabled(&harness, "CD-ROM"));
}

#[test]
fn test_gui_settings_over_a_cap_show_why_and_cannot_save() {
    let fx = Fixture::new("gui-overcap");
    // Made on a bigger host: 6000 MiB is over half of 8 GiB.
    let id = fx.vm("Big", 6000, &[]);
    let before = std::fs::read(fx.store.dir(&id).unwrap().join(VM_FILE)).unwrap();
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    harness.get_by_label("No network").click();
    harness.run();
    assert!(
        harness
            .query_by_label_contains("6000 MiB is more than half of this host's 8192 MiB")
            .is_some()
    );
    assert!(!enabled(&harness, "Save"));
    let after = std::fs::read(fx.store.dir(&id).unwrap().join(VM_FILE)).unwrap();
    assert_eq!(before, after);
}

#[test]
fn test_gui_corrupt_config_needs_attention_and_is_left_alone() {
    let fx = Fixture::new("gui-corrupt");
    let id = fx.vm("Broken", 128, &[]);
    let path = fx.store.dir(&id).unwrap().join(VM_FILE);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("memory = 128", "memory = \"lots\"");
    std::fs::write(&path, &text).unwrap();
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    assert!(harness.query_by_label("needs attention").is_some());
    assert!(harness.query_by_label("line 4, column 10").is_some());
    assert!(harness.query_by_label("At line 4, column 10").is_some());
    assert!(harness.query_by_label_contains("invalid type").is_some());
    assert!(
        harness
            .query_by_label(&fx.store.dir(&id).unwrap().display().to_string())
            .is_some(),
        "the folder is shown"
    );
    assert!(!enabled(&harness, "Start"));
    assert!(harness.query_by_label("Save").is_none());
    harness.run_steps(20);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn test_gui_missing_disk_is_flagged_and_start_says_why() {
    let fx = Fixture::new("gui-nodisk");
    let gone = fx.dir.path().join("gone.img");
    let id = fx.vm("Nodisk", 128, &[&gone]);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    assert!(harness.query_by_label_contains("(missing)").is_some());
    harness.get_by_label("Start").click();
    harness.run();
    assert!(fx.backend.0.borrow().started.is_empty());
    assert!(
        harness
            .query_all_by_label_contains("is missing: restore the file, or remove the disk")
            .count()
            >= 2,
        "on the library row and in the details"
    );
    assert!(
        harness
            .query_by_label_contains("failed: The disk image")
            .is_some()
    );
    assert_eq!(harness.state().selected(), Some(id.as_str()));
}

#[test]
fn test_gui_backend_start_failure_is_shown_on_the_vm() {
    let fx = Fixture::new("gui-startfail");
    fx.vm("Failing", 128, &[]);
    fx.backend.0.borrow_mut().start_error = Some("the worker crashed".to_string());
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    harness.get_by_label("Start").click();
    harness.run();
    assert!(
        harness
            .query_by_label("failed: the worker crashed")
            .is_some()
    );
    assert!(
        harness
            .query_by_label("Could not start: the worker crashed")
            .is_some()
    );
    assert!(enabled(&harness, "Start"), "it can be tried again");
}

#[test]
fn test_gui_start_that_would_overcommit_asks_first() {
    let fx = Fixture::new("gui-budget");
    let id = fx.vm("Hungry", 2048, &[]);
    fx.backend.0.borrow_mut().running_mib = 3000;
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    assert!(
        harness
            .query_by_label_contains("RAM for running VMs: 3000 MiB of 8192 MiB")
            .is_some()
    );
    harness.get_by_label("Start").click();
    harness.run();
    assert!(
        harness
            .query_by_label_contains("Starting Hungry would commit 5048 MiB of 8192 MiB")
            .is_some()
    );
    assert!(fx.backend.0.borrow().started.is_empty());
    harness.get_by_label("Cancel").click();
    harness.run();
    assert!(fx.backend.0.borrow().started.is_empty());
    assert!(harness.query_by_label("Start anyway").is_none());

    harness.get_by_label("Start").click();
    harness.run();
    harness.get_by_label("Start anyway").click();
    harness.run();
    assert_eq!(fx.backend.0.borrow().started, [id]);
}

#[test]
fn test_gui_start_within_budget_does_not_ask() {
    let fx = Fixture::new("gui-budget-ok");
    let id = fx.vm("Small", 512, &[]);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    harness.get_by_label("Start").click();
    harness.run();
    assert!(harness.query_by_label("Start anyway").is_none());
    assert_eq!(fx.backend.0.borrow().started, [id]);
}

fn set_state(fx: &Fixture, id: &str, state: RunState) {
    fx.backend
        .0
        .borrow_mut()
        .states
        .insert(id.to_string(), state);
}

#[test]
fn test_gui_toolbar_buttons_follow_the_state() {
    let fx = Fixture::new("gui-toolbar");
    let id = fx.vm("Box", 256, &[]);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    let on = |h: &Harness<'_, NestboxApp>| {
        [
            "Start",
            "Pause",
            "Shut down",
            "Force off",
            "Reset",
            "Send keys",
        ]
        .map(|l| enabled(h, l))
    };
    assert!(enabled(&harness, "New") && enabled(&harness, "Fullscreen"));
    assert_eq!(on(&harness), [true, false, false, false, false, false]);

    set_state(&fx, &id, RunState::Running);
    harness.run();
    assert_eq!(on(&harness), [false, true, true, true, true, true]);
    harness.get_by_label("Shut down").click();
    harness.run();
    harness.get_by_label("Pause").click();
    harness.run();

    set_state(&fx, &id, RunState::Paused);
    harness.run();
    assert!(enabled(&harness, "Resume"));
    assert!(!enabled(&harness, "Shut down"));
    assert!(enabled(&harness, "Force off") && enabled(&harness, "Reset"));
    harness.get_by_label("Resume").click();
    harness.run();
    // Running again: Force off asks first; Cancel sends nothing.
    set_state(&fx, &id, RunState::Running);
    harness.run();
    harness.get_by_label("Force off").click();
    harness.run();
    harness.get_by_label("Cancel").click();
    harness.run();
    harness.get_by_label("Force off").click();
    harness.run();
    harness.get_by_label("Force it off now").click();
    harness.run();

    set_state(&fx, &id, RunState::Starting);
    harness.run();
    assert!(!enabled(&harness, "Start") && enabled(&harness, "Force off"));

    // (The console offers its size too; not a toolbar command.)
    let commands: Vec<VmCommand> = fx
        .commands()
        .into_iter()
        .filter(|c| !matches!(c, VmCommand::SetDisplaySize { .. }))
        .collect();
    assert_eq!(
        commands,
        [
            VmCommand::PowerButton,
            VmCommand::Pause,
            VmCommand::Resume,
            VmCommand::Kill
        ]
    );
}

#[test]
fn test_gui_shut_down_says_so_and_offers_force_off_when_the_guest_takes_too_long() {
    let fx = Fixture::new("gui-shutdown");
    let id = fx.vm("Box", 256, &[]);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    set_state(&fx, &id, RunState::Running);
    harness.run();
    assert!(harness.query_by_label("Shutting down…").is_none());

    harness.get_by_label("Shut down").click();
    harness.run();
    assert!(harness.query_by_label("Shutting down…").is_some());
    assert!(harness.query_by_label("Force it off").is_none());

    // The guest ignores the button past the patience: Force off is offered.
    harness.state_mut().shutdown_patience = 0.0;
    harness.run();
    assert!(harness.query_by_label("Shutting down…").is_none());
    harness.get_by_label("Force it off").click();
    harness.run();
    let commands = fx.commands();
    assert_eq!(commands, [VmCommand::PowerButton, VmCommand::Kill]);

    // A guest that shut down leaves nothing behind.
    set_state(&fx, &id, RunState::Running);
    harness.state_mut().shutdown_patience = 30.0;
    harness.get_by_label("Shut down").click();
    harness.run();
    set_state(&fx, &id, RunState::Stopped);
    harness.run();
    assert!(harness.query_by_label("Shutting down…").is_none());
    assert!(
        harness
            .query_by_label_contains("has not shut down")
            .is_none()
    );
}

#[test]
fn test_gui_send_keys_menu_sends_the_chord() {
    let fx = Fixture::new("gui-sendkeys");
    let id = fx.vm("Box", 256, &[]);
    set_state(&fx, &id, RunState::Running);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    harness.get_by_label("Send keys").click();
    harness.run();
    harness.get_by_label("Ctrl+Alt+F2").click();
    harness.run();
    assert_eq!(
        fx.backend.0.borrow().commands,
        [(id, VmCommand::SendKeys("ctrl+alt+f2".to_string()))]
    );
}

#[test]
fn test_gui_console_keeps_shortcuts_for_the_guest_until_released() {
    let fx = Fixture::new("gui-console");
    let id = fx.vm("Box", 256, &[]);
    set_state(&fx, &id, RunState::Running);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    assert!(
        harness
            .query_by_label("Click the screen to type into the VM")
            .is_some()
    );
    click_console(&mut harness);
    assert!(
        harness
            .query_by_label("Press Ctrl+Alt to release the keyboard and mouse")
            .is_some()
    );
    // Ctrl+N goes to the guest, not to the wizard.
    harness.key_press_modifiers(Modifiers::CTRL, Key::N);
    harness.run();
    assert!(harness.state().wizard().is_none());
    let keys = fx
        .backend
        .0
        .borrow()
        .commands
        .iter()
        .filter(|(_, c)| matches!(c, VmCommand::Input(display::view::GuestInput::Key { .. })))
        .count();
    assert!(keys >= 2, "the guest saw the keys ({keys})");
    // Ctrl+Alt hands the keyboard back; then Ctrl+N is the app's again.
    harness.key_down_modifiers(Modifiers::CTRL | Modifiers::ALT, Key::A);
    harness.run();
    harness.key_up_modifiers(Modifiers::CTRL | Modifiers::ALT, Key::A);
    harness.run();
    assert!(
        harness
            .query_by_label("Press Ctrl+Alt to release the keyboard and mouse")
            .is_none()
    );
    harness.key_press_modifiers(Modifiers::COMMAND, Key::N);
    harness.run();
    assert!(harness.state().wizard().is_some());
}

#[test]
fn test_gui_console_shows_the_guest_framebuffer() {
    use display::framebuffer::PixelFormat;
    let fx = Fixture::new("gui-fb");
    let id = fx.vm("Screen", 256, &[]);
    set_state(&fx, &id, RunState::Running);
    let fb = SharedFramebuffer::create(64, 48).unwrap();
    fb.set_mode(64, 48, PixelFormat::Bgrx8888).unwrap();
    fx.backend.0.borrow_mut().framebuffer = Some(Arc::new(fb));
    let harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    let screens: Vec<[usize; 2]> = harness
        .ctx
        .tex_manager()
        .read()
        .allocated()
        .filter(|(_, meta)| meta.name == "guest-screen")
        .map(|(_, meta)| meta.size)
        .collect();
    assert_eq!(screens, [[64, 48]]);
}

/// The UI map file as label → `[x, y, w, h]`.
fn read_ui_map(path: &Path) -> std::collections::BTreeMap<String, [i32; 4]> {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn test_gui_ui_map_holds_the_widgets_of_the_last_frame() {
    let fx = Fixture::new("gui-uimap");
    fx.vm("Mapped box", 256, &[]);
    let path = fx.dir.path().join("ui-map.json");
    let app = fx
        .app(host(8, 2, 100), FakePicker::default())
        .with_ui_map(path.clone());
    let mut harness = harness(app);
    let map = read_ui_map(&path);
    let new = harness.get_by_label("New").rect();
    let ppp = harness.ctx.pixels_per_point();
    let px = |v: f32| (v * ppp).round() as i32;
    let (x, y) = (px(new.min.x), px(new.min.y));
    assert_eq!(
        map.get("New"),
        Some(&[x, y, px(new.max.x) - x, px(new.max.y) - y]),
        "{map:?}"
    );
    for label in ["Start", "Quit", "Mapped box", "stopped"] {
        assert!(map.contains_key(label), "no {label} in {map:?}");
    }
    assert!(!map.contains_key("Next"), "no wizard yet: {map:?}");

    // The wizard's buttons come with it and go when it closes.
    harness.get_by_label("New").click();
    harness.run();
    let map = read_ui_map(&path);
    for label in ["New empty disk", "Next", "Back", "Cancel"] {
        assert!(map.contains_key(label), "no {label} in {map:?}");
    }
    harness.get_by_label("Cancel").click();
    harness.run();
    let map = read_ui_map(&path);
    assert!(!map.contains_key("Next"), "the wizard closed: {map:?}");
    assert!(map.contains_key("New"));
}

#[test]
fn test_gui_ctrl_q_closes_the_window_and_leaves_vms_running() {
    let fx = Fixture::new("gui-quit");
    let id = fx.vm("Box", 256, &[]);
    set_state(&fx, &id, RunState::Running);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    let closes = |h: &Harness<'_, NestboxApp>| {
        h.output().viewport_output.values().any(|v| {
            v.commands
                .iter()
                .any(|c| matches!(c, eframe::egui::ViewportCommand::Close))
        })
    };
    assert!(!closes(&harness));
    // One event a step, so the frame that saw Ctrl+Q is the last one.
    harness.event(Event::ModifiersChanged(Modifiers::COMMAND));
    harness.step();
    harness.event(Event::Key {
        key: Key::Q,
        physical_key: None,
        pressed: true,
        repeat: false,
        modifiers: Modifiers::COMMAND,
    });
    harness.step();
    assert!(closes(&harness), "Ctrl+Q asks the window to close");
    assert!(
        fx.backend.0.borrow().commands.is_empty(),
        "the VM was not touched"
    );
    assert_eq!(fx.backend.0.borrow().states[&id], RunState::Running);
    harness.event(Event::ModifiersChanged(Modifiers::NONE));
    harness.run();
    // The Quit button does the same.
    harness.get_by_label("Quit").click();
    harness.step();
    assert!(closes(&harness), "Quit asks the window to close");
}

#[test]
fn test_gui_console_keeps_the_keyboard_when_esc_comes_with_the_window_focus() {
    let fx = Fixture::new("gui-console-esc");
    let id = fx.vm("Box", 256, &[]);
    set_state(&fx, &id, RunState::Running);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    // The window does not have the keyboard (no window manager gave it).
    harness.input_mut().focused = false;
    click_console(&mut harness);
    let hint = "Press Ctrl+Alt to release the keyboard and mouse";
    assert!(harness.query_by_label(hint).is_some());
    // The window gets the keyboard and Esc in the same frame.
    harness.input_mut().focused = true;
    harness.input_mut().events.push(Event::WindowFocused(true));
    harness.input_mut().events.push(Event::Key {
        key: Key::Escape,
        physical_key: Some(Key::Escape),
        pressed: true,
        repeat: false,
        modifiers: Modifiers::NONE,
    });
    harness.step();
    harness.run();
    assert!(
        harness.query_by_label(hint).is_some(),
        "Esc is the guest's, not egui's focus move"
    );
}

/// The display sizes the fake backend was asked for.
fn display_sizes(fx: &Fixture) -> Vec<(u32, u32)> {
    fx.commands()
        .into_iter()
        .filter_map(|c| match c {
            VmCommand::SetDisplaySize { width, height } => Some((width, height)),
            _ => None,
        })
        .collect()
}

/// Steps `harness` for `ms` milliseconds of wall time.
fn step_for(harness: &mut Harness<'_, NestboxApp>, ms: u64) {
    let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    while std::time::Instant::now() < until {
        harness.step();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn test_gui_console_offers_its_size_to_the_guest_once_settled_and_again_when_resized() {
    let fx = Fixture::new("gui-follow");
    let id = fx.vm_following_the_window("Desktop");
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    harness.get_by_label("Start").click();
    harness.run();
    step_for(&mut harness, 500);
    let first = display_sizes(&fx);
    step_for(&mut harness, 200);
    let again = display_sizes(&fx);
    // The window grows: the guest is offered the console's new size.
    harness.set_size(egui::vec2(1400.0, 900.0));
    step_for(&mut harness, 500);
    let sizes = display_sizes(&fx);

    assert_eq!(first.len(), 1, "{id}: {first:?}");
    assert_eq!(again, first, "a settled size is offered once");
    let (w, h) = first[0];
    assert!(w > 600 && h > 500, "the console's area: {first:?}");
    // 200 x 100 more window is 200 x 100 more console (the side panels
    // keep their size).
    assert_eq!(sizes, [(w, h), (w + 200, h + 100)]);
}

#[test]
fn test_gui_console_of_a_fixed_size_vm_offers_no_size() {
    let fx = Fixture::new("gui-fixed");
    let id = fx.vm("Fixed", 1024, &[]);
    assert_eq!(
        fx.store.get(&id).unwrap().display.resolution,
        crate::library::config::Resolution::Fixed {
            width: 1024,
            height: 768
        }
    );
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    harness.get_by_label("Start").click();
    harness.run();
    step_for(&mut harness, 500);
    assert!(display_sizes(&fx).is_empty());
}

#[test]
fn test_gui_settings_display_resolution_saves_to_vm_toml() {
    let fx = Fixture::new("gui-resolution");
    let id = fx.vm_following_the_window("Desktop");
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    harness.get_by_label("Guest resolution").click();
    harness.run();
    harness.get_by_label("1280 × 800").click();
    harness.run();
    harness.get_by_label("Save").click();
    harness.run();

    let vm = fx.store.get(&id).unwrap();
    assert_eq!(
        vm.display.resolution,
        crate::library::config::Resolution::Fixed {
            width: 1280,
            height: 800
        }
    );
    let text = std::fs::read_to_string(fx.store.dir(&id).unwrap().join(VM_FILE)).unwrap();
    assert!(text.contains("resolution = \"1280x800\""), "{text}");
}

#[test]
fn test_gui_force_off_of_a_paused_vm_needs_no_confirmation() {
    let fx = Fixture::new("gui-force-paused");
    let id = fx.vm("Halted", 256, &[]);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    set_state(&fx, &id, RunState::Paused);
    harness.run();
    harness.get_by_label("Force off").click();
    harness.run();
    assert!(harness.query_by_label("Force it off now").is_none());
    assert_eq!(fx.commands(), [VmCommand::Kill]);
}

#[test]
fn test_gui_suspend_saves_the_vm_and_start_resumes_it() {
    let fx = Fixture::new("gui-suspend");
    let id = fx.vm("Sleepy", 256, &[]);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    assert!(!enabled(&harness, "Suspend"), "nothing runs to suspend");
    set_state(&fx, &id, RunState::Running);
    harness.run();
    harness.get_by_label("Suspend").click();
    harness.run();
    assert_eq!(fx.commands(), [VmCommand::Suspend]);

    set_state(&fx, &id, RunState::Suspended);
    harness.run();
    assert!(
        harness.query_by_label("suspended").is_some(),
        "the row says so"
    );
    assert!(enabled(&harness, "Start") && !enabled(&harness, "Suspend"));
}

#[test]
fn test_gui_toolbar_does_not_shift_when_pause_becomes_resume() {
    let fx = Fixture::new("gui-toolbar-width");
    let id = fx.vm("Steady", 256, &[]);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    set_state(&fx, &id, RunState::Running);
    harness.run();
    let pause = harness.get_by_label("Pause").rect();
    let next = harness.get_by_label("Shut down").rect();
    set_state(&fx, &id, RunState::Paused);
    harness.run();
    let resume = harness.get_by_label("Resume").rect();
    let next_paused = harness.get_by_label("Shut down").rect();

    assert_eq!(pause.width(), resume.width());
    assert_eq!(next.left(), next_paused.left());
}

#[test]
fn test_gui_library_row_selects_anywhere_and_its_menu_deletes_after_confirmation() {
    let fx = Fixture::new("gui-row-menu");
    let first = fx.vm("First", 256, &[]);
    let second = fx.vm("Second", 256, &[]);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    // A click on the row's OS label (not the name) selects it.
    // (The library's rows come first; the details panel shows the
    // selected VM's OS again.)
    let rect = harness.get_all_by_label("Linux").nth(1).unwrap().rect();
    harness.hover_at(rect.center());
    harness.event(egui::Event::PointerButton {
        pos: rect.center(),
        button: egui::PointerButton::Primary,
        pressed: true,
        modifiers: Modifiers::NONE,
    });
    harness.event(egui::Event::PointerButton {
        pos: rect.center(),
        button: egui::PointerButton::Primary,
        pressed: false,
        modifiers: Modifiers::NONE,
    });
    harness.run();
    let picked = harness.state().selected().map(str::to_string);

    // Its right-click menu: Delete… asks, Cancel keeps it, Delete deletes.
    harness
        .get_all_by_label("Second")
        .next()
        .unwrap()
        .click_secondary();
    harness.run();
    harness.get_by_label("Delete…").click();
    harness.run();
    harness.get_by_label("Cancel").click();
    harness.run();
    let kept = fx.store.get(&second).is_ok();
    harness
        .get_all_by_label("Second")
        .next()
        .unwrap()
        .click_secondary();
    harness.run();
    harness.get_by_label("Delete…").click();
    harness.run();
    harness.get_by_label("Delete the VM").click();
    harness.run();

    assert_eq!(picked.as_deref(), Some(second.as_str()));
    assert!(kept, "Cancel deletes nothing");
    assert!(fx.store.get(&second).is_err(), "deleted");
    assert!(fx.store.get(&first).is_ok());
    assert_eq!(harness.query_all_by_label("Second").count(), 0);
}

#[test]
fn test_gui_library_row_menu_of_a_running_vm_cannot_delete() {
    let fx = Fixture::new("gui-row-running");
    let id = fx.vm("Busy", 256, &[]);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    set_state(&fx, &id, RunState::Running);
    harness.run();
    harness
        .get_all_by_label("Busy")
        .next()
        .unwrap()
        .click_secondary();
    harness.run();
    assert!(!enabled(&harness, "Delete…"));
    // The menu's Shut down (the toolbar has one too, drawn first).
    let menu_item = harness.get_all_by_label("Shut down").last().unwrap();
    assert!(!menu_item.accesskit_node().is_disabled());
    menu_item.click();
    harness.run();
    assert_eq!(fx.commands(), [VmCommand::PowerButton]);
}

#[test]
fn test_gui_says_once_that_kvm_is_not_hardware_accelerated() {
    let fx = Fixture::new("gui-slow-kvm");
    fx.vm("Any", 256, &[]);
    let mut harness = harness(
        fx.app(host(8, 2, 100), FakePicker::default())
            .with_slow_kvm(),
    );
    let shown = harness
        .query_by_label_contains("is not hardware-accelerated")
        .is_some();
    harness.get_by_label("Got it").click();
    harness.run();
    assert!(shown);
    assert!(
        harness
            .query_by_label_contains("is not hardware-accelerated")
            .is_none()
    );
    // Without the warning (a host with VT-x/AMD-V): nothing.
    let fx = Fixture::new("gui-fast-kvm");
    let fast = super::harness(fx.app(host(8, 2, 100), FakePicker::default()));
    assert!(
        fast.query_by_label_contains("is not hardware-accelerated")
            .is_none()
    );
}

#[test]
fn test_gui_a_guest_that_crashed_says_what_and_when_with_details_folded() {
    let fx = Fixture::new("gui-crashed");
    let id = fx.vm("Crashy", 256, &[]);
    let outcome = engine::Outcome::EmulationFailure {
        vcpu: 0,
        detail: "rip 0xfff0".to_string(),
    };
    let message =
        crate::worker::api::failure_message(&outcome, std::time::Duration::from_secs(90), true);
    fx.backend
        .0
        .borrow_mut()
        .states
        .insert(id.clone(), RunState::Failed(message));
    // The only VM: selected from the start.
    let harness_app = fx.app(host(8, 2, 100), FakePicker::default());
    let mut harness = harness(harness_app);
    // One short line in the list; plain words and when in the details.
    assert!(harness.query_by_label("stopped with an error").is_some());
    let plain = "The guest's CPU hit an instruction this computer cannot run \
                 (it has no hardware virtualization) (after 1 min 30 s).";
    assert!(harness.query_by_label(plain).is_some());
    assert!(harness.query_by_label_contains("rip 0xfff0").is_none());
    harness.get_by_label("Details").click();
    harness.run();
    assert!(
        harness
            .query_by_label_contains("KVM could not emulate an instruction on vCPU 0 (rip 0xfff0)")
            .is_some()
    );
    assert!(enabled(&harness, "Start"), "it can be started again");
    // No picture was kept: none is shown.
    assert!(
        harness
            .query_by_label("Its screen when it stopped:")
            .is_none()
    );
    // The worker kept the guest's last screen: the details show it.
    let dir = fx.store.dir(&id).unwrap();
    display::screenshot::write_png(
        &dir.join(crate::worker::paths::LAST_SCREEN),
        4,
        2,
        &[200u8; 4 * 2 * 4],
    )
    .unwrap();
    harness.run();
    assert!(
        harness
            .query_by_label("Its screen when it stopped:")
            .is_some()
    );
    let texture = harness.state().last_screen_size(&id);
    assert_eq!(texture, Some([4, 2]));
}
