//! A chosen config as people read it: one row per adapted layer with the five terms
//! as short codes and the parameters each term reads, grouped by block, and the same
//! parameters summed by layer type (qkv, projection, fc1, fc2, …).
//!
//! Rows come from the supernet's layer shapes and a [`ModelConfig`]; `report.md`,
//! `report.html`, `glora inspect` and the per-layer figure in [`crate::plot`] print
//! them.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::config::{LayerConfig, ModelConfig};
use super::options::{AbOption, COption, DeOption, Slot};
use super::params::{LayerShape, ab_params, c_params, d_params, e_params};

/// One adapted layer under a config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRow {
    /// The layer's full name.
    pub layer: String,
    /// The name up to its block index (`blocks.3`), empty for a layer outside blocks.
    pub block: String,
    /// The name after the block index (`attn.qkv`): what the layer is in every block.
    pub kind: String,
    pub config: LayerConfig,
    /// Parameters each of A–E reads.
    pub params: [usize; 5],
}

impl LayerRow {
    pub fn total(&self) -> usize {
        self.params.iter().sum()
    }
}

/// Splits a layer name at its first all-digit segment (`.` or `/` separated):
/// `encoder.layer.3.attention.query` → (`encoder.layer.3`, `attention.query`).
/// A name without one is its own kind, outside any block.
pub fn block_and_kind(name: &str) -> (String, String) {
    let mut start = 0;
    for (i, c) in name.char_indices().chain([(name.len(), '.')]) {
        if c == '.' || c == '/' {
            let seg = &name[start..i];
            if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                let kind = name.get(i + 1..).unwrap_or("");
                let kind = if kind.is_empty() { seg } else { kind };
                return (name[..i].to_string(), kind.to_string());
            }
            start = i + 1;
        }
    }
    (String::new(), name.to_string())
}

/// The rows of `config` over the layers in `shapes` (in that order); layers the
/// config does not name are left out.
pub fn layer_rows(shapes: &[(String, LayerShape)], config: &ModelConfig) -> Vec<LayerRow> {
    shapes
        .iter()
        .filter_map(|(name, shape)| {
            let c = *config.get(name)?;
            let (block, kind) = block_and_kind(name);
            Some(LayerRow {
                layer: name.clone(),
                block,
                kind,
                config: c,
                params: [
                    ab_params(*shape, c.a),
                    ab_params(*shape, c.b),
                    c_params(*shape, c.c),
                    d_params(*shape, c.d),
                    e_params(*shape, c.e),
                ],
            })
        })
        .collect()
}

/// A term's option in at most three characters: `L4` (LoRA of rank 4), `vec`,
/// `c` (constant), `·` (none).
pub fn short_code(config: &LayerConfig, slot: Slot) -> String {
    let lora = |r: usize| format!("L{r}");
    match slot {
        Slot::A | Slot::B => {
            let o = if slot == Slot::A { config.a } else { config.b };
            match o {
                AbOption::Lora(r) => lora(r),
                AbOption::Vector => "vec".into(),
                AbOption::Constant => "c".into(),
                AbOption::None => "·".into(),
            }
        }
        Slot::C => match config.c {
            COption::Lora(r) => lora(r),
            COption::Vector => "vec".into(),
            COption::None => "·".into(),
        },
        Slot::D | Slot::E => {
            let o = if slot == Slot::D { config.d } else { config.e };
            match o {
                DeOption::Vector => "vec".into(),
                DeOption::Constant => "c".into(),
                DeOption::None => "·".into(),
            }
        }
    }
}

/// What the short codes mean, for under a table.
pub const CODE_LEGEND: &str =
    "L*r*: LoRA of rank *r*; vec: vector; c: constant (one scalar); ·: none";

/// Parameters by layer type, per term, in order of first appearance.
pub fn params_by_kind(rows: &[LayerRow]) -> Vec<(String, [usize; 5])> {
    let mut out: Vec<(String, [usize; 5])> = Vec::new();
    for r in rows {
        let i = match out.iter().position(|(k, _)| *k == r.kind) {
            Some(i) => i,
            None => {
                out.push((r.kind.clone(), [0; 5]));
                out.len() - 1
            }
        };
        for (sum, p) in out[i].1.iter_mut().zip(r.params) {
            *sum += p;
        }
    }
    out
}

