// SPDX-License-Identifier: Apache-2.0
//! A virtio input device (virtio spec 1.2, section 5.8 "Input Device") in
//! three flavours ([`InputKind`]): a PC keyboard, an absolute pointer
//! (tablet) and a relative mouse. Events use Linux's evdev codes
//! (`input-event-codes.h`), which is what the spec's event layer is.
//!
//! The device offers only VIRTIO_F_VERSION_1 and has two queues of up to
//! [`QUEUE_SIZE`] entries: `eventq` (0), whose device-writable buffers the
//! device fills with 8-byte `virtio_input_event`s, and `statusq` (1), on
//! which the driver sends events back (LED state); those are logged at
//! debug level and completed. The configuration space is the spec's
//! `virtio_input_config`: the driver writes `select` and `subsel`, and
//! reads `size` and the union the pair selects; every other byte is
//! read-only.
//!
//! The host side queues events through an [`InputSender`] (cloneable, for
//! any thread); it wakes the thread that serves the queues through an
//! event fd ([`Input::wake_fd`]). Events travel in groups that end with
//! `EV_SYN`/`SYN_REPORT`, one per host action: a group is delivered in
//! order as the driver posts buffers (it may span several batches of
//! buffers), and when more than [`MAX_PENDING_EVENTS`] wait, whole oldest
//! groups that have not started are dropped and counted, so the guest
//! never sees half a group.
//!
//! Queue work runs synchronously on the thread that calls
//! [`VirtioDevice::queue_notify`](super::VirtioDevice::queue_notify) or [`Input::serve_host_events`] (the
//! VMM's), or [`Input::serve_eventq`] / [`Input::serve_statusq`] (a
//! vhost-user back-end's vring thread). Every chain is checked before it is
//! written: a device-readable descriptor, one outside guest memory, or a
//! buffer shorter than an event completes the buffer with 0 bytes (the
//! event waits for the next buffer), logged with a rate limit. A broken
//! queue stops processing and sets [`Input::needs_reset`].

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use log::{debug, warn};
use virtio_queue::{DescriptorChain, Queue};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::device_core::{self, DeviceCore, GuestFault, QueueDevice, Step};
use super::{DeviceInfo, ErrorLog, VIRTIO_F_VERSION_1, device_type, read_config_bytes};
use crate::memory::GuestMemoryMmap;

pub mod shared;

pub use shared::SharedInput;

/// The largest size of each queue (as QEMU's virtio-input uses).
pub const QUEUE_SIZE: u16 = 64;
/// The most events that wait for the driver's buffers; past it, whole
/// oldest groups are dropped.
pub const MAX_PENDING_EVENTS: usize = 1024;
/// The largest coordinate of the tablet's axes (both start at 0).
pub const TABLET_AXIS_MAX: u32 = 0x7fff;

/// The size of one `virtio_input_event` on the wire.
const EVENT_SIZE: usize = 8;
/// The size of `virtio_input_config`: 8 header bytes and a 128-byte union.
const CONFIG_SIZE: usize = 136;
/// Where the union starts in the configuration space.
const UNION_OFFSET: usize = 8;
/// The size of the union.
const UNION_SIZE: usize = 128;
/// The queue indices.
const EVENTQ: u16 = 0;
const STATUSQ: u16 = 1;

/// Event types and codes from Linux's `input-event-codes.h` that the
/// device's flavours use.
pub mod codes {
    /// Synchronisation events.
    pub const EV_SYN: u16 = 0x00;
    /// Keys and buttons.
    pub const EV_KEY: u16 = 0x01;
    /// Relative axes.
    pub const EV_REL: u16 = 0x02;
    /// Absolute axes.
    pub const EV_ABS: u16 = 0x03;
    /// LEDs.
    pub const EV_LED: u16 = 0x11;
    /// Autorepeat.
    pub const EV_REP: u16 = 0x14;
    /// The end of one group of events.
    pub const SYN_REPORT: u16 = 0;
    /// The first key of a PC keyboard.
    pub const KEY_ESC: u16 = 1;
    /// The last key of the keyboard flavour.
    pub const KEY_MICMUTE: u16 = 248;
    /// Left mouse button.
    pub const BTN_LEFT: u16 = 0x110;
    /// Right mouse button.
    pub const BTN_RIGHT: u16 = 0x111;
    /// Middle mouse button.
    pub const BTN_MIDDLE: u16 = 0x112;
    /// Relative horizontal motion.
    pub const REL_X: u16 = 0x00;
    /// Relative vertical motion.
    pub const REL_Y: u16 = 0x01;
    /// The scroll wheel.
    pub const REL_WHEEL: u16 = 0x08;
    /// Absolute horizontal position.
    pub const ABS_X: u16 = 0x00;
    /// Absolute vertical position.
    pub const ABS_Y: u16 = 0x01;
    /// Num Lock LED.
    pub const LED_NUML: u16 = 0x00;
    /// Caps Lock LED.
    pub const LED_CAPSL: u16 = 0x01;
    /// Scroll Lock LED.
    pub const LED_SCROLLL: u16 = 0x02;
    /// The autorepeat delay parameter.
    pub const REP_DELAY: u16 = 0x00;
    /// The autorepeat period parameter.
    pub const REP_PERIOD: u16 = 0x01;
    /// The device needs an on-screen pointer (mice, touchpads).
    pub const INPUT_PROP_POINTER: u8 = 0x00;
    /// Device coordinates map directly to the screen.
    pub const INPUT_PROP_DIRECT: u8 = 0x01;
}

use codes::*;

/// `virtio_input_config_select` values (spec 5.8.4).
mod select {
    pub(super) const UNSET: u8 = 0x00;
    pub(super) const ID_NAME: u8 = 0x01;
    pub(super) const ID_SERIAL: u8 = 0x02;
    pub(super) const ID_DEVIDS: u8 = 0x03;
    pub(super) const PROP_BITS: u8 = 0x10;
    pub(super) const EV_BITS: u8 = 0x11;
    pub(super) const ABS_INFO: u8 = 0x12;
}

/// `BUS_VIRTUAL` from Linux's `input.h`.
const BUS_VIRTUAL: u16 = 0x06;
/// The vendor ID the device reports.
const VENDOR_ID: u16 = 0x0627;

