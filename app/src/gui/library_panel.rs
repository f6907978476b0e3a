// SPDX-License-Identifier: Apache-2.0
//! The library list on the left: each VM's thumbnail, name, OS label and
//! state, and the selection. A VM whose settings cannot be read stays in
//! the list as "needs attention", with where its file is broken.

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

/// Draws the list; a click changes `selected`.
pub fn show(
    ui: &mut egui::Ui,
    rows: &[Row<'_>],
    thumbnails: &Thumbnails,
    selected: &mut Option<String>,
    list_error: Option<&str>,
) {
    ui.heading("Library");
    if let Some(error) = list_error {
        ui.colored_label(ui.visuals().error_fg_color, error);
    }
    if rows.is_empty() && list_error.is_none() {
        ui.label("No VMs yet: press New (or drop an ISO on this window).");
    }
    egui::ScrollArea::vertical().show(ui, |ui| {
        for row in rows {
            ui.separator();
            show_row(ui, row, thumbnails, selected);
        }
    });
}

fn show_row(
    ui: &mut egui::Ui,
    row: &Row<'_>,
    thumbnails: &Thumbnails,
    selected: &mut Option<String>,
) {
    let entry = row.entry;
    let is_selected = selected.as_deref() == Some(entry.id.as_str());
    ui.horizontal(|ui| {
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
}
