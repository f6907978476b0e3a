// SPDX-License-Identifier: Apache-2.0
//! What every virtio device shares, so that a device file holds only what
//! is its own: the [`QueueDevice`] contract (the one way both the
//! virtio-pci transport and the vhost-user back-end drive a device's
//! queues), the [`DeviceCore`] that keeps the driver's side of an active
//! device (accepted features, guest memory, queues, interrupt, the
//! needs-reset flag), [`drain`] (the walk over a queue's available ring
//! every device serves its requests with), and [`GuestFault`], the faults
//! of a broken ring shared by every device's errors.
//!
//! Every [`QueueDevice`] is a [`VirtioDevice`] through the blanket
//! implementation here: activation checks the driver's queues, a queue
//! notification serves that queue and interrupts the driver if it asks,
//! a broken ring marks the device for a reset (logged once), a
//! notification for a queue the device lacks is logged rate-limited, and
//! a reset forgets the driver. A device adds its own state changes
//! through [`QueueDevice::activated`] and [`QueueDevice::reset_state`].
//!
//! Adding a device means one file: its configuration space, its request
//! handling in [`QueueDevice::serve`] (usually one [`drain`] with a
//! closure per chain) and, when the host side has work no kick announces
//! (input, timers), [`QueueDevice::host_event_fd`] and
//! [`QueueDevice::take_host_events`]; [`SharedVirtio::handler`] then serves
//! those on the VM's event loop and the vhost-user back-end on its vring
//! thread.
//!
//! [`SharedVirtio::handler`]: super::shared::SharedVirtio::handler

use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};

use super::{
    ActivateError, ActivationContext, DeviceInfo, LogLimiter, VIRTIO_RING_F_EVENT_IDX,
    VirtioDevice, VirtioInterrupt, checked_queues, describe,
};
use crate::memory::GuestMemoryMmap;

/// Why a queue cannot be served any more: the guest broke its rings. The
/// device stops serving until the driver resets it.
#[derive(Debug, thiserror::Error)]
pub enum GuestFault {
    /// The available ring announced an entry that cannot be read (or the
    /// driver moved its index back).
    #[error("The available ring cannot be read")]
    AvailRing,
    /// The queue itself is broken (an index out of range, a ring outside
    /// guest memory).
    #[error("The queue is broken")]
    Queue(#[source] virtio_queue::Error),
}

impl From<virtio_queue::Error> for GuestFault {
    fn from(err: virtio_queue::Error) -> Self {
        Self::Queue(err)
    }
}

/// What [`drain`]'s per-chain step did with a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Completed: the chain goes to the used ring with this many bytes
    /// written.
    Used(u32),
    /// Kept by the device, which completes it later itself.
    Held,
    /// Not served now: the chain stays in the available ring and draining
    /// stops, with notifications on (nothing to put in it yet, or a rate
    /// limit).
    Leave,
}

/// Serves the chains `queue` holds, one `per_chain` call each, until its
/// available ring is empty with notifications re-enabled (a driver that
/// adds more meanwhile is served in the same call) or a step leaves a
/// chain. Used entries are published as they are added. Returns whether
/// any chain was used; fails only when the ring is broken. A queue the
/// driver has not made ready is left alone.
pub fn drain(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    mut per_chain: impl FnMut(DescriptorChain<&GuestMemoryMmap>) -> Step,
) -> Result<bool, GuestFault> {
    if !queue.ready() {
        return Ok(false);
    }
    let mut used_any = false;
    loop {
        queue.disable_notification(mem)?;
        let left = loop {
            let Some(chain) = next_chain(mem, queue)? else {
                break false;
            };
            let head = chain.head_index();
            match per_chain(chain) {
                Step::Used(len) => {
                    queue.add_used(mem, head, len)?;
                    used_any = true;
                }
                Step::Held => {}
                Step::Leave => {
                    queue.go_to_previous_position();
                    break true;
                }
            }
        };
        let more = queue.enable_notification(mem)?;
        if left || !more {
            return Ok(used_any);
        }
    }
}

/// The next available chain of `queue`, or None when its ring is empty.
pub fn next_chain<'m>(
    mem: &'m GuestMemoryMmap,
    queue: &mut Queue,
) -> Result<Option<DescriptorChain<&'m GuestMemoryMmap>>, GuestFault> {
    let avail = queue.avail_idx(mem, Ordering::Acquire)?;
    if avail.0 == queue.next_avail() {
        return Ok(None);
    }
    // The ring holds entries, so no chain means an unreadable ring (or a
    // driver that moved its index back).
    queue
        .iter(mem)?
        .next()
        .map(Some)
        .ok_or(GuestFault::AvailRing)
}

