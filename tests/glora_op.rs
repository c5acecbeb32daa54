//! The GloraLinear op against independent references: for every config of the
//! search space, the executor's adapter op, the merged graph after `reparameterize`,
//! the expanded graph after `expand_glora` and the host reference
//! `glora::forward_reference` must agree; freshly initialised adapters must leave the
//! base layer's output bit for bit; the all-none merge must leave W and b untouched.
//! Also the insertion pass on hand-built graphs and on DINOv2, the session's config
//! errors, layer selection by regex and type inference.

mod common;

use std::collections::BTreeMap;

use glora::exec::{CpuBackend, Session, run_cpu};
use glora::glora::{
    AbOption, AdapterTensors, COption, DeOption, LayerConfig, LayerShape, ModelConfig, SearchSpace,
    forward_reference, supernet_params,
};
use glora::ir::infer::infer_types;
use glora::ir::{
    BinaryOp, DType, Dim, GemmAttrs, Graph, NodeIndex, Op, Port, Shape, Tensor, TensorType,
    WeightLayout,
};
use glora::passes::{
    adapter_tensors, expand_glora, find_linear_layers, glora_layers, insert_glora, optimize,
    reparameterize, select_layers, set_adapter_tensors,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const D_IN: usize = 6;
const D_OUT: usize = 5;

/// Which base pattern a test layer uses.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Base {
    /// `MatMul(x, W[d_in, d_out])` (+ `Add` of the bias).
    MatMul,
    /// `Gemm(x, W[d_out, d_in], transB=1)` (+ C).
    GemmTransB,
}

fn random_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
    // Bounded away from zero so that every term contributes.
    (0..n)
        .map(|_| {
            let v: f32 = rng.random_range(0.1..1.0);
            if rng.random_bool(0.5) { v } else { -v }
        })
        .collect()
}

struct Layer {
    graph: Graph,
    /// W0 in the PyTorch layout `[d_out, d_in]`.
    w0_out_in: Vec<f32>,
    b0: Option<Vec<f32>>,
    x: Tensor,
    shape: LayerShape,
}

fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|j| (0..rows).map(move |i| m[i * cols + j]))
        .collect()
}

fn p(id: NodeIndex) -> Option<Port> {
    Some(Port::new(id, 0))
}

/// A one-layer graph `y = x·W0ᵀ (+ b0)` with random weights, and a random input of
/// `rows` rows.
fn base_layer(base: Base, bias: bool, d_in: usize, d_out: usize, rows: usize, seed: u64) -> Layer {
    let mut rng = StdRng::seed_from_u64(seed);
    let w0_out_in = random_vec(&mut rng, d_out * d_in);
    let b0 = bias.then(|| random_vec(&mut rng, d_out));
    let x = Tensor::from_f32(vec![rows, d_in], random_vec(&mut rng, rows * d_in)).unwrap();
    let mut g = Graph::new("layer");
    let xi = g.add_input(
        "x",
        TensorType::new(DType::F32, Shape(vec![Dim::sym("n"), Dim::Known(d_in)])),
    );
    let out = match base {
        Base::MatMul => {
            let w =
                Tensor::from_f32(vec![d_in, d_out], transpose(&w0_out_in, d_out, d_in)).unwrap();
            let w = g.add_const("fc.weight", w);
            let mm = g.add_op("/fc/MatMul", Op::MatMul, &[p(xi), p(w)], &["mm"]);
            match &b0 {
                Some(b) => {
                    let b =
                        g.add_const("fc.bias", Tensor::from_f32(vec![d_out], b.clone()).unwrap());
                    g.add_op("/fc/Add", Op::Binary(BinaryOp::Add), &[p(mm), p(b)], &["y"])
                }
                None => {
                    g.node_mut(mm).outputs[0].name = "y".into();
                    mm
                }
            }
        }
        Base::GemmTransB => {
            let w = Tensor::from_f32(vec![d_out, d_in], w0_out_in.clone()).unwrap();
            let w = g.add_const("fc.weight", w);
            let c = b0
                .as_ref()
                .map(|b| g.add_const("fc.bias", Tensor::from_f32(vec![d_out], b.clone()).unwrap()));
            let attrs = GemmAttrs {
                trans_b: true,
                ..GemmAttrs::default()
            };
            g.add_op(
                "/fc/Gemm",
                Op::Gemm(attrs),
                &[p(xi), p(w), c.and_then(p)],
                &["y"],
            )
        }
    };
    g.outputs.push(Port::new(out, 0));
    infer_types(&mut g).unwrap();
    g.validate().unwrap();
    Layer {
        graph: g,
        w0_out_in,
        b0,
        x,
        shape: LayerShape {
            d_in,
            d_out,
            has_bias: bias,
        },
    }
}

