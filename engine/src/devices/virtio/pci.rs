// SPDX-License-Identifier: Apache-2.0
//! The modern virtio-pci transport (virtio 1.x, spec 4.1) around any
//! [`VirtioDevice`]: vendor 0x1AF4, device 0x1040 + type, one 32-bit
//! memory BAR holding the common configuration (0x0000), ISR status
//! (0x1000), device configuration (0x2000) and queue notifications
//! (0x3000, 4 bytes per queue), each announced by a vendor-specific PCI
//! capability, plus the PCI configuration access capability and, when the
//! VM gives the device an [`MsiSink`], MSI-X (table at 0x4000, pending
//! bits at 0x6000, one vector per queue plus one for configuration).
//!
//! Interrupts are legacy INTx (pin A) until the driver enables MSI-X: the
//! ISR status byte holds the reason and the line stays raised until the
//! driver reads ISR. The guest's interrupt-line register names the IRQ
//! (firmware routes it). With MSI-X enabled, a queue or configuration
//! event fires the vector the driver assigned in `queue_msix_vector` or
//! `msix_config` (none for VIRTIO_MSI_NO_VECTOR) and INTx stays low.
//!
//! Queue notifications arrive either as MMIO writes on the vCPU thread or,
//! once [`VirtioPciDevice::use_ioeventfd`] is on and the BAR is placed, as
//! ioeventfds KVM signals without leaving the kernel; a [`NotifyHandler`]
//! on the VM's event loop turns those into the same `queue_notify` under
//! the transport's lock. A device may signal from either thread, so the
//! interrupt path is safe to call from any thread.
//!
//! Everything here is driven by guest writes: queue sizes, addresses and
//! feature bits are checked before a device is activated, and a device
//! that fails to activate sets DEVICE_NEEDS_RESET instead of stopping the VM.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

mod persist;

use super::{ActivationContext, VIRTIO_F_VERSION_1, VirtioDevice, VirtioInterrupt};
use crate::bus::{fill_le, le_value};
use crate::devices::irq::LevelIrq;
use crate::devices::pci::msix::{MsiSink, Msix};
use crate::devices::pci::{BarKind, BarMapping, ConfigSpace, PciDevice, reg};
use crate::event_loop::EventHandler;
use crate::memory::GuestMemoryMmap;

/// Virtio's PCI vendor ID.
pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// Modern device IDs are this plus the virtio device type.
const MODERN_DEVICE_BASE: u16 = 0x1040;

const BAR_SIZE: u64 = 0x8000;
const COMMON_OFFSET: u64 = 0x0000;
const COMMON_LEN: u64 = 0x38;
const ISR_OFFSET: u64 = 0x1000;
const DEVICE_OFFSET: u64 = 0x2000;
const DEVICE_LEN: u64 = 0x1000;
const NOTIFY_OFFSET: u64 = 0x3000;
const NOTIFY_LEN: u64 = 0x1000;
const NOTIFY_MULTIPLIER: u32 = 4;
const MSIX_TABLE_OFFSET: u64 = 0x4000;
const MSIX_PBA_OFFSET: u64 = 0x6000;
/// The regions' own size limits (0x2000 each) bound the vector count.
const MSIX_MAX_VECTORS: u16 = 0x200;

const CAP_VENDOR: u8 = 0x09;
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;
const CAP_PCI_CFG: u8 = 5;

/// Device status bits (spec 2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready: the device may run.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from.
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 0x80;
}

const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;
/// VIRTIO_MSI_NO_VECTOR: no MSI-X vector for this event.
pub const NO_VECTOR: u16 = 0xffff;

/// The MSI-X table and the vectors the driver assigned to events.
struct MsixVectors {
    table: Msix,
    config: u16,
    queues: Vec<u16>,
}

impl MsixVectors {
    /// What the device accepts for a vector register: a vector it has, or
    /// NO_VECTOR (which the driver reads back as a refusal).
    fn accept(&self, vector: u16) -> u16 {
        if vector < self.table.vectors() {
            vector
        } else {
            NO_VECTOR
        }
    }
}

/// Interrupt signalling shared by the transport and its device. The device
/// may signal from a thread other than the vCPU that reads ISR (virtio-net's
/// receive path and ioeventfd notifications run on the VM's event loop), so
/// the ISR byte and the line change together under one lock: a reason set
/// while the driver reads ISR either is in the value it reads or leaves the
/// line raised. The MSI-X state has its own lock, taken last everywhere
/// (transport, then device, then this), and it takes no other lock.
struct IntxInterrupt {
    isr: Mutex<u8>,
    line: AtomicU8,
    irq: Arc<dyn LevelIrq>,
    msix: Option<Mutex<MsixVectors>>,
}

impl IntxInterrupt {
    /// Fires the vector `pick` chooses when MSI-X is enabled; false when
    /// it is not, and INTx carries the event.
    fn fire_msix(&self, pick: impl FnOnce(&MsixVectors) -> u16) -> bool {
        let Some(msix) = &self.msix else {
            return false;
        };
        let mut msix = msix.lock().unwrap_or_else(|e| e.into_inner());
        if !msix.table.enabled() {
            return false;
        }
        let vector = pick(&msix);
        if vector != NO_VECTOR {
            msix.table.fire(vector);
        }
        true
    }

    /// Runs `f` on the MSI-X state, if the device has MSI-X.
    fn with_msix<T>(&self, f: impl FnOnce(&mut MsixVectors) -> T) -> Option<T> {
        let msix = self.msix.as_ref()?;
        let mut msix = msix.lock().unwrap_or_else(|e| e.into_inner());
        Some(f(&mut msix))
    }

    fn raise(&self, reason: u8) {
        let mut isr = self.isr.lock().unwrap_or_else(|e| e.into_inner());
        *isr |= reason;
        self.irq
            .set_level(u32::from(self.line.load(Ordering::SeqCst)), true);
    }

    /// Reads and clears ISR, lowering the line (spec 4.1.4.5).
    fn take_isr(&self) -> u8 {
        let mut isr = self.isr.lock().unwrap_or_else(|e| e.into_inner());
        let value = std::mem::take(&mut *isr);
        self.irq
            .set_level(u32::from(self.line.load(Ordering::SeqCst)), false);
        value
    }
}

