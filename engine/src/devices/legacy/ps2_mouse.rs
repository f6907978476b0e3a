// SPDX-License-Identifier: Apache-2.0
//! A PS/2 mouse, as it sits behind the i8042's auxiliary port.
//!
//! It answers the standard command set (reset with BAT, defaults, data
//! reporting, sample rate, resolution, scaling, status, identify, stream,
//! remote and wrap modes, read data, resend) and turns host motion into
//! movement packets: three bytes for a standard mouse, four once the guest
//! has unlocked the IntelliMouse wheel (sample rates 200, 100, 80: ID 3) or
//! the IntelliMouse Explorer's wheel and buttons 4 and 5 (then 200, 200,
//! 80: ID 4). The mouse itself has no queue: every call returns the bytes
//! it sends, and the controller decides whether they fit.

use serde::{Deserialize, Serialize};

/// Acknowledge: the first answer to every command the mouse understands.
pub const ACK: u8 = 0xfa;
/// Resend: the mouse did not understand the byte.
pub const RESEND: u8 = 0xfe;
/// Basic assurance test passed, sent after a reset.
pub const BAT_OK: u8 = 0xaa;

/// Device ID of a standard mouse.
const ID_STANDARD: u8 = 0x00;
/// Device ID of an IntelliMouse (scroll wheel).
const ID_INTELLIMOUSE: u8 = 0x03;
/// Device ID of an IntelliMouse Explorer (wheel, buttons 4 and 5).
const ID_EXPLORER: u8 = 0x04;

const DEFAULT_SAMPLE_RATE: u8 = 100;
/// 4 counts per millimetre.
const DEFAULT_RESOLUTION: u8 = 2;
const SAMPLE_RATES: [u8; 7] = [10, 20, 40, 60, 80, 100, 200];

/// The range of one packet's 9-bit X and Y fields.
const MOTION_MIN: i32 = -256;
const MOTION_MAX: i32 = 255;
/// The range of the wheel's 4-bit field.
const WHEEL_MIN: i32 = -8;
const WHEEL_MAX: i32 = 7;
/// A host motion larger than one packet's range is split into at most
/// this many packets; what is left after them is clamped away.
pub const MAX_PACKETS_PER_EVENT: usize = 4;

const PACKET_LEFT: u8 = 0x01;
const PACKET_RIGHT: u8 = 0x02;
const PACKET_MIDDLE: u8 = 0x04;
const PACKET_ALWAYS_ONE: u8 = 0x08;
const PACKET_X_SIGN: u8 = 0x10;
const PACKET_Y_SIGN: u8 = 0x20;
const PACKET_X_OVERFLOW: u8 = 0x40;
const PACKET_Y_OVERFLOW: u8 = 0x80;

/// Host button bits (see [`Ps2Mouse::input`]).
const BUTTON_FOURTH: u8 = 0x08;
const BUTTON_FIFTH: u8 = 0x10;

const STATUS_RIGHT: u8 = 0x01;
const STATUS_MIDDLE: u8 = 0x02;
const STATUS_LEFT: u8 = 0x04;
const STATUS_SCALING_2_1: u8 = 0x10;
const STATUS_REPORTING: u8 = 0x20;
const STATUS_REMOTE: u8 = 0x40;

/// How the mouse delivers movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Mode {
    /// Packets go out as the mouse moves (when reporting is enabled).
    Stream,
    /// Movement accumulates until the host asks with Read Data.
    Remote,
    /// Every byte the host sends is echoed back.
    Wrap,
}

/// A PS/2 mouse: its settings, its protocol and its pending motion (all
/// of it saved with the machine's state).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ps2Mouse {
    mode: Mode,
    /// The mode to go back to when wrap mode ends.
    mode_before_wrap: Mode,
    reporting: bool,
    sample_rate: u8,
    resolution: u8,
    scaling_2_1: bool,
    id: u8,
    /// The last three sample rates set in a row, oldest first: the
    /// IntelliMouse unlock sequences.
    rate_history: [u8; 3],
    /// A command waiting for its argument byte.
    pending: Option<u8>,
    /// Host buttons currently down.
    buttons: u8,
    /// Motion accumulated for Read Data (remote mode).
    acc_x: i32,
    acc_y: i32,
    acc_z: i32,
    /// What Resend repeats: the last byte or packet sent.
    last_sent: Vec<u8>,
}

