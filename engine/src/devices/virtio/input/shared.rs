// SPDX-License-Identifier: Apache-2.0
//! virtio-input in the VMM: [`SharedInput`] puts an [`Input`] behind a
//! mutex so that the virtio-pci transport (queue notifications, by
//! ioeventfd on the event loop or by MMIO on a vCPU thread) and
//! its [`HostHandler`](crate::devices::virtio::shared::HostHandler) on the
//! VM's event loop (the device's wake fd, which fires when host input is
//! queued) serve the same device. The
//! transport's lock is always taken before the device's and the handler
//! takes only the device's, so they cannot deadlock.

use super::{Input, InputSender};

/// An [`Input`] shared between the virtio-pci transport and the event
/// loop.
pub type SharedInput = crate::devices::virtio::shared::SharedVirtio<Input>;

impl SharedInput {
    /// A handle that queues host input for the device from any thread.
    pub fn sender(&self) -> InputSender {
        self.lock().sender()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::control::VmControl;
    use crate::devices::irq::LevelIrq;
    use crate::devices::pci::PciDevice;
    use crate::devices::virtio::input::codes::{ABS_X, ABS_Y, EV_ABS};
    use crate::devices::virtio::input::{InputEvent, InputKind};
    use crate::devices::virtio::pci::VirtioPciDevice;
    use crate::devices::virtio::test_queue::{driver_ok, set_up_queues};
    use crate::event_loop::EventLoop;
    use crate::memory::GuestMemoryMmap;

    const BUF: u64 = 0x4_0000;

    struct Level(AtomicBool);

    impl LevelIrq for Level {
        fn set_level(&self, _irq: u32, high: bool) {
            self.0.store(high, Ordering::SeqCst);
        }
    }

    fn event_at(mem: &GuestMemoryMmap, addr: u64) -> InputEvent {
        let mut bytes = [0u8; 8];
        mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
        InputEvent::from_bytes(bytes)
    }

    /// The whole in-VMM path: a driver sets the tablet up through the
    /// virtio-pci transport and posts buffers; a pointer move pushed from
    /// another thread reaches them from the event loop, with the INTx line
    /// raised.
    #[test]
    fn test_virtio_pci_tablet_delivers_pushed_motion_from_event_loop() {
        // Arrange
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let input = SharedInput::new(Input::new(InputKind::Tablet).unwrap());
        let sender = input.sender();
        let mut events = EventLoop::new().unwrap();
        events.add(Box::new(input.handler()));
        let running = events.start(Arc::new(VmControl::new())).unwrap();
        let level = Arc::new(Level(AtomicBool::new(false)));
        let mut dev = VirtioPciDevice::new(Box::new(input.clone()), mem.clone(), level.clone());
        let eventq = MockSplitQueue::create(&mem, GuestAddress(0x1_0000), 16);
        let statusq = MockSplitQueue::create(&mem, GuestAddress(0x1_8000), 16);
        let w32 = |dev: &mut VirtioPciDevice, offset: u64, value: u32| {
            dev.bar_write(0, offset, &value.to_le_bytes());
        };
        set_up_queues(&mut dev, &[&eventq, &statusq]);
        let inactive_before = !sender.is_active();
        driver_ok(&mut dev);
        for i in 0..4u16 {
            let desc = RawDescriptor::from(SplitDescriptor::new(
                BUF + u64::from(i) * 0x10,
                8,
                VRING_DESC_F_WRITE as u16,
                0,
            ));
            eventq
                .add_desc_chains(std::slice::from_ref(&desc), i)
                .unwrap();
        }
        // The driver's kick finds nothing to deliver yet.
        w32(&mut dev, 0x3000, 0);
        let quiet_after_kick = eventq.used().idx().load() == 0;

        // Act
        std::thread::spawn(move || {
            sender.push_events(&[
                InputEvent::new(EV_ABS, ABS_X, 0x1234),
                InputEvent::new(EV_ABS, ABS_Y, 0x4321),
                InputEvent::syn(),
            ]);
        })
        .join()
        .unwrap();

        // Assert
        let deadline = Instant::now() + Duration::from_secs(10);
        while eventq.used().idx().load() < 3 {
            assert!(Instant::now() < deadline, "no events in the eventq");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(inactive_before);
        assert!(input.sender().is_active());
        assert!(quiet_after_kick);
        assert_eq!(eventq.used().idx().load(), 3);
        assert_eq!(event_at(&mem, BUF), InputEvent::new(EV_ABS, ABS_X, 0x1234));
        assert_eq!(
            event_at(&mem, BUF + 0x10),
            InputEvent::new(EV_ABS, ABS_Y, 0x4321)
        );
        assert_eq!(event_at(&mem, BUF + 0x20), InputEvent::syn());
        assert!(level.0.load(Ordering::SeqCst), "the INTx line is raised");
        drop(running);
    }
}
