// SPDX-License-Identifier: Apache-2.0
//! The host's sound card through cpal: [`HostSink`] plays on the default
//! output device, [`HostSource`] records from the default input device.
//!
//! Each keeps a bounded latency buffer between the VM's thread and cpal's
//! callback, at the device's rate and channel count; the VM's side
//! converts ([`Converter`]) from the guest's format. A full buffer drops
//! its oldest samples (an overrun); a callback that finds it empty while a
//! stream plays plays silence (an underrun). Playback waits until the
//! buffer holds its target level before it starts, so the first period
//! does not underrun at once.
//!
//! Clock drift: the VM's side writes at the pace of the device's clock
//! (the host's monotonic clock), the callback drains at the pace of the
//! sound server's; the two never agree exactly, so left alone the buffer
//! slowly fills up (until it overruns) or runs dry. The sink keeps the
//! buffered level near a target instead — one device callback plus
//! [`TARGET_MARGIN_MS`] — by resampling: a proportional controller on the
//! smoothed level the callback finds nudges the converter's ratio, by at
//! most [`MAX_CORRECTION`] either way (inaudible: a few cents of pitch).
//! A level more than [`EMERGENCY_MS`] above the target (a stall of the
//! VM's side or of the sound server left a backlog) is cut back to the
//! target at once, counted as an overrun; the buffer's capacity
//! ([`LATENCY_MS`]) is only a last limit.
//!
//! Latency: each write marks the position its first sample takes in the
//! stream with the time; when the output callback takes that sample, the
//! time since goes to [`AudioStats::sink_latency`] (what the device's
//! output buffer and PulseAudio add after the callback is not in it).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SizedSample};

use super::resample::Converter;
use super::{AudioError, AudioSink, AudioSource, AudioStats, PcmFormat};

/// The most audio the latency buffer holds, in milliseconds (beyond it
/// the oldest is dropped: an emergency, the drift correction keeps the
/// level far below).
pub const LATENCY_MS: u32 = 200;
/// Audio buffered before playback starts, in milliseconds, until the
/// device's callback size is known (then the target level is).
pub const PRIME_MS: u32 = 20;
/// Audio the sink aims to hold beyond one device callback when the
/// callback comes, in milliseconds.
pub const TARGET_MARGIN_MS: u32 = 10;
/// The largest relative change of the resampling ratio the drift
/// correction makes (0.5 %).
pub const MAX_CORRECTION: f64 = 0.005;
/// Audio beyond the target level, in milliseconds, that the callback
/// drops at once rather than correct slowly (it follows a stall of the VM's
/// side or of the sound server; normal jitter stays far below).
pub const EMERGENCY_MS: u32 = 50;
/// Relative ratio change per millisecond of level error (so 10 ms off
/// target corrects at the limit).
const CORRECTION_PER_MS: f64 = MAX_CORRECTION / 10.0;
/// Weight of each callback's level in the smoothed level (with 20 ms
/// callbacks, a time constant of about 0.4 s).
const LEVEL_SMOOTHING: f64 = 0.05;

/// The buffer shared with cpal's callback.
#[derive(Default)]
struct Ring {
    samples: VecDeque<f32>,
    capacity: usize,
    prime: usize,
    // A stream is playing: an empty buffer is an underrun.
    active: bool,
    primed: bool,
    // Samples ever pushed, and ever taken (played or dropped).
    pushed: u64,
    taken: u64,
    // (when, stream position of the first sample) of recent writes.
    marks: VecDeque<(Instant, u64)>,
    // Samples per millisecond, and per frame.
    per_ms: usize,
    channels: usize,
    // The largest callback asked for, in samples.
    callback: usize,
    // The level callbacks found, smoothed, while a stream played.
    level: Option<f64>,
    // When the callback last came.
    last_fill: Option<Instant>,
}

impl Ring {
    /// Drops the oldest `count` samples (rounded up to whole frames, so
    /// the channels stay in place); the marks of dropped writes go too.
    fn drop_oldest(&mut self, count: usize) {
        let frame = self.channels.max(1);
        let count = count.div_ceil(frame).saturating_mul(frame);
        let count = count.min(self.samples.len());
        self.samples.drain(..count);
        self.taken += count as u64;
        // Dropped writes were never played: no latency for them.
        while self.marks.front().is_some_and(|&(_, at)| at < self.taken) {
            self.marks.pop_front();
        }
    }

