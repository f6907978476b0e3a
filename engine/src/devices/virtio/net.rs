// SPDX-License-Identifier: Apache-2.0
//! A virtio network device (virtio spec 1.2, section 5.1 "Network Device")
//! that moves Ethernet frames between the guest and a host network
//! back-end: transmitted frames go to a [`FrameSink`] (passt, say), and the
//! back-end's frames come in through [`Net::deliver_frame`] or
//! [`Net::deliver_rx`].
//!
//! The device has one queue pair, receiveq1 ([`RX_QUEUE`], index 0) and
//! transmitq1 ([`TX_QUEUE`], index 1), of up to [`QUEUE_SIZE`] entries
//! each, and no control queue. It offers VIRTIO_F_VERSION_1,
//! VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS and VIRTIO_NET_F_MTU, and nothing
//! else: no checksum or segmentation offloads, no VIRTIO_NET_F_MRG_RXBUF and
//! no VIRTIO_RING_F_EVENT_IDX. So every packet is one descriptor chain that
//! starts with the 12-byte `virtio_net_hdr_v1` ([`HEADER_LEN`]), whose
//! fields the device ignores on transmit and zeroes on receive (but for
//! `num_buffers`, 1), and a driver such as Linux posts receive buffers that
//! each hold a whole frame. The configuration space (spec 5.1.4) holds the
//! MAC address, the link status, `max_virtqueue_pairs` (1) and the MTU
//! ([`MTU`]); nothing in it is writable.
//!
//! Everything in a chain comes from the guest and is treated as hostile:
//! each chain is checked as a whole (directions, guest addresses, lengths)
//! before any byte moves. A bad chain still completes, with a used length
//! of 0, and is logged (rate-limited). A broken queue stops the device and
//! sets [`Net::needs_reset`].
//!
//! Threads: the device is `Send` but not `Sync`; its owner serialises every
//! call. In the VMM the device sits behind a mutex ([`SharedNet`]) that
//! the virtio-pci transport and the VM's event loop both take:
//! [`VirtioDevice::queue_notify`](super::VirtioDevice::queue_notify) runs on the thread that took the
//! driver's notification (the event loop by ioeventfd, or a vCPU thread):
//! for the transmit queue it serves the queue synchronously, handing
//! frames to the sink on that thread; for the
//! receive queue it only records the kick ([`Net::take_rx_kick`]) and
//! writes the event fd given to [`Net::set_rx_notifier`], which wakes the
//! event loop. The event loop delivers the back-end's frames through
//! [`Net::deliver_frame`] (see `crate::net::NetHandler`). Behind
//! vhost-user, the daemon's vring thread calls [`Net::serve_tx`] and
//! [`Net::deliver_rx`] on the front-end's vrings.
//!
//! The device keeps no frames of its own: when the driver has posted no
//! receive buffer, [`RxOutcome::NoBuffer`] hands the frame back to the
//! caller, which keeps it (or drops it) and retries after the driver's next
//! receive-queue notification.

use std::io;
use std::sync::atomic::Ordering;

use log::warn;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::EventFd;

use super::device_core::{self, DeviceCore, GuestFault, QueueDevice, Step};
use super::{DeviceInfo, ErrorLog, VIRTIO_F_VERSION_1, device_type, read_config_bytes};
use crate::memory::GuestMemoryMmap;

/// The largest size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// The index of the receive queue (receiveq1).
pub const RX_QUEUE: u16 = 0;
/// The index of the transmit queue (transmitq1).
pub const TX_QUEUE: u16 = 1;
/// The length of the virtio-net header that starts every packet's chain
/// (`struct virtio_net_hdr_v1`, spec 5.1.6): flags, gso_type, hdr_len,
/// gso_size, csum_start, csum_offset and num_buffers.
pub const HEADER_LEN: usize = 12;
/// The largest Ethernet frame the device moves, either way, in bytes.
pub const MAX_FRAME_LEN: usize = 65_550;
/// The smallest frame the device transmits: an Ethernet header.
pub const MIN_FRAME_LEN: usize = 14;
/// The MTU the device advertises (VIRTIO_NET_F_MTU).
pub const MTU: u16 = 1500;
/// The `status` bit of the configuration space that says the link is up.
pub const VIRTIO_NET_S_LINK_UP: u16 = 1;

/// The features the device offers.
const FEATURES: u64 = VIRTIO_F_VERSION_1
    | (1 << VIRTIO_NET_F_MAC)
    | (1 << VIRTIO_NET_F_STATUS)
    | (1 << VIRTIO_NET_F_MTU);
/// The header of every received packet: all zero (no offloads) but
/// `num_buffers`, the last two bytes, which is 1 (little-endian).
const RX_HEADER: [u8; HEADER_LEN] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
/// The most bytes a transmit chain may hold: a header and the largest
/// frame.
const MAX_TX_CHAIN_LEN: u64 = (HEADER_LEN + MAX_FRAME_LEN) as u64;
/// `max_virtqueue_pairs` in the configuration space.
const QUEUE_PAIRS: u16 = 1;
/// The length of the configuration space: mac, status,
/// max_virtqueue_pairs and mtu.
const CONFIG_LEN: usize = 12;

