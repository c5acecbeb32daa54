//! Re-declares the height and width of a model's image input before simplification.
//!
//! An exported ViT declares the image size it was traced at, but many (DINOv2 and
//! other models that resample their position embeddings from the input's shape)
//! compute everything size-dependent from that shape. Constant folding at the
//! declared size would bake the 224-px embedding into a constant; declaring the size
//! the data has first lets folding compute the model's own resampling for it. A model
//! whose position embedding is a fixed constant then fails to simplify at the new size,
//! and the error names the values that do not broadcast.

use crate::ir::{Dim, Graph, Port, Shape};

/// Sets axes 2 and 3 (`[N, C, H, W]`) of the graph's first input to `[h, w]`,
/// keeping the batch and channel axes as declared.
pub fn set_image_size(g: &mut Graph, [h, w]: [usize; 2]) -> anyhow::Result<()> {
    let &id = g
        .inputs
        .first()
        .ok_or_else(|| anyhow::anyhow!("the model has no input"))?;
    let name = g.node(id).name.clone();
    let declared = g
        .value_type(Port::new(id, 0))
        .map(|t| t.shape.clone())
        .ok_or_else(|| anyhow::anyhow!("input '{name}' has no declared type"))?;
    if declared.rank() != 4 {
        anyhow::bail!("input '{name}' is {declared}, not an image batch [N, C, H, W]");
    }
    if h == 0 || w == 0 {
        anyhow::bail!("input '{name}': an image size of {h}x{w} is empty");
    }
    let mut dims: Vec<Dim> = declared.dims().to_vec();
    dims[2] = Dim::Known(h);
    dims[3] = Dim::Known(w);
    g.set_input_shape(&name, Shape(dims))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{DType, Op, TensorType};

    fn image_graph(dims: Vec<Dim>) -> Graph {
        let mut g = Graph::new("t");
        let x = g.add_input("x", TensorType::new(DType::F32, Shape(dims)));
        let y = g.add_op(
            "relu",
            Op::Unary(crate::ir::UnaryOp::Relu),
            &[Some(Port::new(x, 0))],
            &["y"],
        );
        g.outputs.push(Port::new(y, 0));
        g
    }

    fn input_dims(g: &Graph) -> Vec<Dim> {
        g.value_type(Port::new(g.inputs[0], 0))
            .unwrap()
            .shape
            .dims()
            .to_vec()
    }

    #[test]
    fn replaces_height_and_width_and_keeps_batch_and_channels() {
        let mut g = image_graph(vec![Dim::sym("batch"), 3.into(), 224.into(), 224.into()]);
        set_image_size(&mut g, [56, 48]).unwrap();
        assert_eq!(
            input_dims(&g),
            vec![Dim::sym("batch"), 3.into(), 56.into(), 48.into()]
        );
    }

    #[test]
    fn refuses_inputs_that_are_not_image_batches() {
        let mut g = image_graph(vec![Dim::sym("batch"), 16.into()]);
        let e = set_image_size(&mut g, [56, 56]).unwrap_err().to_string();
        assert!(e.contains("not an image batch"), "{e}");
        let mut g = image_graph(vec![1.into(), 3.into(), 8.into(), 8.into()]);
        assert!(set_image_size(&mut g, [0, 8]).is_err());
    }
}
