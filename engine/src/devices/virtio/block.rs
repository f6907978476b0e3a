// SPDX-License-Identifier: Apache-2.0
//! A virtio block device (virtio spec 1.2, section 5.2 "Block Device") over
//! a disk image behind the [`DiskBackend`] trait; [`RawFile`] serves raw
//! images and host block devices.
//!
//! The device has one request queue of up to [`QUEUE_SIZE`] entries and
//! offers VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
//! VIRTIO_RING_F_INDIRECT_DESC (a request of many segments then takes one
//! ring entry), VIRTIO_BLK_F_SEG_MAX,
//! VIRTIO_BLK_F_BLK_SIZE and VIRTIO_BLK_F_FLUSH, plus VIRTIO_BLK_F_DISCARD
//! and VIRTIO_BLK_F_WRITE_ZEROES on a writable image or VIRTIO_BLK_F_RO on
//! a read-only one. It serves IN, OUT, FLUSH, GET_ID, DISCARD and
//! WRITE_ZEROES requests synchronously, on the thread that calls
//! [`VirtioDevice::queue_notify`](super::VirtioDevice::queue_notify) (in a VM, the event loop serving the
//! notify ioeventfd, or a vCPU thread where there is none).
//!
//! Everything in a request comes from the guest and is treated as hostile.
//! Each descriptor chain is copied out of guest memory once and checked as
//! a whole (directions, lengths, guest addresses, sector range) before any
//! disk I/O; the chain's buffers are read as one device-readable byte
//! stream followed by one device-writable stream (any layout, spec 2.7.4),
//! whose last byte is the status. A bad request still completes: with an
//! error status, or with a used length of 0 when it has no status byte. A
//! broken queue stops processing and sets [`Block::needs_reset`].
//!
//! The request path does each guest-memory region lookup once: the
//! queue's descriptor table and rings are resolved to host slices once per
//! drain of the queue (the generic path through virtio-queue serves a
//! queue whose rings do not each lie in one region), and each descriptor's
//! buffer once, when the chain is collected; the header, the data and the
//! status are then accessed through those slices, with bounds checks but
//! no further lookups. Used entries are published once per batch of what
//! the driver made available, and the device counts them itself for
//! EVENT_IDX ([`Block::needs_notification`]). Reads go straight into guest
//! memory (`preadv`) and writes straight from it (`pwritev`) where the
//! backend can; everything else moves through
//! a bounce buffer of at most 1 MiB, whatever the request size. Serving a
//! request allocates nothing (an error's log line aside).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::num::Wrapping;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use arrayvec::ArrayVec;
use serde::{Deserialize, Serialize};

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_bindings::virtio_ring::VRING_USED_F_NO_NOTIFY;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, VolatileMemoryError as VolatileError,
    VolatileSlice,
};

use super::ErrorLog;
use super::device_core::{self, DeviceCore, GuestFault, QueueDevice, Step};
use super::{
    DeviceInfo, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
    device_type, read_config_bytes,
};
use crate::image_lock::ImageLock;
use crate::memory::GuestMemoryMmap;
use crate::snapshot::{self, StateError};

/// The largest size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// The unit of virtio-blk addressing, in bytes.
pub const SECTOR_SIZE: u64 = 512;
/// The most data segments a request may carry (config field `seg_max`):
/// a whole 1 MiB request of scattered 4 KiB pages plus header and status
/// fits one full-size chain (as QEMU offers).
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// The largest discard range, in sectors (1 GiB).
pub const MAX_DISCARD_SECTORS: u32 = 1 << 21;
/// The largest write-zeroes range, in sectors (1 GiB).
pub const MAX_WRITE_ZEROES_SECTORS: u32 = 1 << 21;
/// The largest payload of one IN or OUT request, in bytes.
pub const MAX_REQUEST_BYTES: u64 = 128 << 20;
/// The length of the serial a GET_ID request returns.
pub const ID_BYTES: usize = 20;
/// How long a vhost-user back-end polls for the driver's next request
/// after serving the queue (see [`Block::set_poll_budget`]): none. On a
/// 2-CPU host shared with other work, 50 µs of polling lowered the guest
/// benchmark's rates (bench/blk.py): the spinning thread takes CPU from the
/// vCPU. It may pay on a host with idle cores.
pub const DEFAULT_POLL_BUDGET: Duration = Duration::ZERO;

/// Length of the request header {type, reserved, sector}.
const HEADER_LEN: u64 = 16;
/// Length of one discard / write-zeroes segment {sector, num_sectors, flags}.
const SEGMENT_LEN: u64 = 16;
/// Segments one discard or write-zeroes request may carry.
const MAX_DISCARD_SEG: u32 = 1;
const MAX_WRITE_ZEROES_SEG: u32 = 1;
/// Descriptors in a chain: header, `SEG_MAX` data segments, status.
const MAX_CHAIN_DESCRIPTORS: usize = SEG_MAX as usize + 2;
/// The largest bounce buffer between guest memory and the disk.
const BOUNCE_BYTES: usize = 1 << 20;
/// Segments read with one `preadv` (iovecs on the stack).
const IOV_BATCH: usize = 128;
/// The configuration space up to `write_zeroes_may_unmap` and its padding.
const CONFIG_LEN: usize = 60;

