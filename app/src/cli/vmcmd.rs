// SPDX-License-Identifier: Apache-2.0
//! `nestbox list`, `nestbox create` and `nestbox delete`: the VM library
//! from the command line, with the same choices and guardrails as the New
//! VM wizard (and the live state of running VMs from their workers).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use super::size::parse_size;
use crate::library::caps::{Caps, Request};
use crate::library::config::{Boot, Disk, DiskBus, DiskFormat, Firmware, Media};
use crate::library::disk::create_image;
use crate::library::prefs::{LoadedPrefs, Preferences};
use crate::library::profiles::{self, NewVm, ProfileFirmware};
use crate::library::store::VmStore;
use crate::worker::api::{DETAILS, RunState, VmBackend};
use crate::worker::backend::WorkerBackend;

/// File name of the disk `--new-disk` creates inside the VM directory.
const NEW_DISK_RAW: &str = "disk.img";
/// The same for a qcow2 disk.
const NEW_DISK_QCOW2: &str = "disk.qcow2";

/// Format of a disk made by `--new-disk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NewDiskFormat {
    /// A sparse raw file.
    Raw,
    /// A qcow2 image.
    Qcow2,
}

/// Flags of `nestbox create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The VM's name (names need not be unique).
    #[arg(long)]
    name: String,
    /// OS profile: linux-iso, linux-kernel, generic-bios or dos-retro.
    #[arg(long)]
    profile: String,
    /// Guest memory (e.g. 512M, 2G; a bare number is MiB); default: the
    /// profile's recommendation, at most half the host's RAM.
    #[arg(long, short = 'm', value_parser = parse_size)]
    memory: Option<u64>,
    /// vCPUs; default: the profile's recommendation, at most half the host's CPUs.
    #[arg(long)]
    cpus: Option<u32>,
    /// Install from this ISO image (attached as a read-only CD-ROM).
    #[arg(long, conflicts_with_all = ["disk", "kernel"])]
    iso: Option<PathBuf>,
    /// Use this existing disk image (left where it is; qcow2 or raw as its
    /// contents say; an ISO 9660 image becomes a read-only CD-ROM).
    #[arg(long, conflicts_with = "kernel")]
    disk: Option<PathBuf>,
    /// A file outside the VM's folder that the --disk image may use as its
    /// backing image (or data file); repeat for each one of a chain.
    #[arg(long, requires = "disk")]
    backing: Vec<PathBuf>,
    /// Boot this Linux kernel directly.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initial ramdisk for --kernel.
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Kernel command line for --kernel.
    #[arg(long, requires = "kernel", default_value = "console=ttyS0")]
    cmdline: String,
    /// Create a new empty disk of this size inside the VM (e.g. 20G).
    #[arg(long, value_parser = parse_size)]
    new_disk: Option<u64>,
    /// Format of the --new-disk image.
    #[arg(long, value_enum, default_value = "raw", requires = "new_disk")]
    new_disk_format: NewDiskFormat,
    /// Allow more than half of the host's RAM (never more than RAM - 2 GiB).
    #[arg(long)]
    allow_overcommit: bool,
}

/// Flags of `nestbox delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The VM's id (see nestbox list).
    id: String,
    /// Delete without asking.
    #[arg(long, short = 'y')]
    yes: bool,
}

/// Loads the preferences, warning about a broken file, and opens the store.
pub(super) fn open_store() -> anyhow::Result<(Preferences, VmStore)> {
    let LoadedPrefs { prefs, error } = Preferences::load_default();
    if let Some(error) = error {
        eprintln!("nestbox: warning: using default preferences: {error}");
    }
    let store = VmStore::from_prefs(&prefs)?;
    Ok((prefs, store))
}

