// SPDX-License-Identifier: Apache-2.0
//! The Nestbox window: toolbar on top, the library on the left, the
//! selected VM on the right (its screen while it runs, its details and
//! settings when not), a status line with the budget bar at the bottom,
//! and the modal wizard and start confirmation above it all.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use eframe::egui;

use super::budget::{self, Answer, PendingStart};
use super::console_panel::{ConsolePanel, ConsoleVm, ReleaseChord};
use super::details_panel;
use super::library_panel::{self, Row, RowRequest};
use super::library_watch::LibraryWatch;
use super::live_snapshot::{LiveSnapshot, Next};
use super::picker::{FilePicker, PickKind, PortalPicker};
use super::settings_panel::SettingsEditor;
use super::snapshots_panel::SnapshotsPanel;
use super::status::VmStatus;
use super::thumbnail::Thumbnails;
use super::toolbar::{self, Action};
use super::ui_map::{Mapped as _, UiMapFile};
use super::wizard::{Outcome, Wizard, WizardEnv};
use crate::library::caps::{Caps, Request, free_space};
use crate::library::config::{Adapter, Resolution};
use crate::library::helpers::install_advice;
use crate::library::prefs::{LoadedPrefs, Preferences};
use crate::library::store::{VmEntry, VmStore};
use crate::worker::api::{RunState, VmBackend, VmCommand, VmEvent};
use crate::worker::discs::change_disc;

/// How often the library folder and the thumbnails are looked at again
/// while the app draws frames anyway.
const REFRESH_SECONDS: f64 = 3.0;

/// Without a [`LibraryWatch`] (tests): how often the backend is asked for
/// news while some VM is live (states, the budget).
const LIVE_POLL: Duration = Duration::from_millis(1000);

/// The desktop app's state.
pub struct NestboxApp {
    store: VmStore,
    prefs: Preferences,
    prefs_error: Option<String>,
    /// Why guests will be slow on this host (KVM without VT-x/AMD-V),
    /// shown once until the user dismisses it.
    slow_kvm: Option<&'static str>,
    /// Which helper files VMs need are not installed and how to install
    /// them, shown until the user dismisses it.
    missing_helpers: Option<String>,
    release: ReleaseChord,
    caps: Caps,
    /// Whether `caps` are this host's (then the free disk space is read
    /// again each time the wizard opens), not a test's.
    host_caps: bool,
    backend: Box<dyn VmBackend>,
    picker: Box<dyn FilePicker>,
    entries: Vec<VmEntry>,
    list_error: Option<String>,
    last_refresh: Option<f64>,
    selected: Option<String>,
    /// Why the last start of a VM failed, by id (cleared by a good start).
    problems: HashMap<String, String>,
    /// The last error the backend reported for a VM, by id.
    notices: HashMap<String, String>,
    wizard: Option<Wizard>,
    editor: Option<SettingsEditor>,
    /// The snapshot section of the selected VM, while it is not running.
    snapshots: Option<SnapshotsPanel>,
    /// A snapshot of a running VM under way.
    live_snapshot: Option<LiveSnapshot>,
    /// What went well for a VM, by id, said beside its notices.
    said: HashMap<String, String>,
    console: ConsolePanel,
    thumbnails: Thumbnails,
    pending: Option<PendingStart>,
    /// The VM whose Force off waits for the user to confirm it.
    confirm_force_off: Option<String>,
    /// The VM whose deletion waits for the user to confirm it.
    confirm_delete: Option<String>,
    /// Where the widgets' rectangles go, for end-to-end tests.
    ui_map: Option<UiMapFile>,
    /// Whether to watch the VM folder and the workers for changes (the
    /// real app) rather than look again on a timer (tests).
    watch_wanted: bool,
    watch: Option<LibraryWatch>,
    /// The watch's change count at the last reload.
    watch_seen: u64,
    /// The watch's change count at the last backend rescan.
    rescan_seen: u64,
    /// When Shut down was pressed (app time, seconds), by VM id, while
    /// the guest is still up.
    shutting_down: HashMap<String, f64>,
    /// How long a guest may take to shut down before Force off is
    /// offered, in seconds.
    pub(crate) shutdown_patience: f64,
}

