// SPDX-License-Identifier: Apache-2.0
//! Unit tests of the GPU device against virtio-queue's mock queues.

use std::sync::atomic::AtomicUsize;

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::protocol::*;
use super::*;
use crate::devices::virtio::test_queue::chain;
use std::sync::atomic::Ordering;

use crate::devices::virtio::{ActivateError, ActivationContext, VirtioDevice, VirtioInterrupt};

const MEM_SIZE: u64 = 0x20_0000;
const CONTROL_AT: u64 = 0;
const CURSOR_AT: u64 = 0x4000;
const CMD: u64 = 0x1_0000;
const ENTRIES: u64 = 0x1_8000;
const RESP: u64 = 0x3_0000;
const RESP_CAP: u32 = 2048;
const BACKING_A: u64 = 0x4_0000;
const BACKING_B: u64 = 0x8_0000;
const QSIZE: u16 = 256;
const UNTOUCHED: u8 = 0xee;
const XRGB: u32 = 2;

type Mock<'a> = MockSplitQueue<'a, GuestMemoryMmap>;

#[derive(Default)]
struct Interrupts {
    used: AtomicUsize,
    config: AtomicUsize,
}

impl VirtioInterrupt for Interrupts {
    fn signal_used_queue(&self, _queue: u16) {
        self.used.fetch_add(1, Ordering::SeqCst);
    }

    fn signal_config_change(&self) {
        self.config.fetch_add(1, Ordering::SeqCst);
    }
}

/// An activated GPU over mock queues in a fresh guest memory (leaked, so
/// that the mocks, which reset their rings when created, live as long).
struct Harness {
    mem: &'static GuestMemoryMmap,
    control: Mock<'static>,
    cursor: Mock<'static>,
    gpu: Gpu,
    sink: Arc<RecordingSink>,
    interrupts: Arc<Interrupts>,
}

fn mem() -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
    let fill = vec![UNTOUCHED; 0x1_0000];
    mem.write_slice(&fill, GuestAddress(RESP)).unwrap();
    mem
}

impl Harness {
    fn new() -> Self {
        Self::with(GpuConfig::default())
    }

    fn with(config: GpuConfig) -> Self {
        let mem: &'static GuestMemoryMmap = Box::leak(Box::new(mem()));
        let sink = Arc::new(RecordingSink::default());
        let mut gpu = Gpu::new(config, sink.clone()).unwrap();
        let interrupts = Arc::new(Interrupts::default());
        let control = Mock::create(mem, GuestAddress(CONTROL_AT), QSIZE);
        let cursor = Mock::create(mem, GuestAddress(CURSOR_AT), QSIZE);
        let queues = vec![
            control.create_queue::<Queue>().unwrap(),
            cursor.create_queue::<Queue>().unwrap(),
        ];
        gpu.ack_features(gpu.features());
        gpu.activate(ActivationContext {
            mem: mem.clone(),
            queues,
            interrupt: interrupts.clone(),
        })
        .unwrap();
        Self {
            mem,
            control,
            cursor,
            gpu,
            sink,
            interrupts,
        }
    }

    fn vq(&self, queue: u16) -> &Mock<'static> {
        if queue == CURSOR_QUEUE {
            &self.cursor
        } else {
            &self.control
        }
    }

    /// Adds one chain of (address, length, device-writable) buffers to
    /// `queue`, notifies, and returns the used length.
    fn submit(&mut self, queue: u16, parts: &[(u64, u32, bool)]) -> u32 {
        let vq = self.vq(queue);
        let before = vq.used().idx().load();
        let descs = chain(0, parts);
        vq.add_desc_chains(&descs, 0).unwrap();
        self.gpu.queue_notify(queue);
        let vq = self.vq(queue);
        assert_eq!(vq.used().idx().load(), before + 1, "the request completes");
        let elem = vq.used().ring().ref_at(usize::from(before)).unwrap().load();
        assert_eq!(elem.id(), 0);
        elem.len()
    }

    /// Sends `command` on the control queue with a roomy response buffer;
    /// returns the used length and the response.
    fn send(&mut self, command: &[u8]) -> (u32, Vec<u8>) {
        self.send_on(CONTROL_QUEUE, command)
    }

    fn send_on(&mut self, queue: u16, command: &[u8]) -> (u32, Vec<u8>) {
        self.mem.write_slice(command, GuestAddress(CMD)).unwrap();
        self.mem
            .write_slice(&[UNTOUCHED; RESP_CAP as usize], GuestAddress(RESP))
            .unwrap();
        let used = self.submit(
            queue,
            &[(CMD, command.len() as u32, false), (RESP, RESP_CAP, true)],
        );
        (used, self.guest(RESP, used as usize))
    }

    /// Sends `command` and returns the response type (checking its length).
    fn status(&mut self, command: &[u8]) -> u32 {
        let (used, resp) = self.send(command);
        assert!(used as usize >= HDR_LEN, "a response was written");
        resp_type(&resp)
    }

    fn guest(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }

    fn config(&self) -> [u32; 4] {
        let mut bytes = [0u8; 16];
        self.gpu.read_config(0, &mut bytes);
        let word = |i: usize| u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap());
        [word(0), word(1), word(2), word(3)]
    }

    /// Creates resource `id` of `w` × `h` XRGB and backs it with `ranges`.
    fn backed_resource(&mut self, id: u32, w: u32, h: u32, ranges: &[(u64, u32)]) {
        assert_eq!(self.status(&create(id, XRGB, w, h)), RESP_OK_NODATA);
        assert_eq!(self.status(&attach(id, ranges)), RESP_OK_NODATA);
    }
}

fn resp_type(resp: &[u8]) -> u32 {
    u32::from_le_bytes(resp[..4].try_into().unwrap())
}

fn cmd(kind: u32, fields: &[u32]) -> Vec<u8> {
    let mut out = Vec::new();
    CtrlHeader {
        kind,
        ..CtrlHeader::default()
    }
    .encode(&mut out);
    for f in fields {
        out.extend_from_slice(&f.to_le_bytes());
    }
    out
}

