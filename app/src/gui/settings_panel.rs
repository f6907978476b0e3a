// SPDX-License-Identifier: Apache-2.0
//! The settings editor of a stopped VM: memory and vCPU sliders bounded by
//! the host's caps (with the over-commit switch and its warning), display
//! scale, network, the disks' controller and each hard disk's write cache
//! (with the files outside the VM's folder its image may use), and sound
//! with its volume and mute. Values over a cap show the cap's message and
//! disable Save; Save writes `vm.toml` atomically through the store.

use eframe::egui::{self, SliderClamping};

use crate::library::caps::{Caps, Request};
use crate::library::config::{
    Adapter, CacheMode, Disk, DiskBus, FIXED_RESOLUTIONS, MAX_VOLUME, Media, Network, Resolution,
    ScaleMode, Sound, VmFile,
};

/// The setting that suspends a VM when the computer shuts down.
pub const SUSPEND_ON_HOST_SHUTDOWN: &str =
    "Suspend it when this computer shuts down (it resumes at its next start)";

/// The smallest memory the sliders offer, in MiB.
pub const MIN_MEMORY_MIB: u64 = 4;

/// Every scale mode with its label.
pub const SCALES: [(ScaleMode, &str); 4] = [
    (ScaleMode::Fit, "Fit to window"),
    (ScaleMode::OneToOne, "1:1"),
    (ScaleMode::Integer, "Integer (crisp pixels)"),
    (ScaleMode::Stretch, "Stretch"),
];

/// The disk controller choices, as the settings show them.
pub const VIRTIO_DISKS: &str = "virtio (fast; needs virtio drivers, as Linux has)";
/// See [`VIRTIO_DISKS`].
pub const IDE_DISKS: &str = "IDE (any PC system; boots installer CDs)";

/// The write-cache choices of a hard disk, as the settings show them
/// (short, so the row fits the panel; the hover says what each means).
pub const WRITE_BACK: &str = "Write-back";
/// See [`WRITE_BACK`].
pub const WRITE_THROUGH: &str = "Write-through";

/// The display adapter choices, as the settings show them.
pub const VIRTIO_VGA: &str = "virtio-vga";
/// See [`VIRTIO_VGA`].
pub const PLAIN_VGA: &str = "VGA";
/// The resolution that follows the window, as the settings show it.
pub const FOLLOW_WINDOW: &str = "Follow the window";

/// The label of a guest resolution.
pub fn resolution_label(resolution: Resolution) -> String {
    match resolution {
        Resolution::FollowWindow => FOLLOW_WINDOW.to_string(),
        Resolution::Fixed { width, height } => format!("{width} × {height}"),
    }
}

/// The label of a scale mode.
pub fn scale_label(scale: ScaleMode) -> &'static str {
    SCALES
        .iter()
        .find(|(s, _)| *s == scale)
        .map_or("Fit to window", |(_, label)| label)
}

/// The editor's state for one VM.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingsEditor {
    /// The VM's id.
    pub id: String,
    base: VmFile,
    edited: VmFile,
    /// What the last Save did.
    pub message: Option<Result<String, String>>,
}

/// The warning shown while over-commit is on.
pub fn overcommit_warning(caps: &Caps) -> String {
    format!(
        "Over-commit is on: up to {} MiB, more than half of this host's {} MiB of RAM. \
         The host may slow down or run out of memory while this VM runs.",
        caps.memory_max_mib(true),
        caps.host_memory_mib()
    )
}

impl SettingsEditor {
    /// An editor starting from `vm`, the settings of VM `id`.
    pub fn new(id: &str, vm: &VmFile) -> Self {
        Self {
            id: id.to_string(),
            base: vm.clone(),
            edited: vm.clone(),
            message: None,
        }
    }

    /// Whether this editor was started from exactly these settings.
    pub fn is_for(&self, id: &str, vm: &VmFile) -> bool {
        self.id == id && &self.base == vm
    }

    /// Whether something was changed.
    pub fn is_dirty(&self) -> bool {
        self.base != self.edited
    }

    /// The settings as edited.
    pub fn edited(&self) -> &VmFile {
        &self.edited
    }

    /// After a successful save: the edited settings are the new base.
    pub fn saved(&mut self) {
        self.base = self.edited.clone();
        self.message = Some(Ok("Saved.".to_string()));
    }

    /// Why the edited values cannot be saved, if they cannot.
    pub fn refusal(&self, caps: &Caps) -> Option<String> {
        let request = Request {
            memory_mib: self.edited.memory_mib,
            vcpus: self.edited.vcpus,
            new_disk_bytes: 0,
        };
        caps.check(&request, self.edited.allow_overcommit)
            .err()
            .map(|e| e.to_string())
    }

