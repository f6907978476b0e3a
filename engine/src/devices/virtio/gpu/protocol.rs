// SPDX-License-Identifier: Apache-2.0
//! The virtio-gpu wire format (virtio spec 1.2, section 5.7.6): command and
//! response codes, the fixed layouts of the 2D and cursor commands, and
//! their parsing from (and encoding to) little-endian byte buffers.
//!
//! Parsing never trusts a length: every field is read through
//! [`Fields`], which returns `None` past the end of the buffer, and every
//! command has a fixed length ([`command_len`]) the chain is checked
//! against before the command is parsed.

use virtio_bindings::virtio_gpu as raw;

/// Feature bit number: the device answers GET_EDID.
pub const F_EDID: u32 = raw::VIRTIO_GPU_F_EDID;
/// Header flag: the driver asks for a fence (echoed in the response).
pub const FLAG_FENCE: u32 = raw::VIRTIO_GPU_FLAG_FENCE;
/// Header flag: `ring_idx` is valid (only with CONTEXT_INIT, not offered).
pub const FLAG_INFO_RING_IDX: u32 = raw::VIRTIO_GPU_FLAG_INFO_RING_IDX;
/// Config event bit: the host changed the display configuration.
pub const EVENT_DISPLAY: u32 = raw::VIRTIO_GPU_EVENT_DISPLAY;
/// The most scanouts a device may have.
pub const MAX_SCANOUTS: u32 = raw::VIRTIO_GPU_MAX_SCANOUTS;

/// Command: report the scanouts' preferred sizes.
pub const CMD_GET_DISPLAY_INFO: u32 = raw::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_DISPLAY_INFO;
/// Command: create a 2D resource.
pub const CMD_RESOURCE_CREATE_2D: u32 = raw::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_CREATE_2D;
/// Command: destroy a resource.
pub const CMD_RESOURCE_UNREF: u32 = raw::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_UNREF;
/// Command: show (part of) a resource on a scanout, or disable it.
pub const CMD_SET_SCANOUT: u32 = raw::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SET_SCANOUT;
/// Command: a rectangle of a resource changed; show it.
pub const CMD_RESOURCE_FLUSH: u32 = raw::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_FLUSH;
/// Command: copy a rectangle from the guest backing into the host copy.
pub const CMD_TRANSFER_TO_HOST_2D: u32 =
    raw::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D;
/// Command: give a resource its guest backing pages.
pub const CMD_RESOURCE_ATTACH_BACKING: u32 =
    raw::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING;
/// Command: take a resource's guest backing away.
pub const CMD_RESOURCE_DETACH_BACKING: u32 =
    raw::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING;
/// Command: describe a capability set (none exist here).
pub const CMD_GET_CAPSET_INFO: u32 = raw::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_CAPSET_INFO;
/// Command: a scanout's EDID.
pub const CMD_GET_EDID: u32 = raw::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_EDID;
/// The first 3D (context) command; contexts do not exist in 2D mode.
pub const CMD_CTX_CREATE: u32 = raw::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_CREATE;
/// The last 3D (context) command.
pub const CMD_RESOURCE_UNMAP_BLOB: u32 =
    raw::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB;
/// Cursor command: new cursor image (or hide) and position.
pub const CMD_UPDATE_CURSOR: u32 = raw::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_UPDATE_CURSOR;
/// Cursor command: new position only.
pub const CMD_MOVE_CURSOR: u32 = raw::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_MOVE_CURSOR;

/// Response: success, no payload.
pub const RESP_OK_NODATA: u32 = raw::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_NODATA;
/// Response: success, display info follows.
pub const RESP_OK_DISPLAY_INFO: u32 = raw::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_DISPLAY_INFO;
/// Response: success, an EDID follows.
pub const RESP_OK_EDID: u32 = raw::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_EDID;
/// Response: failure, no better code.
pub const RESP_ERR_UNSPEC: u32 = raw::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_UNSPEC;
/// Response: the device's memory for resources is exhausted.
pub const RESP_ERR_OUT_OF_MEMORY: u32 = raw::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY;
/// Response: no such scanout.
pub const RESP_ERR_INVALID_SCANOUT_ID: u32 =
    raw::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID;
