//! Chart layout and rendering: tick choice and labels against hand-worked values,
//! the pixel font's glyph table and extents, and both files of each chart decoded
//! and inspected.

use super::*;

#[test]
fn ticks_fall_on_round_steps_covering_the_range() {
    let (ticks, step) = nice_ticks(0.0, 5000.0, 6);
    assert_eq!(step, 1000.0);
    assert_eq!(ticks, vec![0.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0]);
    // 0.29 / 6 ≈ 0.048 rounds up to a step of 0.05: ticks 0.65 to 0.90.
    let (ticks, step) = nice_ticks(0.62, 0.91, 6);
    assert!((step - 0.05).abs() < 1e-12);
    assert_eq!(ticks.len(), 6);
    assert!((ticks[0] - 0.65).abs() < 1e-9 && (ticks[5] - 0.90).abs() < 1e-9);
    let (ticks, step) = nice_ticks(-3.0, 17.0, 6);
    assert_eq!(step, 5.0);
    assert_eq!(ticks, vec![0.0, 5.0, 10.0, 15.0]);
}

#[test]
fn tick_labels_show_the_step_and_shorten_large_values() {
    assert_eq!(format_tick(0.65, 0.05, 0.95), "0.65");
    assert_eq!(format_tick(0.6, 0.05, 0.95), "0.60");
    assert_eq!(format_tick(3000.0, 1000.0, 5000.0), "3000");
    assert_eq!(format_tick(25_000.0, 5000.0, 40_000.0), "25k");
    assert_eq!(format_tick(2_500.0, 500.0, 20_000.0), "2.5k");
    assert_eq!(format_tick(1_500_000.0, 500_000.0, 3e6), "1.5M");
    assert_eq!(format_tick(-1e-17, 0.1, 1.0), "0.0");
    assert_eq!(decimals_for(0.2), 1);
    assert_eq!(decimals_for(0.025), 3);
    assert_eq!(decimals_for(50.0), 0);
}

#[test]
fn ranges_are_padded_and_never_empty() {
    assert_eq!(padded_range([0.0, 100.0].into_iter()), (-4.0, 104.0));
    let close =
        |(a, b): (f64, f64), (c, d): (f64, f64)| (a - c).abs() < 1e-12 && (b - d).abs() < 1e-12;
    assert!(close(padded_range([2.0, 2.0].into_iter()), (1.9, 2.1)));
    assert_eq!(padded_range([0.0].into_iter()), (-0.5, 0.5));
    assert_eq!(padded_range(std::iter::empty()), (0.0, 1.0));
    assert!(close(
        padded_range([f64::NAN, 5.0].into_iter()),
        (4.75, 5.25)
    ));
}

#[test]
fn the_gradient_runs_from_its_first_to_its_last_anchor() {
    assert_eq!(gradient(0.0), GRADIENT[0]);
    assert_eq!(gradient(1.0), GRADIENT[4]);
    assert_eq!(gradient(0.5), GRADIENT[2]);
    // Halfway between anchors 0 and 1: (68+59)/2, (1+82)/2, (84+139)/2, rounded.
    assert_eq!(gradient(0.125), RGBColor(64, 42, 112));
}

#[test]
fn every_glyph_is_five_cells_wide_with_descenders_only_where_due() {
    let glyphs = pixel_font::all_glyphs();
    let mut seen = std::collections::HashSet::new();
    for (c, rows) in &glyphs {
        assert!(seen.insert(*c), "{c:?} twice");
        let descends = "gjpqy".contains(*c);
        // Descenders take two rows below the baseline.
        let expected_rows = pixel_font::GLYPH_H + if descends { 2 } else { 0 };
        assert_eq!(rows.len(), expected_rows, "{c:?}");
        for row in rows {
            assert_eq!(row.len(), pixel_font::GLYPH_W, "{c:?}");
            assert!(row.bytes().all(|b| b == b'#' || b == b'.'), "{c:?}");
        }
        let lit = rows
            .iter()
            .flat_map(|r| r.bytes())
            .filter(|&b| b == b'#')
            .count();
        assert_eq!(lit == 0, *c == ' ', "{c:?}");
    }
    for c in ('0'..='9').chain('A'..='Z').chain('a'..='z') {
        assert!(seen.contains(&c), "{c:?} is missing");
    }
    assert_ne!(pixel_font::glyph('k'), pixel_font::glyph('K'));
    assert_eq!(pixel_font::glyph('é'), pixel_font::glyph('?'));
}

#[test]
fn pixel_text_extent_is_counted_in_cells() {
    // Size 14 draws two pixels per cell: "ab" is 2 × 6 − 1 = 11 cells by 7.
    assert_eq!(pixel_font::scale(14), 2);
    assert_eq!(pixel_font::extent("ab", 14), (22, 14));
    assert_eq!(pixel_font::scale(3), 1);
    assert_eq!(pixel_font::extent("", 14), (0, 14));
}

