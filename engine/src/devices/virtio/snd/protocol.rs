// SPDX-License-Identifier: Apache-2.0
//! The virtio-snd wire protocol (virtio spec 1.2, section 5.14): request
//! and status codes, the little-endian structures of the control, tx and
//! rx queues, and the PCM formats and rates with their sample sizes.
//!
//! Parsing never trusts a length: every structure is read from a byte
//! slice that must be at least its wire size, and every enum value is
//! checked against the table this device supports.

/// Request code: query jack information.
pub const R_JACK_INFO: u32 = 1;
/// Request code: remap a jack (not supported: NOT_SUPP).
pub const R_JACK_REMAP: u32 = 2;
/// Request code: query PCM stream information.
pub const R_PCM_INFO: u32 = 0x0100;
/// Request code: set a stream's parameters.
pub const R_PCM_SET_PARAMS: u32 = 0x0101;
/// Request code: prepare a stream.
pub const R_PCM_PREPARE: u32 = 0x0102;
/// Request code: release a stream.
pub const R_PCM_RELEASE: u32 = 0x0103;
/// Request code: start a stream.
pub const R_PCM_START: u32 = 0x0104;
/// Request code: stop a stream.
pub const R_PCM_STOP: u32 = 0x0105;
/// Request code: query channel map information.
pub const R_CHMAP_INFO: u32 = 0x0200;

/// Status: success.
pub const S_OK: u32 = 0x8000;
/// Status: the request was malformed or not allowed now.
pub const S_BAD_MSG: u32 = 0x8001;
/// Status: the request is valid but not supported.
pub const S_NOT_SUPP: u32 = 0x8002;
/// Status: an I/O error on the host.
pub const S_IO_ERR: u32 = 0x8003;

/// Stream direction: playback (the guest writes, tx queue).
pub const D_OUTPUT: u8 = 0;
/// Stream direction: capture (the guest reads, rx queue).
pub const D_INPUT: u8 = 1;

/// Channel position: mono.
pub const CHMAP_MONO: u8 = 2;
/// Channel position: front left.
pub const CHMAP_FL: u8 = 3;
/// Channel position: front right.
pub const CHMAP_FR: u8 = 4;

/// Jack feature/HDA defaults are left 0; jacks report "connected".
pub const JACK_INFO_SIZE: usize = 24;
/// Wire size of `virtio_snd_pcm_info`.
pub const PCM_INFO_SIZE: usize = 32;
/// Wire size of `virtio_snd_chmap_info`.
pub const CHMAP_INFO_SIZE: usize = 24;
/// Wire size of `virtio_snd_hdr` (the request code).
pub const HDR_SIZE: usize = 4;
/// Wire size of `virtio_snd_query_info`.
pub const QUERY_INFO_SIZE: usize = 16;
/// Wire size of `virtio_snd_pcm_hdr`.
pub const PCM_HDR_SIZE: usize = 8;
/// Wire size of `virtio_snd_pcm_set_params`.
pub const SET_PARAMS_SIZE: usize = 24;
/// Wire size of `virtio_snd_pcm_xfer` (the tx/rx header).
pub const XFER_SIZE: usize = 4;
/// Wire size of `virtio_snd_pcm_status` (the tx/rx trailer).
pub const PCM_STATUS_SIZE: usize = 8;
/// Most channels in one channel map (`VIRTIO_SND_CHMAP_MAX_SIZE`).
pub const CHMAP_MAX_SIZE: usize = 18;

/// A sample format this device supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleFormat {
    /// Signed 16-bit little-endian.
    S16,
    /// Signed 24-bit in the low bits of a little-endian 32-bit container.
    S24,
    /// Signed 32-bit little-endian.
    S32,
    /// IEEE 754 32-bit float, little-endian.
    Float,
}

impl SampleFormat {
    /// Every supported format, in the wire code order.
    pub const ALL: [SampleFormat; 4] = [Self::S16, Self::S24, Self::S32, Self::Float];

    /// The format's wire code (`VIRTIO_SND_PCM_FMT_*`).
    pub fn code(self) -> u8 {
        match self {
            Self::S16 => 5,
            Self::S24 => 15,
            Self::S32 => 17,
            Self::Float => 19,
        }
    }