impl Default for Ps2Mouse {
    fn default() -> Self {
        Self::new()
    }
}

impl Ps2Mouse {
    /// A mouse as it is after power-on: stream mode, reporting disabled,
    /// 100 samples/s, 4 counts/mm, scaling 1:1, standard ID.
    pub fn new() -> Self {
        Self {
            mode: Mode::Stream,
            mode_before_wrap: Mode::Stream,
            reporting: false,
            sample_rate: DEFAULT_SAMPLE_RATE,
            resolution: DEFAULT_RESOLUTION,
            scaling_2_1: false,
            id: ID_STANDARD,
            rate_history: [0; 3],
            pending: None,
            buttons: 0,
            acc_x: 0,
            acc_y: 0,
            acc_z: 0,
            last_sent: Vec::new(),
        }
    }

    /// The device ID the mouse reports: 0 (standard), 3 (IntelliMouse)
    /// or 4 (IntelliMouse Explorer).
    pub fn device_id(&self) -> u8 {
        self.id
    }

    /// Whether movement packets go out on their own: reporting enabled
    /// in stream mode.
    pub fn streaming(&self) -> bool {
        self.reporting && self.mode == Mode::Stream
    }

    /// Bytes in one movement packet: 3, or 4 with a wheel.
    pub fn packet_len(&self) -> usize {
        if self.id == ID_STANDARD { 3 } else { 4 }
    }

    fn set_defaults(&mut self) {
        self.sample_rate = DEFAULT_SAMPLE_RATE;
        self.resolution = DEFAULT_RESOLUTION;
        self.scaling_2_1 = false;
        self.reporting = false;
        self.mode = Mode::Stream;
        self.mode_before_wrap = Mode::Stream;
        self.clear_motion();
    }

    fn clear_motion(&mut self) {
        self.acc_x = 0;
        self.acc_y = 0;
        self.acc_z = 0;
    }

    fn sent(&mut self, reply: Vec<u8>) -> Vec<u8> {
        if let Some(&last) = reply.last() {
            self.last_sent = vec![last];
        }
        reply
    }

    /// The mouse receives `byte` from the host (the controller's 0xD4
    /// command) and returns what it answers, in order.
    pub fn write(&mut self, byte: u8) -> Vec<u8> {
        if let Some(cmd) = self.pending.take() {
            return self.argument(cmd, byte);
        }
        if self.mode == Mode::Wrap {
            return match byte {
                0xec => {
                    self.mode = self.mode_before_wrap;
                    self.sent(vec![ACK])
                }
                0xff => self.command(byte),
                _ => self.sent(vec![byte]),
            };
        }
        self.command(byte)
    }