    /// The level to keep: one callback plus the margin.
    fn target(&self) -> usize {
        self.callback
            .saturating_add(self.per_ms.saturating_mul(TARGET_MARGIN_MS as usize))
    }
}

/// The relative resampling ratio that moves `level` (smoothed, samples)
/// toward `target`: below 1.0 (fewer samples) when too much is buffered.
fn correction(level: f64, target: usize, per_ms: usize) -> f64 {
    let error_ms = (level - target as f64) / per_ms.max(1) as f64;
    1.0 - (error_ms * CORRECTION_PER_MS).clamp(-MAX_CORRECTION, MAX_CORRECTION)
}

/// Marks kept at most (a mark per period; far more than the buffer holds).
const MAX_MARKS: usize = 4096;

fn lock(ring: &Mutex<Ring>) -> MutexGuard<'_, Ring> {
    ring.lock().unwrap_or_else(|e| e.into_inner())
}

/// StreamState between a backend and its callback.
struct StreamState {
    ring: Mutex<Ring>,
    stats: Mutex<Arc<AudioStats>>,
}

impl StreamState {
    fn new(format: PcmFormat) -> Arc<Self> {
        let per_ms = format.rate as usize * usize::from(format.channels) / 1000;
        Arc::new(Self {
            ring: Mutex::new(Ring {
                capacity: per_ms * LATENCY_MS as usize,
                prime: per_ms * PRIME_MS as usize,
                per_ms,
                channels: usize::from(format.channels),
                ..Ring::default()
            }),
            stats: Mutex::new(Arc::new(AudioStats::default())),
        })
    }

    fn stats(&self) -> Arc<AudioStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Notes that a write made at `at` starts `ahead` samples after what
    /// was pushed so far (what a converter still holds).
    fn mark(&self, at: Instant, ahead: usize) {
        let mut ring = lock(&self.ring);
        if ring.marks.len() >= MAX_MARKS {
            ring.marks.pop_front();
        }
        let position = ring.pushed.saturating_add(ahead as u64);
        ring.marks.push_back((at, position));
    }

    /// The relative resampling ratio the drift correction wants now (1.0
    /// before a callback has found a level).
    fn correction(&self) -> f64 {
        let ring = lock(&self.ring);
        ring.level
            .map_or(1.0, |level| correction(level, ring.target(), ring.per_ms))
    }

    /// Plays a write: corrects `conv`'s ratio, marks the write, converts
    /// and pushes it.
    fn play(&self, conv: &mut Converter, samples: &[f32]) {
        conv.set_ratio_relative(self.correction());
        self.mark(Instant::now(), conv.pending_output());
        conv.push(samples, &mut |out| self.push(out));
    }

    /// A stream starts (or stops, `active` false).
    fn set_active(&self, active: bool) {
        let mut ring = lock(&self.ring);
        ring.active = active;
        ring.level = None;
    }

    /// Appends, dropping the oldest samples past the capacity.
    fn push(&self, samples: &[f32]) {
        let mut ring = lock(&self.ring);
        ring.samples.extend(samples.iter().copied());
        ring.pushed += samples.len() as u64;
        let excess = ring.samples.len().saturating_sub(ring.capacity);
        if excess > 0 {
            ring.drop_oldest(excess);
            let since = ring.last_fill.map(|at| at.elapsed());
            drop(ring);
            note_drop("the buffer is full", since);
            AudioStats::bump(&self.stats().overruns);
        }
    }

