// SPDX-License-Identifier: Apache-2.0
//! Boot paths: firmware from the reset vector, or a Linux kernel loaded
//! directly (`linux`), with the tables each needs.

pub mod acpi;
pub mod firmware;
pub mod linux;
pub mod vcpu_setup;
