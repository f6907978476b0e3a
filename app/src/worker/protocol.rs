// SPDX-License-Identifier: Apache-2.0
//! The wire protocol between a VM worker and its clients (the GUI, the
//! CLI), over a UNIX stream socket.
//!
//! Every message is a frame: a `u32` little-endian length, then that many
//! bytes of JSON. Frames longer than [`MAX_MESSAGE`] are refused (the
//! connection is closed). The client speaks first with
//! [`ClientMessage::Hello`]; the worker answers [`WorkerMessage::Hello`] or,
//! on a version mismatch, [`WorkerMessage::Refused`] and closes. Then the
//! client sends [`ClientMessage::Request`]s, each answered by a
//! [`WorkerMessage::Reply`] with the same id, and the worker pushes
//! [`WorkerMessage::Event`]s to every client at any time. The reply to
//! [`Request::GetFramebuffer`] carries the framebuffer memfd as
//! `SCM_RIGHTS` ancillary data on its first byte (see [`super::fdpass`]).

use std::io::{self, Read, Write};

use display::view::GuestInput;
use serde::{Deserialize, Serialize};

use super::api::{RunState, VmCommand, VmEvent};

/// Bumped on every incompatible change of the messages below.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame either side accepts (1 MiB).
pub const MAX_MESSAGE: usize = 1 << 20;

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// The first message: the client's protocol version.
    Hello {
        /// [`PROTOCOL_VERSION`] of the client.
        version: u32,
    },
    /// A request, answered by a [`WorkerMessage::Reply`] with this id.
    Request {
        /// Chosen by the client, echoed in the reply.
        id: u64,
        /// What is asked.
        request: Request,
    },
}

/// What a client can ask of a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Do something to the VM.
    Command(VmCommand),
    /// The VM's state now ([`Reply::State`]).
    GetState,
    /// The shared framebuffer ([`Reply::Framebuffer`], memfd attached).
    GetFramebuffer,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The command was carried out.
    Done,
    /// The VM's state.
    State(RunState),
    /// The framebuffer memfd travels with this message.
    Framebuffer,
}

/// What a worker sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkerMessage {
    /// The answer to the client's hello.
    Hello {
        /// [`PROTOCOL_VERSION`] of the worker.
        version: u32,
        /// The id of the VM this worker runs.
        vm_id: String,
        /// The worker's process id.
        pid: u32,
        /// The VM's state now.
        state: RunState,
    },
    /// The hello was refused (the message says why); the worker closes.
    Refused(String),
    /// The answer to request `id`: a reply or what went wrong.
    Reply {
        /// The request's id.
        id: u64,
        /// The outcome.
        result: Result<Reply, String>,
    },
    /// Something happened to the VM.
    Event(VmEvent),
    /// The VM ended for good; the worker exits after this.
    Exiting {
        /// How it ended, in words (e.g. "The guest powered off").
        outcome: String,
        /// True when it did not end by the guest's or the user's choice.
        failure: bool,
    },
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The other side closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// The length prefix is over [`MAX_MESSAGE`].
    #[error("message of {0} bytes is over the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    /// The bytes are not a message of this protocol.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Checks a client's first message: `Ok` for a hello of this version, else
/// the reason to send back in [`WorkerMessage::Refused`].
pub fn check_hello(message: &ClientMessage) -> Result<(), String> {
    match message {
        ClientMessage::Hello { version } if *version == PROTOCOL_VERSION => Ok(()),
        ClientMessage::Hello { version } => Err(format!(
            "Protocol version {version} is not supported (this worker speaks {PROTOCOL_VERSION}): \
             use the same nestbox version for the worker and its clients"
        )),
        ClientMessage::Request { .. } => Err("The first message must be a hello".to_string()),
    }
}

/// `message` as one frame: length prefix and JSON.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(message).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if body.len() > MAX_MESSAGE {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Writes `message` as one frame.
pub fn write_message<T: Serialize>(out: &mut impl Write, message: &T) -> Result<(), FrameError> {
    out.write_all(&encode(message)?)?;
    out.flush()?;
    Ok(())
}

/// Reads one frame and decodes it. End of stream before the first byte is
/// [`FrameError::Closed`]; in the middle of a frame it is an I/O error.
pub fn read_message<T: for<'de> Deserialize<'de>>(input: &mut impl Read) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        match input.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// The serde shape of [`GuestInput`] (which lives in the `display` crate,
/// free of serde), used through `#[serde(with)]`.
#[derive(Serialize, Deserialize)]
#[serde(remote = "GuestInput")]
pub enum GuestInputDef {
    /// See [`GuestInput::Key`].
    Key {
        /// The evdev code.
        evdev: u16,
        /// Down or up.
        pressed: bool,
    },
    /// See [`GuestInput::PointerAbsolute`].
    PointerAbsolute {
        /// Horizontal.
        x: u16,
        /// Vertical.
        y: u16,
    },
    /// See [`GuestInput::PointerRelative`].
    PointerRelative {
        /// Right is positive.
        dx: i32,
        /// Down is positive.
        dy: i32,
    },
    /// See [`GuestInput::Buttons`].
    Buttons(u8),
    /// See [`GuestInput::Wheel`].
    Wheel(i32),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn round_trip<T>(message: &T) -> T
    where
        T: Serialize + for<'de> Deserialize<'de>,
    {
        let frame = encode(message).unwrap();
        let mut cursor = Cursor::new(frame);
        let back = read_message(&mut cursor).unwrap();
        assert_eq!(cursor.position() as usize, cursor.get_ref().len());
        back
    }

