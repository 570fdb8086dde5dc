#!/usr/bin/env bash
# Receive-speed benchmark: simgate (durability "fsync" and "os") against DCMTK storescp, measured
# in the same run on the same machine and filesystem, so the ratio means something even where the
# absolute figures do not travel.
#
# Workload: one CT-simulator upload, 1400 slices of 512x512 (~736 MB): planning CT 200, ten 4D
# phases of 100, AVG 100, MIP 100, generated once by simgate-gen and cached. Each target receives it
# from DCMTK storescu over loopback, once in one association and once split over 4 storescu
# processes at the same time, REPS times, alternating targets so slow drift hits all of them alike.
#
# Usage: scripts/bench.sh
# Environment (all optional):
#   BENCH_REPS=3                       repetitions per target and mode; medians are reported
#   BENCH_TARGETS="simgate-fsync simgate-os storescp storescp-ignore orthanc"
#                                      also baseline-fsync baseline-os: SIMGATE_BASELINE_BIN (an
#                                      older build) in the same alternation, for before/after;
#                                      orthanc is skipped, with one log line, when the Orthanc
#                                      binary is not installed (Debian package orthanc)
#   SIMGATE_BASELINE_BIN               the simgate binary of the baseline-* targets
#   BENCH_MODES="1 4"                  numbers of storescu processes sending at once
#   BENCH_DIR=target                   where bench-data/, bench-run/ and bench-results.md go
#   BENCH_SKIP_BUILD=1                 do not run cargo; use the binaries as they are
#   SIMGATE_BIN, SIMGATE_GEN_BIN       binaries (default: ${CARGO_TARGET_DIR:-target}/release/...)
#   BENCH_SEND_TIMEOUT=900             seconds before a hung storescu is killed
#   BENCH_PROXY=1                      also measure store-and-forward to a storescp sink (0: skip)
#   BENCH_QUERY_STUDIES=100000         studies in the index the query latency is measured on
#                                      (seeded once with simgate-seed, 20 instances each; 0: skip)
#   SIMGATE_SEED_BIN                   the seeder (default: .../release/simgate-seed)
# Targets: simgate-fsync simgate-os baseline-fsync baseline-os storescp (to disk, no fsync)
# storescp-ignore (receives and discards: the protocol ceiling) orthanc (Orthanc, fsync per file).
set -euo pipefail
# Decimal points and numeric sorting as the awk and printf calls below expect them.
export LC_ALL=C
# As a service runs: with RUST_BACKTRACE set, every error value a library builds and drops
# (dicom-object reports a missing attribute or the end of a header that way) captures a
# backtrace, which a profile showed costing simgate a few per cent.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly REPS="${BENCH_REPS:-3}"
# Not readonly: main drops orthanc when Orthanc is not installed.
TARGETS="${BENCH_TARGETS:-simgate-fsync simgate-os storescp storescp-ignore orthanc}"
readonly MODES="${BENCH_MODES:-1 4}"
readonly SEND_TIMEOUT="${BENCH_SEND_TIMEOUT:-900}"
BENCH_DIR="$(mkdir -p "${BENCH_DIR:-target}" && cd "${BENCH_DIR:-target}" && pwd)"
readonly BENCH_DIR
readonly RELEASE_DIR="${CARGO_TARGET_DIR:-target}/release"
readonly SIMGATE_BIN="${SIMGATE_BIN:-$RELEASE_DIR/simgate}"
readonly SIMGATE_GEN_BIN="${SIMGATE_GEN_BIN:-$RELEASE_DIR/simgate-gen}"
readonly SIMGATE_BASELINE_BIN="${SIMGATE_BASELINE_BIN:-}"
readonly SIMGATE_SEED_BIN="${SIMGATE_SEED_BIN:-$RELEASE_DIR/simgate-seed}"
readonly QUERY_STUDIES="${BENCH_QUERY_STUDIES:-100000}"
readonly QUERY_TSV="$BENCH_DIR/bench-run/query.tsv"

