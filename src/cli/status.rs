//! `facto status`: ask every member for its view and print a table (or JSON).

use super::cluster_addrs;
use crate::api::{JobInfo, NodeStatus};
use crate::error::{Error, Result};
use crate::transport::Client;
use std::time::Duration;
use structopt::StructOpt;

const STATUS_TIMEOUT_MS: u64 = 1_000;

#[derive(StructOpt, Debug)]
pub struct StatusArgs {
    /// Members to ask: HOST:PORT,... [default: the local `facto cluster`]
    #[structopt(long, env = "FACTO_CLUSTER")]
    cluster: Option<String>,
    /// Print {"nodes": [...], "jobs": [...]} instead of tables.
    #[structopt(long)]
    json: bool,
    /// Redraw the tables every second until Ctrl-C.
    #[structopt(long, conflicts_with = "json")]
    watch: bool,
    #[structopt(flatten)]
    tls: super::TlsArgs,
}

/// How often `--watch` redraws.
const WATCH_EVERY_MS: u64 = 1_000;

pub fn run(args: StatusArgs) -> Result<()> {
    let addrs = cluster_addrs(args.cluster.as_deref())?;
    let client = args.tls.client(None)?;
    loop {
        let answers = ask_all(&client, &addrs);
        let nobody = answers.iter().all(|(_, s)| s.is_none());
        if !args.watch {
            if nobody {
                return Err(Error::Remote(format!("no member of {} answers", addrs.join(","))));
            }
            return print(&answers, args.json);
        }
        // Clear the terminal and draw from its top left corner.
        print!("\x1b[2J\x1b[H");
        if nobody {
            println!("no member of {} answers (retrying every second; Ctrl-C to stop)", addrs.join(","));
        } else {
            print(&answers, false)?;
        }
        std::thread::sleep(Duration::from_millis(WATCH_EVERY_MS));
    }
}

/// Every member's `/status`, asked in parallel (`None`: no answer).
fn ask_all(client: &Client, addrs: &[String]) -> Vec<(String, Option<NodeStatus>)> {
    async_std::task::block_on(futures::future::join_all(addrs.iter().map(|addr| {
        let client = client.clone();
        async move {
            let s = client.get::<NodeStatus>(addr, "/status", Duration::from_millis(STATUS_TIMEOUT_MS)).await;
            (addr.clone(), s.ok())
        }
    })))
}

fn print(answers: &[(String, Option<NodeStatus>)], json: bool) -> Result<()> {
    // The coordinator with the highest epoch lists the jobs.
    let jobs: Vec<JobInfo> = answers
        .iter()
        .filter_map(|(_, s)| s.as_ref())
        .filter(|s| s.role == "coordinator")
        .max_by_key(|s| s.epoch)
        .map(|s| s.jobs.clone())
        .unwrap_or_default();
    if json {
        let nodes: Vec<serde_json::Value> = answers
            .iter()
            .map(|(addr, s)| match s {
                Some(s) => {
                    let mut v = serde_json::to_value(s).unwrap_or_default();
                    v["up"] = true.into();
                    v
                }
                None => serde_json::json!({ "address": addr, "up": false }),
            })
            .collect();
        println!("{}", serde_json::json!({ "nodes": nodes, "jobs": jobs }));
        return Ok(());
    }
    println!(
        "{:<5} {:<22} {:<5} {:<12} {:<7} {:<6} {:>10} {:>13} {:>9}",
        "ID", "ADDRESS", "UP", "ROLE", "LEADER", "EPOCH", "OPS", "LEADER SEEN", "RESTARTS"
    );
    for (addr, s) in answers {
        match s {
            Some(s) => println!(
                "{:<5} {:<22} {:<5} {:<12} {:<7} {:<6} {:>10} {:>13} {:>9}",
                s.id,
                addr,
                "up",
                s.role,
                s.leader.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                s.epoch,
                s.operations_computed,
                s.last_leader_contact_ms.map(|ms| format!("{ms} ms ago")).unwrap_or_else(|| "never".into()),
                s.restarts
            ),
            None => println!("{:<5} {:<22} {:<5}", "?", addr, "down"),
        }
    }
    println!();
    if jobs.is_empty() {
        println!("no jobs");
    } else {
        println!("{:<12} {:>9} {:<8} {:>9} {:>14} {:>8}", "JOB", "N", "STATE", "PROGRESS", "OPS DONE/TOTAL", "REDONE");
        for j in &jobs {
            println!(
                "{:<12} {:>9} {:<8} {:>8.1}% {:>14} {:>8}",
                j.id,
                j.n,
                j.state,
                j.progress * 100.0,
                format!("{}/{}", j.operations_done, j.operations_total),
                j.operations_reexecuted
            );
        }
    }
    Ok(())
}
