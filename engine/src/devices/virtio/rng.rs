// SPDX-License-Identifier: Apache-2.0
//! A virtio entropy device (virtio spec 1.2, section 5.4 "Entropy Device")
//! that hands the guest bytes from an [`EntropySource`]; [`HostRandom`]
//! reads the host kernel's getrandom(2).
//!
//! The device has one request queue of up to [`QUEUE_SIZE`] entries, offers
//! only VIRTIO_F_VERSION_1 and has no configuration space (reads return
//! zeros, writes are ignored). It serves requests synchronously, on the
//! thread that calls [`VirtioDevice::queue_notify`](super::VirtioDevice::queue_notify) (the transport's
//! notify thread) or [`Rng::serve_queue`] (a vhost-user back-end's vring thread).
//!
//! Each request is a chain of device-writable buffers (spec 5.4.6). The
//! chain is copied out of guest memory and checked as a whole before any
//! byte is written: a device-readable descriptor, a descriptor outside
//! guest memory or an empty chain completes the request with a used length
//! of 0. A request gets at most [`MAX_REQUEST_BYTES`] bytes (the spec lets
//! the device use less than the whole buffer), through a bounce buffer of
//! that size, so the host never allocates more whatever the guest asks.
//!
//! The device is rate-capped by a token bucket ([`RateLimit`], by default
//! [`DEFAULT_BYTES_PER_SECOND`] with a burst of [`DEFAULT_BURST`] bytes):
//! when the bucket cannot pay for the next request, the device stops and
//! leaves that request and the ones after it in the ring, and
//! [`Rng::throttled_until`] says when to try again. A vhost-user caller
//! retries (calling `serve_queue` again) at that time or on the driver's
//! next notification; in a VM, [`Rng::with_retry_timer`] gives the device
//! a timer that its [`HostHandler`](super::shared::HostHandler) serves on the VM's event loop, so a
//! throttled request completes once the bucket has refilled even if the
//! driver never notifies again (Linux waits for each request it posts).
//! Resetting the device does not refill the bucket.
//!
//! A broken queue stops processing and sets DEVICE_NEEDS_RESET (see
//! [`VirtioDevice::needs_reset`](super::VirtioDevice::needs_reset)).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use log::warn;
use virtio_queue::{DescriptorChain, Queue};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::timerfd::TimerFd;

use super::ErrorLog;
use super::device_core::{self, DeviceCore, GuestFault, QueueDevice, Step};
use super::{DeviceInfo, VIRTIO_F_VERSION_1, device_type, read_config_bytes};
use crate::memory::GuestMemoryMmap;

/// The largest size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// The most bytes one request is given, whatever its buffer size.
pub const MAX_REQUEST_BYTES: u32 = 64 << 10;
/// The default sustained rate of the device, in bytes per second.
pub const DEFAULT_BYTES_PER_SECOND: u64 = 1 << 20;
/// The default burst of the device, in bytes.
pub const DEFAULT_BURST: u64 = 64 << 10;

