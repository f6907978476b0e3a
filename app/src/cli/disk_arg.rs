// SPDX-License-Identifier: Apache-2.0
//! Parsing `--disk PATH[,format=raw][,readonly]`. ISO images always
//! attach read-only.

use std::path::PathBuf;

use engine::vm::DiskConfig;

/// Parses one `--disk` value.
pub fn parse_disk(text: &str) -> Result<DiskConfig, String> {
    let mut parts = text.split(',');
    let path = parts
        .next()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| "--disk needs a file path".to_string())?;
    let mut readonly = path.to_ascii_lowercase().ends_with(".iso");
    for option in parts {
        match option {
            "readonly" | "ro" => readonly = true,
            "format=raw" => {}
            "format=qcow2" => {
                return Err("qcow2 images are not supported yet; convert with \
                     'qemu-img convert -O raw IMAGE IMAGE.raw'"
                    .to_string());
            }
            other => {
                return Err(format!(
                    "unknown disk option '{other}' (use format=raw or readonly)"
                ));
            }
        }
    }
    Ok(DiskConfig {
        path: PathBuf::from(path),
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
    fn test_parse_disk_unknown_option_is_refused() {
        assert!(
            parse_disk("a.img,cache=none")
                .unwrap_err()
                .contains("cache=none")
        );
    }
}
