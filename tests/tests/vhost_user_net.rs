// SPDX-License-Identifier: Apache-2.0
//! Tier 4: Linux's virtio_net driver as the client of Nestbox's virtio-net
//! with passt's NAT behind it, served over vhost-user to QEMU/TCG
//! (`-netdev vhost-user`). The guest gets a DHCP lease from passt and
//! fetches a line from a TCP server this test runs on the host's loopback,
//! through the gateway address (which passt maps to the host's loopback).
//! Nothing but loopback is contacted.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::time::Duration;

use engine::devices::virtio::net::stable_mac;
use engine::net::passt::PASST_PATH;
use nestbox_tests::qemu::{VhostUserServer, boot_guest, guest_files, result_fields};
use nestbox_tests::{host_route, require_file};

/// The line the host's server sends to each client.
const REPLY: &str = "NESTBOX-NET-HELLO-7f3a";

#[test]
fn test_linux_virtio_net_gets_lease_and_reaches_host_loopback_through_passt() {
    let test = "test_linux_virtio_net_gets_lease_and_reaches_host_loopback_through_passt";
    let Some((kernel, initrd)) = guest_files(test) else {
        return;
    };
    if require_file(test, Path::new(PASST_PATH), "install Debian's passt").is_none() {
        return;
    }

    // The host's server: loopback only, one known line per connection.
    let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in server.incoming().flatten() {
            let _ = writeln!(stream, "{REPLY}");
        }
    });

    let mac = stable_mac("vhost-user-net-test");
    let vhost = VhostUserServer::start_net("vhost-net", mac);

    let serial = boot_guest(
        &kernel,
        &initrd,
        &vhost.qemu_net_args(mac),
        &format!("nestbox.test=net nestbox.port={port}"),
        Duration::from_secs(180),
    );
    let served = vhost.finish();

    let fields =
        result_fields(&serial, "net").unwrap_or_else(|| panic!("no net result:\n{serial}"));
    let field = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(field("error"), "", "{serial}");
    let address: Ipv4Addr = field("address")
        .parse()
        .unwrap_or_else(|_| panic!("no address:\n{serial}"));
    let gateway: Ipv4Addr = field("gateway")
        .parse()
        .unwrap_or_else(|_| panic!("no gateway:\n{serial}"));
    assert!(!address.is_unspecified(), "{serial}");
    // passt hands the guest the host's own address and gateway.
    if let Some((host_address, host_gateway)) = host_route() {
        assert_eq!(address.to_string(), host_address, "{serial}");
        assert_eq!(gateway.to_string(), host_gateway, "{serial}");
    } else {
        eprintln!("{test}: no default route on the host; address and gateway not compared");
    }
    assert_eq!(field("reply"), REPLY, "{serial}");
    assert!(served, "the vhost-user server failed");
}
