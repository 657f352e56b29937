//! What format 2 promises about packs (issue 16), checked end to end:
//! the storage operator learns only pack counts, sizes and times; every
//! blob stays an OpenPGP message the real `gpg` decrypts, compressed in a
//! way gpg reads; memory does not grow with the repository; small files
//! cost few requests on S3.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use common::packs::*;
use common::*;

/// The files of a tree (relative path → size), regular files only.
fn file_sizes(tree: &Path) -> BTreeMap<String, u64> {
    files_under(tree)
        .into_iter()
        .map(|p| {
            let size = fs::metadata(tree.join(&p)).unwrap().len();
            (p.to_string_lossy().into_owned(), size)
        })
        .collect()
}

/// Whether `rel` (a path inside the repository) is a file bk's format 2
/// has: bk-repo.json, keys/*, packs/ab/<64 hex> (in the directory of its
/// first byte), snapshots/<name>.pgp, inventory/<name>.ndjson, locks/*.
fn is_format_2_file(rel: &str) -> bool {
    let one_name = |dir: &str, suffix: &str| {
        rel.strip_prefix(dir)
            .is_some_and(|n| !n.is_empty() && !n.contains('/') && n.ends_with(suffix))
    };
    rel == "bk-repo.json"
        || one_name("keys/", "")
        || one_name("locks/", "")
        || one_name("snapshots/", ".pgp")
        || one_name("inventory/", ".ndjson")
        || rel
            .strip_prefix("packs/")
            .is_some_and(|p| bk::repo::id::PackId::from_key(p).is_some())
}

#[test]
fn the_storage_operator_learns_only_pack_counts_sizes_and_times() {
    let sb = Sandbox::new();
    let tree = sb.fresh_dir("operator-private-tree");
    // Distinctive sizes, compressible text and random data.
    for (i, size) in [12_345usize, 54_321, 100_003, 777_777].iter().enumerate() {
        write_file(
            &tree.join(format!("confidential-notes/report-{i}.txt")),
            &text_of(i as u64, *size),
            0o644,
        );
    }
    for (i, size) in [23_456usize, 65_537, 333_333, 1_234_567].iter().enumerate() {
        write_file(
            &tree.join(format!("secret-images/photo-{i}.jpg")),
            &pseudo_random(100 + i as u64, *size),
            0o644,
        );
    }
    let b = sb.backup(&tree);
    let records = b.records();
    let listing = sb.repo_files("");

    // Only the files of the format, under names that say nothing.
    let odd: Vec<&String> = listing.keys().filter(|r| !is_format_2_file(r)).collect();
    assert!(odd.is_empty(), "files outside format 2: {odd:?}");
    let pack_count = packs(&sb).len();
    assert!(pack_count >= 1, "{listing:?}");

    // No file of the repository has the size of a source file or of a
    // stored (compressed or not) blob: files are packed together.
    let mut telling: BTreeMap<u64, String> = BTreeMap::new();
    for (rel, size) in file_sizes(&tree) {
        telling.insert(size, format!("file {rel}"));
    }
    let mut ids = BTreeSet::new();
    for rec in &records {
        if let Some(sha) = rec.get("sha256").and_then(|v| v.as_str()) {
            ids.insert(sha.to_owned());
        }
        for o in rec
            .get("objects")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            ids.insert(o["id"].as_str().unwrap().to_owned());
            let stored = o["stored"].as_u64().expect("objects carry stored");
            telling.insert(stored, format!("blob of {}", rec["path"]));
        }
    }
    for (rel, size) in &listing {
        assert!(
            !telling.contains_key(size),
            "{rel} is {size} bytes: the size of {}",
            telling[size]
        );
    }
    // A text file is stored compressed, so its compressed size was a
    // candidate too.
    let compressed = records
        .iter()
        .filter(|r| r["path"].as_str().unwrap().ends_with(".txt"))
        .all(|r| r["objects"][0]["stored"].as_u64().unwrap() < r["size"].as_u64().unwrap());
    assert!(compressed, "text files should be stored compressed");

    // Snapshot names and the inventory name no host, path or id.
    let host = bk::sys::host::this_host();
    let mut secrets: Vec<String> = vec![
        "operator-private-tree".into(),
        "confidential".into(),
        "report-".into(),
        "photo-".into(),
        sb.base.file_name().unwrap().to_string_lossy().into_owned(),
    ];
    if host.len() >= 4 {
        secrets.push(host.clone());
    }
    secrets.extend(ids.iter().cloned());
    let names: Vec<String> = listing
        .keys()
        .filter(|r| r.starts_with("snapshots/") || r.starts_with("inventory/"))
        .cloned()
        .collect();
    assert!(names.iter().any(|n| n.starts_with("snapshots/")));
    let inventories: Vec<(String, Vec<u8>)> = listing
        .keys()
        .filter(|r| r.starts_with("inventory/"))
        .map(|r| (r.clone(), sb.read_repo_file(r).unwrap()))
        .collect();
    assert!(!inventories.is_empty(), "no inventory in {listing:?}");
    for s in &secrets {
        for n in &names {
            assert!(!n.contains(s.as_str()), "{n} names {s:?}");
        }
        for (n, text) in &inventories {
            assert!(!contains(text, s.as_bytes()), "{n} holds {s:?}");
        }
    }
    // The inventory holds pack ids, pack sizes and pack hashes, nothing else.
    let pack_sizes: BTreeMap<String, u64> = packs(&sb)
        .into_iter()
        .map(|(id, size)| (id.to_string(), size))
        .collect();
    for (n, text) in &inventories {
        for line in parse_records(text) {
            let keys: BTreeSet<&str> = line
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            assert_eq!(
                keys,
                BTreeSet::from(["pack", "stored", "blake3"]),
                "{n}: {line}"
            );
            let pack = line["pack"].as_str().unwrap();
            assert_eq!(
                line["stored"].as_u64(),
                pack_sizes.get(pack).copied(),
                "{n}: {line}"
            );
        }
    }

    // Pack bytes show no OpenPGP structure: every blob's PKESK names the
    // recipient's key id, which a plain gpg message shows and a pack
    // never does.
    let key_ids: Vec<Vec<u8>> = sb
        .key
        .encryption_key_ids
        .iter()
        .map(|k| hex::decode(k).unwrap())
        .collect();
    let plain_gpg = sb.gpg_encrypt_as_attacker(b"a plain gpg message", None);
    assert!(
        key_ids.iter().any(|k| contains(&plain_gpg, k)),
        "the key id should show in a gpg message"
    );
    for (id, size) in packs(&sb) {
        let bytes = sb.read_repo_file(&id.key()).unwrap();
        assert_eq!(bytes.len() as u64, size);
        for k in &key_ids {
            assert!(
                !contains(&bytes, k),
                "pack {id} shows the recipient's key id {}",
                hex::encode(k)
            );
        }
        assert!(!contains(&bytes, b"bk-pack"), "pack {id} shows its footer");
        assert!(!contains(&bytes, b"value="), "pack {id} shows text");
    }

    // As many packs for 1 file as for 200 files of the same total size.
    let total = 200 * 60 * KIB as usize;
    let one = Sandbox::new();
    let t1 = one.fresh_dir("one");
    write_file(&t1.join("big.bin"), &pseudo_random(7, total), 0o644);
    one.backup(&t1);
    let many = Sandbox::new();
    let t200 = many.fresh_dir("many");
    for i in 0..200 {
        write_file(
            &t200.join(format!("f{i:03}.bin")),
            &pseudo_random(1000 + i, total / 200),
            0o644,
        );
    }
    many.backup(&t200);
    let (p1, p200) = (packs(&one), packs(&many));
    eprintln!(
        "MEASURED packs: 1 file of {total} bytes -> {} packs {:?}; 200 files -> {} packs {:?}",
        p1.len(),
        p1.values().collect::<Vec<_>>(),
        p200.len(),
        p200.values().collect::<Vec<_>>()
    );
    assert_eq!(p1.len(), p200.len(), "pack counts: 1 file vs 200 files");
}

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

