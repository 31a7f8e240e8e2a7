//! The `ar` reader on archives built here.

use std::io::{Cursor, Read};

use lantern_assets::ar::{ArMember, ArReader};

/// Appends a member with a raw 16-byte name field.
fn member(out: &mut Vec<u8>, raw_name: &str, data: &[u8]) {
    out.extend_from_slice(format!("{raw_name:<16}").as_bytes());
    out.extend_from_slice(
        format!(
            "{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            0,
            0,
            0,
            100644,
            data.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(b'\n');
    }
}

fn read_all(bytes: Vec<u8>) -> Vec<(ArMember, Vec<u8>)> {
    let mut ar = ArReader::new(Cursor::new(bytes)).unwrap();
    let mut out = Vec::new();
    while let Some(m) = ar.next_member().unwrap() {
        let mut data = Vec::new();
        ar.read_to_end(&mut data).unwrap();
        out.push((m, data));
    }
    out
}

#[test]
fn reads_deb_like_archive() {
    let mut bytes = b"!<arch>\n".to_vec();
    member(&mut bytes, "debian-binary", b"2.0\n");
    member(&mut bytes, "control.tar.xz/", b"odd");
    member(&mut bytes, "data.tar.xz", b"payload!");
    let got = read_all(bytes);
    let names: Vec<&str> = got.iter().map(|(m, _)| m.name.as_str()).collect();
    assert_eq!(names, ["debian-binary", "control.tar.xz", "data.tar.xz"]);
    assert_eq!(got[0].1, b"2.0\n");
    assert_eq!(got[1].1, b"odd");
    assert_eq!(got[1].0.size, 3);
    assert_eq!(got[2].1, b"payload!");
}

#[test]
fn skips_unread_data_and_handles_long_names() {
    let mut bytes = b"!<arch>\n".to_vec();
    member(&mut bytes, "//", b"a-very-long-member-name.txt/\n");
    member(&mut bytes, "/0", b"first");
    member(&mut bytes, "#1/12", b"bsd_name.binDATA");
    let mut ar = ArReader::new(Cursor::new(bytes)).unwrap();
    let first = ar.next_member().unwrap().unwrap();
    assert_eq!(first.name, "a-very-long-member-name.txt");
    // Do not read the data: next_member must skip it and its padding.
    let second = ar.next_member().unwrap().unwrap();
    assert_eq!(second.name, "bsd_name.bin");
    assert_eq!(second.size, 4);
    let mut data = String::new();
    ar.read_to_string(&mut data).unwrap();
    assert_eq!(data, "DATA");
    assert!(ar.next_member().unwrap().is_none());
}

#[test]
fn rejects_bad_input_without_panicking() {
    assert!(ArReader::new(Cursor::new(b"PK\x03\x04".to_vec())).is_err());
    let mut bytes = b"!<arch>\n".to_vec();
    member(&mut bytes, "data.tar.xz", b"0123456789");
    bytes.truncate(bytes.len() - 4);
    let mut ar = ArReader::new(Cursor::new(bytes)).unwrap();
    ar.next_member().unwrap().unwrap();
    let mut data = Vec::new();
    assert!(ar.read_to_end(&mut data).is_err(), "truncated member");
    let mut garbage = b"!<arch>\nnot a header".to_vec();
    garbage.resize(80, b' ');
    let mut ar = ArReader::new(Cursor::new(garbage)).unwrap();
    assert!(ar.next_member().is_err());
}
