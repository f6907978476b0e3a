// SPDX-License-Identifier: Apache-2.0
//! Start-up timing for the benchmarks: with `NESTBOX_TIMING=1`, the app
//! prints how long after the process started its first frame was drawn;
//! with `NESTBOX_TIMING=frames`, also when every UI pass starts; with
//! `NESTBOX_TIMING=latency`, at the end of every UI pass that uploaded a
//! picture the guest flushed (virtio-gpu), how long after the flush that
//! was (`bench/gpu_flush.py`). Off by default; costs one check per frame.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use display::view::UploadedFlush;
use eframe::egui;

static STARTED: OnceLock<Instant> = OnceLock::new();
static FRAMES: AtomicU32 = AtomicU32::new(0);
static UPLOADED: Mutex<Option<UploadedFlush>> = Mutex::new(None);

/// Whether `NESTBOX_TIMING=latency` is set (looked up once).
fn latency_wanted() -> bool {
    static WANTED: OnceLock<bool> = OnceLock::new();
    *WANTED.get_or_init(|| std::env::var_os("NESTBOX_TIMING").is_some_and(|m| m == "latency"))
}

/// Notes that this UI pass uploaded a guest-flushed picture.
pub fn screen_uploaded(upload: UploadedFlush) {
    if latency_wanted() {
        *UPLOADED.lock().unwrap_or_else(|e| e.into_inner()) = Some(upload);
    }
}

/// Called at the end of every UI pass: prints the flush-to-upload time of
/// the picture it uploaded, if any.
pub fn pass_ended() {
    if !latency_wanted() {
        return;
    }
    let Some(upload) = UPLOADED.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let now = display::framebuffer::monotonic_ns();
    let micros = now.saturating_sub(upload.flushed_at_ns) / 1000;
    eprintln!(
        "nestbox: flush-to-upload {micros} us area={}x{}",
        upload.area.width, upload.area.height
    );
}

/// Notes the process start (call first thing in `main`).
pub fn process_started() {
    let _ = STARTED.set(Instant::now());
}

/// Called at the start of every UI pass. The second pass starts after the
/// first frame was painted and presented, so its start is the time to the
/// first frame (the first pass asks for it when timing is on).
pub fn frame_started(ctx: &egui::Context) {
    let frame = FRAMES.fetch_add(1, Ordering::Relaxed);
    let Some(mode) = std::env::var_os("NESTBOX_TIMING") else {
        return;
    };
    if mode == "frames" {
        if let Some(started) = STARTED.get() {
            let causes: Vec<String> = ctx
                .repaint_causes()
                .iter()
                .map(|c| format!("{}:{} {}", c.file, c.line, c.reason))
                .collect();
            eprintln!(
                "nestbox: frame {frame} at {:.1} ms (asked by {})",
                started.elapsed().as_secs_f64() * 1e3,
                causes.join(", ")
            );
        }
    }
    if frame > 1 {
        return;
    }
    if frame == 0 {
        ctx.request_repaint();
        return;
    }
    if let Some(started) = STARTED.get() {
        eprintln!(
            "nestbox: first frame {:.1} ms after start",
            started.elapsed().as_secs_f64() * 1e3
        );
    }
}