/// How long a guest may take to shut down before Force off is offered
/// (GNOME Boxes and VMware wait about as long).
pub const SHUTDOWN_PATIENCE_SECS: f64 = 30.0;

impl NestboxApp {
    /// An app over `store` with these preferences, host caps, backend and
    /// file picker.
    pub fn new(
        store: VmStore,
        prefs: Preferences,
        caps: Caps,
        backend: Box<dyn VmBackend>,
        picker: Box<dyn FilePicker>,
    ) -> Self {
        let release = ReleaseChord::parse(&prefs.release_chord).unwrap_or_default();
        let missing_helpers = install_advice(&caps.helpers.missing());
        let mut app = Self {
            store,
            prefs,
            prefs_error: None,
            slow_kvm: None,
            missing_helpers,
            release,
            caps,
            host_caps: false,
            backend,
            picker,
            entries: Vec::new(),
            list_error: None,
            last_refresh: None,
            selected: None,
            problems: HashMap::new(),
            notices: HashMap::new(),
            wizard: None,
            editor: None,
            snapshots: None,
            live_snapshot: None,
            said: HashMap::new(),
            console: ConsolePanel::default(),
            thumbnails: Thumbnails::default(),
            pending: None,
            confirm_force_off: None,
            confirm_delete: None,
            ui_map: None,
            watch_wanted: false,
            watch: None,
            watch_seen: 0,
            rescan_seen: 0,
            shutting_down: HashMap::new(),
            shutdown_patience: SHUTDOWN_PATIENCE_SECS,
        };
        app.reload();
        app
    }

    /// The app for this user: their preferences and VM folder, this host's
    /// caps, the desktop's file dialogs.
    pub fn for_user(backend: Box<dyn VmBackend>) -> anyhow::Result<Self> {
        let LoadedPrefs { prefs, error } = Preferences::load_default();
        let store = VmStore::from_prefs(&prefs)?;
        let caps = Caps::detect(store.root()).context("Cannot read the host's resources")?;
        let mut app = Self::new(store, prefs, caps, backend, Box::new(PortalPicker));
        app.prefs_error = error.map(|e| format!("Using default preferences: {e}"));
        app.slow_kvm = engine::host::Acceleration::detect().warning();
        app.host_caps = true;
        app.ui_map = UiMapFile::from_env();
        app.watch_wanted = true;
        Ok(app)
    }

    /// The size of the last-screen texture of VM `id`, if one is loaded.
    #[cfg(test)]
    pub fn last_screen_size(&self, id: &str) -> Option<[usize; 2]> {
        self.thumbnails.last_screen(id).map(|t| t.size())
    }

    /// The app on a host whose KVM is not hardware-accelerated.
    #[cfg(test)]
    pub fn with_slow_kvm(mut self) -> Self {
        self.slow_kvm = engine::host::Acceleration::Software.warning();
        self
    }

    /// Writes the UI map to `path` after each frame (see `ui_map`).
    #[cfg(test)]
    pub fn with_ui_map(mut self, path: PathBuf) -> Self {
        self.ui_map = Some(UiMapFile::new(path));
        self
    }

    /// The VM selected in the library.
    #[cfg(test)]
    pub fn selected(&self) -> Option<&str> {
        self.selected.as_deref()
    }

    /// The New VM wizard, while it is open.
    #[cfg(test)]
    pub fn wizard(&self) -> Option<&Wizard> {
        self.wizard.as_ref()
    }

    /// Reads the VM folder again.
    pub fn reload(&mut self) {
        match self.store.list() {
            Ok(entries) => {
                self.entries = entries;
                self.list_error = None;
            }
            Err(err) => self.list_error = Some(err.to_string()),
        }
        if let Some(id) = &self.selected
            && !self.entries.iter().any(|e| &e.id == id)
        {
            self.selected = None;
        }
        if self.selected.is_none() {
            self.selected = self.entries.first().map(|e| e.id.clone());
        }
    }

