// SPDX-License-Identifier: Apache-2.0
//! The New VM wizard, driven through its widgets.

use eframe::egui::accesskit::Role;
use egui_kittest::kittest::{NodeT, Queryable};

use super::*;
use crate::gui::wizard::{Page, SourceKind};
use crate::library::config::{DiskFormat, Media};

fn slider<'a>(harness: &'a Harness<'_, NestboxApp>, label: &'a str) -> egui_kittest::Node<'a> {
    harness.get_by_role_and_label(Role::Slider, label)
}

fn slider_value(harness: &Harness<'_, NestboxApp>, label: &str) -> (f64, f64) {
    let node = slider(harness, label).accesskit_node();
    (
        node.numeric_value().unwrap(),
        node.max_numeric_value().unwrap(),
    )
}

#[test]
fn test_gui_wizard_creates_the_vm_with_the_chosen_values() {
    let fx = Fixture::new("gui-wizard");
    let iso = fx.file("debian-12.iso");
    let picker = FakePicker(vec![(PickKind::Iso, iso.clone())]);
    let mut harness = harness(fx.app(host(16, 4, 100), picker));

    harness.get_by_label("New").click();
    harness.run();
    assert_eq!(harness.state().wizard().unwrap().page(), Page::Source);
    assert!(!enabled(&harness, "Next"), "Next before a file is chosen");
    harness.get_by_label("Choose ISO…").click();
    harness.run();
    harness.get_by_label("Next").click();
    harness.run();
    let wizard = harness.state().wizard().unwrap();
    assert_eq!(wizard.page(), Page::Profile);
    assert_eq!(wizard.profile_id(), "linux-iso");
    harness.get_by_label("Next").click();
    harness.run();
    assert_eq!(harness.state().wizard().unwrap().page(), Page::Resources);
    // The profile's defaults within the caps: 2 GiB, 2 of 4 CPUs, 20 GiB.
    assert_eq!(slider_value(&harness, "Memory").0, 2048.0);
    assert_eq!(slider_value(&harness, "vCPUs").0, 2.0);
    assert_eq!(slider_value(&harness, "Disk size").0, 20.0);
    assert_eq!(
        harness.get_by_label("Name:").value().as_deref(),
        Some("debian-12")
    );

    harness
        .get_by_label("Name:")
        .set_text_value_accesskit("Debian test");
    slider(&harness, "Memory").set_value_accesskit(1536.0);
    slider(&harness, "vCPUs").set_value_accesskit(3.0);
    slider(&harness, "Disk size").set_value_accesskit(4.0);
    harness.run();
    harness.get_by_label("qcow2").click();
    harness.run();
    harness.get_by_label("Next").click();
    harness.run();
    assert_eq!(harness.state().wizard().unwrap().page(), Page::Review);
    assert!(harness.query_by_label("1536 MiB").is_some());
    assert!(harness.query_by_label("4 GiB, qcow2").is_some());
    assert!(
        harness
            .query_by_label("virtio (needs virtio drivers)")
            .is_some(),
        "the review says where the Linux profile puts the disks"
    );

    harness.get_by_label("Create").click();
    wait_for(&mut harness, |app| app.wizard().is_none());
    harness.run();

    let list = fx.store.list().unwrap();
    assert_eq!(list.len(), 1);
    let vm = list[0].state.clone().unwrap();
    assert_eq!(vm.name, "Debian test");
    assert_eq!(vm.profile, "linux-iso");
    assert_eq!((vm.memory_mib, vm.vcpus), (1536, 3));
    assert_eq!(vm.disks.len(), 2);
    assert_eq!(vm.disks[0].format, DiskFormat::Qcow2);
    assert!(list[0].dir.join(&vm.disks[0].path).is_file());
    assert_eq!(vm.disks[1].media, Media::Cdrom);
    assert_eq!(vm.disks[1].path, iso);
    assert_eq!(harness.state().selected(), Some(list[0].id.as_str()));
}

