//! `--help` that explains: every argument of every `glora` subcommand has a help line.
//! Checked twice: on clap's command tree, naming `subcommand --flag` for each argument
//! without help, and on the real binary's `SUB --help` output, as a person reads it.
//! Also checks that `train`, `search` and `pipeline` take the same data flags.

use std::process::Command;

use clap::{CommandFactory, Parser};
use glora::cli::{Cli, Command as Sub};
use glora::train::prepare::DataPlan;

/// Every command of the tree with its path from the root (`[]`, `["train"]`,
/// `["bench", "train"]`, …), depth first.
fn commands() -> Vec<(Vec<String>, clap::Command)> {
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, clap::Command)>) {
        out.push((path.clone(), cmd.clone()));
        for sub in cmd.get_subcommands() {
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            walk(sub, p, out);
        }
    }
    let mut out = Vec::new();
    walk(&Cli::command(), Vec::new(), &mut out);
    out
}

/// How a person names an argument: `--long`, `-s` or `<VALUE>`.
fn arg_name(a: &clap::Arg) -> String {
    if let Some(l) = a.get_long() {
        format!("--{l}")
    } else if let Some(s) = a.get_short() {
        format!("-{s}")
    } else {
        format!("<{}>", a.get_id().as_str().to_uppercase())
    }
}

/// The arguments a person sees: not clap's own help and version flags, not hidden ones.
fn visible_args(cmd: &clap::Command) -> impl Iterator<Item = &clap::Arg> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set() && !["help", "version"].contains(&a.get_id().as_str()))
}

#[test]
fn every_argument_and_subcommand_has_help_text() {
    let mut missing = Vec::new();
    let mut checked = 0;
    for (path, cmd) in commands() {
        let sub = if path.is_empty() {
            "glora".to_string()
        } else {
            path.join(" ")
        };
        if !path.is_empty()
            && cmd
                .get_about()
                .is_none_or(|t| t.to_string().trim().is_empty())
        {
            missing.push(format!("{sub} (the subcommand itself)"));
        }
        for a in visible_args(&cmd) {
            checked += 1;
            let help = a.get_help().or(a.get_long_help());
            if help.is_none_or(|t| t.to_string().trim().is_empty()) {
                missing.push(format!("{sub} {}", arg_name(a)));
            }
        }
    }
    assert!(
        checked > 150,
        "only {checked} arguments found: is the walk broken?"
    );
    assert!(
        missing.is_empty(),
        "arguments without help text:\n  {}",
        missing.join("\n  ")
    );
}

/// Lines of `--help` output that start an argument (`  -o, --output <DIR>  …`,
/// `      --data <PATH>`, `  <MODEL>  …`): the indented start of the Options and
/// Arguments lists. Help text is indented further, so a wrapped sentence that begins
/// with a flag is not taken for one.
fn argument_lines(help: &str) -> Vec<(usize, &str)> {
    help.lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start();
            let indent = l.len() - t.len();
            (1..=6).contains(&indent) && (t.starts_with('-') || t.starts_with('<'))
        })
        .collect()
}

