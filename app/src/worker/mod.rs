// SPDX-License-Identifier: Apache-2.0
//! Running VMs: one `nestbox vm-worker` process per VM, driven over a UNIX
//! socket. `api` is what the GUI and the CLI use; the rest sits behind it:
//!
//! - [`backend`]: the real [`api::VmBackend`], spawning and finding workers.
//! - [`discs`]: changing a CD-ROM drive's disc through any backend.
//! - [`client`]: one connection to a worker.
//! - [`protocol`]: the messages and their framing on the socket.
//! - [`serve`] and [`hub`]: the worker process itself and its clients.
//! - [`paths`]: where sockets and logs live.
//! - [`sys`]: descriptor passing and detaching (the only `unsafe`).

pub mod api;
pub mod backend;
pub mod client;
pub mod discs;
pub mod hub;
pub mod liveness;
pub mod paths;
pub mod protocol;
pub mod serve;
pub mod sys;
