// SPDX-License-Identifier: Apache-2.0
//! The desktop app (eframe with the glow renderer). One panel per file:
//!
//! - [`app`]: the window, its layout, the actions and modals;
//! - [`toolbar`]: the buttons, when each applies, and the shortcuts;
//! - [`library_panel`]: the VM list with thumbnails and states;
//! - [`details_panel`] and [`settings_panel`]: a stopped VM and its editor;
//! - [`snapshots_panel`]: a stopped VM's snapshot tree;
//! - [`live_snapshot`]: a snapshot of a running VM, from the toolbar;
//! - [`console_panel`]: a running VM's screen and input;
//! - [`wizard`]: the New VM wizard;
//! - [`budget`]: the RAM budget bar and the over-commit question;
//! - [`picker`]: file dialogs behind a trait;
//! - [`thumbnail`], [`status`]: helpers;
//! - [`library_watch`]: wakes the app when the library changes on disk;
//! - [`ui_map`]: a test hook that says where the widgets are on screen.
//!
//! VMs are driven through `worker::api::VmBackend`, so the app can be
//! tested headless with a fake one.

pub mod app;
pub mod budget;
pub mod console_panel;
pub mod details_panel;
pub mod library_panel;
pub mod library_watch;
pub mod live_snapshot;
pub mod picker;
pub mod settings_panel;
pub mod snapshots_panel;
pub mod status;
pub mod thumbnail;
pub mod toolbar;
pub mod ui_map;
pub mod wizard;

#[cfg(test)]
mod tests;

#[cfg(test)]
use app::NestboxApp;
pub use app::run;
