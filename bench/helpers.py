#!/usr/bin/env python3
"""Helpers for bench/run.sh: corpus generation, openssl speed parsing,
the real tree's size and the check of its restores, the local S3 server's
counts and the results table.

    helpers.py gen-small DIR FILES DIRS SEED
    helpers.py speed FILE              # kB/s of the 16384-byte column
    helpers.py tree-stats OUT.json ROOT...          # size of the real tree
    helpers.py compare OUT.json RESTORED ROOT...    # ROOT vs RESTORED/ROOT
    helpers.py table RESULTS.tsv META.env OUT.md [S3.tsv [REAL.tsv]]
    helpers.py free-port               # a free TCP port on 127.0.0.1
    helpers.py s3-count URL BUCKET PREFIX   # keys and bytes under PREFIX/
    helpers.py s3-requests LOG FROM TO BUCKET PREFIX   # requests in lines FROM+1..TO
"""

import json
import os
import random
import re
import socket
import stat
import statistics
import sys
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET


def gen_small(top, files, dirs, seed):
    """`files` files of 1-16 KiB spread over `dirs` directories; sizes and
    content come from one seeded generator, so every run makes the same
    bytes (incompressible: pseudo-random)."""
    rng = random.Random(seed)
    width = len(str(dirs - 1))
    for d in range(dirs):
        os.makedirs(os.path.join(top, f"d{d:0{width}d}"), exist_ok=True)
    fwidth = len(str(files - 1))
    for i in range(files):
        size = rng.randint(1024, 16384)
        data = rng.randbytes(size)
        path = os.path.join(top, f"d{i % dirs:0{width}d}", f"f{i:0{fwidth}d}.bin")
        with open(path, "wb") as f:
            f.write(data)


def speed(path):
    """The 16384-byte column of `openssl speed` output, in 1000s of bytes/s."""
    header = None
    for line in open(path):
        if line.startswith("type"):
            header = re.findall(r"(\d+) bytes", line)
            continue
        if header and line.strip():
            values = re.findall(r"([\d.]+)k", line)
            if len(values) == len(header):
                return float(values[header.index("16384")])
    sys.exit(f"no 16384-byte column in {path}")


# --------------------------------------------------------------------------
# The real tree (case 5): its size, and the check of a restore


def walk(root):
    """Every entry under `root` (itself included), without following
    symlinks, as (path relative to root, lstat). Unlistable directories are
    skipped (and counted by the callers through their lstat)."""
    stack = [""]
    while stack:
        rel = stack.pop()
        path = os.path.join(root, rel) if rel else root
        try:
            st = os.lstat(path)
        except FileNotFoundError:  # gone since its directory was listed
            continue
        yield rel, st
        if stat.S_ISDIR(st.st_mode):
            try:
                names = sorted(os.listdir(path), reverse=True)
            except OSError:
                continue
            stack.extend(os.path.join(rel, n) for n in names)


KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo",
         stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFSOCK: "socket"}


def kind(st):
    return KINDS.get(stat.S_IFMT(st.st_mode), "other")


def tree_stats(out, roots):
    """Entries by kind and bytes in regular files under `roots`; writes
    them to `out` as JSON and prints one line."""
    counts, size = {}, 0
    for root in roots:
        for _, st in walk(root):
            k = kind(st)
            counts[k] = counts.get(k, 0) + 1
            if k == "file":
                size += st.st_size
    entries = sum(counts.values())
    result = {"roots": roots, "entries": entries, "bytes": size, "kinds": counts}
    with open(out, "w") as f:
        json.dump(result, f, sort_keys=True)
    print(tree_line(result))


def tree_line(t):
    kinds = ", ".join(f"{v:,} {k}{'s' if v != 1 else ''}" for k, v in sorted(t["kinds"].items(), key=lambda kv: -kv[1]))
    return f"{t['entries']:,} entries ({kinds}), {t['bytes']:,} bytes in files ({t['bytes'] / 2**20:,.0f} MiB)"


