// SPDX-License-Identifier: Apache-2.0
//! The i8042 keyboard controller at ports 0x60 (data) and 0x64
//! (status/command), with a PS/2 keyboard behind it.
//!
//! It implements the controller commands firmware and kernels use at boot
//! (self tests, command byte, port enable/disable, output port, the reset
//! pulse that reboots the machine) and the keyboard's command set (reset
//! with BAT, identify, LEDs, scan code set, typematic, enable/disable).
//! Host key presses and the PS/2 mouse arrive with the input work.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::bus::BusDevice;
use crate::control::{Outcome, VmControl};
use crate::devices::irq::InterruptLine;

/// The data port.
pub const DATA_PORT: u64 = 0x60;
/// The status/command port.
pub const COMMAND_PORT: u64 = 0x64;
/// The keyboard's ISA interrupt.
pub const KEYBOARD_IRQ: u32 = 1;

const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM_FLAG: u8 = 0x04;
const STATUS_LAST_WAS_COMMAND: u8 = 0x08;
const STATUS_UNLOCKED: u8 = 0x10;

const CMD_BYTE_KBD_INT: u8 = 0x01;
const CMD_BYTE_SYSTEM_FLAG: u8 = 0x04;
const CMD_BYTE_KBD_DISABLED: u8 = 0x10;
const CMD_BYTE_AUX_DISABLED: u8 = 0x20;
const CMD_BYTE_TRANSLATE: u8 = 0x40;

const KBD_ACK: u8 = 0xfa;
const KBD_BAT_OK: u8 = 0xaa;
const KBD_ECHO: u8 = 0xee;
const KBD_RESEND: u8 = 0xfe;

/// Bytes the keyboard can queue before it drops input.
const QUEUE_LIMIT: usize = 64;

/// What the next byte written to the data port means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataTarget {
    Keyboard,
    CommandByte,
    OutputPort,
    KeyboardOutput,
    AuxOutput,
    Aux,
    KeyboardArgument(u8),
}

/// The controller and its keyboard.
pub struct I8042 {
    control: Arc<VmControl>,
    kbd_irq: Box<dyn InterruptLine>,
    command_byte: u8,
    output_port: u8,
    last_was_command: bool,
    target: DataTarget,
    output: VecDeque<u8>,
    scan_set: u8,
    kbd_enabled: bool,
}

impl I8042 {
    /// A controller that raises `kbd_irq` and resets through `control`.
    pub fn new(control: Arc<VmControl>, kbd_irq: Box<dyn InterruptLine>) -> Self {
        Self {
            control,
            kbd_irq,
            command_byte: CMD_BYTE_KBD_INT | CMD_BYTE_SYSTEM_FLAG | CMD_BYTE_TRANSLATE,
            // Reset line high (not in reset), A20 enabled.
            output_port: 0x03,
            last_was_command: false,
            target: DataTarget::Keyboard,
            output: VecDeque::new(),
            scan_set: 2,
            kbd_enabled: true,
        }
    }

    fn status(&self) -> u8 {
        let mut status = STATUS_UNLOCKED;
        if !self.output.is_empty() {
            status |= STATUS_OUTPUT_FULL;
        }
        if self.command_byte & CMD_BYTE_SYSTEM_FLAG != 0 {
            status |= STATUS_SYSTEM_FLAG;
        }
        if self.last_was_command {
            status |= STATUS_LAST_WAS_COMMAND;
        }
        status
    }

    fn push(&mut self, byte: u8) {
        if self.output.len() >= QUEUE_LIMIT {
            log::debug!("i8042: output queue full, dropping {byte:#04x}");
            return;
        }
        self.output.push_back(byte);
        if self.command_byte & CMD_BYTE_KBD_INT != 0 {
            self.kbd_irq.pulse();
        }
    }

    fn controller_command(&mut self, cmd: u8) {
        match cmd {
            0x20 => self.push(self.command_byte),
            0x60 => self.target = DataTarget::CommandByte,
            0xa7 => self.command_byte |= CMD_BYTE_AUX_DISABLED,
            0xa8 => self.command_byte &= !CMD_BYTE_AUX_DISABLED,
            // Interface tests: 0 means no error.
            0xa9 | 0xab => self.push(0x00),
            0xaa => {
                self.command_byte |= CMD_BYTE_SYSTEM_FLAG;
                self.push(0x55);
            }
            0xad => self.command_byte |= CMD_BYTE_KBD_DISABLED,
            0xae => self.command_byte &= !CMD_BYTE_KBD_DISABLED,
            0xc0 => self.push(0x00),
            0xd0 => self.push(self.output_port),
            0xd1 => self.target = DataTarget::OutputPort,
            0xd2 => self.target = DataTarget::KeyboardOutput,
            0xd3 => self.target = DataTarget::AuxOutput,
            0xd4 => self.target = DataTarget::Aux,
            // Pulse output lines: bit 0 clear pulses the CPU reset line.
            0xf0..=0xff => {
                if cmd & 0x01 == 0 {
                    self.control.request_stop(Outcome::Reset);
                }
            }
            _ => log::debug!("i8042: unhandled controller command {cmd:#04x}"),
        }
    }

