// SPDX-License-Identifier: Apache-2.0
//! The i8042 keyboard controller at ports 0x60 (data) and 0x64
//! (status/command), with a PS/2 keyboard on its first port and a PS/2
//! mouse ([`super::ps2_mouse`]) on its auxiliary port.
//!
//! It implements the controller commands firmware and kernels use at boot
//! (self tests, command byte, port enable/disable, output port, the reset
//! pulse that reboots the machine, writes to the mouse and loopback through
//! either output buffer) and the keyboard's command set (reset with BAT,
//! identify, LEDs, scan code set, typematic, enable/disable).
//!
//! Host input arrives as scan code set 2 key events
//! ([`I8042::keyboard_input`]) and relative mouse motion
//! ([`I8042::mouse_input`]). Keyboard and mouse share the one output
//! register: status bit 0 says a byte waits, bit 5 that it came from the
//! mouse. The byte at the head raises IRQ 1 (keyboard and controller
//! bytes) or IRQ 12 (mouse bytes) when the command byte enables it, and
//! reading it raises the next byte's interrupt, so a guest that reads one
//! byte per interrupt sees them all. With the command byte's translate bit
//! set (as firmware leaves it) keyboard bytes go through the 8042's
//! set 2 to set 1 translation.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ps2_mouse::Ps2Mouse;
use crate::bus::{BusDevice, DeviceState};
use crate::control::{Outcome, VmControl};
use crate::devices::irq::InterruptLine;
use crate::snapshot::{self, Persist, StateError};

/// The data port.
pub const DATA_PORT: u64 = 0x60;
/// The status/command port.
pub const COMMAND_PORT: u64 = 0x64;
/// The keyboard's ISA interrupt.
pub const KEYBOARD_IRQ: u32 = 1;
/// The PS/2 mouse's ISA interrupt.
pub const MOUSE_IRQ: u32 = 12;

const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM_FLAG: u8 = 0x04;
const STATUS_LAST_WAS_COMMAND: u8 = 0x08;
const STATUS_UNLOCKED: u8 = 0x10;
const STATUS_AUX_DATA: u8 = 0x20;

const CMD_BYTE_KBD_INT: u8 = 0x01;
const CMD_BYTE_AUX_INT: u8 = 0x02;
const CMD_BYTE_SYSTEM_FLAG: u8 = 0x04;
const CMD_BYTE_KBD_DISABLED: u8 = 0x10;
const CMD_BYTE_AUX_DISABLED: u8 = 0x20;
const CMD_BYTE_TRANSLATE: u8 = 0x40;

const KBD_ACK: u8 = 0xfa;
const KBD_BAT_OK: u8 = 0xaa;
const KBD_ECHO: u8 = 0xee;
const KBD_RESEND: u8 = 0xfe;
/// The break prefix of scan code set 2.
const SET2_BREAK: u8 = 0xf0;

/// Keyboard bytes that can wait before key events are dropped: a real
/// keyboard's 16-byte buffer. Linux's i8042_flush() gives up on the
/// controller ("No controller found") when more than 16 bytes come out,
/// so a backlog typed during early boot must stay within that.
const KBD_QUEUE_LIMIT: usize = 16;
/// Mouse bytes that can wait before packets are dropped: two of the
/// largest (four-packet) motions with a wheel.
const AUX_QUEUE_LIMIT: usize = 32;
/// Controller answers that can wait.
const CONTROLLER_QUEUE_LIMIT: usize = 16;

/// The 8042's translation of scan code set 2 codes 0x00-0x7f into set 1:
/// a permutation of 0x01-0x7f, with 0x00 (keyboard error) becoming 0xff.
/// Of the codes above 0x7f only 0x83 (F7) and 0x84 (Alt+SysRq) change.
#[rustfmt::skip]
const SET2_TO_SET1: [u8; 128] = [
    0xff, 0x43, 0x41, 0x3f, 0x3d, 0x3b, 0x3c, 0x58, 0x64, 0x44, 0x42, 0x40, 0x3e, 0x0f, 0x29, 0x59,
    0x65, 0x38, 0x2a, 0x70, 0x1d, 0x10, 0x02, 0x5a, 0x66, 0x71, 0x2c, 0x1f, 0x1e, 0x11, 0x03, 0x5b,
    0x67, 0x2e, 0x2d, 0x20, 0x12, 0x05, 0x04, 0x5c, 0x68, 0x39, 0x2f, 0x21, 0x14, 0x13, 0x06, 0x5d,
    0x69, 0x31, 0x30, 0x23, 0x22, 0x15, 0x07, 0x5e, 0x6a, 0x72, 0x32, 0x24, 0x16, 0x08, 0x09, 0x5f,
    0x6b, 0x33, 0x25, 0x17, 0x18, 0x0b, 0x0a, 0x60, 0x6c, 0x34, 0x35, 0x26, 0x27, 0x19, 0x0c, 0x61,
    0x6d, 0x73, 0x28, 0x74, 0x1a, 0x0d, 0x62, 0x6e, 0x3a, 0x36, 0x1c, 0x1b, 0x75, 0x2b, 0x63, 0x76,
    0x55, 0x56, 0x77, 0x78, 0x79, 0x7a, 0x0e, 0x7b, 0x7c, 0x4f, 0x7d, 0x4b, 0x47, 0x7e, 0x7f, 0x6f,
    0x52, 0x53, 0x50, 0x4c, 0x4d, 0x48, 0x01, 0x45, 0x57, 0x4e, 0x51, 0x4a, 0x37, 0x49, 0x46, 0x54,
];

