// SPDX-License-Identifier: Apache-2.0
//! The window of `nestbox start ID` (without `--headless`): the plain
//! viewer of `nestbox run`, showing the framebuffer received from the VM's
//! worker and sending input to it as commands. Closing the window leaves
//! the VM running.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail};
use display::framebuffer::SharedFramebuffer;
use display::scale::ScaleMode;
use display::view::GuestInput;
use display::watch::FrameWatcher;
use eframe::egui;

use crate::library::config::ScaleMode as VmScale;
use crate::viewer::VmLink;
use crate::worker::api::VmCommand;
use crate::worker::backend::WorkerBackend;
use crate::worker::client::{Ended, WorkerClient};

/// How often the window's watcher looks whether the VM ended (frames wake
/// it at once, through the framebuffer's futex).
const END_CHECK: Duration = Duration::from_millis(250);

/// A window's link to a VM that runs in its worker.
struct RemoteLink {
    client: Arc<WorkerClient>,
    framebuffer: Arc<SharedFramebuffer>,
    waker: Mutex<Option<egui::Context>>,
    /// Wakes the window on new frames and the VM's end.
    watcher: Mutex<Option<FrameWatcher>>,
}

impl VmLink for RemoteLink {
    fn set_waker(&self, ctx: egui::Context) {
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(ctx.clone());
        // The worker draws; the watcher sleeps on the framebuffer's change
        // counter (the worker wakes it on every publish) and wakes the
        // window when the frame moved on or the VM ended.
        let client = self.client.clone();
        let watcher = FrameWatcher::spawn_until(
            self.framebuffer.clone(),
            END_CHECK,
            move || client.ended().is_some(),
            move || display::watch::request_one_pass(&ctx),
        );
        match watcher {
            Ok(watcher) => *self.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(watcher),
            Err(e) => log::warn!("cannot watch the screen: {e}"),
        }
    }

    fn window_shown(&self) {}

    fn input(&self, event: GuestInput) {
        if let Err(e) = self.client.command(VmCommand::Input(event)) {
            log::debug!("input: {e}");
        }
    }

    fn finished(&self) -> bool {
        self.client.ended().is_some()
    }

    fn stop(&self) {}
}

/// Shows VM `id`'s screen until the window closes or the VM ends.
pub fn view(backend: &WorkerBackend, id: &str) -> anyhow::Result<ExitCode> {
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        bail!(
            "No graphical session to open a window in (DISPLAY and WAYLAND_DISPLAY are unset): \
             the VM runs on; nestbox start --headless starts VMs without a window"
        );
    }
    let client = backend
        .client(id)
        .ok_or_else(|| anyhow!("VM {id} is not running"))?;
    let framebuffer = Arc::new(client.framebuffer().map_err(|e| anyhow!(e))?);
    let (_, store) = super::vmcmd::open_store()?;
    let vm = store.get(id)?;
    let scale = match vm.display.scale {
        VmScale::Fit => ScaleMode::Fit,
        VmScale::OneToOne => ScaleMode::OneToOne,
        VmScale::Integer => ScaleMode::Integer,
        VmScale::Stretch => ScaleMode::Stretch,
    };
    let link = Arc::new(RemoteLink {
        client: client.clone(),
        framebuffer: framebuffer.clone(),
        waker: Mutex::new(None),
        watcher: Mutex::new(None),
    });
    crate::viewer::run(&format!("Nestbox — {}", vm.name), framebuffer, link, scale)?;
    match client.ended() {
        Some(Ended::Exited { outcome, failure }) => {
            if failure {
                bail!("VM {id} failed: {outcome}");
            }
            eprintln!("nestbox: VM {id} ended: {outcome}");
        }
        Some(Ended::Lost(why)) => bail!("VM {id}'s worker died ({why})"),
        None => eprintln!("nestbox: the window closed; VM {id} keeps running (nestbox stop {id})"),
    }
    Ok(ExitCode::SUCCESS)
}
