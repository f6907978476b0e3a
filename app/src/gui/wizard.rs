// SPDX-License-Identifier: Apache-2.0
//! The New VM wizard, a modal window in four pages: Source (ISO, existing
//! disk image, Linux kernel + initrd, or a new empty disk) → Profile
//! (preselected from the source) → Resources (name, RAM, vCPUs and new
//! disk, with sliders bounded by the host's caps) → Review, then Create:
//! the VM is made through `VmStore::create_with` on a background thread,
//! its new disk with `library::disk::create_image`, with a progress bar.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::Duration;

use eframe::egui::{self, SliderClamping};

use super::picker::{FilePicker, PickKind};
use super::settings_panel::{MIN_MEMORY_MIB, overcommit_warning};
use super::ui_map::Mapped as _;
use crate::library::caps::{CapError, Caps, Request, human_size};
use crate::library::config::{
    Adapter, Boot, Disk, DiskBus, DiskFormat, Firmware, Media, Network, ScaleMode, VmFile,
};
use crate::library::disk::create_image;
use crate::library::helpers::{Needs, install_advice};
use crate::library::iso_probe;
use crate::library::profiles::{self, NewVm, Profile, ProfileFirmware};
use crate::library::store::VmStore;

const GIB: u64 = 1 << 30;

/// What the new VM starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// An installer ISO, attached as a CD-ROM.
    Iso,
    /// An existing disk image, left where it is.
    Disk,
    /// A Linux kernel (and initrd) booted directly.
    Kernel,
    /// Only a new, empty disk.
    NewDisk,
}

impl SourceKind {
    /// The profile this source suggests.
    pub fn suggested_profile(self) -> &'static str {
        match self {
            SourceKind::Iso => "linux-iso",
            SourceKind::Kernel => "linux-kernel",
            SourceKind::Disk | SourceKind::NewDisk => "generic-bios",
        }
    }

    /// What a dropped file is, from its name.
    pub fn of_file(path: &Path) -> Self {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.ends_with(".iso") {
            SourceKind::Iso
        } else if name.starts_with("vmlinu") || name.starts_with("bzimage") {
            SourceKind::Kernel
        } else {
            SourceKind::Disk
        }
    }
}

/// Which of the wizard's files a row chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileSlot {
    Iso,
    Disk,
    Kernel,
    Initrd,
}

/// How soon a file dialog that returns nothing counts as one that never
/// opened (no desktop portal answered).
const NO_DIALOG: std::time::Duration = std::time::Duration::from_millis(300);

/// A wizard page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// Choose the source.
    Source,
    /// Choose the profile.
    Profile,
    /// Name, RAM, vCPUs, disk.
    Resources,
    /// The summary, and Create.
    Review,
}

impl Page {
    fn title(self) -> &'static str {
        match self {
            Page::Source => "Step 1 of 4: Source",
            Page::Profile => "Step 2 of 4: Profile",
            Page::Resources => "Step 3 of 4: Resources",
            Page::Review => "Step 4 of 4: Review",
        }
    }
}

/// What the wizard needs from the app.
pub struct WizardEnv<'a> {
    /// The host's caps.
    pub caps: &'a Caps,
    /// Where the VM is created.
    pub store: &'a VmStore,
    /// File dialogs.
    pub picker: &'a mut dyn FilePicker,
    /// The scale mode of the user's preferences.
    pub default_scale: ScaleMode,
}

/// How the wizard ended this frame, if it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still open.
    Open,
    /// The user cancelled.
    Cancelled,
    /// The VM with this id was created.
    Created(String),
}

/// A new disk to create in the VM's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NewDiskPlan {
    file: &'static str,
    bytes: u64,
    format: DiskFormat,
}

/// A creation running on its thread.
struct Creation {
    done: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
    result: Receiver<Result<String, String>>,
}

