// SPDX-License-Identifier: Apache-2.0
//! A request's descriptor chain, copied out of guest memory and checked as
//! a whole: device-readable buffers (the command) first, then
//! device-writable ones (the response), every buffer inside guest memory.
//! The command and response are then read and written as byte streams
//! over those buffers, whatever their layout (spec 2.7.4).

use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use super::GpuError;
use crate::memory::GuestMemoryMmap;

/// The most descriptors a request may have.
pub const MAX_CHAIN_DESCRIPTORS: usize = 256;

/// One buffer of a chain.
#[derive(Clone, Copy, Debug)]
struct Desc {
    addr: GuestAddress,
    len: u32,
}

/// The buffers of one request.
#[derive(Debug, Default)]
pub(super) struct Chain {
    readable: Vec<Desc>,
    writable: Vec<Desc>,
    /// Total bytes of the readable buffers.
    pub readable_len: u64,
    /// Total bytes of the writable buffers.
    pub writable_len: u64,
}

impl Chain {
    /// Copies and checks the buffers of `chain` (reusing this one's storage).
    pub fn collect(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
    ) -> Result<(), GpuError> {
        self.readable.clear();
        self.writable.clear();
        self.readable_len = 0;
        self.writable_len = 0;
        let mut count = 0usize;
        // virtio-queue ends the chain at a loop, a bad index or an
        // unreadable descriptor; what remains is checked like any chain.
        for raw in chain {
            count = count.saturating_add(1);
            if count > MAX_CHAIN_DESCRIPTORS {
                return Err(GpuError::TooManyDescriptors);
            }
            let desc = Desc {
                addr: raw.addr(),
                len: raw.len(),
            };
            let inside = desc.addr.checked_add(u64::from(desc.len)).is_some()
                && mem.check_range(desc.addr, desc.len as usize);
            if !inside {
                return Err(GpuError::DescriptorOutOfMemory {
                    addr: desc.addr.raw_value(),
                    len: desc.len,
                });
            }
            if raw.is_write_only() {
                self.writable.push(desc);
                self.writable_len = self.writable_len.saturating_add(u64::from(desc.len));
            } else if self.writable.is_empty() {
                self.readable.push(desc);
                self.readable_len = self.readable_len.saturating_add(u64::from(desc.len));
            } else {
                return Err(GpuError::ReadableAfterWritable);
            }
        }
        Ok(())
    }

    /// Reads `buf.len()` command bytes from `skip` bytes into the readable stream.
    pub fn read(&self, mem: &GuestMemoryMmap, skip: u64, buf: &mut [u8]) -> Result<(), GpuError> {
        let mut skip = skip;
        let mut done = 0usize;
        for desc in &self.readable {
            if done == buf.len() {
                break;
            }
            let len = u64::from(desc.len);
            if skip >= len {
                skip -= len;
                continue;
            }
            let want = buf.len() - done;
            let n = usize::try_from(len - skip).map_or(want, |n| n.min(want));
            let addr = desc.addr.checked_add(skip).ok_or(GpuError::ShortCommand)?;
            let part = buf.get_mut(done..done + n).ok_or(GpuError::ShortCommand)?;
            mem.read_slice(part, addr).map_err(GpuError::GuestMemory)?;
            done += n;
            skip = 0;
        }
        if done == buf.len() {
            Ok(())
        } else {
            Err(GpuError::ShortCommand)
        }
    }

    /// Writes `buf` at the start of the writable stream.
    pub fn write(&self, mem: &GuestMemoryMmap, buf: &[u8]) -> Result<(), GpuError> {
        let mut done = 0usize;
        for desc in &self.writable {
            if done == buf.len() {
                break;
            }
            let want = buf.len() - done;
            let n = (desc.len as usize).min(want);
            let part = buf.get(done..done + n).ok_or(GpuError::ShortResponse)?;
            mem.write_slice(part, desc.addr)
                .map_err(GpuError::GuestMemory)?;
            done += n;
        }
        if done == buf.len() {
            Ok(())
        } else {
            Err(GpuError::ShortResponse)
        }
    }
}