/// One byte as the 8042 translates it (no break prefix involved).
fn translate_byte(byte: u8) -> u8 {
    match byte {
        0x83 => 0x41,
        0x84 => 0x54,
        _ => SET2_TO_SET1.get(usize::from(byte)).copied().unwrap_or(byte),
    }
}

/// A run of set 2 bytes translated to set 1: `F0 xx` becomes `xx' | 0x80`,
/// prefixes (E0, E1) and answers (FA, AA, ...) pass through unchanged.
fn translate_set2(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut release = false;
    for &byte in bytes {
        if byte == SET2_BREAK {
            release = true;
            continue;
        }
        let translated = translate_byte(byte);
        out.push(if release {
            translated | 0x80
        } else {
            translated
        });
        release = false;
    }
    out
}

/// Where a byte in the output buffer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Source {
    /// The controller itself (command answers): IRQ 1, no aux bit.
    Controller,
    /// The keyboard (or 0xD2): IRQ 1.
    Keyboard,
    /// The mouse (or 0xD3): IRQ 12 and the aux status bit.
    Aux,
}

impl Source {
    fn limit(self) -> usize {
        match self {
            Source::Controller => CONTROLLER_QUEUE_LIMIT,
            Source::Keyboard => KBD_QUEUE_LIMIT,
            Source::Aux => AUX_QUEUE_LIMIT,
        }
    }

    /// The command byte bit that enables this source's interrupt.
    fn interrupt_enable(self) -> u8 {
        match self {
            Source::Aux => CMD_BYTE_AUX_INT,
            Source::Controller | Source::Keyboard => CMD_BYTE_KBD_INT,
        }
    }
}

/// What the next byte written to the data port means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum DataTarget {
    Keyboard,
    CommandByte,
    OutputPort,
    KeyboardOutput,
    AuxOutput,
    Aux,
    KeyboardArgument(u8),
}

/// The controller, its keyboard and its mouse.
pub struct I8042 {
    control: Arc<VmControl>,
    kbd_irq: Box<dyn InterruptLine>,
    aux_irq: Box<dyn InterruptLine>,
    command_byte: u8,
    output_port: u8,
    last_was_command: bool,
    target: DataTarget,
    /// The output register and the bytes waiting behind it, in the order
    /// the devices sent them.
    output: VecDeque<(u8, Source)>,
    /// What a read of the data port returns when nothing waits.
    last_output: u8,
    scan_set: u8,
    kbd_enabled: bool,
    set3_logged: bool,
    mouse: Ps2Mouse,
}

impl I8042 {
    /// A controller that raises `kbd_irq` (IRQ 1) for keyboard bytes,
    /// `aux_irq` (IRQ 12) for mouse bytes, and resets through `control`.
    pub fn new(
        control: Arc<VmControl>,
        kbd_irq: Box<dyn InterruptLine>,
        aux_irq: Box<dyn InterruptLine>,
    ) -> Self {
        Self {
            control,
            kbd_irq,
            aux_irq,
            command_byte: CMD_BYTE_KBD_INT | CMD_BYTE_SYSTEM_FLAG | CMD_BYTE_TRANSLATE,
            // Reset line high (not in reset), A20 enabled.
            output_port: 0x03,
            last_was_command: false,
            target: DataTarget::Keyboard,
            output: VecDeque::new(),
            last_output: 0,
            scan_set: 2,
            kbd_enabled: true,
            set3_logged: false,
            mouse: Ps2Mouse::new(),
        }
    }

    /// A host key event: the scan code set 2 bytes of one press or release
    /// as a PS/2 keyboard sends them (`1C`, `F0 1C`, `E0 75`, `E0 F0 75`,
    /// Pause's `E1 14 77 E1 F0 14 F0 77`, ...).
    ///
    /// The keyboard sends them in the scan code set the guest selected
    /// (set 3 is not emulated: it gets set 2), and the controller
    /// translates them to set 1 when the command byte says so (a guest
    /// that picks set 1 and leaves translation on gets set 1 translated
    /// again, as on real hardware). Nothing is
    /// sent while the keyboard or its port is disabled, and an event that
    /// does not fit in the queue is dropped whole.
    pub fn keyboard_input(&mut self, set2_bytes: &[u8]) {
        if set2_bytes.is_empty() {
            return;
        }
        if !self.kbd_enabled || self.command_byte & CMD_BYTE_KBD_DISABLED != 0 {
            log::trace!("i8042: keyboard disabled, dropping key event");
            return;
        }
        let sent = match self.scan_set {
            1 => translate_set2(set2_bytes),
            3 => {
                if !self.set3_logged {
                    self.set3_logged = true;
                    log::debug!("i8042: guest chose scan code set 3, sending set 2");
                }
                set2_bytes.to_vec()
            }
            _ => set2_bytes.to_vec(),
        };
        let bytes = self.through_translation(&sent);
        if !self.enqueue(&bytes, Source::Keyboard) {
            log::debug!("i8042: keyboard queue full, dropping key event");
        }
    }

