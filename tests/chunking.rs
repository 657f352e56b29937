//! Content-defined chunking of large files: a file above
//! `--chunk-threshold` is stored as FastCDC chunks (each its own object,
//! listed in order), so a small edit stores only the chunks around it,
//! identical or shifted content shares chunks, and the file can still be
//! recovered with gpg alone by concatenating its decrypted objects.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::FileExt;

use bk::stages::seal::{CHUNK_MAX, CHUNK_MIN};
use common::*;
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// Plaintext sizes of a record's objects, in order.
fn object_sizes(rec: &Value) -> Vec<u64> {
    rec["objects"]
        .as_array()
        .unwrap_or_else(|| panic!("record without objects: {rec}"))
        .iter()
        .map(|o| o["size"].as_u64().expect("object size"))
        .collect()
}

/// Checks the chunk list of a record for a file of `len` bytes: more than
/// one object, sizes adding up to the file, each at most CHUNK_MAX and all
/// but the last at least CHUNK_MIN, every object a blob stored once in the
/// repository with the stored size and plaintext size the record says.
fn check_chunks(sb: &Sandbox, rec: &Value, len: u64) {
    let sizes = object_sizes(rec);
    assert!(
        sizes.len() > 1,
        "a {len}-byte file should be chunked: {} object(s)",
        sizes.len()
    );
    assert_eq!(
        sizes.iter().sum::<u64>(),
        len,
        "chunk sizes add up to the file"
    );
    for (i, &s) in sizes.iter().enumerate() {
        assert!(
            s <= u64::from(CHUNK_MAX),
            "chunk {i} has {s} bytes > CHUNK_MAX"
        );
        if i + 1 < sizes.len() {
            assert!(
                s >= u64::from(CHUNK_MIN),
                "chunk {i} has {s} bytes < CHUNK_MIN"
            );
        }
    }
    let blobs = sb.blobs();
    for o in rec["objects"].as_array().unwrap() {
        let id = o["id"].as_str().unwrap();
        let places = blobs
            .get(id)
            .unwrap_or_else(|| panic!("object {id} of the record is in no pack"));
        assert_eq!(places.len(), 1, "blob {id} stored once: {places:?}");
        assert_eq!(
            o["stored"].as_u64(),
            Some(places[0].length),
            "stored size of {id}"
        );
        assert_eq!(o["size"].as_u64(), Some(places[0].size), "size of {id}");
    }
}

/// Blobs in `after` that were not in `before`.
fn new_blobs(before: &BTreeSet<String>, after: &BTreeSet<String>) -> BTreeSet<String> {
    after.difference(before).cloned().collect()
}

/// Bytes stored for the blobs `ids`.
fn blobs_bytes(sb: &Sandbox, ids: &BTreeSet<String>) -> u64 {
    let blobs = sb.blobs();
    ids.iter().map(|id| blobs[id][0].length).sum()
}

