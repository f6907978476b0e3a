// SPDX-License-Identifier: Apache-2.0
//! What an installer ISO holds, from a look at its ISO 9660 volume (as
//! GNOME Boxes does): the volume label and the names in its root directory
//! (`/casper`, `/isolinux`, `/live`, `/install.amd`, `/sources/install.wim`,
//! `FREEDOS`…), so the wizard can preselect the right profile.
//!
//! The file is the user's, but may be anything: only the volume
//! descriptors and the root directory (and `/sources`) are read, each
//! bounded, and every offset and length in them is checked; anything that
//! does not parse is [`IsoKind::Unknown`].

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes a sector of a CD image holds.
const SECTOR: u64 = 2048;
/// The first volume descriptor's sector.
const FIRST_DESCRIPTOR: u64 = 16;
/// Descriptors looked at before giving up on finding the primary one.
const MAX_DESCRIPTORS: u64 = 32;
/// The most directory bytes read (a root directory is a few sectors).
const MAX_DIRECTORY: u64 = 64 << 10;

/// What kind of system an ISO installs or runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsoKind {
    /// A Linux distribution (live or installer).
    Linux,
    /// Windows (its installer's `sources/install.wim`).
    Windows,
    /// FreeDOS (or another DOS).
    Dos,
    /// Not recognised, or not an ISO 9660 image.
    Unknown,
}

impl IsoKind {
    /// The id of the profile to preselect for it; None when it says
    /// nothing (the wizard keeps its default for ISOs).
    pub fn profile(self) -> Option<&'static str> {
        match self {
            IsoKind::Linux => Some("linux-iso"),
            IsoKind::Dos => Some("dos-retro"),
            // No Windows profile yet: the generic PC drives IDE, which
            // Windows' installer finds without drivers.
            IsoKind::Windows => Some("generic-bios"),
            IsoKind::Unknown => None,
        }
    }
}

/// One directory entry's name, extent and size.
struct Entry {
    name: String,
    lba: u32,
    size: u32,
    is_dir: bool,
}

/// Looks inside the ISO at `path`.
pub fn probe(path: &Path) -> IsoKind {
    let Ok(file) = File::open(path) else {
        return IsoKind::Unknown;
    };
    probe_file(&file).unwrap_or(IsoKind::Unknown)
}

fn probe_file(file: &File) -> Option<IsoKind> {
    let (label, root) = primary_volume(file)?;
    let entries = directory(file, root.0, root.1)?;
    let has = |name: &str| entries.iter().any(|e| e.name == name);
    let label = label.to_ascii_uppercase();
    if label.contains("FREEDOS") || has("FREEDOS") || has("FDSETUP") {
        return Some(IsoKind::Dos);
    }
    if let Some(sources) = entries.iter().find(|e| e.is_dir && e.name == "SOURCES") {
        let inside = directory(file, sources.lba, sources.size)?;
        if inside
            .iter()
            .any(|e| e.name == "INSTALL.WIM" || e.name == "INSTALL.ESD" || e.name == "BOOT.WIM")
        {
            return Some(IsoKind::Windows);
        }
    }
    let linux = [
        "CASPER",
        "ISOLINUX",
        "LIVE",
        "INSTALL.AMD",
        "INSTALL.386",
        "ARCH",
        "SYSLINUX",
    ];
    if linux.iter().any(|name| has(name)) {
        return Some(IsoKind::Linux);
    }
    Some(IsoKind::Unknown)
}

/// The primary volume descriptor's label and root directory (extent,
/// size).
fn primary_volume(file: &File) -> Option<(String, (u32, u32))> {
    let mut sector = [0u8; SECTOR as usize];
    for n in FIRST_DESCRIPTOR..FIRST_DESCRIPTOR + MAX_DESCRIPTORS {
        file.read_exact_at(&mut sector, n * SECTOR).ok()?;
        if sector.get(1..6)? != b"CD001" {
            return None;
        }
        match *sector.first()? {
            1 => {
                let label = String::from_utf8_lossy(sector.get(40..72)?)
                    .trim_end()
                    .to_string();
                let root = sector.get(156..156 + 34)?;
                let lba = u32::from_le_bytes(root.get(2..6)?.try_into().ok()?);
                let size = u32::from_le_bytes(root.get(10..14)?.try_into().ok()?);
                return Some((label, (lba, size)));
            }
            // The set terminator: no primary descriptor.
            255 => return None,
            _ => {}
        }
    }
    None
}

