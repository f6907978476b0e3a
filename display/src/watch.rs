// SPDX-License-Identifier: Apache-2.0
//! Waking a viewer only when the guest's screen changed: a small thread
//! that sleeps on a [`SharedFramebuffer`]'s change counter (a futex the
//! writer wakes on every publish) and calls a wake function when the frame
//! moves on, so an idle VM costs its viewer no repaints and no wake-ups.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::framebuffer::SharedFramebuffer;

/// The longest sleep between looks at the frame (a safety net; changes
/// wake the thread at once).
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Asks `ctx` for a repaint from another thread as one UI pass: a delayed
/// request (1 ms) is one pass, where egui answers an immediate one with
/// two.
pub fn request_one_pass(ctx: &egui::Context) {
    ctx.request_repaint_after(Duration::from_millis(1));
}

/// Watches one framebuffer until dropped.
pub struct FrameWatcher {
    stop: Arc<AtomicBool>,
    fb: Arc<SharedFramebuffer>,
    thread: Option<JoinHandle<()>>,
}

impl FrameWatcher {
    /// Starts watching `fb`; `wake` runs (on the watcher's thread) after
    /// each change of the frame's generation or mode.
    pub fn spawn(
        fb: Arc<SharedFramebuffer>,
        wake: impl Fn() + Send + 'static,
    ) -> std::io::Result<Self> {
        Self::spawn_until(fb, MAX_SLEEP, || false, wake)
    }

    /// [`spawn`](Self::spawn), also looking every `check_every` whether
    /// the writer has `ended` (e.g. its VM stopped): then `wake` runs once
    /// more and the watcher stops.
    pub fn spawn_until(
        fb: Arc<SharedFramebuffer>,
        check_every: Duration,
        ended: impl Fn() -> bool + Send + 'static,
        wake: impl Fn() + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, fb) = (stop.clone(), fb.clone());
            std::thread::Builder::new()
                .name("frame-watch".into())
                .spawn(move || {
                    let mut seen = None;
                    let mut count = fb.change_count();
                    while !stop.load(Ordering::SeqCst) {
                        if ended() {
                            wake();
                            return;
                        }
                        let now = fb.info().ok().map(|i| (i.generation, i.mode));
                        if now != seen {
                            seen = now;
                            wake();
                        }
                        count = fb.wait_for_change(count, check_every);
                    }
                })?
        };
        Ok(Self {
            stop,
            fb,
            thread: Some(thread),
        })
    }
}

impl Drop for FrameWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.fb.wake_waiters();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::Rect;
    use crate::framebuffer::PixelFormat;

    #[test]
    fn test_wakes_on_publish_and_not_while_idle() {
        let fb = Arc::new(SharedFramebuffer::create(64, 64).unwrap());
        fb.set_mode(8, 8, PixelFormat::Rgbx8888).unwrap();
        let wakes = Arc::new(AtomicUsize::new(0));
        let counter = wakes.clone();
        let watcher = FrameWatcher::spawn(fb.clone(), move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let idle = wakes.load(Ordering::SeqCst);
        assert_eq!(idle, 1, "only the first look wakes");
        fb.publish(Rect::new(0, 0, 1, 1)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while wakes.load(Ordering::SeqCst) == idle && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(wakes.load(Ordering::SeqCst), idle + 1);
        drop(watcher);
    }

    #[test]
    fn test_an_ended_writer_wakes_once_more_and_stops_the_watcher() {
        let fb = Arc::new(SharedFramebuffer::create(64, 64).unwrap());
        let ended = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = ended.clone();
        let watcher = FrameWatcher::spawn_until(
            fb.clone(),
            Duration::from_millis(20),
            move || flag.load(Ordering::SeqCst),
            move || {
                let _ = tx.send(());
            },
        )
        .unwrap();
        rx.recv_timeout(Duration::from_secs(2)).unwrap();
        ended.store(true, Ordering::SeqCst);
        rx.recv_timeout(Duration::from_secs(2)).unwrap();
        // The thread has returned: publishing wakes nobody.
        std::thread::sleep(Duration::from_millis(60));
        fb.publish(Rect::new(0, 0, 1, 1)).unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(watcher);
    }

    #[test]
    fn test_publish_through_another_mapping_wakes_at_once_and_drop_is_prompt() {
        // The reader maps the memfd a second time, as the GUI does with the
        // worker's: the futex must work across mappings, not only threads.
        let writer = SharedFramebuffer::create(64, 64).unwrap();
        writer.set_mode(8, 8, PixelFormat::Rgbx8888).unwrap();
        let fd = writer.fd().try_clone_to_owned().unwrap();
        let reader = Arc::new(SharedFramebuffer::from_fd(fd).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let watcher = FrameWatcher::spawn(reader, move || {
            let _ = tx.send(std::time::Instant::now());
        })
        .unwrap();
        rx.recv_timeout(Duration::from_secs(2)).unwrap();
        // Let the watcher fall asleep, then publish.
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..3 {
            let published = std::time::Instant::now();
            writer.publish(Rect::new(0, 0, 1, 1)).unwrap();
            let woke = rx.recv_timeout(Duration::from_secs(2)).unwrap();
            // Far under MAX_SLEEP: the futex woke it, not its timeout.
            assert!(woke - published < Duration::from_millis(200));
            std::thread::sleep(Duration::from_millis(20));
        }
        let dropping = std::time::Instant::now();
        drop(watcher);
        assert!(dropping.elapsed() < Duration::from_millis(200));
    }
}