#[test]
fn test_gui_wizard_caps_on_an_8g_2cpu_host() {
    let fx = Fixture::new("gui-caps");
    let iso = fx.file("x.iso");
    let picker = FakePicker(vec![(PickKind::Iso, iso)]);
    let mut harness = harness(fx.app(host(8, 2, 100), picker));
    harness.get_by_label("New").click();
    harness.run();
    harness.get_by_label("Choose ISO…").click();
    harness.run();
    for _ in 0..2 {
        harness.get_by_label("Next").click();
        harness.run();
    }
    // 2 CPUs: at most 2, by default 1 (half).
    assert_eq!(slider_value(&harness, "vCPUs"), (1.0, 2.0));
    // 8 GiB: the slider stops at 4 GiB without the switch...
    assert_eq!(slider_value(&harness, "Memory").1, 4096.0);
    slider(&harness, "Memory").set_value_accesskit(8192.0);
    harness.run();
    assert_eq!(slider_value(&harness, "Memory"), (4096.0, 4096.0));
    assert!(
        harness
            .query_by_label_contains("Over-commit is on")
            .is_none()
    );
    // ...and at 6 GiB (RAM less 2 GiB) with it, with a warning.
    harness
        .get_by_label("Allow over-commit (more than half of the host's RAM)")
        .click();
    harness.run();
    assert_eq!(slider_value(&harness, "Memory").1, 6144.0);
    slider(&harness, "Memory").set_value_accesskit(8192.0);
    harness.run();
    assert_eq!(slider_value(&harness, "Memory").0, 6144.0);
    assert!(
        harness
            .query_by_label_contains("Over-commit is on")
            .is_some()
    );
    assert!(enabled(&harness, "Next"));
    // Turning the switch off brings the value back under the cap.
    harness
        .get_by_label("Allow over-commit (more than half of the host's RAM)")
        .click();
    harness.run();
    assert_eq!(slider_value(&harness, "Memory"), (4096.0, 4096.0));
}

#[test]
fn test_gui_wizard_refuses_a_disk_larger_than_the_free_space() {
    let fx = Fixture::new("gui-nospace");
    let mut harness = harness(fx.app(host(8, 2, 0), FakePicker::default()));
    harness.get_by_label("New").click();
    harness.run();
    harness.get_by_label("New empty disk").click();
    harness.run();
    for _ in 0..2 {
        harness.get_by_label("Next").click();
        harness.run();
    }
    assert!(
        harness
            .query_by_label_contains("free where the VM goes: choose a smaller disk")
            .is_some()
    );
    assert!(!enabled(&harness, "Next"));
}

/// Opens the wizard, picks the existing disk image the picker offers and
/// goes on to the profile page.
fn to_profile_page_with_a_disk_image(harness: &mut Harness<'_, NestboxApp>) {
    harness.get_by_label("New").click();
    harness.run();
    harness
        .get_by_label("Existing disk image (raw or qcow2)")
        .click();
    harness.run();
    harness.get_by_label("Choose disk image…").click();
    harness.run();
    harness.get_by_label("Next").click();
    harness.run();
}

#[test]
fn test_gui_wizard_kernel_profile_needs_a_kernel() {
    let fx = Fixture::new("gui-kprofile");
    let disk = fx.file("old.qcow2");
    let picker = FakePicker(vec![(PickKind::DiskImage, disk)]);
    let mut harness = harness(fx.app(host(8, 2, 100), picker));
    to_profile_page_with_a_disk_image(&mut harness);
    assert_eq!(
        harness.state().wizard().unwrap().profile_id(),
        "generic-bios"
    );
    harness.get_by_label("Linux (kernel and initrd)").click();
    harness.run();
    assert!(
        harness
            .query_by_label_contains("boots a Linux kernel directly")
            .is_some()
    );
    assert!(!enabled(&harness, "Next"));
    harness.get_by_label("DOS and retro games").click();
    harness.run();
    assert!(enabled(&harness, "Next"));
}

/// A file dropped on the window.
#[derive(Debug)]
struct Dropped(PathBuf);

impl eframe::egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

#[test]
fn test_gui_dropped_iso_opens_the_wizard_with_it() {
    let fx = Fixture::new("gui-drop");
    let iso = fx.file("dropped.iso");
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    harness
        .input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped(iso.clone())));
    harness.run();
    let wizard = harness.state().wizard().expect("wizard opened");
    assert_eq!(wizard.kind(), SourceKind::Iso);
    assert!(harness.query_by_label(&iso.display().to_string()).is_some());
    assert!(enabled(&harness, "Next"));
}

#[test]
fn test_gui_ctrl_n_opens_the_wizard() {
    let fx = Fixture::new("gui-ctrln");
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    harness.key_press_modifiers(eframe::egui::Modifiers::COMMAND, eframe::egui::Key::N);
    harness.run();
    assert!(harness.state().wizard().is_some());
    harness.get_by_label("Cancel").click();
    harness.run();
    assert!(harness.state().wizard().is_none());
}