/// The entries of the directory at `lba` (`size` bytes, at most
/// [`MAX_DIRECTORY`] read).
fn directory(file: &File, lba: u32, size: u32) -> Option<Vec<Entry>> {
    let len = u64::from(size).min(MAX_DIRECTORY);
    let mut bytes = vec![0u8; usize::try_from(len).ok()?];
    file.read_exact_at(&mut bytes, u64::from(lba).checked_mul(SECTOR)?)
        .ok()?;
    let mut entries = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let record_len = usize::from(*bytes.get(at)?);
        if record_len == 0 {
            // Records do not cross sectors: the rest of this one is padding.
            at = (at / SECTOR as usize + 1) * SECTOR as usize;
            continue;
        }
        let record = bytes.get(at..at + record_len)?;
        at += record_len;
        let name_len = usize::from(*record.get(32)?);
        let raw = record.get(33..33 + name_len)?;
        // "." and ".." are one byte, 0 and 1.
        if raw == [0] || raw == [1] {
            continue;
        }
        let name = String::from_utf8_lossy(raw);
        let name = name.split(';').next().unwrap_or_default();
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_uppercase();
        entries.push(Entry {
            name,
            lba: u32::from_le_bytes(record.get(2..6)?.try_into().ok()?),
            size: u32::from_le_bytes(record.get(10..14)?.try_into().ok()?),
            is_dir: record.get(25)? & 2 != 0,
        });
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;

    use super::*;
    use crate::library::testdir::TestDir;

    const XORRISO: &str = "/usr/bin/xorriso";

    /// An ISO labelled `label` holding `files` (paths inside it), made by
    /// Debian's xorriso; None (skipped) without it.
    fn iso(dir: &TestDir, name: &str, label: &str, files: &[&str]) -> Option<PathBuf> {
        if !Path::new(XORRISO).exists() {
            nestbox_tests::skipped_missing(
                "test_iso_probe_recognises_linux_windows_and_dos_installers",
                "xorriso is not installed (Debian package xorriso)",
            );
            return None;
        }
        let tree = dir.path().join(format!("{name}-tree"));
        for file in files {
            let path = tree.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"x").unwrap();
        }
        std::fs::create_dir_all(&tree).unwrap();
        let out = dir.path().join(format!("{name}.iso"));
        let status = Command::new(XORRISO)
            .args(["-as", "mkisofs", "-quiet", "-V", label, "-o"])
            .arg(&out)
            .arg(&tree)
            .status()
            .unwrap();
        assert!(status.success());
        Some(out)
    }

    #[test]
    fn test_iso_probe_recognises_linux_windows_and_dos_installers() {
        let dir = TestDir::new("iso-probe");
        let cases = [
            (
                "ubuntu",
                "Ubuntu 24.04 LTS amd64",
                &["casper/vmlinuz"][..],
                IsoKind::Linux,
            ),
            (
                "debian",
                "Debian 12.5.0 amd64 n",
                &["install.amd/vmlinuz", "isolinux/isolinux.cfg"][..],
                IsoKind::Linux,
            ),
            (
                "windows",
                "CCCOMA_X64FRE_EN-US_DV9",
                &["sources/install.wim", "setup.exe"][..],
                IsoKind::Windows,
            ),
            (
                "freedos",
                "FD14-LEGACY",
                &["freedos/setup/readme.txt"][..],
                IsoKind::Dos,
            ),
            ("fdlabel", "FREEDOS2024", &["setup.bat"][..], IsoKind::Dos),
            ("other", "DATA", &["readme.txt"][..], IsoKind::Unknown),
        ];
        for (name, label, files, want) in cases {
            let Some(path) = iso(&dir, name, label, files) else {
                return;
            };
            assert_eq!(probe(&path), want, "{name}");
        }
    }

    #[test]
    fn test_iso_probe_of_anything_else_is_unknown_without_panicking() {
        let dir = TestDir::new("iso-probe-bad");
        let empty = dir.path().join("empty.iso");
        std::fs::write(&empty, b"").unwrap();
        let mut garbage = vec![0u8; 40 * 2048];
        // A primary descriptor whose root directory points far away and
        // whose records claim lengths past the end.
        garbage[16 * 2048] = 1;
        garbage[16 * 2048 + 1..16 * 2048 + 6].copy_from_slice(b"CD001");
        garbage[16 * 2048 + 156 + 2..16 * 2048 + 156 + 6].copy_from_slice(&20u32.to_le_bytes());
        garbage[16 * 2048 + 156 + 10..16 * 2048 + 156 + 14]
            .copy_from_slice(&u32::MAX.to_le_bytes());
        garbage[20 * 2048] = 255;
        let bad = dir.path().join("bad.iso");
        std::fs::write(&bad, &garbage).unwrap();
        let far = dir.path().join("far.iso");
        garbage[16 * 2048 + 156 + 2..16 * 2048 + 156 + 6].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&far, &garbage).unwrap();

        assert_eq!(probe(&empty), IsoKind::Unknown);
        assert_eq!(probe(&bad), IsoKind::Unknown);
        assert_eq!(probe(&far), IsoKind::Unknown);
        assert_eq!(probe(&dir.path().join("missing.iso")), IsoKind::Unknown);
        assert_eq!(IsoKind::Unknown.profile(), None);
        assert_eq!(IsoKind::Dos.profile(), Some("dos-retro"));
    }
}
