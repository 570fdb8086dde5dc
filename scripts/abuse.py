"""Hostile load on a running simgate while a simulator keeps working (scripts/abuse.sh).

For one scenario at a time, an attack runs in the background (asyncio, loopback only, bounded
in count and time) while this script times C-ECHOs and 20-instance C-STOREs with DCMTK and
samples simgate's resident memory. Prints one JSON line per scenario.

Scenarios:
  bearer     CLIENTS concurrent API clients, each sending requests with a bad Bearer token
  login      CLIENTS concurrent clients doing real sign-ins (form, CSRF cookie) with a wrong password
  slowloris  CLIENTS HTTP sockets sending their headers one byte at a time, reopened when closed
  silent     CLIENTS DICOM sockets that send nothing, reopened when closed
"""

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import threading
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def http_request(host, port, raw):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 30)
    finally:
        writer.close()


async def bearer_client(args, stop, counts):
    request = (
        f"GET /api/queue HTTP/1.1\r\nHost: 127.0.0.1:{args.http_port}\r\n"
        "Authorization: Bearer " + "0" * 64 + "\r\nConnection: close\r\n\r\n"
    ).encode()
    while not stop.is_set():
        try:
            await http_request("127.0.0.1", args.http_port, request)
            counts["requests"] += 1
        except Exception:
            counts["errors"] += 1
            await asyncio.sleep(0.05)


async def login_client(args, stop, counts):
    while not stop.is_set():
        try:
            form = await http_request(
                "127.0.0.1",
                args.http_port,
                f"GET /login HTTP/1.1\r\nHost: 127.0.0.1:{args.http_port}\r\nConnection: close\r\n\r\n".encode(),
            )
            text = form.decode("latin-1")
            cookie = re.search(r"simgate_login=([0-9a-f]+)", text)
            token = re.search(r'name="login_csrf" value="([0-9a-f]+)"', text)
            if not cookie or not token:
                counts["errors"] += 1
                await asyncio.sleep(0.05)
                continue
            body = f"name=curie&password=wrong&next=%2F&login_csrf={token.group(1)}"
            await http_request(
                "127.0.0.1",
                args.http_port,
                (
                    f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{args.http_port}\r\n"
                    f"Cookie: simgate_login={cookie.group(1)}\r\n"
                    "Content-Type: application/x-www-form-urlencoded\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
                ).encode(),
            )
            counts["requests"] += 1
        except Exception:
            counts["errors"] += 1
            await asyncio.sleep(0.05)


async def slowloris_client(args, stop, counts):
    head = f"GET /worklist HTTP/1.1\r\nHost: 127.0.0.1:{args.http_port}\r\nX-Slow: ".encode()
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", args.http_port)
            counts["connections"] += 1
            try:
                for byte in head + b"a" * 10_000:
                    if stop.is_set():
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(1)
            finally:
                writer.close()
        except Exception:
            counts["errors"] += 1
            await asyncio.sleep(0.2)


async def silent_client(args, stop, counts):
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", args.dicom_port)
            counts["connections"] += 1
            try:
                # Say nothing; wait until simgate closes the socket.
                while not stop.is_set():
                    data = await asyncio.wait_for(reader.read(1024), 0.5) if not reader.at_eof() else b""
                    if reader.at_eof():
                        break
            except asyncio.TimeoutError:
                pass
            finally:
                writer.close()
        except Exception:
            counts["errors"] += 1
            await asyncio.sleep(0.2)


ATTACKS = {
    "bearer": bearer_client,
    "login": login_client,
    "slowloris": slowloris_client,
    "silent": silent_client,
}


def run_attack(args, stop, counts):
    async def main():
        done = asyncio.Event()

        async def watch():
            while not stop.is_set():
                await asyncio.sleep(0.1)
            done.set()

        tasks = [asyncio.create_task(ATTACKS[args.scenario](args, done, counts)) for _ in range(args.clients)]
        await watch()
        await asyncio.wait(tasks, timeout=5)

    asyncio.run(main())


def timed(cmd):
    start = time.monotonic()
    result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start, result.returncode == 0


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=sorted(ATTACKS))
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--dicom-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--files", nargs="+", required=True)
    args = parser.parse_args()

    stop = threading.Event()
    counts = {"requests": 0, "connections": 0, "errors": 0}
    attack = threading.Thread(target=run_attack, args=(args, stop, counts), daemon=True)
    attack.start()
    time.sleep(2)  # let the attack build up

    echo_cmd = ["echoscu", "-aet", "CTSIM", "-aec", "SIMGATE", "127.0.0.1", str(args.dicom_port)]
    store_cmd = ["storescu", "-aet", "CTSIM", "-aec", "SIMGATE", "127.0.0.1", str(args.dicom_port), *args.files]
    echoes, stores, failures, peak = [], [], 0, 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        seconds, ok = timed(echo_cmd)
        echoes.append(seconds)
        failures += not ok
        if len(echoes) % 4 == 0:
            seconds, ok = timed(store_cmd)
            stores.append(seconds)
            failures += not ok
        peak = max(peak, rss_kb(args.pid))
        time.sleep(0.1)
    stop.set()
    attack.join(timeout=10)
    print(
        json.dumps(
            {
                "scenario": args.scenario,
                "clients": args.clients,
                "echo_p50_s": round(statistics.median(echoes), 3),
                "echo_p99_s": round(percentile(echoes, 99), 3),
                "echo_n": len(echoes),
                "store20_p50_s": round(statistics.median(stores), 3) if stores else None,
                "store20_p99_s": round(percentile(stores, 99), 3) if stores else None,
                "store20_n": len(stores),
                "dicom_failures": failures,
                "peak_rss_mb": round(peak / 1024, 1),
                "attack": counts,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
