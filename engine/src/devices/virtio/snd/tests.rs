// SPDX-License-Identifier: Apache-2.0
//! Unit tests of the virtio sound device on virtio-queue's mock queues:
//! the info queries, the PCM state machine, paced playback and capture,
//! and hostile requests (bad stream ids, wrong sizes, unsupported formats,
//! broken chains), which must get an error status and never a panic.

use std::sync::Mutex;

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::mock::MockSplitQueue;

use super::*;
use crate::audio::{AudioError, NullSource, PcmFormat, ToneSource};
use crate::devices::virtio::VirtioDevice;
use crate::devices::virtio::test_queue::chain;

const MEM_SIZE: u64 = 0x40_0000;
const QSIZE: u16 = 64;
const REQ: u64 = 0x10_0000;
const RESP: u64 = 0x11_0000;
const DATA: u64 = 0x20_0000;

type Mock<'a> = MockSplitQueue<'a, GuestMemoryMmap>;

/// A sink that keeps what it was given.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<(Vec<f32>, Vec<PcmFormat>)>>);

impl AudioSink for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn start(&mut self, format: PcmFormat) -> Result<(), AudioError> {
        self.0.lock().unwrap().1.push(format);
        Ok(())
    }
    fn write(&mut self, samples: &[f32]) {
        self.0.lock().unwrap().0.extend_from_slice(samples);
    }
    fn stop(&mut self) {}
}

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

struct Rig<'a> {
    snd: Snd,
    mem: &'a GuestMemoryMmap,
    queues: Vec<(Mock<'a>, Queue)>,
    next_desc: Vec<u16>,
    recorder: Recorder,
    t0: Instant,
}

impl<'a> Rig<'a> {
    fn new(mem: &'a GuestMemoryMmap, capture: bool) -> Self {
        let recorder = Recorder::default();
        let source: Box<dyn AudioSource> = if capture {
            Box::new(ToneSource::new(1000.0))
        } else {
            Box::new(NullSource)
        };
        let snd = Snd::new(
            SndConfig { capture },
            Box::new(recorder.clone()),
            source,
            SoundControl::new(capture),
        )
        .unwrap();
        let queues = (0..4u64)
            .map(|i| {
                let vq = MockSplitQueue::create(mem, GuestAddress(i * 0x1_0000), QSIZE);
                let q = vq.create_queue::<Queue>().unwrap();
                (vq, q)
            })
            .collect();
        Self {
            snd,
            mem,
            queues,
            next_desc: vec![0; 4],
            recorder,
            t0: Instant::now(),
        }
    }

    /// Adds a chain of (address, length, device-writable) parts to queue
    /// `q` and returns its head index.
    fn add(&mut self, q: u16, parts: &[(u64, u32, bool)]) -> u16 {
        let start = self.next_desc[q as usize];
        let descs = chain(start, parts);
        self.queues[q as usize]
            .0
            .add_desc_chains(&descs, start)
            .unwrap();
        self.next_desc[q as usize] = start + parts.len() as u16;
        start
    }

    fn serve(&mut self, q: u16, after: Duration) -> bool {
        let (_, queue) = &mut self.queues[q as usize];
        self.snd
            .serve_queue(q, self.mem, queue, self.t0 + after)
            .unwrap()
    }

    fn used(&self, q: u16) -> Vec<(u32, u32)> {
        let vq = &self.queues[q as usize].0;
        let n = vq.used().idx().load();
        (0..n as usize)
            .map(|i| {
                let e = vq.used().ring().ref_at(i).unwrap().load();
                (e.id(), e.len())
            })
            .collect()
    }

    /// Sends a control request; returns the response bytes.
    fn control(&mut self, request: &[u8], response_len: u32) -> Vec<u8> {
        self.mem.write_slice(request, GuestAddress(REQ)).unwrap();
        self.mem
            .write_slice(&vec![0xee; response_len as usize], GuestAddress(RESP))
            .unwrap();
        self.add(
            CONTROLQ,
            &[
                (REQ, request.len() as u32, false),
                (RESP, response_len, true),
            ],
        );
        self.serve(CONTROLQ, Duration::ZERO);
        let (_, len) = *self.used(CONTROLQ).last().unwrap();
        let mut out = vec![0u8; len as usize];
        self.mem.read_slice(&mut out, GuestAddress(RESP)).unwrap();
        out
    }

