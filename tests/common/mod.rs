//! A harness that runs real `facto node` processes on free loopback ports.
#![allow(dead_code)] // each test binary uses part of it

use serde_json::Value;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_facto");

/// Held by the tests of one binary whose clusters must not share the two cores with each
/// other (a burst of clients, a chaos campaign assert that nothing deposes a coordinator):
/// on a slower 2-core VM, three 6-member clusters at once did, now and then. A test that
/// failed (a poisoned lock) still lets the next one run.
pub fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Free ports on 127.0.0.1, all held until every one is chosen so none repeats.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// A base port whose next `n` ports are all free on 127.0.0.1 (for `facto cluster`).
pub fn free_port_block(n: u16) -> u16 {
    for _ in 0..200 {
        let base = free_ports(1)[0];
        if base > 65_000 {
            continue;
        }
        let held: Vec<_> = (0..n).filter_map(|i| TcpListener::bind(("127.0.0.1", base + i)).ok()).collect();
        if held.len() == n as usize {
            return base;
        }
    }
    panic!("no block of {n} free ports");
}

pub struct Cluster {
    pub ports: Vec<u16>,
    pub election: String,
    pub dir: PathBuf,
    children: Vec<Option<Child>>,
    /// Nodes held by SIGSTOP: running, but not expected to answer.
    stopped: std::collections::BTreeSet<u32>,
    extra_args: Vec<String>,
    /// Where a TLS cluster's certificates are (`Cluster::start_tls`); the harness calls it
    /// with the admin client certificate `client-test`.
    pub tls: Option<PathBuf>,
}

/// The admin client certificate a TLS test cluster issues for the harness.
pub const TEST_ADMIN: &str = "test";

impl Cluster {
    /// [`Cluster::start`] over mutual TLS: a CA and every member's certificate made with
    /// `facto certs` in the cluster's directory, and an admin client certificate for the
    /// harness's own calls.
    pub fn start_tls(n: usize, election: &str, extra_args: &[&str]) -> Cluster {
        let mut cluster = Cluster::prepare(n, election, extra_args);
        let tls = cluster.dir.join("tls");
        let dir = tls.to_str().unwrap();
        certs(&["init", "--dir", dir]);
        for id in cluster.ids() {
            certs(&["member", "--id", &id.to_string(), "--host", "127.0.0.1", "--host", "localhost", "--dir", dir]);
        }
        certs(&["client", "--name", TEST_ADMIN, "--admin", "--dir", dir]);
        cluster.extra_args.extend(["--tls-dir".to_string(), dir.to_string()]);
        cluster.tls = Some(tls);
        for id in cluster.ids() {
            cluster.start_node(id);
        }
        cluster
    }

    /// Starts `n` nodes (ids 1..=n) with the given election and extra `facto node` arguments.
    pub fn start(n: usize, election: &str, extra_args: &[&str]) -> Cluster {
        let mut cluster = Cluster::prepare(n, election, extra_args);
        for id in 1..=n as u32 {
            cluster.start_node(id);
        }
        cluster
    }