/// The packs and blobs [`add_a_million_blobs`] writes.
const FAKE_PACKS: u64 = 100;
const FAKE_BLOBS_PER_PACK: u64 = 10_000;

/// Adds `FAKE_PACKS` packs of `FAKE_BLOBS_PER_PACK` small blobs each to the
/// sandbox's repository, written with the library as bk-seal writes them
/// (the blobs are not OpenPGP messages: nothing reads them, only their
/// headers, which is what a large repository costs a backup).
fn add_a_million_blobs(sb: &Sandbox) {
    use bk::repo::id::{ObjectId, PackId};
    use bk::repo::pack::PackBuilder;
    use sha2::{Digest, Sha256};
    use std::io::Write;
    let keys = pack_keys(sb);
    let filler = pseudo_random(0xFA4E, 64 << 10);
    for p in 0..FAKE_PACKS {
        let id = PackId::from_bytes(Sha256::digest(format!("fake pack {p}")).into());
        let path = sb.repo.join(id.key());
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(&path).unwrap());
        let mut builder = PackBuilder::new(id, &keys, file);
        for i in 0..FAKE_BLOBS_PER_PACK {
            let n = p * FAKE_BLOBS_PER_PACK + i;
            let blob_id = ObjectId::from_bytes(Sha256::digest(n.to_le_bytes()).into());
            let at = (n as usize * 7) % (filler.len() - 64);
            let mut blob = filler[at..at + 48].to_vec();
            builder.add(blob_id, 40, &mut blob).unwrap();
        }
        let (mut file, _) = builder.finish().unwrap();
        file.flush().unwrap();
    }
}

