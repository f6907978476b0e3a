// SPDX-License-Identifier: Apache-2.0
//! A virtio GPU device in 2D mode (virtio spec 1.2, section 5.7 "GPU
//! Device"): the guest draws into resources backed by its own memory,
//! copies them into host-side copies (TRANSFER_TO_HOST_2D) and flushes
//! rectangles of the resources shown on scanouts, which the device hands to
//! the host's [`ScanoutSink`].
//!
//! The device has a control queue (0) and a cursor queue (1), offers
//! VIRTIO_F_VERSION_1 and VIRTIO_GPU_F_EDID, has `num_scanouts` (1 to 16)
//! scanouts and no capability sets (no 3D). Commands are served
//! synchronously, on the thread that calls [`VirtioDevice::queue_notify`](crate::devices::virtio::VirtioDevice::queue_notify) or
//! [`Gpu::serve_queue`], so a fenced command's fence has completed when its
//! response is written: the response echoes the fence id and context.
//!
//! Everything in a request comes from the guest and is treated as hostile.
//! A chain whose buffers are outside guest memory, whose readable part is
//! shorter than the command's layout, or whose writable part cannot hold
//! the response completes with a used length of 0 and nothing executed (a
//! cursor command without a response buffer, as Linux sends them, is
//! executed and completes with 0). A well-formed command that asks for
//! something wrong gets the matching error response (see
//! [`protocol`]'s `RESP_ERR_*`). Resources may take at most
//! [`GpuConfig::max_host_memory`] bytes of host memory; errors are logged,
//! rate-limited. A broken queue stops processing and sets
//! [`Gpu::needs_reset`].
//!
//! The host changes a scanout's preferred size with
//! [`Gpu::request_display_size`]: the device raises VIRTIO_GPU_EVENT_DISPLAY
//! in `events_read` and a configuration-change interrupt, and the driver
//! asks GET_DISPLAY_INFO again. Where the host side owns the displays (a
//! vhost-user front-end, which also owns `events_read` and the interrupt),
//! the sink's [`ScanoutSink::display_info`] and [`ScanoutSink::edid`]
//! answer those commands instead.

mod chain;
pub mod edid;
mod persist;
pub mod protocol;
mod resources;
mod scanout;
pub mod vhost_user_display;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue};

use self::chain::Chain;
use self::protocol::{
    Command, CtrlHeader, CursorCommand, EDID_RESP_LEN, EVENT_DISPLAY, F_EDID, HDR_LEN,
    MAX_SCANOUTS, MEM_ENTRY_LEN, RESP_ERR_INVALID_CONTEXT_ID, RESP_ERR_INVALID_PARAMETER,
    RESP_ERR_INVALID_SCANOUT_ID, RESP_ERR_UNSPEC, RESP_OK_DISPLAY_INFO, RESP_OK_EDID,
    RESP_OK_NODATA,
};
use self::resources::Resources;
use self::scanout::Scanout;
use super::device_core::{self, DeviceCore, GuestFault, QueueDevice, Step};
use super::{DeviceInfo, ErrorLog, VIRTIO_F_VERSION_1, device_type, read_config_bytes};
use crate::memory::GuestMemoryMmap;

pub use self::protocol::{PixelFormat, Rect};
pub use self::resources::MAX_DIMENSION;
pub use self::scanout::{
    CURSOR_SIZE, CursorUpdate, FrameUpdate, HostDisplays, NullSink, RecordedCursor, RecordedFrame,
    RecordingSink, ScanoutSink,
};

/// The largest size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// The control queue's index.
pub const CONTROL_QUEUE: u16 = 0;
/// The cursor queue's index.
pub const CURSOR_QUEUE: u16 = 1;
/// The default limit on the host memory all resources take.
pub const DEFAULT_MAX_HOST_MEMORY: u64 = 256 << 20;
/// The most backing entries one RESOURCE_ATTACH_BACKING may carry.
pub const MAX_BACKING_ENTRIES: u32 = 16384;
/// The configuration space: events_read, events_clear, num_scanouts,
/// num_capsets.
const CONFIG_LEN: usize = 16;
const EVENTS_CLEAR_OFFSET: u64 = 4;

/// How a GPU is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuConfig {
    /// Scanouts (1 to 16), all connected.
    pub num_scanouts: u32,
    /// The scanouts' initial preferred width.
    pub width: u32,
    /// The scanouts' initial preferred height.
    pub height: u32,
    /// The most host memory all resources may take, in bytes.
    pub max_host_memory: u64,
}