# The upload, spelled out here rather than left to simgate-gen's defaults so the cache check and
# the expected counts cannot drift apart.
readonly PLANNING_SLICES=200 PHASES=10 PHASE_SLICES=100 SEED=1
readonly EXPECTED_FILES=$((PLANNING_SLICES + PHASES * PHASE_SLICES + 2 * PHASE_SLICES))
readonly DATA_DIR="$BENCH_DIR/bench-data/ct-sim-upload"
readonly RUN_ROOT="$BENCH_DIR/bench-run"
readonly RESULTS_TSV="$RUN_ROOT/results.tsv"
readonly RESULTS_MD="$BENCH_DIR/bench-results.md"
readonly PROXY_TSV="$RUN_ROOT/proxy.tsv"

# Calling AE of every storescu; the called AE differs per target.
readonly CALLING_AE=CTSIM

FILES=()         # the upload, sorted by name, which is sending order
DATA_BYTES=0     # their total size
SERVER_PID=""    # the receiver currently running, stopped on any exit
LAST_SECONDS=""  # wall-clock seconds of the last send_all

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# Whatever happens, do not leave a receiver listening behind us.
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

now() { date +%s.%N; }

# A port nobody listens on right now: bind port 0 and let the kernel choose.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

ensure_dcmtk() {
    if ! command -v storescu >/dev/null; then
        log "installing dcmtk"
        apt-get install -y dcmtk >/dev/null
    fi
}

build() {
    if [[ ${BENCH_SKIP_BUILD:-0} == 1 ]]; then
        log "BENCH_SKIP_BUILD=1: using $SIMGATE_BIN and $SIMGATE_GEN_BIN as built"
    else
        cargo build --release --workspace --bins
    fi
}

count_files() { # dir [name pattern]
    find "$1" -type f -name "${2:-*}" | wc -l
}

