// SPDX-License-Identifier: Apache-2.0
//! The guest screen as an egui widget. [`GuestView`] keeps one texture in
//! step with a [`SharedFramebuffer`], uploading only the dirty rectangle,
//! draws it where the [`ScaleMode`] puts it, and turns the keyboard and
//! pointer events it receives into [`GuestInput`] for the VM.

use egui::{Color32, Event, Sense, TextureHandle, TextureOptions, Ui};

use crate::Rect;
use crate::framebuffer::SharedFramebuffer;
use crate::keymap::egui_key_to_evdev;
use crate::scale::{ScaleMode, place, to_absolute};

/// Linux evdev codes the view synthesises for clipboard shortcuts, which
/// egui reports as clipboard events instead of keys.
const KEY_C: u16 = 46;
const KEY_X: u16 = 45;
const KEY_V: u16 = 47;

/// One thing the guest should see happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestInput {
    /// A key, by Linux evdev code, went down or up.
    Key {
        /// The evdev code.
        evdev: u16,
        /// Down (true) or up.
        pressed: bool,
    },
    /// The pointer is over the guest screen at this absolute position
    /// (0..=0x7fff on both axes, as a tablet reports it).
    PointerAbsolute {
        /// Horizontal.
        x: u16,
        /// Vertical.
        y: u16,
    },
    /// The pointer moved by this many guest pixels.
    PointerRelative {
        /// Right is positive.
        dx: i32,
        /// Down is positive.
        dy: i32,
    },
    /// The held mouse buttons changed: bit 0 left, 1 right, 2 middle.
    Buttons(u8),
    /// Wheel notches: positive is away from the user (scroll up).
    Wheel(i32),
}

/// The widget's state between frames.
pub struct GuestView {
    texture: Option<TextureHandle>,
    texture_size: [usize; 2],
    mode: Option<u64>,
    scale: ScaleMode,
    /// Keys the guest has seen go down and not up (modifiers included:
    /// egui reports them as key events of their own).
    held: Vec<u16>,
    buttons: u8,
    last_pointer: Option<(u16, u16)>,
    wheel_rest: f32,
    focus_next: bool,
    keep_focus: bool,
    scratch: Vec<u8>,
}

impl GuestView {
    /// A view drawing the guest with `scale`.
    pub fn new(scale: ScaleMode) -> Self {
        Self {
            texture: None,
            texture_size: [0, 0],
            mode: None,
            scale,
            held: Vec::new(),
            buttons: 0,
            last_pointer: None,
            wheel_rest: 0.0,
            focus_next: false,
            keep_focus: false,
            scratch: Vec::new(),
        }
    }

    /// Makes the view take the keyboard focus back whenever it lost it (a
    /// window that shows nothing but the guest).
    pub fn set_keep_focus(&mut self, keep: bool) {
        self.keep_focus = keep;
    }

    /// Gives the view the keyboard focus the next time it is shown.
    pub fn request_focus(&mut self) {
        self.focus_next = true;
    }

    /// How the guest image is fitted to the widget.
    pub fn scale(&self) -> ScaleMode {
        self.scale
    }

    /// Changes how the guest image is fitted to the widget.
    pub fn set_scale(&mut self, scale: ScaleMode) {
        self.scale = scale;
    }

    /// The guest's screen size as last uploaded.
    pub fn guest_size(&self) -> (u32, u32) {
        (self.texture_size[0] as u32, self.texture_size[1] as u32)
    }

    /// Brings the texture up to date with `fb`; true when something changed.
    pub fn update(&mut self, ctx: &egui::Context, fb: &SharedFramebuffer) -> bool {
        let Ok(info) = fb.info() else {
            return false;
        };
        let size = [info.width as usize, info.height as usize];
        if size[0] == 0 || size[1] == 0 {
            let changed = self.texture.is_some();
            self.texture = None;
            self.texture_size = [0, 0];
            return changed;
        }
        let options = self.texture_options();
        let full =
            self.texture.is_none() || self.mode != Some(info.mode) || self.texture_size != size;
        if full {
            let _ = fb.take_dirty();
            let rect = Rect::new(0, 0, info.width, info.height);
            if !matches!(fb.copy_rect_rgba(rect, &mut self.scratch), Ok(Some(_))) {
                return false;
            }
            let image = egui::ColorImage::from_rgba_unmultiplied(size, &self.scratch);
            self.texture = Some(ctx.load_texture("guest-screen", image, options));
            self.texture_size = size;
            self.mode = Some(info.mode);
            return true;
        }
        let Some(dirty) = fb.take_dirty() else {
            return false;
        };
        let Ok(Some(dirty)) = fb.copy_rect_rgba(dirty, &mut self.scratch) else {
            return false;
        };
        let image = egui::ColorImage::from_rgba_unmultiplied(
            [dirty.width as usize, dirty.height as usize],
            &self.scratch,
        );
        if let Some(texture) = &mut self.texture {
            texture.set_partial([dirty.x as usize, dirty.y as usize], image, options);
        }
        true
    }

    fn texture_options(&self) -> TextureOptions {
        match self.scale {
            // Whole-pixel scales stay crisp; free scales are smoothed.
            ScaleMode::OneToOne | ScaleMode::Integer => TextureOptions::NEAREST,
            ScaleMode::Fit | ScaleMode::Stretch => TextureOptions::LINEAR,
        }
    }

