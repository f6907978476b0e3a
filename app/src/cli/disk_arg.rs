// SPDX-License-Identifier: Apache-2.0
//! Parsing `--disk PATH[,format=raw|qcow2][,readonly][,ide][,cdrom]`. ISO
//! images always attach read-only (on IDE, as a CD-ROM); `.qcow2` files
//! default to qcow2.

use std::path::PathBuf;

use engine::vm::{DiskBus, DiskConfig, DiskFormat};

/// Parses one `--disk` value.
pub fn parse_disk(text: &str) -> Result<DiskConfig, String> {
    let mut parts = text.split(',');
    let path = parts
        .next()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| "--disk needs a file path".to_string())?;
    let lower = path.to_ascii_lowercase();
    let iso = lower.ends_with(".iso");
    let mut readonly = iso;
    let mut bus = DiskBus::Virtio;
    let mut cdrom = None;
    // The format follows the file name unless given; it is never guessed
    // from the contents, which a guest controls.
    let mut format = if lower.ends_with(".qcow2") {
        DiskFormat::Qcow2
    } else {
        DiskFormat::Raw
    };
    for option in parts {
        match option {
            "readonly" | "ro" => readonly = true,
            "ide" => bus = DiskBus::Ide,
            "virtio" => bus = DiskBus::Virtio,
            "cdrom" => cdrom = Some(true),
            "disk" => cdrom = Some(false),
            "format=raw" => format = DiskFormat::Raw,
            "format=qcow2" => format = DiskFormat::Qcow2,
            other => {
                return Err(format!(
                    "unknown disk option '{other}' (use format=raw, format=qcow2, readonly, ide, virtio, cdrom or disk)"
                ));
            }
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

    #[test]
    fn test_parse_disk_unknown_option_is_refused() {
        assert!(
            parse_disk("a.img,cache=none")
                .unwrap_err()
                .contains("cache=none")
        );
    }
}