/// The base layer with a GloraLinear node at stored rank `rank`, its adapter tensors
/// random and non-zero (unless `fresh`).
fn adapted(layer: &Layer, rank: usize, fresh: bool, seed: u64) -> (Graph, String, AdapterTensors) {
    let mut g = layer.graph.clone();
    let layers = find_linear_layers(&g);
    assert_eq!(layers.len(), 1);
    let adapted = insert_glora(&mut g, &layers, rank, seed).unwrap();
    let name = adapted[0].name.clone();
    if !fresh {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let shapes = AdapterTensors::expected_shapes(layer.shape, rank);
        let tensors = shapes.map(|s| {
            let n = s.iter().product();
            Tensor::from_f32(s, random_vec(&mut rng, n)).unwrap()
        });
        let t = AdapterTensors::from_tensors(&name, layer.shape, rank, tensors).unwrap();
        set_adapter_tensors(&mut g, &name, &t).unwrap();
    }
    let t = adapter_tensors(&g, &name).unwrap();
    (g, name, t)
}

fn one_layer(name: &str, config: LayerConfig) -> ModelConfig {
    let mut c = ModelConfig::new();
    c.insert(name, config);
    c
}

fn run_graph(g: &Graph, x: &Tensor) -> Vec<f32> {
    let out = run_cpu(g, &[("x".to_string(), x.clone())]).unwrap();
    out[0].as_f32().unwrap().to_vec()
}

/// Largest difference relative to the reference's largest magnitude.
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want
        .iter()
        .fold(0f64, |m, &v| m.max(v.abs() as f64))
        .max(1e-6);
    let diff = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    diff / scale
}

/// Checks (a)–(c) for every config of `space`.
fn check_space(layer: &Layer, space: &SearchSpace, seed: u64) {
    let rank = space.max_rank();
    let (g, name, tensors) = adapted(layer, rank, false, seed);
    let mut session = Session::new(&g, CpuBackend).unwrap();
    let rows = layer.x.shape()[0];
    let mut n = 0;
    for config in space.all_configs() {
        let configs = one_layer(&name, config);
        session.set_glora_configs(&configs).unwrap();
        let ours = session.run(&[("x".to_string(), layer.x.clone())]).unwrap();
        let ours = ours[0].as_f32().unwrap();
        let reference = forward_reference(
            layer.x.as_f32().unwrap(),
            rows,
            &layer.w0_out_in,
            layer.b0.as_deref(),
            layer.shape,
            &config,
            &tensors,
        )
        .unwrap();
        let e = rel_err(ours, &reference);
        assert!(e <= 1e-5, "{config}: executor vs reference, rel err {e}");

        let mut merged = g.clone();
        reparameterize(&mut merged, &configs).unwrap();
        let e = rel_err(&run_graph(&merged, &layer.x), ours);
        assert!(e <= 1e-5, "{config}: merged vs executor, rel err {e}");

        let mut expanded = g.clone();
        expand_glora(&mut expanded, &configs).unwrap();
        assert!(
            !expanded.op_histogram().contains_key("GloraLinear"),
            "{config}"
        );
        let e = rel_err(&run_graph(&expanded, &layer.x), ours);
        assert!(e <= 1e-5, "{config}: expanded vs executor, rel err {e}");
        n += 1;
    }
    assert_eq!(n, space.len());
}

#[test]
fn every_config_at_rank_4_agrees_with_merge_reference_and_expansion() {
    let space = SearchSpace::default();
    assert_eq!(space.len(), 432);
    for (i, base) in [Base::MatMul, Base::GemmTransB].into_iter().enumerate() {
        for bias in [true, false] {
            let layer = base_layer(base, bias, D_IN, D_OUT, 3, 10 + i as u64);
            check_space(&layer, &space, 7);
        }
    }
}

