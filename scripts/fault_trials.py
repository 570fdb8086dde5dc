#!/usr/bin/env python3
"""Fault trials: kill -9 simgate at a random moment during a CT-simulator upload with
forwarding on (in some trials the TPS is killed too), restart it, let the queue drain, and count
what became of every acknowledged instance.

One line per trial, then the totals. `lost` and `out-of-order` must be 0; duplicates are
allowed (delivery is at least once). Run through scripts/fault-trials.sh, which builds the
binaries; see there for the environment variables.
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIMGATE = os.environ["SIMGATE_BIN"]
SIMGATE_GEN = os.environ["SIMGATE_GEN_BIN"]
TRIALS = int(os.environ.get("TRIALS", "20"))
SEED = int(os.environ.get("TRIALS_SEED", str(int(time.time()))))
WORK = Path(os.environ.get("TRIALS_DIR", "target/fault-trials")).resolve()
PLANNING, PHASES, PHASE_SLICES = 60, 4, 30
DRAIN_TIMEOUT = 120.0
ENV = dict(os.environ, TCP_NODELAY="1")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise SystemExit(f"fault-trials: timed out waiting for {what}")


def log_has(path, needle):
    try:
        return needle in path.read_text(errors="replace")
    except FileNotFoundError:
        return False


def start_tps(trial_dir, port, run):
    out = trial_dir / "tps"
    out.mkdir(exist_ok=True)
    log = trial_dir / f"tps-{run}.log"
    process = subprocess.Popen(
        ["storescp", "-v", "--fork", "-od", str(out), "+xa", "-pm", "-aet", "TPS", str(port)],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=ENV, start_new_session=True,
    )
    wait_for(lambda: subprocess.run(
        ["echoscu", "-aec", "TPS", "127.0.0.1", str(port)], env=ENV,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0, 10, "the TPS")
    return process


def kill_group(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def start_simgate(trial_dir, run):
    log = trial_dir / f"simgate-{run}.log"
    process = subprocess.Popen(
        [SIMGATE, "serve", "--config", str(trial_dir / "simgate.toml")],
        stdout=subprocess.DEVNULL, stderr=log.open("w"), env=ENV,
    )
    wait_for(lambda: log_has(log, "DICOM listener ready") or process.poll() is not None, 60,
             "simgate to listen")
    if process.poll() is not None:
        raise SystemExit(f"fault-trials: simgate exited; see {log}")
    return process


def queue_waiting(config):
    result = subprocess.run([SIMGATE, "queue", "--json", "--config", str(config)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return None
    destinations = json.loads(result.stdout)["destinations"]
    return sum(d["pending"] + d["in_flight"] for d in destinations)


def acknowledged_files(storescu_log):
    """The files storescu got a success status for, in sending order."""
    files, current = [], None
    for line in storescu_log.read_text(errors="replace").splitlines():
        sending = re.search(r"Sending file: (.*)$", line)
        if sending:
            current = sending.group(1).strip()
        elif "Received Store Response (Success)" in line and current:
            files.append(current)
            current = None
    return files


def deliveries(trial_dir):
    """SOP Instance UIDs in the order the TPS stored them (every reception, duplicates too)."""
    uids = []
    for log in sorted(trial_dir.glob("tps-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            stored = re.search(r"storing DICOM file: .*/[A-Z]+\.([0-9.]+)$", line.strip())
            if stored:
                uids.append(stored.group(1))
    return uids


def sop_uid_of(path):
    dump = subprocess.run(["dcmdump", "+P", "0008,0018", str(path)],
                          capture_output=True, text=True).stdout
    match = re.search(r"\[([0-9.]+)\]", dump)
    return match.group(1) if match else None


def trial(number, files, uid_by_file, rng):
    trial_dir = WORK / f"trial-{number:02d}"
    shutil.rmtree(trial_dir, ignore_errors=True)
    trial_dir.mkdir(parents=True)
    port, tps_port = free_port(), free_port()
    config = trial_dir / "simgate.toml"
    config.write_text(f"""[listener]
