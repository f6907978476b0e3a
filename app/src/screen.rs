// SPDX-License-Identifier: Apache-2.0
//! The running VM's screen and input on the host side, shared by
//! `nestbox run` and the VM worker: [`LiveVm`] tracks the VM that is up now
//! (a guest reboot replaces it) and drives it (input, pause, power button),
//! a pump thread renders its screen into the shared framebuffer a window
//! shows, and screenshots and thumbnails save it as a PNG.
//!
//! Input goes to the PS/2 devices (firmware, older systems) and, where the
//! VM has them, the virtio tablet and keyboard ([`route`]): pointer
//! positions only exist on the tablet; buttons and the wheel go to both
//! pointers; keys go to the virtio keyboard once its driver is up and to
//! PS/2 until then, so a guest never sees a key twice.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use display::Rect;
use display::framebuffer::{PixelFormat, PointerImage, SharedFramebuffer};
use display::keymap::{set2_break, set2_make};
use display::keys::{chord_events, parse_chord};
use display::view::GuestInput;
use eframe::egui;
use engine::audio::SoundControl;
use engine::devices::std_vga::{Frame, GpuUpdate, GuestScreen, Shown};
use engine::devices::virtio::input::{InputEvent, InputKind};
use engine::vm::InputPort;
use engine::{Outcome, VmConfig, VmHandle, VmRemote};

use crate::viewer::VmLink;

/// What commands to a VM that is not up (yet) answer.
const NOT_RUNNING: &str = "The VM is not running";
/// What sound commands to a VM without a sound card answer.
const NO_SOUND: &str = "The VM has no sound card";

/// How often the pump looks at the guest's screen while it changes.
const FRAME_INTERVAL: Duration = Duration::from_millis(16);
/// How often it looks once nothing changed for [`IDLE_AFTER`] (user input
/// brings it back to [`FRAME_INTERVAL`] at once), as displays back off
/// their refresh when idle.
const IDLE_INTERVAL: Duration = Duration::from_millis(100);
/// See [`IDLE_INTERVAL`].
const IDLE_AFTER: Duration = Duration::from_secs(1);

/// What the screen pump wakes up for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Wakes {
    /// Input events sent to the guest.
    inputs: u64,
    /// Changes of the virtio-gpu's picture or pointer.
    pictures: u64,
}

/// Why [`LiveVm::wait_for_wake`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Woke {
    /// The user sent input (the guest may answer on screen soon).
    Input,
    /// The virtio-gpu's picture or pointer changed.
    Picture,
    /// Neither, within the timeout.
    Timeout,
}

/// The parts of the running VM the host side drives.
#[derive(Clone)]
struct Parts {
    remote: VmRemote,
    screen: Option<GuestScreen>,
    input: InputPort,
    sound: Option<Arc<SoundControl>>,
}

/// Sound levels the user set while the VM ran (None: as the VM started).
#[derive(Clone, Copy, Default)]
struct Levels {
    volume: Option<u8>,
    muted: Option<bool>,
}

impl Levels {
    fn apply(&self, control: &SoundControl) {
        if let Some(volume) = self.volume {
            control.set_volume(f32::from(volume) / 100.0);
        }
        if let Some(muted) = self.muted {
            control.set_muted(muted);
        }
    }
}

/// The VM that is running now, shared by the window, the pump and the
/// screenshot thread.
#[derive(Default)]
pub struct LiveVm {
    current: Mutex<Option<Parts>>,
    finished: AtomicBool,
    stop_requested: AtomicBool,
    /// Set once the VM's state was saved and it ended for a resume.
    suspended: AtomicBool,
    paused: AtomicBool,
    waker: Mutex<Option<egui::Context>>,
    buttons: Mutex<u8>,
    window_shown: (Mutex<bool>, Condvar),
    levels: Mutex<Levels>,
    /// Counts the frames the pump published (what thumbnails look at).
    screen_changes: AtomicU64,
    /// Counts input events and virtio-gpu picture changes, for the pump
    /// to wake up on.
    wakes: (Mutex<Wakes>, Condvar),
    /// Discs the user put in or took out during this run, by CD-ROM
    /// drive: what a guest reboot starts with.
    discs: Mutex<Vec<(usize, Option<PathBuf>)>>,
    /// The display size the host last offered the guest (its window's),
    /// offered again to the adapter a guest reboot brings.
    display_size: Mutex<Option<(u32, u32)>>,
}

