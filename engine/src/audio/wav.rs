// SPDX-License-Identifier: Apache-2.0
//! WAV file backends: [`WavSink`] writes what the guest plays as 16-bit
//! PCM at the guest stream's rate and channel count, keeping the RIFF
//! header's sizes right after every write so the file is valid even if
//! the process dies; [`WavSource`] loops a 16-bit PCM or 32-bit float WAV
//! as the guest's recording (nearest-frame rate conversion, channels
//! mapped as needed).

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{AudioError, AudioSink, AudioSource, PcmFormat};

/// Size of the header [`WavSink`] writes.
const HEADER_BYTES: u32 = 44;

/// A canonical 44-byte RIFF/WAVE header for 16-bit PCM.
pub fn wav_header(format: PcmFormat, data_bytes: u32) -> [u8; 44] {
    let channels = format.channels;
    let block_align = channels.saturating_mul(2);
    let byte_rate = format.rate.saturating_mul(u32::from(block_align));
    let mut h = [0u8; 44];
    let fields: [(usize, &[u8]); 13] = [
        (0, b"RIFF"),
        (
            4,
            &data_bytes.saturating_add(HEADER_BYTES - 8).to_le_bytes(),
        ),
        (8, b"WAVE"),
        (12, b"fmt "),
        (16, &16u32.to_le_bytes()),
        (20, &1u16.to_le_bytes()),
        (22, &channels.to_le_bytes()),
        (24, &format.rate.to_le_bytes()),
        (28, &byte_rate.to_le_bytes()),
        (32, &block_align.to_le_bytes()),
        (34, &16u16.to_le_bytes()),
        (36, b"data"),
        (40, &data_bytes.to_le_bytes()),
    ];
    for (at, bytes) in fields {
        for (d, s) in h.iter_mut().skip(at).zip(bytes) {
            *d = *s;
        }
    }
    h
}

/// Writes playback to a WAV file. A stream with a different format than
/// the file's starts the file again.
pub struct WavSink {
    path: PathBuf,
    file: File,
    format: Option<PcmFormat>,
    data_bytes: u32,
    buf: Vec<u8>,
}

impl WavSink {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> Result<Self, AudioError> {
        let file = File::create(path).map_err(|source| AudioError::File {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            format: None,
            data_bytes: 0,
            buf: Vec::new(),
        })
    }

    fn io<T>(&self, result: std::io::Result<T>) -> Option<T> {
        result
            .map_err(|e| log::error!("sound: cannot write {}: {e}", self.path.display()))
            .ok()
    }

    fn write_header(&mut self) {
        let Some(format) = self.format else {
            return;
        };
        let header = wav_header(format, self.data_bytes);
        let r = self
            .file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.write_all(&header))
            .and_then(|_| self.file.seek(SeekFrom::End(0)));
        self.io(r);
    }
}

impl AudioSink for WavSink {
    fn name(&self) -> &'static str {
        "wav"
    }

    fn start(&mut self, format: PcmFormat) -> Result<(), AudioError> {
        if self.format != Some(format) {
            if self.format.is_some() {
                log::info!(
                    "sound: {} starts again at {} Hz, {} channels",
                    self.path.display(),
                    format.rate,
                    format.channels
                );
            }
            let r = self.file.set_len(0);
            self.io(r);
            self.format = Some(format);
            self.data_bytes = 0;
            self.write_header();
        }
        Ok(())
    }

    fn write(&mut self, samples: &[f32]) {
        if self.format.is_none() {
            return;
        }
        self.buf.clear();
        for s in samples {
            let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        // A WAV file holds at most 4 GiB of data.
        if self.data_bytes.checked_add(len).is_none() {
            return;
        }
        let r = self.file.write_all(&self.buf);
        if self.io(r).is_some() {
            self.data_bytes = self.data_bytes.saturating_add(len);
            self.write_header();
        }
    }

    fn stop(&mut self) {
        let r = self.file.flush();
        self.io(r);
    }
}

/// A parsed WAV file: interleaved samples and their format.
#[derive(Clone, Debug)]
pub struct WavData {
    /// Rate and channels.
    pub format: PcmFormat,
    /// Interleaved samples, -1.0..=1.0.
    pub samples: Vec<f32>,
}

