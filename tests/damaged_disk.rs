//! A damaged data directory stops the node with one line that names it and says what to do;
//! `--reset-data` moves it aside and starts empty on purpose.

mod common;

use common::{wait_until, BIN};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn node(dir: &Path, port: u16, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["node", "--id", "1", "--peers", &format!("1=127.0.0.1:{port}"), "--data-dir"]).arg(dir).args(extra);
    cmd
}

/// Starts a node, waits until it answers, and kills it: the directory now holds a database.
fn make_database(dir: &Path, port: u16) {
    let mut child: Child = node(dir, port, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_until(Duration::from_secs(20), || common::http_get(&format!("127.0.0.1:{port}"), "/status"))
        .expect("the node answers");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Runs the node on a damaged directory: it must stop on its own, non-zero, with one line.
fn refuses(dir: &Path, port: u16, damage: &str) {
    let out = node(dir, port, &[]).env("RUST_LOG", "off").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{damage}: the node started");
    assert_eq!(stderr.trim().lines().count(), 1, "{damage}: one line, not a backtrace: {stderr}");
    assert!(stderr.contains(&dir.display().to_string()) && stderr.contains("--reset-data"), "{damage}: {stderr}");
}

fn fresh(name: &str) -> (PathBuf, u16) {
    let dir = std::env::temp_dir().join(format!("facto-damage-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    (dir, common::free_ports(1)[0])
}

#[test]
fn a_damaged_database_is_refused_with_one_line() {
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 4] = [
        ("db truncated", |d| std::fs::File::create(d.join("db")).map(drop).unwrap()),
        ("db deleted", |d| std::fs::remove_file(d.join("db")).unwrap()),
        ("db zeroed", |d| {
            let len = std::fs::metadata(d.join("db")).unwrap().len() as usize;
            std::fs::write(d.join("db"), vec![0u8; len]).unwrap()
        }),
        ("conf garbage", |d| std::fs::write(d.join("conf"), b"\xff\xfe garbage").unwrap()),
    ];
    for (name, damage) in damages {
        let (dir, port) = fresh(&name.replace(' ', "-"));
        make_database(&dir, port);
        damage(&dir);
        refuses(&dir, port, name);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn reset_data_moves_the_damage_aside_and_starts_empty() {
    let (dir, port) = fresh("reset");
    make_database(&dir, port);
    std::fs::File::create(dir.join("db")).unwrap();
    refuses(&dir, port, "db truncated");
    let mut child = node(&dir, port, &["--reset-data"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let status = wait_until(Duration::from_secs(20), || common::http_get(&format!("127.0.0.1:{port}"), "/status"));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(status.is_some(), "the node runs after --reset-data");
    assert!(String::from_utf8_lossy(&out.stderr).contains("starts EMPTY"), "it says so loudly");
    let parent = dir.parent().unwrap();
    let prefix = format!("{}.reset-", dir.file_name().unwrap().to_string_lossy());
    let aside: Vec<PathBuf> = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&prefix))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged directory is kept aside, not deleted");
    for p in aside.into_iter().chain([dir]) {
        std::fs::remove_dir_all(p).unwrap();
    }
}
