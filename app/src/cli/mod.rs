// SPDX-License-Identifier: Apache-2.0
//! Command-line parsing and dispatch to each subcommand.

mod attach;
mod console;
mod disk_arg;
mod run;
mod size;
mod snapshot;
mod vhost_user;
mod vmcmd;
mod vmctl;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Parser, Subcommand};

/// Nestbox: virtual machines on your desktop, on its own KVM engine.
#[derive(Debug, Parser)]
#[command(name = "nestbox", version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// What to do; with none, the desktop app opens.
    #[command(subcommand)]
    command: Option<Command>,
    /// An ISO, disk image or kernel to make a new VM from: the app opens
    /// with the New VM wizard on it.
    file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open the desktop app (the same as no command), with the New VM
    /// wizard on FILE if given.
    Gui {
        /// An ISO, disk image or kernel to make a new VM from.
        file: Option<PathBuf>,
    },
    /// List the VMs in the library.
    List,
    /// Create a VM in the library (as the New VM wizard does).
    Create(vmcmd::CreateArgs),
    /// Delete a VM and everything in its directory, its disks included.
    Delete(vmcmd::DeleteArgs),
    /// Start a VM of the library (in a window, or --headless).
    Start(vmctl::StartArgs),
    /// Shut a running VM down (ACPI power button; --force pulls the plug after --timeout).
    Stop(vmctl::StopArgs),
    /// Pull the plug of a running VM.
    Kill(vmctl::IdArgs),
    /// Save a running VM's whole state and end it; the next start resumes it.
    Suspend(vmctl::IdArgs),
    /// Pause a running VM.
    Pause(vmctl::IdArgs),
    /// Resume a paused VM.
    Resume(vmctl::IdArgs),
    /// Save a running VM's screen as a PNG file.
    Screenshot(vmctl::ScreenshotArgs),
    /// Press key chords in a running VM, e.g. "ctrl+alt+del".
    SendKeys(vmctl::SendKeysArgs),
    /// Put a disc image into a VM's IDE CD-ROM drive, or --eject it.
    Cd(vmctl::CdArgs),
    /// Take, list, revert to or delete a VM's snapshots.
    Snapshot(snapshot::SnapshotArgs),
    /// Run one VM of the library (started by `nestbox start` and the app).
    #[command(hide = true)]
    VmWorker {
        /// The VM's id.
        id: String,
    },
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
    /// Serve a virtio sound card (playback, optional capture) over vhost-user.
    VhostUserSnd(vhost_user::VhostUserSndArgs),
    /// Serve a virtio-gpu (2D) over vhost-user, for QEMU's vhost-user-gpu-pci.
    VhostUserGpu(vhost_user::VhostUserGpuArgs),
}

/// The file the app is to open, checked before any window shows.
fn file_to_open(file: Option<PathBuf>) -> anyhow::Result<Option<PathBuf>> {
    let Some(file) = file else { return Ok(None) };
    if !file.is_file() {
        let name = file.display();
        if file.exists() {
            bail!("{name} is not a file: give an ISO, a disk image or a kernel");
        }
        if let Some(command) = file.to_str().and_then(closest_command) {
            bail!("No such command or file: {name}. Did you mean `nestbox {command}`?");
        }
        bail!(
            "No such command or file: {name} (see `nestbox --help`; a file to make a VM \
             from must exist)"
        );
    }
    Ok(Some(std::path::absolute(&file).unwrap_or(file)))
}

/// The visible subcommand `word` is likely a typo of (at most two edits
/// away), as clap would suggest were `FILE` not there to take the word.
fn closest_command(word: &str) -> Option<String> {
    use clap::CommandFactory;
    if word.contains(['/', '.']) {
        return None;
    }
    Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_string())
        .map(|name| (edit_distance(word, &name), name))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, name)| name)
}

/// Levenshtein distance between `a` and `b`, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Parses the command line and runs the chosen command; with none (or
/// `gui`), runs `open_gui` with the file to open, if any.
pub fn main(open_gui: fn(Option<PathBuf>) -> anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        None => open_gui(file_to_open(cli.file)?),
        Some(Command::Gui { file }) => open_gui(file_to_open(file)?),
        Some(Command::List) => vmcmd::list(),
        Some(Command::Create(args)) => vmcmd::create(args),
        Some(Command::Delete(args)) => vmcmd::delete(args),
        Some(Command::Start(args)) => vmctl::start(args),
        Some(Command::Stop(args)) => vmctl::stop(args),
        Some(Command::Kill(args)) => vmctl::kill(args),
        Some(Command::Suspend(args)) => vmctl::suspend(args),
        Some(Command::Pause(args)) => vmctl::pause(args, true),
        Some(Command::Resume(args)) => vmctl::pause(args, false),
        Some(Command::Screenshot(args)) => vmctl::screenshot(args),
        Some(Command::SendKeys(args)) => vmctl::send_keys(args),
        Some(Command::Cd(args)) => vmctl::cd(args),
        Some(Command::Snapshot(args)) => snapshot::run(args),
        Some(Command::VmWorker { id }) => crate::worker::serve::run(&id),
        Some(Command::Run(args)) => run::run(args),
        Some(Command::VhostUserBlk(args)) => vhost_user::run(args).map(|()| ExitCode::SUCCESS),
        Some(Command::VhostUserRng(args)) => vhost_user::run_rng(args).map(|()| ExitCode::SUCCESS),
        Some(Command::VhostUserNet(args)) => vhost_user::run_net(args).map(|()| ExitCode::SUCCESS),
        Some(Command::VhostUserInput(args)) => {
            vhost_user::run_input(args).map(|()| ExitCode::SUCCESS)
        }
        Some(Command::VhostUserSnd(args)) => vhost_user::run_snd(args).map(|()| ExitCode::SUCCESS),
        Some(Command::VhostUserGpu(args)) => vhost_user::run_gpu(args).map(|()| ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_typo_of_a_command_is_suggested_and_paths_are_not() {
        assert_eq!(closest_command("strat").as_deref(), Some("start"));
        assert_eq!(closest_command("lst").as_deref(), Some("list"));
        assert_eq!(closest_command("screnshot").as_deref(), Some("screenshot"));
        assert_eq!(closest_command("install.iso"), None);
        assert_eq!(closest_command("xyzzy"), None);
        // Hidden commands are never suggested.
        assert_eq!(closest_command("vm-workr"), None);
    }

    #[test]
    fn test_edit_distance() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("start", "start"), 0);
    }
}
