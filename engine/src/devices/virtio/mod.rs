// SPDX-License-Identifier: Apache-2.0
//! Virtio devices (virtio 1.x), independent of the transport that carries
//! them: the [`VirtioDevice`] trait every device implements, the
//! [`ActivationContext`] a transport hands a device once the driver sets
//! DRIVER_OK, and the [`VirtioInterrupt`] it signals through.
//!
//! A device's queue processing is a plain method over guest memory and its
//! queues, so the same code runs behind virtio-pci, behind vhost-user, and
//! in unit tests against virtio-queue's mock queues.

pub mod block;
pub mod console;
pub mod device_core;
pub mod gpu;
pub mod input;
pub mod net;
pub mod pci;
pub mod qcow2;
pub mod rng;
pub mod shared;
pub mod snd;
#[cfg(test)]
pub(crate) mod test_queue;
pub mod write_through;

use std::sync::Arc;

use virtio_queue::Queue;

use crate::memory::GuestMemoryMmap;

/// Feature bit: the device speaks virtio 1.x (modern).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Feature bit: the driver may put a chain in an indirect descriptor table.
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
/// Feature bit: the driver may use the avail/used event index fields.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;

/// Virtio device type IDs (virtio spec 5).
pub mod device_type {
    /// Network device.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Console device.
    pub const CONSOLE: u32 = 3;
    /// Entropy device.
    pub const RNG: u32 = 4;
    /// GPU device.
    pub const GPU: u32 = 16;
    /// Input device.
    pub const INPUT: u32 = 18;
    /// Sound device.
    pub const SOUND: u32 = 25;

    /// What a user calls a device of type `id`.
    pub fn name(id: u32) -> &'static str {
        match id {
            NET => "virtio network card",
            BLOCK => "virtio disk",
            CONSOLE => "virtio console",
            RNG => "virtio random number generator",
            GPU => "virtio GPU",
            INPUT => "virtio input device",
            SOUND => "virtio sound card",
            _ => "virtio device",
        }
    }
}

/// How a device tells the driver it has work.
pub trait VirtioInterrupt: Send + Sync {
    /// Signals that queue `queue` has new used buffers.
    fn signal_used_queue(&self, queue: u16);
    /// Signals that the device configuration changed.
    fn signal_config_change(&self);
}

/// What a device gets when the driver has finished setting it up.
pub struct ActivationContext {
    /// Guest memory the queues live in.
    pub mem: GuestMemoryMmap,
    /// The queues, configured and ready, in index order.
    pub queues: Vec<Queue>,
    /// How to notify the driver.
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

/// Why a device refused to activate.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver set up a different number of queues than the device has.
    #[error("Expected {expected} queues, got {got}")]
    QueueCount {
        /// Queues the device needs.
        expected: usize,
        /// Queues it got.
        got: usize,
    },
    /// A queue the driver set up is not valid in guest memory.
    #[error("Queue {0} is not valid")]
    InvalidQueue(usize),
}