    /// The output callback: fills `out` from the buffer.
    fn fill<T: Sample + FromSample<f32>>(&self, out: &mut [T]) {
        let stats = self.stats();
        let mut ring = lock(&self.ring);
        // A device that asks for big chunks needs room for a few of them
        // between its calls.
        ring.capacity = ring.capacity.max(out.len().saturating_mul(3));
        ring.callback = ring.callback.max(out.len());
        let now = Instant::now();
        let since_last = ring.last_fill.map(|at| now.saturating_duration_since(at));
        ring.last_fill = Some(now);
        ring.prime = ring.target();
        if !ring.primed && ring.samples.len() >= ring.prime.max(1) {
            ring.primed = true;
        }
        let mut emergency = false;
        if ring.primed && ring.active {
            let target = ring.target();
            let limit = target.saturating_add(ring.per_ms.saturating_mul(EMERGENCY_MS as usize));
            if ring.samples.len() > limit {
                // Far too much at once (a stall on either side): correcting
                // by resampling would take many seconds, so skip to the
                // target.
                let excess = ring.samples.len().saturating_sub(target);
                ring.drop_oldest(excess);
                ring.level = None;
                emergency = true;
            }
            let held = ring.samples.len() as f64;
            let level = ring
                .level
                .map_or(held, |l| l + (held - l) * LEVEL_SMOOTHING);
            ring.level = Some(level);
        }
        let mut starved = false;
        let mut taken = 0u64;
        for slot in out.iter_mut() {
            let value = if ring.primed {
                match ring.samples.pop_front() {
                    Some(value) => {
                        taken += 1;
                        value
                    }
                    None => {
                        starved = true;
                        0.0
                    }
                }
            } else {
                0.0
            };
            *slot = T::from_sample(value);
        }
        ring.taken += taken;
        if starved {
            ring.primed = false;
        }
        let underrun = starved && ring.active;
        while let Some(&(at, position)) = ring.marks.front() {
            if position >= ring.taken {
                break;
            }
            stats.sink_latency.record(now.saturating_duration_since(at));
            ring.marks.pop_front();
        }
        drop(ring);
        if underrun {
            AudioStats::bump(&stats.underruns);
        }
        if emergency {
            note_drop("a backlog was cut back to the target", since_last);
            AudioStats::bump(&stats.overruns);
        }
    }
}

/// Stream errors seen, for rate-limited logging (a lost device reports
/// one per callback).
static STREAM_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn stream_error(err: cpal::Error) {
    let seen = STREAM_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    if seen <= 10 || seen % 1000 == 0 {
        log::warn!("sound: host audio stream ({seen} errors so far): {err}");
    }
}

/// Drops seen, for rate-limited logging.
static DROPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Logs (rate-limited) that a latency buffer dropped samples, and how long
/// before (or between) the callbacks came (a stalled sound server shows
/// there).
fn note_drop(why: &str, since_callback: Option<std::time::Duration>) {
    let seen = DROPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    if seen <= 10 || seen % 1000 == 0 {
        log::warn!(
            "sound: dropped audio ({seen} drops so far): {why}; the callback before came \
             {since_callback:?} earlier"
        );
    }
}

/// Device buffers of about this many milliseconds are asked for, where
/// the device says it can do them.
const DEVICE_BUFFER_MS: u32 = 20;

/// A buffer of about [`DEVICE_BUFFER_MS`] within the device's range, or
/// the device's default.
fn small_buffer(config: &cpal::SupportedStreamConfig) -> cpal::BufferSize {
    let want = config.sample_rate() / 1000 * DEVICE_BUFFER_MS;
    match config.buffer_size() {
        cpal::SupportedBufferSize::Range { min, max } if min <= max => {
            cpal::BufferSize::Fixed(want.clamp(*min, *max))
        }
        _ => cpal::BufferSize::Default,
    }
}

/// Plays on the host's default output device.
pub struct HostSink {
    shared: Arc<StreamState>,
    device_format: PcmFormat,
    converter: Option<Converter>,
    // Kept alive: dropping it stops the device.
    _stream: cpal::Stream,
}

fn output_stream<T: SizedSample + FromSample<f32>>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    shared: Arc<StreamState>,
) -> Result<cpal::Stream, cpal::Error> {
    device.build_output_stream(
        config,
        move |data: &mut [T], _: &cpal::OutputCallbackInfo| shared.fill(data),
        stream_error,
        None,
    )
}

