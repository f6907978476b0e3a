// SPDX-License-Identifier: Apache-2.0
//! `nestbox vm-worker <id>`: the process that runs one VM of the library.
//! It detaches from its parent (its output goes to `worker.log`), claims
//! the VM's socket, runs the VM (rebooting on a guest reset) with its
//! screen in a shared framebuffer, its serial port appended to
//! `serial.log` and a thumbnail every few seconds, serves clients on the
//! socket, and exits, removing the socket, when the VM ends for good.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use display::framebuffer::SharedFramebuffer;
use engine::{Outcome, VmBuilder, VmConfig, VmIo};

use super::api::{RunState, failure_message};
use super::hub::{Hub, Worker, serve_client};
use super::liveness::WorkerLock;
use super::paths::{
    LAST_FAILURE, LAST_SCREEN, LOG_MARKER, SERIAL_LOG, SUSPENDED_STATE, THUMBNAIL, WORKER_LOG,
    ensure_runtime_dir, rotate_serial_log, socket_path,
};
use super::protocol::WorkerMessage;
use super::sys::{detach, forbid_new_privileges};
use crate::library::atomic::write_atomic;
use crate::library::prefs::Preferences;
use crate::library::store::VmStore;
use crate::screen::{self, LiveVm, save_thumbnail};
use crate::termination::OnTermination;
use crate::viewer::VmLink;

/// How often the thumbnail is refreshed while the VM runs.
const THUMBNAIL_INTERVAL: Duration = Duration::from_secs(3);
/// Width of the thumbnail in pixels.
pub const THUMBNAIL_WIDTH: u32 = 160;

/// Runs VM `id` until it ends for good; the exit status says how it ended
/// (as `nestbox run`'s does).
pub fn run(id: &str) -> anyhow::Result<ExitCode> {
    let store = VmStore::from_prefs(&Preferences::load_default().prefs)?;
    let vm = store.get(id)?;
    let dir = store.dir(id)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join(WORKER_LOG))
        .with_context(|| format!("Cannot open {}", dir.join(WORKER_LOG).display()))?;
    detach(&log).context("Cannot detach the worker from its parent")?;
    // The guest is untrusted and so, after it, is this process: nothing it
    // runs (passt) may gain privileges.
    forbid_new_privileges().context("Cannot drop the worker's privileges")?;
    // Held until this process ends: how `list`, `delete` and `kill` know it
    // lives even when it cannot answer.
    let _alive = WorkerLock::claim(&dir).with_context(|| format!("VM {id} is already running"))?;
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    eprintln!(
        "{LOG_MARKER} {} for VM {id}, started at {since_epoch} (Unix time)",
        std::process::id()
    );
    let config = vm.to_engine(&dir)?;
    let socket = socket_path(id);
    let listener = claim_socket(id, &socket)?;
    if let Err(e) = rotate_serial_log(&dir) {
        log::warn!("cannot keep the last start's {SERIAL_LOG}: {e}");
    }
    // The last failure and its screen are of a run that is over.
    let _ = fs::remove_file(dir.join(LAST_FAILURE));
    let _ = fs::remove_file(dir.join(LAST_SCREEN));
    let on_termination = if vm.suspend_on_host_shutdown {
        OnTermination::Suspend(dir.join(SUSPENDED_STATE))
    } else {
        OnTermination::Stop
    };
    let result = serve(id, &dir, config, listener, on_termination);
    let _ = fs::remove_file(&socket);
    let outcome = result?;
    eprintln!("nestbox: VM {id} ended: {outcome}");
    Ok(ExitCode::from(outcome.exit_code().clamp(0, 255) as u8))
}

/// Binds the VM's socket: refused while another live worker owns it; a
/// stale one (its worker died) is replaced.
fn claim_socket(id: &str, socket: &Path) -> anyhow::Result<UnixListener> {
    ensure_runtime_dir()?;
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            bail!("VM {id} is already running (another worker owns its socket)");
        }
        log::info!("removing the stale socket {}", socket.display());
        let _ = fs::remove_file(socket);
    }
    UnixListener::bind(socket).with_context(|| format!("Cannot listen on {}", socket.display()))
}

fn serve(
    id: &str,
    dir: &Path,
    config: VmConfig,
    listener: UnixListener,
    on_termination: OnTermination,
) -> anyhow::Result<Outcome> {
    let framebuffer = Arc::new(
        SharedFramebuffer::with_default_capacity().context("Cannot create the screen buffer")?,
    );
    let live = Arc::new(LiveVm::default());
    crate::termination::end_vm_on_termination(live.clone(), on_termination)
        .context("Cannot handle termination signals")?;
    screen::spawn_pump(live.clone(), framebuffer.clone())?;
    let worker = Worker {
        hub: Arc::new(Hub::new(id)),
        live: live.clone(),
        framebuffer,
        suspend_to: dir.join(SUSPENDED_STATE),
    };
    spawn_acceptor(listener, worker.clone())?;
    spawn_thumbnails(live.clone(), dir.join(THUMBNAIL))?;
    let started = std::time::Instant::now();
    let outcome = run_vm(&config, dir, &worker);
    live.finish();
    if outcome.is_failure() {
        save_last_screen(&worker.framebuffer, &dir.join(LAST_SCREEN));
    }
    let (state, said) = if live.suspended() && !outcome.is_failure() {
        (RunState::Suspended, "The VM was suspended".to_string())
    } else if outcome.is_failure() {
        let software = engine::host::Acceleration::detect() == engine::host::Acceleration::Software;
        let message = failure_message(&outcome, started.elapsed(), software);
        // Kept for whoever looks after this worker is gone.
        if let Err(e) = write_atomic(&dir.join(LAST_FAILURE), message.as_bytes()) {
            log::warn!("cannot keep {LAST_FAILURE}: {e}");
        }
        (RunState::Failed(message.clone()), message)
    } else {
        (RunState::Stopped, outcome.to_string())
    };
    worker.hub.set_state(state);
    worker.hub.broadcast(&WorkerMessage::Exiting {
        outcome: said,
        failure: outcome.is_failure(),
    });
    Ok(outcome)
}

