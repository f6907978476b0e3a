// SPDX-License-Identifier: Apache-2.0
//! The `nestbox` binary: the command line (and, with no arguments, the
//! desktop app once it lands).

mod cli;
// The GUI uses parts of the library the CLI does not.
#[allow(dead_code)]
mod library;
mod screen;
mod viewer;
#[allow(dead_code)]
mod worker;

use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    match cli::main() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("nestbox: {err:#}");
            ExitCode::FAILURE
        }
    }
}
