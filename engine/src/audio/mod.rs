// SPDX-License-Identifier: Apache-2.0
//! The host side of guest sound: where the samples a guest plays go
//! ([`AudioSink`]) and where the samples it records come from
//! ([`AudioSource`]), behind one pair of traits so the virtio-snd device
//! does not care which backend it has.
//!
//! Backends: [`NullSink`]/[`NullSource`] (discard / silence), the WAV file
//! backends in [`wav`] (tests and headless runs), [`ToneSource`] (a sine,
//! for tests), and the host's sound card through cpal in [`host`], with
//! resampling from the guest's rate to the device's ([`resample`]).
//!
//! Samples cross the traits as interleaved `f32` in -1.0..=1.0 at the
//! guest stream's [`PcmFormat`]. Per-VM volume, mute, capture enable and
//! the underrun/overrun counters live in a shared [`SoundControl`].

pub mod host;
pub mod resample;
pub mod wav;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The rate and channel count of a stream's samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcmFormat {
    /// Frames per second.
    pub rate: u32,
    /// Samples per frame.
    pub channels: u16,
}

/// Why a backend could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The host has no usable audio device.
    #[error("No audio device: {0}")]
    NoDevice(String),
    /// The device refused the stream.
    #[error("Cannot open the audio stream: {0}")]
    Stream(String),
    /// A file could not be read or written.
    #[error("Audio file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A file is not a WAV this backend reads.
    #[error("Audio file {path} is not a PCM WAV file: {detail}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// Where a guest's playback goes.
pub trait AudioSink: Send {
    /// A short name for messages ("null", "wav", "host").
    fn name(&self) -> &'static str;
    /// Gives the backend the counters it should update.
    fn set_stats(&mut self, _stats: Arc<AudioStats>) {}
    /// A stream of `format` starts playing.
    fn start(&mut self, format: PcmFormat) -> Result<(), AudioError>;
    /// Plays interleaved samples, at the real-time rate the device paces.
    fn write(&mut self, samples: &[f32]);
    /// The stream stopped.
    fn stop(&mut self);
}

/// Where a guest's recording comes from.
pub trait AudioSource: Send {
    /// A short name for messages ("null", "wav", "tone", "host").
    fn name(&self) -> &'static str;
    /// Gives the backend the counters it should update.
    fn set_stats(&mut self, _stats: Arc<AudioStats>) {}
    /// A capture stream of `format` starts.
    fn start(&mut self, format: PcmFormat) -> Result<(), AudioError>;
    /// Fills `out` with the next interleaved samples (silence where the
    /// host has none).
    fn read(&mut self, out: &mut [f32]);
    /// The stream stopped.
    fn stop(&mut self);
}

/// The histogram's bucket width.
const LATENCY_BUCKET: Duration = Duration::from_micros(250);
/// Buckets: 0.25 ms each up to 1 s; longer ones land in the last.
const LATENCY_BUCKETS: usize = 4000;

/// A histogram of latencies (0.25 ms buckets up to 1 s), updated without
/// locks from any thread.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Vec<AtomicU64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: (0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl LatencyHistogram {
    /// Counts one latency.
    pub fn record(&self, latency: Duration) {
        let index = (latency.as_micros() / LATENCY_BUCKET.as_micros()) as usize;
        if let Some(bucket) = self
            .buckets
            .get(index.min(LATENCY_BUCKETS.saturating_sub(1)))
        {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many were counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0.0..=1.0), as the upper edge of its bucket; None
    /// before anything was counted.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(LATENCY_BUCKET * (index as u32 + 1));
            }
        }
        Some(LATENCY_BUCKET * LATENCY_BUCKETS as u32)
    }
}

/// Counters of a VM's sound, updated by the device and its backends.
#[derive(Debug, Default)]
pub struct AudioStats {
    /// Times the host device ran dry while a stream played (or the guest
    /// sent no buffer in time).
    pub underruns: AtomicU64,
    /// Times samples were dropped because a latency buffer was full.
    pub overruns: AtomicU64,
    /// Frames the guest played.
    pub frames_played: AtomicU64,
    /// Frames the guest recorded.
    pub frames_captured: AtomicU64,
    /// From the device handing a period to the sink to the host output
    /// callback taking its first sample (backends that have a callback:
    /// [`host::HostSink`]).
    pub sink_latency: LatencyHistogram,
}

/// A snapshot of [`AudioStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AudioStatsSnapshot {
    /// See [`AudioStats::underruns`].
    pub underruns: u64,
    /// See [`AudioStats::overruns`].
    pub overruns: u64,
    /// See [`AudioStats::frames_played`].
    pub frames_played: u64,
    /// See [`AudioStats::frames_captured`].
    pub frames_captured: u64,
}