    /// Host mouse motion: `dx` right, `dy` down (screen terms; the PS/2
    /// packet's Y points up), `dz` wheel clicks toward the user, `buttons`
    /// bit 0 left, bit 1 right, bit 2 middle (bits 3 and 4: buttons 4 and
    /// 5, sent only in IntelliMouse Explorer mode).
    ///
    /// Packets go out only while the guest has enabled data reporting in
    /// stream mode and the controller's aux port; whole packets that do
    /// not fit in the queue are dropped.
    pub fn mouse_input(&mut self, dx: i32, dy: i32, dz: i32, buttons: u8) {
        if self.command_byte & CMD_BYTE_AUX_DISABLED != 0 {
            return;
        }
        for packet in self.mouse.input(dx, dy, dz, buttons) {
            if !self.enqueue(&packet, Source::Aux) {
                log::debug!("i8042: mouse queue full, dropping motion");
                break;
            }
        }
    }

    fn status(&self) -> u8 {
        let mut status = STATUS_UNLOCKED;
        match self.output.front() {
            Some((_, Source::Aux)) => status |= STATUS_OUTPUT_FULL | STATUS_AUX_DATA,
            Some(_) => status |= STATUS_OUTPUT_FULL,
            None => {}
        }
        if self.command_byte & CMD_BYTE_SYSTEM_FLAG != 0 {
            status |= STATUS_SYSTEM_FLAG;
        }
        if self.last_was_command {
            status |= STATUS_LAST_WAS_COMMAND;
        }
        status
    }

    /// Raises the interrupt of the byte at the head of the output buffer,
    /// if the command byte enables it and it is among `enables`.
    fn raise_head(&self, enables: u8) {
        let Some(&(_, source)) = self.output.front() else {
            return;
        };
        let bit = source.interrupt_enable();
        if self.command_byte & bit & enables == 0 {
            return;
        }
        match source {
            Source::Aux => self.aux_irq.pulse(),
            Source::Controller | Source::Keyboard => self.kbd_irq.pulse(),
        }
    }

    /// Queues `bytes` from `source` whole, or nothing when they do not fit.
    fn enqueue(&mut self, bytes: &[u8], source: Source) -> bool {
        let queued = self.output.iter().filter(|(_, s)| *s == source).count();
        if queued + bytes.len() > source.limit() {
            return false;
        }
        let was_empty = self.output.is_empty();
        self.output.extend(bytes.iter().map(|&b| (b, source)));
        if was_empty {
            self.raise_head(0xff);
        }
        true
    }

    /// Drops what `source` had queued, as a device reset clears its buffer.
    fn flush(&mut self, source: Source) {
        let head = self.output.front().map(|&(_, s)| s);
        self.output.retain(|&(_, s)| s != source);
        if head == Some(source) {
            self.raise_head(0xff);
        }
    }

    /// A controller answer.
    fn push(&mut self, byte: u8) {
        if !self.enqueue(&[byte], Source::Controller) {
            log::debug!("i8042: output queue full, dropping {byte:#04x}");
        }
    }

    /// Keyboard bytes as they reach the guest through the translation.
    fn through_translation(&self, bytes: &[u8]) -> Vec<u8> {
        if self.command_byte & CMD_BYTE_TRANSLATE != 0 {
            translate_set2(bytes)
        } else {
            bytes.to_vec()
        }
    }

    /// A keyboard answer to a command.
    fn kbd_reply(&mut self, bytes: &[u8]) {
        let bytes = self.through_translation(bytes);
        if !self.enqueue(&bytes, Source::Keyboard) {
            log::debug!("i8042: keyboard queue full, dropping answer {bytes:02x?}");
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
            DataTarget::CommandByte => {
                let newly_enabled = value & !self.command_byte;
                self.command_byte = value;
                // The interrupt output is "byte waiting and enabled":
                // enabling it with a byte waiting raises it.
                self.raise_head(newly_enabled & (CMD_BYTE_KBD_INT | CMD_BYTE_AUX_INT));
            }
            DataTarget::OutputPort => {
                self.output_port = value;
                if value & 0x01 == 0 {
                    self.control.request_stop(Outcome::Reset);
                }
            }
            DataTarget::KeyboardOutput => {
                if !self.enqueue(&[value], Source::Keyboard) {
                    log::debug!("i8042: keyboard queue full, dropping {value:#04x}");
                }
            }
            DataTarget::AuxOutput => {
                if !self.enqueue(&[value], Source::Aux) {
                    log::debug!("i8042: mouse queue full, dropping {value:#04x}");
                }
            }
            DataTarget::Aux => {
                let reply = self.mouse.write(value);
                if !self.enqueue(&reply, Source::Aux) {
                    log::debug!("i8042: mouse queue full, dropping answer {reply:02x?}");
                }
            }
        }
    }

    fn keyboard_command(&mut self, cmd: u8) {
        match cmd {
            // Commands with an argument byte: ack now, ack the argument later.
            0xed | 0xf0 | 0xf3 => {
                self.kbd_reply(&[KBD_ACK]);
                self.target = DataTarget::KeyboardArgument(cmd);
            }
            0xee => self.kbd_reply(&[KBD_ECHO]),
            // An MF2 keyboard; the translation turns 0x83 into 0x41.
            0xf2 => self.kbd_reply(&[KBD_ACK, 0xab, 0x83]),
            0xf4 => {
                self.kbd_enabled = true;
                self.kbd_reply(&[KBD_ACK]);
            }
            0xf5 => {
                self.kbd_enabled = false;
                self.scan_set = 2;
                self.kbd_reply(&[KBD_ACK]);
            }
            0xf6 => {
                self.scan_set = 2;
                self.kbd_reply(&[KBD_ACK]);
            }
            0xf7..=0xfd => self.kbd_reply(&[KBD_ACK]),
            0xff => {
                self.flush(Source::Keyboard);
                self.kbd_enabled = true;
                self.scan_set = 2;
                self.kbd_reply(&[KBD_ACK, KBD_BAT_OK]);
            }
            _ => self.kbd_reply(&[KBD_RESEND]),
        }
    }

