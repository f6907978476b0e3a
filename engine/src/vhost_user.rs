// SPDX-License-Identifier: Apache-2.0
//! Serving a Nestbox virtio device over vhost-user (the `vhost-user-backend`
//! crate): the front-end (QEMU, or a future Nestbox worker) owns the
//! transport and the guest's memory, and we run the same device code on
//! the vrings it hands us. This is both the per-device sandbox of the
//! design and how each device is tested against Linux's own driver.
//!
//! One daemon serves one front-end connection on a UNIX socket; the
//! device's queue work runs on the daemon's vring thread.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, TryLockError};
use std::time::{Duration, Instant};

use vhost::vhost_user::GpuBackend;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{
    VhostUserBackend, VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT,
};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

use virtio_queue::QueueT;

use crate::devices::virtio::device_core::QueueDevice;
use crate::devices::virtio::gpu::Gpu;
use crate::devices::virtio::gpu::vhost_user_display::FrontendSink;
use crate::devices::virtio::net::{Net, RxOutcome};
use crate::devices::virtio::{DeviceInfo, VirtioDevice};
use crate::memory::GuestMemoryMmap;
use crate::net::passt::Passt;
use std::os::fd::AsRawFd;

pub mod relay;

/// The longest a rate-limited device's thread waits within one event.
const RETRY_BUDGET: Duration = Duration::from_secs(2);

/// The vhost-user feature bit that enables protocol-feature negotiation.
const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// Bits QEMU 10's `vhost-user-gpu` sets in SET_FEATURES whatever the
/// back-end offered (it does not mask its own virtio-gpu features by the
/// back-end's), which the vhost-user-backend crate refuses unless offered:
/// VIRTIO_GPU_F_RESOURCE_UUID (2), VIRTIO_RING_F_INDIRECT_DESC (28),
/// VIRTIO_RING_F_EVENT_IDX (29) and VIRTIO_F_RING_RESET (40). The vrings
/// handle indirect descriptors and event indices; Linux's virtio_gpu resets
/// no queue and assigns UUIDs only to exported buffers, which the device
/// refuses.
const QEMU_GPU_FEATURES: u64 = (1 << 2) | (1 << 28) | (1 << 29) | (1 << 40);

/// Errors serving a device.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    /// The daemon could not be created.
    #[error("Cannot create the vhost-user daemon: {0}")]
    Daemon(String),
    /// Serving the socket failed.
    #[error("vhost-user service on {path} failed: {detail}")]
    Serve {
        /// The socket.
        path: String,
        /// What went wrong.
        detail: String,
    },
}

/// A virtio device behind vhost-user.
///
/// The front-end's requests (on the daemon's main thread) never wait for
/// the device while the vring thread serves it: the configuration space is
/// answered from a copy taken after every change, and a configuration
/// write that finds the device busy is applied when the vring thread is
/// done. A GPU's vring thread may wait on the front-end (QEMU answers the
/// display socket on its main loop), while the front-end, its main loop
/// stopped, waits for a GET_CONFIG answer (a guest reading the
/// configuration space): waiting for the device there would deadlock.
pub struct Backend<D: QueueDevice> {
    device: Mutex<D>,
    mem: RwLock<Option<GuestMemoryAtomic<GuestMemoryMmap>>>,
    event_idx: AtomicBool,
    // Wakes the vring thread so it exits when the front-end disconnects.
    exit: (EventConsumer, EventNotifier),
    // A GPU's display: where VHOST_USER_GPU_SET_SOCKET's socket goes.
    display: Option<Arc<FrontendSink>>,
    // Feature bits offered at the vhost-user level only (see
    // QEMU_GPU_FEATURES).
    extra_features: u64,
    // The configuration space as last read from the device.
    config: Mutex<Vec<u8>>,
    // Configuration writes waiting for the device: (offset, bytes).
    pending_config: Mutex<Vec<(u32, Vec<u8>)>>,
}