impl AudioStats {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> AudioStatsSnapshot {
        AudioStatsSnapshot {
            underruns: self.underruns.load(Ordering::Relaxed),
            overruns: self.overruns.load(Ordering::Relaxed),
            frames_played: self.frames_played.load(Ordering::Relaxed),
            frames_captured: self.frames_captured.load(Ordering::Relaxed),
        }
    }
}

/// A VM's sound settings and counters, shared between the device and the
/// user interface.
#[derive(Debug)]
pub struct SoundControl {
    volume_bits: AtomicU32,
    muted: AtomicBool,
    capture: AtomicBool,
    stats: Arc<AudioStats>,
}

impl SoundControl {
    /// Full volume, not muted; capture as `capture` says.
    pub fn new(capture: bool) -> Arc<Self> {
        Arc::new(Self {
            volume_bits: AtomicU32::new(1.0f32.to_bits()),
            muted: AtomicBool::new(false),
            capture: AtomicBool::new(capture),
            stats: Arc::new(AudioStats::default()),
        })
    }

    /// Playback volume, 0.0..=1.0.
    pub fn volume(&self) -> f32 {
        f32::from_bits(self.volume_bits.load(Ordering::Relaxed))
    }

    /// Sets the playback volume (clamped to 0.0..=1.0).
    pub fn set_volume(&self, volume: f32) {
        let v = if volume.is_finite() {
            volume.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.volume_bits.store(v.to_bits(), Ordering::Relaxed);
    }

    /// True when playback is muted.
    pub fn muted(&self) -> bool {
        self.muted.load(Ordering::Relaxed)
    }

    /// Mutes or unmutes playback.
    pub fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
    }

    /// True when the guest may record from the host (off by default);
    /// while false, recordings get silence.
    pub fn capture_enabled(&self) -> bool {
        self.capture.load(Ordering::Relaxed)
    }

    /// Allows or forbids recording from the host.
    pub fn set_capture_enabled(&self, enabled: bool) {
        self.capture.store(enabled, Ordering::Relaxed);
    }

    /// The gain playback gets now: 0 when muted, else the volume.
    pub fn gain(&self) -> f32 {
        if self.muted() { 0.0 } else { self.volume() }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<AudioStats> {
        &self.stats
    }
}

/// Discards what the guest plays.
#[derive(Debug, Default)]
pub struct NullSink;

impl AudioSink for NullSink {
    fn name(&self) -> &'static str {
        "null"
    }

    fn start(&mut self, _format: PcmFormat) -> Result<(), AudioError> {
        Ok(())
    }

    fn write(&mut self, _samples: &[f32]) {}

    fn stop(&mut self) {}
}

/// Records silence.
#[derive(Debug, Default)]
pub struct NullSource;

impl AudioSource for NullSource {
    fn name(&self) -> &'static str {
        "null"
    }

    fn start(&mut self, _format: PcmFormat) -> Result<(), AudioError> {
        Ok(())
    }

    fn read(&mut self, out: &mut [f32]) {
        out.fill(0.0);
    }

    fn stop(&mut self) {}
}

/// Records a sine tone (half scale) on every channel.
#[derive(Debug)]
pub struct ToneSource {
    frequency: f64,
    format: PcmFormat,
    phase: f64,
}

impl ToneSource {
    /// A tone of `frequency` Hz.
    pub fn new(frequency: f64) -> Self {
        Self {
            frequency,
            format: PcmFormat {
                rate: 48000,
                channels: 1,
            },
            phase: 0.0,
        }
    }
}

impl AudioSource for ToneSource {
    fn name(&self) -> &'static str {
        "tone"
    }

    fn start(&mut self, format: PcmFormat) -> Result<(), AudioError> {
        self.format = format;
        self.phase = 0.0;
        Ok(())
    }

    fn read(&mut self, out: &mut [f32]) {
        let channels = usize::from(self.format.channels.max(1));
        let step = self.frequency / f64::from(self.format.rate.max(1));
        for frame in out.chunks_mut(channels) {
            let value = (self.phase * std::f64::consts::TAU).sin() * 0.5;
            frame.fill(value as f32);
            self.phase = (self.phase + step).fract();
        }
    }

    fn stop(&mut self) {}
}

/// A playback backend as the user names it: `host`, `none` or `wav:FILE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkConfig {
    /// The host's default output device (cpal), or Null without one.
    Host,
    /// No sound.
    None,
    /// A WAV file, written as the guest plays.
    Wav(std::path::PathBuf),
}

/// A capture backend as the user names it: `host`, `none`, `wav:FILE` or
/// `tone:HZ`.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceConfig {
    /// The host's default input device (cpal), or silence without one.
    Host,
    /// Silence.
    None,
    /// A WAV file, looped.
    Wav(std::path::PathBuf),
    /// A sine tone of this many Hz.
    Tone(f64),
}

