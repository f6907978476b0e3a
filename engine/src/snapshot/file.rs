// SPDX-License-Identifier: Apache-2.0
//! The state file's framing. A file is the magic `NBXSTATE`, the format
//! version (u32, little-endian), then sections, each a kind byte, a
//! payload length (u64 LE), the payload and a CRC-32 (u32 LE) of kind,
//! length and payload. The last section is `End`. A file is written under
//! a temporary name beside its final one, synced, then renamed, so a
//! crash leaves either the old file or the whole new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::ram::RamTarget;
use super::{FORMAT_VERSION, StateError};

/// The first bytes of every state file.
pub const MAGIC: [u8; 8] = *b"NBXSTATE";

/// The largest section a reader accepts: the firmware (at most 16 MiB)
/// is the largest one written.
pub const MAX_SECTION: u64 = 32 << 20;

/// What a section holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SectionKind {
    /// The [`Header`](super::Header).
    Header = 1,
    /// The firmware flash's bytes.
    Firmware = 2,
    /// The VM-wide KVM state (interrupt controllers, PIT, clock).
    Vm = 3,
    /// One vCPU's state, in vCPU order.
    Vcpu = 4,
    /// One device's state: its place and its [`Persist`](super::Persist)
    /// bytes.
    Device = 5,
    /// A run of guest RAM pages: their offset in RAM (u64 LE), then the
    /// bytes. Pages not written are zero.
    Ram = 6,
    /// The end of the file.
    End = 7,
}

impl SectionKind {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Header,
            2 => Self::Firmware,
            3 => Self::Vm,
            4 => Self::Vcpu,
            5 => Self::Device,
            6 => Self::Ram,
            7 => Self::End,
            _ => return None,
        })
    }
}

/// Writes a state file section by section.
pub struct StateWriter {
    path: PathBuf,
    temp: PathBuf,
    out: Option<BufWriter<File>>,
    written: u64,
}

impl StateWriter {
    /// Starts writing `path` (under a temporary name until
    /// [`finish`](Self::finish)).
    pub fn create(path: &Path) -> Result<Self, StateError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = path.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        // Guest RAM is the user's private data: only the owner reads it.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|source| StateError::Write {
                path: path.to_path_buf(),
                source,
            })?;
        let mut writer = Self {
            path: path.to_path_buf(),
            temp,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            written: 0,
        };
        let mut start = MAGIC.to_vec();
        start.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        writer.put(&start)?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let result = match &mut self.out {
            Some(out) => out.write_all(bytes),
            None => Err(io::Error::other("the file is closed")),
        };
        self.written += bytes.len() as u64;
        result.map_err(|source| StateError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Appends a section whose payload is the concatenation of `parts`.
    pub fn section(&mut self, kind: SectionKind, parts: &[&[u8]]) -> Result<(), StateError> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let mut crc = crc32fast::Hasher::new();
        let mut head = [0u8; 9];
        head[0] = kind as u8;
        head[1..].copy_from_slice(&len.to_le_bytes());
        crc.update(&head);
        self.put(&head)?;
        for part in parts {
            crc.update(part);
            self.put(part)?;
        }
        self.put(&crc.finalize().to_le_bytes())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Ends the file, makes it durable and gives it its name; returns
    /// its size.
    pub fn finish(mut self) -> Result<u64, StateError> {
        self.section(SectionKind::End, &[])?;
        let write_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Write { path, source }
        };
        let out = self.out.take().ok_or_else(|| StateError::Write {
            path: self.path.clone(),
            source: io::Error::other("the file is closed"),
        })?;
        let file = out
            .into_inner()
            .map_err(|e| e.into_error())
            .map_err(write_error(&self.path))?;
        file.sync_all().map_err(write_error(&self.path))?;
        drop(file);
        fs::rename(&self.temp, &self.path).map_err(write_error(&self.path))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(write_error(&self.path))?;
        }
        Ok(self.written)
    }
}

impl Drop for StateWriter {
    fn drop(&mut self) {
        // Not finished: the partial file goes, whatever was at the final
        // name stays.
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Reads a state file section by section, checking each one.
pub struct StateReader {
    path: PathBuf,
    input: BufReader<File>,
}

impl StateReader {
    /// Opens `path` and checks its magic and format version.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let file = File::open(path).map_err(|source| StateError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = Self {
            path: path.to_path_buf(),
            // Small: RAM runs (1 MiB) are read past it, straight into RAM.
            input: BufReader::with_capacity(64 << 10, file),
        };
        let mut start = [0u8; 12];
        reader.read_exact(&mut start).map_err(|e| match e {
            StateError::Truncated { path } => StateError::NotAStateFile { path },
            other => other,
        })?;
        if start[..8] != MAGIC {
            return Err(StateError::NotAStateFile {
                path: path.to_path_buf(),
            });
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&start[8..]);
        let found = u32::from_le_bytes(version);
        if found != FORMAT_VERSION {
            return Err(StateError::WrongVersion {
                path: path.to_path_buf(),
                found,
            });
        }
        Ok(reader)
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), StateError> {
        self.input.read_exact(buf).map_err(|source| {
            if source.kind() == io::ErrorKind::UnexpectedEof {
                StateError::Truncated {
                    path: self.path.clone(),
                }
            } else {
                StateError::Read {
                    path: self.path.clone(),
                    source,
                }
            }
        })
    }

    /// A damaged-file error for this file.
    pub fn corrupt(&self, what: impl Into<String>) -> StateError {
        StateError::Corrupt {
            path: self.path.clone(),
            what: what.into(),
        }
    }

    /// Reads the next section into `payload` (reused between calls) and
    /// returns its kind, after checking its checksum.
    pub fn next_into(&mut self, payload: &mut Vec<u8>) -> Result<SectionKind, StateError> {
        self.next_section(payload, None)
    }