    /// The format with wire code `code`, if supported.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.code() == code)
    }

    /// Bytes per sample (one channel).
    pub fn bytes(self) -> usize {
        match self {
            Self::S16 => 2,
            Self::S24 | Self::S32 | Self::Float => 4,
        }
    }

    /// Decodes one little-endian sample to -1.0..=1.0; `bytes` holds
    /// [`bytes`](Self::bytes) bytes (shorter reads as 0).
    pub fn decode(self, bytes: &[u8]) -> f32 {
        let mut word = [0u8; 4];
        for (dst, src) in word.iter_mut().zip(bytes.iter().take(self.bytes())) {
            *dst = *src;
        }
        match self {
            Self::S16 => f32::from(i16::from_le_bytes([word[0], word[1]])) / 32768.0,
            // Sign-extend the low 24 bits.
            Self::S24 => ((i32::from_le_bytes(word) << 8) >> 8) as f32 / 8_388_608.0,
            Self::S32 => i32::from_le_bytes(word) as f32 / 2_147_483_648.0,
            Self::Float => {
                let v = f32::from_le_bytes(word);
                if v.is_finite() {
                    v.clamp(-1.0, 1.0)
                } else {
                    0.0
                }
            }
        }
    }

    /// Encodes `value` (clamped to -1.0..=1.0) into `out`, which holds
    /// [`bytes`](Self::bytes) bytes (extra bytes are left alone).
    pub fn encode(self, value: f32, out: &mut [u8]) {
        let v = if value.is_finite() {
            value.clamp(-1.0, 1.0)
        } else {
            0.0
        };
        let word: [u8; 4] = match self {
            Self::S16 => {
                let s = (v * 32767.0).round() as i16;
                let b = s.to_le_bytes();
                [b[0], b[1], 0, 0]
            }
            Self::S24 => ((v * 8_388_607.0).round() as i32).to_le_bytes(),
            Self::S32 => ((f64::from(v) * 2_147_483_647.0).round() as i32).to_le_bytes(),
            Self::Float => v.to_le_bytes(),
        };
        for (dst, src) in out.iter_mut().zip(word.iter().take(self.bytes())) {
            *dst = *src;
        }
    }
}

/// The frame rates this device supports, with their wire codes
/// (`VIRTIO_SND_PCM_RATE_*`).
pub const RATES: [(u8, u32); 12] = [
    (1, 8000),
    (2, 11025),
    (3, 16000),
    (4, 22050),
    (5, 32000),
    (6, 44100),
    (7, 48000),
    (8, 64000),
    (9, 88200),
    (10, 96000),
    (11, 176_400),
    (12, 192_000),
];

/// The rate in Hz for wire code `code`, if supported.
pub fn rate_from_code(code: u8) -> Option<u32> {
    RATES.iter().find(|(c, _)| *c == code).map(|(_, hz)| *hz)
}

/// The `formats` bitmap of `virtio_snd_pcm_info`.
pub fn formats_bitmap() -> u64 {
    SampleFormat::ALL
        .iter()
        .fold(0, |bits, f| bits | (1u64 << f.code()))
}

/// The `rates` bitmap of `virtio_snd_pcm_info`.
pub fn rates_bitmap() -> u64 {
    RATES
        .iter()
        .fold(0, |bits, (code, _)| bits | (1u64 << code))
}

/// Reads a little-endian u32 at `at`, if `bytes` holds it.
pub fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let b: [u8; 4] = bytes.get(at..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// `virtio_snd_query_info`: which items a *_INFO request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryInfo {
    /// The first item's id.
    pub start_id: u32,
    /// How many items.
    pub count: u32,
    /// The size the driver expects of each item's structure.
    pub size: u32,
}

impl QueryInfo {
    /// Parses a query from a whole request (header included).
    pub fn parse(request: &[u8]) -> Option<Self> {
        Some(Self {
            start_id: le32(request, 4)?,
            count: le32(request, 8)?,
            size: le32(request, 12)?,
        })
    }
}

/// `virtio_snd_pcm_set_params`, as the driver sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetParams {
    /// The stream.
    pub stream_id: u32,
    /// Size of the whole ring buffer, in bytes.
    pub buffer_bytes: u32,
    /// Size of one period (one tx/rx message), in bytes.
    pub period_bytes: u32,
    /// `VIRTIO_SND_PCM_F_*` features asked for.
    pub features: u32,
    /// Channels per frame.
    pub channels: u8,
    /// `VIRTIO_SND_PCM_FMT_*` code.
    pub format: u8,
    /// `VIRTIO_SND_PCM_RATE_*` code.
    pub rate: u8,
}

impl SetParams {
    /// Parses a whole SET_PARAMS request (header included).
    pub fn parse(request: &[u8]) -> Option<Self> {
        if request.len() < SET_PARAMS_SIZE {
            return None;
        }
        Some(Self {
            stream_id: le32(request, 4)?,
            buffer_bytes: le32(request, 8)?,
            period_bytes: le32(request, 12)?,
            features: le32(request, 16)?,
            channels: *request.get(20)?,
            format: *request.get(21)?,
            rate: *request.get(22)?,
        })
    }
}

