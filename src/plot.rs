//! Charts for reports: the search front (adapter parameters against validation
//! accuracy, one dot per evaluated genome, coloured by generation) and line charts
//! (several named series, for loss and accuracy curves).
//!
//! A chart is first laid out as a [`Scene`], a list of shapes and labels in pixel
//! coordinates, and then rendered twice with plotters: `NAME.svg`, whose labels are
//! SVG text that any viewer sets in its own font, and `NAME.png`, whose labels are
//! drawn from the small pixel font in [`pixel_font`] (plotters draws bitmap text
//! only through system font libraries, which we do not link). Both renderings share
//! the layout, so they show the same chart; both files are written atomically.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Chart size in pixels.
const WIDTH: u32 = 860;
const HEIGHT: u32 = 540;
/// Space around the plotting area: title above, tick labels and axis names below
/// and to the left, the legend to the right.
const MARGIN_TOP: i32 = 50;
const MARGIN_BOTTOM: i32 = 70;
const MARGIN_LEFT: i32 = 96;
const MARGIN_RIGHT: i32 = 24;
/// The legend column's widest extent, and where its names start after the marks.
const LEGEND_MAX_WIDTH: i32 = 260;
const LEGEND_TEXT_OFFSET: i32 = 28;
const TITLE_SIZE: u32 = 20;
const LABEL_SIZE: u32 = 16;
const TICK_SIZE: u32 = 14;
const TARGET_TICKS: usize = 6;

/// The words on a chart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChartText {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
}

impl ChartText {
    pub fn new(title: &str, x_label: &str, y_label: &str) -> ChartText {
        ChartText {
            title: title.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
        }
    }
}

/// One evaluated genome on the search front.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrontPoint {
    pub params: f64,
    pub accuracy: f64,
    pub generation: usize,
}

/// A named line of `(x, y)` points; non-finite points break the line.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Writes the search front to `STEM.svg` and `STEM.png`: every point coloured by its
/// generation, the best genome ringed, and the budget as a dashed vertical line.
pub fn search_front(
    stem: &Path,
    points: &[FrontPoint],
    best: Option<(f64, f64)>,
    budget: Option<f64>,
    text: &ChartText,
) -> anyhow::Result<[PathBuf; 2]> {
    write_scene(stem, &front_scene(points, best, budget, text))
}

/// Writes a line chart of `series` to `STEM.svg` and `STEM.png`.
pub fn line_chart(
    stem: &Path,
    series: &[Series],
    text: &ChartText,
) -> anyhow::Result<[PathBuf; 2]> {
    write_scene(stem, &line_scene(series, text))
}

/// Colours of successive series.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];
/// Anchors of the generation gradient, early to late (dark violet to green-yellow).
const GRADIENT: [RGBColor; 5] = [
    RGBColor(68, 1, 84),
    RGBColor(59, 82, 139),
    RGBColor(33, 145, 140),
    RGBColor(94, 201, 98),
    RGBColor(200, 190, 20),
];
const INK: RGBColor = RGBColor(20, 20, 20);
const GRID: RGBColor = RGBColor(225, 225, 225);
const BEST: RGBColor = RGBColor(220, 20, 60);
const BUDGET: RGBColor = RGBColor(110, 110, 110);