/// Errors of the input device: the reasons a buffer fails, and a broken
/// queue.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The event fd that wakes the device could not be created.
    #[error("Cannot create the wake-up event fd")]
    EventFd(#[source] std::io::Error),
    /// An eventq chain holds a device-readable descriptor.
    #[error("Event buffer has a device-readable descriptor")]
    DeviceReadable,
    /// A statusq chain holds a device-writable descriptor.
    #[error("Status buffer has a device-writable descriptor")]
    DeviceWritable,
    /// A descriptor points outside guest memory.
    #[error("Descriptor at {addr:#x} ({len} bytes) is outside guest memory")]
    DescriptorOutOfMemory {
        /// Its guest address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The buffer cannot hold one event.
    #[error("Buffer of {len} bytes is shorter than an event")]
    ShortBuffer {
        /// The chain's total length.
        len: u64,
    },
    /// Guest memory could not be accessed, though it was checked.
    #[error("Guest memory access failed")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
    /// A queue is broken.
    #[error(transparent)]
    Guest(#[from] GuestFault),
}

impl InputError {
    /// Whether the guest caused the error (as opposed to the host): such
    /// errors are rate-limited in the log.
    pub fn is_guest_error(&self) -> bool {
        !matches!(self, Self::EventFd(_))
    }
}

/// Which input device the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// A PC keyboard with autorepeat and the three lock LEDs.
    Keyboard,
    /// An absolute pointer: `ABS_X`/`ABS_Y` in `0..=TABLET_AXIS_MAX`,
    /// three buttons and a wheel.
    Tablet,
    /// A relative mouse: `REL_X`/`REL_Y`, a wheel and three buttons.
    Mouse,
}

impl InputKind {
    /// The name the guest sees (`ID_NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Keyboard => "Nestbox Keyboard",
            Self::Tablet => "Nestbox Tablet",
            Self::Mouse => "Nestbox Mouse",
        }
    }

    fn serial(self) -> &'static str {
        match self {
            Self::Keyboard => "nestbox-keyboard",
            Self::Tablet => "nestbox-tablet",
            Self::Mouse => "nestbox-mouse",
        }
    }

    fn product(self) -> u16 {
        match self {
            Self::Keyboard => 1,
            Self::Mouse => 2,
            Self::Tablet => 3,
        }
    }

    /// `INPUT_PROP_*` bits: a tablet maps straight to the screen, a mouse
    /// needs a pointer; a keyboard has none.
    fn props(self) -> &'static [u16] {
        match self {
            Self::Keyboard => &[],
            Self::Tablet => &[INPUT_PROP_DIRECT as u16],
            Self::Mouse => &[INPUT_PROP_POINTER as u16],
        }
    }

    /// The codes supported for `event_type`; empty when it is not.
    fn event_codes(self, event_type: u16) -> Vec<u16> {
        const BUTTONS: [u16; 3] = [BTN_LEFT, BTN_RIGHT, BTN_MIDDLE];
        match (self, event_type) {
            (Self::Keyboard, EV_KEY) => (KEY_ESC..=KEY_MICMUTE).collect(),
            (Self::Keyboard, EV_LED) => vec![LED_NUML, LED_CAPSL, LED_SCROLLL],
            (Self::Keyboard, EV_REP) => vec![REP_DELAY, REP_PERIOD],
            (Self::Tablet | Self::Mouse, EV_KEY) => BUTTONS.to_vec(),
            (Self::Tablet, EV_ABS) => vec![ABS_X, ABS_Y],
            (Self::Tablet, EV_REL) => vec![REL_WHEEL],
            (Self::Mouse, EV_REL) => vec![REL_X, REL_Y, REL_WHEEL],
            _ => Vec::new(),
        }
    }
}

/// One evdev event (`virtio_input_event`: le16 type, le16 code, le32
/// value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputEvent {
    /// The event type (`EV_*`).
    pub event_type: u16,
    /// The code within the type (`KEY_*`, `REL_*`, ...).
    pub code: u16,
    /// The value: 1/0 for key press/release, a delta or a position.
    pub value: i32,
}

impl InputEvent {
    /// An event of any type.
    pub const fn new(event_type: u16, code: u16, value: i32) -> Self {
        Self {
            event_type,
            code,
            value,
        }
    }

    /// A key or button press (`pressed`) or release.
    pub const fn key(code: u16, pressed: bool) -> Self {
        Self::new(EV_KEY, code, pressed as i32)
    }

    /// The `EV_SYN`/`SYN_REPORT` that ends a group.
    pub const fn syn() -> Self {
        Self::new(EV_SYN, SYN_REPORT, 0)
    }

    fn is_syn_report(&self) -> bool {
        self.event_type == EV_SYN && self.code == SYN_REPORT
    }

    fn to_bytes(self) -> [u8; EVENT_SIZE] {
        let mut bytes = [0u8; EVENT_SIZE];
        let (head, value) = bytes.split_at_mut(4);
        let (event_type, code) = head.split_at_mut(2);
        event_type.copy_from_slice(&self.event_type.to_le_bytes());
        code.copy_from_slice(&self.code.to_le_bytes());
        value.copy_from_slice(&self.value.to_le_bytes());
        bytes
    }

    fn from_bytes(bytes: [u8; EVENT_SIZE]) -> Self {
        let [t0, t1, c0, c1, v0, v1, v2, v3] = bytes;
        Self::new(
            u16::from_le_bytes([t0, t1]),
            u16::from_le_bytes([c0, c1]),
            i32::from_le_bytes([v0, v1, v2, v3]),
        )
    }
}

/// Events waiting for the driver's buffers, in groups.
#[derive(Debug, Default)]
struct Pending {
    events: VecDeque<InputEvent>,
    /// The length of each group in `events`, oldest first; the first one
    /// counts only its events not yet delivered.
    groups: VecDeque<usize>,
    /// Whether part of the first group was delivered (it cannot be
    /// dropped then).
    started: bool,
}

impl Pending {
    /// Adds one group (ending with SYN_REPORT); returns the number of
    /// groups dropped to stay within `MAX_PENDING_EVENTS`.
    fn push_group(&mut self, group: &[InputEvent]) -> u64 {
        let mut dropped = 0;
        while self.events.len().saturating_add(group.len()) > MAX_PENDING_EVENTS {
            // The oldest group not yet started goes.
            let victim = usize::from(self.started);
            let Some(&len) = self.groups.get(victim) else {
                break;
            };
            let start: usize = self.groups.iter().take(victim).sum();
            self.events.drain(start..start.saturating_add(len));
            self.groups.remove(victim);
            dropped += 1;
        }
        if self.events.len().saturating_add(group.len()) > MAX_PENDING_EVENTS {
            // The group alone is too big for what room is left.
            return dropped + 1;
        }
        self.events.extend(group.iter().copied());
        self.groups.push_back(group.len());
        dropped
    }

    fn front(&self) -> Option<InputEvent> {
        self.events.front().copied()
    }

    /// Marks the front event delivered.
    fn pop(&mut self) {
        if self.events.pop_front().is_none() {
            return;
        }
        match self.groups.front_mut() {
            Some(len) if *len > 1 => {
                *len -= 1;
                self.started = true;
            }
            _ => {
                self.groups.pop_front();
                self.started = false;
            }
        }
    }

    fn clear(&mut self) {
        self.events.clear();
        self.groups.clear();
        self.started = false;
    }
}

/// What the device and its senders share.
struct HostEvents {
    pending: Mutex<Pending>,
    wake: EventFd,
    dropped_groups: AtomicU64,
    /// Whether a driver activated the device (set DRIVER_OK) and has not
    /// reset it since.
    active: AtomicBool,
}

