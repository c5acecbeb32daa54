//! Charts for reports: the search front (adapter parameters against validation
//! accuracy, one dot per evaluated genome, coloured by generation), line charts
//! (several named series, for loss and accuracy curves, clipped to their plotting
//! area) and the chosen adapters per layer ([`config_chart`]).
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
const LEGEND_MAX_WIDTH: i32 = 400;
/// A legend up to this wide fits the standard width; a wider one widens the chart.
const LEGEND_FITS: i32 = 240;
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

/// How a series is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeriesStyle {
    /// A line.
    #[default]
    Line,
    /// A thin line in a pale shade of the series before it: the raw values behind a
    /// smoothed line.
    Faint,
    /// A line with a dot at every point: few points, such as one per epoch.
    Points,
}

/// A named line of `(x, y)` points; non-finite points break the line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub style: SeriesStyle,
}

/// Vertical marks across the plotting area (epoch boundaries on a step axis).
#[derive(Clone, Debug, PartialEq)]
pub struct Marks {
    /// The legend's name for them.
    pub name: String,
    pub at: Vec<f64>,
}

/// A line chart: its words, its series and optional vertical marks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LineChart {
    pub text: ChartText,
    pub series: Vec<Series>,
    pub marks: Option<Marks>,
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

/// Writes a line chart to `STEM.svg` and `STEM.png`. Lines are clipped to the
/// plotting area, whose y range follows the bulk of the values (see
/// [`robust_range`]); values beyond it are marked at its edge and counted in the
/// legend.
pub fn line_chart(stem: &Path, chart: &LineChart) -> anyhow::Result<[PathBuf; 2]> {
    write_scene(stem, &line_scene(chart))
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
const EPOCH_MARK: RGBColor = RGBColor(200, 210, 230);
const CLIPPED: RGBColor = RGBColor(170, 0, 90);

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
    /// A small filled triangle centred on `at`, pointing up or down: a value beyond
    /// the axis, drawn at the edge it lies past.
    Triangle {
        at: (i32, i32),
        up: bool,
        color: RGBColor,
    },
    Text(Label),
}

/// A pixel rectangle: left, top, right, bottom (inclusive edges).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Rect {
    left: i32,
    top: i32,
    right: i32,
    bottom: i32,
}

impl Rect {
    fn contains_f(&self, p: (f64, f64)) -> bool {
        p.0 >= self.left as f64
            && p.0 <= self.right as f64
            && p.1 >= self.top as f64
            && p.1 <= self.bottom as f64
    }

    #[cfg(test)]
    fn contains(&self, x: i32, y: i32, slack: i32) -> bool {
        x >= self.left - slack
            && x <= self.right + slack
            && y >= self.top - slack
            && y <= self.bottom + slack
    }
}

/// A chart laid out in pixels, with the areas data and legends may be drawn in (the
/// pixel tests check that data colours stay inside them).
#[derive(Clone, Debug, PartialEq)]
struct Scene {
    width: u32,
    height: u32,
    shapes: Vec<Shape>,
    plots: Vec<Rect>,
    legends: Vec<Rect>,
}

impl Default for Scene {
    fn default() -> Scene {
        Scene::new(WIDTH, HEIGHT)
    }
}

impl Scene {
    fn new(width: u32, height: u32) -> Scene {
        Scene {
            width,
            height,
            shapes: Vec::new(),
            plots: Vec::new(),
            legends: Vec::new(),
        }
    }

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
    fn rect(&self) -> Rect {
        Rect {
            left: self.left,
            top: self.top,
            right: self.right,
            bottom: self.bottom,
        }
    }

    /// Pixel coordinates of a data point, unrounded (for clipping).
    fn pxf(&self, x: f64, y: f64) -> (f64, f64) {
        let fx = (x - self.x.0) / (self.x.1 - self.x.0);
        let fy = (y - self.y.0) / (self.y.1 - self.y.0);
        (
            self.left as f64 + fx * (self.right - self.left) as f64,
            self.bottom as f64 - fy * (self.bottom - self.top) as f64,
        )
    }

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
        right: scene.width as i32 - MARGIN_RIGHT - legend_width,
        bottom: scene.height as i32 - MARGIN_BOTTOM,
        x,
        y,
    };
    scene.shapes.push(Shape::Rect {
        from: (0, 0),
        to: (scene.width as i32, scene.height as i32),
        color: WHITE,
        filled: true,
    });
    scene.plots.push(frame.rect());
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
        (mid_x, scene.height as i32 - 24),
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
    Thin(RGBColor),
    Dashed(RGBColor),
    Triangle(RGBColor),
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
    if !entries.is_empty() {
        scene.legends.push(Rect {
            left: x - 2,
            top: frame.top,
            right: x + legend_width(entries),
            bottom: frame.top + 20 + 22 * entries.len() as i32,
        });
    }
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
            Mark::Thin(c) => scene.line(vec![(x, y), (x + 20, y)], *c, 1),
            Mark::Triangle(c) => scene.shapes.push(Shape::Triangle {
                at: (x + 10, y),
                up: true,
                color: *c,
            }),
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