# Generate the upload once; a cache with the wrong number of files (an interrupted run, an older
# layout) is thrown away and regenerated.
ensure_data() {
    if [[ -d $DATA_DIR ]] && (($(count_files "$DATA_DIR" '*.dcm') == EXPECTED_FILES)); then
        log "reusing $DATA_DIR"
    else
        rm -rf -- "$DATA_DIR"
        log "generating the upload into $DATA_DIR"
        "$SIMGATE_GEN_BIN" ct-sim-upload --out "$DATA_DIR" --planning-slices "$PLANNING_SLICES" \
            --phases "$PHASES" --phase-slices "$PHASE_SLICES" --seed "$SEED" >&2
    fi
    mapfile -t FILES < <(find "$DATA_DIR" -maxdepth 1 -type f -name '*.dcm' | sort)
    ((${#FILES[@]} == EXPECTED_FILES)) || die "expected $EXPECTED_FILES files in $DATA_DIR, found ${#FILES[@]}"
    DATA_BYTES=$(stat -c %s -- "${FILES[@]}" | awk '{ sum += $1 } END { print sum }')
    # Read the files once so that every leg, the first included, sends from the page cache.
    cat -- "${FILES[@]}" >/dev/null
}

# Poll with C-ECHO until the receiver answers (30 s at most), failing early if it died.
wait_for_echo() { # called_ae port pid log
    local deadline=$((SECONDS + 30))
    until TCP_NODELAY=1 echoscu -aet "$CALLING_AE" -aec "$1" -to 2 127.0.0.1 "$2" >/dev/null 2>&1; do
        if ! kill -0 "$3" 2>/dev/null; then
            tail -n 20 "$4" >&2 || true
            die "$1 exited before accepting associations (log: $4)"
        fi
        ((SECONDS < deadline)) || die "$1 did not answer C-ECHO on port $2 within 30 s (log: $4)"
        sleep 0.1
    done
}

# Send the whole upload with `senders` storescu processes at once, each taking a contiguous
# quarter (or whole) of the sorted list so that series stay in order within an association.
# Sets LAST_SECONDS to the wall-clock time from the first start to the last exit.
send_all() { # called_ae port senders log_dir
    local called_ae=$1 port=$2 senders=$3 log_dir=$4
    local total=${#FILES[@]}
    local per_sender=$(((total + senders - 1) / senders))
    local -a pids=()
    local i start end failed=0

    start=$(now)
    for ((i = 0; i < senders; i++)); do
        # TCP_NODELAY=1: DCMTK leaves Nagle on otherwise, and every image then waits ~45 ms.
        TCP_NODELAY=1 timeout "$SEND_TIMEOUT" storescu -aet "$CALLING_AE" -aec "$called_ae" \
            127.0.0.1 "$port" "${FILES[@]:i*per_sender:per_sender}" >"$log_dir/storescu-$i.log" 2>&1 &
        pids+=("$!")
    done
    for i in "${!pids[@]}"; do
        if ! wait "${pids[$i]}"; then
            log "storescu $i failed; last lines of $log_dir/storescu-$i.log:"
            tail -n 5 "$log_dir/storescu-$i.log" >&2 || true
            failed=1
        fi
    done
    end=$(now)
    ((failed == 0)) || die "sending to $called_ae failed"
    LAST_SECONDS=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }')
}

# Peak resident set size of a running process, in KiB (VmHWM: the high-water mark).
peak_rss_kb() { # pid
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

is_running() { # pid: alive and not a zombie waiting to be reaped
    local state
    state=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

# SIGTERM, then wait up to 30 s for a clean exit; a receiver that ignores SIGTERM is a finding.
stop_server() { # pid name
    local pid=$1 name=$2 status=0
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while is_running "$pid"; do
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            die "$name did not exit within 30 s of SIGTERM"
        fi
        sleep 0.1
    done
    wait "$pid" || status=$?
    SERVER_PID=""
    # 143 = killed by the SIGTERM itself (storescp has no handler); anything else is worth a look.
    if ((status != 0 && status != 143)); then
        log "warning: $name exited with status $status after SIGTERM"
    fi
}

expect_received() { # dir name-pattern what
    local received
    received=$(count_files "$1" "$2")
    ((received == EXPECTED_FILES)) || die "$3 holds $received files matching $2, expected $EXPECTED_FILES"
}

record() { # target senders rep seconds peak_rss_kb
    printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS_TSV"
    log "$(printf '%-14s x%s rep %s: %7.2f s, %6.1f images/s' "$1" "$2" "$3" "$4" \
        "$(awk -v n="$EXPECTED_FILES" -v s="$4" 'BEGIN { print n / s }')")"
}

# Received files are deleted after each leg (6 legs x 736 MB per repetition add up), and written
# back first: otherwise one leg's dirty pages would be flushed during the next leg's timing.
finish_leg() { # received_dir
    sync
    rm -rf -- "$1"
    sync
}

# Writes leg_dir/simgate.toml (HTTP off, the given port, storage and durability, then any extra
# TOML), starts simgate with it in the background (SERVER_PID) and waits until it answers C-ECHO.
start_simgate() { # leg_dir port storage durability [extra_toml] [binary]
    local leg_dir=$1 port=$2 storage=$3 durability=$4 extra=${5:-} binary=${6:-$SIMGATE_BIN}
    cat >"$leg_dir/simgate.toml" <<EOF
[http]
bind = "off"

[listener]
ae_title = "SIMGATE"
bind = "127.0.0.1:$port"

[storage]
dir = "$storage"
durability = "$durability"
reserve_free_bytes = "0 B"
$extra
EOF
    "$binary" serve --config "$leg_dir/simgate.toml" >"$leg_dir/simgate.log" 2>&1 &
    SERVER_PID=$!
    wait_for_echo SIMGATE "$port" "$SERVER_PID" "$leg_dir/simgate.log"
}

run_simgate() { # durability rep senders [name binary]
    local durability=$1 rep=$2 senders=$3 name=${4:-simgate} binary=${5:-$SIMGATE_BIN}
    local leg_dir="$RUN_ROOT/$name-$durability-x$senders-r$rep"
    local storage="$leg_dir/storage"
    mkdir -p "$storage"
    local port
    port=$(free_port)
    start_simgate "$leg_dir" "$port" "$storage" "$durability" "" "$binary"

    send_all SIMGATE "$port" "$senders" "$leg_dir"
    # simgate answers success only once an instance is stored, so the files are there already.
    local rss_kb
    rss_kb=$(peak_rss_kb "$SERVER_PID")
    stop_server "$SERVER_PID" "simgate ($leg_dir/simgate.log)"
    expect_received "$storage" '*.dcm' "simgate's storage ($storage)"
    record "$name-$durability" "$senders" "$rep" "$LAST_SECONDS" "$rss_kb"
    finish_leg "$storage"
}

run_storescp() { # rep senders [ignore]
    local rep=$1 senders=$2 ignore=${3:-}
    local name=storescp${ignore:+-ignore}
    local leg_dir="$RUN_ROOT/$name-x$senders-r$rep"
    local received="$leg_dir/received"
    mkdir -p "$received"
    local port
    port=$(free_port)
    # --fork: one process per association, as a DCMTK-based destination is deployed; without it
    # storescp serves associations one after another and the 4-sender figure would measure queueing.
    # +xa: accept every transfer syntax; -pm: any SOP class. storescp never fsyncs.
    # --ignore: receive every data set and discard it, the protocol ceiling of this machine.
    TCP_NODELAY=1 storescp --fork ${ignore:+--ignore} -od "$received" +xa -pm -aet STORESCP "$port" >"$leg_dir/storescp.log" 2>&1 &
    SERVER_PID=$!
    wait_for_echo STORESCP "$port" "$SERVER_PID" "$leg_dir/storescp.log"

    send_all STORESCP "$port" "$senders" "$leg_dir"
    # Forked children answer each C-STORE after writing the file, so counting now is safe. Stop
    # any child still finishing its release, by its own PID, then the listener.
    local child
    for child in $(pgrep -P "$SERVER_PID" || true); do
        kill -TERM "$child" 2>/dev/null || true
    done
    stop_server "$SERVER_PID" storescp
    if [[ -z $ignore ]]; then
        expect_received "$received" '*' "storescp's output directory ($received)"
    fi
    record "$name" "$senders" "$rep" "$LAST_SECONDS" 0
    finish_leg "$received"
}

# Orthanc as a plain process (not the Debian service) on a configuration generated per leg: its
# own storage and index under the leg, the chosen port, HTTP off, no Lua, no plugins.
# "SyncStorageArea": true is Orthanc's fsync after each file written (its default since 1.7.4),
# the setting the issue's reference figure was measured with: compare this row with
# simgate-fsync. Any calling AE may echo and store and the called AE is not checked, so
# storescu's CTSIM need not be declared. DicomThreadsCount (DICOM operations served at once, 4
# by default) is at least one per sender, so the 4-association legs do not queue behind it.
# StableAge: no study turns stable during a leg. ConcurrentJobs is left at its default.
run_orthanc() { # rep senders
    local rep=$1 senders=$2
    local leg_dir="$RUN_ROOT/orthanc-x$senders-r$rep"
    local storage="$leg_dir/storage" index="$leg_dir/index"
    mkdir -p "$storage" "$index"
    local port
    port=$(free_port)
    cat >"$leg_dir/orthanc.json" <<EOF
{
  "Name": "simgate-bench",
  "StorageDirectory": "$storage",
  "IndexDirectory": "$index",
  "StorageCompression": false,
  "SyncStorageArea": true,
  "HttpServerEnabled": false,
  "DicomServerEnabled": true,
  "DicomAet": "ORTHANC",
  "DicomPort": $port,
  "DicomCheckCalledAet": false,
  "DicomAlwaysAllowEcho": true,
  "DicomAlwaysAllowStore": true,
  "DicomThreadsCount": $((senders > 4 ? senders : 4)),
  "StableAge": 3600,
  "LuaScripts": [],
  "Plugins": []
}
EOF
    TCP_NODELAY=1 Orthanc "$leg_dir/orthanc.json" >"$leg_dir/orthanc.log" 2>&1 &
    SERVER_PID=$!
    wait_for_echo ORTHANC "$port" "$SERVER_PID" "$leg_dir/orthanc.log"

    send_all ORTHANC "$port" "$senders" "$leg_dir"
    # Orthanc answers each C-STORE once the file is written and indexed; it keeps one file per
    # instance (no compression), so the storage can be counted like the others.
    stop_server "$SERVER_PID" "Orthanc ($leg_dir/orthanc.log)"
    expect_received "$storage" '*' "Orthanc's storage ($storage)"
    record orthanc "$senders" "$rep" "$LAST_SECONDS" 0
    finish_leg "$storage"
    finish_leg "$index"
}

# Store-and-forward: simgate (fsync) forwarding to a storescp sink while the upload arrives.
# Measures the upload time, the lag from the end of the upload to the last instance accepted
# by the sink (simgate's queue shows it sent), and the end-to-end rate.
run_proxy() { # rep
    local rep=$1
    local leg_dir="$RUN_ROOT/proxy-r$rep"
    local storage="$leg_dir/storage" sink="$leg_dir/sink"
    mkdir -p "$storage" "$sink"
    local port sink_port
    port=$(free_port)
    sink_port=$(free_port)
    TCP_NODELAY=1 storescp --fork -od "$sink" +xa -pm -aet SINK "$sink_port" >"$leg_dir/storescp.log" 2>&1 &
    local sink_pid=$!
    wait_for_echo SINK "$sink_port" "$sink_pid" "$leg_dir/storescp.log"
    start_simgate "$leg_dir" "$port" "$storage" fsync "
[[destinations]]
name = \"sink\"
ae_title = \"SINK\"
address = \"127.0.0.1:$sink_port\""

    local start upload_end last
    start=$(now)
    send_all SIMGATE "$port" 1 "$leg_dir"
    upload_end=$(now)
    local deadline=$((SECONDS + SEND_TIMEOUT))
    # The whole answer is read before matching: `grep -q` quitting early would SIGPIPE the
    # writer, and under pipefail that reads as "not yet".
    until [[ $("$SIMGATE_BIN" queue --json --config "$leg_dir/simgate.toml" 2>/dev/null) == *"\"sent\": $EXPECTED_FILES"* ]]; do
        ((SECONDS < deadline)) || die "the sink did not get everything (log: $leg_dir/simgate.log)"
        sleep 0.05
    done
    last=$(now)
    local rss_kb
    rss_kb=$(peak_rss_kb "$SERVER_PID")
    stop_server "$SERVER_PID" "simgate ($leg_dir/simgate.log)"
    local child
    for child in $(pgrep -P "$sink_pid" || true); do
        kill -TERM "$child" 2>/dev/null || true
    done
    kill -TERM "$sink_pid" 2>/dev/null || true
    wait "$sink_pid" 2>/dev/null || true
    expect_received "$sink" '*' "the sink ($sink)"
    awk -v s="$start" -v u="$upload_end" -v l="$last" -v r="$rep" -v k="$rss_kb" \
        'BEGIN { printf "%s\t%.3f\t%.3f\t%.3f\t%s\n", r, u - s, l - u, l - s, k }' >>"$PROXY_TSV"
    log "$(awk -v s="$start" -v u="$upload_end" -v l="$last" -v n="$EXPECTED_FILES" -v r="$rep" \
        'BEGIN { printf "proxy rep %s: upload %.2f s, last instance at the sink %.2f s later, end to end %.1f images/s", r, u - s, l - u, n / (l - s) }')"
    finish_leg "$storage"
    finish_leg "$sink"
}

# Query latency: an index of QUERY_STUDIES studies, seeded once through the store's own code
# and cached; simgate serves it (HTTP on) and the needs-reason list is timed through the API
# (curl) and the CLI (a whole process, as a person runs it).
run_queries() {
    local index_dir="$BENCH_DIR/bench-data/index-$QUERY_STUDIES"
    # The seeder's format: an index seeded by an older one (e.g. series left unchecked, so the
    # gateway would check 200,000 series beside the queries) is seeded again.
    local seed_format="$QUERY_STUDIES studies, series checked"
    if [[ ! -s $index_dir/done || $(<"$index_dir/done") != "$seed_format" ]]; then
        [[ -x $SIMGATE_SEED_BIN ]] || die "no simgate-seed at $SIMGATE_SEED_BIN"
        rm -rf -- "$index_dir"
        log "seeding $QUERY_STUDIES studies into $index_dir (once)"
        "$SIMGATE_SEED_BIN" --dir "$index_dir" --studies "$QUERY_STUDIES" || die "seeding failed"
        echo "$seed_format" >"$index_dir/done"
    fi
    local leg_dir="$RUN_ROOT/query"
    mkdir -p "$leg_dir"
    local port http_port
    port=$(free_port)
    http_port=$(free_port)
    start_simgate "$leg_dir" "$port" "$index_dir" os ""
    # The shared helper writes bind = "off": this leg needs the pages.
    stop_server "$SERVER_PID" "simgate ($leg_dir/simgate.log)"
    sed -i "s/^bind = \"off\"/bind = \"127.0.0.1:$http_port\"/" "$leg_dir/simgate.toml"
    "$SIMGATE_BIN" serve --config "$leg_dir/simgate.toml" >"$leg_dir/simgate.log" 2>&1 &
    SERVER_PID=$!
    wait_for_echo SIMGATE "$port" "$SERVER_PID" "$leg_dir/simgate.log"
    : >"$QUERY_TSV"
    local i seconds start
    for ((i = 0; i < 20; i++)); do
        seconds=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$http_port/api/studies?status=needs-reason")
        printf 'api-needs-reason\t%s\n' "$seconds" >>"$QUERY_TSV"
        seconds=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$http_port/worklist?status=needs-reason")
        printf 'api-worklist-page\t%s\n' "$seconds" >>"$QUERY_TSV"
    done
    for ((i = 0; i < 10; i++)); do
        start=$(now)
        "$SIMGATE_BIN" studies --status needs-reason --json --config "$leg_dir/simgate.toml" >/dev/null
        awk -v s="$start" -v e="$(now)" 'BEGIN { printf "cli-needs-reason\t%.4f\n", e - s }' >>"$QUERY_TSV"
    done
    stop_server "$SERVER_PID" "simgate ($leg_dir/simgate.log)"
    log "query latency measured on $QUERY_STUDIES studies"
}

run_leg() { # target rep senders
    case $1 in
    simgate-fsync) run_simgate fsync "$2" "$3" ;;
    simgate-os) run_simgate os "$2" "$3" ;;
    baseline-fsync) run_simgate fsync "$2" "$3" baseline "$SIMGATE_BASELINE_BIN" ;;
    baseline-os) run_simgate os "$2" "$3" baseline "$SIMGATE_BASELINE_BIN" ;;
    storescp) run_storescp "$2" "$3" ;;
    storescp-ignore) run_storescp "$2" "$3" ignore ;;
    orthanc) run_orthanc "$2" "$3" ;;
    *) die "unknown target $1 (known: simgate-fsync simgate-os baseline-fsync baseline-os storescp storescp-ignore orthanc)" ;;
    esac
}

