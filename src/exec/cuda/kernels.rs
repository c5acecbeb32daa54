//! The kernels of `kernels/*.cu` as the Rust side launches them: file, function and
//! parameter kinds, in the order of the C signatures. [`ALL`] lists every one, and
//! a test parses the sources to check that each listed signature is the real one.

use super::compile::{ADAMW, COPY, ELEMENTWISE, GLORA, LOSS, NORM, REDUCE};
use super::launch::Kernel;
use super::launch::Kind::{Dims as S, F32 as F, F64 as D, I32 as I, I64 as L, Ptr as P};

macro_rules! kernels {
    ($($id:ident = $file:ident :: $name:literal ( $($k:ident),* );)*) => {
        $(pub(crate) const $id: Kernel = Kernel { file: $file, name: $name, params: &[$($k),*] };)*
        /// Every kernel the backend launches.
        #[cfg(test)]
        pub(crate) const ALL: &[Kernel] = &[$($id),*];
    };
}

kernels! {
    BINARY = ELEMENTWISE::"binary_f32"(P, P, P, L, I, S, S, S, I);
    BINARY_SAME = ELEMENTWISE::"binary_same_f32"(P, P, P, L, I);
    UNARY = ELEMENTWISE::"unary_f32"(P, P, L, I);
    CLIP = ELEMENTWISE::"clip_f32"(P, P, L, F, F);
    GELU = ELEMENTWISE::"gelu_f32"(P, P, L, I);
    UNARY_GRAD = ELEMENTWISE::"unary_grad_f32"(P, P, P, P, L, I);
    WHERE_1 = ELEMENTWISE::"where_1"(P, P, P, P, L, I, S, S, S, S);
    WHERE_2 = ELEMENTWISE::"where_2"(P, P, P, P, L, I, S, S, S, S);
    WHERE_4 = ELEMENTWISE::"where_4"(P, P, P, P, L, I, S, S, S, S);
    WHERE_8 = ELEMENTWISE::"where_8"(P, P, P, P, L, I, S, S, S, S);
    CAST_F32_TO_I64 = ELEMENTWISE::"cast_f32_to_i64"(P, P, L);
    CAST_F32_TO_I32 = ELEMENTWISE::"cast_f32_to_i32"(P, P, L);
    CAST_F32_TO_BOOL = ELEMENTWISE::"cast_f32_to_bool"(P, P, L);
    CAST_I64_TO_F32 = ELEMENTWISE::"cast_i64_to_f32"(P, P, L);
    CAST_I32_TO_F32 = ELEMENTWISE::"cast_i32_to_f32"(P, P, L);
    CAST_BOOL_TO_F32 = ELEMENTWISE::"cast_bool_to_f32"(P, P, L);
    FILL = ELEMENTWISE::"fill_f32"(P, L, F);
    SCALE = ELEMENTWISE::"scale_f32"(P, L, F);

    REDUCE_ROWS = REDUCE::"reduce_rows_f32"(P, P, L, L, I);
    ROW_SUMS_F64 = REDUCE::"row_sums_f64"(P, P, L, L);
    COL_SUM_PARTIALS = REDUCE::"col_sum_partials"(P, P, L, L, L);
    SUM_PARTIALS = REDUCE::"sum_partials"(P, P, L, L);
    F64_TO_F32 = REDUCE::"f64_to_f32"(P, P, L);
    FIRST_NON_FINITE = REDUCE::"first_non_finite"(P, P, L);

    SOFTMAX_ROWS = NORM::"softmax_rows_f32"(P, P, L, L);
    SOFTMAX_GRAD_ROWS = NORM::"softmax_grad_rows_f32"(P, P, P, L, L);
    LAYER_NORM_ROWS = NORM::"layer_norm_rows_f32"(P, P, P, P, P, P, L, L, F, I, I);
    LAYER_NORM_GRAD_ROWS = NORM::"layer_norm_grad_rows_f32"(P, P, P, P, P, P, L, L, F);
    LAYER_NORM_PARAM_PARTIALS = NORM::"layer_norm_param_partials"(P, P, P, P, P, P, L, L, L);

    STRIDED_READ_1 = COPY::"strided_read_1"(P, P, L, I, S, S, L);
    STRIDED_READ_2 = COPY::"strided_read_2"(P, P, L, I, S, S, L);
    STRIDED_READ_4 = COPY::"strided_read_4"(P, P, L, I, S, S, L);
    STRIDED_READ_8 = COPY::"strided_read_8"(P, P, L, I, S, S, L);
    STRIDED_WRITE_1 = COPY::"strided_write_1"(P, P, L, I, S, S, L);
    STRIDED_WRITE_2 = COPY::"strided_write_2"(P, P, L, I, S, S, L);
    STRIDED_WRITE_4 = COPY::"strided_write_4"(P, P, L, I, S, S, L);
    STRIDED_WRITE_8 = COPY::"strided_write_8"(P, P, L, I, S, S, L);
    GATHER_AXIS_1 = COPY::"gather_axis_1"(P, P, P, L, L, L, L);
    GATHER_AXIS_2 = COPY::"gather_axis_2"(P, P, P, L, L, L, L);
    GATHER_AXIS_4 = COPY::"gather_axis_4"(P, P, P, L, L, L, L);
    GATHER_AXIS_8 = COPY::"gather_axis_8"(P, P, P, L, L, L, L);
    GATHER_GRAD = COPY::"gather_grad_f32"(P, P, P, L, L, L, L);
    GATHER_GRAD_ATOMIC = COPY::"gather_grad_atomic_f32"(P, P, P, L, L, L, L);
    IM2COL = COPY::"im2col_f32"(P, P, L, L, L, L, L, L, L, L, L, L, L, L, L, L, I);

    GLORA_WEIGHT = GLORA::"glora_weight"(P, P, P, P, P, P, L, L, L, I, I, I, I, I);
    GLORA_BIAS = GLORA::"glora_bias"(P, P, P, P, P, P, P, L, L, L, I, I, I, I, I, I);
    GLORA_MASK = GLORA::"glora_mask"(P, P, P, L, L, I);
    GLORA_WRITE_VC = GLORA::"glora_write_vc"(P, P, L, L, I);
    GLORA_DE_GRADS = GLORA::"glora_de_grads"(P, P, P, P, L, I, I, I);
    GLORA_PROMPT_GRAD = GLORA::"glora_prompt_grad"(P, P, P, L, L, I);
    GLORA_C_GRADS = GLORA::"glora_c_grads"(P, P, P, P, P, L, L, I, I);

    XENT_ROWS = LOSS::"xent_rows"(P, P, P, L, L, D);
    XENT_MEAN = LOSS::"xent_mean"(P, P, L, L);
    XENT_GRAD_ROWS = LOSS::"xent_grad_rows"(P, P, P, P, L, L, L, F);

    ADAMW_MULTI = ADAMW::"adamw_multi"(P, D, D, D, D);
}