    fn status(&mut self, request: &[u8]) -> u32 {
        le32(&self.control(request, 4), 0).unwrap()
    }

    fn pcm(&mut self, code: u32, stream: u32) -> u32 {
        let mut r = code.to_le_bytes().to_vec();
        r.extend_from_slice(&stream.to_le_bytes());
        self.status(&r)
    }

    fn set_params(
        &mut self,
        stream: u32,
        buffer: u32,
        period: u32,
        ch: u8,
        fmt: u8,
        rate: u8,
    ) -> u32 {
        let mut r = R_PCM_SET_PARAMS.to_le_bytes().to_vec();
        for v in [stream, buffer, period, 0] {
            r.extend_from_slice(&v.to_le_bytes());
        }
        r.extend_from_slice(&[ch, fmt, rate, 0]);
        self.status(&r)
    }

    /// Queues a tx message of `bytes` audio bytes (S16 samples of value
    /// `fill`) at slot `slot`; returns its head.
    fn tx(&mut self, stream: u32, bytes: u32, slot: u64, fill: i16) -> u16 {
        let base = DATA + slot * 0x1_0000;
        self.mem
            .write_slice(&stream.to_le_bytes(), GuestAddress(base))
            .unwrap();
        let data: Vec<u8> = (0..bytes / 2).flat_map(|_| fill.to_le_bytes()).collect();
        self.mem.write_slice(&data, GuestAddress(base + 4)).unwrap();
        self.add(
            TXQ,
            &[
                (base, 4, false),
                (base + 4, bytes, false),
                (base + 0x8000, 8, true),
            ],
        )
    }

    fn tx_status(&self, slot: u64) -> u32 {
        let mut b = [0u8; 4];
        self.mem
            .read_slice(&mut b, GuestAddress(DATA + slot * 0x1_0000 + 0x8000))
            .unwrap();
        u32::from_le_bytes(b)
    }
}

