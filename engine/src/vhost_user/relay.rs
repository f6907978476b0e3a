// SPDX-License-Identifier: Apache-2.0
//! A relay between a vhost-user front-end and the `vhost` crate's request
//! handler that holds back an early `SET_VRING_ENABLE`.
//!
//! QEMU's `-netdev vhost-user` enables the rings (virtio-net attaching its
//! peer's queue pairs, at realize and reset) long before the guest driver
//! has negotiated features, so `SET_VRING_ENABLE` arrives before the first
//! `SET_FEATURES`. The vhost-user spec lets that happen (the request is
//! valid once the back-end *offered* `VHOST_USER_F_PROTOCOL_FEATURES`), but
//! the crate checks the *acknowledged* features and fails the connection.
//! The crate has no hook before that check, so this relay sits on the
//! socket: it passes every message and its file descriptors (SCM_RIGHTS)
//! through unchanged, except that a `SET_VRING_ENABLE` seen before any
//! `SET_FEATURES` is kept (the latest state per ring), acknowledged to the
//! front-end itself when it asked for a reply, and sent on right after the
//! first `SET_FEATURES` (when that acknowledges protocol features; without
//! them the rings start enabled and the request does not apply).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// `VHOST_USER_SET_FEATURES`.
const SET_FEATURES: u32 = 2;
/// `VHOST_USER_SET_VRING_ENABLE`.
const SET_VRING_ENABLE: u32 = 18;
/// The header flags: protocol version 1.
const FLAG_VERSION: u32 = 0x1;
/// The header flags: this message is a reply.
const FLAG_REPLY: u32 = 0x4;
/// The header flags: the sender wants a reply (REPLY_ACK).
const FLAG_NEED_REPLY: u32 = 0x8;
/// The vhost-user feature bit that enables protocol-feature negotiation.
const PROTOCOL_FEATURES: u64 = 1 << 30;
/// The size of a message header: request, flags, payload size.
const HEADER_SIZE: usize = 12;
/// The largest payload relayed (the crate itself accepts at most 4 KiB).
const MAX_PAYLOAD: usize = 64 * 1024;
/// The most file descriptors one message may carry (the protocol's limit).
const MAX_FDS: usize = 32;

/// One vhost-user message: its header fields, payload and descriptors.
#[derive(Debug)]
pub struct Message {
    /// The request code.
    pub request: u32,
    /// The header flags.
    pub flags: u32,
    /// The payload (`size` bytes).
    pub payload: Vec<u8>,
    /// File descriptors sent with it.
    pub fds: Vec<OwnedFd>,
}

impl Message {
    /// A message without descriptors.
    pub fn new(request: u32, flags: u32, payload: Vec<u8>) -> Self {
        Self {
            request,
            flags,
            payload,
            fds: Vec::new(),
        }
    }

    /// The header and payload as sent on the socket.
    fn encode(&self) -> io::Result<Vec<u8>> {
        let size = u32::try_from(self.payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "payload too large"))?;
        let mut bytes = Vec::with_capacity(HEADER_SIZE + self.payload.len());
        bytes.extend_from_slice(&self.request.to_le_bytes());
        bytes.extend_from_slice(&self.flags.to_le_bytes());
        bytes.extend_from_slice(&size.to_le_bytes());
        bytes.extend_from_slice(&self.payload);
        Ok(bytes)
    }

    /// The payload's first u64 (a `VhostUserU64` body), if it is one.
    fn u64_body(&self) -> Option<u64> {
        let bytes: [u8; 8] = self.payload.as_slice().try_into().ok()?;
        Some(u64::from_le_bytes(bytes))
    }

    /// The ring index of a `VhostUserVringState` body.
    fn vring_index(&self) -> Option<u32> {
        if self.payload.len() != 8 {
            return None;
        }
        let bytes: [u8; 4] = self.payload.get(..4)?.try_into().ok()?;
        Some(u32::from_le_bytes(bytes))
    }
}

/// Where the relay sends a message.
#[derive(Debug)]
pub enum Route {
    /// On to the back-end (the crate's handler).
    Backend(Message),
    /// Back to the front-end (a reply the relay gives itself).
    Frontend(Message),
}

