// SPDX-License-Identifier: Apache-2.0
//! A test hook: where the widgets an end-to-end test clicks are on screen.
//!
//! When the environment variable [`ENV_VAR`] (`NESTBOX_UI_MAP`) names a
//! file, the app records the rectangle of each widget marked with
//! [`Mapped::mapped`] (by its visible label) and, at the end of every frame
//! in which the set changed, writes it atomically to that file as JSON:
//! `{ "label": [x, y, w, h], ... }`, in window coordinates and physical
//! pixels, so that `xdotool mousemove --window <id> X Y` lands on it. Only
//! the widgets drawn in the last frame are in the file: a closed wizard's
//! buttons disappear from it.
//!
//! When the variable is unset, marking a widget costs one relaxed atomic
//! load and nothing is written.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use eframe::egui;

/// The environment variable naming the map file.
pub const ENV_VAR: &str = "NESTBOX_UI_MAP";

/// Whether some app in this process records its widgets.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The rectangles recorded during the current frame, in points.
#[derive(Clone, Default)]
struct FrameRects(BTreeMap<String, egui::Rect>);

fn frame_id() -> egui::Id {
    egui::Id::unique("nestbox-ui-map")
}

/// Records `rect` (in points) under `label` for this frame, if mapping is on.
pub fn record(ctx: &egui::Context, label: &str, rect: egui::Rect) {
    if !ACTIVE.load(Ordering::Relaxed) {
        return;
    }
    ctx.data_mut(|d| {
        d.get_temp_mut_or_default::<FrameRects>(frame_id())
            .0
            .insert(label.to_string(), rect);
    });
}

/// Marks a widget for the UI map: `ui.button("Next").mapped("Next")`.
pub trait Mapped {
    /// Records the widget's rectangle under `label` (when mapping is on)
    /// and returns the widget unchanged.
    fn mapped(self, label: &str) -> Self;
}

impl Mapped for egui::Response {
    fn mapped(self, label: &str) -> Self {
        record(&self.ctx, label, self.rect);
        self
    }
}

/// A map in physical pixels: label → `[x, y, w, h]`.
pub type PixelMap = BTreeMap<String, [i32; 4]>;

/// Writes the recorded rectangles to a file after each frame.
pub struct UiMapFile {
    path: PathBuf,
    last: Option<PixelMap>,
}

impl UiMapFile {
    /// The map file named by [`ENV_VAR`], if it is set (and not empty).
    pub fn from_env() -> Option<Self> {
        let path = std::env::var_os(ENV_VAR).filter(|p| !p.is_empty())?;
        Some(Self::new(PathBuf::from(path)))
    }

    /// Records widgets from now on and writes them to `path`.
    pub fn new(path: PathBuf) -> Self {
        ACTIVE.store(true, Ordering::Relaxed);
        Self { path, last: None }
    }

    /// Takes what this frame recorded and writes it if it changed.
    pub fn end_frame(&mut self, ctx: &egui::Context) {
        let rects = ctx
            .data_mut(|d| d.remove_temp::<FrameRects>(frame_id()))
            .unwrap_or_default();
        let scale = ctx.pixels_per_point();
        let map: PixelMap = rects
            .0
            .into_iter()
            .map(|(label, r)| {
                let px = |v: f32| (v * scale).round() as i32;
                let (x, y) = (px(r.min.x), px(r.min.y));
                (label, [x, y, px(r.max.x) - x, px(r.max.y) - y])
            })
            .collect();
        if self.last.as_ref() == Some(&map) {
            return;
        }
        match self.write(&map) {
            Ok(()) => self.last = Some(map),
            Err(err) => log::warn!("Cannot write the UI map {}: {err}", self.path.display()),
        }
    }

    /// Writes `map` to a temporary file beside the map, then renames it.
    fn write(&self, map: &PixelMap) -> std::io::Result<()> {
        let json = serde_json::to_vec(map).map_err(std::io::Error::other)?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&json)?;
        drop(file);
        std::fs::rename(&tmp, &self.path)
    }
}