impl VirtioInterrupt for IntxInterrupt {
    fn signal_used_queue(&self, queue: u16) {
        let vector = |m: &MsixVectors| {
            m.queues
                .get(usize::from(queue))
                .copied()
                .unwrap_or(NO_VECTOR)
        };
        if !self.fire_msix(vector) {
            self.raise(ISR_QUEUE);
        }
    }

    fn signal_config_change(&self) {
        if !self.fire_msix(|m| m.config) {
            self.raise(ISR_CONFIG);
        }
    }
}

/// Registers queue-notify addresses with KVM as ioeventfds.
pub trait NotifyEvents: Send + Sync {
    /// A write of any size to guest address `addr` signals `fd`.
    fn register(&self, fd: &EventFd, addr: u64) -> io::Result<()>;
    /// Undoes [`register`](Self::register).
    fn unregister(&self, fd: &EventFd, addr: u64) -> io::Result<()>;
}

/// [`NotifyEvents`] on a VM (`KVM_IOEVENTFD` on the MMIO bus, no data match).
pub struct KvmNotifyEvents {
    vm: Arc<VmFd>,
}

impl KvmNotifyEvents {
    /// Registrations on `vm`.
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self { vm }
    }
}

impl NotifyEvents for KvmNotifyEvents {
    fn register(&self, fd: &EventFd, addr: u64) -> io::Result<()> {
        self.vm
            .register_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }

    fn unregister(&self, fd: &EventFd, addr: u64) -> io::Result<()> {
        self.vm
            .unregister_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}

/// One eventfd per queue and where they are registered.
struct Ioevents {
    registrar: Arc<dyn NotifyEvents>,
    fds: Vec<EventFd>,
    /// BAR 0's address while the fds are registered there.
    base: Option<u64>,
}

impl Ioevents {
    fn notify_addr(base: u64, queue: usize) -> u64 {
        base + NOTIFY_OFFSET + queue as u64 * u64::from(NOTIFY_MULTIPLIER)
    }

    fn unregister(&mut self) {
        let Some(base) = self.base.take() else {
            return;
        };
        for (queue, fd) in self.fds.iter().enumerate() {
            if let Err(e) = self
                .registrar
                .unregister(fd, Self::notify_addr(base, queue))
            {
                log::warn!("virtio: cannot unregister the notify ioeventfd of queue {queue}: {e}");
            }
        }
    }

    /// Registers every queue's fd at BAR 0 = `base`, or none: a failure
    /// leaves all notifications on the MMIO path.
    fn register(&mut self, base: u64) {
        for (queue, fd) in self.fds.iter().enumerate() {
            if let Err(e) = self.registrar.register(fd, Self::notify_addr(base, queue)) {
                log::warn!("virtio: no ioeventfd for queue {queue} ({e}); notifications exit");
                for (done, fd) in self.fds.iter().enumerate().take(queue) {
                    let _ = self.registrar.unregister(fd, Self::notify_addr(base, done));
                }
                return;
            }
        }
        self.base = Some(base);
    }
}

/// Where a virtio function's registers sit and what class it says it is:
/// a function that is more than a virtio device (virtio-vga, whose BAR 0
/// is the VGA's video memory) moves the virtio BAR and takes its class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The BAR holding the virtio structures (0 to 5).
    pub bar: u8,
    /// PCI class and subclass.
    pub class: (u8, u8),
}

impl Placement {
    /// BAR 0, and the class of a device of `device_type` (mass storage
    /// for block, "other" otherwise).
    pub fn for_type(device_type: u32) -> Self {
        let class = match device_type {
            super::device_type::BLOCK => (0x01, 0x00),
            _ => (0xff, 0x00),
        };
        Self { bar: 0, class }
    }
}

/// A virtio device on the PCI bus.
pub struct VirtioPciDevice {
    config: ConfigSpace,
    /// The BAR holding the virtio structures.
    bar: u8,
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<IntxInterrupt>,
    queues: Vec<Queue>,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    queue_select: u16,
    status: u8,
    config_generation: u8,
    active: bool,
    pci_cfg_cap: usize,
    msix_cap: usize,
    ioevents: Option<Ioevents>,
}