/// The colour of `t` in [0, 1] along the generation gradient.
fn gradient(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (GRADIENT.len() - 1) as f64;
    let i = (pos.floor() as usize).min(GRADIENT.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (GRADIENT[i], GRADIENT[i + 1]);
    let mix = |x: u8, y: u8| (x as f64 + f * (y as f64 - x as f64)).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Where a label's anchor point sits along one of its sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Align {
    Start,
    Middle,
    End,
}

impl Align {
    fn h(self) -> HPos {
        match self {
            Align::Start => HPos::Left,
            Align::Middle => HPos::Center,
            Align::End => HPos::Right,
        }
    }

    fn v(self) -> VPos {
        match self {
            Align::Start => VPos::Top,
            Align::Middle => VPos::Center,
            Align::End => VPos::Bottom,
        }
    }
}

/// A label: its anchor point and where along its width (`h`) and height (`v`) the
/// anchor sits.
#[derive(Clone, Debug, PartialEq)]
struct Label {
    text: String,
    at: (i32, i32),
    size: u32,
    h: Align,
    v: Align,
    /// Rotated to read from bottom to top.
    vertical: bool,
    color: RGBColor,
}

#[derive(Clone, Debug, PartialEq)]
enum Shape {
    Line {
        points: Vec<(i32, i32)>,
        color: RGBColor,
        width: u32,
    },
    Dot {
        at: (i32, i32),
        radius: u32,
        color: RGBColor,
        filled: bool,
    },
    Rect {
        from: (i32, i32),
        to: (i32, i32),
        color: RGBColor,
        filled: bool,
    },
    Text(Label),
}

/// A chart laid out in pixels.
#[derive(Clone, Debug, Default, PartialEq)]
struct Scene {
    shapes: Vec<Shape>,
}

impl Scene {
    fn text(&mut self, text: &str, at: (i32, i32), size: u32, h: Align, v: Align) {
        self.shapes.push(Shape::Text(Label {
            text: text.to_string(),
            at,
            size,
            h,
            v,
            vertical: false,
            color: INK,
        }));
    }

    fn line(&mut self, points: Vec<(i32, i32)>, color: RGBColor, width: u32) {
        if points.len() >= 2 {
            self.shapes.push(Shape::Line {
                points,
                color,
                width,
            });
        }
    }

    fn labels(&self) -> impl Iterator<Item = &Label> {
        self.shapes.iter().filter_map(|s| match s {
            Shape::Text(l) => Some(l),
            _ => None,
        })
    }
}

/// Tick values at a round step inside `lo..=hi`, and the step.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = span / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let norm = raw / magnitude;
    let step = magnitude
        * if norm < 1.5 {
            1.0
        } else if norm < 3.0 {
            2.0
        } else if norm < 7.0 {
            5.0
        } else {
            10.0
        };
    // A value within rounding error of a tick counts as on it.
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    ((first..=last).map(|k| k as f64 * step).collect(), step)
}

/// Decimals that show every multiple of `step` exactly.
fn decimals_for(step: f64) -> usize {
    (0..=6)
        .find(|&d| {
            let scaled = step * 10f64.powi(d as i32);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.abs().max(1.0)
        })
        .unwrap_or(6)
}

/// A tick label; axes reaching 10 000 are written in k, a million in M.
fn format_tick(value: f64, step: f64, axis_max: f64) -> String {
    let (scale, suffix) = if axis_max >= 1e6 {
        (1e6, "M")
    } else if axis_max >= 1e4 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let decimals = decimals_for(step / scale);
    let text = format!("{:.*}", decimals, value / scale);
    let zero = text
        .trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.');
    if zero {
        format!("{:.*}", decimals, 0.0)
    } else {
        format!("{text}{suffix}")
    }
}

/// The range a set of values is drawn over: a little wider than the values, never
/// empty.
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        0.04 * (hi - lo)
    } else if lo != 0.0 {
        0.05 * lo.abs()
    } else {
        0.5
    };
    (lo - pad, hi + pad)
}

/// The plotting area and the data ranges it shows.
#[derive(Clone, Copy, Debug)]
struct Frame {
    left: i32,
    top: i32,
    right: i32,
    bottom: i32,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn px(&self, x: f64, y: f64) -> (i32, i32) {
        let fx = (x - self.x.0) / (self.x.1 - self.x.0);
        let fy = (y - self.y.0) / (self.y.1 - self.y.0);
        let px = self.left as f64 + fx * (self.right - self.left) as f64;
        let py = self.bottom as f64 - fy * (self.bottom - self.top) as f64;
        (px.round() as i32, py.round() as i32)
    }
}