impl HostSink {
    /// Opens the default output device and starts its stream (silence
    /// until the guest plays).
    pub fn open() -> Result<Self, AudioError> {
        let host = cpal::default_host();
        let device = host
            .default_output_device()
            .ok_or_else(|| AudioError::NoDevice("the host has no audio output".into()))?;
        let config = device
            .default_output_config()
            .map_err(|e| AudioError::NoDevice(e.to_string()))?;
        let device_format = PcmFormat {
            rate: config.sample_rate(),
            channels: config.channels(),
        };
        let shared = StreamState::new(device_format);
        let sample_format = config.sample_format();
        let buffer = small_buffer(&config);
        let mut config: cpal::StreamConfig = config.into();
        config.buffer_size = buffer;
        let s = shared.clone();
        let stream = match sample_format {
            cpal::SampleFormat::F32 => output_stream::<f32>(&device, config, s),
            cpal::SampleFormat::F64 => output_stream::<f64>(&device, config, s),
            cpal::SampleFormat::I16 => output_stream::<i16>(&device, config, s),
            cpal::SampleFormat::I32 => output_stream::<i32>(&device, config, s),
            cpal::SampleFormat::U16 => output_stream::<u16>(&device, config, s),
            cpal::SampleFormat::U8 => output_stream::<u8>(&device, config, s),
            cpal::SampleFormat::I8 => output_stream::<i8>(&device, config, s),
            other => {
                return Err(AudioError::Stream(format!(
                    "the output device wants {other} samples"
                )));
            }
        }
        .map_err(|e| AudioError::Stream(e.to_string()))?;
        stream
            .play()
            .map_err(|e| AudioError::Stream(e.to_string()))?;
        log::info!(
            "sound: playing on the host's default output ({} Hz, {} channels)",
            device_format.rate,
            device_format.channels
        );
        Ok(Self {
            shared,
            device_format,
            converter: None,
            _stream: stream,
        })
    }
}

impl AudioSink for HostSink {
    fn name(&self) -> &'static str {
        "host"
    }

    fn set_stats(&mut self, stats: Arc<AudioStats>) {
        *self.shared.stats.lock().unwrap_or_else(|e| e.into_inner()) = stats;
    }

    fn start(&mut self, format: PcmFormat) -> Result<(), AudioError> {
        self.converter = Some(
            Converter::adjustable(format, self.device_format)
                .ok_or_else(|| AudioError::Stream(format!("cannot convert from {format:?}")))?,
        );
        self.shared.set_active(true);
        Ok(())
    }

    fn write(&mut self, samples: &[f32]) {
        if let Some(conv) = self.converter.as_mut() {
            self.shared.play(conv, samples);
        }
    }

    fn stop(&mut self) {
        self.shared.set_active(false);
        if let Some(conv) = self.converter.as_mut() {
            conv.reset();
        }
    }
}

/// Records from the host's default input device, opened only while the
/// guest records.
#[derive(Default)]
pub struct HostSource {
    stats: Arc<AudioStats>,
    open: Option<OpenInput>,
    format: Option<PcmFormat>,
}

struct OpenInput {
    shared: Arc<StreamState>,
    converter: Converter,
    staged: VecDeque<f32>,
    chunk: Vec<f32>,
    _stream: cpal::Stream,
}

fn input_stream<T: SizedSample>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    shared: Arc<StreamState>,
) -> Result<cpal::Stream, cpal::Error>
where
    f32: FromSample<T>,
{
    device.build_input_stream(
        config,
        move |data: &[T], _: &cpal::InputCallbackInfo| {
            let samples: Vec<f32> = data.iter().map(|s| f32::from_sample(*s)).collect();
            shared.push(&samples);
        },
        stream_error,
        None,
    )
}

impl HostSource {
    /// A source that opens the default input when a recording starts.
    pub fn new() -> Self {
        Self::default()
    }