    fn data_write(&mut self, value: u8) {
        let target = std::mem::replace(&mut self.target, DataTarget::Keyboard);
        match target {
            DataTarget::Keyboard => self.keyboard_command(value),
            DataTarget::KeyboardArgument(cmd) => self.keyboard_argument(cmd, value),
            DataTarget::CommandByte => self.command_byte = value,
            DataTarget::OutputPort => {
                self.output_port = value;
                if value & 0x01 == 0 {
                    self.control.request_stop(Outcome::Reset);
                }
            }
            DataTarget::KeyboardOutput | DataTarget::AuxOutput => self.push(value),
            // No PS/2 mouse yet: the controller reports it as absent by
            // never answering, as a PC without a mouse does.
            DataTarget::Aux => log::debug!("i8042: aux byte {value:#04x} with no mouse"),
        }
    }

    fn keyboard_command(&mut self, cmd: u8) {
        match cmd {
            // Commands with an argument byte: ack now, ack the argument later.
            0xed | 0xf0 | 0xf3 => {
                self.push(KBD_ACK);
                self.target = DataTarget::KeyboardArgument(cmd);
            }
            0xee => self.push(KBD_ECHO),
            0xf2 => {
                self.push(KBD_ACK);
                self.push(0xab);
                // With translation on, the controller reports ID 0x41.
                let id = if self.command_byte & CMD_BYTE_TRANSLATE != 0 {
                    0x41
                } else {
                    0x83
                };
                self.push(id);
            }
            0xf4 => {
                self.kbd_enabled = true;
                self.push(KBD_ACK);
            }
            0xf5 => {
                self.kbd_enabled = false;
                self.scan_set = 2;
                self.push(KBD_ACK);
            }
            0xf6 => {
                self.scan_set = 2;
                self.push(KBD_ACK);
            }
            0xf7..=0xfd => self.push(KBD_ACK),
            0xff => {
                self.output.clear();
                self.kbd_enabled = true;
                self.scan_set = 2;
                self.push(KBD_ACK);
                self.push(KBD_BAT_OK);
            }
            _ => self.push(KBD_RESEND),
        }
    }

    fn keyboard_argument(&mut self, cmd: u8, arg: u8) {
        match cmd {
            0xf0 if arg == 0 => {
                self.push(KBD_ACK);
                self.push(self.scan_set);
            }
            0xf0 if (1..=3).contains(&arg) => {
                self.scan_set = arg;
                self.push(KBD_ACK);
            }
            0xf0 => self.push(KBD_RESEND),
            _ => self.push(KBD_ACK),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            0 => self.output.pop_front().unwrap_or(0),
            4 => self.status(),
            _ => 0xff,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            0 => {
                self.last_was_command = false;
                self.data_write(value);
            }
            4 => {
                self.last_was_command = true;
                self.controller_command(value);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountingIrq(Arc<AtomicUsize>);

    impl InterruptLine for CountingIrq {
        fn pulse(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn controller() -> (I8042, Arc<VmControl>, Arc<AtomicUsize>) {
        let control = Arc::new(VmControl::new());
        let irqs = Arc::new(AtomicUsize::new(0));
        let dev = I8042::new(control.clone(), Box::new(CountingIrq(irqs.clone())));
        (dev, control, irqs)
    }

    fn read_data(dev: &mut I8042) -> u8 {
        let mut data = [0u8];
        dev.read(0, &mut data);
        data[0]
    }

    #[test]
    fn test_i8042_self_test_answers_0x55() {
        let (mut dev, _, _) = controller();
        dev.write(4, &[0xaa]);
        assert_eq!(read_data(&mut dev), 0x55);
    }

    #[test]
    fn test_i8042_keyboard_reset_acks_and_passes_bat() {
        let (mut dev, _, irqs) = controller();
        dev.write(0, &[0xff]);
        assert_eq!(
            [read_data(&mut dev), read_data(&mut dev)],
            [KBD_ACK, KBD_BAT_OK]
        );
        assert_eq!(irqs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn test_i8042_pulse_reset_line_requests_reset() {
        let (mut dev, control, _) = controller();
        dev.write(4, &[0xfe]);
        assert_eq!(control.outcome(), Some(Outcome::Reset));
    }

    #[test]
    fn test_i8042_command_byte_round_trips() {
        let (mut dev, _, _) = controller();
        dev.write(4, &[0x60]);
        dev.write(0, &[0x45]);
        dev.write(4, &[0x20]);
        assert_eq!(read_data(&mut dev), 0x45);
    }

    #[test]
    fn test_i8042_status_shows_output_full() {
        let (mut dev, _, _) = controller();
        dev.write(4, &[0xab]);
        let mut status = [0u8];
        dev.read(4, &mut status);
        assert_eq!(status[0] & STATUS_OUTPUT_FULL, STATUS_OUTPUT_FULL);
    }

    #[test]
    fn test_i8042_scan_set_query_reports_set() {
        let (mut dev, _, _) = controller();
        dev.write(0, &[0xf0]);
        dev.write(0, &[0x00]);
        assert_eq!(
            [
                read_data(&mut dev),
                read_data(&mut dev),
                read_data(&mut dev)
            ],
            [KBD_ACK, KBD_ACK, 2]
        );
    }

    #[test]
    fn test_i8042_full_queue_drops_without_panic() {
        let (mut dev, _, _) = controller();
        for _ in 0..200 {
            dev.write(0, &[0xee]);
        }
        assert_eq!(dev.output.len(), QUEUE_LIMIT);
    }
}
