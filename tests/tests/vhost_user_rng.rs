// SPDX-License-Identifier: Apache-2.0
//! Tier 4: Linux's virtio_rng driver as the client of Nestbox's virtio-rng,
//! served over vhost-user to QEMU/TCG. The guest's hwrng core must pick the
//! device and read entropy from it.

use std::time::Duration;

use engine::devices::virtio::rng::{HostRandom, RateLimit, Rng};
use nestbox_tests::qemu::{VhostUserServer, boot_guest, guest_files, result_fields};

#[test]
fn test_linux_virtio_rng_reads_entropy() {
    let Some((kernel, initrd)) = guest_files("test_linux_virtio_rng_reads_entropy") else {
        return;
    };
    let rng = Rng::new(Box::new(HostRandom), RateLimit::default()).unwrap();
    let server = VhostUserServer::start("vhost-rng", rng);

    let serial = boot_guest(
        &kernel,
        &initrd,
        &server.qemu_args("rng"),
        "nestbox.test=rng",
        Duration::from_secs(120),
    );
    let served = server.finish();

    let fields =
        result_fields(&serial, "rng").unwrap_or_else(|| panic!("no rng result:\n{serial}"));
    let field = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    assert!(
        field("current").is_some_and(|c| c.starts_with("virtio_rng")),
        "{serial}"
    );
    assert_eq!(field("bytes").as_deref(), Some("64"), "{serial}");
    assert!(served, "the vhost-user server failed");
}