#[test]
fn one_byte_edit_in_a_large_file_stores_at_most_two_chunks() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    let big = tree.join("big.bin");
    let len = 256 * MIB;
    let sha = write_pseudo_random_file(&big, 0xC0FFEE, len);
    write_file(&tree.join("small.txt"), b"small\n", 0o644);

    let first = sb.backup(&tree);
    let rec = find_record(&first.records(), b"big.bin").clone();
    assert_eq!(
        rec["sha256"].as_str(),
        Some(sha.as_str()),
        "whole-file sha256"
    );
    check_chunks(&sb, &rec, len);
    let chunk_ids: BTreeSet<String> = object_ids(&rec).into_iter().collect();
    assert_eq!(
        sb.content_blob_ids(),
        chunk_ids
            .iter()
            .chain(object_ids(find_record(&first.records(), b"small.txt")).iter())
            .cloned()
            .collect::<BTreeSet<String>>(),
        "the repository holds exactly the chunks and the small file (besides the catalogue)"
    );
    assert!(leftover_tmp_packs(&sb.repo).is_empty());
    eprintln!(
        "256 MiB file: {} chunks ({} distinct), mean {:.2} MiB",
        object_sizes(&rec).len(),
        chunk_ids.len(),
        len as f64 / object_sizes(&rec).len() as f64 / MIB as f64
    );
    let before = sb.content_blob_ids();
    let bytes_before = sb.packs_bytes();

    // Flip one byte in the middle; the size stays.
    let at = len / 2 + 12_345;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&big)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0xA5], at).unwrap();
    drop(f);
    let sha2 = sha256_file(&big);
    assert_ne!(sha2, sha);

    let run = sb.backup_with(&tree, &sb.reuse_auto_args(), &[]);
    assert_eq!(run.hash_count("reused unread"), 1, "{}", run.hash_stderr);
    assert_eq!(run.hash_count("hashed"), 1, "{}", run.hash_stderr);
    let rec2 = find_record(&run.backup.records(), b"big.bin").clone();
    assert_eq!(rec2["sha256"].as_str(), Some(sha2.as_str()));
    assert!(
        rec2.get("chunks").is_none(),
        "bk-hash's chunk hashes stay out of the snapshot: {rec2}"
    );
    // bk-hash hashed the chunks while it read the file, so bk-seal read
    // only the chunks the repository lacked, not the 256 MiB.
    let sealed_read = run.seal_count("bytes read");
    assert!(
        sealed_read <= 2 * u64::from(CHUNK_MAX),
        "bk-seal read {sealed_read} bytes for a 1-byte edit (want ≤ 2 × CHUNK_MAX)"
    );
    check_chunks(&sb, &rec2, len);
    let added = new_blobs(&before, &sb.content_blob_ids());
    let added_bytes = blobs_bytes(&sb, &added);
    // The repository grew by those chunks, the new snapshot's catalogue
    // pieces and root, and the packs' headers: little beyond the chunks.
    let growth = sb.packs_bytes() - bytes_before;
    assert!(
        growth < added_bytes + (64 << 10),
        "a 1-byte edit grew the packs by {growth} bytes, {added_bytes} of them chunks"
    );
    eprintln!(
        "1-byte edit of the 256 MiB file: {} new object(s), {added_bytes} bytes stored ({})",
        added.len(),
        summary_line(&run.seal_stderr, "bk-seal:")
    );
    assert!(
        (1..=2).contains(&added.len()),
        "a 1-byte edit added {} objects (want 1 or 2)",
        added.len()
    );
    assert!(
        added_bytes < 2 * u64::from(CHUNK_MAX),
        "a 1-byte edit stored {added_bytes} new bytes (want < 2 × CHUNK_MAX)"
    );
    assert_eq!(
        run.seal_count("new objects added"),
        added.len() as u64,
        "{}",
        run.seal_stderr
    );
    let new_ids: BTreeSet<String> = object_ids(&rec2)
        .into_iter()
        .filter(|id| !chunk_ids.contains(id))
        .collect();
    assert_eq!(
        new_ids, added,
        "the new blobs are exactly the record's chunks that were not stored before"
    );

    // Restore the edited file from its chunks.
    let dest = sb.fresh_dir("restore");
    let out = sb.restore(&sb.show_latest(), &dest);
    assert_ok(&out, "bk-open --to");
    let back = restored(&dest, &tree);
    assert_eq!(sha256_file(&back.join("big.bin")), sha2, "restored content");
    assert_eq!(fs::read(back.join("small.txt")).unwrap(), b"small\n");
    fs::remove_dir_all(&dest).unwrap();

    // Above the threshold only: with --chunk-threshold 1G it is one object.
    let (_, hashed) = sb.scan_hash(&tree);
    let mut a = sb.seal_args();
    a.extend(args!["--chunk-threshold", "1G"]);
    let sealed = sb.run("bk-seal", &a, &hashed);
    assert_ok(&sealed, "bk-seal --chunk-threshold 1G");
    let whole = find_record(&parse_records(&sealed.stdout), b"big.bin").clone();
    assert_eq!(
        object_sizes(&whole),
        vec![len],
        "one object for the whole file"
    );
    let dest = sb.fresh_dir("restore-whole");
    let out = sb.restore(&sealed.stdout, &dest);
    assert_ok(&out, "bk-open --to of the single-object record");
    assert_eq!(sha256_file(&restored(&dest, &tree).join("big.bin")), sha2);
}