fn query(code: u32, start: u32, count: u32, size: u32) -> Vec<u8> {
    [code, start, count, size]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

const PERIOD: u32 = 4800; // 25 ms of 48 kHz stereo S16
const FMT_S16: u8 = 5;
const RATE_48K: u8 = 7;

#[test]
fn test_config_counts_jacks_streams_and_chmaps() {
    let mem = mem();
    let rig = Rig::new(&mem, true);
    let mut cfg = [0u8; 12];
    rig.snd.read_config(0, &mut cfg);
    assert_eq!(cfg, [2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0]);
    let rig = Rig::new(&mem, false);
    rig.snd.read_config(4, &mut cfg[..4]);
    assert_eq!(le32(&cfg, 0), Some(1));
}

#[test]
fn test_info_queries_answer_each_item() {
    let mem = mem();
    let mut rig = Rig::new(&mem, true);
    let pcm = rig.control(&query(R_PCM_INFO, 0, 2, 32), 4 + 64);
    assert_eq!(le32(&pcm, 0), Some(S_OK));
    assert_eq!(pcm.get(4 + 24..4 + 27), Some(&[D_OUTPUT, 1, 2][..]));
    assert_eq!(pcm.get(36 + 24..36 + 27), Some(&[D_INPUT, 1, 2][..]));
    let jack = rig.control(&query(R_JACK_INFO, 1, 1, 24), 4 + 24);
    assert_eq!(le32(&jack, 0), Some(S_OK));
    assert_eq!(jack.get(4 + 16), Some(&1), "connected");
    let chmap = rig.control(&query(R_CHMAP_INFO, 0, 1, 24), 4 + 24);
    assert_eq!(
        chmap.get(4 + 4..4 + 8),
        Some(&[D_OUTPUT, 2, CHMAP_FL, CHMAP_FR][..])
    );
    // A larger item size is zero-padded.
    let padded = rig.control(&query(R_PCM_INFO, 0, 1, 40), 4 + 40);
    assert_eq!(padded.len(), 44);
}

#[test]
fn test_hostile_control_requests_get_error_status() {
    let mem = mem();
    let mut rig = Rig::new(&mem, false);
    // Items past the end, an overflowing range, a too-small item size, a
    // huge response, a short query, an unknown code, no header at all.
    for request in [
        query(R_PCM_INFO, 1, 1, 32),
        query(R_PCM_INFO, u32::MAX, 2, 32),
        query(R_JACK_INFO, 0, 1, 8),
        query(R_CHMAP_INFO, 0, 1, u32::MAX),
        query(R_PCM_INFO, 0, 1, 32)[..12].to_vec(),
        vec![2, 0, 0, 0],
        vec![1, 2],
    ] {
        let status = rig.status(&request);
        assert!(
            status == S_BAD_MSG || status == S_NOT_SUPP,
            "{request:?}: {status:#x}"
        );
    }
    // A response that does not fit the driver's buffer.
    let short = rig.control(&query(R_PCM_INFO, 0, 1, 32), 8);
    assert_eq!(le32(&short, 0), Some(S_BAD_MSG));
    // No writable buffer at all: completed with nothing written.
    mem.write_slice(&query(R_PCM_INFO, 0, 1, 32), GuestAddress(REQ))
        .unwrap();
    rig.add(CONTROLQ, &[(REQ, 16, false)]);
    rig.serve(CONTROLQ, Duration::ZERO);
    assert_eq!(rig.used(CONTROLQ).last().unwrap().1, 0);
    // A descriptor outside guest memory, and readable after writable.
    rig.add(CONTROLQ, &[(MEM_SIZE - 2, 16, false), (RESP, 4, true)]);
    rig.add(CONTROLQ, &[(RESP, 4, true), (REQ, 16, false)]);
    rig.serve(CONTROLQ, Duration::ZERO);
    let used = rig.used(CONTROLQ);
    assert_eq!(used.len(), 11);
    assert!(used[9..].iter().all(|&(_, len)| len == 0));
}

#[test]
fn test_hostile_pcm_requests_get_error_status() {
    let mem = mem();
    let mut rig = Rig::new(&mem, false);
    // Bad stream ids.
    assert_eq!(rig.pcm(R_PCM_PREPARE, 1), S_BAD_MSG);
    assert_eq!(rig.pcm(R_PCM_START, u32::MAX), S_BAD_MSG);
    assert_eq!(
        rig.set_params(7, 19200, PERIOD, 2, FMT_S16, RATE_48K),
        S_BAD_MSG
    );
    // Unsupported formats, rates and channel counts.
    assert_eq!(rig.set_params(0, 19200, PERIOD, 2, 3, RATE_48K), S_NOT_SUPP);
    assert_eq!(rig.set_params(0, 19200, PERIOD, 2, FMT_S16, 13), S_NOT_SUPP);
    assert_eq!(
        rig.set_params(0, 19200, PERIOD, 6, FMT_S16, RATE_48K),
        S_NOT_SUPP
    );
    // Sizes that do not fit together.
    assert_eq!(
        rig.set_params(0, 19200, 4801, 2, FMT_S16, RATE_48K),
        S_BAD_MSG
    );
    assert_eq!(rig.set_params(0, 0, 0, 2, FMT_S16, RATE_48K), S_BAD_MSG);
    // Out of order: START before PREPARE, PREPARE before SET_PARAMS.
    assert_eq!(rig.pcm(R_PCM_PREPARE, 0), S_BAD_MSG);
    assert_eq!(rig.set_params(0, 19200, PERIOD, 2, FMT_S16, RATE_48K), S_OK);
    assert_eq!(rig.pcm(R_PCM_START, 0), S_BAD_MSG);
    assert_eq!(rig.pcm(R_PCM_STOP, 0), S_BAD_MSG);
    assert_eq!(rig.pcm(R_PCM_PREPARE, 0), S_OK);
    assert_eq!(rig.pcm(R_PCM_START, 0), S_OK);
    assert_eq!(rig.pcm(R_PCM_RELEASE, 0), S_BAD_MSG);
    assert_eq!(rig.pcm(R_PCM_STOP, 0), S_OK);
    assert_eq!(rig.pcm(R_PCM_RELEASE, 0), S_OK);
}

#[test]
fn test_hostile_tx_messages_get_error_status() {
    let mem = mem();
    let mut rig = Rig::new(&mem, false);
    // Before any stream is prepared: I/O error.
    rig.tx(0, PERIOD, 0, 1);
    rig.serve(TXQ, Duration::ZERO);
    assert_eq!(rig.tx_status(0), S_IO_ERR);
    assert_eq!(rig.set_params(0, 19200, PERIOD, 2, FMT_S16, RATE_48K), S_OK);
    assert_eq!(rig.pcm(R_PCM_PREPARE, 0), S_OK);
    // A bad stream id; a size not matching the period (short, long).
    rig.tx(5, PERIOD, 1, 1);
    rig.tx(0, PERIOD - 4, 2, 1);
    rig.tx(0, PERIOD + 4, 3, 1);
    rig.serve(TXQ, Duration::ZERO);
    for slot in 1..=3 {
        assert_eq!(rig.tx_status(slot), S_BAD_MSG, "slot {slot}");
    }
    // No room for the status; a header-only message.
    rig.add(TXQ, &[(DATA, 4, false), (DATA + 4, PERIOD, false)]);
    rig.add(TXQ, &[(DATA, 2, false), (DATA + 0x8000, 8, true)]);
    rig.serve(TXQ, Duration::ZERO);
    let used = rig.used(TXQ);
    assert_eq!(used.len(), 6);
    assert_eq!(used[4].1, 0);
    assert_eq!(used[5].1, 8);
    // More messages than the buffer's 4 periods.
    for slot in 6..11 {
        rig.tx(0, PERIOD, slot, 1);
    }
    rig.serve(TXQ, Duration::ZERO);
    assert_eq!(rig.used(TXQ).len(), 7, "only the fifth is refused");
    assert_eq!(rig.tx_status(10), S_BAD_MSG);
    assert!(
        rig.recorder.0.lock().unwrap().0.is_empty(),
        "nothing played"
    );
}

#[test]
fn test_playback_is_paced_at_the_stream_rate() {
    let mem = mem();
    let mut rig = Rig::new(&mem, false);
    rig.snd.control().set_volume(0.5);
    assert_eq!(rig.set_params(0, 19200, PERIOD, 2, FMT_S16, RATE_48K), S_OK);
    assert_eq!(rig.pcm(R_PCM_PREPARE, 0), S_OK);
    // Prefilled before START: queued, not played.
    let a = rig.tx(0, PERIOD, 0, 16384);
    let b = rig.tx(0, PERIOD, 1, 16384);
    rig.serve(TXQ, Duration::ZERO);
    assert!(rig.used(TXQ).is_empty());
    assert!(rig.snd.next_deadline(rig.t0).is_none());
    assert_eq!(rig.pcm(R_PCM_START, 0), S_OK);
    rig.serve(TXQ, Duration::ZERO);
    assert!(rig.used(TXQ).is_empty(), "the first period is playing");
    // The sink gets the period in 10 ms slices as it plays (480 frames,
    // 480 and 240), each when its time comes.
    assert_eq!(rig.recorder.0.lock().unwrap().0.len(), 960);
    assert_eq!(
        rig.snd.next_deadline(rig.t0 + Duration::from_millis(1)),
        Some(rig.t0 + Duration::from_millis(10))
    );
    rig.serve(TXQ, Duration::from_millis(11));
    assert_eq!(rig.recorder.0.lock().unwrap().0.len(), 1920);
    assert_eq!(
        rig.snd.next_deadline(rig.t0 + Duration::from_millis(11)),
        Some(rig.t0 + Duration::from_millis(20))
    );
    rig.serve(TXQ, Duration::from_millis(24));
    assert!(rig.used(TXQ).is_empty());
    assert_eq!(rig.recorder.0.lock().unwrap().0.len(), 2400);
    // Due at 25 ms and 50 ms.
    assert_eq!(
        rig.snd.next_deadline(rig.t0 + Duration::from_millis(24)),
        Some(rig.t0 + Duration::from_millis(25))
    );
    rig.serve(TXQ, Duration::from_millis(26));
    assert_eq!(rig.used(TXQ), vec![(u32::from(a), 8)]);
    assert_eq!(rig.tx_status(0), S_OK);
    rig.serve(TXQ, Duration::from_millis(49));
    assert_eq!(rig.used(TXQ).len(), 1);
    rig.serve(TXQ, Duration::from_millis(51));
    assert_eq!(rig.used(TXQ).last(), Some(&(u32::from(b), 8)));
    let (samples, formats) = rig.recorder.0.lock().unwrap().clone();
    assert_eq!(
        formats,
        vec![PcmFormat {
            rate: 48000,
            channels: 2
        }]
    );
    assert_eq!(samples.len(), 4800);
    // Half of 0.5 at volume 0.5.
    assert!(samples.iter().all(|&s| (s - 0.25).abs() < 1e-3));
    let stats = rig.snd.control().stats().snapshot();
    assert_eq!(stats.frames_played, 2400);
    assert_eq!(stats.underruns, 0);
    // A late message after the clock ran out counts an underrun.
    rig.tx(0, PERIOD, 2, 0);
    rig.serve(TXQ, Duration::from_millis(200));
    assert_eq!(rig.snd.control().stats().snapshot().underruns, 1);
}

#[test]
fn test_release_completes_pending_messages() {
    let mem = mem();
    let mut rig = Rig::new(&mem, false);
    assert_eq!(rig.set_params(0, 19200, PERIOD, 2, FMT_S16, RATE_48K), S_OK);
    assert_eq!(rig.pcm(R_PCM_PREPARE, 0), S_OK);
    rig.tx(0, PERIOD, 0, 1);
    rig.tx(0, PERIOD, 1, 1);
    rig.serve(TXQ, Duration::ZERO);
    assert_eq!(rig.pcm(R_PCM_RELEASE, 0), S_OK);
    assert_eq!(rig.snd.next_deadline(rig.t0), Some(rig.t0));
    rig.serve(TXQ, Duration::ZERO);
    assert_eq!(rig.used(TXQ).len(), 2);
    assert_eq!(rig.tx_status(1), S_OK);
}

#[test]
fn test_capture_fills_each_period_from_the_source_when_due() {
    let mem = mem();
    let mut rig = Rig::new(&mem, true);
    // Stream 1 is the capture stream: 48 kHz mono S16, 10 ms periods.
    let period = 960u32;
    assert_eq!(
        rig.set_params(1, period * 4, period, 1, FMT_S16, RATE_48K),
        S_OK
    );
    assert_eq!(rig.pcm(R_PCM_PREPARE, 1), S_OK);
    assert_eq!(rig.pcm(R_PCM_START, 1), S_OK);
    let base = DATA;
    mem.write_slice(&1u32.to_le_bytes(), GuestAddress(base))
        .unwrap();
    // Data split over two descriptors, the status straddling a third.
    rig.add(
        RXQ,
        &[
            (base, 4, false),
            (base + 0x100, 500, true),
            (base + 0x1000, period - 500 + 4, true),
            (base + 0x2000, 4, true),
        ],
    );
    // Playback messages on the capture queue are refused.
    rig.serve(RXQ, Duration::ZERO);
    assert!(rig.used(RXQ).is_empty());
    rig.serve(RXQ, Duration::from_millis(11));
    assert_eq!(rig.used(RXQ), vec![(0, period + 8)]);
    let mut data = vec![0u8; period as usize];
    mem.read_slice(&mut data[..500], GuestAddress(base + 0x100))
        .unwrap();
    mem.read_slice(&mut data[500..], GuestAddress(base + 0x1000))
        .unwrap();
    let samples: Vec<i16> = data
        .chunks(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    // 1 kHz at 48 kHz: 10 rising crossings in 10 ms (give or take one).
    let rising = samples.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
    assert!((9..=11).contains(&rising), "{rising}");
    assert!(samples.iter().any(|&s| s > 10000));
    let mut status = [0u8; 8];
    mem.read_slice(
        &mut status[..4],
        GuestAddress(base + 0x1000 + u64::from(period) - 500),
    )
    .unwrap();
    mem.read_slice(&mut status[4..], GuestAddress(base + 0x2000))
        .unwrap();
    assert_eq!(le32(&status, 0), Some(S_OK));
    // A capture message on the playback queue is refused.
    rig.tx(1, period, 3, 0);
    rig.serve(TXQ, Duration::ZERO);
    assert_eq!(rig.tx_status(3), S_BAD_MSG);
}

#[test]
fn test_capture_disabled_records_silence() {
    let mem = mem();
    let mut rig = Rig::new(&mem, true);
    rig.snd.control().set_capture_enabled(false);
    let period = 960u32;
    assert_eq!(
        rig.set_params(1, period * 2, period, 1, FMT_S16, RATE_48K),
        S_OK
    );
    assert_eq!(rig.pcm(R_PCM_PREPARE, 1), S_OK);
    assert_eq!(rig.pcm(R_PCM_START, 1), S_OK);
    mem.write_slice(&1u32.to_le_bytes(), GuestAddress(DATA))
        .unwrap();
    mem.write_slice(&vec![0x55; period as usize], GuestAddress(DATA + 0x100))
        .unwrap();
    rig.add(RXQ, &[(DATA, 4, false), (DATA + 0x100, period + 8, true)]);
    rig.serve(RXQ, Duration::from_millis(11));
    rig.serve(RXQ, Duration::from_millis(22));
    let mut data = vec![0u8; period as usize];
    mem.read_slice(&mut data, GuestAddress(DATA + 0x100))
        .unwrap();
    assert!(data.iter().all(|&b| b == 0));
}

#[test]
fn test_reset_drops_streams_and_messages() {
    let mem = mem();
    let mut rig = Rig::new(&mem, false);
    assert_eq!(rig.set_params(0, 19200, PERIOD, 2, FMT_S16, RATE_48K), S_OK);
    assert_eq!(rig.pcm(R_PCM_PREPARE, 0), S_OK);
    rig.tx(0, PERIOD, 0, 1);
    rig.serve(TXQ, Duration::ZERO);
    rig.snd.reset();
    assert!(rig.snd.next_deadline(rig.t0).is_none());
    assert_eq!(rig.pcm(R_PCM_PREPARE, 0), S_BAD_MSG, "parameters are gone");
}

/// The in-VMM path: a driver sets up the device through the virtio-pci
/// transport, starts a 48 kHz stereo stream and queues one 25 ms period.
/// The notify (the vCPU thread) hands the audio to the sink at once, but
/// the period completes only when it has played, on the event loop's
/// thread (its timerfd), which raises the INTx line.
#[test]
fn test_virtio_pci_tx_period_completes_on_event_loop_after_its_period() {
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::control::VmControl;
    use crate::devices::irq::LevelIrq;
    use crate::devices::pci::PciDevice;
    use crate::devices::virtio::pci::VirtioPciDevice;
    use crate::devices::virtio::test_queue::{driver_ok, set_up_queues};
    use crate::event_loop::EventLoop;

    /// The INTx line, and the threads that raised it.
    #[derive(Default)]
    struct Line {
        high: AtomicBool,
        raised_by: Mutex<Vec<String>>,
    }
    impl LevelIrq for Line {
        fn set_level(&self, _irq: u32, high: bool) {
            if high {
                let name = std::thread::current().name().unwrap_or("?").to_string();
                self.raised_by.lock().unwrap().push(name);
            }
            self.high.store(high, Ordering::SeqCst);
        }
    }

    // Arrange: the device on a running event loop, behind the transport.
    let mem = mem();
    let recorder = Recorder::default();
    let snd = SharedSnd::new(
        Snd::new(
            SndConfig::default(),
            Box::new(recorder.clone()),
            Box::new(NullSource),
            SoundControl::new(false),
        )
        .unwrap(),
    );
    let control = snd.control();
    let mut events = EventLoop::new().unwrap();
    events.add(Box::new(snd.handler()));
    let running = events.start(Arc::new(VmControl::new())).unwrap();
    let line = Arc::new(Line::default());
    let mut dev = VirtioPciDevice::new(Box::new(snd.clone()), mem.clone(), line.clone());
    let queues: Vec<Mock<'_>> = (0..4u64)
        .map(|i| MockSplitQueue::create(&mem, GuestAddress(i * 0x1_0000), 16))
        .collect();
    let w32 = |dev: &mut VirtioPciDevice, offset: u64, value: u32| {
        dev.bar_write(0, offset, &value.to_le_bytes());
    };
    set_up_queues(&mut dev, &queues.iter().collect::<Vec<_>>());
    driver_ok(&mut dev);
    let notify = |dev: &mut VirtioPciDevice, queue: u16| {
        w32(dev, 0x3000 + 4 * u64::from(queue), u32::from(queue));
    };

    // The driver's control requests: SET_PARAMS (two 25 ms periods of
    // 48 kHz stereo S16), PREPARE, START; each answered on the notify.
    let mut set_params = R_PCM_SET_PARAMS.to_le_bytes().to_vec();
    for v in [0, 2 * PERIOD, PERIOD, 0] {
        set_params.extend_from_slice(&v.to_le_bytes());
    }
    set_params.extend_from_slice(&[2, FMT_S16, RATE_48K, 0]);
    let pcm = |code: u32| [code.to_le_bytes(), 0u32.to_le_bytes()].concat();
    let control_queue = &queues[usize::from(CONTROLQ)];
    for (i, request) in [set_params, pcm(R_PCM_PREPARE), pcm(R_PCM_START)]
        .iter()
        .enumerate()
    {
        let (req, resp) = (REQ + i as u64 * 0x100, RESP + i as u64 * 0x100);
        mem.write_slice(request, GuestAddress(req)).unwrap();
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(
                req,
                request.len() as u32,
                VRING_DESC_F_NEXT as u16,
                2 * i as u16 + 1,
            )),
            RawDescriptor::from(SplitDescriptor::new(resp, 4, VRING_DESC_F_WRITE as u16, 0)),
        ];
        control_queue.add_desc_chains(&descs, 2 * i as u16).unwrap();
        notify(&mut dev, CONTROLQ);
        let mut answer = [0u8; 4];
        mem.read_slice(&mut answer, GuestAddress(resp)).unwrap();
        assert_eq!(u32::from_le_bytes(answer), S_OK, "control request {i}");
    }
    assert_eq!(control_queue.used().idx().load(), 3);
    // Reading the ISR lowers the line the control answers raised.
    let mut isr = [0u8];
    dev.bar_read(0, 0x1000, &mut isr);
    assert!(!line.high.load(Ordering::SeqCst));
    line.raised_by.lock().unwrap().clear();

    // Act: one period of playback (header, audio, status).
    let tx = &queues[usize::from(TXQ)];
    mem.write_slice(&0u32.to_le_bytes(), GuestAddress(DATA))
        .unwrap();
    let audio: Vec<u8> = (0..PERIOD / 2)
        .flat_map(|_| 8192i16.to_le_bytes())
        .collect();
    mem.write_slice(&audio, GuestAddress(DATA + 4)).unwrap();
    let descs = [
        RawDescriptor::from(SplitDescriptor::new(DATA, 4, VRING_DESC_F_NEXT as u16, 1)),
        RawDescriptor::from(SplitDescriptor::new(
            DATA + 4,
            PERIOD,
            VRING_DESC_F_NEXT as u16,
            2,
        )),
        RawDescriptor::from(SplitDescriptor::new(
            DATA + 0x8000,
            8,
            VRING_DESC_F_WRITE as u16,
            0,
        )),
    ];
    tx.add_desc_chains(&descs, 0).unwrap();
    let queued = Instant::now();
    notify(&mut dev, TXQ);

    // Assert: the first 10 ms slice went to the sink on the notify (the
    // rest follows from the event loop as it plays), not completed.
    let first = recorder.0.lock().unwrap().0.len();
    assert_eq!(first, 960);
    assert_eq!(recorder.0.lock().unwrap().1.len(), 1, "the sink started");
    assert_eq!(tx.used().idx().load(), 0, "completed before it played");
    // It completes once its 25 ms have passed, from the event loop.
    let deadline = queued + Duration::from_secs(5);
    while tx.used().idx().load() == 0 {
        assert!(Instant::now() < deadline, "the period never completed");
        std::thread::sleep(Duration::from_millis(1));
    }
    let completed = queued.elapsed();
    assert!(
        completed >= Duration::from_millis(25),
        "completed after {completed:?}, before its 25 ms period"
    );
    assert!(
        completed < Duration::from_secs(1),
        "completed after {completed:?}"
    );
    let mut status_bytes = [0u8; 4];
    mem.read_slice(&mut status_bytes, GuestAddress(DATA + 0x8000))
        .unwrap();
    assert_eq!(u32::from_le_bytes(status_bytes), S_OK);
    assert!(line.high.load(Ordering::SeqCst), "the INTx line is raised");
    assert_eq!(
        line.raised_by.lock().unwrap().as_slice(),
        ["events".to_string()],
        "raised by the event loop's thread only"
    );
    assert_eq!(
        control.stats().snapshot().frames_played,
        u64::from(PERIOD / 4)
    );
    let played = recorder.0.lock().unwrap().0.len();
    assert_eq!(played, (PERIOD / 2) as usize, "the whole period");
    dev.bar_read(0, 0x1000, &mut isr);
    assert_eq!(isr[0] & 1, 1, "ISR has the used-queue bit");
    drop(running);
}