const STATUS_OK: u8 = VIRTIO_BLK_S_OK as u8;
const STATUS_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const STATUS_UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// Errors of the block device: opening its image, and the reasons a
/// request fails.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The disk image could not be opened.
    #[error("Cannot open disk image {path}")]
    Open {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another program (QEMU, another VM) uses the image in a way that
    /// excludes this use.
    #[error(transparent)]
    Locked(#[from] crate::image_lock::LockError),
    /// The size of the disk image could not be read.
    #[error("Cannot determine the size of the disk image")]
    Size(#[source] io::Error),
    /// The serial number does not fit virtio-blk's 20 bytes.
    #[error("Disk id {0:?} is longer than {ID_BYTES} bytes")]
    IdTooLong(String),
    /// The descriptor chain is longer than a request may be.
    #[error("Descriptor chain has {0} descriptors, more than {MAX_CHAIN_DESCRIPTORS}")]
    TooManyDescriptors(usize),
    /// The chain does not end in a device-writable status byte.
    #[error("Request has no device-writable status byte")]
    NoStatus,
    /// A device-readable descriptor follows a device-writable one.
    #[error("Device-readable descriptor after a device-writable one")]
    DescriptorOrder,
    /// A descriptor points outside guest memory.
    #[error("Descriptor at {addr:#x} ({len} bytes) is outside guest memory")]
    DescriptorOutOfMemory {
        /// Its guest address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The device-readable part is shorter than the 16-byte header.
    #[error("Request header is {0} bytes, expected {HEADER_LEN}")]
    HeaderTooShort(u64),
    /// The request carries data in a direction its type does not use.
    #[error("Request type {request} carries {len} unexpected {direction} bytes")]
    UnexpectedData {
        /// The request type.
        request: u32,
        /// The bytes.
        len: u64,
        /// "device-readable" or "device-writable".
        direction: &'static str,
    },
    /// The data length is not a whole number of sectors.
    #[error("Data length {0} is not a multiple of {SECTOR_SIZE}")]
    UnalignedLength(u64),
    /// The data length exceeds [`MAX_REQUEST_BYTES`].
    #[error("Data length {0} exceeds the limit of {MAX_REQUEST_BYTES} bytes")]
    RequestTooLarge(u64),
    /// The sectors lie (partly) past the end of the disk.
    #[error("Sectors {sector}+{sectors} lie outside the {capacity}-sector disk")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Number of sectors (for IN/OUT, rounded down).
        sectors: u64,
        /// Disk capacity in sectors.
        capacity: u64,
    },
    /// A discard or write-zeroes request carries a bad number of segments.
    #[error("Discard/write-zeroes payload of {0} bytes is not 1 segment")]
    BadSegments(u64),
    /// A discard or write-zeroes segment is longer than the limit.
    #[error("Discard/write-zeroes of {0} sectors exceeds the limit")]
    SegmentTooLarge(u32),
    /// A write, discard or write-zeroes to a read-only disk.
    #[error("Write request to a read-only disk")]
    ReadOnly,
    /// The request type is unknown or not offered.
    #[error("Unsupported request type {0}")]
    Unsupported(u32),
    /// A discard or write-zeroes segment has flags the device does not know.
    #[error("Unsupported segment flags {0:#x}")]
    UnsupportedFlags(u32),
    /// Guest memory could not be accessed, though it was checked.
    #[error("Guest memory access failed")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
    /// The validated chain was shorter than its own lengths said.
    #[error("Descriptor chain ended early")]
    ChainTooShort,
    /// The queue's rings, or a buffer resolved to host memory, could not
    /// be accessed (a misaligned ring, or an offset checked wrongly).
    #[error("Queue memory access failed")]
    Ring(#[source] VolatileError),
    /// The request queue is broken.
    #[error(transparent)]
    Guest(#[from] GuestFault),
    /// The disk image failed an I/O operation.
    #[error("Disk I/O failed")]
    Io(#[source] io::Error),
}

impl BlockError {
    /// Whether the guest caused the error (as opposed to the host or the
    /// configuration): such errors are rate-limited in the log.
    pub fn is_guest_error(&self) -> bool {
        !matches!(
            self,
            Self::Open { .. } | Self::Locked(_) | Self::Size(_) | Self::IdTooLong(_) | Self::Io(_)
        )
    }

    /// The status byte a request failing with this error completes with.
    fn status(&self) -> u8 {
        match self {
            Self::Unsupported(_) | Self::UnsupportedFlags(_) => STATUS_UNSUPP,
            _ => STATUS_IOERR,
        }
    }
}

/// Storage behind a block device: a byte-addressed image of fixed size.
///
/// The device checks every request against [`size`](DiskBackend::size)
/// (rounded down to whole sectors) and never calls the writing methods on
/// a read-only backend.
pub trait DiskBackend: Send {
    /// The image's size in bytes.
    fn size(&self) -> u64;
    /// Whether the image must not be written.
    fn read_only(&self) -> bool;
    /// Fills `buf` from the image at `offset`.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` to the image at `offset`.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes completed writes durable (fdatasync).
    fn flush(&mut self) -> io::Result<()>;
    /// Hints that `len` bytes at `offset` are no longer needed; they may
    /// read back as anything afterwards.
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes `len` bytes at `offset` read back as zeros, deallocating them
    /// if `unmap` allows it.
    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()>;
    /// Reads straight into guest memory, filling `segments` in order from
    /// `offset`. Returns `Ok(false)` when the backend cannot, and the
    /// device copies through a bounce buffer instead.
    fn read_into_guest(
        &mut self,
        segments: &[VolatileSlice<'_, ()>],
        offset: u64,
    ) -> io::Result<bool> {
        let _ = (segments, offset);
        Ok(false)
    }
    /// Writes straight from guest memory: `segments` in order, from
    /// `offset`. Returns `Ok(false)` when the backend cannot, and the
    /// device copies through a bounce buffer instead.
    fn write_from_guest(
        &mut self,
        segments: &[VolatileSlice<'_, ()>],
        offset: u64,
    ) -> io::Result<bool> {
        let _ = (segments, offset);
        Ok(false)
    }
}

/// A raw disk image: a regular file or a host block device, byte for byte.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    size: u64,
    read_only: bool,
    /// Held while the image is open (see [`ImageLock`]); none for a file
    /// the caller opened.
    _lock: Option<ImageLock>,
}

impl RawFile {
    /// Opens the image at `path`, for reading only or for reading and
    /// writing, locked as QEMU locks it (see [`ImageLock`]).
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let lock = ImageLock::acquire(path, !read_only)?;
        let mut image = Self::from_file(file, read_only)?;
        image._lock = Some(lock);
        Ok(image)
    }

    /// Wraps an already opened image; `read_only` must be set if `file`
    /// was not opened for writing.
    pub fn from_file(file: File, read_only: bool) -> Result<Self, BlockError> {
        // Seeking to the end also sizes block devices, whose metadata says 0.
        let size = (&file).seek(SeekFrom::End(0)).map_err(BlockError::Size)?;
        Ok(Self {
            file,
            size,
            read_only,
            _lock: None,
        })
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let invalid = |_| io::Error::from(io::ErrorKind::InvalidInput);
        let offset = libc::off_t::try_from(offset).map_err(invalid)?;
        let len = libc::off_t::try_from(len).map_err(invalid)?;
        loop {
            // SAFETY: fallocate reads only its integer arguments; the
            // descriptor belongs to `self.file`, which outlives the call.
            let ret = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset, len) };
            if ret == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        Ok(())
    }
}

/// Whether `err` says the file system or device lacks an operation.
fn is_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::ENODEV)
    )
}

impl DiskBackend for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        self.file.write_all_at(buf, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.check_writable()?;
        if len == 0 {
            return Ok(());
        }
        match self.punch_hole(offset, len) {
            // Discard is a hint: without hole punching the data just stays.
            Err(err) if is_unsupported(&err) => Ok(()),
            other => other,
        }
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        self.check_writable()?;
        if len == 0 {
            return Ok(());
        }
        if unmap {
            match self.punch_hole(offset, len) {
                Err(err) if is_unsupported(&err) => {}
                other => return other,
            }
        }
        match self.fallocate(
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Err(err) if is_unsupported(&err) => {}
            other => return other,
        }
        let chunk = usize::try_from(len).map_or(BOUNCE_BYTES, |len| len.min(BOUNCE_BYTES));
        let zeros = vec![0u8; chunk];
        let mut done = 0u64;
        while done < len {
            let n = usize::try_from(len - done).map_or(chunk, |left| left.min(chunk));
            let part = zeros.get(..n).unwrap_or_default();
            let at = offset
                .checked_add(done)
                .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
            self.file.write_all_at(part, at)?;
            done += part.len() as u64;
        }
        Ok(())
    }

    fn read_into_guest(
        &mut self,
        segments: &[VolatileSlice<'_, ()>],
        offset: u64,
    ) -> io::Result<bool> {
        let mut at = offset;
        // The iovecs live on the stack, IOV_BATCH segments at a time.
        for chunk in segments.chunks(IOV_BATCH) {
            // Filled in place: collecting would copy the whole array.
            let mut iovecs = ArrayVec::<libc::iovec, IOV_BATCH>::new();
            for slice in chunk {
                iovecs
                    .try_push(libc::iovec {
                        iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                        iov_len: slice.len(),
                    })
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            }
            at = preadv_all(&self.file, &mut iovecs, at)?;
        }
        Ok(true)
    }

    fn write_from_guest(
        &mut self,
        segments: &[VolatileSlice<'_, ()>],
        offset: u64,
    ) -> io::Result<bool> {
        if self.read_only {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        let mut at = offset;
        for chunk in segments.chunks(IOV_BATCH) {
            let mut iovecs = ArrayVec::<libc::iovec, IOV_BATCH>::new();
            for slice in chunk {
                iovecs
                    .try_push(libc::iovec {
                        // Only read by the kernel (pwritev).
                        iov_base: slice.ptr_guard().as_ptr().cast_mut().cast(),
                        iov_len: slice.len(),
                    })
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            }
            at = pwritev_all(&self.file, &mut iovecs, at)?;
        }
        Ok(true)
    }
}

/// Which way [`rw_all`] moves bytes.
#[derive(Clone, Copy)]
enum Direction {
    /// From the file into the buffers.
    Read,
    /// From the buffers into the file.
    Write,
}

/// Fills every buffer of `iovecs` from `file` at `offset`, in order;
/// returns the offset after them.
fn preadv_all(file: &File, iovecs: &mut [libc::iovec], offset: u64) -> io::Result<u64> {
    rw_all(file, iovecs, offset, Direction::Read)
}

/// Writes every buffer of `iovecs` to `file` at `offset`, in order;
/// returns the offset after them.
fn pwritev_all(file: &File, iovecs: &mut [libc::iovec], offset: u64) -> io::Result<u64> {
    rw_all(file, iovecs, offset, Direction::Write)
}

/// Moves all of `iovecs` between them and `file` at `offset`, retrying
/// short transfers and interruptions; returns the offset after them.
fn rw_all(
    file: &File,
    iovecs: &mut [libc::iovec],
    offset: u64,
    direction: Direction,
) -> io::Result<u64> {
    let mut pending = iovecs;
    let mut at = offset;
    let fd = file.as_raw_fd();
    while !pending.is_empty() {
        let count = libc::c_int::try_from(pending.len().min(1024)).unwrap_or(1024);
        let file_offset =
            libc::off_t::try_from(at).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // One buffer: pread/pwrite, which spare the kernel importing an
        // iovec.
        let done = match (direction, &*pending) {
            // SAFETY: the iovec points into guest memory that the caller's
            // segments borrow for this call, with its exact length; the
            // kernel writes only within it.
            (Direction::Read, [only]) => unsafe {
                libc::pread(fd, only.iov_base, only.iov_len, file_offset)
            },
            // SAFETY: as above, for every iovec.
            (Direction::Read, _) => unsafe {
                libc::preadv(fd, pending.as_ptr(), count, file_offset)
            },
            // SAFETY: the iovec points into guest memory that the caller's
            // segments borrow for this call, with its exact length; the
            // kernel only reads it.
            (Direction::Write, [only]) => unsafe {
                libc::pwrite(fd, only.iov_base, only.iov_len, file_offset)
            },
            // SAFETY: as above, for every iovec.
            (Direction::Write, _) => unsafe {
                libc::pwritev(fd, pending.as_ptr(), count, file_offset)
            },
        };
        if done < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if done == 0 {
            return Err(io::Error::from(match direction {
                Direction::Read => io::ErrorKind::UnexpectedEof,
                Direction::Write => io::ErrorKind::WriteZero,
            }));
        }
        let mut done = done as usize;
        at = at.saturating_add(done as u64);
        // Drop what is complete and advance into a partly moved one.
        while let Some(first) = pending.first_mut() {
            if done < first.iov_len {
                // SAFETY: `done` is less than this iovec's length, so the
                // advanced pointer stays inside the same segment.
                first.iov_base = unsafe { first.iov_base.cast::<u8>().add(done) }.cast();
                first.iov_len -= done;
                break;
            }
            done -= first.iov_len;
            pending = std::mem::take(&mut pending)
                .get_mut(1..)
                .unwrap_or_default();
        }
    }
    Ok(at)
}

/// One descriptor of a request, copied out of guest memory and resolved
/// to host memory once.
#[derive(Clone, Copy, Debug)]
struct Desc<'m> {
    addr: GuestAddress,
    len: u32,
    writable: bool,
    /// The whole buffer in host memory, when it is not empty and lies in
    /// one memory region (one region lookup, here, for all its accesses).
    host: Option<VolatileSlice<'m, ()>>,
    /// Whether the whole buffer lies in guest memory (possibly across
    /// adjacent regions, when `host` is None).
    in_memory: bool,
}

impl<'m> Desc<'m> {
    fn resolve(mem: &'m GuestMemoryMmap, raw: &Descriptor) -> Self {
        let addr = raw.addr();
        let len = raw.len();
        let host = if len == 0 {
            None
        } else {
            mem.get_slice(addr, len as usize).ok()
        };
        Self {
            addr,
            len,
            writable: raw.is_write_only(),
            host,
            in_memory: host.is_some() || mem.check_range(addr, len as usize),
        }
    }
}

/// The descriptors of one chain (at most `MAX_CHAIN_DESCRIPTORS`), kept
/// on the stack.
type Descs<'m> = ArrayVec<Desc<'m>, MAX_CHAIN_DESCRIPTORS>;

/// Where a request's status byte goes.
#[derive(Clone, Copy, Debug)]
enum StatusByte<'m> {
    /// In host memory, resolved with its descriptor.
    Host(VolatileSlice<'m, ()>),
    /// At a guest address checked to be in memory.
    Guest(GuestAddress),
}

impl StatusByte<'_> {
    fn write(self, mem: &GuestMemoryMmap, status: u8) -> Result<(), BlockError> {
        match self {
            Self::Host(slice) => slice.write_obj(status, 0).map_err(BlockError::Ring),
            Self::Guest(addr) => mem.write_obj(status, addr).map_err(BlockError::GuestMemory),
        }
    }
}

/// The piece `[skip, skip + n)` of `desc`'s buffer, copied to or from
/// `part` (`n` is `part`'s length).
fn copy_piece(
    mem: &GuestMemoryMmap,
    desc: &Desc<'_>,
    skip: u64,
    part: Piece<'_>,
) -> Result<(), BlockError> {
    let n = part.len();
    if let Some(host) = desc.host {
        let at = usize::try_from(skip).map_err(|_| BlockError::ChainTooShort)?;
        let slice = host.subslice(at, n).map_err(BlockError::Ring)?;
        let copied = match part {
            Piece::Read(buf) => slice.copy_to(buf),
            Piece::Write(buf) => {
                slice.copy_from(buf);
                n
            }
        };
        return if copied == n {
            Ok(())
        } else {
            Err(BlockError::ChainTooShort)
        };
    }
    let Some(addr) = desc.addr.checked_add(skip) else {
        return Err(BlockError::ChainTooShort);
    };
    match part {
        Piece::Read(buf) => mem.read_slice(buf, addr),
        Piece::Write(buf) => mem.write_slice(buf, addr),
    }
    .map_err(BlockError::GuestMemory)
}

/// A host buffer to fill from guest memory, or to copy into it.
enum Piece<'b> {
    Read(&'b mut [u8]),
    Write(&'b [u8]),
}

impl Piece<'_> {
    fn len(&self) -> usize {
        match self {
            Self::Read(buf) => buf.len(),
            Self::Write(buf) => buf.len(),
        }
    }
}

/// Copies bytes of the guest byte stream `descs`, starting `skip` bytes
/// in, into `buf`.
fn read_stream(
    mem: &GuestMemoryMmap,
    descs: &[Desc<'_>],
    skip: u64,
    buf: &mut [u8],
) -> Result<(), BlockError> {
    let mut skip = skip;
    let mut done = 0usize;
    for desc in descs {
        if done == buf.len() {
            break;
        }
        let len = u64::from(desc.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = usize::try_from(len - skip).map_or(buf.len() - done, |n| n.min(buf.len() - done));
        let Some(part) = buf.get_mut(done..done + n) else {
            return Err(BlockError::ChainTooShort);
        };
        copy_piece(mem, desc, skip, Piece::Read(part))?;
        done += n;
        skip = 0;
    }
    if done == buf.len() {
        Ok(())
    } else {
        Err(BlockError::ChainTooShort)
    }
}

/// Copies `buf` into the guest byte stream `descs`, starting `skip` bytes
/// in.
fn write_stream(
    mem: &GuestMemoryMmap,
    descs: &[Desc<'_>],
    skip: u64,
    buf: &[u8],
) -> Result<(), BlockError> {
    let mut skip = skip;
    let mut done = 0usize;
    for desc in descs {
        if done == buf.len() {
            break;
        }
        let len = u64::from(desc.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = usize::try_from(len - skip).map_or(buf.len() - done, |n| n.min(buf.len() - done));
        let Some(part) = buf.get(done..done + n) else {
            return Err(BlockError::ChainTooShort);
        };
        copy_piece(mem, desc, skip, Piece::Write(part))?;
        done += n;
        skip = 0;
    }
    if done == buf.len() {
        Ok(())
    } else {
        Err(BlockError::ChainTooShort)
    }
}

/// Puts `len` bytes of the stream `descs`, after its first `skip`, into
/// `segments` as host slices; false when a piece has no host slice (it
/// crosses a memory region, and the bounce path handles it).
fn guest_segments<'m>(
    descs: &[Desc<'m>],
    skip: u64,
    len: u64,
    segments: &mut ArrayVec<VolatileSlice<'m, ()>, MAX_CHAIN_DESCRIPTORS>,
) -> bool {
    segments.clear();
    let mut skip = skip;
    let mut left = len;
    for desc in descs {
        if left == 0 {
            break;
        }
        let start = skip.min(u64::from(desc.len));
        skip -= start;
        let take = (u64::from(desc.len) - start).min(left);
        if take == 0 {
            continue;
        }
        let Some(host) = desc.host else {
            return false;
        };
        let (Ok(start), Ok(take_len)) = (usize::try_from(start), usize::try_from(take)) else {
            return false;
        };
        let Ok(slice) = host.subslice(start, take_len) else {
            return false;
        };
        if segments.try_push(slice).is_err() {
            return false;
        }
        left -= take;
    }
    left == 0
}

/// Copies `chain`'s descriptors into `descs` (the first
/// `MAX_CHAIN_DESCRIPTORS` of them, each resolved to host memory) and
/// locates its status byte: the last byte of its last descriptor, which
/// must be device-writable and in guest memory.
fn collect<'m>(
    mem: &'m GuestMemoryMmap,
    chain: impl Iterator<Item = Descriptor>,
    descs: &mut Descs<'m>,
) -> Collected<'m> {
    descs.clear();
    let mut count = 0usize;
    let mut last = None;
    // The chain ends at a loop, a bad index or an unreadable descriptor;
    // what remains is checked like any chain.
    for raw in chain {
        if !descs.is_full() {
            descs.push(Desc::resolve(mem, &raw));
        }
        count = count.saturating_add(1);
        last = Some(raw);
    }
    let status = last
        .filter(|raw| raw.is_write_only() && raw.len() > 0)
        .and_then(|raw| {
            let offset = raw.len() - 1;
            // A kept descriptor already has its host slice.
            let host = if count <= MAX_CHAIN_DESCRIPTORS {
                descs
                    .last()
                    .and_then(|desc| desc.host)
                    .and_then(|host| host.subslice(offset as usize, 1).ok())
            } else {
                None
            };
            match host {
                Some(slice) => Some(StatusByte::Host(slice)),
                None => raw
                    .addr()
                    .checked_add(u64::from(offset))
                    .filter(|&addr| mem.check_range(addr, 1))
                    .map(StatusByte::Guest),
            }
        });
    Collected { count, status }
}

/// A split virtqueue (spec 2.7) whose descriptor table and rings were each
/// resolved to host memory once, for one drain of the queue: reading a
/// descriptor or a ring entry is then a bounds-checked access to a slice,
/// not a guest-memory region lookup. The queue's indices stay in the
/// [`Queue`], which this updates.
struct Rings<'m> {
    mem: &'m GuestMemoryMmap,
    desc: VolatileSlice<'m, ()>,
    avail: VolatileSlice<'m, ()>,
    used: VolatileSlice<'m, ()>,
    size: u16,
    event_idx: bool,
}

/// Bytes of a split descriptor.
const DESC_BYTES: usize = 16;

impl<'m> Rings<'m> {
    /// Resolves `queue`'s rings, or None when the queue is not ready or a
    /// ring does not lie in one memory region (the generic path, through
    /// virtio-queue, serves those).
    fn new(mem: &'m GuestMemoryMmap, queue: &Queue) -> Option<Self> {
        let size = queue.size();
        if !queue.ready() || size == 0 || queue.avail_ring() == 0 {
            return None;
        }
        let n = usize::from(size);
        Some(Self {
            mem,
            desc: mem
                .get_slice(GuestAddress(queue.desc_table()), DESC_BYTES * n)
                .ok()?,
            avail: mem
                .get_slice(GuestAddress(queue.avail_ring()), 6 + 2 * n)
                .ok()?,
            used: mem
                .get_slice(GuestAddress(queue.used_ring()), 6 + 8 * n)
                .ok()?,
            size,
            event_idx: queue.event_idx_enabled(),
        })
    }

    /// The driver's avail index.
    fn avail_idx(&self, order: Ordering) -> Result<Wrapping<u16>, BlockError> {
        self.avail
            .load::<u16>(2, order)
            .map(|idx| Wrapping(u16::from_le(idx)))
            .map_err(BlockError::Ring)
    }

    /// The head index in avail ring entry `index` (modulo the size).
    fn avail_entry(&self, index: Wrapping<u16>) -> Result<u16, BlockError> {
        let slot = usize::from(index.0 % self.size);
        // The Acquire load of the avail index ordered this read after the
        // driver's write of the entry.
        self.avail
            .load::<u16>(4 + 2 * slot, Ordering::Relaxed)
            .map(u16::from_le)
            .map_err(BlockError::Ring)
    }

    /// Writes used ring entry `index` (modulo the size); the driver sees
    /// it after [`publish_used`](Self::publish_used).
    fn put_used(&self, index: Wrapping<u16>, head: u16, len: u32) -> Result<(), BlockError> {
        let slot = usize::from(index.0 % self.size);
        let elem = u64::from(head) | (u64::from(len) << 32);
        self.used
            .write_obj(elem.to_le(), 4 + 8 * slot)
            .map_err(BlockError::Ring)
    }

    /// Publishes the used entries before `next_used`.
    fn publish_used(&self, next_used: Wrapping<u16>) -> Result<(), BlockError> {
        self.used
            .store(next_used.0.to_le(), 2, Ordering::Release)
            .map_err(BlockError::Ring)
    }

    /// Asks the driver not to notify while the device is busy (without
    /// EVENT_IDX; with it, not moving avail_event does the same).
    fn disable_notification(&self) -> Result<(), BlockError> {
        if self.event_idx {
            return Ok(());
        }
        self.used
            .store(
                (VRING_USED_F_NO_NOTIFY as u16).to_le(),
                0,
                Ordering::Relaxed,
            )
            .map_err(BlockError::Ring)
    }

    /// Asks the driver to notify about buffers after `next_avail`; returns
    /// whether some arrived meanwhile.
    fn enable_notification(&self, next_avail: Wrapping<u16>) -> Result<bool, BlockError> {
        if self.event_idx {
            let avail_event = 4 + 8 * usize::from(self.size);
            self.used
                .store(next_avail.0.to_le(), avail_event, Ordering::Relaxed)
                .map_err(BlockError::Ring)?;
        } else {
            self.used
                .store(0u16, 0, Ordering::Relaxed)
                .map_err(BlockError::Ring)?;
        }
        // The avail index must be read after the write above is visible.
        fence(Ordering::SeqCst);
        Ok(self.avail_idx(Ordering::Relaxed)? != next_avail)
    }

    /// The chain starting at descriptor `head`.
    fn chain(&self, head: u16) -> RingChain<'m> {
        RingChain {
            mem: self.mem,
            table: self.desc,
            table_size: self.size,
            next: head,
            ttl: self.size,
            indirect: false,
            yielded: 0,
        }
    }
}

/// The descriptors of a chain in resolved rings, yielded with
/// virtio-queue's rules (`DescriptorChain`): the chain ends at a loop
/// (after as many descriptors as the table has), at an index past the
/// table, at a byte count past `u32::MAX` or at an unreadable descriptor;
/// one indirect table of up to `u16::MAX` entries may replace the rest of
/// the chain.
struct RingChain<'m> {
    mem: &'m GuestMemoryMmap,
    table: VolatileSlice<'m, ()>,
    table_size: u16,
    next: u16,
    ttl: u16,
    indirect: bool,
    yielded: u32,
}

