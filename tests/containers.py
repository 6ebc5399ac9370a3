#!/usr/bin/env python3
"""facto in containers: builds the runtime image from local material and tests the 6-node
docker-compose cluster with container-level faults, once per election algorithm.

    python3 tests/containers.py image          # only build facto:latest offline
    python3 tests/containers.py test [ALG...]  # build it, then run the tests (default: all)

No registry is needed: the image is the Dockerfile's runtime stage made from the host's
release binary and the shared libraries it links (`docker import` of a root file system),
with the ENV, ENTRYPOINT, CMD, VOLUME and EXPOSE lines read from the Dockerfile itself, so
both paths run the same thing. Every compose project is torn down (containers, network,
volumes) when its test ends, also when it fails. Exits 0 with a message when no Docker
engine answers.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request

sys.set_int_max_str_digits(0)  # results have tens of thousands of digits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "facto")
IMAGE = "facto:latest"
KEY = "container-test-key"
ALGORITHMS = ["bully", "ring", "raft"]
# Each worker holds every operation this long, so a job spans several seconds and the
# faults below land in the middle of it.
DELAY_S = "1"
LONG_JOB = 3000


def log(msg):
    print(f"[containers {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(args, check=True, timeout=300, env=None, capture=True):
    res = subprocess.run(args, cwd=ROOT, env=env, timeout=timeout, text=True,
                         stdout=subprocess.PIPE if capture else None,
                         stderr=subprocess.PIPE if capture else None)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {res.returncode}: {res.stderr}")
    return res


def docker_answers():
    try:
        return run(["docker", "info"], check=False, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def compose_command():
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if run(["docker", "compose", "version"], check=False).returncode == 0:
        return ["docker", "compose"]
    raise RuntimeError("neither docker-compose nor the docker compose plugin is installed")


# ---------------------------------------------------------------- the offline image

def runtime_stage():
    """The instructions after the Dockerfile's last FROM."""
    lines, current = [], []
    text = open(os.path.join(ROOT, "Dockerfile")).read()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            current = []
            lines = current
            continue
        current.append(line)
    return lines


def shared_libraries(binary):
    out = run(["ldd", binary]).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts:
            path = parts[parts.index("=>") + 1]
            if path.startswith("/"):
                libs.append(path)
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])  # the dynamic loader
    return libs


def build_image():
    if not os.path.exists(BINARY):
        log("building the release binary")
        run(["cargo", "build", "--release", "--bin", "facto"], timeout=3600, capture=False)
    stage = runtime_stage()
    copy = next(l for l in stage if l.upper().startswith("COPY "))
    target = copy.split()[-1]
    changes = [l for l in stage if l.split()[0].upper() in ("ENV", "ENTRYPOINT", "CMD", "VOLUME", "EXPOSE", "WORKDIR")]
    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, "rootfs.tar")
        with tarfile.open(archive, "w") as tar:
            tar.add(BINARY, arcname=target.lstrip("/"))
            for lib in shared_libraries(BINARY):
                # The real file under the name the loader looks for (no symlinks to follow).
                tar.add(os.path.realpath(lib), arcname=lib.lstrip("/"))
            tmpdir = tarfile.TarInfo("tmp")
            tmpdir.type, tmpdir.mode = tarfile.DIRTYPE, 0o1777
            tar.addfile(tmpdir)
        args = ["docker", "import"]
        for change in changes:
            args += ["--change", change]
        run(args + [archive, IMAGE])
    log(f"built {IMAGE} from {BINARY} ({len(changes)} runtime instructions from the Dockerfile)")


# ---------------------------------------------------------------- the cluster under test