/// Descriptors of one request that are filled; any further ones are
/// checked but left alone (the device may use less than the buffer).
const MAX_FILL_DESCRIPTORS: usize = QUEUE_SIZE as usize;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Errors of the entropy device: its configuration, and the reasons a
/// request fails.
#[derive(Debug, thiserror::Error)]
pub enum RngError {
    /// The rate limit has a zero rate or a zero burst.
    #[error("Invalid rate limit: {bytes_per_second} bytes/s with a {burst}-byte burst")]
    InvalidRateLimit {
        /// The rate asked for.
        bytes_per_second: u64,
        /// The burst asked for.
        burst: u64,
    },
    /// The chain holds a device-readable descriptor.
    #[error("Request has a device-readable descriptor")]
    DeviceReadable,
    /// A descriptor points outside guest memory.
    #[error("Descriptor at {addr:#x} ({len} bytes) is outside guest memory")]
    DescriptorOutOfMemory {
        /// Its guest address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The chain has no bytes to fill.
    #[error("Request has an empty buffer")]
    EmptyBuffer,
    /// Guest memory could not be written, though it was checked.
    #[error("Guest memory access failed")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
    /// The entropy source failed.
    #[error("The entropy source failed")]
    Entropy(#[source] io::Error),
    /// The request queue is broken.
    #[error(transparent)]
    Guest(#[from] GuestFault),
}

impl RngError {
    /// Whether the guest caused the error (as opposed to the host or the
    /// configuration): such errors are rate-limited in the log.
    pub fn is_guest_error(&self) -> bool {
        !matches!(self, Self::InvalidRateLimit { .. } | Self::Entropy(_))
    }
}

/// Where the device's random bytes come from.
pub trait EntropySource: Send {
    /// Fills all of `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<()>;
}

/// The host kernel's random number generator, through getrandom(2) without
/// flags: it blocks only until the host's pool is first initialised.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostRandom;

impl EntropySource for HostRandom {
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0usize;
        while let Some(rest) = buf.get_mut(done..).filter(|rest| !rest.is_empty()) {
            // SAFETY: getrandom writes at most `rest.len()` bytes to
            // `rest`, a live, exclusively borrowed buffer of that length.
            let ret = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
            match usize::try_from(ret) {
                // A short read (large buffers, signals) leaves the rest.
                Ok(n) if n > 0 => done = done.saturating_add(n),
                Ok(_) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Err(_) => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The device's rate cap: a token bucket that refills at
/// `bytes_per_second` and holds at most `burst` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// The sustained rate, in bytes per second (not 0).
    pub bytes_per_second: u64,
    /// The most bytes served at once after an idle period (not 0).
    pub burst: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            bytes_per_second: DEFAULT_BYTES_PER_SECOND,
            burst: DEFAULT_BURST,
        }
    }
}

/// `nanos` nanoseconds as a [`Duration`], saturating.
fn duration_from_nanos(nanos: u128) -> Duration {
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below one second, so it fits a u32.
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0);
    Duration::new(secs, subsec)
}

/// A token bucket over an injected clock: every method takes `now`.
///
/// Credit is kept in nano-bytes (a byte is `NANOS_PER_SEC` of them), so
/// each nanosecond earns exactly `rate` of them and no fraction of a byte
/// is lost or gained however often the bucket is refilled.
#[derive(Debug)]
struct TokenBucket {
    /// Bytes per second, which is nano-bytes per nanosecond.
    rate: u64,
    /// In bytes.
    burst: u64,
    /// Nano-bytes that may be served as of `last`.
    credit: u128,
    /// The time up to which the refill has been counted.
    last: Instant,
}

impl TokenBucket {
    /// A full bucket as of `now`.
    fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            rate: limit.bytes_per_second,
            burst: limit.burst,
            credit: Self::nano_bytes(limit.burst),
            last: now,
        }
    }

    fn nano_bytes(bytes: u64) -> u128 {
        // u64::MAX * 10^9 fits a u128 with room to spare.
        u128::from(bytes) * NANOS_PER_SEC
    }

    /// Adds what was earned between `last` and `now`; a `now` before
    /// `last` earns nothing.
    fn refill(&mut self, now: Instant) {
        let full = Self::nano_bytes(self.burst);
        let earned = now
            .saturating_duration_since(self.last)
            .as_nanos()
            .checked_mul(u128::from(self.rate))
            .unwrap_or(full);
        self.credit = self.credit.saturating_add(earned).min(full);
        self.last = self.last.max(now);
    }

    /// Takes `bytes` from the bucket if it holds them at `now`.
    fn take(&mut self, bytes: u64, now: Instant) -> bool {
        self.refill(now);
        match self.credit.checked_sub(Self::nano_bytes(bytes)) {
            Some(left) => {
                self.credit = left;
                true
            }
            None => false,
        }
    }

    /// When the bucket will hold `bytes` (at most `burst`).
    fn ready_at(&self, bytes: u64) -> Instant {
        let missing = Self::nano_bytes(bytes.min(self.burst)).saturating_sub(self.credit);
        let wait = duration_from_nanos(missing.div_ceil(u128::from(self.rate.max(1))));
        // Beyond what an Instant can hold, waiting one more day is as good.
        self.last
            .checked_add(wait)
            .or_else(|| self.last.checked_add(Duration::from_secs(86_400)))
            .unwrap_or(self.last)
    }
}

/// One device-writable descriptor of a request, copied out of guest memory.
#[derive(Clone, Copy, Debug)]
struct Desc {
    addr: GuestAddress,
    len: u32,
}

/// The entropy side of the device: what serving requests needs besides the
/// queue and guest memory.
struct Server {
    source: Box<dyn EntropySource>,
    bucket: TokenBucket,
    /// Descriptors of the chain being served, reused.
    descs: Vec<Desc>,
    /// Grows on demand up to `MAX_REQUEST_BYTES`.
    bounce: Vec<u8>,
    /// Bytes the request left in the ring waits for, while throttled.
    pending: Option<u32>,
    errors: ErrorLog,
    /// The time serving runs at, when a test sets it.
    now: Option<Instant>,
}

