#!/usr/bin/env bash
# demo.sh: back up a sample tree with bk, list, verify, restore and compare.
#
# Runs on a fresh machine with nothing but gpg and the bk binaries (and, for
# its last step, the recovery without bk, OpenSSL 3 and jq, else that step
# is skipped): it makes a
# throwaway GnuPG home and key, a sample tree, a repository and a restore
# target, all in one temporary directory that it removes at the end (set
# BK_DEMO_KEEP=1 to keep it). XDG_CONFIG_HOME, XDG_DATA_HOME and
# XDG_CACHE_HOME point into that directory too, and every BK_* variable is
# unset, so neither your config nor your state affects the demo, and the
# demo leaves nothing behind in your home.
#
# Environment:
#   BK_BIN            directory with the bk binaries [default: target/release]
#   BK_DEMO_MIB       MiB of random data in the sample tree [default: 4]
#   BK_DEMO_KEY_ALGO  gpg --quick-gen-key algorithm [default: future-default,
#                     i.e. ed25519/cv25519; e.g. rsa3072, which gets an
#                     encryption subkey of its own]
#   BK_DEMO_KEEP=1    keep the temporary directory and print its name
set -Eeuo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=$(cd "${BK_BIN:-$here/../target/release}" 2>/dev/null && pwd) || {
    echo "FAIL: no binary directory ${BK_BIN:-$here/../target/release} (run 'make release')" >&2
    exit 1
}
mib=${BK_DEMO_MIB:-4}
algo=${BK_DEMO_KEY_ALGO:-future-default}
keep=${BK_DEMO_KEEP:-}

step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
failures=()
bad() {
    printf '    FAILED: %s\n' "$*" >&2
    failures+=("$*")
}
die() {
    printf '\nFAIL: %s\n' "$*" >&2
    exit 1
}
trap 'die "command failed (status $?, demo.sh line $LINENO): $BASH_COMMAND"' ERR

for tool in gpg gpgconf diff find sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
for prog in bk-scan bk-hash bk-seal bk-index bk-verify bk-open; do
    [[ -x $bin/$prog ]] || die "$bin/$prog is missing (run 'make release')"
done
export PATH="$bin:$PATH"

