//! Strided views into flat buffers and the loops that walk them. A view names each
//! element by `offset + Σ index·stride`, so transposes, broadcasts (stride 0) and
//! reversed slices (negative strides) read their source in place. The kernels here
//! write contiguous row-major outputs, coalescing dimensions first so that the inner
//! loop runs over the longest contiguous stretch, and split large outputs into chunks
//! that rayon processes in parallel. Every view is bounds-checked when it is built,
//! so the loops cannot read outside their buffer.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::simd;

use super::value::{OpError, OpResult, sh};

/// Outputs with at least this many elements are computed in parallel.
pub(crate) const PAR_MIN_ELEMS: usize = 1 << 15;
/// Elements handed to one parallel task.
const CHUNK_ELEMS: usize = 1 << 14;

/// A read-only strided view of `data`.
#[derive(Clone, Debug)]
pub(crate) struct Strided<'a, T> {
    pub data: &'a [T],
    pub offset: isize,
    pub dims: Vec<usize>,
    pub strides: Vec<isize>,
}

impl<'a, T: Copy> Strided<'a, T> {
    /// A view after checking that every element it names lies inside `data`.
    pub fn new(
        data: &'a [T],
        offset: isize,
        dims: Vec<usize>,
        strides: Vec<isize>,
    ) -> OpResult<Self> {
        if dims.len() != strides.len() {
            return Err(OpError(format!(
                "view of rank {} given {} strides",
                dims.len(),
                strides.len()
            )));
        }
        let v = Strided {
            data,
            offset,
            dims,
            strides,
        };
        if v.numel() > 0 {
            let (lo, hi) = v.offset_range();
            if lo < 0 || hi >= data.len() as isize {
                return Err(OpError(format!(
                    "view {:?}/{:?}+{} reaches outside its buffer of {} elements",
                    v.dims,
                    v.strides,
                    v.offset,
                    data.len()
                )));
            }
        }
        Ok(v)
    }

    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    /// Smallest and largest offset the view reaches (only for non-empty views).
    fn offset_range(&self) -> (isize, isize) {
        let mut lo = self.offset;
        let mut hi = self.offset;
        for (&d, &s) in self.dims.iter().zip(&self.strides) {
            let span = (d as isize - 1) * s;
            if span < 0 {
                lo += span;
            } else {
                hi += span;
            }
        }
        (lo, hi)
    }

    /// The elements as one slice, when the view is row-major contiguous.
    pub fn as_slice(&self) -> Option<&'a [T]> {
        let n = self.numel();
        if n == 0 {
            return Some(&[]);
        }
        let mut expect = 1isize;
        for (&d, &s) in self.dims.iter().zip(&self.strides).rev() {
            if d != 1 && s != expect {
                return None;
            }
            expect *= d as isize;
        }
        let start = self.offset as usize;
        self.data.get(start..start + n)
    }

    /// The view broadcast to `dims` with numpy rules (size-1 and missing leading
    /// axes get stride 0).
    pub fn broadcast_to(&self, dims: &[usize]) -> OpResult<Strided<'a, T>> {
        if dims.len() < self.rank() {
            return Err(OpError(format!(
                "cannot broadcast {} to {}",
                sh(&self.dims),
                sh(dims)
            )));
        }
        let lead = dims.len() - self.rank();
        let mut strides = vec![0isize; dims.len()];
        for (i, (&d, &s)) in self.dims.iter().zip(&self.strides).enumerate() {
            let want = dims[lead + i];
            if d == want {
                strides[lead + i] = if d == 1 { 0 } else { s };
            } else if d == 1 {
                strides[lead + i] = 0;
            } else {
                return Err(OpError(format!(
                    "cannot broadcast {} to {}",
                    sh(&self.dims),
                    sh(dims)
                )));
            }
        }
        Ok(Strided {
            data: self.data,
            offset: self.offset,
            dims: dims.to_vec(),
            strides,
        })
    }

    /// The view with its axes reordered: axis i of the result is axis `perm[i]`.
    pub fn permuted(&self, perm: &[usize]) -> Strided<'a, T> {
        Strided {
            data: self.data,
            offset: self.offset,
            dims: perm.iter().map(|&p| self.dims[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
        }
    }

    /// The elements in row-major order, copied only when the view is not contiguous.
    pub fn to_contiguous(&self) -> std::borrow::Cow<'a, [T]>
    where
        T: Send + Sync,
    {
        match self.as_slice() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(map1(&self.dims, self, |x| x)),
        }
    }
}