fn create(id: u32, format: u32, w: u32, h: u32) -> Vec<u8> {
    cmd(CMD_RESOURCE_CREATE_2D, &[id, format, w, h])
}

fn attach(id: u32, ranges: &[(u64, u32)]) -> Vec<u8> {
    let mut out = cmd(CMD_RESOURCE_ATTACH_BACKING, &[id, ranges.len() as u32]);
    for &(addr, len) in ranges {
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    }
    out
}

fn transfer(id: u32, r: Rect, offset: u64) -> Vec<u8> {
    cmd(
        CMD_TRANSFER_TO_HOST_2D,
        &[
            r.x,
            r.y,
            r.width,
            r.height,
            offset as u32,
            (offset >> 32) as u32,
            id,
            0,
        ],
    )
}

fn set_scanout(scanout: u32, id: u32, r: Rect) -> Vec<u8> {
    cmd(CMD_SET_SCANOUT, &[r.x, r.y, r.width, r.height, scanout, id])
}

fn flush(id: u32, r: Rect) -> Vec<u8> {
    cmd(CMD_RESOURCE_FLUSH, &[r.x, r.y, r.width, r.height, id, 0])
}

fn cursor(kind: u32, scanout: u32, x: u32, y: u32, id: u32, hot: (u32, u32)) -> Vec<u8> {
    cmd(kind, &[scanout, x, y, 0, id, hot.0, hot.1, 0])
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7) as u8).wrapping_add(seed))
        .collect()
}

/// The display modes of a GET_DISPLAY_INFO response: (w, h, enabled).
fn modes(resp: &[u8]) -> Vec<(u32, u32, u32)> {
    resp[HDR_LEN..]
        .chunks_exact(24)
        .map(|m| {
            let w = |i: usize| u32::from_le_bytes(m[i * 4..i * 4 + 4].try_into().unwrap());
            (w(2), w(3), w(4))
        })
        .collect()
}

/// Writes `bytes` as the backing stream over `ranges`.
fn write_backing(mem: &GuestMemoryMmap, ranges: &[(u64, u32)], bytes: &[u8]) {
    let mut done = 0;
    for &(addr, len) in ranges {
        let n = (len as usize).min(bytes.len() - done);
        mem.write_slice(&bytes[done..done + n], GuestAddress(addr))
            .unwrap();
        done += n;
    }
    assert_eq!(done, bytes.len());
}

#[test]
fn test_gpu_get_display_info_reports_connected_scanouts() {
    // Arrange
    let mut h = Harness::with(GpuConfig {
        num_scanouts: 2,
        ..GpuConfig::default()
    });

    // Act
    let (used, resp) = h.send(&cmd(CMD_GET_DISPLAY_INFO, &[]));

    // Assert
    assert_eq!(used as usize, DISPLAY_INFO_LEN);
    assert_eq!(resp_type(&resp), RESP_OK_DISPLAY_INFO);
    let modes = modes(&resp);
    assert_eq!(modes.len(), 16);
    assert_eq!(modes[0], (1024, 768, 1));
    assert_eq!(modes[1], (1024, 768, 1));
    assert!(modes[2..].iter().all(|&m| m == (0, 0, 0)));
    assert_eq!(h.config(), [0, 0, 2, 0]);
    assert_eq!(h.interrupts.used.load(Ordering::SeqCst), 1);
}

#[test]
fn test_gpu_display_info_and_edid_come_from_a_host_that_owns_the_displays() {
    // Arrange
    let mut h = Harness::with(GpuConfig {
        num_scanouts: 2,
        ..GpuConfig::default()
    });
    // Out-of-range sizes are ignored; None disconnects.
    h.sink
        .set_host_displays(vec![Some((800, 600)), None, Some((640, 480))]);

    // Act
    let (_, info) = h.send(&cmd(CMD_GET_DISPLAY_INFO, &[]));
    h.sink
        .set_host_displays(vec![Some((0, 600)), Some((1280, 720))]);
    let (_, edid) = h.send(&cmd(CMD_GET_EDID, &[0, 0]));
    let (_, info_after) = h.send(&cmd(CMD_GET_DISPLAY_INFO, &[]));

    // Assert
    let before = modes(&info);
    assert_eq!(before[0], (800, 600, 1));
    assert_eq!(before[1], (0, 0, 0));
    assert_eq!(before[2], (0, 0, 0), "only the device's scanouts");
    assert_eq!(resp_type(&edid), RESP_OK_EDID);
    let after = modes(&info_after);
    assert_eq!(
        after[0],
        (800, 600, 1),
        "an invalid size leaves the old one"
    );
    assert_eq!(after[1], (1280, 720, 1));
}