impl VirtioPciDevice {
    /// Wraps `device`, whose queues live in `mem` and whose interrupts go
    /// to `irq`.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irq: Arc<dyn LevelIrq>,
    ) -> Self {
        let placement = Placement::for_type(device.device_type());
        Self::placed(device, mem, irq, placement)
    }

    /// Wraps `device` as [`new`](Self::new) does, its registers in the BAR
    /// and its class as `placement` says.
    pub fn placed(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irq: Arc<dyn LevelIrq>,
        placement: Placement,
    ) -> Self {
        let Placement {
            bar,
            class: (class, subclass),
        } = placement;
        let pci_id = MODERN_DEVICE_BASE.wrapping_add(device.device_type() as u16);
        let mut config = ConfigSpace::new(VIRTIO_PCI_VENDOR, pci_id, class, subclass, 0x01);
        config.set_u16(reg::SUBSYSTEM_VENDOR_ID, VIRTIO_PCI_VENDOR);
        config.set_u16(reg::SUBSYSTEM_ID, 0x40);
        config.set_u8(reg::INTERRUPT_PIN, 1);
        config.add_bar(usize::from(bar), BAR_SIZE, BarKind::Memory32);
        let queue_count = device.queue_max_sizes().len() as u64;
        let caps = [
            (CAP_COMMON, COMMON_OFFSET, COMMON_LEN),
            (CAP_ISR, ISR_OFFSET, 1),
            (CAP_DEVICE, DEVICE_OFFSET, DEVICE_LEN),
        ];
        for (kind, offset, len) in caps {
            config.add_capability(&vendor_cap(kind, bar, offset, len, 16));
        }
        let mut notify = vendor_cap(
            CAP_NOTIFY,
            bar,
            NOTIFY_OFFSET,
            queue_count.max(1) * u64::from(NOTIFY_MULTIPLIER),
            20,
        );
        notify.extend_from_slice(&NOTIFY_MULTIPLIER.to_le_bytes());
        config.add_capability(&notify);
        // The PCI configuration access window: bar, offset and length are
        // writable, then pci_cfg_data reaches the BAR through config space.
        let mut pci_cfg = vendor_cap(CAP_PCI_CFG, 0, 0, 0, 20);
        pci_cfg.extend_from_slice(&[0; 4]);
        let pci_cfg_cap = config.add_capability(&pci_cfg).unwrap_or(0);
        if pci_cfg_cap != 0 {
            config.set_writable(pci_cfg_cap + 4, &[0xff]);
            config.set_writable(pci_cfg_cap + 8, &[0xff; 8]);
        }

        let queues = device
            .queue_max_sizes()
            .iter()
            .filter_map(|&max| Queue::new(max).ok())
            .collect();
        let interrupt = Arc::new(IntxInterrupt {
            isr: Mutex::new(0),
            line: AtomicU8::new(0),
            irq,
            msix: None,
        });
        Self {
            config,
            bar,
            device,
            mem,
            interrupt,
            queues,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            queue_select: 0,
            status: 0,
            config_generation: 0,
            active: false,
            pci_cfg_cap,
            msix_cap: 0,
            ioevents: None,
        }
    }

    /// Gives the device MSI-X, one vector per queue plus one for
    /// configuration changes, whose messages go to `sink`. Without this the
    /// device has INTx only.
    pub fn with_msix(mut self, sink: Arc<dyn MsiSink>) -> Self {
        let wanted = (self.queues.len() + 1).min(usize::from(MSIX_MAX_VECTORS));
        let table = Msix::new(wanted as u16, sink);
        let cap = table.capability(self.bar, MSIX_TABLE_OFFSET as u32, MSIX_PBA_OFFSET as u32);
        let Some(at) = self.config.add_capability(&cap) else {
            log::warn!("virtio: no room for the MSI-X capability; INTx only");
            return self;
        };
        // Message control: only function mask and enable are writable.
        self.config.set_writable(at + 3, &[0xc0]);
        self.msix_cap = at;
        let vectors = MsixVectors {
            table,
            config: NO_VECTOR,
            queues: vec![NO_VECTOR; self.queues.len()],
        };
        self.interrupt = Arc::new(IntxInterrupt {
            isr: Mutex::new(0),
            line: AtomicU8::new(self.interrupt.line.load(Ordering::SeqCst)),
            irq: self.interrupt.irq.clone(),
            msix: Some(Mutex::new(vectors)),
        });
        self
    }

    /// Serves queue notifications through ioeventfds registered with
    /// `registrar` wherever the guest places BAR 0 (see
    /// [`NotifyHandler`]); where registration fails they keep arriving as
    /// MMIO writes.
    pub fn use_ioeventfd(&mut self, registrar: Arc<dyn NotifyEvents>) -> io::Result<()> {
        let fds = (0..self.queues.len())
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<io::Result<Vec<_>>>()?;
        if let Some(mut old) = self.ioevents.take() {
            old.unregister();
        }
        self.ioevents = Some(Ioevents {
            registrar,
            fds,
            base: None,
        });
        Ok(())
    }

    /// Whether queue notifications are registered as ioeventfds now.
    pub fn ioeventfd_active(&self) -> bool {
        self.ioevents.as_ref().is_some_and(|io| io.base.is_some())
    }

    /// Sets the IRQ the device raises before any firmware programs it.
    pub fn set_interrupt_line(&mut self, irq: u8) {
        self.config.set_u8(reg::INTERRUPT_LINE, irq);
        self.interrupt.line.store(irq, Ordering::SeqCst);
    }

    /// Adds BAR `index` of `size` bytes for what the function carries
    /// besides virtio (not the virtio BAR); the owner serves it.
    pub fn add_bar(&mut self, index: u8, size: u64, kind: BarKind) {
        if index != self.bar {
            self.config.add_bar(usize::from(index), size, kind);
        }
    }

    /// The device status byte.
    pub fn status(&self) -> u8 {
        self.status
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    fn reset(&mut self) {
        self.device.reset();
        for queue in &mut self.queues {
            queue.reset();
        }
        self.status = 0;
        self.active = false;
        self.driver_features = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.queue_select = 0;
        self.interrupt.take_isr();
        self.interrupt.with_msix(|m| {
            m.config = NO_VECTOR;
            m.queues.fill(NO_VECTOR);
        });
    }

    fn write_status(&mut self, value: u8) {
        log::debug!("virtio: status {:#04x} -> {value:#04x}", self.status);
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value;
        if value & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            let offered = self.device.features();
            let acceptable = self.driver_features & !offered == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if acceptable {
                self.device.ack_features(self.driver_features);
            } else {
                // The driver reads FEATURES_OK back and sees the refusal.
                value &= !status::FEATURES_OK;
            }
        }
        self.status = value | (self.status & status::DEVICE_NEEDS_RESET);
        if value & status::DRIVER_OK != 0 && value & status::FEATURES_OK != 0 && !self.active {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let mem = self.mem.clone();
        let usable = self.queues.iter().enumerate().all(|(i, q)| {
            !q.ready() || q.is_valid(&mem) || {
                log::warn!("virtio: queue {i} is not valid in guest memory");
                false
            }
        });
        if !usable {
            self.needs_reset();
            return;
        }
        // The device gets its own copies; the transport keeps its queues
        // so the driver can read the addresses back.
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, queue) in self.queues.iter().enumerate() {
            match Queue::try_from(queue.state()) {
                Ok(copy) => queues.push(copy),
                Err(e) => {
                    log::warn!("virtio: queue {i} cannot be set up: {e:?}");
                    self.needs_reset();
                    return;
                }
            }
        }
        let context = ActivationContext {
            mem,
            queues,
            interrupt: self.interrupt.clone(),
        };
        match self.device.activate(context) {
            Ok(()) => {
                log::debug!(
                    "virtio: device type {} activated",
                    self.device.device_type()
                );
                self.active = true;
            }
            Err(e) => {
                log::warn!(
                    "virtio: device type {} failed to activate: {e}",
                    self.device.device_type()
                );
                self.needs_reset();
            }
        }
    }

    fn needs_reset(&mut self) {
        self.status |= status::DEVICE_NEEDS_RESET;
        if self.status & status::DRIVER_OK != 0 {
            self.interrupt.signal_config_change();
        }
    }

    fn common_read(&mut self, offset: u64) -> u64 {
        let features = self.device.features();
        match offset {
            0x00 => u64::from(self.device_feature_select),
            0x04 => match self.device_feature_select {
                0 => features & 0xffff_ffff,
                1 => features >> 32,
                _ => 0,
            },
            0x08 => u64::from(self.driver_feature_select),
            0x0c => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            0x10 => u64::from(self.interrupt.with_msix(|m| m.config).unwrap_or(NO_VECTOR)),
            0x12 => self.queues.len() as u64,
            0x14 => {
                // A device that broke off the vCPU thread (a receive queue
                // served by the event loop) shows it here.
                let broke = self.active && self.device.needs_reset();
                let flag = if broke { status::DEVICE_NEEDS_RESET } else { 0 };
                u64::from(self.status | flag)
            }
            0x15 => u64::from(self.config_generation),
            0x16 => u64::from(self.queue_select),
            0x18 => self.selected_queue().map_or(0, |q| u64::from(q.size())),
            0x1a => {
                let queue = usize::from(self.queue_select);
                let vector = self
                    .interrupt
                    .with_msix(|m| m.queues.get(queue).copied().unwrap_or(NO_VECTOR));
                u64::from(vector.unwrap_or(NO_VECTOR))
            }
            0x1c => self.selected_queue().map_or(0, |q| u64::from(q.ready())),
            0x1e => u64::from(self.queue_select),
            0x20 => self.selected_queue().map_or(0, |q| q.desc_table()),
            0x28 => self.selected_queue().map_or(0, |q| q.avail_ring()),
            0x30 => self.selected_queue().map_or(0, |q| q.used_ring()),
            0x24 => self.selected_queue().map_or(0, |q| q.desc_table() >> 32),
            0x2c => self.selected_queue().map_or(0, |q| q.avail_ring() >> 32),
            0x34 => self.selected_queue().map_or(0, |q| q.used_ring() >> 32),
            _ => 0,
        }
    }

    fn common_write(&mut self, offset: u64, value: u64) {
        // Queue setup is frozen once the driver said DRIVER_OK.
        let setup_open = self.status & status::DRIVER_OK == 0;
        let lo = Some(value as u32);
        match offset {
            0x00 => self.device_feature_select = value as u32,
            0x08 => self.driver_feature_select = value as u32,
            0x0c if self.status & status::FEATURES_OK == 0 => {
                let value = value & 0xffff_ffff;
                self.driver_features = match self.driver_feature_select {
                    0 => (self.driver_features & !0xffff_ffff) | value,
                    1 => (self.driver_features & 0xffff_ffff) | (value << 32),
                    _ => self.driver_features,
                };
            }
            0x10 => {
                self.interrupt
                    .with_msix(|m| m.config = m.accept(value as u16));
            }
            0x14 => self.write_status(value as u8),
            0x16 => self.queue_select = value as u16,
            0x1a => {
                let queue = usize::from(self.queue_select);
                self.interrupt.with_msix(|m| {
                    let vector = m.accept(value as u16);
                    if let Some(slot) = m.queues.get_mut(queue) {
                        *slot = vector;
                    }
                });
            }
            0x18 if setup_open => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(value as u16);
                }
            }
            0x1c if setup_open => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            0x20 if setup_open => {
                if let Some(q) = self.selected_queue() {
                    q.set_desc_table_address(lo, None);
                }
            }
            0x24 if setup_open => {
                if let Some(q) = self.selected_queue() {
                    q.set_desc_table_address(None, lo);
                }
            }
            0x28 if setup_open => {
                if let Some(q) = self.selected_queue() {
                    q.set_avail_ring_address(lo, None);
                }
            }
            0x2c if setup_open => {
                if let Some(q) = self.selected_queue() {
                    q.set_avail_ring_address(None, lo);
                }
            }
            0x30 if setup_open => {
                if let Some(q) = self.selected_queue() {
                    q.set_used_ring_address(lo, None);
                }
            }
            0x34 if setup_open => {
                if let Some(q) = self.selected_queue() {
                    q.set_used_ring_address(None, lo);
                }
            }
            _ => log::debug!("virtio: ignored common config write at {offset:#x}"),
        }
    }

    /// A write of `len` bytes at `offset` covering a 64-bit register in two
    /// halves is split so each half lands on its 32-bit register.
    fn common_write_split(&mut self, offset: u64, data: &[u8]) {
        let value = le_value(data);
        if data.len() == 8 {
            self.common_write(offset, value & 0xffff_ffff);
            self.common_write(offset + 4, value >> 32);
        } else {
            self.common_write(offset, value);
        }
    }

    fn registers_read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            o if o < COMMON_OFFSET + COMMON_LEN => {
                let value = self.common_read(o);
                fill_le(data, value);
            }
            ISR_OFFSET => fill_le(data, u64::from(self.interrupt.take_isr())),
            o if (DEVICE_OFFSET..DEVICE_OFFSET + DEVICE_LEN).contains(&o) => {
                self.device.read_config(o - DEVICE_OFFSET, data);
                log::trace!("virtio: config {:#x} = {data:02x?}", o - DEVICE_OFFSET);
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                let done = self
                    .interrupt
                    .with_msix(|m| m.table.table_read(o - MSIX_TABLE_OFFSET, data));
                if done.is_none() {
                    data.fill(0);
                }
            }
            o if (MSIX_PBA_OFFSET..BAR_SIZE).contains(&o) => {
                let done = self
                    .interrupt
                    .with_msix(|m| m.table.pba_read(o - MSIX_PBA_OFFSET, data));
                if done.is_none() {
                    data.fill(0);
                }
            }
            _ => data.fill(0),
        }
    }

    fn registers_write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            o if o < COMMON_OFFSET + COMMON_LEN => self.common_write_split(o, data),
            o if (DEVICE_OFFSET..DEVICE_OFFSET + DEVICE_LEN).contains(&o) => {
                self.device.write_config(o - DEVICE_OFFSET, data);
            }
            o if (NOTIFY_OFFSET..NOTIFY_OFFSET + NOTIFY_LEN).contains(&o) => {
                let queue = (o - NOTIFY_OFFSET) / u64::from(NOTIFY_MULTIPLIER);
                self.notify_queue(queue);
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.interrupt
                    .with_msix(|m| m.table.table_write(o - MSIX_TABLE_OFFSET, data));
            }
            _ => {}
        }
    }

    /// The driver notified `queue` (an MMIO write or an ioeventfd).
    fn notify_queue(&mut self, queue: u64) {
        log::trace!("virtio: notify queue {queue} (active: {})", self.active);
        if self.active && queue < self.queues.len() as u64 {
            self.device.queue_notify(queue as u16);
            if self.device.needs_reset() && self.status & status::DEVICE_NEEDS_RESET == 0 {
                self.needs_reset();
            }
        }
    }

    /// Applies the MSI-X message control word the guest may have changed.
    fn sync_msix_control(&mut self) {
        if self.msix_cap == 0 {
            return;
        }
        let control = u16::from_le_bytes([
            self.config.u8_at(self.msix_cap + 2),
            self.config.u8_at(self.msix_cap + 3),
        ]);
        let enabled = self
            .interrupt
            .with_msix(|m| {
                m.table.set_control(control);
                m.table.enabled()
            })
            .unwrap_or(false);
        if enabled {
            // MSI-X on turns INTx off (PCI 3.0, 6.8.2.3).
            let line = self.interrupt.line.load(Ordering::SeqCst);
            self.interrupt.irq.set_level(u32::from(line), false);
        }
    }

    /// The PCI configuration access window (spec 4.1.4.8).
    fn pci_cfg_window(&self) -> Option<(u8, u64, usize)> {
        let cap = self.pci_cfg_cap;
        if cap == 0 {
            return None;
        }
        let bar = self.config.u8_at(cap + 4);
        let offset = u64::from(self.config.read_dword(cap + 8));
        let length = self.config.read_dword(cap + 12) as usize;
        (bar == self.bar && matches!(length, 1 | 2 | 4)).then_some((bar, offset, length))
    }
}

