// SPDX-License-Identifier: Apache-2.0
//! Command-line parsing and dispatch to each subcommand.

mod console;
mod disk_arg;
mod run;
mod screen;
mod size;
mod vhost_user;
mod vmcmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Nestbox: virtual machines on your desktop, on its own KVM engine.
#[derive(Debug, Parser)]
#[command(name = "nestbox", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the VMs in the library.
    List,
    /// Create a VM in the library (as the New VM wizard does).
    Create(vmcmd::CreateArgs),
    /// Delete a VM and everything in its directory, its disks included.
    Delete(vmcmd::DeleteArgs),
    /// Start an ephemeral VM from flags and show its serial console.
    Run(run::RunArgs),
    /// Serve a disk image as a vhost-user block device on a UNIX socket.
    VhostUserBlk(vhost_user::VhostUserBlkArgs),
    /// Serve host entropy as a vhost-user virtio-rng device on a UNIX socket.
    VhostUserRng(vhost_user::VhostUserRngArgs),
    /// Serve a virtio-net device with user-mode NAT (passt) over vhost-user.
    VhostUserNet(vhost_user::VhostUserNetArgs),
    /// Serve a virtio-input keyboard, tablet or mouse over vhost-user.
    VhostUserInput(vhost_user::VhostUserInputArgs),
    /// Serve a virtio-gpu (2D) over vhost-user, for QEMU's vhost-user-gpu-pci.
    VhostUserGpu(vhost_user::VhostUserGpuArgs),
}

/// Parses the command line and runs the chosen command.
pub fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::List => vmcmd::list(),
        Command::Create(args) => vmcmd::create(args),
        Command::Delete(args) => vmcmd::delete(args),
        Command::Run(args) => run::run(args),
        Command::VhostUserBlk(args) => vhost_user::run(args).map(|()| ExitCode::SUCCESS),
        Command::VhostUserRng(args) => vhost_user::run_rng(args).map(|()| ExitCode::SUCCESS),
        Command::VhostUserNet(args) => vhost_user::run_net(args).map(|()| ExitCode::SUCCESS),
        Command::VhostUserInput(args) => vhost_user::run_input(args).map(|()| ExitCode::SUCCESS),
        Command::VhostUserGpu(args) => vhost_user::run_gpu(args).map(|()| ExitCode::SUCCESS),
    }
}