/// A virtio entropy device.
pub struct Rng {
    server: Server,
    core: DeviceCore,
    /// Fires when a throttled request can be served (VMs only).
    retry: Option<TimerFd>,
}

impl Rng {
    /// Creates a device serving bytes from `source`, capped by `limit`.
    /// Fails if the limit's rate or burst is 0.
    pub fn new(source: Box<dyn EntropySource>, limit: RateLimit) -> Result<Self, RngError> {
        if limit.bytes_per_second == 0 || limit.burst == 0 {
            return Err(RngError::InvalidRateLimit {
                bytes_per_second: limit.bytes_per_second,
                burst: limit.burst,
            });
        }
        Ok(Self {
            server: Server {
                source,
                bucket: TokenBucket::new(limit, Instant::now()),
                descs: Vec::new(),
                bounce: Vec::new(),
                pending: None,
                errors: ErrorLog::default(),
                now: None,
            },
            core: DeviceCore::default(),
            retry: None,
        })
    }

    /// Gives the device a timer that fires when a throttled request can
    /// be served; the device's host handler waits for it on the VM's event loop.
    pub fn with_retry_timer(mut self) -> io::Result<Self> {
        self.retry = Some(TimerFd::new()?);
        Ok(self)
    }

    /// The retry timer's fd, when the device has one.
    pub fn retry_fd(&self) -> Option<RawFd> {
        self.retry.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// The retry timer fired: serves the queue again (re-arming the timer
    /// if the cap still holds requests back).
    pub fn retry_now(&mut self) {
        QueueDevice::serve_host_events(self);
    }

    /// Arms the retry timer for when the throttled request can be served.
    fn arm_retry(&mut self, now: Instant) {
        let Some(at) = self.throttled_until() else {
            return;
        };
        let Some(timer) = self.retry.as_mut() else {
            return;
        };
        // A zero duration would disarm the timer.
        let wait = at
            .saturating_duration_since(now)
            .max(Duration::from_micros(100));
        if let Err(e) = timer.reset(wait, None) {
            warn!("virtio-rng: cannot arm the retry timer: {e}");
        }
    }

    /// The features the driver (or a vhost-user front-end) accepted.
    pub fn acked_features(&self) -> u64 {
        self.core.acked_features()
    }

    /// When the rate cap stopped the device with requests still in the
    /// ring: the time from which the next one can be served, when the
    /// caller should serve the queue again. `None` when not throttled.
    pub fn throttled_until(&self) -> Option<Instant> {
        self.server
            .pending
            .map(|bytes| self.server.bucket.ready_at(u64::from(bytes)))
    }

    /// Serves the requests available on a queue owned by someone else (a
    /// vhost-user front-end's vring), as far as the rate cap allows, and
    /// returns whether any was completed. Fails when the queue itself is
    /// broken; the caller signals the driver, and retries at
    /// [`throttled_until`](Self::throttled_until).
    pub fn serve_queue(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, RngError> {
        let now = self.server.now.unwrap_or_else(Instant::now);
        let served = self.server.drain(mem, queue, now);
        self.arm_retry(now);
        served
    }

    /// Serves the activated queue as if at `now`.
    #[cfg(test)]
    fn notify_at(&mut self, now: Instant) {
        self.server.now = Some(now);
        self.serve_active(0);
        self.server.now = None;
    }
}

impl DeviceInfo for Rng {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // No configuration space (spec 5.4.4): everything reads 0.
        read_config_bytes(&[], offset, data);
    }
}

impl QueueDevice for Rng {
    type Error = RngError;

    fn saves_state(&self) -> bool {
        true
    }

    fn save_own(&mut self) -> Result<Vec<u8>, crate::snapshot::StateError> {
        // Nothing of its own: a request the rate cap held back is still in
        // the ring, and is served when the restored device looks again.
        Ok(Vec::new())
    }

    fn restore_own(&mut self, _state: &[u8]) -> Result<(), crate::snapshot::StateError> {
        Ok(())
    }

    fn name(&self) -> &str {
        "virtio-rng"
    }

    device_core::core_accessors!();

