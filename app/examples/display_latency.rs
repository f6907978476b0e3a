// SPDX-License-Identifier: Apache-2.0
//! Guest flush → pixels in the window, measured in a real eframe window
//! (run it under Xvfb for the numbers in docs/BENCHMARKS.md).
//!
//! A writer thread plays the guest: it writes whole BGRX frames into a
//! `SharedFramebuffer` (as the virtio-gpu sink does on RESOURCE_FLUSH),
//! publishes them and wakes the window, which shows them through
//! `GuestView` exactly as the VM window does. Two phases:
//! - latency: one frame every 16.7 ms; for each, the time from publish to
//!   the end of the UI pass that uploaded it, plus the CPU time eframe
//!   reports for painting that frame;
//! - throughput: a new frame as soon as the window took the last one;
//!   frames shown per second.
//!
//! Beside them, the time to copy one frame with `memcpy`, the limit of any
//! path that moves every pixel once.
//!
//! `cargo run --release -p nestbox --example display_latency -- 1024x768 5`

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use display::Rect;
use display::framebuffer::{PixelFormat, SharedFramebuffer};
use display::scale::ScaleMode;
use display::view::GuestView;
use eframe::egui;

/// What the writer and the window share.
struct Shared {
    framebuffer: SharedFramebuffer,
    ctx: OnceLock<egui::Context>,
    published: Mutex<HashMap<u32, Instant>>,
    shown: AtomicU64,
    pacing: AtomicBool,
    done: AtomicBool,
}

/// The frame with sequence number `seq` in its first pixel (B, G, R bytes).
fn fill(frame: &mut [u8], seq: u32) {
    let shade = (seq % 200) as u8;
    for px in frame.chunks_exact_mut(4) {
        px.copy_from_slice(&[shade, 255 - shade, shade / 2, 0]);
    }
    frame[..3].copy_from_slice(&seq.to_le_bytes()[..3]);
}

fn writer(shared: Arc<Shared>, width: u32, height: u32, latency_for: Duration, fps_for: Duration) {
    let mut frame = vec![0u8; width as usize * height as usize * 4];
    let full = Rect::new(0, 0, width, height);
    while shared.ctx.get().is_none() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let ctx = shared.ctx.get().cloned().unwrap();
    let mut seq = 1u32;
    let publish = |seq: u32, frame: &mut Vec<u8>| {
        fill(frame, seq);
        shared
            .framebuffer
            .write_rows(full, frame, width as usize * 4)
            .unwrap();
        shared.published.lock().unwrap().insert(seq, Instant::now());
        shared.framebuffer.publish(full).unwrap();
        ctx.request_repaint();
    };
    // Let the window settle first.
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    while start.elapsed() < latency_for {
        publish(seq, &mut frame);
        seq += 1;
        std::thread::sleep(Duration::from_micros(16_667));
    }
    shared.pacing.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    while start.elapsed() < fps_for {
        publish(seq, &mut frame);
        let deadline = Instant::now() + Duration::from_millis(200);
        while shared.shown.load(Ordering::SeqCst) < u64::from(seq) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(100));
        }
        seq += 1;
    }
    shared.done.store(true, Ordering::SeqCst);
    ctx.request_repaint();
}

struct Bench {
    shared: Arc<Shared>,
    view: GuestView,
    latencies: Vec<Duration>,
    paint: Vec<f32>,
    pending_paint: bool,
    fps_start: Option<(Instant, u64)>,
    fps_frames: u64,
    pixel: Vec<u8>,
}

impl eframe::App for Bench {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        if self.pending_paint {
            if let Some(cpu) = frame.info().cpu_usage {
                self.paint.push(cpu);
            }
            self.pending_paint = false;
        }
        let updated = self.view.update(&ctx, &self.shared.framebuffer);
        self.view.show(ui);
        if updated {
            let _ = self
                .shared
                .framebuffer
                .copy_rect_rgba(Rect::new(0, 0, 1, 1), &mut self.pixel);
            // The copy comes out as RGBA: the BGRX bytes swapped.
            let seq = u32::from_le_bytes([self.pixel[2], self.pixel[1], self.pixel[0], 0]);
            let now = Instant::now();
            let published = self.shared.published.lock().unwrap().remove(&seq);
            if self.shared.pacing.load(Ordering::SeqCst) {
                if let Some(at) = published {
                    self.latencies.push(now - at);
                    self.pending_paint = true;
                    // Paint time arrives with the next pass: ask for one.
                    ctx.request_repaint();
                }
            } else {
                let (start, _) = *self.fps_start.get_or_insert((now, u64::from(seq)));
                if now > start {
                    self.fps_frames += 1;
                }
            }
            self.shared.shown.store(u64::from(seq), Ordering::SeqCst);
        }
        if self.shared.done.load(Ordering::SeqCst) {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        let mut lat = self.latencies.clone();
        lat.sort();
        let pct = |v: &[Duration], p: f64| -> f64 {
            if v.is_empty() {
                return f64::NAN;
            }
            v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
        };
        let mut paint = self.paint.clone();
        paint.sort_by(f32::total_cmp);
        let paint_p50 = paint.get(paint.len() / 2).copied().unwrap_or(f32::NAN) * 1e3;
        let fps = match self.fps_start {
            Some((start, _)) => self.fps_frames as f64 / start.elapsed().as_secs_f64(),
            None => f64::NAN,
        };
        println!(
            "frames={} flush_to_upload_p50_ms={:.2} flush_to_upload_p99_ms={:.2} paint_p50_ms={:.2} fps={:.1}",
            lat.len(),
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            paint_p50,
            fps
        );
    }
}

fn memcpy_ms(bytes: usize) -> f64 {
    let src = vec![7u8; bytes];
    let mut dst = vec![0u8; bytes];
    let mut times: Vec<Duration> = (0..50)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(&src);
            std::hint::black_box(&dst);
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

fn main() {
    let mut args = std::env::args().skip(1);
    let size = args.next().unwrap_or_else(|| "1024x768".into());
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let (width, height) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .expect("size as WxH");
    println!(
        "size={width}x{height} memcpy_frame_ms={:.3}",
        memcpy_ms(width as usize * height as usize * 4)
    );
    let framebuffer = SharedFramebuffer::with_default_capacity().unwrap();
    framebuffer
        .set_mode(width, height, PixelFormat::Bgrx8888)
        .unwrap();
    let shared = Arc::new(Shared {
        framebuffer,
        ctx: OnceLock::new(),
        published: Mutex::new(HashMap::new()),
        shown: AtomicU64::new(0),
        pacing: AtomicBool::new(true),
        done: AtomicBool::new(false),
    });
    let phase = Duration::from_secs_f64(seconds);
    {
        let shared = shared.clone();
        std::thread::spawn(move || writer(shared, width, height, phase, phase));
    }
    let options = eframe::NativeOptions {
        renderer: eframe::Renderer::Glow,
        viewport: egui::ViewportBuilder::default()
            .with_title("Nestbox display benchmark")
            .with_inner_size([width as f32, height as f32]),
        ..Default::default()
    };
    eframe::run_native(
        "nestbox-display-bench",
        options,
        Box::new(move |cc| {
            let _ = shared.ctx.set(cc.egui_ctx.clone());
            Ok(Box::new(Bench {
                shared,
                view: GuestView::new(ScaleMode::OneToOne),
                latencies: Vec::new(),
                paint: Vec::new(),
                pending_paint: false,
                fps_start: None,
                fps_frames: 0,
                pixel: Vec::new(),
            }))
        }),
    )
    .unwrap();
}
