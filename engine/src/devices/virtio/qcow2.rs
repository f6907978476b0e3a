// SPDX-License-Identifier: Apache-2.0
//! qcow2 disk images for virtio-blk, through the `imago` crate (written by
//! a QEMU block-layer maintainer) in its synchronous mode: reads, writes
//! that allocate clusters, flush (metadata caches, then fsync), discard and
//! write-zeroes. Backing files named in the image are opened read-only.

use std::io;
use std::path::Path;

use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate};

use super::block::{BlockError, DiskBackend};

/// The first four bytes of every qcow2 image.
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// A qcow2 image.
pub struct Qcow2Image {
    access: FormatAccess<ImagoFile>,
    read_only: bool,
}

impl Qcow2Image {
    /// Opens the qcow2 image at `path`, writable unless `read_only`.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let open_error = |source| BlockError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut magic = [0u8; 4];
        std::fs::File::open(path)
            .and_then(|mut f| io::Read::read_exact(&mut f, &mut magic))
            .map_err(open_error)?;
        if magic != QCOW2_MAGIC {
            return Err(open_error(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a qcow2 image (no QFI\\xfb magic)",
            )));
        }
        let image = Qcow2::<ImagoFile>::builder_path(path)
            .write(!read_only)
            .open(PermissiveImplicitOpenGate::default())
            .map_err(open_error)?;
        Ok(Self {
            access: FormatAccess::new(image),
            read_only,
        })
    }
}

/// Closing the image writes what imago still caches (L2 tables,
/// refcounts) and syncs it: a guest that never flushes (DOS, most older
/// systems) still finds its writes after the VM ends, however it ends
/// short of SIGKILL or power loss (the app turns SIGTERM, SIGINT and
/// SIGHUP into a stop).
impl Drop for Qcow2Image {
    fn drop(&mut self) {
        if self.read_only {
            return;
        }
        if let Err(e) = DiskBackend::flush(self) {
            log::error!("qcow2: writing the image's metadata on close failed: {e}");
        }
    }
}

impl DiskBackend for Qcow2Image {
    fn size(&self) -> u64 {
        self.access.size()
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.access.read(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.access.write(buf, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.access.flush()?;
        self.access.sync()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.access.discard_to_any(offset, len)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, _unmap: bool) -> io::Result<()> {
        self.access.write_zeroes(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A qcow2 image made by qemu-img, or None when qemu-img is missing.
    fn qemu_img_create(name: &str, size: &str) -> Option<std::path::PathBuf> {
        let path =
            std::env::temp_dir().join(format!("nestbox-{name}-{}.qcow2", std::process::id()));
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&path)
            .arg(size)
            .status()
            .ok()?;
        status.success().then_some(path)
    }

    fn qemu_img_check(path: &Path) -> bool {
        Command::new("qemu-img")
            .args(["check", "-q"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn test_qcow2_write_read_flush_passes_qemu_img_check() {
        let Some(path) = qemu_img_create("qcow2-rw", "16M") else {
            eprintln!("skipping: qemu-img is not installed");
            return;
        };
        let pattern: Vec<u8> = (0..65536u32).map(|i| (i * 13 % 251) as u8).collect();

        let mut image = Qcow2Image::open(&path, false).unwrap();
        image.write_at(&pattern, 3 << 20).unwrap();
        image.flush().unwrap();
        drop(image);
        let mut reopened = Qcow2Image::open(&path, true).unwrap();
        let mut back = vec![0u8; pattern.len()];
        reopened.read_at(&mut back, 3 << 20).unwrap();
        let mut untouched = vec![0xffu8; 4096];
        reopened.read_at(&mut untouched, 0).unwrap();
        let size = reopened.size();
        drop(reopened);
        let check = qemu_img_check(&path);
        std::fs::remove_file(&path).unwrap();

        assert_eq!(back, pattern);
        assert!(untouched.iter().all(|&b| b == 0));
        assert_eq!(size, 16 << 20);
        assert!(check, "qemu-img check failed");
    }

    #[test]
    fn test_qcow2_writes_never_flushed_are_in_the_image_after_close() {
        let Some(path) = qemu_img_create("qcow2-close", "4M") else {
            eprintln!("skipping: qemu-img is not installed");
            return;
        };
        let pattern = [0x5au8; 512];

        let mut image = Qcow2Image::open(&path, false).unwrap();
        for cluster in 1..8u64 {
            image.write_at(&pattern, cluster << 16).unwrap();
        }
        drop(image);
        let mut reopened = Qcow2Image::open(&path, true).unwrap();
        let mut back = [0u8; 512];
        let found: Vec<bool> = (1..8u64)
            .map(|cluster| {
                reopened.read_at(&mut back, cluster << 16).unwrap();
                back == pattern
            })
            .collect();
        drop(reopened);
        let check = qemu_img_check(&path);
        std::fs::remove_file(&path).unwrap();

        assert!(found.iter().all(|&f| f), "{found:?}");
        assert!(check, "qemu-img check failed");
    }

    #[test]
    fn test_qcow2_write_zeroes_reads_back_zeros() {
        let Some(path) = qemu_img_create("qcow2-zero", "4M") else {
            eprintln!("skipping: qemu-img is not installed");
            return;
        };
        let mut image = Qcow2Image::open(&path, false).unwrap();
        image.write_at(&[0xaa; 8192], 0).unwrap();

        image.write_zeroes(0, 4096, true).unwrap();
        let mut back = vec![0xffu8; 8192];
        image.read_at(&mut back, 0).unwrap();
        drop(image);
        std::fs::remove_file(&path).unwrap();

        assert!(back[..4096].iter().all(|&b| b == 0));
        assert!(back[4096..].iter().all(|&b| b == 0xaa));
    }

    #[test]
    fn test_qcow2_open_raw_file_is_refused() {
        let path = std::env::temp_dir().join(format!("nestbox-notqcow2-{}", std::process::id()));
        std::fs::write(&path, [0u8; 4096]).unwrap();
        let result = Qcow2Image::open(&path, true);
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(result, Err(BlockError::Open { .. })));
    }
}
