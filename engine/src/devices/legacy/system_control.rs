// SPDX-License-Identifier: Apache-2.0
//! The two chipset reset registers firmware and kernels use besides the
//! keyboard controller: System Control Port A (0x92: fast A20 and a reset
//! bit) and the PIIX Reset Control Register (0xCF9, handled by the PCI
//! root since it shares 0xCF8's dword).

use std::sync::Arc;

use crate::bus::{BusDevice, DeviceState};
use crate::control::{Outcome, VmControl};
use crate::snapshot::{self, Persist, StateError};

/// Port of System Control Port A.
pub const PORT_A: u64 = 0x92;

/// System Control Port A: bit 0 resets the machine, bit 1 is the A20 gate.
pub struct SystemControlA {
    control: Arc<VmControl>,
    value: u8,
}

impl SystemControlA {
    /// Port A of the VM that `control` stops.
    pub fn new(control: Arc<VmControl>) -> Self {
        // A20 enabled: KVM does not mask address line 20.
        Self {
            control,
            value: 0x02,
        }
    }
}

impl Persist for SystemControlA {
    fn save(&mut self) -> Result<Vec<u8>, StateError> {
        snapshot::encode("system control port A", &self.value)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        self.value = snapshot::decode("system control port A", bytes)?;
        Ok(())
    }
}

impl BusDevice for SystemControlA {
    fn state(&mut self) -> DeviceState<'_> {
        DeviceState::Saved(self)
    }

    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = self.value;
        }
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        // A 0 -> 1 transition of bit 0 resets the CPU.
        if value & 1 != 0 && self.value & 1 == 0 {
            self.control.request_stop(Outcome::Reset);
        }
        self.value = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_port_a_reset_bit_requests_reset() {
        let control = Arc::new(VmControl::new());
        SystemControlA::new(control.clone()).write(0, &[0x03]);
        assert_eq!(control.outcome(), Some(Outcome::Reset));
    }

    #[test]
    fn test_port_a_a20_write_does_not_reset() {
        let control = Arc::new(VmControl::new());
        SystemControlA::new(control.clone()).write(0, &[0x02]);
        assert_eq!(control.outcome(), None);
    }
}
