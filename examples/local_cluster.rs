//! Three nodes inside one process, through the library: elect a coordinator, compute 30!.
//!
//! `cargo run --release --example local_cluster`

use facto::api::{JobInfo, NodeStatus, SubmitRequest};
use facto::config::{Members, NodeConfig};
use facto::node::faults::Faults;
use facto::transport::Client;
use facto_elections::Algorithm;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Ask the OS for three free ports.
    let ports: Vec<u16> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").map(|l| l.local_addr().unwrap().port()))
        .collect::<Result<_, _>>()?;
    let peers: String = ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p},", i + 1)).collect();
    let members = Members::parse(&peers)?;
    let data = std::env::temp_dir().join(format!("facto-example-{}", std::process::id()));
    for (i, port) in ports.iter().enumerate() {
        let config = NodeConfig {
            id: i as u32 + 1,
            members: members.clone(),
            listen: format!("127.0.0.1:{port}"),
            algorithm: Algorithm::Raft,
            delay_ms: 0,
            data_dir: data.join(format!("node-{}", i + 1)),
            tick_ms: 10,
            max_n: 1_000,
            checkpoint: true,
            restarts: 0,
            reset_data: false,
            queue_jobs_max: 64,
            queue_ops_max: 16_000_000,
            retain_jobs: 10_000,
            retain_for_ms: None,
            // In-process: this example is not the `facto` program.
            converter: None,
        };
        async_std::task::spawn(async move {
            if let Err(e) = facto::member::run(config, None, None, Faults::none()).await {
                eprintln!("node stopped: {e}");
            }
        });
    }
    let result = async_std::task::block_on(async {
        let client = Client::new(None);
        let timeout = Duration::from_secs(2);
        let first = format!("127.0.0.1:{}", ports[0]);
        // Wait for an elected coordinator.
        loop {
            if let Ok(s) = client.get::<NodeStatus>(&first, "/status", timeout).await {
                if let Some(leader) = s.leader {
                    println!("node {leader} was elected coordinator at epoch {}", s.epoch);
                    break;
                }
            }
            async_std::task::sleep(Duration::from_millis(20)).await;
        }
        let job: JobInfo = client.post(&first, "/jobs", &SubmitRequest { n: 30, request: None }, timeout, &[]).await?;
        loop {
            let j: JobInfo = client.get(&first, &format!("/jobs/{}", job.id), timeout).await?;
            if let Some(result) = j.result {
                return Ok::<_, facto::transport::CallError>(result);
            }
            async_std::task::sleep(Duration::from_millis(10)).await;
        }
    })?;
    println!("30! = {result}");
    let _ = std::fs::remove_dir_all(data);
    Ok(())
}
