//! Records a real WARC offline: a tiny static HTTP server thread on 127.0.0.1 serves files and
//! Debian's wget records the crawl with `--warc-file` (shared by the WARC and pipeline tests).
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub const WGET: &str = "/usr/bin/wget";

/// Content-Type by extension, as a static file server would send it.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

/// Answers one HTTP request on `stream` with an HTTP/1.0 response for `root/path` if `path` is
/// one of `files`, else 404; the connection is closed afterwards.
pub fn answer(mut stream: TcpStream, root: &Path, files: &HashSet<String>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = path.trim_start_matches('/').split('?').next().unwrap_or("");
    let (status, ctype, body) = if files.contains(path) {
        (
            "200 OK",
            content_type(path),
            std::fs::read(root.join(path)).unwrap(),
        )
    } else {
        ("404 Not Found", "text/plain", b"not found".to_vec())
    };
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

/// A tiny static file server on an ephemeral port: it answers at most `max_requests` requests
/// and stops by itself after that, after a minute, or when `stop` is set.
pub fn serve(
    root: PathBuf,
    files: HashSet<String>,
    max_requests: usize,
    stop: Arc<AtomicBool>,
) -> (u16, thread::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut served = 0;
        while served < max_requests && Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    answer(stream, &root, &files);
                    served += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(2))
                }
                Err(_) => break,
            }
        }
        served
    });
    (port, handle)
}

/// Serves `files` from `root` and records them with wget into `dir/crawl.warc.gz`.
pub fn record_with_wget(root: &Path, files: &[String], dir: &Path) -> (PathBuf, u16) {
    let stop = Arc::new(AtomicBool::new(false));
    let allowed: HashSet<String> = files.iter().cloned().collect();
    let (port, server) = serve(root.to_path_buf(), allowed, files.len() + 10, stop.clone());
    let list = dir.join("urls.txt");
    let urls: Vec<String> = files
        .iter()
        .map(|f| format!("http://127.0.0.1:{port}/{f}"))
        .collect();
    std::fs::write(&list, urls.join("\n") + "\n").unwrap();
    let output = Command::new(WGET)
        .arg("--no-config")
        .arg("--no-verbose")
        .arg("--tries=1")
        .arg("--timeout=20")
        .arg(format!("--warc-file={}", dir.join("crawl").display()))
        .arg("-P")
        .arg(dir.join("download"))
        .arg("-i")
        .arg(&list)
        .output();
    stop.store(true, Ordering::Relaxed);
    let served = server.join().expect("server thread");
    let output =
        output.unwrap_or_else(|e| panic!("cannot run {WGET} (needed to record a real WARC): {e}"));
    assert!(
        output.status.success(),
        "{WGET} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        served,
        files.len(),
        "the server answered {served} of {} requests",
        files.len()
    );
    let warc = dir.join("crawl.warc.gz");
    assert!(warc.is_file(), "wget wrote no {}", warc.display());
    (warc, port)
}