impl Iterator for RingChain<'_> {
    type Item = Descriptor;

    fn next(&mut self) -> Option<Descriptor> {
        loop {
            if self.ttl == 0 || self.next >= self.table_size {
                return None;
            }
            let desc: Descriptor = self
                .table
                .read_obj(DESC_BYTES * usize::from(self.next))
                .ok()?;
            if desc.refers_to_indirect_table() {
                if self.indirect || desc.len() % DESC_BYTES as u32 != 0 {
                    return None;
                }
                // Not capped at the queue size: Linux builds indirect
                // tables as long as `seg_max` + 2 whatever ring size the
                // transport chose (a vhost-user front-end may pick a ring
                // shorter than that). A chain longer than a request may be
                // fails with an error status the driver sees.
                let entries = u16::try_from(desc.len() / DESC_BYTES as u32).ok()?;
                self.table = self.mem.get_slice(desc.addr(), desc.len() as usize).ok()?;
                self.table_size = entries;
                self.next = 0;
                self.ttl = entries;
                self.indirect = true;
                continue;
            }
            self.yielded = self.yielded.checked_add(desc.len())?;
            if desc.has_next() {
                self.next = desc.next();
                self.ttl -= 1;
            } else {
                self.ttl = 0;
            }
            return Some(desc);
        }
    }
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_le_bytes)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

/// Fails unless a request type that uses no data in `direction` has none.
fn expect_none(request: u32, len: u64, direction: &'static str) -> Result<(), BlockError> {
    if len == 0 {
        Ok(())
    } else {
        Err(BlockError::UnexpectedData {
            request,
            len,
            direction,
        })
    }
}

/// The virtio-blk configuration space (spec 5.2.4), little-endian.
fn config_space(capacity: u64, read_only: bool) -> [u8; CONFIG_LEN] {
    fn put(config: &mut [u8], at: usize, bytes: &[u8]) {
        if let Some(field) = config.get_mut(at..at + bytes.len()) {
            field.copy_from_slice(bytes);
        }
    }
    let mut config = [0u8; CONFIG_LEN];
    put(&mut config, 0, &capacity.to_le_bytes());
    // size_max (8) stays 0: VIRTIO_BLK_F_SIZE_MAX is not offered.
    put(&mut config, 12, &SEG_MAX.to_le_bytes());
    // geometry (16..20) stays 0.
    put(&mut config, 20, &(SECTOR_SIZE as u32).to_le_bytes());
    // topology (24..32), writeback (32) and unused0 (33) stay 0.
    put(&mut config, 34, &1u16.to_le_bytes());
    if !read_only {
        put(&mut config, 36, &MAX_DISCARD_SECTORS.to_le_bytes());
        put(&mut config, 40, &MAX_DISCARD_SEG.to_le_bytes());
        // discard_sector_alignment, in sectors.
        put(&mut config, 44, &1u32.to_le_bytes());
        put(&mut config, 48, &MAX_WRITE_ZEROES_SECTORS.to_le_bytes());
        put(&mut config, 52, &MAX_WRITE_ZEROES_SEG.to_le_bytes());
        // write_zeroes_may_unmap.
        put(&mut config, 56, &[1]);
    }
    config
}

/// The disk side of the device: what serving requests needs besides the
/// queue and guest memory.
struct Server {
    disk: Box<dyn DiskBackend>,
    id: String,
    serial: [u8; ID_BYTES],
    /// Capacity in sectors.
    capacity: u64,
    read_only: bool,
    /// Grows on demand up to `BOUNCE_BYTES`.
    bounce: Vec<u8>,
    /// Used buffers added since the driver was last considered for an
    /// interrupt (EVENT_IDX's count of new used entries).
    unsignalled: Wrapping<u16>,
    errors: ErrorLog,
}

/// What was found of a descriptor chain.
struct Collected<'m> {
    /// Descriptors in the chain (only the first `MAX_CHAIN_DESCRIPTORS`
    /// are kept).
    count: usize,
    /// The chain's status byte, if it has a usable one.
    status: Option<StatusByte<'m>>,
}

fn read_only_note(read_only: bool) -> &'static str {
    if read_only { " (read-only)" } else { "" }
}

/// What a saved machine state holds of a block device beyond its queues:
/// the disk it was saved with, so a state is not restored onto another.
#[derive(Serialize, Deserialize)]
struct SavedBlock {
    capacity: u64,
    read_only: bool,
}

/// A virtio block device.
pub struct Block {
    server: Server,
    features: u64,
    config: [u8; CONFIG_LEN],
    core: DeviceCore,
    /// "virtio-blk ID", for the log.
    name: String,
    poll_budget: Duration,
}

impl Block {
    /// Creates a device serving `disk`, reporting `id` (at most 20 bytes)
    /// as its serial number.
    pub fn new(disk: Box<dyn DiskBackend>, id: &str) -> Result<Self, BlockError> {
        let mut serial = [0u8; ID_BYTES];
        serial
            .get_mut(..id.len())
            .ok_or_else(|| BlockError::IdTooLong(id.to_owned()))?
            .copy_from_slice(id.as_bytes());
        let read_only = disk.read_only();
        let capacity = disk.size() / SECTOR_SIZE;
        let mut features = VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_EVENT_IDX
            | VIRTIO_RING_F_INDIRECT_DESC
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_BLK_SIZE)
            | (1 << VIRTIO_BLK_F_FLUSH);
        if read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        } else {
            features |= (1 << VIRTIO_BLK_F_DISCARD) | (1 << VIRTIO_BLK_F_WRITE_ZEROES);
        }
        Ok(Self {
            server: Server {
                disk,
                id: id.to_owned(),
                serial,
                capacity,
                read_only,
                bounce: Vec::new(),
                unsignalled: Wrapping(0),
                errors: ErrorLog::default(),
            },
            features,
            config: config_space(capacity, read_only),
            core: DeviceCore::default(),
            name: format!("virtio-blk {id}"),
            poll_budget: DEFAULT_POLL_BUDGET,
        })
    }

    /// How long a vhost-user back-end keeps polling the queue after
    /// serving it ([`DEFAULT_POLL_BUDGET`]); zero sleeps until the next
    /// kick at once.
    pub fn poll_budget(&self) -> Duration {
        self.poll_budget
    }

    /// Sets [`poll_budget`](Self::poll_budget).
    pub fn set_poll_budget(&mut self, budget: Duration) {
        self.poll_budget = budget;
    }

    /// The disk's capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.server.capacity
    }

    /// Whether the device refuses writes.
    pub fn read_only(&self) -> bool {
        self.server.read_only
    }

    /// Whether the queue broke and the device stopped serving it until the
    /// driver resets it (the transport should set DEVICE_NEEDS_RESET).
    pub fn needs_reset(&self) -> bool {
        self.core.needs_reset()
    }

    /// Serves every request available on the queue and returns whether any
    /// was completed. Fails, and sets [`needs_reset`](Self::needs_reset),
    /// when the queue itself is broken; does nothing while the device is
    /// inactive or needs a reset.
    pub fn process_queue(&mut self) -> Result<bool, BlockError> {
        let Self { server, core, .. } = self;
        let Some(active) = core.usable() else {
            return Ok(false);
        };
        let Some(queue) = active.queues.first_mut() else {
            return Ok(false);
        };
        let result = server.drain(&active.mem, queue);
        if let Err(err) = &result {
            let name = format!("virtio-blk {}", server.id);
            core.fail(&name, err);
        }
        result
    }

    /// Serves every request available on a queue owned by someone else
    /// (a vhost-user front-end's vring), with the same checks as
    /// [`process_queue`](Self::process_queue). The caller signals the driver.
    pub fn serve_queue(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, BlockError> {
        self.server.drain(mem, queue)
    }

    /// Whether the driver wants an interrupt for the buffers that
    /// [`serve_queue`](Self::serve_queue) used on `queue` since the last
    /// call (always, without EVENT_IDX). The device counts used buffers
    /// itself, so [`Queue::needs_notification`] does not know of them.
    pub fn needs_notification(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &Queue,
    ) -> Result<bool, BlockError> {
        self.server.needs_notification(mem, queue)
    }
}