def http(addr, method="GET", path="/status", body=None, key=None, timeout=2.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("x-facto-key", key)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            return res.status, json.loads(res.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
    except (OSError, ValueError):
        return None, None


def wait_until(what, timeout_s, f, interval_s=0.2):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = f()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Cluster:
    def __init__(self, algorithm, tls_files=None):
        self.algorithm = algorithm
        self.project = f"factotest{os.getpid()}{algorithm}{'tls' if tls_files else ''}"
        self.port = free_port()
        self.compose = compose_command() + ["-p", self.project, "-f", os.path.join(ROOT, "docker-compose.yml")]
        self.env = dict(os.environ, FACTO_ELECTION=algorithm, FACTO_DELAY=DELAY_S,
                        FACTO_CLUSTER_KEY=KEY, FACTO_PORT=str(self.port))
        self.tls_files = tls_files
        if tls_files:
            self.compose += ["-f", os.path.join(ROOT, "docker-compose.tls.yml")]
            self.env["FACTO_TLS_FILES"] = tls_files

    def up(self):
        run(self.compose + ["up", "-d", "--no-build"], env=self.env, timeout=300)

    def down(self):
        res = run(self.compose + ["down", "-v", "--remove-orphans", "-t", "2"], env=self.env, check=False, timeout=300)
        left = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}"],
                   check=False).stdout.split()
        if res.returncode != 0 or left:
            log(f"teardown of {self.project}: compose said {res.returncode}; removing {left}")
            if left:
                run(["docker", "rm", "-fv"] + left, check=False)
            run(["docker", "network", "rm", f"{self.project}_facto"], check=False)
            vols = run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}"],
                       check=False).stdout.split()
            if vols:
                run(["docker", "volume", "rm", "-f"] + vols, check=False)

    def container(self, node):
        return run(self.compose + ["ps", "-q", f"node{node}"], env=self.env).stdout.strip()

    def inspect(self, node, fmt):
        return run(["docker", "inspect", "-f", fmt, self.container(node)]).stdout.strip()

    def addr(self, node):
        ip = self.inspect(node, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
        return f"{ip}:7000" if ip else None

    def status(self, node):
        addr = self.addr(node)
        if not addr:
            return None
        code, body = http(addr)
        return body if code == 200 else None

    def restarts(self, node):
        return int(self.inspect(node, "{{.RestartCount}}"))

    def agreement(self, nodes):
        """The coordinator every one of `nodes` follows at one epoch, or None."""
        statuses = [self.status(n) for n in nodes]
        if any(s is None for s in statuses):
            return None
        leaders = {(s["leader"], s["epoch"]) for s in statuses}
        if len(leaders) != 1:
            return None
        leader, epoch = leaders.pop()
        if leader is None:
            return None
        coordinators = [s["id"] for s in statuses if s["role"] == "coordinator"]
        if leader not in nodes:
            own = self.status(leader)
            coordinators.extend([leader] if own and own["role"] == "coordinator" and own["epoch"] == epoch else [])
        return (leader, epoch) if coordinators == [leader] else None

    def wait_agreement(self, nodes=range(1, 7), timeout_s=60, other_than=None, after_epoch=-1):
        def agreed():
            a = self.agreement(list(nodes))
            return a if a and a[0] != other_than and a[1] > after_epoch else None
        return wait_until(f"agreement among {list(nodes)}", timeout_s, agreed)

    def facto(self, *args, timeout=300):
        env = dict(os.environ, FACTO_CLUSTER=f"127.0.0.1:{self.port}")
        if self.tls_files:
            env["FACTO_CA"] = os.path.join(self.tls_files, "ca.pem")
        return run([BINARY] + list(args), env=env, timeout=timeout)

    def submit(self, n):
        res = self.facto("submit", "--json", "--no-wait", str(n))
        return json.loads(res.stdout.splitlines()[0])["id"]

    def job(self, job_id, avoid=None):
        """The job as the first member that answers reports it (not `avoid`: a paused node
        would hold the request, and the host's port leads to node1, which may be the one)."""
        for node in range(1, 7):
            addr = None if node == avoid else self.addr(node)
            if addr:
                code, body = http(addr, path=f"/jobs/{job_id}", timeout=3)
                if code == 200:
                    return body
        return None

    def wait_job(self, job_id, n, timeout_s=180, avoid=None):
        def done():
            j = self.job(job_id, avoid)
            return j if j and j["state"] == "done" else None
        job = wait_until(f"job {job_id}", timeout_s, done)
        assert job["n"] == n and job["result"] == str(math.factorial(n)), f"job {job_id}: wrong result for {n}!"
        return job

    def wait_started(self, job_id):
        wait_until(f"job {job_id} to start", 60, lambda: (self.job(job_id) or {}).get("operations_done", 0) > 0)

    def logs(self, node):
        res = run(["docker", "logs", self.container(node)], check=False)
        return res.stdout + res.stderr


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the tests

def spare_worker(leader):
    """A worker to hurt: not the coordinator, and not node 1, whose port the host uses."""
    return max(n for n in range(2, 7) if n != leader)


def test_up_and_compute(c):
    leader, epoch = c.wait_agreement()
    log(f"{c.algorithm}: all 6 agree on node {leader} at epoch {epoch}")
    if c.algorithm == "bully":
        assert leader == 6, f"bully elected {leader}, not the highest id"
    res = c.facto("submit", "--json", "100")
    assert json.loads(res.stdout)["result"] == str(math.factorial(100)), "100! from the host is wrong"
    log(f"{c.algorithm}: facto submit 100 from the host is exact")


def test_coordinator_crash(c):
    leader, epoch = c.wait_agreement()
    before = c.restarts(leader)
    job = c.submit(LONG_JOB)
    c.wait_started(job)
    pid = c.inspect(leader, "{{.State.Pid}}")
    # SIGKILL to the container's process from the host: a crash. (Root owns that process;
    # a user in the docker group goes through sudo.)
    if os.geteuid() == 0:
        os.kill(int(pid), 9)
    else:
        run(["sudo", "-n", "kill", "-9", pid])
    log(f"{c.algorithm}: SIGKILLed coordinator node {leader} (pid {pid}) mid-job")
    # The policy restarts the victim within a second or so, so it may lead again (in bully
    # it must, being the highest id): what matters is a newer epoch that the others agree on.
    others = [n for n in range(1, 7) if n != leader]
    new_leader, new_epoch = c.wait_agreement(others, after_epoch=epoch)
    log(f"{c.algorithm}: node {new_leader} coordinates at epoch {new_epoch}")
    done = c.wait_job(job, LONG_JOB)
    log(f"{c.algorithm}: the job finished exactly ({done['operations_reexecuted']} operations re-executed)")
    wait_until(f"node {leader} restarted by its policy", 60, lambda: c.restarts(leader) > before)
    final, _ = c.wait_agreement()
    if c.algorithm == "bully":
        assert final == 6, f"after node {leader} came back, bully should be led by 6, not {final}"
    log(f"{c.algorithm}: node {leader} was restarted by the policy and rejoined; coordinator now {final}")


def test_crash_kinds(c):
    """How the restart policy treats each way of dying."""
    leader, _ = c.wait_agreement()
    worker = spare_worker(leader)
    before = c.restarts(worker)
    code, _ = http(c.addr(worker), "POST", "/admin/crash", {}, key=KEY)
    assert code == 202, f"admin crash answered {code}"
    wait_until(f"node {worker} restarted after its own abrupt exit", 60, lambda: c.restarts(worker) > before)
    log(f"{c.algorithm}: node {worker} exited abruptly (admin crash) and the policy restarted it")
    c.wait_agreement()
    before = c.restarts(worker)
    run(["docker", "kill", c.container(worker)])
    time.sleep(5)  # nothing to poll for: the point is that nothing happens
    state = c.inspect(worker, "{{.State.Status}}")
    assert state == "exited" and c.restarts(worker) == before, f"docker kill: state {state}"
    log(f"{c.algorithm}: docker kill counts as stopped by hand: node {worker} stays {state}; starting it")
    run(["docker", "start", c.container(worker)])
    c.wait_agreement()


def test_network_disconnect(c):
    leader, _ = c.wait_agreement()
    worker = spare_worker(leader)
    network = f"{c.project}_facto"
    job = c.submit(LONG_JOB)
    c.wait_started(job)
    run(["docker", "network", "disconnect", network, c.container(worker)])
    log(f"{c.algorithm}: disconnected worker node {worker} mid-job")
    try:
        c.wait_job(job, LONG_JOB)
        log(f"{c.algorithm}: the job finished without it")
    finally:
        run(["docker", "network", "connect", "--alias", f"node{worker}", network, c.container(worker)])
    c.wait_agreement()
    log(f"{c.algorithm}: node {worker} reconnected and rejoined")


def test_pause_coordinator(c):
    leader, epoch = c.wait_agreement()
    job = c.submit(LONG_JOB)
    c.wait_started(job)
    run(["docker", "pause", c.container(leader)])
    log(f"{c.algorithm}: paused coordinator node {leader} (epoch {epoch})")
    try:
        others = [n for n in range(1, 7) if n != leader]
        new_leader, new_epoch = c.wait_agreement(others, other_than=leader)
        assert new_epoch > epoch
        log(f"{c.algorithm}: node {new_leader} took over at epoch {new_epoch} while {leader} slept")
        c.wait_job(job, LONG_JOB, avoid=leader)
    finally:
        run(["docker", "unpause", c.container(leader)])
    final, final_epoch = c.wait_agreement()
    assert final_epoch >= new_epoch
    fenced = f"stops coordinating epoch {epoch}"
    wait_until(f"node {leader} to log '{fenced}'", 30, lambda: fenced in c.logs(leader))
    log(f"{c.algorithm}: node {leader} woke, was fenced and stepped down; coordinator now {final} at {final_epoch}")


def make_certificates(directory):
    """A CA and every member's certificate, as the README's "Mutual TLS" section issues them."""
    run([BINARY, "certs", "init", "--dir", directory])
    for n in range(1, 7):
        run([BINARY, "certs", "member", "--id", str(n), "--host", f"node{n}", "--host", "127.0.0.1",
             "--dir", directory])


def tls_status(c, node):
    """Member `node`'s own view over TLS, asked from inside its container (only node1 has a
    port on the host, and it may be the one killed), or None."""
    res = run(["docker", "exec", "-e", f"FACTO_CLUSTER=node{node}:7000", "-e", "FACTO_CA=/run/secrets/ca.pem",
               c.container(node), "facto", "status", "--json"], check=False)
    try:
        nodes = json.loads(res.stdout)["nodes"]
    except (ValueError, KeyError):
        return None
    own = [s for s in nodes if s.get("id") == node]
    return own[0] if own and own[0].get("leader") else None


def test_tls(c):
    """docker-compose.tls.yml: members elect and compute over mutual TLS, plain HTTP gets a
    400, and after the coordinator's container is killed a new one is elected."""
    first = wait_until("node1 to follow a coordinator over TLS", 60, lambda: tls_status(c, 1))
    res = c.facto("submit", "--json", "100")
    assert json.loads(res.stdout)["result"] == str(math.factorial(100)), "100! over TLS is wrong"
    code, _ = http(f"127.0.0.1:{c.port}")
    assert code == 400, f"plain HTTP to a TLS member answered {code}"
    victim = first["leader"]
    observer = 2 if victim == 1 else 1
    run(["docker", "kill", c.container(victim)])
    wait_until(f"a coordinator other than node {victim}", 60,
               lambda: (lambda s: s if s and s["leader"] != victim and s["epoch"] > first["epoch"] else None)(
                   tls_status(c, observer)))
    if victim == 1:  # the host's port leads to node1: bring it back to submit through it
        run(["docker", "start", c.container(1)])
        wait_until("node1 to rejoin over TLS", 60, lambda: tls_status(c, 1))
    res = c.facto("submit", "--json", "200")
    assert json.loads(res.stdout)["result"] == str(math.factorial(200)), "200! over TLS after a kill is wrong"
    log(f"tls: 6 members over mutual TLS computed 100! and 200!, refused plain HTTP, replaced node {victim}")


TESTS = [test_up_and_compute, test_coordinator_crash, test_crash_kinds, test_network_disconnect, test_pause_coordinator]


def test(algorithms):
    build_image()
    failures = []
    for algorithm in algorithms:
        c = Cluster(algorithm)
        try:
            c.up()
            for t in TESTS:
                started = time.time()
                t(c)
                log(f"{algorithm}: {t.__name__} passed in {time.time() - started:.1f} s")
        except Exception as e:  # report, tear down, go on with the next algorithm
            failures.append(f"{algorithm}: {type(e).__name__}: {e}")
            log(f"FAILED {failures[-1]}")
            print_logs(c)
        finally:
            c.down()
    failures += run_tls_test()
    if failures:
        log("container tests FAILED:\n  " + "\n  ".join(failures))
        return 1
    log(f"container tests passed for {', '.join(algorithms)}")
    return 0


def print_logs(c):
    """The last lines of every member's log, for a failure."""
    for n in range(1, 7):
        try:
            print(f"--- node{n}\n" + "\n".join(c.logs(n).splitlines()[-20:]), flush=True)
        except Exception:
            pass


def run_tls_test():
    """The TLS variant, once (raft): its failures, as `test` lists them."""
    directory = tempfile.mkdtemp(prefix="facto-tls-")
    c = Cluster("raft", tls_files=directory)
    try:
        make_certificates(directory)
        c.up()
        test_tls(c)
        return []
    except Exception as e:
        log(f"FAILED tls: {type(e).__name__}: {e}")
        print_logs(c)
        return [f"tls: {type(e).__name__}: {e}"]
    finally:
        c.down()
        shutil.rmtree(directory, ignore_errors=True)


def main(argv):
    command = argv[1] if len(argv) > 1 else "test"
    if command not in ("image", "test"):
        print(f"usage: {argv[0]} [image|test] [ALGORITHM...]", file=sys.stderr)
        return 2
    algorithms = argv[2:] or ALGORITHMS
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown:
        print(f"unknown algorithm {unknown[0]}: expected one of {', '.join(ALGORITHMS)}", file=sys.stderr)
        return 2
    if not docker_answers():
        log("SKIPPED: no Docker engine answers here (docker info failed)")
        return 0
    if command == "image":
        build_image()
        return 0
    return test(algorithms)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
