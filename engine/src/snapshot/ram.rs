// SPDX-License-Identifier: Apache-2.0
//! Guest RAM in a state file: only pages that are not all zero, found by
//! asking the RAM file where its data is (`SEEK_DATA`/`SEEK_HOLE`, so
//! never-touched memory costs nothing) and then checking each page, and
//! written in runs of up to [`CHUNK`] bytes through one reused buffer, so
//! RAM is never held twice. Restoring empties the RAM file first and
//! writes the saved runs back.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use super::StateError;
use super::file::{SectionKind, StateWriter};

/// The page size runs are made of.
pub const PAGE: usize = 4096;
/// The largest run written in one section.
pub const CHUNK: usize = 1 << 20;

/// What a save wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RamStats {
    /// Pages written.
    pub pages: u64,
    /// Bytes of RAM the file holds data for (touched by the guest).
    pub touched: u64,
}

/// `lseek(fd, from, whence)`, or None where there is nothing more
/// (`ENXIO`: no data, or no hole, after `from`).
fn seek(file: &File, from: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let from = i64::try_from(from).map_err(io::Error::other)?;
    // SAFETY: lseek on a file descriptor this File owns; it changes only
    // the file position, which nothing else here relies on (reads and
    // writes use explicit offsets).
    let at = unsafe { libc::lseek(file.as_raw_fd(), from, whence) };
    if at < 0 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(error),
        };
    }
    Ok(Some(at as u64))
}

/// Where the RAM file holds data: `[start, end)` extents in order. A file
/// system without hole reporting answers one extent for the whole file.
fn data_extents(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut extents = Vec::new();
    let mut at = 0;
    while at < size {
        let Some(start) = seek(file, at, libc::SEEK_DATA)? else {
            break;
        };
        if start >= size {
            break;
        }
        let end = seek(file, start, libc::SEEK_HOLE)?
            .unwrap_or(size)
            .min(size);
        if end <= start {
            break;
        }
        extents.push((start, end));
        at = end;
    }
    Ok(extents)
}

fn is_zero(page: &[u8]) -> bool {
    page.iter().all(|&b| b == 0)
}

/// Calls `run` with each run of non-zero pages of `file` (`size` bytes):
/// its offset and its bytes (at most [`CHUNK`]). Returns the bytes the
/// file holds data for.
fn scan(
    file: &File,
    size: u64,
    mut run: impl FnMut(u64, &[u8]) -> Result<(), StateError>,
) -> Result<u64, StateError> {
    let read_error = |source| StateError::Write {
        path: "guest memory".into(),
        source,
    };
    let mut touched = 0;
    let mut buffer = vec![0u8; CHUNK];
    for (start, end) in data_extents(file, size).map_err(read_error)? {
        touched += end - start;
        let mut at = start;
        while at < end {
            let len = usize::try_from((end - at).min(CHUNK as u64)).unwrap_or(CHUNK);
            let block = buffer.get_mut(..len).unwrap_or_default();
            file.read_exact_at(block, at).map_err(read_error)?;
            let pages = block.len().div_ceil(PAGE);
            let mut first: Option<usize> = None;
            for index in 0..=pages {
                let page = block.get(index * PAGE..((index + 1) * PAGE).min(block.len()));
                let zero = page.is_none_or(is_zero);
                match (zero, first) {
                    (false, None) => first = Some(index),
                    (true, Some(from)) => {
                        let bytes = block
                            .get(from * PAGE..(index * PAGE).min(block.len()))
                            .unwrap_or_default();
                        run(at + (from * PAGE) as u64, bytes)?;
                        first = None;
                    }
                    _ => {}
                }
            }
            at += len as u64;
        }
    }
    Ok(touched)
}

/// Writes the non-zero pages of `ram` (`size` bytes) as RAM sections.
pub fn save(ram: &File, size: u64, out: &mut StateWriter) -> Result<RamStats, StateError> {
    let mut pages = 0;
    let touched = scan(ram, size, |offset, bytes| {
        pages += (bytes.len() / PAGE) as u64;
        out.section(SectionKind::Ram, &[&offset.to_le_bytes(), bytes])
    })?;
    Ok(RamStats { pages, touched })
}

/// A device's memory (such as video memory, `size` bytes in `file`) as
/// runs of non-zero pages, for the device's own saved state.
pub fn device_pages(file: &File, size: u64) -> Result<Vec<(u64, Vec<u8>)>, StateError> {
    let mut runs = Vec::new();
    scan(file, size, |offset, bytes| {
        runs.push((offset, bytes.to_vec()));
        Ok(())
    })?;
    Ok(runs)
}

/// Puts back what [`device_pages`] returned: every other page is zero.
pub fn restore_device_pages(file: &File, size: u64, runs: &[(u64, Vec<u8>)]) -> Result<(), String> {
    clear(file, size).map_err(|e| format!("cannot empty the memory: {e}"))?;
    let mut payload = Vec::new();
    for (offset, bytes) in runs {
        payload.clear();
        payload.extend_from_slice(&offset.to_le_bytes());
        payload.extend_from_slice(bytes);
        restore_run(file, size, &payload)?;
    }
    Ok(())
}

