//! The AVX2 + FMA micro-kernel: one `MR × NR` = 6 × 16 tile of the product from a
//! packed A strip (`kc` steps of 6 values) and a packed B strip (`kc` steps of 16).
//! Twelve accumulators, two B vectors and one broadcast A value fill 15 of the 16
//! ymm registers, which is what keeps both FMA pipes busy on Zen and Skylake alike.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of a tile.
pub(super) const MR: usize = 6;
/// Columns of a tile: two 8-lane vectors.
pub(super) const NR: usize = 16;

/// How a tile lands in C.
#[derive(Clone, Copy)]
pub(super) enum Store {
    /// `C = alpha·AB`, ignoring what C held.
    Overwrite,
    /// `C = beta·C + alpha·AB`.
    Accumulate(f32),
}

/// `C[0..6, 0..16] (op) alpha·Ap·Bp` where C has row stride `rsc`.
///
/// # Safety
/// The CPU must have AVX2 and FMA. `a` must hold `6·kc` and `b` `16·kc` readable
/// floats, and `c` must be valid for reads and writes of 6 rows of 16 floats with
/// row stride `rsc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rsc: usize,
    alpha: f32,
    store: Store,
) {
    // SAFETY: the caller guarantees the extents of `a`, `b` and `c` stated above and
    // the CPU features this function is compiled for.
    unsafe {
        // C's tile is needed only at the end: fetch it now, behind the products.
        for i in 0..MR {
            _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc + NR - 1) as *const i8);
        }
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            // The A strip streams from L2: ask for it a few steps ahead.
            _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(64) as *const i8);
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*a.add(i));
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
        let va = _mm256_set1_ps(alpha);
        for (i, row) in acc.iter().enumerate() {
            let dst = c.add(i * rsc);
            for (h, &v) in row.iter().enumerate() {
                let p = dst.add(8 * h);
                let scaled = _mm256_mul_ps(v, va);
                let out = match store {
                    Store::Overwrite => scaled,
                    Store::Accumulate(beta) => {
                        _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(p), scaled)
                    }
                };
                _mm256_storeu_ps(p, out);
            }
        }
    }
}

/// A tile that C holds only `mr × nr` of (the bottom and right edges): the full
/// tile is computed into a scratch tile and the valid part stored.
///
/// # Safety
/// As for [`tile`], except that `c` need only be valid for `mr` rows of `nr` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn edge_tile(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rsc: usize,
    (mr, nr): (usize, usize),
    alpha: f32,
    store: Store,
) {
    let mut scratch = [0f32; MR * NR];
    // SAFETY: `scratch` is a full 6 × 16 tile with row stride NR; the packed strips
    // are the caller's, as for `tile`.
    unsafe { tile(kc, a, b, scratch.as_mut_ptr(), NR, alpha, Store::Overwrite) };
    for i in 0..mr {
        for j in 0..nr {
            let t = scratch[i * NR + j];
            // SAFETY: i < mr and j < nr, inside the part of C the caller vouches for.
            unsafe {
                let p = c.add(i * rsc + j);
                *p = match store {
                    Store::Overwrite => t,
                    // The same fused rounding as the vector store of `tile`.
                    Store::Accumulate(beta) => beta.mul_add(*p, t),
                };
            }
        }
    }
}
