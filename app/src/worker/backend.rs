// SPDX-License-Identifier: Apache-2.0
//! The real [`VmBackend`]: one `nestbox vm-worker` process per running VM,
//! found by its socket. Starting spawns a worker and waits (bounded) for
//! its socket; VMs started by someone else (another GUI, the CLI, a GUI
//! that quit and came back) are attached to when their socket is seen. A
//! worker that dies becomes [`RunState::Failed`] with the end of its log.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use display::framebuffer::SharedFramebuffer;

use super::api::{RunState, VmBackend, VmCommand, VmEvent, Waker};
use super::client::{ConnectError, Ended, WorkerClient};
use super::liveness::{kill_worker, live_worker};
use super::paths::{LAST_FAILURE, SUSPENDED_STATE, log_tail, socket_ids, socket_path};
use crate::library::store::VmStore;

/// How long [`VmBackend::start`] waits for the worker's socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of the worker's log quoted when it fails.
const LOG_LINES: usize = 3;
/// How long killing a worker that does not answer may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `poll` looks for workers started by others.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// How long the state of a VM without a connected worker (looked up on
/// disk: its socket, its worker lock) is taken as it was; the UI asks for
/// every row on every frame, which must not touch the disk each time.
const STATE_TTL: Duration = Duration::from_secs(1);
/// The same while a worker starts (no socket yet): looked at sooner.
const STARTING_TTL: Duration = Duration::from_millis(100);
/// How long the memory of the live VMs is taken as it was.
const MEMORY_TTL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Inner {
    clients: HashMap<String, Arc<WorkerClient>>,
    framebuffers: HashMap<String, (u32, Arc<SharedFramebuffer>)>,
    ended: HashMap<String, RunState>,
    events: Vec<(String, VmEvent)>,
    last_scan: Option<Instant>,
    waker: Option<Waker>,
    /// States of VMs without a connected worker, as last looked up, and
    /// when (see [`STATE_TTL`]).
    looked_up: HashMap<String, (RunState, Instant)>,
    /// The memory of the live VMs, as last added up, and when.
    memory: Option<(u64, Instant)>,
}

/// Runs the library's VMs in worker processes.
pub struct WorkerBackend {
    store: VmStore,
    exe: PathBuf,
    inner: Mutex<Inner>,
    /// What commands answered on threads of their own (a suspend) said
    /// when they failed, for the next `poll`.
    late_errors: Arc<Mutex<Vec<(String, VmEvent)>>>,
}

