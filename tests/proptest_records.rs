//! Property tests: records survive printing and parsing byte for byte, no
//! input line makes the parser panic, path sanitisation never lets a path
//! out of the target, and the rule restore uses to finish directories
//! early holds for every sorted stream.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use bk::record::{Kind, ObjectRef, Record, RecordReader};
use bk::stages::open::restore::{safe_relative, still_open, MAX_NAME, MAX_PATH};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Field names the record type knows; `extra` must not reuse them.
const KNOWN: [&str; 24] = [
    "v",
    "kind",
    "root",
    "root_b64",
    "path",
    "path_b64",
    "target",
    "target_b64",
    "size",
    "mode",
    "uid",
    "gid",
    "user",
    "group",
    "mtime_ns",
    "ctime_ns",
    "ino",
    "dev",
    "rdev",
    "nlink",
    "xattrs",
    "sha256",
    "objects",
    "extra",
];

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::File),
        Just(Kind::Dir),
        Just(Kind::Symlink),
        Just(Kind::Fifo),
        Just(Kind::Char),
        Just(Kind::Block),
        Just(Kind::Socket),
    ]
}

/// Name bytes biased towards the troublesome ones.
fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b'.'),
            Just(b'/'),
            Just(b'\n'),
            Just(b'\\'),
            Just(b'"'),
            Just(0xff),
            Just(0xe9),
            Just(0u8),
            any::<u8>(),
        ],
        0..40,
    )
}

fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_scalar().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

