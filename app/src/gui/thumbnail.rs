// SPDX-License-Identifier: Apache-2.0
//! The library's thumbnails: each VM's `thumbnail.png` (written by its
//! worker), decoded with the `png` crate into an egui texture and reloaded
//! when the file changes; the same for the whole last screen of a VM that
//! stopped with an error (`last-screen.png`).

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::time::SystemTime;

use eframe::egui::{self, ColorImage, TextureHandle, TextureOptions};

/// The file a VM's worker keeps its latest screen in.
pub const THUMBNAIL_FILE: &str = "thumbnail.png";

/// Largest thumbnail decoded, in pixels per side (bigger files are skipped).
const MAX_SIDE: u32 = 4096;

struct Thumb {
    modified: Option<SystemTime>,
    texture: Option<TextureHandle>,
}

/// The file a VM's worker keeps its whole last screen in when it stopped
/// with an error.
pub const LAST_SCREEN_FILE: &str = crate::worker::paths::LAST_SCREEN;

/// Textures of the thumbnails, by VM id.
#[derive(Default)]
pub struct Thumbnails {
    by_id: HashMap<String, Thumb>,
    last_screens: HashMap<String, Thumb>,
}

impl Thumbnails {
    /// Reloads the thumbnail of VM `id` in `dir` if its file changed, appeared
    /// or went away.
    pub fn refresh(&mut self, ctx: &egui::Context, id: &str, dir: &Path) {
        load_if_changed(
            ctx,
            &mut self.by_id,
            id,
            &dir.join(THUMBNAIL_FILE),
            "thumbnail",
        );
    }

    /// Reloads VM `id`'s last screen (see [`LAST_SCREEN_FILE`]) if its
    /// file changed, appeared or went away.
    pub fn refresh_last_screen(&mut self, ctx: &egui::Context, id: &str, dir: &Path) {
        let path = dir.join(LAST_SCREEN_FILE);
        load_if_changed(ctx, &mut self.last_screens, id, &path, "last-screen");
    }

    /// The texture of VM `id`'s last screen, if it has one.
    pub fn last_screen(&self, id: &str) -> Option<&TextureHandle> {
        self.last_screens.get(id).and_then(|t| t.texture.as_ref())
    }

    /// Forgets VMs that are no longer in the library.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.by_id.retain(|id, _| keep(id));
        self.last_screens.retain(|id, _| keep(id));
    }

    /// The texture of VM `id`, if it has a thumbnail.
    pub fn get(&self, id: &str) -> Option<&TextureHandle> {
        self.by_id.get(id).and_then(|t| t.texture.as_ref())
    }
}

/// Decodes `path` into `map[id]` unless its modification time is the one
/// loaded already (a missing file leaves no texture).
fn load_if_changed(
    ctx: &egui::Context,
    map: &mut HashMap<String, Thumb>,
    id: &str,
    path: &Path,
    kind: &str,
) {
    let modified = fs::metadata(path).and_then(|m| m.modified()).ok();
    if map.get(id).is_some_and(|thumb| thumb.modified == modified) {
        return;
    }
    let texture = modified.and_then(|_| {
        let image = fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| decode_png(&bytes));
        match image {
            Ok(image) => {
                Some(ctx.load_texture(format!("{kind}-{id}"), image, TextureOptions::LINEAR))
            }
            Err(err) => {
                log::debug!("{}: {err}", path.display());
                None
            }
        }
    });
    map.insert(id.to_string(), Thumb { modified, texture });
}

/// Decodes a PNG of any 8- or 16-bit colour type into an RGBA image.
pub fn decode_png(bytes: &[u8]) -> Result<ColorImage, String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let (width, height) = {
        let info = reader.info();
        (info.width, info.height)
    };
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!("{width}x{height} is too large for a thumbnail"));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| "image too large".to_string())?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    buf.truncate(info.buffer_size());
    let pixels = (info.width as usize) * (info.height as usize);
    let rgba: Vec<u8> = match info.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g, 255]).collect(),
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
        png::ColorType::Indexed => return Err("palette PNG was not expanded".to_string()),
    };
    if rgba.len() != pixels * 4 {
        return Err("PNG data is shorter than its size".to_string());
    }
    Ok(ColorImage::from_rgba_unmultiplied(
        [info.width as usize, info.height as usize],
        &rgba,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_gui_thumbnail_decodes_rgba_png() {
        let rgba: Vec<u8> = (0..4 * 3).flat_map(|i| [i as u8, 2, 3, 255]).collect();
        let bytes = display::screenshot::encode_png(4, 3, &rgba).unwrap();
        let image = decode_png(&bytes).unwrap();
        assert_eq!(image.size, [4, 3]);
        assert_eq!(image.pixels[5].r(), 5);
    }

    #[test]
    fn test_gui_thumbnail_rejects_garbage() {
        assert!(decode_png(b"not a png").is_err());
    }
}
