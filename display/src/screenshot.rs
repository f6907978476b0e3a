// SPDX-License-Identifier: Apache-2.0
//! Screenshots: RGBA8 pixels to PNG, in memory or as a file written
//! crash-safely (a temporary file next to the target, synced, then renamed
//! over it, so a crash never leaves half a PNG under the real name).
//!
//! The pixels come from [`SharedFramebuffer::screenshot_rgba`]; [`save`]
//! does both steps.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::framebuffer::{FramebufferError, SharedFramebuffer};

/// Why a screenshot could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ScreenshotError {
    /// Width or height zero.
    #[error("image size {width}x{height} has a zero side")]
    ZeroSize {
        /// Width given.
        width: u32,
        /// Height given.
        height: u32,
    },
    /// The buffer is not exactly `width * height * 4` bytes.
    #[error("RGBA buffer is {got} bytes, {width}x{height} needs {expected}")]
    BadLength {
        /// Width given.
        width: u32,
        /// Height given.
        height: u32,
        /// Bytes needed.
        expected: u128,
        /// Bytes given.
        got: usize,
    },
    /// The PNG encoder refused the image.
    #[error("PNG encoding failed: {0}")]
    Encode(#[from] png::EncodingError),
    /// Writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The framebuffer could not be read.
    #[error(transparent)]
    Framebuffer(#[from] FramebufferError),
}

fn check(width: u32, height: u32, rgba: &[u8]) -> Result<(), ScreenshotError> {
    if width == 0 || height == 0 {
        return Err(ScreenshotError::ZeroSize { width, height });
    }
    // u128: the product of two u32 and 4 cannot overflow it.
    let expected = u128::from(width) * u128::from(height) * 4;
    if rgba.len() as u128 != expected {
        return Err(ScreenshotError::BadLength {
            width,
            height,
            expected,
            got: rgba.len(),
        });
    }
    Ok(())
}

fn encode_to<W: Write>(w: W, width: u32, height: u32, rgba: &[u8]) -> Result<(), ScreenshotError> {
    check(width, height, rgba)?;
    let mut encoder = png::Encoder::new(w, width, height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgba)?;
    writer.finish()?;
    Ok(())
}

/// Encodes `width` x `height` RGBA8 pixels (`width * height * 4` bytes,
/// rows top to bottom) as a PNG file image.
pub fn encode_png(width: u32, height: u32, rgba: &[u8]) -> Result<Vec<u8>, ScreenshotError> {
    let mut out = Vec::new();
    encode_to(&mut out, width, height, rgba)?;
    Ok(out)
}

/// Writes RGBA8 pixels as a PNG file at `path`, replacing it atomically:
/// the image goes to a temporary file in the same directory, is synced,
/// and is then renamed over `path`. On failure the temporary file is
/// removed and `path` is untouched.
pub fn write_png(path: &Path, width: u32, height: u32, rgba: &[u8]) -> Result<(), ScreenshotError> {
    check(width, height, rgba)?;
    let tmp = temp_path(path);
    let result = write_temp(&tmp, width, height, rgba).and_then(|()| {
        fs::rename(&tmp, path).map_err(|source| ScreenshotError::Io {
            path: path.to_path_buf(),
            source,
        })
    });
    if result.is_err() {
        // Best effort: the temporary file may not even exist.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A hidden name next to `path`, unique to this process and call.
fn temp_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "screenshot.png".to_string());
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

fn write_temp(tmp: &Path, width: u32, height: u32, rgba: &[u8]) -> Result<(), ScreenshotError> {
    let io_err = |source| ScreenshotError::Io {
        path: tmp.to_path_buf(),
        source,
    };
    let file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(io_err)?;
    let mut w = BufWriter::new(file);
    encode_to(&mut w, width, height, rgba)?;
    let file = w.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    Ok(())
}

/// Saves the framebuffer's current frame as a PNG file at `path`;
/// returns its size.
pub fn save(fb: &SharedFramebuffer, path: &Path) -> Result<(u32, u32), ScreenshotError> {
    let (width, height, rgba) = fb.screenshot_rgba()?;
    write_png(path, width, height, &rgba)?;
    Ok((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framebuffer::PixelFormat;
    use crate::rect::Rect;

    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgba);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn gradient(w: u32, h: u32) -> Vec<u8> {
        (0..w * h)
            .flat_map(|i| [(i % 251) as u8, (i / 7) as u8, 42, 255])
            .collect()
    }

    fn scratch_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nestbox-display-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn test_encode_round_trip() {
        let rgba = gradient(37, 11);
        let png = encode_png(37, 11, &rgba).unwrap();
        assert_eq!(decode(&png), (37, 11, rgba));
    }

    #[test]
    fn test_bad_buffers_refused() {
        assert!(matches!(
            encode_png(2, 2, &[0; 15]),
            Err(ScreenshotError::BadLength { expected: 16, .. })
        ));
        assert!(matches!(
            encode_png(0, 2, &[]),
            Err(ScreenshotError::ZeroSize { .. })
        ));
        assert!(matches!(
            encode_png(u32::MAX, u32::MAX, &[0; 4]),
            Err(ScreenshotError::BadLength { .. })
        ));
    }

    #[test]
    fn test_write_png_replaces_atomically() {
        let dir = scratch_dir("write");
        let path = dir.join("shot.png");
        fs::write(&path, b"old").unwrap();
        let rgba = gradient(5, 3);
        write_png(&path, 5, 3, &rgba).unwrap();
        assert_eq!(decode(&fs::read(&path).unwrap()), (5, 3, rgba));
        // A bad buffer leaves the previous file and no temporary behind.
        assert!(write_png(&path, 5, 3, &[0; 3]).is_err());
        // A missing directory fails cleanly.
        assert!(matches!(
            write_png(&dir.join("nope").join("x.png"), 5, 3, &gradient(5, 3)),
            Err(ScreenshotError::Io { .. })
        ));
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["shot.png"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn test_save_framebuffer() {
        let fb = SharedFramebuffer::create(16, 16).unwrap();
        fb.set_mode(3, 2, PixelFormat::Bgrx8888).unwrap();
        let bgrx: Vec<u8> = (0..6).flat_map(|i| [i, 100, 200, 0]).collect();
        fb.write_rows(Rect::new(0, 0, 3, 2), &bgrx, 12).unwrap();
        let dir = scratch_dir("save");
        let path = dir.join("fb.png");
        assert_eq!(save(&fb, &path).unwrap(), (3, 2));
        let (w, h, rgba) = decode(&fs::read(&path).unwrap());
        assert_eq!((w, h), (3, 2));
        let expected: Vec<u8> = (0..6).flat_map(|i| [200, 100, i, 255]).collect();
        assert_eq!(rgba, expected);
        fs::remove_dir_all(&dir).unwrap();
    }
}
