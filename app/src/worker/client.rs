// SPDX-License-Identifier: Apache-2.0
//! One connection to a VM worker: the hello, requests with their replies
//! (the framebuffer memfd included), and the events the worker pushes,
//! gathered by a reader thread so nothing here blocks for long.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use display::framebuffer::SharedFramebuffer;

use super::api::{RunState, VmCommand, VmEvent, Waker};
use super::protocol::{
    ClientMessage, FrameError, PROTOCOL_VERSION, Reply, Request, WorkerMessage, read_message,
    write_message,
};
use super::sys::FdReader;

/// How long the hello may take.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for its reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a suspend may take to write the VM's state.
const SUSPEND_TIMEOUT: Duration = Duration::from_secs(300);
/// Events kept for a caller that does not poll (the oldest go first).
const MAX_EVENTS: usize = 1024;

/// Why there is no connection.
#[derive(Debug)]
pub enum ConnectError {
    /// No socket: no worker runs this VM.
    NoSocket,
    /// A socket nobody listens on: its worker died.
    Stale,
    /// The worker answered, but not as a worker of this version does.
    Refused(String),
    /// Anything else.
    Io(io::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::NoSocket => write!(f, "The VM is not running"),
            ConnectError::Stale => write!(f, "The VM's worker is gone (its socket is stale)"),
            ConnectError::Refused(why) => {
                write!(f, "The VM's worker refused the connection: {why}")
            }
            ConnectError::Io(e) => write!(f, "Cannot talk to the VM's worker: {e}"),
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The worker said the VM ended, then closed.
    Exited {
        /// How, in words.
        outcome: String,
        /// Not by the guest's or the user's choice.
        failure: bool,
    },
    /// The connection broke without a word (the worker died).
    Lost(String),
}

#[derive(Default)]
struct Inner {
    state: Option<RunState>,
    waiting: HashSet<u64>,
    replies: HashMap<u64, (Result<Reply, String>, Option<OwnedFd>)>,
    events: Vec<VmEvent>,
    exiting: Option<(String, bool)>,
    closed: Option<String>,
}

#[derive(Default)]
struct ClientState {
    inner: Mutex<Inner>,
    changed: Condvar,
    /// Told after each event and when the connection ends.
    waker: Mutex<Option<Waker>>,
}

impl ClientState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(waker) = waker {
            waker();
        }
    }
}

/// A live connection to one worker.
pub struct WorkerClient {
    vm_id: String,
    pid: u32,
    writer: Mutex<UnixStream>,
    shared: Arc<ClientState>,
    next_id: AtomicU64,
}