/// How often each term took each option, over all rows: (term, [(code, count)]).
pub fn option_counts(rows: &[LayerRow]) -> Vec<(Slot, Vec<(String, usize)>)> {
    Slot::ALL
        .iter()
        .map(|&slot| {
            let mut counts: Vec<(String, usize)> = Vec::new();
            for r in rows {
                let code = short_code(&r.config, slot);
                match counts.iter_mut().find(|(c, _)| *c == code) {
                    Some(e) => e.1 += 1,
                    None => counts.push((code, 1)),
                }
            }
            counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            (slot, counts)
        })
        .collect()
}

/// The rows as a Markdown table: a bold row opens each block, whose layers then show
/// only their kind; parameters per layer, per block and in total.
pub fn markdown_table(rows: &[LayerRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| layer | A | B | C | D | E | parameters |");
    let _ = writeln!(s, "|---|:-:|:-:|:-:|:-:|:-:|--:|");
    for (block, members) in blocks(rows) {
        if !block.is_empty() {
            let sum: usize = members.iter().map(|r| r.total()).sum();
            let _ = writeln!(s, "| **{block}** | | | | | | **{sum}** |");
        }
        for r in members {
            let name = if block.is_empty() { &r.layer } else { &r.kind };
            let codes: Vec<String> = Slot::ALL
                .iter()
                .map(|&slot| short_code(&r.config, slot))
                .collect();
            let _ = writeln!(s, "| {name} | {} | {} |", codes.join(" | "), r.total());
        }
    }
    let total: usize = rows.iter().map(|r| r.total()).sum();
    let _ = writeln!(s, "| **total** | | | | | | **{total}** |");
    let _ = writeln!(s, "\n{CODE_LEGEND}.");
    s
}

/// The rows as aligned plain text for a terminal, grouped by block the same way.
pub fn text_table(rows: &[LayerRow]) -> String {
    let width = rows
        .iter()
        .map(|r| {
            if r.block.is_empty() {
                r.layer.chars().count()
            } else {
                2 + r.kind.chars().count()
            }
        })
        .chain(rows.iter().map(|r| r.block.chars().count()))
        .chain(["layer".len()])
        .max()
        .unwrap_or(5);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<width$}  {:>4} {:>4} {:>4} {:>4} {:>4}  {:>10}",
        "layer", "A", "B", "C", "D", "E", "parameters"
    );
    for (block, members) in blocks(rows) {
        if !block.is_empty() {
            let sum: usize = members.iter().map(|r| r.total()).sum();
            let _ = writeln!(s, "{block:<width$}  {:>24}  {sum:>10}", "");
        }
        for r in members {
            let name = if block.is_empty() {
                r.layer.clone()
            } else {
                format!("  {}", r.kind)
            };
            let c = |slot| short_code(&r.config, slot);
            let _ = writeln!(
                s,
                "{name:<width$}  {:>4} {:>4} {:>4} {:>4} {:>4}  {:>10}",
                c(Slot::A),
                c(Slot::B),
                c(Slot::C),
                c(Slot::D),
                c(Slot::E),
                r.total()
            );
        }
    }
    let total: usize = rows.iter().map(|r| r.total()).sum();
    let _ = writeln!(s, "{:<width$}  {:>24}  {total:>10}", "total", "");
    let _ = writeln!(s, "{}", CODE_LEGEND.replace('*', ""));
    s
}