#[test]
fn a_label_lights_exactly_its_glyph_cells() {
    let (w, h) = (40usize, 20usize);
    let mut pixels = vec![255u8; w * h * 3];
    let label = Label {
        text: "1".into(),
        at: (10, 5),
        size: 7,
        h: Align::Start,
        v: Align::Start,
        vertical: false,
        color: RGBColor(0, 0, 0),
    };
    pixel_font::Canvas {
        pixels: &mut pixels,
        width: w,
        height: h,
    }
    .draw(&label);
    // "1" at scale 1: rows ..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.
    let expected: Vec<(usize, usize)> = vec![
        (12, 5),
        (11, 6),
        (12, 6),
        (12, 7),
        (12, 8),
        (12, 9),
        (12, 10),
        (11, 11),
        (12, 11),
        (13, 11),
    ];
    let dark: Vec<(usize, usize)> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .filter(|&(x, y)| pixels[(y * w + x) * 3] == 0)
        .collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort_by_key(|&(x, y)| (y, x));
    assert_eq!(dark, expected_sorted);
}

fn front_points() -> Vec<FrontPoint> {
    (0..30)
        .map(|i| FrontPoint {
            params: 1000.0 + 130.0 * i as f64,
            accuracy: 0.5 + 0.01 * (i % 17) as f64,
            generation: i / 10,
        })
        .collect()
}

fn decode(path: &Path) -> image::RgbImage {
    image::open(path).unwrap().to_rgb8()
}

#[test]
fn the_search_front_is_written_as_svg_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("search_front");
    let points = front_points();
    let text = ChartText::new("Search front", "adapter parameters", "validation accuracy");
    let [svg, png] =
        search_front(&stem, &points, Some((4770.0, 0.66)), Some(5000.0), &text).unwrap();
    assert_eq!(svg, dir.path().join("search_front.svg"));
    assert_eq!(png, dir.path().join("search_front.png"));

    let svg_text = std::fs::read_to_string(&svg).unwrap();
    for word in [
        "Search front",
        "adapter parameters",
        "validation accuracy",
        "budget",
        "best",
    ] {
        assert!(svg_text.contains(word), "{word} missing from the SVG");
    }
    // One filled dot per point and three legend dots, plus the ring of the best
    // and the legend's ring.
    let circles = svg_text.matches("<circle").count();
    assert_eq!(circles, points.len() + 3 + 2);

    let image = decode(&png);
    assert_eq!(image.dimensions(), (WIDTH, HEIGHT));
    // The title is drawn: dark pixels in the band above the plotting area.
    let title_ink = (0..WIDTH)
        .flat_map(|x| (10..40).map(move |y| (x, y)))
        .filter(|&(x, y)| image.get_pixel(x, y).0 == [INK.0, INK.1, INK.2])
        .count();
    assert!(title_ink > 50, "{title_ink} title pixels");
    // A point of the last generation carries the gradient's last colour.
    let layout = front_scene(&points, Some((4770.0, 0.66)), Some(5000.0), &text);
    let last = points.iter().filter(|p| p.generation == 2).nth(3).unwrap();
    let at = layout
        .shapes
        .iter()
        .find_map(|s| match s {
            Shape::Dot {
                at,
                radius: 3,
                color,
                filled: true,
            } if *color == GRADIENT[4] => Some(*at),
            _ => None,
        })
        .unwrap();
    let p = image.get_pixel(at.0 as u32, at.1 as u32).0;
    assert_eq!(p, [GRADIENT[4].0, GRADIENT[4].1, GRADIENT[4].2], "{last:?}");
    // Nothing is left behind but the two charts.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn a_line_chart_draws_each_series_in_its_colour() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("curves");
    let series = vec![
        Series {
            name: "train loss".into(),
            points: (0..50)
                .map(|i| (i as f64, 2.0 / (1.0 + i as f64)))
                .collect(),
        },
        Series {
            name: "val loss".into(),
            points: vec![(0.0, 1.8), (10.0, f64::NAN), (20.0, 0.5), (49.0, 0.3)],
        },
    ];
    let text = ChartText::new("Loss", "step", "loss");
    let [svg, png] = line_chart(&stem, &series, &text).unwrap();
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(svg_text.contains("train loss") && svg_text.contains("val loss"));
    let image = decode(&png);
    let has = |c: RGBColor| image.pixels().any(|p| p.0 == [c.0, c.1, c.2]);
    assert!(has(PALETTE[0]) && has(PALETTE[1]));
    // The NaN breaks the second series: its first point stands alone (a dot) and
    // the rest is one line.
    let scene = line_scene(&series, &text);
    let lines_of_second = scene
        .shapes
        .iter()
        .filter(|s| matches!(s, Shape::Line { color, width: 2, .. } if *color == PALETTE[1]))
        .count();
    assert_eq!(lines_of_second, 2, "one data line and the legend's line");
    let dots_of_second = scene
        .shapes
        .iter()
        .filter(|s| matches!(s, Shape::Dot { color, .. } if *color == PALETTE[1]))
        .count();
    assert_eq!(dots_of_second, 1);
}

#[test]
fn an_unwritable_place_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("missing").join("chart");
    let err = line_chart(&stem, &[], &ChartText::default()).unwrap_err();
    assert!(format!("{err:#}").contains("missing"), "{err:#}");
}
