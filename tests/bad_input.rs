//! Failures a user meets: malformed records, wrong keys and passphrases,
//! damaged repositories, hostile snapshots. Each must fail with the
//! documented exit status and a message naming the thing and the cause.

mod common;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use serde_json::Value;

const VICTIM: &str = "victim.bin";
const KEEP: &[&str] = &["keep-1.txt", "keep-2/keep-3.txt"];

fn tree(root: &Path) {
    write_file(&root.join(KEEP[0]), b"keep me\n", 0o644);
    write_file(&root.join(KEEP[1]), b"keep me too\n", 0o640);
    write_file(&root.join(VICTIM), &pseudo_random(51, 1 << 20), 0o644);
}

struct Setup {
    sb: Sandbox,
    src: PathBuf,
    backup: Backup,
    /// `bk-index show latest` output.
    shown: Vec<u8>,
}

/// The tree backed up in two runs: the kept files first, then the victim,
/// so that the victim's blob is alone in a pack of its own (what happens
/// to that pack happens to the victim alone).
fn setup_with(kind: KeyKind) -> Setup {
    let sb = Sandbox::with_key(kind);
    let src = sb.path("src");
    tree(&src);
    let victim = fs::read(src.join(VICTIM)).unwrap();
    fs::remove_file(src.join(VICTIM)).unwrap();
    sb.backup(&src);
    write_file(&src.join(VICTIM), &victim, 0o644);
    let backup = sb.backup(&src);
    let shown = sb.show_latest();
    Setup {
        sb,
        src,
        backup,
        shown,
    }
}

fn setup() -> Setup {
    setup_with(KeyKind::Cv25519)
}

impl Setup {
    fn victim_id(&self) -> String {
        let records = self.backup.records();
        object_ids(find_record(&records, VICTIM.as_bytes()))[0].clone()
    }

    /// The pack that holds the victim's blob, and nothing else.
    fn victim_pack(&self) -> String {
        let id = self.victim_id();
        let at = self.sb.blob_at(&id);
        let keys = self.sb.pack_keys();
        let bytes = self.sb.read_repo_file(&at.pack).unwrap();
        let held: Vec<String> = pack_header(&keys, &at.pack, &bytes)
            .into_iter()
            .map(|(b, _)| b)
            .collect();
        assert_eq!(held, [id], "the victim's pack holds the victim alone");
        at.pack
    }

    /// The files other than the victim were restored intact (into the
    /// root's place under `dest`).
    fn assert_others_restored(&self, dest: &Path) {
        let dest = restored(dest, &self.src);
        for k in KEEP {
            let got = fs::read(dest.join(k))
                .unwrap_or_else(|e| panic!("{k} should still be restored: {e}"));
            assert_eq!(got, fs::read(self.src.join(k)).unwrap(), "content of {k}");
        }
    }
}

/// (description, program, arguments, stdin, wrong passphrase in BK_PASSPHRASE?)
type EnvCase<'a> = (&'a str, &'a str, Vec<OsString>, &'a [u8], bool);

/// Problem records printed by bk-verify.
fn problems(out: &Output) -> Vec<Value> {
    let p = parse_records(&out.stdout);
    for rec in &p {
        for field in ["problem", "path", "object", "detail"] {
            assert!(
                rec.get(field).is_some(),
                "problem record lacks {field}: {rec}"
            );
        }
    }
    p
}

/// Collects failed expectations so one test reports every program.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn expect_code(&mut self, what: &str, out: &Output, codes: &[i32]) -> bool {
        if codes.iter().any(|&c| out.status.code() == Some(c)) {
            true
        } else {
            self.0.push(format!(
                "{what}: expected exit {codes:?}, got {}",
                describe(out)
            ));
            false
        }
    }

    fn expect_stderr(&mut self, what: &str, out: &Output, needle: &str) {
        if !stderr(out).to_lowercase().contains(&needle.to_lowercase()) {
            self.0.push(format!(
                "{what}: stderr should mention {needle:?}: {}",
                describe(out)
            ));
        }
    }

    fn check(self) {
        assert!(self.0.is_empty(), "\n{}", self.0.join("\n"));
    }
}

