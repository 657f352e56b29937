//! Every message a program prints on stderr goes out in one `write`, so
//! that the programs of one pipeline, which share the terminal or log
//! file, never interleave in the middle of a line (seen in `make demo`:
//! `bk-hash: 13 files seen, 0bk-seal: created repository  reused unread`).
//! Checked with strace, which records each write(2) on stderr.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// The writes to stderr (fd 2) of `program` run with `args` and `stdin`,
/// as strace prints their data (escaped, `\n` as two characters).
fn stderr_writes(
    sb: &Sandbox,
    program: &str,
    args: &[std::ffi::OsString],
    stdin: &[u8],
) -> Vec<String> {
    assert!(
        Path::new("/usr/bin/strace").exists(),
        "strace is missing: install the `strace` package (this test needs it)"
    );
    let log = sb.path(format!("strace-{program}.log"));
    let mut cmd = sb.command("/usr/bin/strace");
    cmd.args([
        "-f",
        "-qq",
        "-e",
        "trace=write",
        "-e",
        "signal=none",
        "-s",
        "100000",
        "-o",
    ])
    .arg(&log)
    .arg(assert_cmd::cargo::cargo_bin(program))
    .args(args);
    let _ = run_command(cmd, stdin, std::time::Duration::from_secs(120));
    fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let at = l.find("write(2, \"")?;
            let rest = &l[at + 10..];
            let end = rest.rfind("\", ")?;
            Some(rest[..end].to_owned())
        })
        .collect()
}

/// Each write is one whole line.
#[track_caller]
fn assert_whole_lines(program: &str, writes: &[String]) {
    assert!(!writes.is_empty(), "{program} wrote nothing on stderr");
    for w in writes {
        assert!(
            w.ends_with("\\n") && w.matches("\\n").count() == 1,
            "{program} wrote part of a line, or several, in one write: {w:?}\nall writes: {writes:#?}"
        );
    }
}

#[test]
fn each_stage_writes_each_message_in_one_write() {
    let sb = Sandbox::new();
    let tree = sb.fresh_dir("src");
    for i in 0..5 {
        write_file(
            &tree.join(format!("f{i}")),
            format!("{i}\n").as_bytes(),
            0o644,
        );
    }
    let scan = sb.run("bk-scan", &args![&tree], b"");
    assert_ok(&scan, "bk-scan");
    let writes = stderr_writes(&sb, "bk-hash", &[], &scan.stdout);
    assert_whole_lines("bk-hash", &writes);
    let hashed = sb.run("bk-hash", &[], &scan.stdout);
    let mut a = sb.seal_args();
    a.push("--init".into());
    let writes = stderr_writes(&sb, "bk-seal", &a, &hashed.stdout);
    assert_whole_lines("bk-seal", &writes);
    assert!(
        writes.len() >= 2,
        "bk-seal --init says it made the repository, then its summary: {writes:?}"
    );
    let sealed = sb.run("bk-seal", &sb.seal_args(), &hashed.stdout);
    assert_ok(&sealed, "bk-seal");
    let mut a = args!["write"];
    a.extend(sb.seal_args());
    assert_whole_lines(
        "bk-index write",
        &stderr_writes(&sb, "bk-index", &a, &sealed.stdout),
    );
    // An error, too.
    let mut a = args!["show", "nosuchsnapshot"];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    let writes = stderr_writes(&sb, "bk-index", &a, b"");
    assert_whole_lines("bk-index show (an error)", &writes);
    assert!(
        writes.iter().any(|w| w.contains("no such snapshot")),
        "{writes:?}"
    );
}
