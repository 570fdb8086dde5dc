#!/usr/bin/env bash
# Mutation fuzzing of simgate's parsers (crates/simgate-fuzz), on the release build: every
# target from its seed corpus in fuzz/corpus/, FUZZ_RUNS executions each (default 1,000,000).
# Findings (panics, executions slower than a second) are written to fuzz/findings/ and the
# script fails; replay one with `simgate-fuzz TARGET --replay FILE`.
#
# Environment: FUZZ_RUNS=1000000, FUZZ_SEED=1, FUZZ_TARGET=all, FUZZ_BIN (default: built here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs="${FUZZ_RUNS:-1000000}"
bin="${FUZZ_BIN:-}"
if [[ -z $bin ]]; then
    cargo build --release -p simgate-fuzz --locked >&2
    bin="${CARGO_TARGET_DIR:-target}/release/simgate-fuzz"
fi
"$bin" "${FUZZ_TARGET:-all}" --runs "$runs" --seed "${FUZZ_SEED:-1}"
