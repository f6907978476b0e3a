// SPDX-License-Identifier: Apache-2.0
//! Test helpers shared by the device tests: descriptor chains put into a
//! virtio-queue mock queue, and what the device made of them (used ring
//! entries, guest bytes), and a driver's bring-up of a virtio-pci device.

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use crate::devices::pci::PciDevice;
use crate::devices::virtio::pci::{VirtioPciDevice, status};
use crate::memory::GuestMemoryMmap;

/// A mock split queue in test guest memory.
pub type Mock<'a> = MockSplitQueue<'a, GuestMemoryMmap>;

/// A chain of `parts` (address, length, device-writable) whose first
/// descriptor has index `start`, each linked to the next.
pub fn chain(start: u16, parts: &[(u64, u32, bool)]) -> Vec<RawDescriptor> {
    parts
        .iter()
        .enumerate()
        .map(|(i, &(addr, len, writable))| {
            let last = i + 1 == parts.len();
            let mut flags = if writable {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            if !last {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let next = if last { 0 } else { start + i as u16 + 1 };
            RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
        })
        .collect()
}

/// Puts [`chain`]`(start, parts)` in the descriptor table and makes it
/// available.
pub fn add_chain(vq: &Mock<'_>, start: u16, parts: &[(u64, u32, bool)]) {
    vq.add_desc_chains(&chain(start, parts), start).unwrap();
}

/// Used ring entry `i`: (descriptor id, bytes written).
pub fn used(vq: &Mock<'_>, i: usize) -> (u32, u32) {
    let elem = vq.used().ring().ref_at(i).unwrap().load();
    (elem.id(), elem.len())
}

/// The used ring's index: how many entries the device used.
pub fn used_count(vq: &Mock<'_>) -> u16 {
    vq.used().idx().load()
}

/// `len` bytes of guest memory at `addr`.
pub fn guest_bytes(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    buf
}

/// What [`marked_memory`] fills its data area with, so a test sees which
/// bytes a device wrote.
pub const UNTOUCHED: u8 = 0xee;

/// Guest memory of `size` bytes from 0 whose 512 KiB from `data` hold
/// [`UNTOUCHED`].
pub fn marked_memory(size: u64, data: u64) -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap();
    mem.write_slice(&vec![UNTOUCHED; 0x8_0000], GuestAddress(data))
        .unwrap();
    mem
}

/// Does what a driver does on a virtio-pci device up to DRIVER_OK (not
/// included): acknowledges it, accepts VIRTIO_F_VERSION_1 only, and sets
/// up and enables `queues` in order, 16 entries each.
pub fn set_up_queues(dev: &mut VirtioPciDevice, queues: &[&Mock<'_>]) {
    let w32 = |dev: &mut VirtioPciDevice, offset: u64, value: u32| {
        dev.bar_write(0, offset, &value.to_le_bytes());
    };
    dev.bar_write(0, 0x14, &[status::ACKNOWLEDGE | status::DRIVER]);
    w32(dev, 0x08, 1);
    w32(dev, 0x0c, 1); // VIRTIO_F_VERSION_1
    dev.bar_write(
        0,
        0x14,
        &[status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK],
    );
    for (index, queue) in queues.iter().enumerate() {
        dev.bar_write(0, 0x16, &(index as u16).to_le_bytes());
        dev.bar_write(0, 0x18, &16u16.to_le_bytes());
        w32(dev, 0x20, queue.desc_table_addr().0 as u32);
        w32(dev, 0x28, queue.avail_addr().0 as u32);
        w32(dev, 0x30, queue.used_addr().0 as u32);
        dev.bar_write(0, 0x1c, &1u16.to_le_bytes());
    }
}

/// Sets DRIVER_OK after [`set_up_queues`] and checks the device took it.
pub fn driver_ok(dev: &mut VirtioPciDevice) {
    let all = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
    dev.bar_write(0, 0x14, &[all]);
    let mut status_byte = [0u8];
    dev.bar_read(0, 0x14, &mut status_byte);
    assert_eq!(status_byte[0], all);
}
