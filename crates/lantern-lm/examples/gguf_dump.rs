//! Prints a GGUF file's metadata (arrays abbreviated) and tensor table:
//! `cargo run -p lantern-lm --example gguf_dump FILE.gguf`.

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: gguf_dump FILE.gguf");
        std::process::exit(2);
    };
    let f = match lantern_lm::gguf::GgufFile::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    for (k, v) in &f.metadata {
        match v.as_array() {
            Some(a) => println!("{k} = array[{}] {:?} ...", a.len(), &a[..a.len().min(5)]),
            None => println!("{k} = {v:?}"),
        }
    }
    for t in &f.tensors {
        println!(
            "{} {:?} {} offset={} bytes={}",
            t.name, t.dims, t.dtype, t.offset, t.n_bytes
        );
    }
}