impl HostEvents {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Queues host input for an [`Input`] device from any thread. Never
/// blocks on the guest: when the driver is not taking events, the oldest
/// whole groups are dropped and counted.
#[derive(Clone)]
pub struct InputSender {
    shared: Arc<HostEvents>,
}

impl InputSender {
    /// Queues `events` and wakes the device. They are split into groups
    /// after each `EV_SYN`/`SYN_REPORT`; trailing events without one get
    /// one added, so pass one whole host action (or several) per call.
    pub fn push_events(&self, events: &[InputEvent]) {
        if events.is_empty() {
            return;
        }
        let mut dropped = 0;
        {
            let mut pending = self.shared.pending();
            let mut rest = events;
            while !rest.is_empty() {
                let end = rest
                    .iter()
                    .position(InputEvent::is_syn_report)
                    .map_or(rest.len(), |at| at.saturating_add(1));
                let (group, after) = rest.split_at(end.min(rest.len()));
                if group.last().is_some_and(InputEvent::is_syn_report) {
                    dropped += pending.push_group(group);
                } else {
                    let mut whole = group.to_vec();
                    whole.push(InputEvent::syn());
                    dropped += pending.push_group(&whole);
                }
                rest = after;
            }
        }
        if dropped > 0 {
            let before = self
                .shared
                .dropped_groups
                .fetch_add(dropped, Ordering::Relaxed);
            if before == 0 {
                warn!("virtio-input: the guest is not reading input; dropping the oldest events");
            }
        }
        if let Err(err) = self.shared.wake.write(1) {
            // Only an overflowing counter fails, and then a wake-up is
            // already due.
            debug!("virtio-input: cannot wake the device: {err}");
        }
    }

    /// The number of event groups dropped because the guest did not take
    /// them in time.
    pub fn dropped_groups(&self) -> u64 {
        self.shared.dropped_groups.load(Ordering::Relaxed)
    }

    /// Whether a guest driver has activated the device (set DRIVER_OK)
    /// and not reset it since: only then does the guest read its events.
    pub fn is_active(&self) -> bool {
        self.shared.active.load(Ordering::Acquire)
    }
}

/// What a saved machine state holds of an input device: its
/// configuration selector and the host events the driver has not taken.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedInput {
    select: u8,
    subsel: u8,
    events: Vec<(u16, u16, i32)>,
    groups: Vec<u64>,
    started: bool,
}

/// One checked descriptor of a chain.
#[derive(Clone, Copy, Debug)]
struct Desc {
    addr: GuestAddress,
    len: u32,
}

/// A virtio input device.
pub struct Input {
    kind: InputKind,
    shared: Arc<HostEvents>,
    select: u8,
    subsel: u8,
    core: DeviceCore,
    errors: ErrorLog,
}

impl Input {
    /// Creates a device of flavour `kind`, with no events pending.
    pub fn new(kind: InputKind) -> Result<Self, InputError> {
        let wake = EventFd::new(EFD_NONBLOCK).map_err(InputError::EventFd)?;
        Ok(Self {
            kind,
            shared: Arc::new(HostEvents {
                pending: Mutex::new(Pending::default()),
                wake,
                dropped_groups: AtomicU64::new(0),
                active: AtomicBool::new(false),
            }),
            select: select::UNSET,
            subsel: 0,
            core: DeviceCore::default(),
            errors: ErrorLog::default(),
        })
    }

    /// The flavour of the device.
    pub fn kind(&self) -> InputKind {
        self.kind
    }

    /// A handle that queues host input for this device from any thread.
    pub fn sender(&self) -> InputSender {
        InputSender {
            shared: self.shared.clone(),
        }
    }

    /// Queues `events` (see [`InputSender::push_events`]); they reach the
    /// guest on the next [`serve_host_events`](Self::serve_host_events).
    pub fn push_events(&mut self, events: &[InputEvent]) {
        self.sender().push_events(events);
    }

    /// The event fd that becomes readable when host input is queued: the
    /// serving thread polls it and then calls
    /// [`serve_host_events`](Self::serve_host_events) (or, on vrings,
    /// [`clear_wake`](Self::clear_wake) and
    /// [`serve_eventq`](Self::serve_eventq)).
    pub fn wake_fd(&self) -> RawFd {
        self.shared.wake.as_raw_fd()
    }

    /// Consumes the wake-up of [`wake_fd`](Self::wake_fd).
    pub fn clear_wake(&self) {
        // Nothing to read (WouldBlock) is fine: the events are served
        // either way.
        let _ = self.shared.wake.read();
    }

    /// Whether a queue broke and the device stopped serving it until the
    /// driver resets it (the transport should set DEVICE_NEEDS_RESET).
    pub fn needs_reset(&self) -> bool {
        self.core.needs_reset()
    }

    /// Delivers queued host events to the activated device's eventq (after
    /// its [`wake_fd`](Self::wake_fd) fired).
    pub fn serve_host_events(&mut self) {
        QueueDevice::serve_host_events(self);
    }

