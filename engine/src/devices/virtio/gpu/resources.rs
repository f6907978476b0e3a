// SPDX-License-Identifier: Apache-2.0
//! The resource table of the 2D model (virtio spec 1.2, 5.7.6.8): each
//! resource has a host-side copy of its pixels and, once the guest attached
//! one, a backing in guest memory (a list of guest-physical ranges) that
//! TRANSFER_TO_HOST_2D copies from.
//!
//! Everything is checked before memory is touched or allocated: sizes with
//! checked arithmetic against [`MAX_DIMENSION`], the host memory all
//! resources take against the device's limit, backing ranges against guest
//! memory, and each transfer's rectangle against the resource and its
//! source range against the backing.

use std::collections::HashMap;

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use super::Refusal;
use super::protocol::{
    MemEntry, PixelFormat, RESP_ERR_INVALID_PARAMETER, RESP_ERR_INVALID_RESOURCE_ID,
    RESP_ERR_OUT_OF_MEMORY, RESP_ERR_UNSPEC, Rect,
};
use crate::memory::GuestMemoryMmap;

/// The largest width or height of a resource, in pixels.
pub const MAX_DIMENSION: u32 = 16384;
/// Host bytes a resource is charged beyond its pixels (its table entry).
const RESOURCE_OVERHEAD: u64 = 256;
/// Host bytes a backing entry is charged.
const ENTRY_COST: u64 = std::mem::size_of::<Entry>() as u64;

/// One piece of a backing: `len` bytes at `addr`, `start` bytes into the
/// backing.
#[derive(Clone, Copy, Debug)]
struct Entry {
    addr: GuestAddress,
    start: u64,
    len: u64,
}

/// A resource's guest backing, checked against guest memory when attached.
#[derive(Debug, Default)]
struct Backing {
    entries: Vec<Entry>,
    len: u64,
}

impl Backing {
    /// Copies `buf.len()` bytes from `offset` bytes into the backing
    /// (already checked to lie within it) into `buf`.
    fn read(&self, mem: &GuestMemoryMmap, offset: u64, buf: &mut [u8]) -> Result<(), Refusal> {
        let first = self
            .entries
            .partition_point(|e| e.start.saturating_add(e.len) <= offset);
        let mut done = 0usize;
        let mut at = offset;
        for entry in self.entries.iter().skip(first) {
            if done == buf.len() {
                break;
            }
            let skip = at.checked_sub(entry.start).ok_or(BACKING_FAULT)?;
            let avail = entry.len.checked_sub(skip).ok_or(BACKING_FAULT)?;
            let want = buf.len().saturating_sub(done);
            let n = usize::try_from(avail).map_or(want, |a| a.min(want));
            let addr = entry.addr.checked_add(skip).ok_or(BACKING_FAULT)?;
            let end = done.checked_add(n).ok_or(BACKING_FAULT)?;
            let part = buf.get_mut(done..end).ok_or(BACKING_FAULT)?;
            mem.read_slice(part, addr).map_err(|_| BACKING_FAULT)?;
            done = end;
            at = at.saturating_add(n as u64);
        }
        if done == buf.len() {
            Ok(())
        } else {
            Err(BACKING_FAULT)
        }
    }
}

const BACKING_FAULT: Refusal = Refusal::new(RESP_ERR_UNSPEC, "the backing cannot be read");

/// A 2D resource.
#[derive(Debug)]
pub(super) struct Resource {
    /// Its pixel format.
    pub format: PixelFormat,
    /// Width in pixels (1..=`MAX_DIMENSION`).
    pub width: u32,
    /// Height in pixels (1..=`MAX_DIMENSION`).
    pub height: u32,
    /// The host copy: `height` rows of `width * 4` bytes.
    pub pixels: Vec<u8>,
    backing: Option<Backing>,
}

impl Resource {
    /// Bytes from one row to the next.
    pub fn stride(&self) -> usize {
        (self.width as usize).saturating_mul(4)
    }

    fn cost(&self) -> u64 {
        let entries = self.backing.as_ref().map_or(0, |b| b.entries.len() as u64);
        (self.pixels.len() as u64)
            .saturating_add(RESOURCE_OVERHEAD)
            .saturating_add(entries.saturating_mul(ENTRY_COST))
    }
}

/// All resources of a device, and the host memory they take.
#[derive(Debug)]
pub(super) struct Resources {
    map: HashMap<u32, Resource>,
    used: u64,
    limit: u64,
}

const NO_RESOURCE: Refusal = Refusal::new(RESP_ERR_INVALID_RESOURCE_ID, "no such resource");

