//! The program's allocator: the system's, with every allocation from 4 KiB
//! up aligned to a 64-byte cache line, and blocks from 2 MiB up asked to
//! live on the kernel's 2 MiB pages.
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
//! A large model's step streams buffers of tens of MiB (`large`: a layer's
//! gates over 3200 rows are 25 MiB) through products that read them in
//! strides of a row; on 4 KiB pages each row can be a TLB miss. Linux backs
//! memory with 2 MiB pages where a program asks (`madvise(MADV_HUGEPAGE)`;
//! most distributions' transparent huge pages are "madvise", not
//! "always"), so blocks from [`HUGE_FROM`] up ask, as glibc's own
//! `glibc.malloc.hugetlb=1` tunable would for its whole heap. Measured in
//! docs/PERFORMANCE-LOG.md ("huge pages").
//!
//! The price: std's `System` serves alignments past 16 bytes with
//! `posix_memalign`, so these blocks do not grow in place (`realloc`
//! allocates, copies and frees) and come zeroed by a `memset`, not by
//! `calloc`'s fresh pages; a huge page is backed whole, so a process's
//! resident memory can grow by up to 2 MiB per such block.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks from this many bytes up start on a line.
const ALIGN_FROM: usize = 4096;

/// A cache line's bytes.
const LINE: usize = 64;

/// Blocks from this many bytes up ask for huge pages.
const HUGE_FROM: usize = 2 << 20;

/// [`System`], with blocks from [`ALIGN_FROM`] bytes up aligned to [`LINE`]
/// and those from [`HUGE_FROM`] up on huge pages where the system has them.
pub struct Allocator;

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
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `layout` has a non-zero size (the caller's promise), kept by `widened`
        advise_huge(unsafe { System.alloc(widened(layout)) }, layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`
        advise_huge(
            unsafe { System.alloc_zeroed(widened(layout)) },
            layout.size(),
        )
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
            return advise_huge(unsafe { System.realloc(ptr, old, new_size) }, new_size);
        }
        // the block crosses ALIGN_FROM: moved into one of the new alignment
        // SAFETY: `new` has a non-zero size (`new_size`, the caller's promise)
        let moved = advise_huge(unsafe { System.alloc(new) }, new_size);
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

/// `block`, `size` bytes from `System` (or null), advised onto huge pages
/// when it is that large: the advice marks the pages it spans, and those
/// not yet touched are backed by 2 MiB pages where whole ones fit.
/// Nothing changes where the advice is refused (no transparent huge pages,
/// another system).
fn advise_huge(block: *mut u8, size: usize) -> *mut u8 {
    #[cfg(target_os = "linux")]
    if size >= HUGE_FROM && !block.is_null() {
        const PAGE: usize = 4096;
        let start = block as usize & !(PAGE - 1);
        let len = block as usize + size - start;
        // SAFETY: the range is the block's own pages (rounded out to whole
        // pages, as madvise needs), mapped by the allocator; the advice
        // changes how they are backed, never their contents.
        unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
    }
    block
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
        let a = Allocator;
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

    /// The `VmFlags` of the mapping of this process that holds `address`
    /// (`/proc/self/smaps`), if one does.
    #[cfg(target_os = "linux")]
    fn mapping_flags(address: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("reading /proc/self/smaps");
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((start, end)) = first.split_once('-')
                && let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                )
            {
                inside = (start..end).contains(&address);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return Some(flags.to_string());
            }
        }
        None
    }

    /// A block from 2 MiB up is advised onto huge pages (its mapping's
    /// `hg` flag) and holds what is written to it.
    #[cfg(target_os = "linux")]
    #[test]
    fn blocks_from_two_mib_ask_for_huge_pages() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            println!("SKIPPED: this kernel has no transparent huge pages");
            return;
        }
        let a = Allocator;
        let big = Layout::from_size_align(4 * HUGE_FROM, 4).unwrap();
        // SAFETY: non-zero sizes; each block is used within its size and
        // freed with its layout
        unsafe {
            let p = a.alloc(big);
            assert!(!p.is_null());
            let middle = p as usize + big.size() / 2;
            let flags = mapping_flags(middle).expect("the block's mapping");
            assert!(
                flags.split_whitespace().any(|f| f == "hg"),
                "a {} MiB block's mapping is not advised: {flags}",
                big.size() >> 20
            );
            std::ptr::write_bytes(p, 7, big.size());
            assert!(*p == 7 && *p.add(big.size() - 1) == 7);
            a.dealloc(p, big);
        }
    }
}
