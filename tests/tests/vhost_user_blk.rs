// SPDX-License-Identifier: Apache-2.0
//! Tier 4: Linux's virtio_blk driver as the client of Nestbox's virtio-blk,
//! served over vhost-user to QEMU/TCG. The guest writes a known pattern,
//! flushes, drops its caches and reads it back; the checksums must match
//! and the image file must hold the pattern.

use std::io::Write;
use std::time::Duration;

use engine::devices::virtio::block::{Block, RawFile};
use nestbox_tests::qemu::{boot_guest, guest_files, result_fields, temp_path};

const PATTERN_LINE: &[u8] = b"NESTBOX-BLOCK-PATTERN\n";

fn expected_pattern() -> Vec<u8> {
    PATTERN_LINE.iter().copied().cycle().take(1 << 20).collect()
}

#[test]
fn test_linux_virtio_blk_writes_flushes_and_reads_back_pattern() {
    let Some((kernel, initrd)) =
        guest_files("test_linux_virtio_blk_writes_flushes_and_reads_back_pattern")
    else {
        return;
    };
    let image = temp_path("vhost-blk.img");
    let socket = temp_path("vhost-blk.sock");
    let _ = std::fs::remove_file(&socket);
    std::fs::File::create(&image)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let block = Block::new(
        Box::new(RawFile::open(&image, false).unwrap()),
        "nestbox-test",
    )
    .unwrap();
    let backend_socket = socket.clone();
    let backend = std::thread::spawn(move || engine::vhost_user::serve(&backend_socket, block));
    while !socket.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let devices = [
        "-chardev".to_string(),
        format!("socket,id=vu,path={}", socket.display()),
        "-device".to_string(),
        "vhost-user-blk-pci,chardev=vu".to_string(),
    ];

    let serial = boot_guest(
        &kernel,
        &initrd,
        &devices,
        "nestbox.test=blk",
        Duration::from_secs(120),
    );
    let served = backend.join().unwrap();
    let contents = std::fs::read(&image).unwrap();
    std::fs::remove_file(&image).unwrap();
    let _ = std::fs::remove_file(&socket);

    let fields =
        result_fields(&serial, "blk").unwrap_or_else(|| panic!("no blk result:\n{serial}"));
    let written = fields
        .iter()
        .find(|(k, _)| k == "written")
        .map(|(_, v)| v.clone());
    let read = fields
        .iter()
        .find(|(k, _)| k == "read")
        .map(|(_, v)| v.clone());
    assert!(written.is_some(), "{serial}");
    assert_eq!(written, read, "{serial}");
    assert!(served.is_ok(), "{served:?}");
    let pattern = expected_pattern();
    assert_eq!(
        &contents[..pattern.len()],
        &pattern[..],
        "the image does not hold the pattern"
    );
    let _ = std::io::stderr().flush();
}
