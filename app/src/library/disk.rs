// SPDX-License-Identifier: Apache-2.0
//! Creating new, empty disk images: sparse raw files, or qcow2 images
//! formatted by the `imago` crate (the engine's qcow2 back-end). The size
//! is capped by the free space of the target filesystem: images are
//! sparse, but a guest may fill them. An existing file is never
//! overwritten, and a failed creation leaves no file behind.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::{FormatCreateBuilder, StorageOpenOptions};

use super::caps::{free_space, human_size};
use super::config::DiskFormat;

/// Sector size; image sizes are rounded up to a multiple of it.
const SECTOR: u64 = 512;

/// Why a disk image was not created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskError {
    /// A zero size.
    Empty,
    /// A file already exists at the path.
    Exists(PathBuf),
    /// The size is more than the free space.
    TooLarge {
        /// The image.
        path: PathBuf,
        /// Bytes asked for.
        size: u64,
        /// Free bytes on its filesystem.
        free: u64,
    },
    /// Creating or formatting failed.
    Io {
        /// The image.
        path: PathBuf,
        /// The OS's (or imago's) message.
        message: String,
    },
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::Empty => write!(f, "A disk image needs a size above zero"),
            DiskError::Exists(path) => write!(
                f,
                "{} already exists: choose another name (it is never overwritten)",
                path.display()
            ),
            DiskError::TooLarge { path, size, free } => write!(
                f,
                "A {} disk is more than the {} free where {} goes: \
                 choose a smaller disk or free some space",
                human_size(*size),
                human_size(*free),
                path.display()
            ),
            DiskError::Io { path, message } => {
                write!(f, "Cannot create {}: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for DiskError {}

/// Creates an empty image of `size` bytes (rounded up to whole sectors) at
/// `path`, reporting progress as `progress(done, total)`.
pub fn create_image(
    path: &Path,
    size: u64,
    format: DiskFormat,
    mut progress: impl FnMut(u64, u64),
) -> Result<(), DiskError> {
    if size == 0 {
        return Err(DiskError::Empty);
    }
    let size = size.div_ceil(SECTOR).saturating_mul(SECTOR);
    let io_error = |err: io::Error| DiskError::Io {
        path: path.to_path_buf(),
        message: err.to_string(),
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let free = free_space(dir).map_err(io_error)?;
    if size > free {
        return Err(DiskError::TooLarge {
            path: path.to_path_buf(),
            size,
            free,
        });
    }
    // Only the user may read what the guest writes.
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            return Err(DiskError::Exists(path.to_path_buf()));
        }
        Err(err) => return Err(io_error(err)),
    };
    progress(0, size);
    let result = match format {
        DiskFormat::Raw => file.set_len(size).and_then(|()| file.sync_all()),
        DiskFormat::Qcow2 => create_qcow2(path, file, size),
    };
    if let Err(err) = result {
        let _ = fs::remove_file(path);
        return Err(io_error(err));
    }
    progress(size, size);
    Ok(())
}

/// Formats the new, empty `file` as a qcow2 image of `size` bytes.
fn create_qcow2(path: &Path, file: fs::File, size: u64) -> io::Result<()> {
    let options = StorageOpenOptions::new().filename(path).write(true);
    let storage = ImagoFile::from_open_file(file, options)?;
    Qcow2::<ImagoFile>::create_builder(storage)
        .size(size)
        .create()?;
    fs::File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    use super::*;
    use crate::library::testdir::TestDir;

    #[test]
    fn test_raw_image_is_sparse_and_sized() {
        let dir = TestDir::new("disk-raw");
        let path = dir.path().join("disk.img");
        let mut calls = Vec::new();
        create_image(&path, 1 << 30, DiskFormat::Raw, |d, t| calls.push((d, t))).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 1 << 30);
        assert!(meta.blocks() * 512 < 1 << 20, "not sparse");
        assert_eq!(calls, [(0, 1 << 30), (1 << 30, 1 << 30)]);
    }

    #[test]
    fn test_size_rounds_up_to_sectors() {
        let dir = TestDir::new("disk-round");
        let path = dir.path().join("disk.img");
        create_image(&path, 1000, DiskFormat::Raw, |_, _| {}).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 1024);
    }

    #[test]
    fn test_existing_file_is_never_overwritten() {
        let dir = TestDir::new("disk-exists");
        let path = dir.path().join("disk.img");
        fs::write(&path, b"precious").unwrap();
        let err = create_image(&path, 1 << 20, DiskFormat::Raw, |_, _| {}).unwrap_err();
        assert_eq!(err, DiskError::Exists(path.clone()));
        assert_eq!(fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn test_over_free_space_is_refused_and_leaves_no_file() {
        let dir = TestDir::new("disk-big");
        let path = dir.path().join("disk.img");
        let err = create_image(&path, u64::MAX / 2, DiskFormat::Raw, |_, _| {}).unwrap_err();
        assert!(matches!(err, DiskError::TooLarge { .. }));
        assert!(err.to_string().contains("free where"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn test_zero_size_is_refused() {
        let dir = TestDir::new("disk-zero");
        let err = create_image(&dir.path().join("d"), 0, DiskFormat::Raw, |_, _| {});
        assert_eq!(err, Err(DiskError::Empty));
    }

    #[test]
    fn test_qcow2_image_passes_qemu_img_check() {
        let dir = TestDir::new("disk-qcow2");
        let path = dir.path().join("disk.qcow2");
        create_image(&path, 2 << 30, DiskFormat::Qcow2, |_, _| {}).unwrap();
        assert!(fs::metadata(&path).unwrap().len() < 4 << 20);
        let mut magic = [0u8; 4];
        io::Read::read_exact(&mut fs::File::open(&path).unwrap(), &mut magic).unwrap();
        assert_eq!(&magic, b"QFI\xfb");
        let Ok(check) = Command::new("qemu-img").arg("check").arg(&path).output() else {
            nestbox_tests::skipped_missing(
                "library::disk qcow2 image check",
                "qemu-img is not installed",
            );
            return;
        };
        let out = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(out.contains("No errors were found"), "{out}");
        let info = Command::new("qemu-img")
            .arg("info")
            .arg(&path)
            .output()
            .unwrap();
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains("virtual size: 2 GiB"), "{info}");
    }

    #[test]
    fn test_qcow2_image_opens_in_the_engine() {
        let dir = TestDir::new("disk-engine");
        let path = dir.path().join("disk.qcow2");
        create_image(&path, 16 << 20, DiskFormat::Qcow2, |_, _| {}).unwrap();
        let disk = engine::vm::DiskConfig {
            path,
            format: engine::vm::DiskFormat::Qcow2,
            readonly: false,
            bus: engine::vm::DiskBus::Virtio,
            cdrom: false,
            ejected: false,
            dependencies: Default::default(),
            cache: Default::default(),
        };
        assert!(disk.open_block("test").is_ok());
    }
}