#[test]
fn every_config_of_ranks_2_4_8_agrees_with_merge_reference_and_expansion() {
    let space = SearchSpace::new([2, 4, 8]).unwrap();
    for (i, base) in [Base::MatMul, Base::GemmTransB].into_iter().enumerate() {
        for bias in [true, false] {
            let layer = base_layer(base, bias, D_IN, D_OUT, 3, 20 + i as u64);
            check_space(&layer, &space, 8);
        }
    }
}

/// (d): freshly initialised adapters leave the base output bit for bit, whatever
/// the config; checked on a tiny layer and on one wide enough for the product to
/// be computed in blocks.
#[test]
fn fresh_adapters_reproduce_the_base_layer_exactly() {
    let space = SearchSpace::new([2, 4]).unwrap();
    for (base, bias, d_in, d_out, rows) in [
        (Base::MatMul, true, D_IN, D_OUT, 3),
        (Base::MatMul, false, D_IN, D_OUT, 3),
        (Base::GemmTransB, true, D_IN, D_OUT, 3),
        (Base::GemmTransB, false, D_IN, D_OUT, 3),
        (Base::MatMul, true, 1536, 40, 9),
        (Base::GemmTransB, true, 1536, 40, 9),
    ] {
        let layer = base_layer(base, bias, d_in, d_out, rows, 31);
        let want = run_graph(&layer.graph, &layer.x);
        let (g, name, tensors) = adapted(&layer, space.max_rank(), true, 5);
        // The tensors really are the fresh ones: zero down factors, D and E.
        assert!(tensors.ad().to_f32_vec().iter().all(|&v| v == 0.0));
        assert!(tensors.au().to_f32_vec().iter().any(|&v| v != 0.0));
        let mut session = Session::new(&g, CpuBackend).unwrap();
        for config in space.all_configs() {
            session
                .set_glora_configs(&one_layer(&name, config))
                .unwrap();
            let got = session.run(&[("x".to_string(), layer.x.clone())]).unwrap();
            assert!(
                got[0].as_f32().unwrap() == want.as_slice(),
                "{base:?} bias={bias} d_in={d_in}: {config} differs from the base layer"
            );
        }
    }
}

fn weight_of(g: &Graph, value: &str) -> Tensor {
    let port = g.find_value(value).unwrap();
    g.const_value(port).unwrap().clone()
}

/// (e): the all-none merge leaves W and b bit-identical and the histogram as it
/// was; a bias-less layer gains a bias exactly when E or C is read.
#[test]
fn all_none_merge_is_the_identity_and_bias_appears_only_for_e_or_c() {
    for base in [Base::MatMul, Base::GemmTransB] {
        for bias in [true, false] {
            let layer = base_layer(base, bias, D_IN, D_OUT, 3, 41);
            let (g, name, _) = adapted(&layer, 4, false, 3);
            let mut merged = g.clone();
            reparameterize(&mut merged, &one_layer(&name, LayerConfig::NONE)).unwrap();
            assert_eq!(
                merged.op_histogram(),
                layer.graph.op_histogram(),
                "{base:?}"
            );
            assert_eq!(
                weight_of(&merged, "fc.weight"),
                weight_of(&layer.graph, "fc.weight")
            );
            if bias {
                assert_eq!(
                    weight_of(&merged, "fc.bias"),
                    weight_of(&layer.graph, "fc.bias")
                );
            }
            // No adapter tensor is left behind.
            assert_eq!(merged.weight_count(), layer.graph.weight_count());
            assert_eq!(merged.node_count(), layer.graph.node_count());
        }
    }
    for base in [Base::MatMul, Base::GemmTransB] {
        let layer = base_layer(base, false, D_IN, D_OUT, 3, 42);
        let (g, name, tensors) = adapted(&layer, 4, false, 3);
        let e_config = LayerConfig {
            e: DeOption::Vector,
            d: DeOption::Vector,
            ..LayerConfig::NONE
        };
        let c_config = LayerConfig {
            c: COption::Vector,
            a: AbOption::Lora(2),
            ..LayerConfig::NONE
        };
        let d_only = LayerConfig {
            d: DeOption::Vector,
            b: AbOption::Vector,
            ..LayerConfig::NONE
        };
        for (config, gains) in [(e_config, true), (c_config, true), (d_only, false)] {
            let mut merged = g.clone();
            reparameterize(&mut merged, &one_layer(&name, config)).unwrap();
            let mut want = layer.graph.op_histogram();
            if gains && base == Base::MatMul {
                *want.entry("Add".to_string()).or_insert(0) += 1;
            }
            assert_eq!(merged.op_histogram(), want, "{base:?} {config}");
            let bias_values = merged.weight_count() - layer.graph.weight_count();
            assert_eq!(
                bias_values,
                if gains { D_OUT } else { 0 },
                "{base:?} {config}"
            );
            if config == e_config {
                // E alone (D is dead without a base bias): the new bias is exactly E.
                let got = run_graph(&merged, &layer.x);
                let plain = run_graph(&layer.graph, &layer.x);
                let e = tensors.e().to_f32_vec();
                for (row_got, row_plain) in got.chunks(D_OUT).zip(plain.chunks(D_OUT)) {
                    for i in 0..D_OUT {
                        assert!((row_got[i] - (row_plain[i] + e[i])).abs() <= 1e-6);
                    }
                }
            }
        }
    }
}