impl std::str::FromStr for SinkConfig {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "host" => Ok(Self::Host),
            "none" => Ok(Self::None),
            _ => match s.strip_prefix("wav:") {
                Some(path) if !path.is_empty() => Ok(Self::Wav(path.into())),
                _ => Err(format!(
                    "unknown sound backend '{s}' (expected host, none or wav:FILE)"
                )),
            },
        }
    }
}

impl std::str::FromStr for SourceConfig {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("unknown capture source '{s}' (expected host, none, wav:FILE or tone:HZ)");
        match s {
            "host" => Ok(Self::Host),
            "none" => Ok(Self::None),
            _ => {
                if let Some(path) = s.strip_prefix("wav:").filter(|p| !p.is_empty()) {
                    return Ok(Self::Wav(path.into()));
                }
                let hz: f64 = s
                    .strip_prefix("tone:")
                    .and_then(|hz| hz.parse().ok())
                    .ok_or_else(bad)?;
                if hz.is_finite() && hz > 0.0 && hz < 96_000.0 {
                    Ok(Self::Tone(hz))
                } else {
                    Err(bad())
                }
            }
        }
    }
}

static NO_DEVICE_TOLD: std::sync::Once = std::sync::Once::new();

/// Tells the user, once per process, that sound goes nowhere.
fn tell_no_device(err: &AudioError) {
    NO_DEVICE_TOLD.call_once(|| {
        log::warn!("{err}; the VM runs without sound");
        eprintln!("nestbox: {err}; the VM runs without sound");
    });
}

/// Opens the playback backend `config` names. The host's device falls
/// back to [`NullSink`] (telling the user once) when there is none; a WAV
/// file that cannot be created is an error.
pub fn open_sink(config: &SinkConfig) -> Result<Box<dyn AudioSink>, AudioError> {
    match config {
        SinkConfig::None => Ok(Box::new(NullSink)),
        SinkConfig::Wav(path) => Ok(Box::new(wav::WavSink::create(path)?)),
        SinkConfig::Host => match host::HostSink::open() {
            Ok(sink) => Ok(Box::new(sink)),
            Err(err) => {
                tell_no_device(&err);
                Ok(Box::new(NullSink))
            }
        },
    }
}

/// Opens the capture backend `config` names (the host's input device is
/// opened only when the guest starts recording).
pub fn open_source(config: &SourceConfig) -> Result<Box<dyn AudioSource>, AudioError> {
    match config {
        SourceConfig::None => Ok(Box::new(NullSource)),
        SourceConfig::Wav(path) => Ok(Box::new(wav::WavSource::open(path)?)),
        SourceConfig::Tone(hz) => Ok(Box::new(ToneSource::new(*hz))),
        SourceConfig::Host => Ok(Box::new(host::HostSource::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_sink_and_source_configs_parse() {
        assert_eq!("host".parse::<SinkConfig>(), Ok(SinkConfig::Host));
        assert_eq!(
            "wav:out.wav".parse::<SinkConfig>(),
            Ok(SinkConfig::Wav("out.wav".into()))
        );
        assert!("wav:".parse::<SinkConfig>().is_err());
        assert!("speaker".parse::<SinkConfig>().is_err());
        assert_eq!(
            "tone:1000".parse::<SourceConfig>(),
            Ok(SourceConfig::Tone(1000.0))
        );
        assert!("tone:-3".parse::<SourceConfig>().is_err());
        assert!("tone:NaN".parse::<SourceConfig>().is_err());
    }

    #[test]
    fn test_gain_follows_volume_and_mute() {
        let control = SoundControl::new(false);
        control.set_volume(0.5);
        assert_eq!(control.gain(), 0.5);
        control.set_muted(true);
        assert_eq!(control.gain(), 0.0);
        control.set_volume(f32::NAN);
        control.set_muted(false);
        assert_eq!(control.gain(), 0.0);
        assert!(!control.capture_enabled());
    }

    #[test]
    fn test_latency_histogram_quantiles() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100u64 {
            h.record(Duration::from_micros(ms * 1000 + 100));
        }
        h.record(Duration::from_secs(5));
        assert_eq!(h.count(), 101);
        assert_eq!(h.quantile(0.5), Some(Duration::from_micros(51_250)));
        assert_eq!(h.quantile(0.99), Some(Duration::from_micros(100_250)));
        assert_eq!(h.quantile(1.0), Some(Duration::from_secs(1)));
    }

    #[test]
    fn test_tone_source_has_its_pitch() {
        let mut tone = ToneSource::new(1000.0);
        tone.start(PcmFormat {
            rate: 48000,
            channels: 1,
        })
        .unwrap();
        let mut out = vec![0.0f32; 48000];
        tone.read(&mut out);
        let rising = out.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
        assert!((999..=1001).contains(&rising), "{rising}");
    }
}
