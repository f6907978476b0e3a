// SPDX-License-Identifier: Apache-2.0
//! A plain window showing one VM's screen (`nestbox run --display
//! window`): the guest framebuffer scaled into the window, keyboard and
//! mouse routed to the guest. Closing the window stops the VM.

use std::sync::Arc;

use display::framebuffer::SharedFramebuffer;
use display::scale::ScaleMode;
use display::view::{GuestInput, GuestView};
use eframe::egui;

/// What the window needs from the VM side.
pub trait VmLink: Send + Sync {
    /// Hands the window's context over, so the VM side can wake it when the
    /// screen changes or the VM ends.
    fn set_waker(&self, ctx: egui::Context);
    /// The window has drawn its first frame.
    fn window_shown(&self);
    /// Delivers user input to the guest.
    fn input(&self, event: GuestInput);
    /// True once the VM has ended for good (the window then closes).
    fn finished(&self) -> bool;
    /// Asks the VM to stop (the window was closed).
    fn stop(&self);
}

struct Viewer {
    framebuffer: Arc<SharedFramebuffer>,
    view: GuestView,
    link: Arc<dyn VmLink>,
    sized_to: (u32, u32),
    frames: u64,
}

impl eframe::App for Viewer {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        if self.link.finished() {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        }
        self.view.update(&ctx, &self.framebuffer);
        let guest = self.view.guest_size();
        if guest != self.sized_to && guest.0 > 0 && guest.1 > 0 {
            // Follow the guest's mode, as a VM window does at 1:1.
            self.sized_to = guest;
            ctx.send_viewport_cmd(egui::ViewportCommand::InnerSize(egui::vec2(
                guest.0 as f32,
                guest.1 as f32,
            )));
        }
        for event in self.view.show(ui) {
            self.link.input(event);
        }
        self.frames += 1;
        if self.frames == 2 {
            // The first frame is on screen (and the view has the focus).
            self.link.window_shown();
        }
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.link.stop();
    }
}

/// Opens the window and returns when it closes.
pub fn run(
    title: &str,
    framebuffer: Arc<SharedFramebuffer>,
    link: Arc<dyn VmLink>,
    scale: ScaleMode,
) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        renderer: eframe::Renderer::Glow,
        viewport: egui::ViewportBuilder::default()
            .with_title(title)
            .with_app_id("nestbox")
            .with_inner_size([720.0, 400.0]),
        // Ctrl+C, Ctrl+V and friends are the guest's keys.
        clipboard_shortcuts: false,
        ..Default::default()
    };
    eframe::run_native(
        title,
        options,
        Box::new(move |cc| {
            link.set_waker(cc.egui_ctx.clone());
            let mut view = GuestView::new(scale);
            view.set_keep_focus(true);
            Ok(Box::new(Viewer {
                framebuffer,
                view,
                link,
                sized_to: (0, 0),
                frames: 0,
            }))
        }),
    )
    .map_err(|e| anyhow::anyhow!("Cannot open the VM window: {e}"))
}