    fn keyboard_argument(&mut self, cmd: u8, arg: u8) {
        match cmd {
            // Translated, the answer reads 0x43, 0x41 or 0x3f.
            0xf0 if arg == 0 => self.kbd_reply(&[KBD_ACK, self.scan_set]),
            0xf0 if (1..=3).contains(&arg) => {
                self.scan_set = arg;
                self.kbd_reply(&[KBD_ACK]);
            }
            0xf0 => self.kbd_reply(&[KBD_RESEND]),
            _ => self.kbd_reply(&[KBD_ACK]),
        }
    }
}

/// What a saved state holds of the controller, its keyboard and mouse.
#[derive(Serialize, Deserialize)]
struct ControllerState {
    command_byte: u8,
    output_port: u8,
    last_was_command: bool,
    target: DataTarget,
    output: Vec<(u8, Source)>,
    last_output: u8,
    scan_set: u8,
    kbd_enabled: bool,
    mouse: Ps2Mouse,
}

const NAME: &str = "keyboard controller";

impl Persist for I8042 {
    fn save(&mut self) -> Result<Vec<u8>, StateError> {
        snapshot::encode(
            NAME,
            &ControllerState {
                command_byte: self.command_byte,
                output_port: self.output_port,
                last_was_command: self.last_was_command,
                target: self.target,
                output: self.output.iter().copied().collect(),
                last_output: self.last_output,
                scan_set: self.scan_set,
                kbd_enabled: self.kbd_enabled,
                mouse: self.mouse.clone(),
            },
        )
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let state: ControllerState = snapshot::decode(NAME, bytes)?;
        let limit = CONTROLLER_QUEUE_LIMIT + KBD_QUEUE_LIMIT + AUX_QUEUE_LIMIT;
        if state.output.len() > limit {
            return Err(snapshot::invalid(
                NAME,
                format!("{} bytes waiting, more than it holds", state.output.len()),
            ));
        }
        self.command_byte = state.command_byte;
        self.output_port = state.output_port;
        self.last_was_command = state.last_was_command;
        self.target = state.target;
        self.output = state.output.into();
        self.last_output = state.last_output;
        self.scan_set = state.scan_set;
        self.kbd_enabled = state.kbd_enabled;
        self.mouse = state.mouse;
        Ok(())
    }
}

impl BusDevice for I8042 {
    fn state(&mut self) -> DeviceState<'_> {
        DeviceState::Saved(self)
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            0 => match self.output.pop_front() {
                Some((byte, _)) => {
                    self.last_output = byte;
                    // One byte per interrupt: the next one gets its own.
                    self.raise_head(0xff);
                    byte
                }
                // The register keeps its last byte.
                None => self.last_output,
            },
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

    struct Rig {
        dev: I8042,
        control: Arc<VmControl>,
        kbd_irqs: Arc<AtomicUsize>,
        aux_irqs: Arc<AtomicUsize>,
    }

    impl Rig {
        fn new() -> Self {
            let control = Arc::new(VmControl::new());
            let kbd_irqs = Arc::new(AtomicUsize::new(0));
            let aux_irqs = Arc::new(AtomicUsize::new(0));
            let dev = I8042::new(
                control.clone(),
                Box::new(CountingIrq(kbd_irqs.clone())),
                Box::new(CountingIrq(aux_irqs.clone())),
            );
            Self {
                dev,
                control,
                kbd_irqs,
                aux_irqs,
            }
        }

        fn kbd_irqs(&self) -> usize {
            self.kbd_irqs.load(Ordering::SeqCst)
        }

        fn aux_irqs(&self) -> usize {
            self.aux_irqs.load(Ordering::SeqCst)
        }

        fn command(&mut self, cmd: u8) {
            self.dev.write(4, &[cmd]);
        }

        fn data(&mut self, value: u8) {
            self.dev.write(0, &[value]);
        }

        fn status(&mut self) -> u8 {
            let mut data = [0u8];
            self.dev.read(4, &mut data);
            data[0]
        }

        fn read(&mut self) -> u8 {
            let mut data = [0u8];
            self.dev.read(0, &mut data);
            data[0]
        }

        /// Everything waiting, read as a guest polling the status would.
        fn drain(&mut self) -> Vec<u8> {
            let mut bytes = Vec::new();
            while self.status() & STATUS_OUTPUT_FULL != 0 {
                bytes.push(self.read());
            }
            bytes
        }

        fn set_command_byte(&mut self, value: u8) {
            self.command(0x60);
            self.data(value);
        }

        /// A byte to the mouse through 0xD4.
        fn mouse(&mut self, value: u8) {
            self.command(0xd4);
            self.data(value);
        }

