// SPDX-License-Identifier: Apache-2.0
//! The right side for a VM that is not running: what it is (name, OS,
//! memory, vCPUs, disks with missing files flagged, boot source, display
//! scale), why its last start failed or its guest stopped (with the
//! guest's last screen), its snapshots and its settings editor. A VM that
//! needs attention shows where its file is broken and its folder, and
//! offers nothing that could change or delete it.

use eframe::egui::{self, RichText};

use super::settings_panel::{SettingsEditor, scale_label};
use super::snapshots_panel::SnapshotsPanel;
use super::status::VmStatus;
use super::ui_map::Mapped as _;
use crate::library::caps::Caps;
use crate::library::config::{
    Boot, ConfigError, DiskBus, Firmware, Media, Problem, VmFile, resolve,
};
use crate::library::store::VmEntry;
use crate::worker::api::{RunState, split_failure};

/// What the user did in the details.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The editor's Save was clicked.
    pub save: bool,
    /// A snapshot operation may have changed the VM's settings.
    pub snapshot_done: bool,
}

/// Draws the details of `entry`, its snapshots and its settings editor.
pub fn show(
    ui: &mut egui::Ui,
    entry: &VmEntry,
    status: &VmStatus,
    editor: Option<&mut SettingsEditor>,
    snapshots: Option<&mut SnapshotsPanel>,
    caps: &Caps,
    last_screen: Option<&egui::TextureHandle>,
) -> Outcome {
    let vm = match &entry.state {
        Ok(vm) => vm,
        Err(err) => {
            needs_attention(ui, entry, err);
            return Outcome::default();
        }
    };
    ui.heading(&vm.name);
    match status {
        VmStatus::StartFailed(message) => {
            ui.colored_label(
                ui.visuals().error_fg_color,
                format!("Could not start: {message}"),
            );
        }
        VmStatus::Run(RunState::Failed(message)) => {
            // What happened and when, in plain words; the technical
            // account (also in `nestbox list` and worker.log) folded away.
            let (plain, details) = split_failure(message);
            ui.colored_label(ui.visuals().error_fg_color, plain)
                .mapped(plain);
            if let Some(details) = details {
                egui::CollapsingHeader::new("Details")
                    .id_salt("failure-details")
                    .show(ui, |ui| ui.label(details));
            }
            if let Some(texture) = last_screen {
                ui.label("Its screen when it stopped:")
                    .mapped("Its screen when it stopped:");
                let width = ui.available_width().min(640.0);
                ui.add(egui::Image::new(texture).max_width(width));
            }
        }
        _ => {}
    }
    facts(ui, entry, vm);
    let snapshot_done = snapshots.is_some_and(|panel| {
        ui.separator();
        panel.show(ui)
    });
    ui.separator();
    let save = match editor {
        Some(editor) => editor.show(ui, caps),
        None => false,
    };
    Outcome {
        save,
        snapshot_done,
    }
}

fn facts(ui: &mut egui::Ui, entry: &VmEntry, vm: &VmFile) {
    egui::Grid::new("vm-facts").num_columns(2).show(ui, |ui| {
        let os = if vm.os.is_empty() { "—" } else { &vm.os };
        ui.label("OS");
        ui.label(os);
        ui.end_row();
        ui.label("Memory");
        ui.label(format!("{} MiB", vm.memory_mib));
        ui.end_row();
        ui.label("vCPUs");
        ui.label(vm.vcpus.to_string());
        ui.end_row();
        ui.label("Boots");
        ui.label(boot_text(&vm.boot));
        ui.end_row();
        ui.label("Display");
        ui.label(scale_label(vm.display.scale));
        ui.end_row();
        ui.label("Disks");
        ui.vertical(|ui| {
            if vm.disks.is_empty() {
                ui.label("none");
            }
            for disk in &vm.disks {
                let path = resolve(&entry.dir, &disk.path);
                let kind = match disk.media {
                    Media::Disk => "disk",
                    Media::Cdrom => "CD-ROM",
                };
                let bus = match disk.bus {
                    DiskBus::Virtio => "",
                    DiskBus::Ide => " (IDE)",
                };
                let text = format!("{kind}{bus}: {}", path.display());
                if disk.ejected {
                    ui.label(format!("{kind}{bus}: empty (last disc {})", path.display()));
                } else if path.is_file() {
                    ui.label(text);
                } else {
                    ui.colored_label(ui.visuals().error_fg_color, format!("{text} (missing)"));
                }
            }
        });
        ui.end_row();
    });
}

/// What a VM boots, in words.
pub fn boot_text(boot: &Boot) -> String {
    match boot {
        Boot::Firmware(Firmware::Seabios) => "SeaBIOS (from its disks, in order)".to_string(),
        Boot::Bios(path) => format!("firmware image {}", path.display()),
        Boot::Kernel { kernel, initrd, .. } => match initrd {
            Some(initrd) => format!(
                "Linux kernel {} with initrd {}",
                kernel.display(),
                initrd.display()
            ),
            None => format!("Linux kernel {}", kernel.display()),
        },
    }
}

fn needs_attention(ui: &mut egui::Ui, entry: &VmEntry, err: &ConfigError) {
    ui.heading(&entry.id);
    ui.label(RichText::new("This VM needs attention").color(ui.visuals().error_fg_color));
    ui.label("Its settings file cannot be used:");
    ui.label(format!("File: {}", err.file.display()));
    if let Some(at) = err.location() {
        ui.label(format!("At line {}, column {}", at.line, at.column));
    }
    let message = match &err.problem {
        Problem::Read { message, .. } | Problem::Parse { message, .. } => message.clone(),
        Problem::NewerSchema { .. } => err.to_string(),
    };
    ui.label(format!("Problem: {message}"));
    ui.label(
        "Nothing was changed. Fix the file in a text editor (or restore it), \
         and the VM shows here again.",
    );
    ui.horizontal(|ui| {
        ui.label("Open folder:");
        ui.add(egui::Label::new(entry.dir.display().to_string()).selectable(true));
    });
}