/// What any transport asks of a device before and besides its queues:
/// its type, queues, features and configuration space.
pub trait DeviceInfo: Send {
    /// The virtio device type ([`device_type`]).
    fn device_type(&self) -> u32;
    /// The largest size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// The feature bits the device offers.
    fn features(&self) -> u64;
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space (by default none of
    /// it is writable).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }
}

/// A virtio device, as its transport sees it. Devices implement
/// [`device_core::QueueDevice`], which makes them one.
pub trait VirtioDevice: DeviceInfo {
    /// Records the features the driver accepted (a subset of [`features`]).
    ///
    /// [`features`]: DeviceInfo::features
    fn ack_features(&mut self, features: u64);
    /// Starts the device with the driver's queues.
    fn activate(&mut self, context: ActivationContext) -> Result<(), ActivateError>;
    /// The driver notified queue `queue`: process what it made available.
    fn queue_notify(&mut self, queue: u16);
    /// Returns the device to its initial state (the driver wrote status 0).
    fn reset(&mut self);
    /// True once the device found its queues broken (the transport then
    /// sets DEVICE_NEEDS_RESET and tells the driver).
    fn needs_reset(&self) -> bool {
        false
    }
    /// Whether the device can be saved in a machine state (false by
    /// default: a device that says nothing cannot be left out silently).
    fn saves_state(&self) -> bool {
        false
    }
    /// Brings the device to rest for a save (see
    /// [`Persist::quiesce`](crate::snapshot::Persist::quiesce)).
    fn quiesce(&mut self) -> Result<(), crate::snapshot::StateError> {
        Ok(())
    }
    /// The device's own state for a saved machine state (its queues and
    /// features are the transport's to save).
    fn save_state(&mut self) -> Result<Vec<u8>, crate::snapshot::StateError> {
        Err(crate::snapshot::StateError::Unsupported(
            device_type::name(self.device_type()).to_string(),
        ))
    }
    /// Puts back what [`save_state`](Self::save_state) returned, once the
    /// transport has activated the device again with its restored queues.
    fn restore_state(&mut self, state: &[u8]) -> Result<(), crate::snapshot::StateError> {
        let _ = state;
        Err(crate::snapshot::StateError::Unsupported(
            device_type::name(self.device_type()).to_string(),
        ))
    }
}

/// The driver's `count` queues, each checked against guest memory and
/// with VIRTIO_RING_F_EVENT_IDX as negotiated (`event_idx`).
pub fn checked_queues(
    mut queues: Vec<Queue>,
    count: usize,
    mem: &GuestMemoryMmap,
    event_idx: bool,
) -> Result<Vec<Queue>, ActivateError> {
    use virtio_queue::QueueT;
    if queues.len() != count {
        return Err(ActivateError::QueueCount {
            expected: count,
            got: queues.len(),
        });
    }
    for (i, queue) in queues.iter_mut().enumerate() {
        if !queue.is_valid(mem) {
            return Err(ActivateError::InvalidQueue(i));
        }
        queue.set_event_idx(event_idx);
    }
    Ok(queues)
}

/// Copies `config` bytes at `offset` into `data`; bytes past the end read 0.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|at| config.get(at))
            .copied()
            .unwrap_or(0);
    }
}

/// Formats an error with its chain of causes, for the log.
pub(crate) fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Errors logged before only every `LOG_EVERY`th is.
const LOG_FIRST: u64 = 10;
const LOG_EVERY: u64 = 1000;

/// Lets the first few errors through to the log, then every thousandth, so
/// a hostile guest cannot flood the host's log.
#[derive(Debug, Default)]
pub(crate) struct LogLimiter {
    seen: u64,
}

impl LogLimiter {
    /// Counts one error; true when it should be logged.
    pub(crate) fn allow(&mut self) -> bool {
        self.seen = self.seen.saturating_add(1);
        self.seen <= LOG_FIRST || self.seen % LOG_EVERY == 0
    }
}

/// Rate-limited logging of a device's failed requests: guest mistakes and
/// host failures are counted apart, so a hostile guest cannot hide host
/// errors by flooding the log with its own.
#[derive(Debug, Default)]
pub(crate) struct ErrorLog {
    pub(crate) guest: LogLimiter,
    pub(crate) host: LogLimiter,
}

impl ErrorLog {
    /// Logs `err` from `device` (warn for guest errors, error for host ones).
    pub(crate) fn report(&mut self, device: &str, err: &dyn std::error::Error, guest: bool) {
        let limiter = if guest {
            &mut self.guest
        } else {
            &mut self.host
        };
        if !limiter.allow() {
            return;
        }
        let seen = limiter.seen;
        if guest {
            log::warn!("{device}: bad request ({seen} so far): {}", describe(err));
        } else {
            log::error!(
                "{device}: request failed ({seen} so far): {}",
                describe(err)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_log_limiter_after_first_ten_allows_every_thousandth() {
        // Arrange
        let mut limiter = LogLimiter::default();

        // Act
        let allowed: Vec<u64> = (1..=3000).filter(|_| limiter.allow()).collect();

        // Assert
        let mut expected: Vec<u64> = (1..=10).collect();
        expected.extend([1000, 2000, 3000]);
        assert_eq!(allowed, expected);
    }
}
