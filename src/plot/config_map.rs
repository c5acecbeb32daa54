//! The chosen adapters as a picture: one row per adapted layer, one column per
//! term A–E, each cell coloured by its option (the per-layer figure of the GLoRA
//! paper), beside a bar chart of the adapter parameters by layer type, each bar split
//! by term. Rows come from [`crate::glora::table`]; the layout is a [`Scene`] like
//! every other chart, written as SVG and PNG.

use std::path::{Path, PathBuf};

use plotters::style::RGBColor;

use super::{
    Align, INK, LABEL_SIZE, Label, PALETTE, Rect, Scene, Shape, TICK_SIZE, TITLE_SIZE, WHITE,
    format_tick, nice_ticks, pixel_font, write_scene,
};
use crate::glora::Slot;
use crate::glora::table::{LayerRow, params_by_kind, short_code};

/// Writes the per-layer figure to `STEM.svg` and `STEM.png`.
pub fn config_chart(stem: &Path, rows: &[LayerRow], title: &str) -> anyhow::Result<[PathBuf; 2]> {
    write_scene(stem, &config_scene(rows, title))
}

/// Colours of the options, keyed by short code.
const NONE_COLOR: RGBColor = RGBColor(236, 236, 236);
const CONSTANT_COLOR: RGBColor = RGBColor(250, 215, 110);
const VECTOR_COLOR: RGBColor = RGBColor(240, 130, 55);
/// LoRA of the smallest and the largest rank in the figure; ranks between are mixed.
const LORA_LIGHT: RGBColor = RGBColor(140, 185, 230);
const LORA_DARK: RGBColor = RGBColor(25, 75, 155);

const CELL_W: i32 = 34;
const TOP: i32 = 100;
const BOTTOM: i32 = 30;
const GAP: i32 = 36;
const BAR_AREA_W: i32 = 300;

fn lora_rank(code: &str) -> Option<usize> {
    code.strip_prefix('L')?.parse().ok()
}

/// The colour of an option's short code, given the LoRA ranks the figure shows.
fn option_color(code: &str, ranks: &[usize]) -> RGBColor {
    match code {
        "vec" => VECTOR_COLOR,
        "c" => CONSTANT_COLOR,
        _ => match lora_rank(code) {
            Some(r) => {
                let i = ranks.iter().position(|&x| x == r).unwrap_or(0);
                let t = if ranks.len() > 1 {
                    i as f64 / (ranks.len() - 1) as f64
                } else {
                    1.0
                };
                let mix = |a: u8, b: u8| (a as f64 + t * (b as f64 - a as f64)).round() as u8;
                RGBColor(
                    mix(LORA_LIGHT.0, LORA_DARK.0),
                    mix(LORA_LIGHT.1, LORA_DARK.1),
                    mix(LORA_LIGHT.2, LORA_DARK.2),
                )
            }
            None => NONE_COLOR,
        },
    }
}

