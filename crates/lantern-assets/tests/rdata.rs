//! The R serialization reader on streams built here (no network).

use lantern_assets::rdata::{inflate_blob, unserialize, RValue};

/// Builds XDR streams.
#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn int(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn chars(&mut self, s: &str) -> &mut Self {
        self.int(0x0004_0009).int(s.len() as i32);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn header(version: i32) -> Self {
        let mut w = W(b"X\n".to_vec());
        w.int(version).int(0x0004_0201).int(0x0003_0500);
        if version == 3 {
            w.int(5);
            w.0.extend_from_slice(b"UTF-8");
        }
        w
    }
}

#[test]
fn character_vector_with_na_and_names() {
    for version in [2, 3] {
        let mut w = W::header(version);
        // STRSXP with attributes, 3 elements: "a", NA, "c".
        w.int(0x0000_0210)
            .int(3)
            .chars("a")
            .int(0x0000_0009)
            .int(-1)
            .chars("c");
        // attributes: pairlist(names = c("x","y","z"))
        w.int(0x0000_0402).int(1).chars("names");
        w.int(0x10).int(3).chars("x").chars("y").chars("z");
        w.int(254);
        let obj = unserialize(&w.0).unwrap();
        assert_eq!(
            obj.value,
            RValue::Str(vec![Some("a".into()), None, Some("c".into())])
        );
        assert_eq!(obj.names().unwrap(), ["x", "y", "z"]);
    }
}

#[test]
fn named_list_with_back_reference_and_numbers() {
    let mut w = W::header(3);
    // list(v = 1:2, w = 2.5) where the second "names" symbol is a back-reference.
    w.int(0x0000_0213).int(2);
    w.int(0x0000_020d).int(2).int(1).int(2); // INTSXP with attributes
    w.int(0x0000_0402)
        .int(1)
        .chars("names")
        .int(0x10)
        .int(2)
        .chars("p")
        .chars("q")
        .int(254);
    w.int(0x0e).int(1);
    w.0.extend_from_slice(&2.5f64.to_be_bytes());
    w.int(0x0000_0402).int(0x0000_01ff); // tag = REFSXP index 1 ("names")
    w.int(0x10).int(2).chars("v").chars("w").int(254);
    let obj = unserialize(&w.0).unwrap();
    assert_eq!(obj.get("v").unwrap().value, RValue::Int(vec![1, 2]));
    assert_eq!(obj.get("v").unwrap().names().unwrap(), ["p", "q"]);
    assert_eq!(obj.get("w").unwrap().value, RValue::Real(vec![2.5]));
}

#[test]
fn unsupported_and_corrupt_input_is_an_error() {
    assert!(unserialize(b"A\n1\n").unwrap_err().contains("ASCII"));
    assert!(unserialize(b"RDX3\n").is_err());
    let mut w = W::header(3);
    w.int(4); // ENVSXP
    assert!(unserialize(&w.0).unwrap_err().contains("type 4"));
    let mut w = W::header(3);
    w.int(0x10).int(1_000_000_000); // length larger than the data
    assert!(unserialize(&w.0).is_err());
    let mut w = W::header(3);
    for _ in 0..10_000 {
        w.int(0x13).int(1); // deeply nested lists
    }
    assert!(unserialize(&w.0).unwrap_err().contains("deeply"));
    assert!(unserialize(&W::header(3).0)
        .unwrap_err()
        .contains("truncated"));
}

#[test]
fn blob_length_prefix_is_checked() {
    use flate2::{write::ZlibEncoder, Compression};
    use std::io::Write;
    let mut enc = ZlibEncoder::new(Vec::new(), Compression::default());
    enc.write_all(b"X\nhello").unwrap();
    let z = enc.finish().unwrap();
    let mut blob = 7u32.to_be_bytes().to_vec();
    blob.extend_from_slice(&z);
    assert_eq!(inflate_blob(&blob, 1).unwrap(), b"X\nhello");
    blob[3] = 6;
    assert!(inflate_blob(&blob, 1).is_err());
    assert!(inflate_blob(&[0, 0], 1).is_err());
}