fn first_line(ndjson: &[u8]) -> Vec<u8> {
    let end = ndjson.iter().position(|&b| b == b'\n').unwrap();
    ndjson[..=end].to_vec()
}

#[test]
fn malformed_record_is_rejected_with_its_line_number() {
    let s = setup();
    let sb = &s.sb;
    let bad = b"{\"v\":1,\"kind\":\"file\",\"path\": oops}\n";
    let with_bad = |good: &[u8]| [first_line(good), bad.to_vec()].concat();
    let snapshots_before = sb.snapshot_names();
    let dest = sb.fresh_dir("restore");

    let mut index_write = args!["write"];
    index_write.extend(sb.seal_args());
    let mut open = sb.repo_args();
    open.extend(sb.key_args());
    open.extend(args!["--to", &dest]);
    let cases: Vec<(&str, Vec<OsString>, Vec<u8>)> = vec![
        ("bk-hash", vec![], with_bad(&s.backup.scan)),
        ("bk-seal", sb.seal_args(), with_bad(&s.backup.hashed)),
        ("bk-index", index_write, with_bad(&s.backup.sealed)),
        ("bk-verify", sb.repo_args(), with_bad(&s.shown)),
        ("bk-open", open, with_bad(&s.shown)),
    ];
    let mut f = Failures::default();
    for (program, a, input) in cases {
        let out = sb.run(program, &a, &input);
        f.expect_code(program, &out, &[3]);
        f.expect_stderr(program, &out, "stdin line 2: malformed record");
    }
    if sb.snapshot_names() != snapshots_before {
        f.0.push("bk-index write wrote a snapshot from malformed input".into());
    }
    f.check();
}

#[test]
fn record_without_kind_or_of_unknown_schema_is_malformed() {
    let s = setup();
    let sb = &s.sb;
    let mut f = Failures::default();
    let no_kind = b"{\"v\":1,\"path\":\"x\",\"size\":1}\n".to_vec();
    let line = String::from_utf8(first_line(&s.backup.hashed)).unwrap();
    let v2 = line.replacen("\"v\":1", "\"v\":2", 1);
    assert_ne!(line, v2, "record does not start with v:1: {line}");
    for (what, input, needle) in [
        ("record without kind", no_kind, "stdin line 1"),
        ("schema version 2", v2.into_bytes(), "stdin line 1"),
    ] {
        let out = sb.run("bk-seal", &sb.seal_args(), &input);
        f.expect_code(what, &out, &[3]);
        f.expect_stderr(what, &out, needle);
    }
    f.check();
}

#[test]
fn wrong_secret_key_is_a_key_problem() {
    let s = setup();
    let sb = &s.sb;
    let (_, other_sec) = sb.add_key(KeyKind::Other, "other");
    let dest = sb.fresh_dir("restore");
    let id = s.victim_id();
    let key = args!["--key", &other_sec];
    let with = |base: Vec<OsString>, tail: Vec<OsString>| [base, key.clone(), tail].concat();
    let cases: Vec<(&str, &str, Vec<OsString>, &[u8])> = vec![
        (
            "bk-index show",
            "bk-index",
            with(args!["show", "latest", "--repo", &sb.repo], vec![]),
            b"",
        ),
        (
            "bk-open --object",
            "bk-open",
            with(sb.repo_args(), args!["--object", &id]),
            b"",
        ),
        (
            "bk-open --to",
            "bk-open",
            with(sb.repo_args(), args!["--to", &dest]),
            &s.shown,
        ),
    ];
    let mut f = Failures::default();
    for (what, program, a, input) in cases {
        let out = sb.run(program, &a, input);
        f.expect_code(what, &out, &[4]);
        let err = stderr(&out).to_lowercase();
        if !(err.contains("secret key") || err.contains("other.sec.asc")) {
            f.0.push(format!(
                "{what}: stderr should mention the secret key: {}",
                describe(&out)
            ));
        }
        if what == "bk-open --object" && !out.stdout.is_empty() {
            f.0.push(format!("{what}: printed {} bytes", out.stdout.len()));
        }
    }
    let restored = files_under(&dest);
    if !restored.is_empty() {
        f.0.push(format!("files restored with the wrong key: {restored:?}"));
    }
    f.check();
}