impl WorkerBackend {
    /// A backend for the VMs of `store`, spawning workers from this very
    /// executable.
    pub fn new(store: VmStore) -> Result<Self, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("Cannot find the nestbox executable: {e}"))?;
        Ok(Self::with_exe(store, exe))
    }

    /// A backend spawning workers as `exe vm-worker <id>`.
    pub fn with_exe(store: VmStore, exe: PathBuf) -> Self {
        Self {
            store,
            exe,
            inner: Mutex::new(Inner::default()),
            late_errors: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection to VM `id`'s worker, connecting if a live socket is
    /// there; None if no worker runs it.
    pub fn client(&self, id: &str) -> Option<Arc<WorkerClient>> {
        self.refresh(id);
        if let Some(client) = self.lock().clients.get(id) {
            return Some(client.clone());
        }
        match WorkerClient::connect(&socket_path(id)) {
            Ok(client) if client.vm_id() == id => {
                let client = Arc::new(client);
                let mut inner = self.lock();
                if let Some(waker) = inner.waker.clone() {
                    client.set_waker(waker.clone());
                    // Events that came before the waker was set.
                    waker();
                }
                inner.ended.remove(id);
                inner.looked_up.remove(id);
                inner.clients.insert(id.to_string(), client.clone());
                Some(client)
            }
            Ok(client) => {
                log::warn!(
                    "the socket of VM {id} belongs to VM {}; ignoring it",
                    client.vm_id()
                );
                None
            }
            Err(ConnectError::NoSocket) => None,
            Err(ConnectError::Stale) => {
                let state = self.died(id, "its socket is stale");
                let mut inner = self.lock();
                inner.ended.insert(id.to_string(), state);
                inner.looked_up.remove(id);
                None
            }
            Err(e) => {
                // Most often a worker that is dying right now.
                log::debug!("VM {id}: {e}");
                None
            }
        }
    }

    /// The state of a worker that went away without a word.
    /// A VM with no worker that did not fail: suspended when its saved
    /// state is there, else stopped.
    fn at_rest(&self, id: &str) -> RunState {
        let suspended = self
            .store
            .dir(id)
            .is_ok_and(|dir| dir.join(SUSPENDED_STATE).is_file());
        if suspended {
            RunState::Suspended
        } else {
            RunState::Stopped
        }
    }

    fn died(&self, id: &str, why: &str) -> RunState {
        let tail = self
            .store
            .dir(id)
            .map(|dir| log_tail(&dir, LOG_LINES))
            .unwrap_or_default();
        let tail = if tail.is_empty() {
            String::new()
        } else {
            format!("; its log ends: {tail}")
        };
        RunState::Failed(format!("The VM's worker died ({why}){tail}"))
    }

    /// Turns a connection that ended into its final state (and an event).
    fn refresh(&self, id: &str) {
        let Some(client) = self.lock().clients.get(id).cloned() else {
            return;
        };
        let Some(ended) = client.ended() else { return };
        let state = match ended {
            Ended::Exited { failure: false, .. } => self.at_rest(id),
            Ended::Exited { outcome, .. } => RunState::Failed(outcome),
            Ended::Lost(why) => self.died(id, &why),
        };
        let mut inner = self.lock();
        inner.clients.remove(id);
        inner.framebuffers.remove(id);
        let events: Vec<_> = client
            .take_events()
            .into_iter()
            .map(|e| (id.to_string(), e))
            .collect();
        inner.events.extend(events);
        if client.state() != state {
            inner
                .events
                .push((id.to_string(), VmEvent::State(state.clone())));
        }
        inner.ended.insert(id.to_string(), state);
        // What was looked up before this worker ran is stale now.
        inner.looked_up.remove(id);
    }

    /// Waits up to `timeout` for VM `id`'s worker to end; returns its state
    /// then (still live if it did not end).
    pub fn wait_ended(&self, id: &str, timeout: Duration) -> RunState {
        if let Some(client) = self.client(id) {
            client.wait_ended(timeout);
        }
        self.state(id)
    }

    /// Ids of every VM with a worker socket (live or stale).
    pub fn workers(&self) -> Vec<String> {
        socket_ids()
    }
}

impl WorkerBackend {
    /// Forgets the states and memory looked up on disk (the library
    /// changed, a VM starts): the next questions look again.
    fn forget_looked_up(&self) {
        let mut inner = self.lock();
        inner.looked_up.clear();
        inner.memory = None;
    }

    /// VM `id`'s state, looked up: its worker's answer when one connects,
    /// else what the disk says.
    fn look_up_state(&self, id: &str) -> RunState {
        match self.client(id) {
            Some(client) => client.state(),
            None => {
                // How its last worker ended, when this process saw it end.
                if let Some(ended) = self.lock().ended.get(id).cloned() {
                    return ended;
                }
                // No answer on the socket, but a live process may hold the
                // VM: one starting (no socket yet) or one that cannot
                // answer (stopped or hung).
                let worker = self.store.dir(id).ok().and_then(|dir| live_worker(&dir));
                match worker {
                    Some(pid) if socket_path(id).exists() => RunState::NotResponding(pid),
                    Some(_) => RunState::Starting,
                    // Stopped, with an error if its last run ended on one.
                    None => self
                        .store
                        .dir(id)
                        .ok()
                        .and_then(|dir| std::fs::read_to_string(dir.join(LAST_FAILURE)).ok())
                        .filter(|message| !message.is_empty())
                        .map_or_else(|| self.at_rest(id), RunState::Failed),
                }
            }
        }
    }
}

impl VmBackend for WorkerBackend {
    fn state(&self, id: &str) -> RunState {
        self.refresh(id);
        let connected = self.lock().clients.get(id).cloned();
        if let Some(client) = connected {
            return client.state();
        }
        if let Some((state, at)) = self.lock().looked_up.get(id) {
            let ttl = match state {
                RunState::Starting | RunState::NotResponding(_) => STARTING_TTL,
                _ => STATE_TTL,
            };
            if at.elapsed() < ttl {
                return state.clone();
            }
        }
        let state = self.look_up_state(id);
        let mut inner = self.lock();
        if !inner.clients.contains_key(id) {
            inner
                .looked_up
                .insert(id.to_string(), (state.clone(), Instant::now()));
        }
        state
    }

    fn start(&mut self, id: &str) -> Result<(), String> {
        self.forget_looked_up();
        let dir = self.store.dir(id).map_err(|e| e.to_string())?;
        self.store.get(id).map_err(|e| e.to_string())?;
        if self.state(id).is_live() {
            return Err(format!("VM {id} is already running"));
        }
        self.lock().ended.remove(id);
        let mut child = Command::new(&self.exe)
            .arg("vm-worker")
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("Cannot start the VM's worker {}: {e}", self.exe.display()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        let failed = |why: String| {
            let tail = log_tail(&dir, LOG_LINES);
            let tail = if tail.is_empty() {
                "its log is empty".to_string()
            } else {
                tail
            };
            format!("The VM's worker failed to start ({why}): {tail}")
        };
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                // It may have run the VM to its end already: a clean end
                // is no failure.
                if status.success() {
                    return Ok(());
                }
                return Err(failed(format!("it exited with {status}")));
            }
            if let Some(client) = self.client(id) {
                // Reap the worker when it exits (it outlives this process
                // if this one quits first).
                let _ = std::thread::Builder::new()
                    .name("reaper".into())
                    .spawn(move || child.wait());
                drop(client);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "no socket within {} s",
                    START_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn command(&mut self, id: &str, command: VmCommand) -> Result<(), String> {
        let Some(client) = self.client(id) else {
            // A worker that cannot answer can still be killed.
            if let (VmCommand::Kill, RunState::NotResponding(pid)) = (&command, self.state(id)) {
                let dir = self.store.dir(id).map_err(|e| e.to_string())?;
                return kill_worker(&dir, id, pid, KILL_TIMEOUT);
            }
            return Err(format!("VM {id} is not running"));
        };
        if command == VmCommand::Suspend {
            // Saving a big VM takes seconds: the caller (the app's frame)
            // does not wait. The worker's state events say when it is
            // done; a failure comes back through `poll`.
            let errors = self.late_errors.clone();
            let waker = self.lock().waker.clone();
            let id = id.to_string();
            std::thread::Builder::new()
                .name(format!("suspend {id}"))
                .spawn(move || {
                    if let Err(e) = client.command(VmCommand::Suspend) {
                        errors
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((id, VmEvent::Error(e)));
                        if let Some(waker) = waker {
                            waker();
                        }
                    }
                })
                .map_err(|e| format!("Cannot suspend VM: {e}"))?;
            return Ok(());
        }
        client.command(command)
    }

    fn framebuffer(&mut self, id: &str) -> Option<Arc<SharedFramebuffer>> {
        let client = self.client(id)?;
        if let Some((pid, fb)) = self.lock().framebuffers.get(id)
            && *pid == client.pid()
        {
            return Some(fb.clone());
        }
        match client.framebuffer() {
            Ok(fb) => {
                let fb = Arc::new(fb);
                self.lock()
                    .framebuffers
                    .insert(id.to_string(), (client.pid(), fb.clone()));
                Some(fb)
            }
            Err(e) => {
                log::warn!("VM {id}: {e}");
                None
            }
        }
    }

    fn poll(&mut self) -> Vec<(String, VmEvent)> {
        let scan = self
            .lock()
            .last_scan
            .is_none_or(|t| t.elapsed() >= SCAN_INTERVAL);
        if scan {
            self.lock().last_scan = Some(Instant::now());
            for id in socket_ids() {
                let known = self.lock().clients.contains_key(&id);
                if !known && self.client(&id).is_some() {
                    let state = self.state(&id);
                    self.lock().events.push((id, VmEvent::State(state)));
                }
            }
        }
        let ids: Vec<String> = self.lock().clients.keys().cloned().collect();
        for id in ids {
            let client = self.lock().clients.get(&id).cloned();
            if let Some(client) = client {
                let events: Vec<_> = client
                    .take_events()
                    .into_iter()
                    .map(|e| (id.clone(), e))
                    .collect();
                self.lock().events.extend(events);
            }
            self.refresh(&id);
        }
        let late = std::mem::take(&mut *self.late_errors.lock().unwrap_or_else(|e| e.into_inner()));
        let mut events = std::mem::take(&mut self.lock().events);
        events.extend(late);
        events
    }

    fn set_waker(&mut self, waker: Waker) {
        let mut inner = self.lock();
        for client in inner.clients.values() {
            client.set_waker(waker.clone());
        }
        inner.waker = Some(waker);
    }

    fn rescan(&mut self) {
        self.lock().last_scan = None;
        self.forget_looked_up();
    }

    fn running_memory_mib(&self) -> u64 {
        if let Some((mib, at)) = self.lock().memory
            && at.elapsed() < MEMORY_TTL
        {
            return mib;
        }
        let mut ids: Vec<String> = self.lock().clients.keys().cloned().collect();
        for id in socket_ids() {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let mib = ids
            .into_iter()
            .filter(|id| self.state(id).is_live())
            .filter_map(|id| self.store.get(&id).ok())
            .map(|vm| vm.memory_mib)
            .sum();
        self.lock().memory = Some((mib, Instant::now()));
        mib
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::config::{Boot, Created, SCHEMA, VmFile};
    use crate::library::testdir::TestDir;
    use crate::worker::liveness::WorkerLock;

    #[test]
    fn test_state_is_looked_up_on_disk_at_most_once_a_ttl_and_again_after_a_rescan() {
        // Arrange: a stopped VM (no socket, no worker).
        let dir = TestDir::new("backend-state");
        let store = VmStore::new(dir.path().join("vms"));
        let vm = VmFile {
            schema: SCHEMA,
            name: "Quiet".to_string(),
            profile: "linux-kernel".to_string(),
            memory_mib: 64,
            vcpus: 1,
            os: "Linux".to_string(),
            network: Default::default(),
            sound: Default::default(),
            allow_overcommit: false,
            suspend_on_host_shutdown: false,
            created: Created::UnixSeconds(1),
            boot: Boot::Kernel {
                kernel: dir.path().join("vmlinuz"),
                initrd: None,
                cmdline: String::new(),
            },
            display: Default::default(),
            disks: Vec::new(),
        };
        let id = store.create(&vm).unwrap();
        let mut backend = WorkerBackend::with_exe(store.clone(), PathBuf::new());

        // Act: a worker appears (it holds the VM's lock, no socket yet).
        let before = backend.state(&id);
        let lock = WorkerLock::claim(&store.dir(&id).unwrap()).unwrap();
        let within_ttl = backend.state(&id);
        backend.rescan();
        let after_rescan = backend.state(&id);
        drop(lock);
        std::thread::sleep(STARTING_TTL + Duration::from_millis(20));
        let after_ttl = backend.state(&id);

        // Assert: the UI's every-frame question did not look again until
        // the library changed or the time was up.
        assert_eq!(before, RunState::Stopped);
        assert_eq!(within_ttl, RunState::Stopped);
        assert_eq!(after_rescan, RunState::Starting);
        assert_eq!(after_ttl, RunState::Stopped);
    }
}
