// SPDX-License-Identifier: Apache-2.0
//! The worker's side of its connections: every client gets a session
//! thread that checks its hello and answers its requests, and the [`Hub`]
//! pushes events to all of them. A client that sends a malformed or
//! oversized message, or stops reading, is dropped; the VM and the other
//! clients carry on.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use display::framebuffer::SharedFramebuffer;

use super::api::{RunState, VmCommand, VmEvent};
use super::protocol::{
    ClientMessage, FrameError, PROTOCOL_VERSION, Reply, Request, WorkerMessage, check_hello,
    encode, read_message,
};
use super::sys::send_with_fd;
use crate::screen::{LiveVm, save_screenshot};
use crate::viewer::VmLink;

/// How long a write to one client may block before it is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// One connected client's sending end.
type Writer = Arc<Mutex<UnixStream>>;

/// The VM's state and the connected clients.
pub struct Hub {
    vm_id: String,
    state: Mutex<RunState>,
    clients: Mutex<Vec<(u64, Writer)>>,
    next_client: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// A hub for VM `vm_id`, which is starting.
    pub fn new(vm_id: &str) -> Self {
        Self {
            vm_id: vm_id.to_string(),
            state: Mutex::new(RunState::Starting),
            clients: Mutex::new(Vec::new()),
            next_client: AtomicU64::new(1),
        }
    }

    /// The VM's state now.
    pub fn state(&self) -> RunState {
        lock(&self.state).clone()
    }

    /// Records a new state and tells every client, if it changed.
    pub fn set_state(&self, state: RunState) {
        {
            let mut current = lock(&self.state);
            if *current == state {
                return;
            }
            *current = state.clone();
        }
        log::info!("state: {state:?}");
        self.broadcast(&WorkerMessage::Event(VmEvent::State(state)));
    }

    /// Tells every client that something went wrong.
    pub fn error(&self, message: String) {
        log::warn!("{message}");
        self.broadcast(&WorkerMessage::Event(VmEvent::Error(message)));
    }

    /// Sends `message` to every client, dropping those that fail.
    pub fn broadcast(&self, message: &WorkerMessage) {
        let frame = match encode(message) {
            Ok(frame) => frame,
            Err(e) => {
                log::warn!("cannot encode an event: {e}");
                return;
            }
        };
        let mut clients = lock(&self.clients);
        clients.retain(|(id, writer)| {
            let mut stream = lock(writer);
            match std::io::Write::write_all(&mut *stream, &frame) {
                Ok(()) => true,
                Err(e) => {
                    log::info!("client {id}: dropped ({e})");
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    false
                }
            }
        });
    }

    /// Answers a client's hello and registers it for events, atomically
    /// with respect to broadcasts so it misses no state change.
    fn register(&self, writer: &Writer) -> Result<u64, FrameError> {
        let mut clients = lock(&self.clients);
        let hello = WorkerMessage::Hello {
            version: PROTOCOL_VERSION,
            vm_id: self.vm_id.clone(),
            pid: std::process::id(),
            state: self.state(),
        };
        send(writer, &hello)?;
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        clients.push((id, writer.clone()));
        Ok(id)
    }

    fn unregister(&self, id: u64) {
        lock(&self.clients).retain(|(c, _)| *c != id);
    }
}

fn send(writer: &Writer, message: &WorkerMessage) -> Result<(), FrameError> {
    let frame = encode(message)?;
    std::io::Write::write_all(&mut *lock(writer), &frame)?;
    Ok(())
}

/// What a session needs from the worker.
#[derive(Clone)]
pub struct Worker {
    /// States and clients.
    pub hub: Arc<Hub>,
    /// The VM.
    pub live: Arc<LiveVm>,
    /// Its screen.
    pub framebuffer: Arc<SharedFramebuffer>,
    /// Where a suspend saves the VM's state.
    pub suspend_to: std::path::PathBuf,
}

/// Serves one client until it disconnects or misbehaves.
pub fn serve_client(stream: UnixStream, worker: Worker) {
    if let Err(e) = session(stream, &worker) {
        log::info!("client: {e}");
    }
}

fn session(stream: UnixStream, worker: &Worker) -> Result<(), FrameError> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let writer: Writer = Arc::new(Mutex::new(stream));
    let hello: ClientMessage = read_message(&mut reader)?;
    if let Err(reason) = check_hello(&hello) {
        send(&writer, &WorkerMessage::Refused(reason.clone()))?;
        return Err(FrameError::Malformed(reason));
    }
    let client = worker.hub.register(&writer)?;
    let result = requests(&mut reader, &writer, worker);
    worker.hub.unregister(client);
    let _ = lock(&writer).shutdown(std::net::Shutdown::Both);
    match result {
        Err(FrameError::Closed) => Ok(()),
        other => other,
    }
}

fn requests(
    reader: &mut BufReader<UnixStream>,
    writer: &Writer,
    worker: &Worker,
) -> Result<(), FrameError> {
    loop {
        let (id, request) = match read_message(reader)? {
            ClientMessage::Request { id, request } => (id, request),
            ClientMessage::Hello { .. } => {
                return Err(FrameError::Malformed("a second hello".to_string()));
            }
        };
        if request == Request::GetFramebuffer {
            let frame = encode(&WorkerMessage::Reply {
                id,
                result: Ok(Reply::Framebuffer),
            })?;
            let stream = lock(writer);
            send_with_fd(&stream, &frame, worker.framebuffer.fd())?;
            continue;
        }
        let result = handle(request, worker);
        send(writer, &WorkerMessage::Reply { id, result })?;
    }
}

