// SPDX-License-Identifier: Apache-2.0
//! Tier 4: iPXE as the client of Nestbox's virtio-net device, served over
//! vhost-user to QEMU/TCG. SeaBIOS runs Debian's iPXE ROM for virtio-net,
//! iPXE finds the NIC, and its DHCP exchange goes through Nestbox's device
//! code to the VM's private passt, which answers it: iPXE prints its "ok"
//! and the address it got.
//!
//! This is the DHCP half of iPXE's proof where KVM cannot run iPXE (on
//! kvm_pvm it dies on its first timer interrupt); `network.rs` runs the
//! same ROM on Nestbox's own transport under KVM, through DHCP where the
//! KVM is hardware-backed. Nothing leaves the host: passt answers DHCP
//! itself and names no boot server, so iPXE has nothing to fetch.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use engine::devices::virtio::net::stable_mac;
use engine::net::passt::PASST_PATH;
use nestbox_tests::qemu::{QEMU, VhostUserServer, boot_firmware_until};
use nestbox_tests::{host_route, require_file, strip_ansi};

/// Debian's (ipxe-qemu) iPXE ROM for virtio-net that QEMU's virtio-net-pci
/// carries by default (found through QEMU's data directories; naming it
/// with `romfile=` made this SeaBIOS skip it).
const IPXE_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";

/// The text after iPXE's "Configuring" line began, when its DHCP said ok.
fn leased(serial: &str) -> Option<String> {
    let text = strip_ansi(serial);
    let after = text.split_once("Configuring")?.1;
    after.contains(" ok").then(|| after.to_string())
}

#[test]
fn test_ipxe_gets_dhcp_lease_through_nestbox_virtio_net_over_vhost_user() {
    let test = "test_ipxe_gets_dhcp_lease_through_nestbox_virtio_net_over_vhost_user";
    if require_file(test, Path::new(QEMU), "install qemu-system-x86").is_none()
        || require_file(test, Path::new(IPXE_ROM), "install Debian's ipxe-qemu").is_none()
        || require_file(test, Path::new(PASST_PATH), "install Debian's passt").is_none()
    {
        return;
    }
    let mac = stable_mac("vhost-user-ipxe-test");
    let vhost = VhostUserServer::start_net("vhost-ipxe", mac);

    // The NIC with its iPXE option ROM; SeaBIOS boots it (no disks).
    let args = vhost.qemu_net_args(mac);
    let mut lease_seen = None;
    let serial = boot_firmware_until(&args, Duration::from_secs(240), |so_far| {
        // Once leased, give iPXE a moment to print the address it got.
        let Some(after) = leased(so_far) else {
            return false;
        };
        let since = *lease_seen.get_or_insert_with(std::time::Instant::now);
        after.contains(" gw ") || since.elapsed() > Duration::from_secs(10)
    });
    let served = vhost.finish();
    let text = strip_ansi(&serial);

    assert!(
        text.contains("iPXE initialising devices...ok"),
        "iPXE did not start:\n{text}"
    );
    let mac_text = mac.map(|b| format!("{b:02x}")).join(":");
    assert!(
        text.contains(&mac_text),
        "iPXE did not show the VM's MAC {mac_text}:\n{text}"
    );
    let after = leased(&serial).unwrap_or_else(|| panic!("iPXE got no DHCP lease:\n{text}"));
    // "net0: <address>/<mask> gw <gateway>"
    let line = after
        .lines()
        .find(|l| l.contains("net0: ") && l.contains(" gw "))
        .unwrap_or_else(|| panic!("iPXE printed no address:\n{text}"));
    let address: Ipv4Addr = line
        .split_once("net0: ")
        .and_then(|(_, a)| a.split('/').next())
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    assert!(!address.is_unspecified(), "{line}");
    eprintln!("{test}: iPXE says {:?}", line.trim());
    // passt hands the guest the host's own address.
    if let Some((host_address, _)) = host_route() {
        assert_eq!(address.to_string(), host_address, "{line}");
    } else {
        eprintln!("{test}: no default route on the host; address not compared");
    }
    assert!(served, "the vhost-user server failed");
}
