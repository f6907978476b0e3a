// SPDX-License-Identifier: Apache-2.0
//! User-mode networking through `passt`: Nestbox starts one `passt` per VM
//! on a private UNIX socket and exchanges Ethernet frames with it, each
//! prefixed by its length as a big-endian u32 (QEMU's stream netdev
//! protocol). passt answers DHCP, NAT-translates the guest's TCP/UDP/ICMP
//! to host sockets, and maps the gateway address to the host's loopback.
//! It is stopped when this is dropped.
//!
//! [`Passt::start_private`] puts the socket in a fresh directory only the
//! user can enter, so no other local user can connect to passt before the
//! VMM does (passt serves one client, `--one-off`). passt started by root
//! drops to `nobody` before it binds its socket, so for root the directory
//! belongs to `nobody` (and passt is told to run as that user).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where Debian's `passt` package installs it.
pub const PASST_PATH: &str = "/usr/bin/passt";
/// The user and group passt switches to when started by root (it refuses
/// to run as root), the `nobody` of Debian.
const ROOT_RUNAS: u32 = 65_534;
/// The largest frame passt sends (its MTU plus the Ethernet header).
const MAX_FRAME: usize = 65_550;
/// How long passt may take to create its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors starting passt.
#[derive(Debug, thiserror::Error)]
pub enum PasstError {
    /// The binary is not installed.
    #[error("passt is not installed at {PASST_PATH}: install Debian's 'passt' package")]
    Missing,
    /// It could not be started.
    #[error("Cannot start passt")]
    Spawn(#[source] io::Error),
    /// It did not open its socket in time, or exited.
    #[error("passt did not open its socket {0}")]
    NoSocket(PathBuf),
    /// Connecting to its socket failed.
    #[error("Cannot connect to passt")]
    Connect(#[source] io::Error),
    /// The private directory for its socket could not be created.
    #[error("Cannot create a private directory for passt's socket in {0}")]
    SocketDir(PathBuf, #[source] io::Error),
}

/// A running passt and the connection to it.
pub struct Passt {
    child: Child,
    stream: UnixStream,
    socket: PathBuf,
    /// The private directory holding the socket, removed with it.
    private_dir: Option<PathBuf>,
    pending: Vec<u8>,
}

impl Passt {
    /// Starts passt with its socket in a new private directory (mode 0700)
    /// under `$XDG_RUNTIME_DIR` (or the temporary directory, always when
    /// running as root), removed when this is dropped.
    pub fn start_private() -> Result<Self, PasstError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        if !Path::new(PASST_PATH).exists() {
            return Err(PasstError::Missing);
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        // As root, passt drops to an unprivileged user before it binds its
        // socket, and that user cannot enter root's private runtime
        // directory (mode 0700): the private directory then goes in the
        // temporary directory, which everyone can traverse.
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|dir| dir.is_dir() && !root)
            .unwrap_or_else(std::env::temp_dir);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = base.join(format!(
            "nestbox-net-{}-{}-{nanos:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| PasstError::SocketDir(base.clone(), e))?;
        let runas = if root {
            if let Err(e) = std::os::unix::fs::chown(&dir, Some(ROOT_RUNAS), Some(ROOT_RUNAS)) {
                let _ = std::fs::remove_dir(&dir);
                return Err(PasstError::SocketDir(base, e));
            }
            Some(ROOT_RUNAS)
        } else {
            None
        };
        match Self::spawn(&dir.join("passt.sock"), runas) {
            Ok(mut passt) => {
                passt.private_dir = Some(dir);
                Ok(passt)
            }
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// The process id of passt.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts passt with its socket at `socket` (which must not exist) and
    /// connects to it.
    pub fn start(socket: &Path) -> Result<Self, PasstError> {
        Self::spawn(socket, None)
    }

    /// Starts passt, as user and group `runas` if given.
    fn spawn(socket: &Path, runas: Option<u32>) -> Result<Self, PasstError> {
        if !Path::new(PASST_PATH).exists() {
            return Err(PasstError::Missing);
        }
        let mut command = Command::new(PASST_PATH);
        if let Some(id) = runas {
            command.arg("--runas").arg(format!("{id}:{id}"));
        }
        let mut child = command
            .args([
                "--foreground",
                "--quiet",
                "--one-off",
                "--mtu",
                "1500",
                "--socket",
            ])
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(PasstError::Spawn)?;
        let deadline = Instant::now() + START_TIMEOUT;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(PasstError::NoSocket(socket.to_path_buf()));
                }
            }
        };
        Ok(Self {
            child,
            stream,
            socket: socket.to_path_buf(),
            private_dir: None,
            pending: Vec::new(),
        })
    }

    /// A second handle for sending frames from another thread.
    pub fn sender(&self) -> io::Result<PasstSender> {
        Ok(PasstSender {
            stream: self.stream.try_clone()?,
        })
    }

    /// Reads what passt has sent (one read; call when the socket is
    /// readable) and appends each complete frame to `frames`. Returns false
    /// once passt has closed the connection.
    pub fn receive(&mut self, frames: &mut Vec<Vec<u8>>) -> io::Result<bool> {
        let mut chunk = [0u8; 65_536];
        let read = match self.stream.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(e),
        };
        self.pending
            .extend_from_slice(chunk.get(..read).unwrap_or(&[]));
        split_frames(&mut self.pending, frames)?;
        Ok(true)
    }
}

/// Takes every complete length-prefixed frame off the front of `pending`.
fn split_frames(pending: &mut Vec<u8>, frames: &mut Vec<Vec<u8>>) -> io::Result<()> {
    let mut at = 0usize;
    while let Some(prefix) = pending.get(at..at + 4) {
        let len = <[u8; 4]>::try_from(prefix).map_or(0, u32::from_be_bytes) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("passt sent a {len}-byte frame"),
            ));
        }
        let Some(frame) = pending.get(at + 4..at + 4 + len) else {
            break;
        };
        frames.push(frame.to_vec());
        at += 4 + len;
    }
    pending.drain(..at);
    Ok(())
}

