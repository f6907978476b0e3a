// SPDX-License-Identifier: Apache-2.0
//! The snapshot tree of a VM that is not running, under its details: each
//! snapshot under the one it was taken on, with its time and size, the
//! VM's current position marked ("Now"), and Take (with a name), Revert
//! and Delete (each asked for first, as both drop something). The work
//! runs on a thread of its own with a progress bar; a delete's merges can
//! be cancelled, leaving every image readable (see
//! [`snapshots::delete_with`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use eframe::egui;

use super::ui_map::Mapped as _;
use crate::library::config::Created;
use crate::library::snapshots::{self, Progress, Snapshot, SnapshotTree};

/// The label of the new snapshot's name field.
pub const NAME_LABEL: &str = "New snapshot's name:";
/// The take button.
pub const TAKE: &str = "Take snapshot";

/// A question waiting for the user's yes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Confirm {
    Revert(String),
    Delete(String),
}

/// Work on its own thread.
struct Job {
    what: String,
    progress: Arc<Progress>,
    thread: JoinHandle<Result<String, String>>,
}

/// The snapshot section of one VM.
pub struct SnapshotsPanel {
    id: String,
    dir: PathBuf,
    tree: Result<SnapshotTree, String>,
    sizes: HashMap<String, u64>,
    name: String,
    confirm: Option<Confirm>,
    job: Option<Job>,
    message: Option<Result<String, String>>,
}

impl SnapshotsPanel {
    /// The section of VM `id` in `dir`, read from disk.
    pub fn new(id: &str, dir: PathBuf) -> Self {
        let mut panel = Self {
            id: id.to_string(),
            dir,
            tree: Ok(SnapshotTree::default()),
            sizes: HashMap::new(),
            name: String::new(),
            confirm: None,
            job: None,
            message: None,
        };
        panel.reload();
        panel
    }

    /// The VM it shows.
    pub fn vm(&self) -> &str {
        &self.id
    }

    /// Whether an operation is running (the VM must not start meanwhile).
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    fn reload(&mut self) {
        self.tree = SnapshotTree::load(&self.dir).map_err(|e| e.to_string());
        self.sizes = match &self.tree {
            Ok(tree) => tree
                .snapshots
                .iter()
                .map(|s| (s.id.clone(), snapshots::size_on_disk(&self.dir, &s.id)))
                .collect(),
            Err(_) => HashMap::new(),
        };
    }

    fn run(
        &mut self,
        what: String,
        work: impl FnOnce(PathBuf, &Progress) -> Result<String, String> + Send + 'static,
    ) {
        let progress = Arc::new(Progress::default());
        let dir = self.dir.clone();
        let shared = progress.clone();
        let thread = std::thread::spawn(move || work(dir, &shared));
        self.message = None;
        self.job = Some(Job {
            what,
            progress,
            thread,
        });
    }

    /// Draws the section; true when the VM's settings may have changed
    /// (a revert), so the library is read again.
    pub fn show(&mut self, ui: &mut egui::Ui) -> bool {
        ui.heading("Snapshots");
        let changed = self.finish_job();
        if let Some(job) = &self.job {
            ui.label(&job.what);
            ui.add(egui::ProgressBar::new(job.progress.fraction()).show_percentage());
            if ui.button("Cancel").mapped("Cancel").clicked() {
                job.progress.cancel();
            }
            ui.ctx().request_repaint_after(Duration::from_millis(100));
            return changed;
        }
        match &self.message {
            Some(Ok(text)) => {
                ui.label(text.as_str()).mapped(text);
            }
            Some(Err(text)) => {
                ui.colored_label(ui.visuals().error_fg_color, text.as_str())
                    .mapped(text);
            }
            None => {}
        }
        let tree = match &self.tree {
            Ok(tree) => tree.clone(),
            Err(e) => {
                ui.colored_label(ui.visuals().error_fg_color, e.as_str());
                return changed;
            }
        };
        if tree.snapshots.is_empty() {
            ui.weak("No snapshots yet: a snapshot keeps the disks (and a suspended VM's running state) to come back to.");
        }
        for root in tree.snapshots.iter().filter(|s| s.parent.is_none()) {
            self.node(ui, &tree, root, 0);
        }
        if tree.current.is_none() && !tree.snapshots.is_empty() {
            now_marker(ui, 0, "(before any snapshot)");
        }
        self.confirmation(ui, &tree);
        ui.horizontal(|ui| {
            let label = ui.label(NAME_LABEL);
            ui.text_edit_singleline(&mut self.name)
                .labelled_by(label.id)
                .mapped(NAME_LABEL);
            let name = self.name.trim().to_string();
            let take = ui
                .add_enabled(!name.is_empty(), egui::Button::new(TAKE))
                .mapped(TAKE);
            if take.clicked() {
                self.name.clear();
                self.run(format!("Taking snapshot \"{name}\"…"), move |dir, _| {
                    snapshots::take(&dir, &name)
                        .map(|s| format!("Snapshot \"{}\" taken.", s.name))
                        .map_err(|e| e.to_string())
                });
            }
        });
        changed
    }