    /// Moves pending events into the buffers available on an eventq owned
    /// by someone else (a vhost-user front-end's vring); returns whether
    /// any buffer was used. Fails when the queue itself is broken.
    pub fn serve_eventq(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, InputError> {
        let shared = self.shared.clone();
        let mut pending = shared.pending();
        drain_eventq(mem, queue, &mut pending, &mut self.errors)
    }

    /// Consumes and completes what the driver sent on a statusq owned by
    /// someone else; returns whether any buffer was used. Fails when the
    /// queue itself is broken.
    pub fn serve_statusq(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, InputError> {
        drain_statusq(mem, queue, &mut self.errors)
    }

    /// The configuration space for the current `select`/`subsel`.
    fn config(&self) -> [u8; CONFIG_SIZE] {
        let mut config = [0u8; CONFIG_SIZE];
        let payload = self.payload();
        let size = payload.len().min(UNION_SIZE);
        if let Some(head) = config.get_mut(..3) {
            // `size` is at most 128.
            head.copy_from_slice(&[self.select, self.subsel, size as u8]);
        }
        if let (Some(union), Some(src)) = (
            config.get_mut(UNION_OFFSET..UNION_OFFSET + size),
            payload.get(..size),
        ) {
            union.copy_from_slice(src);
        }
        config
    }

    /// The union's contents for the current `select`/`subsel`; empty when
    /// the pair selects nothing (size 0).
    fn payload(&self) -> Vec<u8> {
        let kind = self.kind;
        match (self.select, self.subsel) {
            (select::ID_NAME, 0) => kind.name().as_bytes().to_vec(),
            (select::ID_SERIAL, 0) => kind.serial().as_bytes().to_vec(),
            (select::ID_DEVIDS, 0) => [BUS_VIRTUAL, VENDOR_ID, kind.product(), 1]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            (select::PROP_BITS, 0) => bitmap(kind.props()),
            (select::EV_BITS, event_type) => bitmap(&kind.event_codes(u16::from(event_type))),
            (select::ABS_INFO, axis) if kind.event_codes(EV_ABS).contains(&u16::from(axis)) => {
                // min, max, fuzz, flat, res
                [0, TABLET_AXIS_MAX, 0, 0, 0]
                    .iter()
                    .flat_map(|v: &u32| v.to_le_bytes())
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

/// A bitmap with bit `code` set for each code, as long as its last
/// non-zero byte.
fn bitmap(codes: &[u16]) -> Vec<u8> {
    let mut bits = vec![0u8; UNION_SIZE];
    for &code in codes {
        if let Some(byte) = bits.get_mut(usize::from(code / 8)) {
            *byte |= 1 << (code % 8);
        }
    }
    let len = bits.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1);
    bits.truncate(len);
    bits
}

impl DeviceInfo for Input {
    fn device_type(&self) -> u32 {
        device_type::INPUT
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `select` (0) and `subsel` (1) are writable; a front-end that
        // writes the whole structure back leaves the rest unchanged.
        for (i, &byte) in data.iter().enumerate() {
            match offset.checked_add(i as u64) {
                Some(0) => self.select = byte,
                Some(1) => self.subsel = byte,
                _ => {}
            }
        }
    }
}

impl QueueDevice for Input {
    type Error = InputError;

    fn name(&self) -> &str {
        "virtio-input"
    }

    device_core::core_accessors!();

    fn serve(
        &mut self,
        index: u16,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, InputError> {
        match index {
            EVENTQ => self.serve_eventq(mem, queue),
            STATUSQ => self.serve_statusq(mem, queue),
            _ => Ok(false),
        }
    }

    fn activated(&mut self) {
        // Input queued before the driver was ready is delivered now, if
        // the driver has posted buffers by its first kick.
        self.shared.active.store(true, Ordering::Release);
    }

    fn saves_state(&self) -> bool {
        true
    }

    fn save_own(&mut self) -> Result<Vec<u8>, crate::snapshot::StateError> {
        let pending = self.shared.pending();
        let state = SavedInput {
            select: self.select,
            subsel: self.subsel,
            events: pending
                .events
                .iter()
                .map(|e| (e.event_type, e.code, e.value))
                .collect(),
            groups: pending.groups.iter().map(|&g| g as u64).collect(),
            started: pending.started,
        };
        crate::snapshot::encode("virtio input device", &state)
    }

    fn restore_own(&mut self, bytes: &[u8]) -> Result<(), crate::snapshot::StateError> {
        const NAME: &str = "virtio input device";
        let state: SavedInput = crate::snapshot::decode(NAME, bytes)?;
        let total: u64 = state.groups.iter().sum();
        if state.events.len() > MAX_PENDING_EVENTS || total != state.events.len() as u64 {
            return Err(crate::snapshot::invalid(
                NAME,
                "its waiting events do not add up",
            ));
        }
        let mut pending = self.shared.pending();
        pending.events = state
            .events
            .iter()
            .map(|&(event_type, code, value)| InputEvent {
                event_type,
                code,
                value,
            })
            .collect();
        pending.groups = state.groups.iter().map(|&g| g as usize).collect();
        pending.started = state.started;
        self.select = state.select;
        self.subsel = state.subsel;
        Ok(())
    }

    fn reset_state(&mut self) {
        // Input meant for the old driver is stale for the next one.
        self.shared.pending().clear();
        self.shared.active.store(false, Ordering::Release);
        self.select = select::UNSET;
        self.subsel = 0;
    }

    fn host_event_fd(&self) -> Option<RawFd> {
        Some(self.wake_fd())
    }

    fn take_host_events(&mut self) -> Vec<u16> {
        self.clear_wake();
        vec![EVENTQ]
    }
}

/// Checks a chain's descriptors: all must be in guest memory and
/// device-writable (`writable`) or device-readable (otherwise). Returns
/// the ones that cover the first event's bytes and the chain's length.
fn collect(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    writable: bool,
) -> Result<Vec<Desc>, InputError> {
    let mut descs = Vec::new();
    let mut total = 0u64;
    let mut error = None;
    // virtio-queue ends the chain at a loop, a bad index or an unreadable
    // descriptor; what remains is checked like any chain.
    for raw in chain {
        if error.is_some() {
            continue;
        }
        let desc = Desc {
            addr: raw.addr(),
            len: raw.len(),
        };
        if raw.is_write_only() != writable {
            error = Some(if writable {
                InputError::DeviceReadable
            } else {
                InputError::DeviceWritable
            });
        } else if !mem.check_range(desc.addr, desc.len as usize) {
            error = Some(InputError::DescriptorOutOfMemory {
                addr: desc.addr.raw_value(),
                len: desc.len,
            });
        } else if desc.len > 0 && total < EVENT_SIZE as u64 {
            descs.push(desc);
        }
        total = total.saturating_add(u64::from(desc.len));
    }
    if let Some(err) = error {
        return Err(err);
    }
    if total < EVENT_SIZE as u64 {
        return Err(InputError::ShortBuffer { len: total });
    }
    Ok(descs)
}

/// Copies `bytes` into `descs`, in order.
fn write_event(
    mem: &GuestMemoryMmap,
    descs: &[Desc],
    bytes: &[u8; EVENT_SIZE],
) -> Result<(), InputError> {
    let mut done = 0usize;
    for desc in descs {
        let end = done.saturating_add(desc.len as usize).min(EVENT_SIZE);
        let Some(part) = bytes.get(done..end) else {
            break;
        };
        mem.write_slice(part, desc.addr)
            .map_err(InputError::GuestMemory)?;
        done = end;
    }
    Ok(())
}

/// Reads the first event's bytes out of `descs`.
fn read_event(mem: &GuestMemoryMmap, descs: &[Desc]) -> Result<InputEvent, InputError> {
    let mut bytes = [0u8; EVENT_SIZE];
    let mut done = 0usize;
    for desc in descs {
        let end = done.saturating_add(desc.len as usize).min(EVENT_SIZE);
        let Some(part) = bytes.get_mut(done..end) else {
            break;
        };
        mem.read_slice(part, desc.addr)
            .map_err(InputError::GuestMemory)?;
        done = end;
    }
    Ok(InputEvent::from_bytes(bytes))
}

/// Fills eventq buffers with pending events until either runs out; a bad
/// buffer is completed with 0 bytes and the event waits for the next one.
/// Notifications end up enabled. Fails only when the queue is broken.
fn drain_eventq(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    pending: &mut Pending,
    errors: &mut ErrorLog,
) -> Result<bool, InputError> {
    if pending.front().is_none() {
        // Nothing to deliver: the ring is not even looked at.
        return Ok(false);
    }
    Ok(device_core::drain(mem, queue, |chain| {
        let Some(event) = pending.front() else {
            // Buffers with nothing to put in them stay for later events.
            return Step::Leave;
        };
        match collect(mem, chain, true)
            .and_then(|descs| write_event(mem, &descs, &event.to_bytes()))
        {
            Ok(()) => {
                pending.pop();
                Step::Used(EVENT_SIZE as u32)
            }
            Err(err) => {
                errors.report("virtio-input", &err, err.is_guest_error());
                Step::Used(0)
            }
        }
    })?)
}

/// Consumes every statusq buffer, logging the events the driver sent.
/// Notifications end up enabled. Fails only when the queue is broken.
fn drain_statusq(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    errors: &mut ErrorLog,
) -> Result<bool, InputError> {
    Ok(device_core::drain(mem, queue, |chain| {
        match collect(mem, chain, false).and_then(|descs| read_event(mem, &descs)) {
            Ok(event) => debug!(
                "virtio-input: status from the driver: type {:#x} code {:#x} value {}",
                event.event_type, event.code, event.value
            ),
            Err(err) => errors.report("virtio-input", &err, err.is_guest_error()),
        }
        // The device writes nothing into status buffers.
        Step::Used(0)
    })?)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::mock::MockSplitQueue;

    use super::*;
    use virtio_queue::QueueT;

    use crate::devices::virtio::test_queue::{
        Mock, UNTOUCHED, add_chain, guest_bytes, marked_memory, used, used_count,
    };
    use crate::devices::virtio::{ActivateError, ActivationContext, VirtioDevice, VirtioInterrupt};

    const MEM_SIZE: u64 = 0x10_0000;
    const STATUSQ_ADDR: u64 = 0x1_0000;
    const DATA: u64 = 0x2_0000;
    const QSIZE: u16 = 16;
    const KEY_A: u16 = 30;
    const KEY_B: u16 = 48;
    const KEY_LEFTSHIFT: u16 = 42;

    fn mem() -> GuestMemoryMmap {
        marked_memory(MEM_SIZE, DATA)
    }

    #[derive(Default)]
    struct Interrupts {
        used: [AtomicUsize; 2],
    }

    impl VirtioInterrupt for Interrupts {
        fn signal_used_queue(&self, queue: u16) {
            if let Some(count) = self.used.get(usize::from(queue)) {
                count.fetch_add(1, Ordering::SeqCst);
            }
        }

        fn signal_config_change(&self) {}
    }

    impl Interrupts {
        fn count(&self, queue: usize) -> usize {
            self.used[queue].load(Ordering::SeqCst)
        }
    }

    fn keyboard() -> Input {
        Input::new(InputKind::Keyboard).unwrap()
    }

    fn activate(
        input: &mut Input,
        mem: &GuestMemoryMmap,
        eventq: &Mock<'_>,
        statusq: &Mock<'_>,
    ) -> Arc<Interrupts> {
        let interrupts = Arc::new(Interrupts::default());
        input
            .activate(ActivationContext {
                mem: mem.clone(),
                queues: vec![
                    eventq.create_queue::<Queue>().unwrap(),
                    statusq.create_queue::<Queue>().unwrap(),
                ],
                interrupt: interrupts.clone(),
            })
            .unwrap();
        interrupts
    }

    /// Adds `count` 8-byte event buffers at descriptor `start` onwards,
    /// the `i`th at `DATA + 16 * (start + i)`.
    fn add_event_buffers(vq: &Mock<'_>, start: u16, count: u16) {
        for i in start..start + count {
            add_chain(vq, i, &[(slot(i), 8, true)]);
        }
    }

    fn slot(i: u16) -> u64 {
        DATA + 16 * u64::from(i)
    }

    fn event_at(mem: &GuestMemoryMmap, addr: u64) -> InputEvent {
        let mut bytes = [0u8; EVENT_SIZE];
        mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
        InputEvent::from_bytes(bytes)
    }

    /// The configuration space after selecting `select`/`subsel`.
    fn config(input: &mut Input, select: u8, subsel: u8) -> Vec<u8> {
        input.write_config(0, &[select]);
        input.write_config(1, &[subsel]);
        let mut data = vec![0xffu8; CONFIG_SIZE];
        input.read_config(0, &mut data);
        data
    }

    /// The header (select, subsel, size) and the first `len` union bytes.
    fn selected(input: &mut Input, select: u8, subsel: u8, len: usize) -> (Vec<u8>, Vec<u8>) {
        let data = config(input, select, subsel);
        (data[..3].to_vec(), data[8..8 + len].to_vec())
    }

    #[test]
    fn test_input_config_id_name_is_exact_for_each_flavour() {
        // Arrange
        let mut keyboard = keyboard();
        let mut tablet = Input::new(InputKind::Tablet).unwrap();
        let mut mouse = Input::new(InputKind::Mouse).unwrap();

        // Act
        let keyboard_config = config(&mut keyboard, select::ID_NAME, 0);
        let tablet_config = config(&mut tablet, select::ID_NAME, 0);
        let mouse_config = config(&mut mouse, select::ID_NAME, 0);

        // Assert
        assert_eq!(&keyboard_config[..8], &[1, 0, 16, 0, 0, 0, 0, 0]);
        assert_eq!(&keyboard_config[8..24], b"Nestbox Keyboard");
        assert_eq!(&keyboard_config[24..], &[0u8; 112][..]);
        assert_eq!(&tablet_config[..3], &[1, 0, 14]);
        assert_eq!(&tablet_config[8..22], b"Nestbox Tablet");
        assert_eq!(&mouse_config[..3], &[1, 0, 13]);
        assert_eq!(&mouse_config[8..21], b"Nestbox Mouse");
        assert_eq!(mouse_config[21], 0);
    }

    #[test]
    fn test_input_config_serial_and_devids() {
        // Arrange
        let mut keyboard = keyboard();
        let mut tablet = Input::new(InputKind::Tablet).unwrap();

        // Act
        let serial = selected(&mut keyboard, select::ID_SERIAL, 0, 16);
        let keyboard_ids = selected(&mut keyboard, select::ID_DEVIDS, 0, 8);
        let tablet_ids = selected(&mut tablet, select::ID_DEVIDS, 0, 8);
        let subsel_ids = selected(&mut tablet, select::ID_DEVIDS, 1, 8);

        // Assert
        assert_eq!(serial, (vec![2, 0, 16], b"nestbox-keyboard".to_vec()));
        assert_eq!(
            keyboard_ids,
            (vec![3, 0, 8], vec![0x06, 0, 0x27, 0x06, 1, 0, 1, 0])
        );
        assert_eq!(tablet_ids.1, vec![0x06, 0, 0x27, 0x06, 3, 0, 1, 0]);
        assert_eq!(subsel_ids, (vec![3, 1, 0], vec![0; 8]));
    }

    #[test]
    fn test_input_config_keyboard_ev_bits() {
        // Arrange
        let mut keyboard = keyboard();

        // Act
        let (key_head, keys) = selected(&mut keyboard, select::EV_BITS, EV_KEY as u8, 32);
        let led = selected(&mut keyboard, select::EV_BITS, EV_LED as u8, 1);
        let rep = selected(&mut keyboard, select::EV_BITS, EV_REP as u8, 1);
        let rel = selected(&mut keyboard, select::EV_BITS, EV_REL as u8, 1);
        let abs = selected(&mut keyboard, select::EV_BITS, EV_ABS as u8, 1);
        let props = selected(&mut keyboard, select::PROP_BITS, 0, 1);

        // Assert: KEY_ESC (1) to KEY_MICMUTE (248), not KEY_RESERVED (0).
        assert_eq!(key_head, vec![0x11, 1, 32]);
        assert_eq!(keys[0], 0xfe);
        assert_ne!(keys[usize::from(KEY_A / 8)] & (1 << (KEY_A % 8)), 0);
        assert_eq!(&keys[1..31], &[0xff; 30][..]);
        assert_eq!(keys[31], 0x01);
        assert_eq!(led, (vec![0x11, 0x11, 1], vec![0x07]));
        assert_eq!(rep, (vec![0x11, 0x14, 1], vec![0x03]));
        assert_eq!(rel.0, vec![0x11, 2, 0]);
        assert_eq!(abs.0, vec![0x11, 3, 0]);
        assert_eq!(props.0, vec![0x10, 0, 0]);
    }

    #[test]
    fn test_input_config_tablet_bits_and_abs_info() {
        // Arrange
        let mut tablet = Input::new(InputKind::Tablet).unwrap();

        // Act
        let abs = selected(&mut tablet, select::EV_BITS, EV_ABS as u8, 1);
        let rel = selected(&mut tablet, select::EV_BITS, EV_REL as u8, 2);
        let (key_head, keys) = selected(&mut tablet, select::EV_BITS, EV_KEY as u8, 35);
        let props = selected(&mut tablet, select::PROP_BITS, 0, 1);
        let abs_x = selected(&mut tablet, select::ABS_INFO, ABS_X as u8, 20);
        let abs_y = selected(&mut tablet, select::ABS_INFO, ABS_Y as u8, 20);
        let abs_z = selected(&mut tablet, select::ABS_INFO, 2, 20);

        // Assert
        let info = vec![
            0, 0, 0, 0, 0xff, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(abs, (vec![0x11, 3, 1], vec![0x03]));
        assert_eq!(rel, (vec![0x11, 2, 2], vec![0x00, 0x01]));
        assert_eq!(key_head, vec![0x11, 1, 35]);
        assert_eq!(&keys[..34], &[0; 34][..]);
        assert_eq!(keys[34], 0x07);
        assert_eq!(props, (vec![0x10, 0, 1], vec![1 << INPUT_PROP_DIRECT]));
        assert_eq!(abs_x, (vec![0x12, 0, 20], info.clone()));
        assert_eq!(abs_y, (vec![0x12, 1, 20], info));
        assert_eq!(abs_z.0, vec![0x12, 2, 0]);
    }

    #[test]
    fn test_input_config_mouse_bits() {
        // Arrange
        let mut mouse = Input::new(InputKind::Mouse).unwrap();

        // Act
        let rel = selected(&mut mouse, select::EV_BITS, EV_REL as u8, 2);
        let abs = selected(&mut mouse, select::EV_BITS, EV_ABS as u8, 1);
        let abs_x = selected(&mut mouse, select::ABS_INFO, ABS_X as u8, 1);
        let props = selected(&mut mouse, select::PROP_BITS, 0, 1);

        // Assert
        assert_eq!(rel, (vec![0x11, 2, 2], vec![0x03, 0x01]));
        assert_eq!(abs.0, vec![0x11, 3, 0]);
        assert_eq!(abs_x.0, vec![0x12, 0, 0]);
        assert_eq!(props, (vec![0x10, 0, 1], vec![1 << INPUT_PROP_POINTER]));
    }

    #[test]
    fn test_input_config_only_select_and_subsel_are_writable() {
        // Arrange
        let mut keyboard = keyboard();
        let mut whole = vec![0xaau8; CONFIG_SIZE];
        whole[0] = select::ID_NAME;
        whole[1] = 0;

        // Act
        keyboard.write_config(0, &whole);
        keyboard.write_config(2, &[0x55; 6]);
        keyboard.write_config(u64::MAX, &[1, 2]);
        let mut data = vec![0u8; CONFIG_SIZE];
        keyboard.read_config(0, &mut data);
        let mut tail = [0xffu8; 4];
        keyboard.read_config(CONFIG_SIZE as u64 - 2, &mut tail);

        // Assert
        assert_eq!(&data[..8], &[1, 0, 16, 0, 0, 0, 0, 0]);
        assert_eq!(&data[8..24], b"Nestbox Keyboard");
        assert_eq!(tail, [0; 4]);
    }

    #[test]
    fn test_input_key_press_is_delivered_as_two_events() {
        // Arrange
        let mem = mem();
        let eventq = MockSplitQueue::new(&mem, QSIZE);
        let statusq = MockSplitQueue::create(&mem, GuestAddress(STATUSQ_ADDR), QSIZE);
        let mut input = keyboard();
        let interrupts = activate(&mut input, &mem, &eventq, &statusq);
        add_event_buffers(&eventq, 0, 4);

        // Act
        input.push_events(&[InputEvent::key(KEY_A, true), InputEvent::syn()]);
        input.serve_host_events();

        // Assert
        assert_eq!(used_count(&eventq), 2);
        assert_eq!(used(&eventq, 0), (0, 8));
        assert_eq!(used(&eventq, 1), (1, 8));
        assert_eq!(guest_bytes(&mem, slot(0), 8), [1, 0, 30, 0, 1, 0, 0, 0]);
        assert_eq!(guest_bytes(&mem, slot(1), 8), [0; 8]);
        assert_eq!(guest_bytes(&mem, slot(2), 8), [UNTOUCHED; 8]);
        assert_eq!(interrupts.count(0), 1);
    }

    #[test]
    fn test_input_events_wait_for_buffers_and_go_on_the_kick() {
        // Arrange
        let mem = mem();
        let eventq = MockSplitQueue::new(&mem, QSIZE);
        let statusq = MockSplitQueue::create(&mem, GuestAddress(STATUSQ_ADDR), QSIZE);
        let mut input = keyboard();
        let sender = input.sender();
        let interrupts = activate(&mut input, &mem, &eventq, &statusq);
        std::thread::spawn(move || sender.push_events(&[InputEvent::key(KEY_A, false)]))
            .join()
            .unwrap();
        input.serve_host_events();
        let before = used_count(&eventq);

        // Act
        add_event_buffers(&eventq, 0, 2);
        input.queue_notify(0);

        // Assert: a SYN_REPORT was added to end the group.
        assert_eq!(before, 0);
        assert_eq!(used_count(&eventq), 2);
        assert_eq!(event_at(&mem, slot(0)), InputEvent::key(KEY_A, false));
        assert_eq!(event_at(&mem, slot(1)), InputEvent::syn());
        assert_eq!(interrupts.count(0), 1);
    }

    #[test]
    fn test_input_group_cut_by_missing_buffers_resumes_in_order() {
        // Arrange
        let mem = mem();
        let eventq = MockSplitQueue::new(&mem, QSIZE);
        let statusq = MockSplitQueue::create(&mem, GuestAddress(STATUSQ_ADDR), QSIZE);
        let mut input = keyboard();
        activate(&mut input, &mem, &eventq, &statusq);
        add_event_buffers(&eventq, 0, 2);
        input.push_events(&[
            InputEvent::key(KEY_LEFTSHIFT, true),
            InputEvent::key(KEY_B, true),
            InputEvent::syn(),
            InputEvent::key(KEY_B, false),
            InputEvent::syn(),
        ]);
        input.serve_host_events();
        let first = used_count(&eventq);

        // Act
        add_event_buffers(&eventq, 2, 4);
        input.queue_notify(0);

        // Assert
        assert_eq!(first, 2);
        assert_eq!(used_count(&eventq), 5);
        assert_eq!(
            event_at(&mem, slot(0)),
            InputEvent::key(KEY_LEFTSHIFT, true)
        );
        assert_eq!(event_at(&mem, slot(1)), InputEvent::key(KEY_B, true));
        assert_eq!(event_at(&mem, slot(2)), InputEvent::syn());
        assert_eq!(event_at(&mem, slot(3)), InputEvent::key(KEY_B, false));
        assert_eq!(event_at(&mem, slot(4)), InputEvent::syn());
        assert_eq!(guest_bytes(&mem, slot(5), 8), [UNTOUCHED; 8]);
    }

    #[test]
    fn test_input_overflow_drops_whole_oldest_groups_but_not_a_started_one() {
        // Arrange
        let mem = mem();
        let eventq = MockSplitQueue::new(&mem, QSIZE);
        let statusq = MockSplitQueue::create(&mem, GuestAddress(STATUSQ_ADDR), QSIZE);
        let mut input = keyboard();
        let sender = input.sender();
        activate(&mut input, &mem, &eventq, &statusq);
        add_event_buffers(&eventq, 0, 1);
        // A started group: shift down delivered, B down and SYN waiting.
        input.push_events(&[
            InputEvent::key(KEY_LEFTSHIFT, true),
            InputEvent::key(KEY_B, true),
            InputEvent::syn(),
        ]);
        input.serve_host_events();
        // 511 groups of two fill the queue to 1024; 2 more push out the
        // two oldest whole groups after the started one.
        let presses: Vec<InputEvent> = (0..513u16)
            .flat_map(|i| [InputEvent::key(1 + i % 200, i % 2 == 0), InputEvent::syn()])
            .collect();

        // Act
        input.push_events(&presses);
        add_event_buffers(&eventq, 1, 4);
        input.queue_notify(0);

        // Assert
        assert_eq!(sender.dropped_groups(), 2);
        assert_eq!(input.shared.pending().events.len(), 1024 - 4);
        assert_eq!(
            event_at(&mem, slot(0)),
            InputEvent::key(KEY_LEFTSHIFT, true)
        );
        assert_eq!(event_at(&mem, slot(1)), InputEvent::key(KEY_B, true));
        assert_eq!(event_at(&mem, slot(2)), InputEvent::syn());
        assert_eq!(event_at(&mem, slot(3)), InputEvent::key(3, true));
        assert_eq!(event_at(&mem, slot(4)), InputEvent::syn());
    }

    #[test]
    fn test_input_group_larger_than_the_bound_is_dropped_whole() {
        // Arrange
        let mut input = keyboard();
        let sender = input.sender();
        let mut huge = vec![InputEvent::key(KEY_A, true); MAX_PENDING_EVENTS];
        huge.push(InputEvent::syn());

        // Act
        input.push_events(&[InputEvent::key(KEY_B, true), InputEvent::syn()]);
        sender.push_events(&huge);

        // Assert
        assert_eq!(sender.dropped_groups(), 2);
        assert!(input.shared.pending().events.is_empty());
    }

    #[test]
    fn test_input_bad_event_buffers_complete_with_zero_and_event_waits() {
        // Arrange
        let mem = mem();
        let eventq = MockSplitQueue::new(&mem, QSIZE);
        let statusq = MockSplitQueue::create(&mem, GuestAddress(STATUSQ_ADDR), QSIZE);
        let mut input = keyboard();
        let interrupts = activate(&mut input, &mem, &eventq, &statusq);
        add_chain(&eventq, 0, &[(slot(0), 4, true)]);
        add_chain(&eventq, 1, &[(slot(1), 8, false)]);
        add_chain(&eventq, 2, &[(MEM_SIZE - 4, 8, true)]);
        add_chain(&eventq, 3, &[(u64::MAX - 3, 8, true)]);
        add_chain(&eventq, 4, &[(slot(4), 8, true), (slot(5), 8, false)]);
        add_chain(&eventq, 6, &[(slot(6), 4, true), (slot(7), 4, true)]);

        // Act
        input.push_events(&[InputEvent::key(KEY_A, true)]);
        input.serve_host_events();

        // Assert: the split buffer gets the event, the SYN waits.
        assert_eq!(used_count(&eventq), 6);
        assert_eq!(used(&eventq, 0), (0, 0));
        assert_eq!(used(&eventq, 1), (1, 0));
        assert_eq!(used(&eventq, 2), (2, 0));
        assert_eq!(used(&eventq, 3), (3, 0));
        assert_eq!(used(&eventq, 4), (4, 0));
        assert_eq!(used(&eventq, 5), (6, 8));
        assert_eq!(guest_bytes(&mem, slot(0), 16), [UNTOUCHED; 16]);
        assert_eq!(guest_bytes(&mem, slot(4), 8), [UNTOUCHED; 8]);
        assert_eq!(guest_bytes(&mem, slot(6), 4), [1, 0, 30, 0]);
        assert_eq!(guest_bytes(&mem, slot(7), 4), [1, 0, 0, 0]);
        assert_eq!(input.shared.pending().front(), Some(InputEvent::syn()));
        assert!(!input.needs_reset());
        assert_eq!(interrupts.count(0), 1);
    }

    #[test]
    fn test_input_looping_chain_does_not_hang_or_panic() {
        // Arrange
        let mem = mem();
        let eventq = MockSplitQueue::new(&mem, QSIZE);
        let statusq = MockSplitQueue::create(&mem, GuestAddress(STATUSQ_ADDR), QSIZE);
        let mut input = keyboard();
        activate(&mut input, &mem, &eventq, &statusq);
        let flags = (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16;
        let looping = [
            RawDescriptor::from(SplitDescriptor::new(slot(0), 2, flags, 1)),
            RawDescriptor::from(SplitDescriptor::new(slot(1), 2, flags, 0)),
        ];
        eventq.add_desc_chains(&looping[..1], 0).unwrap();
        eventq.desc_table().store(1, looping[1]).unwrap();

        // Act
        input.push_events(&[InputEvent::key(KEY_A, true)]);
        input.serve_host_events();

        // Assert: a 16-entry loop of 2-byte buffers covers an event; what
        // matters is one completion and no hang.
        assert_eq!(used_count(&eventq), 1);
        assert!(!input.needs_reset());
    }

    #[test]
    fn test_input_bad_avail_index_sets_needs_reset() {
        // Arrange
        let mem = mem();
        let eventq = MockSplitQueue::new(&mem, QSIZE);
        let statusq = MockSplitQueue::create(&mem, GuestAddress(STATUSQ_ADDR), QSIZE);
        let mut input = keyboard();
        let interrupts = activate(&mut input, &mem, &eventq, &statusq);
        eventq.avail().idx().store(1000);
        input.push_events(&[InputEvent::key(KEY_A, true)]);

        // Act
        input.serve_host_events();
        input.queue_notify(0);

        // Assert
        assert!(input.needs_reset());
        assert!(VirtioDevice::needs_reset(&input));
        assert_eq!(used_count(&eventq), 0);
        assert_eq!(interrupts.count(0), 0);
    }

    #[test]
    fn test_input_statusq_is_consumed_and_completed() {
        // Arrange
        let mem = mem();
        let eventq = MockSplitQueue::new(&mem, QSIZE);
        let statusq = MockSplitQueue::create(&mem, GuestAddress(STATUSQ_ADDR), QSIZE);
        let mut input = keyboard();
        let interrupts = activate(&mut input, &mem, &eventq, &statusq);
        let led = InputEvent::new(EV_LED, LED_CAPSL, 1).to_bytes();
        mem.write_slice(&led, GuestAddress(slot(0))).unwrap();
        add_chain(&statusq, 0, &[(slot(0), 8, false)]);
        add_chain(&statusq, 1, &[(slot(1), 8, true)]);
        add_chain(&statusq, 2, &[(slot(2), 3, false)]);
        add_chain(&statusq, 3, &[(u64::MAX - 3, 8, false)]);

        // Act
        input.queue_notify(1);

        // Assert
        assert_eq!(used_count(&statusq), 4);
        assert_eq!(used(&statusq, 0), (0, 0));
        assert_eq!(used(&statusq, 1), (1, 0));
        assert_eq!(used(&statusq, 2), (2, 0));
        assert_eq!(used(&statusq, 3), (3, 0));
        assert_eq!(guest_bytes(&mem, slot(1), 8), [UNTOUCHED; 8]);
        assert_eq!(used_count(&eventq), 0);
        assert_eq!(interrupts.count(1), 1);
        assert!(!input.needs_reset());
    }

    #[test]
    fn test_input_serve_eventq_serves_a_queue_owned_elsewhere() {
        // Arrange
        let mem = mem();
        let eventq = MockSplitQueue::new(&mem, QSIZE);
        let mut input = Input::new(InputKind::Mouse).unwrap();
        let mut queue = eventq.create_queue::<Queue>().unwrap();
        add_event_buffers(&eventq, 0, 3);
        input.push_events(&[
            InputEvent::new(EV_REL, REL_X, -5),
            InputEvent::new(EV_REL, REL_Y, 7),
            InputEvent::syn(),
        ]);

        // Act
        let result = input.serve_eventq(&mem, &mut queue);

        // Assert
        assert!(result.is_ok_and(|used| used));
        assert_eq!(
            guest_bytes(&mem, slot(0), 8),
            [2, 0, 0, 0, 0xfb, 0xff, 0xff, 0xff]
        );
        assert_eq!(event_at(&mem, slot(1)), InputEvent::new(EV_REL, REL_Y, 7));
        assert_eq!(event_at(&mem, slot(2)), InputEvent::syn());
    }

    #[test]
    fn test_input_serve_eventq_bad_head_index_fails() {
        // Arrange
        let mem = mem();
        let eventq = MockSplitQueue::new(&mem, QSIZE);
        let mut input = keyboard();
        let mut queue = eventq.create_queue::<Queue>().unwrap();
        eventq.avail().ring().ref_at(0).unwrap().store(200);
        eventq.avail().idx().store(1);
        input.push_events(&[InputEvent::key(KEY_A, true)]);

        // Act
        let result = input.serve_eventq(&mem, &mut queue);

        // Assert
        assert!(matches!(
            result,
            Err(InputError::Guest(GuestFault::Queue(_)))
        ));
        assert_eq!(used_count(&eventq), 0);
    }

    #[test]
    fn test_input_unready_queue_keeps_events() {
        // Arrange
        let mem = mem();
        let mut input = keyboard();
        let mut queue = Queue::new(QSIZE).unwrap();
        input.push_events(&[InputEvent::key(KEY_A, true)]);

        // Act
        let result = input.serve_eventq(&mem, &mut queue);

        // Assert
        assert!(result.is_ok_and(|used| !used));
        assert_eq!(input.shared.pending().events.len(), 2);
    }

    #[test]
    fn test_input_push_wakes_the_fd_and_clear_consumes_it() {
        // Arrange
        let input = keyboard();
        let sender = input.sender();

        // Act
        sender.push_events(&[InputEvent::key(KEY_A, true)]);
        sender.push_events(&[InputEvent::key(KEY_A, false)]);
        let woken = input.shared.wake.read().ok();
        sender.push_events(&[]);
        let after_empty_push = input.shared.wake.read().is_ok();
        sender.push_events(&[InputEvent::syn()]);
        input.clear_wake();
        let after_clear = input.shared.wake.read().is_ok();

        // Assert
        assert_eq!(woken, Some(2));
        assert!(!after_empty_push);
        assert!(!after_clear);
        assert!(input.wake_fd() >= 0);
    }

    #[test]
    fn test_input_reset_clears_pending_selection_and_activation() {
        // Arrange
        let mem = mem();
        let eventq = MockSplitQueue::new(&mem, QSIZE);
        let statusq = MockSplitQueue::create(&mem, GuestAddress(STATUSQ_ADDR), QSIZE);
        let mut input = keyboard();
        let sender = input.sender();
        let before = sender.is_active();
        activate(&mut input, &mem, &eventq, &statusq);
        let activated = sender.is_active();
        input.write_config(0, &[select::ID_NAME]);
        input.push_events(&[InputEvent::key(KEY_A, true)]);

        // Act
        input.reset();
        add_event_buffers(&eventq, 0, 2);
        input.queue_notify(0);
        let mut head = [0xffu8; 3];
        input.read_config(0, &mut head);

        // Assert
        assert_eq!(used_count(&eventq), 0);
        assert!(input.shared.pending().events.is_empty());
        assert_eq!(head, [0, 0, 0]);
        assert!(!before);
        assert!(activated);
        assert!(!sender.is_active());
    }

    #[test]
    fn test_input_identity_and_activation_with_one_queue_fails() {
        // Arrange
        let mem = mem();
        let eventq = MockSplitQueue::new(&mem, QSIZE);
        let mut input = keyboard();

        // Act
        let result = input.activate(ActivationContext {
            mem: mem.clone(),
            queues: vec![eventq.create_queue::<Queue>().unwrap()],
            interrupt: Arc::new(Interrupts::default()),
        });
        input.ack_features(u64::MAX);
        input.queue_notify(7);

        // Assert
        assert!(matches!(
            result,
            Err(ActivateError::QueueCount {
                expected: 2,
                got: 1
            })
        ));
        assert_eq!(input.device_type(), 18);
        assert_eq!(input.queue_max_sizes(), &[QUEUE_SIZE, QUEUE_SIZE]);
        assert_eq!(input.core.acked_features(), VIRTIO_F_VERSION_1);
        assert_eq!(input.kind(), InputKind::Keyboard);
    }
}
