// SPDX-License-Identifier: Apache-2.0
//! Tier 4: Linux's virtio_blk driver as the client of Nestbox's virtio-blk,
//! served over vhost-user to QEMU/TCG. The guest writes a known pattern,
//! flushes, drops its caches and reads it back; the checksums must match
//! and the image file must hold the pattern.

use std::time::Duration;

use engine::devices::virtio::block::{Block, RawFile};
use nestbox_tests::qemu::{VhostUserServer, boot_guest, guest_files, result_fields, temp_path};

const PATTERN_LINE: &[u8] = b"NESTBOX-BLOCK-PATTERN\n";

fn expected_pattern() -> Vec<u8> {
    PATTERN_LINE.iter().copied().cycle().take(1 << 20).collect()
}

#[test]
fn test_linux_virtio_blk_writes_flushes_and_reads_back_pattern() {
    let test = "test_linux_virtio_blk_writes_flushes_and_reads_back_pattern";
    let Some((kernel, initrd)) = guest_files(test) else {
        return;
    };
    let image = temp_path("vhost-blk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let disk = RawFile::open(&image, false).unwrap();
    let server = VhostUserServer::start(
        "vhost-blk",
        Block::new(Box::new(disk), "nestbox-test").unwrap(),
    );

    let serial = boot_guest(
        &kernel,
        &initrd,
        &server.qemu_args("blk"),
        "nestbox.test=blk",
        Duration::from_secs(120),
    );
    let served = server.finish();
    let contents = std::fs::read(&image).unwrap();
    std::fs::remove_file(&image).unwrap();

    let fields =
        result_fields(&serial, "blk").unwrap_or_else(|| panic!("no blk result:\n{serial}"));
    let field = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    assert!(field("written").is_some(), "{serial}");
    assert_eq!(field("written"), field("read"), "{serial}");
    assert!(served, "the vhost-user server failed");
    let pattern = expected_pattern();
    assert_eq!(
        &contents[..pattern.len()],
        &pattern[..],
        "the image does not hold the pattern"
    );
}