    fn serve(
        &mut self,
        _index: u16,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, RngError> {
        self.serve_queue(mem, queue)
    }

    fn activated(&mut self) {
        self.server.pending = None;
    }

    fn reset_state(&mut self) {
        // The bucket is kept: a reset must not buy the guest a new burst.
        self.server.pending = None;
    }

    fn retry_at(&self) -> Option<Instant> {
        self.throttled_until()
    }

    fn host_event_fd(&self) -> Option<RawFd> {
        self.retry_fd()
    }

    fn take_host_events(&mut self) -> Vec<u16> {
        if let Some(timer) = self.retry.as_mut()
            && let Err(e) = timer.clear()
        {
            warn!("virtio-rng: cannot clear the retry timer: {e}");
        }
        vec![0]
    }
}

impl Server {
    /// Serves available chains, as far as the bucket allows at `now`, until
    /// the ring is empty with notifications re-enabled or the bucket runs
    /// dry (notifications stay on then, so that a new kick retries too).
    /// Fails only when the queue is broken.
    fn drain(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
        now: Instant,
    ) -> Result<bool, RngError> {
        let mut throttled = None;
        let used = device_core::drain(mem, queue, |chain| {
            let len = match self.collect(mem, chain) {
                Ok(len) => len,
                Err(err) => {
                    self.log(&err);
                    return Step::Used(0);
                }
            };
            if !self.bucket.take(u64::from(len), now) {
                // Leave the request in the ring for the retry.
                throttled = Some(len);
                return Step::Leave;
            }
            Step::Used(self.fill(mem, len))
        })?;
        self.pending = throttled;
        Ok(used)
    }

    /// Copies the chain's descriptors into `self.descs`, checks all of
    /// them, and returns how many bytes the request is served (at least 1,
    /// capped by `MAX_REQUEST_BYTES` and the burst).
    fn collect(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
    ) -> Result<u32, RngError> {
        self.descs.clear();
        let mut total = 0u64;
        let mut error = None;
        // virtio-queue ends the chain at a loop, a bad index or an
        // unreadable descriptor; what remains is checked like any chain.
        for raw in chain {
            let desc = Desc {
                addr: raw.addr(),
                len: raw.len(),
            };
            if error.is_some() {
                continue;
            }
            if !raw.is_write_only() {
                error = Some(RngError::DeviceReadable);
            } else if !mem.check_range(desc.addr, desc.len as usize) {
                error = Some(RngError::DescriptorOutOfMemory {
                    addr: desc.addr.raw_value(),
                    len: desc.len,
                });
            } else if desc.len > 0 && self.descs.len() < MAX_FILL_DESCRIPTORS {
                self.descs.push(desc);
                total = total.saturating_add(u64::from(desc.len));
            }
        }
        if let Some(err) = error {
            self.descs.clear();
            return Err(err);
        }
        let cap = u64::from(MAX_REQUEST_BYTES).min(self.bucket.burst);
        // `cap` is at most `MAX_REQUEST_BYTES`, so this fits a u32.
        match u32::try_from(total.min(cap)) {
            Ok(0) => Err(RngError::EmptyBuffer),
            Ok(len) => Ok(len),
            Err(_) => Ok(MAX_REQUEST_BYTES),
        }
    }

    /// Writes `len` bytes from the source into the collected descriptors
    /// and returns the number written.
    fn fill(&mut self, mem: &GuestMemoryMmap, len: u32) -> u32 {
        let n = len as usize;
        if self.bounce.len() < n {
            self.bounce.resize(n, 0);
        }
        let Some(buf) = self.bounce.get_mut(..n) else {
            return 0;
        };
        if let Err(err) = self.source.fill(buf) {
            let err = RngError::Entropy(err);
            self.log(&err);
            return 0;
        }
        let mut done = 0usize;
        let mut failure = None;
        for desc in &self.descs {
            let Some(part) = self
                .bounce
                .get(done..n.min(done.saturating_add(desc.len as usize)))
            else {
                break;
            };
            if part.is_empty() {
                break;
            }
            if let Err(err) = mem.write_slice(part, desc.addr) {
                failure = Some(RngError::GuestMemory(err));
                break;
            }
            done += part.len();
        }
        if let Some(err) = failure {
            self.log(&err);
        }
        // `done` is at most `len`.
        u32::try_from(done).unwrap_or(0)
    }

