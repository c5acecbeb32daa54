//! Index arithmetic the kernels are launched with: row-major strides, numpy
//! broadcasting, merging axes that every operand walks contiguously (so that
//! strided kernels see at most [`MAX_RANK`] axes and do less division), and the
//! fixed-size `Dims` arrays passed by value. Pure functions, shared by every op.

pub(crate) use crate::exec::shapes::{axis_index, broadcast_shape, sh};

/// Most axes a strided kernel handles (the `Dims` struct of `kernels/common.cu`).
pub(crate) const MAX_RANK: usize = 8;

/// Row-major strides (in elements) of a contiguous tensor of shape `dims`.
pub(crate) fn contiguous_strides(dims: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1] as i64;
    }
    s
}

/// Strides that read a contiguous tensor of shape `src` as if broadcast to `dst`
/// (aligned on the right; broadcast axes get stride 0), or `None` when `src` does
/// not broadcast to exactly `dst`.
pub(crate) fn broadcast_strides(src: &[usize], dst: &[usize]) -> Option<Vec<i64>> {
    if src.len() > dst.len() {
        return None;
    }
    let own = contiguous_strides(src);
    let lead = dst.len() - src.len();
    let mut out = vec![0i64; dst.len()];
    for (i, &d) in dst.iter().enumerate().skip(lead) {
        let s = src[i - lead];
        if s == d {
            out[i] = if d == 1 { 0 } else { own[i - lead] };
        } else if s == 1 {
            out[i] = 0;
        } else {
            return None;
        }
    }
    Some(out)
}

/// Drops size-1 axes and merges neighbouring axes that every stride set walks as
/// one (outer stride = inner stride · inner size), keeping the element order.
/// Returns the new dims and one stride set per input set.
pub(crate) fn collapse(dims: &[usize], strides: &[&[i64]]) -> (Vec<usize>, Vec<Vec<i64>>) {
    let mut out_dims: Vec<usize> = Vec::new();
    let mut out_strides: Vec<Vec<i64>> = vec![Vec::new(); strides.len()];
    for (axis, &d) in dims.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let mergeable = match out_dims.last() {
            Some(_) => strides
                .iter()
                .zip(&out_strides)
                .all(|(s, o)| o.last().is_some_and(|&outer| outer == s[axis] * d as i64)),
            None => false,
        };
        if mergeable {
            if let Some(last) = out_dims.last_mut() {
                *last *= d;
            }
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                if let Some(last) = o.last_mut() {
                    *last = s[axis];
                }
            }
        } else {
            out_dims.push(d);
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                o.push(s[axis]);
            }
        }
    }
    (out_dims, out_strides)
}

/// A shape or stride list as the fixed array kernels take; errors past
/// [`MAX_RANK`] axes.
pub(crate) fn dims_array<T: Copy + Into<i64>>(v: &[T]) -> Result<[i64; MAX_RANK], String> {
    if v.len() > MAX_RANK {
        return Err(format!(
            "{} axes remain after merging contiguous ones; GPU kernels handle at most {MAX_RANK}",
            v.len()
        ));
    }
    let mut a = [0i64; MAX_RANK];
    for (slot, &x) in a.iter_mut().zip(v) {
        *slot = x.into();
    }
    Ok(a)
}

/// `dims` as i64 (for [`dims_array`]).
pub(crate) fn as_i64(dims: &[usize]) -> Vec<i64> {
    dims.iter().map(|&d| d as i64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_strides_are_row_major() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(contiguous_strides(&[5]), vec![1]);
        assert!(contiguous_strides(&[]).is_empty());
    }

    #[test]
    fn broadcast_strides_zero_the_repeated_axes() {
        assert_eq!(broadcast_strides(&[3, 1], &[2, 3, 4]), Some(vec![0, 1, 0]));
        assert_eq!(
            broadcast_strides(&[2, 3, 4], &[2, 3, 4]),
            Some(vec![12, 4, 1])
        );
        assert_eq!(broadcast_strides(&[], &[2, 2]), Some(vec![0, 0]));
        assert_eq!(broadcast_strides(&[2], &[3]), None);
        assert_eq!(broadcast_strides(&[2, 2], &[2]), None);
    }

    /// Walks an index space and lists the offsets a stride set reads.
    fn offsets(dims: &[usize], strides: &[i64]) -> Vec<i64> {
        let n: usize = dims.iter().product();
        (0..n)
            .map(|mut i| {
                let mut off = 0;
                for d in (0..dims.len()).rev() {
                    off += (i % dims[d]) as i64 * strides[d];
                    i /= dims[d];
                }
                off
            })
            .collect()
    }

    #[test]
    fn collapsing_keeps_every_offset_in_order() {
        let cases: Vec<(Vec<usize>, Vec<Vec<i64>>)> = vec![
            (vec![2, 3, 4], vec![vec![12, 4, 1], vec![0, 1, 0]]),
            (
                vec![2, 1, 3, 4],
                vec![vec![12, 12, 4, 1], vec![12, 99, 4, 1]],
            ),
            (vec![4, 3, 2], vec![vec![1, 4, 12]]),
            (vec![2, 3, 4], vec![vec![-12, 4, 1]]),
            (vec![1, 1], vec![vec![5, 7]]),
        ];
        for (dims, sets) in cases {
            let refs: Vec<&[i64]> = sets.iter().map(Vec::as_slice).collect();
            let (cd, cs) = collapse(&dims, &refs);
            assert_eq!(cd.iter().product::<usize>(), dims.iter().product::<usize>());
            for (orig, new) in sets.iter().zip(&cs) {
                assert_eq!(offsets(&dims, orig), offsets(&cd, new), "{dims:?} {orig:?}");
            }
        }
        let (d, s) = collapse(&[2, 3, 4], &[&[12, 4, 1]]);
        assert_eq!((d, s), (vec![24], vec![vec![1]]));
        let (d, _) = collapse(&[4, 3, 2], &[&[1, 4, 12]]);
        assert_eq!(d, vec![4, 3, 2]);
    }

    #[test]
    fn dims_arrays_pad_and_refuse_too_many_axes() {
        assert_eq!(dims_array(&[3i64, 4]).unwrap(), [3, 4, 0, 0, 0, 0, 0, 0]);
        assert!(dims_array(&[1i64; 9]).unwrap_err().contains("at most 8"));
    }
}
