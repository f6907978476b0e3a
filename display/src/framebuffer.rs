// SPDX-License-Identifier: Apache-2.0
//! The shared framebuffer: one sealed memfd that the VM worker (writer)
//! draws the guest screen into and the GUI (reader) maps after receiving
//! the descriptor over `SCM_RIGHTS`.
//!
//! Layout of the memfd:
//!
//! ```text
//! 0        CURSOR_OFFSET           HEADER_SIZE                        HEADER_SIZE + capacity
//! | Header | guest pointer image | pixel storage (capacity bytes) ... |
//! ```
//!
//! The guest's pointer (a virtio-gpu guest's cursor: a 64 × 64 RGBA image,
//! its hotspot and where the guest put it) has a sequence counter of its
//! own, so a viewer draws it as the host pointer without a torn image.
//!
//! The header is a `#[repr(C)]` block of atomics. The mode fields (width,
//! height, stride, format) are guarded by a sequence counter so a reader
//! normally sees a consistent set. Each publish records its dirty
//! rectangle (packed into one 64-bit word) in a ring of the last
//! [`DIRTY_LOG`] publishes, stamped with its generation: any number of
//! readers each keep their own [`DirtyCursor`] and take the union of what
//! changed since they last looked, without taking it from the others; a
//! reader that fell more than [`DIRTY_LOG`] publishes behind (or finds a
//! slot rewritten under it) repaints all.
//!
//! The writer is the less trusted process, so every access, read or write,
//! re-validates the header against the size of the mapping this process made
//! itself: whatever the header says, nothing is read or written out of
//! bounds. Pixels are read without any lock, so a reader may see a frame
//! that is being drawn (tearing); the next publish repairs it.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use crate::rect::Rect;

/// "NBFB" in little-endian byte order.
pub const MAGIC: u32 = u32::from_le_bytes(*b"NBFB");
/// Layout version of the header; bumped on incompatible changes.
pub const VERSION: u32 = 4;
/// Bytes reserved for the header; the pixels start at this (page-aligned)
/// offset.
pub const HEADER_SIZE: usize = CURSOR_OFFSET + CURSOR_BYTES;
/// Where the guest pointer's image starts (after the header block).
pub const CURSOR_OFFSET: usize = 4096;
/// The side of the guest pointer's image, in pixels.
pub const CURSOR_SIZE: u32 = 64;
/// Bytes of the guest pointer's image (RGBA8).
pub const CURSOR_BYTES: usize = (CURSOR_SIZE * CURSOR_SIZE * 4) as usize;
/// Bytes per pixel of every supported format.
pub const BYTES_PER_PIXEL: u32 = 4;
/// Default capacity: the largest width [`SharedFramebuffer::with_default_capacity`] allows.
pub const DEFAULT_MAX_WIDTH: u32 = 2560;
/// Default capacity: the largest height [`SharedFramebuffer::with_default_capacity`] allows.
pub const DEFAULT_MAX_HEIGHT: u32 = 1600;
/// The largest width or height a framebuffer may be created with or set to
/// (the dirty rectangle packs coordinates into 16 bits).
pub const MAX_DIMENSION: u32 = 16384;

/// How many publishes' dirty rectangles the header keeps for readers.
pub const DIRTY_LOG: usize = 64;

/// How many times a reader spins, then yields, while the writer is
/// changing the mode, before giving up with [`FramebufferError::Busy`].
const SEQ_SPINS: usize = 64;
const SEQ_YIELDS: usize = 1000;

/// The order of a pixel's bytes in memory (4 bytes per pixel, the 4th ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Bytes R, G, B, X in memory.
    Rgbx8888,
    /// Bytes B, G, R, X in memory (what most guest drivers produce:
    /// `XRGB8888` in little-endian DRM naming).
    Bgrx8888,
}

impl PixelFormat {
    /// The value stored in the header.
    pub const fn to_raw(self) -> u32 {
        match self {
            PixelFormat::Rgbx8888 => 0,
            PixelFormat::Bgrx8888 => 1,
        }
    }

    /// The format for a header value, None if unknown.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(PixelFormat::Rgbx8888),
            1 => Some(PixelFormat::Bgrx8888),
            _ => None,
        }
    }
}

/// A snapshot of the header, validated against the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Width in pixels (0 until the writer sets a mode).
    pub width: u32,
    /// Height in pixels (0 until the writer sets a mode).
    pub height: u32,
    /// Bytes from the start of one row to the next.
    pub stride: u32,
    /// Pixel byte order.
    pub format: PixelFormat,
    /// Bumped on every publish.
    pub generation: u64,
    /// Bumped on every mode (size or format) change.
    pub mode: u64,
}

/// Errors of the shared framebuffer.
#[derive(Debug, thiserror::Error)]
pub enum FramebufferError {
    /// A system call failed.
    #[error("{op}: {source}")]
    Os {
        /// The call that failed.
        op: &'static str,
        /// The error it returned.
        #[source]
        source: io::Error,
    },
    /// Width or height zero where a picture is needed.
    #[error("framebuffer size {width}x{height} has a zero side")]
    ZeroSize {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },
    /// The writer kept the header in the middle of a mode change.
    #[error("framebuffer header stays in the middle of a mode change")]
    Busy,
    /// A size that does not fit the pixel storage.
    #[error("framebuffer size {width}x{height} exceeds the capacity of {capacity} bytes")]
    TooLarge {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
        /// Bytes of pixel storage.
        capacity: u64,
    },
    /// The memfd is not a Nestbox framebuffer (bad size, magic or version).
    #[error("not a framebuffer: {0}")]
    NotAFramebuffer(&'static str),
    /// The memfd is not sealed against shrinking, so mapping it is unsafe.
    #[error("framebuffer memfd is not sealed against shrinking")]
    NotSealed,
    /// The header holds values that do not describe a frame inside the
    /// storage (a corrupt or hostile writer).
    #[error("invalid framebuffer header: {0}")]
    InvalidHeader(&'static str),
    /// Source data too short for the rows to write.
    #[error("source buffer too short: {needed} bytes needed, {got} given")]
    ShortBuffer {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
}

fn os_err(op: &'static str) -> FramebufferError {
    FramebufferError::Os {
        op,
        source: io::Error::last_os_error(),
    }
}

/// The header at the start of the mapping. Every field is an atomic so both
/// processes may touch it at any time.
#[repr(C)]
struct Header {
    magic: AtomicU32,
    version: AtomicU32,
    width: AtomicU32,
    height: AtomicU32,
    stride: AtomicU32,
    format: AtomicU32,
    /// The width the storage was sized for (informational).
    max_width: AtomicU32,
    /// The height the storage was sized for (informational).
    max_height: AtomicU32,
    /// Bumped on every publish.
    generation: AtomicU64,
    /// Sequence counter of the mode fields: odd while the writer changes
    /// them; `mode_seq / 2` is the mode counter.
    mode_seq: AtomicU64,
    /// Bumped after every publish and mode change; readers sleep on it
    /// with a futex (see [`SharedFramebuffer::wait_for_change`]).
    wake: AtomicU32,
    /// The dirty rectangles of the last [`DIRTY_LOG`] publishes: that of
    /// generation `g` in slot `g % DIRTY_LOG`.
    dirty_log: [DirtySlot; DIRTY_LOG],
    /// Sequence counter of the pointer fields and image: odd while the
    /// writer changes them.
    cursor_seq: AtomicU64,
    /// 1 while the guest shows a pointer.
    cursor_visible: AtomicU32,
    /// The hotspot in the image: x | y << 16.
    cursor_hot: AtomicU32,
    /// Where the guest put the hotspot on its screen: x | y << 16.
    cursor_at: AtomicU32,
    /// When the guest asked for the picture of the newest publish (a
    /// virtio-gpu flush), in [`monotonic_ns`]; 0 when unknown (a picture
    /// the host found changed by looking).
    flushed_at_ns: AtomicU64,
}

/// The time on `CLOCK_MONOTONIC` in nanoseconds: the same clock in every
/// process on the host (what [`std::time::Instant`] reads too).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives
    // across the call.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// `at` on the [`monotonic_ns`] clock.
pub fn instant_ns(at: std::time::Instant) -> u64 {
    let ago = u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX);
    monotonic_ns().saturating_sub(ago)
}

/// A pointer for [`SharedFramebuffer::set_pointer`].
#[derive(Debug, Clone, Copy)]
pub struct PointerImage<'a> {
    /// [`CURSOR_BYTES`] of RGBA8 (more is ignored).
    pub rgba: &'a [u8],
    /// The hotspot within the image.
    pub hot: (u32, u32),
    /// Where the guest put the hotspot on its screen.
    pub at: (u32, u32),
}

/// The guest's pointer as the shared framebuffer carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPointer {
    /// [`CURSOR_SIZE`] × [`CURSOR_SIZE`] RGBA8 pixels, rows packed.
    pub rgba: Vec<u8>,
    /// The hotspot within the image (each below [`CURSOR_SIZE`]).
    pub hot: (u32, u32),
    /// Where the guest put the hotspot on its screen.
    pub at: (u32, u32),
    /// Changes whenever the pointer does (a reader re-uploads then).
    pub generation: u64,
}

