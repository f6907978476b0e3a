// SPDX-License-Identifier: Apache-2.0
//! The RAM budget: a bar of the memory committed by live VMs against the
//! host's RAM with its half-way mark, and the question asked before a
//! start would commit more than half.

use eframe::egui::{self, Color32, Stroke};

/// A start waiting for the user's answer because it would over-commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingStart {
    /// The VM's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its memory in MiB.
    pub memory_mib: u64,
    /// Memory live VMs hold now, in MiB.
    pub running_mib: u64,
    /// The host's RAM in MiB.
    pub host_mib: u64,
}

impl PendingStart {
    /// The question, with the numbers.
    pub fn question(&self) -> String {
        let total = self.running_mib.saturating_add(self.memory_mib);
        format!(
            "Starting {} would commit {total} MiB of {} MiB of host RAM \
             ({} MiB for running VMs plus {} MiB for this one), more than half. \
             The host may slow down or run out of memory.",
            self.name, self.host_mib, self.running_mib, self.memory_mib
        )
    }
}

/// The user's answer to a [`PendingStart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Start anyway.
    Start,
    /// Do not start.
    Cancel,
}

/// Draws the budget bar.
pub fn bar(ui: &mut egui::Ui, running_mib: u64, host_mib: u64) {
    let host = host_mib.max(1);
    let fraction = (running_mib as f32 / host as f32).clamp(0.0, 1.0);
    let over = running_mib > host / 2;
    let text = format!(
        "RAM for running VMs: {running_mib} MiB of {host_mib} MiB (half: {} MiB)",
        host_mib / 2
    );
    let mut progress = egui::ProgressBar::new(fraction)
        .text(text)
        .desired_width(480.0);
    if over {
        progress = progress.fill(ui.visuals().warn_fg_color);
    }
    let response = ui.add(progress);
    let rect = response.rect;
    let x = rect.left() + rect.width() / 2.0;
    // The half mark as notches at the edges, clear of the bar's text.
    let notch = (rect.height() * 0.2).clamp(2.0, 4.0);
    let stroke = Stroke::new(2.0, Color32::from_rgb(230, 160, 40));
    for (from, to) in [
        (rect.top(), rect.top() + notch),
        (rect.bottom() - notch, rect.bottom()),
    ] {
        ui.painter()
            .line_segment([egui::pos2(x, from), egui::pos2(x, to)], stroke);
    }
}

/// Asks whether to start anyway; `None` while the user has not answered.
pub fn confirm(ctx: &egui::Context, pending: &PendingStart) -> Option<Answer> {
    let mut answer = None;
    let modal = egui::Modal::new(egui::Id::unique("budget-confirm")).show(ctx, |ui| {
        ui.set_max_width(420.0);
        ui.heading("Over half of the host's RAM");
        ui.label(pending.question());
        ui.horizontal(|ui| {
            if ui.button("Start anyway").clicked() {
                answer = Some(Answer::Start);
            }
            if ui.button("Cancel").clicked() {
                answer = Some(Answer::Cancel);
            }
        });
    });
    if modal.should_close() && answer.is_none() {
        answer = Some(Answer::Cancel);
    }
    answer
}