    fn open_input(guest: PcmFormat) -> Result<OpenInput, AudioError> {
        let host = cpal::default_host();
        let device = host
            .default_input_device()
            .ok_or_else(|| AudioError::NoDevice("the host has no audio input".into()))?;
        let config = device
            .default_input_config()
            .map_err(|e| AudioError::NoDevice(e.to_string()))?;
        let device_format = PcmFormat {
            rate: config.sample_rate(),
            channels: config.channels(),
        };
        let shared = StreamState::new(device_format);
        let sample_format = config.sample_format();
        let config: cpal::StreamConfig = config.into();
        let s = shared.clone();
        let stream = match sample_format {
            cpal::SampleFormat::F32 => input_stream::<f32>(&device, config, s),
            cpal::SampleFormat::I16 => input_stream::<i16>(&device, config, s),
            cpal::SampleFormat::I32 => input_stream::<i32>(&device, config, s),
            cpal::SampleFormat::U16 => input_stream::<u16>(&device, config, s),
            cpal::SampleFormat::U8 => input_stream::<u8>(&device, config, s),
            other => {
                return Err(AudioError::Stream(format!(
                    "the input device gives {other} samples"
                )));
            }
        }
        .map_err(|e| AudioError::Stream(e.to_string()))?;
        stream
            .play()
            .map_err(|e| AudioError::Stream(e.to_string()))?;
        let converter = Converter::new(device_format, guest)
            .ok_or_else(|| AudioError::Stream(format!("cannot convert to {guest:?}")))?;
        let chunk_len = usize::from(device_format.channels) * 256;
        Ok(OpenInput {
            shared,
            converter,
            staged: VecDeque::new(),
            chunk: vec![0.0; chunk_len],
            _stream: stream,
        })
    }
}

