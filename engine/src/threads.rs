// SPDX-License-Identifier: Apache-2.0
//! The one place engine threads are spawned: each is named, and a panic in
//! one stops its VM with an error instead of leaving it half-alive.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::control::{Outcome, VmControl};

/// Spawns `body` on a thread called `name`; a panic stops `control`'s VM.
pub fn spawn_vm_thread<F>(
    name: String,
    control: Arc<VmControl>,
    body: F,
) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(body)) {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                control.request_stop(Outcome::HostError(format!(
                    "thread {name} panicked: {message}"
                )));
            }
        })
}