#[test]
fn chunked_file_is_recovered_with_gpg_alone() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    let len = 20 * MIB;
    write_pseudo_random_file(&tree.join("f.bin"), 77, len);
    let want = fs::read(tree.join("f.bin")).unwrap();
    let backup = sb.backup(&tree);
    let rec = find_record(&backup.records(), b"f.bin").clone();
    check_chunks(&sb, &rec, len);

    // Each chunk's blob, once taken out of its pack (which takes the
    // pack keystream, derived from the id key), is an OpenPGP message
    // that gpg decrypts with the secret key alone.
    sb.gpg_import_secret(sb.key);
    let mut got = Vec::with_capacity(want.len());
    for id in object_ids(&rec) {
        let message = sb.path(format!("{id}.pgp"));
        sb.write_blob_message(&id, &message);
        let out = sb.gpg_decrypt(&message, &[]);
        assert_ok(&out, &format!("gpg --decrypt of blob {id}"));
        got.extend_from_slice(&out.stdout);
    }
    assert_eq!(got.len(), want.len(), "concatenated plaintext length");
    assert!(
        got == want,
        "gpg-decrypted chunks, concatenated, differ from the file"
    );
    assert_eq!(rec["sha256"].as_str(), Some(sha256_hex(&got).as_str()));
}

#[test]
fn chunks_are_shared_by_copies_and_survive_a_shift() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    let len = 40 * MIB;
    let a = tree.join("a.bin");
    write_pseudo_random_file(&a, 1234, len);
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::copy(&a, tree.join("sub/b.bin")).unwrap();

    let first = sb.backup(&tree);
    let recs = first.records();
    let ra = find_record(&recs, b"a.bin");
    let rb = find_record(&recs, b"sub/b.bin");
    check_chunks(&sb, ra, len);
    assert_eq!(
        ra["objects"], rb["objects"],
        "identical files in two paths share all chunk objects"
    );
    let a_ids: BTreeSet<String> = object_ids(ra).into_iter().collect();
    assert_eq!(sb.content_blob_ids(), a_ids);
    assert!(
        sb.blobs().values().all(|places| places.len() == 1),
        "each distinct chunk stored once"
    );
    assert_eq!(
        summary_number(&first.seal_stderr, "bk-seal:", "new objects added"),
        a_ids.len() as u64,
        "each distinct chunk stored once"
    );
    let before = sb.content_blob_ids();

    // c.bin: 1 MiB of other bytes, then a.bin's content.
    let c = tree.join("c.bin");
    write_pseudo_random_file(&c, 999, MIB);
    {
        use std::io::Write;
        let mut out = fs::OpenOptions::new().append(true).open(&c).unwrap();
        out.write_all(&fs::read(&a).unwrap()).unwrap();
    }
    let run = sb.backup_with(&tree, &sb.reuse_auto_args(), &[]);
    assert_eq!(run.hash_count("hashed"), 1, "{}", run.hash_stderr);
    let rc = find_record(&run.backup.records(), b"c.bin").clone();
    check_chunks(&sb, &rc, len + MIB);
    let added = new_blobs(&before, &sb.content_blob_ids());
    let c_ids = object_ids(&rc);
    let shared = c_ids.iter().filter(|id| a_ids.contains(*id)).count();
    eprintln!(
        "1 MiB inserted before a {} MiB file: {} of its {} chunks shared, {} new objects",
        len / MIB,
        shared,
        c_ids.len(),
        added.len()
    );
    assert!(
        added.len() <= 3,
        "inserting 1 MiB at the start added {} objects (want ≤ 3): chunk boundaries should follow the content",
        added.len()
    );
    assert!(
        shared + 3 >= c_ids.len() && shared + 3 >= a_ids.len(),
        "c.bin shares only {shared} of its {} chunks with a.bin's {}",
        c_ids.len(),
        a_ids.len()
    );
    let dest = sb.fresh_dir("restore");
    let recs: Vec<Value> = parse_records(&sb.show_latest())
        .into_iter()
        .filter(|r| rec_path(r) == b"c.bin")
        .collect();
    let out = sb.restore(&to_ndjson(&recs), &dest);
    assert_ok(&out, "bk-open --to c.bin");
    assert_eq!(
        sha256_file(&restored(&dest, &tree).join("c.bin")),
        sha256_file(&c)
    );
}