/// Keeps the picture the viewers had last (the guest's screen when it
/// stopped) as a PNG at `path`; nothing when there was no picture.
fn save_last_screen(framebuffer: &SharedFramebuffer, path: &Path) {
    let saved = framebuffer
        .screenshot_rgba()
        .map_err(|e| e.to_string())
        .and_then(|(width, height, rgba)| {
            display::screenshot::write_png(path, width, height, &rgba).map_err(|e| e.to_string())
        });
    if let Err(e) = saved {
        log::debug!("no last screen: {e}");
    }
}

fn spawn_acceptor(listener: UnixListener, worker: Worker) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        let worker = worker.clone();
                        let spawned = std::thread::Builder::new()
                            .name("client".into())
                            .spawn(move || serve_client(stream, worker));
                        if let Err(e) = spawned {
                            log::warn!("cannot serve a client: {e}");
                        }
                    }
                    Err(e) => {
                        log::warn!("accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .context("Cannot start the socket thread")?;
    Ok(())
}

fn spawn_thumbnails(live: Arc<LiveVm>, path: PathBuf) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("thumbnail".into())
        .spawn(move || {
            // Saved only when the screen changed since the last one, so an
            // idle VM does not make the app reload an unchanged thumbnail.
            let mut saved_at = None;
            while !live.finished() {
                std::thread::sleep(THUMBNAIL_INTERVAL);
                let changes = live.screen_changes();
                if !live.is_attached() || saved_at == Some(changes) {
                    continue;
                }
                match save_thumbnail(&live, &path, THUMBNAIL_WIDTH) {
                    Ok(()) => saved_at = Some(changes),
                    Err(e) => log::debug!("no thumbnail: {e:#}"),
                }
            }
        })
        .context("Cannot start the thumbnail thread")?;
    Ok(())
}

/// Runs the VM, rebooting it on a guest reset, until it ends; never fails
/// (a VM that cannot start ends with a host error). A suspended VM
/// resumes from its saved state, which goes once the VM runs from it; a
/// state that cannot be restored is kept, and the error says how to start
/// afresh.
fn run_vm(config: &VmConfig, dir: &Path, worker: &Worker) -> Outcome {
    let live = &worker.live;
    let saved = dir.join(SUSPENDED_STATE);
    let used = dir.join(format!(".{SUSPENDED_STATE}.resumed"));
    // What a worker that died right after a resume left.
    let _ = fs::remove_file(&used);
    let mut resume = saved.is_file().then_some(saved.as_path());
    loop {
        let serial = match OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join(SERIAL_LOG))
        {
            Ok(file) => file,
            Err(e) => return Outcome::HostError(format!("Cannot open {SERIAL_LOG}: {e}")),
        };
        let io = VmIo {
            serial: Box::new(serial),
            debugcon: None,
        };
        let mut builder = VmBuilder::new(live.with_discs(config), io);
        let resuming = resume.is_some();
        if let Some(state) = resume.take() {
            builder = builder.restore_from(state);
        }
        let started = builder.start();
        if resuming && started.is_ok() {
            // The VM runs from it: a later start must not go back to it,
            // even if this worker dies now.
            if let Err(e) = fs::rename(&saved, &used) {
                log::warn!(
                    "cannot set the resumed state {} aside: {e}",
                    saved.display()
                );
            }
        }
        let handle = match started {
            Ok(handle) => handle,
            Err(e) if resuming => {
                return Outcome::HostError(format!(
                    "Cannot resume the VM from its saved state: {:#}. The saved state is kept; \
                     `nestbox start --discard-saved-state` starts the VM afresh without it",
                    anyhow::Error::from(e)
                ));
            }
            Err(e) => return Outcome::HostError(format!("{:#}", anyhow::Error::from(e))),
        };
        live.attach(&handle);
        worker.hub.set_state(if live.is_paused() {
            RunState::Paused
        } else {
            RunState::Running
        });
        // Deleted once the VM is reported running: dropping a large file's
        // cached pages takes a while.
        if resuming && let Err(e) = fs::remove_file(&used) {
            log::warn!("cannot remove the resumed state {}: {e}", used.display());
        }
        let outcome = handle.wait();
        // The last picture of this boot, while its screen is still there.
        if let Err(e) = save_thumbnail(live, &dir.join(THUMBNAIL), THUMBNAIL_WIDTH) {
            log::debug!("no thumbnail: {e:#}");
        }
        live.detach();
        if outcome.restarts() && !live.stop_requested() {
            if outcome != Outcome::Reset {
                log::warn!("{outcome}: resetting the machine, as a PC does");
            }
            log::info!("guest reset: rebooting");
            continue;
        }
        return outcome;
    }
}
