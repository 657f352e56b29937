#!/usr/bin/env bash
# make-tree.sh DIR [MIB]: make a small sample tree for the bk demo and tests.
#
# It holds nested directories, duplicate files (stored once by bk), an empty
# file, a symlink, names with a space and non-ASCII letters, an executable, a
# private file and directory, and MIB (default 4) MiB of random data split
# over a few files. Modes and modification times are set explicitly so that a
# restore can be compared with the original.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 DIR [MIB]" >&2
    exit 2
fi
dir=$1
mib=${2:-4}
if [[ -e $dir && -n $(ls -A "$dir") ]]; then
    echo "$0: $dir exists and is not empty" >&2
    exit 2
fi
umask 022
mkdir -p "$dir"
cd "$dir"

mkdir -p docs/letters/2024 docs/letters/2025 photos/raw "music/Live at Home" src/bk private

# Text files, two of them duplicates of each other (and one of a third).
printf 'Dear tax office,\nplease find attached...\n' > docs/letters/2024/tax.txt
printf 'Dear tax office,\nplease find attached...\n' > docs/letters/2025/tax.txt
printf 'shopping: bread, milk, tea\n' > docs/todo.md
cp docs/todo.md "docs/todo copy.md"
printf 'Grüße aus Köln\n' > "docs/letters/café notes.txt"
: > docs/empty.txt

# Random data: one big file, a duplicate of it elsewhere, and a few small
# ones.
head -c $((mib * 1024 * 1024)) /dev/urandom > photos/raw/IMG_0001.raw
cp photos/raw/IMG_0001.raw "photos/IMG_0001 (copy).raw"
for i in 1 2 3; do
    head -c $((i * 40000 + 7)) /dev/urandom > "music/Live at Home/track $i.flac"
done

# A script, a private file and a private directory.
printf '#!/bin/sh\necho hello from bk\n' > src/bk/hello.sh
chmod 0755 src/bk/hello.sh
printf 'not for your eyes\n' > private/diary.txt
chmod 0600 private/diary.txt
chmod 0700 private
chmod 0640 docs/todo.md

# Symlinks: relative, into the tree, and dangling.
ln -s ../docs/todo.md src/todo-link.md
ln -s letters/2025 docs/current
ln -s does-not-exist docs/dangling

# Fixed modification times (files first, then directories, deepest last).
find . -mindepth 1 ! -type l ! -type d -exec touch -h -d '2024-05-17 12:34:56.123456789' {} +
find . -mindepth 1 -type l -exec touch -h -d '2023-01-02 03:04:05' {} +
find . -depth -type d -exec touch -d '2024-06-01 08:00:00' {} +