/// The longest prefix every name shares, cut back to a separator so that no name
/// loses part of a segment.
fn common_prefix(names: &[&str]) -> usize {
    let Some(first) = names.first() else {
        return 0;
    };
    let mut n = first.len();
    for name in &names[1..] {
        n = n.min(
            first
                .bytes()
                .zip(name.bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    let cut = first[..n].rfind(['.', '/']).map_or(0, |i| i + 1);
    // Keep every name non-empty.
    if names.iter().any(|s| s.len() <= cut) {
        0
    } else {
        cut
    }
}

fn label(scene: &mut Scene, text: &str, at: (i32, i32), size: u32, h: Align, v: Align) {
    scene.shapes.push(Shape::Text(Label {
        text: text.to_string(),
        at,
        size,
        h,
        v,
        vertical: false,
        color: INK,
    }));
}

fn fill(scene: &mut Scene, from: (i32, i32), to: (i32, i32), color: RGBColor) {
    scene.shapes.push(Shape::Rect {
        from,
        to,
        color,
        filled: true,
    });
}

fn config_scene(rows: &[LayerRow], title: &str) -> Scene {
    let n = rows.len().max(1) as i32;
    // Rows shrink for deep models; below 12 px the labels use the 1× pixel font.
    let cell_h = (900 / n).clamp(4, 18);
    let row_size: u32 = if cell_h >= 16 { TICK_SIZE } else { 7 };
    let label_h = pixel_font::extent("x", row_size).1 as i32 + 3;
    let label_every = ((label_h + cell_h - 1) / cell_h).max(1);
    let names: Vec<&str> = rows.iter().map(|r| r.layer.as_str()).collect();
    let cut = common_prefix(&names);
    let shown: Vec<&str> = names.iter().map(|s| &s[cut..]).collect();
    let label_w = shown
        .iter()
        .map(|s| pixel_font::extent(s, row_size).0 as i32)
        .max()
        .unwrap_or(0);
    let mut ranks: Vec<usize> = rows
        .iter()
        .flat_map(|r| Slot::ALL.map(|s| short_code(&r.config, s)))
        .filter_map(|c| lora_rank(&c))
        .collect();
    ranks.sort_unstable();
    ranks.dedup();
    let mut options: Vec<String> = ranks.iter().map(|r| format!("L{r}")).collect();
    options.extend(["vec", "c", "·"].map(String::from));
    let option_names: Vec<String> = options
        .iter()
        .map(|c| match c.as_str() {
            "vec" => "vector".to_string(),
            "c" => "constant".to_string(),
            "·" => "none".to_string(),
            l => format!("LoRA rank {}", &l[1..]),
        })
        .collect();
    let kinds = params_by_kind(rows);

    let grid = Rect {
        left: 16 + label_w + 8,
        top: TOP,
        right: 16 + label_w + 8 + 5 * CELL_W,
        bottom: TOP + n * cell_h,
    };
    let legend_left = grid.right + GAP;
    let legend_w = option_names
        .iter()
        .map(|s| pixel_font::extent(s, TICK_SIZE).0 as i32)
        .max()
        .unwrap_or(0)
        + 30;
    let legend = Rect {
        left: legend_left,
        top: TOP,
        right: legend_left + legend_w,
        bottom: TOP + 22 * options.len() as i32,
    };
    let kind_w = kinds
        .iter()
        .map(|(k, _)| pixel_font::extent(k, TICK_SIZE).0 as i32)
        .max()
        .unwrap_or(0);
    let bars_left = legend.right + GAP + kind_w + 8;
    let bar_h = 22;
    let bars = Rect {
        left: bars_left,
        top: TOP,
        right: bars_left + BAR_AREA_W,
        bottom: TOP + bar_h * kinds.len().max(1) as i32,
    };
    let terms_top = bars.bottom + 40;
    let terms = Rect {
        left: bars.left,
        top: terms_top,
        right: bars.left + 5 * 44,
        bottom: terms_top + 16,
    };
    let width = (bars.right + 70).max(terms.right + 16) as u32;
    let height = (grid.bottom + BOTTOM)
        .max(terms.bottom + BOTTOM)
        .max(legend.bottom + BOTTOM) as u32;
    let mut scene = Scene::new(width, height);
    fill(&mut scene, (0, 0), (width as i32, height as i32), WHITE);
    label(
        &mut scene,
        title,
        (width as i32 / 2, 14),
        TITLE_SIZE,
        Align::Middle,
        Align::Start,
    );

    // The grid: headers, cells, block separators, row labels.
    label(
        &mut scene,
        "options per layer",
        ((grid.left + grid.right) / 2, TOP - 50),
        LABEL_SIZE,
        Align::Middle,
        Align::Start,
    );
    for (j, slot) in Slot::ALL.iter().enumerate() {
        let x = grid.left + j as i32 * CELL_W + CELL_W / 2;
        label(
            &mut scene,
            slot.name(),
            (x, TOP - 8),
            TICK_SIZE,
            Align::Middle,
            Align::End,
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = grid.top + i as i32 * cell_h;
        for (j, &slot) in Slot::ALL.iter().enumerate() {
            let x = grid.left + j as i32 * CELL_W;
            let color = option_color(&short_code(&r.config, slot), &ranks);
            // A pixel of white between cells keeps neighbours apart.
            let gap = i32::from(cell_h > 6);
            fill(
                &mut scene,
                (x + 1, y + gap),
                (x + CELL_W - 1, y + cell_h - gap),
                color,
            );
        }
        if i as i32 % label_every == 0 {
            label(
                &mut scene,
                shown[i],
                (grid.left - 8, y + cell_h / 2),
                row_size,
                Align::End,
                Align::Middle,
            );
        }
        let ends_block = rows.get(i + 1).is_none_or(|next| next.block != r.block);
        if ends_block && !r.block.is_empty() && i + 1 < rows.len() {
            let yb = y + cell_h;
            scene.line(vec![(grid.left - 4, yb), (grid.right, yb)], INK, 1);
        }
    }
    scene.plots.push(grid);

    // The option legend.
    for (k, (code, name)) in options.iter().zip(&option_names).enumerate() {
        let y = legend.top + 22 * k as i32;
        fill(
            &mut scene,
            (legend.left, y),
            (legend.left + 18, y + 14),
            option_color(code, &ranks),
        );
        scene.shapes.push(Shape::Rect {
            from: (legend.left, y),
            to: (legend.left + 18, y + 14),
            color: INK,
            filled: false,
        });
        label(
            &mut scene,
            name,
            (legend.left + 26, y + 7),
            TICK_SIZE,
            Align::Start,
            Align::Middle,
        );
    }
    scene.legends.push(legend);

    // Parameters by layer type, stacked by term.
    label(
        &mut scene,
        "adapter parameters by layer type",
        ((bars.left + bars.right) / 2 - kind_w / 2, TOP - 50),
        LABEL_SIZE,
        Align::Middle,
        Align::Start,
    );
    let most = kinds
        .iter()
        .map(|(_, p)| p.iter().sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let (ticks, step) = nice_ticks(0.0, most, 3);
    let px = |v: f64| bars.left + (v / most * (bars.right - bars.left) as f64).round() as i32;
    for &t in &ticks {
        let x = px(t);
        scene.line(vec![(x, bars.top), (x, bars.bottom)], super::GRID, 1);
        label(
            &mut scene,
            &format_tick(t, step, most),
            (x, TOP - 6),
            TICK_SIZE,
            Align::Middle,
            Align::End,
        );
    }
    for (i, (kind, parts)) in kinds.iter().enumerate() {
        let y = bars.top + i as i32 * bar_h;
        label(
            &mut scene,
            kind,
            (bars.left - 8, y + bar_h / 2),
            TICK_SIZE,
            Align::End,
            Align::Middle,
        );
        let mut acc = 0usize;
        for (j, &p) in parts.iter().enumerate() {
            if p == 0 {
                continue;
            }
            let (x0, x1) = (px(acc as f64), px((acc + p) as f64));
            if x1 > x0 {
                fill(&mut scene, (x0, y + 3), (x1, y + bar_h - 3), PALETTE[j]);
            }
            acc += p;
        }
        label(
            &mut scene,
            &acc.to_string(),
            (px(acc as f64) + 6, y + bar_h / 2),
            TICK_SIZE,
            Align::Start,
            Align::Middle,
        );
    }
    scene.line(
        vec![(bars.left, bars.top), (bars.left, bars.bottom)],
        INK,
        1,
    );
    scene.plots.push(bars);
    for (j, slot) in Slot::ALL.iter().enumerate() {
        let x = terms.left + j as i32 * 44;
        fill(
            &mut scene,
            (x, terms.top),
            (x + 14, terms.top + 14),
            PALETTE[j],
        );
        label(
            &mut scene,
            slot.name(),
            (x + 20, terms.top + 7),
            TICK_SIZE,
            Align::Start,
            Align::Middle,
        );
    }
    scene.legends.push(terms);
    scene
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glora::{LayerShape, ModelConfig, layer_rows};

    fn rows() -> Vec<LayerRow> {
        let kinds = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"];
        let mut shapes = Vec::new();
        let mut config = ModelConfig::new();
        let options = [
            r#"{"A":"LoRA_4","B":"vector","C":"none","D":"constant","E":"vector"}"#,
            r#"{"A":"none","B":"LoRA_2","C":"vector","D":"none","E":"constant"}"#,
            r#"{"A":"constant","B":"none","C":"LoRA_4","D":"vector","E":"none"}"#,
        ];
        for b in 0..6 {
            for (k, kind) in kinds.iter().enumerate() {
                let name = format!("backbone.blocks.{b}.{kind}");
                shapes.push((
                    name.clone(),
                    LayerShape {
                        d_in: 64,
                        d_out: 64 * (1 + k),
                        has_bias: true,
                    },
                ));
                config.insert(name, serde_json::from_str(options[(b + k) % 3]).unwrap());
            }
        }
        layer_rows(&shapes, &config)
    }

    #[test]
    fn prefixes_are_cut_at_a_separator() {
        assert_eq!(common_prefix(&["a.blocks.0.x", "a.blocks.1.y"]), 9);
        assert_eq!(common_prefix(&["a.bc", "a.bd"]), 2);
        assert_eq!(common_prefix(&["only"]), 0);
        assert_eq!(common_prefix(&["x.y", "x.y"]), 2);
    }

    #[test]
    fn ranks_run_from_light_to_dark_and_other_options_keep_their_colours() {
        assert_eq!(option_color("L2", &[2, 4, 8]), LORA_LIGHT);
        assert_eq!(option_color("L8", &[2, 4, 8]), LORA_DARK);
        assert_eq!(option_color("L4", &[4]), LORA_DARK);
        assert_eq!(option_color("vec", &[4]), VECTOR_COLOR);
        assert_eq!(option_color("c", &[4]), CONSTANT_COLOR);
        assert_eq!(option_color("·", &[4]), NONE_COLOR);
    }

    #[test]
    fn every_cell_shows_its_option_and_nothing_leaves_its_area() {
        let rows = rows();
        let dir = tempfile::tempdir().unwrap();
        let scene = config_scene(&rows, "Chosen adapters");
        let [svg, png] =
            config_chart(&dir.path().join("config"), &rows, "Chosen adapters").unwrap();
        let svg_text = std::fs::read_to_string(svg).unwrap();
        for word in [
            "Chosen adapters",
            "LoRA rank 2",
            "LoRA rank 4",
            "attn.qkv",
            "mlp.fc2",
        ] {
            assert!(svg_text.contains(word), "{word} missing");
        }
        let image = image::open(png).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (scene.width, scene.height));
        let grid = scene.plots[0];
        let cell_h = (grid.bottom - grid.top) / rows.len() as i32;
        let ranks = [2, 4];
        // The centre of every cell has its option's colour.
        for (i, r) in rows.iter().enumerate() {
            for (j, &slot) in Slot::ALL.iter().enumerate() {
                let x = grid.left + j as i32 * CELL_W + CELL_W / 2;
                let y = grid.top + i as i32 * cell_h + cell_h / 2;
                let want = option_color(&short_code(&r.config, slot), &ranks);
                assert_eq!(
                    image.get_pixel(x as u32, y as u32).0,
                    [want.0, want.1, want.2],
                    "{} {slot}",
                    r.layer
                );
            }
        }
        // Option and term colours appear only in the grid, the bars and their legends.
        let data: Vec<[u8; 3]> = [LORA_LIGHT, LORA_DARK, VECTOR_COLOR, CONSTANT_COLOR]
            .iter()
            .chain(&PALETTE[..5])
            .map(|c| [c.0, c.1, c.2])
            .collect();
        let areas: Vec<Rect> = scene.plots.iter().chain(&scene.legends).copied().collect();
        for (x, y, p) in image.enumerate_pixels() {
            if data.contains(&p.0) {
                assert!(
                    areas.iter().any(|a| a.contains(x as i32, y as i32, 0)),
                    "{:?} at ({x}, {y}) outside every area",
                    p.0
                );
            }
        }
        // The bars: one per layer type, the widest one reaching the area's right edge.
        let bars = scene.plots[1];
        assert_eq!((bars.bottom - bars.top) / 22, 4);
    }

    #[test]
    fn deep_models_get_thin_rows_with_every_few_labelled() {
        let mut rows = Vec::new();
        for _ in 0..8 {
            rows.extend(self::tests::rows());
        }
        let scene = config_scene(&rows, "deep");
        let grid = scene.plots[0];
        assert!((grid.bottom - grid.top) / rows.len() as i32 <= 5);
        let labels = scene
            .labels()
            .filter(|l| l.text.contains("blocks."))
            .count();
        assert!(
            labels < rows.len() / 2,
            "{labels} labels for {} rows",
            rows.len()
        );
        assert!(scene.height < 1100);
    }
}
