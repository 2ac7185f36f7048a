//! Values in whole 64-byte cache lines, aligned to them: the packed right
//! operands of the blocked kernels ([`PackedB`](super::gemm::PackedB),
//! [`PackedBf16`](super::bf16::PackedBf16)), whose strips' rows are one
//! line each (16 values of 4 bytes). Rust promises a `Vec<f32>` 4-byte
//! alignment, glibc gives 16: off a line, every 64-byte load of a strip's
//! row straddles two lines and costs two of the L1 cache's loads.
//! On the Xeon with AMX (docs/PERFORMANCE.md), strips 16 bytes off a line
//! against aligned ones: the packed f32 product at `large`'s shapes 160 ->
//! 190 GFLOP/s (`cargo bench -p model --bench kernel`), training steps
//! 4-7% slower (`large`, the mirror, notebook-char side by side).

use std::alloc::Layout;

/// One cache line of 16 four-byte values.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy)]
struct Line<T>([T; 16]);

/// Values of 4 bytes whose all-zero bits are a value (`0.0`, `0`).
///
/// # Safety
/// Implement only for types of 4 bytes for which all-zero bits are valid.
pub(super) unsafe trait Zeroable: Copy {}

// SAFETY: 4 bytes each; all-zero bits are 0.0 and 0
unsafe impl Zeroable for f32 {}
unsafe impl Zeroable for u32 {}

/// `len` values of 4 bytes (`f32`, bf16 pairs in `u32`) in aligned lines,
/// `len` a multiple of 16, read and written as one slice.
#[derive(Debug, Clone)]
pub(super) struct Lines<T> {
    lines: Vec<Line<T>>,
}

impl<T: Zeroable> Lines<T> {
    /// `len` zeros, from the allocator's zeroed memory (the packed operands
    /// are then written whole; zeroing line by line was 0.4% of a mirror
    /// step).
    ///
    /// # Panics
    /// On `len` not a multiple of 16.
    pub(super) fn zeroed(len: usize) -> Self {
        const { assert!(size_of::<Line<T>>() == 64 && size_of::<T>() == 4) };
        assert!(len.is_multiple_of(16), "whole lines: {len} values");
        let count = len / 16;
        if count == 0 {
            return Lines { lines: Vec::new() };
        }
        let layout = Layout::array::<Line<T>>(count).expect("a packed operand's size");
        // SAFETY: the layout is of `count > 0` lines, not zero-sized
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Line<T>>();
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // SAFETY: `ptr` is the global allocator's, for `count` lines of this
        // alignment; zero bits are `count` initialized lines (`Zeroable`)
        let lines = unsafe { Vec::from_raw_parts(ptr, count, count) };
        Lines { lines }
    }

    /// The values, in order.
    pub(super) fn as_slice(&self) -> &[T] {
        // SAFETY: `Line<T>` is `repr(C)` and exactly its 16 values (checked
        // at compile time in `zeroed`, the only constructor), so the lines are
        // `16 * lines` contiguous, initialized values of `T`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.lines.len() * 16) }
    }

    /// The values, in order, to write.
    pub(super) fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`, borrowed mutably through `self`.
        unsafe {
            std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.lines.len() * 16)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_aligned_and_hold_their_values() {
        for len in [0, 16, 48, 4096] {
            let mut lines = Lines::<f32>::zeroed(len);
            assert_eq!(lines.as_slice().len(), len);
            assert_eq!(lines.as_slice().as_ptr() as usize % 64, 0, "aligned");
            for (i, x) in lines.as_mut_slice().iter_mut().enumerate() {
                *x = i as f32;
            }
            assert!(
                lines
                    .as_slice()
                    .iter()
                    .enumerate()
                    .all(|(i, &x)| x == i as f32)
            );
            assert_eq!(Lines::<u32>::zeroed(len).as_slice(), vec![0u32; len]);
        }
    }

    #[test]
    #[should_panic(expected = "whole lines")]
    fn a_partial_line_is_refused() {
        Lines::<f32>::zeroed(20);
    }
}
