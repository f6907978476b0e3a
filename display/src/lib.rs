// SPDX-License-Identifier: Apache-2.0
//! The guest screen, independent of any GUI toolkit: the geometry of a
//! shared framebuffer and the dirty-rectangle bookkeeping that lets the
//! viewer upload only what the guest changed.
//!
//! The framebuffer memory, scaling and input translation arrive with the
//! display issue; this crate never depends on eframe.

#![warn(missing_docs)]

pub mod rect;

pub use rect::Rect;
