// SPDX-License-Identifier: Apache-2.0
//! `nestbox run`: an ephemeral VM described entirely by flags, its serial
//! console on the terminal (input too: Ctrl-A x quits) or in a file. A guest reset reboots it (unless
//! `--no-reboot`); how it ended is the exit status, with one clear line
//! for every failure.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use engine::boot::linux::LinuxBoot;
use engine::host::{Acceleration, HostResources};
use engine::vm::DiskConfig;
use engine::{BootSource, Outcome, VmBuilder, VmConfig, VmIo};

use super::console::{self, ConsoleTarget, RawTerminal};
use super::disk_arg::parse_disk;
use super::size::parse_size;

use crate::library::config::SEABIOS_PATH;

/// Firmware Nestbox knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Firmware {
    /// SeaBIOS from the `seabios` package.
    Seabios,
}

/// Flags of `nestbox run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Guest memory (e.g. 512M, 2G; a bare number is MiB).
    #[arg(long, short = 'm', default_value = "512M", value_parser = parse_size)]
    memory: u64,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Boot this Linux kernel directly (bzImage, or ELF vmlinux with a PVH entry).
    #[arg(long, conflicts_with_all = ["bios", "firmware"])]
    kernel: Option<PathBuf>,
    /// Initial ramdisk for --kernel.
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Kernel command line for --kernel.
    #[arg(long, requires = "kernel", default_value = "console=ttyS0")]
    cmdline: String,
    /// Boot this firmware image (a raw flash image, mapped below 4 GiB).
    #[arg(long, conflicts_with = "firmware")]
    bios: Option<PathBuf>,
    /// Boot named firmware.
    #[arg(long, value_enum)]
    firmware: Option<Firmware>,
    /// Attach a disk image as virtio-blk: PATH[,format=raw|qcow2][,readonly]
    /// (repeatable; ISO files attach read-only).
    #[arg(long = "disk", value_parser = parse_disk)]
    disks: Vec<DiskConfig>,
    /// Where the guest's serial port goes: `stdio` or a file path.
    #[arg(long, default_value = "stdio")]
    serial: String,
    /// Write the firmware debug console (port 0x402) to this file.
    #[arg(long)]
    debugcon: Option<PathBuf>,
    /// Allow more than half of the host's RAM (never more than RAM - 2 GiB).
    #[arg(long)]
    allow_overcommit: bool,
    /// Exit instead of rebooting when the guest resets.
    #[arg(long)]
    no_reboot: bool,
}

/// Runs the VM until it powers off, exits or fails.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let host = HostResources::detect().context("Cannot read the host's memory size")?;
    host.check_request(args.memory, args.cpus, args.allow_overcommit)?;
    let boot = boot_source(&args)?;
    if let Some(warning) = Acceleration::detect().warning() {
        eprintln!("nestbox: warning: {warning}");
    }
    let config = VmConfig {
        memory_bytes: args.memory,
        vcpus: args.cpus,
        boot,
        disks: args.disks.clone(),
    };
    for disk in &config.disks {
        if !disk.path.is_file() {
            bail!(
                "Disk image {} does not exist or is not a file",
                disk.path.display()
            );
        }
    }
    let console = ConsoleTarget::default();
    let _raw = if args.serial == "stdio" {
        console::spawn_input(console.clone()).context("Cannot read the terminal")?;
        Some(RawTerminal::enable())
    } else {
        None
    };
    let mut first_boot = true;
    loop {
        let io = VmIo {
            serial: serial_out(&args.serial, first_boot)?,
            debugcon: match &args.debugcon {
                Some(path) => Some(Box::new(open_log(path, first_boot)?)),
                None => None,
            },
        };
        first_boot = false;
        let handle = VmBuilder::new(config.clone(), io).start()?;
        console.attach(handle.serial_port(), handle.control());
        let outcome = handle.wait();
        if outcome == Outcome::Reset && !args.no_reboot {
            log::info!("guest reset: rebooting");
            continue;
        }
        if outcome.is_failure() {
            eprintln!("nestbox: {outcome}");
        }
        return Ok(ExitCode::from(outcome.exit_code().clamp(0, 255) as u8));
    }
}

fn boot_source(args: &RunArgs) -> anyhow::Result<BootSource> {
    if let Some(kernel) = &args.kernel {
        for file in std::iter::once(kernel).chain(args.initrd.iter()) {
            if !file.is_file() {
                bail!("{} does not exist or is not a file", file.display());
            }
        }
        return Ok(BootSource::Linux(LinuxBoot {
            kernel: kernel.clone(),
            initrd: args.initrd.clone(),
            cmdline: args.cmdline.clone(),
        }));
    }
    let path = match (&args.bios, args.firmware) {
        (Some(path), _) => path.clone(),
        (None, Some(Firmware::Seabios)) => PathBuf::from(SEABIOS_PATH),
        (None, None) => {
            bail!("Nothing to boot: give --kernel FILE, --firmware seabios or --bios FILE")
        }
    };
    if !path.is_file() {
        if args.firmware == Some(Firmware::Seabios) {
            bail!("SeaBIOS is not installed at {SEABIOS_PATH}: install Debian's 'seabios' package");
        }
        bail!("Firmware image {} does not exist", path.display());
    }
    Ok(BootSource::Firmware {
        path,
        serial_console: true,
    })
}

fn serial_out(target: &str, truncate: bool) -> anyhow::Result<Box<dyn Write + Send>> {
    if target == "stdio" {
        return Ok(Box::new(std::io::stdout()));
    }
    Ok(Box::new(open_log(&PathBuf::from(target), truncate)?))
}

fn open_log(path: &PathBuf, truncate: bool) -> anyhow::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true);
    if truncate {
        options.write(true).truncate(true);
    } else {
        options.append(true);
    }
    options
        .open(path)
        .with_context(|| format!("Cannot open {} for writing", path.display()))
}
