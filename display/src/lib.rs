// SPDX-License-Identifier: Apache-2.0
//! The guest screen, independent of the windowing toolkit (this crate never
//! depends on eframe; it uses plain egui, without default features, for its
//! key types, the [`view`] widget and the [`watch`] repaint requests):
//!
//! - [`framebuffer`]: the shared memfd framebuffer between the VM worker
//!   (writer) and the GUI (reader), with dirty-rectangle bookkeeping so the
//!   viewer uploads only what the guest changed;
//! - [`pixels`]: what changed between two frames, and thumbnails;
//! - [`rect`]: checked rectangle arithmetic for guest-supplied geometry;
//! - [`scale`]: placing the guest image in a window and mapping pointer
//!   positions back to guest pixels or absolute tablet coordinates;
//! - [`keymap`]: the key table (Linux evdev codes, PS/2 scan code sets 1
//!   and 2) and the translation of egui keys;
//! - [`keys`]: "send keys" chords such as `ctrl+alt+del`;
//! - [`screenshot`]: PNG encoding and crash-safe PNG files;
//! - [`view`]: the guest screen as an egui widget, keeping a texture in step
//!   with a [`SharedFramebuffer`] and turning keyboard and pointer events
//!   (with a pointer grab for relative mice) into [`view::GuestInput`];
//! - [`watch`]: a thread that sleeps on a framebuffer's change counter and
//!   wakes the viewer only when the guest's screen changed.

#![warn(missing_docs)]

pub mod framebuffer;
pub mod keymap;
pub mod keys;
pub mod pixels;
pub mod rect;
pub mod scale;
pub mod screenshot;
pub mod view;
pub mod watch;

pub use framebuffer::{FrameInfo, FramebufferError, PixelFormat, SharedFramebuffer};
pub use rect::Rect;
pub use scale::{Placement, ScaleMode};
