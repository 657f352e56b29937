#!/usr/bin/env bash
# bench/run.sh: compare bk with restic and borg on the same data and disk
# (issue 3). See bench/README.md.
#
# Environment:
#   BENCH_DIR        work dir: corpora, repositories, restores, keys, caches
#                    [default: /var/tmp/bk-bench]; repositories live on its disk
#   BENCH_SCALE      full (default: 4 x 256 MiB + 20,000 small files) or
#                    small (4 x 32 MiB + 2,000 small files) for a quick run
#   BENCH_REPS       runs per case, median reported [default: 3]
#   BENCH_TOOLS      which tools [default: "bk restic borg"]
#   BENCH_CASES      which cases [default: "big small rerun edit real s3"]
#   BENCH_S3=0       skip the S3 case (bk and restic to a local moto_server)
#   BENCH_BORG_ENC   borg init -e mode [default: repokey if sha256 beats
#                    blake2b in openssl speed on this machine, else repokey-blake2]
#   BENCH_NO_BUILD=1 use the bk binaries already in target/release
#   BENCH_CLEAN=1    also remove the corpora at the end
#   BENCH_KEEP=1     keep the run dir (logs, keys; repositories of a failed run)
set -Eeuo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
helpers=$here/helpers.py

scale=${BENCH_SCALE:-full}
case $scale in
full) big_files=4 big_mib=256 small_files=20000 small_dirs=100 ;;
small) big_files=4 big_mib=32 small_files=2000 small_dirs=20 ;;
*)
    echo "BENCH_SCALE must be full or small" >&2
    exit 2
    ;;
esac
reps=${BENCH_REPS:-3}
work=${BENCH_DIR:-/var/tmp/bk-bench}
read -r -a tools <<<"${BENCH_TOOLS:-bk restic borg}"
read -r -a cases <<<"${BENCH_CASES:-big small rerun edit real s3}"
for c in "${cases[@]}"; do
    case $c in
    big | small | rerun | edit | real | s3) ;;
    *)
        echo "BENCH_CASES: unknown case $c (big small rerun edit real s3)" >&2
        exit 2
        ;;
    esac
done

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'bench: FAIL: %s\n' "$*" >&2
    exit 1
}
trap 'die "command failed (status $?, run.sh line $LINENO): $BASH_COMMAND"' ERR
has_tool() { [[ " ${tools[*]} " == *" $1 "* ]]; }
want() { [[ " ${cases[*]} " == *" $1 "* ]]; }