/// A key that opens none of the objects is a key problem (exit 4, as the
/// exit-status table says), not a report that every object is corrupt.
#[test]
fn verify_read_data_with_wrong_secret_key_is_a_key_problem() {
    let s = setup();
    let sb = &s.sb;
    let (_, other_sec) = sb.add_key(KeyKind::Other, "other");
    let out = sb.verify(&s.shown, &args!["--read-data", "--key", &other_sec]);
    assert_code(&out, 4, "bk-verify --read-data with the wrong secret key");
    let err = stderr(&out).to_lowercase();
    assert!(
        err.contains("secret key") || err.contains("other.sec.asc"),
        "stderr should mention the secret key: {}",
        describe(&out)
    );
}

#[test]
fn wrong_passphrase_is_reported_as_such() {
    let s = setup_with(KeyKind::Protected);
    let sb = &s.sb;
    let wrong = "not-the-passphrase-7731";
    let wrong_file = sb.path("keys/wrong.txt");
    fs::write(&wrong_file, format!("{wrong}\n")).unwrap();
    let dest = sb.fresh_dir("restore");
    let id = s.victim_id();
    let key = args!["--key", &sb.sec_key];
    let pf = args!["--passphrase-file", &wrong_file];
    let no_env: &[(&str, &OsStr)] = &[];
    let env: &[(&str, &OsStr)] = &[("BK_PASSPHRASE", OsStr::new(wrong))];
    let show = [args!["show", "latest", "--repo", &sb.repo], key.clone()].concat();
    // (what, program, args, stdin, wrong passphrase in BK_PASSPHRASE?)
    let cases: Vec<EnvCase> = vec![
        (
            "bk-index show --passphrase-file",
            "bk-index",
            [show.clone(), pf.clone()].concat(),
            b"",
            false,
        ),
        ("bk-index show BK_PASSPHRASE", "bk-index", show, b"", true),
        (
            "bk-open --object --passphrase-file",
            "bk-open",
            [
                sb.repo_args(),
                key.clone(),
                pf.clone(),
                args!["--object", &id],
            ]
            .concat(),
            b"",
            false,
        ),
        (
            "bk-open --to --passphrase-file",
            "bk-open",
            [sb.repo_args(), key.clone(), pf, args!["--to", &dest]].concat(),
            &s.shown,
            false,
        ),
    ];
    let mut f = Failures::default();
    for (what, program, a, input, use_env) in cases {
        let out = sb.run_env(program, &a, input, if use_env { env } else { no_env });
        f.expect_code(what, &out, &[4]);
        f.expect_stderr(what, &out, "wrong passphrase");
        let err = stderr(&out);
        if err.contains(wrong) || err.contains(PASSPHRASE) {
            f.0.push(format!(
                "{what}: a passphrase appears in the error message: {err}"
            ));
        }
    }
    f.check();
}

#[test]
fn missing_object_is_named_by_verify_and_restore() {
    let s = setup();
    let sb = &s.sb;
    let id = s.victim_id();
    let ok = sb.verify(&s.shown, &[]);
    assert_code(&ok, 0, "bk-verify before the damage");
    sb.remove_repo_file(&s.victim_pack());

    let out = sb.verify(&s.shown, &[]);
    assert_code(&out, 1, "bk-verify with a missing object");
    let p = problems(&out);
    assert!(
        p.iter().any(|r| r["problem"] == "missing"
            && r["object"] == id.as_str()
            && r["path"] == VICTIM),
        "expected a missing problem for {id} ({VICTIM}): {}",
        describe(&out)
    );
    assert!(
        p.iter().all(|r| r["path"] == VICTIM),
        "problems reported for intact files: {}",
        describe(&out)
    );
    assert!(
        !out.stderr.is_empty(),
        "bk-verify prints a summary on stderr"
    );

    let dest = sb.fresh_dir("restore");
    let out = sb.restore(&s.shown, &dest);
    assert_code(&out, 5, "restore with a missing object");
    let err = stderr(&out);
    assert!(
        err.contains(&id) && err.contains(VICTIM),
        "stderr should name {id} and {VICTIM}: {err}"
    );
    s.assert_others_restored(&dest);
    assert!(
        !restored(&dest, &s.src).join(VICTIM).exists(),
        "{VICTIM} restored although its object is missing"
    );

    let out = sb.open_object(&id);
    assert_code(&out, 5, "bk-open --object of a missing object");
    assert!(
        stderr(&out).contains(&id),
        "stderr should name {id}: {}",
        stderr(&out)
    );
}