pub(crate) use crate::exec::shapes::broadcast_shape;

/// Walks the rows of an output shape for `N` input views: after coalescing, the
/// last dimension is the inner loop and every other index is a row.
pub(crate) struct Walker<const N: usize> {
    outer: Vec<usize>,
    outer_strides: [Vec<isize>; N],
    base: [isize; N],
    pub inner: usize,
    pub inner_strides: [isize; N],
}

impl<const N: usize> Walker<N> {
    pub fn new(dims: &[usize], strides: [&[isize]; N], base: [isize; N]) -> Walker<N> {
        let mut cd: Vec<usize> = Vec::new();
        let mut cs: [Vec<isize>; N] = std::array::from_fn(|_| Vec::new());
        for (i, &d) in dims.iter().enumerate() {
            if d == 1 {
                continue;
            }
            let merge = !cd.is_empty()
                && (0..N).all(|k| {
                    let last = cs[k].len() - 1;
                    cs[k][last] == strides[k][i] * d as isize
                });
            if merge {
                let last = cd.len() - 1;
                cd[last] *= d;
                for k in 0..N {
                    let l = cs[k].len() - 1;
                    cs[k][l] = strides[k][i];
                }
            } else {
                cd.push(d);
                for k in 0..N {
                    cs[k].push(strides[k][i]);
                }
            }
        }
        if cd.is_empty() {
            cd.push(1);
            for s in cs.iter_mut() {
                s.push(0);
            }
        }
        let inner = cd.pop().unwrap_or(1);
        let inner_strides = std::array::from_fn(|k| cs[k].pop().unwrap_or(0));
        Walker {
            outer: cd,
            outer_strides: cs,
            base,
            inner,
            inner_strides,
        }
    }

    /// Offsets of the first element of row `row` in each view.
    pub fn row_offsets(&self, mut row: usize) -> [isize; N] {
        let mut off = self.base;
        for i in (0..self.outer.len()).rev() {
            let d = self.outer[i];
            let idx = (row % d) as isize;
            row /= d;
            for (k, o) in off.iter_mut().enumerate() {
                *o += idx * self.outer_strides[k][i];
            }
        }
        off
    }

    /// Calls `kernel(offsets, out_segment)` for stretches of the output that lie
    /// within one row, in parallel when the output is large. `offsets` are those of
    /// the segment's first element; consecutive elements advance by `inner_strides`.
    /// The segments tile `out` exactly: every element is handed out once.
    pub fn for_segments<R: Send>(
        &self,
        out: &mut [MaybeUninit<R>],
        kernel: impl Fn([isize; N], &mut [MaybeUninit<R>]) + Sync,
    ) {
        let inner = self.inner.max(1);
        let run = |start: usize, chunk: &mut [MaybeUninit<R>]| {
            let mut done = 0;
            while done < chunk.len() {
                let pos = start + done;
                let (row, col) = (pos / inner, pos % inner);
                let len = (inner - col).min(chunk.len() - done);
                let mut off = self.row_offsets(row);
                for (k, o) in off.iter_mut().enumerate() {
                    *o += col as isize * self.inner_strides[k];
                }
                kernel(off, &mut chunk[done..done + len]);
                done += len;
            }
        };
        if out.len() >= PAR_MIN_ELEMS {
            out.par_chunks_mut(CHUNK_ELEMS)
                .enumerate()
                .for_each(|(i, c)| run(i * CHUNK_ELEMS, c));
        } else {
            run(0, out);
        }
    }
}