/// One publish's dirty rectangle, packed by [`pack_dirty`], stamped with
/// its generation (written as a sequence lock: the stamp is
/// [`SLOT_WRITING`] while the rectangle changes).
#[repr(C)]
struct DirtySlot {
    generation: AtomicU64,
    rect: AtomicU64,
}

/// The stamp of a slot being written.
const SLOT_WRITING: u64 = u64::MAX;

/// Where one reader is in a framebuffer's changes: what it has seen, so
/// [`SharedFramebuffer::dirty_since`] tells it what changed since, apart
/// from every other reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirtyCursor {
    /// The generation and mode the reader's copy is of; None before the
    /// first look (everything is new then).
    seen: Option<(u64, u64)>,
}

const _: () = assert!(std::mem::size_of::<Header>() <= CURSOR_OFFSET);

/// `(x, y)` packed as x | y << 16, each at most 16 bits.
fn pack_point((x, y): (u32, u32)) -> u32 {
    x.min(0xffff) | y.min(0xffff) << 16
}

fn unpack_point(v: u32) -> (u32, u32) {
    (v & 0xffff, v >> 16)
}

/// Packs a rectangle (already clipped to a surface no larger than
/// [`MAX_DIMENSION`]) as x0 | y0 << 16 | x1 << 32 | y1 << 48; 0 is empty.
fn pack_dirty(r: &Rect) -> u64 {
    if r.is_empty() {
        return 0;
    }
    let c = |v: u32| u64::from(v.min(u32::from(u16::MAX)));
    c(r.x) | c(r.y) << 16 | c(r.right()) << 32 | c(r.bottom()) << 48
}

/// The dirty-log slot of `generation`.
fn slot_of(generation: u64) -> usize {
    // The remainder is below DIRTY_LOG, so it fits a usize.
    (generation % DIRTY_LOG as u64) as usize
}

fn unpack_dirty(v: u64) -> Option<Rect> {
    // Truncation to 16 bits is the packing itself.
    let f = |shift: u32| u32::from((v >> shift) as u16);
    let (x0, y0, x1, y1) = (f(0), f(16), f(32), f(48));
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    Some(Rect::new(x0, y0, x1 - x0, y1 - y0))
}

/// A mapping of a framebuffer memfd; the same type serves the writer and the
/// reader side (see the module documentation).
pub struct SharedFramebuffer {
    fd: OwnedFd,
    base: NonNull<u8>,
    /// Length of the mapping (header plus storage).
    map_len: usize,
}

// SAFETY: the mapping is owned by this value and unmapped only in Drop; the
// header is accessed only through atomics and the pixel storage only through
// raw copies bounded by `map_len` (or `&mut self` for `pixels_mut`), so
// moving the value to another thread is sound.
unsafe impl Send for SharedFramebuffer {}
// SAFETY: every `&self` method touches shared memory only through atomics or
// raw copies that tolerate concurrent writers (another process writes it
// anyway); the only mutable slice is handed out through `&mut self`.
unsafe impl Sync for SharedFramebuffer {}

impl std::fmt::Debug for SharedFramebuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedFramebuffer")
            .field("fd", &self.fd.as_raw_fd())
            .field("capacity", &self.capacity())
            .field("info", &self.info().ok())
            .finish()
    }
}

