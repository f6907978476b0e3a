// SPDX-License-Identifier: Apache-2.0
//! The disk half of snapshots, as external qcow2 overlays (imago creates
//! and reads them; no qcow2 metadata is written here by hand).
//!
//! Taking a snapshot freezes each disk's current image and gives the VM a
//! new, empty qcow2 overlay whose backing image it is
//! ([`create_overlay`]): the frozen image is never written again, so the
//! snapshot's disk state is exactly what it held. A raw disk works the
//! same way (a raw image can be a qcow2 backing image), so it needs no
//! conversion. Reverting gives the VM a new overlay over the snapshot's
//! frozen image. Deleting a snapshot in the middle of a chain rewrites
//! each image that depends on its frozen image so that it no longer does
//! ([`pull_into`]): the ranges whose data lies in the image itself or in
//! the frozen image are copied into a new image whose backing image is
//! the frozen image's own, which then replaces the old one under the same
//! name (written aside, synced, renamed), so a crash leaves the old chain
//! or the new one.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use imago::file::File as ImagoFile;
use imago::format::drivers::ShallowMapping;
use imago::qcow2::Qcow2;
use imago::{FormatCreateBuilder, Storage, StorageCreateOptions};

use crate::devices::virtio::block::DiskBackend;
use crate::devices::virtio::qcow2::{Dependencies, Qcow2Image};
use crate::vm::DiskFormat;

/// Bytes copied at once while merging.
const COPY_CHUNK: u64 = 1 << 20;

/// How a new image names its backing image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backing {
    /// The backing image, written into the header as given: a relative
    /// path is taken from the new image's folder, as qcow2 does.
    pub path: PathBuf,
    /// Its format.
    pub format: DiskFormat,
}

fn format_name(format: DiskFormat) -> &'static str {
    match format {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
    }
}

/// The path `path` is written aside as until it is complete.
fn partial(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Syncs `path` and the folder it is in.
fn sync_file_and_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Creates the empty qcow2 image `path` of `size` bytes (the guest's disk
/// size) on top of `backing`, or standalone. Fails if `path` exists.
fn create_qcow2(path: &Path, size: u64, backing: Option<&Backing>) -> io::Result<()> {
    let file = ImagoFile::create_open(StorageCreateOptions::new().filename(path).overwrite(false))?;
    let mut builder = Qcow2::<ImagoFile>::create_builder(file).size(size);
    if let Some(backing) = backing {
        let name = backing.path.to_str().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a UTF-8 path", backing.path.display()),
            )
        })?;
        builder = builder.backing(name.to_string(), format_name(backing.format).to_string());
    }
    builder.create()
}

/// The size the guest sees of the image `path` (opened read-only; its
/// backing images where `dependencies` allows them).
pub fn image_size(path: &Path, format: DiskFormat, dependencies: &Dependencies) -> io::Result<u64> {
    match format {
        DiskFormat::Raw => Ok(std::fs::metadata(path)?.len()),
        DiskFormat::Qcow2 => Qcow2Image::open_with(path, true, dependencies)
            .map(|image| image.size())
            .map_err(|e| io::Error::other(format!("{e:#}"))),
    }
}

/// Creates `overlay`, a qcow2 image of `size` bytes that reads as
/// `backing` until written, complete or not at all. Fails if `overlay`
/// exists.
pub fn create_overlay(overlay: &Path, backing: &Backing, size: u64) -> io::Result<()> {
    if overlay.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists", overlay.display()),
        ));
    }
    let temp = partial(overlay);
    let _ = std::fs::remove_file(&temp);
    let made = create_qcow2(&temp, size, Some(backing))
        .and_then(|()| File::open(&temp)?.sync_all())
        .and_then(|()| std::fs::rename(&temp, overlay))
        .and_then(|()| sync_file_and_dir(overlay));
    if made.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    made
}

/// Where a range of the image being merged has its data.
enum Source {
    /// In the image or the frozen image: copied.
    Data,
    /// Explicit zeroes in one of them: written as zeroes.
    Zeroes,
    /// Below the frozen image (or nowhere): the new backing provides it.
    Below,
}