/// `nestbox list`.
pub fn list() -> anyhow::Result<ExitCode> {
    let (_, store) = open_store()?;
    let entries = store.list()?;
    let backend = WorkerBackend::with_exe(store.clone(), PathBuf::new());
    if entries.is_empty() {
        println!(
            "No VMs in {} (nestbox create makes one)",
            store.root().display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|entry| match &entry.state {
            Ok(vm) => [
                entry.id.clone(),
                printable(&vm.name),
                format!("{} MiB", vm.memory_mib),
                vm.vcpus.to_string(),
                describe_state(&backend.state(&entry.id)),
            ],
            Err(err) => [
                entry.id.clone(),
                "-".to_string(),
                "-".to_string(),
                "-".to_string(),
                format!("needs attention: {err}"),
            ],
        })
        .collect();
    let header = ["ID", "NAME", "MEMORY", "VCPUS", "STATE"].map(String::from);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (width, cell) in widths.iter().zip(row) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        line.push_str(&row[4]);
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A run state as `nestbox list` shows it.
fn describe_state(state: &RunState) -> String {
    match state {
        RunState::Stopped => "stopped".to_string(),
        RunState::Starting => "starting".to_string(),
        RunState::Running => "running".to_string(),
        RunState::Paused => "paused".to_string(),
        RunState::Suspended => "suspended".to_string(),
        // One line per VM: the details follow the plain words.
        RunState::Failed(why) => format!("failed: {}", why.replace(DETAILS, " Details: ")),
        RunState::NotResponding(pid) => {
            format!("not responding (worker process {pid}; nestbox kill ends it)")
        }
    }
}

/// `text` with control characters (newlines, escape sequences) shown as
/// escapes, so a name cannot break or restyle the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// An existing file given on the command line, made absolute.
fn existing_file(what: &str, path: &Path) -> anyhow::Result<PathBuf> {
    if !path.is_file() {
        bail!("{what} {} does not exist or is not a file", path.display());
    }
    std::path::absolute(path).with_context(|| format!("Cannot resolve {}", path.display()))
}

/// `nestbox create`.
pub fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    if args.name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    let Some(profile) = profiles::by_id(&args.profile) else {
        let ids: Vec<String> = profiles::all().into_iter().map(|p| p.id).collect();
        bail!(
            "Unknown profile '{}': choose one of {}",
            args.profile,
            ids.join(", ")
        );
    };
    if args.iso.is_none() && args.disk.is_none() && args.kernel.is_none() && args.new_disk.is_none()
    {
        bail!("Nothing to boot: give --iso FILE, --disk FILE, --kernel FILE or --new-disk SIZE");
    }
    // Every file is checked before anything is created.
    let iso = args
        .iso
        .as_deref()
        .map(|p| existing_file("ISO image", p))
        .transpose()?;
    let disk = args
        .disk
        .as_deref()
        .map(|p| existing_file("Disk image", p))
        .transpose()?;
    let boot = match &args.kernel {
        Some(kernel) => Boot::Kernel {
            kernel: existing_file("Kernel", kernel)?,
            initrd: args
                .initrd
                .as_deref()
                .map(|p| existing_file("Initrd", p))
                .transpose()?,
            cmdline: args.cmdline.clone(),
        },
        None if profile.firmware == ProfileFirmware::None => bail!(
            "Profile {} boots a Linux kernel directly: give --kernel FILE",
            profile.id
        ),
        None => Boot::Firmware(Firmware::Seabios),
    };

    let (prefs, store) = open_store()?;
    let caps = Caps::detect(store.root()).context("Cannot read the host's resources")?;
    let memory_mib = match args.memory {
        Some(bytes) => bytes.div_ceil(1 << 20),
        None => caps.memory_default_mib(profile.memory.recommended_mib),
    };
    let vcpus = args
        .cpus
        .unwrap_or_else(|| caps.vcpus_default(profile.vcpus.recommended));
    let request = Request {
        memory_mib,
        vcpus,
        new_disk_bytes: args.new_disk.unwrap_or(0),
    };
    caps.check(&request, args.allow_overcommit)?;
    if memory_mib < profile.memory.minimum_mib {
        eprintln!(
            "nestbox: warning: {memory_mib} MiB is below the {} MiB that profile {} needs",
            profile.memory.minimum_mib, profile.id
        );
    }

    let new_disk = args.new_disk.map(|size| match args.new_disk_format {
        NewDiskFormat::Raw => (size, NEW_DISK_RAW, DiskFormat::Raw),
        NewDiskFormat::Qcow2 => (size, NEW_DISK_QCOW2, DiskFormat::Qcow2),
    });
    // The hard disk comes first: SeaBIOS skips it while it is empty and
    // boots the ISO; once installed, the disk boots.
    let mut disks = Vec::new();
    if let Some((_, file, format)) = new_disk {
        disks.push(Disk {
            path: PathBuf::from(file),
            format,
            readonly: false,
            media: Media::Disk,
            bus: DiskBus::default(),
            ejected: false,
            backing: Vec::new(),
            cache: Default::default(),
        });
    }
    if let Some(path) = disk {
        let backing = args
            .backing
            .iter()
            .map(|p| existing_file("Backing file", p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        disks.push(Disk::existing(path, backing).map_err(anyhow::Error::msg)?);
    }
    if let Some(path) = iso {
        disks.push(Disk {
            path,
            format: DiskFormat::Raw,
            readonly: true,
            media: Media::Cdrom,
            bus: DiskBus::default(),
            ejected: false,
            backing: Vec::new(),
            cache: Default::default(),
        });
    }
    let vm = profile.new_vm(NewVm {
        name: args.name.clone(),
        memory_mib,
        vcpus,
        boot,
        disks,
        allow_overcommit: args.allow_overcommit,
        // A scale mode the user chose in the preferences beats the
        // profile's; the default one does not.
        scale: Some(prefs.default_scale).filter(|s| *s != Default::default()),
    });
    let id = store.create_with(&vm, |dir| match new_disk {
        Some((size, file, format)) => {
            create_image(&dir.join(file), size, format, |_, _| {}).map_err(|e| e.to_string())
        }
        None => Ok(()),
    })?;
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

/// `nestbox delete`.
pub fn delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let (_, store) = open_store()?;
    let dir = store.dir(&args.id)?;
    let entry = store
        .list()?
        .into_iter()
        .find(|e| e.id == args.id)
        .ok_or_else(|| crate::library::store::StoreError::NotFound(args.id.clone()))?;
    let backend = WorkerBackend::with_exe(store.clone(), PathBuf::new());
    let state = backend.state(&args.id);
    if let RunState::NotResponding(pid) = state {
        bail!(
            "VM {} is not responding (its worker, process {pid}, is stopped or hung): \
             end it with nestbox kill {} first",
            args.id,
            args.id
        );
    }
    if state.is_live() {
        bail!(
            "VM {} is running: stop it first (nestbox stop {})",
            args.id,
            args.id
        );
    }
    if !args.yes {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            bail!("Not deleting {} without confirmation: pass --yes", args.id);
        }
        eprint!(
            "Delete VM \"{}\" ({}) and everything in {}, its disks included? [y/N] ",
            entry.display_name(),
            args.id,
            dir.display()
        );
        let mut answer = String::new();
        stdin.lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            eprintln!("nestbox: not deleted");
            return Ok(ExitCode::FAILURE);
        }
    }
    store.delete(&args.id)?;
    eprintln!("nestbox: deleted {}", args.id);
    Ok(ExitCode::SUCCESS)
}
