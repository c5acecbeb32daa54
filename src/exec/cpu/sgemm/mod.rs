//! Our own f32 matrix product for CPUs with AVX2 and FMA but no AVX-512, where the
//! `gemm` crate's kernels reach about 60 % of what MKL and OpenBLAS do on the
//! shapes of a training step. The layout is the classic one of BLIS and GotoBLAS:
//! B is packed in `KC × NC` blocks (shared by all threads, L3), A in `MC × KC`
//! blocks (one per task, L2), and a 6 × 16 register tile walks them (L1).
//!
//! Threads split C into one band of rows each (of columns when C has too few
//! rows), and every element's sum runs in the same `KC` blocks in the same order
//! whatever the split: results do not depend on `--threads`. Packing buffers are kept per
//! thread and reused, so a training step allocates nothing here after its first
//! products. `matmul::gemm_into` calls [`gemm`] when [`enabled`] and [`suits`]
//! say so; thin products and every other CPU keep the `gemm` crate.

mod kernel;
mod pack;

use std::cell::Cell;
use std::ops::Range;
use std::thread::LocalKey;

use rayon::prelude::*;

use kernel::{MR, NR, Store};
use pack::{View, pack_a, pack_b};

use super::simd::{self, Level};

/// Depth of a packed block: a 16-column B strip of this depth (24 KiB) stays in L1.
const KC: usize = 384;
/// Rows of a packed A block (216 KiB at full depth, in L2).
const MC: usize = 144;
/// Columns of a packed B block (4.5 MiB at full depth, in L3).
const NC: usize = 3072;

/// Whether products run through this module: on x86-64 CPUs whose widest level
/// (after `GLORA_SIMD`) is AVX2.
pub(crate) fn enabled() -> bool {
    cfg!(target_arch = "x86_64") && simd::level() == Level::Avx2
}

/// Whether an `m × k` by `k × n` product suits the packed layout. A product with
/// fewer than 16 rows or columns (a LoRA factor's, a matrix-vector product) pads
/// its strips with zeros and packs an operand it then reads only once: measured
/// on AVX2, the `gemm` crate runs those 1.3–13× faster, and these blocks 1.1–1.2×
/// faster on every full-size shape of a training step.
pub(crate) fn suits(m: usize, n: usize) -> bool {
    m >= 16 && n >= NR
}

/// Whether this CPU can run the kernel at all (AVX-512 CPUs can), for tests.
#[cfg(test)]
fn runnable() -> bool {
    cfg!(target_arch = "x86_64") && simd::detect() >= Level::Avx2
}