impl Default for GpuConfig {
    fn default() -> Self {
        Self {
            num_scanouts: 1,
            width: 1024,
            height: 768,
            max_host_memory: DEFAULT_MAX_HOST_MEMORY,
        }
    }
}

/// Errors of the GPU device: its configuration, and requests that fail
/// before a response can be written.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// `num_scanouts` is 0 or above 16.
    #[error("A GPU has 1 to 16 scanouts, not {0}")]
    ScanoutCount(u32),
    /// A display size is 0 or above 16384.
    #[error("Invalid display size {width}x{height}")]
    DisplaySize {
        /// The width asked for.
        width: u32,
        /// The height asked for.
        height: u32,
    },
    /// No scanout has this index.
    #[error("No scanout {0}")]
    NoScanout(u32),
    /// A descriptor points outside guest memory.
    #[error("Descriptor at {addr:#x} ({len} bytes) is outside guest memory")]
    DescriptorOutOfMemory {
        /// Its guest address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A device-readable descriptor follows a device-writable one.
    #[error("Request has a device-readable descriptor after a writable one")]
    ReadableAfterWritable,
    /// The chain is longer than the device accepts.
    #[error("Request has more than {} descriptors", chain::MAX_CHAIN_DESCRIPTORS)]
    TooManyDescriptors,
    /// The readable part is shorter than the command.
    #[error("Request is shorter than its command")]
    ShortCommand,
    /// The writable part cannot hold the response.
    #[error("Request has no room for its response")]
    ShortResponse,
    /// A well-formed command was refused with an error response.
    #[error("Command {command:#x} refused with {code:#x}: {reason}")]
    Refused {
        /// The command code.
        command: u32,
        /// The response code.
        code: u32,
        /// Why.
        reason: &'static str,
    },
    /// Guest memory could not be accessed, though it was checked.
    #[error("Guest memory access failed")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
    /// A queue is broken.
    #[error(transparent)]
    Guest(#[from] GuestFault),
}

impl GpuError {
    /// Whether the guest caused the error (as opposed to the host or the
    /// configuration): such errors are rate-limited in the log.
    pub fn is_guest_error(&self) -> bool {
        !matches!(
            self,
            Self::ScanoutCount(_) | Self::DisplaySize { .. } | Self::NoScanout(_)
        )
    }
}

/// A command's error response, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The `RESP_ERR_*` code.
    pub code: u32,
    /// For the log.
    pub reason: &'static str,
}

impl Refusal {
    pub(crate) const fn new(code: u32, reason: &'static str) -> Self {
        Self { code, reason }
    }
}

const NO_SCANOUT: Refusal = Refusal::new(RESP_ERR_INVALID_SCANOUT_ID, "no such scanout");

/// What a command that succeeded answers.
enum Reply {
    NoData,
    DisplayInfo,
    Edid(u32),
}

/// How a command failed.
enum Failure {
    /// With an error response.
    Refused(Refusal),
    /// Malformed: no response, used length 0.
    Malformed(GpuError),
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

/// The device state behind the queues.
struct Server {
    sink: Arc<dyn ScanoutSink>,
    scanouts: Vec<Scanout>,
    resources: Resources,
    events_read: u32,
    chain: Chain,
    /// The command being served, reused.
    command: Vec<u8>,
    /// The response being written, reused.
    response: Vec<u8>,
    /// The cursor as the driver last set and moved it, while shown.
    cursor: Option<CursorCommand>,
    errors: ErrorLog,
}

/// A virtio GPU (2D).
pub struct Gpu {
    server: Server,
    core: DeviceCore,
}

/// Whether `width` × `height` is a size a resource or display may have.
fn valid_size(width: u32, height: u32) -> bool {
    (1..=MAX_DIMENSION).contains(&width) && (1..=MAX_DIMENSION).contains(&height)
}

impl Gpu {
    /// Creates a GPU showing its scanouts through `sink`.
    pub fn new(config: GpuConfig, sink: Arc<dyn ScanoutSink>) -> Result<Self, GpuError> {
        if !(1..=MAX_SCANOUTS).contains(&config.num_scanouts) {
            return Err(GpuError::ScanoutCount(config.num_scanouts));
        }
        if !valid_size(config.width, config.height) {
            return Err(GpuError::DisplaySize {
                width: config.width,
                height: config.height,
            });
        }
        let scanouts = (0..config.num_scanouts)
            .map(|_| Scanout::new(config.width, config.height))
            .collect();
        Ok(Self {
            server: Server {
                sink,
                scanouts,
                resources: Resources::new(config.max_host_memory),
                events_read: 0,
                chain: Chain::default(),
                command: Vec::new(),
                response: Vec::new(),
                cursor: None,
                errors: ErrorLog::default(),
            },
            core: DeviceCore::default(),
        })
    }

