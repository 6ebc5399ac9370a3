#!/usr/bin/env python3
"""What open web views cost a running cluster (docs/BENCHMARKS.md, "Web view").

Usage: scripts/view_load.py [PAGES] [N] [RUNS]   (defaults: 5 1000000 3)

Against the local `facto cluster` (127.0.0.1:7001-7006, started beforehand), times
`facto submit N` RUNS times with no page open, then with PAGES pages open, each page
emulated exactly as the web view polls (GET /cluster every 500 ms on one member), while
sampling every member's `last_leader_contact_ms` every 50 ms (the heartbeat gap a
follower sees) and counting leadership changes. Prints one line per setting.
"""
import json, subprocess, sys, threading, time, urllib.request

ADDRS = [f"127.0.0.1:{7000 + i}" for i in range(1, 7)]
FACTO = "target/release/facto"


def get(addr, path, timeout=1.0):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=timeout) as r:
        return json.loads(r.read())


def page(addr, stop, served):
    while not stop.is_set():
        try:
            get(addr, "/cluster")
            served[0] += 1
        except Exception:
            pass
        stop.wait(0.5)


def sample(stop, gaps, epochs):
    while not stop.is_set():
        for a in ADDRS:
            try:
                s = get(a, "/status", 0.5)
            except Exception:
                continue
            if s.get("role") == "worker" and s.get("last_leader_contact_ms") is not None:
                gaps.append(s["last_leader_contact_ms"])
            epochs.add(s.get("epoch"))
        stop.wait(0.05)


def measure(pages, n, runs):
    stop = threading.Event()
    served, gaps, epochs = [0], [], set()
    threads = [threading.Thread(target=page, args=(ADDRS[i % len(ADDRS)], stop, served)) for i in range(pages)]
    threads.append(threading.Thread(target=sample, args=(stop, gaps, epochs)))
    for t in threads:
        t.start()
    times = []
    for _ in range(runs):
        t0 = time.time()
        subprocess.run([FACTO, "submit", str(n), "--json"], check=True, stdout=subprocess.DEVNULL)
        times.append(time.time() - t0)
    stop.set()
    for t in threads:
        t.join()
    gaps.sort()
    p99 = gaps[int(len(gaps) * 0.99)] if gaps else None
    print(f"{pages} pages: submit {n}! median {sorted(times)[len(times) // 2]:.2f} s "
          f"[{min(times):.2f}-{max(times):.2f}]; follower's gap since the coordinator's last "
          f"message p99 {p99} ms, max {gaps[-1] if gaps else None} ms ({len(gaps)} samples); "
          f"epochs seen {sorted(e for e in epochs if e is not None)}; /cluster answered {served[0]}")


def main():
    pages = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000000
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    measure(0, n, runs)
    measure(pages, n, runs)


if __name__ == "__main__":
    main()
