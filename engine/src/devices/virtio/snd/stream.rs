// SPDX-License-Identifier: Apache-2.0
//! One PCM stream of the virtio sound device: its parameters, validated
//! against what the device supports, and its state machine (virtio spec
//! 1.2, 5.14.6.6.1): SET_PARAMS is allowed before START and after
//! RELEASE, PREPARE needs parameters, START follows PREPARE or STOP, STOP
//! follows START, RELEASE follows PREPARE or STOP.

use std::time::Duration;

use super::protocol::{D_INPUT, SampleFormat, SetParams, rate_from_code};
use crate::audio::PcmFormat;

/// The largest ring buffer a stream accepts, in bytes.
pub const MAX_BUFFER_BYTES: u32 = 4 << 20;
/// The largest period (one message) a stream accepts, in bytes.
pub const MAX_PERIOD_BYTES: u32 = 1 << 20;

/// A stream's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No parameters yet, or released.
    Released,
    /// Parameters set, not prepared.
    ParamsSet,
    /// Prepared: ready to start; messages queue but do not play.
    Prepared,
    /// Playing or recording.
    Started,
    /// Paused.
    Stopped,
}

/// A stream's accepted parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Sample format.
    pub format: SampleFormat,
    /// Frames per second.
    pub rate: u32,
    /// Channels per frame.
    pub channels: u8,
    /// Ring buffer size in bytes.
    pub buffer_bytes: u32,
    /// Period (message) size in bytes.
    pub period_bytes: u32,
}

impl Params {
    /// Bytes per frame.
    pub fn frame_bytes(&self) -> usize {
        self.format.bytes() * usize::from(self.channels)
    }

    /// The rate and channels, for the backends.
    pub fn pcm_format(&self) -> PcmFormat {
        PcmFormat {
            rate: self.rate,
            channels: u16::from(self.channels),
        }
    }

    /// How long `bytes` of audio play.
    pub fn duration_of(&self, bytes: usize) -> Duration {
        let frames = bytes / self.frame_bytes().max(1);
        Duration::from_nanos(
            u64::try_from(frames as u128 * 1_000_000_000 / u128::from(self.rate.max(1)))
                .unwrap_or(u64::MAX),
        )
    }

    /// Bytes of whole frames that play in at most `slice` (at least one
    /// frame).
    pub fn bytes_within(&self, slice: Duration) -> usize {
        let frames = u128::from(self.rate) * slice.as_nanos() / 1_000_000_000;
        let frames = usize::try_from(frames).unwrap_or(usize::MAX).max(1);
        frames.saturating_mul(self.frame_bytes().max(1))
    }

    /// Messages the ring buffer holds.
    pub fn periods(&self) -> usize {
        (self.buffer_bytes / self.period_bytes.max(1)) as usize
    }
}

/// Why a request on a stream was refused (all answered BAD_MSG or
/// NOT_SUPP; none stops the device).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The sample format is not supported.
    #[error("Unsupported sample format {0}")]
    Format(u8),
    /// The rate is not supported.
    #[error("Unsupported rate code {0}")]
    Rate(u8),
    /// The channel count is outside the stream's range.
    #[error("Unsupported channel count {0}")]
    Channels(u8),
    /// Features the device did not offer.
    #[error("Unsupported PCM features {0:#x}")]
    Features(u32),
    /// Buffer and period sizes that do not fit together or the frame.
    #[error("Bad buffer/period sizes {buffer}/{period}")]
    Sizes {
        /// buffer_bytes.
        buffer: u32,
        /// period_bytes.
        period: u32,
    },
    /// The request is not allowed in the stream's state.
    #[error("{request} is not allowed in state {state:?}")]
    State {
        /// The request.
        request: &'static str,
        /// The stream's state.
        state: State,
    },
}

/// A PCM stream's configuration and state.
#[derive(Clone, Debug)]
pub struct Stream {
    /// D_OUTPUT or D_INPUT.
    pub direction: u8,
    /// Fewest channels.
    pub channels_min: u8,
    /// Most channels.
    pub channels_max: u8,
    /// Where the state machine is.
    pub state: State,
    /// The parameters, once set.
    pub params: Option<Params>,
}

impl Stream {
    /// A new, released stream.
    pub fn new(direction: u8, channels_min: u8, channels_max: u8) -> Self {
        Self {
            direction,
            channels_min,
            channels_max,
            state: State::Released,
            params: None,
        }
    }

    /// True for a capture stream.
    pub fn is_input(&self) -> bool {
        self.direction == D_INPUT
    }

    /// Validates and records SET_PARAMS.
    pub fn set_params(&mut self, p: &SetParams) -> Result<(), StreamError> {
        if !matches!(
            self.state,
            State::Released | State::ParamsSet | State::Prepared
        ) {
            return Err(self.refuse("SET_PARAMS"));
        }
        let format = SampleFormat::from_code(p.format).ok_or(StreamError::Format(p.format))?;
        let rate = rate_from_code(p.rate).ok_or(StreamError::Rate(p.rate))?;
        if p.channels < self.channels_min || p.channels > self.channels_max {
            return Err(StreamError::Channels(p.channels));
        }
        if p.features != 0 {
            return Err(StreamError::Features(p.features));
        }
        let params = Params {
            format,
            rate,
            channels: p.channels,
            buffer_bytes: p.buffer_bytes,
            period_bytes: p.period_bytes,
        };
        let frame = u32::try_from(params.frame_bytes()).unwrap_or(u32::MAX);
        let sizes_ok = p.period_bytes > 0
            && p.period_bytes <= MAX_PERIOD_BYTES
            && p.buffer_bytes <= MAX_BUFFER_BYTES
            && p.period_bytes <= p.buffer_bytes
            && p.period_bytes % frame == 0
            && p.buffer_bytes % p.period_bytes == 0;
        if !sizes_ok {
            return Err(StreamError::Sizes {
                buffer: p.buffer_bytes,
                period: p.period_bytes,
            });
        }
        self.params = Some(params);
        self.state = State::ParamsSet;
        Ok(())
    }