# The S3 case: bk and restic (borg has no S3 backend), unless BENCH_S3=0.
s3_tools=()
for t in bk restic; do has_tool "$t" && s3_tools+=("$t"); done
s3=0
if want s3 && [[ ${BENCH_S3:-1} != 0 ]] && ((${#s3_tools[@]})); then s3=1; fi

# ---------------------------------------------------------------- 1. tools
need_pkgs=()
command -v restic >/dev/null || need_pkgs+=(restic)
command -v borg >/dev/null || need_pkgs+=(borgbackup)
[[ -x /usr/bin/time ]] || need_pkgs+=(time)
command -v gpg >/dev/null || need_pkgs+=(gnupg)
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v python3 >/dev/null || need_pkgs+=(python3)
command -v bc >/dev/null || need_pkgs+=(bc)
if ((${#need_pkgs[@]})); then
    say "installing ${need_pkgs[*]} (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
command -v curl >/dev/null || { ((s3 == 0)) || die "the S3 case needs curl (or BENCH_S3=0)"; }
if ((s3)) && ! command -v moto_server >/dev/null; then
    say "installing moto[server] (pip) for the S3 case"
    if ! python3 -m pip install --quiet 'moto[server]' || ! command -v moto_server >/dev/null; then
        echo "    moto_server is not available: skipping the S3 case" >&2
        s3=0
    fi
fi

bin=${CARGO_TARGET_DIR:-$top/target}/release
if [[ -z ${BENCH_NO_BUILD:-} ]]; then
    say "building bk (cargo build --release --bins)"
    (cd "$top" && cargo build --release --bins --quiet)
fi
for p in bk-scan bk-hash bk-seal bk-index bk-open; do
    [[ -x $bin/$p ]] || die "$bin/$p missing"
done
export PATH="$bin:$PATH"

# A private environment: no BK_* settings, configs or caches of the user.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(BK_|RESTIC_|BORG_)' || true)
mkdir -p "$work"
work=$(cd "$work" && pwd)
corpus=$work/corpus
run=$work/run
rm -rf "$run"
mkdir -p "$corpus" "$run"
export GNUPGHOME=$run/gnupg XDG_CONFIG_HOME=$run/config XDG_DATA_HOME=$run/data XDG_CACHE_HOME=$run/cache
mkdir -m 700 "$GNUPGHOME"
mkdir -p "$XDG_CONFIG_HOME" "$XDG_DATA_HOME" "$XDG_CACHE_HOME"
export RESTIC_PASSWORD=bench-password RESTIC_CACHE_DIR=$XDG_CACHE_HOME/restic
export BORG_PASSPHRASE=bench-password BORG_BASE_DIR=$run/borg-base
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
meta=$run/meta.env results=$run/results.tsv
: >"$results"

# The local S3 server of the S3 case (one per run: see s3_start).
s3_pid="" s3_port="" s3_url="" s3_log=""
s3_stop() {
    if [[ -n $s3_pid ]]; then
        kill "$s3_pid" 2>/dev/null || true
        wait "$s3_pid" 2>/dev/null || true
        s3_pid=""
    fi
}

edit_file=$corpus/big/big-1.bin
cleanup() {
    local status=$?
    s3_stop
    # Never leave the corpus edited (case 4), even after a failure.
    restore_edit || true
    gpgconf --homedir "$GNUPGHOME" --kill gpg-agent >/dev/null 2>&1 || true
    if [[ -n ${BENCH_KEEP:-} ]]; then
        echo "kept $run" >&2
    else
        rm -rf "$run"
    fi
    if [[ -n ${BENCH_CLEAN:-} ]]; then rm -rf "$corpus"; fi
    exit $status
}
restore_edit() {
    if [[ -f $corpus/EDITING ]]; then
        local off byte
        read -r off byte <"$corpus/EDITING"
        printf '%b' "\\x$byte" | dd of="$edit_file" bs=1 seek="$off" conv=notrunc status=none
        rm -f "$corpus/EDITING"
    fi
}
trap cleanup EXIT

{
    echo "DATE=$(date -u +%Y-%m-%dT%H:%MZ)"
    echo "SCALE=$scale"
    echo "REPS=$reps"
    echo "WORK=$work"
    echo "NPROC=$(nproc)"
    echo "CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
    echo "MEM=$(free -h | awk '/^Mem:/{print $2}')"
    echo "LOAD=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "BK_VERSION=$(bk-seal --version | awk '{print $2}')"
    echo "BK_COMMIT=$(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)"
    # With BENCH_NO_BUILD the binaries may come from another tree (CARGO_TARGET_DIR).
    if [[ -n ${BENCH_NO_BUILD:-} ]]; then echo "BK_BINARIES=$bin, built $(date -u -r "$bin/bk-seal" +%Y-%m-%dT%H:%MZ)"; fi
    echo "RESTIC_VERSION=$(restic version | awk '{print $1, $2}')"
    echo "BORG_VERSION=$(borg --version)"
    echo "OPENSSL_VERSION=$(openssl version | awk '{print $1, $2}')"
    if ((s3)); then echo "MOTO_VERSION=moto_server $(python3 -c 'import moto; print(moto.__version__)')"; fi
    echo "BIG_FILES=$big_files"
    echo "BIG_MIB=$big_mib"
    echo "BIG_BYTES=$((big_files * big_mib * 1048576))"
    echo "SMALL_FILES=$small_files"
    echo "SMALL_DIRS=$small_dirs"
} >"$meta"
say "versions"
grep -E '^(NPROC|CPU|LOAD|BK_|RESTIC_VERSION|BORG_VERSION|OPENSSL|MOTO)' "$meta" | sed 's/^/    /'

# ---------------------------------------------------- single-core crypto limit
say "openssl speed (one core, 16 KiB blocks)"
for alg in aes-256-cfb sha256 sha1 blake2b512; do
    openssl speed -seconds 2 -bytes 16384 -evp "$alg" >"$run/speed-$alg" 2>/dev/null
    echo "    $alg: $(python3 "$helpers" speed "$run/speed-$alg") kB/s"
done
aes_kbs=$(python3 "$helpers" speed "$run/speed-aes-256-cfb")
sha_kbs=$(python3 "$helpers" speed "$run/speed-sha256")
sha1_kbs=$(python3 "$helpers" speed "$run/speed-sha1")
b2_kbs=$(python3 "$helpers" speed "$run/speed-blake2b512")
borg_enc=${BENCH_BORG_ENC:-$(awk -v s="$sha_kbs" -v b="$b2_kbs" 'BEGIN{print (s >= b) ? "repokey" : "repokey-blake2"}')}
{
    echo "AES_KBS=$aes_kbs"
    echo "SHA256_KBS=$sha_kbs"
    echo "SHA1_KBS=$sha1_kbs"
    echo "BORG_ENC=$borg_enc"
} >>"$meta"
echo "    borg encryption: $borg_enc (HMAC-SHA256 if sha256 is faster than blake2b here, which SHA-NI makes likely)"

# ------------------------------------------------------------------ 2. corpora
restore_edit # an earlier run that died in case 4
params="v1 big=${big_files}x${big_mib}MiB small=${small_files}/${small_dirs}"
if [[ ! -f $corpus/PARAMS || $(cat "$corpus/PARAMS") != "$params" ]]; then
    say "generating corpora ($params) in $corpus"
    rm -rf "$corpus/big" "$corpus/small" "$corpus/PARAMS"
    mkdir -p "$corpus/big" "$corpus/small"
    for ((i = 0; i < big_files; i++)); do
        # AES-CTR keystream of a fixed password: deterministic, incompressible.
        { openssl enc -aes-256-ctr -nosalt -pbkdf2 -iter 1 -pass "pass:bk-bench-$i" </dev/zero 2>/dev/null || true; } |
            head -c $((big_mib * 1048576)) >"$corpus/big/big-$i.bin"
        [[ $(stat -c %s "$corpus/big/big-$i.bin") == $((big_mib * 1048576)) ]] || die "short corpus file big-$i.bin"
    done
    python3 "$helpers" gen-small "$corpus/small" "$small_files" "$small_dirs" bk-bench
    echo "$params" >"$corpus/PARAMS"
else
    say "reusing corpora ($params) in $corpus"
fi
big=$corpus/big small=$corpus/small
echo "    $(du -sh "$big" | cut -f1) big, $(du -sh "$small" | cut -f1) small ($(find "$small" -type f | wc -l) files)"

# --------------------------------------------------------------------- 3. keys
say "throwaway OpenPGP key"
gpg --batch --quiet --pinentry-mode loopback --passphrase '' \
    --quick-gen-key 'bench <b@example.invalid>' future-default default never 2>"$run/gpg.log" ||
    { cat "$run/gpg.log" >&2; die "gpg --quick-gen-key"; }
pub=$run/pub.asc sec=$run/sec.asc
gpg --batch --armor --export b@example.invalid >"$pub"
gpg --batch --pinentry-mode loopback --passphrase '' --armor --export-secret-keys b@example.invalid >"$sec"

# bk-hash --reuse auto on a repository that bk-seal --init has not made yet
# (the first run): if this bk refuses it, first runs leave --reuse out.
first_reuse=(--reuse auto)
if ! bk-hash --reuse auto --repo "$run/no-repo-yet" </dev/null >/dev/null 2>"$run/reuse-probe"; then
    first_reuse=()
    echo "BK_NOTE=bk-hash --reuse auto fails when the repository does not exist yet ($(head -c 200 "$run/reuse-probe")); first runs were made without --reuse" >>"$meta"
    echo "    note: bk-hash --reuse auto refuses a repository that does not exist yet:"
    sed 's/^/      /' "$run/reuse-probe"
    echo "      so first runs (with bk-seal --init) leave --reuse auto out"
fi

# -------------------------------------------------------------- measurement
# Every timed command: sync and warm the page cache first (untimed), wall
# time from date, peak RSS from GNU time. Sets WALL, RSS (KiB), DETAIL.
warm() { find "$@" -type f -print0 | xargs -0 cat >/dev/null; }
now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc; }
rss_of() { tail -n 1 "$1" | cut -d' ' -f1; }
cpu_of() { tail -n 1 "$1" | awk '{printf "%.2f", $2 + $3}'; }
logf=$run/log

# In the real case (5) a tool that finishes but could not read or restore
# some entries (unreadable or special files of a tree nobody here made) must
# not end the benchmark: its "partial" exit status is then a warning, kept in
# WARN, printed and saved with the run; the fidelity check shows what is
# missing. Everywhere else any status but 0 is fatal.
real_case=0
WARN=""
# tolerated NAME-ACTION STATUS
tolerated() {
    ((real_case)) || return 1
    case $1:$2 in
    # bk: 24 = partial (some entries unreadable, vanished or changed);
    # bk-open 1 = some entries refused or incomplete.
    bk-scan:24 | bk-hash:24 | bk-seal:24 | bk-index:24 | bk-open:1) return 0 ;;
    # restic backup 3 = some source files could not be read; restore 1 = errors.
    restic-backup:3 | restic-restore:1) return 0 ;;
    # borg 1 = warning.
    borg-create:1 | borg-extract:1) return 0 ;;
    esac
    return 1
}

# timed NAME CMD...: one process (restic, borg)
timed() {
    local name=$1
    shift
    local t0 t1 status=0 action=$name a
    for a in "$@"; do
        case $a in backup | restore | create | extract)
            action=$name-$a
            break
            ;;
        esac
    done
    WARN=""
    t0=$(now)
    /usr/bin/time -f "%M %U %S" -o "$run/time.$name" "$@" >>"$logf.$name" 2>&1 || status=$?
    t1=$(now)
    if ((status != 0)); then
        if tolerated "$action" "$status"; then
            WARN="${action/-/ } exited with $status"
        else
            tail -n 20 "$logf.$name" >&2
            die "$name: $* exited with $status"
        fi
    fi
    WALL=$(elapsed "$t0" "$t1")
    RSS=$(rss_of "$run/time.$name")
    CPU=$(cpu_of "$run/time.$name")
    DETAIL=""
}

# bk_backup REPO INIT(0|1) TREE...: the whole pipeline
bk_backup() {
    local repo=$1 init=$2
    shift 2
    local seal_init=() reuse=(--reuse auto)
    if ((init)); then
        seal_init=(--init)
        reuse=("${first_reuse[@]}")
    fi
    local t=$run/bk-time t0 t1
    mkdir -p "$t"
    t0=$(now)
    local st=()
    {
        /usr/bin/time -f "%M %U %S" -o "$t/scan" bk-scan "$@" 2>>"$logf.bk-scan" |
            /usr/bin/time -f "%M %U %S" -o "$t/hash" bk-hash "${reuse[@]}" --repo "$repo" 2>>"$logf.bk-hash" |
            /usr/bin/time -f "%M %U %S" -o "$t/seal" bk-seal "${seal_init[@]}" --repo "$repo" -r "$pub" 2>>"$logf.bk-seal" |
            /usr/bin/time -f "%M %U %S" -o "$t/index" bk-index write --repo "$repo" -r "$pub" >>"$logf.bk-index" 2>&1
        st=("${PIPESTATUS[@]}")
    } || true
    t1=$(now)
    bk_status "${st[*]}" scan hash seal index || die "bk pipeline exited with ${st[*]} (scan hash seal index)"
    WALL=$(elapsed "$t0" "$t1")
    bk_rss scan hash seal index
}

# bk_status "STATUSES" STAGE...: true if every stage exited 0, or with a
# status tolerated in the real case (then noted in WARN); else shows the
# end of every stage's log.
bk_status() {
    local -a st stages
    read -r -a st <<<"$1"
    shift
    stages=("$@")
    local i stage bad=0
    WARN=""
    for ((i = 0; i < ${#stages[@]}; i++)); do
        stage=${stages[i]}
        [[ ${st[i]:-x} == 0 ]] && continue
        if tolerated "bk-$stage" "${st[i]:-x}"; then
            WARN+="${WARN:+; }bk-$stage exited with ${st[i]}"
        else
            bad=1
        fi
    done
    if ((bad)); then
        for stage; do tail -n 5 "$logf.bk-$stage" | sed "s/^/    bk-$stage: /" >&2; done
        return 1
    fi
    return 0
}

# bk_restore REPO OUT
bk_restore() {
    local repo=$1 out=$2 t=$run/bk-time t0 t1
    t0=$(now)
    local st=()
    {
        /usr/bin/time -f "%M %U %S" -o "$t/show" bk-index show latest --repo "$repo" --key "$sec" 2>>"$logf.bk-show" |
            /usr/bin/time -f "%M %U %S" -o "$t/open" bk-open --repo "$repo" --key "$sec" --to "$out" >>"$logf.bk-open" 2>&1
        st=("${PIPESTATUS[@]}")
    } || true
    t1=$(now)
    bk_status "${st[*]}" show open || die "bk restore exited with ${st[*]} (show open)"
    WALL=$(elapsed "$t0" "$t1")
    bk_rss show open
}

bk_rss() {
    RSS=0 DETAIL="" CPU=0
    local s r
    for s in "$@"; do
        r=$(rss_of "$run/bk-time/$s")
        CPU=$(echo "$CPU + $(cpu_of "$run/bk-time/$s")" | bc)
        DETAIL+="${DETAIL:+,}bk-$s:$r:$(cpu_of "$run/bk-time/$s")"
        ((r > RSS)) && RSS=$r
    done
    return 0
}

restic_init() { # REPO (untimed)
    restic -r "$1" init >>"$logf.restic-init" 2>&1
    if ! grep -q RESTIC_REPO "$meta"; then
        echo "RESTIC_REPO=repository format $(restic -r "$1" cat config | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')" >>"$meta"
    fi
}

archive_no=0
# backup TOOL REPO FIRST(0|1) TREE...: creates the repository when FIRST
backup() {
    local tool=$1 repo=$2 first=$3
    shift 3
    case $tool in
    bk) bk_backup "$repo" "$first" "$@" ;;
    restic)
        ((first)) && restic_init "$repo"
        timed restic restic -r "$repo" backup "$@"
        ;;
    borg)
        ((first)) && borg init -e "$borg_enc" "$repo" >>"$logf.borg-init" 2>&1
        archive_no=$((archive_no + 1))
        timed borg borg create "$repo::a$archive_no" "$@"
        ;;
    esac
}

# restore TOOL REPO OUT: the latest snapshot, everything in it
restore() {
    local tool=$1 repo=$2 out=$3
    mkdir -p "$out"
    case $tool in
    bk) bk_restore "$repo" "$out" ;;
    restic) timed restic restic -r "$repo" restore latest --target "$out" ;;
    borg)
        local last
        last=$(borg list --short "$repo" | tail -n 1)
        # borg extracts into the current directory.
        cd "$out"
        timed borg borg extract "$repo::$last"
        cd "$corpus"
        ;;
    esac
}

