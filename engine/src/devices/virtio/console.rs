// SPDX-License-Identifier: Apache-2.0
//! A virtio console (virtio spec 1.2, section 5.3 "Console Device") with
//! one port and no VIRTIO_CONSOLE_F_MULTIPORT: queue 0 is port 0's
//! receiveq (host to guest), queue 1 its transmitq (guest to host). Linux's
//! virtio_console makes that port `/dev/hvc0`. Without MULTIPORT there is
//! no control queue, which keeps the device small.
//!
//! What the guest transmits is written to a [`Write`] sink (a log file,
//! stdout). Host input goes through a [`ConsoleSender`] (cloneable, for any
//! thread) into a bounded buffer of [`MAX_PENDING_INPUT`] bytes; the sender
//! takes what fits and says how much, and wakes the thread serving the
//! queues through an event fd ([`Console::wake_fd`]).
//!
//! With a size (`VIRTIO_CONSOLE_F_SIZE`) the configuration space carries
//! the console's columns and rows; `max_nr_ports` and `emerg_wr` read 0
//! (neither MULTIPORT nor EMERG_WRITE is offered), and nothing is writable.
//!
//! Every chain is checked as a whole before it is used: a descriptor
//! outside guest memory, one of the wrong direction (a device-writable
//! descriptor on the transmitq, a device-readable one on the receiveq) or a
//! chain that does not end (a descriptor loop, a next index past the table,
//! lengths whose sum overflows 2^32: virtio-queue stops such chains early)
//! completes with a used length of 0: no byte reaches the sink and none is
//! written to the guest. A queue that cannot be read at all (an available
//! index more than a queue size ahead, rings outside memory) stops the
//! device, which then reports [`VirtioDevice::needs_reset`](super::VirtioDevice::needs_reset).

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use log::{debug, warn};
use virtio_queue::{DescriptorChain, Queue};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::device_core::{self, DeviceCore, GuestFault, QueueDevice, Step};
use super::{DeviceInfo, ErrorLog, VIRTIO_F_VERSION_1, device_type, read_config_bytes};
use crate::memory::GuestMemoryMmap;

/// The receiveq (host to guest).
pub const RECEIVEQ: u16 = 0;
/// The transmitq (guest to host).
pub const TRANSMITQ: u16 = 1;
/// The largest size of each queue.
pub const QUEUE_SIZE: u16 = 128;
/// Feature bit: the configuration space has the console's size.
pub const VIRTIO_CONSOLE_F_SIZE: u64 = 1 << 0;
/// The size of the configuration space: cols, rows, max_nr_ports, emerg_wr.
pub const CONFIG_SIZE: usize = 12;
/// The most host input kept while the guest is not reading.
pub const MAX_PENDING_INPUT: usize = 64 << 10;
/// The most bytes taken from one transmit chain; the rest is ignored.
pub const MAX_TX_BYTES: u32 = 64 << 10;

