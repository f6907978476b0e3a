// SPDX-License-Identifier: Apache-2.0
//! virtio-snd in a saved machine state: each stream's place in the PCM
//! state machine and its parameters. Messages the device holds (periods
//! playing or recording) are completed when the machine is brought to
//! rest, so the state has none: the guest has every buffer back, at the
//! cost of the few milliseconds of audio they held.
//!
//! A restored stream is walked through the same requests a driver sends
//! (SET_PARAMS, PREPARE, START, STOP, RELEASE), so a saved state gets the
//! checks a driver's requests get; a started stream starts its host side.

use serde::{Deserialize, Serialize};

use super::protocol::{RATES, SetParams};
use super::stream::{State, Stream, StreamError};
use super::{RXQ, Snd, TXQ};
use crate::devices::virtio::device_core::QueueDevice;
use crate::snapshot::{self, StateError};

const NAME: &str = "virtio-snd";

/// One of the driver's requests on a stream.
type Step = fn(&mut Stream) -> Result<(), StreamError>;

#[derive(Serialize, Deserialize)]
struct SavedParams {
    format: u8,
    rate: u32,
    channels: u8,
    buffer_bytes: u32,
    period_bytes: u32,
}

#[derive(Serialize, Deserialize)]
struct SavedStream {
    direction: u8,
    state: SavedPhase,
    params: Option<SavedParams>,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
enum SavedPhase {
    Released,
    ParamsSet,
    Prepared,
    Started,
    Stopped,
}

impl From<State> for SavedPhase {
    fn from(state: State) -> Self {
        match state {
            State::Released => Self::Released,
            State::ParamsSet => Self::ParamsSet,
            State::Prepared => Self::Prepared,
            State::Started => Self::Started,
            State::Stopped => Self::Stopped,
        }
    }
}

impl SavedStream {
    fn of(stream: &Stream) -> Self {
        Self {
            direction: stream.direction,
            state: stream.state.into(),
            params: stream.params.map(|p| SavedParams {
                format: p.format.code(),
                rate: p.rate,
                channels: p.channels,
                buffer_bytes: p.buffer_bytes,
                period_bytes: p.period_bytes,
            }),
        }
    }

    /// Takes `stream` (new, released) to this saved state through the
    /// driver's requests.
    fn replay(&self, stream: &mut Stream) -> Result<(), StreamError> {
        let Some(params) = &self.params else {
            return match self.state {
                SavedPhase::Released => Ok(()),
                // Every other state needs parameters.
                _ => Err(StreamError::State {
                    request: "SET_PARAMS",
                    state: State::Released,
                }),
            };
        };
        let rate = RATES
            .iter()
            .find(|(_, hz)| *hz == params.rate)
            .map(|(code, _)| *code)
            .ok_or(StreamError::Rate(0))?;
        stream.set_params(&SetParams {
            stream_id: 0,
            buffer_bytes: params.buffer_bytes,
            period_bytes: params.period_bytes,
            features: 0,
            channels: params.channels,
            format: params.format,
            rate,
        })?;
        let steps: &[Step] = match self.state {
            SavedPhase::ParamsSet => &[],
            SavedPhase::Prepared => &[Stream::prepare],
            SavedPhase::Started => &[Stream::prepare, Stream::start],
            SavedPhase::Stopped => &[Stream::prepare, Stream::start, Stream::stop],
            SavedPhase::Released => &[Stream::prepare, Stream::release],
        };
        steps.iter().try_for_each(|step| step(stream))
    }
}

impl Snd {
    /// Completes every message the streams hold (see the module text).
    pub(super) fn quiesce_streams(&mut self) {
        for io in &mut self.io {
            if !io.pending.is_empty() {
                io.flush = true;
            }
        }
        self.serve_active(TXQ);
        self.serve_active(RXQ);
    }

    pub(super) fn saved_streams(&self) -> Result<Vec<u8>, StateError> {
        let streams: Vec<SavedStream> = self.streams.iter().map(SavedStream::of).collect();
        snapshot::encode(NAME, &streams)
    }

    pub(super) fn restore_streams(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let saved: Vec<SavedStream> = snapshot::decode(NAME, bytes)?;
        if saved.len() != self.streams.len()
            || saved
                .iter()
                .zip(&self.streams)
                .any(|(s, now)| s.direction != now.direction)
        {
            return Err(snapshot::invalid(
                NAME,
                format!(
                    "it had {} streams when saved and has {} now (capture on or off)",
                    saved.len(),
                    self.streams.len()
                ),
            ));
        }
        let mut streams = self.streams.clone();
        for (index, (saved, stream)) in saved.iter().zip(&mut streams).enumerate() {
            *stream = Stream::new(stream.direction, stream.channels_min, stream.channels_max);
            saved
                .replay(stream)
                .map_err(|e| snapshot::invalid(NAME, format!("stream {index}: {e}")))?;
        }
        self.streams = streams;
        for stream in &self.streams {
            let (State::Started, Some(params)) = (stream.state, stream.params) else {
                continue;
            };
            let started = if stream.is_input() {
                self.source.start(params.pcm_format())
            } else {
                self.sink.start(params.pcm_format())
            };
            if let Err(e) = started {
                // As for a driver's START: the stream runs, its audio is lost.
                log::error!("virtio-snd: a restored stream cannot start: {e}");
            }
        }
        self.wake_now();
        Ok(())
    }
}
