// SPDX-License-Identifier: Apache-2.0
//! The virtio-pci transport in a saved machine state: its configuration
//! space, the common registers (feature selects, the driver's features,
//! status, configuration generation), every queue's registers and ring
//! positions, the ISR byte, MSI-X table and vector assignments, and the
//! device's own state. Restoring re-activates a device the driver had
//! started, with its queues where they were, and lets the device look at
//! each ready queue once, so a request the driver made just before the
//! save is served.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};

use super::{MsixVectors, VirtioPciDevice, status};
use crate::devices::pci::msix::MsixState;
use crate::devices::virtio::device_type;
use crate::snapshot::{self, Persist, StateError};

#[derive(Serialize, Deserialize)]
struct QueueRegs {
    max_size: u16,
    next_avail: u16,
    next_used: u16,
    event_idx: bool,
    size: u16,
    ready: bool,
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
}

impl QueueRegs {
    fn of(queue: &Queue) -> Self {
        let state = queue.state();
        Self {
            max_size: state.max_size,
            next_avail: state.next_avail,
            next_used: state.next_used,
            event_idx: state.event_idx_enabled,
            size: state.size,
            ready: state.ready,
            desc_table: state.desc_table,
            avail_ring: state.avail_ring,
            used_ring: state.used_ring,
        }
    }

    fn queue(&self) -> Result<Queue, String> {
        Queue::try_from(QueueState {
            max_size: self.max_size,
            next_avail: self.next_avail,
            next_used: self.next_used,
            event_idx_enabled: self.event_idx,
            size: self.size,
            ready: self.ready,
            desc_table: self.desc_table,
            avail_ring: self.avail_ring,
            used_ring: self.used_ring,
        })
        .map_err(|e| format!("{e:?}"))
    }
}

#[derive(Serialize, Deserialize)]
struct MsixAssignment {
    table: MsixState,
    config: u16,
    queues: Vec<u16>,
}

#[derive(Serialize, Deserialize)]
struct TransportState {
    config: Vec<u8>,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    queue_select: u16,
    status: u8,
    config_generation: u8,
    active: bool,
    queues: Vec<QueueRegs>,
    isr: u8,
    line: u8,
    msix: Option<MsixAssignment>,
    device: Vec<u8>,
}

impl VirtioPciDevice {
    fn name(&self) -> &'static str {
        device_type::name(self.device.device_type())
    }
}

impl Persist for VirtioPciDevice {
    fn quiesce(&mut self) -> Result<(), StateError> {
        if self.active {
            self.device.quiesce()?;
        }
        Ok(())
    }

    fn save(&mut self) -> Result<Vec<u8>, StateError> {
        let name = self.name();
        let device = if self.active {
            self.device.save_state()?
        } else {
            Vec::new()
        };
        let msix = self.interrupt.with_msix(|m| MsixAssignment {
            table: m.table.saved(),
            config: m.config,
            queues: m.queues.clone(),
        });
        let isr = *self.interrupt.isr.lock().unwrap_or_else(|e| e.into_inner());
        snapshot::encode(
            name,
            &TransportState {
                config: self.config.saved_bytes(),
                device_feature_select: self.device_feature_select,
                driver_feature_select: self.driver_feature_select,
                driver_features: self.driver_features,
                queue_select: self.queue_select,
                status: self.status,
                config_generation: self.config_generation,
                active: self.active,
                queues: self.queues.iter().map(QueueRegs::of).collect(),
                isr,
                line: self.interrupt.line.load(Ordering::SeqCst),
                msix,
                device,
            },
        )
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let name = self.name();
        let state: TransportState = snapshot::decode(name, bytes)?;
        let invalid = |what: String| snapshot::invalid(name, what);
        // Everything is checked before anything changes.
        if state.queues.len() != self.queues.len() {
            return Err(invalid(format!(
                "{} queues saved, the device has {}",
                state.queues.len(),
                self.queues.len()
            )));
        }
        let mut queues = Vec::with_capacity(state.queues.len());
        for (index, (saved, now)) in state.queues.iter().zip(&self.queues).enumerate() {
            if saved.max_size != now.max_size() {
                return Err(invalid(format!("queue {index} has another size")));
            }
            queues.push(
                saved
                    .queue()
                    .map_err(|e| invalid(format!("queue {index}: {e}")))?,
            );
        }
        let mut config = self.config.clone();
        config.restore_bytes(&state.config).map_err(invalid)?;
        match (&state.msix, self.interrupt.msix.is_some()) {
            (Some(saved), true) if saved.queues.len() == self.queues.len() => {}
            (None, false) => {}
            _ => return Err(invalid("its MSI-X does not match".to_string())),
        }

        self.device.reset();
        self.config = config;
        self.queues = queues;
        self.device_feature_select = state.device_feature_select;
        self.driver_feature_select = state.driver_feature_select;
        self.driver_features = state.driver_features;
        self.queue_select = state.queue_select;
        self.status = state.status;
        self.config_generation = state.config_generation;
        self.active = false;
        self.interrupt.line.store(state.line, Ordering::SeqCst);
        if let Some(saved) = &state.msix {
            let restored = self.interrupt.with_msix(|m: &mut MsixVectors| {
                m.config = saved.config;
                m.queues.clone_from(&saved.queues);
                m.table.restore(&saved.table)
            });
            if let Some(Err(e)) = restored {
                return Err(invalid(e));
            }
        }
        if self.status & status::FEATURES_OK != 0 {
            self.device.ack_features(self.driver_features);
        }
        if state.active {
            self.activate();
            if !self.active {
                return Err(invalid(
                    "the restored device could not be started again".to_string(),
                ));
            }
            self.device.restore_state(&state.device)?;
        }
        *self.interrupt.isr.lock().unwrap_or_else(|e| e.into_inner()) = state.isr;
        let msix_on = self
            .interrupt
            .with_msix(|m| m.table.enabled())
            .unwrap_or(false);
        if state.isr != 0 && !msix_on {
            self.interrupt.irq.set_level(u32::from(state.line), true);
        }
        if self.active {
            // What the driver made available just before the save.
            for (index, queue) in self.queues.iter().enumerate() {
                if queue.ready() {
                    self.device.queue_notify(index as u16);
                }
            }
        }
        Ok(())
    }
}
