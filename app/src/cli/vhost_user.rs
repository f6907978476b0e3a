// SPDX-License-Identifier: Apache-2.0
//! `nestbox vhost-user-blk`, `vhost-user-rng`, `vhost-user-net`,
//! `vhost-user-input` and `vhost-user-gpu`: serve a Nestbox device on a
//! vhost-user UNIX socket, for QEMU (`-device vhost-user-blk-pci`,
//! `vhost-user-rng-pci`, `-netdev vhost-user`, `vhost-user-input-pci`,
//! `vhost-user-gpu-pci`) or any other front-end. Each returns when the
//! front-end disconnects.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use std::sync::Arc;

use engine::devices::virtio::gpu::vhost_user_display::FrontendSink;
use engine::devices::virtio::gpu::{Gpu, GpuConfig, NullSink};
use engine::devices::virtio::input::{Input, InputKind};
use engine::devices::virtio::net::{Net, stable_mac};
use engine::devices::virtio::rng::{HostRandom, RateLimit, Rng};
use engine::net::passt::Passt;
use engine::vm::DiskConfig;

use super::disk_arg::parse_disk;

/// Flags of `nestbox vhost-user-blk`.
#[derive(Debug, Args)]
pub struct VhostUserBlkArgs {
    /// The UNIX socket to listen on (created; must not exist).
    #[arg(long)]
    socket: PathBuf,
    /// The disk image: PATH[,format=raw|qcow2][,readonly].
    #[arg(long, value_parser = parse_disk)]
    disk: DiskConfig,
}

/// Serves the disk until the front-end disconnects.
pub fn run(args: VhostUserBlkArgs) -> anyhow::Result<()> {
    if !args.disk.path.is_file() {
        bail!(
            "Disk image {} does not exist or is not a file",
            args.disk.path.display()
        );
    }
    let block = args
        .disk
        .open_block("nestbox-vhost-blk")
        .with_context(|| format!("Cannot open {}", args.disk.path.display()))?;
    engine::vhost_user::serve(&args.socket, block)?;
    Ok(())
}

/// Flags of `nestbox vhost-user-rng`.
#[derive(Debug, Args)]
pub struct VhostUserRngArgs {
    /// The UNIX socket to listen on (created; must not exist).
    #[arg(long)]
    socket: PathBuf,
    /// The most entropy served per second, in bytes.
    #[arg(long, default_value_t = RateLimit::default().bytes_per_second)]
    bytes_per_second: u64,
}

/// Serves host entropy until the front-end disconnects.
pub fn run_rng(args: VhostUserRngArgs) -> anyhow::Result<()> {
    let limit = RateLimit {
        bytes_per_second: args.bytes_per_second,
        ..RateLimit::default()
    };
    let rng = Rng::new(Box::new(HostRandom), limit)?;
    engine::vhost_user::serve(&args.socket, rng)?;
    Ok(())
}

/// Flags of `nestbox vhost-user-net`.
#[derive(Debug, Args)]
pub struct VhostUserNetArgs {
    /// The UNIX socket to listen on (created; must not exist).
    #[arg(long)]
    socket: PathBuf,
    /// Seed for the device's stable MAC address (e.g. the VM's name).
    #[arg(long, default_value = "nestbox")]
    mac_seed: String,
}

/// Serves a NIC on user-mode NAT (a private passt) until the front-end
/// disconnects.
pub fn run_net(args: VhostUserNetArgs) -> anyhow::Result<()> {
    let passt_socket = args.socket.with_extension("passt");
    let passt = Passt::start(&passt_socket)?;
    let net = Net::new(stable_mac(&args.mac_seed), Box::new(passt.sender()?));
    engine::vhost_user::serve_net(&args.socket, net, passt)?;
    Ok(())
}

/// The flavours of `nestbox vhost-user-input --kind`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum InputKindArg {
    /// A PC keyboard.
    Keyboard,
    /// An absolute pointer.
    Tablet,
    /// A relative mouse.
    Mouse,
}

impl From<InputKindArg> for InputKind {
    fn from(kind: InputKindArg) -> Self {
        match kind {
            InputKindArg::Keyboard => Self::Keyboard,
            InputKindArg::Tablet => Self::Tablet,
            InputKindArg::Mouse => Self::Mouse,
        }
    }
}

/// Flags of `nestbox vhost-user-input`.
#[derive(Debug, Args)]
pub struct VhostUserInputArgs {
    /// The UNIX socket to listen on (created; must not exist).
    #[arg(long)]
    socket: PathBuf,
    /// Which input device the guest sees.
    #[arg(long, value_enum)]
    kind: InputKindArg,
}

/// Serves an input device until the front-end disconnects. No host input
/// source is attached yet, so the guest sees the device but no events.
pub fn run_input(args: VhostUserInputArgs) -> anyhow::Result<()> {
    let input = Input::new(args.kind.into())?;
    engine::vhost_user::serve(&args.socket, input)?;
    Ok(())
}

/// Flags of `nestbox vhost-user-gpu`.
#[derive(Debug, Args)]
pub struct VhostUserGpuArgs {
    /// The UNIX socket to listen on (created; must not exist).
    #[arg(long)]
    socket: PathBuf,
    /// Scanouts; must match the front-end's (QEMU's `max_outputs`).
    #[arg(long, default_value_t = GpuConfig::default().num_scanouts)]
    scanouts: u32,
}

/// Serves a 2D GPU until the front-end disconnects. The front-end owns the
/// displays: frames go to it (QEMU shows them on its own display), and it
/// decides the display sizes the guest is offered.
pub fn run_gpu(args: VhostUserGpuArgs) -> anyhow::Result<()> {
    let display = Arc::new(FrontendSink::new(Arc::new(NullSink)));
    let config = GpuConfig {
        num_scanouts: args.scanouts,
        ..GpuConfig::default()
    };
    let gpu = Gpu::new(config, display.clone())?;
    engine::vhost_user::serve_gpu(&args.socket, gpu, display)?;
    Ok(())
}
