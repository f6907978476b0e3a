// SPDX-License-Identifier: Apache-2.0
//! The host's sound card through cpal: [`HostSink`] plays on the default
//! output device, [`HostSource`] records from the default input device.
//!
//! Each keeps a bounded latency buffer between the VM's thread and cpal's
//! callback, at the device's rate and channel count; the VM's side
//! converts ([`Converter`]) from the guest's format. A full buffer drops
//! its oldest samples (an overrun); a callback that finds it empty while a
//! stream plays plays silence (an underrun). Playback waits until the
//! buffer holds [`PRIME_MS`] before it starts, so the first period does
//! not underrun at once.
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

/// The most audio the latency buffer holds, in milliseconds.
pub const LATENCY_MS: u32 = 200;
/// Audio buffered before playback starts, in milliseconds.
pub const PRIME_MS: u32 = 20;

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
}

/// Marks kept at most (a mark per period; far more than the buffer holds).
const MAX_MARKS: usize = 4096;

fn lock(ring: &Mutex<Ring>) -> MutexGuard<'_, Ring> {
    ring.lock().unwrap_or_else(|e| e.into_inner())
}

/// Shared between a backend and its callback.
struct Shared {
    ring: Mutex<Ring>,
    stats: Mutex<Arc<AudioStats>>,
}

impl Shared {
    fn new(format: PcmFormat) -> Arc<Self> {
        let per_ms = format.rate as usize * usize::from(format.channels) / 1000;
        Arc::new(Self {
            ring: Mutex::new(Ring {
                capacity: per_ms * LATENCY_MS as usize,
                prime: per_ms * PRIME_MS as usize,
                ..Ring::default()
            }),
            stats: Mutex::new(Arc::new(AudioStats::default())),
        })
    }

    fn stats(&self) -> Arc<AudioStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Notes that the `len` samples pushed next are one write made at
    /// `at`; the buffer grows to hold two such writes past its prime, so
    /// a guest with long periods (the device hands over a whole period
    /// when it starts playing) does not overrun it.
    fn mark(&self, at: Instant, len: usize) {
        let mut ring = lock(&self.ring);
        let room = len.saturating_mul(2).saturating_add(ring.prime);
        ring.capacity = ring.capacity.max(room);
        if ring.marks.len() >= MAX_MARKS {
            ring.marks.pop_front();
        }
        let position = ring.pushed;
        ring.marks.push_back((at, position));
    }

    /// Appends, dropping the oldest samples past the capacity.
    fn push(&self, samples: &[f32]) {
        let mut ring = lock(&self.ring);
        ring.samples.extend(samples.iter().copied());
        ring.pushed += samples.len() as u64;
        let excess = ring.samples.len().saturating_sub(ring.capacity);
        if excess > 0 {
            ring.samples.drain(..excess);
            ring.taken += excess as u64;
            // Dropped writes were never played: no latency for them.
            while ring.marks.front().is_some_and(|&(_, at)| at < ring.taken) {
                ring.marks.pop_front();
            }
            drop(ring);
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
        if !ring.primed && ring.samples.len() >= ring.prime.max(1) {
            ring.primed = true;
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
        let now = Instant::now();
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
    shared: Arc<Shared>,
    device_format: PcmFormat,
    guest_format: Option<PcmFormat>,
    converter: Option<Converter>,
    // Kept alive: dropping it stops the device.
    _stream: cpal::Stream,
}

fn output_stream<T: SizedSample + FromSample<f32>>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    shared: Arc<Shared>,
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
        let shared = Shared::new(device_format);
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
            guest_format: None,
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
            Converter::new(format, self.device_format)
                .ok_or_else(|| AudioError::Stream(format!("cannot convert from {format:?}")))?,
        );
        self.guest_format = Some(format);
        lock(&self.shared.ring).active = true;
        Ok(())
    }

    fn write(&mut self, samples: &[f32]) {
        let shared = &self.shared;
        if let (Some(conv), Some(guest)) = (self.converter.as_mut(), self.guest_format) {
            shared.mark(
                Instant::now(),
                device_len(samples.len(), guest, self.device_format),
            );
            conv.push(samples, &mut |out| shared.push(out));
        }
    }

    fn stop(&mut self) {
        lock(&self.shared.ring).active = false;
        if let Some(conv) = self.converter.as_mut() {
            conv.reset();
        }
    }
}

/// How many device samples `len` guest samples become.
fn device_len(len: usize, guest: PcmFormat, device: PcmFormat) -> usize {
    let num = len as u64 * u64::from(device.rate) * u64::from(device.channels);
    let den = (u64::from(guest.rate) * u64::from(guest.channels)).max(1);
    usize::try_from(num / den).unwrap_or(usize::MAX)
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
    shared: Arc<Shared>,
    converter: Converter,
    staged: VecDeque<f32>,
    chunk: Vec<f32>,
    _stream: cpal::Stream,
}

fn input_stream<T: SizedSample>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    shared: Arc<Shared>,
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
        let shared = Shared::new(device_format);
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
        // Arrange: 1 kHz mono, so the prime is 20 samples, the buffer 200.
        let shared = Shared::new(PcmFormat {
            rate: 1000,
            channels: 1,
        });
        let stats = shared.stats();
        let early = Instant::now() - Duration::from_millis(30);

        // Act: two writes, then a callback that takes the first and part
        // of the second.
        shared.mark(early, 20);
        shared.push(&[0.5; 20]);
        shared.mark(Instant::now(), 20);
        shared.push(&[0.5; 20]);
        let mut out = [0.0f32; 25];
        shared.fill(&mut out);

        // Assert: both first samples were taken; the first waited 30 ms.
        assert_eq!(stats.sink_latency.count(), 2);
        let worst = stats.sink_latency.quantile(1.0).unwrap();
        assert!(worst >= Duration::from_millis(30), "{worst:?}");
        shared.fill(&mut out);
        assert_eq!(stats.sink_latency.count(), 2, "counted once each");

        // A write dropped by an overrun is never counted (writes marked
        // small, so the buffer stays at 200).
        shared.mark(Instant::now(), 1);
        shared.push(&[0.1; 150]);
        shared.mark(Instant::now(), 1);
        shared.push(&[0.2; 150]);
        assert_eq!(stats.snapshot().overruns, 1);
        shared.fill(&mut [0.0f32; 200]);
        assert_eq!(stats.sink_latency.count(), 3);

        // A long write makes room for two of itself past the prime.
        shared.mark(Instant::now(), 300);
        shared.push(&[0.3; 300]);
        shared.mark(Instant::now(), 300);
        shared.push(&[0.3; 300]);
        assert_eq!(stats.snapshot().overruns, 1, "no new overrun");
    }

    #[test]
    fn test_device_len_scales_rate_and_channels() {
        let f = |rate, channels| PcmFormat { rate, channels };
        assert_eq!(device_len(960, f(48000, 2), f(48000, 2)), 960);
        assert_eq!(device_len(480, f(48000, 1), f(44100, 2)), 882);
    }
}
