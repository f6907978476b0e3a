// SPDX-License-Identifier: Apache-2.0
//! A virtio sound device (virtio spec 1.2, section 5.14): one playback
//! stream and, when capture is enabled for the VM, one capture stream, each
//! with a jack and a stereo channel map, all in HDA function group 0 (so a
//! Linux guest sees one card with one PCM device).
//!
//! Queues: 0 control (jack/PCM/channel-map info and the PCM state
//! machine), 1 event (unused: buffers stay with the device), 2 tx
//! (playback messages), 3 rx (capture messages). Each tx/rx message is one
//! period of audio; a message of any other size, for an unknown stream,
//! the wrong direction or a stream in the wrong state is completed at once
//! with BAD_MSG (or IO_ERR), never a panic.
//!
//! Pacing: messages are consumed and completed at the stream's real-time
//! rate, not as fast as they arrive. Each started stream has a clock (the
//! instant its scheduled audio ends); the message at the front is scheduled
//! at the clock (or now, after an underrun), its audio goes to the
//! [`AudioSink`] as it plays, in slices of at most [`SLICE`] each handed
//! over when its time comes (so the sink never holds more than a slice
//! ahead of the stream's clock, whatever period the guest picked), and it
//! completes when its period has played; capture messages are filled from the [`AudioSource`] when their
//! period has passed. A timerfd ([`Snd::timer_fd`]) fires at the next
//! completion, so the thread serving the queues wakes on time (vhost-user:
//! the back-end's host event; see [`QueueDevice::host_event_fd`]).

mod persist;
pub mod protocol;
pub mod shared;
pub mod stream;

pub use shared::SharedSnd;

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::{error, warn};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::timerfd::TimerFd;

use self::protocol::*;
use self::stream::{State, Stream, StreamError};
use super::device_core::{self, DeviceCore, GuestFault, QueueDevice, Step};
use super::{DeviceInfo, ErrorLog, VIRTIO_F_VERSION_1, device_type, read_config_bytes};
use crate::audio::{AudioSink, AudioSource, AudioStats, SoundControl};
use crate::memory::GuestMemoryMmap;

/// The control queue.
pub const CONTROLQ: u16 = 0;
/// The event queue.
pub const EVENTQ: u16 = 1;
/// The playback queue.
pub const TXQ: u16 = 2;
/// The capture queue.
pub const RXQ: u16 = 3;
/// The largest size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Bytes of a control request the device reads (the largest request,
/// SET_PARAMS, is 24).
const MAX_CONTROL_REQUEST: usize = 64;
/// The largest control response (an info query for many items).
const MAX_CONTROL_RESPONSE: usize = 64 << 10;
/// A stream's clock may fall this far behind before it counts as an
/// underrun (and restarts from now): timer and scheduling latency.
const UNDERRUN_SLACK: Duration = Duration::from_millis(20);
/// The most audio handed to the sink at once: a period plays in slices of
/// this, each when the stream's clock reaches it.
pub const SLICE: Duration = Duration::from_millis(10);
/// The soonest the timer fires (a zero timerfd would disarm).
const MIN_TIMER: Duration = Duration::from_micros(50);

