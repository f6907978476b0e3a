// SPDX-License-Identifier: Apache-2.0
//! The PC platform devices firmware and legacy operating systems expect at
//! fixed I/O ports.

pub mod cmos;
pub mod debug_port;
pub mod i8042;
pub mod ps2_mouse;
pub mod serial;
pub mod system_control;