/// Response: no such resource (or the id is taken, on create).
pub const RESP_ERR_INVALID_RESOURCE_ID: u32 =
    raw::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
/// Response: no such 3D context.
pub const RESP_ERR_INVALID_CONTEXT_ID: u32 =
    raw::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID;
/// Response: a field of the command is out of range.
pub const RESP_ERR_INVALID_PARAMETER: u32 =
    raw::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;

/// Length of `virtio_gpu_ctrl_hdr`.
pub const HDR_LEN: usize = 24;
/// Length of one `virtio_gpu_mem_entry` of RESOURCE_ATTACH_BACKING.
pub const MEM_ENTRY_LEN: usize = 16;
/// Length of the RESOURCE_ATTACH_BACKING command before its entries.
pub const ATTACH_BACKING_LEN: usize = HDR_LEN + 8;
/// Length of `virtio_gpu_resp_display_info` (16 modes of 24 bytes).
pub const DISPLAY_INFO_LEN: usize = HDR_LEN + 16 * 24;
/// The EDID payload size of `virtio_gpu_resp_edid`.
pub const EDID_BLOB_LEN: usize = 1024;
/// Length of `virtio_gpu_resp_edid`.
pub const EDID_RESP_LEN: usize = HDR_LEN + 8 + EDID_BLOB_LEN;

/// The length of command `kind`'s fixed layout, header included (the
/// header alone for a command this device does not parse).
pub fn command_len(kind: u32) -> usize {
    match kind {
        CMD_GET_EDID | CMD_RESOURCE_UNREF | CMD_RESOURCE_DETACH_BACKING | CMD_GET_CAPSET_INFO => {
            HDR_LEN + 8
        }
        CMD_RESOURCE_CREATE_2D => HDR_LEN + 16,
        CMD_SET_SCANOUT | CMD_RESOURCE_FLUSH => HDR_LEN + 24,
        CMD_TRANSFER_TO_HOST_2D => HDR_LEN + 32,
        CMD_RESOURCE_ATTACH_BACKING => ATTACH_BACKING_LEN,
        CMD_UPDATE_CURSOR | CMD_MOVE_CURSOR => HDR_LEN + 32,
        _ => HDR_LEN,
    }
}

/// The length of the successful response to command `kind` (errors are a
/// bare header, never longer).
pub fn response_len(kind: u32) -> usize {
    match kind {
        CMD_GET_DISPLAY_INFO => DISPLAY_INFO_LEN,
        CMD_GET_EDID => EDID_RESP_LEN,
        _ => HDR_LEN,
    }
}

/// Little-endian fields read in order from a byte buffer; `None` past its end.
pub struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    /// Reads `bytes` from its start.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.at.checked_add(N)?;
        let field = self.bytes.get(self.at..end)?.try_into().ok()?;
        self.at = end;
        Some(field)
    }

    /// The next byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }

    /// The next little-endian u32.
    pub fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    /// The next little-endian u64.
    pub fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    /// Skips `n` bytes (padding).
    pub fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.at.checked_add(n)?;
        (end <= self.bytes.len()).then(|| self.at = end)
    }

    /// The next `virtio_gpu_rect`.
    pub fn rect(&mut self) -> Option<Rect> {
        Some(Rect {
            x: self.u32()?,
            y: self.u32()?,
            width: self.u32()?,
            height: self.u32()?,
        })
    }
}

