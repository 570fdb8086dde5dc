#!/usr/bin/env bash
# Runs every test of simgate on a fresh Debian machine: installs what the tests drive (DCMTK;
# Chromium and its WebDriver for the browser test), then formatting, lints and the whole test
# suite (unit tests and the integration tests that run the real binary against DCMTK's storescu,
# echoscu and storescp, and headless Chromium, over loopback).
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
for tool in storescu echoscu storescp dcmcjpeg dcmodify; do
  command -v "$tool" >/dev/null 2>&1 || { need_packages+=(dcmtk); break; }
done
# tests/it/browser.rs starts these exact paths (Debian's packages).
[ -x /usr/bin/chromium ] || need_packages+=(chromium)
[ -x /usr/bin/chromedriver ] || need_packages+=(chromium-driver)
# The TLS tests make their certificates with openssl; the browser trusts their CA through an
# NSS database made with certutil.
command -v openssl >/dev/null 2>&1 || need_packages+=(openssl)
command -v certutil >/dev/null 2>&1 || need_packages+=(libnss3-tools)
# The WebDriver client (fantoccini) links the system OpenSSL.
command -v pkg-config >/dev/null 2>&1 || need_packages+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need_packages+=(libssl-dev)
# Display time zones come from the system's zone database.
[ -e /usr/share/zoneinfo/Europe/Paris ] || need_packages+=(tzdata)
if [ ${#need_packages[@]} -gt 0 ]; then
  echo "==> installing ${need_packages[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

# pydicom's sample files (and pynetdicom, the Storage Commitment peer) in a venv of our own.
pyenv="$(pwd)/target/pyenv"
if ! "$pyenv/bin/python" -c "import pydicom, pynetdicom" >/dev/null 2>&1; then
  echo "==> installing pydicom and pynetdicom into $pyenv"
  python3 -m venv "$pyenv"
  "$pyenv/bin/pip" install --quiet pydicom pynetdicom
fi
export SIMGATE_PYTHON="$pyenv/bin/python"

# A full disk fails a build with "No space left on device" deep in rustc's output: say it first.
free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
echo "==> $((free_kib / 1024 / 1024)) GiB free where the build writes"
if [ "$free_kib" -lt $((8 * 1024 * 1024)) ]; then
  echo "warning: less than 8 GiB free; a clean build and the tests need about 8 GiB" >&2
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Smoke runs of the long scripts (abuse.sh fails if any DICOM operation failed under attack) (their figures mean nothing on a debug build; the full runs are
# `scripts/fault-trials.sh` and `scripts/bench.sh`, reported in the README).
debug="${CARGO_TARGET_DIR:-target}/debug"
echo "==> smoke: fault trials and benchmark on the debug build"
cargo build --workspace --bins --locked
export BENCH_SKIP_BUILD=1 SIMGATE_BIN="$debug/simgate" SIMGATE_GEN_BIN="$debug/simgate-gen" SIMGATE_SEED_BIN="$debug/simgate-seed"
TRIALS=2 TRIALS_DIR="${CARGO_TARGET_DIR:-target}/smoke/fault-trials" scripts/fault-trials.sh
BENCH_REPS=1 BENCH_MODES=1 BENCH_QUERY_STUDIES=300 BENCH_DIR="${CARGO_TARGET_DIR:-target}/smoke" scripts/bench.sh >/dev/null
ABUSE_SECONDS=3 ABUSE_DIR="${CARGO_TARGET_DIR:-target}/smoke/abuse" scripts/abuse.sh >/dev/null
FUZZ_BIN="$debug/simgate-fuzz" FUZZ_RUNS=3000 scripts/fuzz.sh
# The Debian package, built from the debug binary (the release one is the same files; a release
# build would double this run), installed with dpkg, started as the unit says, C-ECHOed, purged.
echo "==> package: build, install, start, C-ECHO, stop, purge"
scripts/package.sh --profile dev >/dev/null 2>&1 || scripts/package.sh --profile dev
tarball=$(PROFILE=dev scripts/tarball.sh 2>/dev/null | tail -1)
unpacked="${CARGO_TARGET_DIR:-target}/tarball-check"
rm -rf "$unpacked" && mkdir -p "$unpacked" && tar -xzf "$tarball" -C "$unpacked"
tar -tzf "$tarball" | grep '/config/simgate.service$' >/dev/null
rm -rf "$unpacked"
if [ "$(id -u)" -eq 0 ]; then
  scripts/package-test.sh target/debian/simgate_*.deb
else
  sudo scripts/package-test.sh target/debian/simgate_*.deb
fi
echo "==> cargo test"
# Two at a time on this 2-core machine: the integration tests run real peers, browsers and
# gateways, and four at once starved the timing-sensitive ones (60 s peer deadlines).
cargo test --workspace --locked -- --test-threads="${SIMGATE_TEST_THREADS:-2}"
