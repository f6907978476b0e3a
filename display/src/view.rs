// SPDX-License-Identifier: Apache-2.0
//! The guest screen as an egui widget. [`GuestView`] keeps one texture in
//! step with a [`SharedFramebuffer`], uploading only the dirty rectangle,
//! draws it where the [`ScaleMode`] puts it, and turns the keyboard and
//! pointer events it receives into [`GuestInput`] for the VM.
//!
//! In [`PointerMode::Relative`] (guests with only a relative mouse: DOS,
//! PS/2-only systems) a click into the view grabs the host pointer, as
//! VMware and VirtualBox do: the cursor is hidden and held in the window,
//! and raw motion goes to the guest as [`GuestInput::PointerRelative`]
//! until [`GuestView::release_grab`] (the caller's release chord) or the
//! window losing the focus lets it go.

use egui::{Color32, Event, Sense, TextureHandle, TextureOptions, Ui};

use crate::Rect;
use crate::framebuffer::{CURSOR_SIZE, DirtyCursor, SharedFramebuffer};
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

/// How the host pointer reaches the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PointerMode {
    /// The pointer's position over the screen is sent as it moves; nothing
    /// is grabbed.
    #[default]
    Absolute,
    /// A click grabs the pointer; while grabbed, raw motion is sent as
    /// relative moves.
    Relative,
}

/// The widget's state between frames.
pub struct GuestView {
    texture: Option<TextureHandle>,
    texture_size: [usize; 2],
    mode: Option<u64>,
    /// What of the framebuffer the texture has (this view's own, so other
    /// viewers of the same framebuffer do not take its changes).
    cursor: DirtyCursor,
    scale: ScaleMode,
    /// Keys the guest has seen go down and not up (modifiers included:
    /// egui reports them as key events of their own).
    held: Vec<u16>,
    buttons: u8,
    last_pointer: Option<(u16, u16)>,
    wheel_rest: f32,
    focus_next: bool,
    keep_focus: bool,
    pointer_mode: PointerMode,
    /// Whether the host pointer is grabbed (relative mode only).
    grabbed: bool,
    /// The fraction of a pixel of raw motion not yet sent.
    motion_rest: egui::Vec2,
    /// A grab to let go of at the next `show` (the mode changed while
    /// grabbed and no context was at hand).
    release_next: bool,
    /// The guest's pointer image (a virtio-gpu guest's cursor), drawn as
    /// the host pointer: its generation, texture, hotspot and position.
    pointer: Option<ShownPointer>,
    /// The guest flush time of the last picture uploaded, and the latest
    /// upload not yet taken by [`GuestView::take_uploaded_flush`].
    last_flush: Option<u64>,
    uploaded_flush: Option<UploadedFlush>,
}

/// A picture the guest flushed, uploaded to the screen's texture (for the
/// latency benchmark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadedFlush {
    /// When the guest flushed it ([`crate::framebuffer::monotonic_ns`]).
    pub flushed_at_ns: u64,
    /// What of the texture the upload replaced.
    pub area: Rect,
}

/// The guest pointer as the view has it.
struct ShownPointer {
    generation: u64,
    texture: TextureHandle,
    hot: (u32, u32),
    at: (u32, u32),
}

impl GuestView {
    /// A view drawing the guest with `scale`.
    pub fn new(scale: ScaleMode) -> Self {
        Self {
            texture: None,
            texture_size: [0, 0],
            mode: None,
            cursor: DirtyCursor::default(),
            scale,
            held: Vec::new(),
            buttons: 0,
            last_pointer: None,
            wheel_rest: 0.0,
            focus_next: false,
            keep_focus: false,
            pointer_mode: PointerMode::Absolute,
            grabbed: false,
            motion_rest: egui::Vec2::ZERO,
            release_next: false,
            pointer: None,
            last_flush: None,
            uploaded_flush: None,
        }
    }

    /// The newest guest-flushed picture uploaded since the last call.
    pub fn take_uploaded_flush(&mut self) -> Option<UploadedFlush> {
        self.uploaded_flush.take()
    }