# restored OUT FILE-IN-TREE: the directory under OUT that holds the tree
# (bk and restic keep absolute paths, OUT/<tree's full path>; borg relative ones).
restored() {
    local hit
    hit=$(find "$1" -name "$2" -print -quit)
    [[ -n $hit ]] || die "nothing named $2 restored under $1"
    dirname "$hit"
}

# check_same ORIG RESTORED: byte-for-byte, so nobody wins by being wrong
check_same() {
    diff -r -q "$1" "$2" >"$run/diff.out" 2>&1 || {
        head "$run/diff.out" >&2
        die "restore of $1 differs"
    }
}

# discard DIR...: remove, except that a directory of many files is moved to
# the trash, emptied after the last timed run. On ext4 (this machine's has no
# journal) creating files soon after deleting many others can cost the kernel
# much time (find_inode_bit skips every recently_deleted inode: 27% of
# bk-seal's CPU in one profile), which would charge bk, with one file per
# object, for the benchmark's own clean-up rather than for its work.
trash=$run/trash
discard() {
    local d
    for d; do
        [[ -e $d ]] || continue
        if (($(find "$d" | wc -l) > 1000)); then
            mkdir -p "$trash"
            mv "$d" "$trash/$(date +%s%N)"
        else
            rm -rf "$d"
        fi
    done
}

