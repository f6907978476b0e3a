// SPDX-License-Identifier: Apache-2.0
//! `nestbox start | stop | kill | suspend | pause | resume | screenshot |
//! send-keys | cd`: the library's VMs driven through their workers, over the same
//! socket the desktop app uses.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;

use super::vmcmd::open_store;
use crate::worker::api::{RunState, VmBackend, VmCommand};
use crate::worker::backend::WorkerBackend;
use crate::worker::client::WorkerClient;
use crate::worker::discs::change_disc;
use crate::worker::liveness::kill_worker;
use crate::worker::paths::SUSPENDED_STATE;

/// How long `start` waits for the VM to be up.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `kill` waits for the worker to go.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Flags of `nestbox start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The VM's id (see nestbox list).
    id: String,
    /// Start it in the background, without a window.
    #[arg(long)]
    headless: bool,
    /// A suspended VM: throw its saved state away and start it from
    /// power-on (what was not saved to its disks is lost).
    #[arg(long)]
    discard_saved_state: bool,
}

/// Flags of `nestbox stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// The VM's id.
    id: String,
    /// Seconds to wait for the guest to shut down after the power button.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Pull the plug if it is still running after --timeout.
    #[arg(long)]
    force: bool,
}

/// A VM id alone.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The VM's id.
    id: String,
}

impl IdArgs {
    /// The arguments naming VM `id`.
    pub fn of(id: &str) -> Self {
        Self { id: id.to_string() }
    }
}

impl StartArgs {
    /// `nestbox start ID --headless`.
    pub fn headless(id: &str) -> Self {
        Self {
            id: id.to_string(),
            headless: true,
            discard_saved_state: false,
        }
    }
}

/// Flags of `nestbox screenshot`.
#[derive(Debug, Args)]
pub struct ScreenshotArgs {
    /// The VM's id.
    id: String,
    /// Where to save the PNG.
    file: PathBuf,
}

/// Flags of `nestbox send-keys`.
#[derive(Debug, Args)]
pub struct SendKeysArgs {
    /// The VM's id.
    id: String,
    /// Key chords, e.g. "ctrl+alt+del" or "esc" (each pressed, then released).
    #[arg(required = true)]
    keys: Vec<String>,
}

/// Flags of `nestbox cd`.
#[derive(Debug, Args)]
pub struct CdArgs {
    /// The VM's id.
    id: String,
    /// The disc image (an ISO) to put in the drive.
    #[arg(required_unless_present = "eject", conflicts_with = "eject")]
    image: Option<PathBuf>,
    /// Take the disc out instead.
    #[arg(long)]
    eject: bool,
    /// Which IDE CD-ROM drive (0 = the VM's first).
    #[arg(long, default_value_t = 0)]
    drive: usize,
}

/// `nestbox cd`: changes the disc in a VM's CD-ROM drive, in the running
/// VM (the guest sees a disc change) and in its settings.
pub fn cd(args: CdArgs) -> anyhow::Result<ExitCode> {
    let (_, store) = open_store()?;
    store.get(&args.id)?;
    let image = match args.image {
        Some(path) => {
            let path = std::path::absolute(&path)
                .with_context(|| format!("Cannot resolve {}", path.display()))?;
            if !path.is_file() {
                bail!("{} does not exist or is not a file", path.display());
            }
            Some(path)
        }
        None => None,
    };
    let mut backend = WorkerBackend::new(store.clone()).map_err(|e| anyhow!(e))?;
    change_disc(&store, &mut backend, &args.id, args.drive, image.clone())
        .map_err(|e| anyhow!(e))?;
    match image {
        Some(path) => eprintln!(
            "nestbox: {} is in CD-ROM drive {}",
            path.display(),
            args.drive
        ),
        None => eprintln!("nestbox: CD-ROM drive {} is empty", args.drive),
    }
    Ok(ExitCode::SUCCESS)
}

