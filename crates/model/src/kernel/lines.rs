//! Values in whole 64-byte cache lines, aligned to them: the packed right
//! operands of the blocked kernels ([`PackedB`](super::gemm::PackedB),
//! [`PackedHalf`](super::half::PackedHalf)), whose strips' rows are one
//! line each (16 values of 4 bytes). Rust promises a `Vec<f32>` 4-byte
//! alignment, glibc gives 16: off a line, every 64-byte load of a strip's
//! row straddles two lines and costs two of the L1 cache's loads.
//! On the Xeon with AMX (docs/PERFORMANCE-LOG.md), strips 16 bytes off a line
//! against aligned ones: the packed f32 product at `large`'s shapes 160 ->
//! 190 GFLOP/s (`cargo bench -p model --bench kernel`), training steps
//! 4-7% slower (`large`, the mirror, notebook-char side by side).

use std::mem::MaybeUninit;

/// One cache line of 16 four-byte values.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy)]
struct Line<T>([T; 16]);

/// `len` values of 4 bytes (`f32`, 16-bit pairs in `u32`) in aligned lines,
/// `len` a multiple of 16, written once and read as one slice.
#[derive(Debug, Clone)]
pub(super) struct Lines<T> {
    lines: Vec<Line<T>>,
}

impl<T: Copy> Lines<T> {
    /// `len` values, each written once by `write` (a packed operand's
    /// strips), not zeroed first: `large`'s weights are 4 MiB, packed
    /// twice a step and layer, and a zeroed allocation of that size is a
    /// `memset` on one thread (the CLI keeps large blocks on the heap).
    ///
    /// # Safety
    /// `write` initializes every value of the slice it is given.
    ///
    /// # Panics
    /// On `len` not a multiple of 16.
    pub(super) unsafe fn written(len: usize, write: impl FnOnce(&mut [MaybeUninit<T>])) -> Self {
        const { assert!(size_of::<Line<T>>() == 64 && size_of::<T>() == 4) };
        assert!(len.is_multiple_of(16), "whole lines: {len} values");
        let count = len / 16;
        let mut lines: Vec<Line<T>> = Vec::with_capacity(count);
        // SAFETY: the spare capacity is `count` lines, each exactly its 16
        // values (`repr(C)`, checked above): `len` values of `T` in a row
        let values = unsafe {
            std::slice::from_raw_parts_mut(
                lines
                    .spare_capacity_mut()
                    .as_mut_ptr()
                    .cast::<MaybeUninit<T>>(),
                len,
            )
        };
        write(values);
        // SAFETY: `write` initialized the `len` values (the caller's
        // promise), which are the `count` lines
        unsafe { lines.set_len(count) };
        Lines { lines }
    }

    /// The values, in order.
    pub(super) fn as_slice(&self) -> &[T] {
        // SAFETY: `Line<T>` is `repr(C)` and exactly its 16 values (checked
        // at compile time in `written`, the only constructor), so the lines are
        // `16 * lines` contiguous, initialized values of `T`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.lines.len() * 16) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines of `len` values written with their indices.
    fn numbered(len: usize) -> Lines<f32> {
        // SAFETY: every value is written
        unsafe {
            Lines::written(len, |v| {
                for (i, x) in v.iter_mut().enumerate() {
                    x.write(i as f32);
                }
            })
        }
    }

    #[test]
    fn lines_are_aligned_and_hold_their_values() {
        for len in [0, 16, 48, 4096] {
            let lines = numbered(len);
            assert_eq!(lines.as_slice().len(), len);
            assert_eq!(lines.as_slice().as_ptr() as usize % 64, 0, "aligned");
            assert!((lines.as_slice().iter().enumerate()).all(|(i, &x)| x == i as f32));
        }
    }

    #[test]
    #[should_panic(expected = "whole lines")]
    fn a_partial_line_is_refused() {
        numbered(20);
    }
}
