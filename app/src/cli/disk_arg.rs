// SPDX-License-Identifier: Apache-2.0
//! Parsing `--disk PATH[,format=raw|qcow2][,readonly]`. ISO images always
//! attach read-only; `.qcow2` files default to qcow2.

use std::path::PathBuf;

use engine::vm::{DiskConfig, DiskFormat};

/// Parses one `--disk` value.
pub fn parse_disk(text: &str) -> Result<DiskConfig, String> {
    let mut parts = text.split(',');
    let path = parts
        .next()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| "--disk needs a file path".to_string())?;
    let lower = path.to_ascii_lowercase();
    let mut readonly = lower.ends_with(".iso");
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
            "format=raw" => format = DiskFormat::Raw,
            "format=qcow2" => format = DiskFormat::Qcow2,
            other => {
                return Err(format!(
                    "unknown disk option '{other}' (use format=raw, format=qcow2 or readonly)"
                ));
            }
        }
    }
    Ok(DiskConfig {
        path: PathBuf::from(path),
        format,
        readonly,
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
    fn test_parse_disk_unknown_option_is_refused() {
        assert!(
            parse_disk("a.img,cache=none")
                .unwrap_err()
                .contains("cache=none")
        );
    }
}