impl super::FrameSource for Passt {
    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    fn receive(&mut self, frames: &mut Vec<Vec<u8>>) -> io::Result<bool> {
        Passt::receive(self, frames)
    }
}

impl AsRawFd for Passt {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
        if let Some(dir) = &self.private_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Sends frames to passt.
pub struct PasstSender {
    stream: UnixStream,
}

impl crate::devices::virtio::net::FrameSink for PasstSender {
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let len =
            u32::try_from(frame.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut message = Vec::with_capacity(frame.len() + 4);
        message.extend_from_slice(&len.to_be_bytes());
        message.extend_from_slice(frame);
        self.stream.write_all(&message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_split_frames_keeps_partial_tail() {
        let mut pending = vec![0, 0, 0, 2, 0xaa, 0xbb, 0, 0, 0, 3, 0xcc];
        let mut frames = Vec::new();
        split_frames(&mut pending, &mut frames).unwrap();
        assert_eq!(frames, vec![vec![0xaa, 0xbb]]);
        assert_eq!(pending, vec![0, 0, 0, 3, 0xcc]);
    }

    #[test]
    fn test_split_frames_oversized_length_is_an_error() {
        let mut pending = vec![0xff, 0xff, 0xff, 0xff];
        assert!(split_frames(&mut pending, &mut Vec::new()).is_err());
    }
}

#[cfg(test)]
pub(crate) mod passt_tests {
    use super::*;
    use crate::devices::virtio::net::FrameSink;

    /// A DHCPDISCOVER from `mac`, as a guest's first frame would be.
    pub(crate) fn dhcp_discover(mac: [u8; 6]) -> Vec<u8> {
        let mut bootp = vec![0u8; 240];
        bootp[0] = 1; // BOOTREQUEST
        bootp[1] = 1; // Ethernet
        bootp[2] = 6; // address length
        bootp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes()); // xid
        bootp[10] = 0x80; // broadcast reply
        bootp[28..34].copy_from_slice(&mac);
        bootp[236..240].copy_from_slice(&[99, 130, 83, 99]); // magic cookie
        bootp.extend_from_slice(&[53, 1, 1, 255]); // DHCPDISCOVER, end
        let udp_len = 8 + bootp.len();
        let mut udp = Vec::new();
        udp.extend_from_slice(&68u16.to_be_bytes());
        udp.extend_from_slice(&67u16.to_be_bytes());
        udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&bootp);
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255,
        ];
        ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
        let sum: u32 = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        let folded = (sum & 0xffff) + (sum >> 16);
        ip[10..12].copy_from_slice(&(!(folded as u16)).to_be_bytes());
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&mac);
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&udp);
        frame
    }

    #[test]
    fn test_passt_answers_dhcp_discover_with_offer() {
        if !Path::new(PASST_PATH).exists() {
            crate::test_skip::skipped_missing(module_path!(), "passt is not installed");
            return;
        }
        let socket =
            std::env::temp_dir().join(format!("nestbox-passt-{}.sock", std::process::id()));
        let mac = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc];
        let mut passt = Passt::start(&socket).unwrap();
        let mut sender = passt.sender().unwrap();
        // A silent passt fails the test instead of hanging it.
        passt
            .stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();

        sender.send_frame(&dhcp_discover(mac)).unwrap();
        let mut frames = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let offer = loop {
            assert!(Instant::now() < deadline, "no DHCP offer from passt");
            assert!(
                passt.receive(&mut frames).unwrap(),
                "passt closed the socket"
            );
            // A DHCP reply: IPv4/UDP from port 67 to 68, to our MAC.
            if let Some(f) = frames.iter().find(|f| {
                f.len() > 42
                    && f[0..6] == mac
                    && f[12..14] == [0x08, 0x00]
                    && f[23] == 17
                    && f[34..38] == [0, 67, 0, 68]
            }) {
                break f.clone();
            }
        };

        // BOOTREPLY, our transaction, and a non-zero offered address.
        let bootp = &offer[42..];
        assert_eq!(bootp[0], 2);
        assert_eq!(&bootp[4..8], &0x1234_5678u32.to_be_bytes());
        assert_ne!(&bootp[16..20], &[0, 0, 0, 0]);
    }
}
