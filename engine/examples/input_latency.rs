// SPDX-License-Identifier: Apache-2.0
//! Host key event → event in the guest's queue, measured.
//!
//! virtio-input: a key press is pushed through the device's `InputSender`
//! (as the window does), the device thread wakes on the device's event fd
//! (as the VMM's event loop does), fills the driver's buffers and signals
//! the used queue; the time from push to that signal is the latency.
//! PS/2: a key press goes into the i8042 and raises IRQ 1; the time from
//! `keyboard_input` to the interrupt is measured the same way.
//!
//! `cargo run --release -p engine --example input_latency -- [events]`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::control::VmControl;
use engine::devices::irq::InterruptLine;
use engine::devices::legacy::i8042::I8042;
use engine::devices::virtio::input::{Input, InputEvent, InputKind};
use engine::devices::virtio::{ActivationContext, VirtioDevice, VirtioInterrupt};
use engine::memory::GuestMemoryMmap;
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::Queue;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::GuestAddress;

const QUEUE_SIZE: u16 = 256;
const DATA: u64 = 0x4_0000;
const KEY_A: u16 = 30;

/// Counts used-queue signals and remembers when the last one came.
struct Signals {
    start: Instant,
    used: AtomicU64,
    at_ns: AtomicU64,
}

impl VirtioInterrupt for Signals {
    fn signal_used_queue(&self, queue: u16) {
        if queue == 0 {
            self.at_ns
                .store(self.start.elapsed().as_nanos() as u64, Ordering::SeqCst);
            self.used.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn signal_config_change(&self) {}
}

impl InterruptLine for Signals {
    fn pulse(&self) {
        self.signal_used_queue(0);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name}: n={} p50={:.1} us p99={:.1} us max={:.1} us",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e6,
    );
}

/// Events per device instance: the mock queue is built once per batch, so
/// its ring never wraps.
const BATCH: usize = 100;

fn virtio_input(events: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(events);
    let mut left = events;
    while left > 0 {
        let n = left.min(BATCH);
        samples.extend(virtio_input_batch(n));
        left -= n;
    }
    samples
}

fn virtio_input_batch(events: usize) -> Vec<Duration> {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let eventq = MockSplitQueue::new(&mem, QUEUE_SIZE);
    let statusq = MockSplitQueue::create(&mem, GuestAddress(0x2_0000), QUEUE_SIZE);
    let signals = Arc::new(Signals {
        start: Instant::now(),
        used: AtomicU64::new(0),
        at_ns: AtomicU64::new(0),
    });
    let mut input = Input::new(InputKind::Keyboard).unwrap();
    input
        .activate(ActivationContext {
            mem: mem.clone(),
            queues: vec![
                eventq.create_queue::<Queue>().unwrap(),
                statusq.create_queue::<Queue>().unwrap(),
            ],
            interrupt: signals.clone(),
        })
        .unwrap();
    let sender = input.sender();
    let wake = input.wake_fd();
    let input = Arc::new(Mutex::new(input));
    let done = Arc::new(AtomicBool::new(false));
    // The device thread: what the VMM's event loop does for this device.
    let device = {
        let (input, done) = (input.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let mut fds = [libc::pollfd {
                    fd: wake,
                    events: libc::POLLIN,
                    revents: 0,
                }];
                // SAFETY: one valid pollfd, its length passed alongside.
                let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) };
                if ready > 0 {
                    input.lock().unwrap().serve_host_events();
                }
            }
        })
    };
    let mut samples = Vec::with_capacity(events);
    let mut next_desc = 0u16;
    for i in 0..events {
        // Two 8-byte buffers for the key event and its SYN_REPORT.
        for _ in 0..2 {
            let addr = DATA + 16 * u64::from(next_desc);
            let desc = SplitDescriptor::new(addr, 8, VRING_DESC_F_WRITE as u16, 0);
            eventq
                .add_desc_chains(&[RawDescriptor::from(desc)], next_desc)
                .unwrap();
            next_desc = (next_desc + 1) % QUEUE_SIZE;
        }
        let before = signals.used.load(Ordering::SeqCst);
        let pushed = signals.start.elapsed().as_nanos() as u64;
        sender.push_events(&[InputEvent::key(KEY_A, i % 2 == 0), InputEvent::syn()]);
        let deadline = Instant::now() + Duration::from_secs(1);
        while signals.used.load(Ordering::SeqCst) == before {
            assert!(
                Instant::now() < deadline,
                "the device never signalled (event {i})"
            );
            std::hint::spin_loop();
        }
        let at = signals.at_ns.load(Ordering::SeqCst);
        samples.push(Duration::from_nanos(at.saturating_sub(pushed)));
    }
    done.store(true, Ordering::SeqCst);
    device.join().unwrap();
    samples
}

fn ps2(events: usize) -> Vec<Duration> {
    let signals = Arc::new(Signals {
        start: Instant::now(),
        used: AtomicU64::new(0),
        at_ns: AtomicU64::new(0),
    });
    struct Line(Arc<Signals>);
    impl InterruptLine for Line {
        fn pulse(&self) {
            self.0.pulse();
        }
    }
    let mut i8042 = I8042::new(
        Arc::new(VmControl::new()),
        Box::new(Line(signals.clone())),
        Box::new(Line(signals.clone())),
    );
    let mut samples = Vec::with_capacity(events);
    for i in 0..events {
        let before = signals.used.load(Ordering::SeqCst);
        let pushed = signals.start.elapsed().as_nanos() as u64;
        if i % 2 == 0 {
            i8042.keyboard_input(&[0x1c]);
        } else {
            i8042.keyboard_input(&[0xf0, 0x1c]);
        }
        assert!(signals.used.load(Ordering::SeqCst) > before, "no IRQ 1");
        samples.push(Duration::from_nanos(
            signals.at_ns.load(Ordering::SeqCst).saturating_sub(pushed),
        ));
        // The guest reads the bytes, as its interrupt handler does.
        use engine::bus::BusDevice;
        let mut byte = [0u8];
        for _ in 0..2 {
            i8042.read(0, &mut byte);
        }
    }
    samples
}

fn main() {
    let events: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    report(
        "virtio-input push -> used-queue signal",
        virtio_input(events),
    );
    report("ps/2 key -> IRQ 1", ps2(events));
}
