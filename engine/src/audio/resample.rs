// SPDX-License-Identifier: Apache-2.0
//! Converting a stream of interleaved `f32` samples from one rate and
//! channel count to another: channels are mapped first (mono is copied to
//! every channel, more channels wrap around the source's), then rubato's
//! asynchronous polynomial resampler changes the rate in fixed input
//! chunks. Equal rates skip the resampler, unless the converter is
//! [`Converter::adjustable`]: then its ratio can be nudged a little
//! ([`Converter::set_ratio_relative`]) to follow another clock.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Adjustable, Async, FixedAsync, PolynomialDegree, Resampler};

use super::PcmFormat;

/// Input frames per resampler call.
const CHUNK_FRAMES: usize = 256;
/// How far an adjustable converter's ratio may move either way (1 %).
const MAX_RELATIVE: f64 = 1.01;

/// A rate and channel converter.
pub struct Converter {
    from: PcmFormat,
    to: PcmFormat,
    resampler: Option<Async<f32>>,
    // Channel-mapped input waiting for a whole chunk.
    pending: Vec<f32>,
    mapped: Vec<f32>,
    out: Vec<f32>,
}

impl Converter {
    /// Converts from `from` to `to`; None when the resampler refuses the
    /// ratio (a rate of 0).
    pub fn new(from: PcmFormat, to: PcmFormat) -> Option<Self> {
        Self::build(from, to, false)
    }

    /// Like [`Converter::new`], but always resampling (equal rates too),
    /// so [`Converter::set_ratio_relative`] can follow another clock.
    pub fn adjustable(from: PcmFormat, to: PcmFormat) -> Option<Self> {
        Self::build(from, to, true)
    }

    fn build(from: PcmFormat, to: PcmFormat, adjustable: bool) -> Option<Self> {
        let channels = usize::from(to.channels);
        if from.rate == 0 || to.rate == 0 || channels == 0 || from.channels == 0 {
            return None;
        }
        let resampler = if from.rate == to.rate && !adjustable {
            None
        } else {
            let ratio = f64::from(to.rate) / f64::from(from.rate);
            Some(
                Async::<f32>::new_poly(
                    ratio,
                    MAX_RELATIVE,
                    PolynomialDegree::Cubic,
                    CHUNK_FRAMES,
                    channels,
                    FixedAsync::Input,
                )
                .ok()?,
            )
        };
        let out_len = resampler
            .as_ref()
            .map_or(0, |r| r.output_frames_max().saturating_mul(channels));
        Some(Self {
            from,
            to,
            resampler,
            pending: Vec::new(),
            mapped: Vec::new(),
            out: vec![0.0; out_len],
        })
    }

    /// The output format.
    pub fn output_format(&self) -> PcmFormat {
        self.to
    }

    /// Converts `input`; hands each converted run of samples to `emit`.
    pub fn push(&mut self, input: &[f32], emit: &mut dyn FnMut(&[f32])) {
        let from_ch = usize::from(self.from.channels);
        let to_ch = usize::from(self.to.channels);
        self.mapped.clear();
        for frame in input.chunks(from_ch) {
            for c in 0..to_ch {
                let sample = frame.get(c % frame.len().max(1)).copied().unwrap_or(0.0);
                self.mapped.push(sample);
            }
        }
        let Some(resampler) = self.resampler.as_mut() else {
            emit(&self.mapped);
            return;
        };
        self.pending.extend_from_slice(&self.mapped);
        let chunk = CHUNK_FRAMES.saturating_mul(to_ch);
        let mut used = 0;
        while self.pending.len().saturating_sub(used) >= chunk {
            let Some(block) = self.pending.get(used..used + chunk) else {
                break;
            };
            let frames_out = self.out.len() / to_ch.max(1);
            let (Ok(input), Ok(mut output)) = (
                InterleavedSlice::new(block, to_ch, CHUNK_FRAMES),
                InterleavedSlice::new_mut(&mut self.out, to_ch, frames_out),
            ) else {
                break;
            };
            match resampler.process_into_buffer(&input, &mut output, None) {
                Ok((_, written)) => {
                    if let Some(done) = self.out.get(..written.saturating_mul(to_ch)) {
                        emit(done);
                    }
                }
                Err(e) => log::warn!("sound: resampler failed: {e}"),
            }
            used += chunk;
        }
        self.pending.drain(..used);
    }

    /// Scales the rate ratio by `relative` (clamped to 1 % either way;
    /// above 1.0 makes more output samples), ramped over the next chunk.
    /// Does nothing without a resampler.
    pub fn set_ratio_relative(&mut self, relative: f64) {
        if let Some(r) = self.resampler.as_mut() {
            let relative = relative.clamp(1.0 / MAX_RELATIVE, MAX_RELATIVE);
            if let Err(e) = r.set_resample_ratio_relative(relative, true) {
                log::warn!("sound: resampler refused ratio {relative}: {e}");
            }
        }
    }

    /// Output samples the converter still holds back (input waiting for a
    /// whole chunk), approximately.
    pub fn pending_output(&self) -> usize {
        // Pending input is already channel-mapped, at the input rate.
        let samples =
            self.pending.len() as u64 * u64::from(self.to.rate) / u64::from(self.from.rate).max(1);
        usize::try_from(samples).unwrap_or(usize::MAX)
    }

    /// Drops buffered input (a stream stopped).
    pub fn reset(&mut self) {
        self.pending.clear();
        if let Some(r) = self.resampler.as_mut() {
            r.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f64, frames: usize, channels: usize) -> Vec<f32> {
        (0..frames)
            .flat_map(|i| {
                let v = (i as f64 * hz / f64::from(rate) * std::f64::consts::TAU).sin() as f32;
                std::iter::repeat_n(v, channels)
            })
            .collect()
    }

    fn rising(samples: &[f32], channels: usize) -> usize {
        let left: Vec<f32> = samples.iter().step_by(channels).copied().collect();
        left.windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count()
    }

    #[test]
    fn test_48k_stereo_to_44k1_keeps_pitch_and_length() {
        let from = PcmFormat {
            rate: 48000,
            channels: 2,
        };
        let to = PcmFormat {
            rate: 44100,
            channels: 2,
        };
        let mut conv = Converter::new(from, to).unwrap();
        let input = sine(48000, 440.0, 48000, 2);
        let mut out = Vec::new();
        for piece in input.chunks(960) {
            conv.push(piece, &mut |s| out.extend_from_slice(s));
        }
        let frames = out.len() / 2;
        assert!((43_500..=44_100).contains(&frames), "{frames}");
        let r = rising(&out, 2) as f64 * 44100.0 / frames as f64;
        assert!((r - 440.0).abs() < 5.0, "{r}");
    }

    #[test]
    fn test_mono_is_copied_to_both_channels_at_equal_rates() {
        let from = PcmFormat {
            rate: 8000,
            channels: 1,
        };
        let to = PcmFormat {
            rate: 8000,
            channels: 2,
        };
        let mut conv = Converter::new(from, to).unwrap();
        let mut out = Vec::new();
        conv.push(&[0.5, -0.25], &mut |s| out.extend_from_slice(s));
        assert_eq!(out, vec![0.5, 0.5, -0.25, -0.25]);
    }

    #[test]
    fn test_zero_rate_is_refused() {
        let bad = PcmFormat {
            rate: 0,
            channels: 2,
        };
        let good = PcmFormat {
            rate: 48000,
            channels: 2,
        };
        assert!(Converter::new(bad, good).is_none());
    }
}