    /// PREPARE.
    pub fn prepare(&mut self) -> Result<(), StreamError> {
        match (self.state, self.params) {
            (State::ParamsSet | State::Prepared | State::Released, Some(_)) => {
                self.state = State::Prepared;
                Ok(())
            }
            _ => Err(self.refuse("PREPARE")),
        }
    }

    /// START.
    pub fn start(&mut self) -> Result<(), StreamError> {
        match self.state {
            State::Prepared | State::Stopped => {
                self.state = State::Started;
                Ok(())
            }
            _ => Err(self.refuse("START")),
        }
    }

    /// STOP.
    pub fn stop(&mut self) -> Result<(), StreamError> {
        match self.state {
            State::Started => {
                self.state = State::Stopped;
                Ok(())
            }
            _ => Err(self.refuse("STOP")),
        }
    }

    /// RELEASE (parameters are kept for a later PREPARE).
    pub fn release(&mut self) -> Result<(), StreamError> {
        match self.state {
            State::Prepared | State::Stopped => {
                self.state = State::Released;
                Ok(())
            }
            _ => Err(self.refuse("RELEASE")),
        }
    }

    /// True when I/O messages may queue on the stream.
    pub fn accepts_io(&self) -> bool {
        matches!(
            self.state,
            State::Prepared | State::Started | State::Stopped
        )
    }

    fn refuse(&self, request: &'static str) -> StreamError {
        StreamError::State {
            request,
            state: self.state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::protocol::D_OUTPUT;
    use super::*;

    fn params(format: u8, rate: u8, channels: u8, buffer: u32, period: u32) -> SetParams {
        SetParams {
            stream_id: 0,
            buffer_bytes: buffer,
            period_bytes: period,
            features: 0,
            channels,
            format,
            rate,
        }
    }

    #[test]
    fn test_state_machine_follows_the_spec() {
        let mut s = Stream::new(D_OUTPUT, 1, 2);
        assert!(s.prepare().is_err(), "PREPARE needs parameters");
        assert!(s.start().is_err());
        s.set_params(&params(5, 7, 2, 16384, 4096)).unwrap();
        s.prepare().unwrap();
        s.start().unwrap();
        assert!(s.set_params(&params(5, 7, 2, 16384, 4096)).is_err());
        assert!(s.release().is_err(), "RELEASE while running");
        s.stop().unwrap();
        assert!(s.stop().is_err());
        s.start().unwrap();
        s.stop().unwrap();
        s.release().unwrap();
        s.prepare().unwrap();
        assert_eq!(s.state, State::Prepared);
    }

    #[test]
    fn test_each_supported_format_rate_and_channel_count_is_accepted() {
        for format in [5u8, 15, 17, 19] {
            for rate in 1u8..=12 {
                for channels in 1u8..=2 {
                    let mut s = Stream::new(D_OUTPUT, 1, 2);
                    let frame = u32::from(channels) * if format == 5 { 2 } else { 4 };
                    s.set_params(&params(format, rate, channels, frame * 1024, frame * 256))
                        .unwrap();
                }
            }
        }
    }

    #[test]
    fn test_unsupported_params_are_refused() {
        let mut s = Stream::new(D_OUTPUT, 1, 2);
        assert_eq!(
            s.set_params(&params(3, 7, 2, 4096, 1024)),
            Err(StreamError::Format(3))
        );
        assert_eq!(
            s.set_params(&params(5, 0, 2, 4096, 1024)),
            Err(StreamError::Rate(0))
        );
        assert_eq!(
            s.set_params(&params(5, 7, 3, 4096, 1024)),
            Err(StreamError::Channels(3))
        );
        assert_eq!(
            s.set_params(&params(5, 7, 0, 4096, 1024)),
            Err(StreamError::Channels(0))
        );
        // A period that is not whole frames, zero, larger than the buffer
        // or not dividing it; a huge buffer.
        for (buffer, period) in [
            (4096, 1023),
            (4096, 0),
            (1024, 4096),
            (4096, 1536),
            (MAX_BUFFER_BYTES * 2, 4096),
        ] {
            assert!(
                s.set_params(&params(5, 7, 2, buffer, period)).is_err(),
                "{buffer}/{period}"
            );
        }
        let mut p = params(5, 7, 2, 4096, 1024);
        p.features = 1;
        assert_eq!(s.set_params(&p), Err(StreamError::Features(1)));
        assert_eq!(s.state, State::Released);
    }

    #[test]
    fn test_duration_of_a_period() {
        let p = Params {
            format: SampleFormat::S16,
            rate: 48000,
            channels: 2,
            buffer_bytes: 19200,
            period_bytes: 4800,
        };
        assert_eq!(p.duration_of(4800), Duration::from_millis(25));
        assert_eq!(p.periods(), 4);
    }
}