    fn command(&mut self, cmd: u8) -> Vec<u8> {
        if cmd != 0xf3 {
            self.rate_history = [0; 3];
        }
        match cmd {
            0xe6 => {
                self.scaling_2_1 = false;
                self.sent(vec![ACK])
            }
            0xe7 => {
                self.scaling_2_1 = true;
                self.sent(vec![ACK])
            }
            0xe8 | 0xf3 => {
                self.pending = Some(cmd);
                self.sent(vec![ACK])
            }
            0xe9 => {
                let reply = vec![ACK, self.status_byte(), self.resolution, self.sample_rate];
                self.sent(reply)
            }
            0xea => {
                self.mode = Mode::Stream;
                self.clear_motion();
                self.sent(vec![ACK])
            }
            0xeb => {
                let packet = self.packet(self.acc_x, self.acc_y, self.acc_z, false);
                self.clear_motion();
                let mut reply = vec![ACK];
                reply.extend_from_slice(&packet);
                self.last_sent = packet;
                reply
            }
            // Reset wrap mode outside wrap mode: acknowledged, no change.
            0xec => self.sent(vec![ACK]),
            0xee => {
                self.mode_before_wrap = self.mode;
                self.mode = Mode::Wrap;
                self.clear_motion();
                self.sent(vec![ACK])
            }
            0xf0 => {
                self.mode = Mode::Remote;
                self.clear_motion();
                self.sent(vec![ACK])
            }
            0xf2 => {
                let reply = vec![ACK, self.id];
                self.sent(reply)
            }
            0xf4 => {
                self.reporting = true;
                self.clear_motion();
                self.sent(vec![ACK])
            }
            0xf5 => {
                self.reporting = false;
                self.clear_motion();
                self.sent(vec![ACK])
            }
            0xf6 => {
                self.set_defaults();
                self.sent(vec![ACK])
            }
            // Resend answers with the last thing sent, not with an ACK.
            0xfe => {
                if self.last_sent.is_empty() {
                    vec![ACK]
                } else {
                    self.last_sent.clone()
                }
            }
            0xff => {
                self.set_defaults();
                self.id = ID_STANDARD;
                self.sent(vec![ACK, BAT_OK, ID_STANDARD])
            }
            _ => {
                log::debug!("ps2 mouse: unknown command {cmd:#04x}");
                vec![RESEND]
            }
        }
    }

    fn argument(&mut self, cmd: u8, arg: u8) -> Vec<u8> {
        match cmd {
            0xe8 if arg <= 3 => {
                self.resolution = arg;
                self.sent(vec![ACK])
            }
            0xf3 if SAMPLE_RATES.contains(&arg) => {
                self.sample_rate = arg;
                let [_, older, newer] = self.rate_history;
                self.rate_history = [older, newer, arg];
                match self.rate_history {
                    [200, 100, 80] if self.id == ID_STANDARD => self.id = ID_INTELLIMOUSE,
                    [200, 200, 80] if self.id == ID_INTELLIMOUSE => self.id = ID_EXPLORER,
                    _ => {}
                }
                self.sent(vec![ACK])
            }
            _ => {
                log::debug!("ps2 mouse: invalid argument {arg:#04x} to {cmd:#04x}");
                self.rate_history = [0; 3];
                vec![RESEND]
            }
        }
    }

    fn status_byte(&self) -> u8 {
        let mut status = 0;
        if self.buttons & 0x01 != 0 {
            status |= STATUS_LEFT;
        }
        if self.buttons & 0x02 != 0 {
            status |= STATUS_RIGHT;
        }
        if self.buttons & 0x04 != 0 {
            status |= STATUS_MIDDLE;
        }
        if self.scaling_2_1 {
            status |= STATUS_SCALING_2_1;
        }
        if self.reporting {
            status |= STATUS_REPORTING;
        }
        let mode = if self.mode == Mode::Wrap {
            self.mode_before_wrap
        } else {
            self.mode
        };
        if mode == Mode::Remote {
            status |= STATUS_REMOTE;
        }
        status
    }

    /// One movement packet for motion `x` (right), `y` (up) and wheel `z`,
    /// clamping each to its field and flagging X/Y overflow when clamped.
    fn packet(&self, x: i32, y: i32, z: i32, scale: bool) -> Vec<u8> {
        let (x, y) = if scale {
            (scale_2_1(x), scale_2_1(y))
        } else {
            (x, y)
        };
        let cx = x.clamp(MOTION_MIN, MOTION_MAX);
        let cy = y.clamp(MOTION_MIN, MOTION_MAX);
        let mut first =
            PACKET_ALWAYS_ONE | (self.buttons & (PACKET_LEFT | PACKET_RIGHT | PACKET_MIDDLE));
        if cx < 0 {
            first |= PACKET_X_SIGN;
        }
        if cy < 0 {
            first |= PACKET_Y_SIGN;
        }
        if cx != x {
            first |= PACKET_X_OVERFLOW;
        }
        if cy != y {
            first |= PACKET_Y_OVERFLOW;
        }
        // The low eight bits of the 9-bit two's complement values.
        let mut packet = vec![first, low_byte(cx), low_byte(cy)];
        let cz = z.clamp(WHEEL_MIN, WHEEL_MAX);
        match self.id {
            ID_INTELLIMOUSE => packet.push(low_byte(cz)),
            ID_EXPLORER => {
                let mut fourth = low_byte(cz) & 0x0f;
                if self.buttons & BUTTON_FOURTH != 0 {
                    fourth |= 0x10;
                }
                if self.buttons & BUTTON_FIFTH != 0 {
                    fourth |= 0x20;
                }
                packet.push(fourth);
            }
            _ => {}
        }
        packet
    }