/// The driver's side of an active device: what the transport handed over
/// at DRIVER_OK.
pub struct Activated {
    /// Guest memory the queues live in.
    pub mem: GuestMemoryMmap,
    /// The queues, checked, in index order.
    pub queues: Vec<Queue>,
    /// How to notify the driver.
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

/// The state every device keeps for its driver.
#[derive(Default)]
pub struct DeviceCore {
    acked_features: u64,
    active: Option<Activated>,
    needs_reset: bool,
    bad_notifies: LogLimiter,
    broken_logs: LogLimiter,
}

impl DeviceCore {
    /// The features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Whether the driver accepted `feature` (a mask of one bit).
    pub fn has_feature(&self, feature: u64) -> bool {
        self.acked_features & feature != 0
    }

    /// The driver's side, while the device is active.
    pub fn active(&self) -> Option<&Activated> {
        self.active.as_ref()
    }

    /// The driver's side, while the device is active and its queues are
    /// usable (not broken): where host-side work is delivered.
    pub fn usable(&mut self) -> Option<&mut Activated> {
        if self.needs_reset {
            return None;
        }
        self.active.as_mut()
    }

    /// Whether a broken ring stopped the device until the driver resets it.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset
    }

    /// Stops the device after a broken ring: `device` names it in the log.
    /// The log is rate-limited: a guest can break and reset its queues in
    /// a loop.
    pub fn fail(&mut self, device: &str, err: &dyn std::error::Error) {
        if !self.needs_reset && self.broken_logs.allow() {
            log::error!("{device}: {}; the device needs a reset", describe(err));
        }
        self.needs_reset = true;
    }

    /// Ends serving queue `index` of the active device: when `served`
    /// used buffers and `wanted` says the driver asks for it, interrupts
    /// the driver; an error stops the device.
    fn finish<E: std::error::Error>(&mut self, device: &str, index: u16, wanted: Result<bool, E>) {
        match wanted {
            Ok(true) => {
                if let Some(active) = &self.active {
                    active.interrupt.signal_used_queue(index);
                }
            }
            Ok(false) => {}
            Err(err) => self.fail(device, &err),
        }
    }
}

/// Implements [`QueueDevice::core`] and [`QueueDevice::core_mut`] over
/// the device's `core` field.
macro_rules! core_accessors {
    () => {
        fn core(&self) -> &$crate::devices::virtio::device_core::DeviceCore {
            &self.core
        }

        fn core_mut(&mut self) -> &mut $crate::devices::virtio::device_core::DeviceCore {
            &mut self.core
        }
    };
}
pub(crate) use core_accessors;

/// A virtio device as its queues see it: the one contract the virtio-pci
/// transport (through [`VirtioDevice`]) and the vhost-user back-end drive.
pub trait QueueDevice: DeviceInfo {
    /// Why serving a queue failed: the queue is broken.
    type Error: std::error::Error + From<GuestFault>;

    /// The device's name in the log ("virtio-rng").
    fn name(&self) -> &str;
    /// The driver's side of the device.
    fn core(&self) -> &DeviceCore;
    /// The driver's side of the device, to change.
    fn core_mut(&mut self) -> &mut DeviceCore;