/// The bytes of configuration space kept in [`Backend`]'s copy.
const CONFIG_COPY_LEN: usize = 256;
/// How long a configuration write waits for a busy device before it is
/// left for the vring thread.
const CONFIG_WRITE_WAIT: Duration = Duration::from_millis(50);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl<D: QueueDevice> Backend<D> {
    /// Serves `device`.
    pub fn new(device: D) -> std::io::Result<Self> {
        let backend = Self {
            device: Mutex::new(device),
            mem: RwLock::new(None),
            event_idx: AtomicBool::new(false),
            exit: new_event_consumer_and_notifier(EventFlag::NONBLOCK)?,
            display: None,
            extra_features: 0,
            config: Mutex::new(vec![0; CONFIG_COPY_LEN]),
            pending_config: Mutex::new(Vec::new()),
        };
        backend.refresh_config(&backend.device());
        Ok(backend)
    }

    fn device(&self) -> MutexGuard<'_, D> {
        lock(&self.device)
    }

    /// Copies the configuration space of `device`.
    fn refresh_config(&self, device: &D) {
        let mut copy = vec![0u8; CONFIG_COPY_LEN];
        device.read_config(0, &mut copy);
        *lock(&self.config) = copy;
    }

    /// Runs `f` on the device, then applies waiting configuration writes
    /// and refreshes the configuration copy.
    fn with_device<T>(&self, f: impl FnOnce(&mut D) -> T) -> T {
        let mut device = self.device();
        let result = f(&mut device);
        for (offset, data) in std::mem::take(&mut *lock(&self.pending_config)) {
            device.write_config(u64::from(offset), &data);
        }
        self.refresh_config(&device);
        result
    }

    fn serve(
        &self,
        index: u16,
        vring: &VringRwLock<GuestMemoryAtomic<GuestMemoryMmap>>,
    ) -> std::io::Result<()> {
        let mem = self
            .mem
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(GuestMemoryAtomic::memory);
        let Some(mem) = mem else {
            return Ok(());
        };
        // A rate-limited device may leave requests waiting; this thread is
        // the device's own, so it waits for the limit here, for at most
        // RETRY_BUDGET per event.
        let deadline = Instant::now() + RETRY_BUDGET;
        let event_idx = self.event_idx.load(Ordering::Relaxed);
        loop {
            let (used, notify) = {
                let mut state = vring.get_mut();
                let queue = state.get_queue_mut();
                self.with_device(|device| {
                    let used = match device.serve(index, &mem, queue) {
                        Ok(used) => used,
                        Err(e) => {
                            log::warn!("vhost-user {}: queue {index} stopped: {e}", device.name());
                            false
                        }
                    };
                    // Without EVENT_IDX every completion interrupts; with
                    // it, the driver's used_event decides. On an unreadable
                    // used_event, interrupt rather than stall.
                    let notify = used
                        && (!event_idx
                            || device.wants_interrupt(index, &mem, queue).unwrap_or(true));
                    (used, notify)
                })
            };
            if notify {
                vring.signal_used_queue()?;
            }
            // (Each lock of the device ends before the next one.)
            let retry_at = self.device().retry_at();
            match retry_at {
                Some(at) if at < deadline => {
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                }
                _ => {
                    let budget = self.device().poll_budget(index);
                    if !(used && wait_for_avail(vring, &mem, budget)) {
                        return Ok(());
                    }
                }
            }
        }
    }
}

impl<D: QueueDevice> VhostUserBackend for Backend<D> {
    type Bitmap = ();
    type Vring = VringRwLock<GuestMemoryAtomic<GuestMemoryMmap>>;

    fn num_queues(&self) -> usize {
        self.device().queue_max_sizes().len()
    }

    fn max_queue_size(&self) -> usize {
        self.device()
            .queue_max_sizes()
            .first()
            .copied()
            .map_or(0, usize::from)
    }

    fn features(&self) -> u64 {
        self.device().features() | VHOST_USER_F_PROTOCOL_FEATURES | self.extra_features
    }

    fn acked_features(&self, features: u64) {
        self.with_device(|d| d.ack_features(features));
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let copy = lock(&self.config);
        let start = (offset as usize).min(copy.len());
        let end = start.saturating_add(size as usize).min(copy.len());
        let mut data = copy.get(start..end).map(<[u8]>::to_vec).unwrap_or_default();
        data.resize(size.min(4096) as usize, 0);
        data
    }