impl AudioSource for HostSource {
    fn name(&self) -> &'static str {
        "host"
    }

    fn set_stats(&mut self, stats: Arc<AudioStats>) {
        self.stats = stats;
    }

    fn start(&mut self, format: PcmFormat) -> Result<(), AudioError> {
        if self.format == Some(format) && self.open.is_some() {
            return Ok(());
        }
        let input = Self::open_input(format)?;
        *input.shared.stats.lock().unwrap_or_else(|e| e.into_inner()) = self.stats.clone();
        self.open = Some(input);
        self.format = Some(format);
        Ok(())
    }

    fn read(&mut self, out: &mut [f32]) {
        let Some(input) = self.open.as_mut() else {
            out.fill(0.0);
            return;
        };
        while input.staged.len() < out.len() {
            let short = {
                let mut ring = lock(&input.shared.ring);
                let mut short = false;
                for slot in input.chunk.iter_mut() {
                    *slot = ring.samples.pop_front().unwrap_or_else(|| {
                        short = true;
                        0.0
                    });
                }
                short
            };
            if short {
                AudioStats::bump(&self.stats.underruns);
            }
            let staged = &mut input.staged;
            input
                .converter
                .push(&input.chunk, &mut |s| staged.extend(s.iter().copied()));
        }
        for slot in out.iter_mut() {
            *slot = input.staged.pop_front().unwrap_or(0.0);
        }
    }

    fn stop(&mut self) {
        // Closing the device stops recording (and its indicator).
        self.open = None;
        self.format = None;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn test_callback_records_latency_of_each_write_once_and_not_of_dropped_ones() {
        // Arrange: 1 kHz mono, so the buffer holds 200 samples and the
        // prime is a callback (25) plus 10.
        let shared = StreamState::new(PcmFormat {
            rate: 1000,
            channels: 1,
        });
        let stats = shared.stats();
        let early = Instant::now() - Duration::from_millis(30);

        // Act: two writes, then a callback that takes the first and part
        // of the second.
        shared.mark(early, 0);
        shared.push(&[0.5; 20]);
        shared.mark(Instant::now(), 0);
        shared.push(&[0.5; 20]);
        let mut out = [0.0f32; 25];
        shared.fill(&mut out);

        // Assert: both first samples were taken; the first waited 30 ms.
        assert_eq!(stats.sink_latency.count(), 2);
        let worst = stats.sink_latency.quantile(1.0).unwrap();
        assert!(worst >= Duration::from_millis(30), "{worst:?}");
        shared.fill(&mut out);
        assert_eq!(stats.sink_latency.count(), 2, "counted once each");

        // A write dropped by an overrun is never counted.
        shared.mark(Instant::now(), 0);
        shared.push(&[0.1; 150]);
        shared.mark(Instant::now(), 0);
        shared.push(&[0.2; 150]);
        assert_eq!(stats.snapshot().overruns, 1);
        for _ in 0..3 {
            shared.fill(&mut out);
        }
        assert_eq!(stats.sink_latency.count(), 3);
    }

    #[test]
    fn test_correction_slows_a_full_buffer_and_speeds_an_empty_one_within_limits() {
        // 48 kHz stereo: 96 samples a millisecond.
        assert_eq!(correction(1000.0, 1000, 96), 1.0);
        let full = correction(1000.0 + 96.0 * 4.0, 1000, 96);
        assert!((full - 0.998).abs() < 1e-9, "{full}");
        assert_eq!(correction(1e9, 1000, 96), 1.0 - MAX_CORRECTION);
        assert_eq!(correction(0.0, 100_000, 96), 1.0 + MAX_CORRECTION);
    }

    #[test]
    fn test_drift_correction_follows_a_slow_sink_clock_for_a_minute_without_drops() {
        // Arrange: the device writes 48 000 Hz stereo in 10 ms slices; the
        // sound server's callback takes 20 ms at its clock, which runs
        // slow: 47 950 frames a second (959 frames a callback).
        let format = PcmFormat {
            rate: 48000,
            channels: 2,
        };
        let shared = StreamState::new(format);
        let stats = shared.stats();
        let mut conv = Converter::adjustable(format, format).unwrap();
        shared.set_active(true);
        let slice = vec![0.25f32; 960];
        let mut out = vec![0.0f32; 959 * 2];
        let per_ms = 96.0;
        let mut levels = Vec::new();
        let mut played = 0u64;

        // Act: a simulated minute.
        for step in 0..6000 {
            shared.play(&mut conv, &slice);
            played += slice.len() as u64;
            if step % 2 == 1 {
                levels.push(lock(&shared.ring).samples.len() as f64);
                shared.fill(&mut out);
            }
        }

        // Assert: nothing dropped, no underrun once playing, and the level
        // the callback finds stays near its target (one callback plus
        // 10 ms) after the first seconds, where uncorrected drift would
        // have added 62 ms by the end.
        let snap = stats.snapshot();
        assert_eq!(snap.overruns, 0);
        assert_eq!(snap.underruns, 0);
        let ring = lock(&shared.ring);
        let target = ring.target() as f64;
        assert_eq!(target, 1918.0 + 960.0);
        let late = levels.get(500..).unwrap();
        let (lo, hi) = late
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &l| (lo.min(l), hi.max(l)));
        assert!(
            lo > target - 8.0 * per_ms && hi < target + 8.0 * per_ms,
            "level {lo}..{hi}, target {target}"
        );
        // Everything written was played or is still buffered.
        let held = ring.samples.len() as u64 + conv.pending_output() as u64;
        let diff = (ring.taken + held).abs_diff(played);
        assert!(diff < played / 100, "{} of {played}", ring.taken + held);
        drop(ring);
        assert!(shared.correction() < 1.0, "it slows down for the slow sink");
    }

    #[test]
    fn test_a_backlog_after_a_stall_is_cut_back_to_the_target_at_once() {
        // Arrange: 48 kHz stereo, playing at the target level.
        let format = PcmFormat {
            rate: 48000,
            channels: 2,
        };
        let shared = StreamState::new(format);
        let stats = shared.stats();
        let mut conv = Converter::adjustable(format, format).unwrap();
        shared.set_active(true);
        let slice = vec![0.25f32; 960];
        let mut out = vec![0.0f32; 960 * 2];
        for step in 0..200 {
            shared.play(&mut conv, &slice);
            if step % 2 == 1 {
                shared.fill(&mut out);
            }
        }
        assert_eq!(stats.snapshot().overruns, 0);

        // Act: the callback stalls for 150 ms while the device writes on.
        for _ in 0..15 {
            shared.play(&mut conv, &slice);
        }
        shared.fill(&mut out);

        // Assert: one overrun, and the level is back at the target.
        assert_eq!(stats.snapshot().overruns, 1);
        let ring = lock(&shared.ring);
        let after = ring.samples.len();
        assert_eq!(after, ring.target() - 1920, "{after}");
        assert_eq!(after % 2, 0, "whole frames");
    }
}
