# bk: build, test, lint, generate docs and run the demo.
#
#   make demo    build release binaries and run demo/demo.sh (backup, verify,
#                restore and compare a sample tree with a throwaway gpg key)
#   make test    every test, including the slow ignored ones (what CI runs)
#   make lint    rustfmt --check and clippy with warnings as errors
#   make docs    regenerate man/ and completions/ from lib/cli/
#   make bench   compare bk with restic and borg (bench/run.sh; ~25 min, BENCH_SCALE=small for a quick run)

CARGO ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
RELEASE_BIN := $(TARGET_DIR)/release

.PHONY: all build release test s3-server test-fast lint fmt docs demo install help bench

all: build

help:
	@sed -n 's/^#   //p' Makefile

## Debug build of every program.
build:
	$(CARGO) build --bins

## Optimised build of every program (what the demo uses).
release:
	$(CARGO) build --release --bins

## All tests, including the slow #[ignore] ones (1 GiB files and the like).
## The S3 tests start a local moto_server (PyPI moto[server]), installed
## here with pip if it is missing.
test: s3-server
	$(CARGO) test --release -- --include-ignored

s3-server:
	@command -v moto_server >/dev/null || python3 -m pip install --quiet 'moto[server]>=5,<6'

## The quick tests only (debug build).
test-fast:
	$(CARGO) test

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Man pages and shell completions, generated from the clap definitions.
docs:
	$(CARGO) run --release --quiet --bin bk-gen-docs -- .

demo: release
	BK_BIN=$(abspath $(RELEASE_BIN)) demo/demo.sh

## Benchmark against restic and borg (issue 3); see bench/README.md.
bench:
	bench/run.sh

install:
	$(CARGO) install --path .
