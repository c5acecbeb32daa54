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

fn line(name: &str, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.into(),
        points,
        style: SeriesStyle::Line,
    }
}

#[test]
fn a_line_chart_draws_each_series_in_its_colour() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("curves");
    let chart = LineChart {
        text: ChartText::new("Loss", "step", "loss"),
        series: vec![
            line(
                "train loss",
                (0..50)
                    .map(|i| (i as f64, 2.0 / (1.0 + i as f64)))
                    .collect(),
            ),
            line(
                "val loss",
                vec![(0.0, 1.8), (10.0, f64::NAN), (20.0, 0.5), (49.0, 0.3)],
            ),
        ],
        marks: None,
    };
    let [svg, png] = line_chart(&stem, &chart).unwrap();
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(svg_text.contains("train loss") && svg_text.contains("val loss"));
    let image = decode(&png);
    let has = |c: RGBColor| image.pixels().any(|p| p.0 == [c.0, c.1, c.2]);
    assert!(has(PALETTE[0]) && has(PALETTE[1]));
    // The NaN breaks the second series: its first point stands alone (a dot) and
    // the rest is one line.
    let scene = line_scene(&chart);
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
fn segments_are_clipped_to_the_rectangle() {
    let r = Rect {
        left: 0,
        top: 0,
        right: 10,
        bottom: 10,
    };
    // Inside: unchanged. Crossing the right edge: cut at x = 10, halfway up.
    assert_eq!(
        clip_segment((1.0, 1.0), (4.0, 5.0), &r),
        Some(((1.0, 1.0), (4.0, 5.0)))
    );
    assert_eq!(
        clip_segment((5.0, 5.0), (15.0, 0.0), &r),
        Some(((5.0, 5.0), (10.0, 2.5)))
    );
    // Passing above the rectangle: nothing.
    assert_eq!(clip_segment((-5.0, -1.0), (15.0, -2.0), &r), None);
    // A spike out through the top and back splits the line into two runs.
    let runs = clip_polyline(
        &[(0.0, 5.0), (4.0, 5.0), (5.0, -95.0), (6.0, 5.0), (9.0, 5.0)],
        &r,
    );
    assert_eq!(
        runs,
        vec![vec![(0, 5), (4, 5), (4, 0)], vec![(6, 0), (6, 5), (9, 5)]]
    );
}

#[test]
fn the_moving_average_starts_unbiased_and_follows_the_values() {
    let pts = vec![(0.0, 2.0), (1.0, 2.0), (2.0, 2.0)];
    // A constant series stays constant from the first point (no pull towards 0).
    for (_, y) in ema(&pts, 0.9) {
        assert!((y - 2.0).abs() < 1e-12);
    }
    // Hand-worked, w = 0.5 over the values 0, 4: acc = 0.5·(0.5·0) + 0.5·4 = 2,
    // norm = 0.5·0.5 + 0.5 = 0.75, so the second point is 2 / 0.75 = 8/3.
    let s = ema(&[(0.0, 0.0), (1.0, 4.0)], 0.5);
    assert_eq!(s[0], (0.0, 0.0));
    assert!((s[1].1 - 8.0 / 3.0).abs() < 1e-12);
    assert_eq!(ema_weight(10), 0.0);
    assert!((ema_weight(1600) - 0.975).abs() < 1e-12);
    assert_eq!(ema_weight(1_000_000), 0.99);
}

#[test]
fn the_y_range_follows_the_bulk_of_the_values() {
    // 200 values in [1, 2] and two spikes: the range stops short of the spikes.
    let mut v: Vec<f64> = (0..200).map(|i| 1.0 + i as f64 / 200.0).collect();
    v.push(1e6);
    v.push(-50.0);
    let (lo, hi) = robust_range(v.iter().copied());
    assert!(lo > 0.5 && lo < 1.0, "{lo}");
    assert!(hi > 2.0 && hi < 2.5, "{hi}");
    // Without outliers the whole range shows.
    let (lo, hi) = robust_range((0..100).map(|i| i as f64));
    assert!(lo < 0.0 && hi > 99.0);
    // One early value a little below the rest (a first epoch's accuracy) stays in
    // view: it would not squash the others.
    let mut acc: Vec<f64> = (0..60).map(|i| 0.7 + 0.25 * (i % 7) as f64 / 6.0).collect();
    acc[0] = 0.4;
    let (lo, _) = robust_range(acc.iter().copied());
    assert!(lo < 0.4, "{lo}");
    // Few values: all of them.
    assert_eq!(robust_range([0.0, 100.0].into_iter()), (-4.0, 104.0));
}

/// Every pixel of a data colour lies inside a plotting area or a legend.
fn assert_data_inside(image: &image::RgbImage, scene: &Scene, colours: &[RGBColor], slack: i32) {
    let wanted: Vec<[u8; 3]> = colours.iter().map(|c| [c.0, c.1, c.2]).collect();
    let mut seen = 0;
    for (x, y, p) in image.enumerate_pixels() {
        if !wanted.contains(&p.0) {
            continue;
        }
        seen += 1;
        let (x, y) = (x as i32, y as i32);
        let inside = scene.plots.iter().any(|r| r.contains(x, y, slack))
            || scene.legends.iter().any(|r| r.contains(x, y, 0));
        assert!(
            inside,
            "{:?} drawn at ({x}, {y}), outside the plot and legend",
            p.0
        );
    }
    assert!(seen > 100, "only {seen} data pixels: nothing was drawn?");
}