    /// Reads the next section as [`next_into`](Self::next_into) does,
    /// except that a RAM section's bytes go straight into `ram` (a run
    /// outside it, or not whole pages, is refused) instead of into
    /// `payload`; checks the checksum either way. What a refused checksum
    /// leaves in `ram` is garbage the caller must not run.
    pub fn next_ram_or_into(
        &mut self,
        payload: &mut Vec<u8>,
        ram: &mut RamTarget,
    ) -> Result<SectionKind, StateError> {
        self.next_section(payload, Some(ram))
    }

    fn next_section(
        &mut self,
        payload: &mut Vec<u8>,
        ram: Option<&mut RamTarget>,
    ) -> Result<SectionKind, StateError> {
        let mut head = [0u8; 9];
        self.read_exact(&mut head)?;
        let kind = SectionKind::from_byte(head[0])
            .ok_or_else(|| self.corrupt(format!("unknown section kind {}", head[0])))?;
        let mut len = [0u8; 8];
        len.copy_from_slice(&head[1..]);
        let len = u64::from_le_bytes(len);
        if len > MAX_SECTION {
            return Err(self.corrupt(format!("a {kind:?} section claims {len} bytes")));
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&head);
        match ram {
            Some(ram) if kind == SectionKind::Ram && len >= 8 => {
                let mut offset = [0u8; 8];
                self.read_exact(&mut offset)?;
                hasher.update(&offset);
                let bytes = (len - 8) as usize;
                let at = u64::from_le_bytes(offset);
                let Some(target) = ram.run(at, bytes) else {
                    return Err(self.corrupt(format!(
                        "a RAM run of {bytes} bytes at {at:#x} is not whole pages inside RAM"
                    )));
                };
                self.read_exact(target)?;
                hasher.update(target);
            }
            _ => {
                payload.clear();
                payload.resize(len as usize, 0);
                self.read_exact(payload)?;
                hasher.update(payload);
            }
        }
        let mut crc = [0u8; 4];
        self.read_exact(&mut crc)?;
        if hasher.finalize() != u32::from_le_bytes(crc) {
            return Err(self.corrupt(format!("a {kind:?} section fails its checksum")));
        }
        Ok(kind)
    }

    /// The next section, which must be of `kind`.
    pub fn expect(&mut self, kind: SectionKind) -> Result<Vec<u8>, StateError> {
        let mut payload = Vec::new();
        let found = self.next_into(&mut payload)?;
        if found != kind {
            return Err(self.corrupt(format!("a {kind:?} section was expected, not {found:?}")));
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nestbox-state-{}-{name}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir.join("vm.state")
    }

    fn write_sample(path: &Path) {
        let mut writer = StateWriter::create(path).unwrap();
        writer
            .section(SectionKind::Header, &[b"head", b"er"])
            .unwrap();
        writer.section(SectionKind::Ram, &[&[7u8; 4096]]).unwrap();
        writer.finish().unwrap();
    }

    #[test]
    fn test_sections_read_back_in_order() {
        let path = temp_path("order");
        write_sample(&path);
        let mut reader = StateReader::open(&path).unwrap();
        assert_eq!(reader.expect(SectionKind::Header).unwrap(), b"header");
        assert_eq!(reader.expect(SectionKind::Ram).unwrap(), vec![7u8; 4096]);
        assert!(reader.expect(SectionKind::End).unwrap().is_empty());
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the finished file remains");
    }

    #[test]
    fn test_state_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp_path("mode");
        write_sample(&path);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "guest RAM is private: {mode:o}");
    }

    #[test]
    fn test_unfinished_writer_leaves_the_old_file() {
        let path = temp_path("unfinished");
        fs::write(&path, b"old").unwrap();
        let mut writer = StateWriter::create(&path).unwrap();
        writer.section(SectionKind::Header, &[b"new"]).unwrap();
        drop(writer);
        assert_eq!(fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "the partial file is removed");
    }

    #[test]
    fn test_truncated_file_is_reported_as_truncated() {
        let path = temp_path("truncated");
        write_sample(&path);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        let mut reader = StateReader::open(&path).unwrap();
        reader.expect(SectionKind::Header).unwrap();
        assert!(matches!(
            reader.expect(SectionKind::Ram),
            Err(StateError::Truncated { .. })
        ));
    }

    #[test]
    fn test_flipped_byte_fails_the_checksum() {
        let path = temp_path("flipped");
        write_sample(&path);
        let mut bytes = fs::read(&path).unwrap();
        bytes[40] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let mut reader = StateReader::open(&path).unwrap();
        reader.expect(SectionKind::Header).unwrap();
        let error = reader.expect(SectionKind::Ram).unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
    }

    #[test]
    fn test_other_version_and_other_files_are_refused() {
        let path = temp_path("version");
        write_sample(&path);
        let mut bytes = fs::read(&path).unwrap();
        bytes[8] = 99;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            StateReader::open(&path),
            Err(StateError::WrongVersion { found: 99, .. })
        ));
        fs::write(&path, b"QFI\xfb not a state").unwrap();
        assert!(matches!(
            StateReader::open(&path),
            Err(StateError::NotAStateFile { .. })
        ));
        fs::write(&path, b"NBX").unwrap();
        assert!(matches!(
            StateReader::open(&path),
            Err(StateError::NotAStateFile { .. })
        ));
    }

    #[test]
    fn test_huge_section_length_is_refused_without_allocating() {
        let path = temp_path("huge");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.push(SectionKind::Ram as u8);
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let mut reader = StateReader::open(&path).unwrap();
        let error = reader.expect(SectionKind::Ram).unwrap_err();
        assert!(matches!(error, StateError::Corrupt { .. }), "{error}");
    }
}