    fn node(&mut self, ui: &mut egui::Ui, tree: &SnapshotTree, snapshot: &Snapshot, depth: usize) {
        ui.horizontal(|ui| {
            ui.add_space(depth as f32 * 18.0);
            let running = if snapshot.running { ", running" } else { "" };
            ui.label(format!(
                "{}  ({}, {}{running})",
                snapshot.name,
                when(&snapshot.created),
                snapshots::size_text(self.sizes.get(&snapshot.id).copied().unwrap_or(0)),
            ));
            if row_button(ui, "Revert", &format!("Revert to {}", snapshot.name)) {
                self.confirm = Some(Confirm::Revert(snapshot.id.clone()));
            }
            if row_button(ui, "Delete", &format!("Delete {}", snapshot.name)) {
                self.confirm = Some(Confirm::Delete(snapshot.id.clone()));
            }
        });
        for child in tree.children(&snapshot.id) {
            self.node(ui, tree, child, depth + 1);
        }
        if tree.current.as_deref() == Some(&snapshot.id) {
            now_marker(ui, depth + 1, "(where the VM is)");
        }
    }

    fn confirmation(&mut self, ui: &mut egui::Ui, tree: &SnapshotTree) {
        let Some(confirm) = self.confirm.clone() else {
            return;
        };
        let (id, question, yes) = match &confirm {
            Confirm::Revert(id) => (
                id.clone(),
                "Go back to this snapshot? What the VM did since it (its disks and any suspended state) is lost unless you take a snapshot first.",
                "Yes, revert",
            ),
            Confirm::Delete(id) => (
                id.clone(),
                "Delete this snapshot? The VM and the other snapshots stay as they are.",
                "Yes, delete",
            ),
        };
        let Some(snapshot) = tree.snapshots.iter().find(|s| s.id == id) else {
            self.confirm = None;
            return;
        };
        let name = snapshot.name.clone();
        ui.group(|ui| {
            ui.label(format!("\"{name}\": {question}"));
            ui.horizontal(|ui| {
                if ui.button(yes).mapped(yes).clicked() {
                    self.confirm = None;
                    match confirm {
                        Confirm::Revert(id) => {
                            self.run(format!("Reverting to \"{name}\"…"), move |dir, _| {
                                snapshots::revert(&dir, &id)
                                    .map(|s| {
                                        if s.running {
                                            format!(
                                                "Back at \"{}\": Start resumes it there.",
                                                s.name
                                            )
                                        } else {
                                            format!("Back at \"{}\".", s.name)
                                        }
                                    })
                                    .map_err(|e| e.to_string())
                            })
                        }
                        Confirm::Delete(id) => {
                            self.run(format!("Deleting \"{name}\"…"), move |dir, progress| {
                                snapshots::delete_with(&dir, &id, progress)
                                    .map(|s| format!("Snapshot \"{}\" deleted.", s.name))
                                    .map_err(|e| e.to_string())
                            })
                        }
                    }
                }
                if ui.button("No").mapped("No").clicked() {
                    self.confirm = None;
                }
            });
        });
    }

    /// Takes a finished job's outcome; true when it finished.
    fn finish_job(&mut self) -> bool {
        if !self.job.as_ref().is_some_and(|j| j.thread.is_finished()) {
            return false;
        }
        let Some(job) = self.job.take() else {
            return false;
        };
        self.message = Some(
            job.thread
                .join()
                .unwrap_or_else(|_| Err("The snapshot operation failed unexpectedly".to_string())),
        );
        self.reload();
        true
    }
}

/// A small button showing `text` whose accessible name (and ui-map name)
/// is `name`, which says which snapshot it acts on; true when clicked.
fn row_button(ui: &mut egui::Ui, text: &str, name: &str) -> bool {
    let response = ui.small_button(text);
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, name));
    response.mapped(name).clicked()
}

/// The VM's current position in the tree, `depth` levels in.
fn now_marker(ui: &mut egui::Ui, depth: usize, note: &str) {
    ui.horizontal(|ui| {
        ui.add_space(depth as f32 * 18.0);
        ui.label(egui::RichText::new("Now").strong()).mapped("Now");
        ui.weak(note);
    });
}

/// When a snapshot was taken, as its file says.
fn when(created: &Created) -> String {
    match created {
        Created::Rfc3339(text) => text.replace('T', " ").trim_end_matches('Z').to_string(),
        other => other
            .unix_seconds()
            .map_or_else(String::new, |s| format!("{s} s")),
    }
}
