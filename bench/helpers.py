#!/usr/bin/env python3
"""Helpers for bench/run.sh: corpus generation, openssl speed parsing,
record filtering and the results table.

    helpers.py gen-small DIR FILES DIRS SEED
    helpers.py speed FILE              # kB/s of the 16384-byte column
    helpers.py root ROOT < records     # keep the records of one scanned root
    helpers.py table RESULTS.tsv META.env OUT.md
"""

import json
import os
import random
import re
import statistics
import sys


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


def keep_root(root):
    for line in sys.stdin:
        if json.loads(line).get("root") == root:
            sys.stdout.write(line)


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
        case, tool, rep, wall, rss, added, detail, cpu = (line.rstrip("\n").split("\t") + [""] * 8)[:8]
        runs.setdefault((case, tool), []).append(
            {"wall": float(wall), "rss": int(rss), "added": int(added) if added else None, "detail": detail,
             "cpu": float(cpu) if cpu else None}
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


def table(results, meta_path, out_path):
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
    if meta.get("BK_NOTE"):
        add(f"- note: {meta['BK_NOTE']}")
    add("")
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
        stage_peaks, stage_cpu = {}, {}
        for r in runs.get((case, "bk"), []):
            for part in r["detail"].split(","):
                if ":" in part:
                    name, kib, cpu = (part.split(":") + [""])[:3]
                    stage_peaks[name] = max(stage_peaks.get(name, 0), int(kib))
                    stage_cpu.setdefault(name, []).append(float(cpu) if cpu else None)
        cpu = {t: median([r["cpu"] for r in runs.get((case, t), [])]) for t in tools}
        if stage_peaks:
            details.append(
                f"| {title} | " + ", ".join(f"{n} {mib(k)}" for n, k in stage_peaks.items())
                + " | " + ", ".join(f"{n} {fmt(median(c))}" for n, c in stage_cpu.items())
                + " | " + " / ".join(fmt(cpu[t]) for t in tools) + " |"
            )
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
            add(f"(What bk does per byte of a new large file today: SHA-256 in bk-hash, then in bk-seal SHA-256 of each chunk (its id) "
                f"and of the whole file (the check that what is stored is what was hashed), the FastCDC gear hash, AES-256-CFB and SHA-1 for the MDC: "
                f"without the gear hash and copies, 1/(1/aes + 3/sha256 + 1/sha1) = {full:.0f} MB/s per core.)")
        add("")
        add("| big full backup | MB/s | ÷ (limit × cores) | ÷ limit (one core) |")
        add("|---|---:|---:|---:|")
        for t in tools:
            w = median([r["wall"] for r in runs.get(("big-backup", t), [])])
            if w:
                mbs = big_bytes / 1e6 / w
                add(f"| {t} | {mbs:.0f} | {mbs / (limit * cores):.2f} | {mbs / limit:.2f} |")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(out_path, "w") as f:
        f.write(text)


details_walls = []

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "gen-small":
        gen_small(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif cmd == "speed":
        print(f"{speed(sys.argv[2]):.2f}")
    elif cmd == "root":
        keep_root(sys.argv[2])
    elif cmd == "table":
        table(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