impl DeviceInfo for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
}

impl QueueDevice for Block {
    type Error = BlockError;

    fn name(&self) -> &str {
        &self.name
    }

    device_core::core_accessors!();

    fn serve(
        &mut self,
        _index: u16,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, BlockError> {
        self.serve_queue(mem, queue)
    }

    fn wants_interrupt(
        &mut self,
        _index: u16,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, BlockError> {
        self.server.needs_notification(mem, queue)
    }

    fn activated(&mut self) {
        self.server.unsignalled = Wrapping(0);
    }

    fn saves_state(&self) -> bool {
        true
    }

    fn quiesce(&mut self) -> Result<(), StateError> {
        // Every request was served synchronously: what the guest was told
        // is written reaches the image before the machine is captured.
        self.server
            .disk
            .flush()
            .map_err(|source| StateError::Quiesce {
                what: format!("flushing the image of {} failed", self.name),
                source,
            })
    }

    fn save_own(&mut self) -> Result<Vec<u8>, StateError> {
        snapshot::encode(
            &self.name,
            &SavedBlock {
                capacity: self.server.capacity,
                read_only: self.server.read_only,
            },
        )
    }

    fn restore_own(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let saved: SavedBlock = snapshot::decode(&self.name, bytes)?;
        if saved.capacity != self.server.capacity || saved.read_only != self.server.read_only {
            return Err(snapshot::invalid(
                &self.name,
                format!(
                    "the disk had {} sectors{} when saved and has {}{} now",
                    saved.capacity,
                    read_only_note(saved.read_only),
                    self.server.capacity,
                    read_only_note(self.server.read_only),
                ),
            ));
        }
        Ok(())
    }

    fn poll_budget(&self, _index: u16) -> Duration {
        self.poll_budget
    }
}

impl Server {
    /// Serves available chains until the ring is empty with notifications
    /// re-enabled. Fails only when the queue is broken.
    fn drain(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> Result<bool, BlockError> {
        match Rings::new(mem, queue) {
            Some(rings) => self.drain_rings(&rings, queue),
            None => self.drain_generic(mem, queue),
        }
    }

    /// [`drain`](Self::drain) through resolved rings: used entries are
    /// published once per batch of what the driver made available.
    fn drain_rings(&mut self, rings: &Rings<'_>, queue: &mut Queue) -> Result<bool, BlockError> {
        let mut descs = Descs::new();
        let mut used_any = false;
        let mut next_avail = Wrapping(queue.next_avail());
        let mut next_used = Wrapping(queue.next_used());
        loop {
            rings.disable_notification()?;
            loop {
                let avail = rings.avail_idx(Ordering::Acquire)?;
                if avail == next_avail {
                    break;
                }
                // A driver never makes more than the ring's size available.
                if (avail - next_avail).0 > rings.size {
                    return Err(
                        GuestFault::Queue(virtio_queue::Error::InvalidAvailRingIndex).into(),
                    );
                }
                let served =
                    self.serve_batch(rings, &mut descs, &mut next_avail, avail, &mut next_used);
                queue.set_next_avail(next_avail.0);
                // What was served is published even when the batch failed.
                if next_used.0 != queue.next_used() {
                    rings.publish_used(next_used)?;
                    queue.set_next_used(next_used.0);
                    used_any = true;
                }
                served?;
            }
            // With EVENT_IDX this also publishes avail_event, without which
            // the driver would stop notifying.
            if !rings.enable_notification(next_avail)? {
                return Ok(used_any);
            }
        }
    }

    /// Serves the chains from `next_avail` up to `avail`, writing their
    /// used entries from `next_used` on (not yet published).
    fn serve_batch<'m>(
        &mut self,
        rings: &Rings<'m>,
        descs: &mut Descs<'m>,
        next_avail: &mut Wrapping<u16>,
        avail: Wrapping<u16>,
        next_used: &mut Wrapping<u16>,
    ) -> Result<(), BlockError> {
        while *next_avail != avail {
            let head = rings.avail_entry(*next_avail)?;
            *next_avail += Wrapping(1);
            if head >= rings.size {
                return Err(GuestFault::Queue(virtio_queue::Error::InvalidDescriptorIndex).into());
            }
            let len = self.serve(rings.mem, rings.chain(head), descs);
            rings.put_used(*next_used, head, len)?;
            *next_used += Wrapping(1);
            self.unsignalled += Wrapping(1);
        }
        Ok(())
    }

    /// [`drain`](Self::drain) through virtio-queue, for queues whose rings
    /// are not each in one memory region.
    // Kept out of line: the resolved-ring path is the hot one.
    #[cold]
    #[inline(never)]
    fn drain_generic(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, BlockError> {
        let mut descs = Descs::new();
        Ok(device_core::drain(mem, queue, |chain| {
            let len = self.serve(mem, chain, &mut descs);
            self.unsignalled += Wrapping(1);
            Step::Used(len)
        })?)
    }

    /// Whether the driver wants an interrupt for the buffers used since
    /// the last call: always without EVENT_IDX; with it, when its
    /// used_event lies among them (spec 2.7.10).
    fn needs_notification(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &Queue,
    ) -> Result<bool, BlockError> {
        let added = std::mem::replace(&mut self.unsignalled, Wrapping(0));
        if !queue.event_idx_enabled() {
            return Ok(true);
        }
        // The used entries must be visible before used_event is read.
        fence(Ordering::SeqCst);
        let offset = 4 + 2 * u64::from(queue.size());
        let addr = GuestAddress(queue.avail_ring())
            .checked_add(offset)
            .ok_or(GuestFault::Queue(virtio_queue::Error::AddressOverflow))?;
        let used_event = mem
            .load::<u16>(addr, Ordering::Relaxed)
            .map(|event| Wrapping(u16::from_le(event)))
            .map_err(BlockError::GuestMemory)?;
        let new = Wrapping(queue.next_used());
        let old = new - added;
        Ok(new - used_event - Wrapping(1) < new - old)
    }

    /// Serves one chain and returns the used length: the bytes written to
    /// the guest, status included, or 0 when there is no status byte.
    fn serve<'m>(
        &mut self,
        mem: &'m GuestMemoryMmap,
        chain: impl Iterator<Item = Descriptor>,
        descs: &mut Descs<'m>,
    ) -> u32 {
        let collected = collect(mem, chain, descs);
        let Some(status_byte) = collected.status else {
            self.log(&BlockError::NoStatus);
            return 0;
        };
        let result = self.execute(mem, descs, collected.count);
        log::trace!("virtio-blk {}: request -> {result:?}", self.id);
        let (status, written) = match result {
            Ok(written) => (STATUS_OK, written),
            Err(err) => {
                self.log(&err);
                (err.status(), 0)
            }
        };
        match status_byte.write(mem, status) {
            Ok(()) => written.saturating_add(1),
            Err(err) => {
                self.log(&err);
                0
            }
        }
    }

    /// Checks and performs one request; returns the data bytes written to
    /// the guest (status excluded).
    fn execute(
        &mut self,
        mem: &GuestMemoryMmap,
        descs: &[Desc<'_>],
        count: usize,
    ) -> Result<u32, BlockError> {
        if count > MAX_CHAIN_DESCRIPTORS {
            return Err(BlockError::TooManyDescriptors(count));
        }
        // One pass over the chain; the checks then fail in a fixed order.
        let mut first_writable = None;
        let mut misordered = false;
        let mut outside = None;
        // At most MAX_CHAIN_DESCRIPTORS u32 lengths: the sums fit a u64.
        let mut readable_len = 0u64;
        let mut writable_len = 0u64;
        for (i, desc) in descs.iter().enumerate() {
            if desc.writable {
                first_writable.get_or_insert(i);
                writable_len += u64::from(desc.len);
            } else {
                misordered |= first_writable.is_some();
                readable_len += u64::from(desc.len);
            }
            if !desc.in_memory && outside.is_none() {
                outside = Some(desc);
            }
        }
        let Some((readable, writable)) = first_writable.and_then(|at| descs.split_at_checked(at))
        else {
            return Err(BlockError::NoStatus);
        };
        if misordered {
            return Err(BlockError::DescriptorOrder);
        }
        if let Some(desc) = outside {
            return Err(BlockError::DescriptorOutOfMemory {
                addr: desc.addr.raw_value(),
                len: desc.len,
            });
        }
        // The last writable byte is the status.
        let Some(in_len) = writable_len.checked_sub(1) else {
            return Err(BlockError::NoStatus);
        };
        if readable_len < HEADER_LEN {
            return Err(BlockError::HeaderTooShort(readable_len));
        }
        let out_len = readable_len - HEADER_LEN;
        let mut header = [0u8; HEADER_LEN as usize];
        read_stream(mem, readable, 0, &mut header)?;
        let request = le_u32(&header, 0);
        let sector = le_u64(&header, 8);

        match request {
            VIRTIO_BLK_T_IN => {
                expect_none(request, out_len, "device-readable")?;
                let offset = self.data_range(sector, in_len)?;
                self.disk_to_guest(mem, writable, offset, in_len)?;
                u32::try_from(in_len).map_err(|_| BlockError::RequestTooLarge(in_len))
            }
            VIRTIO_BLK_T_OUT => {
                if self.read_only {
                    return Err(BlockError::ReadOnly);
                }
                expect_none(request, in_len, "device-writable")?;
                let offset = self.data_range(sector, out_len)?;
                self.guest_to_disk(mem, readable, offset, out_len)?;
                Ok(0)
            }
            VIRTIO_BLK_T_FLUSH => {
                expect_none(request, out_len, "device-readable")?;
                expect_none(request, in_len, "device-writable")?;
                self.disk.flush().map_err(BlockError::Io)?;
                Ok(0)
            }
            VIRTIO_BLK_T_GET_ID => {
                expect_none(request, out_len, "device-readable")?;
                let n = usize::try_from(in_len).map_or(ID_BYTES, |n| n.min(ID_BYTES));
                let id = self.serial.get(..n).unwrap_or_default();
                write_stream(mem, writable, 0, id)?;
                Ok(id.len() as u32)
            }
            VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
                if self.read_only {
                    return Err(BlockError::ReadOnly);
                }
                expect_none(request, in_len, "device-writable")?;
                if out_len != SEGMENT_LEN {
                    return Err(BlockError::BadSegments(out_len));
                }
                let mut segment = [0u8; SEGMENT_LEN as usize];
                read_stream(mem, readable, HEADER_LEN, &mut segment)?;
                self.discard_or_zero(request, &segment)?;
                Ok(0)
            }
            other => Err(BlockError::Unsupported(other)),
        }
    }

    /// Checks `len` data bytes at `sector` and returns their byte offset.
    fn data_range(&self, sector: u64, len: u64) -> Result<u64, BlockError> {
        if len % SECTOR_SIZE != 0 {
            return Err(BlockError::UnalignedLength(len));
        }
        if len > MAX_REQUEST_BYTES {
            return Err(BlockError::RequestTooLarge(len));
        }
        self.sector_range(sector, len / SECTOR_SIZE)
    }

    /// Checks that `sectors` sectors at `sector` lie on the disk and
    /// returns their byte offset.
    fn sector_range(&self, sector: u64, sectors: u64) -> Result<u64, BlockError> {
        let out_of_range = || BlockError::OutOfRange {
            sector,
            sectors,
            capacity: self.capacity,
        };
        match sector.checked_add(sectors) {
            Some(end) if end <= self.capacity => {
                // end <= capacity = size / 512, so this cannot overflow.
                sector.checked_mul(SECTOR_SIZE).ok_or_else(out_of_range)
            }
            _ => Err(out_of_range()),
        }
    }

    /// Serves the segment of a discard or write-zeroes request.
    fn discard_or_zero(&mut self, request: u32, segment: &[u8]) -> Result<(), BlockError> {
        let sector = le_u64(segment, 0);
        let sectors = le_u32(segment, 8);
        let flags = le_u32(segment, 12);
        let (max, known_flags) = if request == VIRTIO_BLK_T_DISCARD {
            // Spec 5.2.6.2: UNSUPP for a discard with the unmap flag.
            (MAX_DISCARD_SECTORS, 0)
        } else {
            (MAX_WRITE_ZEROES_SECTORS, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)
        };
        if flags & !known_flags != 0 {
            return Err(BlockError::UnsupportedFlags(flags));
        }
        if sectors > max {
            return Err(BlockError::SegmentTooLarge(sectors));
        }
        let offset = self.sector_range(sector, u64::from(sectors))?;
        let len = u64::from(sectors) * SECTOR_SIZE;
        let result = if request == VIRTIO_BLK_T_DISCARD {
            self.disk.discard(offset, len)
        } else {
            let unmap = flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0;
            self.disk.write_zeroes(offset, len, unmap)
        };
        result.map_err(BlockError::Io)
    }

    /// Takes the bounce buffer out of `self`, grown to at least `n` bytes
    /// (`n` is at most `BOUNCE_BYTES`); the caller puts it back.
    fn take_bounce(&mut self, n: usize) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.bounce);
        if buf.len() < n {
            buf.resize(n, 0);
        }
        buf
    }