/// A vector of `n` elements produced by a walker kernel that writes each element
/// exactly once; no time is spent zeroing memory that is overwritten anyway.
fn filled<R: Send, const N: usize>(
    n: usize,
    w: &Walker<N>,
    kernel: impl Fn([isize; N], &mut [MaybeUninit<R>]) + Sync,
) -> Vec<R> {
    let mut v: Vec<R> = Vec::with_capacity(n);
    w.for_segments(&mut v.spare_capacity_mut()[..n], kernel);
    // SAFETY: `for_segments` hands every one of the n elements to `kernel` exactly
    // once, and each kernel below writes every element of its segment.
    unsafe { v.set_len(n) };
    v
}

/// `f` applied to every element of `a` (already shaped `dims`), row-major out.
pub(crate) fn map1<A, R>(dims: &[usize], a: &Strided<A>, f: impl Fn(A) -> R + Sync) -> Vec<R>
where
    A: Copy + Sync,
    R: Copy + Send,
{
    let n: usize = dims.iter().product();
    if n == 0 {
        return Vec::new();
    }
    let w = Walker::new(dims, [&a.strides], [a.offset]);
    let [sa] = w.inner_strides;
    filled(n, &w, |[oa], seg| {
        let len = seg.len();
        if sa == 1 {
            let oa = oa as usize;
            simd::map_slice(seg, &a.data[oa..oa + len], &f);
        } else if sa == 0 {
            let y = f(a.data[oa as usize]);
            seg.iter_mut().for_each(|o| {
                o.write(y);
            });
        } else {
            for (i, o) in seg.iter_mut().enumerate() {
                o.write(f(a.data[(oa + i as isize * sa) as usize]));
            }
        }
    })
}

/// `f` applied elementwise to `a` and `b` (both already broadcast to `dims`).
pub(crate) fn map2<A, B, R>(
    dims: &[usize],
    a: &Strided<A>,
    b: &Strided<B>,
    f: impl Fn(A, B) -> R + Sync,
) -> Vec<R>
where
    A: Copy + Sync,
    B: Copy + Sync,
    R: Copy + Send,
{
    let n: usize = dims.iter().product();
    if n == 0 {
        return Vec::new();
    }
    let w = Walker::new(dims, [&a.strides, &b.strides], [a.offset, b.offset]);
    let [sa, sb] = w.inner_strides;
    filled(n, &w, |[oa, ob], seg| {
        let (ua, ub) = (oa as usize, ob as usize);
        let len = seg.len();
        match (sa, sb) {
            (1, 1) => simd::zip_slices(seg, &a.data[ua..ua + len], &b.data[ub..ub + len], &f),
            (1, 0) => {
                let y = b.data[ub];
                simd::map_slice(seg, &a.data[ua..ua + len], &|x| f(x, y));
            }
            (0, 1) => {
                let x = a.data[ua];
                simd::map_slice(seg, &b.data[ub..ub + len], &|y| f(x, y));
            }
            _ => {
                for (i, o) in seg.iter_mut().enumerate() {
                    let x = a.data[(oa + i as isize * sa) as usize];
                    let y = b.data[(ob + i as isize * sb) as usize];
                    o.write(f(x, y));
                }
            }
        }
    })
}

/// `f` applied elementwise to three views already broadcast to `dims`.
pub(crate) fn map3<A, B, C, R>(
    dims: &[usize],
    a: &Strided<A>,
    b: &Strided<B>,
    c: &Strided<C>,
    f: impl Fn(A, B, C) -> R + Sync,
) -> Vec<R>
where
    A: Copy + Sync,
    B: Copy + Sync,
    C: Copy + Sync,
    R: Copy + Send,
{
    let n: usize = dims.iter().product();
    if n == 0 {
        return Vec::new();
    }
    let w = Walker::new(
        dims,
        [&a.strides, &b.strides, &c.strides],
        [a.offset, b.offset, c.offset],
    );
    let [sa, sb, sc] = w.inner_strides;
    filled(n, &w, |[oa, ob, oc], seg| {
        for (i, o) in seg.iter_mut().enumerate() {
            let i = i as isize;
            o.write(f(
                a.data[(oa + i * sa) as usize],
                b.data[(ob + i * sb) as usize],
                c.data[(oc + i * sc) as usize],
            ));
        }
    })
}