/// Lays out the background, grid, ticks, axis names and title; returns the frame
/// the data is drawn in.
fn axes(
    scene: &mut Scene,
    x: (f64, f64),
    y: (f64, f64),
    text: &ChartText,
    legend_width: i32,
) -> Frame {
    let (xt, xs) = nice_ticks(x.0, x.1, TARGET_TICKS);
    let (yt, ys) = nice_ticks(y.0, y.1, TARGET_TICKS);
    let frame = Frame {
        left: MARGIN_LEFT,
        top: MARGIN_TOP,
        right: WIDTH as i32 - MARGIN_RIGHT - legend_width,
        bottom: HEIGHT as i32 - MARGIN_BOTTOM,
        x,
        y,
    };
    scene.shapes.push(Shape::Rect {
        from: (0, 0),
        to: (WIDTH as i32, HEIGHT as i32),
        color: WHITE,
        filled: true,
    });
    let x_max = frame.x.0.abs().max(frame.x.1.abs());
    for &t in &xt {
        let (px, _) = frame.px(t, 0.0);
        scene.line(vec![(px, frame.top), (px, frame.bottom)], GRID, 1);
        scene.line(vec![(px, frame.bottom), (px, frame.bottom + 5)], INK, 1);
        let label = format_tick(t, xs, x_max);
        scene.text(
            &label,
            (px, frame.bottom + 9),
            TICK_SIZE,
            Align::Middle,
            Align::Start,
        );
    }
    let y_max = frame.y.0.abs().max(frame.y.1.abs());
    for &t in &yt {
        let (_, py) = frame.px(0.0, t);
        scene.line(vec![(frame.left, py), (frame.right, py)], GRID, 1);
        scene.line(vec![(frame.left - 5, py), (frame.left, py)], INK, 1);
        let label = format_tick(t, ys, y_max);
        scene.text(
            &label,
            (frame.left - 9, py),
            TICK_SIZE,
            Align::End,
            Align::Middle,
        );
    }
    scene.shapes.push(Shape::Rect {
        from: (frame.left, frame.top),
        to: (frame.right, frame.bottom),
        color: INK,
        filled: false,
    });
    let mid_x = (frame.left + frame.right) / 2;
    scene.text(
        &text.title,
        (mid_x, 16),
        TITLE_SIZE,
        Align::Middle,
        Align::Start,
    );
    scene.text(
        &text.x_label,
        (mid_x, HEIGHT as i32 - 24),
        LABEL_SIZE,
        Align::Middle,
        Align::Middle,
    );
    scene.shapes.push(Shape::Text(Label {
        text: text.y_label.clone(),
        at: (22, (frame.top + frame.bottom) / 2),
        size: LABEL_SIZE,
        h: Align::Middle,
        v: Align::Middle,
        vertical: true,
        color: INK,
    }));
    frame
}

/// How a legend entry is marked.
enum Mark {
    Dot(RGBColor),
    Ring(RGBColor),
    Line(RGBColor),
    Dashed(RGBColor),
}

/// The width of the column a legend with `entries` takes right of the plot: its
/// marks, and its names at the pixel font's width (wider than most SVG fonts).
fn legend_width(entries: &[(Mark, String)]) -> i32 {
    let longest = entries
        .iter()
        .map(|(_, name)| pixel_font::extent(name, TICK_SIZE).0)
        .max();
    longest.map_or(0, |w| {
        (LEGEND_TEXT_OFFSET + 24 + w as i32).min(LEGEND_MAX_WIDTH)
    })
}

/// The legend, in the column right of the plotting area.
fn legend(scene: &mut Scene, frame: &Frame, entries: &[(Mark, String)]) {
    let x = frame.right + 16;
    for (i, (mark, name)) in entries.iter().enumerate() {
        let y = frame.top + 10 + 22 * i as i32;
        match mark {
            Mark::Dot(c) => scene.shapes.push(Shape::Dot {
                at: (x + 10, y),
                radius: 4,
                color: *c,
                filled: true,
            }),
            Mark::Ring(c) => scene.shapes.push(Shape::Dot {
                at: (x + 10, y),
                radius: 7,
                color: *c,
                filled: false,
            }),
            Mark::Line(c) => scene.line(vec![(x, y), (x + 20, y)], *c, 2),
            Mark::Dashed(c) => {
                scene.line(vec![(x, y), (x + 7, y)], *c, 2);
                scene.line(vec![(x + 13, y), (x + 20, y)], *c, 2);
            }
        }
        scene.text(
            name,
            (x + LEGEND_TEXT_OFFSET, y),
            TICK_SIZE,
            Align::Start,
            Align::Middle,
        );
    }
}

