//! A stage hands each record on as soon as it is done, not when its output
//! buffer fills or its input ends: the next program in the pipe works on it
//! meanwhile (bk-seal sealing the files before a large one that bk-hash is
//! still hashing, say).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// Starts `cmd`, writes `input` to its stdin and keeps stdin open; returns
/// the first `n` lines it writes to stdout, or `None` if they did not come
/// within a minute. The program is killed afterwards.
fn lines_while_input_open(mut cmd: Command, input: &[u8], n: usize) -> Option<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    stdin.flush().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = BufReader::new(stdout);
        let mut lines = Vec::new();
        for _ in 0..n {
            if out.read_until(b'\n', &mut lines).unwrap_or(0) == 0 {
                return;
            }
        }
        let _ = tx.send(lines);
    });
    let lines = rx.recv_timeout(Duration::from_secs(60)).ok();
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    lines
}

#[test]
fn hash_and_seal_hand_on_a_record_before_their_input_ends() {
    let sb = Sandbox::new();
    let src = sb.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"streamed").unwrap();
    let (scanned, hashed) = sb.scan_hash(&src);

    // (Each output starts with its begin record.)
    let lines = lines_while_input_open(sb.command("bk-hash"), &scanned, 3)
        .expect("bk-hash held its records back while its input stayed open");
    assert!(lines.starts_with(BEGIN));
    let got = parse_records(&lines);
    assert_eq!(rec_path(&got[0]), b".", "the root comes first");
    assert_eq!(rec_path(&got[1]), b"a.txt");
    assert_eq!(got[1]["sha256"], sha256_hex(b"streamed").as_str());

    // bk-seal, its input held open: the root comes out at once (a new
    // file's record waits for its batch of objects to be durable).
    let mut seal = sb.command("bk-seal");
    seal.args(sb.seal_args()).arg("--init");
    let lines = lines_while_input_open(seal, &hashed, 2)
        .expect("bk-seal held the root back while its input stayed open");
    assert_eq!(rec_path(&parse_records(&lines)[0]), b".");
}
