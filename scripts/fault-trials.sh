#!/usr/bin/env bash
# Fault trials: kill -9 simgate at a random moment during a CT-simulator upload with forwarding
# to a DCMTK storescp "TPS" (every third trial kills the TPS too), restart, drain, and count:
# acknowledged, stored, delivered, lost (must be 0), duplicates (allowed: at least once),
# out-of-order within a series (must be 0). Exits non-zero if anything was lost or reordered.
#
# Usage: scripts/fault-trials.sh
# Environment (all optional):
#   TRIALS=20            number of trials
#   TRIALS_SEED=N        seed of the kill moments (default: the time; printed)
#   TRIALS_DIR=target/fault-trials   where the upload and each trial's files go
#   TRIALS_KEEP=1        keep every trial's data (default: only of failing trials)
#   BENCH_SKIP_BUILD=1   use the binaries as built (SIMGATE_BIN, SIMGATE_GEN_BIN)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v storescu >/dev/null || { apt-get update -qq && apt-get install -y -qq dcmtk >/dev/null; }
release="${CARGO_TARGET_DIR:-target}/release"
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    cargo build --release --workspace --bins --locked
fi
export SIMGATE_BIN="${SIMGATE_BIN:-$release/simgate}"
export SIMGATE_GEN_BIN="${SIMGATE_GEN_BIN:-$release/simgate-gen}"
exec python3 scripts/fault_trials.py