/// What the guest sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SndConfig {
    /// Offer a capture stream (off by default).
    pub capture: bool,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum SndError {
    /// A queue is broken.
    #[error(transparent)]
    Guest(#[from] GuestFault),
    /// A descriptor outside guest memory.
    #[error("Descriptor {addr:#x}+{len} is outside guest memory")]
    OutOfMemory {
        /// Its address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A device-readable descriptor after a device-writable one.
    #[error("A device-readable descriptor follows a device-writable one")]
    Order,
    /// A chain larger than any message.
    #[error("A chain of more than {0} bytes")]
    TooLarge(usize),
    /// No room for the status.
    #[error("No device-writable room for the status")]
    NoStatus,
    /// Guest memory could not be read or written.
    #[error("Guest memory: {0}")]
    Memory(String),
    /// A message the device refused.
    #[error("Stream {stream}: {detail}")]
    Message {
        /// The stream id the message named.
        stream: u32,
        /// Why.
        detail: String,
    },
    /// A stream request the device refused.
    #[error("Stream {stream}: {source}")]
    Stream {
        /// The stream.
        stream: u32,
        /// Why.
        source: StreamError,
    },
}

impl SndError {
    /// True when the guest caused it.
    fn is_guest_error(&self) -> bool {
        !matches!(self, Self::Guest(_))
    }
}

/// A chain split into device-readable and device-writable regions.
#[derive(Debug, Default)]
struct Chain {
    readable: Vec<(GuestAddress, u32)>,
    writable: Vec<(GuestAddress, u32)>,
    read_len: usize,
    write_len: usize,
}

/// The audio of one queued message.
#[derive(Debug)]
enum Payload {
    /// Playback samples, copied out of the guest.
    Tx(Vec<u8>),
    /// Where capture samples go (the status follows).
    Rx,
}

/// One tx/rx message waiting for its period.
#[derive(Debug)]
struct Message {
    head: u16,
    chain: Chain,
    payload: Payload,
    bytes: usize,
    // When it started and ends playing, once scheduled.
    start: Option<Instant>,
    due: Option<Instant>,
    // Bytes of a tx message handed to the sink so far.
    released: usize,
}

/// A stream's pending messages and clock.
#[derive(Debug, Default)]
struct StreamIo {
    pending: VecDeque<Message>,
    clock: Option<Instant>,
    // Complete everything now (RELEASE).
    flush: bool,
}

/// The virtio sound device.
pub struct Snd {
    config: SndConfig,
    streams: Vec<Stream>,
    io: Vec<StreamIo>,
    sink: Box<dyn AudioSink>,
    source: Box<dyn AudioSource>,
    control: Arc<SoundControl>,
    timer: TimerFd,
    errors: ErrorLog,
    core: DeviceCore,
    samples: Vec<f32>,
}

impl Snd {
    /// A device playing into `sink` and recording from `source`, with the
    /// per-VM settings in `control`.
    pub fn new(
        config: SndConfig,
        mut sink: Box<dyn AudioSink>,
        mut source: Box<dyn AudioSource>,
        control: Arc<SoundControl>,
    ) -> std::io::Result<Self> {
        sink.set_stats(control.stats().clone());
        source.set_stats(control.stats().clone());
        let mut streams = vec![Stream::new(D_OUTPUT, 1, 2)];
        if config.capture {
            streams.push(Stream::new(D_INPUT, 1, 2));
        }
        let io = streams.iter().map(|_| StreamIo::default()).collect();
        Ok(Self {
            config,
            streams,
            io,
            sink,
            source,
            control,
            timer: TimerFd::new()?,
            errors: ErrorLog::default(),
            core: DeviceCore::default(),
            samples: Vec::new(),
        })
    }

    /// The per-VM settings and counters.
    pub fn control(&self) -> &Arc<SoundControl> {
        &self.control
    }

    /// The timerfd that becomes readable when a message is due.
    pub fn timer_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }

    /// Consumes a timer wake-up (the next serve re-arms it).
    pub fn clear_timer(&mut self) {
        if let Err(e) = self.timer.clear() {
            warn!("virtio-snd: cannot clear the timer: {e}");
        }
    }

    fn config_bytes(&self) -> [u8; 12] {
        let n = u32::try_from(self.streams.len()).unwrap_or(0);
        let mut out = [0u8; 12];
        for (i, v) in [n, n, n].iter().enumerate() {
            for (d, s) in out.iter_mut().skip(i * 4).zip(v.to_le_bytes()) {
                *d = s;
            }
        }
        out
    }

    /// Serves queue `index` at `now`: control requests are answered, new
    /// tx/rx messages queue, due ones complete. True when any buffer was
    /// used. Fails only when the queue itself is broken.
    pub fn serve_queue(
        &mut self,
        index: u16,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
        now: Instant,
    ) -> Result<bool, SndError> {
        let used = match index {
            CONTROLQ => self.drain(mem, queue, index)?,
            TXQ | RXQ => {
                let taken = self.drain(mem, queue, index)?;
                let done = self.complete_due(mem, queue, index, now)?;
                taken || done
            }
            _ => false,
        };
        self.arm_timer(now);
        Ok(used)
    }

    /// Logs a failed request, rate-limited.
    fn report(&mut self, err: &SndError) {
        self.errors.report("virtio-snd", err, err.is_guest_error());
    }

    fn drain(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
        index: u16,
    ) -> Result<bool, SndError> {
        Ok(device_core::drain(mem, queue, |chain| {
            let head = chain.head_index();
            let used = match split_chain(mem, chain) {
                Ok(chain) => match index {
                    CONTROLQ => Some(self.control_request(mem, &chain)),
                    _ => self.io_message(mem, index, head, chain),
                },
                Err(err) => {
                    self.report(&err);
                    Some(0)
                }
            };
            // A tx/rx message is held until its period has played.
            used.map_or(Step::Held, Step::Used)
        })?)
    }

    /// Answers one control request; returns the bytes written.
    fn control_request(&mut self, mem: &GuestMemoryMmap, chain: &Chain) -> u32 {
        let request = match read_regions(mem, &chain.readable, MAX_CONTROL_REQUEST) {
            Ok(r) => r,
            Err(err) => {
                self.report(&err);
                return 0;
            }
        };
        let response = self.answer(&request);
        let response = if response.len() > chain.write_len {
            // The driver's buffer cannot hold the answer.
            self.report(&SndError::Message {
                stream: 0,
                detail: format!(
                    "a {}-byte response does not fit {} bytes",
                    response.len(),
                    chain.write_len
                ),
            });
            S_BAD_MSG.to_le_bytes().to_vec()
        } else {
            response
        };
        if response.len() > chain.write_len {
            return 0;
        }
        match write_regions(mem, &chain.writable, 0, &response) {
            Ok(()) => u32::try_from(response.len()).unwrap_or(0),
            Err(err) => {
                self.report(&err);
                0
            }
        }
    }

    /// The response to a control request: a status and any payload.
    fn answer(&mut self, request: &[u8]) -> Vec<u8> {
        let Some(code) = le32(request, 0) else {
            self.report(&SndError::Message {
                stream: 0,
                detail: "a control request without a header".into(),
            });
            return S_BAD_MSG.to_le_bytes().to_vec();
        };
        match code {
            R_JACK_INFO | R_PCM_INFO | R_CHMAP_INFO => self.info(code, request),
            R_PCM_SET_PARAMS | R_PCM_PREPARE | R_PCM_RELEASE | R_PCM_START | R_PCM_STOP => {
                self.pcm_request(code, request).to_le_bytes().to_vec()
            }
            _ => S_NOT_SUPP.to_le_bytes().to_vec(),
        }
    }

    /// Answers a *_INFO query.
    fn info(&mut self, code: u32, request: &[u8]) -> Vec<u8> {
        let items: Vec<Vec<u8>> = self
            .streams
            .iter()
            .map(|s| match code {
                R_JACK_INFO => jack_info(0).to_vec(),
                R_PCM_INFO => pcm_info(0, s.direction, s.channels_min, s.channels_max).to_vec(),
                _ => chmap_info(0, s.direction, &[CHMAP_FL, CHMAP_FR]).to_vec(),
            })
            .collect();
        let Some(query) = QueryInfo::parse(request) else {
            return self.bad("an info query too short");
        };
        let item_size = items.first().map_or(0, Vec::len);
        let (Ok(start), Ok(count), Ok(size)) = (
            usize::try_from(query.start_id),
            usize::try_from(query.count),
            usize::try_from(query.size),
        ) else {
            return self.bad("an info query out of range");
        };
        let fits = start
            .checked_add(count)
            .is_some_and(|end| end <= items.len())
            && size >= item_size
            && count
                .checked_mul(size)
                .is_some_and(|total| total <= MAX_CONTROL_RESPONSE);
        if !fits {
            return self.bad(&format!(
                "info query for items {start}+{count} of size {size} ({} items of {item_size})",
                items.len()
            ));
        }
        let mut out = S_OK.to_le_bytes().to_vec();
        for item in items.iter().skip(start).take(count) {
            let at = out.len();
            out.extend_from_slice(item);
            out.resize(at + size, 0);
        }
        out
    }

    fn bad(&mut self, detail: &str) -> Vec<u8> {
        self.report(&SndError::Message {
            stream: 0,
            detail: detail.to_string(),
        });
        S_BAD_MSG.to_le_bytes().to_vec()
    }

    /// Runs a PCM state request; returns its status.
    fn pcm_request(&mut self, code: u32, request: &[u8]) -> u32 {
        let Some(id) = le32(request, 4) else {
            self.report(&SndError::Message {
                stream: 0,
                detail: "a PCM request too short".into(),
            });
            return S_BAD_MSG;
        };
        let index = usize::try_from(id).unwrap_or(usize::MAX);
        let (Some(stream), Some(io)) = (self.streams.get_mut(index), self.io.get_mut(index)) else {
            self.report(&SndError::Message {
                stream: id,
                detail: "no such stream".into(),
            });
            return S_BAD_MSG;
        };
        let result = match code {
            R_PCM_SET_PARAMS => match SetParams::parse(request) {
                Some(p) => stream.set_params(&p),
                None => {
                    self.report(&SndError::Message {
                        stream: id,
                        detail: "a SET_PARAMS request too short".into(),
                    });
                    return S_BAD_MSG;
                }
            },
            R_PCM_PREPARE => stream.prepare(),
            R_PCM_START => stream.start().map(|()| {
                io.clock = None;
            }),
            R_PCM_STOP => stream.stop().map(|()| {
                io.clock = None;
            }),
            _ => stream.release().map(|()| {
                io.flush = true;
            }),
        };
        let is_input = stream.is_input();
        let format = stream.params.map(|p| p.pcm_format());
        match result {
            Ok(()) => {
                let started = match (code, format) {
                    (R_PCM_START, Some(format)) if is_input => self.source.start(format),
                    (R_PCM_START, Some(format)) => self.sink.start(format),
                    (R_PCM_STOP | R_PCM_RELEASE, _) => {
                        if is_input {
                            self.source.stop();
                        } else {
                            self.sink.stop();
                        }
                        Ok(())
                    }
                    _ => Ok(()),
                };
                // START and RELEASE may leave messages to schedule or flush.
                self.wake_now();
                match started {
                    Ok(()) => S_OK,
                    Err(e) => {
                        // The stream runs anyway; its audio is lost.
                        error!("virtio-snd: stream {id}: {e}");
                        S_OK
                    }
                }
            }
            Err(source) => {
                let status = match source {
                    StreamError::Format(_)
                    | StreamError::Rate(_)
                    | StreamError::Channels(_)
                    | StreamError::Features(_) => S_NOT_SUPP,
                    _ => S_BAD_MSG,
                };
                self.report(&SndError::Stream { stream: id, source });
                status
            }
        }
    }

    /// Takes a tx/rx message: queues it, or completes it at once with an
    /// error status. Returns the used length when completed now.
    fn io_message(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: u16,
        head: u16,
        chain: Chain,
    ) -> Option<u32> {
        if chain.write_len < PCM_STATUS_SIZE {
            self.report(&SndError::NoStatus);
            return Some(0);
        }
        match self.accept(mem, queue, &chain) {
            Ok((index, payload, bytes)) => {
                if let Some(io) = self.io.get_mut(index) {
                    io.pending.push_back(Message {
                        head,
                        chain,
                        payload,
                        bytes,
                        start: None,
                        due: None,
                        released: 0,
                    });
                }
                None
            }
            Err((status, err)) => {
                self.report(&err);
                let at = chain.write_len - PCM_STATUS_SIZE;
                match write_regions(mem, &chain.writable, at, &pcm_status(status, 0)) {
                    Ok(()) => Some(PCM_STATUS_SIZE as u32),
                    Err(err) => {
                        self.report(&err);
                        Some(0)
                    }
                }
            }
        }
    }

    /// Checks a message against its stream; returns the stream index, the
    /// payload and the audio bytes.
    fn accept(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: u16,
        chain: &Chain,
    ) -> Result<(usize, Payload, usize), (u32, SndError)> {
        let bad = |stream: u32, detail: String| (S_BAD_MSG, SndError::Message { stream, detail });
        let header = read_regions(mem, &chain.readable, XFER_SIZE).map_err(|e| (S_BAD_MSG, e))?;
        let id = le32(&header, 0).ok_or_else(|| bad(0, "a message without a header".into()))?;
        let index = usize::try_from(id).unwrap_or(usize::MAX);
        let (Some(stream), Some(io)) = (self.streams.get(index), self.io.get(index)) else {
            return Err(bad(id, "no such stream".into()));
        };
        let input = queue == RXQ;
        if stream.is_input() != input {
            return Err(bad(
                id,
                "a message on the wrong queue for the stream".into(),
            ));
        }
        let Some(params) = stream.params.filter(|_| stream.accepts_io()) else {
            return Err((
                S_IO_ERR,
                SndError::Message {
                    stream: id,
                    detail: format!("a message in state {:?}", stream.state),
                },
            ));
        };
        let bytes = if input {
            chain.write_len.saturating_sub(PCM_STATUS_SIZE)
        } else {
            chain.read_len.saturating_sub(XFER_SIZE)
        };
        if bytes != params.period_bytes as usize {
            return Err(bad(
                id,
                format!(
                    "{bytes} bytes of audio, the period is {}",
                    params.period_bytes
                ),
            ));
        }
        if io.pending.len() >= params.periods() {
            return Err(bad(id, "more messages than the buffer has periods".into()));
        }
        let payload = if input {
            Payload::Rx
        } else {
            let all = read_regions(mem, &chain.readable, XFER_SIZE + bytes)
                .map_err(|e| (S_BAD_MSG, e))?;
            Payload::Tx(all.get(XFER_SIZE..).unwrap_or(&[]).to_vec())
        };
        Ok((index, payload, bytes))
    }

    /// Schedules and completes the messages of `queue`'s streams that are
    /// due at `now`.
    fn complete_due(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
        index: u16,
        now: Instant,
    ) -> Result<bool, SndError> {
        let mut used_any = false;
        for s in 0..self.streams.len() {
            let Some(stream) = self.streams.get(s) else {
                continue;
            };
            if stream.is_input() != (index == RXQ) {
                continue;
            }
            while let Some(done) = self.next_done(s, now) {
                let len = self.finish(mem, s, &done);
                queue
                    .add_used(mem, done.head, len)
                    .map_err(GuestFault::from)?;
                used_any = true;
            }
            if let Some(io) = self.io.get_mut(s) {
                if io.pending.is_empty() {
                    io.flush = false;
                }
            }
        }
        Ok(used_any)
    }

    /// The front message of stream `s` if it is done at `now` (scheduling
    /// it first, which plays its audio).
    fn next_done(&mut self, s: usize, now: Instant) -> Option<Message> {
        let stream = self.streams.get(s)?;
        let state = stream.state;
        let params = stream.params;
        let is_input = stream.is_input();
        let io = self.io.get_mut(s)?;
        let front = io.pending.front_mut()?;
        if io.flush || !matches!(state, State::Prepared | State::Started | State::Stopped) {
            return io.pending.pop_front();
        }
        if state != State::Started {
            return None;
        }
        let params = params?;
        if front.due.is_none() {
            let start = match io.clock {
                Some(clock) if clock + UNDERRUN_SLACK >= now => clock,
                Some(_) => {
                    AudioStats::bump(&self.control.stats().underruns);
                    now
                }
                None => now,
            };
            let due = start + params.duration_of(front.bytes);
            front.start = Some(start);
            front.due = Some(due);
            io.clock = Some(due);
        }
        if !is_input {
            if let (Payload::Tx(data), Some(start)) = (&front.payload, front.start) {
                // The slices whose time has come.
                let slice = params.bytes_within(SLICE);
                let mut end = front.released;
                while end < front.bytes && start + params.duration_of(end) <= now {
                    end = end.saturating_add(slice).min(front.bytes);
                }
                if let Some(part) = data.get(front.released..end).filter(|p| !p.is_empty()) {
                    let gain = self.control.gain();
                    self.samples.clear();
                    self.samples.extend(
                        part.chunks_exact(params.format.bytes())
                            .map(|b| params.format.decode(b) * gain),
                    );
                    self.sink.write(&self.samples);
                    let frames = part.len() / params.frame_bytes().max(1);
                    self.control
                        .stats()
                        .frames_played
                        .fetch_add(frames as u64, Ordering::Relaxed);
                    front.released = end;
                }
            }
        }
        if front.due.is_some_and(|due| due <= now) {
            io.pending.pop_front()
        } else {
            None
        }
    }

    /// Writes a completed message's audio (capture) and status; returns
    /// its used length.
    fn finish(&mut self, mem: &GuestMemoryMmap, s: usize, msg: &Message) -> u32 {
        let Some(stream) = self.streams.get(s) else {
            return 0;
        };
        let flushed = msg.due.is_none();
        let status_at = msg.chain.write_len.saturating_sub(PCM_STATUS_SIZE);
        let mut used = PCM_STATUS_SIZE;
        if let (Payload::Rx, Some(params)) = (&msg.payload, stream.params) {
            if !flushed {
                let samples = msg.bytes / params.format.bytes().max(1);
                self.samples.clear();
                self.samples.resize(samples, 0.0);
                if self.control.capture_enabled() {
                    self.source.read(&mut self.samples);
                }
                let mut bytes = vec![0u8; msg.bytes];
                for (chunk, value) in bytes
                    .chunks_exact_mut(params.format.bytes())
                    .zip(self.samples.iter())
                {
                    params.format.encode(*value, chunk);
                }
                if let Err(err) = write_regions(mem, &msg.chain.writable, 0, &bytes) {
                    self.report(&err);
                }
                let frames = msg.bytes / params.frame_bytes().max(1);
                self.control
                    .stats()
                    .frames_captured
                    .fetch_add(frames as u64, Ordering::Relaxed);
                used += msg.bytes;
            }
        }
        let latency = self
            .io
            .get(s)
            .map_or(0, |io| io.pending.iter().map(|m| m.bytes).sum::<usize>());
        let status = pcm_status(S_OK, u32::try_from(latency).unwrap_or(u32::MAX));
        if let Err(err) = write_regions(mem, &msg.chain.writable, status_at, &status) {
            self.report(&err);
            return 0;
        }
        u32::try_from(used).unwrap_or(0)
    }

    /// When the next message is due (now, for streams to flush or newly
    /// started ones with messages to schedule).
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.streams
            .iter()
            .zip(&self.io)
            .filter_map(|(stream, io)| {
                let front = io.pending.front()?;
                if io.flush || !stream.accepts_io() {
                    return Some(now);
                }
                if stream.state != State::Started {
                    return None;
                }
                let next_slice = match (&front.payload, front.start) {
                    (Payload::Tx(_), Some(start)) if front.released < front.bytes => {
                        stream.params.map(|p| start + p.duration_of(front.released))
                    }
                    _ => None,
                };
                Some(next_slice.or(front.due).unwrap_or(now))
            })
            .min()
    }

    fn arm_timer(&mut self, now: Instant) {
        let result = match self.next_deadline(now) {
            Some(at) => self
                .timer
                .reset(at.saturating_duration_since(now).max(MIN_TIMER), None),
            None => self.timer.clear(),
        };
        if let Err(e) = result {
            warn!("virtio-snd: cannot arm the timer: {e}");
        }
    }

    fn wake_now(&mut self) {
        if let Err(e) = self.timer.reset(MIN_TIMER, None) {
            warn!("virtio-snd: cannot arm the timer: {e}");
        }
    }

    /// Completes every queued message (device reset): the guest gets its
    /// buffers back only through a new ring, so they are dropped.
    fn drop_pending(&mut self) {
        for io in &mut self.io {
            io.pending.clear();
            io.clock = None;
            io.flush = false;
        }
    }

    /// Serves the timer's due messages on an activated device (tx and rx).
    pub fn serve_timer(&mut self) {
        QueueDevice::serve_host_events(self);
    }
}

