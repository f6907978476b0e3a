// SPDX-License-Identifier: Apache-2.0
//! virtio-snd in the VMM: [`SharedSnd`] puts the device behind a mutex so
//! that the virtio-pci transport (queue notifications, by ioeventfd on the
//! event loop or by MMIO on a vCPU thread, which take new messages and arm
//! the pacing timer) and [`SndHandler`] on the VM's event loop (the
//! timerfd, which completes due periods) serve the same device. The
//! transport's lock is always taken before the device's, and the handler
//! takes only the device's, so they cannot deadlock; interrupts may be raised from either thread (the transport's
//! ISR and INTx line change under one lock).

use std::os::fd::RawFd;
use std::sync::Arc;

use vmm_sys_util::epoll::EventSet;

use super::Snd;
use crate::audio::SoundControl;
use crate::event_loop::EventHandler;

/// A [`Snd`] shared between the virtio-pci transport and the event loop.
pub type SharedSnd = crate::devices::virtio::shared::Shared<Snd>;

impl SharedSnd {
    /// The per-VM volume, mute and counters.
    pub fn control(&self) -> Arc<SoundControl> {
        self.lock().control().clone()
    }

    /// The event-loop side of this device.
    pub fn handler(&self) -> SndHandler {
        let timer = self.lock().timer_fd();
        SndHandler {
            snd: self.clone(),
            timer,
        }
    }
}

/// Serves a [`SharedSnd`]'s pacing timer on the VM's event loop: when it
/// fires, due playback periods complete (and their interrupts go out) and
/// due capture periods are filled, on the event loop's thread.
pub struct SndHandler {
    snd: SharedSnd,
    // The device's timerfd: it lives as long as the device, which this
    // handler keeps alive.
    timer: RawFd,
}

impl EventHandler for SndHandler {
    fn interest(&self, fds: &mut Vec<RawFd>) {
        fds.push(self.timer);
    }

    fn ready(&mut self, fd: RawFd, _events: EventSet) {
        if fd == self.timer {
            self.snd.lock().serve_timer();
        }
    }
}