    /// Logs a failed request, rate-limited.
    fn log(&mut self, err: &RngError) {
        self.errors.report("virtio-rng", err, err.is_guest_error());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use virtio_queue::mock::MockSplitQueue;

    use std::sync::Arc;

    use super::*;
    use crate::devices::virtio::test_queue::{
        Mock, UNTOUCHED, add_chain, guest_bytes, marked_memory, used, used_count,
    };
    use crate::devices::virtio::{ActivateError, ActivationContext, VirtioDevice, VirtioInterrupt};

    const MEM_SIZE: u64 = 0x10_0000;
    const DATA: u64 = 0x2_0000;
    const DATA2: u64 = 0x6_0000;
    const QSIZE: u16 = 16;

    fn mem() -> GuestMemoryMmap {
        marked_memory(MEM_SIZE, DATA)
    }

    /// A deterministic source: 0, 1, 2, ... (mod 256), counting the bytes
    /// it hands out.
    struct Counter {
        next: u8,
        served: Arc<AtomicUsize>,
    }

    impl EntropySource for Counter {
        fn fill(&mut self, buf: &mut [u8]) -> io::Result<()> {
            for byte in buf.iter_mut() {
                *byte = self.next;
                self.next = self.next.wrapping_add(1);
            }
            self.served.fetch_add(buf.len(), Ordering::SeqCst);
            Ok(())
        }
    }

    /// A source that always fails.
    struct Broken;

    impl EntropySource for Broken {
        fn fill(&mut self, _buf: &mut [u8]) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::Other))
        }
    }

    #[derive(Default)]
    struct Interrupts {
        used: AtomicUsize,
    }

    impl VirtioInterrupt for Interrupts {
        fn signal_used_queue(&self, _queue: u16) {
            self.used.fetch_add(1, Ordering::SeqCst);
        }

        fn signal_config_change(&self) {}
    }

    impl Interrupts {
        fn count(&self) -> usize {
            self.used.load(Ordering::SeqCst)
        }
    }

    fn counting_rng(limit: RateLimit) -> (Rng, Arc<AtomicUsize>) {
        let served = Arc::new(AtomicUsize::new(0));
        let source = Counter {
            next: 0,
            served: served.clone(),
        };
        (Rng::new(Box::new(source), limit).unwrap(), served)
    }

    fn activate(rng: &mut Rng, mem: &GuestMemoryMmap, vq: &Mock<'_>) -> Arc<Interrupts> {
        let interrupts = Arc::new(Interrupts::default());
        rng.activate(ActivationContext {
            mem: mem.clone(),
            queues: vec![vq.create_queue::<Queue>().unwrap()],
            interrupt: interrupts.clone(),
        })
        .unwrap();
        interrupts
    }