def same_content(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def compare(out, restored, roots):
    """Compare every root with its restore, `restored`/ROOT (the root's full
    path under the target, as bk and restic lay it out; borg's relative
    paths land in the same place). A difference: an entry missing from the
    restore or extra in it, of another kind, a regular file with other
    content, a symlink with another target, a device with another number.
    Not compared (and counted): sockets, which a restore need not recreate
    (bk records them and never restores them), and what this process cannot
    read in the original. Mode, owner and mtime differences are counted too,
    as information. Writes a JSON summary to `out` and prints it in words."""
    r = {"entries": 0, "files": 0, "bytes": 0, "differences": 0, "skipped": 0,
         "mode": 0, "owner": 0, "mtime": 0, "examples": []}

    def differs(what, path):
        r["differences"] += 1
        if len(r["examples"]) < 10:
            r["examples"].append(f"{what}: {path}")

    for root in roots:
        target = os.path.join(restored, root.lstrip("/"))
        for rel, st in walk(root):
            r["entries"] += 1
            orig = os.path.join(root, rel) if rel else root
            copy = os.path.join(target, rel) if rel else target
            k = kind(st)
            if k == "socket":
                r["skipped"] += 1
                continue
            try:
                cst = os.lstat(copy)
            except FileNotFoundError:
                differs("missing", orig)
                continue
            if kind(cst) != k:
                differs(f"{k} restored as {kind(cst)}", orig)
                continue
            if k != "symlink":
                r["mode"] += stat.S_IMODE(st.st_mode) != stat.S_IMODE(cst.st_mode)
                r["mtime"] += st.st_mtime_ns != cst.st_mtime_ns
            r["owner"] += (st.st_uid, st.st_gid) != (cst.st_uid, cst.st_gid)
            if k == "file":
                r["files"] += 1
                r["bytes"] += st.st_size
                try:
                    same = st.st_size == cst.st_size and same_content(orig, copy)
                except PermissionError:
                    r["skipped"] += 1
                    continue
                if not same:
                    differs("content", orig)
            elif k == "symlink":
                if os.readlink(orig) != os.readlink(copy):
                    differs("symlink target", orig)
            elif k in ("char", "block"):
                if st.st_rdev != cst.st_rdev:
                    differs("device number", orig)
            elif k == "dir":
                try:
                    extra = set(os.listdir(copy)) - set(os.listdir(orig))
                except PermissionError:
                    r["skipped"] += 1
                    continue
                for name in sorted(extra):
                    differs("extra", os.path.join(orig, name))
    with open(out, "w") as f:
        json.dump(r, f, sort_keys=True)
    verdict = "same" if r["differences"] == 0 else f"{r['differences']:,} DIFFERENCES"
    print(f"restore vs {' '.join(roots)}: {verdict}; {r['entries']:,} entries, {r['files']:,} files, "
          f"{r['bytes']:,} bytes compared, {r['skipped']:,} not compared (sockets, unreadable); "
          f"metadata differing (not a failure): mode {r['mode']:,}, owner {r['owner']:,}, mtime {r['mtime']:,}")
    for e in r["examples"]:
        print(f"  {e}")


# --------------------------------------------------------------------------
# The local S3 server (moto_server)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_count(url, bucket, prefix):
    """Keys and bytes under `prefix/`, by ListObjectsV2 (moto does not check
    signatures, so plain unsigned GETs do). Prints `KEYS BYTES`."""
    keys = size = 0
    token = None
    while True:
        query = {"list-type": "2", "prefix": prefix.rstrip("/") + "/"}
        if token:
            query["continuation-token"] = token
        with urllib.request.urlopen(f"{url}/{bucket}?{urllib.parse.urlencode(query)}") as r:
            root = ET.fromstring(r.read())
        ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        for c in root.iter(f"{ns}Contents"):
            keys += 1
            size += int(c.findtext(f"{ns}Size") or 0)
        if (root.findtext(f"{ns}IsTruncated") or "").lower() != "true":
            break
        token = root.findtext(f"{ns}NextContinuationToken")
    print(keys, size)


# werkzeug's access log: 127.0.0.1 - - [date] "PUT /bucket/key?query HTTP/1.1" 200 -
ACCESS = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/[\d.]+" (\d+)')


def s3_requests(log, first, last, bucket, prefix):
    """The requests logged in lines first+1..last of `log`, as one JSON
    object: the total, counts per method, and per method, area and status
    where the area is the key's first component under `prefix`
    (`objects/`, `data/`, `locks/`…), `LIST dir/` for a listing, or the
    bucket itself."""
    methods, areas = {}, {}
    total = 0
    with open(log, errors="replace") as f:
        for n, line in enumerate(f, 1):
            if n <= first:
                continue
            if n > last:
                break
            m = ACCESS.search(line)
            if not m:
                continue
            method, target, status = m.groups()
            total += 1
            methods[method] = methods.get(method, 0) + 1
            parsed = urllib.parse.urlsplit(target)
            path = urllib.parse.unquote(parsed.path).lstrip("/")
            query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
            key = path[len(bucket):].lstrip("/") if path.startswith(bucket) else path
            pre = prefix.strip("/") + "/"
            if not key and ("list-type" in query or "prefix" in query):
                listed = query.get("prefix", [""])[0]
                area = "LIST " + ((listed[len(pre):] if listed.startswith(pre) else listed) or "/")
            elif not key:
                area = "bucket"
            else:
                rest = key[len(pre):] if key.startswith(pre) else key
                area = rest.split("/", 1)[0] + ("/" if "/" in rest else "")
                if "uploads" in query or "uploadId" in query:
                    area += " (multipart)"
            label = f"{method} {area} {status}"
            areas[label] = areas.get(label, 0) + 1
    print(json.dumps({"total": total, "methods": methods, "areas": areas}, sort_keys=True))


# --------------------------------------------------------------------------
# The table

CASES = [
    ("big-backup", "1. big: full backup"),
    ("big-restore", "1. big: restore"),
    ("small-backup", "2. small: full backup"),
    ("rerun", "3. re-run, unchanged"),
    ("edit", "4. edit 1 byte, backup"),
]
# (bk/restic target, bk/borg target) for wall time, per case.
TARGETS = {
    "big-backup": (0.6, 0.5),
    "small-backup": (0.6, 0.5),
    "rerun": (0.3, None),
    "edit": (0.6, 0.5),
    "big-restore": (0.7, None),
}
RSS_TARGET = 0.5  # bk peak RSS / restic peak RSS


def load(results):
    runs = {}
    for line in open(results):
        if not line.strip():
            continue
        case, tool, rep, wall, rss, added, detail, cpu, warn = (line.rstrip("\n").split("\t") + [""] * 9)[:9]
        runs.setdefault((case, tool), []).append(
            {"wall": float(wall), "rss": int(rss), "added": int(added) if added else None, "detail": detail,
             "cpu": float(cpu) if cpu else None, "rep": rep, "warn": warn}
        )
    return runs


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def verdict(ratio, target):
    if ratio is None or target is None:
        return ""
    return f" {'PASS' if ratio <= target else 'MISS'} (≤{target})"


def fmt(x, digits=2):
    return "–" if x is None else f"{x:.{digits}f}"


def mib(kib):
    return "–" if kib is None else f"{kib / 1024:.0f}"


def stage_row(runs, case, title, tools):
    """A row of bk's peak RSS and CPU per program, and every tool's CPU."""
    stage_peaks, stage_cpu = {}, {}
    for r in runs.get((case, "bk"), []):
        for part in r["detail"].split(","):
            if ":" in part:
                name, kib, cpu = (part.split(":") + [""])[:3]
                stage_peaks[name] = max(stage_peaks.get(name, 0), int(kib))
                stage_cpu.setdefault(name, []).append(float(cpu) if cpu else None)
    cpu = {t: median([r["cpu"] for r in runs.get((case, t), [])]) for t in tools}
    if not stage_peaks:
        return None
    return (f"| {title} | " + ", ".join(f"{n} {mib(k)}" for n, k in stage_peaks.items())
            + " | " + ", ".join(f"{n} {fmt(median(c))}" for n, c in stage_cpu.items())
            + " | " + " / ".join(fmt(cpu[t]) for t in tools) + " |")


def table(results, meta_path, out_path, s3_path=None, real_path=None):
    meta = {}
    for line in open(meta_path):
        if "=" in line:
            k, v = line.rstrip("\n").split("=", 1)
            meta[k] = v
    runs = load(results)
    tools = ["bk", "restic", "borg"]
    lines = []
    add = lines.append
    add(f"# bk benchmark, {meta.get('DATE', '?')}")
    add("")
    add(f"- machine: {meta.get('CPU', '?')}, {meta.get('NPROC', '?')} cores, {meta.get('MEM', '?')} memory; load before the run: {meta.get('LOAD', '?')}")
    add(f"- bk {meta.get('BK_VERSION', '?')} ({meta.get('BK_COMMIT', '?')}), {meta.get('RESTIC_VERSION', '?')}, {meta.get('BORG_VERSION', '?')}, {meta.get('OPENSSL_VERSION', '?')}")
    add(f"- scale `{meta.get('SCALE', '?')}`: big = {meta.get('BIG_FILES')} × {meta.get('BIG_MIB')} MiB incompressible files; "
        f"small = {meta.get('SMALL_FILES')} files of 1–16 KiB (incompressible) in {meta.get('SMALL_DIRS')} directories; "
        f"median of {meta.get('REPS')} runs, warm page cache, work dir {meta.get('WORK')}")
    add(f"- encryption: bk OpenPGP SEIPDv1 AES-256 (CFB + SHA-1 MDC), no compression; "
        f"restic {meta.get('RESTIC_REPO', '?')} (AES-256-CTR + Poly1305-AES; compression auto, the default); "
        f"borg `{meta.get('BORG_ENC', '?')}` (compression lz4, the default)")
    if meta.get("BK_BINARIES"):
        add(f"- bk binaries not built by this run (`BENCH_NO_BUILD`): {meta['BK_BINARIES']}; the commit above is the benchmark's tree")
    if meta.get("REAL_TREE"):
        t = json.loads(meta["REAL_TREE"])
        add(f"- real tree (case 5, not scaled): {' and '.join(f'`{r}`' for r in t['roots'])} of this machine, {tree_line(t)}")
    if meta.get("BK_NOTE"):
        add(f"- note: {meta['BK_NOTE']}")
    add("")
    start = len(lines)  # the directory cases (none if only the S3 case ran)
    add("| case | bk s | restic s | borg s | bk/restic | bk/borg | peak RSS MiB bk / restic / borg | bk/restic RSS | bytes added bk / restic / borg |")
    add("|---|---:|---:|---:|---|---|---|---|---|")
    details = []
    for case, title in CASES:
        wall = {t: median([r["wall"] for r in runs.get((case, t), [])]) for t in tools}
        rss = {t: median([r["rss"] for r in runs.get((case, t), [])]) for t in tools}
        added = {t: median([r["added"] for r in runs.get((case, t), [])]) for t in tools}
        if all(v is None for v in wall.values()):
            continue
        r_restic = wall["bk"] / wall["restic"] if wall["bk"] and wall["restic"] else None
        r_borg = wall["bk"] / wall["borg"] if wall["bk"] and wall["borg"] else None
        t_restic, t_borg = TARGETS.get(case, (None, None))
        rss_ratio = rss["bk"] / rss["restic"] if rss["bk"] and rss["restic"] else None
        added_col = ""
        if case in ("edit", "rerun"):
            added_col = " / ".join("–" if added[t] is None else f"{added[t]:,.0f}" for t in tools)
        add(
            f"| {title} | {fmt(wall['bk'])} | {fmt(wall['restic'])} | {fmt(wall['borg'])} "
            f"| {fmt(r_restic)}{verdict(r_restic, t_restic)} | {fmt(r_borg)}{verdict(r_borg, t_borg)} "
            f"| {mib(rss['bk'])} / {mib(rss['restic'])} / {mib(rss['borg'])} "
            f"| {fmt(rss_ratio)}{verdict(rss_ratio, RSS_TARGET)} | {added_col} |"
        )
        row = stage_row(runs, case, title, tools)
        if row:
            details.append(row)
        all_walls = {t: [round(r["wall"], 2) for r in runs.get((case, t), [])] for t in tools}
        details_walls.append(f"| {title} | " + " | ".join(str(all_walls[t]) for t in tools) + " |")
    add("")
    add("Ratios are bk's time (or RSS) divided by the other tool's; targets from issue 3 next to them. "
        "bk's RSS is the largest of any one program in its pipeline; per program (largest over the runs), "
        "with the CPU time each used:")
    add("")
    add("| case | peak RSS MiB per bk program | CPU s (user+sys, median) per bk program | CPU s bk / restic / borg |")
    add("|---|---|---|---|")
    lines.extend(details)
    add("")
    add("Every run's wall time (s):")
    add("")
    add("| case | bk | restic | borg |")
    add("|---|---|---|---|")
    lines.extend(details_walls)
    # Throughput against the single-core crypto limit.
    big_bytes = int(meta.get("BIG_BYTES", "0"))
    aes = float(meta.get("AES_KBS", "0")) / 1000  # MB/s
    sha = float(meta.get("SHA256_KBS", "0")) / 1000
    sha1 = float(meta.get("SHA1_KBS", "0")) / 1000
    cores = int(meta.get("NPROC", "1"))
    add("")
    if aes and sha and big_bytes:
        limit = 1 / (1 / aes + 1 / sha)
        add(f"openssl speed (16 KiB blocks, one core): aes-256-cfb {aes:.0f} MB/s, sha256 {sha:.0f} MB/s, sha1 {sha1:.0f} MB/s. "
            f"Limit for encrypt + hash of every byte = 1/(1/aes + 1/sha256) = **{limit:.0f} MB/s per core**, {limit * cores:.0f} MB/s on {cores} cores.")
        if sha1:
            full = 1 / (1 / aes + 3 / sha + 1 / sha1)
            add(f"(What bk does per byte of a new large file today: in bk-hash the FastCDC gear hash, SHA-256 of the whole file and of each chunk "
                f"(on two threads), then in bk-seal SHA-256 of each new chunk again (the check that what is stored is what bk-hash hashed), "
                f"AES-256-CFB, SHA-1 for the MDC and BLAKE3 of the ciphertext (the object inventory, about a quarter of a SHA-256 pass): "
                f"without the gear hash and copies, 1/(1/aes + 3/sha256 + 1/sha1) = {full:.0f} MB/s per core.)")
        add("")
        add("| big full backup | MB/s | ÷ (limit × cores) | ÷ limit (one core) |")
        add("|---|---:|---:|---:|")
        for t in tools:
            w = median([r["wall"] for r in runs.get(("big-backup", t), [])])
            if w:
                mbs = big_bytes / 1e6 / w
                add(f"| {t} | {mbs:.0f} | {mbs / (limit * cores):.2f} | {mbs / limit:.2f} |")
    if not details_walls:
        del lines[start:]
    if any(case.startswith("real-") for case, _ in runs):
        lines.extend(real_table(runs, real_path, meta))
    if s3_path and os.path.exists(s3_path) and os.path.getsize(s3_path):
        lines.extend(s3_table(runs, s3_path, meta))
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(out_path, "w") as f:
        f.write(text)


# Case 5, the real tree: (case, title, bk/restic target of issue 16).
REAL_CASES = [
    ("real-backup", "full backup, s", 1.0),
    ("real-rerun", "unchanged re-run, s", None),
    ("real-restore", "restore of the latest snapshot, s", 0.7),
]
REAL_SIZE_TARGET = 1.15  # bk's repository size / restic's
REAL_GROWTH_TARGET = 16384  # bytes bk's repository may grow per unchanged re-run


def ratio(a, b):
    return a / b if a is not None and b else None


def num(x):
    return "–" if x is None else f"{x:,.0f}"


def target(r, t, what):
    if r is None:
        return what
    return f"{'PASS' if r <= t else 'MISS'} ({what})"


def real_table(runs, real_path, meta):
    """Case 5: times, repository size and growth, and the restore check."""
    tools = ["bk", "restic", "borg"]
    checks = {}
    if real_path and os.path.exists(real_path):
        for line in open(real_path):
            if line.startswith("check\t"):
                _, tool, rep, summary = line.rstrip("\n").split("\t", 3)
                checks.setdefault(tool, []).append((rep, json.loads(summary)))
    tree = json.loads(meta["REAL_TREE"]) if meta.get("REAL_TREE") else None
    out = []
    add = out.append
    add("")
    roots = " and ".join(f"`{r}`" for r in tree["roots"]) if tree else "the real tree"
    add(f"## Real tree: {roots} of this machine (case 5, issue 16)")
    add("")
    if tree:
        add(f"The tree: {tree_line(tree)}. It does not depend on `BENCH_SCALE`; another machine's tree gives other numbers.")
    add("Each tool, taking turns in every repetition: a full backup of both roots into a fresh repository, "
        "a second backup of them, unchanged, into that repository, and a restore of its latest snapshot into an empty "
        f"directory. Median of {meta.get('REPS', '?')} runs; repository size and growth from `du -sb`.")
    add("")
    add("| | bk | restic | borg | bk/restic | bk/borg | target (issue 16) |")
    add("|---|---:|---:|---:|---|---|---|")
    bk_differs = any(c["differences"] for _, c in checks.get("bk", []))
    walls = []
    for case, title, t in REAL_CASES:
        wall = {tl: median([r["wall"] for r in runs.get((case, tl), [])]) for tl in tools}
        if all(v is None for v in wall.values()):
            continue
        rr, rb = ratio(wall["bk"], wall["restic"]), ratio(wall["bk"], wall["borg"])
        goal = ""
        if t is not None:
            goal = target(rr, t, f"bk ≤ {t} × restic")
            if case == "real-restore" and bk_differs:
                goal = f"MISS (bk's restore differs; bk ≤ {t} × restic)"
        add(f"| {title} | {fmt(wall['bk'])} | {fmt(wall['restic'])} | {fmt(wall['borg'])} | {fmt(rr)} | {fmt(rb)} | {goal} |")
        walls.append(f"| {title} | " + " | ".join(str([round(r["wall"], 2) for r in runs.get((case, tl), [])]) for tl in tools) + " |")
    size = {tl: median([r["added"] for r in runs.get(("real-backup", tl), [])]) for tl in tools}
    rr, rb = ratio(size["bk"], size["restic"]), ratio(size["bk"], size["borg"])
    add(f"| repository size after the full backup, bytes | {num(size['bk'])} | {num(size['restic'])} | {num(size['borg'])} "
        f"| {fmt(rr)} | {fmt(rb)} | {target(rr, REAL_SIZE_TARGET, f'bk ≤ {REAL_SIZE_TARGET} × restic')} |")
    growth = {tl: median([r["added"] for r in runs.get(("real-rerun", tl), [])]) for tl in tools}
    rr, rb = ratio(growth["bk"], growth["restic"]), ratio(growth["bk"], growth["borg"])
    add(f"| repository growth per unchanged re-run, bytes | {num(growth['bk'])} | {num(growth['restic'])} | {num(growth['borg'])} "
        f"| {fmt(rr)} | {fmt(rb)} | {target(growth['bk'], REAL_GROWTH_TARGET, f'bk ≤ {REAL_GROWTH_TARGET:,} bytes')} |")
    rss = {tl: " / ".join(mib(median([r["rss"] for r in runs.get((case, tl), [])])) for case, _, _ in REAL_CASES) for tl in tools}
    add(f"| peak RSS MiB: backup / re-run / restore | {rss['bk']} | {rss['restic']} | {rss['borg']} | | | |")

    def matches(tl):
        cs = checks.get(tl, [])
        if not cs:
            return "–"
        bad = [(rep, c["differences"]) for rep, c in cs if c["differences"]]
        if not bad:
            return f"yes ({len(cs)} of {len(cs)})"
        return "**NO**: " + ", ".join(f"run {rep}: {d:,} differences" for rep, d in bad)
    add(f"| restore matches the trees | {matches('bk')} | {matches('restic')} | {matches('borg')} | | | |")
    add("")
    add("Restore check (helpers.py `compare`, after every restore): each root against its restore under the "
        "target (its full path); a difference is an entry missing or extra, of another kind, a file with other "
        "content, a symlink with another target or a device with another number. Sockets and whatever the "
        "benchmark cannot read in the original are not compared. Mode, owner and mtime differences are counted "
        "as information, not as a failure.")
    add("")
    add("| tool | run | entries | files | bytes compared | differences | not compared | mode / owner / mtime differing |")
    add("|---|---|---:|---:|---:|---:|---:|---|")
    examples = []
    for tl in tools:
        for rep, c in checks.get(tl, []):
            add(f"| {tl} | {rep} | {c['entries']:,} | {c['files']:,} | {c['bytes']:,} | {c['differences']:,} | {c['skipped']:,} "
                f"| {c['mode']:,} / {c['owner']:,} / {c['mtime']:,} |")
            examples += [f"- {tl} run {rep}: {e}" for e in c["examples"]]
    if examples:
        add("")
        add("Differences (up to 10 per restore):")
        add("")
        out.extend(examples)
    warnings = [f"- {tl} {case} run {r['rep']}: {r['warn']}" for case, _, _ in REAL_CASES for tl in tools
                for r in runs.get((case, tl), []) if r.get("warn")]
    if warnings:
        add("")
        add("Partial exits, tolerated in this case only (the tool finished but could not read or restore some entries):")
        add("")
        out.extend(warnings)
    add("")
    add("bk's peak RSS per program (largest over the runs) and CPU time:")
    add("")
    add("| case | peak RSS MiB per bk program | CPU s (user+sys, median) per bk program | CPU s bk / restic / borg |")
    add("|---|---|---|---|")
    for case, title, _ in REAL_CASES:
        row = stage_row(runs, case, title, tools)
        if row:
            add(row)
    add("")
    add("Every run's wall time (s):")
    add("")
    add("| case | bk | restic | borg |")
    add("|---|---|---|---|")
    out.extend(walls)
    return out


# (case, title, bk/restic target for wall time)
S3_CASES = [
    ("s3-big-backup", "S1. big: full backup to S3", None),
    ("s3-big-restore", "S1. big: restore from S3", None),
    ("s3-small-backup", "S2. small: full backup to S3", 1.0),
    ("s3-small-restore", "S2. small: restore from S3", 1.0),
]
# bk's PUT requests per MiB it stored: at most one per MiB plus a constant
# (the target is for S2, small files).
S3_PUT_CASES = {"s3-small-backup"}
S3_PUT_CONSTANT = 20


def s3_table(runs, s3_path, meta):
    """The S3 section: wall time, ratio, and the requests each tool made
    per object it stored."""
    s3 = {}
    for line in open(s3_path):
        if not line.strip():
            continue
        case, tool, rep, requests, objects, stored, server_rss, area, total_keys, total_bytes, detail = \
            line.rstrip("\n").split("\t")
        s3.setdefault((case, tool), []).append(
            {"requests": int(requests), "objects": int(objects), "stored": int(stored),
             "server_rss": int(server_rss) if server_rss else None, "area": area,
             "total_keys": int(total_keys), "total_bytes": int(total_bytes), "detail": json.loads(detail)}
        )
    tools = ["bk", "restic"]
    out = []
    add = out.append
    add("")
    add(f"## S3: backup to a local S3 server, and restore from it ({meta.get('MOTO_VERSION', 'moto_server')})")
    add("")
    bk_areas = sorted({r["area"] for (case, t), rs in s3.items() if t == "bk" for r in rs})
    add("Each run backs up into a fresh bucket on a freshly started `moto_server` on 127.0.0.1 "
        "(in memory, path-style), then restores that backup from the same server into an empty directory "
        "(timed; bk: `bk-index show latest | bk-open --to`, restic: `restic restore latest --target`; "
        "checked against the corpus with `diff -r`). "
        "Requests are the server's access-log lines during the timed backup "
        "(bk: the whole pipeline including `bk-seal --init`; restic: `restic backup`, after an untimed `restic init`). "
        f"Objects stored: keys under bk's {' and '.join(f'`{a}/`' for a in bk_areas) or '`objects/` or `packs/`'}, "
        "pack files under restic's `data/`. Targets next to the ratios.")
    add("")
    add("| case | bk s | restic s | bk/restic | peak RSS MiB bk / restic | requests bk / restic | objects stored bk / restic | requests per object bk / restic |")
    add("|---|---:|---:|---|---|---|---|---|")
    walls, breakdown, by_area, puts = [], [], [], []
    for case, title, goal in S3_CASES:
        wall = {t: median([r["wall"] for r in runs.get((case, t), [])]) for t in tools}
        if all(v is None for v in wall.values()):
            continue
        rss = {t: median([r["rss"] for r in runs.get((case, t), [])]) for t in tools}
        req = {t: median([r["requests"] for r in s3.get((case, t), [])]) for t in tools}
        obj = {t: median([r["objects"] for r in s3.get((case, t), [])]) for t in tools}
        per = {t: req[t] / obj[t] if req[t] is not None and obj[t] else None for t in tools}
        r = ratio(wall["bk"], wall["restic"])
        if case.endswith("-restore"):  # requests are counted for the backup only
            counts = "| | | |"
        else:
            counts = (f"| {num(req['bk'])} / {num(req['restic'])} | {num(obj['bk'])} / {num(obj['restic'])} "
                      f"| {fmt(per['bk'])} / {fmt(per['restic'])} |")
        add(f"| {title} | {fmt(wall['bk'])} | {fmt(wall['restic'])} | {fmt(r)}{verdict(r, goal)} "
            f"| {mib(rss['bk'])} / {mib(rss['restic'])} {counts}")
        bk_backups = s3.get((case, "bk"), [])
        if bk_backups:
            p = median([x["detail"]["methods"].get("PUT", 0) for x in bk_backups])
            m = median([x["total_bytes"] for x in bk_backups]) / 2**20
            goal_puts = ""
            if case in S3_PUT_CASES:
                goal_puts = f"{'PASS' if p <= m + S3_PUT_CONSTANT else 'MISS'} (PUTs ≤ MiB + {S3_PUT_CONSTANT})"
            puts.append(f"| {title} | {p:,.0f} | {m:,.2f} | {p / m if m else 0:,.2f} | {goal_puts} |")
        walls.append(f"| {title} | " + " | ".join(str([round(r["wall"], 2) for r in runs.get((case, t), [])]) for t in tools) + " |")
        bk_runs = s3.get((case, "bk"), [])
        if bk_runs:
            methods = ["GET", "PUT", "POST", "HEAD", "DELETE"]
            m = {k: median([r["detail"]["methods"].get(k, 0) for r in bk_runs]) for k in methods}
            o = median([r["objects"] for r in bk_runs])
            breakdown.append(f"| {title} | " + " | ".join(
                f"{m[k]:,.0f} ({m[k] / o:.2f})" if o else f"{m[k]:,.0f}" for k in methods) + f" | {o:,.0f} |")
        for t in tools:
            rs = s3.get((case, t), [])
            if rs:
                last = rs[-1]["detail"]["areas"]
                parts = sorted(last.items(), key=lambda kv: (-kv[1], kv[0]))
                by_area.append(f"| {title} | {t} | " + ", ".join(f"{k}: {v:,}" for k, v in parts) + " |")
    add("")
    add("bk's PUT requests per MiB it stored (all keys under its prefix, by ListObjectsV2 after the backup), "
        "median over the runs; target: at most one PUT per MiB stored plus a constant:")
    add("")
    add("| case | PUTs | MiB stored | PUTs per MiB | target |")
    add("|---|---:|---:|---:|---|")
    out.extend(puts)
    add("")
    add("bk's requests by method (per object stored in brackets), median over the runs:")
    add("")
    add("| case | GET | PUT | POST | HEAD | DELETE | objects stored |")
    add("|---|---|---|---|---|---|---|")
    out.extend(breakdown)
    add("")
    add("Requests by method, key area under the repository prefix and HTTP status (last run; `LIST x/` is a ListObjectsV2 of that prefix):")
    add("")
    add("| case | tool | requests |")
    add("|---|---|---|")
    out.extend(by_area)
    add("")
    add("Every S3 run's wall time (s):")
    add("")
    add("| case | bk | restic |")
    add("|---|---|---|")
    out.extend(walls)
    peaks = [r["server_rss"] for rs in s3.values() for r in rs if r["server_rss"]]
    if peaks:
        add("")
        add(f"moto_server's RSS after a run: up to {max(peaks) / 1024:.0f} MiB (the server is restarted for every run).")
    return out


details_walls = []

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "gen-small":
        gen_small(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif cmd == "speed":
        print(f"{speed(sys.argv[2]):.2f}")
    elif cmd == "tree-stats":
        tree_stats(sys.argv[2], sys.argv[3:])
    elif cmd == "compare":
        compare(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif cmd == "table":
        table(sys.argv[2], sys.argv[3], sys.argv[4], *sys.argv[5:7])
    elif cmd == "free-port":
        print(free_port())
    elif cmd == "s3-count":
        s3_count(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "s3-requests":
        s3_requests(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6])
    else:
        sys.exit(__doc__)
