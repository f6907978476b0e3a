// SPDX-License-Identifier: Apache-2.0
//! The library list on the left: each VM's thumbnail, name, OS label and
//! state, and the selection (a click anywhere on a row). A right click
//! opens the row's menu: Start, Shut down, Force off, Show files and
//! Delete…. A VM whose settings cannot be read stays in the list as
//! "needs attention", with where its file is broken.

use eframe::egui::{self, Color32, RichText};

use super::status::VmStatus;
use super::thumbnail::Thumbnails;
use super::ui_map::Mapped as _;
use crate::library::store::VmEntry;

/// Size of a thumbnail in the list, in points.
const THUMB_SIZE: egui::Vec2 = egui::vec2(64.0, 48.0);

/// One row of the list.
pub struct Row<'a> {
    /// The VM.
    pub entry: &'a VmEntry,
    /// Its state.
    pub status: VmStatus,
}

/// What a row's menu asked for, for the VM of that row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowRequest {
    /// Start it.
    Start(String),
    /// Press its power button.
    ShutDown(String),
    /// Pull its plug (after the usual confirmation).
    ForceOff(String),
    /// Open its folder in the file manager.
    ShowFiles(String),
    /// Delete it (after a confirmation).
    Delete(String),
}

/// Draws the list; a click changes `selected`; returns what a row's menu
/// asked for.
pub fn show(
    ui: &mut egui::Ui,
    rows: &[Row<'_>],
    thumbnails: &Thumbnails,
    selected: &mut Option<String>,
    list_error: Option<&str>,
) -> Option<RowRequest> {
    ui.heading("Library");
    if let Some(error) = list_error {
        ui.colored_label(ui.visuals().error_fg_color, error);
    }
    if rows.is_empty() && list_error.is_none() {
        ui.label("No VMs yet: press New (or drop an ISO on this window).");
    }
    let mut request = None;
    egui::ScrollArea::vertical().show(ui, |ui| {
        for row in rows {
            ui.separator();
            if let Some(asked) = show_row(ui, row, thumbnails, selected) {
                request = Some(asked);
            }
        }
    });
    request
}

/// The row's right-click menu; what was picked.
fn row_menu(ui: &mut egui::Ui, row: &Row<'_>) -> Option<RowRequest> {
    let id = row.entry.id.clone();
    let live = row.status.is_live();
    let readable = row.entry.state.is_ok();
    let items = [
        ("Start", readable && !live, RowRequest::Start(id.clone())),
        ("Shut down", live, RowRequest::ShutDown(id.clone())),
        ("Force off", live, RowRequest::ForceOff(id.clone())),
        ("Show files", true, RowRequest::ShowFiles(id.clone())),
        ("Delete…", !live, RowRequest::Delete(id)),
    ];
    let mut picked = None;
    for (label, enabled, request) in items {
        if ui
            .add_enabled(enabled, egui::Button::new(label))
            .mapped(label)
            .clicked()
        {
            picked = Some(request);
            ui.close();
        }
    }
    picked
}

fn show_row(
    ui: &mut egui::Ui,
    row: &Row<'_>,
    thumbnails: &Thumbnails,
    selected: &mut Option<String>,
) -> Option<RowRequest> {
    let entry = row.entry;
    let is_selected = selected.as_deref() == Some(entry.id.as_str());
    let drawn = ui.horizontal(|ui| {
        let (rect, _) = ui.allocate_exact_size(THUMB_SIZE, egui::Sense::hover());
        match thumbnails.get(&entry.id) {
            Some(texture) => {
                let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
                ui.painter().image(texture.id(), rect, uv, Color32::WHITE);
            }
            None => {
                ui.painter()
                    .rect_filled(rect, 4.0, ui.visuals().extreme_bg_color);
            }
        }
        ui.vertical(|ui| {
            let shown = entry.display_name();
            let name = RichText::new(shown).strong();
            if ui
                .selectable_label(is_selected, name)
                .mapped(shown)
                .clicked()
            {
                *selected = Some(entry.id.clone());
            }
            if let Ok(vm) = &entry.state
                && !vm.os.is_empty()
            {
                ui.label(&vm.os);
            }
            let color = match row.status {
                VmStatus::NeedsAttention
                | VmStatus::StartFailed(_)
                | VmStatus::Run(crate::worker::api::RunState::Failed(_)) => {
                    ui.visuals().error_fg_color
                }
                _ => ui.visuals().weak_text_color(),
            };
            let label = row.status.label();
            ui.label(RichText::new(&label).color(color)).mapped(&label);
            if let Err(err) = &entry.state {
                if let Some(at) = err.location() {
                    ui.label(format!("line {}, column {}", at.line, at.column));
                }
            }
        });
    });
    // The whole row selects (the thumbnail and the labels too), and a
    // right click opens its menu.
    let whole = ui.interact(
        drawn.response.rect,
        ui.scope_id().with(("library-row", &entry.id)),
        egui::Sense::click(),
    );
    if whole.clicked() || whole.secondary_clicked() {
        *selected = Some(entry.id.clone());
    }
    let mut request = None;
    whole.context_menu(|ui| request = row_menu(ui, row));
    request
}