# The first line of `storescu --version`. Not `| head -n 1`: head exits after one line, storescu
# may then die of SIGPIPE, and under pipefail the assignment fails the script (exit 141).
dcmtk_version() {
    local text
    text=$(storescu --version 2>&1)
    echo "${text%%$'\n'*}"
}

# The first line of `Orthanc --version` ("Orthanc 1.10.1"), read whole for the same reason.
orthanc_version() {
    local text
    text=$(Orthanc --version 2>&1)
    echo "${text%%$'\n'*}"
}

median() { # numbers on stdin
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

median_seconds() { # target senders
    awk -F'\t' -v t="$1" -v m="$2" '$1 == t && $2 == m { print $4 }' "$RESULTS_TSV" | median
}

max_rss_kb() { # target senders
    awk -F'\t' -v t="$1" -v m="$2" '$1 == t && $2 == m && $5 > max { max = $5 } END { print max + 0 }' "$RESULTS_TSV"
}

target_label() {
    case $1 in
    simgate-fsync) echo 'simgate, durability "fsync"' ;;
    simgate-os) echo 'simgate, durability "os"' ;;
    baseline-fsync) echo 'baseline simgate, durability "fsync"' ;;
    baseline-os) echo 'baseline simgate, durability "os"' ;;
    storescp) echo 'DCMTK storescp --fork (no fsync)' ;;
    storescp-ignore) echo 'DCMTK storescp --fork --ignore (protocol ceiling)' ;;
    orthanc) echo 'Orthanc, SyncStorageArea (fsync)' ;;
    esac
}

