// SPDX-License-Identifier: Apache-2.0
//! The 16550A UART at COM1 (0x3F8, IRQ 4), from vm-superio, with the
//! guest's output going to any writer (stdout, a log file, a test capture).

use std::io::Write;

use vm_superio::{Serial as Uart, serial::NoEvents};

use crate::bus::BusDevice;
use crate::devices::irq::IrqLine;

/// COM1's I/O base.
pub const COM1_BASE: u64 = 0x3f8;
/// Number of ports a UART decodes.
pub const UART_PORTS: u64 = 8;
/// COM1's ISA interrupt.
pub const COM1_IRQ: u32 = 4;

/// Where the guest's serial output goes.
pub type SerialOut = Box<dyn Write + Send>;

/// A 16550A UART on the port bus.
pub struct Serial {
    uart: Uart<IrqLine, NoEvents, SerialOut>,
}

impl Serial {
    /// A UART that raises `irq` and writes what the guest sends to `out`.
    pub fn new(irq: IrqLine, out: SerialOut) -> Self {
        Self {
            uart: Uart::new(irq, out),
        }
    }

    /// Queues bytes for the guest to read (host input).
    pub fn queue_input(&mut self, input: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(input).unwrap_or(0)
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = self.uart.read(offset as u8);
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(&value) = data.first() {
            if let Err(e) = self.uart.write(offset as u8, value) {
                log::warn!("serial write failed: {e:?}");
            }
        }
    }
}