fresh() { # fresh repository path for TOOL
    discard "$run/repo-$1"
    rm -rf "$XDG_CACHE_HOME/restic" "$XDG_CACHE_HOME/bk" "$BORG_BASE_DIR"
    echo "$run/repo-$1"
}

record() { # CASE TOOL REP [BYTES: added, or for real-backup the repository's size]
    local bytes=${4:+, +$4 bytes}
    [[ $1 == real-backup ]] && bytes=", repository $4 bytes"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$WALL" "$RSS" "${4:-}" "$DETAIL" "$CPU" "$WARN" >>"$results"
    printf '    %-12s %-6s run %s: %6.2f s, %6.2f s CPU, %5d MiB%s\n' "$1" "$2" "$3" "$WALL" "$CPU" $((RSS / 1024)) "$bytes"
    if [[ -n $WARN ]]; then echo "      warning: $WARN (tolerated in the real case; see the fidelity check)"; fi
    WARN=""
}

prep() { sync; warm "$@"; }

# Tools alternate within each repetition, so that noise from other work on
# the machine spreads over all of them.

# Every case names the corpora relative to the corpus directory.
cd "$corpus"

# ------------------------------------------------ case 1: big backup, restore
if want big; then
    say "case 1: big ($big_files x $big_mib MiB): full backup, then restore"
    cd "$corpus"
    for ((rep = 1; rep <= reps; rep++)); do
        for tool in "${tools[@]}"; do
            repo=$(fresh "$tool")
            prep big
            backup "$tool" "$repo" 1 "$big"
            record big-backup "$tool" "$rep"
            out=$run/restore
            discard "$out"
            sync
            warm "$repo"
            restore "$tool" "$repo" "$out"
            record big-restore "$tool" "$rep"
            check_same "$big" "$(restored "$out" big-0.bin)"
            discard "$out" "$repo"
        done
    done