    /// The features the driver (or a vhost-user front-end) accepted.
    pub fn acked_features(&self) -> u64 {
        self.core.acked_features()
    }

    /// Whether a queue broke and the device stopped serving until the
    /// driver resets it (the transport should set DEVICE_NEEDS_RESET).
    pub fn needs_reset(&self) -> bool {
        self.core.needs_reset()
    }

    /// The number of scanouts.
    pub fn num_scanouts(&self) -> u32 {
        // At most MAX_SCANOUTS.
        u32::try_from(self.server.scanouts.len()).unwrap_or(MAX_SCANOUTS)
    }

    /// Host bytes the guest's resources take now.
    pub fn resource_memory(&self) -> u64 {
        self.server.resources.used()
    }

    /// The host asks for scanout `scanout` to be `width` × `height` (both
    /// 1..=16384), or disconnected (0 × 0): the size is what the next
    /// GET_DISPLAY_INFO and GET_EDID report; a running driver is told
    /// through VIRTIO_GPU_EVENT_DISPLAY and a configuration-change
    /// interrupt.
    pub fn request_display_size(
        &mut self,
        scanout: u32,
        width: u32,
        height: u32,
    ) -> Result<(), GpuError> {
        let disconnect = width == 0 && height == 0;
        if !disconnect && !valid_size(width, height) {
            return Err(GpuError::DisplaySize { width, height });
        }
        let state = self
            .server
            .scanouts
            .get_mut(scanout as usize)
            .ok_or(GpuError::NoScanout(scanout))?;
        state.connected = !disconnect;
        if !disconnect {
            state.width = width;
            state.height = height;
        }
        // Only a running driver is told: one that starts later asks for
        // the displays anyway, and an event pending from before it ran
        // would have it probe its connectors twice, racing its own setup.
        if let Some(active) = self.core.active() {
            self.server.events_read |= EVENT_DISPLAY;
            active.interrupt.signal_config_change();
        }
        Ok(())
    }

    /// Serves the requests available on queue `index` (0: control, 1:
    /// cursor) of a queue owned by someone else (a vhost-user front-end's
    /// vring); returns whether any was completed. Fails when the queue
    /// itself is broken. The caller signals the driver.
    pub fn serve_queue(
        &mut self,
        index: u16,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, GpuError> {
        self.server.drain(index, mem, queue)
    }

    fn config(&self) -> [u8; CONFIG_LEN] {
        let mut config = [0u8; CONFIG_LEN];
        let fields = [self.server.events_read, 0, self.num_scanouts(), 0];
        for (dst, value) in config.chunks_exact_mut(4).zip(fields) {
            dst.copy_from_slice(&value.to_le_bytes());
        }
        config
    }
}

impl DeviceInfo for Gpu {
    fn device_type(&self) -> u32 {
        device_type::GPU
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | (1 << F_EDID)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only events_clear is writable: each 1 bit clears that event.
        for (i, &byte) in data.iter().enumerate() {
            let Some(at) = offset.checked_add(i as u64) else {
                break;
            };
            if let Some(shift) = at
                .checked_sub(EVENTS_CLEAR_OFFSET)
                .filter(|&k| k < 4)
                .map(|k| k * 8)
            {
                self.server.events_read &= !(u32::from(byte) << shift);
            }
        }
    }
}

impl QueueDevice for Gpu {
    type Error = GpuError;

    fn name(&self) -> &str {
        "virtio-gpu"
    }

    device_core::core_accessors!();