    /// Notes an upload of `area` of the picture whose flush time was read
    /// (before copying it) as `flushed`.
    fn note_upload(&mut self, flushed: Option<u64>, area: Rect) {
        if let Some(flushed_at_ns) = flushed
            && self.last_flush != flushed
        {
            self.uploaded_flush = Some(UploadedFlush {
                flushed_at_ns,
                area,
            });
        }
        self.last_flush = flushed;
    }

    /// Whether the guest shows a pointer of its own, which the view draws
    /// as the host pointer.
    pub fn has_guest_pointer(&self) -> bool {
        self.pointer.is_some()
    }

    /// Takes the guest's pointer from `fb` (re-uploading its image only
    /// when it changed); true when something changed.
    fn update_pointer(&mut self, ctx: &egui::Context, fb: &SharedFramebuffer) -> bool {
        let Some(pointer) = fb.pointer() else {
            return self.pointer.take().is_some();
        };
        if let Some(shown) = &mut self.pointer
            && shown.generation == pointer.generation
        {
            return false;
        }
        let size = [CURSOR_SIZE as usize; 2];
        let image = egui::ColorImage::from_rgba_unmultiplied(size, &pointer.rgba);
        let texture = ctx.load_texture("guest-pointer", image, TextureOptions::NEAREST);
        self.pointer = Some(ShownPointer {
            generation: pointer.generation,
            texture,
            hot: pointer.hot,
            at: pointer.at,
        });
        true
    }

    /// Draws the guest's pointer: at the host pointer while it is over the
    /// screen (the host's own is hidden there, so there is one pointer that
    /// never lags), else where the guest put it. `image_rect` is where the
    /// guest screen is drawn.
    fn paint_pointer(&self, ui: &Ui, painter: &egui::Painter, image_rect: egui::Rect) {
        let Some(pointer) = &self.pointer else {
            return;
        };
        if self.grabbed || self.texture_size[0] == 0 || self.texture_size[1] == 0 {
            return;
        }
        let scale = image_rect.width() / self.texture_size[0] as f32;
        let hover = ui
            .input(|i| i.pointer.hover_pos())
            .filter(|p| image_rect.contains(*p));
        let hotspot = match hover {
            Some(pos) => {
                ui.ctx().set_cursor_icon(egui::CursorIcon::None);
                pos
            }
            None => {
                image_rect.min
                    + egui::vec2(pointer.at.0 as f32 * scale, pointer.at.1 as f32 * scale)
            }
        };
        let side = CURSOR_SIZE as f32 * scale;
        let min = hotspot - egui::vec2(pointer.hot.0 as f32 * scale, pointer.hot.1 as f32 * scale);
        let rect = egui::Rect::from_min_size(min, egui::vec2(side, side));
        let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
        painter.image(pointer.texture.id(), rect, uv, Color32::WHITE);
    }

    /// How the host pointer reaches the guest.
    pub fn pointer_mode(&self) -> PointerMode {
        self.pointer_mode
    }

    /// Changes how the host pointer reaches the guest; a grab held when
    /// leaving [`PointerMode::Relative`] is let go at the next `show`.
    pub fn set_pointer_mode(&mut self, mode: PointerMode) {
        if mode != self.pointer_mode && self.grabbed {
            self.release_next = true;
        }
        self.pointer_mode = mode;
    }

    /// Whether the view holds the host pointer (hidden and kept in the
    /// window) for the guest.
    pub fn is_grabbed(&self) -> bool {
        self.grabbed
    }

    /// Lets go of the host pointer, if the view holds it: the cursor is
    /// free and shown again. Held buttons are released in the guest.
    pub fn release_grab(&mut self, ctx: &egui::Context) -> Vec<GuestInput> {
        let mut out = Vec::new();
        if !self.grabbed {
            return out;
        }
        self.grabbed = false;
        self.release_next = false;
        self.motion_rest = egui::Vec2::ZERO;
        ctx.send_viewport_cmd(egui::ViewportCommand::CursorGrab(egui::CursorGrab::None));
        ctx.send_viewport_cmd(egui::ViewportCommand::CursorVisible(true));
        if self.buttons != 0 {
            self.buttons = 0;
            out.push(GuestInput::Buttons(0));
        }
        out
    }