fn hist(entries: &[(&str, usize)]) -> BTreeMap<String, usize> {
    entries.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn insertion_replaces_each_pattern_by_one_node_and_keeps_value_names() {
    let mut g = Graph::new("three");
    let x = g.add_input(
        "x",
        TensorType::new(DType::F32, Shape(vec![Dim::sym("b"), Dim::Known(4)])),
    );
    let w1 = g.add_const("l1.weight", Tensor::zeros(DType::F32, vec![4, 6]));
    let b1 = g.add_const("l1.bias", Tensor::zeros(DType::F32, vec![6]));
    let mm1 = g.add_op("/l1/MatMul", Op::MatMul, &[p(x), p(w1)], &["l1_mm"]);
    let add1 = g.add_op(
        "/l1/Add",
        Op::Binary(BinaryOp::Add),
        &[p(b1), p(mm1)],
        &["h1"],
    );
    let w2 = g.add_const("l2.weight", Tensor::zeros(DType::F32, vec![6, 3]));
    let mm2 = g.add_op("/l2/MatMul", Op::MatMul, &[p(add1), p(w2)], &["h2"]);
    let w3 = g.add_const("head.weight", Tensor::zeros(DType::F32, vec![2, 3]));
    let c3 = g.add_const("head.bias", Tensor::zeros(DType::F32, vec![2]));
    let attrs = GemmAttrs {
        trans_b: true,
        ..GemmAttrs::default()
    };
    let gm = g.add_op(
        "/head/Gemm",
        Op::Gemm(attrs),
        &[p(mm2), p(w3), p(c3)],
        &["logits"],
    );
    g.outputs.push(Port::new(gm, 0));
    infer_types(&mut g).unwrap();
    let base_hist = g.op_histogram();

    let layers = find_linear_layers(&g);
    let adapted = insert_glora(&mut g, &layers, 4, 1).unwrap();
    let names: Vec<&str> = adapted.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["l1", "l2", "head"]);
    assert_eq!(
        adapted.iter().map(|l| l.layout).collect::<Vec<_>>(),
        [
            WeightLayout::InOut,
            WeightLayout::InOut,
            WeightLayout::OutIn
        ]
    );
    assert_eq!(
        adapted
            .iter()
            .map(|l| (l.shape.d_in, l.shape.d_out, l.shape.has_bias))
            .collect::<Vec<_>>(),
        [(4, 6, true), (6, 3, false), (3, 2, true)]
    );
    assert_eq!(g.op_histogram(), hist(&[("GloraLinear", 3)]));
    // Value names of the patterns' outputs survive; the intermediate one is gone.
    for v in ["h1", "h2", "logits"] {
        let port = g.find_value(v).unwrap_or_else(|| panic!("{v} is gone"));
        assert_eq!(g.node(port.node).op.name(), "GloraLinear");
    }
    assert!(g.find_value("l1_mm").is_none());
    assert_eq!(g.value(g.outputs[0]).name, "logits");
    for suffix in ["Ad", "Au", "Bd", "Bu", "Cd", "Cu", "D", "E"] {
        let port = g.find_value(&format!("l2.{suffix}")).unwrap();
        assert!(matches!(g.node(port.node).op, Op::Param(_)));
    }
    // The output types are those of the base.
    let ty = g.value_type(g.find_value("h1").unwrap()).unwrap();
    assert_eq!(ty.shape, Shape(vec![Dim::sym("b"), Dim::Known(6)]));
    assert_eq!(glora_layers(&g), adapted);

    // Merging under the all-none config restores the base histogram.
    let configs: ModelConfig = names
        .iter()
        .map(|n| (n.to_string(), LayerConfig::NONE))
        .collect();
    let mut merged = g.clone();
    reparameterize(&mut merged, &configs).unwrap();
    assert_eq!(merged.op_histogram(), base_hist);

    // A missing config is an error naming the layer.
    let mut partial = g.clone();
    let err = reparameterize(&mut partial, &one_layer("l1", LayerConfig::NONE)).unwrap_err();
    assert!(err.to_string().contains("'l2'"), "{err}");
    let err = expand_glora(&mut partial, &one_layer("l1", LayerConfig::NONE)).unwrap_err();
    assert!(err.to_string().contains("'l2'"), "{err}");
}