# A clean, private environment.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^BK_' || true)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bk-demo.XXXXXX")
cleanup() {
    gpgconf --homedir "$tmp/gnupg" --kill gpg-agent >/dev/null 2>&1 || true
    if [[ -n $keep ]]; then
        echo "kept $tmp"
    else
        chmod -R u+rwX "$tmp" 2>/dev/null || true
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
export GNUPGHOME=$tmp/gnupg XDG_CONFIG_HOME=$tmp/config XDG_DATA_HOME=$tmp/data XDG_CACHE_HOME=$tmp/cache
mkdir -m 700 "$GNUPGHOME"
mkdir "$XDG_CONFIG_HOME" "$XDG_DATA_HOME" "$XDG_CACHE_HOME"
tree=$tmp/tree repo=$tmp/repo out=$tmp/restore
pub=$tmp/pub.asc sec=$tmp/sec.asc pass=$tmp/passphrase
echo "bk demo in $tmp, binaries from $bin"

step "Making a throwaway OpenPGP key ($algo) with gpg"
printf 'correct horse battery staple\n' > "$pass"
chmod 600 "$pass"
gpg_quiet=(gpg --batch --quiet --no-auto-check-trustdb)
gpg_pass=("${gpg_quiet[@]}" --pinentry-mode loopback --passphrase-file "$pass")
if [[ $algo == future-default ]]; then
    # Ed25519 primary key with a Curve25519 encryption subkey.
    "${gpg_pass[@]}" --quick-gen-key 'bk demo <demo@example.invalid>' "$algo" default never 2>"$tmp/gpg.log" ||
        { cat "$tmp/gpg.log" >&2; die "gpg could not make a key"; }
else
    # With an explicit algorithm gpg makes only a primary key: add an
    # encryption subkey of the same algorithm.
    "${gpg_pass[@]}" --quick-gen-key 'bk demo <demo@example.invalid>' "$algo" sign,cert never 2>"$tmp/gpg.log" ||
        { cat "$tmp/gpg.log" >&2; die "gpg could not make a key"; }
    fpr=$("${gpg_quiet[@]}" --with-colons --fingerprint demo@example.invalid | awk -F: '$1=="fpr"{print $10; exit}')
    "${gpg_pass[@]}" --quick-add-key "$fpr" "$algo" encr never 2>"$tmp/gpg.log" ||
        { cat "$tmp/gpg.log" >&2; die "gpg could not add an encryption subkey"; }
fi
"${gpg_quiet[@]}" --armor --export demo@example.invalid > "$pub"
"${gpg_pass[@]}" --armor --export-secret-keys demo@example.invalid > "$sec"
chmod 600 "$sec"
"${gpg_quiet[@]}" --with-colons --fingerprint demo@example.invalid | awk -F: '$1=="fpr"{print "    key " $10; exit}'

step "Making a sample tree ($mib MiB of random data, duplicates, an empty file, symlinks, odd names)"
"$here/make-tree.sh" "$tree" "$mib"
nfiles=$(find "$tree" -type f | wc -l)
ncontents=$(find "$tree" -type f -size +0 -exec sha256sum {} + | cut -d' ' -f1 | sort -u | wc -l)
echo "    $(find "$tree" | wc -l) entries, $nfiles regular files, $ncontents distinct non-empty contents, $(du -sh "$tree" | cut -f1)"

step "Backing up: bk-scan TREE | bk-hash | bk-seal --init | bk-index write"
SECONDS=0
snap=$(bk-scan "$tree" | bk-hash | bk-seal --init --repo "$repo" -r "$pub" 2>"$tmp/seal.log" |
    bk-index write --repo "$repo" -r "$pub") || { cat "$tmp/seal.log" >&2; die "the backup failed"; }
sed 's/^/    /' "$tmp/seal.log"
echo "    snapshot $snap (${SECONDS}s)"
shown=$(bk-index show latest --repo "$repo" --key "$sec" --passphrase-file "$pass")
nobj=$(grep -oE '"id":"[0-9a-f]{64}"' <<<"$shown" | sort -u | wc -l)
npacks=$(find "$repo/packs" -type f | wc -l)
echo "    $nobj distinct objects for $nfiles files, in $npacks packs (the last one holds the snapshot's catalogue)"
copies=$(grep -F 'IMG_0001' <<<"$shown" | grep -oE '"objects":\[[^]]*\]' | sort -u | wc -l)
if ((copies == 1)); then
    ok "photos/raw/IMG_0001.raw and its copy name the same objects"
else
    bad "photos/raw/IMG_0001.raw and its copy name different objects"
fi

step "Certifying the repository's id key with your key (once, where the secret key is)"
cert=$(bk-index certify --repo "$repo" --key "$sec" --passphrase-file "$pass" 2>"$tmp/certify.log") ||
    { cat "$tmp/certify.log" >&2; die "bk-index certify failed"; }
echo "    $cert: your key's signature over the repository id and its id key"

step "Backing up again: nothing changed, so nothing new is stored"
snap2=$(bk-scan "$tree" | bk-hash | bk-seal --repo "$repo" -r "$pub" | bk-index write --repo "$repo" -r "$pub")
echo "    snapshot $snap2"
npacks2=$(find "$repo/packs" -type f | wc -l)
if ((npacks2 == npacks)); then
    ok "second run added no pack, only its snapshot root ($(wc -c < "$repo/snapshots/$snap2") bytes)"
else
    bad "second run added $((npacks2 - npacks)) packs"
fi

step "What the storage operator sees"
find "$repo" -maxdepth 2 -not -path "$repo/packs/*" | sed "s|^$repo|    repo|" | LC_ALL=C sort
echo "    repo/packs/*/*: $npacks2 packs, of $(find "$repo/packs" -type f -printf '%s\n' | sort -n | paste -sd ' ') bytes"
if grep -r -q -a -F -e 'IMG_0001' -e 'diary' -e 'not for your eyes' -e 'Live at Home' "$repo"; then
    bad "a file name or plaintext is readable in the repository"
else
    ok "no file name or plaintext in the repository"
fi

step "bk-index list"
bk-index list --repo "$repo" --key "$sec" --passphrase-file "$pass"

step "A snapshot forged with your public key alone is refused"
# A snapshot root dated 2999, so that it would be "latest", encrypted to
# your public key by someone who has nothing else.
forged=$repo/snapshots/29991231T235959.000000Z-000000000000000000000000.pgp
printf '{"bk":"snapshot","v":2,"time":"2999-12-31T23:59:59.000000Z","host":"attacker","roots":["%s"],"records":0,"files":0,"bytes":0}\n' "$tree" |
    "${gpg_quiet[@]}" --trust-model always -r demo@example.invalid --encrypt > "$tmp/forged.pgp"
mv "$tmp/forged.pgp" "$forged"
rc=0
bk-index show "$(basename "$forged")" --repo "$repo" --key "$sec" --passphrase-file "$pass" \
    >/dev/null 2>"$tmp/forged.log" || rc=$?
sed 's/^/    /' "$tmp/forged.log"
if ((rc == 5)); then
    ok "refused with exit status 5; \"latest\" is still your own snapshot"
else
    bad "bk-index show of a snapshot made with the public key alone exited $rc (expected 5)"
fi
rm -f "$forged"

step "bk-index show latest | bk-verify --read-data"
if bk-index show latest --repo "$repo" --key "$sec" --passphrase-file "$pass" |
    bk-verify --repo "$repo" --read-data --key "$sec" --passphrase-file "$pass"; then
    ok "every object present, decrypts and matches its SHA-256"
else
    bad "bk-verify --read-data reported problems"
fi

step "Restoring: bk-index show latest | bk-open --to RESTORE"
mkdir "$out"
SECONDS=0
bk-index show latest --repo "$repo" --key "$sec" --passphrase-file "$pass" |
    bk-open --repo "$repo" --key "$sec" --passphrase-file "$pass" --to "$out"
echo "    restored in ${SECONDS}s"
# Each root is restored in its own place, by its full path: the tree's
# records (root $tree) are under RESTORE$tree.
restored=$out/${tree#/}
echo "    the tree is in RESTORE/${tree#/}"

step "Comparing the restore with the original"
if diff -r --no-dereference "$tree" "$restored"; then
    ok "contents, names and symlink targets are identical (diff -r)"
else
    bad "diff -r found differences"
fi
# Type and mode of every entry, mtime of files and directories, symlink
# targets.
listing() {
    (cd "$1" && find . \( -type l -printf '%p %y -> %l\n' \) -o \
        \( -type d -printf '%p %y %m %T@\n' \) -o -printf '%p %y %m %s %T@\n' | LC_ALL=C sort)
}
if diff <(listing "$tree") <(listing "$restored") > "$tmp/meta.diff"; then
    ok "types, modes and modification times are identical"
else
    sed 's/^/    /' "$tmp/meta.diff" >&2
    bad "types, modes or modification times differ (< original, > restore)"
fi

step "Restoring one root straight into a directory: bk-open --root TREE --to RESTORE-ROOT"
bk-index show latest --repo "$repo" --key "$sec" --passphrase-file "$pass" |
    bk-open --repo "$repo" --key "$sec" --passphrase-file "$pass" --root "$tree" --to "$tmp/restore-root"
if diff -r --no-dereference "$tree" "$tmp/restore-root" && diff <(listing "$tree") <(listing "$tmp/restore-root") >/dev/null; then
    ok "the tree is RESTORE-ROOT itself, identical to the original"
else
    bad "bk-open --root restored something else than the tree"
fi

step "Recovering a file without bk: the README's steps, with gpg, openssl and jq"
if ! command -v jq >/dev/null || ! openssl kdf -keylen 1 -kdfopt digest:SHA256 -kdfopt hexkey:00 HKDF >/dev/null 2>&1; then
    echo "    skipped: needs jq and OpenSSL 3 (tests/gpg_recovery.rs runs these steps)"
else
    # The README's code blocks, but the first: that one imports your key
    # into a fresh GNUPGHOME, and the demo's key is in $GNUPGHOME already
    # (unlocked here once, so that gpg's agent does not ask again).
    recipe=$(awk '/^## Recovering with gpg alone$/ { on = 1; next }
        on && /^## / { exit }
        on && /^```sh$/ { n++; code = 1; next }
        code && /^```$/ { code = 0; next }
        code && n > 1' "$here/../README.md")
    [[ $recipe == *"repo=/mnt/backup"* && $recipe == *"path=docs/tax.pdf"* ]] ||
        die "README.md: no recovery steps found in its section \"Recovering with gpg alone\""
    recipe=${recipe/repo=\/mnt\/backup/repo=\"\$1\"}
    recipe=${recipe/path=docs\/tax.pdf/path=photos\/raw\/IMG_0001.raw}
    "${gpg_pass[@]}" --decrypt "$repo/keys/id-key.pgp" >/dev/null 2>"$tmp/gpg.log" ||
        { cat "$tmp/gpg.log" >&2; die "gpg --decrypt keys/id-key.pgp failed"; }
    mkdir "$tmp/recovery"
    if (cd "$tmp/recovery" && bash -eu -c "$recipe" recipe "$repo") > "$tmp/recovery.log" 2>&1; then
        sed 's/^/    /' "$tmp/recovery.log"
        # Step 6 prints the root's MAC as computed, then as it carries it.
        macs=$(grep -E '^[0-9a-f]{64}$' "$tmp/recovery.log" || true)
        if [[ $(wc -l <<<"$macs") != 2 || $(sort -u <<<"$macs" | wc -l) != 1 ]]; then
            bad "the snapshot root's MAC, computed by hand, is not the one it carries"
        elif cmp -s "$tmp/recovery/IMG_0001.raw" "$tree/photos/raw/IMG_0001.raw"; then
            ok "photos/raw/IMG_0001.raw recovered byte for byte; the root's MAC checked by hand"
        else
            bad "the file recovered without bk differs from the original"
        fi
    else
        sed 's/^/    /' "$tmp/recovery.log" >&2
        bad "the README's recovery steps failed"
    fi
fi

echo
if ((${#failures[@]} == 0)); then
    echo "PASS: bk demo: backup, dedup, list, verify --read-data, restore and recovery without bk all worked"
else
    echo "FAIL: bk demo: ${#failures[@]} check(s) failed:" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
