#!/usr/bin/env bash
# Release tarball: target/simgate-<version>-<arch>-linux.tar.gz with the binary, config/ (the
# config, the systemd unit, the nomenclature files), README, CHANGELOG and the conformance
# statement. Builds the release binary first (PROFILE=dev: the debug one, for a quick check).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
profile=${PROFILE:-release}
cargo build --locked --bin simgate --profile "$profile"
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
name="simgate-$version-$(uname -m)-linux"
stage="target/tarball/$name"
rm -rf "$stage"
mkdir -p "$stage/config/nomenclature" "$stage/docs"
cp "target/$dir/simgate" "$stage/"
cp config/simgate.toml config/simgate.service "$stage/config/"
cp config/nomenclature/standard-names.csv config/nomenclature/series-rules.toml "$stage/config/nomenclature/"
cp README.md CHANGELOG.md "$stage/"
cp docs/conformance-statement.md "$stage/docs/"
tar -C target/tarball -czf "target/$name.tar.gz" "$name"
echo "target/$name.tar.gz"