/// A rectangle in pixels (`virtio_gpu_rect`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Rect {
    /// A rectangle at (`x`, `y`) of `width` × `height`.
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Self {
        Self {
            x,
            y,
            width,
            height,
        }
    }

    /// Whether the rectangle covers no pixel.
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// Whether the rectangle lies within a `width` × `height` area (with
    /// overflow-checked edges; an empty rectangle must still start inside
    /// or on the edge).
    pub fn fits(&self, width: u32, height: u32) -> bool {
        let right = self.x.checked_add(self.width);
        let bottom = self.y.checked_add(self.height);
        matches!((right, bottom), (Some(r), Some(b)) if r <= width && b <= height)
    }

    /// The part of `self` inside `other` (both must fit in u32 space).
    pub fn intersect(&self, other: &Rect) -> Option<Rect> {
        let x = self.x.max(other.x);
        let y = self.y.max(other.y);
        let right = self
            .x
            .checked_add(self.width)?
            .min(other.x.checked_add(other.width)?);
        let bottom = self
            .y
            .checked_add(self.height)?
            .min(other.y.checked_add(other.height)?);
        let rect = Rect::new(x, y, right.checked_sub(x)?, bottom.checked_sub(y)?);
        (!rect.is_empty()).then_some(rect)
    }
}

/// A resource's pixel format: four bytes a pixel, named by their order in
/// memory (virtio spec 5.7.6.8; `B8G8R8X8` is DRM's little-endian XRGB8888).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    /// Bytes B, G, R, A.
    B8G8R8A8,
    /// Bytes B, G, R, unused.
    B8G8R8X8,
    /// Bytes A, R, G, B.
    A8R8G8B8,
    /// Bytes unused, R, G, B.
    X8R8G8B8,
    /// Bytes R, G, B, A.
    R8G8B8A8,
    /// Bytes unused, B, G, R.
    X8B8G8R8,
    /// Bytes A, B, G, R.
    A8B8G8R8,
    /// Bytes R, G, B, unused.
    R8G8B8X8,
}

impl PixelFormat {
    /// Bytes per pixel, for every format.
    pub const BYTES_PER_PIXEL: u32 = 4;

    /// The format of virtio format code `code`, if it is one of the 2D ones.
    pub fn from_virtio(code: u32) -> Option<Self> {
        Some(match code {
            raw::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM => Self::B8G8R8A8,
            raw::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM => Self::B8G8R8X8,
            raw::virtio_gpu_formats_VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM => Self::A8R8G8B8,
            raw::virtio_gpu_formats_VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM => Self::X8R8G8B8,
            raw::virtio_gpu_formats_VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM => Self::R8G8B8A8,
            raw::virtio_gpu_formats_VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM => Self::X8B8G8R8,
            raw::virtio_gpu_formats_VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM => Self::A8B8G8R8,
            raw::virtio_gpu_formats_VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM => Self::R8G8B8X8,
            _ => return None,
        })
    }

    /// The virtio format code.
    pub fn to_virtio(self) -> u32 {
        match self {
            Self::B8G8R8A8 => raw::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM,
            Self::B8G8R8X8 => raw::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM,
            Self::A8R8G8B8 => raw::virtio_gpu_formats_VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM,
            Self::X8R8G8B8 => raw::virtio_gpu_formats_VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM,
            Self::R8G8B8A8 => raw::virtio_gpu_formats_VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM,
            Self::X8B8G8R8 => raw::virtio_gpu_formats_VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM,
            Self::A8B8G8R8 => raw::virtio_gpu_formats_VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM,
            Self::R8G8B8X8 => raw::virtio_gpu_formats_VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM,
        }
    }

    /// One pixel of this format as bytes B, G, R, A (or unused) in memory
    /// order: DRM's little-endian XRGB8888 / pixman's x8r8g8b8.
    pub fn to_bgra(self, px: [u8; 4]) -> [u8; 4] {
        let [a, b, c, d] = px;
        match self {
            Self::B8G8R8A8 | Self::B8G8R8X8 => [a, b, c, d],
            Self::A8R8G8B8 | Self::X8R8G8B8 => [d, c, b, a],
            Self::R8G8B8A8 | Self::R8G8B8X8 => [c, b, a, d],
            Self::A8B8G8R8 | Self::X8B8G8R8 => [b, c, d, a],
        }
    }

