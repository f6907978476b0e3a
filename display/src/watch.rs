// SPDX-License-Identifier: Apache-2.0
//! Waking a viewer only when the guest's screen changed: a small thread
//! that watches a [`SharedFramebuffer`]'s generation counter (bumped by
//! every publish) and calls a wake function when it moves, so an idle VM
//! costs its viewer no repaints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::framebuffer::SharedFramebuffer;

/// How often the generation counter is read (an atomic load).
const POLL: Duration = Duration::from_millis(8);

/// Watches one framebuffer until dropped.
pub struct FrameWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FrameWatcher {
    /// Starts watching `fb`; `wake` runs (on the watcher's thread) after
    /// each change of the frame's generation or mode.
    pub fn spawn(
        fb: Arc<SharedFramebuffer>,
        wake: impl Fn() + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("frame-watch".into())
                .spawn(move || {
                    let mut seen = None;
                    while !stop.load(Ordering::Relaxed) {
                        let now = fb.info().ok().map(|i| (i.generation, i.mode));
                        if now != seen {
                            seen = now;
                            wake();
                        }
                        std::thread::sleep(POLL);
                    }
                })?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for FrameWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
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
}
