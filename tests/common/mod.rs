//! Helpers shared by the integration tests: locating fixtures (skipping with a notice
//! when they are absent) and running the `glora` binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The fixtures folder: `$GLORA_FIXTURES` or `~/.cache/glora/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("GLORA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/glora/fixtures")
        })
}

/// A fixture file, or `None` after printing why the calling test skips.
pub fn fixture(rel: &str) -> Option<PathBuf> {
    let p = fixtures_dir().join(rel);
    if p.exists() {
        Some(p)
    } else {
        println!(
            "SKIP: fixture {} is missing (run ../shared/fixtures/fetch.sh)",
            p.display()
        );
        None
    }
}

/// Runs the glora binary with `args`.
pub fn glora(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glora"))
        .args(args)
        .output()
        .expect("the glora binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a clean failure: non-zero exit, exactly one line on stderr that contains
/// every string in `needles`, and no panic or backtrace.
pub fn assert_one_line_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stdout: {}",
        stdout(o)
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "panic: {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "error line lacks '{n}': {}", lines[0]);
    }
}

/// A Python interpreter with the `onnx` package, if there is one.
pub fn python_with_onnx() -> Option<String> {
    let py = std::env::var("GLORA_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import onnx"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Some(py)
    } else {
        println!("SKIP: no Python with the onnx package (set GLORA_PYTHON)");
        None
    }
}

/// A Python interpreter that imports every module in `modules` (`torch`,
/// `transformers`), if there is one; otherwise prints why the caller skips.
pub fn python_with(modules: &[&str]) -> Option<String> {
    let py = std::env::var("GLORA_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Some(py)
    } else {
        println!(
            "SKIP: no Python with {} (set GLORA_PYTHON)",
            modules.join(" and ")
        );
        None
    }
}

/// Runs the strict ONNX checker on a file; returns its complaint, if any.
pub fn onnx_check(py: &str, path: &std::path::Path) -> Result<(), String> {
    let o = Command::new(py)
        .args([
            "-c",
            "import sys, onnx; onnx.checker.check_model(sys.argv[1], full_check=True)",
        ])
        .arg(path)
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// Runs the glora binary with `args`, asserting success; returns stdout.
pub fn glora_ok(args: &[&str]) -> String {
    let o = glora(args);
    assert!(
        o.status.success(),
        "glora {args:?} failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// A temporary path as the `&str` a command line takes.
pub fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// Writes `DIR/NAME.onnx`: a tiny ViT for 8×8 digits (dim 32, depth 2, 2 heads, MLP
/// 64), features only, built by `glora model vit`.
pub fn tiny_vit_onnx(dir: &std::path::Path, name: &str) -> PathBuf {
    let onnx = dir.join(format!("{name}.onnx"));
    glora_ok(&[
        "model",
        "vit",
        "--preset",
        "tiny-digits",
        "--dim",
        "32",
        "--depth",
        "2",
        "--heads",
        "2",
        "--mlp",
        "64",
        "--classes",
        "0",
        "-o",
        path_str(&onnx),
    ]);
    onnx
}

/// A headless Chromium: `$GLORA_CHROMIUM`, or `chromium` / `chromium-browser` /
/// `google-chrome` on the PATH; `None` after printing why the calling test skips.
pub fn chromium() -> Option<String> {
    let candidates: Vec<String> = std::env::var("GLORA_CHROMIUM")
        .ok()
        .into_iter()
        .chain(["chromium", "chromium-browser", "google-chrome"].map(String::from))
        .collect();
    for c in candidates {
        let works = Command::new(&c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if works {
            return Some(c);
        }
    }
    println!("SKIP: no headless Chromium (apt-get install chromium, or set GLORA_CHROMIUM)");
    None
}

/// A script appended to a copy of a page before it is opened: once everything has
/// loaded, it reports each image that failed to load and each inline chart that
/// rendered empty as a console error, then how many of each it checked.
const PAGE_CHECK: &str = r#"<script>
window.addEventListener("load", () => {
  const imgs = [...document.images], svgs = [...document.querySelectorAll("svg")];
  for (const i of imgs) if (!i.complete || i.naturalWidth === 0) console.error("missing image: " + i.src);
  for (const s of svgs) { const b = s.getBoundingClientRect(); if (b.width < 10 || b.height < 10) console.error("empty chart"); }
  console.log("page-check: " + imgs.length + " images, " + svgs.length + " charts");
});
</script>"#;

/// What headless Chromium saw of a page: its console messages, and how many images
/// and inline charts the page check found.
pub struct BrowserView {
    pub console: Vec<String>,
    pub images: usize,
    pub charts: usize,
}

/// Opens `page` in headless Chromium (a copy with [`PAGE_CHECK`] appended, beside
/// it so that relative links resolve), writes a full-width screenshot to `shot`,
/// and returns what the console said.
pub fn open_in_browser(
    browser: &str,
    page: &std::path::Path,
    shot: &std::path::Path,
) -> BrowserView {
    let html = std::fs::read_to_string(page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
    let checked = page.with_extension("checked.html");
    let body_end = html.rfind("</body>").expect("the page has a body");
    std::fs::write(
        &checked,
        format!("{}{PAGE_CHECK}\n{}", &html[..body_end], &html[body_end..]),
    )
    .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--window-size=1200,2200",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!(
            "file://{}",
            checked.canonicalize().unwrap().display()
        ))
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_file(&checked);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "chromium failed on {}:\n{err}",
        page.display()
    );
    // Console lines look like `[…:INFO:CONSOLE:12] "message", source: file:///… (12)`.
    let console: Vec<String> = err
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .filter_map(|l| l.split_once("] ").map(|(_, m)| m.to_string()))
        .collect();
    let mut view = BrowserView {
        console: Vec::new(),
        images: 0,
        charts: 0,
    };
    for m in console {
        let counts = m
            .strip_prefix("\"page-check: ")
            .and_then(|rest| rest.split_once('"'))
            .map(|(c, _)| c.to_string());
        match counts {
            Some(c) => {
                let nums: Vec<usize> = c
                    .split(|ch: char| !ch.is_ascii_digit())
                    .filter_map(|n| n.parse().ok())
                    .collect();
                view.images = nums[0];
                view.charts = nums[1];
            }
            None => view.console.push(m),
        }
    }
    view
}
