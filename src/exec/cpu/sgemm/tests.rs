//! The packed product against an f64 triple loop, over edge sizes, depths past
//! one `KC` block, widths past one `NC` block, transposed and padded operands,
//! every store mode, and thread counts (whose results must agree bit for bit).

use super::*;

/// A matrix in a buffer with its strides, filled with values of mixed sign.
struct Mat {
    data: Vec<f32>,
    rs: isize,
    cs: isize,
}

impl Mat {
    /// `rows × cols`, stored transposed when `t`, with `pad` unused floats per line.
    fn new(rows: usize, cols: usize, t: bool, pad: usize, seed: u32) -> Mat {
        let (lines, per) = if t { (cols, rows) } else { (rows, cols) };
        let stride = per + pad;
        let data = (0..lines * stride)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        let (rs, cs) = if t {
            (1, stride as isize)
        } else {
            (stride as isize, 1)
        };
        Mat { data, rs, cs }
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[(i as isize * self.rs + j as isize * self.cs) as usize]
    }

    fn raw(&self) -> (*const f32, isize, isize) {
        (self.data.as_ptr(), self.rs, self.cs)
    }
}

fn run(
    c: &mut [f32],
    mnk: (usize, usize, usize),
    a: &Mat,
    b: &Mat,
    alpha: f32,
    beta: Option<f32>,
    par: bool,
) {
    // SAFETY: the test only runs where the CPU has AVX2 and FMA, `c` is m·n, and the
    // matrices were built with exactly these extents.
    unsafe { gemm(c, mnk, a.raw(), b.raw(), alpha, beta, par) }
}

/// Checks one case against f64 and returns C for the bit-for-bit comparisons.
#[allow(clippy::too_many_arguments)]
fn check(
    (m, n, k): (usize, usize, usize),
    (ta, tb): (bool, bool),
    pad: usize,
    alpha: f32,
    beta: Option<f32>,
    par: bool,
) -> Vec<f32> {
    let a = Mat::new(m, k, ta, pad, 1);
    let b = Mat::new(k, n, tb, pad, 2);
    let c0: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32 - 3.0).collect();
    let mut c = match beta {
        // What C held must not matter.
        None => vec![f32::NAN; m * n],
        Some(_) => c0.clone(),
    };
    run(&mut c, (m, n, k), &a, &b, alpha, beta, par);
    for i in 0..m {
        for j in 0..n {
            let (mut sum, mut mag) = (0f64, 0f64);
            for p in 0..k {
                let t = a.at(i, p) as f64 * b.at(p, j) as f64;
                sum += t;
                mag += t.abs();
            }
            let old = beta.map_or(0.0, |bt| bt as f64 * c0[i * n + j] as f64);
            let want = old + alpha as f64 * sum;
            let got = c[i * n + j] as f64;
            let tol = 1e-6 * (alpha.abs() as f64 * mag + old.abs()) + 1e-30;
            assert!(
                (got - want).abs() <= tol,
                "{m}×{k}×{n} (ta {ta}, tb {tb}, pad {pad}, alpha {alpha}, beta {beta:?}) \
                 at ({i}, {j}): {got} vs {want}"
            );
        }
    }
    c
}

fn skip() -> bool {
    if !runnable() {
        eprintln!("notice: this CPU has no AVX2 + FMA; the packed product is not tested here");
        return true;
    }
    false
}

#[test]
fn equals_an_f64_product_over_edges_depths_and_layouts() {
    if skip() {
        return;
    }
    let shapes = [
        (1, 1, 1),
        (5, 7, 3),
        (6, 16, 1),
        (7, 17, 257),
        (13, 33, 300),
        (150, 50, 513),
        (12, 3100, 9),
        (300, 20, 40),
    ];
    for &mnk in &shapes {
        for layout in [(false, false), (true, false), (false, true), (true, true)] {
            for pad in [0, 3] {
                check(mnk, layout, pad, 1.0, None, false);
            }
        }
    }
}

#[test]
fn scales_and_accumulates_into_c() {
    if skip() {
        return;
    }
    for beta in [None, Some(0.0), Some(1.0), Some(0.25)] {
        for alpha in [1.0, 0.5, -2.0] {
            check((19, 35, 600), (false, true), 1, alpha, beta, false);
        }
    }
}

#[test]
fn threads_give_the_same_bits() {
    if skip() {
        return;
    }
    for &mnk in &[
        (1576 / 4, 96, 384),
        (5, 200, 300),
        (150, 50, 513),
        (2, 3, 4),
    ] {
        let one = check(mnk, (false, false), 0, 1.0, Some(0.5), false);
        for threads in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let many = pool.install(|| check(mnk, (false, false), 0, 1.0, Some(0.5), true));
            assert!(
                one.iter()
                    .zip(&many)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{mnk:?} on {threads} threads differs from one thread"
            );
        }
    }
}

#[test]
fn parts_tile_c_in_whole_strips_and_balance() {
    // 1576 rows are 263 strips of 6: 131 and 132 strips for two threads.
    assert_eq!(
        split(1576, 384, 2),
        vec![
            Part {
                rows: 0..786,
                cols: 0..384
            },
            Part {
                rows: 786..1576,
                cols: 0..384
            },
        ]
    );
    // Eight rows are too few to share: the 100 columns (7 strips) split 3 + 4.
    assert_eq!(
        split(8, 100, 2),
        vec![
            Part {
                rows: 0..8,
                cols: 0..48
            },
            Part {
                rows: 0..8,
                cols: 48..100
            },
        ]
    );
    for m in 1..80 {
        for n in [1, 5, 16, 17, 40, 100] {
            for threads in 1..5 {
                let parts = split(m, n, threads);
                assert!(!parts.is_empty() && parts.len() <= threads);
                let mut covered = vec![0u8; m * n];
                for p in &parts {
                    assert!(p.rows.start % MR == 0 && p.cols.start % NR == 0, "{p:?}");
                    for i in p.rows.clone() {
                        for j in p.cols.clone() {
                            covered[i * n + j] += 1;
                        }
                    }
                }
                assert!(
                    covered.iter().all(|&c| c == 1),
                    "{m}×{n} on {threads}: {parts:?}"
                );
            }
        }
    }
}
