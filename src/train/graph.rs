//! The graphs a training run executes, built from a forward graph (a supernet or base
//! model with its classification head): every input's shape is fixed (the batch size,
//! the image size or the padded token length) so that shape computations fold and
//! every dimension is known, the cross-entropy of the logits
//! against a `labels` input becomes the loss, and the autodiff pass appends the
//! gradients of every `Param`. Outputs are the loss, the logits, then one gradient per
//! parameter. The evaluation graph is the same forward at a fixed batch, without loss.

use anyhow::{Context, anyhow, bail};

use crate::exec::CpuBackend;
use crate::ir::infer::infer_types;
use crate::ir::{DType, GradOp, Graph, Node, Op, Port, Shape, Tensor, TensorType};
use crate::passes;

/// Name of the labels input of a training graph.
pub const LABELS: &str = "glora_labels";

/// A training graph and what its outputs mean.
#[derive(Clone, Debug)]
pub struct TrainingGraph {
    pub graph: Graph,
    /// The data inputs' names (the labels input aside).
    pub inputs: Vec<String>,
    pub batch: usize,
    /// The trainable tensors in the order of their gradient outputs (output 2 + i).
    pub params: Vec<(String, Tensor)>,
}

/// The single image input of a forward graph.
fn image_input(g: &Graph) -> anyhow::Result<String> {
    match g.inputs.as_slice() {
        [id] => Ok(g.node(*id).name.clone()),
        [] => bail!("the model has no input"),
        many => bail!(
            "the model has {} inputs ({}); an image batch feeds one input",
            many.len(),
            many.iter()
                .map(|&i| g.node(i).name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The shape of `forward`'s single image input at `[batch, image…]`.
pub fn image_shapes(
    forward: &Graph,
    batch: usize,
    image: &[usize],
) -> anyhow::Result<Vec<(String, Vec<usize>)>> {
    let input = image_input(forward)?;
    let mut dims = vec![batch];
    dims.extend_from_slice(image);
    Ok(vec![(input, dims)])
}

/// `forward` with its image input fixed to `[batch, image…]`; see [`fixed_inputs`].
pub fn fixed_batch(forward: &Graph, batch: usize, image: &[usize]) -> anyhow::Result<Graph> {
    fixed_inputs(forward, &image_shapes(forward, batch, image)?)
}

/// `forward` with every input fixed to the shape `shapes` gives it (each input of the
/// graph must be named) and simplified, so that every value has a known shape.
pub fn fixed_inputs(forward: &Graph, shapes: &[(String, Vec<usize>)]) -> anyhow::Result<Graph> {
    let mut g = forward.clone();
    let mut resized = None;
    for &id in &forward.inputs {
        let name = forward.node(id).name.clone();
        let dims = shapes
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| d)
            .ok_or_else(|| anyhow!("the model's input '{name}' is not fed by the data"))?;
        let declared = g
            .value_type(Port::new(id, 0))
            .map(|t| t.shape.clone())
            .ok_or_else(|| anyhow!("input '{name}' has no declared type"))?;
        if declared.rank() != dims.len() {
            bail!(
                "input '{name}' is {declared} but the data gives {} of shape {:?}",
                if dims.len() == 4 { "images" } else { "batches" },
                &dims[1..]
            );
        }
        // A model exported at one image size may still take others (ViTs that
        // resample their position embeddings do), so a declared size is not enforced
        // here; if the graph cannot take the data's size, simplification says where.
        if declared
            .dims()
            .iter()
            .zip(dims)
            .skip(1)
            .any(|(d, &n)| d.known().is_some_and(|k| k != n))
        {
            resized = Some((name.clone(), declared.clone(), dims[1..].to_vec()));
        }
        g.set_input_shape(&name, Shape::known(dims))?;
    }
    passes::optimize(&mut g, &CpuBackend).with_context(|| match &resized {
        Some((name, declared, image)) => format!(
            "the model declares input '{name}' as {declared}, and does not take images of shape {image:?}"
        ),
        None => "simplifying the graph at a fixed batch size".to_string(),
    })?;
    Ok(g)
}

/// Makes every float `Const` with more than one element trainable (full fine-tuning).
/// Done on the forward graph before the batch is fixed, so that constant folding at a
/// fixed batch cannot turn a weight into a batch-sized copy.
pub fn make_weights_trainable(g: &mut Graph) -> usize {
    let mut count = 0;
    for id in g.node_ids() {
        let node = g.node_mut(id);
        if let Op::Const(t) = &node.op
            && t.dtype() == DType::F32
            && t.numel() > 1
        {
            node.op = Op::Param(t.clone());
            count += 1;
        }
    }
    count
}

/// `logits` as rows of the loss: `[N, K]` as they are; a language model's
/// `[N, S, K]` reshaped to `[N·S, K]`, one row per position. Returns the rows and
/// how many there are.
fn loss_rows(g: &mut Graph, logits: Port) -> anyhow::Result<(Port, usize)> {
    let ty = g
        .value_type(logits)
        .cloned()
        .ok_or_else(|| anyhow!("the logits have no known type"))?;
    let dims: Vec<usize> = ty
        .shape
        .dims()
        .iter()
        .map(|d| d.known())
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow!("the logits' shape {} is not fixed", ty.shape))?;
    match dims.as_slice() {
        [n, _] => Ok((logits, *n)),
        [n, s, k] => {
            let shape = g.add_const(
                "glora_loss_rows_shape",
                Tensor::vec_i64(vec![(n * s) as i64, *k as i64]),
            );
            let rows = g.add_op(
                "glora_loss_rows",
                Op::Reshape { allowzero: false },
                &[Some(logits), Some(Port::new(shape, 0))],
                &["glora_loss_rows"],
            );
            Ok((Port::new(rows, 0), n * s))
        }
        _ => bail!(
            "the logits are {}; the loss takes [batch, classes] or a language model's [batch, sequence, vocabulary]",
            ty.shape
        ),
    }
}

/// Builds the training graph of `forward` (logits `[N, K]`, or a language model's
/// `[N, S, K]`, as its only output) with its inputs at `shapes` (all of one batch
/// size). The labels input holds one label per row of the loss (`N`, or `N·S`:
/// one target per position, negative where none); the logits output is those rows.
pub fn build_training_graph(
    forward: &Graph,
    shapes: &[(String, Vec<usize>)],
    label_smoothing: f32,
) -> anyhow::Result<TrainingGraph> {
    let batch = batch_of(shapes)?;
    let mut g = fixed_inputs(forward, shapes)?;
    let inputs = shapes.iter().map(|(n, _)| n.clone()).collect();
    let logits = match g.outputs.as_slice() {
        [p] => *p,
        _ => bail!("the forward graph must have one output, the logits"),
    };
    infer_types(&mut g).context("type inference of the forward graph")?;
    let (logits, rows) = loss_rows(&mut g, logits)?;
    let labels = g.add_input(LABELS, TensorType::new(DType::I64, Shape::known(&[rows])));
    let loss = g.add_op(
        "glora_loss",
        Op::Grad(GradOp::SoftmaxCrossEntropy { label_smoothing }),
        &[Some(logits), Some(Port::new(labels, 0))],
        &["glora_loss"],
    );
    let loss = Port::new(loss, 0);
    g.outputs = vec![loss, logits];
    infer_types(&mut g).context("type inference of the loss")?;
    let grads = passes::autodiff(&mut g, loss)?;
    let mut params = Vec::with_capacity(grads.len());
    for pg in &grads {
        g.outputs.push(pg.grad);
        let t = g
            .node(pg.param)
            .op
            .weight()
            .cloned()
            .ok_or_else(|| anyhow!("parameter '{}' holds no tensor", pg.name))?;
        params.push((pg.name.clone(), t));
    }
    passes::eliminate_dead_code(&mut g)?;
    Ok(TrainingGraph {
        graph: g,
        inputs,
        batch,
        params,
    })
}

/// The batch size every shape of `shapes` starts with.
fn batch_of(shapes: &[(String, Vec<usize>)]) -> anyhow::Result<usize> {
    let first = shapes
        .first()
        .and_then(|(_, d)| d.first())
        .copied()
        .ok_or_else(|| anyhow!("no input shapes to build the graph at"))?;
    if shapes.iter().any(|(_, d)| d.first() != Some(&first)) {
        bail!("input shapes {shapes:?} disagree on the batch size");
    }
    Ok(first)
}

/// The forward graph for evaluation with its inputs at `shapes`: outputs the logits
/// only.
pub fn build_eval_graph(forward: &Graph, shapes: &[(String, Vec<usize>)]) -> anyhow::Result<Graph> {
    let g = fixed_inputs(forward, shapes)?;
    if g.outputs.len() != 1 {
        bail!("the forward graph must have one output, the logits");
    }
    Ok(g)
}

/// Whether any node of `g` is a `Param`.
pub fn has_params(g: &Graph) -> bool {
    g.node_ids()
        .into_iter()
        .any(|id| matches!(g.node(id).op, Op::Param(_)))
}

/// Turns every `Param` of `g` whose value name `keep` rejects into a `Const`.
pub fn freeze_params(g: &mut Graph, keep: impl Fn(&str) -> bool) {
    for id in g.node_ids() {
        let name = g.node(id).outputs.first().map(|v| v.name.clone());
        let node: &mut Node = g.node_mut(id);
        if let (Op::Param(t), Some(name)) = (&node.op, name)
            && !keep(&name)
        {
            node.op = Op::Const(t.clone());
        }
    }
}
