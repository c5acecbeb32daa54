//! `glora bench gemm`'s library side: which matrix products a model's training step
//! runs, and how fast our CPU kernels run each one.
//!
//! [`model_products`] compiles a model into a supernet as `glora bench train` does,
//! fixes the batch, simplifies, and reads off the graph ([`step_products`]) every
//! distinct GLoRA layer shape with its forward, input-gradient and weight-gradient
//! products, plus the batched MatMuls between two activations (attention). Shapes
//! given on the command line come through [`parse_shape`]. [`measure`] runs each
//! product through `crate::exec`'s [`PreparedProduct`], the executor's own kernels,
//! and keeps the median of the timed runs; the CLI prints the rows and
//! [`summary`], and `examples/gemm_reference.py` reads the JSON of [`rows_json`] to
//! time the same shapes in numpy.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::exec::shapes::matmul_shape;
use crate::exec::{MatrixProduct, PreparedProduct, ProductKind};
use crate::ir::{Graph, Op, Port};

use super::machine::Peak;

/// A product and how many nodes of the forward graph have its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct CountedProduct {
    pub product: MatrixProduct,
    pub count: usize,
    /// The first layer or node with this shape, to tell rows apart.
    pub example: String,
}

/// The products of one model's training step.
#[derive(Clone, Debug)]
pub struct ModelProducts {
    pub products: Vec<CountedProduct>,
    /// `[C, H, W]` of one image.
    pub image: Vec<usize>,
    /// Tokens per image (rows of the most common layer input / batch), when whole.
    pub tokens: Option<usize>,
    pub layers: usize,
}

/// Parses `MxKxN` (also with `X` or `×`) into three positive sizes.
pub fn parse_shape(s: &str) -> anyhow::Result<[usize; 3]> {
    let parts: Vec<&str> = s.split(['x', 'X', '×']).map(str::trim).collect::<Vec<_>>();
    let dims: Vec<usize> = parts
        .iter()
        .map(|p| p.parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            anyhow::anyhow!("{s:?} is not MxKxN (three whole numbers, e.g. 1576x384x1152)")
        })?;
    match dims.as_slice() {
        [m, k, n] if *m > 0 && *k > 0 && *n > 0 => Ok([*m, *k, *n]),
        [_, _, _] => bail!("{s:?}: every size in MxKxN must be positive"),
        _ => bail!("{s:?} is not MxKxN (three whole numbers, e.g. 1576x384x1152)"),
    }
}

/// The known shape of the value at `port`.
fn dims_at(g: &Graph, port: Port) -> Option<Vec<usize>> {
    g.value_type(port).and_then(|t| t.shape.to_known())
}

/// Whether the value at `port` is computed (not a weight or constant).
fn is_activation(g: &Graph, port: Port) -> bool {
    !matches!(g.node(port.node).op, Op::Const(_) | Op::Param(_))
}

/// Counts products by shape in first-seen order.
#[derive(Default)]
struct Tally {
    rows: Vec<CountedProduct>,
    index: HashMap<MatrixProduct, usize>,
}

impl Tally {
    fn add(&mut self, product: MatrixProduct, name: &str) {
        match self.index.get(&product) {
            Some(&i) => self.rows[i].count += 1,
            None => {
                self.index.insert(product, self.rows.len());
                self.rows.push(CountedProduct {
                    product,
                    count: 1,
                    example: name.to_string(),
                });
            }
        }
    }
}