/// A `virtio_pci_cap` of `size` bytes (16, or 20 for notify) for a
/// structure in BAR `bar`.
fn vendor_cap(kind: u8, bar: u8, offset: u64, length: u64, size: u8) -> Vec<u8> {
    let mut cap = vec![CAP_VENDOR, 0, size, kind, bar, 0, 0, 0];
    cap.extend_from_slice(&(offset as u32).to_le_bytes());
    cap.extend_from_slice(&(length as u32).to_le_bytes());
    cap
}

impl PciDevice for VirtioPciDevice {
    fn state(&mut self) -> crate::bus::DeviceState<'_> {
        if !self.device.saves_state() {
            return crate::bus::DeviceState::Unsupported(super::device_type::name(
                self.device.device_type(),
            ));
        }
        crate::bus::DeviceState::Saved(self)
    }

    fn config_read(&mut self, offset: usize) -> u32 {
        let cap = self.pci_cfg_cap;
        if cap != 0 && offset & !3 == cap + 16 {
            if let Some((bar, bar_offset, length)) = self.pci_cfg_window() {
                let mut data = [0u8; 4];
                if let Some(window) = data.get_mut(..length) {
                    self.bar_read(bar, bar_offset, window);
                }
                return u32::from_le_bytes(data);
            }
        }
        self.config.read_dword(offset)
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        let cap = self.pci_cfg_cap;
        if cap != 0 && offset & !3 == cap + 16 {
            if let Some((bar, bar_offset, length)) = self.pci_cfg_window() {
                let len = length.min(data.len());
                self.bar_write(bar, bar_offset, data.get(..len).unwrap_or(&[]));
            }
            return;
        }
        self.config.guest_write(offset, data);
        let line = self.config.u8_at(reg::INTERRUPT_LINE);
        self.interrupt.line.store(line, Ordering::SeqCst);
        self.sync_msix_control();
    }

    fn bar_mappings(&self) -> Vec<BarMapping> {
        self.config.bar_mappings()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        if bar == self.bar {
            self.registers_read(offset, data);
        } else {
            data.fill(0xff);
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        if bar == self.bar {
            self.registers_write(offset, data);
        }
    }

    fn bars_moved(&mut self, bars: &[BarMapping]) {
        let Some(ioevents) = &mut self.ioevents else {
            return;
        };
        ioevents.unregister();
        if let Some(bar) = bars.iter().find(|bar| bar.index == self.bar) {
            ioevents.register(bar.addr);
        }
    }
}