/// The relay's decisions about front-end messages (no I/O: unit-tested).
#[derive(Debug, Default)]
pub struct EnableHold {
    /// Whether a `SET_FEATURES` has gone through.
    features_set: bool,
    /// The latest early `SET_VRING_ENABLE` per ring, NEED_REPLY cleared.
    held: BTreeMap<u32, Message>,
}

impl EnableHold {
    /// A relay state for a fresh connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// The messages to send for `message`, which came from the front-end.
    pub fn on_frontend(&mut self, mut message: Message) -> Vec<Route> {
        match message.request {
            SET_VRING_ENABLE if !self.features_set => {
                // A body the crate would reject goes through unchanged: the
                // crate then fails the connection as it would without us.
                let Some(index) = message.vring_index() else {
                    return vec![Route::Backend(message)];
                };
                log::debug!(
                    "vhost-user relay: holding SET_VRING_ENABLE for ring {index} until SET_FEATURES"
                );
                let mut routes = Vec::new();
                if message.flags & FLAG_NEED_REPLY != 0 {
                    // REPLY_ACK: success (u64 0), as the crate would answer.
                    routes.push(Route::Frontend(Message::new(
                        SET_VRING_ENABLE,
                        FLAG_VERSION | FLAG_REPLY,
                        0u64.to_le_bytes().to_vec(),
                    )));
                    message.flags &= !FLAG_NEED_REPLY;
                }
                self.held.insert(index, message);
                routes
            }
            SET_FEATURES if !self.features_set => {
                self.features_set = true;
                let protocol = message
                    .u64_body()
                    .is_some_and(|f| f & PROTOCOL_FEATURES != 0);
                let held = std::mem::take(&mut self.held);
                let mut routes = vec![Route::Backend(message)];
                if protocol {
                    routes.extend(held.into_values().map(Route::Backend));
                }
                routes
            }
            _ => vec![Route::Backend(message)],
        }
    }
}

/// Reads one message from `stream`; None at a clean end of stream.
pub fn read_message(stream: &UnixStream) -> io::Result<Option<Message>> {
    let mut fds = Vec::new();
    let mut header = [0u8; HEADER_SIZE];
    if !read_full(stream, &mut header, &mut fds, true)? {
        return Ok(None);
    }
    let field = |at: usize| {
        header
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, u32::from_le_bytes)
    };
    let (request, flags, size) = (field(0), field(4), field(8));
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if size > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("vhost-user message {request} has a {size}-byte payload"),
        ));
    }
    let mut payload = vec![0u8; size];
    if !read_full(stream, &mut payload, &mut fds, false)? {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(Message {
        request,
        flags,
        payload,
        fds,
    }))
}

/// Fills `buf` from `stream`, keeping any descriptors that come with it.
/// False if the stream ended before the first byte and `eof_ok`.
fn read_full(
    stream: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    eof_ok: bool,
) -> io::Result<bool> {
    let mut done = 0;
    while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
        let mut raw: [RawFd; MAX_FDS] = [-1; MAX_FDS];
        let mut iov = [libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        }];
        // SAFETY: the iovec points into `rest`, which is valid for writes
        // of its length and outlives the call; the kernel writes at most
        // that many bytes there.
        let received = unsafe { stream.recv_with_fds(&mut iov, &mut raw) };
        let (count, nfds) = match received {
            Ok(r) => r,
            Err(e) if e.errno() == libc::EINTR => continue,
            Err(e) => return Err(io::Error::from_raw_os_error(e.errno())),
        };
        for fd in raw.iter().take(nfds) {
            // SAFETY: recvmsg just created this descriptor for us (SCM_RIGHTS)
            // and nothing else owns it.
            fds.push(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
        if fds.len() > MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "too many file descriptors in one vhost-user message",
            ));
        }
        if count == 0 {
            if done == 0 && eof_ok {
                return Ok(false);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        done += count;
    }
    Ok(true)
}

/// Writes `message` with its descriptors to `stream`.
pub fn write_message(stream: &UnixStream, message: &Message) -> io::Result<()> {
    let bytes = message.encode()?;
    let raw: Vec<RawFd> = message.fds.iter().map(AsRawFd::as_raw_fd).collect();
    let sent = loop {
        match stream.send_with_fds(&[bytes.as_slice()], &raw) {
            Ok(n) => break n,
            Err(e) if e.errno() == libc::EINTR => continue,
            Err(e) => return Err(io::Error::from_raw_os_error(e.errno())),
        }
    };
    // The descriptors went with the first byte; the rest is plain data.
    let mut writer = stream;
    writer.write_all(bytes.get(sent..).unwrap_or_default())
}

