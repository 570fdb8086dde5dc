#!/usr/bin/env bash
# Builds the Debian package: target/debian/simgate_<version>_<arch>.deb (cargo-deb; installed
# with `cargo install cargo-deb` when missing). The package's config is config/simgate.toml
# with the storage folder at /var/lib/simgate.
# Usage: scripts/package.sh [--profile dev]   (default: the release profile)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Pinned: the CI smoke builds with the dev profile, which later cargo-deb releases may refuse.
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --version 3.8.0 --locked
mkdir -p target/package
sed 's|^dir = "../data"$|dir = "/var/lib/simgate"|' config/simgate.toml >target/package/simgate.toml
grep -q '^dir = "/var/lib/simgate"$' target/package/simgate.toml \
    || { echo "package.sh: storage.dir not found in config/simgate.toml" >&2; exit 1; }
cargo deb --locked "$@"