impl Resources {
    /// An empty table that may take `limit` bytes of host memory.
    pub fn new(limit: u64) -> Self {
        Self {
            map: HashMap::new(),
            used: 0,
            limit,
        }
    }

    /// Host bytes the resources may take.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Host bytes the resources take.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The resource `id`.
    pub fn get(&self, id: u32) -> Result<&Resource, Refusal> {
        self.map.get(&id).ok_or(NO_RESOURCE)
    }

    /// Every resource with its id, its backing (as the guest attached it)
    /// and its host copy, in id order.
    pub fn each(&self) -> Vec<(u32, &Resource, Option<Vec<MemEntry>>)> {
        let mut all: Vec<_> = self
            .map
            .iter()
            .map(|(&id, resource)| {
                let backing = resource.backing.as_ref().map(|b| {
                    b.entries
                        .iter()
                        .map(|e| MemEntry {
                            addr: e.addr.raw_value(),
                            // Each entry came from a u32 length.
                            length: u32::try_from(e.len).unwrap_or(u32::MAX),
                        })
                        .collect()
                });
                (id, resource, backing)
            })
            .collect();
        all.sort_by_key(|(id, _, _)| *id);
        all
    }

    /// Puts back a resource's host copy (a restored state): `pixels` must
    /// be exactly as long as the resource's.
    pub fn set_pixels(&mut self, id: u32, pixels: Vec<u8>) -> Result<(), Refusal> {
        let resource = self.map.get_mut(&id).ok_or(NO_RESOURCE)?;
        if pixels.len() != resource.pixels.len() {
            return Err(Refusal::new(
                RESP_ERR_INVALID_PARAMETER,
                "the pixels do not fit the resource",
            ));
        }
        resource.pixels = pixels;
        Ok(())
    }

    /// Drops every resource.
    pub fn clear(&mut self) {
        self.map.clear();
        self.used = 0;
    }

    /// Charges `bytes` more host memory, if the limit allows.
    fn charge(&mut self, bytes: u64) -> Result<(), Refusal> {
        match self.used.checked_add(bytes) {
            Some(total) if total <= self.limit => {
                self.used = total;
                Ok(())
            }
            _ => Err(Refusal::new(
                RESP_ERR_OUT_OF_MEMORY,
                "the device's resource memory is exhausted",
            )),
        }
    }

    /// RESOURCE_CREATE_2D.
    pub fn create(&mut self, id: u32, format: u32, width: u32, height: u32) -> Result<(), Refusal> {
        if id == 0 {
            return Err(Refusal::new(
                RESP_ERR_INVALID_RESOURCE_ID,
                "resource id 0 is reserved",
            ));
        }
        if self.map.contains_key(&id) {
            return Err(Refusal::new(
                RESP_ERR_INVALID_RESOURCE_ID,
                "the resource id is taken",
            ));
        }
        let format = PixelFormat::from_virtio(format)
            .ok_or(Refusal::new(RESP_ERR_INVALID_PARAMETER, "unknown format"))?;
        if !(1..=MAX_DIMENSION).contains(&width) || !(1..=MAX_DIMENSION).contains(&height) {
            return Err(Refusal::new(
                RESP_ERR_INVALID_PARAMETER,
                "resource size out of range",
            ));
        }
        // At most 16384 * 16384 * 4 = 1 GiB: fits a u64 and, on 64-bit, a usize.
        let bytes = u64::from(width) * u64::from(height) * 4;
        let len = usize::try_from(bytes).map_err(|_| OUT_OF_MEMORY)?;
        let cost = bytes.saturating_add(RESOURCE_OVERHEAD);
        self.charge(cost)?;
        let mut pixels = Vec::new();
        if pixels.try_reserve_exact(len).is_err() {
            self.used = self.used.saturating_sub(cost);
            return Err(OUT_OF_MEMORY);
        }
        pixels.resize(len, 0);
        self.map.insert(
            id,
            Resource {
                format,
                width,
                height,
                pixels,
                backing: None,
            },
        );
        Ok(())
    }

    /// RESOURCE_UNREF.
    pub fn unref(&mut self, id: u32) -> Result<(), Refusal> {
        let resource = self.map.remove(&id).ok_or(NO_RESOURCE)?;
        self.used = self.used.saturating_sub(resource.cost());
        Ok(())
    }