fn front_scene(
    points: &[FrontPoint],
    best: Option<(f64, f64)>,
    budget: Option<f64>,
    text: &ChartText,
) -> Scene {
    let last = points.iter().map(|p| p.generation).max().unwrap_or(0);
    let shade = |g: usize| gradient(g as f64 / last.max(1) as f64);
    let mut entries: Vec<(Mark, String)> = Vec::new();
    let mut shown = vec![0, last / 2, last];
    shown.dedup();
    for g in shown {
        entries.push((Mark::Dot(shade(g)), format!("generation {g}")));
    }
    if best.is_some() {
        entries.push((Mark::Ring(BEST), "best".to_string()));
    }
    if budget.is_some() {
        entries.push((Mark::Dashed(BUDGET), "budget".to_string()));
    }
    let mut scene = Scene::default();
    let xs = points
        .iter()
        .map(|p| p.params)
        .chain(budget)
        .chain(best.map(|b| b.0));
    let ys = points.iter().map(|p| p.accuracy).chain(best.map(|b| b.1));
    let frame = axes(
        &mut scene,
        padded_range(xs),
        padded_range(ys),
        text,
        legend_width(&entries),
    );
    if let Some(b) = budget.filter(|b| b.is_finite()) {
        let (px, _) = frame.px(b, 0.0);
        let mut y = frame.top;
        while y < frame.bottom {
            let end = (y + 8).min(frame.bottom);
            scene.line(vec![(px, y), (px, end)], BUDGET, 2);
            y += 14;
        }
    }
    // Early generations first, so later ones are drawn on top.
    let mut order: Vec<&FrontPoint> = points
        .iter()
        .filter(|p| p.params.is_finite() && p.accuracy.is_finite())
        .collect();
    order.sort_by_key(|p| p.generation);
    for p in order {
        scene.shapes.push(Shape::Dot {
            at: frame.px(p.params, p.accuracy),
            radius: 3,
            color: shade(p.generation),
            filled: true,
        });
    }
    if let Some((x, y)) = best {
        scene.shapes.push(Shape::Dot {
            at: frame.px(x, y),
            radius: 7,
            color: BEST,
            filled: false,
        });
    }
    legend(&mut scene, &frame, &entries);
    scene
}

fn line_scene(series: &[Series], text: &ChartText) -> Scene {
    let colors: Vec<RGBColor> = (0..series.len())
        .map(|i| PALETTE[i % PALETTE.len()])
        .collect();
    let entries: Vec<(Mark, String)> = series
        .iter()
        .zip(&colors)
        .map(|(s, &c)| (Mark::Line(c), s.name.clone()))
        .collect();
    let mut scene = Scene::default();
    let all = || series.iter().flat_map(|s| s.points.iter());
    let x = padded_range(all().map(|p| p.0));
    let y = padded_range(all().map(|p| p.1));
    let frame = axes(&mut scene, x, y, text, legend_width(&entries));
    for (s, &color) in series.iter().zip(&colors) {
        let mut run: Vec<(i32, i32)> = Vec::new();
        for &(x, y) in s.points.iter().chain([(f64::NAN, f64::NAN)].iter()) {
            if x.is_finite() && y.is_finite() {
                run.push(frame.px(x, y));
                continue;
            }
            // A point standing alone between gaps is drawn as a dot.
            if let [only] = run.as_slice() {
                scene.shapes.push(Shape::Dot {
                    at: *only,
                    radius: 3,
                    color,
                    filled: true,
                });
            }
            scene.line(std::mem::take(&mut run), color, 2);
        }
    }
    legend(&mut scene, &frame, &entries);
    scene
}