fi

# ------------------------------------------------------ case 2: small backup
if want small; then
    say "case 2: small ($small_files files): full backup"
    for ((rep = 1; rep <= reps; rep++)); do
        for tool in "${tools[@]}"; do
            repo=$(fresh "$tool")
            prep small
            backup "$tool" "$repo" 1 "$small"
            record small-backup "$tool" "$rep"
            if ((rep == reps)); then # one check per tool that small files come back
                out=$run/restore
                discard "$out"
                restore "$tool" "$repo" "$out" >/dev/null
                check_same "$small" "$(restored "$out" "$(basename "$(find "$small" -type f -print -quit)")")/.."
                discard "$out"
            fi
            discard "$repo"
        done
    done
fi

# -------------------------------------------- cases 3 and 4: both trees again
if want rerun || want edit; then
    say "cases 3 and 4: first backup of both trees (not timed in the table)"
    rm -rf "$XDG_CACHE_HOME/restic" "$XDG_CACHE_HOME/bk" "$BORG_BASE_DIR"
    for tool in "${tools[@]}"; do
        repo=$run/repo2-$tool
        discard "$repo"
        prep big small
        backup "$tool" "$repo" 1 "$big" "$small"
        printf '    %-6s %6.2f s\n' "$tool" "$WALL"
    done

    # backup_both_trees CASE REP: each tool backs up both trees into its
    # repository of cases 3 and 4; records the time and the bytes added.
    backup_both_trees() {
        local tool repo before after
        for tool in "${tools[@]}"; do
            repo=$run/repo2-$tool
            prep big small
            before=$(du -sb "$repo" | cut -f1)
            backup "$tool" "$repo" 0 "$big" "$small"
            after=$(du -sb "$repo" | cut -f1)
            record "$1" "$tool" "$2" $((after - before))
        done
    }

    if want rerun; then
        say "case 3: re-run, both trees unchanged"
        for ((rep = 1; rep <= reps; rep++)); do
            backup_both_trees rerun "$rep"
        done
    fi

    if want edit; then
        say "case 4: one byte changed in the middle of $(basename "$edit_file"), backup"
        size=$(stat -c %s "$edit_file")
        off=$((size / 2))
        orig=$(od -An -tx1 -j "$off" -N1 "$edit_file" | tr -d ' \n')
        echo "$off $orig" >"$corpus/EDITING"
        for ((rep = 1; rep <= reps; rep++)); do
            # A different byte each time (orig XOR rep), so each run has new data.
            new=$(printf '%02x' $((0x$orig ^ rep)))
            printf '%b' "\\x$new" | dd of="$edit_file" bs=1 seek="$off" conv=notrunc status=none
            backup_both_trees edit "$rep"
        done
    fi

    say "checking that each tool's latest snapshot restores both trees (edited state)"
    for tool in "${tools[@]}"; do
        repo=$run/repo2-$tool out=$run/restore
        discard "$out"
        # Two roots in one snapshot: bk, like restic, restores each by its
        # full path under OUT.
        restore "$tool" "$repo" "$out"
        check_same "$big" "$(restored "$out" big-0.bin)"
        check_same "$small" "$(restored "$out" "$(basename "$(find "$small" -type f -print -quit)")")/.."
        echo "    $tool: ok"
        # Moved aside, not deleted: case 5 restores right after this, and
        # ext4 makes file creation slow for a while after mass deletion.
        discard "$out" "$repo"
    done
    restore_edit
