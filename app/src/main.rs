// SPDX-License-Identifier: Apache-2.0
//! The `nestbox` binary: with no arguments (or `nestbox gui`) the desktop
//! app, else the command line.

mod cli;
mod gui;
// Parts of the library are used only by tests so far.
#[allow(dead_code)]
mod library;
mod no_workers;
mod viewer;
mod virtio_input;
// The worker API has parts only the worker backend uses.
#[allow(dead_code)]
mod worker;

use std::process::ExitCode;

/// Opens the desktop app with the backend that runs VMs. Until the worker
/// processes land this is [`no_workers::NoWorkers`], which refuses to start
/// anything; the worker backend replaces it here.
fn open_gui() -> anyhow::Result<ExitCode> {
    gui::run(Box::new(no_workers::NoWorkers)).map(|()| ExitCode::SUCCESS)
}

fn main() -> ExitCode {
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
