// SPDX-License-Identifier: Apache-2.0
//! Where the guest image goes in the viewer's area, and the way back: from
//! a pointer position in the window to a guest pixel or to the 0..=0x7fff
//! coordinates of an absolute pointing device (tablet).
//!
//! All of it is plain float arithmetic that never divides by zero and never
//! yields NaN: zero or non-finite sizes give an empty placement that maps
//! no point.

use std::fmt;
use std::str::FromStr;

/// How the guest image is scaled into the viewer's area. The image is
/// always centred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ScaleMode {
    /// As large as fits, keeping the aspect ratio (may scale up).
    #[default]
    Fit,
    /// One guest pixel per window point (clipped when larger than the area).
    OneToOne,
    /// The largest whole-number scale that fits, at least 1 (crisp pixels).
    Integer,
    /// Fills the area, ignoring the aspect ratio.
    Stretch,
}

impl ScaleMode {
    /// Every mode, in menu order.
    pub const ALL: [ScaleMode; 4] = [
        ScaleMode::Fit,
        ScaleMode::OneToOne,
        ScaleMode::Integer,
        ScaleMode::Stretch,
    ];

    /// The name used by [`Display`](fmt::Display) and [`FromStr`].
    pub const fn name(self) -> &'static str {
        match self {
            ScaleMode::Fit => "fit",
            ScaleMode::OneToOne => "1:1",
            ScaleMode::Integer => "integer",
            ScaleMode::Stretch => "stretch",
        }
    }
}

impl fmt::Display for ScaleMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scale mode name that is not one of "fit", "1:1", "integer", "stretch".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scale mode {0:?} (expected fit, 1:1, integer or stretch)")]
pub struct ParseScaleModeError(pub String);

impl FromStr for ScaleMode {
    type Err = ParseScaleModeError;

    /// Parses "fit", "1:1", "integer" or "stretch", ignoring case and
    /// surrounding blanks.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        ScaleMode::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(t))
            .ok_or_else(|| ParseScaleModeError(s.to_string()))
    }
}

/// Where the guest image lands in the area, in the area's units (points).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Top-left corner of the image relative to the area's top-left (may be
    /// negative when the image is larger than the area).
    pub offset: (f32, f32),
    /// Drawn size of the image (0 when there is nothing to draw).
    pub size: (f32, f32),
    /// Points per guest pixel horizontally (0 when nothing is drawn).
    pub scale_x: f32,
    /// Points per guest pixel vertically (0 when nothing is drawn).
    pub scale_y: f32,
    /// The guest size in pixels this placement was made for.
    pub guest: (u32, u32),
}

impl Placement {
    /// True when the image covers no area (nothing maps).
    pub fn is_empty(&self) -> bool {
        !(self.size.0 > 0.0 && self.size.1 > 0.0 && self.scale_x > 0.0 && self.scale_y > 0.0)
    }
}

/// A finite, non-negative size component.
fn sane(v: f32) -> f32 {
    if v.is_finite() && v > 0.0 { v } else { 0.0 }
}

/// Places a `guest` image (pixels) in an `area` (points) by `mode`.
pub fn place(mode: ScaleMode, guest: (u32, u32), area: (f32, f32)) -> Placement {
    let (aw, ah) = (sane(area.0), sane(area.1));
    let (gw, gh) = (guest.0 as f32, guest.1 as f32);
    if guest.0 == 0 || guest.1 == 0 {
        return Placement {
            offset: (aw / 2.0, ah / 2.0),
            size: (0.0, 0.0),
            scale_x: 0.0,
            scale_y: 0.0,
            guest,
        };
    }
    let (sx, sy) = match mode {
        ScaleMode::Fit => {
            let s = (aw / gw).min(ah / gh);
            (s, s)
        }
        ScaleMode::OneToOne => (1.0, 1.0),
        ScaleMode::Integer => {
            let s = (aw / gw).min(ah / gh).floor().max(1.0);
            (s, s)
        }
        ScaleMode::Stretch => (aw / gw, ah / gh),
    };
    let size = (gw * sx, gh * sy);
    let mut offset = ((aw - size.0) / 2.0, (ah - size.1) / 2.0);
    if matches!(mode, ScaleMode::OneToOne | ScaleMode::Integer) {
        // Whole-point offsets keep the pixels crisp.
        offset = (offset.0.floor(), offset.1.floor());
    }
    Placement {
        offset,
        size,
        scale_x: sx,
        scale_y: sy,
        guest,
    }
}