    /// Draws the editor; true when Save was clicked (and may be done).
    pub fn show(&mut self, ui: &mut egui::Ui, caps: &Caps) -> bool {
        ui.heading("Settings");
        let vm = &mut self.edited;
        let memory_max = caps.memory_max_mib(vm.allow_overcommit);
        ui.add(
            egui::Slider::new(&mut vm.memory_mib, MIN_MEMORY_MIB..=memory_max)
                .logarithmic(true)
                .clamping(SliderClamping::Edits)
                .suffix(" MiB")
                .text("Memory"),
        );
        let was_on = vm.allow_overcommit;
        ui.checkbox(
            &mut vm.allow_overcommit,
            "Allow over-commit (more than half of the host's RAM)",
        );
        if was_on && !vm.allow_overcommit {
            vm.memory_mib = vm.memory_mib.min(caps.memory_max_mib(false));
        }
        if vm.allow_overcommit {
            ui.colored_label(ui.visuals().warn_fg_color, overcommit_warning(caps));
        }
        ui.add(
            egui::Slider::new(&mut vm.vcpus, 1..=caps.vcpus_max())
                .clamping(SliderClamping::Edits)
                .text("vCPUs"),
        );
        egui::ComboBox::from_label("Display scale")
            .selected_text(scale_label(vm.display.scale))
            .show_ui(ui, |ui| {
                for (scale, label) in SCALES {
                    ui.selectable_value(&mut vm.display.scale, scale, label);
                }
            });
        display_rows(ui, &mut vm.display);
        ui.horizontal(|ui| {
            ui.label("Network:");
            ui.radio_value(
                &mut vm.network,
                Network::Nat,
                "NAT (share the host's network)",
            );
            ui.radio_value(&mut vm.network, Network::None, "No network");
        });
        if !vm.disks.is_empty() {
            // One controller for all of the VM's disks and CD-ROMs; none
            // is picked while they differ.
            let first = vm.disks.first().map(|d| d.bus);
            let mut bus = first.filter(|b| vm.disks.iter().all(|d| d.bus == *b));
            let before = bus;
            ui.horizontal(|ui| {
                ui.label("Disks on:");
                ui.radio_value(&mut bus, Some(DiskBus::Virtio), VIRTIO_DISKS);
                ui.radio_value(&mut bus, Some(DiskBus::Ide), IDE_DISKS);
            });
            if let (true, Some(bus)) = (bus != before, bus) {
                for disk in &mut vm.disks {
                    disk.bus = bus;
                }
            }
            for disk in vm.disks.iter_mut().filter(|d| d.media == Media::Disk) {
                disk_row(ui, disk);
            }
        }
        ui.horizontal(|ui| {
            ui.label("Sound:");
            ui.radio_value(&mut vm.sound.output, Sound::Host, "Play on this computer");
            ui.radio_value(&mut vm.sound.output, Sound::None, "No sound");
        });
        ui.add_enabled_ui(vm.sound.output == Sound::Host, |ui| {
            ui.horizontal(|ui| {
                ui.add(
                    egui::Slider::new(&mut vm.sound.volume, 0..=MAX_VOLUME)
                        .clamping(SliderClamping::Always)
                        .suffix(" %")
                        .text("Volume"),
                );
                ui.checkbox(&mut vm.sound.mute, "Mute");
            });
        });
        ui.checkbox(&mut vm.suspend_on_host_shutdown, SUSPEND_ON_HOST_SHUTDOWN);

        let refusal = self.refusal(caps);
        if let Some(why) = &refusal {
            ui.colored_label(ui.visuals().error_fg_color, why);
        }
        let mut save = false;
        ui.horizontal(|ui| {
            let can_save = refusal.is_none() && self.is_dirty();
            save = ui
                .add_enabled(can_save, egui::Button::new("Save"))
                .on_disabled_hover_text("Nothing to save, or a value is over a cap")
                .clicked();
            if ui
                .add_enabled(self.is_dirty(), egui::Button::new("Revert"))
                .clicked()
            {
                self.edited = self.base.clone();
                self.message = None;
            }
            match &self.message {
                Some(Ok(text)) => {
                    ui.label(text);
                }
                Some(Err(text)) => {
                    ui.colored_label(ui.visuals().error_fg_color, text);
                }
                None => {}
            }
        });
        save
    }
}

/// The display adapter and, for virtio-vga, the guest's resolution.
fn display_rows(ui: &mut egui::Ui, display: &mut crate::library::config::Display) {
    ui.horizontal(|ui| {
        ui.label("Display:");
        ui.radio_value(&mut display.adapter, Adapter::VirtioVga, VIRTIO_VGA)
            .on_hover_text("Any resolution, following the window, with a virtio-gpu driver in the guest (Linux has one); the BIOS and DOS see a VGA");
        ui.radio_value(&mut display.adapter, Adapter::Vga, PLAIN_VGA)
            .on_hover_text("A plain VGA, as an old PC has: BIOS and VESA modes only");
    });
    ui.add_enabled_ui(display.adapter == Adapter::VirtioVga, |ui| {
        egui::ComboBox::from_label("Guest resolution")
            .selected_text(resolution_label(display.resolution))
            .show_ui(ui, |ui| {
                let choices = std::iter::once(Resolution::FollowWindow).chain(
                    FIXED_RESOLUTIONS
                        .iter()
                        .map(|&(width, height)| Resolution::Fixed { width, height }),
                );
                for choice in choices {
                    ui.selectable_value(&mut display.resolution, choice, resolution_label(choice));
                }
            })
            .response
            .on_hover_text(
                "Follow the window: the guest's desktop takes the size of the console \
                 as you resize it (with a virtio-gpu driver in the guest)",
            );
    });
}

/// One hard disk: its write cache (for a writable image) and the files
/// outside the VM's folder its image may open (vm.toml's `backing`).
fn disk_row(ui: &mut egui::Ui, disk: &mut Disk) {
    let name = disk.path.file_name().map_or_else(
        || disk.path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    ui.horizontal(|ui| {
        ui.label(format!("{name} write cache:"))
            .on_hover_text(disk.path.display().to_string());
        if disk.readonly {
            ui.label("none (read-only)");
        } else {
            ui.radio_value(&mut disk.cache, CacheMode::Writeback, WRITE_BACK)
                .on_hover_text("Fast: writes are durable when the guest flushes or the VM ends");
            ui.radio_value(&mut disk.cache, CacheMode::Writethrough, WRITE_THROUGH)
                .on_hover_text("Each write is durable before the guest hears it is done");
        }
    });
    for file in &disk.backing {
        ui.indent(("backing", &disk.path), |ui| {
            ui.label(format!("may use {}", file.display()));
        });
    }
}