/// The backend and a check that `id` names a VM.
fn backend_for(id: &str) -> anyhow::Result<WorkerBackend> {
    let (_, store) = open_store()?;
    store.get(id)?;
    WorkerBackend::new(store).map_err(|e| anyhow!(e))
}

/// The connection to a running VM's worker, or a clear error.
fn running(backend: &WorkerBackend, id: &str) -> anyhow::Result<std::sync::Arc<WorkerClient>> {
    match backend.client(id) {
        Some(client) => Ok(client),
        None => match backend.state(id) {
            RunState::Failed(why) => bail!("VM {id} is not running: {why}"),
            RunState::NotResponding(pid) => bail!(
                "VM {id} is not responding (its worker, process {pid}, is stopped or hung): \
                 nestbox kill {id} ends it"
            ),
            _ => bail!("VM {id} is not running (nestbox start {id} starts it)"),
        },
    }
}

/// `nestbox start`.
pub fn start(args: StartArgs) -> anyhow::Result<ExitCode> {
    let mut backend = backend_for(&args.id)?;
    if args.discard_saved_state {
        discard_saved_state(&backend, &args.id)?;
    }
    backend.start(&args.id).map_err(|e| anyhow!(e))?;
    let state = match backend.client(&args.id) {
        Some(client) => client.wait_state(RUNNING_TIMEOUT, |s| *s != RunState::Starting),
        None => backend.state(&args.id),
    };
    match state {
        RunState::Running | RunState::Paused => {}
        RunState::Starting => {
            eprintln!("nestbox: VM {} is still starting", args.id);
        }
        // It may have ended already: what it ended with says why.
        _ => match backend.wait_ended(&args.id, Duration::from_secs(2)) {
            RunState::Failed(why) => bail!("VM {} failed: {why}", args.id),
            RunState::Stopped => {
                eprintln!("nestbox: VM {} started and has already stopped", args.id);
                return Ok(ExitCode::SUCCESS);
            }
            _ => {}
        },
    }
    if args.headless {
        eprintln!("nestbox: VM {} is running", args.id);
        return Ok(ExitCode::SUCCESS);
    }
    super::attach::view(&backend, &args.id)
}