/// Encodes a `virtio_snd_jack_info` for a connected jack of function
/// group `nid`.
pub fn jack_info(nid: u32) -> [u8; JACK_INFO_SIZE] {
    let mut out = [0u8; JACK_INFO_SIZE];
    put(&mut out, 0, &nid.to_le_bytes());
    // features, hda_reg_defconf, hda_reg_caps: 0; connected: 1.
    put(&mut out, 16, &[1]);
    out
}

/// Encodes a `virtio_snd_pcm_info`.
pub fn pcm_info(
    nid: u32,
    direction: u8,
    channels_min: u8,
    channels_max: u8,
) -> [u8; PCM_INFO_SIZE] {
    let mut out = [0u8; PCM_INFO_SIZE];
    put(&mut out, 0, &nid.to_le_bytes());
    // features (4..8): none.
    put(&mut out, 8, &formats_bitmap().to_le_bytes());
    put(&mut out, 16, &rates_bitmap().to_le_bytes());
    put(&mut out, 24, &[direction, channels_min, channels_max]);
    out
}

/// Encodes a `virtio_snd_chmap_info` with `positions` (at most
/// [`CHMAP_MAX_SIZE`] are kept).
pub fn chmap_info(nid: u32, direction: u8, positions: &[u8]) -> [u8; CHMAP_INFO_SIZE] {
    let mut out = [0u8; CHMAP_INFO_SIZE];
    put(&mut out, 0, &nid.to_le_bytes());
    let kept = positions.len().min(CHMAP_MAX_SIZE);
    put(&mut out, 4, &[direction, u8::try_from(kept).unwrap_or(0)]);
    put(&mut out, 6, positions.get(..kept).unwrap_or(&[]));
    out
}

/// Encodes a `virtio_snd_pcm_status`.
pub fn pcm_status(status: u32, latency_bytes: u32) -> [u8; PCM_STATUS_SIZE] {
    let mut out = [0u8; PCM_STATUS_SIZE];
    put(&mut out, 0, &status.to_le_bytes());
    put(&mut out, 4, &latency_bytes.to_le_bytes());
    out
}

/// Copies `src` into `dst` at `at`, as far as `dst` reaches.
fn put(dst: &mut [u8], at: usize, src: &[u8]) {
    for (d, s) in dst.iter_mut().skip(at).zip(src) {
        *d = *s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_formats_round_trip_within_one_step() {
        for format in SampleFormat::ALL {
            for value in [-1.0f32, -0.5, 0.0, 0.25, 0.999] {
                let mut bytes = [0u8; 4];
                format.encode(value, &mut bytes);
                let back = format.decode(&bytes);
                assert!((back - value).abs() < 1e-4, "{format:?} {value} -> {back}");
            }
        }
    }

    #[test]
    fn test_s24_sign_extends_the_low_24_bits() {
        assert_eq!(SampleFormat::S24.decode(&[0, 0, 0x80, 0]), -1.0);
        // Garbage in the container's top byte is ignored.
        assert_eq!(SampleFormat::S24.decode(&[0, 0, 0x80, 0x7f]), -1.0);
    }

    #[test]
    fn test_float_decode_rejects_nan_and_clamps() {
        assert_eq!(SampleFormat::Float.decode(&f32::NAN.to_le_bytes()), 0.0);
        assert_eq!(SampleFormat::Float.decode(&8.0f32.to_le_bytes()), 1.0);
    }

    #[test]
    fn test_unknown_codes_are_unsupported() {
        assert_eq!(SampleFormat::from_code(3), None); // S8
        assert_eq!(SampleFormat::from_code(0xff), None);
        assert_eq!(rate_from_code(0), None); // 5512 Hz
        assert_eq!(rate_from_code(13), None); // 384 kHz
        assert_eq!(rate_from_code(7), Some(48000));
    }

    #[test]
    fn test_short_requests_do_not_parse() {
        assert_eq!(SetParams::parse(&[0u8; SET_PARAMS_SIZE - 1]), None);
        assert_eq!(QueryInfo::parse(&[0u8; 15]), None);
        assert_eq!(le32(&[1, 2, 3], 0), None);
        assert_eq!(le32(&[1, 2, 3, 4], usize::MAX), None);
    }

    #[test]
    fn test_pcm_info_layout() {
        let info = pcm_info(0, D_INPUT, 1, 2);
        assert_eq!(info.get(24..27), Some(&[D_INPUT, 1, 2][..]));
        assert_eq!(le32(&info, 8), Some(formats_bitmap() as u32));
    }
}