impl LiveVm {
    /// Points everything at a newly started VM.
    pub fn attach(&self, handle: &VmHandle) {
        let parts = Parts {
            remote: handle.remote(),
            screen: handle.screen(),
            input: handle.input(),
            sound: handle.sound(),
        };
        // Levels set during this run hold across a guest reboot, and so
        // does the window's size.
        if let Some(control) = &parts.sound {
            lock(&self.levels).apply(control);
        }
        if let (Some(screen), Some((width, height))) = (&parts.screen, *lock(&self.display_size)) {
            screen.request_display_size(width, height);
        }
        *lock(&self.current) = Some(parts);
        if self.stop_requested() {
            handle.stop();
        } else if self.paused.load(Ordering::SeqCst) {
            // Paused across a reboot: the new VM starts paused too.
            handle.pause();
        }
    }

    /// True while a VM is attached (it may be paused).
    pub fn is_attached(&self) -> bool {
        self.parts().is_some()
    }

    /// Forgets the VM that just ended (before a reboot attaches the next).
    pub fn detach(&self) {
        *lock(&self.current) = None;
    }

    /// Pauses the VM's vCPUs.
    pub fn pause(&self) -> Result<(), String> {
        let parts = self.parts().ok_or(NOT_RUNNING)?;
        self.paused.store(true, Ordering::SeqCst);
        parts.remote.pause();
        Ok(())
    }

    /// Resumes the VM's vCPUs.
    pub fn resume(&self) -> Result<(), String> {
        let parts = self.parts().ok_or(NOT_RUNNING)?;
        self.paused.store(false, Ordering::SeqCst);
        parts.remote.resume();
        Ok(())
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Presses the ACPI power button.
    pub fn power_button(&self) -> Result<(), String> {
        self.parts().ok_or(NOT_RUNNING)?.remote.press_power_button();
        Ok(())
    }

    /// Resets the machine (the reboot loop starts it again).
    pub fn reset(&self) -> Result<(), String> {
        self.parts()
            .ok_or(NOT_RUNNING)?
            .remote
            .stop_with(Outcome::Reset);
        Ok(())
    }

    /// Presses and releases a key chord such as `ctrl+alt+del`.
    pub fn send_keys(&self, chord: &str) -> Result<(), String> {
        let codes = parse_chord(chord).map_err(|e| format!("Cannot send keys: {e}"))?;
        if self.parts().is_none() {
            return Err(NOT_RUNNING.to_string());
        }
        for (evdev, pressed) in chord_events(&codes) {
            VmLink::input(self, GuestInput::Key { evdev, pressed });
        }
        Ok(())
    }

    /// Sets the sound card's playback volume in percent (0..=100), now
    /// and for the VMs a guest reboot starts.
    pub fn set_volume(&self, percent: u8) -> Result<(), String> {
        if percent > 100 {
            return Err(format!("Volume {percent} % is over 100 %"));
        }
        self.set_levels(|levels| levels.volume = Some(percent))
    }

    /// Mutes or unmutes the sound card, now and after a guest reboot.
    pub fn set_muted(&self, muted: bool) -> Result<(), String> {
        self.set_levels(|levels| levels.muted = Some(muted))
    }

    /// Puts `image` into IDE CD-ROM drive `cd`, or empties it (None), now
    /// and for the VMs a guest reboot starts.
    pub fn change_cd(&self, cd: usize, image: Option<PathBuf>) -> Result<(), String> {
        let parts = self.parts().ok_or(NOT_RUNNING)?;
        parts
            .remote
            .change_cd(cd, image.as_deref())
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
        let mut discs = lock(&self.discs);
        discs.retain(|(drive, _)| *drive != cd);
        discs.push((cd, image));
        Ok(())
    }

    /// Offers the guest a `width` × `height` display (a virtio-gpu guest
    /// switches to it), now and after a guest reboot.
    pub fn set_display_size(&self, width: u32, height: u32) -> Result<(), String> {
        let parts = self.parts().ok_or(NOT_RUNNING)?;
        let screen = parts.screen.ok_or("The VM has no screen")?;
        if !screen.request_display_size(width, height) {
            return Err(format!(
                "The guest's display cannot be {width}x{height}: the VM has a plain VGA, \
                 or the size is out of range"
            ));
        }
        *lock(&self.display_size) = Some((width, height));
        Ok(())
    }

    /// `config` with the discs changed during this run.
    pub fn with_discs(&self, config: &VmConfig) -> VmConfig {
        let mut config = config.clone();
        for (cd, image) in lock(&self.discs).iter() {
            config.put_disc(*cd, image.clone());
        }
        config
    }

    fn set_levels(&self, change: impl FnOnce(&mut Levels)) -> Result<(), String> {
        let parts = self.parts().ok_or(NOT_RUNNING)?;
        let control = parts.sound.ok_or(NO_SOUND)?;
        let mut levels = lock(&self.levels);
        change(&mut levels);
        levels.apply(&control);
        Ok(())
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
            parts.remote.stop_with(Outcome::Stopped);
        }
    }

