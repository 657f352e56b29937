//! A stage whose output goes away (`| head`) stops at once with status
//! 141, even while the program before it keeps its stdin open and sends
//! nothing more: its reader thread, blocked on that pipe, does not keep it
//! waiting.

mod common;

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// Copies of the file record `rec` under other names, each naming an
/// object that is not in the repository: bk-verify prints a problem
/// record for each.
fn missing_object_records(rec: &serde_json::Value, from: u32, to: u32) -> String {
    let mut out = String::new();
    for i in from..to {
        let mut r = rec.clone();
        r["path"] = format!("f{i}").into();
        r["objects"][0]["id"] = format!("{:064x}", i + 1).into();
        out.push_str(&r.to_string());
        out.push('\n');
    }
    out
}

#[test]
fn verify_stops_when_its_output_goes_away_while_its_input_stays_open() {
    let sb = Sandbox::new();
    let tree = sb.fresh_dir("src");
    write_file(&tree.join("a"), b"a", 0o644);
    let backup = sb.backup(&tree);
    let rec = backup
        .records()
        .into_iter()
        .find(|r| r["kind"] == "file")
        .expect("a file record");

    let mut child = sb
        .command("bk-verify")
        .args(sb.repo_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bk-verify");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let records = missing_object_records(&rec, 0, 20);
    stdin.write_all(records.as_bytes()).expect("write records");
    stdin.flush().expect("flush records");
    // Read one problem record, then go away as `head -1` does.
    let mut first = [0u8; 1];
    if let Err(e) = stdout.read_exact(&mut first) {
        let out = child.wait_with_output().expect("bk-verify's output");
        panic!("no problem record ({e}): {}", describe(&out));
    }
    drop(stdout);
    // More input, whose problem records now meet a closed pipe; then
    // stdin stays open and quiet: bk-verify must stop all the same, not
    // only once its input ends.
    let more = missing_object_records(&rec, 20, 40);
    stdin
        .write_all(more.as_bytes())
        .expect("write more records");
    stdin.flush().expect("flush more records");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bk-verify") {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(60) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("bk-verify went on waiting for input after its output was gone");
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(
        status.code(),
        Some(141),
        "bk-verify's status; stderr: {err}"
    );
    assert!(
        !err.contains("broken pipe"),
        "a broken pipe is a quiet exit: {err}"
    );
}