#[test]
fn truncated_object_is_detected() {
    let s = setup();
    let sb = &s.sb;
    let id = s.victim_id();
    let pack = s.victim_pack();
    let len = sb.pack_files()[&pack];
    sb.truncate_repo_file(&pack, len / 2);

    // A pack cut short has lost its header: its blobs are not used, and
    // the pack is named.
    let out = sb.verify(&s.shown, &[]);
    assert_code(&out, 1, "bk-verify with a truncated pack");
    let p = problems(&out);
    assert!(
        p.iter().any(|r| r["problem"] == "missing"
            && r["object"] == id.as_str()
            && r["path"] == VICTIM),
        "expected a missing problem for {id} ({VICTIM}): {}",
        describe(&out)
    );
    assert!(
        p.iter().all(|r| r["path"] == VICTIM),
        "problems reported for intact files: {}",
        describe(&out)
    );
    let pack_id = pack.rsplit('/').next().unwrap();
    assert!(stderr(&out).contains(pack_id), "{}", describe(&out));

    let mut a = args!["--read-data"];
    a.extend(sb.key_args());
    let out = sb.verify(&s.shown, &a);
    assert_code(&out, 1, "bk-verify --read-data with a truncated object");
    assert!(
        problems(&out)
            .iter()
            .any(|r| r["object"] == id.as_str() && r["path"] == VICTIM),
        "expected a problem for {id}: {}",
        describe(&out)
    );

    let out = sb.open_object(&id);
    assert_code(&out, 5, "bk-open --object of a truncated object");
    assert!(
        stderr(&out).contains(&id),
        "stderr should name {id}: {}",
        stderr(&out)
    );

    let dest = sb.fresh_dir("restore");
    let out = sb.restore(&s.shown, &dest);
    assert_code(&out, 5, "restore with a truncated object");
    let err = stderr(&out);
    assert!(
        err.contains(&id) && err.contains(VICTIM),
        "stderr should name {id} and {VICTIM}: {err}"
    );
    assert!(
        !restored(&dest, &s.src).join(VICTIM).exists(),
        "a truncated {VICTIM} was restored under its real name"
    );
    s.assert_others_restored(&dest);
}

#[test]
fn corrupted_object_is_detected_by_read_data_and_restore() {
    let s = setup();
    let sb = &s.sb;
    let id = s.victim_id();
    sb.corrupt_blob(&id);

    let mut a = args!["--read-data"];
    a.extend(sb.key_args());
    let out = sb.verify(&s.shown, &a);
    assert_code(&out, 1, "bk-verify --read-data with a flipped byte");
    assert!(
        problems(&out).iter().any(|r| {
            r["problem"] == "decrypt" && r["object"] == id.as_str() && r["path"] == VICTIM
        }),
        "expected a decrypt problem for {id} ({VICTIM}): {}",
        describe(&out)
    );

    let dest = sb.fresh_dir("restore");
    let out = sb.restore(&s.shown, &dest);
    assert_code(&out, 5, "restore with a corrupted object");
    let err = stderr(&out);
    assert!(
        err.contains(&id) && err.contains(VICTIM),
        "stderr should name {id} and {VICTIM}: {err}"
    );
    assert!(
        !restored(&dest, &s.src).join(VICTIM).exists(),
        "a corrupted {VICTIM} was restored under its real name"
    );
    s.assert_others_restored(&dest);
}

