//! A full disk is called full: on a small tmpfs, a coordinator whose disk fills stops with
//! "disk full" (the others elect another and take the job), a restart while the disk is still
//! full says "disk full" with the directory and never advises `--reset-data`, and once space
//! is back the member starts with its state and rejoins. Skipped, with a message, where a
//! tmpfs cannot be mounted (not root); CI runs as root.

mod common;

use common::{factorial_decimal, http, http_get, wait_until, BIN};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const AGREE: Duration = Duration::from_secs(30);
const MOUNT_BYTES: &str = "size=32m";

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount() -> Result<Tmpfs, String> {
        let dir = std::env::temp_dir().join(format!("facto-full-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", MOUNT_BYTES, "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(dir))
    }

    /// Writes zeros until the file system refuses.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

struct Members {
    peers: String,
    ports: Vec<u16>,
    dirs: Vec<PathBuf>,
    logs: PathBuf,
    children: Vec<Option<Child>>,
}

impl Members {
    fn addr(&self, id: u32) -> String {
        format!("127.0.0.1:{}", self.ports[id as usize - 1])
    }

    fn log_path(&self, id: u32) -> PathBuf {
        self.logs.join(format!("node-{id}.log"))
    }

    fn start(&mut self, id: u32) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(id)).unwrap();
        let child = Command::new(BIN)
            .args(["node", "--id", &id.to_string(), "--peers", &self.peers, "--election", "bully"])
            .arg("--data-dir")
            .arg(&self.dirs[id as usize - 1])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[id as usize - 1] = Some(child);
    }

    /// Waits for node `id` to exit by itself; true if it did, non-zero.
    fn exits_non_zero(&mut self, id: u32, timeout: Duration) -> bool {
        let Some(child) = self.children[id as usize - 1].as_mut() else { return false };
        let status = wait_until(timeout, || child.try_wait().ok().flatten());
        self.children[id as usize - 1] = None;
        status.is_some_and(|s| !s.success())
    }

    /// The coordinator the running members agree on.
    fn agreed(&self, ids: &[u32]) -> Option<(u64, u64)> {
        let views: Vec<Value> = ids.iter().map(|&id| http_get(&self.addr(id), "/status")).collect::<Option<_>>()?;
        let leader = views[0]["leader"].as_u64()?;
        let epoch = views[0]["epoch"].as_u64()?;
        views
            .iter()
            .all(|v| v["leader"].as_u64() == Some(leader) && v["epoch"].as_u64() == Some(epoch))
            .then_some((leader, epoch))
    }

    fn log(&self, id: u32) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.logs);
    }
}

fn submit_and_wait(members: &Members, ids: &[u32], n: u64) -> Value {
    let cluster: Vec<String> = ids.iter().map(|&id| members.addr(id)).collect();
    let out = Command::new(BIN)
        .args(["submit", "--json", &n.to_string()])
        .env("FACTO_CLUSTER", cluster.join(","))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_full_disk_is_called_full_and_the_node_starts_once_space_is_back() {
    let _alone = common::one_cluster_at_a_time();
    let tmpfs = match Tmpfs::mount() {
        Ok(t) => t,
        Err(why) => {
            eprintln!("SKIPPED a_full_disk_is_called_full: cannot mount a tmpfs here ({why}); run as root to test it");
            return;
        }
    };
    let ports = common::free_ports(3);
    let logs = std::env::temp_dir().join(format!("facto-full-disk-logs-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    // Bully: node 3, the highest id, coordinates; its data directory is on the small disk.
    let dirs = vec![logs.join("node-1"), logs.join("node-2"), tmpfs.0.join("node-3")];
    let peers = ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1)).collect::<Vec<_>>().join(",");
    let mut members = Members { peers, ports, dirs, logs, children: vec![None, None, None] };
    for id in 1..=3 {
        members.start(id);
    }
    let (leader, epoch) = wait_until(AGREE, || members.agreed(&[1, 2, 3])).expect("agreement");
    assert_eq!(leader, 3);

    // The coordinator's disk fills; the next job needs a write there.
    let filler = tmpfs.fill();
    let job = submit_and_wait(&members, &[1, 2, 3], 50_000);
    assert_eq!(job["result"].as_str(), Some(factorial_decimal(50_000).as_str()), "the others took the job");
    assert!(members.exits_non_zero(3, AGREE), "the coordinator that cannot write stops");
    let log = members.log(3);
    assert!(log.contains("disk full: the disk holding") && log.contains("node-3"), "named: {log}");

    // Restarted while the disk is still full: "disk full", not damage, no --reset-data.
    members.start(3);
    assert!(members.exits_non_zero(3, AGREE), "it cannot start on a full disk");
    let last = members.log(3).lines().last().unwrap_or_default().to_string();
    assert!(last.contains("disk full") && last.contains("bytes free"), "{last}");
    assert!(!last.contains("--reset-data") && !last.contains("damaged"), "{last}");

    // Space is back: it starts with its state and takes over again, above its old epoch.
    std::fs::remove_file(filler).unwrap();
    members.start(3);
    let (leader, again) = wait_until(AGREE, || members.agreed(&[1, 2, 3]).filter(|&(l, _)| l == 3)).expect("rejoined");
    assert!(leader == 3 && again > epoch, "epoch {again} after {epoch}");
    let (status, _) = http(&members.addr(3), "GET", "/status", None).unwrap();
    assert_eq!(status, 200);
    let job = submit_and_wait(&members, &[1, 2, 3], 300);
    assert_eq!(job["result"].as_str(), Some(factorial_decimal(300).as_str()));
    // The members stop before the tmpfs is unmounted.
    drop(members);
}
