// SPDX-License-Identifier: Apache-2.0
//! virtio-snd in the VMM: [`SharedSnd`] puts the device behind a mutex so
//! that the virtio-pci transport (queue notifications, by ioeventfd on the
//! event loop or by MMIO on a vCPU thread, which take new messages and arm
//! the pacing timer) and its [`HostHandler`](crate::devices::virtio::shared::HostHandler) on the VM's event loop (the
//! timerfd, which completes due periods) serve the same device. The
//! transport's lock is always taken before the device's, and the handler
//! takes only the device's, so they cannot deadlock; interrupts may be raised from either thread (the transport's
//! ISR and INTx line change under one lock).

use std::sync::Arc;

use crate::audio::SoundControl;

/// A [`Snd`](super::Snd) shared between the virtio-pci transport and the event loop.
pub type SharedSnd = crate::devices::virtio::shared::SharedVirtio<super::Snd>;

impl SharedSnd {
    /// The per-VM volume, mute and counters.
    pub fn control(&self) -> Arc<SoundControl> {
        self.lock().control().clone()
    }
}