/// Removes VM `id`'s saved state (refused while the VM runs).
fn discard_saved_state(backend: &WorkerBackend, id: &str) -> anyhow::Result<()> {
    if backend.state(id).is_live() {
        bail!("VM {id} is running: its saved state, if any, is in use");
    }
    let (_, store) = open_store()?;
    let saved = store.dir(id)?.join(SUSPENDED_STATE);
    match std::fs::remove_file(&saved) {
        Ok(()) => eprintln!("nestbox: VM {id}'s saved state discarded"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("Cannot remove {}: {e}", saved.display()),
    }
    Ok(())
}

/// `nestbox suspend`: saves the VM's whole state and ends it; the next
/// start resumes it.
pub fn suspend(args: IdArgs) -> anyhow::Result<ExitCode> {
    let backend = backend_for(&args.id)?;
    let client = running(&backend, &args.id)?;
    client
        .command(VmCommand::Suspend)
        .map_err(|e| anyhow!("VM {} was not suspended: {e}", args.id))?;
    let state = backend.wait_ended(&args.id, KILL_TIMEOUT);
    if state.is_live() {
        bail!(
            "VM {}'s worker (process {}) saved the VM but did not exit within {} s",
            args.id,
            client.pid(),
            KILL_TIMEOUT.as_secs()
        );
    }
    eprintln!(
        "nestbox: VM {} suspended (nestbox start {} resumes it)",
        args.id, args.id
    );
    Ok(ExitCode::SUCCESS)
}

/// `nestbox stop`.
pub fn stop(args: StopArgs) -> anyhow::Result<ExitCode> {
    let backend = backend_for(&args.id)?;
    let client = running(&backend, &args.id)?;
    client
        .command(VmCommand::PowerButton)
        .map_err(|e| anyhow!(e))?;
    let state = backend.wait_ended(&args.id, Duration::from_secs(args.timeout));
    if !state.is_live() {
        return report_end(&args.id, state);
    }
    if !args.force {
        bail!(
            "VM {} is still running {} s after the power button: \
             use --force (or nestbox kill {}) to pull the plug",
            args.id,
            args.timeout,
            args.id
        );
    }
    kill_and_wait(&backend, &client, &args.id)
}

/// `nestbox kill`: asks the worker to end at once, or, when it does not
/// answer (stopped or hung), kills its process.
pub fn kill(args: IdArgs) -> anyhow::Result<ExitCode> {
    let backend = backend_for(&args.id)?;
    if let RunState::NotResponding(pid) = backend.state(&args.id) {
        return kill_unresponsive(&args.id, pid);
    }
    let client = running(&backend, &args.id)?;
    kill_and_wait(&backend, &client, &args.id)
}

/// Ends VM `id`'s worker process `pid`, which does not answer.
fn kill_unresponsive(id: &str, pid: u32) -> anyhow::Result<ExitCode> {
    let (_, store) = open_store()?;
    let dir = store.dir(id)?;
    kill_worker(&dir, id, pid, KILL_TIMEOUT).map_err(|e| anyhow!(e))?;
    eprintln!("nestbox: VM {id} killed (its worker was not responding)");
    Ok(ExitCode::SUCCESS)
}

fn kill_and_wait(
    backend: &WorkerBackend,
    client: &WorkerClient,
    id: &str,
) -> anyhow::Result<ExitCode> {
    client.command(VmCommand::Kill).map_err(|e| anyhow!(e))?;
    let state = backend.wait_ended(id, KILL_TIMEOUT);
    if state.is_live() {
        bail!(
            "VM {id}'s worker (process {}) did not exit within {} s",
            client.pid(),
            KILL_TIMEOUT.as_secs()
        );
    }
    report_end(id, state)
}

fn report_end(id: &str, state: RunState) -> anyhow::Result<ExitCode> {
    match state {
        RunState::Failed(why) => bail!("VM {id} failed: {why}"),
        _ => {
            eprintln!("nestbox: VM {id} stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `nestbox pause` and `nestbox resume`.
pub fn pause(args: IdArgs, pause: bool) -> anyhow::Result<ExitCode> {
    let backend = backend_for(&args.id)?;
    let client = running(&backend, &args.id)?;
    let command = if pause {
        VmCommand::Pause
    } else {
        VmCommand::Resume
    };
    client.command(command).map_err(|e| anyhow!(e))?;
    Ok(ExitCode::SUCCESS)
}

/// `nestbox screenshot`: the worker's framebuffer, saved here.
pub fn screenshot(args: ScreenshotArgs) -> anyhow::Result<ExitCode> {
    let backend = backend_for(&args.id)?;
    let client = running(&backend, &args.id)?;
    let framebuffer = client.framebuffer().map_err(|e| anyhow!(e))?;
    let info = framebuffer.info().context("Cannot read the VM's screen")?;
    if info.width == 0 || info.height == 0 {
        bail!("The guest's screen is blank: no video mode is set yet (try again in a moment)");
    }
    let (w, h) = display::screenshot::save(&framebuffer, &args.file)
        .with_context(|| format!("Cannot save {}", args.file.display()))?;
    eprintln!(
        "nestbox: screenshot ({w}x{h}) saved to {}",
        args.file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `nestbox send-keys`.
pub fn send_keys(args: SendKeysArgs) -> anyhow::Result<ExitCode> {
    for chord in &args.keys {
        display::keys::parse_chord(chord).map_err(|e| anyhow!("Cannot send keys: {e}"))?;
    }
    let backend = backend_for(&args.id)?;
    let client = running(&backend, &args.id)?;
    for chord in args.keys {
        client
            .command(VmCommand::SendKeys(chord))
            .map_err(|e| anyhow!(e))?;
    }
    Ok(ExitCode::SUCCESS)
}