summarize() {
    local dcmtk_version
    dcmtk_version=$(dcmtk_version)
    {
        echo "# simgate receive benchmark"
        echo
        echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)"
        echo "- machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr)"
        echo "- filesystem of the receivers: $(df -T "$RUN_ROOT" | awk 'NR == 2 { print $2 " on " $1 }')"
        echo "- DCMTK: $dcmtk_version"
        if [[ " $TARGETS " == *" orthanc "* ]]; then
            echo "- Orthanc: $(orthanc_version), SQLite index, no plugins, no compression"
        fi
        echo "- workload: $EXPECTED_FILES CT slices 512x512, $((DATA_BYTES / 1000000)) MB, Explicit VR LE, loopback, TCP_NODELAY=1"
        echo "- $REPS repetitions per row, targets alternating; median wall-clock time around storescu; MB = 10^6 bytes"
        echo
        echo "| receiver | associations | median s | images/s | MB/s | vs storescp | vs ceiling | peak RSS |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|"
        local senders target seconds images_per_s mb_per_s ratio ceiling_ratio rss reference ceiling
        for senders in $MODES; do
            reference="" ceiling=""
            if [[ " $TARGETS " == *" storescp "* ]]; then
                reference=$(median_seconds storescp "$senders")
            fi
            if [[ " $TARGETS " == *" storescp-ignore "* ]]; then
                ceiling=$(median_seconds storescp-ignore "$senders")
            fi
            for target in $TARGETS; do
                seconds=$(median_seconds "$target" "$senders")
                images_per_s=$(awk -v n="$EXPECTED_FILES" -v s="$seconds" 'BEGIN { printf "%.0f", n / s }')
                mb_per_s=$(awk -v b="$DATA_BYTES" -v s="$seconds" 'BEGIN { printf "%.0f", b / s / 1e6 }')
                # Same images either way, so the ratio of rates is the inverse ratio of times.
                if [[ $target == storescp* || -z $reference ]]; then
                    ratio="—"
                else
                    ratio=$(awk -v r="$reference" -v s="$seconds" 'BEGIN { printf "%.2fx", r / s }')
                fi
                if [[ $target == storescp-ignore || -z $ceiling ]]; then
                    ceiling_ratio="—"
                else
                    ceiling_ratio=$(awk -v r="$ceiling" -v s="$seconds" 'BEGIN { printf "%.2fx", r / s }')
                fi
                if [[ $target == storescp* || $target == orthanc ]]; then
                    rss="—"
                else
                    rss="$(($(max_rss_kb "$target" "$senders") / 1024)) MiB"
                fi
                printf '| %s | %s | %.2f | %s | %s | %s | %s | %s |\n' "$(target_label "$target")" "$senders" \
                    "$seconds" "$images_per_s" "$mb_per_s" "$ratio" "$ceiling_ratio" "$rss"
            done
        done
        echo
        echo "Peak RSS is simgate's VmHWM read just before SIGTERM, the highest over the repetitions."
        if [[ -s $PROXY_TSV ]]; then
            echo
            echo "Store-and-forward: simgate (fsync) forwarding to a storescp sink during one upload association."
            echo "Lag: from the end of the upload to the last instance accepted by the sink."
            echo
            echo "| median upload s | median lag s | end-to-end images/s | peak RSS |"
            echo "|---:|---:|---:|---:|"
            local upload lag total
            upload=$(cut -f2 "$PROXY_TSV" | median)
            lag=$(cut -f3 "$PROXY_TSV" | median)
            total=$(cut -f4 "$PROXY_TSV" | median)
            printf '| %.2f | %.2f | %.0f | %s MiB |\n' "$upload" "$lag" \
                "$(awk -v n="$EXPECTED_FILES" -v t="$total" 'BEGIN { print n / t }')" \
                "$(($(cut -f5 "$PROXY_TSV" | sort -g | tail -n 1) / 1024))"
            if [[ " $TARGETS " == *" simgate-fsync "* && " $MODES " == *" 1 "* ]]; then
                local alone
                alone=$(median_seconds simgate-fsync 1)
                echo
                awk -v u="$upload" -v a="$alone" 'BEGIN { printf "Ingest with forwarding on: %.2f s against %.2f s without (fsync, 1 association): %+.0f %%.\n", u, a, (u / a - 1) * 100 }'
            fi
        fi
        if [[ -s $QUERY_TSV ]]; then
            echo
            echo "Query latency on an index of $QUERY_STUDIES studies ($((QUERY_STUDIES * 20)) instances, seeded through the store's code), median of the runs:"
            echo
            echo "| query | runs | median ms | max ms |"
            echo "|---|---:|---:|---:|"
            local what
            for what in api-needs-reason api-worklist-page cli-needs-reason; do
                awk -F'\t' -v w="$what" '$1 == w { print $2 * 1000 }' "$QUERY_TSV" | median >/dev/null 2>&1 || continue
                printf '| %s | %s | %.1f | %.1f |\n' "$what" \
                    "$(awk -F'\t' -v w="$what" '$1 == w' "$QUERY_TSV" | wc -l)" \
                    "$(awk -F'\t' -v w="$what" '$1 == w { print $2 * 1000 }' "$QUERY_TSV" | median)" \
                    "$(awk -F'\t' -v w="$what" '$1 == w && $2 > m { m = $2 } END { print m * 1000 }' "$QUERY_TSV")"
            done
        fi
    } | tee "$RESULTS_MD"
}

