//! The program's allocator: the system's, with every allocation from 4 KiB
//! up aligned to a 64-byte cache line.
//!
//! The kernels read and write activations, gates and weights in 64-byte
//! vectors (AVX-512) from the start of their buffers. glibc aligns a block
//! to 16 bytes, so a buffer can start off a line, and then every vector
//! load or store of it straddles two lines. On the Xeon with AMX
//! (docs/PERFORMANCE-LOG.md), this binary against the one before it, side by
//! side, one thread each (`xtask/bench/side_by_side.sh`): the mirror 1.035
//! and 1.046, `large` 1.007 and 1.015, notebook-fused 0.992 and 1.016; a
//! first version of it: notebook-char 1.011 and 1.012, notebook-dropout and
//! -bigram even (0.976-1.022). The packed weights are aligned whatever the
//! allocator (`model::kernel`'s `Lines`); this covers everything else.
//!
//! The price: std's `System` serves alignments past 16 bytes with
//! `posix_memalign`, so these blocks do not grow in place (`realloc`
//! allocates, copies and frees) and come zeroed by a `memset`, not by
//! `calloc`'s fresh pages.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks from this many bytes up start on a line.
const ALIGN_FROM: usize = 4096;

/// A cache line's bytes.
const LINE: usize = 64;

/// [`System`], with blocks from [`ALIGN_FROM`] bytes up aligned to [`LINE`].
pub struct LineAligned;

/// The layout a block of `layout` is allocated with: a function of the
/// layout alone, so that a block is freed with the layout it was made with.
fn widened(layout: Layout) -> Layout {
    if layout.size() >= ALIGN_FROM && layout.align() < LINE {
        // within 64 bytes of isize::MAX the size does not round up to a
        // line: such a block keeps its layout (and could not be allocated)
        Layout::from_size_align(layout.size(), LINE).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every block comes from `System` with `widened(layout)` and goes
// back to it with the same (`widened` depends on the layout alone, which
// Rust passes back unchanged, or changed by `realloc` below, which moves
// the block when the widened alignment changes); `widened` keeps the size
// and never lowers the alignment, so each block is what the caller asked.
unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `layout` has a non-zero size (the caller's promise), kept by `widened`
        unsafe { System.alloc(widened(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`
        unsafe { System.alloc_zeroed(widened(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with `layout`, so from
        // `System` with `widened(layout)`
        unsafe { System.dealloc(ptr, widened(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = widened(layout);
        // SAFETY: the caller promises `new_size`, rounded to `layout.align()`,
        // does not overflow isize
        let new = widened(unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) });
        if old.align() == new.align() {
            // SAFETY: `ptr` came from `System` with `old`; the new size is valid
            return unsafe { System.realloc(ptr, old, new_size) };
        }
        // the block crosses ALIGN_FROM: moved into one of the new alignment
        // SAFETY: `new` has a non-zero size (`new_size`, the caller's promise)
        let moved = unsafe { System.alloc(new) };
        if !moved.is_null() {
            // SAFETY: both blocks hold at least the smaller size and are distinct;
            // `ptr` came from `System` with `old`
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                System.dealloc(ptr, old);
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks from 4 KiB up start on a line; growing and shrinking across
    /// that size keeps the values and the alignment of the new size.
    #[test]
    fn large_blocks_start_on_a_line_and_keep_their_values_across_sizes() {
        assert_eq!(widened(Layout::new::<[u8; 100]>()).align(), 1);
        assert_eq!(widened(Layout::new::<[f32; 1024]>()).align(), LINE);
        assert_eq!(widened(Layout::new::<[u128; 512]>()).align(), LINE);
        let page = Layout::from_size_align(8192, 4096).unwrap();
        assert_eq!(widened(page), page, "larger alignments kept");
        let edge = Layout::from_size_align(isize::MAX as usize - 3, 4).unwrap();
        assert_eq!(widened(edge), edge, "no line fits: kept");
        assert_eq!(
            widened(Layout::from_size_align(4095, 4).unwrap()).align(),
            4
        );
        assert_eq!(
            widened(Layout::from_size_align(4096, 4).unwrap()).align(),
            LINE
        );
        let a = LineAligned;
        let small = Layout::from_size_align(3000, 4).unwrap();
        // SAFETY: non-zero sizes; each block is used within its size and
        // freed with the layout it now has
        unsafe {
            let p = a.alloc(small);
            assert!(!p.is_null());
            for i in 0..3000 {
                *p.add(i) = (i % 251) as u8;
            }
            let p = a.realloc(p, small, 100_000);
            assert!(!p.is_null());
            assert_eq!(p as usize % LINE, 0, "grown past 4 KiB: on a line");
            assert!((0..3000).all(|i| *p.add(i) == (i % 251) as u8));
            let big = Layout::from_size_align(100_000, 4).unwrap();
            let p = a.realloc(p, big, 200_000);
            assert!(!p.is_null());
            assert_eq!(p as usize % LINE, 0, "grown again: on a line");
            assert!((0..3000).all(|i| *p.add(i) == (i % 251) as u8));
            let bigger = Layout::from_size_align(200_000, 4).unwrap();
            let p = a.realloc(p, bigger, 2000);
            assert!(!p.is_null());
            assert!((0..2000).all(|i| *p.add(i) == (i % 251) as u8));
            a.dealloc(p, Layout::from_size_align(2000, 4).unwrap());
            let z = a.alloc_zeroed(big);
            assert_eq!(z as usize % LINE, 0);
            assert!((0..100_000).all(|i| *z.add(i) == 0));
            a.dealloc(z, big);
        }
    }
}