/// Carries out one request (all but the framebuffer).
fn handle(request: Request, worker: &Worker) -> Result<Reply, String> {
    let command = match request {
        Request::GetState => return Ok(Reply::State(worker.hub.state())),
        Request::GetFramebuffer => return Ok(Reply::Framebuffer),
        Request::Command(command) => command,
    };
    let live = &worker.live;
    let hub = &worker.hub;
    match command {
        VmCommand::Pause => {
            live.pause()?;
            hub.set_state(RunState::Paused);
        }
        VmCommand::Resume => {
            live.resume()?;
            hub.set_state(RunState::Running);
        }
        VmCommand::PowerButton => live.power_button()?,
        VmCommand::Reset => live.reset()?,
        VmCommand::Kill => live.stop_current(),
        VmCommand::Suspend => {
            let saved = live.suspend(&worker.suspend_to)?;
            log::info!("suspended: {saved}");
            hub.set_state(RunState::Suspended);
        }
        VmCommand::Input(event) => live.input(event),
        VmCommand::SendKeys(chord) => live.send_keys(&chord)?,
        VmCommand::Screenshot(path) => {
            save_screenshot(live, &path).map_err(|e| format!("{e:#}"))?;
        }
        VmCommand::SetVolume(percent) => live.set_volume(percent)?,
        VmCommand::SetMute(muted) => live.set_muted(muted)?,
        VmCommand::ChangeCd { cd, image } => live.change_cd(cd, image)?,
        VmCommand::SetDisplaySize { width, height } => live.set_display_size(width, height)?,
    }
    Ok(Reply::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::testdir::TestDir;
    use crate::worker::client::WorkerClient;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    /// A worker with no VM attached (as while it starts), serving `socket`.
    fn fake_worker(socket: &std::path::Path) -> Worker {
        let worker = Worker {
            hub: Arc::new(Hub::new("fake-0001")),
            live: Arc::new(LiveVm::default()),
            framebuffer: Arc::new(SharedFramebuffer::create(64, 32).unwrap()),
            suspend_to: socket.with_extension("state"),
        };
        let listener = UnixListener::bind(socket).unwrap();
        let served = worker.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let worker = served.clone();
                std::thread::spawn(move || serve_client(stream, worker));
            }
        });
        worker
    }

    #[test]
    fn test_clients_get_state_events_and_the_framebuffer() {
        let dir = TestDir::new("hub-clients");
        let socket = dir.path().join("w.sock");
        let worker = fake_worker(&socket);
        let a = WorkerClient::connect(&socket).unwrap();
        let b = WorkerClient::connect(&socket).unwrap();
        assert_eq!(a.vm_id(), "fake-0001");
        assert_eq!(a.state(), RunState::Starting);

        worker.hub.set_state(RunState::Running);
        for client in [&a, &b] {
            let state = client.wait_state(Duration::from_secs(5), |s| *s == RunState::Running);
            assert_eq!(state, RunState::Running);
            assert_eq!(
                client.take_events(),
                vec![VmEvent::State(RunState::Running)]
            );
        }

        // Commands a VM that is not up cannot carry out say so.
        let err = a.command(VmCommand::Pause).unwrap_err();
        assert!(err.contains("not running"), "{err}");
        let err = a.command(VmCommand::SendKeys("nokey".into())).unwrap_err();
        assert!(err.contains("unknown key"), "{err}");
        let err = a.command(VmCommand::SetMute(true)).unwrap_err();
        assert!(err.contains("not running"), "{err}");
        let err = a.command(VmCommand::SetVolume(101)).unwrap_err();
        assert!(err.contains("over 100"), "{err}");

        // The framebuffer arrives as a memfd mapping the same pixels.
        let fb = b.framebuffer().unwrap();
        assert_eq!(fb.capacity(), worker.framebuffer.capacity());
        worker
            .framebuffer
            .set_mode(4, 2, display::framebuffer::PixelFormat::Rgbx8888)
            .unwrap();
        let info = fb.info().unwrap();
        assert_eq!((info.width, info.height), (4, 2));
    }

    #[test]
    fn test_a_bad_client_is_dropped_and_others_carry_on() {
        let dir = TestDir::new("hub-bad");
        let socket = dir.path().join("w.sock");
        let worker = fake_worker(&socket);
        let good = WorkerClient::connect(&socket).unwrap();

        let mut bad = UnixStream::connect(&socket).unwrap();
        bad.write_all(&5u32.to_le_bytes()).unwrap();
        bad.write_all(b"hello").unwrap();
        bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut byte = [0u8; 1];
        assert!(matches!(bad.read(&mut byte), Ok(0) | Err(_)));

        worker.hub.set_state(RunState::Paused);
        let state = good.wait_state(Duration::from_secs(5), |s| *s == RunState::Paused);
        assert_eq!(state, RunState::Paused);
        assert!(good.ended().is_none());
    }

    #[test]
    fn test_a_client_sees_how_the_vm_ended() {
        let dir = TestDir::new("hub-end");
        let socket = dir.path().join("w.sock");
        let worker = fake_worker(&socket);
        let client = WorkerClient::connect(&socket).unwrap();
        worker.hub.broadcast(&WorkerMessage::Exiting {
            outcome: "The guest powered off".into(),
            failure: false,
        });
        // The worker exits: its end of every connection closes.
        for (_, writer) in lock(&worker.hub.clients).iter() {
            let _ = lock(writer).shutdown(std::net::Shutdown::Both);
        }
        let ended = client.wait_ended(Duration::from_secs(5));
        assert_eq!(
            ended,
            Some(crate::worker::client::Ended::Exited {
                outcome: "The guest powered off".into(),
                failure: false
            })
        );
    }
}