    fn entry(&self, id: &str) -> Option<&VmEntry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// The state shown for VM `id`.
    fn status(&self, entry: &VmEntry) -> VmStatus {
        if entry.state.is_err() {
            return VmStatus::NeedsAttention;
        }
        let state = self.backend.state(&entry.id);
        match (&state, self.problems.get(&entry.id)) {
            (RunState::Stopped, Some(problem)) => VmStatus::StartFailed(problem.clone()),
            _ => VmStatus::Run(state),
        }
    }

    fn selected_status(&self) -> Option<VmStatus> {
        let entry = self.entry(self.selected.as_deref()?)?;
        Some(self.status(entry))
    }

    /// Draws one frame.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.start_watch(&ctx);
        let changes = self.watch.as_ref().map_or(0, LibraryWatch::changes);
        if changes != self.rescan_seen {
            self.rescan_seen = changes;
            self.backend.rescan();
        }
        self.poll_backend();
        let now = ctx.input(|i| i.time);
        // Changes seen while the wizard is open wait for it to close.
        let changed_on_disk = changes != self.watch_seen && self.wizard.is_none();
        if changed_on_disk || self.last_refresh.is_none_or(|t| now - t >= REFRESH_SECONDS) {
            self.last_refresh = Some(now);
            if self.wizard.is_none() {
                self.watch_seen = changes;
                self.reload();
            }
            for entry in &self.entries {
                self.thumbnails.refresh(&ctx, &entry.id, &entry.dir);
            }
            let ids: Vec<String> = self.entries.iter().map(|e| e.id.clone()).collect();
            self.thumbnails.retain(|id| ids.iter().any(|i| i == id));
        }
        // The watch and the backend's waker say when to look again;
        // without them, look on a timer.
        if self.watch.is_none() {
            ctx.request_repaint_after(Duration::from_secs_f64(REFRESH_SECONDS));
            if self
                .entries
                .iter()
                .any(|e| e.state.is_ok() && self.backend.state(&e.id).is_live())
            {
                ctx.request_repaint_after(LIVE_POLL);
            }
        }
        self.take_dropped_files(&ctx);

        let modal_open = self.wizard.is_some() || self.pending.is_some();
        if !modal_open && !self.console.has_focus() {
            for action in toolbar::pressed_shortcuts(&ctx) {
                if action.enabled(self.selected_status().as_ref()) {
                    self.perform(&ctx, action);
                }
            }
        }

        let status = self.selected_status();
        let cd: toolbar::CdState = self
            .selected
            .as_deref()
            .and_then(|id| self.entry(id))
            .and_then(|entry| entry.state.as_ref().ok())
            .and_then(|vm| {
                let disk = vm.disks.get(*vm.cd_drives().first()?)?;
                let name = disk.path.file_name()?.to_string_lossy().into_owned();
                Some((!disk.ejected).then_some(name))
            });
        let clicked = egui::Panel::top("toolbar")
            .show(ui, |ui| toolbar::show(ui, status.as_ref(), &cd))
            .inner;
        if let Some(action) = clicked {
            self.perform(&ctx, action);
        }
        if let Some(warning) = self.slow_kvm {
            egui::Panel::top("slow-kvm").show(ui, |ui| {
                ui.horizontal_wrapped(|ui| {
                    ui.colored_label(
                        ui.visuals().warn_fg_color,
                        format!("Slow VMs on this computer: {warning}."),
                    );
                    if ui.button("Got it").clicked() {
                        self.slow_kvm = None;
                    }
                });
            });
        }
        if let Some(advice) = &self.missing_helpers {
            let mut dismissed = false;
            egui::Panel::top("missing-helpers").show(ui, |ui| {
                ui.horizontal_wrapped(|ui| {
                    let text = format!("Some VMs will not start: {advice}.");
                    ui.colored_label(ui.visuals().warn_fg_color, &text)
                        .mapped(&text);
                    dismissed = ui.button("Dismiss").mapped("Dismiss").clicked();
                });
            });
            if dismissed {
                self.missing_helpers = None;
            }
        }
        egui::Panel::bottom("status").show(ui, |ui| self.status_line(ui));
        egui::Panel::left("library")
            .default_size(280.0)
            .show(ui, |ui| {
                let rows: Vec<Row<'_>> = self
                    .entries
                    .iter()
                    .map(|entry| Row {
                        entry,
                        status: self.status(entry),
                    })
                    .collect();
                let mut selected = self.selected.clone();
                let request = library_panel::show(
                    ui,
                    &rows,
                    &self.thumbnails,
                    &mut selected,
                    self.list_error.as_deref(),
                );
                self.selected = selected;
                if let Some(request) = request {
                    self.row_request(ui.ctx(), request);
                }
            });
        egui::CentralPanel::default().show(ui, |ui| self.right_side(ui));

