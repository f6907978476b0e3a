// SPDX-License-Identifier: Apache-2.0
//! The VM library: what Nestbox keeps on disk and the rules for new VMs.
//! Synchronous and free of GUI types, so the CLI and the desktop app share
//! it.
//!
//! - [`atomic`]: crash-safe file replacement, used for every write.
//! - [`config`]: one VM's `vm.toml` and its translation for the engine.
//! - [`store`]: the folder of VMs: list, create, get, update, delete.
//! - [`prefs`]: the user's `preferences.toml`.
//! - [`caps`]: host-resource guardrails (RAM, vCPUs, disk).
//! - [`profiles`]: the OS profiles embedded from `profiles/`.
//! - [`disk`]: creating empty disk images.
//! - [`iso_probe`]: what an installer ISO holds (the profile to suggest).
//! - [`helpers`]: the host files VMs need (firmware, passt) and their packages.
//! - [`snapshots`]: a VM's snapshot tree and the images behind it.

pub mod atomic;
pub mod caps;
pub mod config;
pub mod disk;
pub mod helpers;
pub mod iso_probe;
pub mod prefs;
pub mod profiles;
pub mod snapshots;
pub mod store;
#[cfg(test)]
pub(crate) mod testdir;
