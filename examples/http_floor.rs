//! The floor under `facto bench --load`: what the HTTP stack facto serves clients with (tide
//! over async-h1 on async-std, TCP_NODELAY set) costs for the two requests of a job when the
//! server does nothing else. A server process answers `POST /jobs` with 202 and
//! `GET /jobs/:id` with 200 (small JSON, no state); closed-loop clients on keep-alive
//! connections send the pair, as the load benchmark's clients do. It prints the pairs per
//! second and the server's CPU per pair, which no facto job can undercut while each job is
//! two HTTP requests at a member.
//!
//! With `--relay`, the clients talk to a second process that forwards every request to the
//! server through facto's own client (`transport::Client`, as a follower forwards to its
//! coordinator), and the relay's CPU per pair is printed: what a forwarding hop costs.
//!
//! `cargo run --release --example http_floor -- [CLIENTS] [SECONDS] [SERVER_THREADS] [--relay]`
//! (defaults 64, 5, 2).

use async_std::io::{prelude::BufReadExt, BufReader, ReadExt, WriteExt};
use async_std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => return async_std::task::block_on(serve(&args[1])),
        Some("relay") => return async_std::task::block_on(relay(&args[1], args[2].clone())),
        _ => {}
    }
    let relayed = args.iter().any(|a| a == "--relay");
    args.retain(|a| a != "--relay");
    let number = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (clients, seconds, threads) = (number(0, 64), number(1, 5), number(2, 2));
    let addr = free_addr();
    let mut processes = vec![start(&["serve", &addr], threads)];
    let front = if relayed {
        let front = free_addr();
        processes.push(start(&["relay", &front, &addr], threads));
        front
    } else {
        addr
    };
    let measured = processes.last().expect("a server").id();
    let (count, elapsed_s, cpu_s) = async_std::task::block_on(load(&front, clients, seconds, measured));
    for mut process in processes {
        let _ = process.kill();
        let _ = process.wait();
    }
    let what = if relayed { "relay" } else { "server" };
    println!("http floor: {clients} clients, {elapsed_s:.1} s, {what} on {threads} threads");
    println!("pairs (POST + GET): {count} ({:.0}/s)", count as f64 / elapsed_s);
    println!("{what} CPU per pair: {:.0} µs", cpu_s * 1e6 / count.max(1) as f64);
}

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    listener.local_addr().expect("bound").to_string()
}

fn start(args: &[&str], threads: u64) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("this program"))
        .args(args)
        .env("ASYNC_STD_THREAD_COUNT", threads.to_string())
        .spawn()
        .expect("a server process")
}

async fn serve(addr: &str) {
    let mut app = tide::new();
    // The body is read: async-h1 does not drain an unread one, and the next request on the
    // connection would be lost with it.
    app.at("/jobs").post(|mut req: tide::Request<()>| async move {
        let _ = req.body_bytes().await;
        Ok(echoed(&req, answer(202, r#"{"id":"1-1","n":20,"state":"running"}"#)))
    });
    app.at("/jobs/:id").get(|req: tide::Request<()>| async move {
        Ok(echoed(&req, answer(200, r#"{"id":"1-1","n":20,"state":"done"}"#)))
    });
    accept(addr, app).await
}

/// facto's client checks that an answer echoes its request's id.
fn echoed<S>(req: &tide::Request<S>, mut res: tide::Response) -> tide::Response {
    if let Some(id) = req.header(facto::transport::client::REQUEST_ID_HEADER) {
        res.insert_header(facto::transport::client::REQUEST_ID_HEADER, id.as_str());
    }
    res
}

type Relay = (facto::transport::Client, String);

/// Forwards each request to `backend` through facto's client, and its answer back.
async fn relay(addr: &str, backend: String) {
    let mut app = tide::with_state((facto::transport::Client::new(None), backend));
    app.at("/jobs").post(|req: tide::Request<Relay>| async move {
        let (client, backend) = req.state();
        let answer = client.post_bytes(backend, "/jobs", b"{\"n\":20}".to_vec(), TIMEOUT, &[]).await;
        relayed(202, answer)
    });
    app.at("/jobs/:id").get(|req: tide::Request<Relay>| async move {
        let (client, backend) = req.state();
        relayed(200, client.get_bytes_with(backend, "/jobs/1-1", TIMEOUT, &[]).await)
    });
    accept(addr, app).await
}

const TIMEOUT: Duration = Duration::from_secs(5);

fn relayed(status: u16, answer: Result<Vec<u8>, facto::transport::CallError>) -> tide::Result {
    let body = answer.map_err(|e| tide::Error::from_str(502, e.to_string()))?;
    Ok(answer_bytes(status, body))
}

async fn accept<S: Clone + Send + Sync + 'static>(addr: &str, app: tide::Server<S>) {
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
    answer_bytes(status, body.as_bytes().to_vec())
}

fn answer_bytes(status: u16, body: Vec<u8>) -> tide::Response {
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