/// Colour `c` mixed towards white by `t` in [0, 1]: the faint twin of a series colour.
fn faint(c: RGBColor, t: f64) -> RGBColor {
    let mix = |v: u8| (v as f64 + t * (255.0 - v as f64)).round() as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

/// The y range a line chart shows: every value when there are few, or when the
/// extremes are within three times the bulk's span; otherwise the bulk (the 1st to
/// 99th percentile, widened by a quarter of that span, never past the extremes), so
/// that a few spikes do not squash the trend into a flat line. Values outside are
/// marked at the edge.
fn robust_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.len() < 20 {
        return padded_range(v.into_iter());
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let (q_lo, q_hi) = (at(0.01), at(0.99));
    let span = q_hi - q_lo;
    let (min, max) = (v[0], v[v.len() - 1]);
    let lo = (q_lo - 0.25 * span).max(min);
    let hi = (q_hi + 0.25 * span).min(max);
    // Outliers that would take less than two thirds of the height stay in view.
    if max - min <= 3.0 * (hi - lo) {
        return padded_range([min, max].into_iter());
    }
    padded_range([lo, hi].into_iter())
}

/// The part of the segment `a`–`b` inside `r` (Liang–Barsky), or `None`.
fn clip_segment(a: (f64, f64), b: (f64, f64), r: &Rect) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    let edges = [
        (-dx, a.0 - r.left as f64),
        (dx, r.right as f64 - a.0),
        (-dy, a.1 - r.top as f64),
        (dy, r.bottom as f64 - a.1),
    ];
    for (p, q) in edges {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
            continue;
        }
        let t = q / p;
        if p < 0.0 {
            t0 = t0.max(t);
        } else {
            t1 = t1.min(t);
        }
        if t0 > t1 {
            return None;
        }
    }
    let at = |t: f64| (a.0 + t * dx, a.1 + t * dy);
    Some((at(t0), at(t1)))
}

/// The visible runs of a polyline clipped to `r`, in whole pixels.
fn clip_polyline(points: &[(f64, f64)], r: &Rect) -> Vec<Vec<(i32, i32)>> {
    let round = |p: (f64, f64)| (p.0.round() as i32, p.1.round() as i32);
    let mut runs: Vec<Vec<(i32, i32)>> = Vec::new();
    let mut open = false;
    for pair in points.windows(2) {
        match clip_segment(pair[0], pair[1], r) {
            Some((p, q)) => {
                let (p, q) = (round(p), round(q));
                let continues = open && runs.last().and_then(|run| run.last()) == Some(&p);
                if !continues {
                    runs.push(vec![p]);
                }
                runs.last_mut().expect("a run was opened").push(q);
                // The run goes on only when the segment ended inside the rectangle.
                open = q == round(pair[1]);
            }
            None => open = false,
        }
    }
    runs
}

/// The smoothing weight of an exponential moving average over `n` points: none for
/// a handful, about a fortieth of the run for long ones, at most 0.99.
pub fn ema_weight(n: usize) -> f64 {
    (1.0 - 40.0 / n.max(1) as f64).clamp(0.0, 0.99)
}

/// An exponential moving average with weight `w` on the past, corrected for its
/// start at zero (as TensorBoard's smoothing is); non-finite values are skipped.
pub fn ema(points: &[(f64, f64)], w: f64) -> Vec<(f64, f64)> {
    let mut acc = 0.0;
    let mut norm = 0.0;
    points
        .iter()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .map(|&(x, y)| {
            acc = w * acc + (1.0 - w) * y;
            norm = w * norm + (1.0 - w);
            (x, if norm > 0.0 { acc / norm } else { y })
        })
        .collect()
}