ae_title = "SIMGATE"
bind = "127.0.0.1:{port}"
[storage]
dir = "data"
reserve_free_bytes = "0 B"
[http]
bind = "off"
[forward]
initial_backoff = "200ms"
max_backoff = "2s"
[[destinations]]
name = "tps"
ae_title = "TPS"
address = "127.0.0.1:{tps_port}"
""")
    tps = start_tps(trial_dir, tps_port, 1)
    gateway = start_simgate(trial_dir, 1)
    kill_tps_too = number % 3 == 0
    storescu_log = trial_dir / "storescu.log"
    sender = subprocess.Popen(
        ["storescu", "-v", "-aet", "CTSIM", "-aec", "SIMGATE", "127.0.0.1", str(port), *files],
        stdout=storescu_log.open("w"), stderr=subprocess.STDOUT, env=ENV,
    )
    # Kill once storescu has been told success for a random number of instances: mid-upload.
    kill_after = rng.randint(1, len(files) - 1)
    started = time.monotonic()
    while (sender.poll() is None
           and storescu_log.read_text(errors="replace").count("(Success)") < kill_after):
        time.sleep(0.002)
    delay = time.monotonic() - started
    gateway.send_signal(signal.SIGKILL)
    gateway.wait()
    if kill_tps_too:
        kill_group(tps)
    sender.wait()
    time.sleep(0.5)
    if kill_tps_too:
        tps = start_tps(trial_dir, tps_port, 2)
    gateway = start_simgate(trial_dir, 2)
    wait_for(lambda: queue_waiting(config) == 0, DRAIN_TIMEOUT, f"trial {number} to drain")
    gateway.send_signal(signal.SIGTERM)
    gateway.wait(timeout=60)
    time.sleep(0.3)
    kill_group(tps)

    acknowledged = [uid_by_file[f] for f in acknowledged_files(storescu_log)]
    database = sqlite3.connect(trial_dir / "data" / "simgate.db")
    rows = {uid: (series, number_, path) for uid, series, number_, path in database.execute(
        "SELECT sop_instance_uid, series_instance_uid, instance_number, file_path FROM instances")}
    stored = [u for u in acknowledged
              if u in rows and (trial_dir / "data" / rows[u][2]).is_file()]
    delivered_order = deliveries(trial_dir)
    delivered = set(delivered_order)
    lost = [u for u in acknowledged if u not in stored or u not in delivered]
    duplicates = len(delivered_order) - len(delivered)
    # Order within each series, over first arrivals at the TPS.
    out_of_order, highest, seen = 0, {}, set()
    for uid in delivered_order:
        if uid in seen or uid not in rows:
            continue
        seen.add(uid)
        series, instance_number, _ = rows[uid]
        if instance_number is None:
            continue
        if instance_number < highest.get(series, -1):
            out_of_order += 1
        highest[series] = max(highest.get(series, -1), instance_number)
    figures = dict(acknowledged=len(acknowledged), stored=len(stored), delivered=len(
        [u for u in acknowledged if u in delivered]), lost=len(lost), duplicates=duplicates,
        out_of_order=out_of_order)
    print(f"trial {number:2d}: kill after {kill_after:3d} acks ({delay:4.2f} s)"
          f"{' + TPS' if kill_tps_too else '      '}  "
          + "  ".join(f"{k.replace('_', '-')} {v}" for k, v in figures.items()), flush=True)
    if not lost and not out_of_order and os.environ.get("TRIALS_KEEP") != "1":
        shutil.rmtree(trial_dir / "data", ignore_errors=True)
        shutil.rmtree(trial_dir / "tps", ignore_errors=True)
    return figures


def main():
    rng = random.Random(SEED)
    data = WORK / "upload"
    expected = PLANNING + PHASES * PHASE_SLICES + 2 * PHASE_SLICES
    if not data.is_dir() or len(list(data.glob("*.dcm"))) != expected:
        shutil.rmtree(data, ignore_errors=True)
        subprocess.run([SIMGATE_GEN, "ct-sim-upload", "--out", str(data),
                        "--planning-slices", str(PLANNING), "--phases", str(PHASES),
                        "--phase-slices", str(PHASE_SLICES), "--seed", "7"],
                       check=True, stdout=subprocess.DEVNULL)
    files = sorted(str(p) for p in data.glob("*.dcm"))
    uid_by_file = {f: sop_uid_of(f) for f in files}
    print(f"fault trials: {TRIALS} trials, seed {SEED}, {len(files)} instances per upload",
          flush=True)
    totals = dict(trials=0, acknowledged=0, stored=0, delivered=0, lost=0, duplicates=0,
                  out_of_order=0)
    for number in range(1, TRIALS + 1):
        figures = trial(number, files, uid_by_file, rng)
        totals["trials"] += 1
        for key, value in figures.items():
            totals[key] += value
    print("totals: " + "  ".join(f"{k.replace('_', '-')} {v}" for k, v in totals.items()))
    sys.exit(1 if totals["lost"] or totals["out_of_order"] else 0)


if __name__ == "__main__":
    main()