/// Empties the RAM file (every page reads as zero again, and gives its
/// memory back) before saved runs are written into it.
pub fn clear(ram: &File, size: u64) -> io::Result<()> {
    let len = i64::try_from(size).map_err(io::Error::other)?;
    // SAFETY: fallocate on a file descriptor this File owns; punching a
    // hole only zeroes the file's contents in the range.
    let result = unsafe {
        libc::fallocate(
            ram.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            len,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The RAM file mapped for a restore, so saved runs are read straight
/// into it.
pub struct RamTarget {
    mapping: vm_memory::MmapRegion<()>,
}

impl RamTarget {
    /// Maps `size` bytes of `ram`, shared.
    pub fn map(ram: &std::sync::Arc<File>, size: u64) -> io::Result<Self> {
        let len = usize::try_from(size).map_err(io::Error::other)?;
        let mapping = vm_memory::MmapRegion::<()>::from_file(
            vm_memory::FileOffset::from_arc(ram.clone(), 0),
            len,
        )
        .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Self { mapping })
    }

    /// The bytes of a run of `len` bytes at `offset`, when it is whole
    /// pages inside RAM.
    pub fn run(&mut self, offset: u64, len: usize) -> Option<&mut [u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        if start % PAGE != 0 || len % PAGE != 0 || end > self.mapping.size() {
            return None;
        }
        // SAFETY: `start..end` lies inside the mapping, which lives as long
        // as `self`.
        let at = unsafe { self.mapping.as_ptr().add(start) };
        // The run's pages are allocated in one call rather than one fault
        // each (a hint: without it the read faults them in).
        // SAFETY: madvise on a range of our own mapping; POPULATE_WRITE
        // only allocates and zeroes pages, as writes would.
        unsafe { libc::madvise(at.cast(), len, libc::MADV_POPULATE_WRITE) };
        // SAFETY: as above; the `&mut self` borrow makes this the only
        // slice of it handed out, and nothing else touches the RAM while a
        // VM is being restored (its vCPUs have not started).
        Some(unsafe { std::slice::from_raw_parts_mut(at, len) })
    }
}

/// Writes one RAM section's run into the RAM file, after checking that it
/// is whole pages inside RAM; `Err` names what is wrong.
pub fn restore_run(ram: &File, size: u64, payload: &[u8]) -> Result<(), String> {
    let (offset, bytes) = payload
        .split_first_chunk::<8>()
        .ok_or("a RAM section without its offset")?;
    let offset = u64::from_le_bytes(*offset);
    let fits = offset
        .checked_add(bytes.len() as u64)
        .is_some_and(|end| end <= size);
    if offset % PAGE as u64 != 0 || bytes.len() % PAGE != 0 || !fits {
        return Err(format!(
            "a RAM run of {} bytes at {offset:#x} is not whole pages inside {size} bytes of RAM",
            bytes.len()
        ));
    }
    ram.write_all_at(bytes, offset)
        .map_err(|e| format!("cannot write guest RAM: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::file::StateReader;

    fn ram_file(size: u64) -> File {
        crate::memory::create_memfd(size).unwrap()
    }

    #[test]
    fn test_only_non_zero_pages_are_saved_and_come_back() {
        let size = 64 << 20;
        let ram = ram_file(size);
        ram.write_all_at(&[1u8; PAGE], 0).unwrap();
        ram.write_all_at(&[2u8; 3 * PAGE], 5 << 20).unwrap();
        // Touched but zero: read back as zero, never written.
        ram.write_all_at(&[0u8; PAGE], 9 << 20).unwrap();
        ram.write_all_at(&[3u8; 1], size - 1).unwrap();

        let dir = std::env::temp_dir().join(format!("nestbox-ram-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ram.state");
        let mut out = StateWriter::create(&path).unwrap();
        let stats = save(&ram, size, &mut out).unwrap();
        out.finish().unwrap();
        assert_eq!(stats.pages, 5);
        assert!(std::fs::metadata(&path).unwrap().len() < 6 * PAGE as u64);

        let restored = ram_file(size);
        restored.write_all_at(&[9u8; PAGE], 2 << 20).unwrap();
        clear(&restored, size).unwrap();
        let mut reader = StateReader::open(&path).unwrap();
        let mut payload = Vec::new();
        while reader.next_into(&mut payload).unwrap() == SectionKind::Ram {
            restore_run(&restored, size, &payload).unwrap();
        }
        let mut page = vec![0u8; PAGE];
        for at in [
            0u64,
            2 << 20,
            5 << 20,
            (5 << 20) + 2 * PAGE as u64,
            size - PAGE as u64,
        ] {
            ram.read_exact_at(&mut page, at).unwrap();
            let mut back = vec![0u8; PAGE];
            restored.read_exact_at(&mut back, at).unwrap();
            assert_eq!(page, back, "page at {at:#x}");
        }
    }

    #[test]
    fn test_runs_outside_ram_or_unaligned_are_refused() {
        let ram = ram_file(16 << 20);
        let mut payload = (16u64 << 20).to_le_bytes().to_vec();
        payload.extend_from_slice(&[1u8; PAGE]);
        assert!(restore_run(&ram, 16 << 20, &payload).is_err());
        let mut payload = 100u64.to_le_bytes().to_vec();
        payload.extend_from_slice(&[1u8; PAGE]);
        assert!(restore_run(&ram, 16 << 20, &payload).is_err());
        let mut payload = u64::MAX.to_le_bytes().to_vec();
        payload.extend_from_slice(&[1u8; PAGE]);
        assert!(restore_run(&ram, 16 << 20, &payload).is_err());
        assert!(restore_run(&ram, 16 << 20, &[1, 2]).is_err());
    }
}