/// Consecutive rows of the same block.
fn blocks(rows: &[LayerRow]) -> Vec<(&str, Vec<&LayerRow>)> {
    let mut out: Vec<(&str, Vec<&LayerRow>)> = Vec::new();
    for r in rows {
        match out.last_mut() {
            Some((b, members)) if *b == r.block => members.push(r),
            _ => out.push((&r.block, vec![r])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn shape(d_in: usize, d_out: usize, has_bias: bool) -> LayerShape {
        LayerShape::new(d_in, d_out, has_bias)
    }

    fn cfg(text: &str) -> LayerConfig {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn names_split_at_their_first_block_index() {
        let split = |n: &str| block_and_kind(n);
        assert_eq!(
            split("encoder.layer.3.attention.self.query"),
            ("encoder.layer.3".into(), "attention.self.query".into())
        );
        assert_eq!(
            split("blocks.10.mlp.fc2"),
            ("blocks.10".into(), "mlp.fc2".into())
        );
        assert_eq!(
            split("/m/layers.0/mlp/fc1"),
            ("/m/layers.0".into(), "mlp/fc1".into())
        );
        assert_eq!(split("head"), (String::new(), "head".into()));
        // A segment with letters and digits is not a block index.
        assert_eq!(split("fc2.layer1x"), (String::new(), "fc2.layer1x".into()));
        // A trailing index names the block and is its own kind.
        assert_eq!(split("layers.7"), ("layers.7".into(), "7".into()));
    }

    #[test]
    fn rows_count_each_term_as_the_reference_table_does() {
        let shapes = vec![
            ("blocks.0.attn.qkv".to_string(), shape(64, 192, true)),
            ("blocks.0.mlp.fc1".to_string(), shape(64, 256, false)),
            ("head".to_string(), shape(64, 5, true)),
        ];
        let mut config = ModelConfig::new();
        config.insert(
            "blocks.0.attn.qkv",
            cfg(r#"{"A":"LoRA_4","B":"vector","C":"LoRA_2","D":"constant","E":"vector"}"#),
        );
        config.insert(
            "blocks.0.mlp.fc1",
            cfg(r#"{"A":"constant","B":"none","C":"vector","D":"vector","E":"constant"}"#),
        );
        let rows = layer_rows(&shapes, &config);
        assert_eq!(
            rows.len(),
            2,
            "the layer the config does not name is left out"
        );
        // A LoRA_4: 4·(192+64) = 1024; B vector: 192; C LoRA_2: 2·64+2 = 130;
        // D constant: 1; E vector: 192.
        assert_eq!(rows[0].params, [1024, 192, 130, 1, 192]);
        assert_eq!(rows[0].total(), 1539);
        // No bias: D reads nothing.
        assert_eq!(rows[1].params, [1, 0, 64, 0, 1]);
        let codes: Vec<String> = Slot::ALL
            .iter()
            .map(|&s| short_code(&rows[0].config, s))
            .collect();
        assert_eq!(codes, ["L4", "vec", "L2", "c", "vec"]);
        let by_kind = params_by_kind(&rows);
        assert_eq!(
            by_kind[0],
            ("attn.qkv".to_string(), [1024, 192, 130, 1, 192])
        );
        assert_eq!(by_kind[1], ("mlp.fc1".to_string(), [1, 0, 64, 0, 1]));
    }

    #[test]
    fn the_tables_group_layers_by_block_with_sums() {
        let shapes: Vec<(String, LayerShape)> = ["blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1"]
            .iter()
            .map(|n| (n.to_string(), shape(10, 20, true)))
            .collect();
        let mut config = ModelConfig::new();
        for (n, _) in &shapes {
            config.insert(
                n.as_str(),
                cfg(r#"{"A":"none","B":"none","C":"none","D":"none","E":"vector"}"#),
            );
        }
        let rows = layer_rows(&shapes, &config);
        let md = markdown_table(&rows);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines[2], "| **blocks.0** | | | | | | **40** |");
        assert_eq!(lines[3], "| fc1 | · | · | · | · | vec | 20 |");
        assert_eq!(lines[5], "| **blocks.1** | | | | | | **20** |");
        assert_eq!(lines[7], "| **total** | | | | | | **60** |");
        let text = text_table(&rows);
        assert!(text.lines().nth(2).unwrap().starts_with("  fc1"), "{text}");
        assert!(
            text.contains("total") && text.trim_end().ends_with("none"),
            "{text}"
        );
        let counts = option_counts(&rows);
        assert_eq!(counts[4], (Slot::E, vec![("vec".to_string(), 3)]));
        assert_eq!(counts[0], (Slot::A, vec![("·".to_string(), 3)]));
    }
}
