//! Packing of the operands into the strips the micro-kernel reads: A in strips of
//! 6 rows (`kc` steps of 6 values), B in strips of 16 columns (`kc` steps of 16),
//! both zero-padded at the edges. Packing reads the operands through their strides,
//! so a transposed view costs nothing beyond this copy. The four layouts a training
//! step meets each get a loop whose reads are contiguous: B row-major is copied
//! row by row, B column-major (a transposed weight) and A row-major are transposed
//! 8 × 8 in registers, A column-major is copied six values per step; any other
//! stride takes the element-by-element path.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::kernel::{MR, NR};

/// A matrix read through raw strides: element (i, j) at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(super) struct View {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: a View only reads, and the caller keeps the buffer it points into alive
// and unmodified for the whole product.
unsafe impl Send for View {}
// SAFETY: as above.
unsafe impl Sync for View {}

impl View {
    /// The same elements seen transposed.
    fn transposed(self) -> View {
        View {
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// A pointer to element (i, j).
    ///
    /// # Safety
    /// (i, j) must lie inside the matrix the view was checked for.
    #[inline(always)]
    unsafe fn at(&self, i: usize, j: usize) -> *const f32 {
        // SAFETY: the caller's bound on (i, j).
        unsafe { self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }
    }
}

/// Walks a block's strips, each `width` lines of `kc` steps, over the `len` lines
/// from `start`; the last strip is zeroed first where it is partial. `pack` writes
/// one strip given its first line and how many lines it holds.
fn for_each_strip(
    dst: &mut [f32],
    width: usize,
    kc: usize,
    (start, len): (usize, usize),
    mut pack: impl FnMut(&mut [f32], usize, usize),
) {
    for (s, strip) in dst
        .chunks_mut(width * kc)
        .take(len.div_ceil(width))
        .enumerate()
    {
        let first = start + s * width;
        let w = width.min(start + len - first);
        if w < width {
            strip.fill(0.0);
        }
        pack(strip, first, w);
    }
}

/// Packs rows `r0..r0 + rows` and columns `c0..c0 + kc` of A into `dst`, strip by
/// strip; `dst` holds at least `ceil(rows / MR)·MR·kc` floats.
///
/// # Safety
/// Every packed element must lie inside the matrix `a` views, and the CPU must have
/// AVX2 (the row-major path transposes in ymm registers).
pub(super) unsafe fn pack_a(
    dst: &mut [f32],
    a: View,
    (r0, rows): (usize, usize),
    (c0, kc): (usize, usize),
) {
    for_each_strip(dst, MR, kc, (r0, rows), |strip, first, mr| {
        // SAFETY: rows first..first + mr and columns c0..c0 + kc are inside `a`; the
        // caller vouches for AVX2.
        unsafe {
            if a.rs == 1 {
                // Column-major: the strip's six values of one step are adjacent.
                for (p, step) in strip.chunks_exact_mut(MR).enumerate() {
                    let src = std::slice::from_raw_parts(a.at(first, c0 + p), mr);
                    step[..mr].copy_from_slice(src);
                }
            } else if a.cs == 1 {
                // Row-major: walk the six rows side by side.
                let rows: [*const f32; MR] =
                    std::array::from_fn(|i| a.at(first + i.min(mr - 1), c0));
                let done = if mr == MR {
                    pack_a_rows(strip, &rows, kc)
                } else {
                    0
                };
                for p in done..kc {
                    for i in 0..mr {
                        strip[p * MR + i] = *rows[i].add(p);
                    }
                }
            } else {
                gather(strip, MR, a.transposed(), (c0, kc), (first, mr));
            }
        }
    });
}

/// Any strides, one value at a time: `strip[p·width + j] = v(p0 + p, first + j)`
/// for the `kc` steps and `w` columns (an A strip reads A's transpose).
///
/// # Safety
/// Every element read must lie inside the matrix `v` views.
unsafe fn gather(
    strip: &mut [f32],
    width: usize,
    v: View,
    (p0, kc): (usize, usize),
    (first, w): (usize, usize),
) {
    for p in 0..kc {
        for j in 0..w {
            // SAFETY: the caller's bounds.
            strip[p * width + j] = unsafe { *v.at(p0 + p, first + j) };
        }
    }
}

/// The steps of a full A strip from six row-major rows, eight steps at a time
/// through an 8 × 8 register transpose (two rows of zeros, not stored); returns
/// how many steps it packed, a multiple of 8.
///
/// # Safety
/// Each row must hold `kc` readable floats; the strip holds `MR·kc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_a_rows(strip: &mut [f32], rows: &[*const f32; MR], kc: usize) -> usize {
    let full = kc / 8 * 8;
    // SAFETY: reads stay in the first `full` floats of each row; each step's six
    // floats go out as four and two (masked stores are microcoded on Zen), at step
    // p + q < full, inside the strip.
    unsafe {
        for p in (0..full).step_by(8) {
            let v: [__m256; 8] = std::array::from_fn(|i| {
                if i < MR {
                    _mm256_loadu_ps(rows[i].add(p))
                } else {
                    _mm256_setzero_ps()
                }
            });
            for (q, step) in transpose8(v).iter().enumerate() {
                let dst = strip.as_mut_ptr().add((p + q) * MR);
                _mm_storeu_ps(dst, _mm256_castps256_ps128(*step));
                let high = _mm_castps_si128(_mm256_extractf128_ps::<1>(*step));
                _mm_storel_epi64(dst.add(4).cast::<__m128i>(), high);
            }
        }
    }
    full
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pack_a_rows(_: &mut [f32], _: &[*const f32; MR], _: usize) -> usize {
    0
}

/// Packs rows `p0..p0 + kc` and columns `c0..c0 + cols` of B into `dst`, strip by
/// strip; `dst` holds at least `ceil(cols / NR)·NR·kc` floats.
///
/// # Safety
/// Every packed element must lie inside the matrix `b` views, and the CPU must have
/// AVX2 (the column-major path transposes in ymm registers).
pub(super) unsafe fn pack_b(
    dst: &mut [f32],
    b: View,
    (p0, kc): (usize, usize),
    (c0, cols): (usize, usize),
) {
    for_each_strip(dst, NR, kc, (c0, cols), |strip, first, nr| {
        // SAFETY: rows p0..p0 + kc and columns first..first + nr are inside `b`; the
        // caller vouches for AVX2.
        unsafe {
            if b.cs == 1 {
                for (p, step) in strip.chunks_exact_mut(NR).enumerate() {
                    let src = std::slice::from_raw_parts(b.at(p0 + p, first), nr);
                    step[..nr].copy_from_slice(src);
                }
            } else if b.rs == 1 {
                pack_b_columns(strip, b, (p0, kc), (first, nr));
            } else {
                gather(strip, NR, b, (p0, kc), (first, nr));
            }
        }
    });
}

/// One B strip from a column-major B (each column contiguous along k): blocks of
/// 8 columns × 8 steps are transposed in registers; the ragged ends go one value
/// at a time.
///
/// # Safety
/// As for [`pack_b`], with `b.rs == 1`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_b_columns(
    strip: &mut [f32],
    b: View,
    (p0, kc): (usize, usize),
    (first, nr): (usize, usize),
) {
    let full_p = kc / 8 * 8;
    let full_j = nr / 8 * 8;
    // SAFETY: every pointer read is at (p0 + p, first + j) with p < kc and j < nr;
    // every write is inside the strip of NR·kc floats.
    unsafe {
        for j in (0..full_j).step_by(8) {
            let cols: [*const f32; 8] = std::array::from_fn(|t| b.at(p0, first + j + t));
            for p in (0..full_p).step_by(8) {
                let v: [__m256; 8] = std::array::from_fn(|t| _mm256_loadu_ps(cols[t].add(p)));
                let t = transpose8(v);
                for (q, row) in t.iter().enumerate() {
                    _mm256_storeu_ps(strip.as_mut_ptr().add((p + q) * NR + j), *row);
                }
            }
        }
        for j in 0..nr {
            let from = if j < full_j { full_p } else { 0 };
            for p in from..kc {
                strip[p * NR + j] = *b.at(p0 + p, first + j);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pack_b_columns(strip: &mut [f32], b: View, k: (usize, usize), cols: (usize, usize)) {
    // SAFETY: the caller's bounds.
    unsafe { gather(strip, NR, b, k, cols) }
}

/// The transpose of an 8 × 8 block held as eight row vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    // Pairs of rows interleaved, then quads, then the 128-bit halves swapped.
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}
