#!/usr/bin/env python3
"""facto as a Docker Swarm stack: the same docker-compose.yml, deployed with
`docker stack deploy --resolve-image never`, on this machine's engine.

    python3 tests/swarm.py

Initialises a single-node swarm only if none is active (and leaves it at the end only if it
created it), labels this node for every member's placement constraint, deploys the stack,
checks that all six members agree on one coordinator (through node1's published port and
its GET /cluster), computes 2000! exactly from the host, kills a member's container and sees
swarm start a new task that rejoins, then removes the stack. Exits 0 with a message when no
Docker engine answers.
"""

import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from containers import BINARY, build_image, docker_answers, free_port, log, run, wait_until  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STACK = "factoswarmtest"
MEMBERS = range(1, 7)


def swarm_state():
    return run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"]).stdout.strip()


def cluster_view(port):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/cluster", timeout=3) as r:
        return json.loads(r.read())


def agreed(port):
    """(leader, epoch) when all six members answer and follow one coordinator."""
    try:
        view = cluster_view(port)
    except Exception:
        return None
    statuses = [m["status"] for m in view["members"] if m["up"]]
    if len(statuses) != 6:
        return None
    views = {(s["leader"], s["epoch"]) for s in statuses}
    if len(views) != 1:
        return None
    leader, epoch = views.pop()
    leads = any(s["id"] == leader and s["role"] == "coordinator" and not s.get("taking_over") for s in statuses)
    return (leader, epoch) if leader is not None and leads else None


def task_container(n):
    """The running container of member n's service."""
    out = run(["docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={STACK}_node{n}"]).stdout
    ids = out.split()
    return ids[0] if ids else None


def started_unix_ms(port, n):
    view = cluster_view(port)
    member = next(m for m in view["members"] if m["id"] == n)
    return member["status"]["started_unix_ms"] if member["up"] else None


def test(port):
    env = dict(os.environ, FACTO_PORT=str(port), FACTO_ELECTION="raft")
    run(["docker", "stack", "deploy", "-c", os.path.join(ROOT, "docker-compose.yml"), "--resolve-image", "never", STACK],
        env=env)
    first = wait_until("one coordinator agreed by all six members", 120, lambda: agreed(port))
    log(f"swarm: node {first[0]} coordinates at epoch {first[1]}")

    out = run([BINARY, "submit", "2000", "--json", "--cluster", f"127.0.0.1:{port}"], timeout=120).stdout
    result = json.loads(out.strip().splitlines()[-1])["result"]
    assert result == str(math.factorial(2000)), "2000! is exact"
    log("swarm: 2000! computed exactly from the host")

    victim = next(n for n in MEMBERS if n != first[0] and n != 1)
    before_container, before_start = task_container(victim), started_unix_ms(port, victim)
    run(["docker", "kill", before_container])
    log(f"swarm: killed node{victim}'s container {before_container[:12]}")
    wait_until(f"swarm starts a new task for node{victim}", 90,
               lambda: (task_container(victim) or before_container) != before_container)
    wait_until(f"node{victim} rejoins", 90,
               lambda: agreed(port) and (started_unix_ms(port, victim) or 0) > before_start)
    log(f"swarm: a new task for node{victim} rejoined; coordinator {agreed(port)}")


def main():
    if not docker_answers():
        log("SKIPPED: no Docker engine answers here (docker info failed)")
        return 0
    build_image()  # from this checkout's release binary (built if missing), as containers.py does
    created = swarm_state() != "active"
    if created:
        run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"])
        log("swarm: initialised a single-node swarm for the test")
    me = run(["docker", "info", "--format", "{{.Swarm.NodeID}}"]).stdout.strip()
    labels = [f"facto-node{n}=true" for n in MEMBERS]
    for label in labels:
        run(["docker", "node", "update", "--label-add", label, me])
    port = free_port()
    try:
        test(port)
        log("swarm test passed")
        return 0
    except Exception as e:
        log(f"swarm test FAILED: {type(e).__name__}: {e}")
        for n in MEMBERS:
            print(f"--- node{n}\n" + run(["docker", "service", "logs", "--tail", "20", f"{STACK}_node{n}"],
                                         check=False).stdout, flush=True)
        return 1
    finally:
        run(["docker", "stack", "rm", STACK], check=False)
        # The network and the volumes go once the tasks have stopped.
        try:
            wait_until("the stack's containers are gone", 60, lambda: not run(
                ["docker", "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={STACK}"]).stdout.strip())
        except AssertionError as e:
            log(f"swarm: {e}")
        vols = run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={STACK}"],
                   check=False).stdout.split()
        if vols:
            run(["docker", "volume", "rm", "-f"] + vols, check=False)
        if created:
            run(["docker", "swarm", "leave", "--force"], check=False)
            log("swarm: left the swarm this test created")
        else:
            for label in labels:
                run(["docker", "node", "update", "--label-rm", label.split("=")[0], me], check=False)


if __name__ == "__main__":
    sys.exit(main())
