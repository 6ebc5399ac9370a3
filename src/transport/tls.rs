//! Mutual TLS (rustls with ring; no OpenSSL): the files of a cluster's certificates, the
//! configurations a member serves and calls with, and the identity a certificate names.
//!
//! Every certificate comes from the cluster's CA (`ca.pem`). Its subject says who holds it:
//! the common name `node-N` with the unit `member` is member N; `client-NAME` with the unit
//! `client` or `admin` is a client, an admin client may use the admin API. Only the holder of
//! `ca.key` can issue one ([`super::certs`]).

use facto_elections::NodeId;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The organizational units that give a certificate its role.
pub const MEMBER_UNIT: &str = "member";
pub const CLIENT_UNIT: &str = "client";
pub const ADMIN_UNIT: &str = "admin";

/// Who a peer's certificate says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Member(NodeId),
    Client { name: String, admin: bool },
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Member(id) => write!(f, "member {id}"),
            Identity::Client { name, admin: true } => write!(f, "admin client {name}"),
            Identity::Client { name, admin: false } => write!(f, "client {name}"),
        }
    }
}

/// The identity in a certificate (DER) the handshake already verified; `None` for one that
/// names no facto role.
pub fn identity_of(der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?;
    let unit = subject.iter_organizational_unit().next()?.as_str().ok()?;
    match unit {
        MEMBER_UNIT => name.strip_prefix("node-")?.parse().ok().map(Identity::Member),
        CLIENT_UNIT | ADMIN_UNIT => {
            Some(Identity::Client { name: name.strip_prefix("client-")?.to_string(), admin: unit == ADMIN_UNIT })
        }
        _ => None,
    }
}

/// Where a cluster's files are: `ca.pem`, `node-N.pem` and `node-N.key`, `client-NAME.*`.
pub fn ca_file(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

pub fn member_files(dir: &Path, id: NodeId) -> (PathBuf, PathBuf) {
    (dir.join(format!("node-{id}.pem")), dir.join(format!("node-{id}.key")))
}

pub fn client_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("client-{name}.pem")), dir.join(format!("client-{name}.key")))
}

/// What a member needs to serve and to call its peers over TLS.
#[derive(Clone)]
pub struct MemberTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

/// Member `id`'s configurations from `dir`: it presents `node-ID.pem` both ways and trusts
/// every certificate in `ca.pem` (more than one during a CA rotation).
pub fn member(dir: &Path, id: NodeId) -> Result<MemberTls, String> {
    let roots = roots(&ca_file(dir))?;
    let (cert, key) = member_files(dir, id);
    let (chain, key) = (certificates(&cert)?, private_key(&key)?);
    // Clients of the job API may come without a certificate; which routes need one, and
    // whose, is decided per request from the verified identity.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("{}: {e}", ca_file(dir).display()))?;
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let client = client_config(roots, Some((chain, key)))?;
    Ok(MemberTls { server: Arc::new(server), client: Arc::new(client) })
}

/// A client's configuration: it trusts `ca` and presents `cert`/`key` when given.
pub fn client(ca: &Path, cert_key: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>, String> {
    let identity = match cert_key {
        Some((cert, key)) => Some((certificates(cert)?, private_key(key)?)),
        None => None,
    };
    Ok(Arc::new(client_config(roots(ca)?, identity)?))
}

type Presented = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_config(roots: RootCertStore, identity: Option<Presented>) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string()),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// rustls' ring provider. rustls marks it deprecated because it has no post-quantum key
/// exchange; the provider that has one (aws-lc-rs) builds C code with cmake, which this
/// project does not require of a machine.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The name a server's certificate must carry for `host` (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| format!("'{host}' cannot name a TLS server: {e}"))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path)?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| format!("{}: not a PEM key: {e}", path.display()))?
        .ok_or_else(|| format!("{} holds no private key", path.display()))
}

fn roots(ca: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots.add(cert).map_err(|e| format!("{}: not a CA certificate: {e}", ca.display()))?;
    }
    Ok(roots)
}
