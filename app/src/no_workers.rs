// SPDX-License-Identifier: Apache-2.0
//! A placeholder [`VmBackend`] for the desktop app until the worker
//! processes land: it lists every VM as stopped and refuses to start one.
//! The real backend replaces it in `main`.

use std::sync::Arc;

use display::framebuffer::SharedFramebuffer;

use crate::worker::api::{RunState, VmBackend, VmCommand, VmEvent};

/// Why nothing can start yet.
const NOT_BUILT: &str = "Starting VMs needs the worker processes, which are not built yet";

/// The backend with no workers.
#[derive(Debug, Default)]
pub struct NoWorkers;

impl VmBackend for NoWorkers {
    fn state(&self, _id: &str) -> RunState {
        RunState::Stopped
    }

    fn start(&mut self, _id: &str) -> Result<(), String> {
        Err(NOT_BUILT.to_string())
    }

    fn command(&mut self, _id: &str, _command: VmCommand) -> Result<(), String> {
        Err(NOT_BUILT.to_string())
    }

    fn framebuffer(&mut self, _id: &str) -> Option<Arc<SharedFramebuffer>> {
        None
    }

    fn poll(&mut self) -> Vec<(String, VmEvent)> {
        Vec::new()
    }

    fn running_memory_mib(&self) -> u64 {
        0
    }
}