/// A shared handle to a virtio-pci device.
pub type SharedVirtioPci = Arc<Mutex<VirtioPciDevice>>;

/// Serves a device's notify ioeventfds on the VM's event loop: each
/// readable fd becomes that queue's `queue_notify`, under the transport's
/// lock as an MMIO notify would be.
pub struct NotifyHandler {
    device: SharedVirtioPci,
    fds: Vec<EventFd>,
}

impl NotifyHandler {
    /// The handler of `device`'s ioeventfds; None when it does not use them.
    pub fn new(device: &SharedVirtioPci) -> io::Result<Option<Self>> {
        let dev = device.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ioevents) = &dev.ioevents else {
            return Ok(None);
        };
        let fds = ioevents
            .fds
            .iter()
            .map(EventFd::try_clone)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Some(Self {
            device: device.clone(),
            fds,
        }))
    }
}

impl EventHandler for NotifyHandler {
    fn interest(&self, fds: &mut Vec<RawFd>) {
        fds.extend(self.fds.iter().map(AsRawFd::as_raw_fd));
    }

    fn ready(&mut self, fd: RawFd, _events: EventSet) {
        let Some(queue) = self.fds.iter().position(|e| e.as_raw_fd() == fd) else {
            return;
        };
        if let Some(event) = self.fds.get(queue) {
            // Nonblocking: a spurious wake reads EAGAIN and changes nothing.
            let _ = event.read();
        }
        self.device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .notify_queue(queue as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::pci::msix;
    use crate::devices::virtio::DeviceInfo;
    use std::sync::atomic::AtomicBool;
    use vm_memory::GuestAddress;

    struct Level(AtomicBool);

    impl LevelIrq for Level {
        fn set_level(&self, _irq: u32, high: bool) {
            self.0.store(high, Ordering::SeqCst);
        }
    }

    #[derive(Default)]
    struct Probe {
        acked: Arc<Mutex<Option<u64>>>,
        notified: Arc<Mutex<Vec<u16>>>,
        interrupt: Option<Arc<dyn VirtioInterrupt>>,
    }

    impl DeviceInfo for Probe {
        fn device_type(&self) -> u32 {
            super::super::device_type::BLOCK
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16]
        }
        fn features(&self) -> u64 {
            VIRTIO_F_VERSION_1 | 1
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&[1, 2, 3, 4], offset, data);
        }
    }