    /// Serves what the driver made available on queue `index` (which the
    /// device has); returns whether any buffer was used. Fails only when
    /// the queue is broken.
    fn serve(
        &mut self,
        index: u16,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, Self::Error>;

    /// Whether the driver wants an interrupt for what [`serve`] used on
    /// queue `index`. By default the queue decides (always without
    /// EVENT_IDX); a device that publishes used entries itself knows
    /// better.
    ///
    /// [`serve`]: QueueDevice::serve
    fn wants_interrupt(
        &mut self,
        index: u16,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, Self::Error> {
        let _ = index;
        queue
            .needs_notification(mem)
            .map_err(|e| GuestFault::Queue(e).into())
    }

    /// The driver kicked queue `index`: true (the default) serves it now;
    /// a device that serves that queue only when host work arrives (a
    /// network device's receive queue) notes the kick and returns false.
    fn kicked(&mut self, index: u16) -> bool {
        let _ = index;
        true
    }

    /// The driver finished setting the device up (the core holds its
    /// queues): device state that depends on a new driver starts here.
    fn activated(&mut self) {}

    /// The driver reset the device (the core has forgotten it): device
    /// state that belonged to the old driver goes here.
    fn reset_state(&mut self) {}

    /// Whether the device can be saved in a machine state; false (the
    /// default) until it implements [`save_own`](Self::save_own) and
    /// [`restore_own`](Self::restore_own).
    fn saves_state(&self) -> bool {
        false
    }

    /// Brings the device to rest before a save: completes the requests it
    /// holds (they go to the used ring before RAM and the vCPUs are
    /// captured) and flushes its backend. Nothing by default.
    fn quiesce(&mut self) -> Result<(), crate::snapshot::StateError> {
        Ok(())
    }

    /// The device's own state for a saved machine state, beyond what the
    /// transport saves (queues, features, status).
    fn save_own(&mut self) -> Result<Vec<u8>, crate::snapshot::StateError> {
        Err(crate::snapshot::StateError::Unsupported(
            self.name().to_string(),
        ))
    }

    /// Puts back what [`save_own`](Self::save_own) returned, after the
    /// transport activated the device with its restored queues.
    fn restore_own(&mut self, state: &[u8]) -> Result<(), crate::snapshot::StateError> {
        let _ = state;
        Err(crate::snapshot::StateError::Unsupported(
            self.name().to_string(),
        ))
    }

    /// How long a vhost-user vring thread keeps polling queue `index`'s
    /// available ring after serving it before it sleeps until the next
    /// kick. Zero (the default) never polls.
    fn poll_budget(&self, index: u16) -> Duration {
        let _ = index;
        Duration::ZERO
    }

    /// When a rate-limited device left requests waiting, the time to
    /// serve them again.
    fn retry_at(&self) -> Option<Instant> {
        None
    }

    /// A file descriptor the device's host side makes readable when it
    /// has work for the driver that no kick announces (host input, a
    /// timer).
    fn host_event_fd(&self) -> Option<RawFd> {
        None
    }

    /// Called when [`host_event_fd`](Self::host_event_fd) is readable:
    /// consumes the wake-up and returns the queues to serve.
    fn take_host_events(&mut self) -> Vec<u16> {
        Vec::new()
    }

    /// The host event fired: serves the queues the device names, as if
    /// the driver had kicked them.
    fn serve_host_events(&mut self) {
        for queue in self.take_host_events() {
            self.serve_active(queue);
        }
    }

    /// Serves activated queue `index` and interrupts the driver if it
    /// asks; a broken queue stops the device. Does nothing while the
    /// device is inactive or stopped, or for a queue it lacks.
    fn serve_active(&mut self, index: u16) {
        let core = self.core_mut();
        if core.needs_reset {
            return;
        }
        // The queues are lent out while the device serves one of them.
        let Some(mut active) = core.active.take() else {
            return;
        };
        let wanted = match active.queues.get_mut(usize::from(index)) {
            Some(queue) => self.serve(index, &active.mem, queue).and_then(|used| {
                if used {
                    self.wants_interrupt(index, &active.mem, queue)
                } else {
                    Ok(false)
                }
            }),
            None => Ok(false),
        };
        let core = self.core_mut();
        core.active = Some(active);
        let name = self.name().to_owned();
        self.core_mut().finish(&name, index, wanted);
    }
}

impl<D: QueueDevice> VirtioDevice for D {
    fn ack_features(&mut self, features: u64) {
        let offered = self.features();
        self.core_mut().acked_features = features & offered;
    }

    fn activate(&mut self, context: ActivationContext) -> Result<(), ActivateError> {
        let ActivationContext {
            mem,
            queues,
            interrupt,
        } = context;
        let count = self.queue_max_sizes().len();
        let core = self.core_mut();
        let event_idx = core.has_feature(VIRTIO_RING_F_EVENT_IDX);
        let queues = checked_queues(queues, count, &mem, event_idx)?;
        core.active = Some(Activated {
            mem,
            queues,
            interrupt,
        });
        core.needs_reset = false;
        self.activated();
        Ok(())
    }

    fn queue_notify(&mut self, queue: u16) {
        if usize::from(queue) >= self.queue_max_sizes().len() {
            if self.core_mut().bad_notifies.allow() {
                log::warn!("{}: notify for nonexistent queue {queue}", self.name());
            }
            return;
        }
        if self.kicked(queue) {
            self.serve_active(queue);
        }
    }

    fn reset(&mut self) {
        let core = self.core_mut();
        core.active = None;
        core.acked_features = 0;
        core.needs_reset = false;
        self.reset_state();
    }

    fn needs_reset(&self) -> bool {
        self.core().needs_reset
    }

    fn saves_state(&self) -> bool {
        QueueDevice::saves_state(self)
    }

    fn quiesce(&mut self) -> Result<(), crate::snapshot::StateError> {
        QueueDevice::quiesce(self)
    }

    fn save_state(&mut self) -> Result<Vec<u8>, crate::snapshot::StateError> {
        self.save_own()
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), crate::snapshot::StateError> {
        self.restore_own(state)
    }
}
