//! `report.html`: one self-contained page per run, and one for the demo's comparison
//! linking the runs' pages. Styles and figures are inline (the charts' SVG files,
//! read back from the run folder), so the page opens anywhere with no network and
//! no files beside it; it has no scripts.

use std::fmt::Write as _;
use std::path::Path;

use super::report::{PipelineReport, op_rows, summary_rows};
use crate::glora::Slot;
use crate::glora::table::{CODE_LEGEND, LayerRow, option_counts, short_code};

const STYLE: &str = "
body { font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; color: #1a1a1a;
       max-width: 1120px; margin: 2em auto; padding: 0 1.2em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.8em; font-size: 1.25em; }
p.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #d4d4d4; padding: .25em .6em; text-align: left; }
th { background: #f3f4f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.block td { background: #f7f7fb; font-weight: 600; }
td.opt { text-align: center; font-family: ui-monospace, monospace; }
td.o-none { color: #999; } td.o-vec { background: #fbd2b3; } td.o-c { background: #fdefc0; }
td.o-lora { background: #c9dcf2; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; border: 1px solid #e5e5e5; }
figcaption { color: #555; font-size: .9em; }
.grid { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
figure.half { flex: 1 1 460px; max-width: 540px; margin: 0; }
";

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An SVG file's markup for inlining: the XML declaration dropped, or `None` when
/// the file is missing or is not SVG.
fn inline_svg(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let start = text.find("<svg")?;
    Some(text[start..].trim_end().to_string())
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        esc(title)
    )
}

fn row(s: &mut String, key: &str, value: &str) {
    let _ = writeln!(s, "<tr><th>{}</th><td>{value}</td></tr>", esc(key));
}

/// The figures a run folder holds, in reading order: (file stem, caption).
pub const FIGURES: [(&str, &str); 4] = [
    (
        "loss",
        "Training loss per step: the smoothed line over the raw values, epochs marked.",
    ),
    ("val_accuracy", "Validation metric after every epoch."),
    (
        "search_front",
        "Every genome the search evaluated: adapter parameters against validation accuracy.",
    ),
    (
        "config",
        "The chosen options per layer and term, and the adapter parameters by layer type.",
    ),
];

/// The page of one pipeline run, with the figures found in `dir`.
pub fn pipeline_page(r: &PipelineReport, dir: &Path) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "<h1>glora pipeline: {}</h1>", esc(&r.method));
    let _ = writeln!(
        b,
        "<p class=\"sub\">{} on {}</p>",
        esc(&r.model),
        esc(&r.data)
    );
    b.push_str("<h2>Summary</h2>\n<table>\n");
    for line in summary_rows(r) {
        let value = esc(&line.value);
        if line.key_result {
            row(&mut b, line.key, &format!("<strong>{value}</strong>"));
        } else {
            row(&mut b, line.key, &value);
        }
    }
    b.push_str("</table>\n");

    if !r.confusion.is_empty() {
        b.push_str("<h2>Test confusion matrix</h2>\n<table>\n");
        let rows = super::report::confusion_rows(r);
        for (i, cells) in rows.iter().enumerate() {
            b.push_str("<tr>");
            for (j, c) in cells.iter().enumerate() {
                let tag = if i == 0 || j == 0 { "th" } else { "td" };
                let _ = write!(b, "<{tag}>{}</{tag}>", esc(c));
            }
            b.push_str("</tr>\n");
        }
        b.push_str("</table>\n<p class=\"sub\">Rows are the true classes, columns the predicted ones.</p>\n");
    }

    let figures: Vec<(String, &str)> = FIGURES
        .iter()
        .filter_map(|(stem, caption)| {
            Some((inline_svg(&dir.join(format!("{stem}.svg")))?, *caption))
        })
        .collect();
    if !figures.is_empty() {
        b.push_str("<h2>Figures</h2>\n");
        for (svg, caption) in figures {
            let _ = writeln!(
                b,
                "<figure>\n{svg}\n<figcaption>{}</figcaption>\n</figure>",
                esc(caption)
            );
        }
    }

    if !r.layers.is_empty() {
        b.push_str("<h2>Chosen adapters</h2>\n");
        b.push_str(&option_summary(&r.layers));
        b.push_str(&layer_table(&r.layers));
        let _ = writeln!(
            b,
            "<p class=\"sub\">{}. The config itself is <code>config.json</code> beside this page.</p>",
            esc(&CODE_LEGEND.replace('*', ""))
        );
    }

    b.push_str("<div class=\"grid\">\n<div>\n<h2>Operators, base vs merged</h2>\n");
    b.push_str("<table>\n<tr><th>op</th><th>base</th><th>merged</th></tr>\n");
    for (op, base, merged) in op_rows(r) {
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td class=\"num\">{base}</td><td class=\"num\">{merged}</td></tr>",
            esc(op)
        );
    }
    b.push_str("</table>\n</div>\n<div>\n<h2>Time per stage</h2>\n");
    b.push_str("<table>\n<tr><th>stage</th><th>seconds</th></tr>\n");
    for t in &r.stage_seconds {
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td class=\"num\">{:.1}</td></tr>",
            esc(&t.stage),
            t.seconds
        );
    }
    b.push_str("</table>\n</div>\n</div>\n");
    page(&format!("glora pipeline: {}", r.method), &b)
}