    /// RESOURCE_ATTACH_BACKING with `entries`, every one of which must lie
    /// in guest memory.
    pub fn attach(
        &mut self,
        mem: &GuestMemoryMmap,
        id: u32,
        entries: &[MemEntry],
    ) -> Result<(), Refusal> {
        let resource = self.map.get(&id).ok_or(NO_RESOURCE)?;
        if resource.backing.is_some() {
            return Err(Refusal::new(
                RESP_ERR_UNSPEC,
                "the resource already has a backing",
            ));
        }
        let mut backing = Backing::default();
        for entry in entries {
            let addr = GuestAddress(entry.addr);
            let fits = entry.addr.checked_add(u64::from(entry.length)).is_some()
                && mem.check_range(addr, entry.length as usize);
            if !fits {
                return Err(Refusal::new(
                    RESP_ERR_INVALID_PARAMETER,
                    "a backing entry is outside guest memory",
                ));
            }
            if entry.length == 0 {
                continue;
            }
            backing.entries.push(Entry {
                addr,
                start: backing.len,
                len: u64::from(entry.length),
            });
            // At most 16384 entries of under 4 GiB each: no overflow.
            backing.len = backing.len.saturating_add(u64::from(entry.length));
        }
        self.charge((backing.entries.len() as u64).saturating_mul(ENTRY_COST))?;
        if let Some(resource) = self.map.get_mut(&id) {
            resource.backing = Some(backing);
        }
        Ok(())
    }

    /// RESOURCE_DETACH_BACKING (a resource without backing stays so).
    pub fn detach(&mut self, id: u32) -> Result<(), Refusal> {
        let resource = self.map.get_mut(&id).ok_or(NO_RESOURCE)?;
        if let Some(backing) = resource.backing.take() {
            let cost = (backing.entries.len() as u64).saturating_mul(ENTRY_COST);
            self.used = self.used.saturating_sub(cost);
        }
        Ok(())
    }

    /// TRANSFER_TO_HOST_2D: copies `rect` from the backing into the host
    /// copy. Source row `r` starts at `offset + r * stride` in the backing
    /// (`offset` is where the rectangle's top-left pixel is), destination
    /// row at `(rect.y + r) * stride + rect.x * 4`, stride = width * 4.
    pub fn transfer(
        &mut self,
        mem: &GuestMemoryMmap,
        id: u32,
        rect: Rect,
        offset: u64,
    ) -> Result<(), Refusal> {
        let resource = self.map.get_mut(&id).ok_or(NO_RESOURCE)?;
        if !rect.fits(resource.width, resource.height) {
            return Err(Refusal::new(
                RESP_ERR_INVALID_PARAMETER,
                "the transfer rectangle is outside the resource",
            ));
        }
        let backing = resource
            .backing
            .as_ref()
            .ok_or(Refusal::new(RESP_ERR_UNSPEC, "the resource has no backing"))?;
        if rect.is_empty() {
            return Ok(());
        }
        let stride = u64::from(resource.width) * 4;
        let row = u64::from(rect.width) * 4;
        let rows = u64::from(rect.height);
        let source_end = (rows - 1)
            .checked_mul(stride)
            .and_then(|v| v.checked_add(row))
            .and_then(|v| v.checked_add(offset));
        if !matches!(source_end, Some(end) if end <= backing.len) {
            return Err(Refusal::new(
                RESP_ERR_INVALID_PARAMETER,
                "the transfer's source runs past the backing",
            ));
        }
        // The rectangle fits the resource, so every destination below lies
        // within its pixels (at most 1 GiB).
        let dst_of = |y: u64| -> Option<usize> {
            usize::try_from(y.checked_mul(stride)?.checked_add(u64::from(rect.x) * 4)?).ok()
        };
        let pixels = &mut resource.pixels;
        if rect.x == 0 && rect.width == resource.width {
            // Whole rows: one contiguous copy.
            let start = dst_of(u64::from(rect.y)).ok_or(BACKING_FAULT)?;
            let len = usize::try_from(rows * stride).map_err(|_| BACKING_FAULT)?;
            let end = start.checked_add(len).ok_or(BACKING_FAULT)?;
            let dst = pixels.get_mut(start..end).ok_or(BACKING_FAULT)?;
            return backing.read(mem, offset, dst);
        }
        let row_len = usize::try_from(row).map_err(|_| BACKING_FAULT)?;
        for r in 0..rows {
            let start = dst_of(u64::from(rect.y) + r).ok_or(BACKING_FAULT)?;
            let end = start.checked_add(row_len).ok_or(BACKING_FAULT)?;
            let dst = pixels.get_mut(start..end).ok_or(BACKING_FAULT)?;
            backing.read(mem, offset + r * stride, dst)?;
        }
        Ok(())
    }
}

const OUT_OF_MEMORY: Refusal = Refusal::new(
    RESP_ERR_OUT_OF_MEMORY,
    "host memory for the resource cannot be allocated",
);