    /// Draws the guest screen into all of `ui`'s remaining space and
    /// returns what the user did to it while it had the keyboard focus.
    pub fn show(&mut self, ui: &mut Ui) -> Vec<GuestInput> {
        let (area, response) = ui.allocate_exact_size(ui.available_size(), Sense::click_and_drag());
        let painter = ui.painter_at(area);
        painter.rect_filled(area, 0.0, Color32::BLACK);
        let guest = self.guest_size();
        let placement = place(self.scale, guest, (area.width(), area.height()));
        let image_rect = egui::Rect::from_min_size(
            area.min + egui::vec2(placement.offset.0, placement.offset.1),
            egui::vec2(placement.size.0, placement.size.1),
        );
        match &self.texture {
            Some(texture) => {
                let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
                painter.image(texture.id(), image_rect, uv, Color32::WHITE);
            }
            None => {
                painter.text(
                    area.center(),
                    egui::Align2::CENTER_CENTER,
                    "No signal",
                    egui::FontId::proportional(18.0),
                    Color32::GRAY,
                );
            }
        }

        let refocus = self.keep_focus && !response.has_focus();
        if response.clicked() || response.drag_started() || self.focus_next || refocus {
            self.focus_next = false;
            response.request_focus();
        }
        // Tab, arrows and Esc belong to the guest, not to egui's focus moves.
        // Locked while the view holds egui's focus even if the window does
        // not have the keyboard yet: else an Esc arriving in the same frame
        // as the window's focus would take the focus away from the view.
        ui.memory_mut(|m| {
            if m.has_focus(response.id) {
                m.set_focus_lock_filter(
                    response.id,
                    egui::EventFilter {
                        tab: true,
                        horizontal_arrows: true,
                        vertical_arrows: true,
                        escape: true,
                    },
                );
            }
        });
        if !response.has_focus() {
            return self.release_all();
        }

        let (events, pointer) = ui.input(|i| {
            (
                i.events.clone(),
                i.pointer.latest_pos().filter(|p| image_rect.contains(*p)),
            )
        });
        let mut out = Vec::new();
        for event in &events {
            match event {
                Event::Key {
                    key,
                    physical_key,
                    pressed,
                    ..
                } => {
                    // The physical key is what a scan code names; the
                    // logical one is the fallback when winit has none.
                    let code = physical_key
                        .and_then(egui_key_to_evdev)
                        .or_else(|| egui_key_to_evdev(*key));
                    if let Some(evdev) = code {
                        self.key(evdev, *pressed, &mut out);
                    }
                }
                Event::Copy => tap(KEY_C, &mut out),
                Event::Cut => tap(KEY_X, &mut out),
                Event::Paste(_) => tap(KEY_V, &mut out),
                Event::PointerButton {
                    button, pressed, ..
                } => {
                    let bit = match button {
                        egui::PointerButton::Primary => 0x1,
                        egui::PointerButton::Secondary => 0x2,
                        egui::PointerButton::Middle => 0x4,
                        _ => 0,
                    };
                    let buttons = if *pressed {
                        self.buttons | bit
                    } else {
                        self.buttons & !bit
                    };
                    if buttons != self.buttons {
                        self.buttons = buttons;
                        out.push(GuestInput::Buttons(buttons));
                    }
                }
                Event::MouseWheel { delta, unit, .. } => {
                    let notches = match unit {
                        egui::MouseWheelUnit::Line => delta.y,
                        egui::MouseWheelUnit::Page => delta.y * 3.0,
                        egui::MouseWheelUnit::Point => delta.y / 50.0,
                    };
                    self.wheel_rest += notches;
                    let whole = self.wheel_rest.trunc();
                    if whole != 0.0 {
                        self.wheel_rest -= whole;
                        out.push(GuestInput::Wheel(whole as i32));
                    }
                }
                _ => {}
            }
        }
        if let Some(pos) = pointer {
            let local = (pos.x - image_rect.min.x, pos.y - image_rect.min.y);
            let absolute = to_absolute(&placement, local);
            if self.last_pointer != Some(absolute) {
                if let Some((lx, ly)) = self.last_pointer {
                    let sx = placement.scale_x.max(f32::EPSILON);
                    let sy = placement.scale_y.max(f32::EPSILON);
                    let span = 0x7fff as f32;
                    let dx = (f32::from(absolute.0) - f32::from(lx)) / span * placement.size.0 / sx;
                    let dy = (f32::from(absolute.1) - f32::from(ly)) / span * placement.size.1 / sy;
                    out.push(GuestInput::PointerRelative {
                        dx: dx.round() as i32,
                        dy: dy.round() as i32,
                    });
                }
                self.last_pointer = Some(absolute);
                out.push(GuestInput::PointerAbsolute {
                    x: absolute.0,
                    y: absolute.1,
                });
            }
        }
        out
    }

    /// Sends a key and remembers what is held down. A press of a key
    /// already down is the host's auto-repeat and goes through as the
    /// typematic make code a keyboard would send.
    fn key(&mut self, evdev: u16, pressed: bool, out: &mut Vec<GuestInput>) {
        let was_held = self.held.contains(&evdev);
        if pressed && !was_held {
            self.held.push(evdev);
        } else if !pressed {
            if !was_held {
                // A release of a key pressed before the view had the focus.
                return;
            }
            self.held.retain(|&k| k != evdev);
        }
        out.push(GuestInput::Key { evdev, pressed });
    }

    /// Lets go of everything held when the view loses the keyboard, so
    /// no key or button stays stuck down in the guest.
    fn release_all(&mut self) -> Vec<GuestInput> {
        let mut out = Vec::new();
        for code in self.held.drain(..).rev() {
            out.push(GuestInput::Key {
                evdev: code,
                pressed: false,
            });
        }
        if self.buttons != 0 {
            self.buttons = 0;
            out.push(GuestInput::Buttons(0));
        }
        self.last_pointer = None;
        out
    }
}

fn tap(evdev: u16, out: &mut Vec<GuestInput>) {
    out.push(GuestInput::Key {
        evdev,
        pressed: true,
    });
    out.push(GuestInput::Key {
        evdev,
        pressed: false,
    });
}