/// How many layers took each option, per term.
fn option_summary(rows: &[LayerRow]) -> String {
    let mut s = String::from("<table>\n<tr><th>term</th><th>layers per option</th></tr>\n");
    for (slot, counts) in option_counts(rows) {
        let text: Vec<String> = counts
            .iter()
            .map(|(code, n)| format!("{} × {n}", esc(code)))
            .collect();
        let _ = writeln!(s, "<tr><td>{slot}</td><td>{}</td></tr>", text.join(", "));
    }
    s.push_str("</table>\n");
    s
}

/// The per-layer table, a shaded row opening each block.
fn layer_table(rows: &[LayerRow]) -> String {
    let mut s = String::from(
        "<table>\n<tr><th>layer</th><th>A</th><th>B</th><th>C</th><th>D</th><th>E</th>\
         <th>parameters</th></tr>\n",
    );
    let mut block: Option<&str> = None;
    for (i, r) in rows.iter().enumerate() {
        if !r.block.is_empty() && block != Some(r.block.as_str()) {
            let sum: usize = rows[i..]
                .iter()
                .take_while(|x| x.block == r.block)
                .map(|x| x.total())
                .sum();
            let _ = writeln!(
                s,
                "<tr class=\"block\"><td colspan=\"6\">{}</td><td class=\"num\">{sum}</td></tr>",
                esc(&r.block)
            );
        }
        block = Some(r.block.as_str());
        let name = if r.block.is_empty() {
            &r.layer
        } else {
            &r.kind
        };
        let _ = write!(s, "<tr><td>{}</td>", esc(name));
        for slot in Slot::ALL {
            let code = short_code(&r.config, slot);
            let class = match code.as_str() {
                "vec" => "o-vec",
                "c" => "o-c",
                "·" => "o-none",
                _ => "o-lora",
            };
            let _ = write!(s, "<td class=\"opt {class}\">{}</td>", esc(&code));
        }
        let _ = writeln!(s, "<td class=\"num\">{}</td></tr>", r.total());
    }
    let total: usize = rows.iter().map(|r| r.total()).sum();
    let _ = writeln!(
        s,
        "<tr class=\"block\"><td colspan=\"6\">total</td><td class=\"num\">{total}</td></tr>"
    );
    s.push_str("</table>\n");
    s
}

/// Inline charts side by side, each with its caption; files that are missing are
/// left out.
pub fn figure_grid(figures: &[(String, std::path::PathBuf)]) -> String {
    let mut s = String::from("<div class=\"grid\">\n");
    for (caption, path) in figures {
        if let Some(svg) = inline_svg(path) {
            let _ = writeln!(
                s,
                "<figure class=\"half\">\n{svg}\n<figcaption>{}</figcaption>\n</figure>",
                esc(caption)
            );
        }
    }
    s.push_str("</div>\n");
    s
}

/// One method of a comparison page: its name, figures and where its page is,
/// relative to the comparison page.
pub struct MethodLink<'a> {
    pub method: &'a str,
    pub cells: Vec<String>,
    pub page: String,
}

/// A comparison of runs (the demo's): an introduction, a table whose first column
/// links each run's own page, and the columns' names.
pub fn comparison_page(
    title: &str,
    intro: &str,
    columns: &[&str],
    methods: &[MethodLink],
    extra: &str,
) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "<h1>{}</h1>\n<p>{}</p>", esc(title), esc(intro));
    b.push_str("<table>\n<tr>");
    for c in columns {
        let _ = write!(b, "<th>{}</th>", esc(c));
    }
    b.push_str("</tr>\n");
    for m in methods {
        let _ = write!(
            b,
            "<tr><td><a href=\"{}\">{}</a></td>",
            esc(&m.page),
            esc(m.method)
        );
        for c in &m.cells {
            let _ = write!(b, "<td class=\"num\">{}</td>", esc(c));
        }
        b.push_str("</tr>\n");
    }
    b.push_str("</table>\n");
    b.push_str(extra);
    page(title, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("a<b & \"c\"'"), "a&lt;b &amp; &quot;c&quot;&#39;");
    }

    #[test]
    fn svg_files_are_inlined_without_their_declaration() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.svg");
        std::fs::write(&p, "<?xml version=\"1.0\"?>\n<svg width=\"3\"></svg>\n").unwrap();
        assert_eq!(inline_svg(&p).as_deref(), Some("<svg width=\"3\"></svg>"));
        std::fs::write(&p, "not a chart").unwrap();
        assert_eq!(inline_svg(&p), None);
        assert_eq!(inline_svg(&dir.path().join("missing.svg")), None);
    }

    #[test]
    fn a_comparison_links_every_method() {
        let html = comparison_page(
            "demo",
            "two <methods>",
            &["method", "acc"],
            &[
                MethodLink {
                    method: "lora",
                    cells: vec!["80%".into()],
                    page: "lora/report.html".into(),
                },
                MethodLink {
                    method: "glora",
                    cells: vec!["90%".into()],
                    page: "glora/report.html".into(),
                },
            ],
            "",
        );
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<a href=\"lora/report.html\">lora</a>"));
        assert!(html.contains("<a href=\"glora/report.html\">glora</a>"));
        assert!(html.contains("two &lt;methods&gt;"));
        assert!(!html.contains("<script"), "the page has no scripts");
    }
}