    fn counting(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 256) as u8).collect()
    }

    #[test]
    fn test_rng_request_gets_exactly_its_buffer_length() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut rng, served) = counting_rng(RateLimit::default());
        let interrupts = activate(&mut rng, &mem, &vq);
        add_chain(&vq, 0, &[(DATA, 100, true), (DATA2, 28, true)]);

        // Act
        rng.queue_notify(0);

        // Assert
        assert_eq!(used_count(&vq), 1);
        assert_eq!(used(&vq, 0), (0, 128));
        assert_eq!(served.load(Ordering::SeqCst), 128);
        let expected = counting(128);
        assert_eq!(guest_bytes(&mem, DATA, 100), expected[..100]);
        assert_eq!(guest_bytes(&mem, DATA2, 28), expected[100..]);
        assert_eq!(guest_bytes(&mem, DATA + 100, 1), [UNTOUCHED]);
        assert_eq!(guest_bytes(&mem, DATA2 + 28, 1), [UNTOUCHED]);
        assert_eq!(interrupts.count(), 1);
        assert_eq!(rng.throttled_until(), None);
    }

    #[test]
    fn test_rng_device_readable_descriptor_completes_with_zero_and_writes_nothing() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut rng, served) = counting_rng(RateLimit::default());
        let interrupts = activate(&mut rng, &mem, &vq);
        add_chain(&vq, 0, &[(DATA, 64, true), (DATA2, 64, false)]);

        // Act
        rng.queue_notify(0);

        // Assert
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(served.load(Ordering::SeqCst), 0);
        assert_eq!(guest_bytes(&mem, DATA, 64), [UNTOUCHED; 64]);
        assert_eq!(guest_bytes(&mem, DATA2, 64), [UNTOUCHED; 64]);
        assert_eq!(interrupts.count(), 1);
        assert!(!rng.needs_reset());
    }

    #[test]
    fn test_rng_descriptor_outside_memory_completes_with_zero_without_panic() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut rng, served) = counting_rng(RateLimit::default());
        activate(&mut rng, &mem, &vq);
        add_chain(&vq, 0, &[(DATA, 32, true), (MEM_SIZE - 8, 16, true)]);
        add_chain(&vq, 2, &[(u64::MAX - 4, 16, true)]);

        // Act
        rng.queue_notify(0);

        // Assert
        assert_eq!(used_count(&vq), 2);
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(used(&vq, 1), (2, 0));
        assert_eq!(served.load(Ordering::SeqCst), 0);
        assert_eq!(guest_bytes(&mem, DATA, 32), [UNTOUCHED; 32]);
        assert!(!rng.needs_reset());
    }

    #[test]
    fn test_rng_empty_buffer_completes_with_zero() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut rng, served) = counting_rng(RateLimit::default());
        activate(&mut rng, &mem, &vq);
        add_chain(&vq, 0, &[(DATA, 0, true)]);

        // Act
        rng.queue_notify(0);

        // Assert
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(served.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn test_rng_request_over_cap_gets_only_cap() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut rng, served) = counting_rng(RateLimit::default());
        activate(&mut rng, &mem, &vq);
        let cap = MAX_REQUEST_BYTES as usize;
        add_chain(&vq, 0, &[(DATA, 100 << 10, true)]);

        // Act
        rng.queue_notify(0);

        // Assert
        assert_eq!(used(&vq, 0), (0, MAX_REQUEST_BYTES));
        assert_eq!(served.load(Ordering::SeqCst), cap);
        assert_eq!(guest_bytes(&mem, DATA, cap), counting(cap));
        assert_eq!(guest_bytes(&mem, DATA + cap as u64, 16), [UNTOUCHED; 16]);
    }

    #[test]
    fn test_rng_request_over_burst_gets_only_burst() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let limit = RateLimit {
            bytes_per_second: 1024,
            burst: 512,
        };
        let (mut rng, served) = counting_rng(limit);
        activate(&mut rng, &mem, &vq);
        add_chain(&vq, 0, &[(DATA, 4096, true)]);

        // Act
        rng.queue_notify(0);

        // Assert
        assert_eq!(used(&vq, 0), (0, 512));
        assert_eq!(served.load(Ordering::SeqCst), 512);
    }

    #[test]
    fn test_rng_rate_limit_stops_after_burst_and_resumes_later() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let limit = RateLimit {
            bytes_per_second: 1024,
            burst: 4096,
        };
        let (mut rng, served) = counting_rng(limit);
        let interrupts = activate(&mut rng, &mem, &vq);
        add_chain(&vq, 0, &[(DATA, 4096, true)]);
        add_chain(&vq, 1, &[(DATA2, 4096, true)]);
        let t0 = Instant::now();

        // Act
        rng.notify_at(t0);
        let after_burst = (used_count(&vq), rng.throttled_until());
        rng.notify_at(t0 + Duration::from_secs(2));
        let too_early = (used_count(&vq), rng.throttled_until());
        rng.notify_at(t0 + Duration::from_secs(4));

        // Assert
        assert_eq!(after_burst, (1, Some(t0 + Duration::from_secs(4))));
        assert_eq!(too_early, (1, Some(t0 + Duration::from_secs(4))));
        assert_eq!(used_count(&vq), 2);
        assert_eq!(used(&vq, 0), (0, 4096));
        assert_eq!(used(&vq, 1), (1, 4096));
        assert_eq!(served.load(Ordering::SeqCst), 8192);
        assert_eq!(guest_bytes(&mem, DATA2, 4096), counting(8192)[4096..]);
        assert_eq!(rng.throttled_until(), None);
        assert_eq!(interrupts.count(), 2);
    }

    #[test]
    fn test_rng_retry_timer_serves_a_throttled_request_without_a_new_notify() {
        // Arrange: 64 KiB/s after a 4 KiB burst, so the second 4 KiB
        // request is due 62.5 ms after the first.
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let limit = RateLimit {
            bytes_per_second: 64 << 10,
            burst: 4096,
        };
        let (rng, _) = counting_rng(limit);
        let mut rng = rng.with_retry_timer().unwrap();
        let interrupts = activate(&mut rng, &mem, &vq);
        add_chain(&vq, 0, &[(DATA, 4096, true)]);
        add_chain(&vq, 1, &[(DATA2, 4096, true)]);
        rng.queue_notify(0);
        assert_eq!(used_count(&vq), 1);
        let fd = rng.retry_fd().unwrap();

        // Act: wait for the timer as the event loop would, then retry.
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `poll` is one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut poll, 1, 2000) };
        rng.retry_now();

        // Assert
        assert_eq!(ready, 1, "the retry timer never fired");
        assert_eq!(used_count(&vq), 2);
        assert_eq!(used(&vq, 1), (1, 4096));
        assert_eq!(rng.throttled_until(), None);
        assert_eq!(interrupts.count(), 2);
    }

    #[test]
    fn test_rng_reset_keeps_rate_limit_spent() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let limit = RateLimit {
            bytes_per_second: 1,
            burst: 64,
        };
        let (mut rng, served) = counting_rng(limit);
        activate(&mut rng, &mem, &vq);
        add_chain(&vq, 0, &[(DATA, 64, true)]);
        let t0 = Instant::now();
        rng.notify_at(t0);

        // Act
        rng.reset();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        activate(&mut rng, &mem, &vq);
        add_chain(&vq, 0, &[(DATA, 64, true)]);
        rng.notify_at(t0);

        // Assert
        assert_eq!(used_count(&vq), 0);
        assert_eq!(served.load(Ordering::SeqCst), 64);
        assert_eq!(rng.throttled_until(), Some(t0 + Duration::from_secs(64)));
    }

    #[test]
    fn test_rng_bad_avail_index_sets_needs_reset() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut rng, served) = counting_rng(RateLimit::default());
        let interrupts = activate(&mut rng, &mem, &vq);
        vq.avail().idx().store(1000);

        // Act
        rng.queue_notify(0);
        rng.queue_notify(0);

        // Assert
        assert!(rng.needs_reset());
        assert!(VirtioDevice::needs_reset(&rng));
        assert_eq!(used_count(&vq), 0);
        assert_eq!(interrupts.count(), 0);
        assert_eq!(served.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn test_rng_serve_queue_bad_head_index_fails() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut rng, _served) = counting_rng(RateLimit::default());
        let mut queue = vq.create_queue::<Queue>().unwrap();
        vq.avail().ring().ref_at(0).unwrap().store(200);
        vq.avail().idx().store(1);

        // Act
        let result = rng.serve_queue(&mem, &mut queue);

        // Assert
        assert!(matches!(result, Err(RngError::Guest(GuestFault::Queue(_)))));
        assert_eq!(used_count(&vq), 0);
    }

    #[test]
    fn test_rng_serve_queue_serves_unactivated_queue() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut rng, served) = counting_rng(RateLimit::default());
        let mut queue = vq.create_queue::<Queue>().unwrap();
        add_chain(&vq, 0, &[(DATA, 16, true)]);

        // Act
        let result = rng.serve_queue(&mem, &mut queue);

        // Assert
        assert!(result.is_ok_and(|used| used));
        assert_eq!(used(&vq, 0), (0, 16));
        assert_eq!(served.load(Ordering::SeqCst), 16);
    }

    #[test]
    fn test_rng_reset_drops_activation_and_clears_needs_reset() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut rng, served) = counting_rng(RateLimit::default());
        activate(&mut rng, &mem, &vq);
        vq.avail().idx().store(1000);
        rng.queue_notify(0);

        // Act
        rng.reset();
        let old = MockSplitQueue::new(&mem, QSIZE);
        add_chain(&old, 0, &[(DATA, 16, true)]);
        rng.queue_notify(0);
        let inactive = served.load(Ordering::SeqCst);
        let vq = MockSplitQueue::new(&mem, QSIZE);
        activate(&mut rng, &mem, &vq);
        add_chain(&vq, 0, &[(DATA, 16, true)]);
        rng.queue_notify(0);

        // Assert
        assert_eq!(inactive, 0);
        assert!(!rng.needs_reset());
        assert_eq!(used(&vq, 0), (0, 16));
    }

    #[test]
    fn test_rng_broken_source_completes_with_zero() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let mut rng = Rng::new(Box::new(Broken), RateLimit::default()).unwrap();
        activate(&mut rng, &mem, &vq);
        add_chain(&vq, 0, &[(DATA, 16, true)]);

        // Act
        rng.queue_notify(0);

        // Assert
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(guest_bytes(&mem, DATA, 16), [UNTOUCHED; 16]);
        assert!(!rng.needs_reset());
    }

    #[test]
    fn test_rng_notify_other_queue_is_ignored() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut rng, served) = counting_rng(RateLimit::default());
        activate(&mut rng, &mem, &vq);
        add_chain(&vq, 0, &[(DATA, 16, true)]);

        // Act
        rng.queue_notify(1);

        // Assert
        assert_eq!(used_count(&vq), 0);
        assert_eq!(served.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn test_rng_activate_with_two_queues_fails() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut rng, _served) = counting_rng(RateLimit::default());
        let queues = vec![
            vq.create_queue::<Queue>().unwrap(),
            vq.create_queue::<Queue>().unwrap(),
        ];

        // Act
        let result = rng.activate(ActivationContext {
            mem: mem.clone(),
            queues,
            interrupt: Arc::new(Interrupts::default()),
        });

        // Assert
        assert!(matches!(
            result,
            Err(ActivateError::QueueCount {
                expected: 1,
                got: 2
            })
        ));
    }

    #[test]
    fn test_rng_identity_and_config_are_fixed() {
        // Arrange
        let (mut rng, _served) = counting_rng(RateLimit::default());
        let mut config = [0xffu8; 8];

        // Act
        rng.write_config(0, &[1, 2, 3, 4]);
        rng.read_config(0, &mut config);
        rng.ack_features(u64::MAX);

        // Assert
        assert_eq!(config, [0; 8]);
        assert_eq!(rng.device_type(), 4);
        assert_eq!(rng.queue_max_sizes(), &[QUEUE_SIZE]);
        assert_eq!(rng.features(), VIRTIO_F_VERSION_1);
        assert_eq!(rng.acked_features(), VIRTIO_F_VERSION_1);
    }

    #[test]
    fn test_rng_new_with_zero_rate_or_burst_fails() {
        // Arrange
        let zero_rate = RateLimit {
            bytes_per_second: 0,
            burst: 1,
        };
        let zero_burst = RateLimit {
            bytes_per_second: 1,
            burst: 0,
        };

        // Act
        let rate = Rng::new(Box::new(HostRandom), zero_rate);
        let burst = Rng::new(Box::new(HostRandom), zero_burst);

        // Assert
        assert!(matches!(rate, Err(RngError::InvalidRateLimit { .. })));
        assert!(matches!(burst, Err(RngError::InvalidRateLimit { .. })));
    }

    #[test]
    fn test_token_bucket_refill_caps_at_burst_and_ignores_earlier_time() {
        // Arrange
        let t0 = Instant::now();
        let limit = RateLimit {
            bytes_per_second: 1000,
            burst: 100,
        };
        let mut bucket = TokenBucket::new(limit, t0);

        // Act
        let first = bucket.take(100, t0);
        let empty = bucket.take(1, t0);
        let backwards = bucket.take(1, t0.checked_sub(Duration::from_secs(1)).unwrap_or(t0));
        let partial = bucket.take(50, t0 + Duration::from_millis(50));
        let none_left = bucket.take(1, t0 + Duration::from_millis(50));
        let capped = bucket.take(101, t0 + Duration::from_secs(3600));
        let full = bucket.take(100, t0 + Duration::from_secs(3600));

        // Assert
        assert!(first);
        assert!(!empty);
        assert!(!backwards);
        assert!(partial);
        assert!(!none_left);
        assert!(!capped);
        assert!(full);
    }

    #[test]
    fn test_token_bucket_fractional_refill_loses_nothing() {
        // Arrange
        let t0 = Instant::now();
        let limit = RateLimit {
            bytes_per_second: 3,
            burst: 3,
        };
        let mut bucket = TokenBucket::new(limit, t0);
        bucket.take(3, t0);

        // Act: ten refills 100 ms apart earn 3 bytes over the second.
        let mut taken = 0;
        for i in 1..=10 {
            if bucket.take(1, t0 + Duration::from_millis(100 * i)) {
                taken += 1;
            }
        }

        // Assert
        assert_eq!(taken, 3);
        assert_eq!(
            bucket.ready_at(1),
            t0 + Duration::from_secs(1) + Duration::from_nanos(333_333_334)
        );
    }

    #[test]
    fn test_host_random_fill_returns_varied_bytes() {
        // Arrange
        let mut source = HostRandom;
        let mut buf = vec![0u8; 4096];

        // Act
        let result = source.fill(&mut buf);

        // Assert
        assert!(result.is_ok());
        assert!(buf.iter().any(|&b| b != buf[0]));
        let distinct: std::collections::HashSet<u8> = buf.iter().copied().collect();
        assert!(distinct.len() > 128);
    }
}
