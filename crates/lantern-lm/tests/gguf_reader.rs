//! The GGUF reader on files written by the test (exact round trip), on every truncation and on
//! random corruption (never a panic), and on a truncated copy of the real SmolLM2 file.

use lantern_lm::gguf::{GgmlType, GgufError, GgufFile, Value};
use proptest::prelude::*;

/// A minimal GGUF v3 writer for tests: metadata of a few types and F32 tensors.
fn write_gguf(meta: &[(&str, Value)], tensors: &[(&str, Vec<u64>, Vec<f32>)]) -> Vec<u8> {
    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }
    fn val(out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::U32(x) => out.extend(x.to_le_bytes()),
            Value::F32(x) => out.extend(x.to_le_bytes()),
            Value::Bool(x) => out.push(*x as u8),
            Value::String(x) => s(out, x),
            Value::Array(items) => {
                let ty = items.first().map_or(4, type_id);
                out.extend(ty.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                items.iter().for_each(|i| val(out, i));
            }
            other => panic!("test writer does not write {other:?}"),
        }
    }
    fn type_id(v: &Value) -> u32 {
        match v {
            Value::U32(_) => 4,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            _ => unreachable!(),
        }
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((meta.len() as u64).to_le_bytes());
    for (k, v) in meta {
        s(&mut out, k);
        out.extend(type_id(v).to_le_bytes());
        val(&mut out, v);
    }
    let mut offset = 0u64;
    for (name, dims, data) in tensors {
        s(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
        out.extend(0u32.to_le_bytes()); // F32
        out.extend(offset.to_le_bytes());
        offset += (data.len() as u64 * 4).div_ceil(32) * 32;
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    for (_, _, data) in tensors {
        let start = out.len();
        data.iter().for_each(|x| out.extend(x.to_le_bytes()));
        out.resize(start + (data.len() * 4).div_ceil(32) * 32, 0);
    }
    out
}

fn sample_file() -> Vec<u8> {
    write_gguf(
        &[
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U32(2)),
            ("llama.rope.freq_base", Value::F32(10000.0)),
            (
                "tokenizer.ggml.tokens",
                Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
            ),
            ("flag", Value::Bool(true)),
        ],
        &[
            ("w", vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            ("b", vec![5], vec![-1.0, 0.5, 0.25, 8.0, 9.0]),
        ],
    )
}

#[test]
fn round_trips_metadata_and_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    std::fs::write(&path, sample_file()).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.get("llama.block_count").and_then(Value::as_u64), Some(2));
    assert_eq!(
        f.get("general.architecture").and_then(Value::as_str),
        Some("llama")
    );
    assert_eq!(
        f.get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .map(|a| a.len()),
        Some(2)
    );
    let w = f.tensor("w").unwrap();
    assert_eq!(w.dtype, GgmlType::F32);
    assert_eq!(w.shape(), vec![2, 3]);
    let bytes = f.tensor_bytes(w);
    let vals: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(vals, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = f.tensor("b").unwrap();
    assert_eq!(f.tensor_bytes(b).len(), 20);
    assert_eq!(b.offset % 32, 0);
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let full = sample_file();
    for len in 0..full.len() - 1 {
        // The last tensor's padding is not data, so only cuts into real bytes must fail.
        let r = GgufFile::parse_bytes(&full[..len]);
        if len < full.len() - 12 {
            assert!(r.is_err(), "truncation at {len} of {} accepted", full.len());
        }
    }
}

#[test]
fn bad_magic_and_version_are_named() {
    let mut f = sample_file();
    f[0] = b'X';
    assert!(matches!(
        GgufFile::parse_bytes(&f),
        Err(GgufError::BadMagic { .. })
    ));
    let mut f = sample_file();
    f[4] = 9;
    let err = GgufFile::parse_bytes(&f).unwrap_err();
    assert!(
        err.to_string().contains("unsupported GGUF version 9"),
        "{err}"
    );
}

#[test]
fn huge_counts_do_not_allocate_or_panic() {
    let mut f = sample_file();
    f[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
    assert!(GgufFile::parse_bytes(&f).is_err());
    let mut f = sample_file();
    f[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes()); // metadata count
    assert!(GgufFile::parse_bytes(&f).is_err());
}

#[test]
fn truncated_real_model_names_the_file() {
    let model = lantern_assets::fetch("smollm2-135m").unwrap();
    let bytes = std::fs::read(&model).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
    let err = GgufFile::open(&path).unwrap_err().to_string();
    assert!(
        err.contains("cut.gguf") && err.contains("truncated"),
        "{err}"
    );
    std::fs::write(&path, &bytes[..5_000_000]).unwrap(); // cut inside the vocabulary
    assert!(GgufFile::open(&path).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_corruption_never_panics(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut f = sample_file();
        let n = f.len();
        for (i, b) in flips {
            f[i.index(n)] = b;
        }
        let _ = GgufFile::parse_bytes(&f);
    }

    #[test]
    fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if bytes.len() >= 8 {
            bytes[..4].copy_from_slice(b"GGUF");
            bytes[4..8].copy_from_slice(&3u32.to_le_bytes());
        }
        let _ = GgufFile::parse_bytes(&bytes);
    }
}