        self.show_modals(&ctx);
        if let Some(map) = &mut self.ui_map {
            map.end_frame(&ctx);
        }
    }

    /// Starts the library watch and the backend's waker (once, in the
    /// real app).
    fn start_watch(&mut self, ctx: &egui::Context) {
        if !self.watch_wanted || self.watch.is_some() {
            return;
        }
        let wake = {
            let ctx = ctx.clone();
            move || display::watch::request_one_pass(&ctx)
        };
        match LibraryWatch::spawn(self.store.root().to_path_buf(), wake.clone()) {
            Ok(watch) => {
                self.backend.set_waker(std::sync::Arc::new(wake));
                self.watch = Some(watch);
            }
            Err(e) => {
                // Fall back to looking on a timer.
                log::warn!("cannot watch the VM folder: {e}");
                self.watch_wanted = false;
            }
        }
    }

    /// Moves a snapshot of a running VM on by one step.
    fn advance_live_snapshot(&mut self, ctx: &egui::Context) {
        let Some(live) = &mut self.live_snapshot else {
            return;
        };
        let id = live.vm().to_string();
        let state = self.backend.state(&id);
        match live.advance(ctx, &state) {
            Next::Wait => {}
            Next::Cancelled => self.live_snapshot = None,
            Next::Suspend => {
                self.said.remove(&id);
                if let Err(err) = self.backend.command(&id, VmCommand::Suspend) {
                    self.live_snapshot = None;
                    self.notices.insert(id, err);
                }
            }
            Next::Resume(result) => {
                self.live_snapshot = None;
                match result {
                    Ok(text) => {
                        self.notices.remove(&id);
                        self.said.insert(id.clone(), text);
                    }
                    Err(text) => {
                        self.notices.insert(id.clone(), text);
                    }
                }
                self.reload();
                if self.backend.state(&id) == RunState::Suspended {
                    self.request_start(&id);
                }
            }
        }
    }

    fn poll_backend(&mut self) {
        for (id, event) in self.backend.poll() {
            match event {
                VmEvent::State(RunState::Running) => {
                    self.problems.remove(&id);
                }
                VmEvent::State(_) => {}
                VmEvent::Error(message) => {
                    if self
                        .live_snapshot
                        .as_ref()
                        .is_some_and(|s| s.vm() == id && s.suspending())
                    {
                        // The suspend failed: the VM runs on, no snapshot.
                        self.live_snapshot = None;
                    }
                    self.notices.insert(id, message);
                }
            }
        }
    }

    fn take_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        if let Some(path) = dropped.into_iter().next()
            && self.wizard.is_none()
        {
            self.open_wizard(Wizard::with_file(path));
        }
    }

    fn status_line(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let running = self.backend.running_memory_mib();
            budget::bar(ui, running, self.caps.host_memory_mib());
            ui.separator();
            if self.console.has_focus() {
                let hint = format!(
                    "Press {} to release the keyboard and mouse",
                    self.release.label()
                );
                ui.strong(&hint).mapped(&hint);
            } else if self.selected_status().is_some_and(|s| s.is_live()) {
                ui.label("Click the screen to type into the VM");
            }
            self.shutdown_progress(ui);
            if let Some(id) = &self.selected
                && let Some(notice) = self.notices.get(id)
            {
                ui.colored_label(ui.visuals().error_fg_color, notice);
            }
            if let Some(id) = &self.selected
                && let Some(said) = self.said.get(id)
            {
                ui.label(said).mapped(said);
            }
            if let Some(err) = &self.prefs_error {
                ui.colored_label(ui.visuals().warn_fg_color, err);
            }
        });
    }

    /// "Shutting down…" while the selected VM's guest answers the power
    /// button; once it has taken longer than the patience allows, the
    /// offer to force it off.
    fn shutdown_progress(&mut self, ui: &mut egui::Ui) {
        let live: Vec<String> = self
            .shutting_down
            .keys()
            .filter(|id| self.backend.state(id).is_live())
            .cloned()
            .collect();
        self.shutting_down.retain(|id, _| live.contains(id));
        let Some(id) = self.selected.clone() else {
            return;
        };
        let Some(&pressed) = self.shutting_down.get(&id) else {
            return;
        };
        let waited = ui.input(|i| i.time) - pressed;
        if waited < self.shutdown_patience {
            let text = "Shutting down…";
            ui.label(text).mapped(text);
            // Look again when the patience runs out.
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_secs_f64(
                    (self.shutdown_patience - waited).max(0.0),
                ));
            return;
        }
        ui.colored_label(
            ui.visuals().warn_fg_color,
            format!("The guest has not shut down after {waited:.0} s."),
        );
        let force = "Force it off";
        if ui
            .button(force)
            .on_hover_text("Pull the plug: what the guest has not saved is lost")
            .mapped(force)
            .clicked()
        {
            match self.backend.command(&id, VmCommand::Kill) {
                Ok(()) => {
                    self.shutting_down.remove(&id);
                }
                Err(err) => {
                    self.notices.insert(id, err);
                }
            }
        }
    }

    fn right_side(&mut self, ui: &mut egui::Ui) {
        let Some(id) = self.selected.clone() else {
            self.console.clear(ui.ctx());
            ui.label("Select a VM on the left, or press New to make one.");
            return;
        };
        let Some(entry) = self.entry(&id).cloned() else {
            return;
        };
        let status = self.status(&entry);
        if status.is_live()
            && let Ok(vm) = &entry.state
        {
            let state = status.run_state().unwrap_or(RunState::Running);
            let screen = ConsoleVm {
                id: &id,
                name: &vm.name,
                state: &state,
                scale: vm.display.scale,
                sound: vm.sound,
                profile: &vm.profile,
                follow_window: vm.display.adapter == Adapter::VirtioVga
                    && vm.display.resolution == Resolution::FollowWindow,
            };
            let changed = self
                .console
                .show(ui, &screen, self.backend.as_mut(), &self.release);
            if let Some(sound) = changed {
                // Kept for the next start too.
                let mut saved = vm.clone();
                saved.sound = sound;
                match self.store.update(&id, &saved) {
                    Ok(()) => self.reload(),
                    Err(err) => {
                        self.notices
                            .insert(id.clone(), format!("Sound setting not saved: {err}"));
                    }
                }
            }
            return;
        }
        self.console.clear(ui.ctx());
        if let Ok(vm) = &entry.state
            && !self
                .editor
                .as_ref()
                .is_some_and(|e| e.id == id && (e.is_dirty() || e.is_for(&id, vm)))
        {
            self.editor = Some(SettingsEditor::new(&id, vm));
        }
        let failed = matches!(status, VmStatus::Run(RunState::Failed(_)));
        if failed {
            self.thumbnails
                .refresh_last_screen(ui.ctx(), &id, &entry.dir);
        }
        let last_screen = failed.then(|| self.thumbnails.last_screen(&id)).flatten();
        let editor = self.editor.as_mut().filter(|e| e.id == id);
        if entry.state.is_ok() && self.snapshots.as_ref().is_none_or(|p| p.vm() != id) {
            self.snapshots = Some(SnapshotsPanel::new(&id, entry.dir.clone()));
        }
        let snapshots = self
            .snapshots
            .as_mut()
            .filter(|p| p.vm() == id && entry.state.is_ok());
        let outcome = egui::ScrollArea::vertical()
            .show(ui, |ui| {
                details_panel::show(
                    ui,
                    &entry,
                    &status,
                    editor,
                    snapshots,
                    &self.caps,
                    last_screen,
                )
            })
            .inner;
        if outcome.save {
            self.save_settings();
        }
        if outcome.snapshot_done {
            // The settings and the state may be the snapshot's now.
            self.editor = None;
            self.reload();
        }
    }

    fn save_settings(&mut self) {
        let Some(editor) = &mut self.editor else {
            return;
        };
        if let Some(why) = editor.refusal(&self.caps) {
            editor.message = Some(Err(why));
            return;
        }
        match self.store.update(&editor.id, editor.edited()) {
            Ok(()) => {
                editor.saved();
                self.reload();
            }
            Err(err) => editor.message = Some(Err(format!("Not saved: {err}"))),
        }
    }

    fn open_wizard(&mut self, wizard: Wizard) {
        if self.host_caps {
            match free_space(self.store.root()) {
                Ok(free) => self.caps.free_disk_bytes = free,
                Err(err) => log::warn!("Cannot read the free space of the VM folder: {err}"),
            }
        }
        self.wizard = Some(wizard);
    }

    fn show_modals(&mut self, ctx: &egui::Context) {
        if let Some(wizard) = &mut self.wizard {
            let mut env = WizardEnv {
                caps: &self.caps,
                store: &self.store,
                picker: self.picker.as_mut(),
                default_scale: self.prefs.default_scale,
            };
            match wizard.show(ctx, &mut env) {
                Outcome::Open => {}
                Outcome::Cancelled => self.wizard = None,
                Outcome::Created(id) => {
                    self.wizard = None;
                    self.reload();
                    self.selected = Some(id);
                }
            }
        }
        if let Some(id) = self.confirm_delete.clone() {
            let (name, dir) = self.entry(&id).map_or_else(
                || (id.clone(), String::new()),
                |e| (e.display_name().to_string(), e.dir.display().to_string()),
            );
            match confirm_delete(ctx, &name, &dir) {
                None => {}
                Some(false) => self.confirm_delete = None,
                Some(true) => {
                    self.confirm_delete = None;
                    self.delete_confirmed(&id);
                }
            }
        }
        if let Some(id) = self.confirm_force_off.clone() {
            let name = self
                .entry(&id)
                .map_or_else(|| id.clone(), |e| e.display_name().to_string());
            match confirm_force_off(ctx, &name) {
                None => {}
                Some(false) => self.confirm_force_off = None,
                Some(true) => {
                    self.confirm_force_off = None;
                    match self.backend.command(&id, VmCommand::Kill) {
                        Ok(()) => {
                            self.notices.remove(&id);
                            self.shutting_down.remove(&id);
                        }
                        Err(err) => {
                            self.notices.insert(id, err);
                        }
                    }
                }
            }
        }
        self.advance_live_snapshot(ctx);
        if let Some(pending) = &self.pending {
            match budget::confirm(ctx, pending) {
                None => {}
                Some(Answer::Cancel) => self.pending = None,
                Some(Answer::Start) => {
                    let id = pending.id.clone();
                    self.pending = None;
                    self.start_now(&id);
                }
            }
        }
    }

    fn perform(&mut self, ctx: &egui::Context, action: Action) {
        let id = self.selected.clone();
        let command = match action {
            Action::New => {
                self.open_wizard(Wizard::new());
                return;
            }
            Action::Quit => {
                // The workers run on; a new window attaches to them again.
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                return;
            }
            Action::Fullscreen => {
                let on = ctx.input(|i| i.viewport().fullscreen.unwrap_or(false));
                ctx.send_viewport_cmd(egui::ViewportCommand::Fullscreen(!on));
                return;
            }
            Action::Start => {
                if let Some(id) = id {
                    self.request_start(&id);
                }
                return;
            }
            Action::PauseResume => {
                if self.selected_status().and_then(|s| s.run_state()) == Some(RunState::Paused) {
                    VmCommand::Resume
                } else {
                    VmCommand::Pause
                }
            }
            Action::Suspend => VmCommand::Suspend,
            Action::Snapshot => {
                if let Some(entry) = id.as_deref().and_then(|id| self.entry(id)) {
                    self.live_snapshot = Some(LiveSnapshot::new(&entry.id, entry.dir.clone()));
                }
                return;
            }
            Action::ShutDown => VmCommand::PowerButton,
            Action::ForceOff => {
                // Pulling the plug loses what the guest has not saved: ask
                // first, unless it is already halted (paused).
                let paused =
                    self.selected_status().and_then(|s| s.run_state()) == Some(RunState::Paused);
                if !paused {
                    self.confirm_force_off = id;
                    return;
                }
                VmCommand::Kill
            }
            Action::Reset => VmCommand::Reset,
            Action::SendKeys(chord) => VmCommand::SendKeys(chord),
            Action::InsertCd | Action::EjectCd => {
                self.change_cd(action == Action::InsertCd);
                return;
            }
        };
        let shut_down = command == VmCommand::PowerButton;
        if let Some(id) = id {
            match self.backend.command(&id, command) {
                Ok(()) => {
                    self.notices.remove(&id);
                    if shut_down {
                        let now = ctx.input(|i| i.time);
                        self.shutting_down.entry(id).or_insert(now);
                    }
                }
                Err(err) => {
                    self.notices.insert(id, err);
                }
            }
        }
    }

    /// Carries out what a library row's menu asked for (the row is selected
    /// already).
    fn row_request(&mut self, ctx: &egui::Context, request: RowRequest) {
        match request {
            RowRequest::Start(_) => self.perform(ctx, Action::Start),
            RowRequest::ShutDown(_) => self.perform(ctx, Action::ShutDown),
            RowRequest::ForceOff(_) => self.perform(ctx, Action::ForceOff),
            RowRequest::Delete(id) => self.confirm_delete = Some(id),
            RowRequest::ShowFiles(id) => {
                let Some(entry) = self.entry(&id) else {
                    return;
                };
                let dir = entry.dir.clone();
                // The desktop's file manager; nothing waits for it.
                let opened = std::process::Command::new("xdg-open")
                    .arg(&dir)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn();
                if let Err(err) = opened {
                    self.notices.insert(
                        id,
                        format!("Cannot open {} (xdg-open: {err})", dir.display()),
                    );
                }
            }
        }
    }

    /// Deletes VM `id` once the user confirmed: refused while it runs.
    fn delete_confirmed(&mut self, id: &str) {
        if self.backend.state(id).is_live() {
            self.notices.insert(
                id.to_string(),
                "The VM is running: shut it down before deleting it".to_string(),
            );
            return;
        }
        match self.store.delete(id) {
            Ok(()) => {
                self.notices.remove(id);
                if self.selected.as_deref() == Some(id) {
                    self.selected = None;
                }
                self.reload();
            }
            Err(err) => {
                self.notices.insert(id.to_string(), err.to_string());
            }
        }
    }

    /// Puts a disc the user picks into the selected VM's first CD-ROM
    /// drive (`insert`), or takes its disc out: in the running VM and in
    /// its settings.
    fn change_cd(&mut self, insert: bool) {
        let Some(id) = self.selected.clone() else {
            return;
        };
        let image = if insert {
            match self.picker.pick(PickKind::Iso) {
                Some(path) => Some(path),
                None => return,
            }
        } else {
            None
        };
        match change_disc(&self.store, self.backend.as_mut(), &id, 0, image) {
            Ok(()) => {
                self.notices.remove(&id);
                self.reload();
            }
            Err(err) => {
                self.notices.insert(id, err);
            }
        }
    }

    /// Starts VM `id` after checking its files and the caps, asking first
    /// when it would commit more than half the host's RAM.
    pub fn request_start(&mut self, id: &str) {
        let Some(entry) = self.entry(id) else {
            return;
        };
        let Ok(vm) = &entry.state else {
            return;
        };
        if self
            .snapshots
            .as_ref()
            .is_some_and(|p| p.vm() == id && p.busy())
        {
            self.notices.insert(
                id.to_string(),
                "A snapshot operation is running: start the VM when it is done".to_string(),
            );
            return;
        }
        if let Err(err) = vm.to_engine(&entry.dir) {
            self.problems.insert(id.to_string(), err.to_string());
            return;
        }
        let request = Request {
            memory_mib: vm.memory_mib,
            vcpus: vm.vcpus,
            new_disk_bytes: 0,
        };
        if let Err(err) = self.caps.check(&request, vm.allow_overcommit) {
            self.problems.insert(id.to_string(), err.to_string());
            return;
        }
        let running = self.backend.running_memory_mib();
        if self.caps.would_overcommit(running, vm.memory_mib) {
            self.pending = Some(PendingStart {
                id: id.to_string(),
                name: vm.name.clone(),
                memory_mib: vm.memory_mib,
                running_mib: running,
                host_mib: self.caps.host_memory_mib(),
            });
            return;
        }
        self.start_now(id);
    }

    fn start_now(&mut self, id: &str) {
        match self.backend.start(id) {
            Ok(()) => {
                self.problems.remove(id);
                self.notices.remove(id);
            }
            Err(err) => {
                self.problems.insert(id.to_string(), err);
            }
        }
    }
}

