// SPDX-License-Identifier: Apache-2.0
//! Tier 2: tiny guest programs (payloads/*.S, assembled by build.rs) booted
//! at the reset vector prove the VMM paths: port-I/O and MMIO dispatch, an
//! interrupt through the in-kernel irqchip, PCI configuration space, and
//! every way a guest can end badly becoming a clear outcome.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::bus::{BusDevice, fill_le, le_value};
use engine::vm::{ConsoleConfig, ConsoleOutput, VirtioInputConfig};
use engine::{BootSource, Outcome, VmBuilder, VmConfig, VmIo};
use nestbox_tests::{Capture, VmGuard, kvm_available, payload};

const TIMEOUT: Duration = Duration::from_secs(60);

fn config(name: &str) -> VmConfig {
    VmConfig {
        console: None,
        input: None,
        memory_bytes: 64 << 20,
        vcpus: 1,
        boot: BootSource::Firmware {
            path: payload::image(name),
            serial_console: false,
        },
        disks: Vec::new(),
        display: None,
        network: None,
        sound: None,
        rng: false,
    }
}

fn io(serial: &Capture, debugcon: &Capture) -> VmIo {
    VmIo {
        serial: serial.writer(),
        debugcon: Some(debugcon.writer()),
    }
}

fn run_payload(name: &str) -> (Outcome, Capture) {
    let (serial, debugcon) = (Capture::new(), Capture::new());
    let vm = VmGuard::start(VmBuilder::new(config(name), io(&serial, &debugcon)));
    (vm.wait(TIMEOUT), debugcon)
}

/// Records writes; a read returns a function of the last value written at
/// that offset (plus one, or its complement).
struct Scratch {
    writes: Vec<(u64, Vec<u8>)>,
    complement: bool,
}

impl Scratch {
    fn shared(complement: bool) -> Arc<Mutex<Scratch>> {
        Arc::new(Mutex::new(Scratch {
            writes: Vec::new(),
            complement,
        }))
    }
}

impl BusDevice for Scratch {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let last = self
            .writes
            .iter()
            .rev()
            .find(|(o, _)| *o == offset)
            .map_or(0, |(_, d)| le_value(d));
        let value = if self.complement { !last } else { last + 1 };
        fill_le(data, value);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.writes.push((offset, data.to_vec()));
    }
}

#[test]
fn test_payload_pio_and_mmio_reach_their_devices() {
    if !kvm_available("test_payload_pio_and_mmio_reach_their_devices") {
        return;
    }
    let (serial, debugcon) = (Capture::new(), Capture::new());
    let port = Scratch::shared(false);
    let window = Scratch::shared(true);
    let builder = VmBuilder::new(config("pio_mmio"), io(&serial, &debugcon))
        .pio_device(0x5f0, 4, port.clone())
        .mmio_device(0xa_0000, 0x1000, window.clone());

    let outcome = VmGuard::start(builder).wait(TIMEOUT);

    assert_eq!(outcome, Outcome::DebugExit(0x10));
    assert_eq!(
        port.lock().unwrap().writes,
        vec![(0, vec![0x78, 0x56, 0x34, 0x12]), (2, vec![0xab])]
    );
    assert_eq!(
        window.lock().unwrap().writes,
        vec![
            (0x10, vec![0xbe, 0xba, 0xfe, 0xca]),
            (0x20, vec![0xef, 0xbe])
        ]
    );
}

#[test]
fn test_payload_string_port_io_reaches_the_device_one_access_at_a_time() {
    let test = "test_payload_string_port_io_reaches_the_device_one_access_at_a_time";
    if !kvm_available(test) {
        return;
    }
    let (serial, debugcon) = (Capture::new(), Capture::new());
    let port = Scratch::shared(false);
    let builder = VmBuilder::new(config("string_io"), io(&serial, &debugcon)).pio_device(
        0x5f0,
        4,
        port.clone(),
    );

    let outcome = VmGuard::start(builder).wait(TIMEOUT);

    // 0x21: `rep insb` did not get four separate one-byte reads.
    assert_eq!(outcome, Outcome::DebugExit(0x10));
    assert_eq!(
        port.lock().unwrap().writes,
        vec![
            (0, vec![0x11, 0x11]),
            (0, vec![0x22, 0x22]),
            (0, vec![0x33, 0x33]),
            (2, vec![0x10]),
        ]
    );
}