    /// Whether the fourth channel is alpha (rather than unused).
    pub fn has_alpha(self) -> bool {
        matches!(
            self,
            Self::B8G8R8A8 | Self::A8R8G8B8 | Self::R8G8B8A8 | Self::A8B8G8R8
        )
    }
}

/// `virtio_gpu_ctrl_hdr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtrlHeader {
    /// Command or response code.
    pub kind: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// The fence to signal, with `FLAG_FENCE`.
    pub fence_id: u64,
    /// The 3D context (0 in 2D mode).
    pub ctx_id: u32,
    /// The context's ring, with `FLAG_INFO_RING_IDX`.
    pub ring_idx: u8,
}

impl CtrlHeader {
    /// Parses the header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let mut f = Fields::new(bytes);
        let header = Self {
            kind: f.u32()?,
            flags: f.u32()?,
            fence_id: f.u64()?,
            ctx_id: f.u32()?,
            ring_idx: f.u8()?,
        };
        f.skip(3)?;
        Some(header)
    }

    /// The header of the response `kind` to the command with this header:
    /// a fenced command's fence (and context, and ring) are echoed.
    pub fn response(&self, kind: u32) -> Self {
        if self.flags & FLAG_FENCE == 0 {
            return Self {
                kind,
                ..Self::default()
            };
        }
        Self {
            kind,
            flags: self.flags & (FLAG_FENCE | FLAG_INFO_RING_IDX),
            fence_id: self.fence_id,
            ctx_id: self.ctx_id,
            ring_idx: if self.flags & FLAG_INFO_RING_IDX != 0 {
                self.ring_idx
            } else {
                0
            },
        }
    }

    /// Appends the encoded header to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.kind.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.fence_id.to_le_bytes());
        out.extend_from_slice(&self.ctx_id.to_le_bytes());
        out.extend_from_slice(&[self.ring_idx, 0, 0, 0]);
    }
}

/// The cursor commands' body (`virtio_gpu_update_cursor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CursorCommand {
    /// The scanout the cursor is on.
    pub scanout_id: u32,
    /// Position of the hotspot on the scanout.
    pub x: u32,
    /// Position of the hotspot on the scanout.
    pub y: u32,
    /// The 64×64 resource holding the image (0 hides the cursor).
    pub resource_id: u32,
    /// The hotspot within the image.
    pub hot_x: u32,
    /// The hotspot within the image.
    pub hot_y: u32,
}

/// A parsed command (body after the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// GET_DISPLAY_INFO.
    GetDisplayInfo,
    /// GET_EDID.
    GetEdid {
        /// The scanout.
        scanout_id: u32,
    },
    /// RESOURCE_CREATE_2D.
    Create2d {
        /// The new resource's id.
        resource_id: u32,
        /// Its virtio format code.
        format: u32,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// RESOURCE_UNREF.
    Unref {
        /// The resource.
        resource_id: u32,
    },
    /// SET_SCANOUT.
    SetScanout {
        /// The part of the resource to show.
        rect: Rect,
        /// The scanout.
        scanout_id: u32,
        /// The resource (0 disables the scanout).
        resource_id: u32,
    },
    /// RESOURCE_FLUSH.
    Flush {
        /// The changed rectangle, in resource coordinates.
        rect: Rect,
        /// The resource.
        resource_id: u32,
    },
    /// TRANSFER_TO_HOST_2D.
    Transfer {
        /// The rectangle to copy, in resource coordinates.
        rect: Rect,
        /// Byte offset in the backing of the rectangle's top-left pixel.
        offset: u64,
        /// The resource.
        resource_id: u32,
    },
    /// RESOURCE_ATTACH_BACKING (its entries follow in the chain).
    AttachBacking {
        /// The resource.
        resource_id: u32,
        /// How many `virtio_gpu_mem_entry` follow.
        nr_entries: u32,
    },
    /// RESOURCE_DETACH_BACKING.
    DetachBacking {
        /// The resource.
        resource_id: u32,
    },
    /// GET_CAPSET_INFO.
    GetCapsetInfo {
        /// The capability set asked about.
        index: u32,
    },
    /// UPDATE_CURSOR.
    UpdateCursor(CursorCommand),
    /// MOVE_CURSOR.
    MoveCursor(CursorCommand),
    /// A 3D context command (no context exists in 2D mode).
    Context(u32),
    /// Any other command.
    Unsupported(u32),
}

