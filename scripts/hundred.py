#!/usr/bin/env python3
"""A hundred members on this machine (docs/BENCHMARKS.md, "100 members").

Usage: scripts/hundred.py [ALGORITHM...]   (default: raft bully ring; needs target/release/facto)

Per algorithm: starts `facto cluster --nodes 100` on ports 8000-8099, measures the time from
every member answering /status to one coordinator agreed by all, 60 s idle (any change of
coordinator or epoch is a spurious election), messages per second at idle (sum of every
member's facto_messages_sent_total), the machine's CPU at idle, resident memory per member,
100,000! end to end, the messages and time of one election after SIGKILLing the coordinator,
and how long `facto cluster` takes to stop all members after SIGTERM.
"""
import collections, json, math, os, signal, subprocess, sys, time, urllib.request

sys.set_int_max_str_digits(0)
BASE, N = 8000, 100
FACTO = "target/release/facto"
ADDRS = [f"127.0.0.1:{BASE + i}" for i in range(N)]


def status(addr):
    try:
        return json.loads(urllib.request.urlopen(f"http://{addr}/status", timeout=1).read())
    except Exception:
        return None


def views():
    return [status(a) for a in ADDRS]


def agreement(ss):
    if any(s is None for s in ss):
        return None
    v = collections.Counter((s["leader"], s["epoch"]) for s in ss)
    (leader, epoch), count = v.most_common(1)[0]
    ok = count == N and leader is not None and any(s["id"] == leader and s["role"] == "coordinator" for s in ss)
    return (leader, epoch) if ok else None


def messages_sent(skip=None):
    total = 0.0
    for a in ADDRS:
        if a == skip:
            continue
        try:
            text = urllib.request.urlopen(f"http://{a}/metrics", timeout=2).read().decode()
        except Exception:
            continue
        total += sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("facto_messages_sent_total"))
    return total


def cpu_busy(seconds):
    def read():
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(f), f[3] + f[4]
    t1, i1 = read(); time.sleep(seconds); t2, i2 = read()
    return 1 - (i2 - i1) / (t2 - t1)


def run(algorithm):
    data = f"/tmp/facto-hundred-{algorithm}"
    subprocess.run(["rm", "-rf", data])
    cluster = subprocess.Popen([FACTO, "cluster", "--nodes", str(N), "--base-port", str(BASE), "--election",
                                algorithm, "--data-dir", data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not all(views()):
        time.sleep(0.1)
    all_up = time.time()
    while not agreement(views()):
        time.sleep(0.05)
    agreed = time.time()
    first = agreement(views())
    print(f"{algorithm}: all 100 answer {all_up - t0:.1f} s after start; agreed on node {first[0]} "
          f"(epoch {first[1]}) {agreed - all_up:.2f} s after that", flush=True)
    m0, t = messages_sent(), time.time()
    busy = cpu_busy(20)
    changed = False
    while time.time() - t < 60:
        a = agreement(views())
        changed |= a != first
        time.sleep(1)
    m1 = messages_sent()
    rate = (m1 - m0) / (time.time() - t)
    rss = [int(l.split()[1]) for p in os.popen(r"pgrep -f '^\S*facto node'").read().split()
           for l in open(f"/proc/{p}/status") if l.startswith("VmRSS")]
    print(f"{algorithm}: 60 s idle: {'SPURIOUS ELECTION' if changed else 'no election'}; {rate:.0f} messages/s "
          f"(all members); machine CPU busy {busy * 100:.0f}% of 2 cores; RSS per member median "
          f"{sorted(rss)[len(rss) // 2] / 1024:.1f} MiB", flush=True)
    t = time.time()
    out = subprocess.run([FACTO, "submit", "100000", "--json", "--cluster", ",".join(ADDRS[:10])],
                         capture_output=True, text=True, check=True).stdout
    took = time.time() - t
    exact = json.loads(out.strip().splitlines()[-1])["result"] == str(math.factorial(100000))
    print(f"{algorithm}: 100000! {'exact' if exact else 'WRONG'}, facto submit took {took:.2f} s", flush=True)
    leader = first[0]
    pid = int(os.popen(rf"pgrep -f '^\S*facto node --id {leader} '").read().split()[0])
    gone = ADDRS[leader - 1]
    m0 = messages_sent(skip=gone)
    t = time.time()
    os.kill(pid, signal.SIGKILL)
    while True:
        a = agreement(views())
        if a and a[0] != leader or (a and a[1] != first[1]):
            break
        time.sleep(0.05)
    took = time.time() - t
    m1 = messages_sent(skip=gone)
    print(f"{algorithm}: coordinator killed: new agreement (node {a[0]}, epoch {a[1]}) after {took:.2f} s; "
          f"{m1 - m0:.0f} messages sent by the others meanwhile (idle: {rate * took:.0f} in as long)", flush=True)
    t = time.time()
    cluster.send_signal(signal.SIGTERM)
    cluster.wait()
    while os.popen(r"pgrep -f '^\S*facto node'").read().strip():
        time.sleep(0.05)
    print(f"{algorithm}: facto cluster stopped all members {time.time() - t:.2f} s after SIGTERM", flush=True)


for algorithm in sys.argv[1:] or ["raft", "bully", "ring"]:
    run(algorithm)