/// Counts the writes a device receives.
#[derive(Default)]
struct WriteCounter {
    writes: u64,
}

impl BusDevice for WriteCounter {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {
        self.writes += 1;
    }
}

fn writes_after(counter: &Arc<Mutex<WriteCounter>>, wait: Duration) -> u64 {
    std::thread::sleep(wait);
    counter.lock().unwrap().writes
}

#[test]
fn test_vm_pause_stops_vcpus_and_resume_restarts_them() {
    if !kvm_available("test_vm_pause_stops_vcpus_and_resume_restarts_them") {
        return;
    }
    let (serial, debugcon) = (Capture::new(), Capture::new());
    let counter = Arc::new(Mutex::new(WriteCounter::default()));
    let builder = VmBuilder::new(config("counter"), io(&serial, &debugcon)).pio_device(
        0x5f0,
        4,
        counter.clone(),
    );
    let handle = builder.start().unwrap();
    let running = writes_after(&counter, Duration::from_millis(300));

    handle.pause();
    let at_pause = writes_after(&counter, Duration::from_millis(100));
    let while_paused = writes_after(&counter, Duration::from_millis(400));
    handle.resume();
    let after_resume = writes_after(&counter, Duration::from_millis(300));
    handle.stop();
    let outcome = handle.wait();

    assert!(running > 0, "the guest never ran");
    assert_eq!(at_pause, while_paused, "the guest ran while paused");
    assert!(after_resume > while_paused, "the guest did not resume");
    assert_eq!(outcome, Outcome::Stopped);
}

#[test]
fn test_payload_uart_interrupt_reaches_handler_through_pic() {
    if !kvm_available("test_payload_uart_interrupt_reaches_handler_through_pic") {
        return;
    }
    let (outcome, _) = run_payload("irq");
    assert_eq!(outcome, Outcome::DebugExit(0x42));
}