impl SharedFramebuffer {
    /// Creates a framebuffer whose storage holds `max_width` x `max_height`
    /// pixels (any mode with no more bytes fits). The memfd is sealed
    /// against shrinking and growing; no mode is set yet (0x0).
    pub fn create(max_width: u32, max_height: u32) -> Result<Self, FramebufferError> {
        if max_width == 0 || max_height == 0 {
            return Err(FramebufferError::ZeroSize {
                width: max_width,
                height: max_height,
            });
        }
        if max_width > MAX_DIMENSION || max_height > MAX_DIMENSION {
            return Err(FramebufferError::TooLarge {
                width: max_width,
                height: max_height,
                capacity: u64::from(MAX_DIMENSION).pow(2) * u64::from(BYTES_PER_PIXEL),
            });
        }
        // At most 16384 * 16384 * 4 = 1 GiB: no overflow in usize on 64 bits,
        // and checked anyway.
        let capacity = (max_width as usize)
            .checked_mul(max_height as usize)
            .and_then(|v| v.checked_mul(BYTES_PER_PIXEL as usize))
            .ok_or(FramebufferError::TooLarge {
                width: max_width,
                height: max_height,
                capacity: 0,
            })?;
        let map_len = HEADER_SIZE + capacity;

        // SAFETY: the name is a valid NUL-terminated string; the flags are
        // plain bits.
        let raw = unsafe {
            libc::memfd_create(
                c"nestbox-framebuffer".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if raw < 0 {
            return Err(os_err("memfd_create"));
        }
        // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let file = File::from(fd);
        file.set_len(map_len as u64)
            .map_err(|source| FramebufferError::Os {
                op: "ftruncate",
                source,
            })?;
        let fd = OwnedFd::from(file);
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on a descriptor we own with an integer argument.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(os_err("fcntl(F_ADD_SEALS)"));
        }
        let fb = Self::map(fd, map_len)?;
        let h = fb.header();
        h.width.store(0, Ordering::Relaxed);
        h.height.store(0, Ordering::Relaxed);
        h.stride.store(0, Ordering::Relaxed);
        h.format
            .store(PixelFormat::Bgrx8888.to_raw(), Ordering::Relaxed);
        h.max_width.store(max_width, Ordering::Relaxed);
        h.max_height.store(max_height, Ordering::Relaxed);
        h.generation.store(0, Ordering::Relaxed);
        h.cursor_seq.store(0, Ordering::Relaxed);
        h.cursor_visible.store(0, Ordering::Relaxed);
        for slot in &h.dirty_log {
            slot.generation.store(SLOT_WRITING, Ordering::Relaxed);
            slot.rect.store(0, Ordering::Relaxed);
        }
        h.mode_seq.store(0, Ordering::Relaxed);
        h.wake.store(0, Ordering::Relaxed);
        h.version.store(VERSION, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(fb)
    }

    /// Creates a framebuffer with the default capacity
    /// ([`DEFAULT_MAX_WIDTH`] x [`DEFAULT_MAX_HEIGHT`]).
    pub fn with_default_capacity() -> Result<Self, FramebufferError> {
        Self::create(DEFAULT_MAX_WIDTH, DEFAULT_MAX_HEIGHT)
    }

    /// Maps a framebuffer memfd received from the writer. It must be sealed
    /// against shrinking (so the mapping can never fault) and carry the
    /// right magic and version; the capacity is taken from the file size,
    /// never from the header.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, FramebufferError> {
        // SAFETY: fcntl on a descriptor we own, no pointer arguments.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 {
            return Err(os_err("fcntl(F_GET_SEALS)"));
        }
        if seals & libc::F_SEAL_SHRINK == 0 {
            return Err(FramebufferError::NotSealed);
        }
        let file = File::from(fd);
        let len = file
            .metadata()
            .map_err(|source| FramebufferError::Os {
                op: "fstat",
                source,
            })?
            .len();
        let map_len = usize::try_from(len)
            .map_err(|_| FramebufferError::NotAFramebuffer("file too large"))?;
        if map_len < HEADER_SIZE {
            return Err(FramebufferError::NotAFramebuffer(
                "file smaller than the header",
            ));
        }
        let fb = Self::map(OwnedFd::from(file), map_len)?;
        let h = fb.header();
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Err(FramebufferError::NotAFramebuffer("bad magic"));
        }
        if h.version.load(Ordering::Relaxed) != VERSION {
            return Err(FramebufferError::NotAFramebuffer("unsupported version"));
        }
        Ok(fb)
    }

    fn map(fd: OwnedFd, map_len: usize) -> Result<Self, FramebufferError> {
        // SAFETY: a fresh shared mapping of a file we own; the kernel picks
        // the address, so no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(os_err("mmap"));
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(FramebufferError::Os {
            op: "mmap",
            source: io::Error::other("null mapping"),
        })?;
        Ok(Self { fd, base, map_len })
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER_SIZE bytes (checked before
        // mapping), page-aligned (so aligned for Header) and lives as long
        // as self; Header is all atomics, valid for any bit pattern and safe
        // to share with other processes.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    fn pixels_ptr(&self) -> *mut u8 {
        // SAFETY: HEADER_SIZE <= map_len, so the offset stays inside the mapping.
        unsafe { self.base.as_ptr().add(HEADER_SIZE) }
    }

    /// Bytes of pixel storage, as sized by this process's mapping.
    pub fn capacity(&self) -> usize {
        self.map_len - HEADER_SIZE
    }

    /// The memfd, to pass to the reader process (duplicate it with
    /// [`BorrowedFd::try_clone_to_owned`] to send it).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Checks a mode against the storage size.
    fn check_mode(&self, width: u32, height: u32, stride: u32) -> Result<(), FramebufferError> {
        if width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(FramebufferError::InvalidHeader("dimension over the limit"));
        }
        let row = u64::from(width) * u64::from(BYTES_PER_PIXEL);
        if u64::from(stride) < row {
            return Err(FramebufferError::InvalidHeader("stride shorter than a row"));
        }
        if u64::from(stride) * u64::from(height) > self.capacity() as u64 {
            return Err(FramebufferError::InvalidHeader(
                "frame larger than the storage",
            ));
        }
        Ok(())
    }

    /// Sets the size and format of the frame (writer side). The stride
    /// becomes `width * 4`, the mode counter is bumped and the whole frame
    /// is marked dirty. Refuses zero sizes and sizes over the capacity.
    pub fn set_mode(
        &self,
        width: u32,
        height: u32,
        format: PixelFormat,
    ) -> Result<(), FramebufferError> {
        if width == 0 || height == 0 {
            return Err(FramebufferError::ZeroSize { width, height });
        }
        let too_large = FramebufferError::TooLarge {
            width,
            height,
            capacity: self.capacity() as u64,
        };
        let stride = width
            .checked_mul(BYTES_PER_PIXEL)
            .ok_or(FramebufferError::TooLarge {
                width,
                height,
                capacity: self.capacity() as u64,
            })?;
        if self.check_mode(width, height, stride).is_err() {
            return Err(too_large);
        }
        let h = self.header();
        let seq = h.mode_seq.load(Ordering::Relaxed);
        // Make the counter odd (a torn value from a hostile peer is fixed up
        // the same way: round up to the next odd number).
        let start = seq | 1;
        h.mode_seq.store(start, Ordering::Relaxed);
        fence(Ordering::Release);
        h.width.store(width, Ordering::Relaxed);
        h.height.store(height, Ordering::Relaxed);
        h.stride.store(stride, Ordering::Relaxed);
        h.format.store(format.to_raw(), Ordering::Relaxed);
        h.mode_seq.store(start.wrapping_add(1), Ordering::Release);
        self.wake_waiters();
        Ok(())
    }

    /// The current header, a consistent snapshot validated against the
    /// mapping. A writer in the middle of a mode change is waited out
    /// briefly; one that stays there (crashed or hostile) gives
    /// [`FramebufferError::Busy`].
    pub fn info(&self) -> Result<FrameInfo, FramebufferError> {
        let h = self.header();
        let read = || {
            let s1 = h.mode_seq.load(Ordering::Acquire);
            let width = h.width.load(Ordering::Relaxed);
            let height = h.height.load(Ordering::Relaxed);
            let stride = h.stride.load(Ordering::Relaxed);
            let format = h.format.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            let s2 = h.mode_seq.load(Ordering::Relaxed);
            (s1 == s2 && s1 & 1 == 0, s2, width, height, stride, format)
        };
        let mut snapshot = read();
        for attempt in 0..SEQ_SPINS + SEQ_YIELDS {
            if snapshot.0 {
                break;
            }
            if attempt < SEQ_SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            snapshot = read();
        }
        let (consistent, seq, width, height, stride, format) = snapshot;
        if !consistent {
            return Err(FramebufferError::Busy);
        }
        let format = PixelFormat::from_raw(format)
            .ok_or(FramebufferError::InvalidHeader("unknown pixel format"))?;
        self.check_mode(width, height, stride)?;
        Ok(FrameInfo {
            width,
            height,
            stride,
            format,
            generation: h.generation.load(Ordering::Acquire),
            mode: seq / 2,
        })
    }

    /// Marks `dirty` (clipped to the frame) as changed and bumps the
    /// generation (writer side; one writer). Call after the pixels are
    /// written.
    pub fn publish(&self, dirty: Rect) -> Result<(), FramebufferError> {
        self.publish_flushed(dirty, 0)
    }

    /// [`publish`](Self::publish), noting that the guest asked for this
    /// picture at `flushed_at_ns` ([`monotonic_ns`]; 0: unknown).
    pub fn publish_flushed(&self, dirty: Rect, flushed_at_ns: u64) -> Result<(), FramebufferError> {
        let info = self.info()?;
        let h = self.header();
        let packed = dirty
            .clip_to(info.width, info.height)
            .map_or(0, |clipped| pack_dirty(&clipped));
        let generation = h.generation.load(Ordering::Acquire).wrapping_add(1);
        let slot = &h.dirty_log[slot_of(generation)];
        slot.generation.store(SLOT_WRITING, Ordering::Relaxed);
        fence(Ordering::Release);
        slot.rect.store(packed, Ordering::Relaxed);
        slot.generation.store(generation, Ordering::Release);
        h.flushed_at_ns.store(flushed_at_ns, Ordering::Relaxed);
        // The slot is complete before readers can see its generation.
        h.generation.store(generation, Ordering::Release);
        self.wake_waiters();
        Ok(())
    }

    /// When the guest asked for the newest published picture
    /// ([`monotonic_ns`]); None when unknown.
    pub fn flushed_at_ns(&self) -> Option<u64> {
        match self.header().flushed_at_ns.load(Ordering::Acquire) {
            0 => None,
            ns => Some(ns),
        }
    }

    /// The change counter readers wait on (moves with every publish and
    /// mode change).
    pub fn change_count(&self) -> u32 {
        self.header().wake.load(Ordering::Acquire)
    }

    /// Sleeps until the change counter is no longer `seen`, a wake-up
    /// ([`SharedFramebuffer::wake_waiters`]) or `timeout`, whichever comes
    /// first (reader side; the writer may be another process). Returns
    /// the counter then.
    pub fn wait_for_change(&self, seen: u32, timeout: std::time::Duration) -> u32 {
        let word = &self.header().wake;
        if word.load(Ordering::Acquire) == seen {
            let ts = libc::timespec {
                tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
            };
            // SAFETY: FUTEX_WAIT reads the aligned 32-bit word `word`, which
            // lives in this mapping for as long as `self`; `ts` outlives the
            // call. The kernel returns at once if the word is not `seen`.
            // Not FUTEX_PRIVATE: the writer is another process sharing the
            // memfd.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    word.as_ptr(),
                    libc::FUTEX_WAIT,
                    seen,
                    &ts as *const libc::timespec,
                    std::ptr::null::<u32>(),
                    0u32,
                );
            }
        }
        word.load(Ordering::Acquire)
    }

    /// Wakes every [`SharedFramebuffer::wait_for_change`] sleeping on this
    /// framebuffer in any process, or about to (e.g. to stop one): the
    /// counter moves too, so a waiter between its last look and its sleep
    /// does not sleep on.
    pub fn wake_waiters(&self) {
        let word = &self.header().wake;
        word.fetch_add(1, Ordering::AcqRel);
        // SAFETY: FUTEX_WAKE only uses the word's address, inside this
        // mapping; no memory is read or written through it.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE,
                i32::MAX,
                std::ptr::null::<libc::timespec>(),
                std::ptr::null::<u32>(),
                0u32,
            );
        }
    }

    /// Shows the guest's pointer (`Some`: its image, [`CURSOR_BYTES`] of
    /// RGBA8, hotspot and position) or hides it (writer side), and wakes
    /// the viewers.
    pub fn set_pointer(&self, pointer: Option<PointerImage<'_>>) -> Result<(), FramebufferError> {
        let pointer = match pointer {
            Some(PointerImage { rgba, hot, at }) => {
                let image = rgba
                    .get(..CURSOR_BYTES)
                    .ok_or(FramebufferError::ShortBuffer {
                        needed: CURSOR_BYTES,
                        got: rgba.len(),
                    })?;
                Some((image, hot, at))
            }
            None => None,
        };
        let h = self.header();
        let seq = h.cursor_seq.load(Ordering::Relaxed) | 1;
        h.cursor_seq.store(seq, Ordering::Relaxed);
        fence(Ordering::Release);
        match pointer {
            Some((image, hot, at)) => {
                // SAFETY: CURSOR_OFFSET + CURSOR_BYTES is HEADER_SIZE, which
                // the mapping holds (checked before mapping); `image` is a
                // distinct buffer of CURSOR_BYTES bytes. A reader may copy
                // concurrently: the sequence counter tells it.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        image.as_ptr(),
                        self.base.as_ptr().add(CURSOR_OFFSET),
                        CURSOR_BYTES,
                    );
                }
                let hot = (hot.0.min(CURSOR_SIZE - 1), hot.1.min(CURSOR_SIZE - 1));
                h.cursor_hot.store(pack_point(hot), Ordering::Relaxed);
                h.cursor_at.store(pack_point(at), Ordering::Relaxed);
                h.cursor_visible.store(1, Ordering::Relaxed);
            }
            None => h.cursor_visible.store(0, Ordering::Relaxed),
        }
        h.cursor_seq.store(seq.wrapping_add(1), Ordering::Release);
        self.wake_waiters();
        Ok(())
    }

    /// The guest's pointer, None while hidden (reader side). A pointer
    /// being changed is waited out briefly; one that stays so reads as
    /// hidden.
    pub fn pointer(&self) -> Option<GuestPointer> {
        let h = self.header();
        let mut rgba = vec![0u8; CURSOR_BYTES];
        for attempt in 0..SEQ_SPINS + SEQ_YIELDS {
            let s1 = h.cursor_seq.load(Ordering::Acquire);
            if s1 & 1 == 0 {
                let visible = h.cursor_visible.load(Ordering::Relaxed) == 1;
                let hot = unpack_point(h.cursor_hot.load(Ordering::Relaxed));
                let at = unpack_point(h.cursor_at.load(Ordering::Relaxed));
                // SAFETY: CURSOR_OFFSET..HEADER_SIZE is inside the mapping
                // and `rgba` is a distinct local buffer of CURSOR_BYTES; the
                // writer may change the source meanwhile, which the second
                // look at the counter catches (bytes are copied, no
                // reference to them is formed).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        self.base.as_ptr().add(CURSOR_OFFSET),
                        rgba.as_mut_ptr(),
                        CURSOR_BYTES,
                    );
                }
                fence(Ordering::Acquire);
                if h.cursor_seq.load(Ordering::Relaxed) == s1 {
                    let hot = (hot.0.min(CURSOR_SIZE - 1), hot.1.min(CURSOR_SIZE - 1));
                    return visible.then_some(GuestPointer {
                        rgba,
                        hot,
                        at,
                        generation: s1,
                    });
                }
            }
            if attempt < SEQ_SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        None
    }

    /// What changed since `cursor` last looked (reader side): None when
    /// nothing did, the whole frame after a mode change, on a first look
    /// or when the reader fell more than [`DIRTY_LOG`] publishes behind,
    /// else the union of the publishes' rectangles, clipped to the frame.
    /// Moves `cursor` to now; other readers' cursors are not touched.
    pub fn dirty_since(&self, cursor: &mut DirtyCursor) -> Option<Rect> {
        let info = self.info().ok()?;
        let whole = Rect::new(0, 0, info.width, info.height);
        let now = (info.generation, info.mode);
        let seen = cursor.seen.replace(now);
        let Some((seen_generation, seen_mode)) = seen else {
            return whole.clip_to(info.width, info.height);
        };
        if seen_mode != info.mode {
            return whole.clip_to(info.width, info.height);
        }
        let behind = info.generation.wrapping_sub(seen_generation);
        if behind == 0 {
            return None;
        }
        if behind > DIRTY_LOG as u64 {
            return whole.clip_to(info.width, info.height);
        }
        let h = self.header();
        let mut union: Option<Rect> = None;
        for step in 1..=behind {
            let generation = seen_generation.wrapping_add(step);
            let slot = &h.dirty_log[slot_of(generation)];
            let before = slot.generation.load(Ordering::Acquire);
            let packed = slot.rect.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            let after = slot.generation.load(Ordering::Relaxed);
            if before != generation || after != generation {
                // Rewritten under us (we fell behind): repaint all.
                return whole.clip_to(info.width, info.height);
            }
            if let Some(rect) = unpack_dirty(packed) {
                union = Some(union.map_or(rect, |u| u.union(&rect)));
            }
        }
        union?.clip_to(info.width, info.height)
    }

    /// Copies `rect` (clipped to the frame) out as RGBA8 rows, alpha 255,
    /// into `out` (cleared first, then `w * h * 4` bytes). Returns the
    /// rectangle actually copied, None when nothing of it is inside the
    /// frame. Never reads outside the storage, whatever the header says.
    pub fn copy_rect_rgba(
        &self,
        rect: Rect,
        out: &mut Vec<u8>,
    ) -> Result<Option<Rect>, FramebufferError> {
        out.clear();
        let info = self.info()?;
        let Some(r) = rect.clip_to(info.width, info.height) else {
            return Ok(None);
        };
        let total = r.width as usize * r.height as usize * BYTES_PER_PIXEL as usize;
        out.resize(total, 0);
        // SAFETY: `out` holds `total` bytes, what copy_rows writes for `r`.
        unsafe { self.copy_rows(&info, r, out.as_mut_ptr()) }?;
        to_rgba_in_place(out, info.format);
        Ok(Some(r))
    }

    /// [`copy_rect_rgba`](Self::copy_rect_rgba) straight into an egui
    /// image (one copy of the pixels, no scratch buffer): what a viewer
    /// uploads to its texture.
    pub fn copy_rect_image(
        &self,
        rect: Rect,
    ) -> Result<Option<(Rect, egui::ColorImage)>, FramebufferError> {
        let info = self.info()?;
        let Some(r) = rect.clip_to(info.width, info.height) else {
            return Ok(None);
        };
        let count = r.width as usize * r.height as usize;
        let mut pixels: Vec<egui::Color32> = Vec::with_capacity(count);
        // SAFETY: the vector has room for `count` pixels of 4 bytes, what
        // copy_rows writes for `r`; Color32 is a `repr(C)` `[u8; 4]`, so
        // every byte pattern is a colour.
        unsafe { self.copy_rows(&info, r, pixels.as_mut_ptr().cast::<u8>()) }?;
        // SAFETY: copy_rows returned Ok, so all `count` pixels are written.
        unsafe { pixels.set_len(count) };
        // SAFETY: the same memory as bytes: `count * 4` initialised bytes
        // that only this slice borrows while it lives.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(pixels.as_mut_ptr().cast::<u8>(), count * 4) };
        to_rgba_in_place(bytes, info.format);
        // Alpha is 255, so the premultiplied colour is the colour.
        Ok(Some((
            r,
            egui::ColorImage::new([r.width as usize, r.height as usize], pixels),
        )))
    }

    /// Copies the rows of `r` (inside the frame `info` describes) to `dst`,
    /// packed (`r.width * 4` bytes a row), as the framebuffer stores them.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `r.width * r.height * 4` bytes
    /// and not overlap the mapping.
    unsafe fn copy_rows(
        &self,
        info: &FrameInfo,
        r: Rect,
        dst: *mut u8,
    ) -> Result<(), FramebufferError> {
        let row_bytes = r.width as usize * BYTES_PER_PIXEL as usize;
        let stride = info.stride as usize;
        let x_off = r.x as usize * BYTES_PER_PIXEL as usize;
        for i in 0..r.height as usize {
            let start = (r.y as usize + i) * stride + x_off;
            // check_mode proved stride * height <= capacity and
            // x + w <= width <= stride / 4; check again locally so that this
            // copy is bounded on its own.
            let end = start + row_bytes;
            if end > self.capacity() {
                return Err(FramebufferError::InvalidHeader("row outside the storage"));
            }
            // SAFETY: start..end lies inside the pixel storage (checked just
            // above); the caller vouches for dst's row i. Another process
            // may be writing the source concurrently; bytes are copied
            // without forming a reference to them, and any torn value is
            // just a stale pixel.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.pixels_ptr().add(start),
                    dst.add(i * row_bytes),
                    row_bytes,
                );
            }
        }
        Ok(())
    }

    /// The whole current frame as RGBA8: `(width, height, bytes)`. Fails
    /// when the header is invalid or no mode is set.
    pub fn screenshot_rgba(&self) -> Result<(u32, u32, Vec<u8>), FramebufferError> {
        let info = self.info()?;
        if info.width == 0 || info.height == 0 {
            return Err(FramebufferError::ZeroSize {
                width: info.width,
                height: info.height,
            });
        }
        let mut out = Vec::new();
        self.copy_rect_rgba(Rect::new(0, 0, info.width, info.height), &mut out)?;
        Ok((info.width, info.height, out))
    }

    /// The pixel storage of the current frame, `stride * height` bytes in
    /// the current format (writer side). Call [`publish`](Self::publish)
    /// after changing it.
    pub fn pixels_mut(&mut self) -> Result<&mut [u8], FramebufferError> {
        let info = self.info()?;
        let len = info.stride as usize * info.height as usize;
        // SAFETY: info() validated stride * height <= capacity, so the slice
        // lies inside the mapping, which lives as long as the borrow of
        // self; `&mut self` makes it the only slice this process has. The
        // reader process only copies from it.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.pixels_ptr(), len) })
    }

    /// Copies `rect` of pixels (in the current format) from `src`, whose
    /// rows are `src_stride` bytes apart, into the frame (writer side).
    /// The rectangle must lie inside the frame. Does not publish.
    pub fn write_rows(
        &self,
        rect: Rect,
        src: &[u8],
        src_stride: usize,
    ) -> Result<(), FramebufferError> {
        let info = self.info()?;
        if rect.is_empty() {
            return Ok(());
        }
        if rect.right() > info.width || rect.bottom() > info.height {
            return Err(FramebufferError::TooLarge {
                width: rect.right(),
                height: rect.bottom(),
                capacity: self.capacity() as u64,
            });
        }
        let row_bytes = rect.width as usize * BYTES_PER_PIXEL as usize;
        if src_stride < row_bytes {
            return Err(FramebufferError::ShortBuffer {
                needed: row_bytes,
                got: src_stride,
            });
        }
        let needed = src_stride
            .checked_mul(rect.height as usize - 1)
            .and_then(|v| v.checked_add(row_bytes))
            .unwrap_or(usize::MAX);
        if src.len() < needed {
            return Err(FramebufferError::ShortBuffer {
                needed,
                got: src.len(),
            });
        }
        let stride = info.stride as usize;
        let x_off = rect.x as usize * BYTES_PER_PIXEL as usize;
        for i in 0..rect.height as usize {
            let start = (rect.y as usize + i) * stride + x_off;
            let end = start + row_bytes;
            let Some(row) = src.get(i * src_stride..i * src_stride + row_bytes) else {
                return Err(FramebufferError::ShortBuffer {
                    needed,
                    got: src.len(),
                });
            };
            if end > self.capacity() {
                return Err(FramebufferError::InvalidHeader("row outside the storage"));
            }
            // SAFETY: start..end lies inside the pixel storage (checked
            // above); the source is a local slice of exactly row_bytes
            // bytes, which cannot overlap the mapping's storage because it
            // is borrowed immutably while no &mut slice of it exists (that
            // needs &mut self).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    row.as_ptr(),
                    self.pixels_ptr().add(start),
                    row_bytes,
                );
            }
        }
        Ok(())
    }
}