/// Rewrites the qcow2 image `image`, whose backing image is `middle`, so
/// that its backing image is `new_backing` instead (`middle`'s own
/// backing image, or none): every range whose data lies in `image` or in
/// `middle` is copied into a new image, which replaces `image` under its
/// name. `dependencies` must allow the whole chain. Nothing may have
/// `image` open for writing (the VM is not running).
///
/// `progress` is told the bytes looked at and the disk's size after each
/// step; when it answers false the merge stops, the partial new image is
/// removed and `image` is left as it was (an error of kind
/// `Interrupted`).
pub fn pull_into(
    image: &Path,
    middle: &Path,
    new_backing: Option<&Backing>,
    dependencies: &Dependencies,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> io::Result<()> {
    let open_error =
        |e: crate::devices::virtio::block::BlockError| io::Error::other(format!("{e:#}"));
    let mut old = Qcow2Image::open_with(image, true, dependencies).map_err(open_error)?;
    let named = old
        .backing_path(image)
        .and_then(|p| std::fs::canonicalize(p).ok());
    if named.is_none() || named != std::fs::canonicalize(middle).ok() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}'s backing image is not {}",
                image.display(),
                middle.display()
            ),
        ));
    }
    let size = old.size();
    let temp = partial(image);
    let _ = std::fs::remove_file(&temp);
    let merged = (|| {
        create_qcow2(&temp, size, new_backing)?;
        let mut new = Qcow2Image::open_with(&temp, false, dependencies).map_err(open_error)?;
        copy_ranges(&mut old, &mut new, new_backing.is_none(), progress)?;
        new.flush()?;
        drop(new);
        std::fs::rename(&temp, image)?;
        sync_file_and_dir(image)
    })();
    if merged.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    merged
}

/// Copies into `new` what [`pull_into`] keeps of `old`.
fn copy_ranges(
    old: &mut Qcow2Image,
    new: &mut Qcow2Image,
    standalone: bool,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> io::Result<()> {
    let size = old.size();
    let mut buf = Vec::new();
    let mut offset = 0u64;
    while offset < size {
        let want = (size - offset).min(COPY_CHUNK);
        let (source, len) = locate(old, offset, want)?;
        let len = len.min(want).max(1).min(size - offset);
        match source {
            Source::Data => {
                buf.resize(len as usize, 0);
                old.read_at(&mut buf, offset)?;
                // A new image without a backing reads zeroes where nothing
                // was written.
                if !(standalone && buf.iter().all(|&b| b == 0)) {
                    new.write_at(&buf, offset)?;
                }
            }
            Source::Zeroes if !standalone => new.write_zeroes(offset, len, false)?,
            Source::Zeroes | Source::Below => {}
        }
        offset += len;
        if !progress(offset, size) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the merge was cancelled",
            ));
        }
    }
    Ok(())
}