#[test]
fn test_saved_streams_come_back_in_their_states_and_a_started_one_plays() {
    let mem = mem();
    let mut rig = Rig::new(&mem, true);
    assert_eq!(rig.set_params(0, 19200, PERIOD, 2, FMT_S16, RATE_48K), S_OK);
    assert_eq!(rig.pcm(R_PCM_PREPARE, 0), S_OK);
    assert_eq!(rig.pcm(R_PCM_START, 0), S_OK);
    assert_eq!(rig.set_params(1, 9600, PERIOD, 1, FMT_S16, RATE_48K), S_OK);
    let saved = rig.snd.save_own().unwrap();

    let mut restored = Rig::new(&mem, true);
    restored.snd.restore_own(&saved).unwrap();

    assert_eq!(restored.snd.streams[0].state, State::Started);
    assert_eq!(restored.snd.streams[0].params, rig.snd.streams[0].params);
    assert_eq!(restored.snd.streams[1].state, State::ParamsSet);
    assert_eq!(restored.snd.streams[1].params, rig.snd.streams[1].params);
    assert_eq!(
        restored.recorder.0.lock().unwrap().1,
        [PcmFormat {
            rate: 48000,
            channels: 2
        }],
        "the host side of the started stream starts again"
    );
    // The driver goes on as it would have: STOP is allowed, PREPARE of
    // the second stream too.
    assert_eq!(restored.pcm(R_PCM_STOP, 0), S_OK);
    assert_eq!(restored.pcm(R_PCM_PREPARE, 1), S_OK);
}

