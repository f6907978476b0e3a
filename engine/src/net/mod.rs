// SPDX-License-Identifier: Apache-2.0
//! Host-side network back-ends for virtio-net: user-mode NAT through
//! Debian's `passt` (no root needed), and [`NetHandler`], which moves a
//! back-end's frames into the in-VMM device's receive queue on the VM's
//! event loop.
//!
//! The receive path: the handler reads the back-end when its fd is
//! readable and delivers each frame to the device under its lock. When
//! the driver has posted no receive buffer, the frames read so far wait in
//! the handler and the back-end is not read (nor polled) again until the
//! driver notifies the receive queue, which writes the handler's kick fd.
//! At most one read's worth of frames (64 KiB) ever waits. When the
//! back-end hangs up (passt died), the device reports the link down with a
//! configuration interrupt, which is logged once.

pub mod passt;

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::devices::virtio::net::{RxOutcome, SharedNet};
use crate::event_loop::EventHandler;

/// Where received frames come from: the host network back-end.
pub trait FrameSource: Send {
    /// The fd that becomes readable when frames (or a hang-up) arrive.
    fn fd(&self) -> RawFd;
    /// Reads what the fd has (one read, when it is readable) and appends
    /// each complete frame to `frames`; false once the back-end hung up.
    fn receive(&mut self, frames: &mut Vec<Vec<u8>>) -> io::Result<bool>;
}

/// Feeds a virtio-net device's receive queue from a [`FrameSource`] on the
/// VM's event loop.
pub struct NetHandler {
    net: SharedNet,
    /// None once the back-end hung up.
    source: Option<Box<dyn FrameSource>>,
    /// Written by the device on every receive-queue notification.
    kick: EventFd,
    /// Frames read but not delivered (no receive buffer yet).
    pending: VecDeque<Vec<u8>>,
    /// Frames of the current read, reused.
    scratch: Vec<Vec<u8>>,
}

impl NetHandler {
    /// A handler delivering `source`'s frames to `net`; it gives the
    /// device the event fd that wakes it on receive-queue notifications.
    pub fn new(net: SharedNet, source: Box<dyn FrameSource>) -> io::Result<Self> {
        let kick = EventFd::new(EFD_NONBLOCK)?;
        net.lock().set_rx_notifier(kick.try_clone()?);
        Ok(Self {
            net,
            source: Some(source),
            kick,
            pending: VecDeque::new(),
            scratch: Vec::new(),
        })
    }

    /// Frames waiting for a receive buffer.
    pub fn pending_frames(&self) -> usize {
        self.pending.len()
    }

    /// Whether the back-end is still connected.
    pub fn connected(&self) -> bool {
        self.source.is_some()
    }

    /// Delivers waiting frames until the driver has no buffer left. A
    /// device with no driver (or a broken queue) drops them, as a NIC with
    /// no driver does.
    fn deliver(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut net = self.net.lock();
        while let Some(frame) = self.pending.front() {
            if net.deliver_frame(frame) == RxOutcome::NoBuffer {
                break;
            }
            self.pending.pop_front();
        }
    }

    /// Reads the back-end once.
    fn read_source(&mut self) {
        let Some(source) = self.source.as_mut() else {
            return;
        };
        self.scratch.clear();
        let lost = match source.receive(&mut self.scratch) {
            Ok(true) => None,
            Ok(false) => Some("it closed the connection".to_string()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => Some(e.to_string()),
        };
        self.pending.extend(self.scratch.drain(..));
        if let Some(why) = lost {
            log::warn!("virtio-net: the host network back-end stopped ({why}); the link is down");
            // Dropping it stops and reaps the process (passt).
            self.source = None;
            self.net.lock().set_link_up(false);
        }
    }
}

impl EventHandler for NetHandler {
    fn interest(&self, fds: &mut Vec<RawFd>) {
        fds.push(self.kick.as_raw_fd());
        if let Some(source) = &self.source {
            // No room in the guest: leave the back-end unread.
            if self.pending.is_empty() {
                fds.push(source.fd());
            }
        }
    }

