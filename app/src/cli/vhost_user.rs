// SPDX-License-Identifier: Apache-2.0
//! `nestbox vhost-user-blk` and `nestbox vhost-user-rng`: serve a Nestbox
//! device on a vhost-user UNIX socket, for QEMU (`-device
//! vhost-user-blk-pci` / `vhost-user-rng-pci`) or any other front-end.
//! Each returns when the front-end disconnects.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use engine::devices::virtio::rng::{HostRandom, RateLimit, Rng};
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