#[test]
fn test_hostile_saved_streams_are_refused_and_change_nothing() {
    let mem = mem();
    let mut with_capture = Rig::new(&mem, true);
    let two_streams = with_capture.snd.save_own().unwrap();
    let mut rig = Rig::new(&mem, false);
    assert_eq!(rig.set_params(0, 19200, PERIOD, 2, FMT_S16, RATE_48K), S_OK);
    let before = rig.snd.save_own().unwrap();

    // (direction, state, params) as a forged file holds them: started
    // without parameters, an unknown rate, a period that is not a frame.
    #[derive(serde::Serialize)]
    struct Params(u8, u32, u8, u32, u32);
    #[derive(serde::Serialize)]
    struct Saved(u8, u32, Option<Params>);
    let forged = |state: u32, params: Option<Params>| {
        postcard::to_stdvec(&vec![Saved(D_OUTPUT, state, params)]).unwrap()
    };
    let started_bare = forged(3, None);
    let odd_rate = forged(1, Some(Params(FMT_S16, 12345, 2, 19200, PERIOD)));
    let odd_period = forged(1, Some(Params(FMT_S16, 48000, 2, 19200, 3)));
    for bytes in [
        two_streams,
        started_bare,
        odd_rate,
        odd_period,
        vec![0xff; 5],
    ] {
        assert!(rig.snd.restore_own(&bytes).is_err());
    }

    assert_eq!(rig.snd.save_own().unwrap(), before);
}
