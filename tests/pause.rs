//! `--pause-file`: while the file exists bk-hash and bk-seal take no new
//! work (no output, no new objects); they finish once it is removed.

mod common;

use std::fs;
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;

/// Starts `program args` with `input` on stdin, stdout into `out_file`
/// and stderr into [`err_file`].
fn start(
    sb: &Sandbox,
    program: &str,
    args: &[std::ffi::OsString],
    input: &[u8],
    out_file: &std::path::Path,
) -> Child {
    let input_file = sb.path(format!("{program}.in"));
    fs::write(&input_file, input).unwrap();
    let mut cmd = sb.command(program);
    cmd.args(args)
        .stdin(fs::File::open(&input_file).unwrap())
        .stdout(fs::File::create(out_file).unwrap())
        .stderr(fs::File::create(err_file(sb, program)).unwrap());
    cmd.spawn().expect("start program")
}

/// Where [`start`] sends the stderr of `program`.
fn err_file(sb: &Sandbox, program: &str) -> std::path::PathBuf {
    sb.path(format!("{program}.err"))
}

/// Waits until `program` (started with [`start`]) says on stderr that it
/// is paused, then a second more, in which it must do nothing.
fn wait_paused(sb: &Sandbox, program: &str) {
    let err = err_file(sb, program);
    wait_until(
        &format!("{program} to say it is paused"),
        Duration::from_secs(60),
        || {
            fs::read_to_string(&err)
                .unwrap_or_default()
                .contains("paused:")
        },
    );
    std::thread::sleep(Duration::from_secs(1));
}

/// Waits for `child` (`program`, started with [`start`]) at most `limit`;
/// panics (after killing it) if it does not finish. Its stdout went to a
/// file: the output's is empty.
fn finish(sb: &Sandbox, program: &str, mut child: Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("still running {limit:?} after the pause file was removed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = child.wait_with_output().unwrap();
    out.stderr = fs::read(err_file(sb, program)).unwrap();
    out
}

#[test]
fn hash_and_seal_wait_while_the_pause_file_exists() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    for i in 0..5u64 {
        write_file(&tree.join(format!("f{i}")), &pseudo_random(i, 5000), 0o644);
    }
    // A repository to seal into (one earlier run).
    write_file(&sb.path("first/x"), b"x", 0o644);
    sb.backup(&sb.path("first"));
    // Everything under packs/, temporary files of a pack being written
    // included.
    let packs_before = files_under(&sb.repo.join("packs"));
    let blobs_before = sb.blob_ids().len();
    let scan = sb.run("bk-scan", &args![&tree], b"");
    assert_ok(&scan, "bk-scan");
    let pause = sb.path("PAUSE");
    fs::write(&pause, b"").unwrap();

    // bk-hash: no file is hashed while paused (the root directory, which
    // needs no work, may pass).
    let hashed_file = sb.path("hashed.ndjson");
    let child = start(
        &sb,
        "bk-hash",
        &args!["--pause-file", &pause],
        &scan.stdout,
        &hashed_file,
    );
    wait_paused(&sb, "bk-hash");
    let so_far = parse_records(&fs::read(&hashed_file).unwrap());
    assert!(
        so_far.iter().all(|r| r["kind"] != "file"),
        "bk-hash hashed files while paused: {so_far:?}"
    );
    fs::remove_file(&pause).unwrap();
    let out = finish(&sb, "bk-hash", child, Duration::from_secs(30));
    assert_ok(&out, "bk-hash after resuming");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("paused: {} exists", pause.display())),
        "{err}"
    );
    assert!(err.contains("resumed"), "{err}");
    let hashed = fs::read(&hashed_file).unwrap();
    let records = parse_records(&hashed);
    assert_eq!(
        records.iter().filter(|r| r["sha256"].is_string()).count(),
        5
    );

    // bk-seal, paused through the environment (as the config file does):
    // no pack (not even one being written) while paused.
    fs::write(&pause, b"").unwrap();
    let sealed_file = sb.path("sealed.ndjson");
    let mut cmd_args = sb.seal_args();
    cmd_args.extend(args!["-j", "1"]);
    let input_file = sb.path("seal.in");
    fs::write(&input_file, &hashed).unwrap();
    let child = sb
        .command("bk-seal")
        .args(&cmd_args)
        .env("BK_PAUSE_FILE", &pause)
        .stdin(fs::File::open(&input_file).unwrap())
        .stdout(fs::File::create(&sealed_file).unwrap())
        .stderr(fs::File::create(err_file(&sb, "bk-seal")).unwrap())
        .spawn()
        .unwrap();
    wait_paused(&sb, "bk-seal");
    assert_eq!(
        files_under(&sb.repo.join("packs")),
        packs_before,
        "bk-seal stored objects while paused"
    );
    // Nothing but the begin record of its stream.
    assert_eq!(fs::read(&sealed_file).unwrap(), BEGIN);
    fs::remove_file(&pause).unwrap();
    let out = finish(&sb, "bk-seal", child, Duration::from_secs(30));
    assert_ok(&out, "bk-seal after resuming");
    assert!(stderr(&out).contains("paused:"), "{}", describe(&out));
    assert_eq!(sb.blob_ids().len(), blobs_before + 5);
    let sealed = fs::read(&sealed_file).unwrap();
    sb.index_write(&sealed);
}
