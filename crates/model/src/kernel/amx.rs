//! The bf16 products ([`Precision::Bf16`](super::Precision)) on the AMX
//! tile unit of Intel Xeons from Sapphire Rapids on: `tdpbf16ps` multiplies
//! a 16 x 32 tile of bf16 by a 32 x 16 one and adds the 16 x 16 result to an
//! f32 tile, 8192 multiply-adds in one instruction. On the Xeon of
//! 2026-12-05 a loop of them ran at 3.8 TFLOP/s on one core, against about
//! 135 GFLOP/s for f32 FMAs and less for `vdpbf16ps` (docs/PERFORMANCE-LOG.md),
//! so where the tiles exist they take the bf16 products.
//!
//! Stable Rust has no AMX intrinsics yet, so the instructions are written as
//! inline assembly, each block declaring the tile registers it may write.
//! The tiles are state the compiler never touches itself (no code of this
//! process but this module uses them), which is what lets `C` stay in four
//! of them from one block to the next: each product configures them on its
//! thread, keeps a block of `C` in them over a pass of up to 256 pairs of
//! depth, and releases them when done, so that a thread that is not
//! multiplying carries no tile state across context switches.
//!
//! Layout: the operands are the bf16 pairs of [`half`](super::half) (a `u32`
//! holding depths `2p` and `2p + 1`), which is the layout the tiles take:
//! an `A` tile is 16 rows of 16 pairs, a `B` tile 16 rows of pairs of 16
//! columns (a strip of [`PackedHalf`](super::PackedHalf)).

#[cfg(target_arch = "x86_64")]
use std::arch::asm;

/// Whether this CPU has AMX-TILE and AMX-BF16 and the kernel lets this
/// process use the tiles (Linux asks each process to request the tile
/// data state, `arch_prctl(ARCH_REQ_XCOMP_PERM)`; the request is made here,
/// once). False off Linux and off x86_64.
pub fn usable() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| has_amx_bf16() && request_tile_permission())
}

/// AMX-TILE and AMX-BF16 by CPUID (leaf 7, EDX bits 24 and 22), for
/// [`usable`] and for the extensions a measurement reports.
pub fn has_amx_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        const AMX_BF16_AND_TILE: u32 = 1 << 22 | 1 << 24;
        // leaf 7 is read only where leaf 0 says it exists
        __cpuid(0).eax >= 7 && __cpuid_count(7, 0).edx & AMX_BF16_AND_TILE == AMX_BF16_AND_TILE
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: without it the
/// first tile instruction of the process faults. The permission is the
/// process's, for all its threads.
fn request_tile_permission() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        // SAFETY: a system call that only sets a permission of this
        // process; it reads no memory of ours. The std crate has no wrapper
        // and `libc` is not a dependency for this one call.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            )
        };
        ret == 0
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}

/// The tile configuration (`ldtilecfg`'s 64 bytes, palette 1): tiles 0-7
/// all 16 rows of 64 bytes. Tiles 0-3 hold `C`, 4-5 `A`, 6-7 `B`.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

#[cfg(target_arch = "x86_64")]
/// Depth (pairs) of one pass over `C`: the `A` rows of a pass (`[m, 256]`
/// pairs, 64 KiB for 64 rows) stay in L2 and the `B` block of two strips
/// (32 KiB) in L1 while every row block reads it.
const KC: usize = 256;

/// `C (+)= A B` on the tiles, `A` and `B` in bf16 pairs, `C` in f32, with
/// the arguments of the blocked kernels (`gemm_bf16`): `A[i][p]` at `a[i *
/// a_rs + p]` (pairs of a row contiguous), `B`'s column `16 s + q` of pair
/// `p` at `b[s * b_strip + p * ldb + q]`, `C[i][j]` at `c[i * ldc + j]`.
/// Blocks of 32 x 32 (32 x 16, 16 x 32 or 16 x 16 at the edges), `C` kept
/// in tiles over a pass's depth.
///
/// # Safety
/// [`usable`]; `m`, `n` and `k` (pairs) multiples of 16, `k` not 0; the
/// pointers cover every element the strides address.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_amx(
    m: usize,
    n: usize,
    k: usize,
    a: *const u32,
    a_rs: usize,
    b: *const u32,
    ldb: usize,
    b_strip: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    debug_assert!(k > 0 && [m, n, k].iter().all(|x| x.is_multiple_of(16)));
    let config = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: std::array::from_fn(|t| if t < 8 { 64 } else { 0 }),
        rows: std::array::from_fn(|t| if t < 8 { 16 } else { 0 }),
    };
    // SAFETY: the tiles are usable (the caller's contract); the
    // configuration is 64 bytes, aligned.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) &config, out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _, out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _, options(nostack, readonly))
    };
    // the tiles go back to their initial state however this returns
    let _release = ReleaseTiles;
    let (row_tiles, strips) = (m / 16, n / 16);
    let mut k0 = 0;
    while k0 < k {
        let kc = KC.min(k - k0);
        let block = Block {
            k: kc,
            a_rs,
            ldb,
            ldc,
            accumulate: accumulate || k0 > 0,
        };
        let mut s = 0;
        while s < strips {
            let cols = (strips - s).min(2);
            let mut t = 0;
            while t < row_tiles {
                let rows = (row_tiles - t).min(2);
                // SAFETY: row tiles t..t + rows and strips s..s + cols lie
                // inside `m` and `n`, pairs k0..k0 + kc inside `k`.
                unsafe {
                    block.run(
                        (rows, cols),
                        a.add(16 * t * a_rs + k0),
                        b.add(s * b_strip + k0 * ldb),
                        b_strip,
                        c.add(16 * t * ldc + 16 * s),
                    )
                };
                t += rows;
            }
            s += cols;
        }
        k0 += kc;
    }
}

