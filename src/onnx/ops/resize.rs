//! Resize: its string-valued attributes to and from [`ResizeAttrs`]. `antialias`,
//! `axes` and `keep_aspect_ratio_policy` exist from opset 18 and the
//! `half_pixel_symmetric` transform from opset 19, so export raises the opset when a
//! graph uses them.

use super::{ExportCtx, ExportNode, Importer, NodeCtx, Planned};
use crate::ir::{AspectPolicy, CoordTransform, NearestMode, Op, ResizeAttrs, ResizeMode};
use crate::onnx::OnnxError;
use crate::onnx::attrs;
use crate::onnx::pb::AttributeProto;

pub(super) fn importer(op_type: &str) -> Option<Importer> {
    match op_type {
        "Resize" => Some(resize),
        _ => None,
    }
}

const MODES: [(&str, ResizeMode); 3] = [
    ("nearest", ResizeMode::Nearest),
    ("linear", ResizeMode::Linear),
    ("cubic", ResizeMode::Cubic),
];

const COORDS: [(&str, CoordTransform); 7] = [
    ("half_pixel", CoordTransform::HalfPixel),
    ("half_pixel_symmetric", CoordTransform::HalfPixelSymmetric),
    ("pytorch_half_pixel", CoordTransform::PytorchHalfPixel),
    ("align_corners", CoordTransform::AlignCorners),
    ("asymmetric", CoordTransform::Asymmetric),
    ("tf_crop_and_resize", CoordTransform::TfCropAndResize),
    ("tf_half_pixel_for_nn", CoordTransform::TfHalfPixelForNn),
];

const NEAREST: [(&str, NearestMode); 4] = [
    ("round_prefer_floor", NearestMode::RoundPreferFloor),
    ("round_prefer_ceil", NearestMode::RoundPreferCeil),
    ("floor", NearestMode::Floor),
    ("ceil", NearestMode::Ceil),
];

const ASPECT: [(&str, AspectPolicy); 3] = [
    ("stretch", AspectPolicy::Stretch),
    ("not_larger", AspectPolicy::NotLarger),
    ("not_smaller", AspectPolicy::NotSmaller),
];

/// Reads string attribute `name` as one of `table`'s values (`default` when absent).
fn choice<T: Copy>(
    c: &NodeCtx,
    name: &str,
    table: &[(&str, T)],
    default: T,
) -> Result<T, OnnxError> {
    let Some(s) = c.attr(c.attrs.string(name))? else {
        return Ok(default);
    };
    table
        .iter()
        .find(|(k, _)| *k == s)
        .map(|(_, v)| *v)
        .ok_or_else(|| c.err(format!("attribute '{name}' value '{s}' is not supported")))
}

fn spelling<T: PartialEq>(table: &[(&'static str, T)], v: &T) -> &'static str {
    table.iter().find(|(_, x)| x == v).map_or("", |(k, _)| k)
}

fn resize(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    let d = ResizeAttrs::default();
    let a = c.attrs;
    let attrs = ResizeAttrs {
        mode: choice(c, "mode", &MODES, d.mode)?,
        coord: choice(c, "coordinate_transformation_mode", &COORDS, d.coord)?,
        nearest: choice(c, "nearest_mode", &NEAREST, d.nearest)?,
        cubic_coeff_a: c.attr(a.float("cubic_coeff_a"))?.unwrap_or(d.cubic_coeff_a),
        exclude_outside: c
            .attr(a.flag("exclude_outside"))?
            .unwrap_or(d.exclude_outside),
        extrapolation_value: c
            .attr(a.float("extrapolation_value"))?
            .unwrap_or(d.extrapolation_value),
        antialias: c.attr(a.flag("antialias"))?.unwrap_or(d.antialias),
        axes: c.attr(a.ints("axes"))?.map(<[i64]>::to_vec),
        aspect: choice(c, "keep_aspect_ratio_policy", &ASPECT, d.aspect)?,
    };
    c.simple(Op::Resize(attrs), 4, 1)
}

pub(super) fn required_opset(a: &ResizeAttrs) -> i64 {
    let d = ResizeAttrs::default();
    if a.coord == CoordTransform::HalfPixelSymmetric {
        19
    } else if a.antialias != d.antialias || a.axes.is_some() || a.aspect != d.aspect {
        18
    } else {
        0
    }
}

pub(super) fn export(cx: &mut ExportCtx, n: &ExportNode) -> Result<(), OnnxError> {
    let Op::Resize(a) = n.op else {
        return Err(n.err("is not a Resize"));
    };
    if a.coord == CoordTransform::TfHalfPixelForNn {
        return Err(n.err(
            "uses coordinate mode tf_half_pixel_for_nn, which only Resize-11 defines; it cannot be written at opset 17 or later",
        ));
    }
    let attribute = resize_attrs(a);
    cx.emit_as_is(n, attribute);
    Ok(())
}

/// Only what differs from ONNX's defaults: older opsets then never see an attribute
/// they lack, and an import reads back the same `ResizeAttrs`.
fn resize_attrs(a: &ResizeAttrs) -> Vec<AttributeProto> {
    let d = ResizeAttrs::default();
    let mut v = Vec::new();
    if a.mode != d.mode {
        v.push(attrs::string("mode", spelling(&MODES, &a.mode)));
    }
    if a.coord != d.coord {
        v.push(attrs::string(
            "coordinate_transformation_mode",
            spelling(&COORDS, &a.coord),
        ));
    }
    if a.nearest != d.nearest {
        v.push(attrs::string(
            "nearest_mode",
            spelling(&NEAREST, &a.nearest),
        ));
    }
    if a.cubic_coeff_a != d.cubic_coeff_a {
        v.push(attrs::float("cubic_coeff_a", a.cubic_coeff_a));
    }
    if a.exclude_outside {
        v.push(attrs::int("exclude_outside", 1));
    }
    if a.extrapolation_value != d.extrapolation_value {
        v.push(attrs::float("extrapolation_value", a.extrapolation_value));
    }
    if a.antialias {
        v.push(attrs::int("antialias", 1));
    }
    if let Some(axes) = &a.axes {
        v.push(attrs::ints("axes", axes.iter().copied()));
    }
    if a.aspect != d.aspect {
        v.push(attrs::string(
            "keep_aspect_ratio_policy",
            spelling(&ASPECT, &a.aspect),
        ));
    }
    v
}