    /// Takes the host pointer for the guest. eframe only logs a grab
    /// mode the platform refuses, so both are asked for, the fallback
    /// first: `Confined` (X11, Windows, Wayland), then `Locked`, which
    /// replaces it where supported (macOS, Windows, Wayland) and leaves it
    /// in place where not (X11 refuses it before touching the grab).
    fn grab(&mut self, ctx: &egui::Context) {
        self.grabbed = true;
        self.motion_rest = egui::Vec2::ZERO;
        ctx.send_viewport_cmd(egui::ViewportCommand::CursorGrab(
            egui::CursorGrab::Confined,
        ));
        ctx.send_viewport_cmd(egui::ViewportCommand::CursorGrab(egui::CursorGrab::Locked));
        ctx.send_viewport_cmd(egui::ViewportCommand::CursorVisible(false));
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

    /// Brings the textures up to date with `fb` (the screen and the
    /// guest's pointer); true when something changed.
    pub fn update(&mut self, ctx: &egui::Context, fb: &SharedFramebuffer) -> bool {
        let pointer = self.update_pointer(ctx, fb);
        self.update_screen(ctx, fb) || pointer
    }

    /// Brings the screen's texture up to date with `fb`.
    fn update_screen(&mut self, ctx: &egui::Context, fb: &SharedFramebuffer) -> bool {
        // Read before the pixels: the copy is of this flush or a newer one.
        let flushed = fb.flushed_at_ns();
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
            // Everything is copied now: what changed before is seen.
            let _ = fb.dirty_since(&mut self.cursor);
            let rect = Rect::new(0, 0, info.width, info.height);
            let Ok(Some((_, image))) = fb.copy_rect_image(rect) else {
                return false;
            };
            self.texture = Some(ctx.load_texture("guest-screen", image, options));
            self.texture_size = size;
            self.mode = Some(info.mode);
            self.note_upload(flushed, rect);
            return true;
        }
        let Some(dirty) = fb.dirty_since(&mut self.cursor) else {
            return false;
        };
        let Ok(Some((dirty, image))) = fb.copy_rect_image(dirty) else {
            return false;
        };
        if let Some(texture) = &mut self.texture {
            texture.set_partial([dirty.x as usize, dirty.y as usize], image, options);
        }
        self.note_upload(flushed, dirty);
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
                self.paint_pointer(ui, &painter, image_rect);
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

        let ctx = ui.ctx().clone();
        let mut out = Vec::new();
        let window_focused = ui.input(|i| i.focused);
        if self.release_next || (self.grabbed && !window_focused) {
            out.extend(self.release_grab(&ctx));
        }
        let refocus = self.keep_focus && !response.has_focus();
        let clicked = response.clicked();
        if clicked || response.drag_started() || self.focus_next || refocus {
            self.focus_next = false;
            response.request_focus();
        }
        if clicked && self.pointer_mode == PointerMode::Relative && !self.grabbed && window_focused
        {
            // The click that grabs is the host's: its release comes with no
            // press the guest saw, so nothing of it reaches the guest.
            self.grab(&ctx);
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
            out.extend(self.release_grab(&ctx));
            out.extend(self.release_all());
            return out;
        }

        let (events, pointer) = ui.input(|i| {
            (
                i.events.clone(),
                i.pointer.latest_pos().filter(|p| image_rect.contains(*p)),
            )
        });
        // In relative mode the guest's pointer only moves (and clicks)
        // while grabbed; keys go through whenever the view has the focus.
        let relative = self.pointer_mode == PointerMode::Relative;
        let pointer_live = !relative || self.grabbed;
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
                Event::MouseMoved(delta) if relative && self.grabbed => {
                    // Raw motion, in the host mouse's own units: close to
                    // pixels, which is what a relative guest mouse counts.
                    self.motion_rest += *delta;
                    let whole = egui::vec2(self.motion_rest.x.trunc(), self.motion_rest.y.trunc());
                    if whole != egui::Vec2::ZERO {
                        self.motion_rest -= whole;
                        out.push(GuestInput::PointerRelative {
                            dx: whole.x as i32,
                            dy: whole.y as i32,
                        });
                    }
                }
                Event::PointerButton {
                    button, pressed, ..
                } if pointer_live => {
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
                Event::MouseWheel { delta, unit, .. } if pointer_live => {
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
        if let Some(pos) = pointer.filter(|_| !relative) {
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
