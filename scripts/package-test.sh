#!/usr/bin/env bash
# Installs the Debian package on this machine and runs it as installed: under systemd when
# systemd is running, else the unit's own ExecStartPre/ExecStart lines as its user with its
# environment. C-ECHOes it, checks the data folder, stops it, and purges the package.
# Usage: scripts/package-test.sh target/debian/simgate_*.deb
set -euo pipefail
deb=${1:?the .deb to test}
unit=/lib/systemd/system/simgate.service
say() { echo "[package-test] $*"; }
cleanup() {
    [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
    dpkg --purge simgate >/dev/null 2>&1 || true
    rm -rf /var/lib/simgate
}
trap cleanup EXIT
if dpkg -s simgate >/dev/null 2>&1; then
    echo "package-test: simgate is installed here already; not touching it" >&2
    exit 1
fi

say "dpkg -i $deb"
dpkg -i "$deb" >/dev/null
for path in /usr/bin/simgate /etc/simgate/simgate.toml "$unit" /usr/share/doc/simgate/README.md; do
    [ -e "$path" ] || { echo "package-test: $path not installed" >&2; exit 1; }
done
getent passwd simgate >/dev/null || { echo "package-test: no simgate user" >&2; exit 1; }
[ "$(stat -c %U /var/lib/simgate)" = simgate ] || { echo "package-test: /var/lib/simgate not the simgate user's" >&2; exit 1; }
[ "$(stat -c %G:%a /etc/simgate/simgate.toml)" = simgate:640 ] || { echo "package-test: config mode" >&2; exit 1; }
command -v systemd-analyze >/dev/null 2>&1 && { systemd-analyze verify "$unit"; say "systemd-analyze verify: clean"; }

port=$(sed -n 's/^bind = "127.0.0.1:\([0-9]*\)"$/\1/p' /etc/simgate/simgate.toml | head -1)
if [ -d /run/systemd/system ]; then
    say "systemd is running: systemctl start simgate"
    systemctl start simgate
    systemctl is-active --quiet simgate
else
    say "no systemd here: running the unit's ExecStart as its user"
    env_line=$(sed -n 's/^Environment=//p' "$unit")
    pre=$(sed -n 's/^ExecStartPre=//p' "$unit")
    start=$(sed -n 's/^ExecStart=//p' "$unit")
    user=$(sed -n 's/^User=//p' "$unit")
    # setpriv execs the command itself (runuser would stay as its parent and re-raise SIGTERM).
    as_user=(setpriv --reuid="$user" --regid="$user" --init-groups env $env_line)
    "${as_user[@]}" $pre
    log_dir=$(mktemp -d)
    chmod 755 "$log_dir"
    "${as_user[@]}" $start >"$log_dir/log" 2>&1 &
    pid=$!
fi
for _ in $(seq 100); do
    echoscu -to 2 -aec SIMGATE 127.0.0.1 "$port" >/dev/null 2>&1 && break
    sleep 0.1
done
echoscu -aec SIMGATE 127.0.0.1 "$port"
say "C-ECHO on 127.0.0.1:$port: success"
[ -e /var/lib/simgate/simgate.db ] || { echo "package-test: no index in /var/lib/simgate" >&2; exit 1; }
[ "$(stat -c %U /var/lib/simgate/simgate.db)" = simgate ] || { echo "package-test: the index is not the simgate user's" >&2; exit 1; }
if [ -d /run/systemd/system ]; then
    systemctl stop simgate
else
    kill -TERM "$pid"
    wait "$pid"
    pid=""
    grep -q "stopped" "$log_dir/log" || { cat "$log_dir/log"; exit 1; }
    rm -rf "$log_dir"
fi
say "stopped cleanly; purging"
