// SPDX-License-Identifier: Apache-2.0
//! The `nestbox` binary: with no arguments (or `nestbox gui`, or a file to
//! make a VM from) the desktop app, else the command line.

mod cli;
mod gui;
// Parts of the library are used only by tests so far.
#[allow(dead_code)]
mod library;
mod screen;
mod termination;
mod timing;
mod viewer;
mod virtio_input;
// The worker API has parts only the worker backend uses.
#[allow(dead_code)]
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

/// Opens the desktop app, running VMs in worker processes (one per VM),
/// with the New VM wizard on `file` if given.
fn open_gui(file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let prefs = library::prefs::Preferences::load_default().prefs;
    let store = library::store::VmStore::from_prefs(&prefs)?;
    let backend = worker::backend::WorkerBackend::new(store).map_err(anyhow::Error::msg)?;
    gui::run(Box::new(backend), file).map(|()| ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    timing::process_started();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    match cli::main(open_gui) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("nestbox: {err:#}");
            ExitCode::FAILURE
        }
    }
}