/// Applies `f` to each row: `data` holds rows of `in_len` elements and `out` the
/// matching rows of `out_len`; rows are spread over threads when there is enough work.
pub(crate) fn for_rows<T: Sync, R: Send>(
    data: &[T],
    in_len: usize,
    out: &mut [R],
    out_len: usize,
    f: impl Fn(&[T], &mut [R]) + Sync,
) {
    if out_len == 0 {
        return;
    }
    let rows = out.len() / out_len;
    let row = |r: usize| -> &[T] {
        if in_len == 0 {
            &[]
        } else {
            &data[r * in_len..(r + 1) * in_len]
        }
    };
    let work = rows * (in_len + out_len);
    if work >= PAR_MIN_ELEMS && rows > 1 {
        let rows_per_task = (CHUNK_ELEMS / (in_len + out_len)).max(1);
        out.par_chunks_mut(rows_per_task * out_len)
            .enumerate()
            .for_each(|(t, o)| {
                for (i, orow) in o.chunks_mut(out_len).enumerate() {
                    f(row(t * rows_per_task + i), orow);
                }
            });
    } else {
        for (r, orow) in out.chunks_mut(out_len).enumerate() {
            f(row(r), orow);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Element `idx` of a view by the definition offset + Σ index·stride.
    fn at<T: Copy>(v: &Strided<T>, idx: &[usize]) -> T {
        let off: isize = v.offset
            + idx
                .iter()
                .zip(&v.strides)
                .map(|(&i, &s)| i as isize * s)
                .sum::<isize>();
        v.data[off as usize]
    }

    fn indices(dims: &[usize]) -> Vec<Vec<usize>> {
        let n: usize = dims.iter().product();
        (0..n)
            .map(|mut f| {
                let mut idx = vec![0; dims.len()];
                for i in (0..dims.len()).rev() {
                    idx[i] = f % dims[i];
                    f /= dims[i];
                }
                idx
            })
            .collect()
    }

    #[test]
    fn map2_follows_the_view_definition_for_mixed_strides() {
        // a: a transposed [4,3,5] block of a larger buffer; b: a reversed, broadcast
        // column. Sizes cover both the sequential and the parallel path.
        for scale in [1usize, 600] {
            let (d0, d1, d2) = (4 * scale, 3, 5);
            let data: Vec<f32> = (0..d0 * d1 * d2 + 7).map(|i| i as f32).collect();
            let a = Strided::new(
                &data,
                7,
                vec![d0, d1, d2],
                vec![1, (d0 * d2) as isize, d0 as isize],
            )
            .unwrap();
            let col: Vec<f32> = (0..d1).map(|i| -(i as f32) * 1000.0).collect();
            let b = Strided::new(&col, (d1 - 1) as isize, vec![d1, 1], vec![-1, 0]).unwrap();
            let dims = [d0, d1, d2];
            let bb = b.broadcast_to(&dims).unwrap();
            let got = map2(&dims, &a, &bb, |x, y| x + y);
            let want: Vec<f32> = indices(&dims)
                .iter()
                .map(|i| at(&a, i) + at(&bb, i))
                .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn views_outside_their_buffer_are_rejected() {
        let data = [0f32; 6];
        assert!(Strided::new(&data, 0, vec![2, 3], vec![3, 1]).is_ok());
        assert!(Strided::new(&data, 1, vec![2, 3], vec![3, 1]).is_err());
        assert!(Strided::new(&data, 0, vec![2, 3], vec![-3, 1]).is_err());
        assert!(Strided::new(&data, 3, vec![2, 3], vec![-3, 1]).is_ok());
        let v = Strided::new(&data, 0, vec![2, 3], vec![3, 1]).unwrap();
        assert!(v.broadcast_to(&[2, 2, 3]).is_ok());
        assert!(v.broadcast_to(&[3, 3]).is_err());
        assert!(v.broadcast_to(&[3]).is_err());
    }
}
