// SPDX-License-Identifier: Apache-2.0
//! Benchmark: 4 KiB random reads through the virtio-blk request path
//! (descriptor chains in guest memory, validation, the disk read, the used
//! ring) against plain `pread` of the same offsets in the same file, which
//! is the limit the device can approach. Both read from the page cache,
//! so the difference is the device's own cost per request. The two take
//! turns, batch by batch, so load from other processes hits both alike.
//!
//! `cargo run --release -p engine --example blk_queue_bench -- [requests]`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use engine::devices::virtio::block::{Block, RawFile};
use engine::memory::GuestMemoryMmap;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::Queue;
use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

const IMAGE_BYTES: u64 = 256 << 20;
const BATCH: u64 = 64;
const HEADERS: u64 = 0x10_0000;
const STATUS: u64 = 0x11_0000;
const DATA: u64 = 0x20_0000;

/// A deterministic spread of 4 KiB-aligned offsets.
fn offsets(count: u64) -> Vec<u64> {
    let blocks = IMAGE_BYTES / 4096;
    (0..count)
        .map(|i| (i.wrapping_mul(2_654_435_761) % blocks) * 4096)
        .collect()
}

struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        eprintln!("{}: {}", record.level(), record.args());
    }
    fn flush(&self) {}
}

fn main() {
    log::set_logger(&StderrLog).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let requests: u64 = std::env::args()
        .nth(1)
        .map_or(200_000, |n| n.parse().unwrap());
    let path = std::env::temp_dir().join(format!("nestbox-blk-bench-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    for i in 0..IMAGE_BYTES / chunk.len() as u64 {
        file.write_all_at(&chunk, i * chunk.len() as u64).unwrap();
    }
    let offsets = offsets(requests);

    // The limit, pread into one buffer, and the device, batches of 64
    // three-descriptor chains, take turns on the same batch of offsets
    // (in alternating order), so both see the same load on a busy host.
    let mut buffer = vec![0u8; 4096];
    let mut pread_time = Duration::ZERO;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let mut block = Block::new(Box::new(RawFile::open(&path, false).unwrap()), "bench").unwrap();
    let mut device_time = Duration::ZERO;
    for (n, batch) in offsets.chunks(BATCH as usize).enumerate() {
        let pread_batch = |buffer: &mut [u8]| {
            let start = Instant::now();
            for &offset in batch {
                file.read_exact_at(buffer, offset).unwrap();
            }
            start.elapsed()
        };
        if n % 2 == 0 {
            pread_time += pread_batch(&mut buffer);
        }
        // The mock does not wrap its avail ring, so each batch gets fresh
        // rings (outside the timed part).
        mem.write_slice(&[0u8; 0x1_0000], GuestAddress(0)).unwrap();
        let vq = MockSplitQueue::new(&mem, 256);
        let mut queue: Queue = vq.create_queue().unwrap();
        let mut descs = Vec::with_capacity(batch.len() * 3);
        for (i, &offset) in batch.iter().enumerate() {
            let i = i as u64;
            let mut header = [0u8; 16];
            header[8..].copy_from_slice(&(offset / 512).to_le_bytes());
            mem.write_slice(&header, GuestAddress(HEADERS + i * 16))
                .unwrap();
            let base = (i * 3) as u16;
            let next = VRING_DESC_F_NEXT as u16;
            let write = VRING_DESC_F_WRITE as u16;
            descs.push(RawDescriptor::from(SplitDescriptor::new(
                HEADERS + i * 16,
                16,
                next,
                base + 1,
            )));
            descs.push(RawDescriptor::from(SplitDescriptor::new(
                DATA + i * 4096,
                4096,
                next | write,
                base + 2,
            )));
            descs.push(RawDescriptor::from(SplitDescriptor::new(
                STATUS + i,
                1,
                write,
                0,
            )));
        }
        vq.add_desc_chains(&descs, 0).unwrap();
        let start = Instant::now();
        assert!(block.serve_queue(&mem, &mut queue).unwrap());
        device_time += start.elapsed();
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
            0,
            "request failed"
        );
        if n % 2 == 1 {
            pread_time += pread_batch(&mut buffer);
        }
    }
    std::fs::remove_file(&path).unwrap();

    let rate = |t: Duration| requests as f64 / t.as_secs_f64();
    println!("pread:          {:>10.0} requests/s", rate(pread_time));
    println!("virtio-blk queue: {:>8.0} requests/s", rate(device_time));
    println!(
        "device / pread: {:.2}",
        rate(device_time) / rate(pread_time)
    );
}
