// SPDX-License-Identifier: Apache-2.0
//! ACPI fixed-hardware registers, in every VM (directly booted kernels
//! find the FADT in memory, firmware gets it through fw_cfg), at the ports
//! the FADT names: PM1a event (status/enable), PM1a control (sleep type +
//! sleep enable: S5 powers the VM off), the 24-bit PM timer at
//! 3.579545 MHz, and GPE0. The power button sets PWRBTN_STS and raises the
//! SCI (level-triggered) until the guest clears the status bit.

use std::sync::Arc;
use std::time::Instant;

use crate::boot::acpi::{
    GPE0_LEN, GPE0_OFFSET, PM_TMR_OFFSET, PM1_CNT_OFFSET, PM1_EVT_LEN, PWRBTN_BIT, SLP_TYP_S5,
};
use crate::bus::{BusDevice, DeviceState, fill_le, le_value};
use crate::control::{Outcome, VmControl};
use crate::snapshot::{self, Persist, StateError};

/// I/O base of the PM registers.
pub const PM_BASE: u16 = 0x600;
/// Ports decoded from [`PM_BASE`].
pub const PM_PORTS: u64 = 0x20;
/// The SCI's ISA interrupt.
pub const SCI_IRQ: u8 = 9;

const SCI_EN: u16 = 1;
const SLP_EN: u16 = 1 << 13;
const PM_TIMER_HZ: u128 = 3_579_545;

/// Drives the SCI's level.
pub trait SciLine: Send {
    /// Raises (true) or lowers (false) the SCI.
    fn set_level(&self, high: bool);
}

/// The PM register block.
pub struct AcpiPm {
    control: Arc<VmControl>,
    sci: Box<dyn SciLine>,
    pm1_status: u16,
    pm1_enable: u16,
    pm1_control: u16,
    gpe0: [u8; GPE0_LEN as usize],
    started: Instant,
}

impl AcpiPm {
    /// PM registers of the VM `control` stops, raising `sci`.
    pub fn new(control: Arc<VmControl>, sci: Box<dyn SciLine>) -> Self {
        Self {
            control,
            sci,
            pm1_status: 0,
            pm1_enable: 0,
            // No SMI port: the machine is always in ACPI mode.
            pm1_control: SCI_EN,
            gpe0: [0; GPE0_LEN as usize],
            started: Instant::now(),
        }
    }

    /// Presses the power button (the guest decides what to do).
    pub fn press_power_button(&mut self) {
        self.pm1_status |= 1 << PWRBTN_BIT;
        self.update_sci();
    }

    fn update_sci(&self) {
        let pending = self.pm1_status & self.pm1_enable != 0;
        self.sci
            .set_level(pending && self.pm1_control & SCI_EN != 0);
    }

    fn timer(&self) -> u32 {
        let ticks = self.started.elapsed().as_nanos() * PM_TIMER_HZ / 1_000_000_000;
        (ticks & 0xff_ffff) as u32
    }

    fn register_value(&self, offset: u64) -> u64 {
        let evt = PM1_EVT_LEN / 2;
        match offset {
            o if o < u64::from(evt) => u64::from(self.pm1_status),
            o if o < u64::from(PM1_EVT_LEN) => u64::from(self.pm1_enable),
            o if o == u64::from(PM1_CNT_OFFSET) => u64::from(self.pm1_control),
            o if o == u64::from(PM_TMR_OFFSET) => u64::from(self.timer()),
            _ => 0,
        }
    }
}

/// What a saved state holds: the PM1 and GPE registers and the PM
/// timer's count, which goes on from there.
#[derive(serde::Serialize, serde::Deserialize)]
struct PmState {
    pm1_status: u16,
    pm1_enable: u16,
    pm1_control: u16,
    gpe0: Vec<u8>,
    timer_ns: u64,
}

impl Persist for AcpiPm {
    fn save(&mut self) -> Result<Vec<u8>, StateError> {
        snapshot::encode(
            "ACPI power management",
            &PmState {
                pm1_status: self.pm1_status,
                pm1_enable: self.pm1_enable,
                pm1_control: self.pm1_control,
                gpe0: self.gpe0.to_vec(),
                timer_ns: u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            },
        )
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        const NAME: &str = "ACPI power management";
        let state: PmState = snapshot::decode(NAME, bytes)?;
        self.gpe0 = state
            .gpe0
            .as_slice()
            .try_into()
            .map_err(|_| snapshot::invalid(NAME, "GPE0 block of the wrong size"))?;
        // The timer counts 24 bits: only the count modulo its period
        // matters, so a started time that far back always exists.
        let period_ns = (1u64 << 24) * 1_000_000_000 / PM_TIMER_HZ as u64 + 1;
        let back = std::time::Duration::from_nanos(state.timer_ns % period_ns);
        self.started = Instant::now()
            .checked_sub(back)
            .unwrap_or_else(Instant::now);
        self.pm1_status = state.pm1_status;
        self.pm1_enable = state.pm1_enable;
        self.pm1_control = state.pm1_control;
        self.update_sci();
        Ok(())
    }
}