#[test]
fn a_spiky_loss_stays_inside_its_axes() {
    // 1,600 steps of a falling loss with zig-zag noise, spikes up to 1e4 and one
    // far below zero: the raw line, its smoothed line, epoch marks.
    let raw: Vec<(f64, f64)> = (1..=1600)
        .map(|i| {
            let base = 2.3 * (-(i as f64) / 400.0).exp() + 0.1;
            let zig = if i % 2 == 0 { 0.3 } else { -0.3 };
            let spike = match i % 97 {
                0 => 1e4,
                50 => -30.0,
                _ => 0.0,
            };
            (i as f64, base + zig + spike)
        })
        .collect();
    let w = ema_weight(raw.len());
    let chart = LineChart {
        text: ChartText::new("Training loss", "step", "cross-entropy"),
        series: vec![
            Series {
                name: "loss, EMA".into(),
                points: ema(&raw, w),
                style: SeriesStyle::Line,
            },
            Series {
                name: "loss, raw".into(),
                points: raw.clone(),
                style: SeriesStyle::Faint,
            },
        ],
        marks: Some(Marks {
            name: "epoch boundary".into(),
            at: (1..40).map(|e| 40.0 * e as f64).collect(),
        }),
    };
    let dir = tempfile::tempdir().unwrap();
    let [_, png] = line_chart(&dir.path().join("loss"), &chart).unwrap();
    let image = decode(&png);
    let scene = line_scene(&chart);
    let smooth = PALETTE[0];
    let pale = faint(PALETTE[0], 0.7);
    // A 2-pixel line may straddle the frame by a pixel.
    assert_data_inside(&image, &scene, &[smooth, pale, CLIPPED], 1);
    // The title band and the area under the x axis hold no data colour at all.
    let frame = scene.plots[0];
    for (x, y, p) in image.enumerate_pixels() {
        let (x, y) = (x as i32, y as i32);
        if y < frame.top - 2 || y > frame.bottom + 2 {
            assert!(
                ![smooth, pale].iter().any(|c| p.0 == [c.0, c.1, c.2]),
                "series colour at ({x}, {y})"
            );
        }
    }
    // The spikes are marked at the edges and counted in the legend.
    let marks_up = scene
        .shapes
        .iter()
        .filter(|s| matches!(s, Shape::Triangle { up: true, .. }))
        .count();
    assert!(marks_up >= 16, "{marks_up} marks above");
    assert!(
        scene
            .labels()
            .any(|l| l.text.ends_with("values off the axis"))
    );
    // The trend is readable: the smoothed line spans most of the plot's height.
    let ys: Vec<i32> = scene
        .shapes
        .iter()
        .filter_map(|s| match s {
            Shape::Line { points, color, .. } if *color == smooth && points.len() > 10 => {
                Some(points.iter().map(|p| p.1))
            }
            _ => None,
        })
        .flatten()
        .collect();
    let span = ys.iter().max().unwrap() - ys.iter().min().unwrap();
    assert!(
        span > (frame.bottom - frame.top) / 2,
        "smoothed line spans {span} px"
    );
    // Epoch marks are drawn inside the frame.
    assert_data_inside(&image, &scene, &[EPOCH_MARK], 0);
}

#[test]
fn per_epoch_points_and_the_search_front_stay_inside_their_axes() {
    let chart = LineChart {
        text: ChartText::new("Validation accuracy per epoch", "step", "accuracy"),
        series: vec![Series {
            name: "training".into(),
            points: (1..=30)
                .map(|e| (50.0 * e as f64, 1.0 - 0.5 / e as f64))
                .collect(),
            style: SeriesStyle::Points,
        }],
        marks: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let [_, png] = line_chart(&dir.path().join("val"), &chart).unwrap();
    let scene = line_scene(&chart);
    assert_data_inside(&decode(&png), &scene, &[PALETTE[0]], 3);
    let dots = scene
        .shapes
        .iter()
        .filter(|s| matches!(s, Shape::Dot { .. }))
        .count();
    assert_eq!(dots, 30);

    let points = front_points();
    let text = ChartText::new("Search front", "adapter parameters", "validation accuracy");
    let [_, png] = search_front(
        &dir.path().join("front"),
        &points,
        Some((4770.0, 0.66)),
        Some(5000.0),
        &text,
    )
    .unwrap();
    let scene = front_scene(&points, Some((4770.0, 0.66)), Some(5000.0), &text);
    // Dots of radius 3 (the best's ring: 7) may reach that far past the frame.
    assert_data_inside(&decode(&png), &scene, &[GRADIENT[0], GRADIENT[4], BEST], 8);
}

#[test]
fn an_unwritable_place_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("missing").join("chart");
    let err = line_chart(&stem, &LineChart::default()).unwrap_err();
    assert!(format!("{err:#}").contains("missing"), "{err:#}");
}

/// A wide line that zig-zags at every step: plotters' bitmap backend joined such
/// segments with unbounded miters that shot through the title and the axis labels.
#[test]
fn a_zig_zag_line_has_no_spikes_past_its_points() {
    let raw: Vec<(f64, f64)> = (1..=1600)
        .map(|i| {
            let base = 2.3 * (-(i as f64) / 400.0).exp() + 0.1;
            let zig = if i % 2 == 0 { 0.3 } else { -0.3 };
            (i as f64, base + zig)
        })
        .collect();
    let chart = LineChart {
        text: ChartText::new("Training loss", "step", "cross-entropy"),
        series: vec![line("raw", raw)],
        marks: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let [_, png] = line_chart(&dir.path().join("loss"), &chart).unwrap();
    let image = decode(&png);
    let scene = line_scene(&chart);
    assert_data_inside(&image, &scene, &[PALETTE[0]], 1);
}