    impl VirtioDevice for Probe {
        fn ack_features(&mut self, features: u64) {
            *self.acked.lock().unwrap() = Some(features);
        }
        fn activate(
            &mut self,
            context: ActivationContext,
        ) -> Result<(), super::super::ActivateError> {
            self.interrupt = Some(context.interrupt);
            Ok(())
        }
        fn queue_notify(&mut self, queue: u16) {
            self.notified.lock().unwrap().push(queue);
            if let Some(i) = &self.interrupt {
                i.signal_used_queue(queue);
            }
        }
        fn reset(&mut self) {
            self.interrupt = None;
        }
    }

    type Acked = Arc<Mutex<Option<u64>>>;
    type Notified = Arc<Mutex<Vec<u16>>>;

    fn device() -> (VirtioPciDevice, Acked, Notified, Arc<Level>) {
        let probe = Probe::default();
        let (acked, notified) = (probe.acked.clone(), probe.notified.clone());
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let level = Arc::new(Level(AtomicBool::new(false)));
        let dev = VirtioPciDevice::new(Box::new(probe), mem, level.clone());
        (dev, acked, notified, level)
    }

    fn write32(dev: &mut VirtioPciDevice, offset: u64, value: u32) {
        dev.bar_write(0, offset, &value.to_le_bytes());
    }