    /// Saves the VM's whole state to `path` and ends it, to be resumed
    /// from there; says how much was written. On an error (a device that
    /// cannot be saved yet) the VM runs on as it was.
    pub fn suspend(&self, path: &Path) -> Result<String, String> {
        let parts = self.parts().ok_or(NOT_RUNNING)?;
        let report = parts
            .remote
            .save_state(path)
            .map_err(|e| format!("Cannot suspend the VM: {e}"))?;
        self.suspended.store(true, Ordering::SeqCst);
        self.stop_requested.store(true, Ordering::SeqCst);
        parts.remote.stop_with(Outcome::Stopped);
        Ok(format!(
            "{} MiB of state saved ({} MiB of guest memory in use)",
            report.file_bytes.div_ceil(1 << 20),
            report.ram.touched.div_ceil(1 << 20)
        ))
    }

    /// True once the VM was suspended.
    pub fn suspended(&self) -> bool {
        self.suspended.load(Ordering::SeqCst)
    }

    /// True once the user asked the VM to stop.
    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::SeqCst)
    }

    fn wake(&self) {
        if let Some(ctx) = lock(&self.waker).as_ref() {
            display::watch::request_one_pass(ctx);
        }
    }

    /// Sleeps up to `timeout`, less if input arrives or the virtio-gpu's
    /// picture changes; says which (a picture change wins).
    fn wait_for_wake(&self, seen: &mut Wakes, timeout: Duration) -> Woke {
        let (wakes, cond) = &self.wakes;
        let guard = lock(wakes);
        let (guard, _) = cond
            .wait_timeout_while(guard, timeout, |w| *w == *seen)
            .unwrap_or_else(|e| e.into_inner());
        let now = *guard;
        drop(guard);
        let woke = if now.pictures != seen.pictures {
            Woke::Picture
        } else if now.inputs != seen.inputs {
            Woke::Input
        } else {
            Woke::Timeout
        };
        *seen = now;
        woke
    }

    /// Wakes the pump: the virtio-gpu's picture or pointer changed.
    fn picture_changed(&self) {
        let (wakes, cond) = &self.wakes;
        lock(wakes).pictures += 1;
        cond.notify_all();
    }

    /// How many frames the screen pump has published so far.
    pub fn screen_changes(&self) -> u64 {
        self.screen_changes.load(Ordering::SeqCst)
    }

    fn screen(&self) -> Option<GuestScreen> {
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
        if let Some(screen) = &parts.screen {
            screen.note_input();
        }
        {
            let (wakes, cond) = &self.wakes;
            lock(wakes).inputs += 1;
            cond.notify_all();
        }
        let port = &parts.input;
        let mut held = lock(&self.buttons);
        let devices = Devices {
            tablet: port.tablet().is_some(),
            virtio_keyboard_active: port.virtio_keyboard().is_some_and(|k| k.is_active()),
        };
        let (routes, now) = route(event, *held, devices);
        *held = now;
        drop(held);
        if !routes.ps2_key.is_empty() {
            port.keyboard(&routes.ps2_key);
        }
        if let Some((dx, dy, dz, buttons)) = routes.ps2_mouse {
            port.mouse(dx, dy, dz, buttons);
        }
        if let Some(tablet) = port.tablet() {
            tablet.push_events(&routes.tablet);
        }
        if let Some(keyboard) = port.virtio_keyboard() {
            keyboard.push_events(&routes.virtio_keyboard);
        }
    }

    fn finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    fn stop(&self) {
        self.stop_current();
    }
}