#[test]
#[ignore = "slow: writes a repository of a million blobs, then backs up into it"]
fn seal_memory_does_not_grow_with_the_repository() {
    const LIMIT_KIB: u64 = 64 * 1024;
    let timeout = std::time::Duration::from_secs(600);
    let sb = Sandbox::new();
    let tree = sb.fresh_dir("tree");
    write_file(&tree.join("first.txt"), b"the first backup\n", 0o644);
    sb.backup(&tree);
    let started = std::time::Instant::now();
    add_a_million_blobs(&sb);
    eprintln!(
        "MEASURED wrote {} blobs in {FAKE_PACKS} packs ({} MiB) in {:.1} s",
        FAKE_PACKS * FAKE_BLOBS_PER_PACK,
        du_bytes(&sb.repo.join("packs")) / MIB,
        started.elapsed().as_secs_f64()
    );
    let index_file = sb
        .cache_home
        .join("bk")
        .join(sb.repo_id())
        .join("index/blobs.idx");

    // Run 1 reads the million blobs' headers into its local index; run 2
    // finds it up to date. Both store new files.
    for run in 1..=2u64 {
        for i in 0..20u64 {
            let data = if i % 2 == 0 {
                text_of(run * 100 + i, 30_000)
            } else {
                pseudo_random(run * 100 + i, 30_000)
            };
            write_file(&tree.join(format!("run{run}/f{i}.dat")), &data, 0o644);
        }
        let (_, hashed) = sb.scan_hash(&tree);
        let started = std::time::Instant::now();
        let (sealed, kib) = sb.run_measured("bk-seal", &sb.seal_args(), &hashed, timeout);
        assert_ok(&sealed, &format!("bk-seal, run {run}"));
        eprintln!(
            "MEASURED bk-seal run {run} over {} blobs: peak RSS {kib} KiB, {:.1} s; {}",
            FAKE_PACKS * FAKE_BLOBS_PER_PACK,
            started.elapsed().as_secs_f64(),
            summary_line(&stderr(&sealed), "bk-seal:")
        );
        assert_eq!(
            summary_number(&stderr(&sealed), "bk-seal:", "new objects added"),
            20,
            "run {run} stores its 20 new files"
        );
        let indexed = fs::metadata(&index_file).map(|m| m.len()).unwrap_or(0);
        assert!(
            indexed >= FAKE_PACKS * FAKE_BLOBS_PER_PACK * 64,
            "the local index should hold the million blobs: {indexed} bytes"
        );
        assert!(
            kib < LIMIT_KIB,
            "bk-seal run {run}: peak RSS {kib} KiB >= {LIMIT_KIB} KiB"
        );
        let mut a = args!["write"];
        a.extend(sb.seal_args());
        let (written, kib) = sb.run_measured("bk-index", &a, &sealed.stdout, timeout);
        assert_ok(&written, "bk-index write");
        eprintln!("MEASURED bk-index write run {run}: peak RSS {kib} KiB");
        assert!(
            kib < LIMIT_KIB,
            "bk-index write run {run}: peak RSS {kib} KiB >= {LIMIT_KIB} KiB"
        );
        let name = String::from_utf8(written.stdout).unwrap().trim().to_owned();
        assert_restores(&sb, &name, &tree);
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

#[test]
fn blobs_stored_at_once_by_many_workers_share_one_pack() {
    use bk::repo::id::ObjectId;
    use bk::repo::packer::{Packer, DEFAULT_PACK_SIZE};
    use std::sync::Barrier;
    // bk-seal's workers (and its chunk pool) all store their first blob at
    // the same moment: they must fill one pack between them, not open one
    // each (a run would leave small packs that tell how many blobs were
    // stored in parallel, and more requests to remote storage).
    let sb = Sandbox::new();
    let tree = sb.fresh_dir("tree");
    write_file(&tree.join("a.txt"), b"a", 0o644);
    sb.backup(&tree);
    let location = bk::storage::location::Location::parse(sb.repo.as_os_str()).unwrap();
    let handle =
        bk::repo::RepoHandle::new(&location, &bk::storage::s3::S3Options::default()).unwrap();
    let repo = bk::repo::Repo::open_handle(handle).unwrap();
    let keys = pack_keys(&sb);
    const WORKERS: u8 = 8;
    for round in 0..100u8 {
        let packer = Packer::copier(&repo, &keys, DEFAULT_PACK_SIZE);
        let start = Barrier::new(usize::from(WORKERS));
        std::thread::scope(|s| {
            for w in 0..WORKERS {
                let (packer, start) = (&packer, &start);
                s.spawn(move || {
                    start.wait();
                    let id =
                        ObjectId::from_bytes([round.wrapping_mul(WORKERS).wrapping_add(w); 32]);
                    packer.store_raw(id, 100, vec![w; 100]).unwrap();
                });
            }
        });
        let written = packer.finish().unwrap();
        assert_eq!(
            written.len(),
            1,
            "round {round}: {WORKERS} blobs stored at once went into {} packs",
            written.len()
        );
    }
}