    /// Host input: `dx` to the right, `dy` down (screen terms, as hosts
    /// report it; the packet's Y points up), `dz` wheel clicks toward the
    /// user (scrolling down; PS/2's own sign), `buttons` bit 0 left, bit 1
    /// right, bit 2 middle, bits 3 and 4 buttons 4 and 5 (Explorer only).
    ///
    /// Returns the packets to send, each [`Ps2Mouse::packet_len`] bytes:
    /// none unless reporting is enabled in stream mode (in remote mode the
    /// motion accumulates for Read Data). A motion beyond one packet's
    /// range is split over up to [`MAX_PACKETS_PER_EVENT`] packets.
    pub fn input(&mut self, dx: i32, dy: i32, dz: i32, buttons: u8) -> Vec<Vec<u8>> {
        self.buttons = buttons;
        let up = dy.saturating_neg();
        match self.mode {
            Mode::Remote => {
                // The counters saturate; the packet flags the overflow.
                self.acc_x = self.acc_x.saturating_add(dx).clamp(-4096, 4096);
                self.acc_y = self.acc_y.saturating_add(up).clamp(-4096, 4096);
                self.acc_z = self.acc_z.saturating_add(dz).clamp(-4096, 4096);
                return Vec::new();
            }
            Mode::Wrap => return Vec::new(),
            Mode::Stream if !self.reporting => return Vec::new(),
            Mode::Stream => {}
        }
        let (mut rx, mut ry, mut rz) = (dx, up, dz);
        let mut packets = Vec::new();
        loop {
            let last = packets.len() + 1 >= MAX_PACKETS_PER_EVENT;
            let (cx, cy, cz) = if last {
                (rx, ry, rz)
            } else {
                (
                    rx.clamp(MOTION_MIN, MOTION_MAX),
                    ry.clamp(MOTION_MIN, MOTION_MAX),
                    rz.clamp(WHEEL_MIN, WHEEL_MAX),
                )
            };
            rx -= cx;
            ry -= cy;
            rz -= cz;
            packets.push(self.packet(cx, cy, cz, self.scaling_2_1));
            if last || (rx == 0 && ry == 0 && rz == 0) {
                break;
            }
        }
        if let Some(packet) = packets.last() {
            self.last_sent = packet.clone();
        }
        packets
    }
}

/// 2:1 scaling as the mouse applies it in stream mode.
fn scale_2_1(value: i32) -> i32 {
    let magnitude = match value.unsigned_abs() {
        0 => 0,
        1 | 2 => 1,
        3 => 3,
        4 => 6,
        5 => 9,
        n => n.saturating_mul(2),
    };
    let magnitude = i32::try_from(magnitude).unwrap_or(i32::MAX);
    if value < 0 { -magnitude } else { magnitude }
}