fn with_suffix(stem: &Path, ext: &str) -> PathBuf {
    let mut name = OsString::from(stem.as_os_str());
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

fn write_scene(stem: &Path, scene: &Scene) -> anyhow::Result<[PathBuf; 2]> {
    let svg_path = with_suffix(stem, "svg");
    let png_path = with_suffix(stem, "png");
    let svg = render_svg(scene).with_context(|| svg_path.display().to_string())?;
    crate::io::write_atomic(&svg_path, svg.as_bytes())
        .with_context(|| svg_path.display().to_string())?;
    let png = render_png(scene).with_context(|| png_path.display().to_string())?;
    crate::io::write_atomic(&png_path, &png).with_context(|| png_path.display().to_string())?;
    Ok([svg_path, png_path])
}

fn style(color: RGBColor, filled: bool, width: u32) -> ShapeStyle {
    ShapeStyle {
        color: color.to_rgba(),
        filled,
        stroke_width: width,
    }
}

/// Draws every shape but the labels.
fn draw_shapes<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    scene: &Scene,
) -> anyhow::Result<()> {
    let fail = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the chart: {e}");
    for shape in &scene.shapes {
        match shape {
            Shape::Line {
                points,
                color,
                width,
            } => area
                .draw(&PathElement::new(
                    points.clone(),
                    style(*color, false, *width),
                ))
                .map_err(fail)?,
            Shape::Dot {
                at,
                radius,
                color,
                filled,
            } => area
                .draw(&Circle::new(*at, *radius, style(*color, *filled, 2)))
                .map_err(fail)?,
            Shape::Rect {
                from,
                to,
                color,
                filled,
            } => area
                .draw(&Rectangle::new([*from, *to], style(*color, *filled, 1)))
                .map_err(fail)?,
            Shape::Text(_) => {}
        }
    }
    Ok(())
}

fn render_svg(scene: &Scene) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let area = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        draw_shapes(&area, scene)?;
        for label in scene.labels() {
            // plotters writes an SVG font size of size / 1.24; undo that so both
            // renderings agree.
            let mut font = ("sans-serif", f64::from(label.size) * 1.24)
                .into_font()
                .color(&label.color)
                .pos(Pos::new(label.h.h(), label.v.v()));
            if label.vertical {
                font = font.transform(FontTransform::Rotate270);
            }
            area.draw(&Text::new(label.text.clone(), label.at, font))
                .map_err(|e| anyhow!("drawing the chart: {e}"))?;
        }
        area.present()
            .map_err(|e| anyhow!("drawing the chart: {e}"))?;
    }
    Ok(out)
}

fn render_png(scene: &Scene) -> anyhow::Result<Vec<u8>> {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let mut pixels = vec![255u8; w * h * 3];
    {
        let area = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        draw_shapes(&area, scene)?;
        area.present()
            .map_err(|e| anyhow!("drawing the chart: {e}"))?;
    }
    let mut canvas = pixel_font::Canvas {
        pixels: &mut pixels,
        width: w,
        height: h,
    };
    for label in scene.labels() {
        canvas.draw(label);
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &pixels,
        WIDTH,
        HEIGHT,
        image::ExtendedColorType::Rgb8,
    )
    .context("encoding the PNG")?;
    Ok(png)
}

/// A 5×7 pixel font for PNG labels: digits, letters and the punctuation charts use.
/// Each glyph is seven rows of five cells above the baseline (`#` lit), written top
/// to bottom and separated by spaces, plus two rows below it for the letters with
/// descenders; a glyph takes six cells across with its spacing.
mod pixel_font {
    use super::{Align, Label};