/// The products of a training step of `g`, a supernet graph at a fixed batch with
/// its shapes inferred: per distinct GLoRA layer shape (rows, d_in, d_out, layout)
/// its forward, input gradient and weight gradient, and each batched MatMul between
/// two activations. The backward of an attention product runs products of the same
/// two shapes (with transposed operands), so they are not listed again.
pub fn step_products(g: &Graph) -> anyhow::Result<Vec<CountedProduct>> {
    let order = g
        .stable_topo_order()
        .map_err(|e| anyhow::anyhow!("graph order: {e}"))?;
    let mut linear = Tally::default();
    let mut batched = Tally::default();
    for id in order {
        let node = g.node(id);
        let inputs = g.inputs_of(id);
        match &node.op {
            Op::GloraLinear(a) => {
                let x = inputs
                    .first()
                    .copied()
                    .flatten()
                    .and_then(|p| dims_at(g, p))
                    .with_context(|| format!("layer {:?}: input shape unknown", a.layer))?;
                let rows: usize = x[..x.len().saturating_sub(1)].iter().product();
                for kind in [
                    ProductKind::Forward,
                    ProductKind::InputGrad,
                    ProductKind::WeightGrad,
                ] {
                    let p = MatrixProduct::linear(kind, rows, a.d_in, a.d_out, a.layout);
                    linear.add(p, &a.layer);
                }
            }
            Op::MatMul => {
                let (Some(Some(pa)), Some(Some(pb))) = (inputs.first(), inputs.get(1)) else {
                    continue;
                };
                if !is_activation(g, *pa) || !is_activation(g, *pb) {
                    continue;
                }
                let (Some(da), Some(db)) = (dims_at(g, *pa), dims_at(g, *pb)) else {
                    bail!("MatMul {:?}: operand shapes unknown", node.name);
                };
                let s = matmul_shape(&da, &db)
                    .map_err(|e| anyhow::anyhow!("MatMul {:?}: {e}", node.name))?;
                let kind = if s.m == s.n && s.k < s.m {
                    ProductKind::AttentionScores
                } else if s.m == s.k && s.n < s.m {
                    ProductKind::AttentionValues
                } else {
                    ProductKind::Batched
                };
                let p = MatrixProduct {
                    kind,
                    batch: s.batch.iter().product(),
                    m: s.m,
                    k: s.k,
                    n: s.n,
                    layout: None,
                };
                batched.add(p, &node.name);
            }
            _ => {}
        }
    }
    // Linear layers first, in graph order with each shape's three products together,
    // then the batched products.
    let mut rows = linear.rows;
    rows.extend(batched.rows);
    Ok(rows)
}

/// Compiles `model` into a supernet (every selected linear layer adapted, as `glora
/// bench train` does), fixes the batch at `batch` images and lists its training
/// step's products. `image_size` re-declares the image side before simplification.
pub fn model_products(
    model: &Path,
    batch: usize,
    image_size: Option<usize>,
    targets: Option<&str>,
    exclude: Option<&str>,
) -> anyhow::Result<ModelProducts> {
    let net = crate::supernet::Supernet::compile(
        model,
        targets,
        exclude,
        &[4],
        0,
        image_size.map(|s| [s, s]),
    )?;
    let Some(image) = net.image_shape(image_size) else {
        bail!(
            "{}: the image input has no fixed [C, H, W]; pass --image-size",
            model.display()
        )
    };
    let g = crate::train::graph::fixed_batch(&net.graph, batch, &image)
        .with_context(|| model.display().to_string())?;
    let products = step_products(&g).with_context(|| model.display().to_string())?;
    let tokens = products
        .iter()
        .filter(|p| p.product.kind == ProductKind::Forward)
        .max_by_key(|p| p.count)
        .map(|p| p.product.m)
        .filter(|m| batch > 0 && m.is_multiple_of(batch))
        .map(|m| m / batch);
    Ok(ModelProducts {
        products,
        image,
        tokens,
        layers: net.layers.len(),
    })
}

/// One measured product.
#[derive(Clone, Debug)]
pub struct Measured {
    pub product: CountedProduct,
    /// Median seconds of one run.
    pub median_s: f64,
    pub gflops: f64,
}

/// A timed sample lasts at least this long, so that small products are not
/// measured below the clock's resolution and the loop's overhead.
const MIN_SAMPLE: Duration = Duration::from_millis(2);

/// Times `p`: `warmup` untimed runs, then `iters` timed samples (each enough runs
/// to last [`MIN_SAMPLE`]); the rate is `flops / median`.
pub fn measure(p: &CountedProduct, warmup: usize, iters: usize) -> anyhow::Result<Measured> {
    let prepared = PreparedProduct::new(p.product)?;
    let t0 = Instant::now();
    prepared.run()?;
    for _ in 0..warmup {
        prepared.run()?;
    }
    let one = t0.elapsed().as_secs_f64() / (warmup + 1) as f64;
    let reps = ((MIN_SAMPLE.as_secs_f64() / one.max(1e-9)).ceil() as usize).max(1);
    let mut times = Vec::with_capacity(iters.max(1));
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        for _ in 0..reps {
            prepared.run()?;
        }
        times.push(t.elapsed().as_secs_f64() / reps as f64);
    }
    let median_s = median(&mut times);
    Ok(Measured {
        product: p.clone(),
        median_s,
        gflops: p.product.flops() / median_s.max(1e-12) / 1e9,
    })
}

/// The median of at least one value.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n.is_multiple_of(2) => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        _ => v[n / 2],
    }
}