/// The guest pixel under `point` (relative to the area's top-left), None
/// outside the image or for a non-finite point.
pub fn to_guest(placement: &Placement, point: (f32, f32)) -> Option<(u32, u32)> {
    if placement.is_empty() || !point.0.is_finite() || !point.1.is_finite() {
        return None;
    }
    let rx = point.0 - placement.offset.0;
    let ry = point.1 - placement.offset.1;
    if rx < 0.0 || ry < 0.0 || rx >= placement.size.0 || ry >= placement.size.1 {
        return None;
    }
    // Float rounding can land on the far edge; clamp to the last pixel.
    let gx = ((rx / placement.scale_x) as u32).min(placement.guest.0.saturating_sub(1));
    let gy = ((ry / placement.scale_y) as u32).min(placement.guest.1.saturating_sub(1));
    Some((gx, gy))
}

/// The largest absolute pointer coordinate (both axes).
pub const ABSOLUTE_MAX: u16 = 0x7fff;

/// `point` as absolute tablet coordinates, 0..=[`ABSOLUTE_MAX`] across the
/// image on each axis, clamped at the edges (so a pointer outside the image
/// pins to the border). An empty placement or non-finite point gives 0.
pub fn to_absolute(placement: &Placement, point: (f32, f32)) -> (u16, u16) {
    if placement.is_empty() {
        return (0, 0);
    }
    let axis = |p: f32, off: f32, size: f32| -> u16 {
        let t = (p - off) / size;
        if t.is_nan() {
            return 0;
        }
        // t is clamped to 0..=1, so the product lies in 0..=ABSOLUTE_MAX.
        (t.clamp(0.0, 1.0) * f32::from(ABSOLUTE_MAX)).round() as u16
    };
    (
        axis(point.0, placement.offset.0, placement.size.0),
        axis(point.1, placement.offset.1, placement.size.1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-3
    }

    #[test]
    fn test_names_round_trip() {
        for m in ScaleMode::ALL {
            assert_eq!(m.to_string().parse::<ScaleMode>().unwrap(), m);
        }
        assert_eq!(" FIT ".parse::<ScaleMode>().unwrap(), ScaleMode::Fit);
        assert_eq!("1:1".parse::<ScaleMode>().unwrap(), ScaleMode::OneToOne);
        assert!("zoom".parse::<ScaleMode>().is_err());
    }

    #[test]
    fn test_fit_keeps_aspect_and_centres() {
        let p = place(ScaleMode::Fit, (800, 600), (1000.0, 1000.0));
        assert!(close(p.scale_x, 1.25) && close(p.scale_y, 1.25));
        assert!(close(p.size.0, 1000.0) && close(p.size.1, 750.0));
        assert!(close(p.offset.0, 0.0) && close(p.offset.1, 125.0));
        // Scales down too.
        let p = place(ScaleMode::Fit, (1920, 1080), (960.0, 1080.0));
        assert!(close(p.scale_x, 0.5));
        assert!(close(p.offset.1, 270.0));
    }

    #[test]
    fn test_integer_largest_whole_scale_at_least_one() {
        let p = place(ScaleMode::Integer, (640, 480), (1700.0, 1000.0));
        assert_eq!((p.scale_x, p.scale_y), (2.0, 2.0));
        assert_eq!(p.size, (1280.0, 960.0));
        assert_eq!(p.offset, (210.0, 20.0));
        // Too small for 1x still uses 1x (clipped), centred.
        let p = place(ScaleMode::Integer, (1024, 768), (800.0, 600.0));
        assert_eq!(p.scale_x, 1.0);
        assert_eq!(p.offset, (-112.0, -84.0));
    }

    #[test]
    fn test_one_to_one_centred_and_clipped() {
        let p = place(ScaleMode::OneToOne, (641, 481), (1000.0, 500.0));
        assert_eq!(p.size, (641.0, 481.0));
        assert_eq!(p.offset, (179.0, 9.0)); // floor of 179.5 and 9.5
        let p = place(ScaleMode::OneToOne, (2000, 1000), (1000.0, 500.0));
        assert_eq!(p.offset, (-500.0, -250.0));
        assert_eq!(to_guest(&p, (0.0, 0.0)), Some((500, 250)));
    }

    #[test]
    fn test_stretch_fills() {
        let p = place(ScaleMode::Stretch, (640, 480), (1280.0, 240.0));
        assert_eq!((p.scale_x, p.scale_y), (2.0, 0.5));
        assert_eq!(p.offset, (0.0, 0.0));
        assert_eq!(p.size, (1280.0, 240.0));
    }

    #[test]
    fn test_odd_sizes_map_every_edge_pixel() {
        for mode in ScaleMode::ALL {
            let p = place(mode, (333, 177), (1001.0, 703.0));
            let (ox, oy) = p.offset;
            assert_eq!(to_guest(&p, (ox, oy)), Some((0, 0)), "{mode}");
            let far = (ox + p.size.0 - 0.001, oy + p.size.1 - 0.001);
            if far.0 < 1001.0 && far.1 < 703.0 {
                assert_eq!(to_guest(&p, far), Some((332, 176)), "{mode}");
            }
            assert_eq!(to_guest(&p, (ox - 0.5, oy)), None, "{mode}");
            assert_eq!(to_guest(&p, (ox + p.size.0, oy)), None, "{mode}");
        }
    }

    #[test]
    fn test_zero_and_bad_sizes_never_nan() {
        let areas = [
            (0.0, 0.0),
            (0.0, 100.0),
            (f32::NAN, 10.0),
            (-5.0, f32::INFINITY),
        ];
        let guests = [(0, 0), (0, 10), (10, 0), (640, 480)];
        for mode in ScaleMode::ALL {
            for area in areas {
                for guest in guests {
                    let p = place(mode, guest, area);
                    for v in [
                        p.offset.0, p.offset.1, p.size.0, p.size.1, p.scale_x, p.scale_y,
                    ] {
                        assert!(v.is_finite(), "{mode} {guest:?} {area:?}: {p:?}");
                    }
                    let _ = to_guest(&p, (1.0, 1.0));
                    let _ = to_absolute(&p, (1.0, 1.0));
                }
            }
        }
        let p = place(ScaleMode::Fit, (640, 480), (0.0, 0.0));
        assert!(p.is_empty());
        assert_eq!(to_guest(&p, (0.0, 0.0)), None);
        assert_eq!(to_absolute(&p, (0.0, 0.0)), (0, 0));
        let p = place(ScaleMode::Fit, (0, 0), (100.0, 100.0));
        assert_eq!(to_guest(&p, (50.0, 50.0)), None);
    }

    #[test]
    fn test_to_guest_inside() {
        let p = place(ScaleMode::Fit, (100, 50), (200.0, 200.0));
        // Image is 200x100 at y offset 50, scale 2.
        assert_eq!(to_guest(&p, (0.0, 50.0)), Some((0, 0)));
        assert_eq!(to_guest(&p, (3.9, 51.9)), Some((1, 0)));
        assert_eq!(to_guest(&p, (199.9, 149.9)), Some((99, 49)));
        assert_eq!(to_guest(&p, (100.0, 40.0)), None);
        assert_eq!(to_guest(&p, (f32::NAN, 60.0)), None);
    }

    #[test]
    fn test_to_absolute_clamped() {
        let p = place(ScaleMode::Fit, (100, 50), (200.0, 200.0));
        assert_eq!(to_absolute(&p, (0.0, 50.0)), (0, 0));
        assert_eq!(to_absolute(&p, (200.0, 150.0)), (0x7fff, 0x7fff));
        assert_eq!(to_absolute(&p, (100.0, 100.0)), (0x4000, 0x4000));
        assert_eq!(to_absolute(&p, (-50.0, 500.0)), (0, 0x7fff));
        assert_eq!(to_absolute(&p, (f32::NAN, f32::INFINITY)), (0, 0x7fff));
    }
}
