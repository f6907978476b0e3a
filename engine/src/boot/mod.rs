// SPDX-License-Identifier: Apache-2.0
//! Boot paths: firmware from the reset vector, or a Linux kernel loaded
//! directly (`linux`), with the tables each needs.

pub mod firmware;

/// Where and how vCPU 0 starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEntry {
    /// The x86 reset state: firmware at 0xFFFF_FFF0.
    ResetVector,
}