impl Drop for SharedFramebuffer {
    fn drop(&mut self) {
        // SAFETY: base/map_len are exactly the mapping made in map(); no
        // reference into it can outlive self.
        let rc = unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_len) };
        if rc != 0 {
            log::warn!(
                "munmap of the framebuffer failed: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// Converts 4-byte pixels in `buf` from `format` to RGBA8 with alpha 255.
pub fn to_rgba_in_place(buf: &mut [u8], format: PixelFormat) {
    match format {
        PixelFormat::Rgbx8888 => {
            for px in buf.chunks_exact_mut(4) {
                px[3] = 255;
            }
        }
        PixelFormat::Bgrx8888 => {
            for px in buf.chunks_exact_mut(4) {
                px.swap(0, 2);
                px[3] = 255;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(w: u32, h: u32) -> (SharedFramebuffer, SharedFramebuffer) {
        let writer = SharedFramebuffer::create(w, h).unwrap();
        let fd = writer.fd().try_clone_to_owned().unwrap();
        let reader = SharedFramebuffer::from_fd(fd).unwrap();
        (writer, reader)
    }

    #[test]
    fn test_writer_and_reader_see_same_pixels() {
        let (mut writer, reader) = pair(64, 32);
        writer.set_mode(4, 2, PixelFormat::Rgbx8888).unwrap();
        let pixels = writer.pixels_mut().unwrap();
        for (i, b) in pixels.iter_mut().enumerate() {
            *b = i as u8;
        }
        writer.publish(Rect::new(0, 0, 4, 2)).unwrap();
        let mut out = Vec::new();
        let got = reader
            .copy_rect_rgba(Rect::new(1, 1, 2, 1), &mut out)
            .unwrap();
        assert_eq!(got, Some(Rect::new(1, 1, 2, 1)));
        // Row 1 starts at byte 16; pixel 1 at 20; alpha forced to 255.
        assert_eq!(out, vec![20, 21, 22, 255, 24, 25, 26, 255]);
        let info = reader.info().unwrap();
        assert_eq!((info.width, info.height, info.stride), (4, 2, 16));
        assert_eq!(info.generation, 1);
    }

    #[test]
    fn test_flush_time_travels_with_the_publish() {
        let (writer, reader) = pair(8, 8);
        writer.set_mode(8, 8, PixelFormat::Rgbx8888).unwrap();
        let flushed = instant_ns(std::time::Instant::now());
        assert!(flushed > 0 && flushed <= monotonic_ns());
        writer
            .publish_flushed(Rect::new(0, 0, 8, 8), flushed)
            .unwrap();
        assert_eq!(reader.flushed_at_ns(), Some(flushed));
        // A picture the host found by looking has no flush time.
        writer.publish(Rect::new(0, 0, 1, 1)).unwrap();
        assert_eq!(reader.flushed_at_ns(), None);
    }

    #[test]
    fn test_image_copy_is_the_rgba_copy() {
        for format in [PixelFormat::Rgbx8888, PixelFormat::Bgrx8888] {
            let (mut writer, reader) = pair(16, 8);
            writer.set_mode(5, 3, format).unwrap();
            for (i, b) in writer.pixels_mut().unwrap().iter_mut().enumerate() {
                *b = (i * 7) as u8;
            }
            writer.publish(Rect::new(0, 0, 5, 3)).unwrap();
            for rect in [Rect::new(1, 1, 3, 2), Rect::new(3, 0, 100, 100)] {
                let mut rgba = Vec::new();
                let copied = reader.copy_rect_rgba(rect, &mut rgba).unwrap().unwrap();
                let (area, image) = reader.copy_rect_image(rect).unwrap().unwrap();
                assert_eq!(area, copied);
                assert_eq!(image.size, [copied.width as usize, copied.height as usize]);
                let bytes: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
                assert_eq!(bytes, rgba, "{format:?} {rect:?}");
            }
            assert!(
                reader
                    .copy_rect_image(Rect::new(9, 9, 1, 1))
                    .unwrap()
                    .is_none()
            );
        }
    }

    #[test]
    fn test_write_rows_with_source_stride() {
        let (writer, reader) = pair(16, 16);
        writer.set_mode(3, 3, PixelFormat::Rgbx8888).unwrap();
        // A 2x2 source with 12-byte rows (4 bytes of padding).
        let src: Vec<u8> = (0..24).collect();
        writer.write_rows(Rect::new(1, 1, 2, 2), &src, 12).unwrap();
        let mut out = Vec::new();
        reader
            .copy_rect_rgba(Rect::new(1, 1, 2, 2), &mut out)
            .unwrap();
        assert_eq!(
            out,
            vec![0, 1, 2, 255, 4, 5, 6, 255, 12, 13, 14, 255, 16, 17, 18, 255]
        );
        assert!(matches!(
            writer.write_rows(Rect::new(2, 2, 2, 1), &src, 12),
            Err(FramebufferError::TooLarge { .. })
        ));
        assert!(matches!(
            writer.write_rows(Rect::new(0, 0, 2, 2), &src[..10], 12),
            Err(FramebufferError::ShortBuffer { .. })
        ));
        assert!(matches!(
            writer.write_rows(Rect::new(0, 0, 2, 2), &src, usize::MAX),
            Err(FramebufferError::ShortBuffer { .. })
        ));
    }

    #[test]
    fn test_dirty_rect_union_since_the_last_look() {
        let (writer, reader) = pair(100, 100);
        let mut cursor = DirtyCursor::default();
        writer.set_mode(100, 100, PixelFormat::Bgrx8888).unwrap();
        // A first look (and a mode change) is everything.
        assert_eq!(
            reader.dirty_since(&mut cursor),
            Some(Rect::new(0, 0, 100, 100))
        );
        assert_eq!(reader.dirty_since(&mut cursor), None);
        writer.publish(Rect::new(10, 10, 5, 5)).unwrap();
        writer.publish(Rect::new(50, 2, 10, 10)).unwrap();
        writer.publish(Rect::new(95, 95, 50, 50)).unwrap(); // clipped
        assert_eq!(
            reader.dirty_since(&mut cursor),
            Some(Rect::new(10, 2, 90, 98))
        );
        assert_eq!(reader.dirty_since(&mut cursor), None);
        writer.publish(Rect::new(200, 200, 5, 5)).unwrap(); // outside
        assert_eq!(reader.dirty_since(&mut cursor), None);
        assert_eq!(reader.info().unwrap().generation, 4);
        writer.set_mode(50, 50, PixelFormat::Bgrx8888).unwrap();
        assert_eq!(
            reader.dirty_since(&mut cursor),
            Some(Rect::new(0, 0, 50, 50))
        );
    }

    #[test]
    fn test_every_reader_sees_every_change_and_a_late_one_repaints_all() {
        // Two viewers of one VM (the app's console and a `nestbox start`
        // window): neither takes the other's changes.
        let (writer, reader) = pair(100, 100);
        let second = SharedFramebuffer::from_fd(writer.fd().try_clone_to_owned().unwrap()).unwrap();
        writer.set_mode(100, 100, PixelFormat::Rgbx8888).unwrap();
        let (mut a, mut b) = (DirtyCursor::default(), DirtyCursor::default());
        reader.dirty_since(&mut a);
        second.dirty_since(&mut b);

        writer.publish(Rect::new(1, 1, 2, 2)).unwrap();
        let a1 = reader.dirty_since(&mut a);
        writer.publish(Rect::new(10, 10, 2, 2)).unwrap();
        let a2 = reader.dirty_since(&mut a);
        let b12 = second.dirty_since(&mut b);

        assert_eq!(a1, Some(Rect::new(1, 1, 2, 2)));
        assert_eq!(a2, Some(Rect::new(10, 10, 2, 2)));
        assert_eq!(
            b12,
            Some(Rect::new(1, 1, 11, 11)),
            "both changes, none stolen"
        );
        // A reader more than DIRTY_LOG publishes behind repaints all.
        for i in 0..=DIRTY_LOG as u32 {
            writer.publish(Rect::new(i % 90, 0, 1, 1)).unwrap();
        }
        assert_eq!(reader.dirty_since(&mut a), Some(Rect::new(0, 0, 100, 100)));
        assert_eq!(second.dirty_since(&mut b), Some(Rect::new(0, 0, 100, 100)));
    }

    #[test]
    fn test_guest_pointer_travels_to_another_mapping_and_hides() {
        let (writer, reader) = pair(16, 16);
        assert_eq!(reader.pointer(), None, "none at first");
        let image: Vec<u8> = (0..CURSOR_BYTES).map(|i| i as u8).collect();
        let pointer = |rgba, hot, at| Some(PointerImage { rgba, hot, at });
        assert!(
            writer
                .set_pointer(pointer(&image[..10], (0, 0), (0, 0)))
                .is_err()
        );
        writer
            .set_pointer(pointer(&image, (3, 200), (640, 480)))
            .unwrap();
        let shown = reader.pointer().expect("shown");
        writer.set_pointer(None).unwrap();

        assert_eq!(shown.rgba, image);
        assert_eq!((shown.hot, shown.at), ((3, 63), (640, 480)));
        assert_eq!(reader.pointer(), None);
        // A writer stuck mid-change reads as hidden, not as a torn image.
        writer.header().cursor_seq.store(9, Ordering::Relaxed);
        assert_eq!(reader.pointer(), None);
    }

    #[test]
    fn test_hostile_dirty_log_is_clipped_or_repaints_all() {
        let (writer, reader) = pair(16, 16);
        writer.set_mode(16, 16, PixelFormat::Rgbx8888).unwrap();
        let mut cursor = DirtyCursor::default();
        reader.dirty_since(&mut cursor);
        let h = writer.header();
        // A generation far ahead: everything, once.
        h.generation.store(u64::MAX - 3, Ordering::Relaxed);
        assert_eq!(
            reader.dirty_since(&mut cursor),
            Some(Rect::new(0, 0, 16, 16))
        );
        // Slots with garbage stamps or rectangles.
        for slot in &h.dirty_log {
            slot.rect.store(u64::MAX, Ordering::Relaxed);
        }
        h.generation.store(u64::MAX - 1, Ordering::Relaxed);
        assert_eq!(
            reader.dirty_since(&mut cursor),
            Some(Rect::new(0, 0, 16, 16))
        );
        let g = u64::MAX;
        h.dirty_log[slot_of(g)]
            .generation
            .store(g, Ordering::Relaxed);
        h.dirty_log[slot_of(g)]
            .rect
            .store(0x0001_0000_0001_0000, Ordering::Relaxed);
        h.generation.store(g, Ordering::Relaxed);
        assert_eq!(reader.dirty_since(&mut cursor), None);
        // Wrapping round to 0 is one publish, not 2^64.
        writer.publish(Rect::new(2, 2, 100, 100)).unwrap();
        assert_eq!(
            reader.dirty_since(&mut cursor),
            Some(Rect::new(2, 2, 14, 14))
        );
    }

    #[test]
    fn test_bgrx_converted_to_rgba() {
        let (writer, reader) = pair(8, 8);
        writer.set_mode(2, 1, PixelFormat::Bgrx8888).unwrap();
        // Blue pixel then red pixel, in memory B,G,R,X.
        writer
            .write_rows(Rect::new(0, 0, 2, 1), &[255, 0, 0, 7, 0, 0, 255, 9], 8)
            .unwrap();
        let (w, h, rgba) = reader.screenshot_rgba().unwrap();
        assert_eq!((w, h), (2, 1));
        assert_eq!(rgba, vec![0, 0, 255, 255, 255, 0, 0, 255]);
    }

    #[test]
    fn test_corrupt_header_is_rejected_not_panicking() {
        let (writer, reader) = pair(16, 16);
        writer.set_mode(16, 16, PixelFormat::Rgbx8888).unwrap();
        let h = writer.header();
        let mut out = Vec::new();

        h.width.store(u32::MAX, Ordering::Relaxed);
        h.height.store(u32::MAX, Ordering::Relaxed);
        h.stride.store(u32::MAX, Ordering::Relaxed);
        assert!(reader.info().is_err());
        assert!(
            reader
                .copy_rect_rgba(Rect::new(0, 0, 16, 16), &mut out)
                .is_err()
        );
        assert!(reader.screenshot_rgba().is_err());
        assert_eq!(reader.dirty_since(&mut DirtyCursor::default()), None);

        // Plausible width but a stride that walks off the end.
        h.width.store(16, Ordering::Relaxed);
        h.height.store(16, Ordering::Relaxed);
        h.stride.store(16 * 4 * 2, Ordering::Relaxed);
        assert!(reader.info().is_err());
        // Stride shorter than a row.
        h.stride.store(4, Ordering::Relaxed);
        assert!(
            reader
                .copy_rect_rgba(Rect::new(0, 0, 1, 1), &mut out)
                .is_err()
        );
        // Unknown format.
        h.stride.store(64, Ordering::Relaxed);
        h.format.store(77, Ordering::Relaxed);
        assert!(reader.info().is_err());
        h.format.store(0, Ordering::Relaxed);
        // A writer stuck mid-update (odd sequence) makes the header busy.
        h.mode_seq.store(7, Ordering::Relaxed);
        assert!(matches!(reader.info(), Err(FramebufferError::Busy)));
        assert!(
            reader
                .copy_rect_rgba(Rect::new(0, 0, 1, 1), &mut out)
                .is_err()
        );
        h.mode_seq.store(8, Ordering::Relaxed);
        assert_eq!(reader.info().unwrap().mode, 4);
        // Huge rect request is clipped.
        let got = reader
            .copy_rect_rgba(Rect::new(0, 0, u32::MAX, u32::MAX), &mut out)
            .unwrap();
        assert_eq!(got, Some(Rect::new(0, 0, 16, 16)));
        assert_eq!(out.len(), 16 * 16 * 4);
    }

    #[test]
    fn test_corrupt_header_through_second_mapping() {
        let (writer, reader) = pair(8, 8);
        writer.set_mode(8, 8, PixelFormat::Rgbx8888).unwrap();
        // Write through a raw mapping of the file, as a hostile writer would.
        let fd = writer.fd().try_clone_to_owned().unwrap();
        let file = File::from(fd);
        use std::os::unix::fs::FileExt;
        let mut junk = vec![0xffu8; 64];
        junk[..8].copy_from_slice(&[b'N', b'B', b'F', b'B', 1, 0, 0, 0]);
        file.write_all_at(&junk, 0).unwrap();
        assert!(reader.info().is_err());
        let mut out = Vec::new();
        assert!(
            reader
                .copy_rect_rgba(Rect::new(0, 0, 8, 8), &mut out)
                .is_err()
        );
        // Garbage magic is refused on mapping.
        file.write_all_at(b"XXXX", 0).unwrap();
        let fd = writer.fd().try_clone_to_owned().unwrap();
        assert!(matches!(
            SharedFramebuffer::from_fd(fd),
            Err(FramebufferError::NotAFramebuffer(_))
        ));
    }

    #[test]
    fn test_mode_change_bumps_mode_and_refuses_bad_sizes() {
        let (writer, reader) = pair(64, 64);
        assert_eq!(reader.info().unwrap().mode, 0);
        assert_eq!(reader.info().unwrap().width, 0);
        writer.set_mode(64, 64, PixelFormat::Rgbx8888).unwrap();
        assert_eq!(reader.info().unwrap().mode, 1);
        writer.set_mode(32, 16, PixelFormat::Bgrx8888).unwrap();
        let info = reader.info().unwrap();
        assert_eq!(info.mode, 2);
        assert_eq!(info.format, PixelFormat::Bgrx8888);
        assert_eq!((info.width, info.height, info.stride), (32, 16, 128));
        // Same bytes in another shape fit.
        writer.set_mode(128, 32, PixelFormat::Bgrx8888).unwrap();
        assert!(matches!(
            writer.set_mode(0, 10, PixelFormat::Rgbx8888),
            Err(FramebufferError::ZeroSize { .. })
        ));
        assert!(matches!(
            writer.set_mode(65, 64, PixelFormat::Rgbx8888),
            Err(FramebufferError::TooLarge { .. })
        ));
        assert!(matches!(
            writer.set_mode(u32::MAX, 1, PixelFormat::Rgbx8888),
            Err(FramebufferError::TooLarge { .. })
        ));
        assert_eq!(reader.info().unwrap().mode, 3);
    }

    #[test]
    fn test_concurrent_mode_changes_read_consistently() {
        let (writer, reader) = pair(64, 64);
        writer.set_mode(64, 32, PixelFormat::Rgbx8888).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..20_000u32 {
                    let (w, h, f) = if i % 2 == 0 {
                        (32, 64, PixelFormat::Bgrx8888)
                    } else {
                        (64, 32, PixelFormat::Rgbx8888)
                    };
                    writer.set_mode(w, h, f).unwrap();
                    writer.publish(Rect::new(0, 0, w, h)).unwrap();
                }
            });
            let mut out = Vec::new();
            let mut cursor = DirtyCursor::default();
            for _ in 0..20_000 {
                let info = reader.info().unwrap();
                let shape = (info.width, info.height, info.stride, info.format);
                assert!(
                    shape == (32, 64, 128, PixelFormat::Bgrx8888)
                        || shape == (64, 32, 256, PixelFormat::Rgbx8888),
                    "{info:?}"
                );
                if let Some(r) = reader.dirty_since(&mut cursor) {
                    assert!(r.right() <= 64 && r.bottom() <= 64);
                }
                let _ = reader
                    .copy_rect_rgba(Rect::new(0, 0, 64, 64), &mut out)
                    .unwrap();
            }
        });
        assert_eq!(reader.info().unwrap().mode, 20_001);
    }

    #[test]
    fn test_unsealed_memfd_refused() {
        // SAFETY: valid NUL-terminated name.
        let raw = unsafe { libc::memfd_create(c"plain".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        assert!(matches!(
            SharedFramebuffer::from_fd(fd),
            Err(FramebufferError::NotSealed)
        ));
    }

    #[test]
    fn test_create_refuses_bad_capacity() {
        assert!(SharedFramebuffer::create(0, 10).is_err());
        assert!(SharedFramebuffer::create(MAX_DIMENSION + 1, 10).is_err());
        let fb = SharedFramebuffer::with_default_capacity().unwrap();
        assert_eq!(
            fb.capacity(),
            (DEFAULT_MAX_WIDTH * DEFAULT_MAX_HEIGHT * 4) as usize
        );
        fb.set_mode(DEFAULT_MAX_WIDTH, DEFAULT_MAX_HEIGHT, PixelFormat::Bgrx8888)
            .unwrap();
    }

    #[test]
    fn test_dirty_packing_round_trip() {
        let r = Rect::new(1, 2, 300, 400);
        assert_eq!(unpack_dirty(pack_dirty(&r)), Some(r));
        assert_eq!(unpack_dirty(pack_dirty(&Rect::default())), None);
    }
}