/// The low eight bits of a two's complement value.
fn low_byte(value: i32) -> u8 {
    value.to_le_bytes().first().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(mouse: &mut Ps2Mouse, bytes: &[u8]) -> Vec<u8> {
        bytes.iter().flat_map(|&b| mouse.write(b)).collect()
    }

    #[test]
    fn test_ps2_mouse_reset_answers_ack_bat_id() {
        let mut mouse = Ps2Mouse::new();
        assert_eq!(mouse.write(0xff), vec![ACK, BAT_OK, 0x00]);
    }

    #[test]
    fn test_ps2_mouse_intellimouse_sequence_gives_id_3() {
        let mut mouse = Ps2Mouse::new();
        let replies = send(&mut mouse, &[0xf3, 200, 0xf3, 100, 0xf3, 80]);
        assert_eq!(replies, vec![ACK; 6]);
        assert_eq!(mouse.write(0xf2), vec![ACK, 0x03]);
        assert_eq!(mouse.packet_len(), 4);
    }

    #[test]
    fn test_ps2_mouse_explorer_sequence_gives_id_4() {
        let mut mouse = Ps2Mouse::new();
        send(&mut mouse, &[0xf3, 200, 0xf3, 100, 0xf3, 80]);
        send(&mut mouse, &[0xf3, 200, 0xf3, 200, 0xf3, 80]);
        assert_eq!(mouse.write(0xf2), vec![ACK, 0x04]);
    }

    #[test]
    fn test_ps2_mouse_broken_sequence_keeps_id_0() {
        let mut mouse = Ps2Mouse::new();
        send(&mut mouse, &[0xf3, 200, 0xe6, 0xf3, 100, 0xf3, 80]);
        assert_eq!(mouse.write(0xf2), vec![ACK, 0x00]);
    }

    #[test]
    fn test_ps2_mouse_reset_drops_wheel_mode() {
        let mut mouse = Ps2Mouse::new();
        send(&mut mouse, &[0xf3, 200, 0xf3, 100, 0xf3, 80]);
        mouse.write(0xff);
        assert_eq!(mouse.write(0xf2), vec![ACK, 0x00]);
    }

    #[test]
    fn test_ps2_mouse_status_reports_settings() {
        let mut mouse = Ps2Mouse::new();
        send(&mut mouse, &[0xe8, 3, 0xf3, 40, 0xe7, 0xf4]);
        mouse.input(0, 0, 0, 0x01);
        assert_eq!(
            mouse.write(0xe9),
            vec![
                ACK,
                STATUS_LEFT | STATUS_SCALING_2_1 | STATUS_REPORTING,
                3,
                40
            ]
        );
    }

    #[test]
    fn test_ps2_mouse_invalid_arguments_are_refused() {
        let mut mouse = Ps2Mouse::new();
        assert_eq!(send(&mut mouse, &[0xf3, 33]), vec![ACK, RESEND]);
        assert_eq!(send(&mut mouse, &[0xe8, 9]), vec![ACK, RESEND]);
        assert_eq!(mouse.write(0xe9), vec![ACK, 0, DEFAULT_RESOLUTION, 100]);
    }

    #[test]
    fn test_ps2_mouse_unknown_command_resends() {
        let mut mouse = Ps2Mouse::new();
        assert_eq!(mouse.write(0x12), vec![RESEND]);
    }

    #[test]
    fn test_ps2_mouse_no_packets_while_disabled() {
        let mut mouse = Ps2Mouse::new();
        assert!(mouse.input(5, 5, 0, 0).is_empty());
        mouse.write(0xf4);
        mouse.write(0xf5);
        assert!(mouse.input(5, 5, 0, 0).is_empty());
    }

    #[test]
    fn test_ps2_mouse_packet_signs() {
        let mut mouse = Ps2Mouse::new();
        mouse.write(0xf4);
        // Left and up on screen: negative X, positive packet Y.
        assert_eq!(mouse.input(-3, -4, 0, 0x01), vec![vec![0x19, 0xfd, 0x04]]);
        // Right and down on screen: positive X, negative packet Y.
        assert_eq!(mouse.input(2, 6, 0, 0x02), vec![vec![0x2a, 0x02, 0xfa]]);
        // Middle button, no motion.
        assert_eq!(mouse.input(0, 0, 0, 0x04), vec![vec![0x0c, 0, 0]]);
    }

    #[test]
    fn test_ps2_mouse_wheel_byte() {
        let mut mouse = Ps2Mouse::new();
        send(&mut mouse, &[0xf3, 200, 0xf3, 100, 0xf3, 80, 0xf4]);
        assert_eq!(mouse.input(0, 0, 1, 0), vec![vec![0x08, 0, 0, 0x01]]);
        assert_eq!(mouse.input(0, 0, -1, 0), vec![vec![0x08, 0, 0, 0xff]]);
    }

    #[test]
    fn test_ps2_mouse_explorer_buttons_and_wheel() {
        let mut mouse = Ps2Mouse::new();
        send(&mut mouse, &[0xf3, 200, 0xf3, 100, 0xf3, 80]);
        send(&mut mouse, &[0xf3, 200, 0xf3, 200, 0xf3, 80, 0xf4]);
        assert_eq!(mouse.input(0, 0, -2, 0x18), vec![vec![0x08, 0, 0, 0x3e]]);
    }

    #[test]
    fn test_ps2_mouse_large_motion_splits() {
        let mut mouse = Ps2Mouse::new();
        mouse.write(0xf4);
        let packets = mouse.input(300, 0, 0, 0);
        assert_eq!(packets, vec![vec![0x08, 0xff, 0], vec![0x08, 45, 0]]);
        let packets = mouse.input(-300, 0, 0, 0);
        assert_eq!(packets, vec![vec![0x18, 0x00, 0], vec![0x18, 0xd4, 0]]);
    }

    #[test]
    fn test_ps2_mouse_huge_motion_clamps_with_overflow() {
        let mut mouse = Ps2Mouse::new();
        mouse.write(0xf4);
        let packets = mouse.input(i32::MAX, i32::MIN, i32::MAX, 0);
        assert_eq!(packets.len(), MAX_PACKETS_PER_EVENT);
        let last = packets.last().cloned().unwrap_or_default();
        assert_eq!(
            last.first().copied().unwrap_or(0) & (PACKET_X_OVERFLOW | PACKET_Y_OVERFLOW),
            PACKET_X_OVERFLOW | PACKET_Y_OVERFLOW
        );
    }

    #[test]
    fn test_ps2_mouse_wheel_clamps() {
        let mut mouse = Ps2Mouse::new();
        send(&mut mouse, &[0xf3, 200, 0xf3, 100, 0xf3, 80, 0xf4]);
        let packets = mouse.input(0, 0, 100, 0);
        assert_eq!(packets.len(), MAX_PACKETS_PER_EVENT);
        assert!(packets.iter().all(|p| p.get(3) == Some(&7)));
    }

    #[test]
    fn test_ps2_mouse_remote_mode_reads_accumulated_motion() {
        let mut mouse = Ps2Mouse::new();
        mouse.write(0xf0);
        assert!(mouse.input(3, 0, 0, 0).is_empty());
        assert!(mouse.input(4, -2, 0, 0).is_empty());
        assert_eq!(mouse.write(0xeb), vec![ACK, 0x08, 7, 2]);
        assert_eq!(mouse.write(0xeb), vec![ACK, 0x08, 0, 0]);
    }

    #[test]
    fn test_ps2_mouse_wrap_mode_echoes() {
        let mut mouse = Ps2Mouse::new();
        assert_eq!(mouse.write(0xee), vec![ACK]);
        assert_eq!(mouse.write(0x42), vec![0x42]);
        assert_eq!(mouse.write(0xf4), vec![0xf4]);
        assert_eq!(mouse.write(0xec), vec![ACK]);
        assert_eq!(mouse.write(0xf2), vec![ACK, 0x00]);
    }

    #[test]
    fn test_ps2_mouse_resend_repeats_last() {
        let mut mouse = Ps2Mouse::new();
        mouse.write(0xf2);
        assert_eq!(mouse.write(0xfe), vec![0x00]);
        mouse.write(0xf4);
        mouse.input(1, 1, 0, 0);
        assert_eq!(mouse.write(0xfe), vec![0x08 | PACKET_Y_SIGN, 1, 0xff]);
    }

    #[test]
    fn test_ps2_mouse_scaling_2_1() {
        assert_eq!(
            [1, 2, 3, 4, 5, 6, -4].map(scale_2_1),
            [1, 1, 3, 6, 9, 12, -6]
        );
    }
}