/// Why a buffer or a queue failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The event fd that wakes the device could not be created.
    #[error("Cannot create the wake-up event fd")]
    EventFd(#[source] std::io::Error),
    /// A transmit chain has a device-writable descriptor.
    #[error("Transmit buffer has a device-writable descriptor")]
    DeviceWritable,
    /// A receive chain has a device-readable descriptor.
    #[error("Receive buffer has a device-readable descriptor")]
    DeviceReadable,
    /// A descriptor points outside guest memory.
    #[error("Descriptor at {addr:#x} ({len} bytes) is outside guest memory")]
    DescriptorOutOfMemory {
        /// Its guest address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The chain stopped before its last descriptor: a loop, a next index
    /// past the table, or lengths that overflow.
    #[error("Descriptor chain does not end (loop, bad index or length overflow)")]
    UnterminatedChain,
    /// Guest memory could not be accessed, though it was checked.
    #[error("Guest memory access failed")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
    /// Writing to the output sink failed.
    #[error("Cannot write the console output")]
    Output(#[source] std::io::Error),
    /// A queue is broken.
    #[error(transparent)]
    Guest(#[from] GuestFault),
}

impl ConsoleError {
    /// Whether the guest caused the error (rate-limited in the log apart
    /// from host errors).
    pub fn is_guest_error(&self) -> bool {
        !matches!(self, Self::EventFd(_) | Self::Output(_))
    }
}

/// What the device and its senders share.
struct HostInput {
    pending: Mutex<VecDeque<u8>>,
    wake: EventFd,
    dropped: AtomicU64,
}

impl HostInput {
    fn pending(&self) -> MutexGuard<'_, VecDeque<u8>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sends host input to a [`Console`] from any thread; never blocks on the
/// guest.
#[derive(Clone)]
pub struct ConsoleSender {
    shared: Arc<HostInput>,
}

impl ConsoleSender {
    /// Queues as much of `bytes` as the input buffer has room for and wakes
    /// the device; returns how many bytes were taken (the rest is the
    /// caller's to retry or drop).
    pub fn send(&self, bytes: &[u8]) -> usize {
        let taken = {
            let mut pending = self.shared.pending();
            let room = MAX_PENDING_INPUT.saturating_sub(pending.len());
            let taken = bytes.len().min(room);
            pending.extend(bytes.iter().take(taken));
            taken
        };
        if taken < bytes.len() {
            let dropped = (bytes.len() - taken) as u64;
            if self.shared.dropped.fetch_add(dropped, Ordering::Relaxed) == 0 {
                warn!("virtio-console: the guest is not reading its console; input is refused");
            }
        }
        if taken > 0 {
            if let Err(err) = self.shared.wake.write(1) {
                // Only an overflowing counter fails, and a wake-up is due then.
                debug!("virtio-console: cannot wake the device: {err}");
            }
        }
        taken
    }

    /// Bytes refused so far because the input buffer was full.
    pub fn refused_bytes(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// One checked descriptor.
#[derive(Clone, Copy, Debug)]
struct Desc {
    addr: GuestAddress,
    len: u32,
}

/// A virtio console with one port.
pub struct Console {
    sink: Box<dyn Write + Send>,
    shared: Arc<HostInput>,
    size: Option<(u16, u16)>,
    core: DeviceCore,
    errors: ErrorLog,
}

impl Console {
    /// A console writing the guest's output to `sink`; with `size`
    /// (columns, rows) it offers VIRTIO_CONSOLE_F_SIZE.
    pub fn new(
        sink: Box<dyn Write + Send>,
        size: Option<(u16, u16)>,
    ) -> Result<Self, ConsoleError> {
        let wake = EventFd::new(EFD_NONBLOCK).map_err(ConsoleError::EventFd)?;
        Ok(Self {
            sink,
            shared: Arc::new(HostInput {
                pending: Mutex::new(VecDeque::new()),
                wake,
                dropped: AtomicU64::new(0),
            }),
            size,
            core: DeviceCore::default(),
            errors: ErrorLog::default(),
        })
    }

    /// A handle that sends host input to the guest from any thread.
    pub fn sender(&self) -> ConsoleSender {
        ConsoleSender {
            shared: self.shared.clone(),
        }
    }

    /// The event fd that becomes readable when host input is queued: the
    /// serving thread polls it, then calls
    /// [`serve_host_input`](Self::serve_host_input) (or, on vrings,
    /// [`clear_wake`](Self::clear_wake) and
    /// [`serve_receiveq`](Self::serve_receiveq)).
    pub fn wake_fd(&self) -> RawFd {
        self.shared.wake.as_raw_fd()
    }

    /// Consumes the wake-up of [`wake_fd`](Self::wake_fd).
    pub fn clear_wake(&self) {
        // Nothing to read (WouldBlock) is fine: the input is served anyway.
        let _ = self.shared.wake.read();
    }

    /// Delivers queued host input to the activated device's receiveq.
    pub fn serve_host_input(&mut self) {
        QueueDevice::serve_host_events(self);
    }

    /// Whether a queue broke and the device stopped serving until the
    /// driver resets it (the transport should set DEVICE_NEEDS_RESET).
    pub fn needs_reset(&self) -> bool {
        self.core.needs_reset()
    }

    /// Host input still waiting for receive buffers, in bytes.
    pub fn pending_input(&self) -> usize {
        self.shared.pending().len()
    }

    /// Fills receive buffers on a queue owned by someone else (a vhost-user
    /// front-end's vring) with pending input; returns whether any buffer
    /// was used. Fails when the queue itself is broken.
    pub fn serve_receiveq(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, ConsoleError> {
        let shared = self.shared.clone();
        let mut pending = shared.pending();
        drain_receiveq(mem, queue, &mut pending, &mut self.errors)
    }

    /// Writes what the driver transmitted on a queue owned by someone else
    /// to the sink; returns whether any buffer was used. Fails when the
    /// queue itself is broken.
    pub fn serve_transmitq(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, ConsoleError> {
        drain_transmitq(mem, queue, self.sink.as_mut(), &mut self.errors)
    }

    fn config(&self) -> [u8; CONFIG_SIZE] {
        let mut config = [0u8; CONFIG_SIZE];
        if let (Some((cols, rows)), Some(head)) = (self.size, config.get_mut(..4)) {
            let [c0, c1] = cols.to_le_bytes();
            let [r0, r1] = rows.to_le_bytes();
            head.copy_from_slice(&[c0, c1, r0, r1]);
        }
        config
    }
}

impl DeviceInfo for Console {
    fn device_type(&self) -> u32 {
        device_type::CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let size = if self.size.is_some() {
            VIRTIO_CONSOLE_F_SIZE
        } else {
            0
        };
        VIRTIO_F_VERSION_1 | size
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // emerg_wr is only writable with EMERG_WRITE, which is not offered.
    }
}

impl QueueDevice for Console {
    type Error = ConsoleError;

    fn name(&self) -> &str {
        "virtio-console"
    }

    device_core::core_accessors!();

    fn serve(
        &mut self,
        index: u16,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, ConsoleError> {
        match index {
            RECEIVEQ => self.serve_receiveq(mem, queue),
            TRANSMITQ => self.serve_transmitq(mem, queue),
            _ => Ok(false),
        }
    }

    // A reset keeps input typed for the old driver: a console user
    // expects what they typed during a reboot to arrive.

    fn host_event_fd(&self) -> Option<RawFd> {
        Some(self.wake_fd())
    }

    fn take_host_events(&mut self) -> Vec<u16> {
        self.clear_wake();
        vec![RECEIVEQ]
    }

    fn saves_state(&self) -> bool {
        true
    }

    fn save_own(&mut self) -> Result<Vec<u8>, crate::snapshot::StateError> {
        // Host input not yet delivered; the guest's output went to the
        // sink as it was written.
        let pending: Vec<u8> = self.shared.pending().iter().copied().collect();
        crate::snapshot::encode("virtio-console", &pending)
    }

    fn restore_own(&mut self, bytes: &[u8]) -> Result<(), crate::snapshot::StateError> {
        let saved: Vec<u8> = crate::snapshot::decode("virtio-console", bytes)?;
        if saved.len() > MAX_PENDING_INPUT {
            return Err(crate::snapshot::invalid(
                "virtio-console",
                format!("{} bytes of input waiting, more than it holds", saved.len()),
            ));
        }
        *self.shared.pending() = saved.into();
        if let Err(err) = self.shared.wake.write(1) {
            debug!("virtio-console: cannot wake the device: {err}");
        }
        Ok(())
    }
}

/// A console shared by its virtio-pci transport (vCPU threads) and the
/// event loop that delivers host input.
pub type SharedConsole = super::shared::SharedVirtio<Console>;

/// Checks every descriptor of a chain: in guest memory, device-writable
/// (`writable`) or device-readable, and the chain must end. Returns the
/// descriptors with bytes.
fn collect(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    writable: bool,
) -> Result<Vec<Desc>, ConsoleError> {
    let mut descs = Vec::new();
    let mut error = None;
    let mut ended = false;
    for raw in chain {
        ended = !raw.has_next();
        if error.is_some() {
            continue;
        }
        let desc = Desc {
            addr: raw.addr(),
            len: raw.len(),
        };
        if raw.is_write_only() != writable {
            error = Some(if writable {
                ConsoleError::DeviceReadable
            } else {
                ConsoleError::DeviceWritable
            });
        } else if !mem.check_range(desc.addr, desc.len as usize) {
            error = Some(ConsoleError::DescriptorOutOfMemory {
                addr: desc.addr.raw_value(),
                len: desc.len,
            });
        } else if desc.len > 0 {
            descs.push(desc);
        }
    }
    if let Some(err) = error {
        return Err(err);
    }
    // virtio-queue stops a looping chain, one whose next index is past the
    // table and one whose lengths overflow with a descriptor that still
    // says NEXT: such a chain never ended.
    if !ended {
        return Err(ConsoleError::UnterminatedChain);
    }
    Ok(descs)
}

/// Copies pending input into receive buffers until either runs out; a bad
/// buffer completes with 0 bytes and the input waits for the next one.
/// Notifications end up enabled. Fails only when the queue is broken.
fn drain_receiveq(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    pending: &mut VecDeque<u8>,
    errors: &mut ErrorLog,
) -> Result<bool, ConsoleError> {
    if pending.is_empty() {
        // Nothing to deliver: the ring is not even looked at.
        return Ok(false);
    }
    Ok(device_core::drain(mem, queue, |chain| {
        if pending.is_empty() {
            // Buffers with nothing to put in them stay for later input.
            return Step::Leave;
        }
        match collect(mem, chain, true).and_then(|descs| fill(mem, &descs, pending)) {
            Ok(n) => Step::Used(n),
            Err(err) => {
                errors.report("virtio-console", &err, err.is_guest_error());
                Step::Used(0)
            }
        }
    })?)
}

/// Moves pending bytes into `descs` (checked) and returns how many.
fn fill(
    mem: &GuestMemoryMmap,
    descs: &[Desc],
    pending: &mut VecDeque<u8>,
) -> Result<u32, ConsoleError> {
    let mut written = 0u32;
    for desc in descs {
        if pending.is_empty() {
            break;
        }
        let n = pending.len().min(desc.len as usize);
        let bytes: Vec<u8> = pending.iter().take(n).copied().collect();
        mem.write_slice(&bytes, desc.addr)
            .map_err(ConsoleError::GuestMemory)?;
        pending.drain(..n);
        // n is at most desc.len, a u32; the chain's total fits a u32
        // (virtio-queue stops longer chains).
        written = written.saturating_add(n as u32);
    }
    Ok(written)
}

/// Writes every available transmit buffer to `sink` and completes it,
/// flushing the sink once at the end. Notifications end up enabled. Fails
/// only when the queue is broken.
fn drain_transmitq(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    sink: &mut (dyn Write + Send),
    errors: &mut ErrorLog,
) -> Result<bool, ConsoleError> {
    let mut wrote = false;
    let used = device_core::drain(mem, queue, |chain| {
        let result = collect(mem, chain, false)
            .and_then(|descs| read_chain(mem, &descs))
            .and_then(|bytes| {
                wrote |= !bytes.is_empty();
                sink.write_all(&bytes).map_err(ConsoleError::Output)
            });
        if let Err(err) = result {
            errors.report("virtio-console", &err, err.is_guest_error());
        }
        // The device writes nothing into transmit buffers.
        Step::Used(0)
    });
    if wrote && let Err(err) = sink.flush() {
        let err = ConsoleError::Output(err);
        errors.report("virtio-console", &err, false);
    }
    Ok(used?)
}

/// The bytes of a checked transmit chain, at most [`MAX_TX_BYTES`].
fn read_chain(mem: &GuestMemoryMmap, descs: &[Desc]) -> Result<Vec<u8>, ConsoleError> {
    let mut bytes = Vec::new();
    let cap = MAX_TX_BYTES as usize;
    for desc in descs {
        let n = (desc.len as usize).min(cap.saturating_sub(bytes.len()));
        if n == 0 {
            break;
        }
        let start = bytes.len();
        bytes.resize(start + n, 0);
        let Some(part) = bytes.get_mut(start..) else {
            break;
        };
        mem.read_slice(part, desc.addr)
            .map_err(ConsoleError::GuestMemory)?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::mock::MockSplitQueue;

    use super::*;
    use crate::devices::virtio::test_queue::{
        Mock, UNTOUCHED, add_chain, guest_bytes, marked_memory, used, used_count,
    };
    use crate::devices::virtio::{ActivationContext, VirtioDevice, VirtioInterrupt};

    const MEM_SIZE: u64 = 0x10_0000;
    const DATA: u64 = 0x2_0000;
    const DATA2: u64 = 0x6_0000;
    const QSIZE: u16 = 16;

    fn mem() -> GuestMemoryMmap {
        marked_memory(MEM_SIZE, DATA)
    }

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn bytes(&self) -> Vec<u8> {
            self.0.lock().unwrap().clone()
        }
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

    struct Rig<'a> {
        console: Console,
        sink: Sink,
        rx: Mock<'a>,
        tx: Mock<'a>,
        interrupts: Arc<Interrupts>,
    }

    fn rig(mem: &GuestMemoryMmap) -> Rig<'_> {
        let sink = Sink::default();
        let mut console = Console::new(Box::new(sink.clone()), Some((80, 25))).unwrap();
        let rx = MockSplitQueue::create(mem, GuestAddress(0x1000), QSIZE);
        let tx = MockSplitQueue::create(mem, GuestAddress(0x8000), QSIZE);
        let interrupts = Arc::new(Interrupts::default());
        console
            .activate(ActivationContext {
                mem: mem.clone(),
                queues: vec![
                    rx.create_queue::<Queue>().unwrap(),
                    tx.create_queue::<Queue>().unwrap(),
                ],
                interrupt: interrupts.clone(),
            })
            .unwrap();
        Rig {
            console,
            sink,
            rx,
            tx,
            interrupts,
        }
    }

    #[test]
    fn test_console_transmit_reaches_the_sink_in_order() {
        let mem = mem();
        let mut rig = rig(&mem);
        mem.write_slice(b"hello ", GuestAddress(DATA)).unwrap();
        mem.write_slice(b"world\n", GuestAddress(DATA2)).unwrap();
        add_chain(&rig.tx, 0, &[(DATA, 6, false), (DATA2, 6, false)]);

        rig.console.queue_notify(TRANSMITQ);

        assert_eq!(rig.sink.bytes(), b"hello world\n");
        assert_eq!(used(&rig.tx, 0), (0, 0));
        assert_eq!(rig.interrupts.used[1].load(Ordering::SeqCst), 1);
        assert!(!rig.console.needs_reset());
    }

    #[test]
    fn test_console_host_input_fills_receive_buffers() {
        let mem = mem();
        let mut rig = rig(&mem);
        add_chain(&rig.rx, 0, &[(DATA, 4, true), (DATA2, 4, true)]);
        add_chain(&rig.rx, 2, &[(DATA + 0x100, 16, true)]);
        let sender = rig.console.sender();

        assert_eq!(sender.send(b"abcdefghij"), 10);
        rig.console.serve_host_input();

        assert_eq!(used_count(&rig.rx), 2);
        assert_eq!(used(&rig.rx, 0), (0, 8));
        assert_eq!(used(&rig.rx, 1), (2, 2));
        assert_eq!(guest_bytes(&mem, DATA, 5), b"abcd\xee");
        assert_eq!(guest_bytes(&mem, DATA2, 5), b"efgh\xee");
        assert_eq!(guest_bytes(&mem, DATA + 0x100, 3), b"ij\xee");
        assert_eq!(rig.console.pending_input(), 0);
        assert_eq!(rig.interrupts.used[0].load(Ordering::SeqCst), 1);
    }

    #[test]
    fn test_console_input_waits_for_buffers_and_is_bounded() {
        let mem = mem();
        let mut rig = rig(&mem);
        let sender = rig.console.sender();
        let big = vec![b'x'; MAX_PENDING_INPUT + 100];

        assert_eq!(sender.send(&big), MAX_PENDING_INPUT);
        assert_eq!(sender.send(b"more"), 0);
        assert_eq!(sender.refused_bytes(), 104);
        rig.console.serve_host_input();
        assert_eq!(used_count(&rig.rx), 0);

        add_chain(&rig.rx, 0, &[(DATA, 32, true)]);
        rig.console.queue_notify(RECEIVEQ);
        assert_eq!(used(&rig.rx, 0), (0, 32));
        assert_eq!(rig.console.pending_input(), MAX_PENDING_INPUT - 32);
    }

    #[test]
    fn test_console_write_only_transmit_descriptor_completes_with_zero() {
        let mem = mem();
        let mut rig = rig(&mem);
        mem.write_slice(b"secret", GuestAddress(DATA)).unwrap();
        add_chain(&rig.tx, 0, &[(DATA, 6, false), (DATA2, 6, true)]);

        rig.console.queue_notify(TRANSMITQ);

        assert_eq!(rig.sink.bytes(), b"");
        assert_eq!(used(&rig.tx, 0), (0, 0));
        assert!(!rig.console.needs_reset());
    }

    #[test]
    fn test_console_read_only_receive_descriptor_writes_nothing() {
        let mem = mem();
        let mut rig = rig(&mem);
        add_chain(&rig.rx, 0, &[(DATA, 8, true), (DATA2, 8, false)]);
        add_chain(&rig.rx, 2, &[(DATA + 0x100, 8, true)]);
        rig.console.sender().send(b"keys");

        rig.console.serve_host_input();

        assert_eq!(used(&rig.rx, 0), (0, 0));
        assert_eq!(guest_bytes(&mem, DATA, 8), [UNTOUCHED; 8]);
        assert_eq!(guest_bytes(&mem, DATA2, 8), [UNTOUCHED; 8]);
        // The input went to the next good buffer instead.
        assert_eq!(used(&rig.rx, 1), (2, 4));
        assert_eq!(guest_bytes(&mem, DATA + 0x100, 4), b"keys");
    }

    #[test]
    fn test_console_out_of_range_descriptors_complete_with_zero() {
        let mem = mem();
        let mut rig = rig(&mem);
        add_chain(&rig.tx, 0, &[(DATA, 4, false), (MEM_SIZE - 2, 8, false)]);
        add_chain(&rig.tx, 2, &[(u64::MAX - 3, 16, false)]);
        add_chain(&rig.rx, 0, &[(MEM_SIZE - 4, 16, true)]);
        add_chain(&rig.rx, 1, &[(u64::MAX - 3, 16, true)]);
        rig.console.sender().send(b"abc");

        rig.console.queue_notify(TRANSMITQ);
        rig.console.serve_host_input();

        assert_eq!(rig.sink.bytes(), b"");
        assert_eq!(used(&rig.tx, 0), (0, 0));
        assert_eq!(used(&rig.tx, 1), (2, 0));
        assert_eq!(used(&rig.rx, 0), (0, 0));
        assert_eq!(used(&rig.rx, 1), (1, 0));
        assert_eq!(guest_bytes(&mem, MEM_SIZE - 4, 4), [0; 4]);
        assert_eq!(rig.console.pending_input(), 3);
        assert!(!rig.console.needs_reset());
    }

    #[test]
    fn test_console_descriptor_loop_completes_with_zero() {
        let mem = mem();
        let mut rig = rig(&mem);
        mem.write_slice(b"loop", GuestAddress(DATA)).unwrap();
        // 0 -> 1 -> 0 -> ...
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(DATA, 4, VRING_DESC_F_NEXT as u16, 1)),
            RawDescriptor::from(SplitDescriptor::new(DATA, 4, VRING_DESC_F_NEXT as u16, 0)),
        ];
        rig.tx.add_desc_chains(&descs, 0).unwrap();
        let descs = [RawDescriptor::from(SplitDescriptor::new(
            DATA2,
            4,
            (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
            0,
        ))];
        // A receive chain pointing at itself.
        rig.rx.add_desc_chains(&descs, 0).unwrap();
        rig.console.sender().send(b"in");

        rig.console.queue_notify(TRANSMITQ);
        rig.console.serve_host_input();

        assert_eq!(rig.sink.bytes(), b"");
        assert_eq!(used(&rig.tx, 0), (0, 0));
        assert_eq!(used(&rig.rx, 0), (0, 0));
        assert_eq!(guest_bytes(&mem, DATA2, 4), [UNTOUCHED; 4]);
    }

    #[test]
    fn test_console_next_index_past_the_table_completes_with_zero() {
        let mem = mem();
        let mut rig = rig(&mem);
        let descs = [RawDescriptor::from(SplitDescriptor::new(
            DATA,
            4,
            VRING_DESC_F_NEXT as u16,
            QSIZE + 5,
        ))];
        rig.tx.add_desc_chains(&descs, 0).unwrap();

        rig.console.queue_notify(TRANSMITQ);

        assert_eq!(rig.sink.bytes(), b"");
        assert_eq!(used(&rig.tx, 0), (0, 0));
    }

    #[test]
    fn test_console_lengths_that_overflow_complete_with_zero() {
        let mem = mem();
        let mut rig = rig(&mem);
        // Two descriptors whose lengths sum past 2^32 (each is out of
        // memory too); virtio-queue stops the chain at the second.
        add_chain(
            &rig.tx,
            0,
            &[(DATA, u32::MAX, false), (DATA2, u32::MAX, false)],
        );
        add_chain(&rig.rx, 0, &[(DATA, u32::MAX, true), (DATA2, 2, true)]);
        rig.console.sender().send(b"xy");

        rig.console.queue_notify(TRANSMITQ);
        rig.console.serve_host_input();

        assert_eq!(rig.sink.bytes(), b"");
        assert_eq!(used(&rig.tx, 0), (0, 0));
        assert_eq!(used(&rig.rx, 0), (0, 0));
        assert_eq!(guest_bytes(&mem, DATA2, 2), [UNTOUCHED; 2]);
    }

    #[test]
    fn test_console_transmit_is_capped_per_chain() {
        let mem = mem();
        let mut rig = rig(&mem);
        add_chain(&rig.tx, 0, &[(DATA, MAX_TX_BYTES + 4096, false)]);

        rig.console.queue_notify(TRANSMITQ);

        assert_eq!(rig.sink.bytes().len(), MAX_TX_BYTES as usize);
        assert_eq!(used(&rig.tx, 0), (0, 0));
    }

    #[test]
    fn test_console_bad_avail_index_parks_the_device_in_needs_reset() {
        let mem = mem();
        let mut rig = rig(&mem);
        rig.tx.avail().idx().store(QSIZE + 3);

        rig.console.queue_notify(TRANSMITQ);

        assert!(rig.console.needs_reset());
        assert_eq!(used_count(&rig.tx), 0);
        // Parked: later notifications do nothing until a reset.
        rig.console.sender().send(b"x");
        rig.console.serve_host_input();
        assert_eq!(used_count(&rig.rx), 0);
        rig.console.reset();
        assert!(!rig.console.needs_reset());
    }

    #[test]
    fn test_console_handler_delivers_input_when_woken() {
        use crate::event_loop::EventHandler;
        let mem = mem();
        let rig = rig(&mem);
        add_chain(&rig.rx, 0, &[(DATA, 8, true)]);
        let shared = SharedConsole::new(rig.console);
        let mut handler = shared.handler();
        let mut fds = Vec::new();
        handler.interest(&mut fds);
        assert_eq!(fds, vec![shared.lock().wake_fd()]);

        shared.lock().sender().send(b"hi");
        handler.ready(fds[0], vmm_sys_util::epoll::EventSet::IN);

        assert_eq!(used(&rig.rx, 0), (0, 2));
        assert_eq!(guest_bytes(&mem, DATA, 2), b"hi");
    }

    #[test]
    fn test_console_config_has_size_only_when_offered() {
        let mem = mem();
        let rig = rig(&mem);
        let mut config = [0xffu8; CONFIG_SIZE];
        rig.console.read_config(0, &mut config);
        assert_eq!(config, [80, 0, 25, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_ne!(rig.console.features() & VIRTIO_CONSOLE_F_SIZE, 0);

        let plain = Console::new(Box::new(std::io::sink()), None).unwrap();
        assert_eq!(plain.features(), VIRTIO_F_VERSION_1);
        let mut config = [0xffu8; 4];
        plain.read_config(0, &mut config);
        assert_eq!(config, [0; 4]);
        // Reads past the end are zeros, not a panic.
        let mut past = [0xffu8; 8];
        plain.read_config(u64::MAX - 2, &mut past);
        assert_eq!(past, [0; 8]);
    }
}