fi

# ------------------------------------------------ case 5: a real tree
# /usr/share and /etc of the machine the benchmark runs on, given as two
# roots (issue 16): a tree nobody here wrote, with its symlinks (dangling
# ones too), hard links, compressible files and root-only files (the bench
# runs as root). Each tool backs both up into a fresh repository, backs them
# up again unchanged, and restores its latest snapshot into an empty
# directory, which is then compared with the trees (helpers.py compare).
# Nothing is excluded; a tool's "partial" exit is a warning here (tolerated).
real_roots=(/usr/share /etc)
real_tsv=$run/real.tsv
: >"$real_tsv"
if want real; then
    for r in "${real_roots[@]}"; do [[ -d $r ]] || die "the real case needs the directory $r"; done
    tree_line=$(python3 "$helpers" tree-stats "$run/real-tree.json" "${real_roots[@]}")
    echo "REAL_TREE=$(cat "$run/real-tree.json")" >>"$meta"
    say "case 5: real tree ${real_roots[*]} ($tree_line): full backup, unchanged re-run, restore"
    # Warm the page cache; a file that cannot be read is the tools' problem.
    prep_real() {
        sync
        warm "${real_roots[@]}" 2>>"$logf.warm" || true
    }
    real_case=1
    for ((rep = 1; rep <= reps; rep++)); do
        for tool in "${tools[@]}"; do
            repo=$(fresh "$tool")
            prep_real
            backup "$tool" "$repo" 1 "${real_roots[@]}"
            size=$(du -sb "$repo" | cut -f1)
            record real-backup "$tool" "$rep" "$size"
            prep_real
            backup "$tool" "$repo" 0 "${real_roots[@]}"
            after=$(du -sb "$repo" | cut -f1)
            record real-rerun "$tool" "$rep" $((after - size))
            out=$run/restore
            discard "$out"
            # Every restore starts from the same kernel state: on ext4
            # without a journal, creating files costs a buffer-cache lookup
            # per free inode looked at (recently_deleted), and that grows
            # with what the runs before left cached (the same bk restore took
            # 3.5 s or 7.3 s, restic's 6.7 s or 11.7 s, in one run). Then
            # the repository alone is read back into the page cache.
            sync
            if [[ -w /proc/sys/vm/drop_caches ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
            warm "$repo"
            restore "$tool" "$repo" "$out"
            record real-restore "$tool" "$rep"
            # Every root by its full path under OUT (borg: without the
            # leading /, which is the same place).
            python3 "$helpers" compare "$run/check.json" "$out" "${real_roots[@]}" | sed 's/^/      /'
            printf 'check\t%s\t%s\t%s\n' "$tool" "$rep" "$(cat "$run/check.json")" >>"$real_tsv"
            discard "$out" "$repo"
        done
    done
    real_case=0
fi

# ---------------------------------------------------------------- 6. S3
# bk and restic back up into a local S3 server (moto_server, in memory).
# Every run gets a freshly started server and a new bucket, so runs are
# independent and the server's memory does not grow from one to the next.
# Requests are counted from the server's access log (werkzeug: one line per
# request) between the start and the end of the timed backup.
s3_tsv=$run/s3.tsv
: >"$s3_tsv"

s3_start() {
    s3_port=$(python3 "$helpers" free-port)
    s3_url=http://127.0.0.1:$s3_port
    s3_log=$run/moto-$s3_port.log
    moto_server -H 127.0.0.1 -p "$s3_port" >"$s3_log" 2>&1 &
    s3_pid=$!
    local i
    for ((i = 0; i < 100; i++)); do
        curl -s -o /dev/null "$s3_url/" && break
        kill -0 "$s3_pid" 2>/dev/null || { cat "$s3_log" >&2; die "moto_server exited"; }
        sleep 0.2
    done
    curl -s -o /dev/null "$s3_url/" || die "moto_server does not answer on $s3_url"
    export BK_S3_ENDPOINT=$s3_url
}

s3_lines() { wc -l <"$s3_log"; }

# s3_run CASE TOOL REP TREE: one timed backup into a fresh bucket, then a
# timed restore of it from the same server into an empty directory, which
# is compared with TREE.
s3_run() {
    local case=$1 tool=$2 rep=$3 tree=$4
    local bucket=bench-$tool-$rep repo prefix area n0 n1 keys bytes server_rss
    local ko bo kp bp total_keys total_bytes
    s3_start
    curl -sf -X PUT "$s3_url/$bucket" >/dev/null || die "cannot create bucket $bucket on $s3_url"
    rm -rf "$XDG_CACHE_HOME/restic" "$XDG_CACHE_HOME/bk"
    case $tool in
    bk) prefix=bk repo=s3://$bucket/$prefix ;;
    restic)
        prefix=restic area=data repo=s3:$s3_url/$bucket/$prefix
        restic_init "$repo"
        ;;
    esac
    prep "$tree"
    n0=$(s3_lines)
    if [[ $tool == bk ]]; then
        backup bk "$repo" 1 "$tree" # bk-seal --init is part of bk's pipeline
    else
        backup restic "$repo" 0 "$tree"
    fi
    sleep 0.3 # the last access-log line
    n1=$(s3_lines)
    record "s3-$case-backup" "$tool" "$rep"
    if [[ $tool == bk ]]; then
        # bk stores its blobs in pack files under packs/.
        area=packs
        read -r keys bytes <<<"$(python3 "$helpers" s3-count "$s3_url" "$bucket" "$prefix/packs")"
    else
        read -r keys bytes <<<"$(python3 "$helpers" s3-count "$s3_url" "$bucket" "$prefix/$area")"
    fi
    # Everything the tool stored under its prefix (for PUTs per MiB stored).
    read -r total_keys total_bytes <<<"$(python3 "$helpers" s3-count "$s3_url" "$bucket" "$prefix")"
    server_rss=$(ps -o rss= -p "$s3_pid" | tr -d ' ')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "s3-$case-backup" "$tool" "$rep" "$((n1 - n0))" "$keys" "$bytes" "$server_rss" \
        "$area" "$total_keys" "$total_bytes" \
        "$(python3 "$helpers" s3-requests "$s3_log" "$n0" "$n1" "$bucket" "$prefix")" >>"$s3_tsv"
    printf '    %-12s %-6s run %s: %d requests, %d objects under %s/ (%.2f per object), %d bytes stored in all, server RSS %d MiB\n' \
        "s3-$case" "$tool" "$rep" "$((n1 - n0))" "$keys" "$area" "$(awk -v r=$((n1 - n0)) -v k="$keys" 'BEGIN { print k ? r / k : 0 }')" \
        "$total_bytes" $((server_rss / 1024))
    # The restore, right after the backup, from the same server (each tool
    # with the cache its backup left, as in case 1).
    local out=$run/restore
    discard "$out"
    sync
    restore "$tool" "$repo" "$out"
    record "s3-$case-restore" "$tool" "$rep"
    if [[ $case == big ]]; then
        check_same "$tree" "$(restored "$out" big-0.bin)"
    else
        check_same "$tree" "$(restored "$out" "$(basename "$(find "$tree" -type f -print -quit)")")/.."
    fi
    echo "    $tool: restore from S3 ok"
    discard "$out"
    s3_stop
}

if ((s3)); then
    export BK_S3_PATH_STYLE=true AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
    for tree in big small; do
        say "case S$([[ $tree == big ]] && echo 1 || echo 2): $tree: full backup to S3 (moto_server), then restore from it, ${s3_tools[*]}"
        for ((rep = 1; rep <= reps; rep++)); do
            for tool in "${s3_tools[@]}"; do
                s3_run "$tree" "$tool" "$rep" "${corpus}/$tree"
            done
        done
    done
    unset BK_S3_ENDPOINT BK_S3_PATH_STYLE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
elif want s3; then
    echo "    (S3 case skipped: ${BENCH_S3:+BENCH_S3=$BENCH_S3, }tools ${tools[*]}; it needs bk or restic and moto_server)"
fi

# ------------------------------------------------------------------ 7. table
say "results"
echo
out_md=$here/results-$(date -u +%Y%m%d-%H%M)-$scale.md
python3 "$helpers" table "$results" "$meta" "$out_md" "$s3_tsv" "$real_tsv"
echo
echo "saved $out_md"