/// The time-weighted mean rate over the rows, each counted as often as its shape
/// occurs in the forward graph: total flops over total time.
pub fn summary(rows: &[Measured]) -> f64 {
    let (flops, secs) = rows.iter().fold((0.0, 0.0), |(f, s), r| {
        let c = r.product.count as f64;
        (f + c * r.product.product.flops(), s + c * r.median_s)
    });
    if secs > 0.0 { flops / secs / 1e9 } else { 0.0 }
}

/// The rows as JSON objects, the form `examples/gemm_reference.py --from-json` reads.
pub fn rows_json(rows: &[Measured], peak: Option<&Peak>) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|r| {
            let p = &r.product.product;
            serde_json::json!({
                "shape": p.shape(),
                "kind": p.kind.name(),
                "what": p.kind.describe(),
                "batch": p.batch, "m": p.m, "k": p.k, "n": p.n,
                "layout": p.layout.map(|l| format!("{l:?}")),
                "count": r.product.count,
                "example": r.product.example,
                "median_s": r.median_s,
                "gflops": r.gflops,
                "peak_percent": peak.map(|pk| 100.0 * r.gflops / pk.gflops()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{VitConfig, build_vit};

    #[test]
    fn shapes_parse_and_bad_ones_say_why() {
        assert_eq!(parse_shape("64x32x48").unwrap(), [64, 32, 48]);
        assert_eq!(parse_shape("1576X384×1152").unwrap(), [1576, 384, 1152]);
        for bad in ["64x32", "64x32x48x2", "ax1x2", "0x4x4", "", "64x-1x3"] {
            let e = parse_shape(bad).unwrap_err().to_string();
            assert!(e.contains("MxKxN"), "{bad}: {e}");
        }
    }

    #[test]
    fn median_and_time_weighted_summary() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        let row = |m, count, secs| Measured {
            product: CountedProduct {
                product: MatrixProduct::plain(m, 1000, 1000),
                count,
                example: String::new(),
            },
            median_s: secs,
            gflops: 0.0,
        };
        // 2·1000·1000·1000 = 2 GFLOP in 0.01 s, twice, and 4 GFLOP in 0.02 s once:
        // 8 GFLOP in 0.04 s.
        let rows = [row(1000, 2, 0.01), row(2000, 1, 0.02)];
        assert!((summary(&rows) - 200.0).abs() < 1e-9);
        assert_eq!(summary(&[]), 0.0);
    }

    /// A tiny ViT (dim 32, 2 blocks, 2 heads of 16, MLP 64, 8×8 images in 2×2
    /// patches: 16 patches + the class token = 17 tokens) at batch 3, so 51 rows:
    /// the qkv, proj, fc1 and fc2 shapes with three products each, then the two
    /// attention products over 3·2 = 6 batch entries, each shape once per block.
    #[test]
    fn tiny_vit_products_follow_its_layers() {
        let cfg = VitConfig {
            dim: 32,
            depth: 2,
            heads: 2,
            mlp: 64,
            classes: None,
            ..VitConfig::tiny_digits()
        };
        let g = build_vit(&cfg, 1).unwrap();
        let dir = std::env::temp_dir().join(format!("glora-gemm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vit.onnx");
        crate::onnx::export_file(&g, &path, &Default::default()).unwrap();
        let mp = model_products(&path, 3, None, None, None).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let t = cfg.tokens();
        assert_eq!(mp.tokens, Some(t));
        assert_eq!(mp.image, vec![1, 8, 8]);
        let rows = 3 * t;
        let got: Vec<(ProductKind, usize, usize, usize, usize, usize)> = mp
            .products
            .iter()
            .map(|c| {
                let p = c.product;
                (p.kind, p.batch, p.m, p.k, p.n, c.count)
            })
            .collect();
        use ProductKind::*;
        let mut want = Vec::new();
        // Per layer shape, as the blocks emit them: qkv, proj, fc1, fc2.
        for (d_in, d_out) in [(32, 96), (32, 32), (32, 64), (64, 32)] {
            want.push((Forward, 1, rows, d_in, d_out, 2));
            want.push((InputGrad, 1, rows, d_out, d_in, 2));
            want.push((WeightGrad, 1, d_out, rows, d_in, 2));
        }
        want.push((AttentionScores, 6, t, 16, t, 2));
        want.push((AttentionValues, 6, t, t, 16, 2));
        assert_eq!(got, want, "{:#?}", mp.products);
        assert_eq!(mp.layers, 8);
    }
}
