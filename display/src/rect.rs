// SPDX-License-Identifier: Apache-2.0
//! Screen rectangles with the checked arithmetic guest-supplied geometry
//! needs: union (to accumulate dirty areas), intersection, area and
//! clipping to a surface.

/// A rectangle in pixels, `x`/`y` its top-left corner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Rect {
    /// A rectangle; no arithmetic is done until it is used.
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Self {
        Self {
            x,
            y,
            width,
            height,
        }
    }

    /// True when it covers no pixel.
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// The right and bottom edges (exclusive), saturating at `u32::MAX`.
    fn far_edges(&self) -> (u32, u32) {
        (
            self.x.saturating_add(self.width),
            self.y.saturating_add(self.height),
        )
    }

    /// The smallest rectangle covering both (an empty one is ignored).
    pub fn union(&self, other: &Rect) -> Rect {
        if self.is_empty() {
            return *other;
        }
        if other.is_empty() {
            return *self;
        }
        let (r1, b1) = self.far_edges();
        let (r2, b2) = other.far_edges();
        let x = self.x.min(other.x);
        let y = self.y.min(other.y);
        Rect::new(x, y, r1.max(r2) - x, b1.max(b2) - y)
    }

    /// The right edge (exclusive), saturating at `u32::MAX`.
    pub fn right(&self) -> u32 {
        self.far_edges().0
    }

    /// The bottom edge (exclusive), saturating at `u32::MAX`.
    pub fn bottom(&self) -> u32 {
        self.far_edges().1
    }

    /// The number of pixels covered (cannot overflow: it is a `u64`).
    pub fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// The overlap of both, or None if they share no pixel.
    pub fn intersect(&self, other: &Rect) -> Option<Rect> {
        let (r1, b1) = self.far_edges();
        let (r2, b2) = other.far_edges();
        let x = self.x.max(other.x);
        let y = self.y.max(other.y);
        let right = r1.min(r2);
        let bottom = b1.min(b2);
        if x >= right || y >= bottom {
            return None;
        }
        Some(Rect::new(x, y, right - x, bottom - y))
    }

    /// The part inside a `width` x `height` surface, or None if nothing is.
    pub fn clip_to(&self, width: u32, height: u32) -> Option<Rect> {
        let (right, bottom) = self.far_edges();
        let right = right.min(width);
        let bottom = bottom.min(height);
        if self.x >= right || self.y >= bottom {
            return None;
        }
        Some(Rect::new(self.x, self.y, right - self.x, bottom - self.y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_rect_union_covers_both() {
        let a = Rect::new(10, 10, 5, 5);
        let b = Rect::new(0, 12, 3, 10);
        assert_eq!(a.union(&b), Rect::new(0, 10, 15, 12));
    }

    #[test]
    fn test_rect_union_with_empty_is_identity() {
        let a = Rect::new(1, 2, 3, 4);
        assert_eq!(a.union(&Rect::default()), a);
    }

    #[test]
    fn test_rect_clip_huge_guest_rect_saturates() {
        let r = Rect::new(u32::MAX - 1, 0, u32::MAX, 10);
        assert_eq!(r.clip_to(1024, 768), None);
    }

    #[test]
    fn test_rect_intersect_overlap_and_disjoint() {
        let a = Rect::new(0, 0, 10, 10);
        let b = Rect::new(5, 8, 10, 10);
        assert_eq!(a.intersect(&b), Some(Rect::new(5, 8, 5, 2)));
        assert_eq!(a.intersect(&Rect::new(10, 0, 5, 5)), None);
        assert_eq!(a.intersect(&Rect::default()), None);
    }

    #[test]
    fn test_rect_area_does_not_overflow() {
        assert_eq!(
            Rect::new(0, 0, u32::MAX, u32::MAX).area(),
            u64::from(u32::MAX).pow(2)
        );
        assert_eq!(Rect::new(3, 4, 5, 6).area(), 30);
        assert_eq!(Rect::new(u32::MAX, 0, 10, 1).right(), u32::MAX);
    }

    #[test]
    fn test_rect_clip_partially_outside_is_trimmed() {
        let r = Rect::new(1000, 700, 100, 100);
        assert_eq!(r.clip_to(1024, 768), Some(Rect::new(1000, 700, 24, 68)));
    }
}
