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
# The WebDriver client (fantoccini) links the system OpenSSL.
command -v pkg-config >/dev/null 2>&1 || need_packages+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need_packages+=(libssl-dev)
if [ ${#need_packages[@]} -gt 0 ]; then
  echo "==> installing ${need_packages[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked -- --test-threads="${SIMGATE_TEST_THREADS:-4}"
