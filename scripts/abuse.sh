#!/usr/bin/env bash
# Hostile load against simgate on loopback, while a simulator keeps working: C-ECHO and a
# 20-instance C-STORE are timed during each of
#   (a) 200 concurrent API clients with bad Bearer tokens,
#   (b) 200 concurrent wrong sign-ins (real form, CSRF cookie),
#   (c) 200 slowloris HTTP sockets,
#   (d) 64 silent DICOM sockets,
# with simgate's resident memory sampled throughout. Bounded: ABUSE_SECONDS per scenario.
# Prints one line per scenario (p50/p99 latencies, failures, peak RSS) and writes a table to
# $ABUSE_DIR/abuse-results.md. Targets: C-ECHO p99 <= 1 s and RSS < 200 MB in every case.
#
# Environment (all optional):
#   SIMGATE_BIN, SIMGATE_GEN_BIN   binaries (default: target/release/..., built if missing)
#   ABUSE_SECONDS=20               measuring time per scenario
#   ABUSE_DIR=target/abuse         configs, logs, results
#   ABUSE_SCENARIOS="bearer login slowloris silent"
set -euo pipefail
export LC_ALL=C
cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly SECONDS_EACH="${ABUSE_SECONDS:-20}"
readonly SCENARIOS="${ABUSE_SCENARIOS:-bearer login slowloris silent}"
ABUSE_DIR="$(mkdir -p "${ABUSE_DIR:-target/abuse}" && cd "${ABUSE_DIR:-target/abuse}" && pwd)"
readonly ABUSE_DIR
readonly SIMGATE_BIN="${SIMGATE_BIN:-target/release/simgate}"
readonly SIMGATE_GEN_BIN="${SIMGATE_GEN_BIN:-target/release/simgate-gen}"
PYTHON="${SIMGATE_PYTHON:-python3}"

log() { printf '[abuse] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ ! -x $SIMGATE_BIN || ! -x $SIMGATE_GEN_BIN ]]; then
    log "building the release binaries"
    cargo build --release --workspace --bins --locked >&2
fi
command -v echoscu >/dev/null || die "DCMTK is needed (apt-get install dcmtk)"

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

readonly DATA="$ABUSE_DIR/study"
if [[ ! -d $DATA ]]; then
    "$SIMGATE_GEN_BIN" planning-study --out "$DATA" --slices 17 --seed 11 >/dev/null
fi
mapfile -t FILES < <(find "$DATA" -name '*.dcm' | sort)
[[ ${#FILES[@]} -eq 20 ]] || die "expected 20 instances in $DATA, found ${#FILES[@]}"

DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
PASSWORD_HASH=$(echo 'a-long-password' | "$SIMGATE_BIN" user add curie --role physician | sed -n 's/^password_hash = "\(.*\)"$/\1/p')
rm -rf "$ABUSE_DIR/storage"
cat >"$ABUSE_DIR/simgate.toml" <<TOML
[listener]
ae_title = "SIMGATE"
bind = "127.0.0.1:$DICOM_PORT"

[storage]
dir = "$ABUSE_DIR/storage"
reserve_free_bytes = "0 B"

[http]
bind = "127.0.0.1:$HTTP_PORT"

[[http.users]]
name = "curie"
role = "physician"
password_hash = "$PASSWORD_HASH"
TOML
"$SIMGATE_BIN" serve --config "$ABUSE_DIR/simgate.toml" >"$ABUSE_DIR/simgate.log" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    echoscu -aet CTSIM -aec SIMGATE 127.0.0.1 "$DICOM_PORT" >/dev/null 2>&1 && break
    sleep 0.1
done

RESULTS="$ABUSE_DIR/results.jsonl"
: >"$RESULTS"
for scenario in $SCENARIOS; do
    clients=200
    [[ $scenario == silent ]] && clients=64
    log "$scenario: $clients clients, ${SECONDS_EACH}s"
    "$PYTHON" scripts/abuse.py "$scenario" --clients "$clients" --dicom-port "$DICOM_PORT" \
        --http-port "$HTTP_PORT" --pid "$PID" --seconds "$SECONDS_EACH" --files "${FILES[@]}" |
        tee -a "$RESULTS"
done
kill -0 "$PID" 2>/dev/null || die "simgate died (log: $ABUSE_DIR/simgate.log)"

"$PYTHON" - "$RESULTS" >"$ABUSE_DIR/abuse-results.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| attack | clients | C-ECHO p50 / p99 s | 20-instance C-STORE p50 / p99 s | DICOM failures | peak RSS MB |")
print("|---|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['scenario']} | {r['clients']} | {r['echo_p50_s']} / {r['echo_p99_s']} | {r['store20_p50_s']} / {r['store20_p99_s']} | {r['dicom_failures']} | {r['peak_rss_mb']} |")
PY
cat "$ABUSE_DIR/abuse-results.md"
# Every C-ECHO and C-STORE must have succeeded, whatever else was going on.
if grep -q '"dicom_failures": [1-9]' "$RESULTS"; then
    die "DICOM operations failed under attack (see $RESULTS)"
fi
