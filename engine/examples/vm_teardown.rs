// SPDX-License-Identifier: Apache-2.0
//! Benchmark helper: how long KVM takes to tear a VM down, with and without
//! the in-kernel irqchip and PIT (the part of a short VM's life that no VMM
//! code runs in), and with the PIT's hooks taken down first by
//! `engine::teardown::prepare_close`, as Nestbox closes a VM. Prints one
//! line per configuration: median setup and close times (the close
//! including `prepare_close`) over the given number of runs (default 10).
//!
//! `cargo run --release -p engine --example vm_teardown -- 10`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::{Duration, Instant};

use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::Kvm;
use vm_memory::MmapRegion;

const MEMORY: usize = 128 << 20;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map_or(10, |n| n.parse().expect("run count"));
    let kvm = Kvm::new().expect("open /dev/kvm");
    let ram = MmapRegion::<()>::new(MEMORY).expect("guest RAM");
    let configs = [
        ("memory + vCPU only", false, false, false),
        ("+ in-kernel irqchip", true, false, false),
        ("+ in-kernel irqchip and PIT", true, true, false),
        (
            "+ in-kernel irqchip and PIT, closed after prepare_close (Nestbox)",
            true,
            true,
            true,
        ),
    ];
    for (name, irqchip, pit, prepare) in configs {
        let mut setups = Vec::new();
        let mut closes = Vec::new();
        for _ in 0..runs {
            let start = Instant::now();
            let vm = kvm.create_vm().unwrap();
            let region = kvm_userspace_memory_region {
                slot: 0,
                flags: 0,
                guest_phys_addr: 0,
                memory_size: MEMORY as u64,
                userspace_addr: ram.as_ptr() as u64,
            };
            // SAFETY: `ram` outlives the VM, which is dropped in this loop.
            unsafe { vm.set_user_memory_region(region) }.unwrap();
            vm.set_tss_address(0xfffb_d000).unwrap();
            if irqchip {
                vm.create_irq_chip().unwrap();
            }
            if pit {
                let config = kvm_pit_config {
                    flags: KVM_PIT_SPEAKER_DUMMY,
                    ..Default::default()
                };
                vm.create_pit2(config).unwrap();
            }
            let vcpu = vm.create_vcpu(0).unwrap();
            setups.push(start.elapsed());
            drop(vcpu);
            let closing = Instant::now();
            if prepare {
                engine::teardown::prepare_close(&vm).unwrap();
            }
            drop(vm);
            closes.push(closing.elapsed());
        }
        println!(
            "{name}: setup {:.2} ms, close {:.2} ms",
            median(setups).as_secs_f64() * 1000.0,
            median(closes).as_secs_f64() * 1000.0
        );
    }
}
