// SPDX-License-Identifier: Apache-2.0
//! The running VM's screen and input on the host side: [`LiveVm`] tracks
//! the VM that is up now (a guest reboot replaces it), a pump thread
//! renders its screen into the shared framebuffer the window shows, and a
//! screenshot thread saves it as a PNG.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Context;
use display::Rect;
use display::framebuffer::{PixelFormat, SharedFramebuffer};
use display::keymap::{set2_break, set2_make};
use display::view::GuestInput;
use eframe::egui;
use engine::devices::std_vga::{Frame, Screen};
use engine::vm::InputPort;
use engine::{VmControl, VmHandle};

use crate::viewer::VmLink;

/// How often the pump looks at the guest's screen.
const FRAME_INTERVAL: Duration = Duration::from_millis(16);

/// The parts of the running VM the host side drives.
#[derive(Clone)]
struct Parts {
    control: Arc<VmControl>,
    screen: Option<Screen>,
    input: InputPort,
}

/// The VM that is running now, shared by the window, the pump and the
/// screenshot thread.
#[derive(Default)]
pub struct LiveVm {
    current: Mutex<Option<Parts>>,
    finished: AtomicBool,
    stop_requested: AtomicBool,
    waker: Mutex<Option<egui::Context>>,
    buttons: Mutex<u8>,
    window_shown: (Mutex<bool>, Condvar),
}

impl LiveVm {
    /// Points everything at a newly started VM.
    pub fn attach(&self, handle: &VmHandle) {
        let parts = Parts {
            control: handle.control(),
            screen: handle.screen(),
            input: handle.input(),
        };
        *lock(&self.current) = Some(parts);
        if self.stop_requested() {
            handle.stop();
        }
    }

    fn parts(&self) -> Option<Parts> {
        lock(&self.current).clone()
    }

    /// Waits until the window has drawn its first frame; false on timeout.
    pub fn wait_for_window(&self, timeout: Duration) -> bool {
        let (shown, cond) = &self.window_shown;
        let guard = lock(shown);
        let (guard, _) = cond
            .wait_timeout_while(guard, timeout, |shown| !*shown)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }

    /// Marks the VM as ended for good and wakes the window.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Stops the running VM and any reboot after it.
    pub fn stop_current(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        if let Some(parts) = self.parts() {
            parts.control.request_stop(engine::Outcome::Stopped);
        }
    }

    /// True once the user asked the VM to stop.
    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::SeqCst)
    }

    fn wake(&self) {
        if let Some(ctx) = lock(&self.waker).as_ref() {
            ctx.request_repaint();
        }
    }

    fn screen(&self) -> Option<Screen> {
        self.parts().and_then(|p| p.screen)
    }
}

impl VmLink for LiveVm {
    fn set_waker(&self, ctx: egui::Context) {
        *lock(&self.waker) = Some(ctx);
    }

    fn window_shown(&self) {
        let (shown, cond) = &self.window_shown;
        *lock(shown) = true;
        cond.notify_all();
    }

    fn input(&self, event: GuestInput) {
        log::debug!("input: {event:?}");
        let Some(parts) = self.parts() else { return };
        match event {
            GuestInput::Key { evdev, pressed } => {
                let bytes = if pressed {
                    set2_make(evdev)
                } else {
                    set2_break(evdev)
                };
                if !bytes.is_empty() {
                    parts.input.keyboard(&bytes);
                }
            }
            GuestInput::PointerRelative { dx, dy } => {
                let buttons = *lock(&self.buttons);
                parts.input.mouse(dx, dy, 0, buttons);
            }
            GuestInput::Buttons(buttons) => {
                *lock(&self.buttons) = buttons;
                parts.input.mouse(0, 0, 0, buttons);
            }
            GuestInput::Wheel(notches) => {
                let buttons = *lock(&self.buttons);
                // PS/2 wheels count towards the user as positive.
                parts.input.mouse(0, 0, -notches, buttons);
            }
            // PS/2 has no absolute pointer; the tablet comes with virtio-input.
            GuestInput::PointerAbsolute { .. } => {}
        }
    }

