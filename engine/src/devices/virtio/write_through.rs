// SPDX-License-Identifier: Apache-2.0
//! The write-through cache mode of a disk: every write, discard and
//! write-zeroes is made durable (the back-end's flush: imago's metadata,
//! then fsync) before the device acknowledges it. The default mode is
//! write-back: a write is acknowledged once the host holds it, and the
//! guest's FLUSH (virtio-blk `VIRTIO_BLK_T_FLUSH`, ATA FLUSH CACHE) or the
//! end of the VM makes it durable. Write-through suits guests that never
//! flush and hosts that may lose power, at the cost of speed.

use std::io;

use vm_memory::VolatileSlice;

use super::block::DiskBackend;

/// A back-end whose every change is flushed before it returns.
pub struct WriteThrough(Box<dyn DiskBackend>);

impl WriteThrough {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn DiskBackend>) -> Self {
        Self(inner)
    }
}

impl DiskBackend for WriteThrough {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn read_only(&self) -> bool {
        self.0.read_only()
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(buf, offset)?;
        self.0.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.0.discard(offset, len)?;
        self.0.flush()
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        self.0.write_zeroes(offset, len, unmap)?;
        self.0.flush()
    }

    fn read_into_guest(
        &mut self,
        segments: &[VolatileSlice<'_, ()>],
        offset: u64,
    ) -> io::Result<bool> {
        self.0.read_into_guest(segments, offset)
    }

    fn write_from_guest(
        &mut self,
        segments: &[VolatileSlice<'_, ()>],
        offset: u64,
    ) -> io::Result<bool> {
        let written = self.0.write_from_guest(segments, offset)?;
        if written {
            self.0.flush()?;
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts flushes; holds nothing.
    struct Counting(Arc<AtomicUsize>);

    impl DiskBackend for Counting {
        fn size(&self) -> u64 {
            1 << 20
        }
        fn read_only(&self) -> bool {
            false
        }
        fn read_at(&mut self, _: &mut [u8], _: u64) -> io::Result<()> {
            Ok(())
        }
        fn write_at(&mut self, _: &[u8], _: u64) -> io::Result<()> {
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn discard(&mut self, _: u64, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn write_zeroes(&mut self, _: u64, _: u64, _: bool) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn test_write_through_flushes_after_every_change_and_not_after_reads() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let mut disk = WriteThrough::new(Box::new(Counting(flushes.clone())));

        disk.read_at(&mut [0; 512], 0).unwrap();
        let after_read = flushes.load(Ordering::SeqCst);
        disk.write_at(&[1; 512], 0).unwrap();
        disk.discard(0, 512).unwrap();
        disk.write_zeroes(0, 512, false).unwrap();

        assert_eq!(after_read, 0);
        assert_eq!(flushes.load(Ordering::SeqCst), 3);
    }
}