impl Command {
    /// Parses the command with header `header` from `bytes` (header
    /// included); `None` when `bytes` is shorter than its layout.
    pub fn parse(header: &CtrlHeader, bytes: &[u8]) -> Option<Self> {
        let mut f = Fields::new(bytes);
        f.skip(HDR_LEN)?;
        Some(match header.kind {
            CMD_GET_DISPLAY_INFO => Self::GetDisplayInfo,
            CMD_GET_EDID => Self::GetEdid {
                scanout_id: f.u32()?,
            },
            CMD_RESOURCE_CREATE_2D => Self::Create2d {
                resource_id: f.u32()?,
                format: f.u32()?,
                width: f.u32()?,
                height: f.u32()?,
            },
            CMD_RESOURCE_UNREF => Self::Unref {
                resource_id: f.u32()?,
            },
            CMD_SET_SCANOUT => Self::SetScanout {
                rect: f.rect()?,
                scanout_id: f.u32()?,
                resource_id: f.u32()?,
            },
            CMD_RESOURCE_FLUSH => Self::Flush {
                rect: f.rect()?,
                resource_id: f.u32()?,
            },
            CMD_TRANSFER_TO_HOST_2D => Self::Transfer {
                rect: f.rect()?,
                offset: f.u64()?,
                resource_id: f.u32()?,
            },
            CMD_RESOURCE_ATTACH_BACKING => Self::AttachBacking {
                resource_id: f.u32()?,
                nr_entries: f.u32()?,
            },
            CMD_RESOURCE_DETACH_BACKING => Self::DetachBacking {
                resource_id: f.u32()?,
            },
            CMD_GET_CAPSET_INFO => Self::GetCapsetInfo { index: f.u32()? },
            CMD_UPDATE_CURSOR | CMD_MOVE_CURSOR => {
                let scanout_id = f.u32()?;
                let x = f.u32()?;
                let y = f.u32()?;
                f.skip(4)?;
                let cursor = CursorCommand {
                    scanout_id,
                    x,
                    y,
                    resource_id: f.u32()?,
                    hot_x: f.u32()?,
                    hot_y: f.u32()?,
                };
                if header.kind == CMD_UPDATE_CURSOR {
                    Self::UpdateCursor(cursor)
                } else {
                    Self::MoveCursor(cursor)
                }
            }
            kind @ CMD_CTX_CREATE..=CMD_RESOURCE_UNMAP_BLOB => Self::Context(kind),
            kind => Self::Unsupported(kind),
        })
    }
}

/// One `virtio_gpu_mem_entry`: a piece of a resource's guest backing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemEntry {
    /// Guest physical address.
    pub addr: u64,
    /// Length in bytes.
    pub length: u32,
}

/// Parses `bytes` as packed `virtio_gpu_mem_entry`s (a trailing partial
/// entry is ignored).
pub fn parse_mem_entries(bytes: &[u8]) -> Vec<MemEntry> {
    bytes
        .chunks_exact(MEM_ENTRY_LEN)
        .filter_map(|chunk| {
            let mut f = Fields::new(chunk);
            Some(MemEntry {
                addr: f.u64()?,
                length: f.u32()?,
            })
        })
        .collect()
}

