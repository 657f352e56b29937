//! A repository directory holding something other than regular files
//! where bk expects its files: a FIFO (whose open waits for a writer
//! forever) or a symlink to `/dev/zero` (which has no end) in place of a
//! pack, a snapshot, a lock, `bk-repo.json`, the encrypted id key or an
//! inventory file. Every program that reads the place must finish within
//! seconds with a repository error (exit 5) naming the file and what it
//! is, never hang and never read without end.

mod common;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

/// Far more than any of these runs needs; a program still running then is
/// hanging, and the harness kills it and fails the test.
const QUICK: Duration = Duration::from_secs(20);

/// What is put where a file should be.
#[derive(Debug, Clone, Copy)]
enum Plant {
    Fifo,
    DevZero,
}

impl Plant {
    /// How the error describes it.
    fn shown(self) -> &'static str {
        match self {
            Plant::Fifo => "not a regular file (a FIFO)",
            Plant::DevZero => "not a regular file (a character device)",
        }
    }

    fn put(self, path: &Path) {
        let _ = fs::remove_file(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        match self {
            Plant::Fifo => {
                nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap()
            }
            Plant::DevZero => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
        }
    }
}

/// A repository with one snapshot of two files, and what the tests feed
/// the programs.
struct Fixture {
    sb: Sandbox,
    /// `bk-index show latest` of the snapshot.
    shown: Vec<u8>,
    /// The hashed records of the tree (input for bk-seal).
    hashed: Vec<u8>,
    /// One object the snapshot names.
    object: String,
    /// The pack that holds it (its path in the repository).
    pack: String,
    /// The snapshot's file name.
    snapshot: String,
    /// The inventory file's name.
    inventory: String,
}

fn fixture() -> Fixture {
    let sb = Sandbox::new();
    let tree = sb.fresh_dir("tree");
    write_file(&tree.join("a.txt"), b"first file", 0o644);
    write_file(&tree.join("b.txt"), b"second file", 0o644);
    let backup = sb.backup(&tree);
    let shown = sb.show_latest();
    let object = parse_records(&shown)
        .iter()
        .flat_map(object_ids)
        .next()
        .expect("an object");
    let pack = sb.blob_at(&object).pack;
    let inventory = sb
        .repo_files("inventory")
        .into_keys()
        .next()
        .expect("an inventory file");
    Fixture {
        shown,
        hashed: backup.hashed,
        object,
        pack,
        snapshot: backup.snapshot,
        inventory,
        sb,
    }
}

/// One program run against a repository copy.
struct Run {
    what: &'static str,
    program: &'static str,
    args: Vec<OsString>,
    stdin: Vec<u8>,
    /// Reports the place as a problem record of a checked record (exit
    /// 1, like a missing object) rather than stopping with exit 5.
    as_problem: bool,
}

impl Fixture {
    /// A fresh copy of the repository named `name`, with `plant` at `rel`.
    fn planted(&self, name: &str, rel: &str, plant: Plant) -> PathBuf {
        let copy = self.sb.path(name);
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(&self.sb.repo)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(st.success(), "cp -a of the repository");
        plant.put(&copy.join(rel));
        copy
    }

    fn key(&self) -> Vec<OsString> {
        self.sb.key_args()
    }