    /// Reads `len` bytes at disk `offset` into the guest stream `descs`.
    fn disk_to_guest(
        &mut self,
        mem: &GuestMemoryMmap,
        descs: &[Desc<'_>],
        offset: u64,
        len: u64,
    ) -> Result<(), BlockError> {
        let mut segments = ArrayVec::new();
        if guest_segments(descs, 0, len, &mut segments)
            && self
                .disk
                .read_into_guest(&segments, offset)
                .map_err(BlockError::Io)?
        {
            return Ok(());
        }
        let mut done = 0u64;
        while done < len {
            let n = usize::try_from(len - done).map_or(BOUNCE_BYTES, |n| n.min(BOUNCE_BYTES));
            let at = offset + done;
            let mut buf = self.take_bounce(n);
            let result = buf
                .get_mut(..n)
                .ok_or(BlockError::ChainTooShort)
                .and_then(|buf| {
                    self.disk.read_at(buf, at).map_err(BlockError::Io)?;
                    write_stream(mem, descs, done, buf)
                });
            self.bounce = buf;
            result?;
            done += n as u64;
        }
        Ok(())
    }

    /// Writes `len` bytes of the guest stream `descs`, after the header, to
    /// disk `offset`.
    fn guest_to_disk(
        &mut self,
        mem: &GuestMemoryMmap,
        descs: &[Desc<'_>],
        offset: u64,
        len: u64,
    ) -> Result<(), BlockError> {
        let mut segments = ArrayVec::new();
        if guest_segments(descs, HEADER_LEN, len, &mut segments)
            && self
                .disk
                .write_from_guest(&segments, offset)
                .map_err(BlockError::Io)?
        {
            return Ok(());
        }
        let mut done = 0u64;
        while done < len {
            let n = usize::try_from(len - done).map_or(BOUNCE_BYTES, |n| n.min(BOUNCE_BYTES));
            let at = offset + done;
            let mut buf = self.take_bounce(n);
            let result = buf
                .get_mut(..n)
                .ok_or(BlockError::ChainTooShort)
                .and_then(|buf| {
                    read_stream(mem, descs, HEADER_LEN + done, buf)?;
                    self.disk.write_at(buf, at).map_err(BlockError::Io)
                });
            self.bounce = buf;
            result?;
            done += n as u64;
        }
        Ok(())
    }

    /// Logs a failed request, rate-limited.
    fn log(&mut self, err: &BlockError) {
        self.errors.report(
            &format!("virtio-blk {}", self.id),
            err,
            err.is_guest_error(),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::mock::MockSplitQueue;

    use std::sync::Arc;

    use super::*;
    use crate::devices::virtio::test_queue::{Mock, add_chain, guest_bytes, used, used_count};
    use crate::devices::virtio::{ActivateError, ActivationContext, VirtioDevice, VirtioInterrupt};

    const MEM_SIZE: u64 = 0x10_0000;
    const HDR: u64 = 0x1_0000;
    const SEG: u64 = 0x1_1000;
    const DATA: u64 = 0x2_0000;
    const STATUS: u64 = 0x3_0000;
    const ID_BUF: u64 = 0x3_1000;
    const QSIZE: u16 = 16;
    const UNTOUCHED: u8 = 0xee;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
    }

    /// An image in host memory, shared so tests can inspect it.
    #[derive(Clone)]
    struct MemDisk {
        data: Arc<Mutex<Vec<u8>>>,
        read_only: bool,
        flushes: Arc<AtomicUsize>,
    }

    impl MemDisk {
        fn new(sectors: usize, read_only: bool) -> Self {
            let data = (0..sectors * 512).map(|i| (i % 251) as u8).collect();
            Self {
                data: Arc::new(Mutex::new(data)),
                read_only,
                flushes: Arc::new(AtomicUsize::new(0)),
            }
        }

        fn bytes(&self, offset: usize, len: usize) -> Vec<u8> {
            self.data.lock().unwrap()[offset..offset + len].to_vec()
        }

        fn fill(&mut self, offset: u64, len: u64, value: u8) -> io::Result<()> {
            let mut data = self.data.lock().unwrap();
            let range = usize::try_from(offset).unwrap()..usize::try_from(offset + len).unwrap();
            data.get_mut(range)
                .ok_or(io::Error::from(io::ErrorKind::UnexpectedEof))?
                .fill(value);
            Ok(())
        }
    }

    impl DiskBackend for MemDisk {
        fn size(&self) -> u64 {
            self.data.lock().unwrap().len() as u64
        }

        fn read_only(&self) -> bool {
            self.read_only
        }

        fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let data = self.data.lock().unwrap();
            let at = usize::try_from(offset).unwrap();
            let src = data
                .get(at..at + buf.len())
                .ok_or(io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(src);
            Ok(())
        }

        fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
            assert!(!self.read_only, "write to a read-only MemDisk");
            let mut data = self.data.lock().unwrap();
            let at = usize::try_from(offset).unwrap();
            data.get_mut(at..at + buf.len())
                .ok_or(io::Error::from(io::ErrorKind::UnexpectedEof))?
                .copy_from_slice(buf);
            Ok(())
        }

        fn flush(&mut self) -> io::Result<()> {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }

        fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
            assert!(!self.read_only, "discard on a read-only MemDisk");
            self.fill(offset, len, 0)
        }

        fn write_zeroes(&mut self, offset: u64, len: u64, _unmap: bool) -> io::Result<()> {
            assert!(!self.read_only, "write zeroes on a read-only MemDisk");
            self.fill(offset, len, 0)
        }
    }

    /// A raw image file in the temp directory, removed on drop.
    struct TempImage(PathBuf);

    impl TempImage {
        fn new(name: &str, contents: &[u8]) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            let path = std::env::temp_dir().join(format!(
                "nestbox-block-test-{}-{n}-{name}.img",
                std::process::id()
            ));
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }

        fn contents(&self) -> Vec<u8> {
            std::fs::read(&self.0).unwrap()
        }
    }

    impl Drop for TempImage {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A device over `image` as a raw file.
    fn raw_block(image: &TempImage, read_only: bool, id: &str) -> Block {
        let disk = RawFile::open(&image.0, read_only).unwrap();
        Block::new(Box::new(disk), id).unwrap()
    }

    #[derive(Default)]
    struct Interrupts {
        used: AtomicUsize,
    }

    impl VirtioInterrupt for Interrupts {
        fn signal_used_queue(&self, _queue: u16) {
            self.used.fetch_add(1, Ordering::SeqCst);
        }

        fn signal_config_change(&self) {}
    }

    impl Interrupts {
        fn count(&self) -> usize {
            self.used.load(Ordering::SeqCst)
        }
    }

    fn activate(block: &mut Block, mem: &GuestMemoryMmap, vq: &Mock<'_>) -> Arc<Interrupts> {
        let interrupts = Arc::new(Interrupts::default());
        block
            .activate(ActivationContext {
                mem: mem.clone(),
                queues: vec![vq.create_queue::<Queue>().unwrap()],
                interrupt: interrupts.clone(),
            })
            .unwrap();
        interrupts
    }

    fn write_header(mem: &GuestMemoryMmap, request: u32, sector: u64) {
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&request.to_le_bytes());
        header[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&header, GuestAddress(HDR)).unwrap();
        mem.write_obj(UNTOUCHED, GuestAddress(STATUS)).unwrap();
    }

    fn write_segment(mem: &GuestMemoryMmap, sector: u64, sectors: u32, flags: u32) {
        let mut segment = [0u8; 16];
        segment[..8].copy_from_slice(&sector.to_le_bytes());
        segment[8..12].copy_from_slice(&sectors.to_le_bytes());
        segment[12..].copy_from_slice(&flags.to_le_bytes());
        mem.write_slice(&segment, GuestAddress(SEG)).unwrap();
    }

    fn status(mem: &GuestMemoryMmap) -> u8 {
        mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    /// Adds and serves a header / data / status chain starting at
    /// descriptor `start`; returns (status, used length).
    fn request(
        block: &mut Block,
        mem: &GuestMemoryMmap,
        vq: &Mock<'_>,
        start: u16,
        request: u32,
        sector: u64,
        data: Option<(u32, bool)>,
    ) -> (u8, u32) {
        write_header(mem, request, sector);
        let mut parts = vec![(HDR, 16, false)];
        if let Some((len, writable)) = data {
            parts.push((DATA, len, writable));
        }
        parts.push((STATUS, 1, true));
        add_chain(vq, start, &parts);
        let before = used_count(vq);
        block.queue_notify(0);
        assert_eq!(used_count(vq), before + 1, "request not completed");
        (status(mem), used(vq, usize::from(before)).1)
    }

    fn mem_block(sectors: usize, read_only: bool) -> (Block, MemDisk) {
        let disk = MemDisk::new(sectors, read_only);
        let block = Block::new(Box::new(disk.clone()), "nestbox-test").unwrap();
        (block, disk)
    }

    #[test]
    fn test_block_write_then_read_returns_same_bytes() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, disk) = mem_block(16, false);
        let interrupts = activate(&mut block, &mem, &vq);
        let pattern: Vec<u8> = (0..1024).map(|i| (i * 7 % 256) as u8).collect();
        mem.write_slice(&pattern, GuestAddress(DATA)).unwrap();

        // Act
        let written = request(
            &mut block,
            &mem,
            &vq,
            0,
            VIRTIO_BLK_T_OUT,
            2,
            Some((1024, false)),
        );
        mem.write_slice(&[0u8; 1024], GuestAddress(DATA)).unwrap();
        let read = request(
            &mut block,
            &mem,
            &vq,
            3,
            VIRTIO_BLK_T_IN,
            2,
            Some((1024, true)),
        );

