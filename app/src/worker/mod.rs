// SPDX-License-Identifier: Apache-2.0
//! Running VMs: one `nestbox vm-worker` process per VM, driven over a UNIX
//! socket. `api` is what the GUI and the CLI use; the rest (the worker
//! itself, the wire protocol, the client) sits behind it.

pub mod api;
