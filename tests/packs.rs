//! What format 2 promises about packs (issue 16), checked end to end:
//! the storage operator learns only pack counts, sizes and times; every
//! blob stays an OpenPGP message the real `gpg` decrypts, compressed in a
//! way gpg reads; memory does not grow with the repository; small files
//! cost few requests on S3.

mod common;
mod promises;

use std::collections::BTreeMap;
use std::fs;

use common::*;
use promises::*;

#[test]
fn blobs_are_messages_gpg_decrypts_and_compression_is_one_gpg_reads() {
    let sb = Sandbox::new();
    let tree = sb.fresh_dir("tree");
    let notes = text_of(3, 300_000);
    let noise = pseudo_random(4, 200_000);
    write_file(&tree.join("notes.txt"), &notes, 0o644);
    write_file(&tree.join("noise.bin"), &noise, 0o644);
    let b = sb.backup(&tree);
    let records = b.records();
    let headers = pack_headers(&sb);
    sb.gpg_import_secret(sb.key);
    for (name, content) in [("notes.txt", &notes), ("noise.bin", &noise)] {
        let rec = find_record(&records, name.as_bytes());
        let obj = &rec["objects"][0];
        let (id, size, stored) = (
            obj["id"].as_str().unwrap(),
            obj["size"].as_u64().unwrap(),
            obj["stored"].as_u64().unwrap(),
        );
        assert_eq!(size, content.len() as u64);
        let (pack, entry) =
            find_blob(&headers, id).unwrap_or_else(|| panic!("{name}: no pack lists {id}"));
        assert_eq!(
            entry.length, stored,
            "{name}: the record's stored is the blob's length"
        );
        assert_eq!(entry.size, size, "{name}: the header's size");
        let blob = blob_bytes(&sb, &pack, &entry);
        let file = sb.path(format!("{name}.pgp"));
        fs::write(&file, &blob).unwrap();
        let out = sb.gpg_decrypt(&file, &[]);
        assert_ok(&out, &format!("gpg --decrypt of the blob of {name}"));
        assert!(out.stdout == *content, "gpg's plaintext of {name} differs");
        let listed = sb.gpg(
            &args![
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--list-packets",
                &file
            ],
            b"",
        );
        assert_ok(&listed, "gpg --list-packets");
        let packets = String::from_utf8_lossy(&listed.stdout).into_owned();
        eprintln!("MEASURED {name}: {size} bytes stored as {stored}");
        if name == "notes.txt" {
            assert!(stored < size / 2, "{name}: {size} bytes stored as {stored}");
            assert!(packets.contains(":compressed packet: algo=2"), "{packets}");
        } else {
            assert!(
                stored >= size && stored <= size + 512,
                "{name}: {size} bytes stored as {stored}"
            );
            assert!(!packets.contains(":compressed packet:"), "{packets}");
        }
    }
}

/// Request counts of the sandbox's S3 server once its log has settled
/// (moto logs a request just after answering it).
fn settled_requests(sb: &Sandbox) -> BTreeMap<String, u64> {
    let server = &sb.s3_repo().server;
    let mut last = server.request_counts();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = server.request_counts();
        if now == last {
            return now;
        }
        last = now;
    }
}

#[test]
fn small_files_cost_few_requests_on_s3() {
    let sb = Sandbox::s3();
    let tree = sb.fresh_dir("tree");
    let mut plain = 0u64;
    for i in 0..2000u64 {
        let size = 1024 + (i * 7919) % (15 * 1024 + 1);
        let data = if i % 3 == 0 {
            text_of(i, size as usize)
        } else {
            pseudo_random(i, size as usize)
        };
        plain += size;
        write_file(
            &tree.join(format!("d{:02}/f{i:04}.dat", i % 40)),
            &data,
            0o644,
        );
    }
    let (_, hashed) = sb.scan_hash(&tree);
    let bytes_before = repo_bytes(&sb);
    let before = settled_requests(&sb);
    let mut a = sb.seal_args();
    a.push("--init".into());
    let sealed = sb.run("bk-seal", &a, &hashed);
    assert_ok(&sealed, "bk-seal");
    let mut w = args!["write"];
    w.extend(sb.seal_args());
    let written = sb.run("bk-index", &w, &sealed.stdout);
    assert_ok(&written, "bk-index write");
    let requests = request_delta(&before, &settled_requests(&sb));
    let stored = repo_bytes(&sb) - bytes_before;
    let mib = stored.div_ceil(MIB);
    let puts = requests.get("PUT").copied().unwrap_or(0);
    let total: u64 = requests.values().sum();
    eprintln!(
        "MEASURED S3: 2000 files ({plain} bytes) stored as {stored} bytes ({mib} MiB) in {} packs with {total} requests {requests:?}",
        packs(&sb).len()
    );
    assert!(
        puts <= mib + 20,
        "{puts} PUTs for {mib} MiB stored: {requests:?}"
    );
    assert!(
        total <= 2 * mib + 60,
        "{total} requests for 2000 files ({mib} MiB): {requests:?}"
    );
    let name = String::from_utf8(written.stdout).unwrap().trim().to_owned();
    assert_restores(&sb, &name, &tree);
}