/// Parses a 16-bit PCM or 32-bit float WAV file's bytes.
pub fn parse_wav(bytes: &[u8]) -> Result<WavData, String> {
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err("no RIFF/WAVE header".into());
    }
    let le16 = |at: usize| {
        bytes
            .get(at..at + 2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)
    };
    let mut at = 12usize;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    while let (Some(id), Some(len)) = (
        bytes.get(at..at + 4),
        crate::devices::virtio::snd::protocol::le32(bytes, at + 4),
    ) {
        let body = at + 8;
        let len = usize::try_from(len).map_err(|_| "chunk too large")?;
        if id == b"fmt " {
            let tag = le16(body).ok_or("short fmt chunk")?;
            let channels = le16(body + 2).ok_or("short fmt chunk")?;
            let rate = crate::devices::virtio::snd::protocol::le32(bytes, body + 4)
                .ok_or("short fmt chunk")?;
            let bits = le16(body + 14).ok_or("short fmt chunk")?;
            fmt = Some((tag, channels, rate, bits));
        } else if id == b"data" {
            let (tag, channels, rate, bits) = fmt.ok_or("data before fmt")?;
            if channels == 0 || rate == 0 {
                return Err("zero channels or rate".into());
            }
            let data = bytes.get(body..).unwrap_or(&[]);
            let data = data.get(..len.min(data.len())).unwrap_or(&[]);
            let samples = match (tag, bits) {
                (1, 16) => data
                    .chunks_exact(2)
                    .filter_map(|b| b.try_into().ok())
                    .map(|b: [u8; 2]| f32::from(i16::from_le_bytes(b)) / 32768.0)
                    .collect(),
                (3, 32) => data
                    .chunks_exact(4)
                    .filter_map(|b| b.try_into().ok())
                    .map(|b: [u8; 4]| f32::from_le_bytes(b).clamp(-1.0, 1.0))
                    .collect(),
                _ => return Err(format!("format {tag} with {bits} bits is not supported")),
            };
            return Ok(WavData {
                format: PcmFormat { rate, channels },
                samples,
            });
        }
        at = body.saturating_add(len).saturating_add(len % 2);
    }
    Err("no data chunk".into())
}

/// Loops a WAV file as the guest's recording.
pub struct WavSource {
    data: WavData,
    format: PcmFormat,
    // Position in source frames, as a fraction for rate conversion.
    position: f64,
}

impl WavSource {
    /// Reads `path`.
    pub fn open(path: &Path) -> Result<Self, AudioError> {
        let bytes = std::fs::read(path).map_err(|source| AudioError::File {
            path: path.display().to_string(),
            source,
        })?;
        let data = parse_wav(&bytes).map_err(|detail| AudioError::Format {
            path: path.display().to_string(),
            detail,
        })?;
        Ok(Self {
            format: data.format,
            data,
            position: 0.0,
        })
    }
}

impl AudioSource for WavSource {
    fn name(&self) -> &'static str {
        "wav"
    }

    fn start(&mut self, format: PcmFormat) -> Result<(), AudioError> {
        self.format = format;
        Ok(())
    }

    fn read(&mut self, out: &mut [f32]) {
        let src_ch = usize::from(self.data.format.channels.max(1));
        let frames = self.data.samples.len() / src_ch;
        let channels = usize::from(self.format.channels.max(1));
        if frames == 0 {
            out.fill(0.0);
            return;
        }
        let step = f64::from(self.data.format.rate) / f64::from(self.format.rate.max(1));
        for frame in out.chunks_mut(channels) {
            let index = (self.position as usize).min(frames - 1);
            for (c, sample) in frame.iter_mut().enumerate() {
                *sample = self
                    .data
                    .samples
                    .get(index * src_ch + c % src_ch)
                    .copied()
                    .unwrap_or(0.0);
            }
            self.position += step;
            if self.position >= frames as f64 {
                self.position -= frames as f64;
            }
        }
    }

    fn stop(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_wav_sink_writes_a_file_parse_wav_reads_back() {
        let path =
            std::env::temp_dir().join(format!("nestbox-wav-unit-{}.wav", std::process::id()));
        let format = PcmFormat {
            rate: 22050,
            channels: 2,
        };
        let mut sink = WavSink::create(&path).unwrap();
        sink.start(format).unwrap();
        sink.write(&[0.5, -0.5, 0.25, -0.25]);
        sink.write(&[1.0, -1.0]);
        sink.stop();
        let data = parse_wav(&std::fs::read(&path).unwrap()).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(data.format, format);
        assert_eq!(data.samples.len(), 6);
        assert!((data.samples[0] - 0.5).abs() < 1e-3);
        assert!((data.samples[5] + 1.0).abs() < 1e-3);
    }

    #[test]
    fn test_parse_wav_rejects_garbage() {
        assert!(parse_wav(b"").is_err());
        assert!(parse_wav(b"RIFF\0\0\0\0WAVEdata\xff\xff\xff\xff").is_err());
        let mut h = wav_header(
            PcmFormat {
                rate: 8000,
                channels: 1,
            },
            0,
        )
        .to_vec();
        h[20] = 2; // ADPCM
        assert!(parse_wav(&h).is_err());
    }
}