/// Errors of the network device: the reasons a packet is dropped, and a
/// broken queue.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A transmit chain holds a device-writable descriptor.
    #[error("Transmit chain has a device-writable descriptor")]
    DeviceWritable,
    /// A receive chain holds a device-readable descriptor.
    #[error("Receive chain has a device-readable descriptor")]
    DeviceReadable,
    /// A descriptor points outside guest memory.
    #[error("Descriptor at {addr:#x} ({len} bytes) is outside guest memory")]
    DescriptorOutOfMemory {
        /// Its guest address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A transmit chain is shorter than the virtio-net header.
    #[error("Transmit chain of {len} bytes is shorter than the 12-byte header")]
    TxTooShort {
        /// The chain's length.
        len: u64,
    },
    /// A transmit chain is longer than a header and the largest frame.
    #[error("Transmit chain of {len} bytes is longer than a header and a 65550-byte frame")]
    TxTooLong {
        /// The chain's length, or the part of it counted before it got too
        /// long.
        len: u64,
    },
    /// A transmitted frame is shorter than an Ethernet header.
    #[error("Transmitted frame of {len} bytes has no Ethernet header")]
    RuntFrame {
        /// The frame's length.
        len: usize,
    },
    /// The receive chain cannot hold the header and the frame.
    #[error("Receive buffer of {capacity} bytes cannot hold the {needed} bytes of a packet")]
    RxBufferTooSmall {
        /// The chain's length.
        capacity: u64,
        /// The header and the frame's length.
        needed: usize,
    },
    /// The host back-end handed the device a frame larger than
    /// [`MAX_FRAME_LEN`].
    #[error("Received frame of {len} bytes is larger than 65550 bytes")]
    FrameTooLarge {
        /// The frame's length.
        len: usize,
    },
    /// The frame sink failed.
    #[error("Sending the frame to the host network failed")]
    Send(#[source] io::Error),
    /// Guest memory could not be accessed, though it was checked.
    #[error("Guest memory access failed")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
    /// A queue is broken.
    #[error(transparent)]
    Guest(#[from] GuestFault),
}

impl NetError {
    /// Whether the guest caused the error (as opposed to the host side):
    /// such errors are counted apart in the rate-limited log.
    pub fn is_guest_error(&self) -> bool {
        !matches!(self, Self::FrameTooLarge { .. } | Self::Send(_))
    }
}

/// Where transmitted Ethernet frames go: the host network back-end.
pub trait FrameSink: Send {
    /// Sends one Ethernet frame (without the virtio-net header).
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<()>;
}

/// What became of a frame handed to the device for the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxOutcome {
    /// The frame is in a receive buffer, which was completed.
    Delivered,
    /// The driver has posted no receive buffer: the frame was not consumed
    /// and the queue is untouched. The caller keeps the frame (or drops
    /// it) and retries after the driver's next receive-queue notification.
    NoBuffer,
    /// The frame was dropped: too large, or the receive buffer was bad or
    /// too small (that buffer was completed with a used length of 0).
    Dropped,
}

/// One descriptor of a chain, copied out of guest memory and checked.
#[derive(Clone, Copy, Debug)]
struct Desc {
    addr: GuestAddress,
    len: u32,
}

/// The packet side of the device: what serving the queues needs besides
/// the queues and guest memory.
struct Server {
    sink: Box<dyn FrameSink>,
    /// Descriptors of the chain being served, reused.
    descs: Vec<Desc>,
    /// The frame being transmitted, reused.
    frame: Vec<u8>,
    errors: ErrorLog,
}

/// A virtio network device.
pub struct Net {
    server: Server,
    mac: [u8; 6],
    link_up: bool,
    core: DeviceCore,
    /// The driver notified the receive queue since the owner last looked.
    rx_buffers_posted: bool,
    /// Written on every receive-queue notification, to wake the thread
    /// that delivers frames.
    rx_notifier: Option<EventFd>,
}

impl Net {
    /// Creates a device with the MAC address `mac` whose transmitted frames
    /// go to `sink`. The link starts up.
    pub fn new(mac: [u8; 6], sink: Box<dyn FrameSink>) -> Self {
        Self {
            server: Server {
                sink,
                descs: Vec::new(),
                frame: Vec::new(),
                errors: ErrorLog::default(),
            },
            mac,
            link_up: true,
            core: DeviceCore::default(),
            rx_buffers_posted: false,
            rx_notifier: None,
        }
    }

    /// Has every receive-queue notification of the driver write 1 to
    /// `notifier` (an event fd the thread delivering frames waits on).
    pub fn set_rx_notifier(&mut self, notifier: EventFd) {
        self.rx_notifier = Some(notifier);
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether the configuration space reports the link up.
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// Sets the link status the configuration space reports; when it
    /// changes on an active device, the driver is told of a configuration
    /// change. The status is advisory: frames still move while it is down.
    pub fn set_link_up(&mut self, up: bool) {
        if self.link_up == up {
            return;
        }
        self.link_up = up;
        if let Some(active) = self.core.active() {
            active.interrupt.signal_config_change();
        }
    }

    /// The features the driver (or a vhost-user front-end) accepted.
    pub fn acked_features(&self) -> u64 {
        self.core.acked_features()
    }

    /// Whether a queue broke and the device stopped serving the queues
    /// until the driver resets it (the transport should set
    /// DEVICE_NEEDS_RESET).
    pub fn needs_reset(&self) -> bool {
        self.core.needs_reset()
    }

    /// Whether the driver notified the receive queue (posted receive
    /// buffers) since the last call; clears the flag. The owner then
    /// retries the frames [`RxOutcome::NoBuffer`] left it with.
    pub fn take_rx_kick(&mut self) -> bool {
        std::mem::take(&mut self.rx_buffers_posted)
    }

    /// Transmits every frame available on a transmit queue, activated or
    /// owned by someone else (a vhost-user front-end's vring), and returns
    /// whether any chain was completed. Bad chains and failed sends are
    /// logged and completed with a used length of 0. Fails only when the
    /// queue is broken; the caller signals the driver.
    pub fn serve_tx(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> Result<bool, NetError> {
        self.server.drain_tx(mem, queue)
    }

    /// Writes `frame` (an Ethernet frame, without virtio-net header) into
    /// the next receive buffer of `queue`, activated or owned by someone
    /// else (a vhost-user front-end's vring). On [`RxOutcome::NoBuffer`]
    /// the frame was not consumed. Fails only when the queue is broken;
    /// the caller signals the driver when a chain was completed.
    pub fn deliver_rx(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
        frame: &[u8],
    ) -> Result<RxOutcome, NetError> {
        self.server
            .receive(mem, queue, frame)
            .map(|(outcome, _)| outcome)
    }

    /// Delivers `frame` to the activated device's receive queue, as
    /// [`deliver_rx`](Self::deliver_rx), and interrupts the driver if it
    /// asks for it. An inactive or broken device drops the frame; a queue
    /// that breaks sets `needs_reset`.
    pub fn deliver_frame(&mut self, frame: &[u8]) -> RxOutcome {
        let Self { server, core, .. } = self;
        let Some(active) = core.usable() else {
            return RxOutcome::Dropped;
        };
        let Some(rx) = active.queues.get_mut(usize::from(RX_QUEUE)) else {
            return RxOutcome::Dropped;
        };
        let result = server
            .receive(&active.mem, rx, frame)
            .and_then(|(outcome, used)| {
                let notify = used
                    && rx
                        .needs_notification(&active.mem)
                        .map_err(GuestFault::from)?;
                Ok((outcome, notify))
            });
        match result {
            Ok((outcome, notify)) => {
                if notify {
                    active.interrupt.signal_used_queue(RX_QUEUE);
                }
                outcome
            }
            Err(err) => {
                // This may run off the vCPU thread: tell the driver here
                // (the transport shows DEVICE_NEEDS_RESET in its status).
                active.interrupt.signal_config_change();
                core.fail("virtio-net: receive queue", &err);
                RxOutcome::Dropped
            }
        }
    }

    /// The configuration space (spec 5.1.4), little-endian.
    fn config(&self) -> [u8; CONFIG_LEN] {
        let [m0, m1, m2, m3, m4, m5] = self.mac;
        let status = if self.link_up {
            VIRTIO_NET_S_LINK_UP
        } else {
            0
        };
        let [s0, s1] = status.to_le_bytes();
        let [p0, p1] = QUEUE_PAIRS.to_le_bytes();
        let [t0, t1] = MTU.to_le_bytes();
        [m0, m1, m2, m3, m4, m5, s0, s1, p0, p1, t0, t1]
    }
}

impl DeviceInfo for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        FEATURES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }
}

impl QueueDevice for Net {
    type Error = NetError;

    fn name(&self) -> &str {
        "virtio-net"
    }

    device_core::core_accessors!();

    fn serve(
        &mut self,
        index: u16,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, NetError> {
        match index {
            TX_QUEUE => self.serve_tx(mem, queue),
            // Receive buffers are filled when frames arrive.
            _ => Ok(false),
        }
    }

    fn kicked(&mut self, index: u16) -> bool {
        if index != RX_QUEUE {
            return true;
        }
        if self.core.active().is_some() {
            self.rx_buffers_posted = true;
            if let Some(notifier) = &self.rx_notifier {
                // Fails only when the counter is full, and then the
                // waiter is woken anyway.
                let _ = notifier.write(1);
            }
        }
        false
    }

    fn activated(&mut self) {
        self.rx_buffers_posted = false;
    }

    fn reset_state(&mut self) {
        // The MAC and the link status belong to the host side and stay.
        self.rx_buffers_posted = false;
    }

    fn saves_state(&self) -> bool {
        true
    }

    fn save_own(&mut self) -> Result<Vec<u8>, crate::snapshot::StateError> {
        // Frames on their way in from the host are not the device's: like
        // packets lost on a wire, the guest's network stack resends them.
        crate::snapshot::encode(
            "virtio-net",
            &SavedNet {
                mac: self.mac,
                link_up: self.link_up,
            },
        )
    }

    fn restore_own(&mut self, bytes: &[u8]) -> Result<(), crate::snapshot::StateError> {
        let saved: SavedNet = crate::snapshot::decode("virtio-net", bytes)?;
        if saved.mac != self.mac {
            return Err(crate::snapshot::invalid(
                "virtio-net",
                format!(
                    "it had the MAC address {} when saved and has {} now",
                    format_mac(saved.mac),
                    format_mac(self.mac)
                ),
            ));
        }
        self.link_up = saved.link_up;
        Ok(())
    }
}

/// What a saved machine state holds of a network device beyond its queues.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedNet {
    mac: [u8; 6],
    link_up: bool,
}

fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Server {
    /// Transmits available chains until the ring is empty with
    /// notifications re-enabled. Every chain taken from the ring is
    /// completed; fails only when the queue is broken.
    fn drain_tx(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> Result<bool, NetError> {
        Ok(device_core::drain(mem, queue, |chain| {
            if let Err(err) = self.transmit(mem, chain) {
                self.log(&err);
            }
            Step::Used(0)
        })?)
    }

    /// Checks one transmit chain and sends the frame after its header.
    fn transmit(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
    ) -> Result<(), NetError> {
        // Counting one byte past the limit tells a chain that is too long.
        let total = self.collect(mem, chain, false, MAX_TX_CHAIN_LEN + 1)?;
        if total > MAX_TX_CHAIN_LEN {
            return Err(NetError::TxTooLong { len: total });
        }
        let frame_len = total
            .checked_sub(HEADER_LEN as u64)
            .ok_or(NetError::TxTooShort { len: total })?;
        // At most `MAX_FRAME_LEN`, so it fits a usize.
        let frame_len =
            usize::try_from(frame_len).map_err(|_| NetError::TxTooLong { len: total })?;
        if frame_len < MIN_FRAME_LEN {
            return Err(NetError::RuntFrame { len: frame_len });
        }
        self.frame.clear();
        self.frame.resize(frame_len, 0);
        gather(mem, &self.descs, HEADER_LEN, &mut self.frame)?;
        self.sink.send_frame(&self.frame).map_err(NetError::Send)
    }

    /// Writes `frame` into the next receive chain of `queue`. Returns the
    /// outcome and whether a chain was completed. Fails only when the
    /// queue is broken.
    fn receive(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
        frame: &[u8],
    ) -> Result<(RxOutcome, bool), NetError> {
        if frame.len() > MAX_FRAME_LEN {
            self.log(&NetError::FrameTooLarge { len: frame.len() });
            return Ok((RxOutcome::Dropped, false));
        }
        let avail = queue
            .avail_idx(mem, Ordering::Acquire)
            .map_err(GuestFault::from)?;
        // Notifications are never turned off on the receive queue, but
        // make sure of it (and of the event index, should it be on) before
        // telling the caller to wait for the driver's next one.
        if avail.0 == queue.next_avail()
            && !queue.enable_notification(mem).map_err(GuestFault::from)?
        {
            return Ok((RxOutcome::NoBuffer, false));
        }
        let chain = queue
            .iter(mem)
            .map_err(GuestFault::from)?
            .next()
            .ok_or(GuestFault::AvailRing)?;
        let head = chain.head_index();
        let (outcome, used_len) = match self.fill(mem, chain, frame) {
            Ok(len) => (RxOutcome::Delivered, len),
            Err(err) => {
                self.log(&err);
                (RxOutcome::Dropped, 0)
            }
        };
        queue
            .add_used(mem, head, used_len)
            .map_err(GuestFault::from)?;
        Ok((outcome, true))
    }

    /// Checks one receive chain and writes the header and `frame` (at
    /// most `MAX_FRAME_LEN` bytes) into it; returns the bytes written.
    fn fill(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
        frame: &[u8],
    ) -> Result<u32, NetError> {
        let needed = HEADER_LEN.saturating_add(frame.len());
        let want = u64::try_from(needed).unwrap_or(u64::MAX);
        let capacity = self.collect(mem, chain, true, want)?;
        if capacity < want {
            return Err(NetError::RxBufferTooSmall { capacity, needed });
        }
        scatter(mem, &self.descs, &[&RX_HEADER, frame])?;
        u32::try_from(needed).map_err(|_| NetError::FrameTooLarge { len: frame.len() })
    }

    /// Checks every descriptor of `chain` (direction: device-writable when
    /// `writable`; inside guest memory) and copies the non-empty ones into
    /// `self.descs` until they hold `want` bytes. Returns the bytes the
    /// chain holds, but counts no descriptor after those that reach `want`
    /// (so a hostile chain costs no more than that in kept descriptors).
    fn collect(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
        writable: bool,
        want: u64,
    ) -> Result<u64, NetError> {
        self.descs.clear();
        let mut total = 0u64;
        // virtio-queue ends the chain at a loop, a bad index or an
        // unreadable descriptor; what remains is checked like any chain.
        for raw in chain {
            if raw.is_write_only() != writable {
                self.descs.clear();
                return Err(if writable {
                    NetError::DeviceReadable
                } else {
                    NetError::DeviceWritable
                });
            }
            let desc = Desc {
                addr: raw.addr(),
                len: raw.len(),
            };
            if !mem.check_range(desc.addr, desc.len as usize) {
                self.descs.clear();
                return Err(NetError::DescriptorOutOfMemory {
                    addr: desc.addr.raw_value(),
                    len: desc.len,
                });
            }
            if desc.len > 0 && total < want {
                self.descs.push(desc);
                total = total.saturating_add(u64::from(desc.len));
            }
        }
        Ok(total)
    }

    /// Logs a dropped packet, rate-limited.
    fn log(&mut self, err: &NetError) {
        self.errors.report("virtio-net", err, err.is_guest_error());
    }
}

/// Reads the bytes of `descs` past the first `skip` into `out`, which is
/// exactly as long as they are.
fn gather(
    mem: &GuestMemoryMmap,
    descs: &[Desc],
    mut skip: usize,
    out: &mut [u8],
) -> Result<(), NetError> {
    let mut done = 0usize;
    for desc in descs {
        let len = desc.len as usize;
        let skipped = skip.min(len);
        skip -= skipped;
        let Some(dst) = out.get_mut(done..done.saturating_add(len - skipped).min(out.len())) else {
            break;
        };
        if dst.is_empty() {
            continue;
        }
        let addr =
            desc.addr
                .checked_add(skipped as u64)
                .ok_or(NetError::DescriptorOutOfMemory {
                    addr: desc.addr.raw_value(),
                    len: desc.len,
                })?;
        mem.read_slice(dst, addr).map_err(NetError::GuestMemory)?;
        done += dst.len();
    }
    Ok(())
}

/// Writes `parts`, one after the other, across the buffers of `descs`,
/// which hold at least as many bytes.
fn scatter(mem: &GuestMemoryMmap, descs: &[Desc], parts: &[&[u8]]) -> Result<(), NetError> {
    let mut descs = descs.iter();
    // The rest of the descriptor being filled: where, and how many bytes.
    let mut room = (GuestAddress(0), 0usize);
    for part in parts {
        let mut rest = *part;
        while !rest.is_empty() {
            if room.1 == 0 {
                let desc = descs.next().ok_or(NetError::RxBufferTooSmall {
                    capacity: 0,
                    needed: rest.len(),
                })?;
                room = (desc.addr, desc.len as usize);
                continue;
            }
            let (now, later) = rest.split_at(room.1.min(rest.len()));
            mem.write_slice(now, room.0)
                .map_err(NetError::GuestMemory)?;
            let left = room.1 - now.len();
            // A checked descriptor's end is inside guest memory, so this
            // only fails on the last byte of the address space.
            room = match room.0.checked_add(now.len() as u64) {
                Some(next) => (next, left),
                None => (room.0, 0),
            };
            rest = later;
        }
    }
    Ok(())
}

/// The name SeaBIOS looks up in fw_cfg for the option ROM of a PCI device
/// 1af4:1041 (modern virtio-net): `pci<vendor>,<device>.rom`. SeaBIOS
/// runs a ROM found this way without comparing the IDs in its header with
/// the device's (it does for ROM BARs only).
pub const ROM_FILE_NAME: &str = "pci1af4,1041.rom";
/// The PCI IDs of the device as the transport presents it.
const PCI_IDS: (u16, u16) = (0x1af4, 0x1041);

/// The vendor and device IDs in an option ROM's PCI data structure
/// (`PCIR`, found through the pointer at offset 0x18), if it has one.
pub fn boot_rom_pci_ids(rom: &[u8]) -> Option<(u16, u16)> {
    let le16 = |at: usize| -> Option<u16> {
        let bytes = rom.get(at..at.checked_add(2)?)?;
        Some(u16::from_le_bytes(<[u8; 2]>::try_from(bytes).ok()?))
    };
    if rom.get(..2)? != [0x55, 0xaa] {
        return None;
    }
    let pcir = usize::from(le16(0x18)?);
    if rom.get(pcir..pcir.checked_add(4)?)? != b"PCIR" {
        return None;
    }
    Some((le16(pcir + 4)?, le16(pcir + 6)?))
}

/// Warns when `rom` (read from `path`) does not look like a boot ROM for
/// this device. It is given to the firmware anyway (iPXE's virtio-net
/// driver also drives 1af4:1041 from a ROM built for 1af4:1000).
pub fn check_boot_rom(path: &std::path::Path, rom: &[u8]) {
    match boot_rom_pci_ids(rom) {
        Some(ids) if ids == PCI_IDS => {}
        Some((vendor, device)) => warn!(
            "virtio-net: boot ROM {} is for PCI device {vendor:04x}:{device:04x}, not 1af4:1041",
            path.display()
        ),
        None => warn!(
            "virtio-net: boot ROM {} has no PCI option ROM header",
            path.display()
        ),
    }
}

/// A [`Net`] shared between the virtio-pci transport (the vCPU threads)
/// and the VM's event loop: the transport calls it as any device, the
/// event loop locks it to deliver frames. The transport's lock is always
/// taken before this one, and the event loop takes no other, so the two
/// cannot deadlock.
pub type SharedNet = super::shared::SharedVirtio<Net>;

/// A locally administered, unicast MAC address derived from `seed` (a VM's
/// id, say), so that a VM keeps its address from run to run: 0x52 (the
/// locally administered bit set, the multicast bit clear) followed by the
/// top five bytes of the 64-bit FNV-1a hash of `seed`. The mapping must
/// never change.
pub fn stable_mac(seed: &str) -> [u8; 6] {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = seed.bytes().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    });
    let [b0, b1, b2, b3, b4, ..] = hash.to_be_bytes();
    [0x52, b0, b1, b2, b3, b4]
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use virtio_queue::mock::MockSplitQueue;

    use std::sync::Arc;

    use super::*;
    use crate::devices::virtio::test_queue::{
        Mock, UNTOUCHED, add_chain, guest_bytes, marked_memory, used, used_count,
    };
    use crate::devices::virtio::{ActivateError, ActivationContext, VirtioDevice, VirtioInterrupt};

    const MEM_SIZE: u64 = 0x10_0000;
    const TX_RING: u64 = 0x1000;
    const DATA: u64 = 0x2_0000;
    const DATA2: u64 = 0x6_0000;
    const QSIZE: u16 = 16;
    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    type Sent = Arc<Mutex<Vec<Vec<u8>>>>;

    fn mem() -> GuestMemoryMmap {
        marked_memory(MEM_SIZE, DATA)
    }

    /// A sink that keeps every frame.
    struct Collect(Sent);

    impl FrameSink for Collect {
        fn send_frame(&mut self, frame: &[u8]) -> io::Result<()> {
            self.0.lock().unwrap().push(frame.to_vec());
            Ok(())
        }
    }

    /// A sink that always fails.
    struct Broken;

    impl FrameSink for Broken {
        fn send_frame(&mut self, _frame: &[u8]) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }

    #[derive(Default)]
    struct Interrupts {
        rx: AtomicUsize,
        tx: AtomicUsize,
        config: AtomicUsize,
    }

    impl VirtioInterrupt for Interrupts {
        fn signal_used_queue(&self, queue: u16) {
            let counter = if queue == RX_QUEUE {
                &self.rx
            } else {
                &self.tx
            };
            counter.fetch_add(1, Ordering::SeqCst);
        }

        fn signal_config_change(&self) {
            self.config.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Interrupts {
        fn rx(&self) -> usize {
            self.rx.load(Ordering::SeqCst)
        }

        fn tx(&self) -> usize {
            self.tx.load(Ordering::SeqCst)
        }

        fn config(&self) -> usize {
            self.config.load(Ordering::SeqCst)
        }
    }

    fn collecting_net() -> (Net, Sent) {
        let sent = Sent::default();
        (Net::new(MAC, Box::new(Collect(sent.clone()))), sent)
    }

    fn sent_frames(sent: &Sent) -> Vec<Vec<u8>> {
        sent.lock().unwrap().clone()
    }

    fn activate(
        net: &mut Net,
        mem: &GuestMemoryMmap,
        rx: &Mock<'_>,
        tx: &Mock<'_>,
    ) -> Arc<Interrupts> {
        let interrupts = Arc::new(Interrupts::default());
        net.activate(ActivationContext {
            mem: mem.clone(),
            queues: vec![
                rx.create_queue::<Queue>().unwrap(),
                tx.create_queue::<Queue>().unwrap(),
            ],
            interrupt: interrupts.clone(),
        })
        .unwrap();
        interrupts
    }

    /// An Ethernet-looking frame of `len` bytes: 0, 1, 2, ... (mod 251).
    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// Writes a transmit packet (a header of 0x5a bytes, then `frame`) at
    /// `addr`.
    fn put_packet(mem: &GuestMemoryMmap, addr: u64, frame: &[u8]) {
        mem.write_slice(&[0x5a; HEADER_LEN], GuestAddress(addr))
            .unwrap();
        mem.write_slice(frame, GuestAddress(addr + HEADER_LEN as u64))
            .unwrap();
    }

    #[test]
    fn test_serve_tx_split_header_and_frame_sends_exact_frame() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut net, sent) = collecting_net();
        let mut queue = vq.create_queue::<Queue>().unwrap();
        let payload = frame(60);
        mem.write_slice(&[0x5a; HEADER_LEN], GuestAddress(DATA))
            .unwrap();
        mem.write_slice(&payload, GuestAddress(DATA2)).unwrap();
        add_chain(&vq, 0, &[(DATA, 12, false), (DATA2, 60, false)]);

        // Act
        let result = net.serve_tx(&mem, &mut queue);

        // Assert
        assert!(result.is_ok_and(|used| used));
        assert_eq!(sent_frames(&sent), vec![payload]);
        assert_eq!(used_count(&vq), 1);
        assert_eq!(used(&vq, 0), (0, 0));
    }

    #[test]
    fn test_serve_tx_header_sharing_descriptors_strips_header() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut net, sent) = collecting_net();
        let mut queue = vq.create_queue::<Queue>().unwrap();
        let payload = frame(100);
        put_packet(&mem, DATA, &payload);
        // 8 header bytes, then 4 header bytes and 40 frame bytes, then 60.
        add_chain(
            &vq,
            0,
            &[
                (DATA, 8, false),
                (DATA + 8, 44, false),
                (DATA + 52, 60, false),
            ],
        );
        put_packet(&mem, DATA2, &payload[..20]);
        add_chain(&vq, 3, &[(DATA2, 32, false)]);

        // Act
        let result = net.serve_tx(&mem, &mut queue);

        // Assert
        assert!(result.is_ok_and(|used| used));
        assert_eq!(
            sent_frames(&sent),
            vec![payload.clone(), payload[..20].to_vec()]
        );
        assert_eq!(used_count(&vq), 2);
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(used(&vq, 1), (3, 0));
    }

    #[test]
    fn test_serve_tx_device_writable_descriptor_completes_without_sending() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut net, sent) = collecting_net();
        let mut queue = vq.create_queue::<Queue>().unwrap();
        put_packet(&mem, DATA, &frame(60));
        add_chain(&vq, 0, &[(DATA, 12, false), (DATA + 12, 60, true)]);

        // Act
        let result = net.serve_tx(&mem, &mut queue);

        // Assert
        assert!(result.is_ok_and(|used| used));
        assert!(sent_frames(&sent).is_empty());
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(guest_bytes(&mem, DATA + 12, 60), frame(60));
    }

    #[test]
    fn test_serve_tx_descriptor_outside_memory_completes_without_panic() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut net, sent) = collecting_net();
        let mut queue = vq.create_queue::<Queue>().unwrap();
        put_packet(&mem, DATA, &frame(60));
        add_chain(&vq, 0, &[(DATA, 12, false), (MEM_SIZE - 8, 60, false)]);
        add_chain(&vq, 2, &[(u64::MAX - 4, 80, false)]);

        // Act
        let result = net.serve_tx(&mem, &mut queue);

        // Assert
        assert!(result.is_ok_and(|used| used));
        assert!(sent_frames(&sent).is_empty());
        assert_eq!(used_count(&vq), 2);
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(used(&vq, 1), (2, 0));
    }

    #[test]
    fn test_serve_tx_oversize_chain_is_dropped_and_completed() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut net, sent) = collecting_net();
        let mut queue = vq.create_queue::<Queue>().unwrap();
        let len = (HEADER_LEN + MAX_FRAME_LEN + 1) as u32;
        add_chain(&vq, 0, &[(DATA, len, false)]);
        add_chain(&vq, 1, &[(DATA, 40_000, false), (DATA2, 40_000, false)]);

        // Act
        let result = net.serve_tx(&mem, &mut queue);

        // Assert
        assert!(result.is_ok_and(|used| used));
        assert!(sent_frames(&sent).is_empty());
        assert_eq!(used_count(&vq), 2);
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(used(&vq, 1), (1, 0));
    }

    #[test]
    fn test_serve_tx_largest_frame_is_sent() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut net, sent) = collecting_net();
        let mut queue = vq.create_queue::<Queue>().unwrap();
        let payload = frame(MAX_FRAME_LEN);
        put_packet(&mem, DATA, &payload);
        add_chain(
            &vq,
            0,
            &[(DATA, (HEADER_LEN + MAX_FRAME_LEN) as u32, false)],
        );

        // Act
        let result = net.serve_tx(&mem, &mut queue);

        // Assert
        assert!(result.is_ok_and(|used| used));
        assert_eq!(sent_frames(&sent), vec![payload]);
    }

    #[test]
    fn test_serve_tx_runt_or_headerless_chain_is_dropped_and_completed() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut net, sent) = collecting_net();
        let mut queue = vq.create_queue::<Queue>().unwrap();
        put_packet(&mem, DATA, &frame(13));
        add_chain(&vq, 0, &[(DATA, (HEADER_LEN + 13) as u32, false)]);
        add_chain(&vq, 1, &[(DATA, 11, false)]);
        add_chain(&vq, 2, &[(DATA, 0, false)]);

        // Act
        let result = net.serve_tx(&mem, &mut queue);

        // Assert
        assert!(result.is_ok_and(|used| used));
        assert!(sent_frames(&sent).is_empty());
        assert_eq!(used_count(&vq), 3);
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(used(&vq, 1), (1, 0));
        assert_eq!(used(&vq, 2), (2, 0));
    }

    #[test]
    fn test_serve_tx_failed_send_completes_and_goes_on() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let mut net = Net::new(MAC, Box::new(Broken));
        let mut queue = vq.create_queue::<Queue>().unwrap();
        put_packet(&mem, DATA, &frame(60));
        add_chain(&vq, 0, &[(DATA, 72, false)]);
        add_chain(&vq, 1, &[(DATA, 72, false)]);

        // Act
        let result = net.serve_tx(&mem, &mut queue);

        // Assert
        assert!(result.is_ok_and(|used| used));
        assert_eq!(used_count(&vq), 2);
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(used(&vq, 1), (1, 0));
    }

    #[test]
    fn test_serve_tx_empty_ring_uses_nothing() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut net, sent) = collecting_net();
        let mut queue = vq.create_queue::<Queue>().unwrap();

        // Act
        let result = net.serve_tx(&mem, &mut queue);

        // Assert
        assert!(result.is_ok_and(|used| !used));
        assert!(sent_frames(&sent).is_empty());
        assert_eq!(used_count(&vq), 0);
    }

    #[test]
    fn test_deliver_rx_writes_header_and_frame_with_used_length() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut net, _sent) = collecting_net();
        let mut queue = vq.create_queue::<Queue>().unwrap();
        let payload = frame(1514);
        // The header straddles the first two buffers.
        add_chain(&vq, 0, &[(DATA, 8, true), (DATA2, 2000, true)]);

        // Act
        let result = net.deliver_rx(&mem, &mut queue, &payload);

        // Assert
        assert_eq!(result.unwrap(), RxOutcome::Delivered);
        assert_eq!(used_count(&vq), 1);
        assert_eq!(used(&vq, 0), (0, (HEADER_LEN + 1514) as u32));
        let mut packet = guest_bytes(&mem, DATA, 8);
        packet.extend(guest_bytes(&mem, DATA2, 4 + 1514));
        assert_eq!(packet[..HEADER_LEN], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(u16::from_le_bytes([packet[10], packet[11]]), 1);
        assert_eq!(packet[HEADER_LEN..], payload[..]);
        assert_eq!(guest_bytes(&mem, DATA + 8, 1), [UNTOUCHED]);
        assert_eq!(guest_bytes(&mem, DATA2 + 4 + 1514, 1), [UNTOUCHED]);
    }

    #[test]
    fn test_deliver_rx_exactly_fitting_buffers_are_filled() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut net, _sent) = collecting_net();
        let mut queue = vq.create_queue::<Queue>().unwrap();
        let payload = frame(60);
        add_chain(
            &vq,
            0,
            &[
                (DATA, 12, true),
                (DATA2, 0, true),
                (DATA2 + 16, 30, true),
                (DATA2 + 64, 30, true),
            ],
        );

        // Act
        let result = net.deliver_rx(&mem, &mut queue, &payload);

        // Assert
        assert_eq!(result.unwrap(), RxOutcome::Delivered);
        assert_eq!(used(&vq, 0), (0, 72));
        assert_eq!(guest_bytes(&mem, DATA, 12), RX_HEADER);
        assert_eq!(guest_bytes(&mem, DATA2 + 16, 30), payload[..30]);
        assert_eq!(guest_bytes(&mem, DATA2 + 64, 30), payload[30..]);
        assert_eq!(guest_bytes(&mem, DATA2, 16), [UNTOUCHED; 16]);
    }

    #[test]
    fn test_deliver_rx_no_posted_buffer_returns_no_buffer_and_leaves_ring() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut net, _sent) = collecting_net();
        let mut queue = vq.create_queue::<Queue>().unwrap();
        let payload = frame(60);

        // Act
        let first = net.deliver_rx(&mem, &mut queue, &payload).unwrap();
        let state = (vq.avail().idx().load(), queue.next_avail(), used_count(&vq));
        add_chain(&vq, 0, &[(DATA, 2048, true)]);
        let retry = net.deliver_rx(&mem, &mut queue, &payload).unwrap();

        // Assert
        assert_eq!(first, RxOutcome::NoBuffer);
        assert_eq!(state, (0, 0, 0));
        assert_eq!(retry, RxOutcome::Delivered);
        assert_eq!(used(&vq, 0), (0, 72));
    }

    #[test]
    fn test_deliver_rx_too_small_buffer_is_dropped_and_completed_with_zero() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut net, _sent) = collecting_net();
        let mut queue = vq.create_queue::<Queue>().unwrap();
        add_chain(&vq, 0, &[(DATA, 12, true), (DATA2, 59, true)]);

        // Act
        let result = net.deliver_rx(&mem, &mut queue, &frame(60));

        // Assert
        assert_eq!(result.unwrap(), RxOutcome::Dropped);
        assert_eq!(used_count(&vq), 1);
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(guest_bytes(&mem, DATA, 12), [UNTOUCHED; 12]);
        assert_eq!(guest_bytes(&mem, DATA2, 59), [UNTOUCHED; 59]);
    }

    #[test]
    fn test_deliver_rx_device_readable_descriptor_is_dropped() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut net, _sent) = collecting_net();
        let mut queue = vq.create_queue::<Queue>().unwrap();
        add_chain(&vq, 0, &[(DATA, 2048, true), (DATA2, 2048, false)]);

        // Act
        let result = net.deliver_rx(&mem, &mut queue, &frame(60));

        // Assert
        assert_eq!(result.unwrap(), RxOutcome::Dropped);
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(guest_bytes(&mem, DATA, 72), [UNTOUCHED; 72]);
    }

    #[test]
    fn test_deliver_rx_descriptor_outside_memory_is_dropped_without_panic() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut net, _sent) = collecting_net();
        let mut queue = vq.create_queue::<Queue>().unwrap();
        add_chain(&vq, 0, &[(DATA, 2048, true), (MEM_SIZE - 8, 64, true)]);
        add_chain(&vq, 2, &[(u64::MAX - 4, 2048, true)]);

        // Act
        let first = net.deliver_rx(&mem, &mut queue, &frame(60)).unwrap();
        let second = net.deliver_rx(&mem, &mut queue, &frame(60)).unwrap();

        // Assert
        assert_eq!((first, second), (RxOutcome::Dropped, RxOutcome::Dropped));
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(used(&vq, 1), (2, 0));
        assert_eq!(guest_bytes(&mem, DATA, 72), [UNTOUCHED; 72]);
    }

    #[test]
    fn test_deliver_rx_oversize_frame_is_dropped_without_touching_queue() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut net, _sent) = collecting_net();
        let mut queue = vq.create_queue::<Queue>().unwrap();
        add_chain(&vq, 0, &[(DATA, 0x7_0000, true)]);

        // Act
        let result = net.deliver_rx(&mem, &mut queue, &frame(MAX_FRAME_LEN + 1));

        // Assert
        assert_eq!(result.unwrap(), RxOutcome::Dropped);
        assert_eq!(queue.next_avail(), 0);
        assert_eq!(used_count(&vq), 0);
        assert_eq!(guest_bytes(&mem, DATA, 16), [UNTOUCHED; 16]);
    }

    #[test]
    fn test_deliver_rx_bad_avail_index_fails() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut net, _sent) = collecting_net();
        let mut queue = vq.create_queue::<Queue>().unwrap();
        vq.avail().idx().store(1000);

        // Act
        let result = net.deliver_rx(&mem, &mut queue, &frame(60));

        // Assert
        assert!(matches!(result, Err(NetError::Guest(GuestFault::Queue(_)))));
        assert_eq!(used_count(&vq), 0);
    }

    #[test]
    fn test_queue_notify_tx_sends_and_signals_tx_interrupt() {
        // Arrange
        let mem = mem();
        let rx = MockSplitQueue::new(&mem, QSIZE);
        let tx = MockSplitQueue::create(&mem, GuestAddress(TX_RING), QSIZE);
        let (mut net, sent) = collecting_net();
        let interrupts = activate(&mut net, &mem, &rx, &tx);
        let payload = frame(60);
        put_packet(&mem, DATA, &payload);
        add_chain(&tx, 0, &[(DATA, 72, false)]);

        // Act
        net.queue_notify(TX_QUEUE);

        // Assert
        assert_eq!(sent_frames(&sent), vec![payload]);
        assert_eq!(used(&tx, 0), (0, 0));
        assert_eq!((interrupts.tx(), interrupts.rx()), (1, 0));
        assert!(!net.needs_reset());
    }

    #[test]
    fn test_queue_notify_rx_sets_kick_taken_once() {
        // Arrange
        let mem = mem();
        let rx = MockSplitQueue::new(&mem, QSIZE);
        let tx = MockSplitQueue::create(&mem, GuestAddress(TX_RING), QSIZE);
        let (mut net, _sent) = collecting_net();
        activate(&mut net, &mem, &rx, &tx);
        let before = net.take_rx_kick();

        // Act
        net.queue_notify(RX_QUEUE);

        // Assert
        assert!(!before);
        assert!(net.take_rx_kick());
        assert!(!net.take_rx_kick());
    }

    #[test]
    fn test_deliver_frame_active_device_delivers_and_signals_rx_interrupt() {
        // Arrange
        let mem = mem();
        let rx = MockSplitQueue::new(&mem, QSIZE);
        let tx = MockSplitQueue::create(&mem, GuestAddress(TX_RING), QSIZE);
        let (mut net, _sent) = collecting_net();
        let interrupts = activate(&mut net, &mem, &rx, &tx);
        let payload = frame(60);

        // Act
        let empty = net.deliver_frame(&payload);
        add_chain(&rx, 0, &[(DATA, 1526, true)]);
        let delivered = net.deliver_frame(&payload);

        // Assert
        assert_eq!(empty, RxOutcome::NoBuffer);
        assert_eq!(delivered, RxOutcome::Delivered);
        assert_eq!(used(&rx, 0), (0, 72));
        assert_eq!(guest_bytes(&mem, DATA + 12, 60), payload);
        assert_eq!((interrupts.rx(), interrupts.tx()), (1, 0));
    }

    #[test]
    fn test_deliver_frame_inactive_device_drops_frame() {
        // Arrange
        let (mut net, _sent) = collecting_net();

        // Act
        let outcome = net.deliver_frame(&frame(60));

        // Assert
        assert_eq!(outcome, RxOutcome::Dropped);
    }

    #[test]
    fn test_net_bad_avail_index_sets_needs_reset() {
        // Arrange
        let mem = mem();
        let rx = MockSplitQueue::new(&mem, QSIZE);
        let tx = MockSplitQueue::create(&mem, GuestAddress(TX_RING), QSIZE);
        let (mut net, sent) = collecting_net();
        let interrupts = activate(&mut net, &mem, &rx, &tx);
        tx.avail().idx().store(1000);

        // Act
        net.queue_notify(TX_QUEUE);
        net.queue_notify(TX_QUEUE);

        // Assert
        assert!(net.needs_reset());
        assert!(VirtioDevice::needs_reset(&net));
        assert_eq!(used_count(&tx), 0);
        assert_eq!(interrupts.tx(), 0);
        assert!(sent_frames(&sent).is_empty());
    }

    #[test]
    fn test_deliver_frame_bad_avail_index_sets_needs_reset() {
        // Arrange
        let mem = mem();
        let rx = MockSplitQueue::new(&mem, QSIZE);
        let tx = MockSplitQueue::create(&mem, GuestAddress(TX_RING), QSIZE);
        let (mut net, _sent) = collecting_net();
        let interrupts = activate(&mut net, &mem, &rx, &tx);
        rx.avail().idx().store(1000);

        // Act
        let outcome = net.deliver_frame(&frame(60));

        // Assert
        assert_eq!(outcome, RxOutcome::Dropped);
        assert!(net.needs_reset());
        assert_eq!(interrupts.rx(), 0);
    }

    #[test]
    fn test_reset_drops_activation_and_clears_needs_reset() {
        // Arrange
        let mem = mem();
        let rx = MockSplitQueue::new(&mem, QSIZE);
        let tx = MockSplitQueue::create(&mem, GuestAddress(TX_RING), QSIZE);
        let (mut net, sent) = collecting_net();
        activate(&mut net, &mem, &rx, &tx);
        tx.avail().idx().store(1000);
        net.queue_notify(TX_QUEUE);
        net.queue_notify(RX_QUEUE);

        // Act
        net.reset();
        put_packet(&mem, DATA, &frame(60));
        add_chain(&rx, 0, &[(DATA2, 2048, true)]);
        let inactive = net.deliver_frame(&frame(60));
        net.queue_notify(TX_QUEUE);

        // Assert
        assert_eq!(inactive, RxOutcome::Dropped);
        assert!(!net.needs_reset());
        assert!(!net.take_rx_kick());
        assert_eq!(used_count(&rx), 0);
        assert!(sent_frames(&sent).is_empty());
        assert_eq!(net.acked_features(), 0);
    }

    #[test]
    fn test_activate_with_one_queue_fails() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut net, _sent) = collecting_net();

        // Act
        let result = net.activate(ActivationContext {
            mem: mem.clone(),
            queues: vec![vq.create_queue::<Queue>().unwrap()],
            interrupt: Arc::new(Interrupts::default()),
        });

        // Assert
        assert!(matches!(
            result,
            Err(ActivateError::QueueCount {
                expected: 2,
                got: 1
            })
        ));
    }

    #[test]
    fn test_net_config_has_mac_link_up_status_and_mtu() {
        // Arrange
        let (mut net, _sent) = collecting_net();
        let mut config = [0xffu8; 16];

        // Act
        net.write_config(0, &[9; 6]);
        net.read_config(0, &mut config);

        // Assert
        assert_eq!(
            config,
            [
                0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 1, 0, 1, 0, 0xdc, 0x05, 0, 0, 0, 0
            ]
        );
        assert_eq!(net.mac(), MAC);
    }

    #[test]
    fn test_net_config_partial_read_at_offset_reads_mtu() {
        // Arrange
        let (net, _sent) = collecting_net();
        let mut mtu = [0u8; 2];

        // Act
        net.read_config(10, &mut mtu);

        // Assert
        assert_eq!(u16::from_le_bytes(mtu), 1500);
    }

    #[test]
    fn test_set_link_up_false_clears_status_and_signals_config_change() {
        // Arrange
        let mem = mem();
        let rx = MockSplitQueue::new(&mem, QSIZE);
        let tx = MockSplitQueue::create(&mem, GuestAddress(TX_RING), QSIZE);
        let (mut net, _sent) = collecting_net();
        let interrupts = activate(&mut net, &mem, &rx, &tx);
        let mut status = [0xffu8; 2];

        // Act
        net.set_link_up(false);
        net.set_link_up(false);
        net.read_config(6, &mut status);

        // Assert
        assert_eq!(status, [0, 0]);
        assert!(!net.link_up());
        assert_eq!(interrupts.config(), 1);
    }

    #[test]
    fn test_set_link_up_inactive_device_changes_status_without_signal() {
        // Arrange
        let (mut net, _sent) = collecting_net();
        let mut status = [0u8; 2];

        // Act
        net.set_link_up(false);
        net.set_link_up(true);
        net.read_config(6, &mut status);

        // Assert
        assert_eq!(u16::from_le_bytes(status), VIRTIO_NET_S_LINK_UP);
    }

    #[test]
    fn test_net_identity_and_features_are_fixed() {
        // Arrange
        let (mut net, _sent) = collecting_net();

        // Act
        net.ack_features(u64::MAX);

        // Assert
        assert_eq!(net.device_type(), 1);
        assert_eq!(net.queue_max_sizes(), &[256, 256]);
        assert_eq!(net.features(), (1 << 32) | (1 << 16) | (1 << 5) | (1 << 3));
        assert_eq!(net.acked_features(), net.features());
    }

    #[test]
    fn test_stable_mac_same_seed_gives_same_mac() {
        // Arrange
        let seed = "vm-0f3c2a";

        // Act
        let first = stable_mac(seed);
        let second = stable_mac(seed);

        // Assert
        assert_eq!(first, second);
    }

    #[test]
    fn test_stable_mac_any_seed_is_locally_administered_unicast() {
        // Arrange
        let seeds = ["", "a", "test-vm", "another VM id", "\u{1f600}"];

        // Act
        let macs: Vec<[u8; 6]> = seeds.iter().map(|seed| stable_mac(seed)).collect();

        // Assert
        for mac in macs {
            assert_eq!(mac[0] & 0b10, 0b10, "{mac:x?} is not locally administered");
            assert_eq!(mac[0] & 0b01, 0, "{mac:x?} is multicast");
        }
    }

    #[test]
    fn test_stable_mac_different_seeds_give_different_macs() {
        // Arrange
        let seeds: Vec<String> = (0..1000).map(|i| format!("vm-{i}")).collect();

        // Act
        let macs: std::collections::HashSet<[u8; 6]> =
            seeds.iter().map(|seed| stable_mac(seed)).collect();

        // Assert
        assert_eq!(macs.len(), seeds.len());
        assert_ne!(stable_mac("vm-a"), stable_mac("vm-b"));
    }

    #[test]
    fn test_boot_rom_pci_ids_reads_pcir_structure() {
        let mut rom = vec![0u8; 512];
        rom[..2].copy_from_slice(&[0x55, 0xaa]);
        rom[0x18] = 0x1c;
        rom[0x1c..0x20].copy_from_slice(b"PCIR");
        rom[0x20..0x24].copy_from_slice(&[0xf4, 0x1a, 0x41, 0x10]);
        assert_eq!(boot_rom_pci_ids(&rom), Some(PCI_IDS));
        rom[0x1c] = b'X';
        assert_eq!(boot_rom_pci_ids(&rom), None);
        assert_eq!(boot_rom_pci_ids(&[0x55]), None);
    }

    #[test]
    fn test_net_error_host_side_errors_are_not_guest_errors() {
        // Arrange
        let send = NetError::Send(io::Error::from(io::ErrorKind::BrokenPipe));
        let large = NetError::FrameTooLarge { len: 70_000 };
        let guest = NetError::DeviceWritable;

        // Act
        let kinds = (
            send.is_guest_error(),
            large.is_guest_error(),
            guest.is_guest_error(),
        );

        // Assert
        assert_eq!(kinds, (false, false, true));
    }
}