#[test]
fn test_gui_wizard_preselects_the_profile_an_iso_looks_like() {
    let test = "test_gui_wizard_preselects_the_profile_an_iso_looks_like";
    let xorriso = std::path::Path::new("/usr/bin/xorriso");
    if !xorriso.exists() {
        nestbox_tests::skipped_missing(test, "xorriso is not installed (Debian package xorriso)");
        return;
    }
    let fx = Fixture::new("gui-wizard-iso");
    let tree = fx.dir.path().join("fd-tree/freedos");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("readme.txt"), b"FreeDOS").unwrap();
    let iso = fx.dir.path().join("fd14.iso");
    let made = std::process::Command::new(xorriso)
        .args(["-as", "mkisofs", "-quiet", "-V", "FD14", "-o"])
        .arg(&iso)
        .arg(fx.dir.path().join("fd-tree"))
        .status()
        .unwrap();
    assert!(made.success());
    let picker = FakePicker(vec![(PickKind::Iso, iso)]);
    let mut harness = harness(fx.app(host(16, 4, 100), picker));

    harness.get_by_label("New").click();
    harness.run();
    harness.get_by_label("Choose ISO…").click();
    harness.run();
    harness.get_by_label("Next").click();
    harness.run();

    assert_eq!(harness.state().wizard().unwrap().profile_id(), "dos-retro");
}

#[test]
fn test_gui_wizard_without_a_file_dialog_says_so_and_takes_a_typed_path() {
    let fx = Fixture::new("gui-wizard-typed");
    let iso = fx.file("typed.iso");
    // No file dialog answers: the picker returns nothing at once.
    let mut harness = harness(fx.app(host(16, 4, 100), FakePicker::default()));
    harness.get_by_label("New").click();
    harness.run();
    harness.get_by_label("Choose ISO…").click();
    harness.run();
    let said = harness
        .query_by_label_contains("No file dialog opened")
        .is_some();
    harness
        .get_by_label("or its path:")
        .set_text_value_accesskit(fx.dir.path().join("nothing.iso").to_str().unwrap());
    harness.run();
    harness.get_by_label("Use path (an ISO image)").click();
    harness.run();
    let refused =
        harness.query_by_label_contains("is not a file").is_some() && !enabled(&harness, "Next");
    harness
        .get_by_label("or its path:")
        .set_text_value_accesskit(iso.to_str().unwrap());
    harness.run();
    harness.get_by_label("Use path (an ISO image)").click();
    harness.run();

    assert!(said, "the wizard says why nothing opened");
    assert!(refused, "a path that is not a file is refused");
    assert!(enabled(&harness, "Next"));
    assert!(harness.query_by_label(iso.to_str().unwrap()).is_some());
}

#[test]
fn test_gui_wizard_names_the_packages_a_profile_needs_and_the_host_lacks() {
    use crate::library::helpers::{Installed, PASST, SEABIOS, VIRTIO_VGA_BIOS};
    let fx = Fixture::new("gui-helpers");
    let disk = fx.file("old.qcow2");
    let picker = FakePicker(vec![(PickKind::DiskImage, disk)]);
    let caps = host(8, 2, 100).with_helpers(Installed::lacking(&[SEABIOS, VIRTIO_VGA_BIOS]));
    let mut harness = harness(fx.app(caps, picker));
    // The app says it once at start, too.
    assert!(
        harness
            .query_by_label_contains("Some VMs will not start: SeaBIOS")
            .is_some()
    );
    harness.get_by_label("Dismiss").click();
    harness.run();
    assert!(
        harness
            .query_by_label_contains("Some VMs will not start")
            .is_none()
    );
    to_profile_page_with_a_disk_image(&mut harness);
    // A BIOS profile: SeaBIOS and its VGA BIOS, from the seabios package.
    let warning = "This VM will not start yet: SeaBIOS (the PC firmware), the VGA BIOS \
                   not installed: install the seabios package (sudo apt install seabios).";
    assert!(harness.query_by_label(warning).is_some());
    // It may still be made.
    assert!(enabled(&harness, "Next"));
    // A host without passt: a profile with a network card says so, one
    // without does not.
    let fx = Fixture::new("gui-helpers-passt");
    let caps = host(8, 2, 100).with_helpers(Installed::lacking(&[PASST]));
    let mut harness = super::harness(fx.app(caps, FakePicker::default()));
    harness.get_by_label("New").click();
    harness.run();
    harness.get_by_label("New empty disk").click();
    harness.run();
    harness.get_by_label("Next").click();
    harness.run();
    assert!(
        harness
            .query_by_label(
                "This VM will not start yet: passt (networking) not installed: \
                 install the passt package (sudo apt install passt)."
            )
            .is_some()
    );
    harness.get_by_label("DOS and retro games").click();
    harness.run();
    assert!(
        harness
            .query_by_label_contains("This VM will not start yet")
            .is_none(),
        "the DOS profile has no network card"
    );
}