    #[test]
    fn test_every_request_round_trips() {
        let requests = [
            Request::GetState,
            Request::GetFramebuffer,
            Request::Command(VmCommand::Pause),
            Request::Command(VmCommand::SendKeys("ctrl+alt+del".into())),
            Request::Command(VmCommand::Screenshot("/tmp/a.png".into())),
            Request::Command(VmCommand::Input(GuestInput::Key {
                evdev: 1,
                pressed: true,
            })),
            Request::Command(VmCommand::Input(GuestInput::PointerAbsolute { x: 3, y: 4 })),
            Request::Command(VmCommand::Input(GuestInput::Wheel(-2))),
            Request::Command(VmCommand::SetVolume(42)),
            Request::Command(VmCommand::SetMute(true)),
        ];
        for (id, request) in requests.into_iter().enumerate() {
            let message = ClientMessage::Request {
                id: id as u64,
                request,
            };
            assert_eq!(round_trip(&message), message);
        }
    }

    #[test]
    fn test_worker_messages_round_trip() {
        let messages = [
            WorkerMessage::Hello {
                version: PROTOCOL_VERSION,
                vm_id: "t-1234".into(),
                pid: 42,
                state: RunState::Paused,
            },
            WorkerMessage::Reply {
                id: 7,
                result: Err("The VM is not running".into()),
            },
            WorkerMessage::Reply {
                id: 8,
                result: Ok(Reply::State(RunState::Failed("boom".into()))),
            },
            WorkerMessage::Event(VmEvent::State(RunState::Running)),
            WorkerMessage::Exiting {
                outcome: "The guest powered off".into(),
                failure: false,
            },
        ];
        for message in messages {
            assert_eq!(round_trip(&message), message);
        }
    }

    #[test]
    fn test_sound_commands_are_plain_json() {
        // What an older or newer peer sees on the wire.
        let frame = encode(&Request::Command(VmCommand::SetVolume(80))).unwrap();
        assert_eq!(&frame[4..], br#"{"Command":{"SetVolume":80}}"#);
        let frame = encode(&Request::Command(VmCommand::SetMute(false))).unwrap();
        assert_eq!(&frame[4..], br#"{"Command":{"SetMute":false}}"#);
        // A volume that does not fit a byte is malformed, not clamped.
        let text = br#"{"Command":{"SetVolume":300}}"#;
        let mut frame = (text.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(text);
        let err = read_message::<Request>(&mut Cursor::new(frame)).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
    }

    #[test]
    fn test_hello_of_another_version_is_refused() {
        assert_eq!(
            check_hello(&ClientMessage::Hello {
                version: PROTOCOL_VERSION
            }),
            Ok(())
        );
        let err = check_hello(&ClientMessage::Hello {
            version: PROTOCOL_VERSION + 1,
        })
        .unwrap_err();
        assert!(err.contains("not supported"), "{err}");
        let request = ClientMessage::Request {
            id: 1,
            request: Request::GetState,
        };
        assert!(check_hello(&request).is_err());
    }

    #[test]
    fn test_frame_is_little_endian_length_then_json() {
        let frame = encode(&ClientMessage::Hello { version: 1 }).unwrap();
        let body = br#"{"Hello":{"version":1}}"#;
        assert_eq!(&frame[..4], &(body.len() as u32).to_le_bytes());
        assert_eq!(&frame[4..], body);
    }

    #[test]
    fn test_several_frames_read_one_by_one() {
        let mut bytes = encode(&Request::GetState).unwrap();
        bytes.extend(encode(&Request::GetFramebuffer).unwrap());
        let mut cursor = Cursor::new(bytes);
        assert_eq!(
            read_message::<Request>(&mut cursor).unwrap(),
            Request::GetState
        );
        assert_eq!(
            read_message::<Request>(&mut cursor).unwrap(),
            Request::GetFramebuffer
        );
        assert!(matches!(
            read_message::<Request>(&mut cursor),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn test_oversized_length_is_refused_before_reading_the_body() {
        let mut bytes = ((MAX_MESSAGE + 1) as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        assert!(matches!(
            read_message::<Request>(&mut Cursor::new(bytes)),
            Err(FrameError::TooLarge(n)) if n == MAX_MESSAGE + 1
        ));
        let huge = VmCommand::SendKeys("a".repeat(MAX_MESSAGE));
        assert!(matches!(encode(&huge), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn test_garbage_is_malformed_not_a_panic() {
        for body in [&b"not json"[..], b"{\"Nope\":1}", b"\xff\xfe", b""] {
            let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
            bytes.extend_from_slice(body);
            assert!(matches!(
                read_message::<ClientMessage>(&mut Cursor::new(bytes)),
                Err(FrameError::Malformed(_))
            ));
        }
    }

    #[test]
    fn test_truncated_frame_is_an_io_error() {
        let frame = encode(&Request::GetState).unwrap();
        for cut in [2, frame.len() - 1] {
            assert!(matches!(
                read_message::<Request>(&mut Cursor::new(&frame[..cut])),
                Err(FrameError::Io(_))
            ));
        }
    }
}