fn line_scene(chart: &LineChart) -> Scene {
    let mut colors = Vec::new();
    let mut next = 0;
    for s in &chart.series {
        // A faint series is the raw twin of the series before it and shares its hue.
        if s.style == SeriesStyle::Faint && next > 0 {
            colors.push(faint(PALETTE[(next - 1) % PALETTE.len()], 0.7));
        } else {
            colors.push(PALETTE[next % PALETTE.len()]);
            next += 1;
        }
    }
    let all = || chart.series.iter().flat_map(|s| s.points.iter());
    let x = padded_range(all().map(|p| p.0));
    let y = robust_range(all().map(|p| p.1));
    let beyond = all()
        .filter(|p| p.0.is_finite() && p.1.is_finite() && (p.1 < y.0 || p.1 > y.1))
        .count();
    let mut entries: Vec<(Mark, String)> = chart
        .series
        .iter()
        .zip(&colors)
        .map(|(s, &c)| match s.style {
            SeriesStyle::Faint => (Mark::Thin(c), s.name.clone()),
            _ => (Mark::Line(c), s.name.clone()),
        })
        .collect();
    if let Some(m) = &chart.marks {
        entries.push((Mark::Thin(EPOCH_MARK), m.name.clone()));
    }
    if beyond > 0 {
        let noun = if beyond == 1 { "value" } else { "values" };
        entries.push((
            Mark::Triangle(CLIPPED),
            format!("{beyond} {noun} off the axis"),
        ));
    }
    let lw = legend_width(&entries);
    let mut scene = Scene::new(WIDTH + (lw - LEGEND_FITS).max(0) as u32, HEIGHT);
    let frame = axes(&mut scene, x, y, &chart.text, lw);
    let rect = frame.rect();
    if let Some(m) = &chart.marks {
        for &at in m.at.iter().filter(|v| v.is_finite()) {
            let (px, _) = frame.px(at, y.0);
            if px > frame.left && px < frame.right {
                scene.line(
                    vec![(px, frame.top + 1), (px, frame.bottom - 1)],
                    EPOCH_MARK,
                    1,
                );
            }
        }
    }
    // Faint series first, so the lines they accompany are drawn over them.
    let mut order: Vec<usize> = (0..chart.series.len()).collect();
    order.sort_by_key(|&i| chart.series[i].style != SeriesStyle::Faint);
    for i in order {
        let (s, color) = (&chart.series[i], colors[i]);
        let width = if s.style == SeriesStyle::Faint { 1 } else { 2 };
        let mut run: Vec<(f64, f64)> = Vec::new();
        for &(x, y) in s.points.iter().chain([(f64::NAN, f64::NAN)].iter()) {
            if x.is_finite() && y.is_finite() {
                run.push(frame.pxf(x, y));
                continue;
            }
            // A point standing alone between gaps is drawn as a dot.
            if let [only] = run.as_slice()
                && rect.contains_f(*only)
            {
                scene.shapes.push(Shape::Dot {
                    at: (only.0.round() as i32, only.1.round() as i32),
                    radius: 3,
                    color,
                    filled: true,
                });
            }
            for visible in clip_polyline(&run, &rect) {
                scene.line(visible, color, width);
            }
            run.clear();
        }
        if s.style == SeriesStyle::Points {
            for &(x, y) in s
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
            {
                let p = frame.pxf(x, y);
                if rect.contains_f(p) {
                    scene.shapes.push(Shape::Dot {
                        at: (p.0.round() as i32, p.1.round() as i32),
                        radius: 3,
                        color,
                        filled: true,
                    });
                }
            }
        }
    }
    // Values past the y range: a triangle at the edge they lie beyond.
    for &(x, v) in all().filter(|p| p.0.is_finite() && p.1.is_finite()) {
        if v < y.0 || v > y.1 {
            let (px, _) = frame.px(x, y.0);
            let up = v > y.1;
            let py = if up { frame.top + 6 } else { frame.bottom - 6 };
            scene.shapes.push(Shape::Triangle {
                at: (px.clamp(frame.left + 5, frame.right - 5), py),
                up,
                color: CLIPPED,
            });
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

/// Draws every shape but the labels. With `split_joins`, a line wider than a pixel
/// is drawn one segment at a time: plotters' bitmap backend joins wide segments
/// with unlimited miters, which shoot far past the points at sharp turns.
fn draw_shapes<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    scene: &Scene,
    split_joins: bool,
) -> anyhow::Result<()> {
    let fail = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the chart: {e}");
    for shape in &scene.shapes {
        match shape {
            Shape::Line {
                points,
                color,
                width,
            } if split_joins && *width > 1 => {
                for pair in points.windows(2) {
                    area.draw(&PathElement::new(
                        pair.to_vec(),
                        style(*color, false, *width),
                    ))
                    .map_err(fail)?;
                }
            }
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
            Shape::Triangle { at, up, color } => {
                let (x, y) = *at;
                let tip = if *up { y - 4 } else { y + 4 };
                let base = if *up { y + 3 } else { y - 3 };
                area.draw(&Polygon::new(
                    vec![(x, tip), (x - 4, base), (x + 4, base)],
                    style(*color, true, 1),
                ))
                .map_err(fail)?
            }
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
        let area =
            SVGBackend::with_string(&mut out, (scene.width, scene.height)).into_drawing_area();
        draw_shapes(&area, scene, false)?;
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
    let (w, h) = (scene.width as usize, scene.height as usize);
    let mut pixels = vec![255u8; w * h * 3];
    {
        let area = BitMapBackend::with_buffer(&mut pixels, (scene.width, scene.height))
            .into_drawing_area();
        draw_shapes(&area, scene, true)?;
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
        scene.width,
        scene.height,
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

mod config_map;
pub use config_map::config_chart;

#[cfg(test)]
mod tests;