/// Appends one display mode (`virtio_gpu_display_one`) to `out`.
pub fn encode_display_one(out: &mut Vec<u8>, rect: Rect, enabled: bool) {
    for value in [
        rect.x,
        rect.y,
        rect.width,
        rect.height,
        u32::from(enabled),
        0,
    ] {
        out.extend_from_slice(&value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_header_parse_and_fenced_response_echo() {
        // Arrange
        let mut bytes = Vec::new();
        CtrlHeader {
            kind: CMD_RESOURCE_FLUSH,
            flags: FLAG_FENCE,
            fence_id: 0x1122_3344_5566_7788,
            ctx_id: 7,
            ring_idx: 3,
        }
        .encode(&mut bytes);

        // Act
        let header = CtrlHeader::parse(&bytes).unwrap();
        let response = header.response(RESP_OK_NODATA);
        let plain = CtrlHeader { flags: 0, ..header }.response(RESP_OK_NODATA);

        // Assert
        assert_eq!(bytes.len(), HDR_LEN);
        assert_eq!(header.kind, CMD_RESOURCE_FLUSH);
        assert_eq!(response.flags, FLAG_FENCE);
        assert_eq!(response.fence_id, 0x1122_3344_5566_7788);
        assert_eq!(response.ctx_id, 7);
        assert_eq!(response.ring_idx, 0);
        assert_eq!(
            plain,
            CtrlHeader {
                kind: RESP_OK_NODATA,
                ..CtrlHeader::default()
            }
        );
        assert_eq!(CtrlHeader::parse(&bytes[..HDR_LEN - 1]), None);
    }

    #[test]
    fn test_command_parse_short_body_is_none() {
        // Arrange
        let header = CtrlHeader {
            kind: CMD_TRANSFER_TO_HOST_2D,
            ..CtrlHeader::default()
        };
        let bytes = vec![0u8; command_len(CMD_TRANSFER_TO_HOST_2D)];

        // Act
        let full = Command::parse(&header, &bytes);
        let short = Command::parse(&header, &bytes[..bytes.len() - 5]);

        // Assert
        assert!(matches!(full, Some(Command::Transfer { .. })));
        assert_eq!(short, None);
    }

    #[test]
    fn test_rect_fits_and_intersect_handle_overflow() {
        // Arrange
        let huge = Rect::new(u32::MAX, 0, 2, 1);
        let inside = Rect::new(10, 10, 20, 20);

        // Act / Assert
        assert!(!huge.fits(u32::MAX, u32::MAX));
        assert!(inside.fits(30, 30));
        assert!(!inside.fits(29, 30));
        assert_eq!(huge.intersect(&inside), None);
        assert_eq!(
            inside.intersect(&Rect::new(0, 0, 15, 100)),
            Some(Rect::new(10, 10, 5, 20))
        );
        assert_eq!(inside.intersect(&Rect::new(30, 0, 5, 5)), None);
    }

    #[test]
    fn test_every_2d_format_round_trips() {
        // Arrange
        let codes = [1, 2, 3, 4, 67, 68, 121, 134];

        // Act
        let formats: Vec<PixelFormat> = codes
            .iter()
            .filter_map(|&c| PixelFormat::from_virtio(c))
            .collect();

        // Assert
        assert_eq!(formats.len(), codes.len());
        for (format, code) in formats.iter().zip(codes) {
            assert_eq!(format.to_virtio(), code);
        }
        assert_eq!(PixelFormat::from_virtio(0), None);
        // Blue 1, green 2, red 3, alpha 4 in each format's byte order.
        assert_eq!(PixelFormat::A8R8G8B8.to_bgra([4, 3, 2, 1]), [1, 2, 3, 4]);
        assert_eq!(PixelFormat::R8G8B8X8.to_bgra([3, 2, 1, 4]), [1, 2, 3, 4]);
        assert_eq!(PixelFormat::X8B8G8R8.to_bgra([4, 1, 2, 3]), [1, 2, 3, 4]);
        assert_eq!(PixelFormat::B8G8R8A8.to_bgra([1, 2, 3, 4]), [1, 2, 3, 4]);
        assert_eq!(PixelFormat::from_virtio(5), None);
    }
}
