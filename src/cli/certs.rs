//! `facto certs`: a cluster CA and the certificates of its members and clients, for mutual
//! TLS (`facto node --tls-dir`). One directory may hold them all; give each host only its
//! own `node-N.*` and `ca.pem` (never `ca.key`).

use crate::error::{Error, Result};
use crate::transport::certs::{self, Validity};
use std::path::PathBuf;
use structopt::StructOpt;

#[derive(StructOpt, Debug)]
pub enum CertsArgs {
    /// Make a cluster CA: DIR/ca.pem (give it to every member and client) and DIR/ca.key
    /// (keep it off the members).
    Init {
        #[structopt(long, parse(from_os_str))]
        dir: PathBuf,
    },
    /// Issue member N's certificate (DIR/node-N.pem and .key), valid for each --host the
    /// member is reached at (host names or addresses).
    Member {
        #[structopt(long)]
        id: u32,
        #[structopt(long = "host", required = true, min_values = 1)]
        hosts: Vec<String>,
        #[structopt(long, parse(from_os_str))]
        dir: PathBuf,
        /// Days the certificate is valid.
        #[structopt(long, default_value = "365")]
        days: u32,
    },
    /// Issue a client certificate (DIR/client-NAME.pem and .key); --admin lets it use the
    /// admin API (crash, stall, partition, heal).
    Client {
        #[structopt(long)]
        name: String,
        #[structopt(long)]
        admin: bool,
        #[structopt(long, parse(from_os_str))]
        dir: PathBuf,
        /// Days the certificate is valid.
        #[structopt(long, default_value = "365")]
        days: u32,
    },
}

pub fn run(args: CertsArgs) -> Result<()> {
    let validity = |days: u32| -> Result<Validity> {
        if days == 0 {
            return Err(Error::Usage("--days must be 1 or more".into()));
        }
        Ok(Validity { days: i64::from(days) })
    };
    let written = match args {
        CertsArgs::Init { dir } => certs::init(&dir),
        CertsArgs::Member { id, hosts, dir, days } => certs::member(&dir, id, &hosts, validity(days)?),
        CertsArgs::Client { name, admin, dir, days } => certs::client(&dir, &name, admin, validity(days)?),
    }
    .map_err(Error::Usage)?;
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
