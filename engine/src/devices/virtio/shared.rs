// SPDX-License-Identifier: Apache-2.0
//! A virtio device shared between its virtio-pci transport and the
//! device's own handler on the VM's event loop (host-side work: received
//! frames, pacing and retry timers, host input). The transport calls it as
//! any device, holding the transport's lock: on a vCPU thread for MMIO
//! accesses, and on the event loop too, where
//! [`NotifyHandler`](super::pci::NotifyHandler) turns queue-notify
//! ioeventfds into `queue_notify`. The device's handler locks only this
//! one. So the order is always the transport's lock, then this one, then
//! the locks inside the device (such as its queue of pending host input)
//! and the transport's interrupt state (ISR or MSI-X), which take no other;
//! nothing holding this lock takes the transport's, so they cannot
//! deadlock.

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::epoll::EventSet;

use super::device_core::QueueDevice;
use super::{ActivateError, ActivationContext, DeviceInfo, VirtioDevice};
use crate::event_loop::EventHandler;

/// `D` behind a mutex, itself a [`VirtioDevice`] that locks `D` for every
/// call. Cheap to clone: every clone is the same device.
pub struct SharedVirtio<D> {
    device: Arc<Mutex<D>>,
    device_type: u32,
    // Copied once: a slice cannot be lent out through the lock.
    queue_max_sizes: Arc<[u16]>,
}

impl<D> Clone for SharedVirtio<D> {
    fn clone(&self) -> Self {
        Self {
            device: self.device.clone(),
            device_type: self.device_type,
            queue_max_sizes: self.queue_max_sizes.clone(),
        }
    }
}

impl<D: VirtioDevice> SharedVirtio<D> {
    /// Shares `device`.
    pub fn new(device: D) -> Self {
        Self {
            device_type: device.device_type(),
            queue_max_sizes: device.queue_max_sizes().into(),
            device: Arc::new(Mutex::new(device)),
        }
    }

    /// Locks the device (a panic while it was held does not poison it for
    /// good: its state stays consistent and queues are checked on every
    /// use anyway).
    pub fn lock(&self) -> MutexGuard<'_, D> {
        self.device.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<D: QueueDevice> SharedVirtio<D> {
    /// The device's host side on the VM's event loop (it waits for
    /// nothing when the device has no host work a kick does not announce).
    pub fn handler(&self) -> HostHandler<D> {
        let fd = self.lock().host_event_fd();
        HostHandler {
            device: self.clone(),
            fd,
        }
    }
}

/// Serves a shared device's host event ([`QueueDevice::host_event_fd`]:
/// host input, a retry or pacing timer) on the VM's event loop: the
/// queues the device names are served as if the driver had kicked them.
pub struct HostHandler<D> {
    device: SharedVirtio<D>,
    // The device's own fd: it lives as long as the device, which this
    // handler keeps alive.
    fd: Option<RawFd>,
}

impl<D: QueueDevice> EventHandler for HostHandler<D> {
    fn interest(&self, fds: &mut Vec<RawFd>) {
        fds.extend(self.fd);
    }

    fn ready(&mut self, _fd: RawFd, _events: EventSet) {
        self.device.lock().serve_host_events();
    }
}

impl<D: VirtioDevice> DeviceInfo for SharedVirtio<D> {
    fn device_type(&self) -> u32 {
        self.device_type
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_max_sizes
    }

    fn features(&self) -> u64 {
        self.lock().features()
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.lock().read_config(offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.lock().write_config(offset, data);
    }
}

impl<D: VirtioDevice> VirtioDevice for SharedVirtio<D> {
    fn ack_features(&mut self, features: u64) {
        self.lock().ack_features(features);
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
        self.lock().needs_reset()
    }

    fn saves_state(&self) -> bool {
        self.lock().saves_state()
    }

    fn quiesce(&mut self) -> Result<(), crate::snapshot::StateError> {
        self.lock().quiesce()
    }

    fn save_state(&mut self) -> Result<Vec<u8>, crate::snapshot::StateError> {
        self.lock().save_state()
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), crate::snapshot::StateError> {
        self.lock().restore_state(state)
    }
}