    fn set_config(&self, offset: u32, buf: &[u8]) -> std::io::Result<()> {
        // Devices ignore what they do not let the driver write (the GPU's
        // events_clear is the one writable field so far).
        let deadline = Instant::now() + CONFIG_WRITE_WAIT;
        loop {
            match self.device.try_lock() {
                Ok(mut device) => {
                    device.write_config(u64::from(offset), buf);
                    self.refresh_config(&device);
                    return Ok(());
                }
                Err(TryLockError::Poisoned(e)) => {
                    let mut device = e.into_inner();
                    device.write_config(u64::from(offset), buf);
                    self.refresh_config(&device);
                    return Ok(());
                }
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TryLockError::WouldBlock) => {
                    lock(&self.pending_config).push((offset, buf.to_vec()));
                    return Ok(());
                }
            }
        }
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        *self.mem.write().unwrap_or_else(|e| e.into_inner()) = Some(mem);
        Ok(())
    }

    fn set_gpu_socket(&self, backend: GpuBackend) -> std::io::Result<()> {
        match &self.display {
            Some(display) => {
                display.connect(backend);
                Ok(())
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "not a GPU: no display socket wanted",
            )),
        }
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let consumer = self.exit.0.try_clone().ok()?;
        let notifier = self.exit.1.try_clone().ok()?;
        Some((consumer, notifier))
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Self::Vring],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        if evset != EventSet::IN {
            return Ok(());
        }
        if usize::from(device_event) == host_event_token(vrings.len()) {
            let queues = self.with_device(|d| d.take_host_events());
            for index in queues {
                let Some(vring) = vrings.get(usize::from(index)) else {
                    continue;
                };
                // Host work waits until the front-end has enabled the
                // vring; the driver's next kick serves it then.
                let enabled = vring.get_ref().is_enabled();
                if enabled {
                    self.serve(index, vring)?;
                }
            }
            return Ok(());
        }
        match vrings.get(usize::from(device_event)) {
            Some(vring) => self.serve(device_event, vring),
            None => Ok(()),
        }
    }
}

/// Polls `vring`'s avail ring for up to `budget`; true as soon as the
/// driver has made a buffer available that the device has not taken.
fn wait_for_avail(
    vring: &VringRwLock<GuestMemoryAtomic<GuestMemoryMmap>>,
    mem: &GuestMemoryMmap,
    budget: Duration,
) -> bool {
    if budget.is_zero() {
        return false;
    }
    let start = Instant::now();
    loop {
        let pending = {
            let state = vring.get_ref();
            let queue = state.get_queue();
            queue
                .avail_idx(mem, Ordering::Acquire)
                .is_ok_and(|idx| idx.0 != queue.next_avail())
        };
        if pending {
            return true;
        }
        if start.elapsed() >= budget {
            return false;
        }
        for _ in 0..64 {
            std::hint::spin_loop();
        }
    }
}

/// The epoll token of a device's host event fd: the queues take
/// `0..queues` and the exit event `queues`.
fn host_event_token(queues: usize) -> usize {
    queues.saturating_add(1)
}

/// Serves `device` to one vhost-user front-end on `socket` (created here),
/// returning when it disconnects.
pub fn serve<D: QueueDevice + 'static>(socket: &Path, device: D) -> Result<(), VhostUserError> {
    let backend = Backend::new(device).map_err(|e| VhostUserError::Daemon(e.to_string()))?;
    serve_backend(socket, backend)
}

/// Serves `gpu` to one vhost-user front-end (QEMU's `vhost-user-gpu-pci`)
/// on `socket` (created here), returning when it disconnects. `display`
/// must be the sink `gpu` was created with: it gets the front-end's display
/// socket (VHOST_USER_GPU_SET_SOCKET), so frames reach the front-end's
/// display and the front-end answers for the displays' sizes; a resize the
/// front-end's UI asks for reaches the guest through it.
pub fn serve_gpu(
    socket: &Path,
    gpu: Gpu,
    display: Arc<FrontendSink>,
) -> Result<(), VhostUserError> {
    let mut backend = Backend::new(gpu).map_err(|e| VhostUserError::Daemon(e.to_string()))?;
    backend.display = Some(display);
    backend.extra_features = QEMU_GPU_FEATURES;
    serve_backend(socket, backend)
}

fn serve_backend<D: QueueDevice + 'static>(
    socket: &Path,
    backend: Backend<D>,
) -> Result<(), VhostUserError> {
    let (name, host_fd, token) = {
        let device = backend.device();
        (
            format!("nestbox-vhost-user-{}", device.device_type()),
            device.host_event_fd(),
            host_event_token(device.queue_max_sizes().len()),
        )
    };
    let backend = Arc::new(backend);
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let mut daemon = VhostUserDaemon::new(name, backend, mem)
        .map_err(|e| VhostUserError::Daemon(e.to_string()))?;
    if let Some(fd) = host_fd {
        let handler = daemon
            .get_epoll_handlers()
            .into_iter()
            .next()
            .ok_or_else(|| VhostUserError::Daemon("no vring thread".to_string()))?;
        handler
            .register_listener(fd, EventSet::IN, token as u64)
            .map_err(|e| VhostUserError::Daemon(e.to_string()))?;
    }
    daemon.serve(socket).map_err(|e| VhostUserError::Serve {
        path: socket.display().to_string(),
        detail: e.to_string(),
    })
}