    fn ready(&mut self, fd: RawFd, _events: EventSet) {
        if fd == self.kick.as_raw_fd() {
            // Nonblocking: fails only when the counter is already zero.
            let _ = self.kick.read();
        } else if self.source.as_ref().is_some_and(|s| s.fd() == fd) {
            self.read_source();
        }
        self.deliver();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::Queue;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::devices::virtio::net::{FrameSink, HEADER_LEN, Net, RX_QUEUE};
    use crate::devices::virtio::{ActivationContext, VirtioDevice, VirtioInterrupt};
    use crate::memory::GuestMemoryMmap;

    const BUF: u64 = 0x2_0000;

    struct NoSink;

    impl FrameSink for NoSink {
        fn send_frame(&mut self, _frame: &[u8]) -> io::Result<()> {
            Ok(())
        }
    }

    /// A source whose reads return the scripted results, one per read.
    struct Script {
        fd: EventFd,
        reads: Reads,
    }

    impl FrameSource for Script {
        fn fd(&self) -> RawFd {
            self.fd.as_raw_fd()
        }

        fn receive(&mut self, frames: &mut Vec<Vec<u8>>) -> io::Result<bool> {
            match self.reads.lock().unwrap().pop_front() {
                Some(Ok(read)) if read.is_empty() => Ok(false),
                Some(Ok(read)) => {
                    frames.extend(read);
                    Ok(true)
                }
                Some(Err(e)) => Err(e),
                None => Ok(false),
            }
        }
    }

    #[derive(Default)]
    struct Counts {
        rx: AtomicUsize,
        config: AtomicUsize,
    }

    impl VirtioInterrupt for Counts {
        fn signal_used_queue(&self, queue: u16) {
            if queue == RX_QUEUE {
                self.rx.fetch_add(1, Ordering::SeqCst);
            }
        }

        fn signal_config_change(&self) {
            self.config.fetch_add(1, Ordering::SeqCst);
        }
    }

    type Reads = Arc<std::sync::Mutex<VecDeque<io::Result<Vec<Vec<u8>>>>>>;

    struct Setup<'a> {
        mem: &'a GuestMemoryMmap,
        rx: MockSplitQueue<'a, GuestMemoryMmap>,
        net: SharedNet,
        handler: NetHandler,
        source_fd: RawFd,
        reads: Reads,
        counts: Arc<Counts>,
    }

    fn setup(mem: &GuestMemoryMmap) -> Setup<'_> {
        let rx = MockSplitQueue::new(mem, 16);
        let tx = MockSplitQueue::create(mem, GuestAddress(0x8000), 16);
        let net = SharedNet::new(Net::new([0x52, 0, 0, 0, 0, 1], Box::new(NoSink)));
        let counts = Arc::new(Counts::default());
        net.lock()
            .activate(ActivationContext {
                mem: mem.clone(),
                queues: vec![
                    rx.create_queue::<Queue>().unwrap(),
                    tx.create_queue::<Queue>().unwrap(),
                ],
                interrupt: counts.clone(),
            })
            .unwrap();
        let reads = Reads::default();
        let fd = EventFd::new(EFD_NONBLOCK).unwrap();
        let source_fd = fd.as_raw_fd();
        let script = Script {
            fd,
            reads: reads.clone(),
        };
        let handler = NetHandler::new(net.clone(), Box::new(script)).unwrap();
        Setup {
            mem,
            rx,
            net,
            handler,
            source_fd,
            reads,
            counts,
        }
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    /// Posts a 2048-byte receive buffer at descriptor `index`.
    fn post(s: &Setup<'_>, index: u16) {
        let desc = RawDescriptor::from(SplitDescriptor::new(
            BUF + u64::from(index) * 0x1000,
            2048,
            VRING_DESC_F_WRITE as u16,
            0,
        ));
        s.rx.add_desc_chains(&[desc], index).unwrap();
    }

    fn interest(h: &NetHandler) -> Vec<RawFd> {
        let mut fds = Vec::new();
        h.interest(&mut fds);
        fds
    }

    fn frame(tag: u8) -> Vec<u8> {
        vec![tag; 60]
    }

    #[test]
    fn test_handler_delivers_frames_and_raises_rx_interrupt() {
        // Arrange
        let mem = mem();
        let mut s = setup(&mem);
        post(&s, 0);
        s.reads.lock().unwrap().push_back(Ok(vec![frame(7)]));

        // Act
        s.handler.ready(s.source_fd, EventSet::IN);

        // Assert
        let mut got = vec![0u8; 60];
        s.mem
            .read_slice(&mut got, GuestAddress(BUF + HEADER_LEN as u64))
            .unwrap();
        assert_eq!(got, frame(7));
        assert_eq!(s.counts.rx.load(Ordering::SeqCst), 1);
        assert_eq!(s.handler.pending_frames(), 0);
        assert!(interest(&s.handler).contains(&s.source_fd));
    }