/// The wizard's state.
pub struct Wizard {
    page: Page,
    kind: SourceKind,
    iso: Option<PathBuf>,
    disk: Option<PathBuf>,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    cmdline: String,
    profiles: Vec<Profile>,
    profile: String,
    defaults_for: Option<String>,
    name: String,
    name_edited: bool,
    memory_mib: u64,
    vcpus: u32,
    new_disk: bool,
    disk_gib: u64,
    disk_format: DiskFormat,
    overcommit: bool,
    creating: Option<Creation>,
    error: Option<String>,
    /// Paths typed instead of picked, by what they are for.
    typed: std::collections::HashMap<PickKind, String>,
    /// Why a file could not be chosen (no file dialog, a typed path that
    /// is not a file).
    pick_note: Option<String>,
}

impl Default for Wizard {
    fn default() -> Self {
        Self::new()
    }
}

impl Wizard {
    /// A wizard on its first page, with an ISO as the source.
    pub fn new() -> Self {
        Self {
            page: Page::Source,
            kind: SourceKind::Iso,
            iso: None,
            disk: None,
            kernel: None,
            initrd: None,
            cmdline: "console=ttyS0".to_string(),
            profiles: profiles::all(),
            profile: SourceKind::Iso.suggested_profile().to_string(),
            defaults_for: None,
            name: String::new(),
            name_edited: false,
            memory_mib: 1024,
            vcpus: 1,
            new_disk: true,
            disk_gib: 16,
            disk_format: DiskFormat::Raw,
            overcommit: false,
            creating: None,
            error: None,
            typed: std::collections::HashMap::new(),
            pick_note: None,
        }
    }

    /// A wizard with `path` (a dropped file) as its source.
    pub fn with_file(path: PathBuf) -> Self {
        let mut wizard = Self::new();
        let kind = SourceKind::of_file(&path);
        wizard.set_kind(kind);
        match kind {
            SourceKind::Iso => {
                if let Some(profile) = iso_probe::probe(&path).profile() {
                    wizard.profile = profile.to_string();
                }
                wizard.iso = Some(path);
            }
            SourceKind::Kernel => wizard.kernel = Some(path),
            SourceKind::Disk | SourceKind::NewDisk => wizard.disk = Some(path),
        }
        wizard
    }

    /// The page shown.
    #[cfg(test)]
    pub fn page(&self) -> Page {
        self.page
    }

    /// The source chosen.
    #[cfg(test)]
    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// The profile chosen.
    #[cfg(test)]
    pub fn profile_id(&self) -> &str {
        &self.profile
    }

    fn set_kind(&mut self, kind: SourceKind) {
        self.kind = kind;
        self.profile = kind.suggested_profile().to_string();
        self.new_disk = matches!(kind, SourceKind::Iso | SourceKind::NewDisk);
    }