#[test]
fn every_flag_in_the_binarys_help_output_has_text() {
    let mut missing = Vec::new();
    for (path, cmd) in commands() {
        if cmd.get_name() == "help" {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_glora"))
            .args(&path)
            .arg("--help")
            .output()
            .expect("the glora binary runs");
        let sub = format!("glora {} --help", path.join(" "));
        assert!(out.status.success(), "{sub} exited with {}", out.status);
        let help = String::from_utf8(out.stdout).expect("UTF-8 help");
        let lines: Vec<&str> = help.lines().collect();
        let args = argument_lines(&help);
        for (i, line) in &args {
            let t = line.trim_start();
            // The argument's spelling ends at the first double space; the help text, on
            // this line or (in the long layout) indented on the next, follows it. What
            // clap adds by itself, `[default: …]`, is not help.
            let is_help = |text: &str| {
                let text = text.trim();
                !text.is_empty() && !text.starts_with('[')
            };
            let same_line = t.split_once("  ").is_some_and(|(_, r)| is_help(r));
            let next_line = lines.get(i + 1).is_some_and(|n| {
                let nt = n.trim_start();
                is_help(nt) && n.len() - nt.len() > line.len() - t.len() + 2
            });
            if !same_line && !next_line {
                missing.push(format!("{sub}: {}", t.trim()));
            }
        }
        // The parser above must see every flag the command has, or it checks nothing.
        for a in visible_args(&cmd) {
            if let Some(l) = a.get_long() {
                let flag = format!("--{l}");
                assert!(
                    args.iter()
                        .any(|(_, line)| line.split([' ', ',']).any(|w| w == flag)),
                    "{sub} does not list {flag}:\n{help}"
                );
            }
        }
    }
    assert!(
        missing.is_empty(),
        "flags without help text in --help:\n  {}",
        missing.join("\n  ")
    );
}

/// The data flags every command that carves the training data takes, one definition.
const DATA_FLAGS: [&str; 7] = [
    "--data",
    "--val-fraction",
    "--split-seed",
    "--limit",
    "--k-shot",
    "--image-size",
    "--imagenet-norm",
];

#[test]
fn train_search_and_pipeline_take_the_same_data_flags() {
    let tree = Cli::command();
    for name in ["train", "search", "pipeline"] {
        let cmd = tree.find_subcommand(name).expect("subcommand");
        for flag in DATA_FLAGS {
            let a = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(&flag[2..]))
                .unwrap_or_else(|| panic!("glora {name} lacks {flag}"));
            let train_arg = tree
                .find_subcommand("train")
                .and_then(|t| t.get_arguments().find(|b| b.get_id() == a.get_id()))
                .expect("train has it");
            assert_eq!(
                a.get_help().map(|h| h.to_string()),
                train_arg.get_help().map(|h| h.to_string()),
                "glora {name} {flag} is defined apart from train's"
            );
        }
    }
}

fn plan_of(args: &[&str]) -> DataPlan {
    let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    match cli.command {
        Sub::Train(a) => a.data.plan(false).unwrap(),
        Sub::Search(a) => a.data.plan(false).unwrap(),
        Sub::Pipeline(a) => DataPlan {
            test_fraction: a.test_fraction,
            test_limit: a.test_limit,
            ..a.data.plan(false).unwrap()
        },
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn the_data_flags_reach_the_data_plan() {
    let flags = [
        "--data",
        "d.csv",
        "--val-fraction",
        "0.25",
        "--split-seed",
        "7",
        "--k-shot",
        "4",
        "--limit",
        "100",
        "--image-size",
        "32",
        "--imagenet-norm",
    ];
    let want = DataPlan {
        image_size: Some(32),
        imagenet_norm: true,
        val_fraction: 0.25,
        test_fraction: 0.0,
        split_seed: 7,
        k_shot: Some(4),
        limit: Some(100),
        test_limit: None,
        ..DataPlan::default()
    };
    let with = |head: &[&'static str]| -> Vec<&'static str> {
        head.iter().chain(flags.iter()).copied().collect()
    };
    assert_eq!(plan_of(&with(&["glora", "train", "n.glora"])), want);
    assert_eq!(
        plan_of(&with(&["glora", "search", "n.glora", "--budget", "5k"])),
        want
    );
    let mut pipeline = with(&["glora", "pipeline", "m.onnx", "-o", "run"]);
    pipeline.extend(["--test-fraction", "0.3", "--test-limit", "50"]);
    assert_eq!(
        plan_of(&pipeline),
        DataPlan {
            test_fraction: 0.3,
            test_limit: Some(50),
            ..want
        }
    );
    // Defaults as before the flags were shared: a tenth held out, seed 0, and the
    // pipeline's own test carve of a fifth.
    let plain = plan_of(&["glora", "pipeline", "m.onnx", "--data", "d", "-o", "r"]);
    assert_eq!(
        plain,
        DataPlan {
            test_fraction: 0.2,
            ..DataPlan::default()
        }
    );
}
