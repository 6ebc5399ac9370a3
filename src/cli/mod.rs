//! The command line (structopt). Each subcommand is a small function over the library.

mod bench;
mod certs;
mod chaos;
mod chaos_report;
mod cluster;
mod digits;
mod elections_bench;
mod load;
mod node;
pub use node::id_of_hostname;
mod progress;
mod status;
mod submit;

use crate::error::{Error, Result};
use structopt::clap::ErrorKind;
use structopt::StructOpt;

/// Where `facto cluster` puts its nodes by default, and so where clients look first.
pub const DEFAULT_BASE_PORT: u16 = 7001;
pub const DEFAULT_NODES: u16 = 6;

#[derive(StructOpt, Debug)]
#[structopt(name = "facto", about = "A fault-tolerant cluster that computes factorials")]
pub enum Command {
    /// Run one cluster member.
    #[structopt(setting = structopt::clap::AppSettings::AllowNegativeNumbers)]
    Node(node::NodeArgs),
    /// Ask the cluster for n! (one job per N).
    #[structopt(setting = structopt::clap::AppSettings::AllowNegativeNumbers)]
    Submit(submit::SubmitArgs),
    /// Show the members, the coordinator and the jobs.
    Status(status::StatusArgs),
    /// Start a local cluster of `facto node` processes and keep them running.
    #[structopt(setting = structopt::clap::AppSettings::AllowNegativeNumbers)]
    Cluster(cluster::ClusterArgs),
    /// Attack a running cluster (crashes, stalls, partitions) and check every job's result.
    #[structopt(setting = structopt::clap::AppSettings::AllowNegativeNumbers)]
    Chaos(chaos::ChaosArgs),
    /// Start a local cluster, time factorials on it, and compare with one thread in-process.
    #[structopt(setting = structopt::clap::AppSettings::AllowNegativeNumbers)]
    Bench(bench::BenchArgs),
    /// Issue the certificates of a mutual-TLS cluster: a CA, members, clients.
    Certs(certs::CertsArgs),
    /// Internal: a node's decimal conversion in a child process (bytes on stdin; digits, or
    /// with --pieces the pieces' frame, on stdout).
    #[structopt(setting = structopt::clap::AppSettings::Hidden)]
    ToDecimal(ToDecimalArgs),
}

#[derive(StructOpt, Debug)]
pub struct ToDecimalArgs {
    /// Split the number into this many pieces of --width decimal digits instead.
    #[structopt(long)]
    pieces: Option<usize>,
    #[structopt(long, default_value = "0")]
    width: u64,
}