/// Which virtio input devices a VM has, as far as routing cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Devices {
    /// The VM has a virtio tablet.
    pub tablet: bool,
    /// The VM has a virtio keyboard and its driver set DRIVER_OK.
    pub virtio_keyboard_active: bool,
}

/// Where one host input goes: nothing where a field is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    /// Scan code set 2 bytes for the PS/2 keyboard.
    pub ps2_key: Vec<u8>,
    /// A PS/2 mouse packet: dx, dy, wheel (towards the user positive) and
    /// the held buttons.
    pub ps2_mouse: Option<(i32, i32, i32, u8)>,
    /// Events for the virtio tablet.
    pub tablet: Vec<InputEvent>,
    /// Events for the virtio keyboard.
    pub virtio_keyboard: Vec<InputEvent>,
}

/// Routes `event` to the VM's input devices, given the buttons `held`
/// before; returns the routes and the buttons held after.
pub fn route(event: GuestInput, held: u8, devices: Devices) -> (Routes, u8) {
    let mut routes = Routes::default();
    let mut now = held;
    match event {
        GuestInput::Key { evdev, pressed } => {
            if devices.virtio_keyboard_active {
                routes.virtio_keyboard =
                    crate::virtio_input::to_events(InputKind::Keyboard, event, held).0;
            } else {
                routes.ps2_key = if pressed {
                    set2_make(evdev)
                } else {
                    set2_break(evdev)
                };
            }
        }
        GuestInput::PointerRelative { dx, dy } => {
            routes.ps2_mouse = Some((dx, dy, 0, held));
        }
        GuestInput::Buttons(buttons) => {
            now = buttons;
            routes.ps2_mouse = Some((0, 0, 0, buttons));
        }
        GuestInput::Wheel(notches) => {
            // PS/2 wheels count towards the user as positive.
            routes.ps2_mouse = Some((0, 0, -notches, held));
        }
        // PS/2 has no absolute pointer: only the tablet takes it.
        GuestInput::PointerAbsolute { .. } => {}
    }
    if devices.tablet {
        routes.tablet = crate::virtio_input::to_events(InputKind::Tablet, event, held).0;
    }
    (routes, now)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the thread that copies the guest's screen into `framebuffer`
/// whenever it changes, and wakes the window. A virtio-gpu's picture is
/// copied as soon as the guest flushes it, only the area it changed; a
/// VGA's is looked at on a timer and compared (see [`FRAME_INTERVAL`]).
pub fn spawn_pump(live: Arc<LiveVm>, framebuffer: Arc<SharedFramebuffer>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("screen".into())
        .spawn(move || Pump::new(live, framebuffer).run())
        .context("Cannot start the screen thread")?;
    Ok(())
}

/// The screen pump's state between looks.
struct Pump {
    live: Arc<LiveVm>,
    framebuffer: Arc<SharedFramebuffer>,
    /// The VGA picture rendered last, and the one published before it.
    frame: Frame,
    shown: Frame,
    /// The adapter looked at and what its last rendered VGA picture was
    /// made of.
    seen: Option<(GuestScreen, Shown)>,
    /// The guest pointer's generation the viewers have.
    pointer_seen: Option<u64>,
    wakes: Wakes,
    active_at: Instant,
    /// Whether the framebuffer holds the virtio-gpu's picture.
    on_gpu: bool,
}

impl Pump {
    fn new(live: Arc<LiveVm>, framebuffer: Arc<SharedFramebuffer>) -> Self {
        Self {
            live,
            framebuffer,
            frame: Frame::default(),
            shown: Frame::default(),
            seen: None,
            pointer_seen: None,
            wakes: Wakes::default(),
            active_at: Instant::now(),
            on_gpu: false,
        }
    }

    fn run(mut self) {
        while !self.live.finished() {
            let mut interval = if self.active_at.elapsed() < IDLE_AFTER {
                FRAME_INTERVAL
            } else {
                IDLE_INTERVAL
            };
            // A blinking cursor needs a look at each blink, no more.
            if let Some((screen, state)) = &self.seen
                && let Some(blink) = screen.next_blink(state, Instant::now())
            {
                interval = interval.min(blink + Duration::from_millis(1));
            }
            if self.live.wait_for_wake(&mut self.wakes, interval) == Woke::Input {
                self.active_at = Instant::now();
                // Let the guest react before looking.
                std::thread::sleep(FRAME_INTERVAL);
            }
            self.look();
        }
        if let Some((screen, _)) = &self.seen {
            screen.set_gpu_waker(None);
        }
    }

    /// Publishes what changed on the guest's screen since the last look.
    fn look(&mut self) {
        let Some(screen) = self.live.screen() else {
            return;
        };
        // A guest reboot brings a new adapter: start afresh.
        if self.seen.as_ref().is_none_or(|(s, _)| !s.is_same(&screen)) {
            if let Some((old, _)) = &self.seen {
                old.set_gpu_waker(None);
            }
            let live = Arc::downgrade(&self.live);
            screen.set_gpu_waker(Some(Arc::new(move || {
                if let Some(live) = live.upgrade() {
                    live.picture_changed();
                }
            })));
            self.seen = Some((screen.clone(), Shown::default()));
        }
        self.pointer_seen = publish_pointer(&self.framebuffer, &screen, self.pointer_seen);
        let framebuffer = &self.framebuffer;
        let whole = !self.on_gpu;
        if let Some(published) = screen.take_gpu_update(|update| {
            let published = publish_gpu(framebuffer, update, whole);
            (published != Published::Failed, published)
        }) {
            self.on_gpu = true;
            if let Published::Changed(_) = published {
                self.active_at = Instant::now();
                self.published();
            }
            return;
        }
        let Some((_, state)) = self.seen.as_mut() else {
            return;
        };
        if self.on_gpu {
            // Back to the VGA: render and publish all of it afresh.
            self.on_gpu = false;
            *state = Shown::default();
            self.shown.width = 0;
            self.shown.height = 0;
        }
        // Nothing to do while the picture stays as it is.
        if !screen.render_changed(&mut self.frame, state, Instant::now()) {
            return;
        }
        // Blinks alone do not keep the pump at the frame rate.
        if let Some(changed) = state.changed_at() {
            self.active_at = self.active_at.max(changed);
        }
        match publish(&self.framebuffer, &self.frame, &self.shown) {
            Published::Changed(dirty) => {
                log::trace!("screen: {dirty:?} changed");
                std::mem::swap(&mut self.frame, &mut self.shown);
                self.published();
            }
            Published::Same => {}
            // Look again next time, as if nothing had been shown.
            Published::Failed => *state = Shown::default(),
        }
    }

    /// Counts a published picture and wakes the window.
    fn published(&self) {
        self.live.screen_changes.fetch_add(1, Ordering::SeqCst);
        self.live.wake();
    }
}

/// Hands the guest's pointer (a virtio-gpu guest's cursor) to the
/// viewers when it changed since `seen` (its generation, None: hidden);
/// returns what they have now.
fn publish_pointer(
    framebuffer: &SharedFramebuffer,
    screen: &GuestScreen,
    seen: Option<u64>,
) -> Option<u64> {
    // The image is copied only when the pointer changed.
    if screen.cursor_generation() == seen {
        return seen;
    }
    let cursor = screen.cursor();
    let now = cursor.as_ref().map(|c| c.generation);
    let shown = match &cursor {
        Some(c) => framebuffer.set_pointer(Some(PointerImage {
            rgba: &c.image,
            hot: c.hot,
            at: c.at,
        })),
        None => framebuffer.set_pointer(None),
    };
    match shown {
        Ok(()) => now,
        Err(err) => {
            log::debug!("screen: the guest's pointer is not shown: {err}");
            seen
        }
    }
}

/// What [`publish`] or [`publish_gpu`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Published {
    /// This area changed and is in the framebuffer.
    Changed(Rect),
    /// Nothing changed.
    Same,
    /// The framebuffer refused it (logged).
    Failed,
}