    fn read32(dev: &mut VirtioPciDevice, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        dev.bar_read(0, offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn bring_up(dev: &mut VirtioPciDevice, features_hi: u32) {
        dev.bar_write(0, 0x14, &[status::ACKNOWLEDGE | status::DRIVER]);
        write32(dev, 0x08, 1);
        write32(dev, 0x0c, features_hi);
        dev.bar_write(
            0,
            0x14,
            &[status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK],
        );
        dev.bar_write(0, 0x16, &0u16.to_le_bytes());
        dev.bar_write(0, 0x18, &8u16.to_le_bytes());
        write32(dev, 0x20, 0x1000);
        write32(dev, 0x28, 0x2000);
        write32(dev, 0x30, 0x3000);
        dev.bar_write(0, 0x1c, &1u16.to_le_bytes());
        let all = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
        dev.bar_write(0, 0x14, &[all]);
    }

    #[test]
    fn test_virtio_pci_identifies_as_modern_block() {
        let (mut dev, ..) = device();
        assert_eq!(dev.config_read(0), 0x1042_1af4);
    }

    #[test]
    fn test_virtio_pci_capabilities_list_common_notify_isr_device() {
        let (mut dev, ..) = device();
        let mut kinds = Vec::new();
        let mut at = (dev.config_read(reg::CAPABILITIES) & 0xff) as usize;
        while at != 0 {
            let head = dev.config_read(at);
            kinds.push(((head & 0xff) as u8, (head >> 24) as u8));
            at = ((head >> 8) & 0xff) as usize;
        }
        assert_eq!(kinds, vec![(9, 1), (9, 3), (9, 4), (9, 2), (9, 5)]);
    }

    #[test]
    fn test_virtio_pci_driver_ok_activates_and_notify_reaches_device() {
        let (mut dev, acked, notified, level) = device();
        bring_up(&mut dev, 1);
        write32(&mut dev, NOTIFY_OFFSET, 0);
        assert_eq!(dev.status() & status::DRIVER_OK, status::DRIVER_OK);
        assert_eq!(*acked.lock().unwrap(), Some(VIRTIO_F_VERSION_1));
        assert_eq!(*notified.lock().unwrap(), vec![0]);
        assert!(level.0.load(Ordering::SeqCst));
    }

    #[test]
    fn test_virtio_pci_isr_read_clears_and_lowers_line() {
        let (mut dev, _, _, level) = device();
        bring_up(&mut dev, 1);
        write32(&mut dev, NOTIFY_OFFSET, 0);
        let mut isr = [0u8];
        dev.bar_read(0, ISR_OFFSET, &mut isr);
        assert_eq!(isr[0], ISR_QUEUE);
        assert!(!level.0.load(Ordering::SeqCst));
    }

    #[test]
    fn test_virtio_pci_without_version_1_refuses_features_ok() {
        let (mut dev, acked, ..) = device();
        bring_up(&mut dev, 0);
        assert_eq!(dev.status() & status::FEATURES_OK, 0);
        assert_eq!(*acked.lock().unwrap(), None);
    }

    #[test]
    fn test_virtio_pci_notify_before_activation_is_ignored() {
        let (mut dev, _, notified, _) = device();
        write32(&mut dev, NOTIFY_OFFSET, 0);
        write32(&mut dev, NOTIFY_OFFSET + 400, 0);
        assert!(notified.lock().unwrap().is_empty());
    }

    #[test]
    fn test_virtio_pci_invalid_queue_sets_needs_reset() {
        let (mut dev, ..) = device();
        dev.bar_write(0, 0x14, &[status::ACKNOWLEDGE | status::DRIVER]);
        write32(&mut dev, 0x08, 1);
        write32(&mut dev, 0x0c, 1);
        dev.bar_write(
            0,
            0x14,
            &[status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK],
        );
        dev.bar_write(0, 0x18, &8u16.to_le_bytes());
        write32(&mut dev, 0x20, 0xffff_f000);
        write32(&mut dev, 0x24, 0xffff_ffff);
        dev.bar_write(0, 0x1c, &1u16.to_le_bytes());
        dev.bar_write(0, 0x14, &[0x0f]);
        assert_eq!(
            dev.status() & status::DEVICE_NEEDS_RESET,
            status::DEVICE_NEEDS_RESET
        );
    }

    #[test]
    fn test_virtio_pci_status_zero_resets() {
        let (mut dev, ..) = device();
        bring_up(&mut dev, 1);
        dev.bar_write(0, 0x14, &[0]);
        assert_eq!((dev.status(), read32(&mut dev, 0x1c)), (0, 0));
    }

    #[test]
    fn test_virtio_pci_device_config_reads_through() {
        let (mut dev, ..) = device();
        assert_eq!(read32(&mut dev, DEVICE_OFFSET), 0x0403_0201);
    }

    #[derive(Default)]
    struct Messages(Mutex<Vec<msix::MsiMessage>>);

    impl MsiSink for Messages {
        fn signal(&self, message: msix::MsiMessage) {
            self.0.lock().unwrap().push(message);
        }
    }

    impl Messages {
        fn data(&self) -> Vec<u32> {
            self.0.lock().unwrap().iter().map(|m| m.data).collect()
        }
    }

    fn msix_device() -> (VirtioPciDevice, Arc<Messages>, Notified, Arc<Level>) {
        let (dev, _, notified, level) = device();
        let sink = Arc::new(Messages::default());
        (dev.with_msix(sink.clone()), sink, notified, level)
    }

    fn find_cap(dev: &mut VirtioPciDevice, id: u8) -> usize {
        let mut at = (dev.config_read(reg::CAPABILITIES) & 0xff) as usize;
        while at != 0 {
            let head = dev.config_read(at);
            if head & 0xff == u32::from(id) {
                return at;
            }
            at = ((head >> 8) & 0xff) as usize;
        }
        panic!("no capability {id:#x}");
    }

    fn set_msix_control(dev: &mut VirtioPciDevice, control_hi: u8) {
        let cap = find_cap(dev, msix::CAP_ID);
        dev.config_write(cap + 3, &[control_hi]);
    }

    /// Table entry `vector`: the APIC window, data `data`, mask `masked`.
    fn program_vector(dev: &mut VirtioPciDevice, vector: u64, data: u32, masked: bool) {
        let base = MSIX_TABLE_OFFSET + vector * msix::ENTRY_LEN;
        write32(dev, base, 0xfee0_0000);
        write32(dev, base + 4, 0);
        write32(dev, base + 8, data);
        write32(dev, base + 12, u32::from(masked));
    }

    fn read16(dev: &mut VirtioPciDevice, offset: u64) -> u16 {
        let mut data = [0u8; 2];
        dev.bar_read(0, offset, &mut data);
        u16::from_le_bytes(data)
    }

    fn write16(dev: &mut VirtioPciDevice, offset: u64, value: u16) {
        dev.bar_write(0, offset, &value.to_le_bytes());
    }

    #[test]
    fn test_virtio_pci_msix_capability_sizes_table_for_queues_plus_config() {
        let (mut dev, ..) = msix_device();
        let cap = find_cap(&mut dev, msix::CAP_ID);
        assert_eq!(dev.config_read(cap) >> 16, 1, "table size - 1");
        assert_eq!(dev.config_read(cap + 4), MSIX_TABLE_OFFSET as u32);
        assert_eq!(dev.config_read(cap + 8), MSIX_PBA_OFFSET as u32);
        // Only enable and function mask are writable.
        dev.config_write(cap, &[0xff; 4]);
        assert_eq!(dev.config_read(cap) >> 16, 0xc001);
    }

    #[test]
    fn test_virtio_pci_without_msix_has_no_capability_and_no_vectors() {
        let (mut dev, ..) = device();
        let cap_ids: Vec<u32> = {
            let mut ids = Vec::new();
            let mut at = (dev.config_read(reg::CAPABILITIES) & 0xff) as usize;
            while at != 0 {
                let head = dev.config_read(at);
                ids.push(head & 0xff);
                at = ((head >> 8) & 0xff) as usize;
            }
            ids
        };
        assert!(!cap_ids.contains(&u32::from(msix::CAP_ID)));
        write16(&mut dev, 0x10, 0);
        write16(&mut dev, 0x1a, 0);
        assert_eq!(
            (read16(&mut dev, 0x10), read16(&mut dev, 0x1a)),
            (NO_VECTOR, NO_VECTOR)
        );
    }

    #[test]
    fn test_virtio_pci_vector_registers_read_back_what_was_accepted() {
        let (mut dev, ..) = msix_device();
        assert_eq!(
            (read16(&mut dev, 0x10), read16(&mut dev, 0x1a)),
            (NO_VECTOR, NO_VECTOR)
        );
        write16(&mut dev, 0x10, 1);
        write16(&mut dev, 0x1a, 0);
        assert_eq!((read16(&mut dev, 0x10), read16(&mut dev, 0x1a)), (1, 0));
        // Vector 2 does not exist: refused, read back as NO_VECTOR.
        write16(&mut dev, 0x10, 2);
        write16(&mut dev, 0x1a, 0x7fff);
        assert_eq!(
            (read16(&mut dev, 0x10), read16(&mut dev, 0x1a)),
            (NO_VECTOR, NO_VECTOR)
        );
        // A queue that does not exist has no vector register.
        write16(&mut dev, 0x16, 5);
        write16(&mut dev, 0x1a, 0);
        assert_eq!(read16(&mut dev, 0x1a), NO_VECTOR);
    }

    #[test]
    fn test_virtio_pci_msix_queue_interrupt_is_a_message_not_intx() {
        let (mut dev, sink, notified, level) = msix_device();
        program_vector(&mut dev, 1, 0x51, false);
        set_msix_control(&mut dev, 0x80);
        write16(&mut dev, 0x1a, 1);
        bring_up(&mut dev, 1);
        write32(&mut dev, NOTIFY_OFFSET, 0);
        assert_eq!(*notified.lock().unwrap(), vec![0]);
        assert_eq!(sink.data(), vec![0x51]);
        assert_eq!(sink.0.lock().unwrap()[0].address, 0xfee0_0000);
        assert!(!level.0.load(Ordering::SeqCst));
    }

    #[test]
    fn test_virtio_pci_msix_masked_vector_pends_in_pba_until_unmasked() {
        let (mut dev, sink, _, _) = msix_device();
        program_vector(&mut dev, 1, 0x52, true);
        set_msix_control(&mut dev, 0x80);
        write16(&mut dev, 0x1a, 1);
        bring_up(&mut dev, 1);
        write32(&mut dev, NOTIFY_OFFSET, 0);
        assert!(sink.data().is_empty());
        assert_eq!(read32(&mut dev, MSIX_PBA_OFFSET), 0b10);
        write32(&mut dev, MSIX_TABLE_OFFSET + 16 + 12, 0);
        assert_eq!(sink.data(), vec![0x52]);
        assert_eq!(read32(&mut dev, MSIX_PBA_OFFSET), 0);
    }

    #[test]
    fn test_virtio_pci_msix_function_mask_holds_until_cleared() {
        let (mut dev, sink, _, _) = msix_device();
        program_vector(&mut dev, 0, 0x53, false);
        set_msix_control(&mut dev, 0xc0);
        write16(&mut dev, 0x1a, 0);
        bring_up(&mut dev, 1);
        write32(&mut dev, NOTIFY_OFFSET, 0);
        assert!(sink.data().is_empty());
        assert_eq!(read32(&mut dev, MSIX_PBA_OFFSET), 1);
        set_msix_control(&mut dev, 0x80);
        assert_eq!(sink.data(), vec![0x53]);
    }

    #[test]
    fn test_virtio_pci_msix_disabled_falls_back_to_intx() {
        let (mut dev, sink, _, level) = msix_device();
        program_vector(&mut dev, 1, 0x54, false);
        write16(&mut dev, 0x1a, 1);
        bring_up(&mut dev, 1);
        write32(&mut dev, NOTIFY_OFFSET, 0);
        assert!(sink.data().is_empty());
        assert!(level.0.load(Ordering::SeqCst));
        // Enabling MSI-X lowers the line.
        set_msix_control(&mut dev, 0x80);
        assert!(!level.0.load(Ordering::SeqCst));
    }

    #[test]
    fn test_virtio_pci_msix_enabled_no_vector_signals_nothing() {
        let (mut dev, sink, notified, level) = msix_device();
        program_vector(&mut dev, 0, 0x55, false);
        set_msix_control(&mut dev, 0x80);
        bring_up(&mut dev, 1);
        write32(&mut dev, NOTIFY_OFFSET, 0);
        assert_eq!(*notified.lock().unwrap(), vec![0]);
        assert!(sink.data().is_empty());
        assert!(!level.0.load(Ordering::SeqCst));
    }

    #[test]
    fn test_virtio_pci_reset_returns_vectors_to_no_vector() {
        let (mut dev, ..) = msix_device();
        write16(&mut dev, 0x10, 0);
        write16(&mut dev, 0x1a, 1);
        bring_up(&mut dev, 1);
        dev.bar_write(0, 0x14, &[0]);
        assert_eq!(
            (read16(&mut dev, 0x10), read16(&mut dev, 0x1a)),
            (NO_VECTOR, NO_VECTOR)
        );
    }

    #[test]
    fn test_virtio_pci_hostile_bar_and_config_accesses_never_panic() {
        let (mut dev, ..) = msix_device();
        set_msix_control(&mut dev, 0x80);
        let offsets = (0..BAR_SIZE + 0x100).step_by(0x7f).chain([
            0x3fff,
            0x5fff,
            0x7fff,
            u64::MAX - 1,
            u64::MAX,
        ]);
        for offset in offsets {
            for len in [0usize, 1, 2, 3, 4, 8, 16] {
                let mut data = vec![0xa5u8; len];
                dev.bar_read(0, offset, &mut data);
                dev.bar_write(0, offset, &data);
                dev.bar_read(1, offset, &mut data);
            }
        }
        for offset in [0usize, 0x3f, 0x40, 0xfc, 0xff, 0x100, usize::MAX - 3] {
            dev.config_write(offset, &[0xff; 4]);
            let _ = dev.config_read(offset);
        }
    }

    /// Records ioeventfd registrations; refuses them when `fail`.
    #[derive(Default)]
    struct Registrar {
        live: Mutex<Vec<u64>>,
        fail: bool,
    }

    impl NotifyEvents for Registrar {
        fn register(&self, _fd: &EventFd, addr: u64) -> io::Result<()> {
            if self.fail {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.live.lock().unwrap().push(addr);
            Ok(())
        }

        fn unregister(&self, _fd: &EventFd, addr: u64) -> io::Result<()> {
            self.live.lock().unwrap().retain(|&a| a != addr);
            Ok(())
        }
    }

    fn bar0_at(addr: u64) -> [BarMapping; 1] {
        [BarMapping {
            index: 0,
            addr,
            size: BAR_SIZE,
            kind: BarKind::Memory32,
        }]
    }

    #[test]
    fn test_virtio_pci_ioeventfd_follows_bar_moves() {
        let (mut dev, ..) = device();
        let registrar = Arc::new(Registrar::default());
        dev.use_ioeventfd(registrar.clone()).unwrap();
        assert!(!dev.ioeventfd_active());
        dev.bars_moved(&bar0_at(0xe000_0000));
        assert_eq!(*registrar.live.lock().unwrap(), vec![0xe000_3000]);
        assert!(dev.ioeventfd_active());
        dev.bars_moved(&bar0_at(0xd000_0000));
        assert_eq!(*registrar.live.lock().unwrap(), vec![0xd000_3000]);
        dev.bars_moved(&[]);
        assert!(registrar.live.lock().unwrap().is_empty());
        assert!(!dev.ioeventfd_active());
    }

    #[test]
    fn test_virtio_pci_refused_ioeventfd_keeps_mmio_notify() {
        let (mut dev, _, notified, _) = device();
        let registrar = Arc::new(Registrar {
            fail: true,
            ..Registrar::default()
        });
        dev.use_ioeventfd(registrar).unwrap();
        dev.bars_moved(&bar0_at(0xe000_0000));
        assert!(!dev.ioeventfd_active());
        bring_up(&mut dev, 1);
        write32(&mut dev, NOTIFY_OFFSET, 0);
        assert_eq!(*notified.lock().unwrap(), vec![0]);
    }

    #[test]
    fn test_virtio_pci_notify_handler_turns_eventfd_into_queue_notify() {
        let (mut dev, _, notified, level) = device();
        dev.use_ioeventfd(Arc::new(Registrar::default())).unwrap();
        dev.bars_moved(&bar0_at(0xe000_0000));
        bring_up(&mut dev, 1);
        let shared: SharedVirtioPci = Arc::new(Mutex::new(dev));
        let mut handler = NotifyHandler::new(&shared).unwrap().unwrap();
        let mut fds = Vec::new();
        handler.interest(&mut fds);
        assert_eq!(fds.len(), 1);
        handler.fds[0].write(1).unwrap();
        handler.ready(fds[0], EventSet::IN);
        // An unknown fd is ignored.
        handler.ready(-1, EventSet::IN);
        assert_eq!(*notified.lock().unwrap(), vec![0]);
        assert!(level.0.load(Ordering::SeqCst));
        // The eventfd was drained.
        assert!(handler.fds[0].read().is_err());
    }

    #[test]
    fn test_virtio_pci_cfg_window_reads_common_config() {
        let (mut dev, ..) = device();
        let cap = dev.pci_cfg_cap;
        dev.config_write(cap + 4, &[0]);
        dev.config_write(cap + 8, &0x12u32.to_le_bytes());
        dev.config_write(cap + 12, &2u32.to_le_bytes());
        assert_eq!(dev.config_read(cap + 16) & 0xffff, 1);
    }
}