#[test]
fn swapped_object_fails_the_sha256_check() {
    let s = setup();
    let sb = &s.sb;
    let id = s.victim_id();
    let records = s.backup.records();
    let other = object_ids(find_record(&records, KEEP[0].as_bytes()))[0].clone();
    // A well-formed blob of another content under the victim's id, in a
    // pack that decrypts under the repository's keys (only a backing-up
    // host could write it): what gives it away is its content.
    let message = sb.blob_message(&other);
    let size = sb.blob_at(&id).size;
    sb.remove_repo_file(&s.victim_pack());
    sb.write_pack(&[(&id, size, &message)]);

    let mut a = args!["--read-data"];
    a.extend(sb.key_args());
    let out = sb.verify(&s.shown, &a);
    assert_code(&out, 1, "bk-verify --read-data with a swapped object");
    assert!(
        problems(&out)
            .iter()
            .any(|r| r["object"] == id.as_str() && r["path"] == VICTIM),
        "expected a problem for {id} ({VICTIM}): {}",
        describe(&out)
    );

    // Without a record to compare sizes with, the content gives it away
    // (checked against the id once the blob is decrypted).
    let out = sb.open_object(&id);
    assert_code(&out, 5, "bk-open --object of a swapped blob");
    let err = stderr(&out);
    assert!(
        err.contains(&id) && err.contains("not the one its id names"),
        "{err}"
    );

    let dest = sb.fresh_dir("restore");
    let out = sb.restore(&s.shown, &dest);
    assert_code(&out, 5, "restore with a swapped object");
    let err = stderr(&out);
    assert!(err.contains(VICTIM), "stderr should name {VICTIM}: {err}");
    assert!(
        !restored(&dest, &s.src).join(VICTIM).exists(),
        "wrong content restored as {VICTIM}"
    );
    s.assert_others_restored(&dest);
}

#[test]
fn unknown_repository_format_is_refused() {
    refused_for_format(99, &["99"]);
}

/// A repository of format 1 (one file per object) is not read: every
/// program stops with a repository error that says so and points to the
/// recovery of format 1 with gpg alone.
#[test]
fn format_1_repository_is_refused_with_a_pointer_to_its_recovery() {
    refused_for_format(1, &["repository format 1", "doc/recovery-format-1.md"]);
}

/// Sets the repository's format to `version`: every program refuses it
/// (exit 5, stderr saying each of `needles`) and writes nothing.
fn refused_for_format(version: u64, needles: &[&str]) {
    let s = setup();
    let sb = &s.sb;
    set_repo_format(&sb.repo, version);
    let id = s.victim_id();
    let dest = sb.fresh_dir("restore");
    let cases: Vec<(&str, &str, Vec<OsString>, &[u8])> = vec![
        ("bk-seal", "bk-seal", sb.seal_args(), &s.backup.hashed),
        (
            "bk-index write",
            "bk-index",
            [args!["write"], sb.seal_args()].concat(),
            &s.backup.sealed,
        ),
        (
            "bk-index list",
            "bk-index",
            [args!["list"], sb.repo_args()].concat(),
            b"",
        ),
        (
            "bk-index show",
            "bk-index",
            [args!["show", "latest"], sb.repo_args(), sb.key_args()].concat(),
            b"",
        ),
        ("bk-verify", "bk-verify", sb.repo_args(), &s.shown),
        (
            "bk-index prune",
            "bk-index",
            [
                args!["prune", "--grace", "0s"],
                sb.repo_args(),
                sb.key_args(),
            ]
            .concat(),
            b"",
        ),
        (
            "bk-open --object",
            "bk-open",
            [sb.repo_args(), sb.key_args(), args!["--object", &id]].concat(),
            b"",
        ),
        (
            "bk-open --to",
            "bk-open",
            [sb.repo_args(), sb.key_args(), args!["--to", &dest]].concat(),
            &s.shown,
        ),
    ];
    let snapshots = sb.snapshot_names();
    let packs = sb.pack_files();
    let mut f = Failures::default();
    for (what, program, a, input) in cases {
        let out = sb.run(program, &a, input);
        f.expect_code(what, &out, &[5]);
        for needle in needles {
            f.expect_stderr(what, &out, needle);
        }
    }
    if sb.snapshot_names() != snapshots || sb.pack_files() != packs {
        f.0.push("a program wrote into a repository of unknown format".into());
    }
    f.check();
}