    const GLYPHS: &[(char, &str)] = &[
        ('0', ".###. #...# #..## #.#.# ##..# #...# .###."),
        ('1', "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###."),
        ('2', ".###. #...# ....# ...#. ..#.. .#... #####"),
        ('3', "##### ...#. ..#.. ...#. ....# #...# .###."),
        ('4', "...#. ..##. .#.#. #..#. ##### ...#. ...#."),
        ('5', "##### #.... ####. ....# ....# #...# .###."),
        ('6', "..##. .#... #.... ####. #...# #...# .###."),
        ('7', "##### ....# ...#. ..#.. .#... .#... .#..."),
        ('8', ".###. #...# #...# .###. #...# #...# .###."),
        ('9', ".###. #...# #...# .#### ....# ...#. .##.."),
        ('A', ".###. #...# #...# ##### #...# #...# #...#"),
        ('B', "####. #...# #...# ####. #...# #...# ####."),
        ('C', ".###. #...# #.... #.... #.... #...# .###."),
        ('D', "###.. #..#. #...# #...# #...# #..#. ###.."),
        ('E', "##### #.... #.... ####. #.... #.... #####"),
        ('F', "##### #.... #.... ####. #.... #.... #...."),
        ('G', ".###. #...# #.... #.### #...# #...# .####"),
        ('H', "#...# #...# #...# ##### #...# #...# #...#"),
        ('I', ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###."),
        ('J', "..### ...#. ...#. ...#. ...#. #..#. .##.."),
        ('K', "#...# #..#. #.#.. ##... #.#.. #..#. #...#"),
        ('L', "#.... #.... #.... #.... #.... #.... #####"),
        ('M', "#...# ##.## #.#.# #.#.# #...# #...# #...#"),
        ('N', "#...# #...# ##..# #.#.# #..## #...# #...#"),
        ('O', ".###. #...# #...# #...# #...# #...# .###."),
        ('P', "####. #...# #...# ####. #.... #.... #...."),
        ('Q', ".###. #...# #...# #...# #.#.# #..#. .##.#"),
        ('R', "####. #...# #...# ####. #.#.. #..#. #...#"),
        ('S', ".#### #.... #.... .###. ....# ....# ####."),
        ('T', "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#.."),
        ('U', "#...# #...# #...# #...# #...# #...# .###."),
        ('V', "#...# #...# #...# #...# #...# .#.#. ..#.."),
        ('W', "#...# #...# #...# #.#.# #.#.# #.#.# .#.#."),
        ('X', "#...# #...# .#.#. ..#.. .#.#. #...# #...#"),
        ('Y', "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#.."),
        ('Z', "##### ....# ...#. ..#.. .#... #.... #####"),
        (' ', "..... ..... ..... ..... ..... ..... ....."),
        ('.', "..... ..... ..... ..... ..... .##.. .##.."),
        (',', "..... ..... ..... ..... .##.. ..#.. .#..."),
        ('-', "..... ..... ..... .###. ..... ..... ....."),
        ('+', "..... ..#.. ..#.. ##### ..#.. ..#.. ....."),
        (':', "..... .##.. .##.. ..... .##.. .##.. ....."),
        ('/', "....# ....# ...#. ..#.. .#... #.... #...."),
        ('(', "...#. ..#.. .#... .#... .#... ..#.. ...#."),
        (')', ".#... ..#.. ...#. ...#. ...#. ..#.. .#..."),
        ('[', ".###. .#... .#... .#... .#... .#... .###."),
        (']', ".###. ...#. ...#. ...#. ...#. ...#. .###."),
        ('%', "##... ##..# ...#. ..#.. .#... #..## ...##"),
        ('=', "..... ..... ##### ..... ##### ..... ....."),
        ('<', "...#. ..#.. .#... #.... .#... ..#.. ...#."),
        ('>', ".#... ..#.. ...#. ....# ...#. ..#.. .#..."),
        ('_', "..... ..... ..... ..... ..... ..... #####"),
        ('\'', "..#.. ..#.. .#... ..... ..... ..... ....."),
        ('*', "..... #.#.# .###. ##### .###. #.#.# ....."),
        ('#', ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#."),
        ('?', ".###. #...# ....# ...#. ..#.. ..... ..#.."),
        ('a', "..... ..... .###. ....# .#### #...# .####"),
        ('b', "#.... #.... ####. #...# #...# #...# ####."),
        ('c', "..... ..... .###. #.... #.... #...# .###."),
        ('d', "....# ....# .#### #...# #...# #...# .####"),
        ('e', "..... ..... .###. #...# ##### #.... .###."),
        ('f', "..##. .#..# .#... ###.. .#... .#... .#..."),
        ('g', "..... ..... .#### #...# #...# #...# .#### ....# .###."),
        ('h', "#.... #.... #.##. ##..# #...# #...# #...#"),
        ('i', "..#.. ..... .##.. ..#.. ..#.. ..#.. .###."),
        ('j', "...#. ..... ..##. ...#. ...#. ...#. ...#. #..#. .##.."),
        ('k', "#.... #.... #..#. #.#.. ##... #.#.. #..#."),
        ('l', ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###."),
        ('m', "..... ..... ##.#. #.#.# #.#.# #.#.# #...#"),
        ('n', "..... ..... #.##. ##..# #...# #...# #...#"),
        ('o', "..... ..... .###. #...# #...# #...# .###."),
        ('p', "..... ..... ####. #...# #...# #...# ####. #.... #...."),
        ('q', "..... ..... .#### #...# #...# #...# .#### ....# ....#"),
        ('r', "..... ..... #.##. ##..# #.... #.... #...."),
        ('s', "..... ..... .#### #.... .###. ....# ####."),
        ('t', ".#... .#... ###.. .#... .#... .#..# ..##."),
        ('u', "..... ..... #...# #...# #...# #..## .##.#"),
        ('v', "..... ..... #...# #...# #...# .#.#. ..#.."),
        ('w', "..... ..... #...# #...# #.#.# #.#.# .#.#."),
        ('x', "..... ..... #...# .#.#. ..#.. .#.#. #...#"),
        ('y', "..... ..... #...# #...# #...# #...# .#### ....# .###."),
        ('z', "..... ..... ##### ...#. ..#.. .#... #####"),
    ];
    pub const GLYPH_W: usize = 5;
    /// Rows above the baseline; the text box is this tall.
    pub const GLYPH_H: usize = 7;
    /// Cells a character advances, its spacing included.
    pub const ADVANCE: usize = GLYPH_W + 1;

    /// The rows of `c`'s glyph; characters the font lacks are drawn as `?`.
    pub fn glyph(c: char) -> Vec<&'static str> {
        let find = |ch: char| GLYPHS.iter().find(|(g, _)| *g == ch).map(|(_, rows)| *rows);
        let rows = find(c).or_else(|| find('?')).unwrap_or(GLYPHS[0].1);
        rows.split_whitespace().collect()
    }

    #[cfg(test)]
    pub fn all_glyphs() -> Vec<(char, Vec<&'static str>)> {
        GLYPHS.iter().map(|&(c, _)| (c, glyph(c))).collect()
    }

    /// Pixels per glyph cell at a font size in pixels.
    pub fn scale(size: u32) -> usize {
        ((size as f64 / 7.0).round() as usize).max(1)
    }

    /// Width and height in pixels of `text` at `size`, descenders left out.
    pub fn extent(text: &str, size: u32) -> (usize, usize) {
        let s = scale(size);
        let n = text.chars().count();
        ((n * ADVANCE).saturating_sub(1) * s, GLYPH_H * s)
    }

    /// An RGB image to draw labels into.
    pub struct Canvas<'a> {
        pub pixels: &'a mut [u8],
        pub width: usize,
        pub height: usize,
    }

    impl Canvas<'_> {
        fn put(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
            if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
                return;
            }
            let i = (y as usize * self.width + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&rgb);
        }