/// Where the range at `offset` (at most `want` bytes) of `image` has its
/// data, and for how many bytes that holds.
fn locate(image: &Qcow2Image, offset: u64, want: u64) -> io::Result<(Source, u64)> {
    let (top, len) = image.access().get_shallow_mapping(offset, want)?;
    Ok(match top {
        ShallowMapping::Zero { explicit: true, .. } => (Source::Zeroes, len),
        ShallowMapping::Zero { .. } | ShallowMapping::Eof { .. } => (Source::Below, len),
        ShallowMapping::Indirect {
            layer,
            offset: below,
            ..
        } => {
            let (mapping, len) = layer.get_shallow_mapping(below, len)?;
            match mapping {
                ShallowMapping::Zero { explicit: true, .. } => (Source::Zeroes, len),
                ShallowMapping::Indirect { .. }
                | ShallowMapping::Zero { .. }
                | ShallowMapping::Eof { .. } => (Source::Below, len),
                // Data, or a kind of mapping imago may add: read through.
                _ => (Source::Data, len),
            }
        }
        // Data, or a kind of mapping imago may add: read through.
        _ => (Source::Data, len),
    })
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    const MIB: u64 = 1 << 20;

    fn qemu_img(args: &[&str]) -> Option<String> {
        let out = Command::new("qemu-img").args(args).output().ok()?;
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn fill(byte: u8) -> Vec<u8> {
        vec![byte; 65536]
    }

    fn read(path: &Path, dir: &Path, offset: u64) -> Vec<u8> {
        let deps = Dependencies {
            dirs: vec![dir.to_path_buf()],
            files: Vec::new(),
        };
        let mut image = Qcow2Image::open_with(path, true, &deps).unwrap();
        let mut buf = vec![0u8; 65536];
        image.read_at(&mut buf, offset).unwrap();
        buf
    }

    fn write(path: &Path, dir: &Path, offset: u64, bytes: Option<&[u8]>) {
        let deps = Dependencies {
            dirs: vec![dir.to_path_buf()],
            files: Vec::new(),
        };
        let mut image = Qcow2Image::open_with(path, false, &deps).unwrap();
        match bytes {
            Some(bytes) => image.write_at(bytes, offset).unwrap(),
            None => image.write_zeroes(offset, 65536, false).unwrap(),
        }
        image.flush().unwrap();
    }

    #[test]
    fn test_a_middle_image_merged_away_leaves_the_same_disk_and_a_clean_chain() {
        if Command::new("qemu-img").arg("--version").output().is_err() {
            crate::test_skip::skipped_missing(module_path!(), "qemu-img is not installed");
            return;
        }
        let dir = std::env::temp_dir().join(format!("nestbox-disks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let deps = Dependencies {
            dirs: vec![dir.clone()],
            files: Vec::new(),
        };
        // base (raw): A at 0 and at 3 MiB. Overlay 1: B at 1 MiB.
        // Overlay 2: C at 2 MiB, zeroes over A at 0.
        let base = dir.join("base.img");
        let mut bytes = vec![0u8; 4 * MIB as usize];
        bytes[..65536].copy_from_slice(&fill(0xa));
        bytes[3 * MIB as usize..3 * MIB as usize + 65536].copy_from_slice(&fill(0xa));
        std::fs::write(&base, &bytes).unwrap();
        let raw = Backing {
            path: base.clone(),
            format: DiskFormat::Raw,
        };
        let one = dir.join("one.qcow2");
        let two = dir.join("two.qcow2");
        create_overlay(&one, &raw, 4 * MIB).unwrap();
        write(&one, &dir, MIB, Some(&fill(0xb)));
        let on_one = Backing {
            path: one.clone(),
            format: DiskFormat::Qcow2,
        };
        create_overlay(&two, &on_one, 4 * MIB).unwrap();
        write(&two, &dir, 2 * MIB, Some(&fill(0xc)));
        write(&two, &dir, 0, None);
        let expect = |path: &Path| {
            assert_eq!(read(path, &dir, 0), vec![0; 65536]);
            assert_eq!(read(path, &dir, MIB), fill(0xb));
            assert_eq!(read(path, &dir, 2 * MIB), fill(0xc));
            assert_eq!(read(path, &dir, 3 * MIB), fill(0xa));
        };
        expect(&two);
        assert!(
            create_overlay(&two, &raw, 4 * MIB).is_err(),
            "never over an image"
        );
        assert!(
            pull_into(&two, &base, None, &deps, &mut |_, _| true).is_err(),
            "base is not two's backing image"
        );
        let cancelled = pull_into(&two, &one, Some(&raw), &deps, &mut |done, _| done < 2 * MIB);
        assert_eq!(cancelled.unwrap_err().kind(), io::ErrorKind::Interrupted);
        expect(&two);

        // Act: one merged away, then base too.
        let mut seen = 0;
        pull_into(&two, &one, Some(&raw), &deps, &mut |done, total| {
            assert!(done > seen && total == 4 * MIB);
            seen = done;
            true
        })
        .unwrap();
        assert_eq!(seen, 4 * MIB);
        expect(&two);
        let info = qemu_img(&["info", two.to_str().unwrap()]).unwrap();
        assert!(
            info.contains("base.img") && !info.contains("one.qcow2"),
            "{info}"
        );
        assert!(
            qemu_img(&["check", two.to_str().unwrap()])
                .unwrap()
                .contains("No errors")
        );
        // The other images are untouched.
        assert_eq!(read(&one, &dir, MIB), fill(0xb));
        pull_into(&two, &base, None, &deps, &mut |_, _| true).unwrap();
        std::fs::remove_file(&base).unwrap();
        expect(&two);
        assert!(
            qemu_img(&["check", two.to_str().unwrap()])
                .unwrap()
                .contains("No errors")
        );
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 2, "no partial files");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