impl WorkerClient {
    /// Connects to the worker listening on `socket` and says hello.
    pub fn connect(socket: &Path) -> Result<Self, ConnectError> {
        let stream = match UnixStream::connect(socket) {
            Ok(stream) => stream,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ConnectError::NoSocket),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(ConnectError::Stale);
            }
            Err(e) => return Err(ConnectError::Io(e)),
        };
        let io = ConnectError::Io;
        stream.set_read_timeout(Some(HELLO_TIMEOUT)).map_err(io)?;
        let mut writer = stream.try_clone().map_err(io)?;
        let mut reader = FdReader::new(stream);
        let frame_err = |e: FrameError| match e {
            FrameError::Io(e) => ConnectError::Io(e),
            other => ConnectError::Refused(other.to_string()),
        };
        write_message(
            &mut writer,
            &ClientMessage::Hello {
                version: PROTOCOL_VERSION,
            },
        )
        .map_err(frame_err)?;
        let (vm_id, pid, state) = match read_message(&mut reader).map_err(frame_err)? {
            WorkerMessage::Hello {
                version,
                vm_id,
                pid,
                state,
            } if version == PROTOCOL_VERSION => (vm_id, pid, state),
            WorkerMessage::Refused(why) => return Err(ConnectError::Refused(why)),
            other => {
                return Err(ConnectError::Refused(format!(
                    "unexpected answer to hello: {other:?}"
                )));
            }
        };
        reader.stream().set_read_timeout(None).map_err(io)?;
        let shared = Arc::new(ClientState::default());
        shared.lock().state = Some(state);
        {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("worker-{vm_id}"))
                .spawn(move || read_loop(reader, &shared))
                .map_err(io)?;
        }
        Ok(Self {
            vm_id,
            pid,
            writer: Mutex::new(writer),
            shared,
            next_id: AtomicU64::new(1),
        })
    }

    /// The id of the VM the worker runs.
    pub fn vm_id(&self) -> &str {
        &self.vm_id
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The VM's state as last reported (what the connection ended with,
    /// once it has).
    pub fn state(&self) -> RunState {
        self.shared
            .lock()
            .state
            .clone()
            .unwrap_or(RunState::Starting)
    }

    /// How the connection ended; None while it is up.
    pub fn ended(&self) -> Option<Ended> {
        let inner = self.shared.lock();
        let why = inner.closed.clone()?;
        Some(match inner.exiting.clone() {
            Some((outcome, failure)) => Ended::Exited { outcome, failure },
            None => Ended::Lost(why),
        })
    }

    /// Waits up to `timeout` for the connection to end.
    pub fn wait_ended(&self, timeout: Duration) -> Option<Ended> {
        let inner = self.shared.lock();
        let _inner = self
            .shared
            .changed
            .wait_timeout_while(inner, timeout, |i| i.closed.is_none())
            .unwrap_or_else(|e| e.into_inner());
        drop(_inner);
        self.ended()
    }

    /// Waits up to `timeout` until the state satisfies `done` or the
    /// connection ends; returns the state then.
    pub fn wait_state(&self, timeout: Duration, done: impl Fn(&RunState) -> bool) -> RunState {
        let inner = self.shared.lock();
        let inner = self
            .shared
            .changed
            .wait_timeout_while(inner, timeout, |i| {
                i.closed.is_none() && !i.state.as_ref().is_some_and(&done)
            })
            .unwrap_or_else(|e| e.into_inner())
            .0;
        inner.state.clone().unwrap_or(RunState::Starting)
    }

    /// Calls `waker` after each event the worker sends and when the
    /// connection ends.
    pub fn set_waker(&self, waker: Waker) {
        *self.shared.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(waker);
    }

    /// Events since the last call, oldest first.
    pub fn take_events(&self) -> Vec<VmEvent> {
        std::mem::take(&mut self.shared.lock().events)
    }

    fn send(&self, request: Request, wait: bool) -> Result<u64, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(why) = &self.shared.lock().closed {
            return Err(format!("The VM's worker is gone ({why})"));
        }
        if wait {
            self.shared.lock().waiting.insert(id);
        }
        let message = ClientMessage::Request { id, request };
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        write_message(&mut *writer, &message).map_err(|e| {
            self.shared.lock().waiting.remove(&id);
            format!("Cannot talk to the VM's worker: {e}")
        })?;
        Ok(id)
    }

    /// Sends `request` and waits up to `timeout` for its reply.
    pub fn request(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<(Reply, Option<OwnedFd>), String> {
        let id = self.send(request, true)?;
        let deadline = Instant::now() + timeout;
        let mut inner = self.shared.lock();
        loop {
            if let Some((result, fd)) = inner.replies.remove(&id) {
                inner.waiting.remove(&id);
                return result.map(|reply| (reply, fd));
            }
            if let Some(why) = inner.closed.clone() {
                inner.waiting.remove(&id);
                return Err(format!("The VM's worker is gone ({why})"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                inner.waiting.remove(&id);
                return Err(format!(
                    "The VM's worker did not answer within {} s",
                    timeout.as_secs()
                ));
            }
            inner = self
                .shared
                .changed
                .wait_timeout(inner, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Carries out `command`; input is sent without waiting for the answer.
    pub fn command(&self, command: VmCommand) -> Result<(), String> {
        if matches!(command, VmCommand::Input(_)) {
            return self.send(Request::Command(command), false).map(|_| ());
        }
        let timeout = match command {
            VmCommand::Suspend => SUSPEND_TIMEOUT,
            _ => REPLY_TIMEOUT,
        };
        self.request(Request::Command(command), timeout).map(|_| ())
    }

    /// The worker's shared framebuffer, mapped.
    pub fn framebuffer(&self) -> Result<SharedFramebuffer, String> {
        let (_, fd) = self.request(Request::GetFramebuffer, REPLY_TIMEOUT)?;
        let fd = fd.ok_or("The VM's worker sent no framebuffer")?;
        SharedFramebuffer::from_fd(fd).map_err(|e| format!("Cannot map the VM's screen: {e}"))
    }
}

impl Drop for WorkerClient {
    fn drop(&mut self) {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        // Ends the reader thread too.
        let _ = writer.shutdown(std::net::Shutdown::Both);
    }
}

fn read_loop(mut reader: FdReader, shared: &ClientState) {
    let why = loop {
        let message = match read_message::<WorkerMessage>(&mut reader) {
            Ok(message) => message,
            Err(FrameError::Closed) => break "the connection closed".to_string(),
            Err(e) => break e.to_string(),
        };
        let mut inner = shared.lock();
        // Whether a poller has something new (a waiting caller is woken
        // by the condition variable instead).
        let mut news = true;
        match message {
            WorkerMessage::Reply { id, result } => {
                let fd = if result == Ok(Reply::Framebuffer) {
                    reader.take_fd()
                } else {
                    None
                };
                if inner.waiting.contains(&id) {
                    inner.replies.insert(id, (result, fd));
                    news = false;
                } else if let Err(e) = result {
                    inner.events.push(VmEvent::Error(e));
                } else {
                    news = false;
                }
            }
            WorkerMessage::Event(event) => {
                if let VmEvent::State(state) = &event {
                    inner.state = Some(state.clone());
                }
                if inner.events.len() >= MAX_EVENTS {
                    inner.events.remove(0);
                }
                inner.events.push(event);
            }
            WorkerMessage::Exiting { outcome, failure } => {
                inner.exiting = Some((outcome, failure));
            }
            WorkerMessage::Refused(why) => {
                inner.closed = Some(why);
            }
            WorkerMessage::Hello { .. } => news = false,
        }
        let done = inner.closed.is_some();
        drop(inner);
        shared.changed.notify_all();
        if news {
            shared.wake();
        }
        if done {
            return;
        }
    };
    shared.lock().closed = Some(why);
    shared.changed.notify_all();
    shared.wake();
}
