// SPDX-License-Identifier: Apache-2.0
//! Pixel helpers over frames of RGBX8888 pixels (bytes R, G, B, X, rows
//! packed): what changed between two frames, and a small copy of one (the
//! library's thumbnails).

use crate::rect::Rect;

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

/// Scales RGBX pixels down to `max_width` wide (never up), nearest
/// neighbour; returns the new size and RGBA pixels (alpha opaque).
pub fn downscale(pixels: &[u8], width: u32, height: u32, max_width: u32) -> (u32, u32, Vec<u8>) {
    let new_w = width.min(max_width).max(1);
    let new_h = ((u64::from(height) * u64::from(new_w)) / u64::from(width.max(1))).max(1) as u32;
    let mut out = Vec::with_capacity(new_w as usize * new_h as usize * 4);
    for y in 0..new_h {
        let sy = (u64::from(y) * u64::from(height) / u64::from(new_h)) as usize;
        for x in 0..new_w {
            let sx = (u64::from(x) * u64::from(width) / u64::from(new_w)) as usize;
            let at = (sy * width as usize + sx) * 4;
            match pixels.get(at..at + 3) {
                Some(rgb) => out.extend_from_slice(rgb),
                None => out.extend_from_slice(&[0, 0, 0]),
            }
            out.push(0xff);
        }
    }
    (new_w, new_h, out)
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
    fn test_downscale_keeps_the_aspect_and_samples_pixels() {
        // 4x2, left half red, right half blue.
        let mut pixels = Vec::new();
        for _ in 0..2 {
            for x in 0..4 {
                pixels.extend_from_slice(if x < 2 {
                    &[255, 0, 0, 0]
                } else {
                    &[0, 0, 255, 0]
                });
            }
        }
        let (w, h, out) = downscale(&pixels, 4, 2, 2);
        assert_eq!((w, h), (2, 1));
        assert_eq!(out, vec![255, 0, 0, 255, 0, 0, 255, 255]);
        // Never scaled up.
        assert_eq!(downscale(&pixels, 4, 2, 160).0, 4);
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