main() {
    ensure_dcmtk
    build
    [[ -x $SIMGATE_GEN_BIN ]] || die "no simgate-gen at $SIMGATE_GEN_BIN"
    if [[ " $TARGETS " == *" simgate-"* ]]; then
        [[ -x $SIMGATE_BIN ]] || die "no simgate at $SIMGATE_BIN"
    fi
    if [[ " $TARGETS " == *" baseline-"* ]]; then
        [[ -x $SIMGATE_BASELINE_BIN ]] || die "baseline targets need SIMGATE_BASELINE_BIN (got ${SIMGATE_BASELINE_BIN:-nothing})"
    fi
    # Orthanc is optional and never installed by this script: without it, its row is left out.
    if [[ " $TARGETS " == *" orthanc "* ]] && ! command -v Orthanc >/dev/null; then
        log "Orthanc is not installed (no Orthanc on PATH; Debian package orthanc): skipping the orthanc target"
        local kept="" t
        for t in $TARGETS; do
            [[ $t == orthanc ]] || kept+="${kept:+ }$t"
        done
        TARGETS=$kept
    fi
    readonly TARGETS
    ensure_data
    log "$(dcmtk_version); $(nproc) CPUs; ${#FILES[@]} files, $DATA_BYTES bytes"

    rm -rf -- "$RUN_ROOT"
    mkdir -p "$RUN_ROOT"
    : >"$RESULTS_TSV"
    : >"$PROXY_TSV"
    local rep senders target
    for ((rep = 1; rep <= REPS; rep++)); do
        for senders in $MODES; do
            for target in $TARGETS; do
                run_leg "$target" "$rep" "$senders"
            done
        done
        if [[ ${BENCH_PROXY:-1} == 1 ]]; then
            run_proxy "$rep"
        fi
    done
    if ((QUERY_STUDIES > 0)); then
        run_queries
    fi
    summarize
    log "results in $RESULTS_MD, logs and configs under $RUN_ROOT"
}

main "$@"