        // Assert
        assert_eq!(written, (STATUS_OK, 1));
        assert_eq!(read, (STATUS_OK, 1025));
        assert_eq!(guest_bytes(&mem, DATA, 1024), pattern);
        assert_eq!(disk.bytes(1024, 1024), pattern);
        assert_eq!(used(&vq, 0).0, 0);
        assert_eq!(used(&vq, 1).0, 3);
        assert_eq!(interrupts.count(), 2);
    }

    #[test]
    fn test_raw_file_read_into_guest_fills_split_segments_in_order() {
        // Arrange
        let contents: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let image = TempImage::new("direct", &contents);
        let mut disk = RawFile::open(&image.0, true).unwrap();
        let mem = mem();
        mem.write_slice(&[0u8; 0x3000], GuestAddress(DATA)).unwrap();
        let segments = [
            mem.get_slice(GuestAddress(DATA), 1000).unwrap(),
            mem.get_slice(GuestAddress(DATA + 0x2000), 2072).unwrap(),
        ];

        // Act
        let direct = disk.read_into_guest(&segments, 1024).unwrap();

        // Assert
        assert!(direct);
        assert_eq!(guest_bytes(&mem, DATA, 1000), contents[1024..2024].to_vec());
        assert_eq!(
            guest_bytes(&mem, DATA + 0x2000, 2072),
            contents[2024..].to_vec()
        );
        assert_eq!(guest_bytes(&mem, DATA + 1000, 8), vec![0u8; 8]);
    }

    #[test]
    fn test_raw_file_read_into_guest_past_end_is_an_error() {
        // Arrange
        let image = TempImage::new("direct-eof", &[7u8; 512]);
        let mut disk = RawFile::open(&image.0, true).unwrap();
        let mem = mem();
        let segments = [mem.get_slice(GuestAddress(DATA), 1024).unwrap()];

        // Act
        let result = disk.read_into_guest(&segments, 0);

        // Assert
        assert!(result.is_err());
    }

    #[test]
    fn test_block_raw_file_write_lands_in_image_file() {
        // Arrange
        let image = TempImage::new("write", &[0x11; 8 * 512]);
        let mut block = raw_block(&image, false, "raw");
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        activate(&mut block, &mem, &vq);
        mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();

        // Act
        let written = request(
            &mut block,
            &mem,
            &vq,
            0,
            VIRTIO_BLK_T_OUT,
            3,
            Some((512, false)),
        );
        mem.write_slice(&[0u8; 512], GuestAddress(DATA)).unwrap();
        let read = request(
            &mut block,
            &mem,
            &vq,
            3,
            VIRTIO_BLK_T_IN,
            3,
            Some((512, true)),
        );
        let flushed = request(&mut block, &mem, &vq, 6, VIRTIO_BLK_T_FLUSH, 0, None);

        // Assert
        assert_eq!(written, (STATUS_OK, 1));
        assert_eq!(read, (STATUS_OK, 513));
        assert_eq!(flushed, (STATUS_OK, 1));
        assert_eq!(guest_bytes(&mem, DATA, 512), vec![0xab; 512]);
        let contents = image.contents();
        assert_eq!(contents.len(), 8 * 512);
        assert_eq!(&contents[3 * 512..4 * 512], &[0xab; 512][..]);
        assert_eq!(&contents[..3 * 512], &[0x11; 3 * 512][..]);
        assert_eq!(&contents[4 * 512..], &[0x11; 4 * 512][..]);
    }

    #[test]
    fn test_block_flush_completes_ok() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, disk) = mem_block(4, false);
        activate(&mut block, &mem, &vq);

        // Act
        let result = request(&mut block, &mem, &vq, 0, VIRTIO_BLK_T_FLUSH, 0, None);

        // Assert
        assert_eq!(result, (STATUS_OK, 1));
        assert_eq!(disk.flushes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn test_block_get_id_returns_padded_serial() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, _disk) = mem_block(4, false);
        activate(&mut block, &mem, &vq);
        mem.write_slice(&[0xff; 20], GuestAddress(ID_BUF)).unwrap();
        write_header(&mem, VIRTIO_BLK_T_GET_ID, 0);
        add_chain(
            &vq,
            0,
            &[(HDR, 16, false), (ID_BUF, 20, true), (STATUS, 1, true)],
        );

        // Act
        block.queue_notify(0);

        // Assert
        let mut expected = b"nestbox-test".to_vec();
        expected.resize(20, 0);
        assert_eq!(status(&mem), STATUS_OK);
        assert_eq!(used(&vq, 0), (0, 21));
        assert_eq!(guest_bytes(&mem, ID_BUF, 20), expected);
    }

    #[test]
    fn test_block_read_past_end_fails_without_touching_data() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, _disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);
        mem.write_slice(&[0xaa; 1024], GuestAddress(DATA)).unwrap();

        // Act
        let result = request(
            &mut block,
            &mem,
            &vq,
            0,
            VIRTIO_BLK_T_IN,
            7,
            Some((1024, true)),
        );

        // Assert
        assert_eq!(result, (STATUS_IOERR, 1));
        assert_eq!(guest_bytes(&mem, DATA, 1024), vec![0xaa; 1024]);
    }

    #[test]
    fn test_block_write_past_end_fails_without_touching_image() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);
        let before = disk.bytes(0, 8 * 512);

        // Act
        let result = request(
            &mut block,
            &mem,
            &vq,
            0,
            VIRTIO_BLK_T_OUT,
            8,
            Some((512, false)),
        );

        // Assert
        assert_eq!(result, (STATUS_IOERR, 1));
        assert_eq!(disk.bytes(0, 8 * 512), before);
    }

    #[test]
    fn test_block_sector_overflow_fails_without_panic() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, _disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);

        // Act
        let read = request(
            &mut block,
            &mem,
            &vq,
            0,
            VIRTIO_BLK_T_IN,
            u64::MAX,
            Some((512, true)),
        );
        let write = request(
            &mut block,
            &mem,
            &vq,
            3,
            VIRTIO_BLK_T_OUT,
            u64::MAX / 512 + 1,
            Some((512, false)),
        );

        // Assert
        assert_eq!(read, (STATUS_IOERR, 1));
        assert_eq!(write, (STATUS_IOERR, 1));
    }

    #[test]
    fn test_block_unaligned_length_fails() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, _disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);
        mem.write_slice(&[0xaa; 100], GuestAddress(DATA)).unwrap();

        // Act
        let read = request(
            &mut block,
            &mem,
            &vq,
            0,
            VIRTIO_BLK_T_IN,
            0,
            Some((100, true)),
        );
        let write = request(
            &mut block,
            &mem,
            &vq,
            3,
            VIRTIO_BLK_T_OUT,
            0,
            Some((600, false)),
        );

        // Assert
        assert_eq!(read, (STATUS_IOERR, 1));
        assert_eq!(write, (STATUS_IOERR, 1));
        assert_eq!(guest_bytes(&mem, DATA, 100), vec![0xaa; 100]);
    }

    #[test]
    fn test_block_writable_header_fails_with_ioerr() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, _disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);
        write_header(&mem, VIRTIO_BLK_T_IN, 0);
        add_chain(
            &vq,
            0,
            &[(HDR, 16, true), (DATA, 512, true), (STATUS, 1, true)],
        );

        // Act
        block.queue_notify(0);

        // Assert
        assert_eq!(status(&mem), STATUS_IOERR);
        assert_eq!(used(&vq, 0), (0, 1));
    }

    #[test]
    fn test_block_data_in_wrong_direction_fails_with_ioerr() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);
        let before = disk.bytes(0, 512);

        // Act: a write whose data the device would have to write.
        let result = request(
            &mut block,
            &mem,
            &vq,
            0,
            VIRTIO_BLK_T_OUT,
            0,
            Some((512, true)),
        );

        // Assert
        assert_eq!(result, (STATUS_IOERR, 1));
        assert_eq!(disk.bytes(0, 512), before);
    }

    #[test]
    fn test_block_readable_after_writable_fails_with_ioerr() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, _disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);
        write_header(&mem, VIRTIO_BLK_T_IN, 0);
        add_chain(
            &vq,
            0,
            &[
                (HDR, 16, false),
                (DATA, 512, true),
                (DATA + 0x1000, 512, false),
                (STATUS, 1, true),
            ],
        );

        // Act
        block.queue_notify(0);

        // Assert
        assert_eq!(status(&mem), STATUS_IOERR);
        assert_eq!(used(&vq, 0), (0, 1));
    }

    #[test]
    fn test_block_read_only_status_completes_with_zero_length() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, _disk) = mem_block(8, false);
        let interrupts = activate(&mut block, &mem, &vq);
        write_header(&mem, VIRTIO_BLK_T_IN, 0);
        mem.write_slice(&[0xaa; 512], GuestAddress(DATA)).unwrap();
        add_chain(
            &vq,
            0,
            &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, false)],
        );

        // Act
        block.queue_notify(0);

        // Assert
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(status(&mem), UNTOUCHED);
        assert_eq!(guest_bytes(&mem, DATA, 512), vec![0xaa; 512]);
        assert_eq!(interrupts.count(), 1);
        assert!(!block.needs_reset());
    }

    #[test]
    fn test_block_descriptor_outside_memory_fails_with_ioerr() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, _disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);
        write_header(&mem, VIRTIO_BLK_T_IN, 0);
        add_chain(
            &vq,
            0,
            &[
                (HDR, 16, false),
                (MEM_SIZE - 256, 512, true),
                (STATUS, 1, true),
            ],
        );
        write_header(&mem, VIRTIO_BLK_T_IN, 0);
        add_chain(
            &vq,
            3,
            &[
                (HDR, 16, false),
                (u64::MAX - 100, 512, true),
                (STATUS, 1, true),
            ],
        );

        // Act
        block.queue_notify(0);

        // Assert
        assert_eq!(used_count(&vq), 2);
        assert_eq!(used(&vq, 0), (0, 1));
        assert_eq!(used(&vq, 1), (3, 1));
        assert_eq!(status(&mem), STATUS_IOERR);
    }

    #[test]
    fn test_block_status_outside_memory_completes_with_zero_length() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, _disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);
        write_header(&mem, VIRTIO_BLK_T_FLUSH, 0);
        add_chain(&vq, 0, &[(HDR, 16, false), (MEM_SIZE + 0x1000, 1, true)]);

        // Act
        block.queue_notify(0);

        // Assert
        assert_eq!(used(&vq, 0), (0, 0));
        assert!(!block.needs_reset());
    }

    #[test]
    fn test_block_single_descriptor_chain_completes_with_zero_length() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);
        write_header(&mem, VIRTIO_BLK_T_FLUSH, 0);
        add_chain(&vq, 0, &[(HDR, 16, false)]);

        // Act
        block.queue_notify(0);

        // Assert
        assert_eq!(used_count(&vq), 1);
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(disk.flushes.load(Ordering::SeqCst), 0);
    }

    /// Puts `parts` (address, length, device-writable) as one chain in an
    /// indirect table at `table` and makes it the queue's next request.
    fn add_indirect_chain(
        mem: &GuestMemoryMmap,
        vq: &Mock<'_>,
        table: u64,
        parts: &[(u64, u32, bool)],
    ) {
        let next = VRING_DESC_F_NEXT as u16;
        let write = VRING_DESC_F_WRITE as u16;
        for (i, &(addr, len, writable)) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let flags = if last { 0 } else { next } | if writable { write } else { 0 };
            let desc = SplitDescriptor::new(addr, len, flags, if last { 0 } else { i as u16 + 1 });
            mem.write_obj(desc, GuestAddress(table + 16 * i as u64))
                .unwrap();
        }
        let indirect = virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT as u16;
        let len = u32::try_from(16 * parts.len()).unwrap();
        vq.add_desc_chains(
            &[RawDescriptor::from(SplitDescriptor::new(
                table, len, indirect, 0,
            ))],
            0,
        )
        .unwrap();
    }

    #[test]
    fn test_block_seg_max_segments_in_an_indirect_table_are_served_whatever_the_queue_size() {
        // 256: the device's queue size. 128: QEMU's vhost-user-blk front-end
        // sets its rings to 128 while the config still offers SEG_MAX, and
        // Linux then builds indirect tables longer than the ring (its
        // virtio_ring allows that with indirect descriptors).
        for queue_size in [QUEUE_SIZE, 128] {
            // Arrange: header, SEG_MAX data segments of 256 bytes, status,
            // in one indirect table.
            let mem = mem();
            let vq = MockSplitQueue::new(&mem, queue_size);
            let (mut block, disk) = mem_block(256, false);
            activate(&mut block, &mem, &vq);
            assert_ne!(block.features() & VIRTIO_RING_F_INDIRECT_DESC, 0);
            write_header(&mem, VIRTIO_BLK_T_IN, 0);
            let mut parts = vec![(HDR, 16, false)];
            parts.extend((0..u64::from(SEG_MAX)).map(|i| (DATA + i * 256, 256, true)));
            parts.push((STATUS, 1, true));
            add_indirect_chain(&mem, &vq, 0x4_0000, &parts);

            // Act
            block.queue_notify(0);

            // Assert
            let bytes = SEG_MAX as usize * 256;
            assert_eq!(status(&mem), STATUS_OK, "queue size {queue_size}");
            assert_eq!(used(&vq, 0), (0, bytes as u32 + 1));
            assert_eq!(guest_bytes(&mem, DATA, bytes), disk.bytes(0, bytes));
        }
    }

    #[test]
    fn test_block_indirect_table_with_more_than_seg_max_segments_fails_with_an_error_status() {
        // Arrange: header, SEG_MAX + 1 data segments, status, in one
        // indirect table: more segments than the config allows.
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
        let (mut block, _disk) = mem_block(256, false);
        activate(&mut block, &mem, &vq);
        write_header(&mem, VIRTIO_BLK_T_IN, 0);
        mem.write_slice(&[UNTOUCHED; 512], GuestAddress(DATA))
            .unwrap();
        mem.write_slice(&[UNTOUCHED], GuestAddress(STATUS)).unwrap();
        let mut parts = vec![(HDR, 16, false)];
        parts.extend((0..u64::from(SEG_MAX) + 1).map(|i| (DATA + i * 128, 128, true)));
        parts.push((STATUS, 1, true));
        add_indirect_chain(&mem, &vq, 0x4_0000, &parts);

        // Act
        block.queue_notify(0);

        // Assert: an error status the driver sees (not a silent success),
        // and no data.
        assert_eq!(used(&vq, 0), (0, 1));
        assert_eq!(status(&mem), STATUS_IOERR);
        assert_eq!(guest_bytes(&mem, DATA, 512), vec![UNTOUCHED; 512]);
    }

    #[test]
    fn test_block_any_layout_request_succeeds() {
        // Arrange: header and data in one readable buffer; data and status
        // in one writable buffer.
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);
        let mut out = vec![0u8; 16 + 512];
        out[..4].copy_from_slice(&VIRTIO_BLK_T_OUT.to_le_bytes());
        out[8..16].copy_from_slice(&5u64.to_le_bytes());
        out[16..].fill(0x5a);
        mem.write_slice(&out, GuestAddress(HDR)).unwrap();
        add_chain(&vq, 0, &[(HDR, 16 + 512, false), (STATUS, 1, true)]);
        block.queue_notify(0);
        write_header(&mem, VIRTIO_BLK_T_IN, 5);
        add_chain(
            &vq,
            2,
            &[(HDR, 8, false), (HDR + 8, 8, false), (DATA, 513, true)],
        );

        // Act
        block.queue_notify(0);

        // Assert
        assert_eq!(used(&vq, 0), (0, 1));
        assert_eq!(disk.bytes(5 * 512, 512), vec![0x5a; 512]);
        assert_eq!(used(&vq, 1), (2, 513));
        assert_eq!(guest_bytes(&mem, DATA, 512), vec![0x5a; 512]);
        assert_eq!(guest_bytes(&mem, DATA + 512, 1), vec![STATUS_OK]);
    }

    #[test]
    fn test_block_read_only_refuses_writes_and_keeps_image() {
        // Arrange
        let original: Vec<u8> = (0..8 * 512).map(|i| (i % 13) as u8).collect();
        let image = TempImage::new("ro", &original);
        let mut block = raw_block(&image, true, "ro");
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        activate(&mut block, &mem, &vq);
        mem.write_slice(&[0xcd; 512], GuestAddress(DATA)).unwrap();

        // Act
        let write = request(
            &mut block,
            &mem,
            &vq,
            0,
            VIRTIO_BLK_T_OUT,
            0,
            Some((512, false)),
        );
        write_segment(&mem, 0, 8, 0);
        write_header(&mem, VIRTIO_BLK_T_DISCARD, 0);
        add_chain(
            &vq,
            3,
            &[(HDR, 16, false), (SEG, 16, false), (STATUS, 1, true)],
        );
        block.queue_notify(0);
        let discard = status(&mem);
        write_header(&mem, VIRTIO_BLK_T_WRITE_ZEROES, 0);
        add_chain(
            &vq,
            6,
            &[(HDR, 16, false), (SEG, 16, false), (STATUS, 1, true)],
        );
        block.queue_notify(0);
        let write_zeroes = status(&mem);
        let read = request(
            &mut block,
            &mem,
            &vq,
            9,
            VIRTIO_BLK_T_IN,
            1,
            Some((512, true)),
        );

        // Assert
        assert!(block.read_only());
        assert_eq!(write, (STATUS_IOERR, 1));
        assert_eq!(discard, STATUS_IOERR);
        assert_eq!(write_zeroes, STATUS_IOERR);
        assert_eq!(read, (STATUS_OK, 513));
        assert_eq!(guest_bytes(&mem, DATA, 512), original[512..1024].to_vec());
        assert_eq!(image.contents(), original);
    }

    #[test]
    fn test_block_unknown_request_type_returns_unsupp() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, _disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);

        // Act
        let unknown = request(&mut block, &mem, &vq, 0, 0x77, 0, Some((512, true)));
        let barrier = request(&mut block, &mem, &vq, 3, 0x8000_0001, 0, None);

        // Assert
        assert_eq!(unknown, (STATUS_UNSUPP, 1));
        assert_eq!(barrier, (STATUS_UNSUPP, 1));
    }

    #[test]
    fn test_block_discard_range_reads_back_zeros() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);
        let untouched = disk.bytes(0, 512);
        write_segment(&mem, 1, 3, 0);
        write_header(&mem, VIRTIO_BLK_T_DISCARD, 0);
        add_chain(
            &vq,
            0,
            &[(HDR, 16, false), (SEG, 16, false), (STATUS, 1, true)],
        );

        // Act
        block.queue_notify(0);
        let read = request(
            &mut block,
            &mem,
            &vq,
            3,
            VIRTIO_BLK_T_IN,
            1,
            Some((3 * 512, true)),
        );

        // Assert
        assert_eq!(used(&vq, 0), (0, 1));
        assert_eq!(read, (STATUS_OK, 3 * 512 + 1));
        assert_eq!(guest_bytes(&mem, DATA, 3 * 512), vec![0; 3 * 512]);
        assert_eq!(disk.bytes(0, 512), untouched);
    }

    #[test]
    fn test_block_write_zeroes_range_reads_back_zeros() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);
        let untouched = disk.bytes(6 * 512, 1024);
        write_segment(&mem, 2, 4, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
        write_header(&mem, VIRTIO_BLK_T_WRITE_ZEROES, 0);
        add_chain(
            &vq,
            0,
            &[(HDR, 16, false), (SEG, 16, false), (STATUS, 1, true)],
        );

        // Act
        block.queue_notify(0);

        // Assert
        assert_eq!(status(&mem), STATUS_OK);
        assert_eq!(disk.bytes(2 * 512, 4 * 512), vec![0; 4 * 512]);
        assert_eq!(disk.bytes(6 * 512, 1024), untouched);
    }

    #[test]
    fn test_block_raw_file_discard_and_write_zeroes_read_back_zeros() {
        // Arrange
        let image = TempImage::new("zero", &[0x77; 64 * 512]);
        let mut block = raw_block(&image, false, "zero");
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        activate(&mut block, &mem, &vq);

        // Act: write zeroes with and without unmap, then discard.
        write_segment(&mem, 0, 16, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
        write_header(&mem, VIRTIO_BLK_T_WRITE_ZEROES, 0);
        add_chain(
            &vq,
            0,
            &[(HDR, 16, false), (SEG, 16, false), (STATUS, 1, true)],
        );
        block.queue_notify(0);
        let unmapped = status(&mem);
        write_segment(&mem, 16, 16, 0);
        write_header(&mem, VIRTIO_BLK_T_WRITE_ZEROES, 0);
        add_chain(
            &vq,
            3,
            &[(HDR, 16, false), (SEG, 16, false), (STATUS, 1, true)],
        );
        block.queue_notify(0);
        let zeroed = status(&mem);
        write_segment(&mem, 40, 8, 0);
        write_header(&mem, VIRTIO_BLK_T_DISCARD, 0);
        add_chain(
            &vq,
            6,
            &[(HDR, 16, false), (SEG, 16, false), (STATUS, 1, true)],
        );
        block.queue_notify(0);
        let discarded = status(&mem);

        // Assert
        assert_eq!(
            (unmapped, zeroed, discarded),
            (STATUS_OK, STATUS_OK, STATUS_OK)
        );
        let contents = image.contents();
        assert_eq!(contents.len(), 64 * 512);
        assert_eq!(&contents[..32 * 512], &[0u8; 32 * 512][..]);
        assert_eq!(&contents[32 * 512..40 * 512], &[0x77; 8 * 512][..]);
        assert_eq!(&contents[48 * 512..], &[0x77; 16 * 512][..]);
    }

    #[test]
    fn test_block_bad_segments_fail() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, 2 * QSIZE);
        let (mut block, disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);
        let before = disk.bytes(0, 8 * 512);
        let mut statuses = Vec::new();
        let cases = [
            // (request, sector, sectors, flags, segment bytes)
            (
                VIRTIO_BLK_T_DISCARD,
                0,
                1,
                VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
                16,
            ),
            (VIRTIO_BLK_T_WRITE_ZEROES, 0, 1, 0x80, 16),
            (VIRTIO_BLK_T_WRITE_ZEROES, 6, 3, 0, 16),
            (VIRTIO_BLK_T_DISCARD, u64::MAX, 2, 0, 16),
            (VIRTIO_BLK_T_DISCARD, 0, 1, 0, 32),
            (VIRTIO_BLK_T_DISCARD, 0, 1, 0, 8),
        ];

        // Act
        for (i, &(req, sector, sectors, flags, seg_len)) in cases.iter().enumerate() {
            write_segment(&mem, sector, sectors, flags);
            write_header(&mem, req, 0);
            let start = u16::try_from(i * 3).unwrap();
            add_chain(
                &vq,
                start,
                &[(HDR, 16, false), (SEG, seg_len, false), (STATUS, 1, true)],
            );
            block.queue_notify(0);
            statuses.push(status(&mem));
        }

        // Assert
        assert_eq!(
            statuses,
            [
                STATUS_UNSUPP,
                STATUS_UNSUPP,
                STATUS_IOERR,
                STATUS_IOERR,
                STATUS_IOERR,
                STATUS_IOERR
            ]
        );
        assert_eq!(disk.bytes(0, 8 * 512), before);
    }

    #[test]
    fn test_block_bad_avail_index_sets_needs_reset() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, _disk) = mem_block(8, false);
        let interrupts = activate(&mut block, &mem, &vq);
        vq.avail().idx().store(1000);

        // Act
        block.queue_notify(0);
        block.queue_notify(0);

        // Assert
        assert!(block.needs_reset());
        assert_eq!(used_count(&vq), 0);
        assert_eq!(interrupts.count(), 0);
        assert!(block.process_queue().is_ok_and(|used| !used));
    }

    #[test]
    fn test_block_bad_head_index_sets_needs_reset() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, _disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);
        vq.avail().ring().ref_at(0).unwrap().store(200);
        vq.avail().idx().store(1);

        // Act
        let result = block.process_queue();

        // Assert
        assert!(matches!(
            result,
            Err(BlockError::Guest(GuestFault::Queue(_)))
        ));
        assert!(block.needs_reset());
        assert_eq!(used_count(&vq), 0);
    }

    #[test]
    fn test_block_reset_clears_needs_reset_and_allows_activation() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, _disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);
        vq.avail().idx().store(1000);
        block.queue_notify(0);

        // Act
        block.reset();
        let inactive = block.process_queue();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        activate(&mut block, &mem, &vq);
        let result = request(&mut block, &mem, &vq, 0, VIRTIO_BLK_T_FLUSH, 0, None);

        // Assert
        assert!(inactive.is_ok_and(|used| !used));
        assert!(!block.needs_reset());
        assert_eq!(result, (STATUS_OK, 1));
    }

    #[test]
    fn test_block_activate_with_two_queues_fails() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, _disk) = mem_block(8, false);
        let queues = vec![
            vq.create_queue::<Queue>().unwrap(),
            vq.create_queue::<Queue>().unwrap(),
        ];

        // Act
        let result = block.activate(ActivationContext {
            mem: mem.clone(),
            queues,
            interrupt: Arc::new(Interrupts::default()),
        });

        // Assert
        assert!(matches!(
            result,
            Err(ActivateError::QueueCount {
                expected: 1,
                got: 2
            })
        ));
    }

    #[test]
    fn test_block_event_idx_publishes_avail_event_and_honours_used_event() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, _disk) = mem_block(8, false);
        block.ack_features(block.features());
        let interrupts = activate(&mut block, &mem, &vq);
        // used_event (after the avail ring) asks for an interrupt only once
        // the second request is used.
        let used_event = vq.avail_addr().unchecked_add(4 + 2 * u64::from(QSIZE));
        mem.write_obj(1u16, used_event).unwrap();
        let avail_event = vq.used_addr().unchecked_add(4 + 8 * u64::from(QSIZE));

        // Act
        request(&mut block, &mem, &vq, 0, VIRTIO_BLK_T_FLUSH, 0, None);
        let first = interrupts.count();
        request(&mut block, &mem, &vq, 2, VIRTIO_BLK_T_FLUSH, 0, None);

        // Assert
        assert_eq!(first, 0);
        assert_eq!(interrupts.count(), 1);
        assert_eq!(mem.read_obj::<u16>(avail_event).unwrap(), 2);
    }

    #[test]
    fn test_block_multiple_chains_complete_with_one_interrupt() {
        // Arrange
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, _disk) = mem_block(8, false);
        let interrupts = activate(&mut block, &mem, &vq);
        write_header(&mem, VIRTIO_BLK_T_FLUSH, 0);
        for start in [0, 2, 4, 6] {
            add_chain(&vq, start, &[(HDR, 16, false), (STATUS, 1, true)]);
        }

        // Act
        block.queue_notify(0);
        block.queue_notify(0);

        // Assert
        assert_eq!(used_count(&vq), 4);
        assert_eq!(
            (0..4).map(|i| used(&vq, i)).collect::<Vec<_>>(),
            [(0, 1), (2, 1), (4, 1), (6, 1)]
        );
        assert_eq!(interrupts.count(), 1);
    }

    #[test]
    fn test_block_config_capacity_matches_image_size() {
        // Arrange
        let image = TempImage::new("config", &vec![0u8; 128 * 512 + 100]);
        let disk = RawFile::open(&image.0, false).unwrap();
        let block = Block::new(Box::new(disk), "config").unwrap();
        let mut capacity = [0u8; 8];
        let mut blk_size = [0u8; 4];
        let mut seg_max = [0u8; 4];
        let mut past_end = [0xffu8; 4];

        // Act
        block.read_config(0, &mut capacity);
        block.read_config(20, &mut blk_size);
        block.read_config(12, &mut seg_max);
        block.read_config(CONFIG_LEN as u64, &mut past_end);

        // Assert
        assert_eq!(u64::from_le_bytes(capacity), 128);
        assert_eq!(block.capacity(), 128);
        assert_eq!(u32::from_le_bytes(blk_size), 512);
        assert_eq!(u32::from_le_bytes(seg_max), SEG_MAX);
        assert_eq!(past_end, [0; 4]);
    }

    #[test]
    fn test_block_write_config_is_ignored() {
        // Arrange
        let (mut block, _disk) = mem_block(8, false);
        let mut before = [0u8; CONFIG_LEN];
        block.read_config(0, &mut before);

        // Act
        block.write_config(0, &[0xff; 16]);
        block.write_config(32, &[1]);

        // Assert
        let mut after = [0u8; CONFIG_LEN];
        block.read_config(0, &mut after);
        assert_eq!(before, after);
    }

    #[test]
    fn test_block_features_depend_on_read_only() {
        // Arrange
        let (writable, _) = mem_block(8, false);
        let (read_only, _) = mem_block(8, true);
        let bit = |b: u32| 1u64 << b;

        // Act
        let rw = writable.features();
        let ro = read_only.features();

        // Assert
        for f in [
            VIRTIO_F_VERSION_1,
            VIRTIO_RING_F_EVENT_IDX,
            bit(VIRTIO_BLK_F_SEG_MAX),
            bit(VIRTIO_BLK_F_BLK_SIZE),
            bit(VIRTIO_BLK_F_FLUSH),
        ] {
            assert_ne!(rw & f, 0);
            assert_ne!(ro & f, 0);
        }
        assert_ne!(rw & bit(VIRTIO_BLK_F_DISCARD), 0);
        assert_ne!(rw & bit(VIRTIO_BLK_F_WRITE_ZEROES), 0);
        assert_eq!(rw & bit(VIRTIO_BLK_F_RO), 0);
        assert_ne!(ro & bit(VIRTIO_BLK_F_RO), 0);
        assert_eq!(ro & bit(VIRTIO_BLK_F_DISCARD), 0);
        assert_eq!(ro & bit(VIRTIO_BLK_F_WRITE_ZEROES), 0);
        assert_eq!(writable.device_type(), device_type::BLOCK);
        assert_eq!(writable.queue_max_sizes(), &[QUEUE_SIZE]);
    }

    #[test]
    fn test_block_new_with_long_id_fails() {
        // Arrange
        let disk = MemDisk::new(8, false);

        // Act
        let result = Block::new(Box::new(disk), "an-id-longer-than-20-bytes");

        // Assert
        assert!(matches!(result, Err(BlockError::IdTooLong(_))));
    }

    #[test]
    fn test_block_open_missing_image_fails() {
        // Arrange
        let path = std::env::temp_dir().join("nestbox-block-test-does-not-exist.img");

        // Act
        let result = RawFile::open(&path, true);

        // Assert
        assert!(matches!(result, Err(BlockError::Open { .. })));
    }

    /// Stores descriptor `index` of `vq`'s table.
    fn put_desc(vq: &Mock<'_>, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        vq.desc_table()
            .store(
                index,
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next)),
            )
            .unwrap();
    }

    /// A read of one sector into DATA: header, data, status at
    /// descriptors `start..start + 3`.
    fn put_read_chain(vq: &Mock<'_>, start: u16) {
        let next = VRING_DESC_F_NEXT as u16;
        let write = VRING_DESC_F_WRITE as u16;
        put_desc(vq, start, HDR, 16, next, start + 1);
        put_desc(vq, start + 1, DATA, 512, next | write, start + 2);
        put_desc(vq, start + 2, STATUS, 1, write, 0);
    }

    #[test]
    fn test_block_ring_indices_wrap_around() {
        // Arrange: the queue's indices two short of wrapping, so the two
        // requests take ring slots 14 and 15 and the indices wrap to 0.
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, disk) = mem_block(8, false);
        let mut queue: Queue = vq.create_queue().unwrap();
        let start = u16::MAX - 1;
        queue.set_next_avail(start);
        queue.set_next_used(start);
        write_header(&mem, VIRTIO_BLK_T_IN, 2);
        put_read_chain(&vq, 0);
        put_read_chain(&vq, 3);
        vq.avail().ring().ref_at(14).unwrap().store(0);
        vq.avail().ring().ref_at(15).unwrap().store(3);
        vq.avail().idx().store(start.wrapping_add(2));

        // Act
        let used_any = block.serve_queue(&mem, &mut queue).unwrap();

        // Assert
        assert!(used_any);
        assert_eq!((queue.next_avail(), queue.next_used()), (0, 0));
        assert_eq!(used_count(&vq), 0);
        assert_eq!((used(&vq, 14), used(&vq, 15)), ((0, 513), (3, 513)));
        assert_eq!(status(&mem), STATUS_OK);
        assert_eq!(guest_bytes(&mem, DATA, 512), disk.bytes(1024, 512));
    }

    #[test]
    fn test_block_rings_and_buffer_across_regions_are_served() {
        // Arrange: three adjacent regions; the descriptor table crosses the
        // first boundary (so the generic path serves the queue) and the
        // data buffer the second (so it goes through the bounce buffer).
        let boundary = DATA + 256;
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x8000),
            (GuestAddress(0x8000), (boundary - 0x8000) as usize),
            (GuestAddress(boundary), (MEM_SIZE - boundary) as usize),
        ])
        .unwrap();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x8000 - 0x80), QSIZE);
        let (mut block, disk) = mem_block(8, false);
        let interrupts = activate(&mut block, &mem, &vq);
        let queue: Queue = vq.create_queue().unwrap();
        assert!(Rings::new(&mem, &queue).is_none());

        // Act
        let read = request(
            &mut block,
            &mem,
            &vq,
            0,
            VIRTIO_BLK_T_IN,
            3,
            Some((512, true)),
        );

        // Assert
        assert_eq!(read, (STATUS_OK, 513));
        assert_eq!(guest_bytes(&mem, DATA, 512), disk.bytes(3 * 512, 512));
        assert_eq!(interrupts.count(), 1);
    }

    #[test]
    fn test_block_event_idx_interrupts_when_used_event_is_inside_a_batch() {
        // Arrange: four requests served in one batch; the driver asks for
        // an interrupt once the third is used.
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, _disk) = mem_block(8, false);
        block.ack_features(block.features());
        let interrupts = activate(&mut block, &mem, &vq);
        let used_event = vq.avail_addr().unchecked_add(4 + 2 * u64::from(QSIZE));
        mem.write_obj(2u16, used_event).unwrap();
        write_header(&mem, VIRTIO_BLK_T_FLUSH, 0);
        for start in [0, 2, 4, 6] {
            add_chain(&vq, start, &[(HDR, 16, false), (STATUS, 1, true)]);
        }

        // Act
        block.queue_notify(0);
        let after_batch = interrupts.count();
        // The next one is not what used_event waits for.
        mem.write_obj(100u16, used_event).unwrap();
        add_chain(&vq, 8, &[(HDR, 16, false), (STATUS, 1, true)]);
        block.queue_notify(0);

        // Assert
        assert_eq!(used_count(&vq), 5);
        assert_eq!(after_batch, 1);
        assert_eq!(interrupts.count(), 1);
    }

    #[test]
    fn test_block_indirect_chain_is_served() {
        // Arrange: the head descriptor points at a table of three.
        const TABLE: u64 = 0x4_0000;
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);
        write_header(&mem, VIRTIO_BLK_T_IN, 1);
        let next = VRING_DESC_F_NEXT as u16;
        let write = VRING_DESC_F_WRITE as u16;
        let table = [
            SplitDescriptor::new(HDR, 16, next, 1),
            SplitDescriptor::new(DATA, 512, next | write, 2),
            SplitDescriptor::new(STATUS, 1, write, 0),
        ];
        for (i, desc) in table.iter().enumerate() {
            mem.write_obj(*desc, GuestAddress(TABLE + 16 * i as u64))
                .unwrap();
        }
        let indirect = virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT as u16;
        vq.add_desc_chains(
            &[RawDescriptor::from(SplitDescriptor::new(
                TABLE, 48, indirect, 0,
            ))],
            0,
        )
        .unwrap();

        // Act
        block.queue_notify(0);

        // Assert
        assert_eq!(used(&vq, 0), (0, 513));
        assert_eq!(status(&mem), STATUS_OK);
        assert_eq!(guest_bytes(&mem, DATA, 512), disk.bytes(512, 512));
    }

    #[test]
    fn test_block_header_split_across_descriptors_with_data_in_its_second_part() {
        // Arrange: a 4-byte piece, then 12 header bytes and the data of a
        // write in one buffer, then the status.
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let (mut block, disk) = mem_block(8, false);
        activate(&mut block, &mem, &vq);
        let mut out = vec![0u8; 16 + 512];
        out[..4].copy_from_slice(&VIRTIO_BLK_T_OUT.to_le_bytes());
        out[8..16].copy_from_slice(&6u64.to_le_bytes());
        out[16..].fill(0x3c);
        mem.write_slice(&out[..4], GuestAddress(HDR)).unwrap();
        mem.write_slice(&out[4..], GuestAddress(SEG)).unwrap();
        add_chain(
            &vq,
            0,
            &[(HDR, 4, false), (SEG, 12 + 512, false), (STATUS, 1, true)],
        );

        // Act
        block.queue_notify(0);

        // Assert
        assert_eq!(used(&vq, 0), (0, 1));
        assert_eq!(status(&mem), STATUS_OK);
        assert_eq!(disk.bytes(6 * 512, 512), vec![0x3c; 512]);
    }

    #[test]
    fn test_block_raw_file_write_straight_from_scattered_guest_buffers() {
        // Arrange: a header split in two, the first data bytes sharing the
        // header's second buffer, the rest in two more buffers (the direct
        // pwritev path, which skips the header inside a buffer).
        let image = TempImage::new("write-direct", &[0x11; 16 * 512]);
        let mut block = raw_block(&image, false, "raw");
        let mem = mem();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        activate(&mut block, &mem, &vq);
        let data: Vec<u8> = (0..3 * 512).map(|i| (i % 253) as u8).collect();
        let mut head = vec![0u8; 12 + 100];
        head[4..12].copy_from_slice(&5u64.to_le_bytes());
        head[12..].copy_from_slice(&data[..100]);
        mem.write_slice(&VIRTIO_BLK_T_OUT.to_le_bytes(), GuestAddress(HDR))
            .unwrap();
        mem.write_slice(&head, GuestAddress(SEG)).unwrap();
        mem.write_slice(&data[100..1000], GuestAddress(DATA))
            .unwrap();
        mem.write_slice(&data[1000..], GuestAddress(DATA + 0x1000))
            .unwrap();
        add_chain(
            &vq,
            0,
            &[
                (HDR, 4, false),
                (SEG, 12 + 100, false),
                (DATA, 900, false),
                (DATA + 0x1000, 3 * 512 - 1000, false),
                (STATUS, 1, true),
            ],
        );

        // Act
        block.queue_notify(0);

        // Assert
        assert_eq!(used(&vq, 0), (0, 1));
        assert_eq!(status(&mem), STATUS_OK);
        let contents = image.contents();
        assert_eq!(&contents[5 * 512..8 * 512], &data[..]);
        assert_eq!(&contents[..5 * 512], &[0x11; 5 * 512][..]);
        assert_eq!(&contents[8 * 512..], &[0x11; 8 * 512][..]);
    }

    #[test]
    fn test_raw_file_write_from_guest_on_a_read_only_image_is_refused() {
        let image = TempImage::new("direct-ro", &[7u8; 512]);
        let mut disk = RawFile::open(&image.0, true).unwrap();
        let mem = mem();
        let segments = [mem.get_slice(GuestAddress(DATA), 512).unwrap()];
        assert!(disk.write_from_guest(&segments, 0).is_err());
        assert_eq!(image.contents(), vec![7u8; 512]);
    }
}