#[test]
fn gemm_without_trans_b_is_adapted_and_merged_back_into_a_gemm() {
    let mut rng = StdRng::seed_from_u64(9);
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::new(DType::F32, Shape::known(&[2, 3])));
    let w = Tensor::from_f32(vec![3, 4], random_vec(&mut rng, 12)).unwrap();
    let w = g.add_const("w", w);
    let gm = g.add_op(
        "gemm",
        Op::Gemm(GemmAttrs::default()),
        &[p(x), p(w), None],
        &["y"],
    );
    g.outputs.push(Port::new(gm, 0));
    infer_types(&mut g).unwrap();
    let xt = Tensor::from_f32(vec![2, 3], random_vec(&mut rng, 6)).unwrap();
    let want = run_graph(&g, &xt);
    let base_hist = g.op_histogram();
    let layers = find_linear_layers(&g);
    let adapted = insert_glora(&mut g, &layers, 2, 0).unwrap();
    assert_eq!(adapted[0].layout, WeightLayout::OutIn);
    let mut session = Session::new(&g, CpuBackend).unwrap();
    session
        .set_glora_configs(&one_layer(&adapted[0].name, LayerConfig::NONE))
        .unwrap();
    // W0 is stored transposed, so the product may round differently from the base.
    let got = session.run(&[("x".to_string(), xt.clone())]).unwrap();
    assert!(rel_err(got[0].as_f32().unwrap(), &want) <= 1e-6);
    let mut merged = g.clone();
    reparameterize(&mut merged, &one_layer(&adapted[0].name, LayerConfig::NONE)).unwrap();
    assert_eq!(merged.op_histogram(), base_hist);
    assert!(rel_err(&run_graph(&merged, &xt), &want) <= 1e-6);
    // The original [d_in, d_out] weight was replaced, not left behind.
    assert!(merged.find_value("w").is_none());
    assert_eq!(merged.weight_count(), 12);
}