    fn serve(
        &mut self,
        index: u16,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, GpuError> {
        self.serve_queue(index, mem, queue)
    }

    fn saves_state(&self) -> bool {
        true
    }

    fn save_own(&mut self) -> Result<Vec<u8>, crate::snapshot::StateError> {
        self.saved_state()
    }

    fn restore_own(&mut self, bytes: &[u8]) -> Result<(), crate::snapshot::StateError> {
        self.restore_saved(bytes)
    }

    fn reset_state(&mut self) {
        self.server.resources.clear();
        self.server.events_read = 0;
        self.server.cursor = None;
        for (i, scanout) in self.server.scanouts.iter_mut().enumerate() {
            // What a scanout showed is gone with the resources.
            if scanout.shown.take().is_some() {
                self.server.sink.disabled(i as u32);
            }
        }
    }
}

impl Server {
    /// Serves available chains until the ring is empty with notifications
    /// re-enabled. Fails only when the queue is broken.
    fn drain(
        &mut self,
        index: u16,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, GpuError> {
        Ok(device_core::drain(mem, queue, |chain| {
            Step::Used(self.serve(index, mem, chain))
        })?)
    }

    /// Serves one chain; returns the used length (the response's, or 0).
    fn serve(
        &mut self,
        index: u16,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
    ) -> u32 {
        let mut request = std::mem::take(&mut self.chain);
        let used = self.serve_collected(index, mem, chain, &mut request);
        self.chain = request;
        match used {
            Ok(len) => len,
            Err(err) => {
                self.log(&err);
                0
            }
        }
    }

    fn serve_collected(
        &mut self,
        index: u16,
        mem: &GuestMemoryMmap,
        raw: DescriptorChain<&GuestMemoryMmap>,
        chain: &mut Chain,
    ) -> Result<u32, GpuError> {
        chain.collect(mem, raw)?;
        let mut head = [0u8; HDR_LEN];
        chain.read(mem, 0, &mut head)?;
        let header = CtrlHeader::parse(&head).ok_or(GpuError::ShortCommand)?;
        let need = protocol::command_len(header.kind);
        if chain.readable_len < need as u64 {
            return Err(GpuError::ShortCommand);
        }
        self.command.clear();
        self.command.resize(need, 0);
        chain.read(mem, 0, &mut self.command)?;
        let command = Command::parse(&header, &self.command).ok_or(GpuError::ShortCommand)?;
        let cursor_queue = index == CURSOR_QUEUE;
        let reply_len = protocol::response_len(header.kind) as u64;
        // Linux sends cursor commands without a response buffer.
        let silent = cursor_queue && chain.writable_len == 0;
        if !silent && chain.writable_len < reply_len {
            return Err(GpuError::ShortResponse);
        }
        let outcome = match (cursor_queue, command) {
            (true, Command::UpdateCursor(c)) => self.update_cursor(&c).map(|()| Reply::NoData),
            (true, Command::MoveCursor(c)) => self.move_cursor(&c).map(|()| Reply::NoData),
            (true, _) | (false, Command::UpdateCursor(_) | Command::MoveCursor(_)) => {
                Err(Refusal::new(RESP_ERR_UNSPEC, "command sent on the wrong queue").into())
            }
            (false, command) => self.execute(mem, chain, command),
        };
        let code = match outcome {
            Ok(reply) => {
                self.encode(&header, &reply);
                RESP_OK_NODATA
            }
            Err(Failure::Malformed(err)) => return Err(err),
            Err(Failure::Refused(refusal)) => {
                self.log(&GpuError::Refused {
                    command: header.kind,
                    code: refusal.code,
                    reason: refusal.reason,
                });
                self.response.clear();
                header.response(refusal.code).encode(&mut self.response);
                refusal.code
            }
        };
        log::trace!("virtio-gpu: command {:#x} -> {code:#x}", header.kind);
        if silent {
            return Ok(0);
        }
        chain.write(mem, &self.response)?;
        // A response is at most EDID_RESP_LEN bytes.
        Ok(u32::try_from(self.response.len()).unwrap_or(0))
    }

    /// Performs a control-queue command.
    fn execute(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: &Chain,
        command: Command,
    ) -> Result<Reply, Failure> {
        match command {
            Command::GetDisplayInfo => {
                self.refresh_displays();
                return Ok(Reply::DisplayInfo);
            }
            Command::GetEdid { scanout_id } => {
                self.scanouts.get(scanout_id as usize).ok_or(NO_SCANOUT)?;
                self.refresh_displays();
                return Ok(Reply::Edid(scanout_id));
            }
            Command::Create2d {
                resource_id,
                format,
                width,
                height,
            } => self.resources.create(resource_id, format, width, height)?,
            Command::Unref { resource_id } => {
                self.resources.unref(resource_id)?;
                self.hide_resource(resource_id);
            }
            Command::SetScanout {
                rect,
                scanout_id,
                resource_id,
            } => self.set_scanout(rect, scanout_id, resource_id)?,
            Command::Flush { rect, resource_id } => self.flush(rect, resource_id)?,
            Command::Transfer {
                rect,
                offset,
                resource_id,
            } => self.resources.transfer(mem, resource_id, rect, offset)?,
            Command::AttachBacking {
                resource_id,
                nr_entries,
            } => self.attach_backing(mem, chain, resource_id, nr_entries)?,
            Command::DetachBacking { resource_id } => self.resources.detach(resource_id)?,
            Command::GetCapsetInfo { .. } => {
                return Err(Refusal::new(RESP_ERR_INVALID_PARAMETER, "no capability sets").into());
            }
            Command::Context(_) => {
                return Err(
                    Refusal::new(RESP_ERR_INVALID_CONTEXT_ID, "no 3D contexts in 2D mode").into(),
                );
            }
            Command::UpdateCursor(_) | Command::MoveCursor(_) | Command::Unsupported(_) => {
                return Err(Refusal::new(RESP_ERR_UNSPEC, "unsupported command").into());
            }
        }
        Ok(Reply::NoData)
    }

    /// Takes the host's display sizes, when the host side owns them; sizes
    /// out of range are ignored.
    fn refresh_displays(&mut self) {
        let Some(displays) = self.sink.display_info() else {
            return;
        };
        for (scanout, display) in self.scanouts.iter_mut().zip(displays) {
            match display {
                Some((width, height)) if valid_size(width, height) => {
                    scanout.connected = true;
                    scanout.width = width;
                    scanout.height = height;
                }
                Some(_) => {}
                None => scanout.connected = false,
            }
        }
    }

    /// RESOURCE_ATTACH_BACKING: reads the entries that follow the command.
    fn attach_backing(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: &Chain,
        resource_id: u32,
        nr_entries: u32,
    ) -> Result<(), Failure> {
        if nr_entries > MAX_BACKING_ENTRIES {
            return Err(
                Refusal::new(RESP_ERR_INVALID_PARAMETER, "too many backing entries").into(),
            );
        }
        self.resources.get(resource_id)?;
        // At most 16384 * 16 bytes.
        let len = nr_entries as usize * MEM_ENTRY_LEN;
        let total = (protocol::ATTACH_BACKING_LEN + len) as u64;
        if chain.readable_len < total {
            return Err(Failure::Malformed(GpuError::ShortCommand));
        }
        let mut bytes = vec![0u8; len];
        chain
            .read(mem, protocol::ATTACH_BACKING_LEN as u64, &mut bytes)
            .map_err(Failure::Malformed)?;
        let entries = protocol::parse_mem_entries(&bytes);
        self.resources.attach(mem, resource_id, &entries)?;
        Ok(())
    }

    /// SET_SCANOUT: shows `rect` of a resource on a scanout, or disables
    /// the scanout (resource 0).
    fn set_scanout(
        &mut self,
        rect: Rect,
        scanout_id: u32,
        resource_id: u32,
    ) -> Result<(), Refusal> {
        let index = scanout_id as usize;
        if index >= self.scanouts.len() {
            return Err(NO_SCANOUT);
        }
        if resource_id == 0 {
            if let Some(scanout) = self.scanouts.get_mut(index) {
                scanout.shown = None;
            }
            self.sink.disabled(scanout_id);
            return Ok(());
        }
        let resource = self.resources.get(resource_id)?;
        if rect.is_empty() || !rect.fits(resource.width, resource.height) {
            return Err(Refusal::new(
                RESP_ERR_INVALID_PARAMETER,
                "the scanout rectangle is outside the resource",
            ));
        }
        if let Some(scanout) = self.scanouts.get_mut(index) {
            scanout.shown = Some((resource_id, rect));
        }
        Ok(())
    }

    /// Disables the scanouts showing `resource_id` (it is gone).
    fn hide_resource(&mut self, resource_id: u32) {
        for (i, scanout) in self.scanouts.iter_mut().enumerate() {
            if matches!(scanout.shown, Some((id, _)) if id == resource_id) {
                scanout.shown = None;
                // At most MAX_SCANOUTS.
                self.sink.disabled(i as u32);
            }
        }
    }

    /// RESOURCE_FLUSH: hands the flushed part of every scanout showing the
    /// resource to the sink.
    fn flush(&mut self, rect: Rect, resource_id: u32) -> Result<(), Refusal> {
        let resource = self.resources.get(resource_id)?;
        if !rect.fits(resource.width, resource.height) {
            return Err(Refusal::new(
                RESP_ERR_INVALID_PARAMETER,
                "the flush rectangle is outside the resource",
            ));
        }
        let stride = resource.stride();
        for (i, scanout) in self.scanouts.iter().enumerate() {
            let Some((id, shown)) = scanout.shown else {
                continue;
            };
            if id != resource_id {
                continue;
            }
            let Some(part) = rect.intersect(&shown) else {
                continue;
            };
            // `shown` was checked to fit the resource, so these are in range.
            let start = (shown.y as usize)
                .saturating_mul(stride)
                .saturating_add((shown.x as usize).saturating_mul(4));
            let len = (shown.height as usize)
                .saturating_sub(1)
                .saturating_mul(stride)
                .saturating_add((shown.width as usize).saturating_mul(4));
            let Some(pixels) = resource.pixels.get(start..start.saturating_add(len)) else {
                continue;
            };
            self.sink.frame(&FrameUpdate {
                scanout: i as u32,
                width: shown.width,
                height: shown.height,
                stride,
                format: resource.format,
                pixels,
                dirty: Rect::new(part.x - shown.x, part.y - shown.y, part.width, part.height),
            });
        }
        Ok(())
    }

    /// UPDATE_CURSOR: a new image from a 64×64 resource, or hidden (0).
    fn update_cursor(&mut self, c: &CursorCommand) -> Result<(), Failure> {
        if c.scanout_id as usize >= self.scanouts.len() {
            return Err(NO_SCANOUT.into());
        }
        if c.resource_id == 0 {
            self.cursor = None;
            self.sink.cursor(c.scanout_id, &CursorUpdate::Hide);
            return Ok(());
        }
        let resource = self.resources.get(c.resource_id)?;
        if resource.width != CURSOR_SIZE || resource.height != CURSOR_SIZE {
            return Err(Refusal::new(RESP_ERR_INVALID_PARAMETER, "the cursor is not 64x64").into());
        }
        if c.hot_x >= CURSOR_SIZE || c.hot_y >= CURSOR_SIZE {
            return Err(Refusal::new(
                RESP_ERR_INVALID_PARAMETER,
                "the hotspot is outside the cursor",
            )
            .into());
        }
        self.sink.cursor(
            c.scanout_id,
            &CursorUpdate::Show {
                x: c.x,
                y: c.y,
                hot_x: c.hot_x,
                hot_y: c.hot_y,
                format: resource.format,
                image: &resource.pixels,
            },
        );
        self.cursor = Some(*c);
        Ok(())
    }

    /// MOVE_CURSOR.
    fn move_cursor(&mut self, c: &CursorCommand) -> Result<(), Failure> {
        if c.scanout_id as usize >= self.scanouts.len() {
            return Err(NO_SCANOUT.into());
        }
        self.sink
            .cursor(c.scanout_id, &CursorUpdate::Move { x: c.x, y: c.y });
        if let Some(cursor) = &mut self.cursor {
            cursor.scanout_id = c.scanout_id;
            cursor.x = c.x;
            cursor.y = c.y;
        }
        Ok(())
    }

    /// Encodes the successful response `reply` to the command `header`.
    fn encode(&mut self, header: &CtrlHeader, reply: &Reply) {
        let out = &mut self.response;
        out.clear();
        match *reply {
            Reply::NoData => header.response(RESP_OK_NODATA).encode(out),
            Reply::DisplayInfo => {
                header.response(RESP_OK_DISPLAY_INFO).encode(out);
                for i in 0..MAX_SCANOUTS as usize {
                    match self.scanouts.get(i).filter(|s| s.connected) {
                        Some(s) => protocol::encode_display_one(
                            out,
                            Rect::new(0, 0, s.width, s.height),
                            true,
                        ),
                        None => protocol::encode_display_one(out, Rect::default(), false),
                    }
                }
            }
            Reply::Edid(scanout) => {
                header.response(RESP_OK_EDID).encode(out);
                let (w, h) = self
                    .scanouts
                    .get(scanout as usize)
                    .map_or((0, 0), |s| (s.width, s.height));
                let mut blob = self
                    .sink
                    .edid(scanout)
                    .unwrap_or_else(|| edid::edid(w, h).to_vec());
                blob.truncate(EDID_RESP_LEN - HDR_LEN - 8);
                out.extend_from_slice(&(blob.len() as u32).to_le_bytes());
                out.extend_from_slice(&[0; 4]);
                out.extend_from_slice(&blob);
                out.resize(EDID_RESP_LEN, 0);
            }
        }
    }

    /// Logs a failed request, rate-limited.
    fn log(&mut self, err: &GpuError) {
        self.errors.report("virtio-gpu", err, err.is_guest_error());
    }
}