/// Releases the tiles when dropped (`tilerelease`), so that a thread
/// carries no tile state across context switches once a product is done,
/// even one left by a panic.
#[cfg(target_arch = "x86_64")]
struct ReleaseTiles;

#[cfg(target_arch = "x86_64")]
impl Drop for ReleaseTiles {
    fn drop(&mut self) {
        // SAFETY: made only after `ldtilecfg` on a CPU with the tiles
        // (`gemm_amx`'s contract); returns them to their initial state.
        unsafe {
            asm!("tilerelease", out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _, out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _, options(nostack, nomem))
        };
    }
}

/// One pass of [`gemm_amx`] over a block of `C`.
#[cfg(target_arch = "x86_64")]
struct Block {
    k: usize,
    a_rs: usize,
    ldb: usize,
    ldc: usize,
    accumulate: bool,
}

#[cfg(target_arch = "x86_64")]
impl Block {
    /// `C (+)= A B` for `rows` x `cols` tiles of `C` (each 1 or 2) over
    /// `k` pairs (a multiple of 16): `a` at the block's first row, `b` at
    /// its first strip (the second `b_strip` further), `c` at its corner.
    ///
    /// # Safety
    /// Tiles configured as in [`gemm_amx`]; the operands cover the block.
    unsafe fn run(
        &self,
        (rows, cols): (usize, usize),
        a: *const u32,
        b: *const u32,
        b_strip: usize,
        c: *mut f32,
    ) {
        let (a_stride, b_stride, c_stride) = (4 * self.a_rs, 4 * self.ldb, 4 * self.ldc);
        // the four tiles of C: (row tile, strip) = (0,0), (0,1), (1,0), (1,1)
        // SAFETY (whole body): every address is inside the block (the
        // caller's contract); tile numbers follow the configuration.
        unsafe {
            // an instruction on each tile of C in the block: `tmm` + its number
            macro_rules! on_c_tiles {
                ($pre:literal, $post:literal, $($opt:ident),*) => {
                    for (tile, r, s) in [(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)] {
                        if r < rows && s < cols {
                            let p = c.add(16 * r * self.ldc + 16 * s);
                            match tile {
                                0 => asm!(concat!($pre, "0", $post), p = in(reg) p, s = in(reg) c_stride, out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _, out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _, options($($opt),*)),
                                1 => asm!(concat!($pre, "1", $post), p = in(reg) p, s = in(reg) c_stride, out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _, out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _, options($($opt),*)),
                                2 => asm!(concat!($pre, "2", $post), p = in(reg) p, s = in(reg) c_stride, out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _, out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _, options($($opt),*)),
                                _ => asm!(concat!($pre, "3", $post), p = in(reg) p, s = in(reg) c_stride, out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _, out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _, options($($opt),*)),
                            }
                        }
                    }
                };
            }
            if self.accumulate {
                on_c_tiles!("tileloadd tmm", ", [{p} + {s}*1]", nostack, readonly);
            } else {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _, out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _, options(nostack, nomem)
                );
            }
            // the second row tile and strip: not addressed when the block has none
            let (a1, b1) = (a.wrapping_add(16 * self.a_rs), b.wrapping_add(b_strip));
            for p in (0..self.k).step_by(16) {
                let (a0p, a1p) = (a.add(p), a1.wrapping_add(p));
                let (b0p, b1p) = (b.add(p * self.ldb), b1.wrapping_add(p * self.ldb));
                match (rows, cols) {
                    (2, 2) => asm!(
                        "tileloadd tmm4, [{a0} + {as_}*1]",
                        "tileloadd tmm6, [{b0} + {bs}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {bs}*1]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tileloadd tmm5, [{a1} + {as_}*1]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0p, a1 = in(reg) a1p, b0 = in(reg) b0p, b1 = in(reg) b1p,
                        as_ = in(reg) a_stride, bs = in(reg) b_stride,
                        out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _, out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _, options(nostack, readonly),
                    ),
                    (2, _) => asm!(
                        "tileloadd tmm4, [{a0} + {as_}*1]",
                        "tileloadd tmm6, [{b0} + {bs}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm5, [{a1} + {as_}*1]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        a0 = in(reg) a0p, a1 = in(reg) a1p, b0 = in(reg) b0p,
                        as_ = in(reg) a_stride, bs = in(reg) b_stride,
                        out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _, out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _, options(nostack, readonly),
                    ),
                    (_, 2) => asm!(
                        "tileloadd tmm4, [{a0} + {as_}*1]",
                        "tileloadd tmm6, [{b0} + {bs}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {bs}*1]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        a0 = in(reg) a0p, b0 = in(reg) b0p, b1 = in(reg) b1p,
                        as_ = in(reg) a_stride, bs = in(reg) b_stride,
                        out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _, out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _, options(nostack, readonly),
                    ),
                    _ => asm!(
                        "tileloadd tmm4, [{a0} + {as_}*1]",
                        "tileloadd tmm6, [{b0} + {bs}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        a0 = in(reg) a0p, b0 = in(reg) b0p,
                        as_ = in(reg) a_stride, bs = in(reg) b_stride,
                        out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _, out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _, options(nostack, readonly),
                    ),
                }
            }
            on_c_tiles!("tilestored [{p} + {s}*1], tmm", "", nostack);
        }
    }
}