/// virtio-net behind vhost-user, with passt as the host side: frames the
/// guest sends go to passt; frames from passt wait until the driver has
/// posted receive buffers.
///
/// QEMU's `-netdev vhost-user` sends SET_VRING_ENABLE before SET_FEATURES,
/// which the `vhost` crate's request handler refuses, so [`serve_net`]
/// puts the [`relay`] in front of it.
pub struct NetBackend {
    net: Mutex<Net>,
    passt: Mutex<Passt>,
    waiting: Mutex<std::collections::VecDeque<Vec<u8>>>,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    event_idx: bool,
    exit: (EventConsumer, EventNotifier),
}

/// The epoll token of passt's socket (after the two queues and the exit event).
const PASST_EVENT: u16 = 3;
/// Frames kept while the guest has posted no receive buffers.
const MAX_WAITING_FRAMES: usize = 256;

impl NetBackend {
    /// Serves `net`, connected to `passt`.
    pub fn new(net: Net, passt: Passt) -> std::io::Result<Self> {
        Ok(Self {
            net: Mutex::new(net),
            passt: Mutex::new(passt),
            waiting: Mutex::new(std::collections::VecDeque::new()),
            mem: None,
            event_idx: false,
            exit: new_event_consumer_and_notifier(EventFlag::NONBLOCK)?,
        })
    }

    fn net(&self) -> MutexGuard<'_, Net> {
        self.net.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(
        &self,
        vring: &VringRwLock<GuestMemoryAtomic<GuestMemoryMmap>>,
    ) -> std::io::Result<()> {
        if !self.event_idx || vring.needs_notification().unwrap_or(true) {
            vring.signal_used_queue()?;
        }
        Ok(())
    }

    /// Moves waiting frames into the guest's receive buffers.
    fn deliver(
        &self,
        vring: &VringRwLock<GuestMemoryAtomic<GuestMemoryMmap>>,
    ) -> std::io::Result<()> {
        let Some(mem) = self.mem.as_ref().map(GuestMemoryAtomic::memory) else {
            return Ok(());
        };
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let mut delivered = false;
        while let Some(frame) = waiting.front() {
            let outcome = {
                let mut state = vring.get_mut();
                self.net().deliver_rx(&mem, state.get_queue_mut(), frame)
            };
            log::trace!("vhost-user-net: rx {} bytes -> {outcome:?}", frame.len());
            match outcome {
                Ok(RxOutcome::NoBuffer) => break,
                Ok(RxOutcome::Delivered) => delivered = true,
                Ok(RxOutcome::Dropped) => {}
                Err(e) => {
                    log::warn!("vhost-user-net: receive queue stopped: {e}");
                    break;
                }
            }
            waiting.pop_front();
        }
        drop(waiting);
        if delivered {
            self.notify(vring)?;
        }
        Ok(())
    }

    fn receive_from_passt(&self) -> std::io::Result<()> {
        let mut frames = Vec::new();
        let open = self
            .passt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .receive(&mut frames)?;
        if !open {
            log::warn!("vhost-user-net: passt closed the connection");
        }
        log::trace!("vhost-user-net: {} frames from passt", frames.len());
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        for frame in frames {
            if waiting.len() >= MAX_WAITING_FRAMES {
                // The guest is not reading: drop the oldest, as a NIC would.
                waiting.pop_front();
            }
            waiting.push_back(frame);
        }
        Ok(())
    }
}

impl VhostUserBackendMut for NetBackend {
    type Bitmap = ();
    type Vring = VringRwLock<GuestMemoryAtomic<GuestMemoryMmap>>;

    fn num_queues(&self) -> usize {
        self.net().queue_max_sizes().len()
    }

    fn max_queue_size(&self) -> usize {
        self.net()
            .queue_max_sizes()
            .first()
            .copied()
            .map_or(0, usize::from)
    }

    fn features(&self) -> u64 {
        self.net().features() | VHOST_USER_F_PROTOCOL_FEATURES
    }