#[test]
fn test_payload_virtio_msix_vector_reaches_idt_handler() {
    if !kvm_available("test_payload_virtio_msix_vector_reaches_idt_handler") {
        return;
    }
    let output = std::env::temp_dir().join(format!("nestbox-msix-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&output);
    let mut config = config("msix");
    config.console = Some(ConsoleConfig {
        output: ConsoleOutput::File(output.clone()),
    });
    let (serial, debugcon) = (Capture::new(), Capture::new());
    let vm = VmGuard::start(VmBuilder::new(config, io(&serial, &debugcon)));
    let outcome = vm.wait(TIMEOUT);
    let written = std::fs::read(&output).unwrap_or_default();
    let _ = std::fs::remove_file(&output);

    // The device consumed the buffer and its MSI-X vector (not INTx,
    // which the payload never routes) ran the handler.
    assert_eq!(outcome, Outcome::DebugExit(0x4d));
    assert_eq!(debugcon.bytes(), b"M");
    assert_eq!(written, b"msix\n");
}

#[test]
fn test_payload_pci_scan_finds_i440fx_and_piix3() {
    if !kvm_available("test_payload_pci_scan_finds_i440fx_and_piix3") {
        return;
    }
    let (outcome, debugcon) = run_payload("pci_scan");
    let expected: Vec<u8> = [0x1237_8086u32, 0x0600_0002, 0x7000_8086, 0x0601_0000]
        .iter()
        .flat_map(|d| d.to_le_bytes())
        .collect();
    assert_eq!(outcome, Outcome::DebugExit(0x10));
    assert_eq!(debugcon.bytes(), expected);
}

/// The virtio tablet and keyboard attach on the PCI bus after the
/// chipset, and the VM (event loop included) runs and stops cleanly.
#[test]
fn test_payload_runs_with_virtio_tablet_and_keyboard_attached() {
    if !kvm_available("test_payload_runs_with_virtio_tablet_and_keyboard_attached") {
        return;
    }
    let mut config = config("pci_scan");
    config.input = Some(VirtioInputConfig::default());
    let (serial, debugcon) = (Capture::new(), Capture::new());
    let vm = VmGuard::start(VmBuilder::new(config, io(&serial, &debugcon)));
    let outcome = vm.wait(TIMEOUT);
    // The chipset, then two virtio-input functions (0x1040 + type 18).
    let expected: Vec<u8> = [
        0x1237_8086u32,
        0x0600_0002,
        0x7000_8086,
        0x0601_0000,
        0x1052_1af4,
        0xff00_0001,
        0x1052_1af4,
        0xff00_0001,
    ]
    .iter()
    .flat_map(|d| d.to_le_bytes())
    .collect();
    assert_eq!(outcome, Outcome::DebugExit(0x10));
    assert_eq!(debugcon.bytes(), expected);
}

#[test]
fn test_payload_triple_fault_is_reported() {
    if !kvm_available("test_payload_triple_fault_is_reported") {
        return;
    }
    let (outcome, _) = run_payload("triple_fault");
    assert_eq!(outcome, Outcome::TripleFault { vcpu: 0 });
    assert!(outcome.is_failure());
}

#[test]
fn test_payload_halt_with_interrupts_off_is_reported() {
    if !kvm_available("test_payload_halt_with_interrupts_off_is_reported") {
        return;
    }
    let (outcome, _) = run_payload("halt");
    assert!(
        matches!(outcome, Outcome::HaltedWithInterruptsOff { .. }),
        "{outcome:?}"
    );
}

#[test]
fn test_payload_code_in_mmio_ends_with_clear_error() {
    if !kvm_available("test_payload_code_in_mmio_ends_with_clear_error") {
        return;
    }
    let (outcome, _) = run_payload("exec_mmio");
    // Emulation failure where KVM refuses to fetch from MMIO; a triple
    // fault where it reads all-ones and faults on the opcode.
    assert!(
        matches!(
            outcome,
            Outcome::EmulationFailure { vcpu: 0, .. } | Outcome::TripleFault { vcpu: 0 }
        ),
        "{outcome:?}"
    );
    assert!(outcome.is_failure());
}

#[test]
fn test_bzimage_64bit_entry_gets_zero_page_cmdline_e820_and_initrd() {
    if !kvm_available("test_bzimage_64bit_entry_gets_zero_page_cmdline_e820_and_initrd") {
        return;
    }
    let initrd = std::env::temp_dir().join(format!("nestbox-initrd-{}", std::process::id()));
    std::fs::write(&initrd, [0x5a; 100]).unwrap();
    let (serial, debugcon) = (Capture::new(), Capture::new());
    let config = VmConfig {
        console: None,
        input: None,
        memory_bytes: 64 << 20,
        vcpus: 1,
        boot: BootSource::Linux(engine::boot::linux::LinuxBoot {
            kernel: payload::image("bzimage64"),
            initrd: Some(initrd.clone()),
            cmdline: "console=ttyS0 nestbox".into(),
        }),
        disks: Vec::new(),
        display: None,
        network: None,
        sound: None,
        rng: false,
    };

    let outcome = VmGuard::start(VmBuilder::new(config, io(&serial, &debugcon))).wait(TIMEOUT);
    std::fs::remove_file(&initrd).unwrap();

    // The command line as given, plus what the engine appends on a host
    // without hardware virtualization (engine::cpu_quirks).
    let given = "console=ttyS0 nestbox";
    let quirks =
        engine::cpu_quirks::linux_cmdline_quirks(engine::host::Acceleration::detect(), given);
    let mut expected = match quirks {
        Some(extra) => format!("{given} {extra}"),
        None => given.to_string(),
    }
    .into_bytes();
    // 4 e820 entries, loader type 0xff (undefined), 100-byte initrd of 0x5a.
    expected.extend_from_slice(&[4, 0xff, 100, 0x5a]);
    assert_eq!(outcome, Outcome::DebugExit(0x10));
    assert_eq!(debugcon.bytes(), expected);
}