prop_compose! {
    fn record()(
        kind in kind(),
        path in name_bytes(),
        root in prop::option::of(name_bytes()),
        target in prop::option::of(name_bytes()),
        nums in any::<(u64, u32, u32, u32, i64, i64, u64, u64, u64)>(),
        rdev in prop::option::of(any::<u64>()),
        names in prop::option::of(("[a-z]{0,8}", "[a-z]{0,8}")),
        xattrs in prop::collection::btree_map(
            "(user|trusted|system)\\.[a-z_.]{1,12}",
            prop::collection::vec(any::<u8>(), 0..32),
            0..4,
        ),
        sha in prop::option::of("[0-9a-f]{64}"),
        objects in prop::option::of(prop::collection::vec(
            ("[0-9a-f]{64}", any::<u64>(), prop::option::of(any::<u64>())), 0..4)),
        extra in prop::collection::btree_map("[a-z_]{1,10}", json_value(), 0..3),
    ) -> Record {
        let mut rec = Record::new(kind, Path::new(OsStr::from_bytes(&path)));
        if let Some(root) = root {
            rec.set_root(Path::new(OsStr::from_bytes(&root)));
        }
        if let Some(t) = target {
            rec.set_target(OsStr::from_bytes(&t));
        }
        let (size, mode, uid, gid, mtime, ctime, ino, dev, nlink) = nums;
        (rec.size, rec.mode, rec.uid, rec.gid) = (size, mode, uid, gid);
        (rec.mtime_ns, rec.ctime_ns, rec.ino, rec.dev, rec.nlink) = (mtime, ctime, ino, dev, nlink);
        rec.rdev = rdev;
        if let Some((u, g)) = names {
            (rec.user, rec.group) = (Some(u), Some(g));
        }
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        rec.xattrs = xattrs.into_iter().map(|(k, v)| (k, b64.encode(v))).collect();
        rec.sha256 = sha;
        rec.objects = objects.map(|o| {
            o.into_iter().map(|(id, size, stored)| ObjectRef { id, size, stored }).collect()
        });
        for (k, v) in extra {
            if !KNOWN.contains(&k.as_str()) {
                rec.extra.insert(k, v);
            }
        }
        rec
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Printing then parsing gives the same record, and the same raw bytes
    /// for the path, root and target whatever they contain.
    #[test]
    fn record_round_trips(rec in record()) {
        let line = rec.to_line();
        prop_assert!(!line.contains(&b'\n'), "one record, one line");
        let back = Record::from_line(&line, 1).expect("own output parses");
        prop_assert_eq!(&back, &rec);
        prop_assert_eq!(back.path_os().unwrap(), rec.path_os().unwrap());
        prop_assert_eq!(back.target_os().unwrap(), rec.target_os().unwrap());
        prop_assert_eq!(back.root_os().unwrap(), rec.root_os().unwrap());
        prop_assert_eq!(back.to_line(), line);
    }

    /// Any bytes at all: an error or a record, never a panic; a record
    /// that parses prints and parses again to itself.
    #[test]
    fn no_panic_on_any_line(line in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(rec) = Record::from_line(&line, 1) {
            prop_assert_eq!(Record::from_line(&rec.to_line(), 1).unwrap(), rec);
        }
    }

    /// JSON objects with the known field names holding values of any type.
    #[test]
    fn no_panic_on_any_json_object(
        fields in prop::collection::btree_map(
            prop::sample::select(KNOWN.to_vec()), json_value(), 0..12),
        v1 in any::<bool>(),
    ) {
        let mut obj: Map<String, Value> =
            fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        if v1 {
            obj.insert("v".into(), Value::from(1));
        }
        let line = serde_json::to_vec(&Value::Object(obj)).unwrap();
        if let Ok(rec) = Record::from_line(&line, 1) {
            prop_assert_eq!(&Record::from_line(&rec.to_line(), 1).unwrap(), &rec);
            let _ = (rec.path_os(), rec.target_os(), rec.root_os(), rec.source_path());
        }
    }

    /// A stream of arbitrary bytes: every line is a record or an error.
    #[test]
    fn reader_never_panics(input in prop::collection::vec(
        prop_oneof![Just(b'\n'), Just(b'{'), Just(b'}'), Just(b'"'), any::<u8>()], 0..400)) {
        for item in RecordReader::new(&input[..]) {
            let _ = item;
        }
    }

    /// Whatever the bytes, an accepted path is relative, made of plain
    /// names only, within the limits, and stays under any base it is
    /// joined to.
    #[test]
    fn sanitised_paths_stay_inside(bytes in name_bytes()) {
        match safe_relative(OsStr::from_bytes(&bytes)) {
            Ok(None) => prop_assert_eq!(&bytes[..], b"."),
            Ok(Some(p)) => {
                prop_assert_eq!(p.as_os_str().as_bytes(), &bytes[..]);
                prop_assert!(bytes.len() <= MAX_PATH);
                prop_assert!(!bytes.contains(&0));
                for c in p.components() {
                    match c {
                        Component::Normal(n) => prop_assert!(n.len() <= MAX_NAME),
                        other => prop_assert!(false, "component {:?} in {:?}", other, p),
                    }
                }
                let base = Path::new("/restore/here");
                prop_assert!(base.join(&p).starts_with(base));
                prop_assert_eq!(
                    base.join(&p).components().count(),
                    base.components().count() + p.components().count()
                );
            }
            Err(why) => prop_assert!(!why.is_empty()),
        }
    }

    /// Well-formed relative paths are always accepted unchanged.
    #[test]
    fn good_paths_are_accepted(names in prop::collection::vec(
        prop::collection::vec(1u8..=255, 1..20), 1..8)) {
        let names: Vec<Vec<u8>> = names
            .into_iter()
            .map(|n| n.into_iter().filter(|&b| b != b'/').collect::<Vec<u8>>())
            .filter(|n| !n.is_empty() && n != b"." && n != b"..")
            .collect();
        prop_assume!(!names.is_empty());
        let joined = names.join(&b'/');
        let got = safe_relative(OsStr::from_bytes(&joined)).unwrap().unwrap();
        prop_assert_eq!(got.as_os_str().as_bytes(), &joined[..]);
    }

    /// The rule restore uses to finish a directory early: once the stream
    /// (sorted bytewise, as in snapshots, or in tree order, as from
    /// bk-scan) reaches a path that does not keep a directory open, no
    /// later path is inside that directory.
    #[test]
    fn finished_directories_get_no_more_entries(paths in prop::collection::vec(
        prop::collection::vec(
            prop::collection::vec(prop::sample::select(vec![b'a', b'b', b'.', b'-', b' ', b'0']), 1..3),
            1..4),
        1..30)) {
        // Every path and all its ancestors.
        let mut all = BTreeSet::new();
        for comps in &paths {
            for i in 1..=comps.len() {
                all.insert(comps[..i].join(&b'/'));
            }
        }
        let bytewise: Vec<Vec<u8>> = all.iter().cloned().collect();
        let mut tree = bytewise.clone();
        tree.sort_by(|a, b| a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/')));
        for order in [&bytewise, &tree] {
            for (i, dir) in order.iter().enumerate() {
                let mut inside = dir.clone();
                inside.push(b'/');
                let mut closed = false;
                for later in &order[i + 1..] {
                    closed |= !still_open(dir, later);
                    prop_assert!(
                        !(closed && later.starts_with(&inside)),
                        "{:?} finished before {:?} in {:?}",
                        String::from_utf8_lossy(dir), String::from_utf8_lossy(later),
                        order.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>()
                    );
                }
            }
        }
    }
}

#[test]
fn kinds_parse_by_name_only() {
    let mut seen = BTreeMap::new();
    for k in ["file", "dir", "symlink", "fifo", "char", "block", "socket"] {
        let line = format!(r#"{{"v":1,"kind":"{k}","path":"x"}}"#);
        let rec = Record::from_line(line.as_bytes(), 1).unwrap();
        seen.insert(rec.kind.as_str(), k);
    }
    assert_eq!(seen.len(), 7);
    assert!(Record::from_line(br#"{"v":1,"kind":"door","path":"x"}"#, 1).is_err());
    assert!(Record::from_line(br#"{"v":2,"kind":"file","path":"x"}"#, 1).is_err());
}