    fn finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    fn stop(&self) {
        self.stop_current();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the thread that copies the guest's screen into `framebuffer`
/// whenever it changes, and wakes the window.
pub fn spawn_pump(live: Arc<LiveVm>, framebuffer: Arc<SharedFramebuffer>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("screen".into())
        .spawn(move || {
            let mut frame = Frame::default();
            let mut shown = Frame::default();
            while !live.finished() {
                std::thread::sleep(FRAME_INTERVAL);
                let Some(screen) = live.screen() else {
                    continue;
                };
                screen.render(&mut frame);
                if let Some(dirty) = publish(&framebuffer, &frame, &shown) {
                    log::trace!("screen: {dirty:?} changed");
                    std::mem::swap(&mut frame, &mut shown);
                    live.wake();
                }
            }
        })
        .context("Cannot start the screen thread")?;
    Ok(())
}

/// Writes what changed between `shown` and `frame` into `framebuffer`;
/// returns the changed area, if any.
fn publish(framebuffer: &SharedFramebuffer, frame: &Frame, shown: &Frame) -> Option<Rect> {
    let same_mode = frame.width == shown.width && frame.height == shown.height;
    let dirty = if same_mode {
        changed_rect(&shown.pixels, &frame.pixels, frame.width, frame.height)?
    } else {
        if let Err(e) = framebuffer.set_mode(frame.width, frame.height, PixelFormat::Rgbx8888) {
            log::warn!("screen: {e}");
            return None;
        }
        Rect::new(0, 0, frame.width, frame.height)
    };
    let stride = frame.width as usize * 4;
    let start = dirty.y as usize * stride + dirty.x as usize * 4;
    let written = frame
        .pixels
        .get(start..)
        .ok_or(display::FramebufferError::InvalidHeader(
            "dirty area outside the frame",
        ))
        .and_then(|src| framebuffer.write_rows(dirty, src, stride))
        .and_then(|()| framebuffer.publish(dirty));
    if let Err(e) = written {
        log::warn!("screen: {e}");
        return None;
    }
    Some(dirty)
}

/// The smallest rectangle covering every pixel that differs between two
/// frames of `width` x `height` RGBX pixels.
pub fn changed_rect(before: &[u8], after: &[u8], width: u32, height: u32) -> Option<Rect> {
    let stride = width as usize * 4;
    if stride == 0 || before.len() != after.len() {
        return (width > 0 && height > 0).then(|| Rect::new(0, 0, width, height));
    }
    let rows = before.chunks_exact(stride).zip(after.chunks_exact(stride));
    let mut top = None;
    let mut bottom = 0;
    let mut left = width;
    let mut right = 0;
    for (y, (a, b)) in rows.enumerate() {
        if a == b {
            continue;
        }
        top.get_or_insert(y as u32);
        bottom = y as u32;
        let first = a
            .chunks_exact(4)
            .zip(b.chunks_exact(4))
            .position(|(p, q)| p != q);
        let last = a
            .chunks_exact(4)
            .zip(b.chunks_exact(4))
            .rposition(|(p, q)| p != q);
        if let (Some(first), Some(last)) = (first, last) {
            left = left.min(first as u32);
            right = right.max(last as u32);
        }
    }
    let top = top?;
    Some(Rect::new(left, top, right + 1 - left, bottom + 1 - top))
}

/// Starts the thread that saves the screen as a PNG `after` the start.
pub fn spawn_screenshot(live: Arc<LiveVm>, path: PathBuf, after: Duration) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("screenshot".into())
        .spawn(move || {
            std::thread::sleep(after);
            match save_screenshot(&live, &path) {
                Ok((w, h)) => {
                    eprintln!("nestbox: screenshot ({w}x{h}) saved to {}", path.display())
                }
                Err(e) => eprintln!("nestbox: no screenshot: {e:#}"),
            }
        })
        .context("Cannot start the screenshot thread")?;
    Ok(())
}

fn save_screenshot(live: &LiveVm, path: &std::path::Path) -> anyhow::Result<(u32, u32)> {
    let screen = live
        .screen()
        .context("The VM has no screen (it is not running)")?;
    let mut frame = Frame::default();
    screen.render(&mut frame);
    if frame.width == 0 || frame.height == 0 {
        anyhow::bail!("The guest's screen is blank: no video mode is set yet");
    }
    display::screenshot::write_png(path, frame.width, frame.height, &frame.pixels)
        .with_context(|| format!("Cannot write {}", path.display()))?;
    Ok((frame.width, frame.height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_changed_rect_finds_the_changed_pixels_only() {
        let before = vec![0u8; 8 * 4 * 4];
        let mut after = before.clone();
        assert_eq!(changed_rect(&before, &after, 8, 4), None);
        // Pixel (2, 1) and (5, 2).
        after[(8 + 2) * 4] = 1;
        after[(2 * 8 + 5) * 4 + 2] = 9;
        assert_eq!(
            changed_rect(&before, &after, 8, 4),
            Some(Rect::new(2, 1, 4, 2))
        );
    }

    #[test]
    fn test_changed_rect_of_a_resized_frame_is_everything() {
        assert_eq!(
            changed_rect(&[0; 16], &[0; 32], 2, 4),
            Some(Rect::new(0, 0, 2, 4))
        );
        assert_eq!(changed_rect(&[], &[], 0, 0), None);
    }
}
