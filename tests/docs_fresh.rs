//! The committed man pages and completions must be exactly what the CLI
//! definitions generate today; otherwise someone changed `lib/cli/`
//! without running `make docs`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Relative paths of the regular files under `root/dir`.
fn files_under(root: &Path, dir: &str) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return out;
    };
    for entry in entries {
        let entry = entry.expect("read_dir entry");
        if entry.file_type().expect("file type").is_file() {
            out.insert(Path::new(dir).join(entry.file_name()));
        }
    }
    out
}

#[test]
fn committed_docs_are_fresh() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().expect("tempdir");
    bk::cli::docs::generate(tmp.path()).expect("generate docs");

    let mut problems = Vec::new();
    for dir in [bk::cli::docs::MAN_DIR, bk::cli::docs::COMPLETIONS_DIR] {
        let fresh = files_under(tmp.path(), dir);
        let committed = files_under(repo, dir);
        for rel in &fresh {
            let want = std::fs::read(tmp.path().join(rel)).expect("read generated file");
            match std::fs::read(repo.join(rel)) {
                Ok(have) if have == want => {}
                Ok(_) => problems.push(format!("{} is stale", rel.display())),
                Err(_) => problems.push(format!("{} is missing", rel.display())),
            }
        }
        for rel in committed.difference(&fresh) {
            problems.push(format!(
                "{} is no longer generated (delete it)",
                rel.display()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "generated docs are out of date; run `make docs` and commit the result:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn generation_is_deterministic() {
    let a = bk::cli::docs::render_all().expect("render");
    let b = bk::cli::docs::render_all().expect("render");
    assert_eq!(a, b);
}