#[test]
fn session_config_errors_name_the_layer_and_node() {
    let layer = base_layer(Base::MatMul, true, D_IN, D_OUT, 3, 50);
    let (g, name, _) = adapted(&layer, 4, false, 2);
    let mut session = Session::new(&g, CpuBackend).unwrap();
    let err = session
        .run(&[("x".to_string(), layer.x.clone())])
        .unwrap_err()
        .to_string();
    assert!(err.contains(&name) && err.contains("/fc/MatMul"), "{err}");

    let err = session
        .set_glora_configs(&one_layer("nope", LayerConfig::NONE))
        .unwrap_err()
        .to_string();
    assert!(err.contains("'nope'"), "{err}");
    let too_big = LayerConfig {
        b: AbOption::Lora(8),
        ..LayerConfig::NONE
    };
    let err = session
        .set_glora_configs(&one_layer(&name, too_big))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&name) && err.contains('8'), "{err}");
    // A rejected config leaves the session without one.
    assert!(session.run(&[("x".to_string(), layer.x.clone())]).is_err());

    session
        .set_glora_configs(&one_layer(&name, LayerConfig::NONE))
        .unwrap();
    let plain = session.run(&[("x".to_string(), layer.x.clone())]).unwrap();
    assert_eq!(
        plain[0].as_f32().unwrap(),
        run_graph(&layer.graph, &layer.x)
    );
}

#[test]
fn set_param_replaces_an_adapter_tensor_between_runs() {
    let layer = base_layer(Base::MatMul, true, D_IN, D_OUT, 3, 60);
    let (g, name, _) = adapted(&layer, 4, true, 2);
    let mut session = Session::new(&g, CpuBackend).unwrap();
    let config = LayerConfig {
        e: DeOption::Constant,
        ..LayerConfig::NONE
    };
    session
        .set_glora_configs(&one_layer(&name, config))
        .unwrap();
    let before = session.run(&[("x".to_string(), layer.x.clone())]).unwrap();
    let e = Tensor::from_f32(vec![D_OUT], vec![0.5, 9.0, 9.0, 9.0, 9.0]).unwrap();
    session.set_param(&format!("{name}.E"), &e).unwrap();
    let after = session.run(&[("x".to_string(), layer.x.clone())]).unwrap();
    for (i, (a, b)) in after[0]
        .as_f32()
        .unwrap()
        .iter()
        .zip(before[0].as_f32().unwrap())
        .enumerate()
    {
        // E constant reads E[0] only.
        assert!(
            (a - (b + 0.5)).abs() <= 1e-6,
            "element {i}: {a} vs {b} + 0.5"
        );
    }
    let wrong = Tensor::from_f32(vec![2], vec![0.0; 2]).unwrap();
    let err = session
        .set_param(&format!("{name}.E"), &wrong)
        .unwrap_err()
        .to_string();
    assert!(err.contains(".E"), "{err}");
    assert!(session.set_param("no.such.value", &e).is_err());
}

#[test]
fn select_layers_searches_names_with_regexes() {
    let layer = base_layer(Base::MatMul, true, D_IN, D_OUT, 3, 70);
    let mut layers = find_linear_layers(&layer.graph);
    let mut second = layers[0].clone();
    second.name = "blocks.0.attn.qkv".into();
    let mut third = layers[0].clone();
    third.name = "blocks.0.mlp.fc1".into();
    layers.extend([second, third]);
    let names = |v: Vec<glora::passes::LinearLayer>| -> Vec<String> {
        v.into_iter().map(|l| l.name).collect()
    };
    assert_eq!(
        names(select_layers(layers.clone(), None, None).unwrap()).len(),
        3
    );
    assert_eq!(
        names(select_layers(layers.clone(), Some("attn|mlp"), None).unwrap()),
        ["blocks.0.attn.qkv", "blocks.0.mlp.fc1"]
    );
    assert_eq!(
        names(select_layers(layers.clone(), Some("blocks"), Some("fc\\d$")).unwrap()),
        ["blocks.0.attn.qkv"]
    );
    assert_eq!(
        names(select_layers(layers.clone(), None, Some("^blocks")).unwrap()),
        ["fc"]
    );
    let err = select_layers(layers.clone(), Some("attn("), None).unwrap_err();
    assert!(format!("{err:#}").contains("attn("), "{err:#}");
    let err = select_layers(layers.clone(), None, Some("[")).unwrap_err();
    assert!(format!("{err:#}").contains("--exclude"), "{err:#}");
    assert!(select_layers(layers, Some("nothing"), None).is_err());
}