    fn profile(&self) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.id == self.profile)
    }

    /// Draws the wizard; says when it is done.
    pub fn show(&mut self, ctx: &egui::Context, env: &mut WizardEnv<'_>) -> Outcome {
        let mut outcome = Outcome::Open;
        if let Some(done) = self.poll_creation(ctx) {
            return done;
        }
        egui::Modal::new(egui::Id::unique("new-vm-wizard")).show(ctx, |ui| {
            ui.set_width(520.0);
            ui.heading("New VM");
            ui.label(self.page.title()).mapped(self.page.title());
            ui.separator();
            let ready = match self.page {
                Page::Source => self.source_page(ui, env.picker),
                Page::Profile => self.profile_page(ui, env.caps),
                Page::Resources => self.resources_page(ui, env.caps),
                Page::Review => self.review_page(ui, env.caps),
            };
            if let Some(err) = &self.error {
                ui.colored_label(ui.visuals().error_fg_color, err);
            }
            if let Some(creation) = &self.creating {
                let total = creation.total.load(Ordering::Relaxed).max(1);
                let done = creation.done.load(Ordering::Relaxed);
                ui.add(
                    egui::ProgressBar::new(done as f32 / total as f32)
                        .text("Creating the VM…")
                        .show_percentage(),
                );
            }
            ui.separator();
            let idle = self.creating.is_none();
            ui.horizontal(|ui| {
                if ui
                    .add_enabled(idle, egui::Button::new("Cancel"))
                    .mapped("Cancel")
                    .clicked()
                {
                    outcome = Outcome::Cancelled;
                }
                let can_back = idle && self.page != Page::Source;
                if ui
                    .add_enabled(can_back, egui::Button::new("Back"))
                    .mapped("Back")
                    .clicked()
                {
                    self.error = None;
                    self.page = match self.page {
                        Page::Source | Page::Profile => Page::Source,
                        Page::Resources => Page::Profile,
                        Page::Review => Page::Resources,
                    };
                }
                if self.page == Page::Review {
                    if ui
                        .add_enabled(idle && ready, egui::Button::new("Create"))
                        .mapped("Create")
                        .clicked()
                    {
                        self.start_creation(env);
                    }
                } else if ui
                    .add_enabled(ready, egui::Button::new("Next"))
                    .mapped("Next")
                    .clicked()
                {
                    self.next(env.caps);
                }
            });
        });
        outcome
    }

    fn next(&mut self, caps: &Caps) {
        self.error = None;
        self.page = match self.page {
            Page::Source => Page::Profile,
            Page::Profile => {
                self.apply_defaults(caps);
                Page::Resources
            }
            Page::Resources | Page::Review => Page::Review,
        };
    }

    /// The profile's defaults within the caps, once per chosen profile.
    fn apply_defaults(&mut self, caps: &Caps) {
        if !self.name_edited {
            self.name = self.default_name();
        }
        if self.defaults_for.as_deref() == Some(self.profile.as_str()) {
            return;
        }
        let Some(profile) = self.profile().cloned() else {
            return;
        };
        self.memory_mib = caps
            .memory_default_mib(profile.memory.recommended_mib)
            .max(MIN_MEMORY_MIB.min(caps.memory_max_mib(false)));
        self.vcpus = caps.vcpus_default(profile.vcpus.recommended);
        self.disk_gib = profile
            .disk
            .recommended_gib
            .min(caps.disk_max_bytes() / GIB)
            .max(1);
        self.overcommit = false;
        self.defaults_for = Some(profile.id);
    }

    fn default_name(&self) -> String {
        let file = match self.kind {
            SourceKind::Iso => self.iso.as_deref(),
            SourceKind::Disk => self.disk.as_deref(),
            SourceKind::Kernel => self.kernel.as_deref(),
            SourceKind::NewDisk => None,
        };
        file.and_then(Path::file_stem)
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "New VM".to_string())
    }

    fn slot(&mut self, slot: FileSlot) -> &mut Option<PathBuf> {
        match slot {
            FileSlot::Iso => &mut self.iso,
            FileSlot::Disk => &mut self.disk,
            FileSlot::Kernel => &mut self.kernel,
            FileSlot::Initrd => &mut self.initrd,
        }
    }

    /// A file's row: the desktop's dialog, and a path field for when no
    /// dialog answers (no XDG desktop portal) or the user knows the path.
    fn file_row(
        &mut self,
        ui: &mut egui::Ui,
        picker: &mut dyn FilePicker,
        kind: PickKind,
        button: &str,
        slot: FileSlot,
    ) {
        ui.horizontal(|ui| {
            if ui.button(button).mapped(button).clicked() {
                let asked = std::time::Instant::now();
                match picker.pick(kind) {
                    Some(chosen) => {
                        *self.slot(slot) = Some(chosen);
                        self.pick_note = None;
                    }
                    None if asked.elapsed() < NO_DIALOG => {
                        self.pick_note = Some(
                            "No file dialog opened (no desktop portal answered): type the \
                             file's path below instead."
                                .to_string(),
                        );
                    }
                    None => {}
                }
            }
            match self.slot(slot) {
                Some(p) => {
                    let shown = p.display().to_string();
                    ui.label(&shown).mapped(&shown)
                }
                None => ui.weak("No file chosen"),
            };
        });
        ui.horizontal(|ui| {
            let label = ui.label("or its path:");
            let draft = self.typed.entry(kind).or_default();
            let edit = ui
                .text_edit_singleline(draft)
                .labelled_by(label.id)
                .mapped("or its path:");
            let entered = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            let typed = PathBuf::from(draft.trim());
            let use_it = format!("Use path ({})", kind.title().trim_start_matches("Choose "));
            if (ui.button(&use_it).mapped(&use_it).clicked() || entered)
                && !typed.as_os_str().is_empty()
            {
                if typed.is_file() {
                    *self.slot(slot) = Some(typed);
                    self.pick_note = None;
                } else {
                    self.pick_note = Some(format!("{} is not a file", typed.display()));
                }
            }
        });
    }

    fn source_page(&mut self, ui: &mut egui::Ui, picker: &mut dyn FilePicker) -> bool {
        let before = self.kind;
        let mut kind = self.kind;
        for (value, label) in [
            (SourceKind::Iso, "ISO image (install from a CD image)"),
            (SourceKind::Disk, "Existing disk image (raw or qcow2)"),
            (SourceKind::Kernel, "Linux kernel and initrd"),
            (SourceKind::NewDisk, "New empty disk"),
        ] {
            ui.radio_value(&mut kind, value, label).mapped(label);
        }
        if kind != before {
            self.set_kind(kind);
        }
        ui.separator();
        if let Some(note) = &self.pick_note {
            ui.colored_label(ui.visuals().warn_fg_color, note)
                .mapped(note);
        }
        match self.kind {
            SourceKind::Iso => {
                let before = self.iso.clone();
                self.file_row(ui, picker, PickKind::Iso, "Choose ISO…", FileSlot::Iso);
                // Look inside a newly chosen ISO for the profile to offer.
                if self.iso != before
                    && let Some(iso) = &self.iso
                {
                    self.profile = iso_probe::probe(iso)
                        .profile()
                        .unwrap_or(SourceKind::Iso.suggested_profile())
                        .to_string();
                }
                self.iso.is_some()
            }
            SourceKind::Disk => {
                self.file_row(
                    ui,
                    picker,
                    PickKind::DiskImage,
                    "Choose disk image…",
                    FileSlot::Disk,
                );
                self.disk.is_some()
            }
            SourceKind::Kernel => {
                self.file_row(
                    ui,
                    picker,
                    PickKind::Kernel,
                    "Choose kernel…",
                    FileSlot::Kernel,
                );
                self.file_row(
                    ui,
                    picker,
                    PickKind::Initrd,
                    "Choose initrd…",
                    FileSlot::Initrd,
                );
                ui.horizontal(|ui| {
                    let label = ui.label("Kernel command line:");
                    ui.text_edit_singleline(&mut self.cmdline)
                        .labelled_by(label.id);
                });
                self.kernel.is_some()
            }
            SourceKind::NewDisk => {
                ui.label(
                    "A blank disk is made for the VM; you choose its size on the \
                     Resources page.",
                );
                true
            }
        }
    }

    fn profile_page(&mut self, ui: &mut egui::Ui, caps: &Caps) -> bool {
        for profile in &self.profiles {
            ui.radio_value(&mut self.profile, profile.id.clone(), &profile.name)
                .mapped(&profile.name);
            ui.indent(&profile.id, |ui| {
                ui.small(&profile.description);
            });
        }
        let refusal = self.profile_refusal();
        if let Some(why) = &refusal {
            ui.colored_label(ui.visuals().error_fg_color, why);
        }
        self.helpers_warning(ui, caps);
        refusal.is_none()
    }

    /// Says which helper files the VM being made needs and this host
    /// lacks, with the packages to install (it can be made; it will not
    /// start until they are there).
    fn helpers_warning(&self, ui: &mut egui::Ui, caps: &Caps) {
        let Some(profile) = self.profile() else {
            return;
        };
        let needs = Needs {
            bios: profile.firmware == ProfileFirmware::Seabios && self.kind != SourceKind::Kernel,
            std_vga: profile.display.adapter == Adapter::Vga,
            network: profile.devices.network == Network::Nat,
        };
        if let Some(advice) = install_advice(&caps.helpers.missing_for(needs)) {
            let text = format!("This VM will not start yet: {advice}.");
            ui.colored_label(ui.visuals().warn_fg_color, &text)
                .mapped(&text);
        }
    }

    fn profile_refusal(&self) -> Option<String> {
        let Some(profile) = self.profile() else {
            return Some("Choose a profile".to_string());
        };
        (profile.firmware == ProfileFirmware::None && self.kind != SourceKind::Kernel).then(|| {
            format!(
                "{} boots a Linux kernel directly: go Back and choose a Linux kernel \
                 as the source, or choose another profile",
                profile.name
            )
        })
    }

    fn resources_page(&mut self, ui: &mut egui::Ui, caps: &Caps) -> bool {
        ui.horizontal(|ui| {
            let label = ui.label("Name:");
            if ui
                .text_edit_singleline(&mut self.name)
                .labelled_by(label.id)
                .changed()
            {
                self.name_edited = true;
            }
        });
        let memory_max = caps.memory_max_mib(self.overcommit);
        ui.add(
            egui::Slider::new(&mut self.memory_mib, MIN_MEMORY_MIB..=memory_max)
                .logarithmic(true)
                .clamping(SliderClamping::Edits)
                .suffix(" MiB")
                .text("Memory"),
        );
        if self.overcommit {
            ui.colored_label(ui.visuals().warn_fg_color, overcommit_warning(caps));
        } else {
            ui.small(format!(
                "At most {memory_max} MiB: half of this host's {} MiB of RAM \
                 (over-commit allows up to {} MiB).",
                caps.host_memory_mib(),
                caps.memory_max_mib(true)
            ));
        }
        let was_on = self.overcommit;
        ui.checkbox(
            &mut self.overcommit,
            "Allow over-commit (more than half of the host's RAM)",
        );
        if was_on && !self.overcommit {
            self.memory_mib = self.memory_mib.min(caps.memory_max_mib(false));
        }
        if let Some(profile) = self.profile()
            && self.memory_mib < profile.memory.minimum_mib
        {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!(
                    "{} MiB is below the {} MiB that {} needs.",
                    self.memory_mib, profile.memory.minimum_mib, profile.name
                ),
            );
        }
        ui.add(
            egui::Slider::new(&mut self.vcpus, 1..=caps.vcpus_max())
                .clamping(SliderClamping::Edits)
                .text("vCPUs"),
        );
        ui.small(format!("This host has {} CPUs.", caps.vcpus_max()));
        self.disk_controls(ui, caps);

        let refusal = self.refusal(caps);
        if let Some(why) = &refusal {
            ui.colored_label(ui.visuals().error_fg_color, why);
        }
        refusal.is_none()
    }

    fn disk_controls(&mut self, ui: &mut egui::Ui, caps: &Caps) {
        if self.kind != SourceKind::NewDisk {
            ui.checkbox(&mut self.new_disk, "Create a new disk");
        }
        if !self.wants_new_disk() {
            return;
        }
        let max_gib = caps.disk_max_bytes() / GIB;
        if max_gib >= 1 {
            ui.add(
                egui::Slider::new(&mut self.disk_gib, 1..=max_gib)
                    .clamping(SliderClamping::Edits)
                    .suffix(" GiB")
                    .text("Disk size"),
            );
        }
        ui.small(format!(
            "{} free where the VM goes. The image is sparse: it grows as the guest writes.",
            human_size(caps.disk_max_bytes())
        ));
        ui.horizontal(|ui| {
            ui.label("Format:");
            ui.radio_value(&mut self.disk_format, DiskFormat::Raw, "raw");
            ui.radio_value(&mut self.disk_format, DiskFormat::Qcow2, "qcow2");
        });
    }

    fn wants_new_disk(&self) -> bool {
        self.kind == SourceKind::NewDisk || self.new_disk
    }

    /// Why the chosen resources cannot be used, if they cannot.
    fn refusal(&self, caps: &Caps) -> Option<String> {
        if self.name.trim().is_empty() {
            return Some("Give the VM a name".to_string());
        }
        let request = Request {
            memory_mib: self.memory_mib,
            vcpus: self.vcpus,
            new_disk_bytes: if self.wants_new_disk() {
                self.disk_gib.saturating_mul(GIB)
            } else {
                0
            },
        };
        caps.check(&request, self.overcommit)
            .err()
            .map(|e: CapError| e.to_string())
    }

    fn review_page(&mut self, ui: &mut egui::Ui, caps: &Caps) -> bool {
        let source = match self.kind {
            SourceKind::Iso => format!("ISO {}", shown(self.iso.as_deref())),
            SourceKind::Disk => format!("disk image {}", shown(self.disk.as_deref())),
            SourceKind::Kernel => format!(
                "Linux kernel {}{}, command line \"{}\"",
                shown(self.kernel.as_deref()),
                self.initrd
                    .as_deref()
                    .map(|p| format!(" with initrd {}", p.display()))
                    .unwrap_or_default(),
                self.cmdline
            ),
            SourceKind::NewDisk => "a new empty disk".to_string(),
        };
        let profile = self.profile().map_or("?", |p| p.name.as_str()).to_string();
        let controller = match self.profile().map(|p| p.devices.disk_bus) {
            Some(DiskBus::Ide) => "IDE (any PC system)",
            Some(DiskBus::Virtio) => "virtio (needs virtio drivers)",
            None => "?",
        }
        .to_string();
        let disk = if self.wants_new_disk() {
            let format = match self.disk_format {
                DiskFormat::Raw => "raw",
                DiskFormat::Qcow2 => "qcow2",
            };
            format!("{} GiB, {format}", self.disk_gib)
        } else {
            "none".to_string()
        };
        egui::Grid::new("wizard-review")
            .num_columns(2)
            .show(ui, |ui| {
                for (key, value) in [
                    ("Name", self.name.trim().to_string()),
                    ("Profile", profile),
                    ("Source", source),
                    ("Memory", format!("{} MiB", self.memory_mib)),
                    ("vCPUs", self.vcpus.to_string()),
                    ("New disk", disk),
                    ("Disks on", controller),
                    (
                        "Over-commit",
                        if self.overcommit { "allowed" } else { "off" }.to_string(),
                    ),
                ] {
                    ui.label(key);
                    ui.label(value);
                    ui.end_row();
                }
            });
        self.helpers_warning(ui, caps);
        true
    }

    /// The settings of the new VM and the disk to make, or why not.
    fn plan(&self, default_scale: ScaleMode) -> Result<(VmFile, Option<NewDiskPlan>), String> {
        let profile = self
            .profile()
            .ok_or_else(|| "Choose a profile".to_string())?;
        if let Some(why) = self.profile_refusal() {
            return Err(why);
        }
        let chosen = |what: &str, path: Option<&Path>| -> Result<PathBuf, String> {
            let path = path.ok_or_else(|| format!("Choose the {what} first"))?;
            if !path.is_file() {
                return Err(format!("The {what} {} is not a file", path.display()));
            }
            Ok(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
        };
        let boot = match self.kind {
            SourceKind::Kernel => Boot::Kernel {
                kernel: chosen("kernel", self.kernel.as_deref())?,
                initrd: self
                    .initrd
                    .as_deref()
                    .map(|p| chosen("initrd", Some(p)))
                    .transpose()?,
                cmdline: self.cmdline.clone(),
            },
            _ => Boot::Firmware(Firmware::Seabios),
        };
        let new_disk = self.wants_new_disk().then(|| NewDiskPlan {
            file: match self.disk_format {
                DiskFormat::Raw => "disk.img",
                DiskFormat::Qcow2 => "disk.qcow2",
            },
            bytes: self.disk_gib.saturating_mul(GIB),
            format: self.disk_format,
        });
        // The hard disk first: SeaBIOS skips it while it is empty and boots
        // the ISO; once installed, the disk boots.
        let mut disks = Vec::new();
        if let Some(plan) = new_disk {
            disks.push(Disk {
                path: PathBuf::from(plan.file),
                format: plan.format,
                readonly: false,
                media: Media::Disk,
                bus: DiskBus::default(),
                ejected: false,
                backing: Vec::new(),
                cache: Default::default(),
            });
        }
        if self.kind == SourceKind::Disk {
            let path = chosen("disk image", self.disk.as_deref())?;
            disks.push(Disk::existing(path, Vec::new())?);
        }
        if self.kind == SourceKind::Iso {
            disks.push(Disk {
                path: chosen("ISO image", self.iso.as_deref())?,
                format: DiskFormat::Raw,
                readonly: true,
                media: Media::Cdrom,
                bus: DiskBus::default(),
                ejected: false,
                backing: Vec::new(),
                cache: Default::default(),
            });
        }
        let vm = profile.new_vm(NewVm {
            name: self.name.trim().to_string(),
            memory_mib: self.memory_mib,
            vcpus: self.vcpus,
            boot,
            disks,
            allow_overcommit: self.overcommit,
            scale: Some(default_scale).filter(|s| *s != ScaleMode::default()),
        });
        Ok((vm, new_disk))
    }

    fn start_creation(&mut self, env: &WizardEnv<'_>) {
        if let Some(why) = self.refusal(env.caps) {
            self.error = Some(why);
            return;
        }
        let (vm, new_disk) = match self.plan(env.default_scale) {
            Ok(plan) => plan,
            Err(why) => {
                self.error = Some(why);
                return;
            }
        };
        self.error = None;
        let done = Arc::new(AtomicU64::new(0));
        let total = Arc::new(AtomicU64::new(1));
        let (tx, rx) = mpsc::channel();
        let store = env.store.clone();
        let (done_t, total_t) = (Arc::clone(&done), Arc::clone(&total));
        std::thread::spawn(move || {
            let result = store
                .create_with(&vm, |dir| match new_disk {
                    Some(plan) => {
                        create_image(&dir.join(plan.file), plan.bytes, plan.format, |d, t| {
                            total_t.store(t.max(1), Ordering::Relaxed);
                            done_t.store(d, Ordering::Relaxed);
                        })
                        .map_err(|e| e.to_string())
                    }
                    None => Ok(()),
                })
                .map_err(|e| e.to_string());
            let _ = tx.send(result);
        });
        self.creating = Some(Creation {
            done,
            total,
            result: rx,
        });
    }

    /// Checks on a running creation; `Some` when the wizard is done.
    fn poll_creation(&mut self, ctx: &egui::Context) -> Option<Outcome> {
        let creation = self.creating.as_ref()?;
        match creation.result.try_recv() {
            Ok(Ok(id)) => {
                self.creating = None;
                Some(Outcome::Created(id))
            }
            Ok(Err(why)) => {
                self.creating = None;
                self.error = Some(format!("The VM was not created: {why}"));
                None
            }
            Err(TryRecvError::Empty) => {
                ctx.request_repaint_after(Duration::from_millis(30));
                None
            }
            Err(TryRecvError::Disconnected) => {
                self.creating = None;
                self.error = Some("The VM was not created: creation stopped".to_string());
                None
            }
        }
    }
}

fn shown(path: Option<&Path>) -> String {
    path.map_or_else(|| "(none)".to_string(), |p| p.display().to_string())
}
