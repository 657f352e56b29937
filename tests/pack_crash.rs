//! bk-seal killed mid-run (issue 16): no snapshot is written, no
//! half-written pack is visible, and the next run stores only what the
//! killed one did not make durable; older snapshots stay whole.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::packs::*;
use common::*;

#[test]
fn a_killed_seal_leaves_complete_packs_the_next_run_reuses() {
    let sb = Sandbox::new();
    let earlier = sb.fresh_dir("earlier");
    write_file(&earlier.join("old.txt"), &text_of(1, 50_000), 0o644);
    let e = sb.backup(&earlier);

    // 48 random files of 256 KiB: with 1 MiB packs, a dozen packs.
    let tree = sb.fresh_dir("tree");
    for i in 0..48u64 {
        write_file(
            &tree.join(format!("f{i:02}.bin")),
            &pseudo_random(500 + i, 256 << 10),
            0o644,
        );
    }
    let (_, hashed) = sb.scan_hash(&tree);
    let lines: Vec<&[u8]> = hashed.split_inclusive(|&b| b == b'\n').collect();
    let packs_before = packs(&sb);

    // bk-seal | bk-index write, fed two thirds of the records and held
    // open, is killed (SIGKILL) once it has committed several packs.
    let Pipeline { mut seal, write } = sb.spawn_pipeline(Stdio::piped(), &["--pack-size", "1M"]);
    let mut input = seal.stdin.take().unwrap();
    for l in &lines[..lines.len() * 2 / 3] {
        input.write_all(l).unwrap();
    }
    input.flush().unwrap();
    let started = Instant::now();
    while packs(&sb).len() < packs_before.len() + 5 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "bk-seal committed no 5 packs: {:?}",
            packs(&sb)
        );
        assert!(seal.try_wait().unwrap().is_none(), "bk-seal ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
    seal.kill().unwrap();
    seal.wait().unwrap();
    drop(input);
    let written = write.wait_with_output().unwrap();
    assert!(
        !written.status.success(),
        "bk-index write after a killed bk-seal should fail: {}",
        describe(&written)
    );
    assert_eq!(
        sb.snapshot_names(),
        BTreeSet::from([e.snapshot.clone()]),
        "the killed run wrote a snapshot"
    );

    // What the killed run left under real names is whole packs (every
    // header verifies), holding some of the files.
    let killed_packs: Vec<_> = packs(&sb)
        .into_iter()
        .filter(|(id, _)| !packs_before.contains_key(id))
        .collect();
    let headers = pack_headers(&sb);
    let killed_bytes: u64 = killed_packs.iter().map(|(_, size)| size).sum();
    let killed_blobs: usize = killed_packs.iter().map(|(id, _)| headers[id].1.len()).sum();
    eprintln!(
        "MEASURED killed run: {} packs ({killed_bytes} bytes) with {killed_blobs} blobs",
        killed_packs.len()
    );
    assert!((4..48).contains(&killed_blobs), "{killed_blobs} blobs");

    // The re-run stores only the rest.
    let run = sb.backup_with(&tree, &[], &args!["--pack-size", "1M"]);
    let stored = run.seal_count("bytes stored");
    let new = run.seal_count("new objects added");
    eprintln!(
        "MEASURED re-run: {new} new objects, {stored} bytes stored ({})",
        summary_line(&run.seal_stderr, "bk-seal:")
    );
    assert_eq!(
        new as usize,
        48 - killed_blobs,
        "the re-run should store exactly the files the killed run did not"
    );
    let total = 48 * (256 << 10);
    assert!(
        stored < total && stored + killed_bytes <= total + total / 50,
        "re-run stored {stored} bytes after the killed run's {killed_bytes}, of {total}"
    );
    let after = packs(&sb);
    for (id, _) in &killed_packs {
        assert!(
            after.contains_key(id),
            "pack {id} of the killed run is gone"
        );
    }
    assert_verifies(&sb, &run.backup.snapshot);
    assert_restores(&sb, &run.backup.snapshot, &tree);
    assert_verifies(&sb, &e.snapshot);
}