    fn acked_features(&mut self, features: u64) {
        self.net().ack_features(features);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::empty()
    }

    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let consumer = self.exit.0.try_clone().ok()?;
        let notifier = self.exit.1.try_clone().ok()?;
        Some((consumer, notifier))
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Self::Vring],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        log::trace!("vhost-user-net: event {device_event} {evset:?}");
        if evset != EventSet::IN {
            return Ok(());
        }
        let (Some(rx), Some(tx)) = (vrings.first(), vrings.get(1)) else {
            return Ok(());
        };
        match device_event {
            0 => self.deliver(rx),
            1 => {
                let Some(mem) = self.mem.as_ref().map(GuestMemoryAtomic::memory) else {
                    return Ok(());
                };
                let used = {
                    let mut state = tx.get_mut();
                    self.net().serve_tx(&mem, state.get_queue_mut())
                };
                log::trace!("vhost-user-net: tx kick -> {used:?}");
                match used {
                    Ok(true) => self.notify(tx),
                    Ok(false) => Ok(()),
                    Err(e) => {
                        log::warn!("vhost-user-net: transmit queue stopped: {e}");
                        Ok(())
                    }
                }
            }
            PASST_EVENT => {
                self.receive_from_passt()?;
                self.deliver(rx)
            }
            _ => Ok(()),
        }
    }
}

/// Serves `net` with `passt` as its host side to one vhost-user front-end
/// on `socket`, returning when it disconnects.
pub fn serve_net(socket: &Path, net: Net, passt: Passt) -> Result<(), VhostUserError> {
    let passt_fd = passt.as_raw_fd();
    let backend = NetBackend::new(net, passt).map_err(|e| VhostUserError::Daemon(e.to_string()))?;
    let backend = Arc::new(RwLock::new(backend));
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let mut daemon = VhostUserDaemon::new("nestbox-vhost-user-net".to_string(), backend, mem)
        .map_err(|e| VhostUserError::Daemon(e.to_string()))?;
    let handler = daemon
        .get_epoll_handlers()
        .into_iter()
        .next()
        .ok_or_else(|| VhostUserError::Daemon("no vring thread".to_string()))?;
    handler
        .register_listener(passt_fd, EventSet::IN, u64::from(PASST_EVENT))
        .map_err(|e| VhostUserError::Daemon(e.to_string()))?;
    let result = serve_relayed(&mut daemon, socket);
    // As the crate's own `serve` does: stop the vring thread.
    handler.send_exit_event();
    result
}

/// Accepts one front-end on `socket` and serves it to `daemon` through
/// the [`relay`], returning when either side ends the connection.
fn serve_relayed<T>(daemon: &mut VhostUserDaemon<T>, socket: &Path) -> Result<(), VhostUserError>
where
    T: vhost_user_backend::VhostUserBackend + Clone + 'static,
    T::Bitmap: vhost_user_backend::bitmap::BitmapReplace
        + vm_memory::bitmap::NewBitmap
        + Clone
        + Send
        + Sync,
    T::Vring: Clone + Send + Sync,
{
    use std::os::unix::net::{UnixListener, UnixStream};
    let failed = |detail: String| VhostUserError::Serve {
        path: socket.display().to_string(),
        detail,
    };
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(|e| failed(e.to_string()))?;
    let accepted = listener.accept();
    drop(listener);
    let _ = std::fs::remove_file(socket);
    let (frontend, _) = accepted.map_err(|e| failed(e.to_string()))?;
    // The daemon accepts from a listener: connect to a private one and
    // remove its name at once (the connection waits in its backlog).
    let private = socket.with_extension("relay");
    let _ = std::fs::remove_file(&private);
    let inner = UnixListener::bind(&private).map_err(|e| failed(e.to_string()))?;
    let connected = UnixStream::connect(&private);
    let _ = std::fs::remove_file(&private);
    let backend = connected.map_err(|e| failed(e.to_string()))?;
    let mut inner = vhost::vhost_user::Listener::from(inner);
    daemon
        .start(&mut inner)
        .map_err(|e| failed(e.to_string()))?;
    let relay = std::thread::Builder::new()
        .name("vhost-user-relay".to_string())
        .spawn(move || relay::relay(frontend, backend))
        .map_err(|e| failed(e.to_string()))?;
    let served = daemon.wait();
    match relay.join() {
        Ok(Err(e)) => log::warn!("vhost-user relay on {}: {e}", socket.display()),
        Ok(Ok(())) => {}
        Err(_) => log::warn!("vhost-user relay on {} panicked", socket.display()),
    }
    match served {
        Ok(())
        | Err(vhost_user_backend::Error::HandleRequest(
            vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
        )) => Ok(()),
        Err(e) => Err(failed(e.to_string())),
    }
}