/// The kernel of a family for elements of `size` bytes.
pub(crate) fn by_size(
    family: [&'static Kernel; 4],
    size: usize,
) -> Result<&'static Kernel, String> {
    match size {
        1 => Ok(family[0]),
        2 => Ok(family[1]),
        4 => Ok(family[2]),
        8 => Ok(family[3]),
        s => Err(format!("internal: no kernel for {s}-byte elements")),
    }
}

pub(crate) const STRIDED_READ: [&Kernel; 4] = [
    &STRIDED_READ_1,
    &STRIDED_READ_2,
    &STRIDED_READ_4,
    &STRIDED_READ_8,
];
pub(crate) const STRIDED_WRITE: [&Kernel; 4] = [
    &STRIDED_WRITE_1,
    &STRIDED_WRITE_2,
    &STRIDED_WRITE_4,
    &STRIDED_WRITE_8,
];
pub(crate) const GATHER_AXIS: [&Kernel; 4] = [
    &GATHER_AXIS_1,
    &GATHER_AXIS_2,
    &GATHER_AXIS_4,
    &GATHER_AXIS_8,
];
pub(crate) const WHERE: [&Kernel; 4] = [&WHERE_1, &WHERE_2, &WHERE_4, &WHERE_8];

#[cfg(test)]
mod tests {
    use super::super::compile::kernel_sources;
    use super::super::launch::Kind;
    use super::*;

    /// The parameter kinds of every `extern "C" __global__` function of a source.
    fn signatures(src: &str) -> Vec<(String, Vec<Kind>)> {
        let mut out = Vec::new();
        let marker = "extern \"C\" __global__ void ";
        let mut rest = src;
        while let Some(at) = rest.find(marker) {
            rest = &rest[at + marker.len()..];
            let open = rest.find('(').expect("parameter list");
            let close = rest.find(')').expect("end of parameter list");
            let name = rest[..open].trim().to_string();
            let kinds = rest[open + 1..close]
                .split(',')
                .map(|p| {
                    let p = p.trim();
                    let ty = p.rsplit_once(' ').map(|(t, _)| t.trim()).unwrap_or(p);
                    if p.contains('*') {
                        Kind::Ptr
                    } else {
                        match ty.trim_start_matches("const ") {
                            "i64" | "long long" => Kind::I64,
                            "int" => Kind::I32,
                            "float" => Kind::F32,
                            "double" => Kind::F64,
                            "Dims" => Kind::Dims,
                            other => panic!("{name}: unknown parameter type {other:?}"),
                        }
                    }
                })
                .collect();
            out.push((name, kinds));
        }
        out
    }

    #[test]
    fn every_listed_kernel_matches_its_c_signature() {
        let mut seen = 0;
        for (file, src) in kernel_sources() {
            for (name, kinds) in signatures(src) {
                let listed = ALL
                    .iter()
                    .find(|k| k.name == name)
                    .unwrap_or_else(|| panic!("{file}: {name} is not listed"));
                assert_eq!(listed.file, *file, "{name}");
                assert_eq!(listed.params, kinds.as_slice(), "{name}");
                seen += 1;
            }
        }
        assert_eq!(
            seen,
            ALL.len(),
            "a listed kernel is missing from the sources"
        );
    }

    #[test]
    fn families_pick_the_kernel_of_the_element_size() {
        assert_eq!(by_size(STRIDED_READ, 4).unwrap().name, "strided_read_4");
        assert_eq!(by_size(WHERE, 1).unwrap().name, "where_1");
        assert!(by_size(GATHER_AXIS, 3).is_err());
    }
}