/// The `chunks` bk-hash adds to a large file's record: each chunk's size
/// and SHA-256, in order, adding up to the file; only above the threshold.
#[test]
fn bk_hash_lists_the_chunks_of_files_above_the_threshold() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    let big = tree.join("big.bin");
    write_pseudo_random_file(&big, 7, 24 * MIB);
    write_pseudo_random_file(&tree.join("mid.bin"), 8, 10 * MIB);
    let (scanned, _) = sb.scan_hash(&tree);
    let out = sb.run("bk-hash", &args!["--chunk-threshold", "16M"], &scanned);
    assert_ok(&out, "bk-hash --chunk-threshold 16M");
    let records = parse_records(&out.stdout);
    assert!(
        find_record(&records, b"mid.bin").get("chunks").is_none(),
        "a 10 MiB file is below a 16M threshold"
    );
    let chunks = find_record(&records, b"big.bin")["chunks"]
        .as_array()
        .expect("chunks of the 24 MiB file")
        .clone();
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    let data = fs::read(&big).unwrap();
    let mut at = 0usize;
    for c in &chunks {
        let size = c["size"].as_u64().expect("chunk size") as usize;
        assert_eq!(
            c["sha256"].as_str(),
            Some(sha256_hex(&data[at..at + size]).as_str()),
            "chunk at {at}"
        );
        at += size;
    }
    assert_eq!(at, data.len(), "chunk sizes add up to the file");
}

/// A large file changed between bk-hash and bk-seal: the chunk that
/// changed no longer matches bk-hash's hash, so the record is left out
/// (exit 24, naming the file) and nothing of it is stored under its name.
#[test]
fn file_changed_after_hashing_is_not_stored_from_its_chunk_list() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    let big = tree.join("big.bin");
    let len = 24 * MIB;
    write_pseudo_random_file(&big, 9, len);
    write_file(&tree.join("small.txt"), b"small\n", 0o644);
    let (_, hashed) = sb.scan_hash(&tree);
    assert!(
        find_record(&parse_records(&hashed), b"big.bin")
            .get("chunks")
            .is_some(),
        "bk-hash lists the chunks of a 24 MiB file"
    );

    // Same size, one byte different in the middle.
    let f = fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.write_all_at(&[0x5A ^ 0xFF], len / 2).unwrap();
    drop(f);
    let out = sb.seal(&hashed);
    assert_code(&out, 24, "bk-seal after the file changed");
    let err = stderr(&out);
    assert!(
        err.contains("big.bin\": changed since it was hashed"),
        "stderr names the file and the cause: {err}"
    );
    let records = parse_records(&out.stdout);
    assert!(
        records.iter().all(|r| rec_path(r) != b"big.bin"),
        "no record for the changed file"
    );
    find_record(&records, b"small.txt");
    assert!(leftover_tmp_packs(&sb.repo).is_empty());

    // Shorter now: the chunks past the end cannot be read.
    let f = fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.set_len(len / 3).unwrap();
    drop(f);
    let out = sb.seal(&hashed);
    assert_code(&out, 24, "bk-seal after the file shrank");
    assert!(
        stderr(&out).contains("big.bin\": changed since it was hashed"),
        "{}",
        stderr(&out)
    );
}

/// A chunk list that does not describe the file (hand-edited, or from a
/// buggy stage) is refused for that record, never trusted for reads.
#[test]
fn chunk_list_that_does_not_add_up_is_refused() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    write_pseudo_random_file(&tree.join("big.bin"), 10, 12 * MIB);
    let (_, hashed) = sb.scan_hash(&tree);
    let mut records = parse_records(&hashed);
    let rec = records
        .iter_mut()
        .find(|r| rec_path(r) == b"big.bin")
        .expect("big.bin record");
    let chunks = rec["chunks"].as_array_mut().expect("chunks");
    chunks.pop();
    let out = sb.seal(&to_ndjson(&records));
    assert_code(&out, 3, "bk-seal with a short chunk list");
    let err = stderr(&out);
    assert!(
        err.contains("big.bin\": its \"chunks\" do not add up to its size"),
        "{err}"
    );
    assert!(
        parse_records(&out.stdout)
            .iter()
            .all(|r| rec_path(r) != b"big.bin"),
        "no record for big.bin"
    );
}
