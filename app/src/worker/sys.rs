// SPDX-License-Identifier: Apache-2.0
//! The few system calls the worker and its clients need that std lacks,
//! each behind a safe function: passing a file descriptor over a UNIX
//! socket (`SCM_RIGHTS`) and detaching the worker from its parent
//! (`setsid`, stdio to its log). All of the worker's `unsafe` is here.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::ptr;

/// Descriptors a reader keeps queued at most; older ones are closed.
const MAX_QUEUED_FDS: usize = 4;

/// Room for the control message of one descriptor, as `u64`s so that the
/// buffer is aligned for `cmsghdr`.
const CONTROL_WORDS: usize = 8;

/// Sends `bytes` on `stream` with `fd` attached to the first byte.
pub fn send_with_fd(stream: &UnixStream, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a descriptor needs at least one byte to travel with",
        ));
    }
    let mut control = [0u64; CONTROL_WORDS];
    // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(mem::size_of::<RawFd>() as u32) as usize,
            libc::CMSG_LEN(mem::size_of::<RawFd>() as u32) as usize,
        )
    };
    debug_assert!(space <= mem::size_of_val(&control));
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at a control buffer of `space` bytes, enough for
    // one header and one descriptor, so CMSG_FIRSTHDR is non-null and the
    // header and its data lie inside `control`.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = len as _;
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd.as_raw_fd());
    }
    let sent = loop {
        // SAFETY: msg, iov and control outlive the call; iov covers `bytes`,
        // which the kernel only reads.
        let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    // The descriptor went with the first chunk; the rest is plain data.
    let mut rest = stream;
    rest.write_all(&bytes[sent.min(bytes.len())..])
}

/// Reads a UNIX stream and keeps the descriptors that arrive with it.
pub struct FdReader {
    stream: UnixStream,
    fds: VecDeque<OwnedFd>,
}

impl FdReader {
    /// Reads from `stream`.
    pub fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            fds: VecDeque::new(),
        }
    }

    /// The oldest descriptor received and not yet taken.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fds.pop_front()
    }

    /// The socket read from.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    fn keep(&mut self, fd: OwnedFd) {
        if self.fds.len() >= MAX_QUEUED_FDS {
            log::warn!("dropping a file descriptor nobody asked for");
            self.fds.pop_front();
        }
        self.fds.push_back(fd);
    }
}

impl Read for FdReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut control = [0u64; CONTROL_WORDS];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control) as _;
        // SAFETY: iov covers `buf`, writable for its length, and the control
        // buffer is writable for msg_controllen bytes; both outlive the call.
        let n = unsafe { libc::recvmsg(self.stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut received = Vec::new();
        // SAFETY: the kernel filled msg_control with msg_controllen bytes of
        // well-formed control messages; CMSG_FIRSTHDR/CMSG_NXTHDR walk them
        // within that length, and every SCM_RIGHTS entry holds descriptors
        // the kernel just installed in this process, each owned only here.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data_len =
                        ((*cmsg).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    for i in 0..data_len / mem::size_of::<RawFd>() {
                        let raw = ptr::read_unaligned(data.add(i));
                        received.push(OwnedFd::from_raw_fd(raw));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            log::warn!("some file descriptors sent to this process were dropped");
        }
        for fd in received {
            self.keep(fd);
        }
        Ok(n as usize)
    }
}

/// Detaches this process from its parent's session and terminal: a new
/// session (so the parent quitting or its terminal closing leaves it be),
/// stdin from `/dev/null`, stdout and stderr appended to `log`.
pub fn detach(log: &File) -> io::Result<()> {
    // SAFETY: setsid has no memory effects; it fails (EPERM) only when this
    // process already leads a process group, which is harmless here.
    if unsafe { libc::setsid() } < 0 {
        log::debug!("setsid: {}", io::Error::last_os_error());
    }
    let null = File::open("/dev/null")?;
    for (from, to) in [
        (null.as_raw_fd(), libc::STDIN_FILENO),
        (log.as_raw_fd(), libc::STDOUT_FILENO),
        (log.as_raw_fd(), libc::STDERR_FILENO),
    ] {
        // SAFETY: `from` is open for the whole call (borrowed from a live
        // File) and `to` is a standard stream, which dup2 atomically
        // replaces; nothing in this process owns fds 0-2 as Rust objects.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes this process and everything it starts unable to gain privileges
/// (no setuid or file capabilities through `execve`): the first step of
/// the worker's sandbox, which needs nothing from the host.
pub fn forbid_new_privileges() -> io::Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers and touches no
    // memory of this process.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Seek;

    #[test]
    fn test_a_descriptor_travels_with_its_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut file = tempfile_with(b"hello fd");
        file.rewind().unwrap();
        send_with_fd(&a, b"xyz", std::os::fd::AsFd::as_fd(&file)).unwrap();
        let mut reader = FdReader::new(b);
        let mut buf = [0u8; 3];
        reader.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"xyz");
        let fd = reader.take_fd().expect("no descriptor arrived");
        let mut received = File::from(fd);
        let mut text = String::new();
        received.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello fd");
        assert!(reader.take_fd().is_none());
    }

    #[test]
    fn test_plain_bytes_bring_no_descriptor() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"ab").unwrap();
        let mut reader = FdReader::new(b);
        let mut buf = [0u8; 2];
        reader.read_exact(&mut buf).unwrap();
        assert!(reader.take_fd().is_none());
    }

    #[test]
    fn test_a_descriptor_needs_a_byte() {
        let (a, _b) = UnixStream::pair().unwrap();
        let file = tempfile_with(b"");
        assert!(send_with_fd(&a, b"", std::os::fd::AsFd::as_fd(&file)).is_err());
    }

    fn tempfile_with(bytes: &[u8]) -> File {
        let path = std::env::temp_dir().join(format!(
            "nestbox-fdpass-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }
}