#[test]
fn test_gpu_edid_has_valid_checksum_and_current_size_as_preferred_mode() {
    // Arrange
    let mut h = Harness::new();
    h.gpu.request_display_size(0, 1280, 800).unwrap();

    // Act
    let (used, resp) = h.send(&cmd(CMD_GET_EDID, &[0, 0]));
    let bad = h.status(&cmd(CMD_GET_EDID, &[1, 0]));

    // Assert
    assert_eq!(used as usize, EDID_RESP_LEN);
    assert_eq!(resp_type(&resp), RESP_OK_EDID);
    let size = u32::from_le_bytes(resp[24..28].try_into().unwrap());
    assert_eq!(size, 128);
    let block = &resp[32..160];
    assert_eq!(block.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
    assert_eq!(block[..8], [0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
    let d = &block[54..72];
    let w = u32::from(d[2]) | (u32::from(d[4] >> 4) << 8);
    let hgt = u32::from(d[5]) | (u32::from(d[7] >> 4) << 8);
    assert_eq!((w, hgt), (1280, 800));
    assert!(resp[160..].iter().all(|&b| b == 0));
    assert_eq!(bad, RESP_ERR_INVALID_SCANOUT_ID);
}

#[test]
fn test_gpu_2d_path_shows_exactly_the_guests_pixels() {
    // Arrange: an 8x4 resource (128 bytes) backed by two non-contiguous
    // ranges split in the middle of row 1.
    let mut h = Harness::new();
    let ranges = [(BACKING_A, 40), (BACKING_B, 88)];
    let image = pattern(128, 3);
    write_backing(h.mem, &ranges, &image);
    h.backed_resource(1, 8, 4, &ranges);

    // Act
    let t = h.status(&transfer(1, Rect::new(0, 0, 8, 4), 0));
    let s = h.status(&set_scanout(0, 1, Rect::new(0, 0, 8, 4)));
    let f = h.status(&flush(1, Rect::new(2, 1, 3, 2)));

    // Assert
    assert_eq!((t, s, f), (RESP_OK_NODATA, RESP_OK_NODATA, RESP_OK_NODATA));
    let frames = h.sink.frames();
    assert_eq!(frames.len(), 1);
    let frame = &frames[0];
    assert_eq!((frame.scanout, frame.width, frame.height), (0, 8, 4));
    assert_eq!(frame.stride, 32);
    assert_eq!(frame.format, PixelFormat::B8G8R8X8);
    assert_eq!(frame.dirty, Rect::new(2, 1, 3, 2));
    let mut expected = Vec::new();
    for row in 1..3 {
        expected.extend_from_slice(&image[row * 32 + 8..row * 32 + 20]);
    }
    assert_eq!(frame.pixels, expected);
}

#[test]
fn test_gpu_partial_transfer_uses_offset_of_rect_top_left() {
    // Arrange
    let mut h = Harness::new();
    let ranges = [(BACKING_A, 40), (BACKING_B, 88)];
    h.backed_resource(1, 8, 4, &ranges);
    let image = pattern(128, 50);
    write_backing(h.mem, &ranges, &image);

    // Act: copy the 2x2 rectangle at (3, 1); its top-left is 1*32 + 3*4
    // bytes into the backing, and rows are 32 bytes apart.
    let t = h.status(&transfer(1, Rect::new(3, 1, 2, 2), 44));
    h.status(&set_scanout(0, 1, Rect::new(0, 0, 8, 4)));
    h.status(&flush(1, Rect::new(0, 0, 8, 4)));

    // Assert
    assert_eq!(t, RESP_OK_NODATA);
    let mut expected = vec![0u8; 128];
    for row in 1..3 {
        let at = row * 32 + 12;
        expected[at..at + 8].copy_from_slice(&image[at..at + 8]);
    }
    assert_eq!(h.sink.frames()[0].pixels, expected);
}

#[test]
fn test_gpu_scanout_offset_within_resource_and_flush_clipping() {
    // Arrange
    let mut h = Harness::new();
    let ranges = [(BACKING_A, 128)];
    let image = pattern(128, 9);
    write_backing(h.mem, &ranges, &image);
    h.backed_resource(1, 8, 4, &ranges);
    h.status(&transfer(1, Rect::new(0, 0, 8, 4), 0));

    // Act: show the 4x2 part at (2, 1); flush a rectangle overlapping it
    // and one beside it.
    h.status(&set_scanout(0, 1, Rect::new(2, 1, 4, 2)));
    let overlap = h.status(&flush(1, Rect::new(0, 0, 4, 4)));
    let beside = h.status(&flush(1, Rect::new(7, 0, 1, 4)));

    // Assert
    assert_eq!((overlap, beside), (RESP_OK_NODATA, RESP_OK_NODATA));
    let frames = h.sink.frames();
    assert_eq!(frames.len(), 1);
    let frame = &frames[0];
    assert_eq!((frame.width, frame.height), (4, 2));
    assert_eq!(frame.dirty, Rect::new(0, 0, 2, 2));
    let mut expected = Vec::new();
    for row in 1..3 {
        expected.extend_from_slice(&image[row * 32 + 8..row * 32 + 16]);
    }
    assert_eq!(frame.pixels, expected);
}

#[test]
fn test_gpu_detach_unref_semantics() {
    // Arrange
    let mut h = Harness::new();
    let ranges = [(BACKING_A, 128)];
    h.backed_resource(1, 8, 4, &ranges);
    h.status(&set_scanout(0, 1, Rect::new(0, 0, 8, 4)));
    let with_backing = h.gpu.resource_memory();

    // Act
    let twice = h.status(&attach(1, &ranges));
    let detach = h.status(&cmd(CMD_RESOURCE_DETACH_BACKING, &[1, 0]));
    let no_backing = h.status(&transfer(1, Rect::new(0, 0, 8, 4), 0));
    let reattach = h.status(&attach(1, &ranges));
    let after_reattach = h.status(&transfer(1, Rect::new(0, 0, 8, 4), 0));
    let unref = h.status(&cmd(CMD_RESOURCE_UNREF, &[1, 0]));
    let memory_after = h.gpu.resource_memory();
    let flush_gone = h.status(&flush(1, Rect::new(0, 0, 8, 4)));
    let unref_again = h.status(&cmd(CMD_RESOURCE_UNREF, &[1, 0]));
    let detach_gone = h.status(&cmd(CMD_RESOURCE_DETACH_BACKING, &[1, 0]));
    let recreate = h.status(&create(1, XRGB, 2, 2));

    // Assert
    assert!(with_backing >= 128);
    assert_eq!(twice, RESP_ERR_UNSPEC);
    assert_eq!(detach, RESP_OK_NODATA);
    assert_eq!(no_backing, RESP_ERR_UNSPEC);
    assert_eq!(reattach, RESP_OK_NODATA);
    assert_eq!(after_reattach, RESP_OK_NODATA);
    assert_eq!(unref, RESP_OK_NODATA);
    assert_eq!(memory_after, 0);
    assert_eq!(h.sink.disabled_scanouts(), [0]);
    assert_eq!(flush_gone, RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(unref_again, RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(detach_gone, RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(recreate, RESP_OK_NODATA);
    assert!(h.sink.frames().is_empty());
}

#[test]
fn test_gpu_set_scanout_resource_zero_disables() {
    // Arrange
    let mut h = Harness::new();
    h.backed_resource(1, 8, 4, &[(BACKING_A, 128)]);
    h.status(&set_scanout(0, 1, Rect::new(0, 0, 8, 4)));

    // Act
    let disable = h.status(&set_scanout(0, 0, Rect::default()));
    let flushed = h.status(&flush(1, Rect::new(0, 0, 8, 4)));
    let bad_scanout = h.status(&set_scanout(1, 0, Rect::default()));

    // Assert
    assert_eq!(disable, RESP_OK_NODATA);
    assert_eq!(flushed, RESP_OK_NODATA);
    assert!(h.sink.frames().is_empty());
    assert_eq!(h.sink.disabled_scanouts(), [0]);
    assert_eq!(bad_scanout, RESP_ERR_INVALID_SCANOUT_ID);
}

#[test]
fn test_gpu_resize_raises_event_and_config_interrupt_then_new_display_info() {
    // Arrange
    let mut h = Harness::new();

    // Act
    h.gpu.request_display_size(0, 1920, 1080).unwrap();
    let config = h.config();
    let (_, resp) = h.send(&cmd(CMD_GET_DISPLAY_INFO, &[]));
    h.gpu.write_config(4, &EVENT_DISPLAY.to_le_bytes());
    let cleared = h.config();

    // Assert
    assert_eq!(config, [EVENT_DISPLAY, 0, 1, 0]);
    assert_eq!(h.interrupts.config.load(Ordering::SeqCst), 1);
    assert_eq!(modes(&resp)[0], (1920, 1080, 1));
    assert_eq!(cleared, [0, 0, 1, 0]);
}

#[test]
fn test_gpu_resize_rejects_bad_sizes_and_scanouts_and_can_disconnect() {
    // Arrange
    let mut h = Harness::new();

    // Act
    let zero_w = h.gpu.request_display_size(0, 0, 600);
    let huge = h.gpu.request_display_size(0, 16385, 600);
    let no_scanout = h.gpu.request_display_size(1, 800, 600);
    let before = h.config();
    let disconnect = h.gpu.request_display_size(0, 0, 0);
    let (_, resp) = h.send(&cmd(CMD_GET_DISPLAY_INFO, &[]));

    // Assert
    assert!(matches!(zero_w, Err(GpuError::DisplaySize { .. })));
    assert!(matches!(huge, Err(GpuError::DisplaySize { .. })));
    assert!(matches!(no_scanout, Err(GpuError::NoScanout(1))));
    assert_eq!(before[0], 0);
    assert!(disconnect.is_ok());
    assert_eq!(modes(&resp)[0], (0, 0, 0));
}

#[test]
fn test_gpu_cursor_update_move_and_hide() {
    // Arrange
    let mut h = Harness::new();
    let ranges = [(BACKING_A, 64 * 64 * 4)];
    let image = pattern(64 * 64 * 4, 1);
    write_backing(h.mem, &ranges, &image);
    h.backed_resource(7, 64, 64, &ranges);
    h.status(&transfer(7, Rect::new(0, 0, 64, 64), 0));
    h.backed_resource(8, 32, 32, &ranges);

    // Act: Linux sends cursor commands without a response buffer.
    let update = cursor(CMD_UPDATE_CURSOR, 0, 100, 50, 7, (3, 4));
    h.mem.write_slice(&update, GuestAddress(CMD)).unwrap();
    let used = h.submit(CURSOR_QUEUE, &[(CMD, update.len() as u32, false)]);
    let (_, moved) = h.send_on(CURSOR_QUEUE, &cursor(CMD_MOVE_CURSOR, 0, 10, 20, 0, (0, 0)));
    let (_, hidden) = h.send_on(CURSOR_QUEUE, &cursor(CMD_UPDATE_CURSOR, 0, 0, 0, 0, (0, 0)));
    let (_, wrong_size) = h.send_on(CURSOR_QUEUE, &cursor(CMD_UPDATE_CURSOR, 0, 0, 0, 8, (0, 0)));
    let (_, bad_hot) = h.send_on(
        CURSOR_QUEUE,
        &cursor(CMD_UPDATE_CURSOR, 0, 0, 0, 7, (64, 0)),
    );
    let (_, bad_scanout) = h.send_on(CURSOR_QUEUE, &cursor(CMD_MOVE_CURSOR, 3, 0, 0, 0, (0, 0)));
    let on_control = h.status(&cursor(CMD_MOVE_CURSOR, 0, 1, 1, 0, (0, 0)));

    // Assert
    assert_eq!(used, 0);
    assert_eq!(resp_type(&moved), RESP_OK_NODATA);
    assert_eq!(resp_type(&hidden), RESP_OK_NODATA);
    assert_eq!(resp_type(&wrong_size), RESP_ERR_INVALID_PARAMETER);
    assert_eq!(resp_type(&bad_hot), RESP_ERR_INVALID_PARAMETER);
    assert_eq!(resp_type(&bad_scanout), RESP_ERR_INVALID_SCANOUT_ID);
    assert_eq!(on_control, RESP_ERR_UNSPEC);
    assert_eq!(
        h.sink.cursors(),
        [
            RecordedCursor::Show {
                scanout: 0,
                at: [100, 50, 3, 4],
                image,
            },
            RecordedCursor::Move {
                scanout: 0,
                x: 10,
                y: 20
            },
            RecordedCursor::Hide { scanout: 0 },
        ]
    );
}

#[test]
fn test_gpu_fenced_command_echoes_fence_and_context() {
    // Arrange
    let mut h = Harness::new();
    let mut command = Vec::new();
    CtrlHeader {
        kind: CMD_RESOURCE_CREATE_2D,
        flags: FLAG_FENCE,
        fence_id: 0xdead_beef_0042,
        ctx_id: 5,
        ring_idx: 0,
    }
    .encode(&mut command);
    for f in [1u32, XRGB, 4, 4] {
        command.extend_from_slice(&f.to_le_bytes());
    }

    // Act
    let (used, resp) = h.send(&command);
    let (_, unfenced) = h.send(&create(2, XRGB, 4, 4));

    // Assert
    assert_eq!(used as usize, HDR_LEN);
    let header = CtrlHeader::parse(&resp).unwrap();
    assert_eq!(header.kind, RESP_OK_NODATA);
    assert_eq!(header.flags, FLAG_FENCE);
    assert_eq!(header.fence_id, 0xdead_beef_0042);
    assert_eq!(header.ctx_id, 5);
    let header = CtrlHeader::parse(&unfenced).unwrap();
    assert_eq!((header.flags, header.fence_id), (0, 0));
}

#[test]
fn test_gpu_create_refuses_bad_sizes_formats_ids_and_memory_cap() {
    // Arrange
    let mut h = Harness::with(GpuConfig {
        max_host_memory: 1 << 20,
        ..GpuConfig::default()
    });

    // Act
    let zero = h.status(&create(1, XRGB, 0, 10));
    let huge = h.status(&create(1, XRGB, 16385, 1));
    let huge_h = h.status(&create(1, XRGB, 1, u32::MAX));
    let format = h.status(&create(1, 5, 10, 10));
    let id_zero = h.status(&create(0, XRGB, 10, 10));
    let too_big = h.status(&create(1, XRGB, 16384, 16384));
    let first = h.status(&create(1, XRGB, 256, 512));
    let taken = h.status(&create(1, XRGB, 1, 1));
    let over = h.status(&create(2, XRGB, 256, 512));
    let used = h.gpu.resource_memory();

    // Assert
    assert_eq!(zero, RESP_ERR_INVALID_PARAMETER);
    assert_eq!(huge, RESP_ERR_INVALID_PARAMETER);
    assert_eq!(huge_h, RESP_ERR_INVALID_PARAMETER);
    assert_eq!(format, RESP_ERR_INVALID_PARAMETER);
    assert_eq!(id_zero, RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(too_big, RESP_ERR_OUT_OF_MEMORY);
    assert_eq!(first, RESP_OK_NODATA);
    assert_eq!(taken, RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(over, RESP_ERR_OUT_OF_MEMORY);
    assert!(used <= 1 << 20);
}

#[test]
fn test_gpu_unknown_ids_get_invalid_resource_or_scanout() {
    // Arrange
    let mut h = Harness::new();
    let r = Rect::new(0, 0, 1, 1);

    // Act
    let results = [
        h.status(&transfer(99, r, 0)),
        h.status(&flush(99, r)),
        h.status(&attach(99, &[(BACKING_A, 16)])),
        h.status(&cmd(CMD_RESOURCE_DETACH_BACKING, &[99, 0])),
        h.status(&cmd(CMD_RESOURCE_UNREF, &[99, 0])),
        h.status(&set_scanout(0, 99, r)),
    ];
    let scanout = h.status(&set_scanout(16, 0, r));

    // Assert
    assert!(results.iter().all(|&s| s == RESP_ERR_INVALID_RESOURCE_ID));
    assert_eq!(scanout, RESP_ERR_INVALID_SCANOUT_ID);
}

#[test]
fn test_gpu_backing_outside_memory_is_refused_untouched() {
    // Arrange
    let mut h = Harness::new();
    h.status(&create(1, XRGB, 8, 4));

    // Act
    let past_end = h.status(&attach(1, &[(BACKING_A, 64), (MEM_SIZE - 8, 16)]));
    let wraps = h.status(&attach(1, &[(u64::MAX - 4, 16)]));
    let outside = h.status(&attach(1, &[(MEM_SIZE, 128)]));
    let huge_count = h.status(&cmd(CMD_RESOURCE_ATTACH_BACKING, &[1, u32::MAX]));
    let over_cap = h.status(&cmd(
        CMD_RESOURCE_ATTACH_BACKING,
        &[1, MAX_BACKING_ENTRIES + 1],
    ));
    let still_none = h.status(&transfer(1, Rect::new(0, 0, 8, 4), 0));

    // Assert
    assert_eq!(past_end, RESP_ERR_INVALID_PARAMETER);
    assert_eq!(wraps, RESP_ERR_INVALID_PARAMETER);
    assert_eq!(outside, RESP_ERR_INVALID_PARAMETER);
    assert_eq!(huge_count, RESP_ERR_INVALID_PARAMETER);
    assert_eq!(over_cap, RESP_ERR_INVALID_PARAMETER);
    assert_eq!(still_none, RESP_ERR_UNSPEC);
}

#[test]
fn test_gpu_attach_entries_in_a_separate_buffer_and_missing_entries() {
    // Arrange: Linux sends the entries in their own descriptor.
    let mut h = Harness::new();
    h.status(&create(1, XRGB, 8, 4));
    let full = attach(1, &[(BACKING_A, 64), (BACKING_B, 64)]);
    let (head, entries) = full.split_at(ATTACH_BACKING_LEN);
    h.mem.write_slice(head, GuestAddress(CMD)).unwrap();
    h.mem.write_slice(entries, GuestAddress(ENTRIES)).unwrap();

    // Act: first claim three entries with two present, then send it right.
    let mut lying = head.to_vec();
    lying[28..32].copy_from_slice(&3u32.to_le_bytes());
    h.mem.write_slice(&lying, GuestAddress(CMD)).unwrap();
    h.mem
        .write_slice(&[UNTOUCHED; 4], GuestAddress(RESP))
        .unwrap();
    let short = h.submit(
        CONTROL_QUEUE,
        &[
            (CMD, head.len() as u32, false),
            (ENTRIES, entries.len() as u32, false),
            (RESP, RESP_CAP, true),
        ],
    );
    let untouched = h.guest(RESP, 4);
    h.mem.write_slice(head, GuestAddress(CMD)).unwrap();
    let ok = h.submit(
        CONTROL_QUEUE,
        &[
            (CMD, head.len() as u32, false),
            (ENTRIES, entries.len() as u32, false),
            (RESP, RESP_CAP, true),
        ],
    );
    let resp = h.guest(RESP, HDR_LEN);

    // Assert
    assert_eq!(short, 0);
    assert_eq!(untouched, [UNTOUCHED; 4]);
    assert_eq!(ok as usize, HDR_LEN);
    assert_eq!(resp_type(&resp), RESP_OK_NODATA);
    assert_eq!(
        h.status(&transfer(1, Rect::new(0, 0, 8, 4), 0)),
        RESP_OK_NODATA
    );
}

#[test]
fn test_gpu_transfer_rects_and_offsets_outside_are_refused() {
    // Arrange
    let mut h = Harness::new();
    h.backed_resource(1, 8, 4, &[(BACKING_A, 128)]);

    // Act
    let results = [
        h.status(&transfer(1, Rect::new(u32::MAX, 0, 2, 1), 0)),
        h.status(&transfer(1, Rect::new(0, u32::MAX, 1, 2), 0)),
        h.status(&transfer(1, Rect::new(0, 0, 9, 1), 0)),
        h.status(&transfer(1, Rect::new(0, 3, 8, 2), 0)),
        h.status(&transfer(1, Rect::new(0, 0, 1, 1), u64::MAX)),
        h.status(&transfer(1, Rect::new(0, 0, 1, 1), u64::MAX - 2)),
        // The last row would end one byte past the 128-byte backing.
        h.status(&transfer(1, Rect::new(0, 0, 8, 4), 1)),
        h.status(&transfer(1, Rect::new(7, 3, 1, 1), 125)),
        h.status(&set_scanout(0, 1, Rect::new(1, 0, 8, 4))),
        h.status(&set_scanout(0, 1, Rect::new(0, 0, 0, 4))),
        h.status(&flush(1, Rect::new(0, 0, 8, 5))),
        h.status(&flush(1, Rect::new(u32::MAX, u32::MAX, 2, 2))),
    ];
    let edge = h.status(&transfer(1, Rect::new(7, 3, 1, 1), 124));

    // Assert
    assert!(
        results.iter().all(|&s| s == RESP_ERR_INVALID_PARAMETER),
        "{results:x?}"
    );
    assert_eq!(edge, RESP_OK_NODATA);
}

#[test]
fn test_gpu_truncated_commands_complete_with_zero_and_do_nothing() {
    // Arrange
    let mut h = Harness::new();
    let full = create(1, XRGB, 4, 4);

    // Act
    let (header_short, _) = h.send(&full[..20]);
    let (body_short, _) = h.send(&full[..30]);
    let untouched = h.guest(RESP, 4);
    let later = h.status(&full);

    // Assert
    assert_eq!(header_short, 0);
    assert_eq!(body_short, 0);
    assert_eq!(untouched, [UNTOUCHED; 4]);
    assert_eq!(later, RESP_OK_NODATA, "the short create created nothing");
}

#[test]
fn test_gpu_missing_or_short_response_buffer_completes_with_zero() {
    // Arrange
    let mut h = Harness::new();
    let command = create(1, XRGB, 4, 4);
    h.mem.write_slice(&command, GuestAddress(CMD)).unwrap();
    let info = cmd(CMD_GET_DISPLAY_INFO, &[]);

    // Act
    let no_resp = h.submit(CONTROL_QUEUE, &[(CMD, command.len() as u32, false)]);
    h.mem.write_slice(&info, GuestAddress(CMD)).unwrap();
    let short_resp = h.submit(
        CONTROL_QUEUE,
        &[
            (CMD, info.len() as u32, false),
            (RESP, HDR_LEN as u32, true),
        ],
    );
    let untouched = h.guest(RESP, HDR_LEN);
    let created = h.status(&command);

    // Assert
    assert_eq!(no_resp, 0);
    assert_eq!(short_resp, 0);
    assert_eq!(untouched, [UNTOUCHED; HDR_LEN]);
    assert_eq!(created, RESP_OK_NODATA, "the unanswered create did nothing");
}

#[test]
fn test_gpu_bad_descriptors_complete_with_zero() {
    // Arrange
    let mut h = Harness::new();
    let info = cmd(CMD_GET_DISPLAY_INFO, &[]);
    h.mem.write_slice(&info, GuestAddress(CMD)).unwrap();

    // Act
    let outside = h.submit(
        CONTROL_QUEUE,
        &[(CMD, 24, false), (MEM_SIZE - 8, 512, true)],
    );
    let wraps = h.submit(
        CONTROL_QUEUE,
        &[(u64::MAX - 8, 24, false), (RESP, 512, true)],
    );
    let order = h.submit(CONTROL_QUEUE, &[(RESP, 512, true), (CMD, 24, false)]);
    let split = h.submit(
        CONTROL_QUEUE,
        &[
            (CMD, 10, false),
            (CMD + 10, 14, false),
            (RESP, 100, true),
            (RESP + 100, 400, true),
        ],
    );

    // Assert
    assert_eq!((outside, wraps, order), (0, 0, 0));
    assert_eq!(split as usize, DISPLAY_INFO_LEN);
    assert_eq!(resp_type(&h.guest(RESP, 4)), RESP_OK_DISPLAY_INFO);
    assert!(!h.gpu.needs_reset());
}

#[test]
fn test_gpu_unsupported_context_and_capset_commands() {
    // Arrange
    let mut h = Harness::new();

    // Act
    let unknown = h.status(&cmd(0x1234, &[]));
    let blob = h.status(&cmd(CMD_RESOURCE_CREATE_2D + 11, &[0; 12]));
    let context = h.status(&cmd(CMD_CTX_CREATE, &[0; 20]));
    let capset = h.status(&cmd(CMD_GET_CAPSET_INFO, &[0, 0]));

    // Assert
    assert_eq!(unknown, RESP_ERR_UNSPEC);
    assert_eq!(blob, RESP_ERR_UNSPEC);
    assert_eq!(context, RESP_ERR_INVALID_CONTEXT_ID);
    assert_eq!(capset, RESP_ERR_INVALID_PARAMETER);
}

#[test]
fn test_gpu_flush_reaches_every_scanout_showing_the_resource() {
    // Arrange
    let mut h = Harness::with(GpuConfig {
        num_scanouts: 2,
        ..GpuConfig::default()
    });
    h.backed_resource(1, 8, 4, &[(BACKING_A, 128)]);
    h.status(&set_scanout(0, 1, Rect::new(0, 0, 8, 4)));
    h.status(&set_scanout(1, 1, Rect::new(4, 0, 4, 4)));

    // Act
    h.status(&flush(1, Rect::new(0, 0, 8, 4)));

    // Assert
    let frames = h.sink.frames();
    assert_eq!(frames.len(), 2);
    assert_eq!((frames[0].scanout, frames[0].width), (0, 8));
    assert_eq!((frames[1].scanout, frames[1].width), (1, 4));
    assert_eq!(frames[1].dirty, Rect::new(0, 0, 4, 4));
}

#[test]
fn test_gpu_bad_avail_index_sets_needs_reset() {
    // Arrange
    let mut h = Harness::new();
    h.vq(CONTROL_QUEUE).avail().idx().store(1000);

    // Act
    h.gpu.queue_notify(CONTROL_QUEUE);

    // Assert
    assert!(h.gpu.needs_reset());
    assert!(VirtioDevice::needs_reset(&h.gpu));
    assert_eq!(h.interrupts.used.load(Ordering::SeqCst), 0);
}

#[test]
fn test_gpu_reset_drops_resources_and_events() {
    // Arrange
    let mut h = Harness::new();
    h.backed_resource(1, 8, 4, &[(BACKING_A, 128)]);
    h.gpu.request_display_size(0, 800, 600).unwrap();

    // Act
    h.gpu.reset();

    // Assert
    assert_eq!(h.gpu.resource_memory(), 0);
    assert_eq!(h.config(), [0, 0, 1, 0]);
    assert_eq!(h.gpu.acked_features(), 0);
}

#[test]
fn test_gpu_reset_tells_the_sink_its_scanouts_show_nothing() {
    // Arrange: scanout 0 shows resource 1.
    let mut h = Harness::new();
    h.backed_resource(1, 8, 4, &[(BACKING_A, 128)]);
    let shown = h.status(&set_scanout(0, 1, Rect::new(0, 0, 8, 4)));

    // Act
    h.gpu.reset();
    h.gpu.reset();

    // Assert: told once (a second reset finds nothing shown).
    assert_eq!(shown, RESP_OK_NODATA);
    assert_eq!(h.sink.disabled_scanouts(), [0]);
}

#[test]
fn test_gpu_serve_queue_serves_unactivated_queue() {
    // Arrange
    let mem = mem();
    let mut gpu = Gpu::new(GpuConfig::default(), Arc::new(NullSink)).unwrap();
    let vq = Mock::create(&mem, GuestAddress(CONTROL_AT), QSIZE);
    let mut queue = vq.create_queue::<Queue>().unwrap();
    let info = cmd(CMD_GET_DISPLAY_INFO, &[]);
    mem.write_slice(&info, GuestAddress(CMD)).unwrap();
    let descs = [
        RawDescriptor::from(SplitDescriptor::new(CMD, 24, VRING_DESC_F_NEXT as u16, 1)),
        RawDescriptor::from(SplitDescriptor::new(
            RESP,
            512,
            VRING_DESC_F_WRITE as u16,
            0,
        )),
    ];
    vq.add_desc_chains(&descs, 0).unwrap();

    // Act
    let result = gpu.serve_queue(CONTROL_QUEUE, &mem, &mut queue);

    // Assert
    assert!(result.is_ok_and(|used| used));
    let elem = vq.used().ring().ref_at(0).unwrap().load();
    assert_eq!(elem.len() as usize, DISPLAY_INFO_LEN);
}

#[test]
fn test_gpu_identity_config_and_construction_limits() {
    // Arrange
    let gpu = Gpu::new(GpuConfig::default(), Arc::new(NullSink)).unwrap();

    // Act
    let none = Gpu::new(
        GpuConfig {
            num_scanouts: 0,
            ..GpuConfig::default()
        },
        Arc::new(NullSink),
    );
    let seventeen = Gpu::new(
        GpuConfig {
            num_scanouts: 17,
            ..GpuConfig::default()
        },
        Arc::new(NullSink),
    );
    let sixteen = Gpu::new(
        GpuConfig {
            num_scanouts: 16,
            ..GpuConfig::default()
        },
        Arc::new(NullSink),
    );

    // Assert
    assert_eq!(gpu.device_type(), 16);
    assert_eq!(gpu.queue_max_sizes(), &[QUEUE_SIZE, QUEUE_SIZE]);
    assert_eq!(gpu.features(), VIRTIO_F_VERSION_1 | (1 << F_EDID));
    assert!(matches!(none, Err(GpuError::ScanoutCount(0))));
    assert!(matches!(seventeen, Err(GpuError::ScanoutCount(17))));
    assert_eq!(sixteen.unwrap().num_scanouts(), 16);
}

#[test]
fn test_gpu_activate_with_one_queue_fails() {
    // Arrange
    let mem = mem();
    let mut gpu = Gpu::new(GpuConfig::default(), Arc::new(NullSink)).unwrap();
    let vq = Mock::create(&mem, GuestAddress(CONTROL_AT), QSIZE);

    // Act
    let result = gpu.activate(ActivationContext {
        mem: mem.clone(),
        queues: vec![vq.create_queue::<Queue>().unwrap()],
        interrupt: Arc::new(Interrupts::default()),
    });

    // Assert
    assert!(matches!(
        result,
        Err(ActivateError::QueueCount {
            expected: 2,
            got: 1
        })
    ));
}

/// A harness whose GPU has shown an 8x4 resource on scanout 0 (flushed
/// whole) and a 64x64 cursor at (100, 50), moved to (10, 20).
fn showing_harness() -> (Harness, Vec<u8>) {
    let mut h = Harness::new();
    let ranges = [(BACKING_A, 40), (BACKING_B, 88)];
    let image = pattern(128, 9);
    write_backing(h.mem, &ranges, &image);
    h.backed_resource(1, 8, 4, &ranges);
    h.status(&transfer(1, Rect::new(0, 0, 8, 4), 0));
    h.status(&set_scanout(0, 1, Rect::new(0, 0, 8, 4)));
    h.status(&flush(1, Rect::new(0, 0, 8, 4)));
    let cursor_ranges = [(0x10_0000, 64 * 64 * 4)];
    write_backing(h.mem, &cursor_ranges, &pattern(64 * 64 * 4, 5));
    h.backed_resource(7, 64, 64, &cursor_ranges);
    h.status(&transfer(7, Rect::new(0, 0, 64, 64), 0));
    h.send_on(
        CURSOR_QUEUE,
        &cursor(CMD_UPDATE_CURSOR, 0, 100, 50, 7, (3, 4)),
    );
    h.send_on(CURSOR_QUEUE, &cursor(CMD_MOVE_CURSOR, 0, 10, 20, 0, (0, 0)));
    (h, image)
}

/// A second activated GPU over the same guest memory, as a restore
/// builds one.
fn fresh_gpu(h: &Harness) -> (Gpu, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let mut gpu = Gpu::new(GpuConfig::default(), sink.clone()).unwrap();
    gpu.ack_features(gpu.features());
    gpu.activate(ActivationContext {
        mem: h.mem.clone(),
        queues: vec![
            h.control.create_queue::<Queue>().unwrap(),
            h.cursor.create_queue::<Queue>().unwrap(),
        ],
        interrupt: Arc::new(Interrupts::default()),
    })
    .unwrap();
    (gpu, sink)
}

#[test]
fn test_gpu_saved_state_restores_resources_scanout_and_cursor_and_repaints_the_sink() {
    // Arrange
    let (mut h, image) = showing_harness();
    let saved = h.gpu.save_state().unwrap();
    // The guest's memory changes after the save: the host copy saved is
    // what shows, not the backing.
    write_backing(h.mem, &[(BACKING_A, 40), (BACKING_B, 88)], &[0; 128]);

    // Act
    let (mut restored, sink) = fresh_gpu(&h);
    restored.restore_state(&saved).unwrap();

    // Assert: the picture and the cursor are handed over again.
    let frames = sink.frames();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].dirty, Rect::new(0, 0, 8, 4));
    assert_eq!(frames[0].pixels, image);
    assert_eq!(
        sink.cursors(),
        [RecordedCursor::Show {
            scanout: 0,
            at: [10, 20, 3, 4],
            image: pattern(64 * 64 * 4, 5),
        }]
    );
    assert_eq!(restored.resource_memory(), h.gpu.resource_memory());
    // And it serves on: the resource's backing is attached again.
    write_backing(h.mem, &[(BACKING_A, 40), (BACKING_B, 88)], &image);
    h.gpu = restored;
    h.sink = sink;
    assert_eq!(
        h.status(&transfer(1, Rect::new(0, 0, 8, 4), 0)),
        RESP_OK_NODATA
    );
    assert_eq!(h.status(&flush(1, Rect::new(0, 0, 8, 4))), RESP_OK_NODATA);
    assert_eq!(h.sink.frames().last().unwrap().pixels, image);
}

#[test]
fn test_gpu_hostile_saved_states_are_refused_and_change_nothing() {
    let (h, _) = showing_harness();
    let (mut gpu, _) = fresh_gpu(&h);
    let saved = gpu.save_state().unwrap();
    let (mut showing, _) = showing_harness();
    let good = showing.gpu.save_state().unwrap();

    // Garbage, and a state cut short.
    for bytes in [&[0xffu8; 7][..], &good[..good.len() / 2]] {
        assert!(gpu.restore_state(bytes).is_err());
    }
    // A backing outside guest memory, a resource larger than the host
    // memory cap, and a scanout showing past its resource: encoded as a
    // forged file would hold them.
    #[derive(serde::Serialize)]
    struct Resource(u32, u32, u32, u32, Option<Vec<(u64, u32)>>, Vec<u8>);
    #[derive(serde::Serialize)]
    struct Scanout(bool, u32, u32, Option<(u32, [u32; 4])>);
    #[derive(serde::Serialize)]
    struct State(u32, Vec<Scanout>, Vec<Resource>, Option<()>);
    let forged = |resource: Resource, shown: Option<(u32, [u32; 4])>| {
        postcard::to_stdvec(&State(
            0,
            vec![Scanout(true, 1024, 768, shown)],
            vec![resource],
            None,
        ))
        .unwrap()
    };
    let outside = forged(
        Resource(
            1,
            XRGB,
            8,
            4,
            Some(vec![(MEM_SIZE - 16, 128)]),
            vec![0; 128],
        ),
        None,
    );
    let huge = forged(Resource(1, XRGB, 16384, 16384, None, Vec::new()), None);
    let wrong_pixels = forged(Resource(1, XRGB, 8, 4, None, vec![0; 12]), None);
    let past_resource = forged(
        Resource(1, XRGB, 8, 4, None, vec![0; 128]),
        Some((1, [4, 0, 8, 4])),
    );
    let unknown_resource = forged(
        Resource(1, XRGB, 8, 4, None, vec![0; 128]),
        Some((2, [0, 0, 8, 4])),
    );
    for bytes in [outside, huge, wrong_pixels, past_resource, unknown_resource] {
        assert!(gpu.restore_state(&bytes).is_err());
    }

    // Nothing changed: the device saves what it saved before.
    assert_eq!(gpu.save_state().unwrap(), saved);
    assert_eq!(gpu.resource_memory(), 0);
}
