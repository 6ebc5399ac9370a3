//! The floor under `facto bench --load`: what the HTTP stack facto serves clients with (tide
//! over async-h1 on async-std, TCP_NODELAY set) costs for the two requests of a job when the
//! server does nothing else. A server process answers `POST /jobs` with 202 and
//! `GET /jobs/:id` with 200 (small JSON, no state); closed-loop clients on keep-alive
//! connections send the pair, as the load benchmark's clients do. It prints the pairs per
//! second and the server's CPU per pair, which no facto job can undercut while each job is
//! two HTTP requests at a member.
//!
//! `cargo run --release --example http_floor -- [CLIENTS] [SECONDS] [SERVER_THREADS]`
//! (defaults 64, 5, 2).

use async_std::io::{prelude::BufReadExt, BufReader, ReadExt, WriteExt};
use async_std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        return async_std::task::block_on(serve(&args[1]));
    }
    let number = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (clients, seconds, threads) = (number(0, 64), number(1, 5), number(2, 2));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let addr = listener.local_addr().expect("bound").to_string();
    drop(listener);
    let mut server = std::process::Command::new(std::env::current_exe().expect("this program"))
        .args(["serve", &addr])
        .env("ASYNC_STD_THREAD_COUNT", threads.to_string())
        .spawn()
        .expect("the server process");
    let pairs = async_std::task::block_on(load(&addr, clients, seconds, server.id()));
    let _ = server.kill();
    let _ = server.wait();
    let (count, elapsed_s, cpu_s) = pairs;
    println!("http floor: {clients} clients, {elapsed_s:.1} s, server on {threads} threads");
    println!("pairs (POST + GET): {count} ({:.0}/s)", count as f64 / elapsed_s);
    println!("server CPU per pair: {:.0} µs", cpu_s * 1e6 / count.max(1) as f64);
}

async fn serve(addr: &str) {
    let mut app = tide::new();
    app.at("/jobs").post(|_| async { Ok(answer(202, r#"{"id":"1-1","n":20,"state":"running"}"#)) });
    app.at("/jobs/:id").get(|_| async { Ok(answer(200, r#"{"id":"1-1","n":20,"state":"done"}"#)) });
    let listener = TcpListener::bind(addr).await.expect("the server's port");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        async_std::task::spawn(async move {
            let _ = async_h1::accept(stream, |req| async { app.respond(req).await }).await;
        });
    }
}

fn answer(status: u16, body: &str) -> tide::Response {
    let mut response = tide::Response::new(status);
    response.set_body(body);
    response.set_content_type("application/json");
    response
}

/// Runs the clients for `seconds`; returns the pairs done, the time taken and the server's
/// CPU seconds meanwhile.
async fn load(addr: &str, clients: u64, seconds: u64, server_pid: u32) -> (u64, f64, f64) {
    while TcpStream::connect(addr).await.is_err() {
        async_std::task::sleep(Duration::from_millis(20)).await;
    }
    let (start, cpu_before) = (Instant::now(), cpu_seconds(server_pid));
    let until = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients).map(|_| async_std::task::spawn(client(addr.to_string(), until))).collect();
    let mut pairs = 0;
    for task in tasks {
        pairs += task.await;
    }
    (pairs, start.elapsed().as_secs_f64(), cpu_seconds(server_pid) - cpu_before)
}

async fn client(addr: String, until: Instant) -> u64 {
    let stream = TcpStream::connect(&addr).await.expect("the server");
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.clone());
    let mut writer = stream;
    let post = format!(
        "POST /jobs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{{\"n\":20}}"
    );
    let get = format!("GET /jobs/1-1?wait_ms=1000 HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    let mut pairs = 0;
    while Instant::now() < until {
        for request in [&post, &get] {
            writer.write_all(request.as_bytes()).await.expect("a request sent");
            read_answer(&mut reader).await;
        }
        pairs += 1;
    }
    pairs
}

async fn read_answer(reader: &mut BufReader<TcpStream>) {
    let (mut line, mut length) = (String::new(), 0);
    loop {
        line.clear();
        reader.read_line(&mut line).await.expect("an answer");
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse().expect("a length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.expect("the body");
}

/// User + system CPU seconds of a process, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum());
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}
