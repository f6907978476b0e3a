// SPDX-License-Identifier: Apache-2.0
//! The 16550A UART at COM1 (0x3F8, IRQ 4), from vm-superio, with the
//! guest's output going to any writer (stdout, a log file, a test capture).

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vm_superio::Serial as Uart;
use vm_superio::serial::{NoEvents, SerialState};

use crate::bus::{BusDevice, DeviceState};
use crate::devices::irq::IrqLine;
use crate::snapshot::{self, Persist, StateError};

/// What a saved state holds of the UART: its registers and the bytes
/// waiting in its receive FIFO.
#[derive(Serialize, Deserialize)]
struct UartState {
    divisor_low: u8,
    divisor_high: u8,
    interrupt_enable: u8,
    interrupt_identification: u8,
    line_control: u8,
    line_status: u8,
    modem_control: u8,
    modem_status: u8,
    scratch: u8,
    receive_fifo: Vec<u8>,
}

const NAME: &str = "serial port";

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
    uart: Uart<IrqLine, NoEvents, Output>,
    out: Output,
}

/// The UART's output, shared so a restored UART writes where the old one
/// did.
#[derive(Clone)]
struct Output(Arc<Mutex<SerialOut>>);

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

impl Serial {
    /// A UART that raises `irq` and writes what the guest sends to `out`.
    pub fn new(irq: IrqLine, out: SerialOut) -> Self {
        let out = Output(Arc::new(Mutex::new(out)));
        Self {
            uart: Uart::new(irq, out.clone()),
            out,
        }
    }

    /// Queues bytes for the guest to read (host input).
    pub fn queue_input(&mut self, input: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(input).unwrap_or(0)
    }
}

impl Persist for Serial {
    fn save(&mut self) -> Result<Vec<u8>, StateError> {
        let s = self.uart.state();
        snapshot::encode(
            NAME,
            &UartState {
                divisor_low: s.baud_divisor_low,
                divisor_high: s.baud_divisor_high,
                interrupt_enable: s.interrupt_enable,
                interrupt_identification: s.interrupt_identification,
                line_control: s.line_control,
                line_status: s.line_status,
                modem_control: s.modem_control,
                modem_status: s.modem_status,
                scratch: s.scratch,
                receive_fifo: s.in_buffer,
            },
        )
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let saved: UartState = snapshot::decode(NAME, bytes)?;
        let state = SerialState {
            baud_divisor_low: saved.divisor_low,
            baud_divisor_high: saved.divisor_high,
            interrupt_enable: saved.interrupt_enable,
            interrupt_identification: saved.interrupt_identification,
            line_control: saved.line_control,
            line_status: saved.line_status,
            modem_control: saved.modem_control,
            modem_status: saved.modem_status,
            scratch: saved.scratch,
            in_buffer: saved.receive_fifo,
        };
        let irq = self
            .uart
            .interrupt_evt()
            .try_clone()
            .map_err(|e| snapshot::invalid(NAME, format!("its interrupt line: {e}")))?;
        self.uart = Uart::from_state(&state, irq, NoEvents, self.out.clone())
            .map_err(|e| snapshot::invalid(NAME, format!("{e:?}")))?;
        Ok(())
    }
}

impl BusDevice for Serial {
    fn state(&mut self) -> DeviceState<'_> {
        DeviceState::Saved(self)
    }

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
