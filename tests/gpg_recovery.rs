//! Recovery with gpg alone: the README's "Recovering with gpg alone" steps,
//! taken from README.md as they stand (so the README and this test cannot
//! drift apart), run by bash with nothing on the PATH but gpg, openssl, jq
//! and coreutils, on a repository holding a chunked file and an unchunked,
//! compressed one. The recovered bytes, modes and times must be the
//! originals', and gpg must never have asked for a passphrase.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const README: &str = include_str!("../README.md");

/// The `sh` code blocks of the README's recovery section, in order.
fn recovery_blocks() -> Vec<String> {
    let start = README
        .find("\n## Recovering with gpg alone\n")
        .expect("README.md has a section \"Recovering with gpg alone\"");
    let section = &README[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |n| n + 3)];
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        match (&mut current, line) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(
        current.is_none(),
        "an unclosed code block in the README's recovery section"
    );
    assert!(
        blocks.len() >= 5,
        "the recovery section has {} sh blocks",
        blocks.len()
    );
    blocks
}

/// `script` with its one line `NAME=…` set to `NAME=value` (the README
/// uses an example repository and path; the test substitutes its own).
fn set_variable(script: &str, name: &str, readme_value: &str, value: &str) -> String {
    let wanted = format!("{name}={readme_value}");
    let found = script.lines().filter(|l| *l == wanted).count();
    assert_eq!(
        found, 1,
        "the README's recovery steps should set `{wanted}` once"
    );
    script
        .lines()
        .map(|l| {
            if l == wanted {
                format!("{name}='{value}'")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The GNU coreutils programs: the recovery may use any of them.
const COREUTILS: &[&str] = &[
    "[",
    "arch",
    "b2sum",
    "base32",
    "base64",
    "basename",
    "basenc",
    "cat",
    "chgrp",
    "chmod",
    "chown",
    "cksum",
    "comm",
    "cp",
    "csplit",
    "cut",
    "date",
    "dd",
    "df",
    "dir",
    "dircolors",
    "dirname",
    "du",
    "echo",
    "env",
    "expand",
    "expr",
    "factor",
    "false",
    "fmt",
    "fold",
    "head",
    "id",
    "install",
    "join",
    "link",
    "ln",
    "ls",
    "md5sum",
    "mkdir",
    "mkfifo",
    "mknod",
    "mktemp",
    "mv",
    "nl",
    "nproc",
    "numfmt",
    "od",
    "paste",
    "pathchk",
    "pr",
    "printenv",
    "printf",
    "ptx",
    "pwd",
    "readlink",
    "realpath",
    "rm",
    "rmdir",
    "seq",
    "sha1sum",
    "sha224sum",
    "sha256sum",
    "sha384sum",
    "sha512sum",
    "shred",
    "shuf",
    "sleep",
    "sort",
    "split",
    "stat",
    "sum",
    "sync",
    "tac",
    "tail",
    "tee",
    "test",
    "timeout",
    "touch",
    "tr",
    "true",
    "truncate",
    "tsort",
    "uname",
    "unexpand",
    "uniq",
    "unlink",
    "vdir",
    "wc",
    "whoami",
    "yes",
];

/// A directory of symlinks to bash, gpg, openssl, jq and coreutils: the
/// only PATH the recovery gets.
fn minimal_path(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let find = |name: &str| {
        ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
    };
    for tool in ["bash", "gpg", "openssl", "jq"] {
        let target = find(tool).unwrap_or_else(|| {
            panic!("{tool} is not installed (apt-get install gnupg openssl jq): the gpg-only recovery needs it")
        });
        symlink(target, dir.join(tool)).unwrap();
    }
    for tool in COREUTILS {
        if let Some(target) = find(tool) {
            symlink(target, dir.join(tool)).unwrap();
        }
    }
    dir.to_path_buf()
}

/// Stops the gpg-agent the recovery's `gpg --import` started, however the
/// test ends.
struct Agent(PathBuf);

impl Drop for Agent {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = Command::new("gpgconf")
                .env("GNUPGHOME", &self.0)
                .args(["--kill", "gpg-agent"])
                .status();
        }
    }
}

#[test]
fn the_readme_recovers_chunked_and_unchunked_files_with_gpg_alone() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    // Larger than the default chunk threshold (8 MiB): chunked.
    let big = pseudo_random(11, 20 << 20);
    // Text: one object, stored compressed.
    let text: Vec<u8> = (0..6000)
        .flat_map(|i| {
            format!("line {i}: taxes, receipts and the like, year after year\n").into_bytes()
        })
        .collect();
    write_file(&tree.join("photos/scan.tiff"), &big, 0o640);
    write_file(&tree.join("docs/tax.pdf"), &text, 0o604);
    set_mtime_ns(&tree.join("photos/scan.tiff"), T0);
    set_mtime_ns(&tree.join("docs/tax.pdf"), T0 + 987_654_321);

    // Back up with default settings, the id key certified at --init and
    // the snapshot signed, as a careful user would.
    let (_, hashed) = sb.scan_hash(&tree);
    let mut a = sb.seal_args();
    a.push("--init".into());
    a.extend(sb.key_args());
    let sealed = sb.run("bk-seal", &a, &hashed);
    assert_ok(&sealed, "bk-seal --init --key");
    let records = parse_records(&sealed.stdout);
    let objects = |path: &[u8]| {
        find_record(&records, path)["objects"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert!(
        objects(b"photos/scan.tiff").len() >= 2,
        "scan.tiff should be chunked"
    );
    let tax = objects(b"docs/tax.pdf");
    assert_eq!(tax.len(), 1, "tax.pdf should be one object");
    assert!(
        tax[0]["stored"].as_u64().unwrap() < text.len() as u64 / 4,
        "tax.pdf should be stored compressed: {tax:?}"
    );
    let written = sb.index_write_with(&sealed.stdout, &args!["--sign-key", &sb.sec_key]);
    assert_ok(&written, "bk-index write --sign-key");
    assert!(sb.repo.join("packs").is_dir() && !sb.repo.join("objects").exists());

    // The README's steps, for tax.pdf, then steps 7 and 8 again for the
    // chunked file.
    let blocks = recovery_blocks();
    let all = set_variable(
        &blocks.concat(),
        "repo",
        "/mnt/backup",
        sb.repo.to_str().unwrap(),
    );
    let per_file = blocks
        .iter()
        .position(|b| b.lines().any(|l| l.starts_with("path=")))
        .expect("a recovery step that sets path=");
    let again = set_variable(
        &blocks[per_file..].concat(),
        "path",
        "docs/tax.pdf",
        "photos/scan.tiff",
    );
    let script = format!("set -eu\n{all}{again}");

    let home = sb.path("recovery-home");
    fs::create_dir_all(&home).unwrap();
    fs::write(home.join("me-secret.asc"), &sb.key.secret).unwrap();
    let _agent = Agent(home.join("recovery-gnupg"));
    let work = sb.path("work");
    fs::create_dir_all(&work).unwrap();
    fs::write(sb.path("recover.sh"), &script).unwrap();
    let path = minimal_path(&sb.path("minimal-bin"));
    let mut cmd = Command::new(path.join("bash"));
    cmd.env_clear()
        .env("PATH", &path)
        .env("HOME", &home)
        .env("LC_ALL", "C")
        .current_dir(&work)
        .arg(sb.path("recover.sh"));
    let out = run_command(cmd, b"", DEFAULT_TIMEOUT);
    assert_ok(&out, "the README's recovery steps");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = stderr(&out);

    // gpg never asked for a passphrase (no pinentry, no agent trouble).
    for sign in ["problem with the agent", "pinentry", "Bad session key"] {
        assert!(!stderr.contains(sign), "gpg: {sign:?} in\n{stderr}");
    }
    // The certification and the root's signature verify; the root's MAC,
    // computed by hand, is the one it carries.
    assert_eq!(stderr.matches("Good signature").count(), 2, "{stderr}");
    let macs: Vec<&str> = stdout
        .lines()
        .filter(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    assert_eq!(
        macs.len(),
        2,
        "the MAC computed and the MAC carried: {stdout}"
    );
    assert_eq!(macs[0], macs[1], "the root's MAC should verify");
    for name in ["tax.pdf", "scan.tiff"] {
        assert!(
            stdout.contains(&format!("{name}: OK")),
            "sha256sum --check of {name}: {stdout}"
        );
    }

    for (name, data, mode, mtime) in [
        ("tax.pdf", &text, 0o604, T0 + 987_654_321),
        ("scan.tiff", &big, 0o640, T0),
    ] {
        let got = work.join(name);
        assert!(
            fs::read(&got).unwrap() == *data,
            "{name}: recovered content differs"
        );
        let meta = fs::metadata(&got).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{name}: mode");
        assert_eq!(mtime_ns(&got), mtime, "{name}: mtime");
    }
}