#[test]
fn nonexistent_recipient_key_file_is_named() {
    let sb = Sandbox::new();
    let src = sb.path("src");
    tree(&src);
    let (_, hashed) = sb.scan_hash(&src);
    let missing = sb.path("keys/nobody.pub.asc");
    let mut f = Failures::default();

    let out = sb.run(
        "bk-seal",
        &args!["--repo", &sb.repo, "-r", &missing, "--init"],
        &hashed,
    );
    f.expect_code("bk-seal -r missing", &out, &[2, 4]);
    f.expect_stderr("bk-seal -r missing", &out, missing.to_str().unwrap());

    // A file that is not a key at all.
    let garbage = sb.path("keys/garbage.asc");
    fs::write(&garbage, "this is not an OpenPGP key\n").unwrap();
    let out = sb.run(
        "bk-seal",
        &args!["--repo", &sb.repo, "-r", &garbage, "--init"],
        &hashed,
    );
    f.expect_code("bk-seal -r garbage", &out, &[4]);
    f.expect_stderr("bk-seal -r garbage", &out, garbage.to_str().unwrap());

    // bk-index write too (against a real repository).
    let sealed = sb.seal(&hashed);
    assert_ok(&sealed, "bk-seal");
    let out = sb.run(
        "bk-index",
        &args!["write", "--repo", &sb.repo, "-r", &missing],
        &sealed.stdout,
    );
    f.expect_code("bk-index write -r missing", &out, &[2, 4]);
    f.expect_stderr("bk-index write -r missing", &out, missing.to_str().unwrap());
    f.check();
}

#[test]
fn missing_repository_without_init_is_a_repository_problem() {
    let sb = Sandbox::new();
    let src = sb.path("src");
    tree(&src);
    let (_, hashed) = sb.scan_hash(&src);
    let out = sb.run("bk-seal", &sb.seal_args(), &hashed);
    assert_code(&out, 5, "bk-seal without --init on a missing repository");
    assert!(
        stderr(&out).contains(sb.repo.to_str().unwrap()),
        "stderr should name the repository: {}",
        stderr(&out)
    );
    assert!(
        !sb.repo.exists(),
        "bk-seal created the repository without --init"
    );
}

