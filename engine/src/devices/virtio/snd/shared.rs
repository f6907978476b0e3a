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
use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::epoll::EventSet;

use super::{QUEUE_SIZE, Snd};
use crate::audio::SoundControl;
use crate::devices::virtio::{ActivateError, ActivationContext, VirtioDevice, device_type};
use crate::event_loop::EventHandler;

/// A [`Snd`] shared between the virtio-pci transport and the event loop.
#[derive(Clone)]
pub struct SharedSnd(Arc<Mutex<Snd>>);

impl SharedSnd {
    /// Shares `snd`.
    pub fn new(snd: Snd) -> Self {
        Self(Arc::new(Mutex::new(snd)))
    }

    /// Locks the device (a panic while it was held does not poison it for
    /// good: its state stays consistent and queues are checked anyway).
    pub fn lock(&self) -> MutexGuard<'_, Snd> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

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

impl VirtioDevice for SharedSnd {
    fn device_type(&self) -> u32 {
        device_type::SOUND
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 4]
    }

    fn features(&self) -> u64 {
        self.lock().features()
    }

    fn ack_features(&mut self, features: u64) {
        self.lock().ack_features(features);
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.lock().read_config(offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.lock().write_config(offset, data);
    }

    fn activate(&mut self, context: ActivationContext) -> Result<(), ActivateError> {
        self.lock().activate(context)
    }

    fn queue_notify(&mut self, queue: u16) {
        self.lock().queue_notify(queue);
    }

    fn reset(&mut self) {
        self.lock().reset();
    }

    fn needs_reset(&self) -> bool {
        VirtioDevice::needs_reset(&*self.lock())
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