/// Writes what changed between `shown` and `frame` into `framebuffer`.
fn publish(framebuffer: &SharedFramebuffer, frame: &Frame, shown: &Frame) -> Published {
    let same_mode = frame.width == shown.width && frame.height == shown.height;
    let dirty = if same_mode {
        match display::pixels::changed_rect(&shown.pixels, &frame.pixels, frame.width, frame.height)
        {
            Some(dirty) => dirty,
            None => return Published::Same,
        }
    } else {
        if let Err(e) = framebuffer.set_mode(frame.width, frame.height, PixelFormat::Rgbx8888) {
            log::warn!("screen: {e}");
            return Published::Failed;
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
        return Published::Failed;
    }
    Published::Changed(dirty)
}

/// Writes what changed in the virtio-gpu's picture (all of it when
/// `whole`, or when the framebuffer's mode is not the picture's) into
/// `framebuffer`, stamped with the guest's flush time.
fn publish_gpu(framebuffer: &SharedFramebuffer, update: &GpuUpdate<'_>, whole: bool) -> Published {
    let (width, height) = (update.width, update.height);
    let same_mode = framebuffer.info().is_ok_and(|info| {
        (info.width, info.height, info.format) == (width, height, PixelFormat::Rgbx8888)
    });
    let dirty = if whole || !same_mode {
        if !same_mode && let Err(e) = framebuffer.set_mode(width, height, PixelFormat::Rgbx8888) {
            log::warn!("screen: {e}");
            return Published::Failed;
        }
        Rect::new(0, 0, width, height)
    } else {
        match update.dirty {
            Some(d) => Rect::new(d.x, d.y, d.width, d.height),
            None => return Published::Same,
        }
    };
    let stride = width as usize * 4;
    let start = dirty.y as usize * stride + dirty.x as usize * 4;
    let flushed_at = update
        .flushed_at
        .map_or(0, display::framebuffer::instant_ns);
    let written = update
        .pixels
        .get(start..)
        .ok_or(display::FramebufferError::InvalidHeader(
            "dirty area outside the picture",
        ))
        .and_then(|src| framebuffer.write_rows(dirty, src, stride))
        .and_then(|()| framebuffer.publish_flushed(dirty, flushed_at));
    if let Err(e) = written {
        log::warn!("screen: {e}");
        return Published::Failed;
    }
    Published::Changed(dirty)
}

/// Whether `--screenshot` was taken: set by its thread, read when the VM
/// has ended.
#[derive(Debug, Default)]
pub struct ScreenshotTaken(Mutex<Option<Result<(), String>>>);

impl ScreenshotTaken {
    /// None while the thread has not tried yet (the VM ended first), else
    /// whether the picture was saved (or why not).
    pub fn outcome(&self) -> Option<Result<(), String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Saves the guest's screen to `path` once `after` has passed (for
/// `nestbox run --screenshot`), saying so on stderr; the returned record
/// says whether it happened.
pub fn spawn_screenshot(
    live: Arc<LiveVm>,
    path: PathBuf,
    after: Duration,
) -> anyhow::Result<Arc<ScreenshotTaken>> {
    let taken = Arc::new(ScreenshotTaken::default());
    let record = taken.clone();
    std::thread::Builder::new()
        .name("screenshot".into())
        .spawn(move || {
            std::thread::sleep(after);
            let result = match save_screenshot(&live, &path) {
                Ok((w, h)) => {
                    eprintln!("nestbox: screenshot ({w}x{h}) saved to {}", path.display());
                    Ok(())
                }
                Err(e) => {
                    eprintln!("nestbox: no screenshot: {e:#}");
                    Err(format!("{e:#}"))
                }
            };
            *record.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        })
        .context("Cannot start the screenshot thread")?;
    Ok(taken)
}

/// The guest's screen now, as RGBX pixels.
fn current_frame(live: &LiveVm) -> anyhow::Result<Frame> {
    let screen = live
        .screen()
        .context("The VM has no screen (it is not running)")?;
    let mut frame = Frame::default();
    screen.render(&mut frame);
    if frame.width == 0 || frame.height == 0 {
        anyhow::bail!("The guest's screen is blank: no video mode is set yet");
    }
    Ok(frame)
}

/// Saves the guest's screen as a PNG at `path`; returns its size.
pub fn save_screenshot(live: &LiveVm, path: &std::path::Path) -> anyhow::Result<(u32, u32)> {
    let frame = current_frame(live)?;
    display::screenshot::write_png(path, frame.width, frame.height, &frame.pixels)
        .with_context(|| format!("Cannot write {}", path.display()))?;
    Ok((frame.width, frame.height))
}

/// Saves the guest's screen scaled down to `width` pixels wide (aspect
/// kept, nearest neighbour) as a PNG at `path`, written atomically.
pub fn save_thumbnail(live: &LiveVm, path: &std::path::Path, width: u32) -> anyhow::Result<()> {
    let frame = current_frame(live)?;
    let (w, h, pixels) =
        display::pixels::downscale(&frame.pixels, frame.width, frame.height, width);
    display::screenshot::write_png(path, w, h, &pixels)
        .with_context(|| format!("Cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use engine::devices::virtio::input::codes;

    use super::*;

    const KEY_A: u16 = 30;

    #[test]
    fn test_keys_go_to_ps2_while_the_virtio_keyboard_is_inactive() {
        // Arrange
        let press = GuestInput::Key {
            evdev: KEY_A,
            pressed: true,
        };
        let inactive = Devices {
            tablet: true,
            virtio_keyboard_active: false,
        };
        let active = Devices {
            tablet: true,
            virtio_keyboard_active: true,
        };

        // Act
        let (before, _) = route(press, 0, inactive);
        let (after, _) = route(press, 0, active);

        // Assert
        assert_eq!(before.ps2_key, set2_make(KEY_A));
        assert!(before.virtio_keyboard.is_empty());
        assert!(before.tablet.is_empty());
        assert!(after.ps2_key.is_empty());
        assert_eq!(
            after.virtio_keyboard,
            vec![InputEvent::key(KEY_A, true), InputEvent::syn()]
        );
    }

    #[test]
    fn test_pointer_goes_to_the_tablet_and_buttons_to_both_pointers() {
        // Arrange
        let tablet = Devices {
            tablet: true,
            virtio_keyboard_active: false,
        };

        // Act
        let (moved, _) = route(GuestInput::PointerAbsolute { x: 10, y: 20 }, 0, tablet);
        let (clicked, held) = route(GuestInput::Buttons(0x1), 0, tablet);
        let (scrolled, _) = route(GuestInput::Wheel(1), held, tablet);
        let (ps2_only, _) = route(
            GuestInput::PointerAbsolute { x: 10, y: 20 },
            0,
            Devices::default(),
        );

        // Assert
        assert_eq!(
            moved.tablet,
            vec![
                InputEvent::new(codes::EV_ABS, codes::ABS_X, 10),
                InputEvent::new(codes::EV_ABS, codes::ABS_Y, 20),
                InputEvent::syn()
            ]
        );
        assert_eq!(moved.ps2_mouse, None);
        assert_eq!(
            clicked.tablet,
            vec![InputEvent::key(codes::BTN_LEFT, true), InputEvent::syn()]
        );
        assert_eq!(clicked.ps2_mouse, Some((0, 0, 0, 0x1)));
        assert_eq!(held, 0x1);
        assert_eq!(
            scrolled.tablet,
            vec![
                InputEvent::new(codes::EV_REL, codes::REL_WHEEL, 1),
                InputEvent::syn()
            ]
        );
        assert_eq!(scrolled.ps2_mouse, Some((0, 0, -1, 0x1)));
        assert_eq!(ps2_only, Routes::default());
    }
}