#[test]
fn open_unknown_object_id_is_named() {
    let s = setup();
    let id = "0123456789abcdef".repeat(4);
    let out = s.sb.open_object(&id);
    assert_code(&out, 5, "bk-open --object of an unknown id");
    assert!(
        stderr(&out).contains(&id),
        "stderr should name {id}: {}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn restore_refuses_paths_outside_the_target() {
    let s = setup();
    let sb = &s.sb;
    let outside = sb.fresh_dir("outside");
    let dest = sb.fresh_dir("restore");
    let records = s.backup.records();
    let good = find_record(&records, KEEP[0].as_bytes()).clone();
    // A hand-made stream: no root, so every path is relative to the
    // target itself.
    let with_path = |p: &str| {
        let mut r = good.clone();
        r["path"] = Value::from(p);
        r.as_object_mut().unwrap().remove("root");
        r
    };
    let abs = outside.join("absolute.txt");
    let mut link = good.clone();
    link["kind"] = Value::from("symlink");
    link["path"] = Value::from("evil-link");
    link.as_object_mut().unwrap().remove("root");
    link["target"] = Value::from(outside.to_str().unwrap());
    link["mode"] = Value::from(0o120777);
    link.as_object_mut().unwrap().remove("objects");
    link.as_object_mut().unwrap().remove("sha256");
    link["size"] = Value::from(outside.to_str().unwrap().len());
    let hostile = [
        with_path("../escape.txt"),
        with_path("sub/../../escape-2.txt"),
        with_path(abs.to_str().unwrap()),
        link,
        with_path("evil-link/planted.txt"),
    ];
    let out = sb.restore(&to_ndjson(&hostile), &dest);
    assert!(
        !out.status.success(),
        "restoring a hostile snapshot should fail: {}",
        describe(&out)
    );
    let escaped: Vec<PathBuf> = [
        sb.base.join("escape.txt"),
        sb.base.join("escape-2.txt"),
        abs,
        outside.join("planted.txt"),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .collect();
    assert!(
        escaped.is_empty(),
        "restore wrote outside its target: {escaped:?}"
    );
    let err = stderr(&out);
    for p in ["../escape.txt", "escape-2.txt", "planted.txt"] {
        assert!(err.contains(p), "stderr should name {p}: {err}");
    }
}

fn is_object_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A bk-seal killed in the middle of a big file leaves no half-written
/// pack under a real name, and the next run completes the backup.
#[test]
fn interrupted_seal_leaves_no_partial_object_and_the_next_run_completes() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let sb = Sandbox::new();
    let first = sb.path("first");
    write_file(&first.join("earlier.txt"), b"an earlier backup\n", 0o644);
    sb.backup(&first);

    let src = sb.path("src");
    write_file(&src.join("small.txt"), b"small\n", 0o644);
    let big = src.join("big.bin");
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&big).unwrap());
        for i in 0..256u64 {
            f.write_all(&pseudo_random(1000 + i, 1 << 20)).unwrap();
        }
        f.flush().unwrap();
    }
    let (_, hashed) = sb.scan_hash(&src);
    let packs_before = sb.pack_files().len();

    let mut cmd = sb.command("bk-seal");
    cmd.args(sb.seal_args())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(&hashed).unwrap();
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(5));
        if let Some(status) = child.try_wait().unwrap() {
            panic!("bk-seal finished ({status}) before it could be interrupted");
        }
        // A pack of this run is committed (renamed into place), more are
        // being written.
        if sb.pack_files().len() > packs_before {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "bk-seal wrote nothing for 2 minutes"
        );
    }
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait().unwrap();

    // Whatever carries a pack's name is a complete pack (its header
    // decrypts), and every blob it lists decrypts to its content.
    let packs_now = sb.pack_files();
    let blobs = sb.blobs();
    assert!(
        packs_now.len() > packs_before,
        "a pack of this run was committed before the kill: {packs_now:?}"
    );
    for id in blobs.keys() {
        assert!(is_object_id(id));
        let out = sb.open_object(id);
        assert_ok(&out, &format!("blob {id} after an interrupted bk-seal"));
    }
    assert!(blobs.len() >= 2, "the earlier backup's blobs are gone");

    // The next run completes the backup.
    sb.backup(&src);
    let shown = sb.show_latest();
    let mut a = args!["--read-data"];
    a.extend(sb.key_args());
    let out = sb.verify(&shown, &a);
    assert_code(&out, 0, "bk-verify --read-data after the resumed backup");
    let dest = sb.fresh_dir("restore");
    assert_ok(
        &sb.restore(&shown, &dest),
        "restore after the resumed backup",
    );
    let dest = restored(&dest, &src);
    assert_eq!(sha256_file(&dest.join("big.bin")), sha256_file(&big));
    assert_eq!(fs::read(dest.join("small.txt")).unwrap(), b"small\n");
}