impl DeviceInfo for Snd {
    fn device_type(&self) -> u32 {
        device_type::SOUND
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 4]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_bytes(), offset, data);
    }
}

impl QueueDevice for Snd {
    type Error = SndError;

    fn name(&self) -> &str {
        "virtio-snd"
    }

    device_core::core_accessors!();

    fn serve(
        &mut self,
        index: u16,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, SndError> {
        self.serve_queue(index, mem, queue, Instant::now())
    }

    fn reset_state(&mut self) {
        self.drop_pending();
        self.sink.stop();
        self.source.stop();
        let config = self.config;
        self.streams = vec![Stream::new(D_OUTPUT, 1, 2)];
        if config.capture {
            self.streams.push(Stream::new(D_INPUT, 1, 2));
        }
        self.clear_timer();
    }

    fn host_event_fd(&self) -> Option<RawFd> {
        Some(self.timer_fd())
    }

    fn take_host_events(&mut self) -> Vec<u16> {
        // The timer: serving tx and rx completes what is due and re-arms it.
        self.clear_timer();
        vec![TXQ, RXQ]
    }

    fn saves_state(&self) -> bool {
        true
    }

    fn quiesce(&mut self) -> Result<(), crate::snapshot::StateError> {
        self.quiesce_streams();
        Ok(())
    }

    fn save_own(&mut self) -> Result<Vec<u8>, crate::snapshot::StateError> {
        self.saved_streams()
    }

    fn restore_own(&mut self, bytes: &[u8]) -> Result<(), crate::snapshot::StateError> {
        self.restore_streams(bytes)
    }
}

/// The next available chain of `queue`, if any.
/// The most bytes a chain may carry: a period, its header and status.
const MAX_CHAIN_BYTES: usize =
    stream::MAX_PERIOD_BYTES as usize + XFER_SIZE + PCM_STATUS_SIZE + MAX_CONTROL_RESPONSE;

/// Splits and checks a chain: readable descriptors first, every one in
/// guest memory, the total bounded.
fn split_chain(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
) -> Result<Chain, SndError> {
    let mut out = Chain::default();
    for desc in chain {
        let (addr, len) = (desc.addr(), desc.len());
        if !mem.check_range(addr, len as usize) {
            return Err(SndError::OutOfMemory {
                addr: addr.raw_value(),
                len,
            });
        }
        if desc.is_write_only() {
            out.writable.push((addr, len));
            out.write_len = out.write_len.saturating_add(len as usize);
        } else {
            if !out.writable.is_empty() {
                return Err(SndError::Order);
            }
            out.readable.push((addr, len));
            out.read_len = out.read_len.saturating_add(len as usize);
        }
        if out.read_len.saturating_add(out.write_len) > MAX_CHAIN_BYTES {
            return Err(SndError::TooLarge(MAX_CHAIN_BYTES));
        }
    }
    Ok(out)
}

/// Reads up to `limit` bytes from `regions`.
fn read_regions(
    mem: &GuestMemoryMmap,
    regions: &[(GuestAddress, u32)],
    limit: usize,
) -> Result<Vec<u8>, SndError> {
    let mut out = Vec::new();
    for &(addr, len) in regions {
        let take = (len as usize).min(limit.saturating_sub(out.len()));
        if take == 0 {
            break;
        }
        let at = out.len();
        out.resize(at + take, 0);
        let buf = out.get_mut(at..).unwrap_or(&mut []);
        mem.read_slice(buf, addr)
            .map_err(|e| SndError::Memory(e.to_string()))?;
    }
    Ok(out)
}

/// Writes `data` at byte `offset` of `regions` (which hold it).
fn write_regions(
    mem: &GuestMemoryMmap,
    regions: &[(GuestAddress, u32)],
    offset: usize,
    data: &[u8],
) -> Result<(), SndError> {
    let mut skip = offset;
    let mut rest = data;
    for &(addr, len) in regions {
        let len = len as usize;
        if skip >= len {
            skip -= len;
            continue;
        }
        let take = (len - skip).min(rest.len());
        let (now, later) = rest.split_at(take);
        mem.write_slice(now, addr.unchecked_add(skip as u64))
            .map_err(|e| SndError::Memory(e.to_string()))?;
        rest = later;
        skip = 0;
        if rest.is_empty() {
            break;
        }
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(SndError::NoStatus)
    }
}

#[cfg(test)]
mod tests;