    /// The programs that read the place `rel`.
    fn runs_for(&self, rel: &str, repo: &Path, dest: &Path) -> Vec<Run> {
        let r = |extra: Vec<OsString>| {
            let mut a = args!["--repo", repo];
            a.extend(extra);
            a
        };
        let with_key = |mut a: Vec<OsString>| {
            a.extend(self.key());
            a
        };
        let open_object = Run {
            what: "bk-open --object",
            program: "bk-open",
            args: with_key(r(args!["--object", &self.object])),
            stdin: vec![],
            as_problem: false,
        };
        let restore = Run {
            what: "bk-open --to (restore)",
            program: "bk-open",
            args: with_key(r(args!["--to", dest])),
            stdin: self.shown.clone(),
            as_problem: false,
        };
        let inventory = Run {
            what: "bk-verify --inventory",
            program: "bk-verify",
            args: r(args!["--inventory"]),
            stdin: vec![],
            as_problem: false,
        };
        let read_data = |as_problem| Run {
            what: "bk-verify --read-data",
            program: "bk-verify",
            args: with_key(r(args!["--read-data"])),
            stdin: self.shown.clone(),
            as_problem,
        };
        let show = || Run {
            what: "bk-index show",
            program: "bk-index",
            args: with_key({
                let mut a = args!["show", "latest"];
                a.extend(r(vec![]));
                a
            }),
            stdin: vec![],
            as_problem: false,
        };
        let prune = || Run {
            what: "bk-index prune --grace 0s",
            program: "bk-index",
            args: with_key({
                let mut a = args!["prune", "--grace", "0s"];
                a.extend(r(vec![]));
                a
            }),
            stdin: vec![],
            as_problem: false,
        };
        let list = Run {
            what: "bk-index list",
            program: "bk-index",
            args: {
                let mut a = args!["list"];
                a.extend(r(vec![]));
                a
            },
            stdin: vec![],
            as_problem: false,
        };
        match rel.split('/').next().unwrap() {
            // Every program reads the packs' headers into its index first.
            "packs" => vec![
                open_object,
                restore,
                read_data(false),
                Run {
                    what: "bk-verify",
                    program: "bk-verify",
                    args: r(vec![]),
                    stdin: self.shown.clone(),
                    as_problem: false,
                },
                show(),
            ],
            "snapshots" => vec![
                show(),
                prune(),
                Run {
                    what: "bk-open --snapshot latest",
                    program: "bk-open",
                    args: with_key(r(args!["--snapshot", "latest", "--to", dest])),
                    stdin: vec![],
                    as_problem: false,
                },
                Run {
                    what: "bk-verify --all-snapshots",
                    program: "bk-verify",
                    args: with_key(r(args!["--all-snapshots"])),
                    stdin: vec![],
                    as_problem: false,
                },
            ],
            "locks" => vec![
                prune(),
                Run {
                    what: "bk-seal",
                    program: "bk-seal",
                    args: r(args!["-r", &self.sb.pub_key]),
                    stdin: self.hashed.clone(),
                    as_problem: false,
                },
                Run {
                    what: "bk-index unlock",
                    program: "bk-index",
                    args: {
                        let mut a = args!["unlock"];
                        a.extend(r(vec![]));
                        a
                    },
                    stdin: vec![],
                    as_problem: false,
                },
            ],
            "bk-repo.json" => vec![list, show(), inventory, open_object],
            "keys" => vec![open_object, read_data(false)],
            "inventory" => vec![inventory],
            other => panic!("no programs for {other}"),
        }
    }
}

/// Runs `run` against the planted copy; it must end quickly with exit 5
/// and an error naming the file and what it is.
fn assert_refused(f: &Fixture, run: &Run, rel: &str, plant: Plant) -> Output {
    let mut cmd = f.sb.command(run.program);
    cmd.args(&run.args);
    let start = Instant::now();
    let out = run_command(cmd, &run.stdin, QUICK);
    let took = start.elapsed();
    let what = format!("{} with {plant:?} at {rel}", run.what);
    assert!(took < Duration::from_secs(10), "{what}: took {took:?}");
    if run.as_problem {
        // bk-verify checking records: a problem record naming the object.
        assert_code(&out, 1, &what);
        let object = rel.rsplit('/').next().unwrap();
        let problems = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            problems.contains(object) && problems.contains(plant.shown()),
            "{what}: no problem naming {object} and saying {:?}: {}",
            plant.shown(),
            describe(&out)
        );
        return out;
    }
    assert_code(&out, 5, &what);
    let err = stderr(&out);
    assert!(
        err.contains(rel) && err.contains(plant.shown()),
        "{what}: the error does not name {rel} and say {:?}: {err}",
        plant.shown()
    );
    out
}

#[test]
fn fifos_and_devices_in_place_of_repository_files_are_refused_at_once() {
    let f = fixture();
    let places = [
        f.pack.clone(),
        format!("snapshots/{}", f.snapshot),
        "locks/exclusive-0badf00d.lock".to_owned(),
        "bk-repo.json".to_owned(),
        "keys/id-key.pgp".to_owned(),
        format!("inventory/{}", f.inventory),
    ];
    let mut n = 0;
    for rel in &places {
        for plant in [Plant::Fifo, Plant::DevZero] {
            n += 1;
            let repo = f.planted(&format!("repo-{n}"), rel, plant);
            let dest = f.sb.path(format!("restore-{n}"));
            for run in f.runs_for(rel, &repo, &dest) {
                assert_refused(&f, &run, rel, plant);
            }
            // Nothing was deleted: every pack is still there.
            let before = files_under(&f.sb.repo.join("packs"));
            let after = files_under(&repo.join("packs"));
            assert!(
                before
                    .iter()
                    .all(|p| after.contains(p) || rel.ends_with(&*p.to_string_lossy())),
                "{plant:?} at {rel}: packs were deleted"
            );
        }
    }
}
