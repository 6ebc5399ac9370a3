//! Issuing a cluster's certificates (rcgen): a CA, one certificate per member and client
//! certificates, as PEM files named as [`super::tls`] reads them. Keys are ECDSA P-256 and
//! written readable by their owner only.

use super::tls::{self, ADMIN_UNIT, CLIENT_UNIT, MEMBER_UNIT};
use facto_elections::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// How long a CA is valid.
const CA_DAYS: i64 = 10 * 365;

/// How long an issued certificate is valid: from `days` ago when negative (an expired one,
/// for tests), else from now.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub days: i64,
}

impl Validity {
    fn apply(self, params: &mut CertificateParams) {
        // An hour of slack for clocks a little behind the issuer's.
        let now = OffsetDateTime::now_utc() - Duration::hours(1);
        let (from, to) = if self.days > 0 {
            (now, now + Duration::days(self.days))
        } else {
            (now - Duration::days(self.days.abs() + 1), now - Duration::days(self.days.abs()))
        };
        params.not_before = from;
        params.not_after = to;
    }
}

/// Makes a cluster CA in `dir` (`ca.pem`, `ca.key`); refuses to replace one.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let (cert_path, key_path) = (tls::ca_file(dir), dir.join("ca.key"));
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(format!(
                "{} already exists: a cluster has one CA (move it away to make another)",
                path.display()
            ));
        }
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = subject("facto cluster CA", "ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Validity { days: CA_DAYS }.apply(&mut params);
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write(&cert_path, &cert.pem(), false)?;
    write(&key_path, &key.serialize_pem(), true)?;
    Ok(vec![cert_path, key_path])
}

/// Issues member `id`'s certificate, valid as a server for `hosts` (names or addresses) and
/// as a client; its subject names the member.
pub fn member(dir: &Path, id: NodeId, hosts: &[String], validity: Validity) -> Result<Vec<PathBuf>, String> {
    if hosts.is_empty() {
        return Err("give at least one --host the member is reached at (a name or an address)".into());
    }
    let mut params = CertificateParams::default();
    params.subject_alt_names = hosts.iter().map(|h| san(h)).collect::<Result<_, _>>()?;
    params.distinguished_name = subject(&format!("node-{id}"), MEMBER_UNIT);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let (cert, key) = tls::member_files(dir, id);
    issue(dir, params, validity, &cert, &key)
}

/// Issues a client certificate named `name`; an `admin` one may also use the admin API.
pub fn client(dir: &Path, name: &str, admin: bool, validity: Validity) -> Result<Vec<PathBuf>, String> {
    let valid =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid || name.starts_with('.') {
        return Err(format!("'{name}' cannot name a client: use 1-64 letters, digits, '-', '_' or '.'"));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(&format!("client-{name}"), if admin { ADMIN_UNIT } else { CLIENT_UNIT });
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let (cert, key) = tls::client_files(dir, name);
    issue(dir, params, validity, &cert, &key)
}

/// Signs `params` with the CA in `dir` and writes the certificate and a new key.
fn issue(
    dir: &Path,
    mut params: CertificateParams,
    validity: Validity,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Vec<PathBuf>, String> {
    let ca_pem = read(&tls::ca_file(dir))?;
    let ca_key = KeyPair::from_pem(&read(&dir.join("ca.key"))?).map_err(|e| format!("ca.key: {e}"))?;
    // The CA's certificate as rcgen holds it: same subject and key, so what it signs chains
    // to the ca.pem every member trusts.
    let ca = CertificateParams::from_ca_cert_pem(&ca_pem)
        .and_then(|p| p.self_signed(&ca_key))
        .map_err(|e| format!("ca.pem: {e}"))?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    validity.apply(&mut params);
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(|e| e.to_string())?;
    write(cert_path, &cert.pem(), false)?;
    write(key_path, &key.serialize_pem(), true)?;
    Ok(vec![cert_path.to_path_buf(), key_path.to_path_buf()])
}

fn subject(common_name: &str, unit: &str) -> rcgen::DistinguishedName {
    let mut name = rcgen::DistinguishedName::new();
    name.push(DnType::OrganizationName, "facto");
    name.push(DnType::OrganizationalUnitName, unit);
    name.push(DnType::CommonName, common_name);
    name
}

fn san(host: &str) -> Result<SanType, String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
    };
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) if host.len() > 253 || !host.split('.').all(label_ok) => {
            Err(format!("--host '{host}' is neither an address nor a host name (letters, digits, '-' and dots)"))
        }
        Err(_) => host
            .to_string()
            .try_into()
            .map(SanType::DnsName)
            .map_err(|e| format!("--host '{host}' is neither an address nor a host name: {e}")),
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e} (run 'facto certs init' first?)", path.display()))
}

/// Writes a PEM file; a `secret` one is readable by its owner only.
fn write(path: &Path, pem: &str, secret: bool) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(pem.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tls::{identity_of, Identity};

    fn der(path: &Path) -> Vec<u8> {
        let pem = std::fs::read(path).unwrap();
        let first = rustls_pemfile::certs(&mut pem.as_slice()).next().unwrap().unwrap().to_vec();
        first
    }

    #[test]
    fn issued_certificates_name_their_holders_and_load() {
        let dir = std::env::temp_dir().join(format!("facto-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        init(&dir).unwrap();
        assert!(init(&dir).unwrap_err().contains("already exists"), "a CA is never replaced");
        let year = Validity { days: 365 };
        member(&dir, 3, &["127.0.0.1".into(), "node-3.example".into()], year).unwrap();
        client(&dir, "ops", true, year).unwrap();
        client(&dir, "app", false, year).unwrap();
        assert!(client(&dir, "../x", false, year).is_err());
        assert!(member(&dir, 1, &[], year).is_err(), "a member is reached somewhere");
        assert!(member(&dir, 1, &["bad host!".into()], year).is_err());
        assert!(member(&dir, 1, &["a..b".into()], year).is_err());
        let (cert, _) = tls::member_files(&dir, 3);
        assert_eq!(identity_of(&der(&cert)), Some(Identity::Member(3)));
        let (admin, _) = tls::client_files(&dir, "ops");
        assert_eq!(identity_of(&der(&admin)), Some(Identity::Client { name: "ops".into(), admin: true }));
        let (app, _) = tls::client_files(&dir, "app");
        assert_eq!(identity_of(&der(&app)), Some(Identity::Client { name: "app".into(), admin: false }));
        assert_eq!(identity_of(&der(&tls::ca_file(&dir))), None, "the CA is nobody");
        assert!(tls::member(&dir, 3).is_ok());
        assert!(tls::member(&dir, 4).is_err(), "no files for member 4");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tls::member_files(&dir, 3).1).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "a key is its owner's only");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
