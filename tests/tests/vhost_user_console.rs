// SPDX-License-Identifier: Apache-2.0
//! Tier 4: Linux's virtio_console driver as the client of Nestbox's
//! virtio-console, served over vhost-user to QEMU/TCG through QEMU's
//! generic `vhost-user-device-pci` (QEMU has no vhost-user console device).
//! The guest writes a line to /dev/hvc0 that must land in the log file,
//! and reads back a line the host sends through the console's sender.

use std::process::Command;
use std::time::Duration;

use engine::devices::virtio::console::{CONFIG_SIZE, Console};
use engine::devices::virtio::device_type;
use nestbox_tests::qemu::{
    QEMU, VhostUserServer, boot_guest_watching, guest_files, result_fields, temp_path,
};

/// The line the guest writes.
const GUEST_LINE: &str = "NESTBOX-CONSOLE-OUT hello from the guest";
/// The line the host sends.
const HOST_LINE: &str = "NESTBOX-CONSOLE-IN-5e1c";

#[test]
fn test_linux_virtio_console_writes_to_log_and_reads_host_input() {
    let test = "test_linux_virtio_console_writes_to_log_and_reads_host_input";
    let Some((kernel, initrd)) = guest_files(test) else {
        return;
    };
    // QEMU registers vhost-user-device-pci but marks it not user-creatable
    // (upstream: "stop inexperienced users confusing themselves"), so
    // `-device` refuses it; `-device help` lists only creatable devices.
    let creatable = Command::new(QEMU)
        .args(["-device", "help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"vhost-user-device-pci\""));
    if !creatable {
        eprintln!(
            "{test}: skipped: this QEMU does not let -device create vhost-user-device-pci \
             (not user-creatable), and it has no vhost-user console device"
        );
        return;
    }
    let log = temp_path("console.log");
    let file = std::fs::File::create(&log).unwrap();
    let console = Console::new(Box::new(file), Some((80, 25))).unwrap();
    let sender = console.sender();
    let server = VhostUserServer::start("vhost-console", console);
    let args = vec![
        "-chardev".to_string(),
        format!("socket,id=vu,path={}", server.socket().display()),
        "-device".to_string(),
        format!(
            "vhost-user-device-pci,chardev=vu,virtio-id={},num_vqs=2,config_size={CONFIG_SIZE}",
            device_type::CONSOLE
        ),
    ];

    let mut sent = false;
    let serial = boot_guest_watching(
        &kernel,
        &initrd,
        &args,
        "nestbox.test=console",
        Duration::from_secs(120),
        |so_far| {
            if !sent && so_far.contains("NESTBOX-CONSOLE-READY") {
                sent = sender.send(format!("{HOST_LINE}\n").as_bytes()) > 0;
            }
        },
    );
    let served = server.finish();
    let logged = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    let _ = std::fs::remove_file(&log);

    let fields =
        result_fields(&serial, "console").unwrap_or_else(|| panic!("no console result:\n{serial}"));
    let field = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(field("error"), "", "{serial}");
    assert!(
        logged.lines().any(|l| l.trim_end() == GUEST_LINE),
        "the guest's line is not in the log {logged:?}; serial:\n{serial}"
    );
    assert!(sent, "the guest never said it was ready:\n{serial}");
    assert_eq!(field("in"), HOST_LINE, "{serial}");
    assert!(served, "the vhost-user server failed");
}
