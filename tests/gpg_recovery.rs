//! Recovery with gpg alone: the README's step-by-step recipe, run with only
//! `gpg`, `jq` and coreutils on a repository holding a chunked and an
//! unchunked file. The script below is the README's, verbatim in spirit.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;

/// The README's recovery steps as one shell script. `$1` is the path of
/// the file to recover inside the backup, `$2` where to write it.
const RECOVER: &str = r#"
set -euo pipefail
# 1. A private GnuPG home with the secret key imported.
export GNUPGHOME="$PWD/recovery-gnupg"
mkdir -p -m 700 "$GNUPGHOME"
gpg --batch --quiet --import secret.asc
# 2. Decrypt the newest snapshot (the greatest name).
snap=$(ls repo/snapshots/*.pgp | sort | tail -n 1)
gpg --batch --quiet --decrypt "$snap" > records.ndjson
# 3. The file's record.
rec=$(jq -c --arg p "$1" 'select(.path == $p)' records.ndjson)
# 4. Its objects, decrypted and concatenated in the order listed.
for id in $(jq -r '.objects[].id' <<<"$rec"); do
  gpg --batch --quiet --decrypt "repo/objects/${id:0:2}/$id"
done > "$2"
# 5. Check the content against the record's sha256.
echo "$(jq -r .sha256 <<<"$rec")  $2" | sha256sum --check --quiet
# 6. Mode and modification time. jq rounds numbers as big as mtime_ns,
#    so take that one from the raw line with grep.
chmod "$(printf '%o' $(( $(jq -r .mode <<<"$rec") & 07777 )))" "$2"
ns=$(grep -F "\"path\":\"$1\"," records.ndjson | grep -o '"mtime_ns":[0-9]*' | cut -d: -f2)
touch -m -d "@${ns:0:${#ns}-9}.${ns:${#ns}-9}" "$2"
"#;

#[test]
fn chunked_and_unchunked_files_recover_with_gpg_alone() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    let big = pseudo_random(11, 3 << 20);
    let small = b"a small file, one object\n".to_vec();
    write_file(&tree.join("docs/big.bin"), &big, 0o640);
    write_file(&tree.join("docs/small.txt"), &small, 0o604);
    set_mtime_ns(&tree.join("docs/big.bin"), T0);
    set_mtime_ns(&tree.join("docs/small.txt"), T0 + 987_654_321);
    let (_, hashed) = sb.scan_hash(&tree);
    let mut a = sb.seal_args();
    a.extend(args!["--init", "--chunk-threshold", "1M"]);
    let sealed = sb.run("bk-seal", &a, &hashed);
    assert_ok(&sealed, "bk-seal --chunk-threshold 1M");
    let records = parse_records(&sealed.stdout);
    assert!(
        object_ids(find_record(&records, b"docs/big.bin")).len() >= 2,
        "big.bin should be chunked"
    );
    assert_eq!(
        object_ids(find_record(&records, b"docs/small.txt")).len(),
        1
    );
    // Signed, as a careful user would; gpg checks it on the way.
    let out = sb.index_write_with(&sealed.stdout, &args!["--sign-key", &sb.sec_key]);
    assert_ok(&out, "bk-index write");

    fs::write(sb.path("secret.asc"), &sb.key.secret).unwrap();
    fs::write(sb.path("recover.sh"), RECOVER).unwrap();
    for (path, data, mode, mtime) in [
        ("docs/big.bin", &big, 0o640, T0),
        ("docs/small.txt", &small, 0o604, T0 + 987_654_321),
    ] {
        let dest = sb.path(format!("recovered-{}", path.replace('/', "_")));
        let mut cmd = sb.command("bash");
        // No bk on the PATH: only the system's tools.
        cmd.env("PATH", "/usr/bin:/bin")
            .arg("recover.sh")
            .arg(path)
            .arg(&dest);
        let out = run_command(cmd, b"", DEFAULT_TIMEOUT);
        assert_ok(&out, &format!("recovering {path} with gpg alone"));
        assert_eq!(&fs::read(&dest).unwrap(), data, "{path}: content");
        let meta = fs::metadata(&dest).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{path}: mode");
        assert_eq!(mtime_ns(&dest), mtime, "{path}: mtime");
        let _ = fs::remove_file(&dest);
    }
    let _ = std::process::Command::new("gpgconf")
        .env("GNUPGHOME", sb.path("recovery-gnupg"))
        .args(["--kill", "gpg-agent"])
        .status();
}