        /// Draws `label` with its anchor as [`Label`] says.
        pub fn draw(&mut self, label: &Label) {
            let s = scale(label.size);
            let (w, h) = extent(&label.text, label.size);
            let (w, h) = (w as i64, h as i64);
            // The text box's top-left corner relative to the anchor, unrotated.
            let offset = |align: Align, extent: i64| match align {
                Align::Start => 0,
                Align::Middle => -extent / 2,
                Align::End => -extent,
            };
            let (dx, dy) = (offset(label.h, w), offset(label.v, h));
            let rgb = [label.color.0, label.color.1, label.color.2];
            let (ax, ay) = (label.at.0 as i64, label.at.1 as i64);
            for (k, c) in label.text.chars().enumerate() {
                for (row, bits) in glyph(c).iter().enumerate() {
                    for (col, b) in bits.bytes().enumerate() {
                        if b != b'#' {
                            continue;
                        }
                        let x0 = ((k * ADVANCE + col) * s) as i64 + dx;
                        let y0 = (row * s) as i64 + dy;
                        for (i, j) in (0..s as i64).flat_map(|i| (0..s as i64).map(move |j| (i, j)))
                        {
                            let (x, y) = (x0 + i, y0 + j);
                            // Vertical text reads upwards: (x, y) → (y, −x).
                            let (px, py) = if label.vertical { (y, -x) } else { (x, y) };
                            self.put(ax + px, ay + py, rgb);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