    fn prepare(n: usize, election: &str, extra_args: &[&str]) -> Cluster {
        let ports = free_ports(n);
        let dir = std::env::temp_dir().join(format!("facto-test-{}-{}", std::process::id(), ports[0]));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Cluster {
            ports,
            election: election.to_string(),
            dir,
            children: (0..n).map(|_| None).collect(),
            stopped: Default::default(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            tls: None,
        }
    }

    pub fn peers(&self) -> String {
        self.ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1)).collect::<Vec<_>>().join(",")
    }

    pub fn addrs(&self) -> String {
        self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    pub fn addr(&self, id: u32) -> String {
        format!("127.0.0.1:{}", self.ports[id as usize - 1])
    }

    pub fn ids(&self) -> Vec<u32> {
        (1..=self.ports.len() as u32).collect()
    }

    /// (Re)starts node `id` with the cluster's settings.
    pub fn start_node(&mut self, id: u32) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{id}.log")))
            .unwrap();
        let child = Command::new(BIN)
            .args(["node", "--id", &id.to_string(), "--peers", &self.peers(), "--election", &self.election])
            .arg("--data-dir")
            .arg(self.dir.join(format!("node-{id}")))
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("facto node starts");
        self.children[id as usize - 1] = Some(child);
    }

    pub fn pid(&self, id: u32) -> u32 {
        self.children[id as usize - 1].as_ref().expect("node is running").id()
    }

    /// Sends a signal to node `id` (SIGKILL reaps it).
    pub fn signal(&mut self, id: u32, signal: i32) {
        let pid = self.pid(id) as i32;
        unsafe { libc::kill(pid, signal) };
        match signal {
            libc::SIGSTOP => {
                self.stopped.insert(id);
            }
            libc::SIGCONT => {
                self.stopped.remove(&id);
            }
            _ => {}
        }
        if signal == libc::SIGKILL {
            if let Some(mut c) = self.children[id as usize - 1].take() {
                let _ = c.wait();
            }
        }
    }

    /// Waits up to `timeout` for node `id` to exit by itself; its exit code.
    pub fn wait_for_exit(&mut self, id: u32, timeout: Duration) -> Option<i32> {
        let child = self.children[id as usize - 1].as_mut()?;
        let status = wait_until(timeout, || child.try_wait().ok().flatten())?;
        self.children[id as usize - 1] = None;
        status.code()
    }

    pub fn status(&self, id: u32) -> Option<Value> {
        self.get(id, "/status")
    }

    /// `GET path` on member `id` (over TLS with the admin certificate on a TLS cluster): its
    /// JSON when the answer is 200.
    pub fn get(&self, id: u32, path: &str) -> Option<Value> {
        let Some(tls) = &self.tls else { return http_get(&self.addr(id), path) };
        let identity = Some(client_files(tls, TEST_ADMIN));
        let (status, body) = https(&self.addr(id), "GET", path, None, &[], tls, identity).ok()?;
        (status == 200).then(|| serde_json::from_slice(&body).ok()).flatten()
    }

    /// Every running node's status (None for nodes that do not answer).
    pub fn statuses(&self) -> Vec<(u32, Option<Value>)> {
        self.ids().into_iter().map(|id| (id, if self.answering(id) { self.status(id) } else { None })).collect()
    }

    /// `POST` to node `to`'s internal `path` as member `from` would: with the cluster's
    /// settings (read off `to`'s `/status`) and `from`'s id in the settings header.
    pub fn post_as_member(&self, to: u32, from: u32, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
        let settings = self.status(to)?["settings"].as_str()?.to_string();
        let header = format!("{settings};node={from}");
        http_with(&self.addr(to), "POST", path, Some(body), &[("x-facto-settings", header.as_str())])
    }

    /// Running and not stopped.
    pub fn answering(&self, id: u32) -> bool {
        self.children[id as usize - 1].is_some() && !self.stopped.contains(&id)
    }

    /// Waits until every running node answers and all agree on one coordinator, which calls
    /// itself coordinator; returns its id.
    pub fn wait_for_agreement(&self, timeout: Duration) -> u32 {
        let mut last = String::new();
        let leader = wait_until(timeout, || {
            let statuses = self.statuses();
            let running: Vec<&Value> =
                statuses.iter().filter(|(id, _)| self.answering(*id)).filter_map(|(_, s)| s.as_ref()).collect();
            last = format!("{running:?}");
            let expected = self.ids().into_iter().filter(|&id| self.answering(id)).count();
            if running.len() != expected {
                return None;
            }
            let leader = running[0]["leader"].as_u64()?;
            let epoch = running[0]["epoch"].as_u64()?;
            let agree =
                running.iter().all(|s| s["leader"].as_u64() == Some(leader) && s["epoch"].as_u64() == Some(epoch));
            let coordinators = running.iter().filter(|s| s["role"] == "coordinator").count();
            let leader_says = running.iter().any(|s| s["id"].as_u64() == Some(leader) && s["role"] == "coordinator");
            (agree && coordinators == 1 && leader_says).then_some(leader as u32)
        });
        leader.unwrap_or_else(|| panic!("no agreement within {timeout:?}; last statuses: {last}\n{}", self.logs()))
    }

    /// Submits n! without waiting; returns the job id.
    pub fn submit_no_wait(&self, n: u64) -> String {
        let out = self.facto(&["submit", "--json", "--no-wait", &n.to_string()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let job: Value = serde_json::from_slice(&out.stdout).unwrap();
        job["id"].as_str().unwrap().to_string()
    }

    /// The job as any answering member reports it.
    pub fn job(&self, id: &str) -> Option<Value> {
        self.ids().into_iter().filter(|&i| self.answering(i)).find_map(|i| self.get(i, &format!("/jobs/{id}")))
    }

    /// Waits for the job to be done; returns it.
    pub fn wait_for_job(&self, id: &str, timeout: Duration) -> Value {
        wait_until(timeout, || self.job(id).filter(|j| j["state"] == "done"))
            .unwrap_or_else(|| panic!("job {id} not done within {timeout:?}: {:?}\n{}", self.job(id), self.logs()))
    }

    /// Runs `facto <args>` against this cluster.
    pub fn facto(&self, args: &[&str]) -> Output {
        let answering: Vec<String> =
            self.ids().into_iter().filter(|&id| self.answering(id)).map(|id| self.addr(id)).collect();
        let mut command = Command::new(BIN);
        command.args(args).env("FACTO_CLUSTER", answering.join(","));
        if let Some(tls) = &self.tls {
            let (cert, key) = client_files(tls, TEST_ADMIN);
            command.env("FACTO_CA", tls.join("ca.pem")).env("FACTO_CERT", cert).env("FACTO_KEY", key);
        }
        command.output().unwrap()
    }

    /// The tail of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for id in self.ids() {
            let text = std::fs::read_to_string(self.dir.join(format!("node-{id}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!("--- node {id}\n{}\n", lines[lines.len().saturating_sub(15)..].join("\n"));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `facto certs ARGS`, which must succeed.
pub fn certs(args: &[&str]) {
    let out = Command::new(BIN).arg("certs").args(args).output().unwrap();
    assert!(out.status.success(), "facto certs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A client certificate and its key, as `facto certs client` names them in `dir`.
pub fn client_files(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("client-{name}.pem")), dir.join(format!("client-{name}.key")))
}

/// One HTTPS request with `Connection: close`, trusting `dir/ca.pem` and presenting
/// `identity` (a certificate and key) if given. Err: the TLS handshake or the connection
/// failed (its reason).
pub fn https(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
    dir: &std::path::Path,
    identity: Option<(PathBuf, PathBuf)>,
) -> Result<(u16, Vec<u8>), String> {
    use std::io::{Read, Write};
    let identity = identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
    let config = facto::transport::tls::client(&dir.join("ca.pem"), identity)?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string();
    let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
    let connection = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let body = body.unwrap_or(b"");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        body.len(),
        headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect::<String>()
    );
    stream.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    stream.write_all(body).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A peer that closes without close_notify after a whole answer.
            Err(_) if !raw.is_empty() => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no answer head")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status")?;
    let mut payload = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        payload = dechunk(&payload);
    }
    Ok((status, payload))
}

/// Polls `f` every 20 ms until it returns Some or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A minimal HTTP/1.1 client (so the tests do not depend on the code under test's client).
pub fn http(addr: &str, method: &str, path: &str, body: Option<&[u8]>) -> Option<(u16, Vec<u8>)> {
    http_with(addr, method, path, body, &[])
}

/// [`http`] with extra request headers.
pub fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Option<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let body = body.unwrap_or(b"");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        body.len(),
        headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect::<String>()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut payload = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        payload = dechunk(&payload);
    }
    Some((status, payload))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
}

pub fn http_get(addr: &str, path: &str) -> Option<Value> {
    let (status, body) = http(addr, "GET", path, None)?;
    (status == 200).then(|| serde_json::from_slice(&body).ok()).flatten()
}

/// n! in decimal, computed independently of facto (schoolbook, base 10^9).
pub fn factorial_decimal(n: u64) -> String {
    let mut limbs: Vec<u64> = vec![1];
    for k in 2..=n {
        let mut carry = 0u64;
        for limb in limbs.iter_mut() {
            let v = *limb * k + carry;
            *limb = v % 1_000_000_000;
            carry = v / 1_000_000_000;
        }
        while carry > 0 {
            limbs.push(carry % 1_000_000_000);
            carry /= 1_000_000_000;
        }
    }
    let mut s = limbs.last().unwrap().to_string();
    for limb in limbs.iter().rev().skip(1) {
        s += &format!("{limb:09}");
    }
    s
}