/// Two bk-seal runs at once on one repository either both work or one
/// is refused because of the lock; the repository stays sound.
#[test]
fn concurrent_seals_on_one_repository_do_not_corrupt_it() {
    let sb = Sandbox::new();
    let first = sb.path("first");
    write_file(&first.join("earlier.txt"), b"an earlier backup\n", 0o644);
    sb.backup(&first);

    let shared = pseudo_random(71, 8 << 20);
    let mut hashed = Vec::new();
    for (i, name) in ["tree-a", "tree-b"].iter().enumerate() {
        let root = sb.path(name);
        write_file(&root.join("shared.bin"), &shared, 0o644);
        write_file(
            &root.join("own.bin"),
            &pseudo_random(80 + i as u64, 4 << 20),
            0o644,
        );
        hashed.push(sb.scan_hash(&root).1);
    }
    let outs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = hashed
            .iter()
            .map(|h| s.spawn(|| sb.run("bk-seal", &sb.seal_args(), h)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sealed = Vec::new();
    for (out, h) in outs.iter().zip(&hashed) {
        if out.status.success() {
            sealed.push(out.stdout.clone());
        } else {
            assert_code(out, 5, "a concurrent bk-seal that failed");
            assert!(
                stderr(out).to_lowercase().contains("lock"),
                "a concurrent bk-seal may only fail because of the lock: {}",
                describe(out)
            );
            let again = sb.run("bk-seal", &sb.seal_args(), h);
            assert_ok(&again, "bk-seal after the other run finished");
            sealed.push(again.stdout);
        }
    }
    let mut a = args!["--read-data"];
    a.extend(sb.key_args());
    for s in &sealed {
        sb.index_write(s);
        let out = sb.verify(s, &a);
        assert_code(&out, 0, "bk-verify --read-data after concurrent runs");
    }
}

/// A symlink already in the target directory must not carry restored
/// files outside it.
#[test]
fn restore_does_not_follow_symlinks_already_in_the_target() {
    let s = setup();
    let sb = &s.sb;
    let outside = sb.fresh_dir("outside");
    let dest = sb.fresh_dir("restore");
    let place = restored(&dest, &s.src);
    fs::create_dir_all(&place).unwrap();
    make_symlink(&outside, &place.join("keep-2"));
    let out = sb.restore(&s.shown, &dest);
    let leaked = files_under(&outside);
    assert!(
        leaked.is_empty(),
        "restore wrote through a symlink in the target into {}: {leaked:?}; {}",
        outside.display(),
        describe(&out)
    );
}

#[test]
fn file_records_whose_objects_do_not_hold_their_content_are_refused_and_reported() {
    let s = setup();
    let records = parse_records(&s.shown);
    let edit = |f: &dyn Fn(&mut Value)| -> Vec<u8> {
        let mut recs = records.clone();
        for r in &mut recs {
            if r["path"] == VICTIM {
                f(r);
            }
        }
        to_ndjson(&recs)
    };
    let no_objects = edit(&|r| r["objects"] = Value::Array(Vec::new()));
    let short = edit(&|r| r["objects"][0]["size"] = Value::from(1000));
    let keep = records
        .iter()
        .find(|r| r["path"] == KEEP[0])
        .unwrap()
        .clone();
    // Another file's object, with its size made to match: only the id key
    // can tell that it is not this content's.
    let swapped = edit(&|r| {
        r["objects"] = keep["objects"].clone();
        r["objects"][0]["size"] = r["size"].clone();
    });
    for (what, stream, problem) in [
        ("no objects", &no_objects, "incomplete"),
        ("objects short of the size", &short, "incomplete"),
        ("another file's object", &swapped, "wrong-id"),
    ] {
        let before = s.sb.snapshot_names();
        if problem == "incomplete" {
            let out = s.sb.index_write_with(stream, &[]);
            assert_code(&out, 3, &format!("bk-index write of {what}"));
            let err = stderr(&out);
            assert!(
                err.contains(VICTIM) && err.contains("no snapshot written"),
                "{what}: {err}"
            );
            assert_eq!(s.sb.snapshot_names(), before, "{what}: no snapshot");
        }
        let out = s.sb.verify(stream, &[]);
        assert_code(&out, 1, &format!("bk-verify of {what}"));
        let found = problems(&out);
        assert!(
            found
                .iter()
                .any(|p| p["problem"] == problem && p["path"] == VICTIM),
            "{what}: {found:?}"
        );
    }
    // The records as stored pass.
    assert_ok(&s.sb.verify(&s.shown, &[]), "bk-verify of the snapshot");
}

/// bk-verify reads the packs' headers, which only the id key opens: on a
/// machine without it, it says so (exit 4) instead of calling every
/// object missing; with the secret key it recovers the id key.
#[test]
fn verify_without_the_id_key_needs_the_secret_key() {
    let s = setup();
    let sb = &s.sb;
    fs::remove_dir_all(sb.data_home.join("bk")).unwrap();
    fs::remove_dir_all(sb.cache_home.join("bk")).unwrap();
    let out = sb.verify(&s.shown, &[]);
    assert_code(&out, 4, "bk-verify without the id key");
    let err = stderr(&out);
    assert!(err.contains("no id key") && err.contains("--key"), "{err}");
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    let out = sb.verify(&s.shown, &sb.key_args());
    assert_ok(&out, "bk-verify --key without the local id key");
    assert!(out.stdout.is_empty(), "{}", describe(&out));
}