        /// What SeaBIOS does before it hands over: self test, keyboard
        /// reset, then translation on with keyboard and mouse interrupts.
        fn bios_init() -> Self {
            let mut rig = Self::new();
            rig.command(0xaa);
            assert_eq!(rig.read(), 0x55);
            rig.data(0xff);
            assert_eq!(rig.drain(), vec![KBD_ACK, KBD_BAT_OK]);
            rig.data(0xf5);
            assert_eq!(rig.drain(), vec![KBD_ACK]);
            rig.set_command_byte(0x47);
            rig.data(0xf4);
            assert_eq!(rig.drain(), vec![KBD_ACK]);
            rig
        }
    }

    /// A tiny xorshift generator for the hostile-guest tests.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn byte(&mut self) -> u8 {
            self.next().to_le_bytes()[0]
        }
    }

    #[test]
    fn test_i8042_self_test_answers_0x55() {
        let mut rig = Rig::new();
        rig.command(0xaa);
        assert_eq!(rig.read(), 0x55);
    }

    #[test]
    fn test_i8042_keyboard_reset_acks_and_passes_bat() {
        let mut rig = Rig::new();
        rig.data(0xff);
        assert_eq!([rig.read(), rig.read()], [KBD_ACK, KBD_BAT_OK]);
        assert_eq!(rig.kbd_irqs(), 2);
    }

    #[test]
    fn test_i8042_pulse_reset_line_requests_reset() {
        let mut rig = Rig::new();
        rig.command(0xfe);
        assert_eq!(rig.control.outcome(), Some(Outcome::Reset));
    }

    #[test]
    fn test_i8042_command_byte_round_trips() {
        let mut rig = Rig::new();
        rig.set_command_byte(0x45);
        rig.command(0x20);
        assert_eq!(rig.read(), 0x45);
    }

    #[test]
    fn test_i8042_status_shows_output_full() {
        let mut rig = Rig::new();
        rig.command(0xab);
        assert_eq!(rig.status() & STATUS_OUTPUT_FULL, STATUS_OUTPUT_FULL);
        rig.read();
        assert_eq!(rig.status() & STATUS_OUTPUT_FULL, 0);
    }

    #[test]
    fn test_i8042_empty_data_port_repeats_last_byte() {
        let mut rig = Rig::new();
        rig.command(0xaa);
        assert_eq!(rig.read(), 0x55);
        assert_eq!(rig.read(), 0x55);
    }

    #[test]
    fn test_i8042_scan_set_query_translated_and_raw() {
        let mut rig = Rig::new();
        rig.data(0xf0);
        rig.data(0x00);
        // Through the translation set 2 reads as 0x41.
        assert_eq!(rig.drain(), vec![KBD_ACK, KBD_ACK, 0x41]);
        rig.set_command_byte(0x05);
        rig.data(0xf0);
        rig.data(0x00);
        assert_eq!(rig.drain(), vec![KBD_ACK, KBD_ACK, 2]);
    }

    #[test]
    fn test_i8042_identify_reports_translated_id() {
        let mut rig = Rig::new();
        rig.data(0xf2);
        assert_eq!(rig.drain(), vec![KBD_ACK, 0xab, 0x41]);
        rig.set_command_byte(0x05);
        rig.data(0xf2);
        assert_eq!(rig.drain(), vec![KBD_ACK, 0xab, 0x83]);
    }

    #[test]
    fn test_i8042_full_queue_drops_without_panic() {
        let mut rig = Rig::new();
        for _ in 0..200 {
            rig.data(0xee);
        }
        assert_eq!(rig.dev.output.len(), KBD_QUEUE_LIMIT);
    }

    #[test]
    fn test_i8042_translation_table_is_a_permutation() {
        let mut seen = [false; 128];
        for code in 0x01..=0x7fu8 {
            let set1 = translate_byte(code);
            assert!((0x01..=0x7f).contains(&set1), "{code:#04x} -> {set1:#04x}");
            assert!(!seen[usize::from(set1)], "{set1:#04x} twice");
            seen[usize::from(set1)] = true;
        }
        assert_eq!(translate_byte(0x00), 0xff);
        assert_eq!(translate_byte(0x83), 0x41);
        for answer in [0xfa, 0xaa, 0xee, 0xfe, 0xab, 0xe0, 0xe1] {
            assert_eq!(translate_byte(answer), answer);
        }
    }

    #[test]
    fn test_i8042_translation_of_known_keys() {
        // (set 2, set 1) pairs from the published scan code tables.
        let keys = [
            (0x76, 0x01), // Esc
            (0x16, 0x02), // 1
            (0x45, 0x0b), // 0
            (0x66, 0x0e), // Backspace
            (0x0d, 0x0f), // Tab
            (0x15, 0x10), // Q
            (0x5a, 0x1c), // Enter
            (0x14, 0x1d), // Left Ctrl
            (0x1c, 0x1e), // A
            (0x12, 0x2a), // Left Shift
            (0x1a, 0x2c), // Z
            (0x59, 0x36), // Right Shift
            (0x11, 0x38), // Left Alt
            (0x29, 0x39), // Space
            (0x58, 0x3a), // Caps Lock
            (0x05, 0x3b), // F1
            (0x09, 0x44), // F10
            (0x77, 0x45), // Num Lock
            (0x7e, 0x46), // Scroll Lock
            (0x78, 0x57), // F11
            (0x07, 0x58), // F12
            (0x61, 0x56), // ISO extra key
        ];
        for (set2, set1) in keys {
            assert_eq!(translate_set2(&[set2]), vec![set1], "{set2:#04x}");
            assert_eq!(
                translate_set2(&[SET2_BREAK, set2]),
                vec![set1 | 0x80],
                "break {set2:#04x}"
            );
        }
    }

    #[test]
    fn test_i8042_bios_init_then_escape() {
        let mut rig = Rig::bios_init();
        let before = rig.kbd_irqs();
        rig.dev.keyboard_input(&[0x76]);
        assert_eq!(rig.kbd_irqs(), before + 1);
        assert_eq!(rig.status() & (STATUS_OUTPUT_FULL | STATUS_AUX_DATA), 1);
        assert_eq!(rig.read(), 0x01);
        rig.dev.keyboard_input(&[0xf0, 0x76]);
        assert_eq!(rig.kbd_irqs(), before + 2);
        assert_eq!(rig.drain(), vec![0x81]);
    }

    #[test]
    fn test_i8042_extended_keys_translate_with_an_irq_per_byte() {
        let mut rig = Rig::bios_init();
        let before = rig.kbd_irqs();
        // Right arrow.
        rig.dev.keyboard_input(&[0xe0, 0x74]);
        assert_eq!(rig.kbd_irqs(), before + 1);
        assert_eq!(rig.read(), 0xe0);
        // Reading the first byte raises the interrupt for the second.
        assert_eq!(rig.kbd_irqs(), before + 2);
        assert_eq!(rig.read(), 0x4d);
        assert_eq!(rig.kbd_irqs(), before + 2);
        rig.dev.keyboard_input(&[0xe0, 0xf0, 0x74]);
        assert_eq!(rig.drain(), vec![0xe0, 0xcd]);
    }

    #[test]
    fn test_i8042_pause_and_print_screen_translate() {
        let mut rig = Rig::bios_init();
        rig.dev
            .keyboard_input(&[0xe1, 0x14, 0x77, 0xe1, 0xf0, 0x14, 0xf0, 0x77]);
        assert_eq!(rig.drain(), vec![0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5]);
        rig.dev.keyboard_input(&[0xe0, 0x12, 0xe0, 0x7c]);
        assert_eq!(rig.drain(), vec![0xe0, 0x2a, 0xe0, 0x37]);
        rig.dev
            .keyboard_input(&[0xe0, 0xf0, 0x7c, 0xe0, 0xf0, 0x12]);
        assert_eq!(rig.drain(), vec![0xe0, 0xb7, 0xe0, 0xaa]);
    }

    #[test]
    fn test_i8042_without_translation_sends_set2() {
        let mut rig = Rig::bios_init();
        rig.set_command_byte(0x07);
        rig.dev.keyboard_input(&[0xe0, 0xf0, 0x74]);
        assert_eq!(rig.drain(), vec![0xe0, 0xf0, 0x74]);
    }

    #[test]
    fn test_i8042_keyboard_in_set1_converts_itself() {
        let mut rig = Rig::bios_init();
        rig.set_command_byte(0x07);
        rig.data(0xf0);
        rig.data(0x01);
        assert_eq!(rig.drain(), vec![KBD_ACK, KBD_ACK]);
        rig.dev.keyboard_input(&[0xe0, 0xf0, 0x74]);
        assert_eq!(rig.drain(), vec![0xe0, 0xcd]);
    }

    #[test]
    fn test_i8042_keyboard_in_set3_sends_set2() {
        let mut rig = Rig::bios_init();
        rig.set_command_byte(0x07);
        rig.data(0xf0);
        rig.data(0x03);
        assert_eq!(rig.drain(), vec![KBD_ACK, KBD_ACK]);
        rig.dev.keyboard_input(&[0xf0, 0x1c]);
        assert_eq!(rig.drain(), vec![0xf0, 0x1c]);
    }

    #[test]
    fn test_i8042_disabled_keyboard_drops_input() {
        let mut rig = Rig::bios_init();
        rig.data(0xf5);
        assert_eq!(rig.drain(), vec![KBD_ACK]);
        rig.dev.keyboard_input(&[0x1c]);
        assert!(rig.drain().is_empty());
        rig.data(0xf4);
        assert_eq!(rig.drain(), vec![KBD_ACK]);
        rig.command(0xad);
        rig.dev.keyboard_input(&[0x1c]);
        assert!(rig.drain().is_empty());
        rig.command(0xae);
        rig.dev.keyboard_input(&[0x1c]);
        assert_eq!(rig.drain(), vec![0x1e]);
    }

    #[test]
    fn test_i8042_full_queue_never_splits_an_event() {
        let mut rig = Rig::bios_init();
        let pause = [0xe1, 0x14, 0x77, 0xe1, 0xf0, 0x14, 0xf0, 0x77];
        let translated = [0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5];
        rig.dev.keyboard_input(&[0x1c]);
        for _ in 0..50 {
            rig.dev.keyboard_input(&pause);
        }
        let bytes = rig.drain();
        assert!(bytes.len() <= KBD_QUEUE_LIMIT);
        assert_eq!(bytes.first(), Some(&0x1e));
        let rest = bytes.get(1..).unwrap_or_default();
        assert_eq!(rest.len(), (KBD_QUEUE_LIMIT - 1) / translated.len() * 6);
        for chunk in rest.chunks(translated.len()) {
            assert_eq!(chunk, translated);
        }
    }

    #[test]
    fn test_i8042_boot_backlog_fits_linux_flush() {
        // Keys typed while nobody reads pile up; Linux's i8042_flush()
        // reads at most 16 bytes before it calls the controller absent.
        let mut rig = Rig::bios_init();
        for _ in 0..40 {
            rig.dev.keyboard_input(&[0x1c]);
            rig.dev.keyboard_input(&[0xe0, 0xf0, 0x74]);
        }
        assert!(rig.drain().len() <= 16);
    }

    #[test]
    fn test_i8042_linux_aux_port_check() {
        let mut rig = Rig::bios_init();
        // Loopback through the aux output buffer, with the aux bit.
        rig.command(0xd3);
        rig.data(0x5a);
        assert_eq!(rig.status() & STATUS_AUX_DATA, STATUS_AUX_DATA);
        assert_eq!(rig.read(), 0x5a);
        // With the port enabled and IRQ 12 on, loopback 0xa5 interrupts.
        rig.set_command_byte(0x47);
        let before = rig.aux_irqs();
        rig.command(0xd3);
        rig.data(0xa5);
        assert_eq!(rig.aux_irqs(), before + 1);
        assert_eq!(rig.read(), 0xa5);
    }

    #[test]
    fn test_i8042_aux_loopback_sets_aux_bit_and_irq12() {
        let mut rig = Rig::bios_init();
        rig.command(0xd3);
        rig.data(0x5a);
        assert_eq!(rig.aux_irqs(), 1);
        assert_eq!(
            rig.status() & (STATUS_OUTPUT_FULL | STATUS_AUX_DATA),
            STATUS_OUTPUT_FULL | STATUS_AUX_DATA
        );
        assert_eq!(rig.read(), 0x5a);
        assert_eq!(rig.status() & (STATUS_OUTPUT_FULL | STATUS_AUX_DATA), 0);
    }

    #[test]
    fn test_i8042_aux_interface_test_and_enable_bits() {
        let mut rig = Rig::bios_init();
        rig.command(0xa9);
        assert_eq!(rig.read(), 0x00);
        rig.command(0xa7);
        rig.command(0x20);
        assert_eq!(rig.read() & CMD_BYTE_AUX_DISABLED, CMD_BYTE_AUX_DISABLED);
        rig.command(0xa8);
        rig.command(0x20);
        assert_eq!(rig.read() & CMD_BYTE_AUX_DISABLED, 0);
    }

    #[test]
    fn test_i8042_linux_mouse_probe() {
        let mut rig = Rig::bios_init();
        rig.mouse(0xff);
        assert_eq!(rig.aux_irqs(), 1);
        let mut seen = Vec::new();
        while rig.status() & STATUS_OUTPUT_FULL != 0 {
            assert_eq!(rig.status() & STATUS_AUX_DATA, STATUS_AUX_DATA);
            seen.push(rig.read());
        }
        assert_eq!(seen, vec![0xfa, 0xaa, 0x00]);
        // One interrupt per byte.
        assert_eq!(rig.aux_irqs(), 3);
        rig.mouse(0xf2);
        assert_eq!(rig.drain(), vec![0xfa, 0x00]);
    }

    #[test]
    fn test_i8042_mouse_intellimouse_sequence() {
        let mut rig = Rig::bios_init();
        for rate in [200, 100, 80] {
            rig.mouse(0xf3);
            rig.mouse(rate);
        }
        assert_eq!(rig.drain(), vec![0xfa; 6]);
        rig.mouse(0xf2);
        assert_eq!(rig.drain(), vec![0xfa, 0x03]);
    }

    #[test]
    fn test_i8042_mouse_packets() {
        let mut rig = Rig::bios_init();
        rig.mouse(0xf4);
        assert_eq!(rig.drain(), vec![0xfa]);
        let before = rig.aux_irqs();
        // Left button, moving left and up on screen.
        rig.dev.mouse_input(-5, -3, 0, 0x01);
        assert_eq!(rig.aux_irqs(), before + 1);
        assert_eq!(rig.status() & STATUS_AUX_DATA, STATUS_AUX_DATA);
        assert_eq!(rig.drain(), vec![0x19, 0xfb, 0x03]);
        // Moving right and down: Y goes negative in the packet.
        rig.dev.mouse_input(4, 2, 0, 0);
        assert_eq!(rig.drain(), vec![0x28, 0x04, 0xfe]);
        assert_eq!(rig.aux_irqs(), before + 6);
    }

    #[test]
    fn test_i8042_mouse_wheel_byte() {
        let mut rig = Rig::bios_init();
        for rate in [200, 100, 80] {
            rig.mouse(0xf3);
            rig.mouse(rate);
        }
        rig.mouse(0xf4);
        rig.drain();
        rig.dev.mouse_input(0, 0, -1, 0);
        assert_eq!(rig.drain(), vec![0x08, 0x00, 0x00, 0xff]);
        rig.dev.mouse_input(0, 0, 20, 0);
        // Clamped to the 4-bit field per packet, split over packets.
        let wheel: Vec<u8> = rig
            .drain()
            .chunks(4)
            .filter_map(|p| p.get(3).copied())
            .collect();
        assert_eq!(wheel, vec![7, 7, 6]);
    }

    #[test]
    fn test_i8042_mouse_silent_when_reporting_or_port_disabled() {
        let mut rig = Rig::bios_init();
        rig.dev.mouse_input(10, 10, 0, 0);
        assert!(rig.drain().is_empty());
        rig.mouse(0xf4);
        rig.mouse(0xf5);
        assert_eq!(rig.drain(), vec![0xfa, 0xfa]);
        rig.dev.mouse_input(10, 10, 0, 0);
        assert!(rig.drain().is_empty());
        rig.mouse(0xf4);
        rig.drain();
        rig.command(0xa7);
        rig.dev.mouse_input(10, 10, 0, 0);
        assert!(rig.drain().is_empty());
        rig.command(0xa8);
        rig.dev.mouse_input(10, 10, 0, 0);
        assert_eq!(rig.drain().len(), 3);
    }

    #[test]
    fn test_i8042_mouse_without_irq12_enabled_is_polled() {
        let mut rig = Rig::bios_init();
        rig.set_command_byte(0x45);
        rig.mouse(0xff);
        assert_eq!(rig.aux_irqs(), 0);
        assert_eq!(rig.drain(), vec![0xfa, 0xaa, 0x00]);
        assert_eq!(rig.aux_irqs(), 0);
    }

    #[test]
    fn test_i8042_enabling_interrupt_with_byte_waiting_raises_it() {
        let mut rig = Rig::bios_init();
        rig.set_command_byte(0x44);
        rig.dev.keyboard_input(&[0x1c]);
        let before = rig.kbd_irqs();
        rig.set_command_byte(0x45);
        assert_eq!(rig.kbd_irqs(), before + 1);
        assert_eq!(rig.read(), 0x1e);
    }

    #[test]
    fn test_i8042_keyboard_and_mouse_bytes_interleave_with_their_irqs() {
        let mut rig = Rig::bios_init();
        rig.mouse(0xf4);
        rig.drain();
        let (kbd, aux) = (rig.kbd_irqs(), rig.aux_irqs());
        rig.dev.keyboard_input(&[0x1c]);
        rig.dev.mouse_input(1, 0, 0, 0);
        rig.dev.keyboard_input(&[0xf0, 0x1c]);
        let mut seen = Vec::new();
        while rig.status() & STATUS_OUTPUT_FULL != 0 {
            let from_mouse = rig.status() & STATUS_AUX_DATA != 0;
            seen.push((rig.read(), from_mouse));
        }
        assert_eq!(
            seen,
            vec![
                (0x1e, false),
                (0x08, true),
                (0x01, true),
                (0x00, true),
                (0x9e, false)
            ]
        );
        assert_eq!(rig.kbd_irqs(), kbd + 2);
        assert_eq!(rig.aux_irqs(), aux + 3);
    }

    #[test]
    fn test_i8042_keyboard_reset_keeps_mouse_bytes() {
        let mut rig = Rig::bios_init();
        rig.mouse(0xf2);
        rig.dev.keyboard_input(&[0x1c]);
        rig.data(0xff);
        assert_eq!(rig.drain(), vec![0xfa, 0x00, KBD_ACK, KBD_BAT_OK]);
    }

    #[test]
    fn test_i8042_hostile_guest_never_panics_and_stays_bounded() {
        let bound = KBD_QUEUE_LIMIT + AUX_QUEUE_LIMIT + CONTROLLER_QUEUE_LIMIT;
        for seed in 1..=8u64 {
            let mut rig = Rig::new();
            let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            for _ in 0..5000 {
                match rng.next() % 8 {
                    0 => rig.command(rng.byte()),
                    1 => rig.data(rng.byte()),
                    // Commands the mouse and keyboard know, with random
                    // arguments.
                    2 => {
                        rig.mouse(0xe6 + rng.byte() % 26);
                        rig.mouse(rng.byte());
                    }
                    3 => {
                        rig.data(0xed + rng.byte() % 19);
                        rig.data(rng.byte());
                    }
                    4 => {
                        let len = usize::from(rng.byte() % 10);
                        let bytes: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
                        rig.dev.keyboard_input(&bytes);
                    }
                    5 => {
                        let v = rng.next();
                        let dx = i32::from_le_bytes(v.to_le_bytes()[0..4].try_into().unwrap());
                        let dy = i32::from_le_bytes(v.to_le_bytes()[4..8].try_into().unwrap());
                        rig.dev.mouse_input(dx, dy, dx >> 20, rng.byte());
                    }
                    6 => {
                        rig.read();
                    }
                    _ => {
                        let mut wide = [0u8; 4];
                        rig.dev.read(rng.next() % 8, &mut wide);
                        rig.dev.write(rng.next() % 8, &wide);
                    }
                }
                assert!(rig.dev.output.len() <= bound);
            }
        }
    }

    #[test]
    fn test_saved_state_round_trips_and_a_hostile_one_is_refused_unchanged() {
        use crate::snapshot::Persist;
        let mut rig = Rig::new();
        rig.dev.keyboard_input(&[0x1c, 0xf0, 0x1c]);
        let saved = rig.dev.save().unwrap();
        let mut other = Rig::new();
        other.dev.restore(&saved).unwrap();
        assert_eq!(other.dev.save().unwrap(), saved);

        // Garbage, and a queue longer than the controller holds.
        assert!(other.dev.restore(&[0xff; 7]).is_err());
        let mut state: ControllerState = crate::snapshot::decode("t", &saved).unwrap();
        state.output = vec![(0, Source::Keyboard); 10_000];
        let hostile = crate::snapshot::encode("t", &state).unwrap();
        assert!(other.dev.restore(&hostile).is_err());
        assert_eq!(
            other.dev.save().unwrap(),
            saved,
            "a refused state changes nothing"
        );
    }
}