    #[test]
    fn test_handler_without_buffers_stops_reading_until_rx_notify() {
        // Arrange
        let mem = mem();
        let mut s = setup(&mem);
        s.reads
            .lock()
            .unwrap()
            .push_back(Ok(vec![frame(1), frame(2)]));

        // Act: no buffer posted.
        s.handler.ready(s.source_fd, EventSet::IN);

        // Assert: frames wait, the back-end is no longer watched.
        assert_eq!(s.handler.pending_frames(), 2);
        assert!(!interest(&s.handler).contains(&s.source_fd));

        // Act: the driver posts two buffers and notifies.
        post(&s, 0);
        post(&s, 1);
        s.net.lock().queue_notify(RX_QUEUE);
        let kick = s.handler.kick.as_raw_fd();
        s.handler.ready(kick, EventSet::IN);

        // Assert
        assert_eq!(s.handler.pending_frames(), 0);
        assert_eq!(s.rx.used().idx().load(), 2);
        assert!(interest(&s.handler).contains(&s.source_fd));
        // The kick was consumed.
        assert!(s.handler.kick.read().is_err());
    }

    #[test]
    fn test_handler_back_end_hang_up_sets_link_down_once() {
        // Arrange
        let mem = mem();
        let mut s = setup(&mem);
        s.reads.lock().unwrap().push_back(Ok(Vec::new()));

        // Act
        s.handler.ready(s.source_fd, EventSet::HANG_UP);
        s.handler.ready(s.source_fd, EventSet::HANG_UP);

        // Assert
        assert!(!s.handler.connected());
        assert!(!s.net.lock().link_up());
        assert_eq!(s.counts.config.load(Ordering::SeqCst), 1);
        assert_eq!(interest(&s.handler), vec![s.handler.kick.as_raw_fd()]);
    }

    #[test]
    fn test_handler_read_error_sets_link_down() {
        let mem = mem();
        let mut s = setup(&mem);
        s.reads
            .lock()
            .unwrap()
            .push_back(Err(io::Error::from(io::ErrorKind::ConnectionReset)));

        s.handler.ready(s.source_fd, EventSet::IN);

        assert!(!s.handler.connected());
        assert!(!s.net.lock().link_up());
    }

    #[test]
    fn test_handler_broken_rx_ring_parks_device_and_keeps_running() {
        // Arrange: an available index far past the queue size.
        let mem = mem();
        let mut s = setup(&mem);
        s.rx.avail().idx().store(u16::MAX / 2);
        s.reads
            .lock()
            .unwrap()
            .push_back(Ok(vec![frame(1), frame(2)]));
        s.reads.lock().unwrap().push_back(Ok(vec![frame(3)]));

        // Act
        s.handler.ready(s.source_fd, EventSet::IN);
        s.handler.ready(s.source_fd, EventSet::IN);

        // Assert: the device needs a reset and told the driver once; the
        // frames were dropped, the back-end is still read.
        assert!(s.net.lock().needs_reset());
        assert_eq!(s.counts.config.load(Ordering::SeqCst), 1);
        assert_eq!(s.handler.pending_frames(), 0);
        assert!(interest(&s.handler).contains(&s.source_fd));
    }

    #[test]
    fn test_handler_inactive_device_drops_frames() {
        let mem = mem();
        let mut s = setup(&mem);
        s.net.lock().reset();
        s.reads.lock().unwrap().push_back(Ok(vec![frame(1)]));

        s.handler.ready(s.source_fd, EventSet::IN);

        assert_eq!(s.handler.pending_frames(), 0);
        assert!(s.handler.connected());
    }