#[test]
fn glora_linear_types_and_export_refusal() {
    let layer = base_layer(Base::MatMul, true, D_IN, D_OUT, 3, 80);
    let (mut g, _, _) = adapted(&layer, 4, true, 2);
    let x = g.inputs[0];
    g.set_input_shape(
        "x",
        Shape(vec![Dim::sym("b"), Dim::Known(7), Dim::Known(D_IN)]),
    )
    .unwrap();
    infer_types(&mut g).unwrap();
    let out = g.value_type(g.outputs[0]).unwrap();
    assert_eq!(
        out.shape,
        Shape(vec![Dim::sym("b"), Dim::Known(7), Dim::Known(D_OUT)])
    );
    assert_eq!(out.dtype, DType::F32);
    // A rank-3 input runs and matches the rows computed one by one.
    let rows: Vec<f32> = layer
        .x
        .as_f32()
        .unwrap()
        .iter()
        .cycle()
        .take(2 * 7 * D_IN)
        .copied()
        .collect();
    let x3 = Tensor::from_f32(vec![2, 7, D_IN], rows.clone()).unwrap();
    let mut session = Session::new(&g, CpuBackend).unwrap();
    let name = glora_layers(&g)[0].name.clone();
    let config = LayerConfig {
        a: AbOption::Vector,
        b: AbOption::Lora(4),
        c: COption::Lora(2),
        d: DeOption::Constant,
        e: DeOption::Vector,
    };
    session
        .set_glora_configs(&one_layer(&name, config))
        .unwrap();
    let y3 = session.run(&[("x".to_string(), x3)]).unwrap();
    assert_eq!(y3[0].shape(), [2, 7, D_OUT]);
    let flat = Tensor::from_f32(vec![14, D_IN], rows).unwrap();
    let mut g2 = layer.graph.clone();
    let layers = find_linear_layers(&g2);
    insert_glora(&mut g2, &layers, 4, 2).unwrap();
    let mut s2 = Session::new(&g2, CpuBackend).unwrap();
    s2.set_glora_configs(&one_layer(&name, config)).unwrap();
    let y2 = s2.run(&[("x".to_string(), flat)]).unwrap();
    assert_eq!(y3[0].as_f32().unwrap(), y2[0].as_f32().unwrap());

    // A wrong input width is a type error naming the node.
    g.set_input_shape("x", Shape::known(&[2, D_IN + 1]))
        .unwrap();
    let err = infer_types(&mut g).unwrap_err().to_string();
    assert!(err.contains("/fc/MatMul") && err.contains("d_in"), "{err}");
    let _ = x;

    let err = glora::onnx::export_model(&g2, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/fc/MatMul") && err.contains("GLoRA layer"),
        "{err}"
    );
}

fn random_config(rng: &mut StdRng, space: &SearchSpace) -> LayerConfig {
    space.sample(rng)
}

