// SPDX-License-Identifier: Apache-2.0
//! Parsing `--disk PATH[,format=raw|qcow2][,readonly][,ide][,cdrom][,backing=FILE]
//! [,cache=writeback|writethrough]`.
//! Without `format=` the format comes from the file's contents (qcow2's
//! magic), or from its name when it cannot be read. ISO 9660 images
//! always attach read-only (on IDE, as a CD-ROM). A qcow2 image may open
//! the files its header names (backing image, data file) only where
//! `backing=FILE` names them.

use std::path::{Path, PathBuf};

use engine::vm::{CacheMode, Dependencies, DiskBus, DiskConfig, DiskFormat, ImageKind};

/// Parses one `--disk` value.
pub fn parse_disk(text: &str) -> Result<DiskConfig, String> {
    let mut parts = text.split(',');
    let path = parts
        .next()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| "--disk needs a file path".to_string())?;
    let kind = probe(Path::new(path));
    let iso = kind == ImageKind::Iso9660;
    let mut readonly = iso;
    let mut bus = DiskBus::Virtio;
    let mut cdrom = None;
    let mut format = kind.format();
    let mut dependencies = Dependencies::default();
    let mut cache = CacheMode::WriteBack;
    for option in parts {
        match option {
            "readonly" | "ro" => readonly = true,
            "ide" => bus = DiskBus::Ide,
            "virtio" => bus = DiskBus::Virtio,
            "cdrom" => cdrom = Some(true),
            "disk" => cdrom = Some(false),
            "format=raw" => format = DiskFormat::Raw,
            "format=qcow2" => format = DiskFormat::Qcow2,
            "cache=writeback" => cache = CacheMode::WriteBack,
            "cache=writethrough" => cache = CacheMode::WriteThrough,
            other => match other.strip_prefix("backing=") {
                Some(file) if !file.is_empty() => dependencies.files.push(PathBuf::from(file)),
                _ => {
                    return Err(format!(
                        "unknown disk option '{other}' (use format=raw, format=qcow2, readonly, ide, virtio, cdrom, disk, backing=FILE, cache=writeback or cache=writethrough)"
                    ));
                }
            },
        }
    }
    // An ISO on IDE is a CD-ROM unless told otherwise.
    let cdrom = cdrom.unwrap_or(iso && bus == DiskBus::Ide);
    Ok(DiskConfig {
        path: PathBuf::from(path),
        format,
        readonly: readonly || cdrom,
        bus,
        cdrom,
        ejected: false,
        dependencies,
        cache,
    })
}

/// The image's kind by its contents; by its name when it cannot be read
/// (the VM then says what is wrong with the file).
fn probe(path: &Path) -> ImageKind {
    ImageKind::probe(path).unwrap_or_else(|_| {
        let lower = path.to_string_lossy().to_ascii_lowercase();
        if lower.ends_with(".qcow2") {
            ImageKind::Qcow2
        } else if lower.ends_with(".iso") {
            ImageKind::Iso9660
        } else {
            ImageKind::Raw
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_disk_plain_path_is_writable() {
        let disk = parse_disk("/vm/disk.img").unwrap();
        assert_eq!(
            (disk.path, disk.readonly),
            (PathBuf::from("/vm/disk.img"), false)
        );
    }

    #[test]
    fn test_parse_disk_readonly_option() {
        assert!(parse_disk("a.img,format=raw,readonly").unwrap().readonly);
    }

    #[test]
    fn test_parse_disk_iso_is_readonly() {
        assert!(parse_disk("/media/debian.ISO").unwrap().readonly);
    }

    #[test]
    fn test_parse_disk_qcow2_by_extension_or_option() {
        assert_eq!(parse_disk("a.qcow2").unwrap().format, DiskFormat::Qcow2);
        assert_eq!(
            parse_disk("a.img,format=qcow2").unwrap().format,
            DiskFormat::Qcow2
        );
        assert_eq!(
            parse_disk("a.qcow2,format=raw").unwrap().format,
            DiskFormat::Raw
        );
    }

    #[test]
    fn test_parse_disk_ide_iso_is_a_cdrom_and_ide_image_a_disk() {
        let cd = parse_disk("/media/dos.iso,ide").unwrap();
        assert_eq!((cd.bus, cd.cdrom, cd.readonly), (DiskBus::Ide, true, true));
        let disk = parse_disk("c.img,ide").unwrap();
        assert_eq!(
            (disk.bus, disk.cdrom, disk.readonly),
            (DiskBus::Ide, false, false)
        );
        let plain = parse_disk("c.img").unwrap();
        assert_eq!((plain.bus, plain.cdrom), (DiskBus::Virtio, false));
        assert!(parse_disk("raw.bin,ide,cdrom").unwrap().cdrom);
    }

    /// A file in the temp directory with `bytes` at `at`.
    fn file_with(name: &str, at: usize, bytes: &[u8]) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("nestbox-diskarg-{name}-{}", std::process::id()));
        let mut contents = vec![0u8; 0x9000];
        contents[at..at + bytes.len()].copy_from_slice(bytes);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn test_parse_disk_format_comes_from_the_contents_not_the_name() {
        let qcow2 = file_with("q.img", 0, b"QFI\xfb");
        let iso = file_with("cd.img", 0x8001, b"CD001");
        let raw = file_with("r.qcow2", 0, b"\0\0\0\0");

        let as_qcow2 = parse_disk(qcow2.to_str().unwrap()).unwrap();
        let as_iso = parse_disk(&format!("{},ide", iso.display())).unwrap();
        let as_raw = parse_disk(raw.to_str().unwrap()).unwrap();
        for path in [&qcow2, &iso, &raw] {
            std::fs::remove_file(path).unwrap();
        }

        assert_eq!(as_qcow2.format, DiskFormat::Qcow2);
        assert_eq!((as_iso.readonly, as_iso.cdrom), (true, true));
        assert_eq!(as_raw.format, DiskFormat::Raw);
    }

    #[test]
    fn test_parse_disk_backing_names_allowed_files() {
        let disk = parse_disk("top.qcow2,backing=/images/base.qcow2,backing=b.raw").unwrap();
        assert_eq!(
            disk.dependencies.files,
            [PathBuf::from("/images/base.qcow2"), PathBuf::from("b.raw")]
        );
        assert!(parse_disk("top.qcow2,backing=").is_err());
    }

    #[test]
    fn test_parse_disk_unknown_option_is_refused() {
        assert!(
            parse_disk("a.img,cache=none")
                .unwrap_err()
                .contains("cache=none")
        );
        assert_eq!(
            parse_disk("a.img,cache=writethrough").unwrap().cache,
            CacheMode::WriteThrough
        );
    }
}
