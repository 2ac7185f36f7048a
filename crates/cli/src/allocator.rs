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
//! memory with 2 MiB pages where a program asks (`madvise(MADV_HUGEPAGE)`)
//! on systems whose transparent huge pages are "madvise" (Ubuntu's, this
//! project's hosts) rather than "always", so the 2 MiB stretches inside a
//! block from [`HUGE_PAGE`] up are advised before anything touches them
//! (the advice reaches only pages not yet touched: a block glibc hands out
//! again from its heap keeps the pages it had). Measured in
//! docs/PERFORMANCE-LOG.md ("huge pages").
//!
//! The price: std's `System` serves alignments past 16 bytes with
//! `posix_memalign`, so these blocks do not grow in place (`realloc`
//! allocates, copies and frees) and come zeroed by a `memset`, not by
//! `calloc`'s fresh pages; a huge page is backed whole, so a process's
//! resident memory can grow by up to 2 MiB per block on them.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks from this many bytes up start on a line.
const ALIGN_FROM: usize = 4096;

/// A cache line's bytes.
const LINE: usize = 64;

/// A huge page's bytes (x86-64's, and arm64's with 4 KiB pages): only a
/// block this large can hold one whole, and advising smaller blocks too
/// (from 256 KiB) measured no faster.
const HUGE_PAGE: usize = 2 * 1024 * 1024;

/// Whether a block of `size` bytes is advised onto huge pages: from
/// [`HUGE_PAGE`] up, on Linux with glibc (where the `libc` crate is a
/// dependency); elsewhere big blocks are allocated, zeroed and grown as
/// `System` does.
fn advised(size: usize) -> bool {
    cfg!(all(target_os = "linux", target_env = "gnu")) && size >= HUGE_PAGE
}

/// [`System`], with blocks from [`ALIGN_FROM`] bytes up aligned to [`LINE`]
/// and those from [`HUGE_PAGE`] up on huge pages where the system has them.
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
        if !advised(layout.size()) {
            // SAFETY: as `alloc`
            return unsafe { System.alloc_zeroed(widened(layout)) };
        }
        // advised before the zeroes touch its pages (`System` zeroes a
        // line-aligned block with a `memset`, not by fresh pages)
        // SAFETY: as `alloc`
        let block = unsafe { self.alloc(layout) };
        if !block.is_null() {
            // SAFETY: the block holds `layout.size()` bytes
            unsafe { std::ptr::write_bytes(block, 0, layout.size()) };
        }
        block
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
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if old.align() == widened(new).align() && !advised(new_size) {
            // SAFETY: `ptr` came from `System` with `old`; the new size is valid
            return unsafe { System.realloc(ptr, old, new_size) };
        }
        // the block crosses ALIGN_FROM, or is to be advised before the old
        // values are copied in: moved into a new block (what `System` does
        // for a line-aligned block anyway: allocate, copy, free)
        // SAFETY: `new` has a non-zero size (`new_size`, the caller's promise)
        let moved = unsafe { self.alloc(new) };
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

/// `block`, `size` bytes from `System` (or null), with the whole 2 MiB
/// stretches inside it advised onto huge pages: those not yet touched are
/// then backed by one 2 MiB page each. The advice is a hint: where it is
/// refused (no transparent huge pages) nothing changes, so its result is
/// not looked at.
fn advise_huge(block: *mut u8, size: usize) -> *mut u8 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if advised(size) && !block.is_null() {
        let start = (block as usize).next_multiple_of(HUGE_PAGE);
        // the block's end: inside the address space, so no overflow
        let end = (block as usize + size) / HUGE_PAGE * HUGE_PAGE;
        if start < end {
            // SAFETY: the range lies inside the block (allocated, so mapped),
            // starts on a page and spans whole ones; the advice changes how
            // those pages are backed, never what they hold.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = size;
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

    /// What `/proc/self/smaps` says of the mapping of this process that
    /// holds `address`: its `VmFlags` and its KiB on huge pages.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn mapping(address: usize) -> Option<(String, u64)> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("reading /proc/self/smaps");
        let (mut inside, mut huge_kib) = (false, 0);
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((start, end)) = first.split_once('-')
                && let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                )
            {
                inside = (start..end).contains(&address);
            } else if inside && let Some(kib) = line.strip_prefix("AnonHugePages:") {
                huge_kib = kib
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .unwrap_or(0);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return Some((flags.to_string(), huge_kib));
            }
        }
        None
    }

    /// Why this process cannot be given huge pages, if it cannot: a fresh
    /// mapping advised and written has none (no transparent huge pages,
    /// none free), or glibc advises its blocks itself.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn no_huge_pages() -> Option<String> {
        if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("hugetlb")) {
            return Some("GLIBC_TUNABLES asks glibc to advise its blocks".into());
        }
        let len = 4 * HUGE_PAGE;
        // SAFETY: a new private anonymous mapping, used within its length
        // and unmapped below
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return Some("mmap failed".into());
            }
            advise_huge(p.cast(), len);
            std::ptr::write_bytes(p.cast::<u8>(), 1, len);
            let huge = mapping(p as usize + len / 2).map_or(0, |(_, kib)| kib);
            libc::munmap(p, len);
            (huge == 0).then(|| "an advised mapping got no huge pages".into())
        }
    }

    /// A block from 2 MiB up, allocated, allocated zeroed or grown to that
    /// size, is advised onto huge pages before anything touches it: its
    /// mapping has the `hg` flag and pages of 2 MiB (a block zeroed or
    /// copied into first would have none), and holds what it should. The
    /// grown block's old values (two huge pages' worth) cover its first
    /// 2 MiB boundary wherever the block starts, so the copy itself faults
    /// in the first huge page.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn blocks_from_two_mib_are_on_huge_pages() {
        if let Some(why) = no_huge_pages() {
            #[allow(clippy::print_stderr)] // says when the test cannot run here
            {
                eprintln!("blocks_from_two_mib_are_on_huge_pages: {why}: SKIPPED");
            }
            return;
        }
        let a = Allocator;
        // past glibc's largest mmap threshold: a mapping of its own
        let size = 64 << 20;
        let big = Layout::from_size_align(size, 4).unwrap();
        let small = Layout::from_size_align(2 * HUGE_PAGE, 4).unwrap();
        let on_huge_pages = |p: *mut u8, how: &str| {
            let (flags, kib) = mapping(p as usize + size / 2).expect("the block's mapping");
            assert!(
                flags.split_whitespace().any(|f| f == "hg") && kib > 0,
                "a block {how}: flags {flags}, {kib} KiB on huge pages"
            );
        };
        // SAFETY: non-zero sizes; each block is used within its size and
        // freed with the layout it has
        unsafe {
            let p = a.alloc(big);
            assert!(!p.is_null());
            std::ptr::write_bytes(p, 7, size);
            on_huge_pages(p, "allocated");
            a.dealloc(p, big);

            let z = a.alloc_zeroed(big);
            assert!(!z.is_null());
            on_huge_pages(z, "allocated zeroed");
            assert!((0..size).step_by(4093).all(|i| *z.add(i) == 0));
            a.dealloc(z, big);

            let g = a.alloc(small);
            assert!(!g.is_null());
            std::ptr::write_bytes(g, 5, small.size());
            let g = a.realloc(g, small, size);
            assert!(!g.is_null());
            on_huge_pages(g, "grown");
            assert!((0..small.size()).step_by(1021).all(|i| *g.add(i) == 5));
            a.dealloc(g, big);
        }
    }
}
