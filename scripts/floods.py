#!/usr/bin/env python3
"""Hostile-client floods against a running facto cluster; each must cause no change of
coordinator and no 503.

  python3 scripts/floods.py --cluster 127.0.0.1:7001,...,127.0.0.1:7006 [--facto PATH]

1. history: 10,000 jobs of 20! through `facto bench --load` (so views carry a full history);
2. views: 500 concurrent `GET /cluster`, 5 rounds;
3. long-polls: 2,000 clients on one finished 1,000,000! job, spread over all members: half
   long-poll its JSON, half read its digits (`GET /jobs/<id>/digits`);
4. idle connections: 20,000 connections opened at once, held, then closed at once;
5. memory: every member's RSS 30 s after the bursts (3, 4) against its idle value before them.

Prints one line per flood and a JSON summary; exits 1 if any flood changed the coordinator
or met a 503, or if memory did not go back within 1.5x.
"""
import argparse
import asyncio
import collections
import json
import multiprocessing
import resource
import subprocess
import sys
import time
import urllib.request


def get_json(addr, path, timeout_s=10):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=timeout_s) as r:
        return json.load(r)


def leadership(addrs):
    """(leader, epoch) of each member that answers."""
    seen = {}
    for a in addrs:
        try:
            s = get_json(a, "/status?jobs=0")
            seen[a] = (s["leader"], s["epoch"])
        except Exception:
            seen[a] = None
    return seen


def rss_bytes(addr):
    for line in urllib.request.urlopen(f"http://{addr}/metrics", timeout=10).read().decode().splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return float(line.split()[1])
    raise RuntimeError(f"{addr}: no process_resident_memory_bytes")


async def request(addr, path, counts, timeout_s=120):
    host, port = addr.rsplit(":", 1)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status = (await asyncio.wait_for(reader.readline(), timeout_s)).split(b" ")[1].decode()
        body = 0
        while True:
            chunk = await asyncio.wait_for(reader.read(1 << 20), timeout_s)
            if not chunk:
                break
            body += len(chunk)
        writer.close()
        counts[status] += 1
        return body
    except Exception as e:
        counts[type(e).__name__] += 1
        return 0


async def views(addrs, clients, rounds):
    counts = collections.Counter()
    for _ in range(rounds):
        await asyncio.gather(*(request(addrs[i % len(addrs)], "/cluster", counts) for i in range(clients)))
    return counts


async def long_polls(addrs, job, clients):
    counts = collections.Counter()
    sizes = await asyncio.gather(
        *(request(addrs[i % len(addrs)], path, counts, 300) for i, path in enumerate(
            [f"/jobs/{job}?wait_ms=30000", f"/jobs/{job}/digits"] * (clients // 2))))
    return counts, min(sizes), max(sizes)


async def idle_connections(addrs, connections, hold_s):
    counts = collections.Counter()
    opened = []

    async def open_one(addr):
        host, port = addr.rsplit(":", 1)
        try:
            opened.append(await asyncio.wait_for(asyncio.open_connection(host, int(port)), 30))
            counts["opened"] += 1
        except Exception as e:
            counts[type(e).__name__] += 1

    await asyncio.gather(*(open_one(addrs[i % len(addrs)]) for i in range(connections)))
    await asyncio.sleep(hold_s)
    for _, writer in opened:
        writer.transport.abort()
    return counts


def raise_fd_limit():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def idle_in_processes(addrs, connections, hold_s):
    """One process cannot hold 20,000 descriptors here (the hard limit is 20,000), so the
    connections are split over processes that open, hold and close theirs together."""
    per_process = raise_fd_limit() - 512
    parts = [min(per_process, connections - i) for i in range(0, connections, per_process)]
    with multiprocessing.Pool(len(parts)) as pool:
        results = pool.starmap(idle_part, [(addrs, n, hold_s) for n in parts])
    return sum(results, collections.Counter())


def idle_part(addrs, connections, hold_s):
    raise_fd_limit()
    return asyncio.run(idle_connections(addrs, connections, hold_s))


def submit(facto, addrs, n):
    out = subprocess.run([facto, "submit", str(n), "--cluster", ",".join(addrs), "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def history(facto, addrs, jobs):
    done = 0
    while done < jobs:
        out = subprocess.run([facto, "bench", "--load", "--cluster", ",".join(addrs), "--clients", "64",
                              "--duration", "10s", "--json"], capture_output=True, text=True, check=True)
        done += json.loads(out.stdout)["jobs"]
    return done


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cluster", required=True)
    p.add_argument("--facto", default="target/release/facto")
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--views", type=int, default=500)
    p.add_argument("--long-polls", type=int, default=2_000)
    p.add_argument("--idle", type=int, default=20_000)
    p.add_argument("--settle-s", type=float, default=30)
    args = p.parse_args()
    addrs = args.cluster.split(",")
    raise_fd_limit()

    failures = []
    summary = {}

    def check(name, before, counts):
        after = leadership(addrs)
        changed = before != after
        bad = counts.get("503", 0)
        summary[name] = {"statuses": dict(counts), "leadership_changed": changed}
        print(f"{name}: {dict(counts)}; leadership {'CHANGED ' + str(before) + ' -> ' + str(after) if changed else 'unchanged'}",
              flush=True)
        if changed or bad:
            failures.append(name)

    before = leadership(addrs)
    summary["history_jobs"] = history(args.facto, addrs, args.jobs)
    check("history", before, collections.Counter())

    before = leadership(addrs)
    t = time.time()
    counts = asyncio.run(views(addrs, args.views, 5))
    print(f"views took {time.time() - t:.1f} s", flush=True)
    check("views", before, counts)

    job = submit(args.facto, addrs, 1_000_000)["id"]
    time.sleep(args.settle_s)
    idle_rss = {a: rss_bytes(a) for a in addrs}
    before = leadership(addrs)
    t = time.time()
    counts, smallest, largest = asyncio.run(long_polls(addrs, job, args.long_polls))
    print(f"long-polls took {time.time() - t:.1f} s; answers {smallest}..{largest} bytes", flush=True)
    check("long_polls", before, counts)

    before = leadership(addrs)
    counts = idle_in_processes(addrs, args.idle, 5)
    check("idle_connections", before, counts)

    time.sleep(args.settle_s)
    after_rss = {a: rss_bytes(a) for a in addrs}
    summary["rss_mib"] = {a: [round(idle_rss[a] / 2**20, 1), round(after_rss[a] / 2**20, 1)] for a in addrs}
    print(f"RSS MiB before -> {args.settle_s:.0f} s after: {summary['rss_mib']}", flush=True)
    if any(after_rss[a] > 1.5 * idle_rss[a] for a in addrs):
        failures.append("memory")
    print(json.dumps(summary))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
