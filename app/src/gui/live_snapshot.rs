// SPDX-License-Identifier: Apache-2.0
//! A snapshot of a running VM, from the toolbar: the app asks for its
//! name, suspends the VM (its machine state and disks at one pause), takes
//! the snapshot on a thread of its own, and starts the VM again, which
//! resumes where it was. No step blocks a frame; the app calls
//! [`LiveSnapshot::advance`] every frame and does what it answers.

use std::path::PathBuf;
use std::thread::JoinHandle;

use eframe::egui;

use crate::library::snapshots;
use crate::worker::api::RunState;

/// The label of the name field.
pub const NAME_LABEL: &str = "Name of the snapshot:";
/// The dialog's go button.
pub const TAKE: &str = "Suspend briefly and take it";

enum Step {
    /// The dialog asks for the name.
    Naming(String),
    /// Suspend was asked for; waiting for the VM to be suspended.
    Suspending(String),
    /// The snapshot is being taken.
    Taking(JoinHandle<Result<String, String>>),
}

/// What the app is to do for a [`LiveSnapshot`] this frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing yet.
    Wait,
    /// The user cancelled; forget it.
    Cancelled,
    /// Suspend the VM.
    Suspend,
    /// The snapshot is taken (or could not be, the message says which);
    /// start the VM again and forget this.
    Resume(Result<String, String>),
}

/// One snapshot of a running VM under way.
pub struct LiveSnapshot {
    id: String,
    dir: PathBuf,
    step: Step,
}

impl LiveSnapshot {
    /// Asks for the name of a snapshot of VM `id` in `dir`.
    pub fn new(id: &str, dir: PathBuf) -> Self {
        Self {
            id: id.to_string(),
            dir,
            step: Step::Naming(String::new()),
        }
    }

    /// The VM it is for.
    pub fn vm(&self) -> &str {
        &self.id
    }

    /// Moves on, given the VM's state now: draws the naming dialog while
    /// it is open.
    pub fn advance(&mut self, ctx: &egui::Context, state: &RunState) -> Next {
        match &mut self.step {
            Step::Naming(name) => match ask_name(ctx, name) {
                None => Next::Wait,
                Some(false) => Next::Cancelled,
                Some(true) => {
                    let name = name.trim().to_string();
                    self.step = Step::Suspending(name);
                    Next::Suspend
                }
            },
            Step::Suspending(name) => match state {
                RunState::Suspended => {
                    let dir = self.dir.clone();
                    let name = name.clone();
                    let thread = std::thread::spawn(move || {
                        snapshots::take(&dir, &name)
                            .map(|s| {
                                format!("Snapshot \"{}\" taken with the running state", s.name)
                            })
                            .map_err(|e| format!("The snapshot was not taken: {e}"))
                    });
                    self.step = Step::Taking(thread);
                    Next::Wait
                }
                RunState::Running | RunState::Paused | RunState::Starting => Next::Wait,
                // The suspend failed and the VM ended, or it stopped.
                _ => Next::Resume(Err(
                    "The snapshot was not taken: the VM ended before it was suspended".to_string(),
                )),
            },
            Step::Taking(thread) if thread.is_finished() => {
                let Step::Taking(thread) =
                    std::mem::replace(&mut self.step, Step::Naming(String::new()))
                else {
                    return Next::Wait;
                };
                Next::Resume(thread.join().unwrap_or_else(|_| {
                    Err("The snapshot was not taken: it failed unexpectedly".to_string())
                }))
            }
            Step::Taking(_) => {
                ctx.request_repaint_after(std::time::Duration::from_millis(100));
                Next::Wait
            }
        }
    }

    /// Whether the suspend was asked for and has not finished (an error
    /// the backend reports for the VM now means it failed).
    pub fn suspending(&self) -> bool {
        matches!(self.step, Step::Suspending(_))
    }
}

/// The naming dialog: Some(true) to go on with the name in `name`,
/// Some(false) to cancel.
fn ask_name(ctx: &egui::Context, name: &mut String) -> Option<bool> {
    super::app::ask_with(ctx, "live-snapshot", "Take a snapshot", TAKE, |ui| {
        ui.label(
            "The VM is suspended for a moment, so the snapshot holds its running state \
             with its disks; then it runs on. Its network connections drop, as after a \
             laptop's sleep.",
        );
        ui.horizontal(|ui| {
            let label = ui.label(NAME_LABEL);
            ui.text_edit_singleline(name).labelled_by(label.id);
        });
        !name.trim().is_empty()
    })
}