/// Parses the arguments, runs the command and returns the process exit code. Mistakes get one
/// line on stderr and a non-zero code.
pub fn main() -> i32 {
    let command = match Command::from_iter_safe(std::env::args_os()) {
        Ok(c) => c,
        Err(e) if matches!(e.kind, ErrorKind::HelpDisplayed | ErrorKind::VersionDisplayed) => {
            println!("{}", e.message);
            return 0;
        }
        Err(e) => {
            // clap's message runs over several lines (reason, missing flags, usage): keep the
            // reason and the flags it names, on one line.
            let reason: Vec<&str> = e
                .message
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("USAGE:"))
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("{} (see 'facto --help')", reason.join(" "));
            return 2;
        }
    };
    let default_level = if matches!(command, Command::Node(_) | Command::Cluster(_)) { "info" } else { "warn" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp_millis()
        .init();
    let result = match command {
        Command::Node(args) => node::run(args),
        Command::Submit(args) => submit::run(args),
        Command::Status(args) => status::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Chaos(args) => chaos::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Certs(args) => certs::run(args),
        Command::ToDecimal(a) => {
            crate::node::converter::serve_child(a.pieces.map(|pieces| (pieces, a.width))).map_err(Error::from)
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// A duration such as `500ms`, `1s`, `1.5s`, `2m` or `1h`; a bare number is seconds.
fn parse_duration_ms(text: &str, flag: &str) -> Result<u64> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(Error::Usage(format!("{flag}: '{text}' is not a duration (e.g. 500ms, 1s, 2m)"))),
    };
    let value: f64 =
        number.parse().map_err(|_| Error::Usage(format!("{flag}: '{text}' is not a duration (e.g. 500ms, 1s, 2m)")))?;
    node::seconds_to_ms(value * scale, flag)
}

/// The members a client contacts: `--cluster`, else `FACTO_CLUSTER`, else the local cluster
/// that `facto cluster` starts with its defaults.
fn cluster_addrs(arg: Option<&str>) -> Result<Vec<String>> {
    let text = match arg {
        Some(t) => t.to_string(),
        None => {
            (0..DEFAULT_NODES).map(|i| format!("127.0.0.1:{}", DEFAULT_BASE_PORT + i)).collect::<Vec<_>>().join(",")
        }
    };
    let addrs: Vec<String> = text.split(',').map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect();
    if addrs.is_empty() {
        return Err(Error::Usage("--cluster is empty: give HOST:PORT,...".into()));
    }
    for a in &addrs {
        crate::config::check_addr(a).map_err(|why| Error::Usage(format!("bad --cluster address '{a}': {why}")))?;
    }
    Ok(addrs)
}

/// How a client reaches a TLS cluster: the CA it trusts and, for routes that need one, the
/// certificate it presents.
#[derive(StructOpt, Debug, Default, Clone)]
pub struct TlsArgs {
    /// Call the cluster over TLS, trusting this CA certificate (the cluster's ca.pem).
    #[structopt(long, env = "FACTO_CA", parse(from_os_str))]
    ca: Option<std::path::PathBuf>,
    /// Present this client certificate (with --key): `facto chaos` needs an admin one.
    #[structopt(long, env = "FACTO_CERT", parse(from_os_str))]
    cert: Option<std::path::PathBuf>,
    /// The key of --cert.
    #[structopt(long, env = "FACTO_KEY", parse(from_os_str))]
    key: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// A client over TLS when --ca is given (else plain HTTP) that sends `cluster_key`.
    fn client(&self, cluster_key: Option<String>) -> Result<crate::transport::Client> {
        Ok(crate::transport::Client::connecting(cluster_key, self.config()?))
    }

    /// The TLS configuration these flags give (`None`: plain HTTP).
    fn config(&self) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
        let cert_key = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => return Err(Error::Usage("give --cert and --key together".into())),
        };
        match &self.ca {
            Some(ca) => Ok(Some(crate::transport::tls::client(ca, cert_key).map_err(Error::Usage)?)),
            None if cert_key.is_some() => Err(Error::Usage("--cert needs --ca (the cluster's CA certificate)".into())),
            None => Ok(None),
        }
    }

    /// The files `facto cluster --tls` and `facto bench --tls` make in `dir`, as a client
    /// with the admin certificate uses them.
    fn local(dir: &std::path::Path) -> TlsArgs {
        let (cert, key) = crate::transport::tls::client_files(dir, LOCAL_ADMIN);
        TlsArgs { ca: Some(crate::transport::tls::ca_file(dir)), cert: Some(cert), key: Some(key) }
    }
}

/// The admin client a local TLS cluster issues for its user.
const LOCAL_ADMIN: &str = "admin";

/// Certificates for a local cluster of `nodes` members on loopback in `dir`: a CA, each
/// member's, and an admin client's. What is there already is kept (a restarted cluster
/// keeps its CA).
fn local_certificates(dir: &std::path::Path, nodes: u16) -> Result<()> {
    use crate::transport::{certs, tls};
    let year = certs::Validity { days: 365 };
    if !tls::ca_file(dir).exists() {
        certs::init(dir).map_err(Error::Usage)?;
    }
    let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
    for id in 1..=u32::from(nodes) {
        if !tls::member_files(dir, id).0.exists() {
            certs::member(dir, id, &hosts, year).map_err(Error::Usage)?;
        }
    }
    if !tls::client_files(dir, LOCAL_ADMIN).0.exists() {
        certs::client(dir, LOCAL_ADMIN, true, year).map_err(Error::Usage)?;
    }
    Ok(())
}
