//! ONNX external data: weights stored in a separate file beside the model, located by
//! the `location`, `offset` and `length` entries of a `TensorProto`. Import reads a
//! tensor's bytes from there; export moves large initializers into such a file.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path};

use super::pb::tensor_proto::DataLocation;
use super::pb::{GraphProto, StringStringEntryProto, TensorProto};

/// Initializers up to this size stay inside the model file.
pub(crate) const MIN_EXTERNAL_BYTES: usize = 1024;

/// The bytes of a tensor whose data lives in an external file under `base_dir`.
pub(crate) fn read(t: &TensorProto, base_dir: Option<&Path>) -> Result<Vec<u8>, String> {
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for e in &t.external_data {
        match e.key.as_str() {
            "location" => location = Some(e.value.as_str()),
            "offset" => offset = parse_count("offset", &e.value)?,
            "length" => length = Some(parse_count("length", &e.value)?),
            _ => {}
        }
    }
    let location = location.ok_or("external data has no 'location' entry")?;
    let relative = checked_location(location)?;
    let base = base_dir.ok_or_else(|| {
        format!(
            "external data file '{location}' cannot be found: the model was not read from a file"
        )
    })?;
    let mut file = File::open(base.join(relative)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("external data file '{location}' not found next to the model")
        }
        _ => format!("external data file '{location}': {e}"),
    })?;
    let size = file
        .metadata()
        .map_err(|e| format!("external data file '{location}': {e}"))?
        .len();
    let length = length.unwrap_or(size.saturating_sub(offset));
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(format!(
            "external data file '{location}' holds {size} bytes; offset {offset} + length {length} reaches past its end"
        ));
    }
    let mut buf = vec![0u8; length as usize];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut buf))
        .map_err(|e| format!("external data file '{location}': {e}"))?;
    Ok(buf)
}

fn parse_count(key: &str, v: &str) -> Result<u64, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("external data '{key}' is '{v}', not a byte count"))
}

/// The location as a relative path that stays inside the model's directory.
fn checked_location(location: &str) -> Result<&Path, String> {
    let p = Path::new(location);
    let inside = !location.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if inside {
        Ok(p)
    } else {
        Err(format!(
            "external data location '{location}' points outside the model's directory"
        ))
    }
}

/// Moves the raw data of every initializer larger than [`MIN_EXTERNAL_BYTES`] into
/// `out`, which will be found as `location` next to the model. Returns the number of
/// tensors moved.
pub(crate) fn move_initializers(
    graph: &mut GraphProto,
    location: &str,
    out: &mut impl Write,
) -> std::io::Result<usize> {
    let mut offset = 0u64;
    let mut moved = 0;
    for t in graph.initializer.iter_mut() {
        if t.raw_data.len() <= MIN_EXTERNAL_BYTES {
            continue;
        }
        out.write_all(&t.raw_data)?;
        let length = t.raw_data.len() as u64;
        t.external_data = vec![
            entry("location", location),
            entry("offset", &offset.to_string()),
            entry("length", &length.to_string()),
        ];
        t.data_location = DataLocation::External as i32;
        t.raw_data = Vec::new();
        offset += length;
        moved += 1;
    }
    Ok(moved)
}

fn entry(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: key.to_string(),
        value: value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn external(location: &str, offset: Option<u64>, length: Option<u64>) -> TensorProto {
        let mut e = vec![entry("location", location)];
        if let Some(o) = offset {
            e.push(entry("offset", &o.to_string()));
        }
        if let Some(l) = length {
            e.push(entry("length", &l.to_string()));
        }
        TensorProto {
            name: "w".into(),
            external_data: e,
            data_location: DataLocation::External as i32,
            ..Default::default()
        }
    }

    #[test]
    fn reads_the_described_byte_range() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("w.bin"), (0u8..20).collect::<Vec<_>>()).unwrap();
        let got = read(&external("w.bin", Some(4), Some(8)), Some(dir.path())).unwrap();
        assert_eq!(got, (4u8..12).collect::<Vec<_>>());
        let rest = read(&external("w.bin", Some(15), None), Some(dir.path())).unwrap();
        assert_eq!(rest, (15u8..20).collect::<Vec<_>>());
    }

    #[test]
    fn missing_files_escapes_and_short_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("w.bin"), [0u8; 10]).unwrap();
        let e = read(&external("nope.bin", None, None), Some(dir.path())).unwrap_err();
        assert_eq!(
            e,
            "external data file 'nope.bin' not found next to the model"
        );
        let e = read(&external("../w.bin", None, None), Some(dir.path())).unwrap_err();
        assert!(e.contains("points outside"), "{e}");
        let e = read(&external("/etc/passwd", None, None), Some(dir.path())).unwrap_err();
        assert!(e.contains("points outside"), "{e}");
        let e = read(&external("w.bin", Some(8), Some(4)), Some(dir.path())).unwrap_err();
        assert!(e.contains("reaches past its end"), "{e}");
        let e = read(
            &external("w.bin", Some(u64::MAX), Some(4)),
            Some(dir.path()),
        )
        .unwrap_err();
        assert!(e.contains("reaches past its end"), "{e}");
        let e = read(&external("w.bin", None, None), None).unwrap_err();
        assert!(e.contains("not read from a file"), "{e}");
    }

    #[test]
    fn moves_only_large_initializers() {
        let small = TensorProto {
            name: "small".into(),
            raw_data: vec![1; MIN_EXTERNAL_BYTES],
            ..Default::default()
        };
        let big = TensorProto {
            name: "big".into(),
            raw_data: vec![2; MIN_EXTERNAL_BYTES + 4],
            ..Default::default()
        };
        let mut g = GraphProto {
            initializer: vec![small.clone(), big.clone(), big],
            ..Default::default()
        };
        let mut out = Vec::new();
        assert_eq!(
            move_initializers(&mut g, "m.onnx.data", &mut out).unwrap(),
            2
        );
        assert_eq!(out.len(), 2 * (MIN_EXTERNAL_BYTES + 4));
        assert_eq!(g.initializer[0], small);
        let second = &g.initializer[2];
        assert!(second.raw_data.is_empty());
        assert_eq!(second.data_location, DataLocation::External as i32);
        let kv: Vec<(&str, &str)> = second
            .external_data
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            kv,
            vec![
                ("location", "m.onnx.data"),
                ("offset", "1028"),
                ("length", "1028")
            ]
        );
    }
}
