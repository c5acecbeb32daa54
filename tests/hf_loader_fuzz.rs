//! Mutation fuzzing of the checkpoint loaders: a valid small checkpoint folder (its
//! weights recorded from the builder's own requests, so it needs no Python) has its
//! `config.json`, its shard index and its safetensors header mutated thousands of
//! times, byte-wise and by swapping numbers for hostile ones; every build must end in
//! a graph or an error, never a panic.

use std::path::Path;

use glora::models::builder::GraphBuilder;
use glora::models::{HfConfig, RandomWeights, RecordingWeights};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const CONFIGS: [&str; 4] = [
    r#"{"model_type": "llama", "vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 24, "max_position_embeddings": 20, "rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8, "rope_theta": 500.0}}"#,
    r#"{"model_type": "bert", "vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 24, "max_position_embeddings": 20}"#,
    r#"{"model_type": "roberta", "vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 24, "max_position_embeddings": 22, "type_vocab_size": 1, "pad_token_id": 1}"#,
    r#"{"model_type": "dinov2", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 16, "patch_size": 8, "mlp_ratio": 2}"#,
];

/// Writes `config` and the weights its builder asks for into `dir`.
fn write_checkpoint(dir: &Path, config: &str) {
    std::fs::write(dir.join("config.json"), config).unwrap();
    let cfg = HfConfig::read(dir).unwrap();
    let mut rec = RecordingWeights::new(RandomWeights::new(7));
    let mut b = GraphBuilder::new("fuzz", &mut rec);
    match cfg.model_type.as_str() {
        "dinov2" => glora::models::dinov2::build(&cfg, &mut b).unwrap(),
        "llama" => glora::models::llama::build(&cfg, &mut b).unwrap(),
        _ => glora::models::bert::build(&cfg, &mut b).unwrap(),
    };
    drop(b);
    glora::io::write_safetensors(&dir.join("model.safetensors"), &rec.seen).unwrap();
}

fn mutate_bytes(rng: &mut StdRng, src: &[u8]) -> Vec<u8> {
    let mut v = src.to_vec();
    for _ in 0..rng.random_range(1..4) {
        if v.is_empty() {
            v.push(b'{');
        }
        let at = rng.random_range(0..v.len());
        match rng.random_range(0..5) {
            0 => v[at] ^= 1 << rng.random_range(0..8),
            1 => v.insert(at, rng.random()),
            2 => {
                v.remove(at);
            }
            3 => v.truncate(at),
            _ => {
                let end = (at + rng.random_range(1..16)).min(v.len());
                let chunk = v[at..end].to_vec();
                v.splice(at..at, chunk);
            }
        }
    }
    v
}

/// Replaces one number of a JSON text by a hostile one.
fn mutate_number(rng: &mut StdRng, src: &str) -> String {
    let spans: Vec<(usize, usize)> = regex::Regex::new(r"-?\d+(\.\d+)?")
        .unwrap()
        .find_iter(src)
        .map(|m| (m.start(), m.end()))
        .collect();
    let (a, b) = spans[rng.random_range(0..spans.len())];
    const HOSTILE: [&str; 9] = [
        "0",
        "1",
        "-1",
        "3",
        "1e30",
        "18446744073709551615",
        "4294967296",
        "0.5",
        "NaN",
    ];
    format!(
        "{}{}{}",
        &src[..a],
        HOSTILE[rng.random_range(0..HOSTILE.len())],
        &src[b..]
    )
}

/// Builds the folder, catching panics; returns whether it built.
fn try_build(dir: &Path, what: &str) -> bool {
    match std::panic::catch_unwind(|| glora::models::build_checkpoint(dir)) {
        Ok(r) => r.is_ok(),
        Err(_) => panic!("{what}: the loader panicked"),
    }
}

#[test]
fn mutated_configs_indexes_and_headers_never_panic() {
    let mut rng = StdRng::seed_from_u64(11);
    let (mut configs, mut headers, mut indexes, mut built) = (0, 0, 0, 0);
    for config in CONFIGS {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_checkpoint(dir, config);
        assert!(try_build(dir, "the valid checkpoint"), "{config}");
        for i in 0..400 {
            let text = if i % 2 == 0 {
                String::from_utf8_lossy(&mutate_bytes(&mut rng, config.as_bytes())).into_owned()
            } else {
                mutate_number(&mut rng, config)
            };
            std::fs::write(dir.join("config.json"), &text).unwrap();
            built += usize::from(try_build(dir, &format!("config.json {text:?}")));
            configs += 1;
        }
        std::fs::write(dir.join("config.json"), config).unwrap();
        // The safetensors header: its length prefix and JSON.
        let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
        let header_end = 8 + u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
        for _ in 0..400 {
            let mut head = mutate_bytes(&mut rng, &weights[..header_end]);
            head.extend_from_slice(&weights[header_end..]);
            std::fs::write(dir.join("model.safetensors"), &head).unwrap();
            built += usize::from(try_build(dir, "a mutated safetensors header"));
            headers += 1;
        }
        // The same weights as one shard behind an index.
        std::fs::write(dir.join("model.safetensors"), &weights).unwrap();
        std::fs::rename(
            dir.join("model.safetensors"),
            dir.join("shard-1.safetensors"),
        )
        .unwrap();
        let names = glora::io::read_safetensors(&dir.join("shard-1.safetensors")).unwrap();
        let map: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .map(|(n, _)| (n.clone(), serde_json::Value::from("shard-1.safetensors")))
            .collect();
        let index = serde_json::json!({"metadata": {}, "weight_map": map}).to_string();
        std::fs::write(dir.join("model.safetensors.index.json"), &index).unwrap();
        assert!(try_build(dir, "the sharded checkpoint"));
        for _ in 0..200 {
            let text = mutate_bytes(&mut rng, index.as_bytes());
            std::fs::write(dir.join("model.safetensors.index.json"), &text).unwrap();
            built += usize::from(try_build(dir, "a mutated index"));
            indexes += 1;
        }
    }
    println!(
        "fuzzed {configs} config.json, {headers} safetensors headers, {indexes} shard indexes; {built} still built"
    );
    assert!(
        built < configs + headers + indexes,
        "no mutation was caught"
    );
}