impl eframe::App for NestboxApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        crate::timing::frame_started(ui.ctx());
        NestboxApp::ui(self, ui);
        crate::timing::pass_ended();
    }
}

/// Opens the Nestbox window over the user's library, driving VMs through
/// `backend` (with the New VM wizard on `file`, if given), and returns
/// when it closes.
pub fn run(backend: Box<dyn VmBackend>, file: Option<PathBuf>) -> anyhow::Result<()> {
    let mut app = NestboxApp::for_user(backend)?;
    if let Some(file) = file {
        // As if the file had been dropped on the window.
        app.open_wizard(Wizard::with_file(file));
    }
    let options = eframe::NativeOptions {
        renderer: eframe::Renderer::Glow,
        viewport: egui::ViewportBuilder::default()
            .with_title("Nestbox")
            .with_app_id("nestbox")
            .with_inner_size([1100.0, 720.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native("Nestbox", options, Box::new(move |_cc| Ok(Box::new(app))))
        .map_err(|e| anyhow::anyhow!("Cannot open the Nestbox window: {e}"))
}

/// A question in a modal: `heading`, `text`, and `yes` or Cancel. None
/// while the user has not answered, Some(true) for `yes` (closing the
/// modal is Cancel).
fn ask(ctx: &egui::Context, salt: &str, heading: &str, text: &str, yes: &str) -> Option<bool> {
    ask_with(ctx, salt, heading, yes, |ui| {
        ui.label(text);
        true
    })
}

/// As [`ask`], with what `body` draws between the heading and the
/// buttons; `body` says whether `yes` may be clicked now.
pub(super) fn ask_with(
    ctx: &egui::Context,
    salt: &str,
    heading: &str,
    yes: &str,
    body: impl FnOnce(&mut egui::Ui) -> bool,
) -> Option<bool> {
    let mut answer = None;
    let modal = egui::Modal::new(egui::Id::unique(salt)).show(ctx, |ui| {
        ui.set_max_width(420.0);
        ui.heading(heading);
        let can_say_yes = body(ui);
        ui.horizontal(|ui| {
            if ui
                .add_enabled(can_say_yes, egui::Button::new(yes))
                .mapped(yes)
                .clicked()
            {
                answer = Some(true);
            }
            if ui.button("Cancel").clicked() {
                answer = Some(false);
            }
        });
    });
    if modal.should_close() && answer.is_none() {
        answer = Some(false);
    }
    answer
}

/// Asks whether to delete VM `name` and its folder `dir`.
fn confirm_delete(ctx: &egui::Context, name: &str, dir: &str) -> Option<bool> {
    let text = format!(
        "This removes the VM's folder {dir} and everything in it, its disks \
         included. It cannot be undone. Disc images outside that folder stay."
    );
    ask(
        ctx,
        "delete-confirm",
        &format!("Delete {name}?"),
        &text,
        "Delete the VM",
    )
}

/// Asks whether to force VM `name` off.
fn confirm_force_off(ctx: &egui::Context, name: &str) -> Option<bool> {
    let text = "This stops the VM at once, like pulling a PC's plug: what the guest has not \
                saved is lost, and its disks may need checking at the next boot. Shut down \
                asks the guest to stop by itself instead.";
    ask(
        ctx,
        "force-off-confirm",
        &format!("Force {name} off?"),
        text,
        "Force it off now",
    )
}