thread_local! {
    static A_BUF: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    static B_BUF: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// This thread's buffer, at least `len` long. Taking it out (rather than
/// borrowing) keeps a product that work stealing starts inside another on the same
/// thread from finding it in use: that one simply gets a fresh buffer.
fn take(buf: &'static LocalKey<Cell<Vec<f32>>>, len: usize) -> Vec<f32> {
    let mut v = buf.take();
    if v.len() < len {
        v.resize(len, 0.0);
    }
    v
}

fn give(buf: &'static LocalKey<Cell<Vec<f32>>>, v: Vec<f32>) {
    buf.set(v);
}

/// C's base pointer, shared by the tasks that each write their own part.
#[derive(Clone, Copy)]
struct Dst(*mut f32);
// SAFETY: tasks write disjoint parts of C, and the caller holds `&mut` to all of it
// for the duration of the product.
unsafe impl Send for Dst {}
// SAFETY: as above.
unsafe impl Sync for Dst {}

impl Dst {
    /// The element at `offset`; a method so that closures capture the whole `Dst`.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// One task's part of C: rows `rows` and columns `cols`.
#[derive(Clone, Debug, PartialEq)]
struct Part {
    rows: Range<usize>,
    cols: Range<usize>,
}

/// Splits C into `threads` parts of equal work: bands of whole row strips where
/// there are at least two strips per thread, else bands of whole column strips.
/// Each part runs the whole blocked product on its own, packing its own share of
/// B (or A), so the threads meet once per product and share nothing they write.
fn split(m: usize, n: usize, threads: usize) -> Vec<Part> {
    let band = |len: usize, unit: usize| -> Vec<Range<usize>> {
        let units = len.div_ceil(unit);
        let parts = threads.min(units).max(1);
        (0..parts)
            .map(|p| {
                let lo = (units * p / parts * unit).min(len);
                let hi = (units * (p + 1) / parts * unit).min(len);
                lo..hi
            })
            .collect()
    };
    if m.div_ceil(MR) >= 2 * threads || n.div_ceil(NR) < threads {
        band(m, MR)
            .into_iter()
            .map(|rows| Part { rows, cols: 0..n })
            .collect()
    } else {
        band(n, NR)
            .into_iter()
            .map(|cols| Part { rows: 0..m, cols })
            .collect()
    }
}

/// The blocked product of one part on the calling thread. `c` points at C's
/// element (0, 0) and C has row stride `ldc`.
///
/// # Safety
/// As for [`gemm`], with `part` inside the `m × n` product and no other thread
/// writing that part of C.
#[allow(clippy::too_many_arguments)]
unsafe fn blocked(
    c: Dst,
    ldc: usize,
    part: &Part,
    k: usize,
    a: View,
    b: View,
    alpha: f32,
    beta: Option<f32>,
) {
    let (m0, m) = (part.rows.start, part.rows.len());
    let (n0, n) = (part.cols.start, part.cols.len());
    let mut b_buf = take(&B_BUF, KC * n.min(NC).next_multiple_of(NR));
    let mut a_buf = take(&A_BUF, KC * m.min(MC).next_multiple_of(MR));
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let store = match (pc, beta) {
                (0, None) => Store::Overwrite,
                (0, Some(beta)) => Store::Accumulate(beta),
                _ => Store::Accumulate(1.0),
            };
            // SAFETY: rows pc..pc + kc and columns n0 + jc..n0 + jc + nc are inside B;
            // `enabled` vouched for AVX2.
            unsafe { pack_b(&mut b_buf, b, (pc, kc), (n0 + jc, nc)) };
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                // SAFETY: rows m0 + ic..m0 + ic + mc and columns pc..pc + kc are in A;
                // `enabled` vouched for AVX2.
                unsafe { pack_a(&mut a_buf, a, (m0 + ic, mc), (pc, kc)) };
                for (s, b_strip) in b_buf.chunks(NR * kc).take(nc.div_ceil(NR)).enumerate() {
                    let col = n0 + jc + s * NR;
                    let nr = NR.min(n0 + n - col);
                    for (r, a_strip) in a_buf.chunks(MR * kc).take(mc.div_ceil(MR)).enumerate() {
                        let row = m0 + ic + r * MR;
                        let mr = MR.min(m0 + m - row);
                        let dst = c.at(row * ldc + col);
                        // SAFETY: the tile (row..row + mr, col..col + nr) is inside this
                        // part of C; the strips hold MR·kc and NR·kc floats; `enabled`
                        // vouched for AVX2 and FMA.
                        #[cfg(target_arch = "x86_64")]
                        unsafe {
                            let (ap, bp) = (a_strip.as_ptr(), b_strip.as_ptr());
                            if mr == MR && nr == NR {
                                kernel::tile(kc, ap, bp, dst, ldc, alpha, store);
                            } else {
                                kernel::edge_tile(kc, ap, bp, dst, ldc, (mr, nr), alpha, store);
                            }
                        }
                    }
                }
            }
        }
    }
    give(&A_BUF, a_buf);
    give(&B_BUF, b_buf);
}

/// `C = beta·C + alpha·(A × B)` (or `C = alpha·(A × B)` with `beta` `None`) for an
/// `m × k` A and `k × n` B read through their strides, into the contiguous
/// row-major `m × n` C. `parallel` lets it use the rayon pool.
///
/// # Safety
/// [`enabled`] must have returned true; `c` must be `m·n` floats; every element of
/// A and B must lie inside the buffers their pointers point into; `m`, `n`, `k`
/// must be non-zero.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    c: &mut [f32],
    (m, n, k): (usize, usize, usize),
    (a, a_rs, a_cs): (*const f32, isize, isize),
    (b, b_rs, b_cs): (*const f32, isize, isize),
    alpha: f32,
    beta: Option<f32>,
    parallel: bool,
) {
    debug_assert_eq!(c.len(), m * n);
    let a = View {
        ptr: a,
        rs: a_rs,
        cs: a_cs,
    };
    let b = View {
        ptr: b,
        rs: b_rs,
        cs: b_cs,
    };
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let dst = Dst(c.as_mut_ptr());
    let parts = split(m, n, threads);
    // SAFETY: the parts tile C without overlap, each run by one task; the rest is
    // the caller's guarantee.
    let run = |p: &Part| unsafe { blocked(dst, n, p, k, a, b, alpha, beta) };
    if parts.len() > 1 {
        parts.par_iter().for_each(run);
    } else {
        parts.iter().for_each(run);
    }
}

#[cfg(test)]
mod tests;