/// Relays between `frontend` and `backend` until either side closes, then
/// shuts both down.
pub fn relay(frontend: UnixStream, backend: UnixStream) -> io::Result<()> {
    let frontend_writer = Arc::new(Mutex::new(frontend.try_clone()?));
    let backend_reader = backend.try_clone()?;
    let replies = {
        let writer = Arc::clone(&frontend_writer);
        let frontend = frontend.try_clone()?;
        let backend = backend.try_clone()?;
        std::thread::Builder::new()
            .name("vhost-user-relay".to_string())
            .spawn(move || {
                let result = backend_to_frontend(&backend_reader, &writer);
                let _ = frontend.shutdown(Shutdown::Both);
                let _ = backend.shutdown(Shutdown::Both);
                result
            })?
    };
    let mut hold = EnableHold::new();
    let result = (|| -> io::Result<()> {
        while let Some(message) = read_message(&frontend)? {
            log::trace!(
                "vhost-user relay: front-end request {} flags {:#x} size {}",
                message.request,
                message.flags,
                message.payload.len()
            );
            for route in hold.on_frontend(message) {
                match route {
                    Route::Backend(m) => write_message(&backend, &m)?,
                    Route::Frontend(m) => {
                        let writer = frontend_writer.lock().unwrap_or_else(|e| e.into_inner());
                        write_message(&writer, &m)?;
                    }
                }
            }
        }
        Ok(())
    })();
    let _ = frontend.shutdown(Shutdown::Both);
    let _ = backend.shutdown(Shutdown::Both);
    let replies = replies
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("vhost-user relay thread panicked")));
    // A side that closed mid-message after the other ended is no error.
    result.and(replies.or_else(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::NotConnected => Ok(()),
        _ => Err(e),
    }))
}