impl BusDevice for AcpiPm {
    fn state(&mut self) -> DeviceState<'_> {
        DeviceState::Saved(self)
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let gpe = u64::from(GPE0_OFFSET);
        if (gpe..gpe + u64::from(GPE0_LEN)).contains(&offset) {
            let start = (offset - gpe) as usize;
            for (i, byte) in data.iter_mut().enumerate() {
                *byte = self.gpe0.get(start + i).copied().unwrap_or(0);
            }
            return;
        }
        // Registers are read at their start; reads into the middle of one
        // see its upper bytes.
        let (base, shift) = match offset {
            1 | 3 | 5 => (offset - 1, 8),
            9..=11 => (u64::from(PM_TMR_OFFSET), 8 * (offset - 8)),
            _ => (offset, 0),
        };
        fill_le(data, self.register_value(base) >> shift);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let value = le_value(data) as u16;
        match offset {
            // Status bits are cleared by writing ones.
            0 => self.pm1_status &= !value,
            2 => self.pm1_enable = value,
            o if o == u64::from(PM1_CNT_OFFSET) => {
                let sleep_type = (value >> 10) & 0x7;
                if value & SLP_EN != 0 && sleep_type == u16::from(SLP_TYP_S5) {
                    self.control.request_stop(Outcome::PowerOff);
                }
                self.pm1_control = (value & !SLP_EN) | SCI_EN;
            }
            o if (u64::from(GPE0_OFFSET)..u64::from(GPE0_OFFSET + GPE0_LEN)).contains(&o) => {
                let start = (o - u64::from(GPE0_OFFSET)) as usize;
                for (i, &byte) in data.iter().enumerate() {
                    let at = start + i;
                    if let Some(slot) = self.gpe0.get_mut(at) {
                        // The first half is status (write 1 to clear).
                        if at < GPE0_LEN as usize / 2 {
                            *slot &= !byte;
                        } else {
                            *slot = byte;
                        }
                    }
                }
            }
            _ => {}
        }
        self.update_sci();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Level(Arc<AtomicBool>);

    impl SciLine for Level {
        fn set_level(&self, high: bool) {
            self.0.store(high, Ordering::SeqCst);
        }
    }

    fn pm() -> (AcpiPm, Arc<VmControl>, Arc<AtomicBool>) {
        let control = Arc::new(VmControl::new());
        let level = Arc::new(AtomicBool::new(false));
        (
            AcpiPm::new(control.clone(), Box::new(Level(level.clone()))),
            control,
            level,
        )
    }

    #[test]
    fn test_acpi_pm_s5_sleep_powers_off() {
        let (mut pm, control, _) = pm();
        pm.write(4, &(SLP_EN | (5 << 10)).to_le_bytes());
        assert_eq!(control.outcome(), Some(Outcome::PowerOff));
    }

    #[test]
    fn test_acpi_pm_power_button_raises_sci_until_cleared() {
        let (mut pm, _, level) = pm();
        pm.write(2, &(1u16 << PWRBTN_BIT).to_le_bytes());
        pm.press_power_button();
        let raised = level.load(Ordering::SeqCst);
        pm.write(0, &(1u16 << PWRBTN_BIT).to_le_bytes());
        assert_eq!((raised, level.load(Ordering::SeqCst)), (true, false));
    }

    #[test]
    fn test_acpi_pm_control_reads_sci_enabled() {
        let (mut pm, _, _) = pm();
        let mut data = [0u8; 2];
        pm.read(4, &mut data);
        assert_eq!(u16::from_le_bytes(data) & SCI_EN, SCI_EN);
    }

    #[test]
    fn test_acpi_pm_timer_advances() {
        let (mut pm, _, _) = pm();
        let mut a = [0u8; 4];
        pm.read(8, &mut a);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let mut b = [0u8; 4];
        pm.read(8, &mut b);
        assert_ne!(a, b);
    }
}