    /// The whole in-VMM path with a real passt: the guest's DHCPDISCOVER
    /// leaves on the notifying thread, passt's offer comes back on the
    /// event loop's thread into the receive queue, with the INTx line
    /// raised.
    #[test]
    fn test_virtio_pci_net_on_passt_gets_dhcp_offer_through_event_loop() {
        use std::sync::atomic::AtomicBool;
        use std::time::{Duration, Instant};

        use crate::control::VmControl;
        use crate::devices::irq::LevelIrq;
        use crate::devices::pci::PciDevice;
        use crate::devices::virtio::pci::VirtioPciDevice;
        use crate::devices::virtio::test_queue::{driver_ok, set_up_queues};
        use crate::event_loop::EventLoop;
        use crate::net::passt::{PASST_PATH, Passt};

        struct Level(AtomicBool);
        impl LevelIrq for Level {
            fn set_level(&self, _irq: u32, high: bool) {
                self.0.store(high, Ordering::SeqCst);
            }
        }

        if !std::path::Path::new(PASST_PATH).exists() {
            crate::test_skip::skipped_missing(module_path!(), "passt is not installed");
            return;
        }
        // Arrange: a device on passt, its handler on a running event loop.
        let mem = mem();
        let mac = [0x52, 0x54, 0x00, 0x0e, 0x0f, 0x10];
        let passt = Passt::start_private().unwrap();
        let pid = passt.pid();
        let net = SharedNet::new(Net::new(mac, Box::new(passt.sender().unwrap())));
        let handler = NetHandler::new(net.clone(), Box::new(passt)).unwrap();
        let mut events = EventLoop::new().unwrap();
        events.add(Box::new(handler));
        let running = events.start(Arc::new(VmControl::new())).unwrap();
        let level = Arc::new(Level(AtomicBool::new(false)));
        let mut dev = VirtioPciDevice::new(Box::new(net.clone()), mem.clone(), level.clone());
        let rx = MockSplitQueue::create(&mem, GuestAddress(0x1_0000), 16);
        let tx = MockSplitQueue::create(&mem, GuestAddress(0x1_8000), 16);
        let w32 = |dev: &mut VirtioPciDevice, offset: u64, value: u32| {
            dev.bar_write(0, offset, &value.to_le_bytes());
        };
        set_up_queues(&mut dev, &[&rx, &tx]);
        driver_ok(&mut dev);
        // Four receive buffers (passt may also send IPv6 router adverts).
        let rx_descs: Vec<RawDescriptor> = (0..4u16)
            .map(|i| {
                RawDescriptor::from(SplitDescriptor::new(
                    BUF + u64::from(i) * 0x1000,
                    2048,
                    VRING_DESC_F_WRITE as u16,
                    0,
                ))
            })
            .collect();
        for (i, desc) in rx_descs.iter().enumerate() {
            rx.add_desc_chains(std::slice::from_ref(desc), i as u16)
                .unwrap();
        }
        let discover = crate::net::passt::passt_tests::dhcp_discover(mac);
        let packet_at = 0x8_0000u64;
        mem.write_slice(&[0u8; HEADER_LEN], GuestAddress(packet_at))
            .unwrap();
        mem.write_slice(&discover, GuestAddress(packet_at + HEADER_LEN as u64))
            .unwrap();
        let len = (HEADER_LEN + discover.len()) as u32;
        tx.add_desc_chains(
            &[RawDescriptor::from(SplitDescriptor::new(
                packet_at, len, 0, 0,
            ))],
            0,
        )
        .unwrap();

        // Act: the driver notifies both queues.
        w32(&mut dev, 0x3000, 0);
        w32(&mut dev, 0x3004, 1);

        // Assert: an offer to our MAC lands in a receive buffer.
        let deadline = Instant::now() + Duration::from_secs(10);
        let offer = 'wait: loop {
            let used = rx.used().idx().load();
            for i in 0..used {
                let elem = rx.used().ring().ref_at(usize::from(i)).unwrap().load();
                let mut buf = vec![0u8; elem.len() as usize];
                let addr = BUF + u64::from(elem.id()) * 0x1000;
                mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
                let frame = buf.get(HEADER_LEN..).unwrap_or(&[]).to_vec();
                if frame.len() > 42 && frame[0..6] == mac && frame[34..38] == [0, 67, 0, 68] {
                    break 'wait frame;
                }
            }
            assert!(Instant::now() < deadline, "no DHCP offer in the rx queue");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(offer[42], 2, "a BOOTREPLY");
        assert!(level.0.load(Ordering::SeqCst), "the INTx line is raised");
        assert_eq!(tx.used().idx().load(), 1);
        assert!(net.lock().link_up());
        let mut isr = [0u8];
        dev.bar_read(0, 0x1000, &mut isr);

        // Act: passt dies.
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());

        // Assert: link down, with a configuration interrupt.
        let deadline = Instant::now() + Duration::from_secs(5);
        while net.lock().link_up() {
            assert!(Instant::now() < deadline, "the link stayed up");
            std::thread::sleep(Duration::from_millis(20));
        }
        dev.bar_read(0, 0x1000, &mut isr);
        assert_eq!(isr[0] & 2, 2, "ISR has the configuration-change bit");
        let mut link = [0u8; 2];
        dev.bar_read(0, 0x2000 + 6, &mut link);
        assert_eq!(link, [0, 0], "config space reports the link down");
        drop(running);
    }
}