/// Copies the back-end's messages (replies) to the front-end.
fn backend_to_frontend(backend: &UnixStream, frontend: &Mutex<UnixStream>) -> io::Result<()> {
    while let Some(message) = read_message(backend)? {
        let writer = frontend.lock().unwrap_or_else(|e| e.into_inner());
        write_message(&writer, &message)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enable(index: u32, num: u32, flags: u32) -> Message {
        let mut payload = index.to_le_bytes().to_vec();
        payload.extend_from_slice(&num.to_le_bytes());
        Message::new(SET_VRING_ENABLE, flags, payload)
    }

    fn features(value: u64) -> Message {
        Message::new(SET_FEATURES, FLAG_VERSION, value.to_le_bytes().to_vec())
    }

    fn backend(routes: &[Route]) -> Vec<(u32, Vec<u8>, u32)> {
        routes
            .iter()
            .filter_map(|r| match r {
                Route::Backend(m) => Some((m.request, m.payload.clone(), m.flags)),
                Route::Frontend(_) => None,
            })
            .collect()
    }

    #[test]
    fn test_early_enable_is_held_until_set_features() {
        let mut hold = EnableHold::new();
        assert!(hold.on_frontend(enable(0, 1, FLAG_VERSION)).is_empty());
        assert!(hold.on_frontend(enable(1, 1, FLAG_VERSION)).is_empty());
        // Other requests pass meanwhile.
        let get = hold.on_frontend(Message::new(1, FLAG_VERSION, Vec::new()));
        assert_eq!(backend(&get).len(), 1);
        let routes = hold.on_frontend(features(PROTOCOL_FEATURES | 1));
        let sent = backend(&routes);
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0].0, SET_FEATURES);
        assert_eq!(
            sent[1],
            (SET_VRING_ENABLE, enable(0, 1, 0).payload, FLAG_VERSION)
        );
        assert_eq!(
            sent[2],
            (SET_VRING_ENABLE, enable(1, 1, 0).payload, FLAG_VERSION)
        );
        // Later enables go straight through.
        let later = hold.on_frontend(enable(0, 0, FLAG_VERSION));
        assert_eq!(backend(&later).len(), 1);
    }

    #[test]
    fn test_latest_early_state_per_ring_wins() {
        let mut hold = EnableHold::new();
        hold.on_frontend(enable(0, 1, FLAG_VERSION));
        hold.on_frontend(enable(0, 0, FLAG_VERSION));
        let sent = backend(&hold.on_frontend(features(PROTOCOL_FEATURES)));
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].1, enable(0, 0, 0).payload);
    }

    #[test]
    fn test_early_enable_wanting_a_reply_is_acknowledged_by_the_relay() {
        let mut hold = EnableHold::new();
        let routes = hold.on_frontend(enable(0, 1, FLAG_VERSION | FLAG_NEED_REPLY));
        assert_eq!(routes.len(), 1);
        let Route::Frontend(reply) = &routes[0] else {
            panic!("expected a reply to the front-end");
        };
        assert_eq!(reply.request, SET_VRING_ENABLE);
        assert_eq!(reply.flags, FLAG_VERSION | FLAG_REPLY);
        assert_eq!(reply.payload, 0u64.to_le_bytes());
        // The held request no longer asks the back-end for a reply, so
        // the front-end never sees a second one.
        let sent = backend(&hold.on_frontend(features(PROTOCOL_FEATURES)));
        assert_eq!(sent[1].2 & FLAG_NEED_REPLY, 0);
    }

    #[test]
    fn test_held_enables_are_dropped_without_protocol_features() {
        let mut hold = EnableHold::new();
        hold.on_frontend(enable(0, 1, FLAG_VERSION));
        let sent = backend(&hold.on_frontend(features(1)));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, SET_FEATURES);
    }

    #[test]
    fn test_malformed_early_enable_passes_through() {
        let mut hold = EnableHold::new();
        let routes = hold.on_frontend(Message::new(SET_VRING_ENABLE, FLAG_VERSION, vec![0; 3]));
        assert_eq!(backend(&routes).len(), 1);
    }

    #[test]
    fn test_messages_and_descriptors_cross_the_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let mut message = enable(3, 1, FLAG_VERSION);
        message.fds.push(OwnedFd::from(file));
        write_message(&a, &message).unwrap();
        write_message(&a, &Message::new(7, FLAG_VERSION, vec![9; 5000])).unwrap();
        drop(a);
        let got = read_message(&b).unwrap().unwrap();
        assert_eq!(got.request, SET_VRING_ENABLE);
        assert_eq!(got.payload, message.payload);
        assert_eq!(got.fds.len(), 1);
        let big = read_message(&b).unwrap().unwrap();
        assert_eq!(big.payload, vec![9; 5000]);
        assert!(read_message(&b).unwrap().is_none());
    }

    #[test]
    fn test_oversized_and_truncated_messages_are_errors() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut header = 1u32.to_le_bytes().to_vec();
        header.extend_from_slice(&1u32.to_le_bytes());
        header.extend_from_slice(&u32::MAX.to_le_bytes());
        (&a).write_all(&header).unwrap();
        assert!(read_message(&b).is_err());

        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&[1, 0, 0]).unwrap();
        drop(a);
        assert!(read_message(&b).is_err());
    }

    #[test]
    fn test_relay_holds_an_early_enable_end_to_end() {
        let (frontend, frontend_peer) = UnixStream::pair().unwrap();
        let (backend_peer, backend) = UnixStream::pair().unwrap();
        let relay = std::thread::spawn(move || relay(frontend_peer, backend_peer));
        write_message(&frontend, &enable(0, 1, FLAG_VERSION | FLAG_NEED_REPLY)).unwrap();
        let ack = read_message(&frontend).unwrap().unwrap();
        assert_eq!(ack.flags, FLAG_VERSION | FLAG_REPLY);
        write_message(&frontend, &features(PROTOCOL_FEATURES)).unwrap();
        assert_eq!(
            read_message(&backend).unwrap().unwrap().request,
            SET_FEATURES
        );
        assert_eq!(
            read_message(&backend).unwrap().unwrap().request,
            SET_VRING_ENABLE
        );
        // A back-end reply reaches the front-end.
        write_message(
            &backend,
            &Message::new(1, FLAG_VERSION | FLAG_REPLY, vec![1; 8]),
        )
        .unwrap();
        assert_eq!(
            read_message(&frontend).unwrap().unwrap().payload,
            vec![1; 8]
        );
        drop(frontend);
        assert!(read_message(&backend).unwrap().is_none());
        relay.join().unwrap().unwrap();
    }
}