#[test]
fn dinov2_has_72_layers_and_merges_back_to_its_histogram() {
    let Some(path) = common::fixture("models/dinov2-vits14-focus.onnx") else {
        return;
    };
    let mut g = glora::onnx::import_file(&path).unwrap();
    optimize(&mut g, &CpuBackend).unwrap();
    let base_hist = g.op_histogram();
    let base = g.clone();
    let layers = select_layers(find_linear_layers(&g), None, None).unwrap();
    assert_eq!(layers.len(), 72);
    let adapted = insert_glora(&mut g, &layers, 4, 0).unwrap();
    assert_eq!(adapted.len(), 72);
    let total: usize = adapted.iter().map(|l| supernet_params(l.shape, 4)).sum();
    assert_eq!(total, 912_672);
    // The Param nodes hold exactly that many entries.
    let params: usize = g
        .node_ids()
        .into_iter()
        .filter_map(|id| match &g.node(id).op {
            Op::Param(t) => Some(t.numel()),
            _ => None,
        })
        .sum();
    assert_eq!(params, 912_672);
    assert_eq!(g.op_histogram()["GloraLinear"], 72);
    let space = SearchSpace::default();
    let mut rng = StdRng::seed_from_u64(4);
    let configs: ModelConfig = glora_layers(&g)
        .iter()
        .map(|l| (l.name.clone(), random_config(&mut rng, &space)))
        .collect();
    let shapes = glora::verify::concrete_input_shapes(&g, &[], 1, 16).unwrap();
    let inputs = glora::verify::random_inputs(&shapes, 3);
    // Freshly initialised, the adapted model is the base model bit for bit.
    let mut session = Session::new(&g, CpuBackend).unwrap();
    session.set_glora_configs(&configs).unwrap();
    let fresh = session.run(&inputs).unwrap();
    assert!(fresh == run_cpu(&base, &inputs).unwrap());

    // Small random non-zero adapters, so that activations stay in range.
    for l in glora_layers(&g) {
        let shapes = AdapterTensors::expected_shapes(l.shape, 4);
        let tensors = shapes.map(|s| {
            let n = s.iter().product();
            let v = random_vec(&mut rng, n).iter().map(|v| v * 0.02).collect();
            Tensor::from_f32(s, v).unwrap()
        });
        let t = AdapterTensors::from_tensors(&l.name, l.shape, 4, tensors).unwrap();
        set_adapter_tensors(&mut g, &l.name, &t).unwrap();
    }
    let mut merged = g.clone();
    reparameterize(&mut merged, &configs).unwrap();
    // ViT layers all have biases, so no Add is gained.
    assert_eq!(merged.op_histogram(), base_hist);
    let mut expanded = g.clone();
    expand_glora(&mut expanded, &configs).unwrap();
    assert!(!expanded.op_histogram().contains_key("GloraLinear"));

    let mut session = Session::new(&g, CpuBackend).unwrap();
    session.set_glora_configs(&configs).unwrap();
    let ours = session.run(&inputs).unwrap();
    let ours = ours[0].as_f32().unwrap();
    let e = rel_err(
        run_cpu(&merged, &inputs).unwrap()[0].as_f32().unwrap(),
        ours,
    );
    assert!(e <= 1e-4, "merged vs adapted: rel err {e}");
    let e = rel_err(
        run_cpu(&expanded, &inputs).unwrap()[0].as_f32().unwrap(),
        ours,
    );
    assert!(e <= 1e-4, "expanded vs adapted: rel err {e}");
}

/// The merged and the expanded graphs are plain ONNX: written out and run in
/// tract, they give the executor's result on the adapted graph.
#[test]
fn merged_and_expanded_exports_run_in_tract() {
    let dir = tempfile::tempdir().unwrap();
    let configs = [
        LayerConfig {
            a: AbOption::Vector,
            b: AbOption::Constant,
            c: COption::Lora(4),
            d: DeOption::Vector,
            e: DeOption::Constant,
        },
        LayerConfig {
            a: AbOption::Lora(2),
            b: AbOption::Lora(4),
            c: COption::Vector,
            d: DeOption::Constant,
            e: DeOption::Vector,
        },
        LayerConfig {
            a: AbOption::Constant,
            b: AbOption::Vector,
            ..LayerConfig::NONE
        },
    ];
    for base in [Base::MatMul, Base::GemmTransB] {
        for bias in [true, false] {
            let layer = base_layer(base, bias, D_IN, D_OUT, 3, 90);
            let (g, name, _) = adapted(&layer, 4, false, 6);
            let mut session = Session::new(&g, CpuBackend).unwrap();
            let inputs = [("x".to_string(), layer.x.clone())];
            for (i, config) in configs.iter().enumerate() {
                let configs = one_layer(&name, *config);
                session.set_glora_configs(&configs).unwrap();
                let ours = session.run(&inputs).unwrap();
                let mut merged = g.clone();
                reparameterize(&mut merged, &configs).unwrap();
                let mut expanded = g.clone();
                expand_glora(&mut expanded, &configs).unwrap();
                for (kind, graph) in [("merged", merged), ("expanded", expanded)] {
                    let path = dir.path().join(format!("{base:?}_{bias}_{i}_{kind}.onnx"));
                    glora::onnx::export_file(&graph, &path, &Default::default()).unwrap();
                    let tract = glora::verify::TractModel::load(&path, &inputs).unwrap();
                    let theirs = tract.run(&inputs).unwrap();
                    let e = rel_err(theirs[0].as_f32().unwrap(), ours[0].as_f32().unwrap());
                    assert!(
                        e <= 1e-5,
                        "{base:?} bias={bias} {config} {kind}: rel err {e}"
                    );
                }
            }
        }
    }
}
