//! The cluster's TLS material: one CA, the apiserver's serving certificate and client
//! certificates, generated with rcgen when absent and reused on restart, plus the rustls
//! configurations built from them.
//!
//! Identities follow upstream's x509 authenticator: the subject CN of a verified client
//! certificate is the user name and every O is a group
//! (`staging/src/k8s.io/apiserver/pkg/authentication/request/x509/x509.go`, `CommonNameUserConversion`).

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Datelike, Months, NaiveDate, Utc};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType, SigningKey,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};

/// How long the CA is valid (upstream kubeadm: ten years).
const CA_VALIDITY_YEARS: u32 = 10;
/// How long serving and client certificates are valid (upstream kubeadm: one year).
const LEAF_VALIDITY_YEARS: u32 = 1;
/// `ensure_cert_dir` reissues a leaf certificate that expires sooner than this.
const RENEW_BEFORE_SECS: i64 = 30 * 24 * 60 * 60;

/// Common name of the CA that `ensure_cert_dir` generates (upstream kubeadm: `kubernetes`).
pub const CA_COMMON_NAME: &str = "kubernetes";
/// Common name of the apiserver's serving certificate.
pub const SERVING_COMMON_NAME: &str = "kube-apiserver";
/// The admin user of the generated admin client certificate (upstream kubeadm's admin.conf).
pub const ADMIN_USER: &str = "kubernetes-admin";
/// The group that bypasses authorization (upstream: `system:masters`).
pub const ADMIN_GROUP: &str = "system:masters";

/// DER tags used when rewriting a certificate's subject.
const DER_SEQUENCE: u8 = 0x30;
const DER_SET: u8 = 0x31;
const DER_OID: u8 = 0x06;
const DER_UTF8_STRING: u8 = 0x0c;
const DER_BIT_STRING: u8 = 0x03;
const DER_VERSION: u8 = 0xa0;
/// OID contents of id-at-commonName (2.5.4.3) and id-at-organizationName (2.5.4.10).
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

/// Everything that can go wrong reading, generating or using TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("generating {what}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("parsing private key")]
    ParseKey(#[source] rcgen::Error),
    #[error("parsing pem")]
    Pem(#[source] io::Error),
    #[error("no certificate found in pem")]
    NoCertificate,
    #[error("no private key found in pem")]
    NoPrivateKey,
    #[error("parsing certificate: {0}")]
    ParseCertificate(String),
    #[error("certificate is not a ca")]
    NotCa,
    #[error("private key does not match the certificate")]
    KeyMismatch,
    #[error("invalid dns name {0:?}")]
    InvalidDnsName(String),
    #[error("building tls configuration")]
    Rustls(#[source] rustls::Error),
    #[error("building client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

/// A PEM certificate (optionally followed by its chain) and its PEM private key.
#[derive(Clone, PartialEq, Eq)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertKey").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

impl CertKey {
    /// Writes the certificate (mode 0644) and the key (mode 0600), creating parent directories.
    /// Blocking: call from `spawn_blocking` in async code.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
        write_file(cert_path, self.cert_pem.as_bytes(), 0o644)?;
        write_file(key_path, self.key_pem.as_bytes(), 0o600)
    }

    /// Reads a certificate and key pair written by [`CertKey::write`] (or any PEM files).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<CertKey, TlsError> {
        Ok(CertKey { cert_pem: read_file(cert_path)?, key_pem: read_file(key_path)? })
    }

    /// The certificate chain as DER, leaf first.
    pub fn cert_chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        parse_certs(&self.cert_pem)
    }

    /// The private key as DER.
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        parse_private_key(&self.key_pem)
    }
}

/// A certificate authority that can sign serving and client certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed CA, valid for ten years, that may sign certificates and CRLs.
    pub fn generate(common_name: &str) -> Result<Ca, TlsError> {
        let generate = |source| TlsError::Generate { what: format!("ca {common_name:?}"), source };
        let key = KeyPair::generate().map_err(generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, CA_VALIDITY_YEARS);
        let cert = params.self_signed(&key).map_err(generate)?;
        let key_pem = key.serialize_pem();
        Ok(Ca { cert_pem: cert.pem(), key_pem, issuer: Issuer::new(params, key) })
    }

    /// Loads an existing CA, so that a restart keeps signing with the same authority.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Ca, TlsError> {
        Ca::from_pem(&read_file(cert_path)?, &read_file(key_path)?)
    }

    /// Rebuilds a CA from its PEM certificate and PEM private key; checks that the
    /// certificate is a CA and that the key belongs to it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(TlsError::ParseKey)?;
        let certs = parse_certs(cert_pem)?;
        let der = certs.first().ok_or(TlsError::NoCertificate)?;
        let cert = parse_x509(der)?;
        if !cert.is_ca() {
            return Err(TlsError::NotCa);
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(TlsError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(der, key).map_err(|e| TlsError::ParseCertificate(e.to_string()))?;
        Ok(Ca { issuer, cert_pem: cert_pem.to_owned(), key_pem: key_pem.to_owned() })
    }

    /// The CA certificate, PEM encoded (what kubeconfigs carry as `certificate-authority-data`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM encoded.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA certificate and key as a pair, for writing to disk.
    pub fn cert_key(&self) -> CertKey {
        CertKey { cert_pem: self.cert_pem.clone(), key_pem: self.key_pem.clone() }
    }

    /// A serving certificate (server auth) for the given DNS names and IP addresses.
    pub fn issue_serving(&self, cn: &str, dns_names: &[String], ips: &[IpAddr]) -> Result<CertKey, TlsError> {
        let mut params = leaf_params();
        params.distinguished_name.push(DnType::CommonName, cn);
        for name in dns_names {
            let name = Ia5String::try_from(name.as_str()).map_err(|_| TlsError::InvalidDnsName(name.clone()))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let generate = |source| TlsError::Generate { what: format!("serving certificate {cn:?}"), source };
        let key = KeyPair::generate().map_err(generate)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        Ok(CertKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A client certificate (client auth) whose subject is `O=<group>` for each group, then
    /// `CN=<user>`: the shape upstream's x509 authenticator maps to a user and its groups.
    pub fn issue_client(&self, cn: &str, groups: &[String]) -> Result<CertKey, TlsError> {
        let mut params = leaf_params();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let generate = |source| TlsError::Generate { what: format!("client certificate {cn:?}"), source };
        let key = KeyPair::generate().map_err(generate)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        // rcgen keeps one value per attribute type, so a subject with several O attributes
        // is written here and the certificate signed again with the CA key.
        let der = with_subject(cert.der(), &client_subject(cn, groups), self.issuer.key()).map_err(generate)?;
        Ok(CertKey { cert_pem: pem_encode("CERTIFICATE", &der), key_pem: key.serialize_pem() })
    }
}

/// The certificates of one cluster, as `ensure_cert_dir` left them on disk.
#[derive(Debug)]
pub struct CertDir {
    pub dir: PathBuf,
    pub ca_cert_path: PathBuf,
    pub ca_key_path: PathBuf,
    pub serving_cert_path: PathBuf,
    pub serving_key_path: PathBuf,
    pub admin_cert_path: PathBuf,
    pub admin_key_path: PathBuf,
    pub ca: Ca,
    /// The apiserver's serving certificate (`apiserver.crt` / `apiserver.key`).
    pub serving: CertKey,
    /// The `kubernetes-admin` client certificate in group `system:masters`.
    pub admin: CertKey,
}

impl CertDir {
    /// The CA certificate, PEM encoded.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }
}

/// Makes sure `dir` holds a CA (`ca.crt`/`ca.key`), a serving certificate
/// (`apiserver.crt`/`apiserver.key`) covering `serving_dns` and `serving_ips`, and an admin
/// client certificate (`admin.crt`/`admin.key`), reusing what is there and still valid.
/// Safe to call on every start. Blocking: call from `spawn_blocking` in async code.
pub fn ensure_cert_dir(dir: &Path, serving_dns: &[String], serving_ips: &[IpAddr]) -> Result<CertDir, TlsError> {
    let path = |name: &str| dir.join(name);
    let (ca_cert_path, ca_key_path) = (path("ca.crt"), path("ca.key"));
    let (serving_cert_path, serving_key_path) = (path("apiserver.crt"), path("apiserver.key"));
    let (admin_cert_path, admin_key_path) = (path("admin.crt"), path("admin.key"));

    let ca = if ca_cert_path.exists() && ca_key_path.exists() {
        Ca::load(&ca_cert_path, &ca_key_path)?
    } else {
        tracing::info!(dir = %dir.display(), "generating cluster ca");
        let ca = Ca::generate(CA_COMMON_NAME)?;
        ca.cert_key().write(&ca_cert_path, &ca_key_path)?;
        ca
    };

    let serving = match load_if_valid(&serving_cert_path, &serving_key_path, |cert| {
        serving_cert_fits(cert, &ca, serving_dns, serving_ips)
    }) {
        Some(serving) => serving,
        None => {
            tracing::info!(dir = %dir.display(), "issuing apiserver serving certificate");
            let serving = ca.issue_serving(SERVING_COMMON_NAME, serving_dns, serving_ips)?;
            serving.write(&serving_cert_path, &serving_key_path)?;
            serving
        }
    };

    let admin_groups = [ADMIN_GROUP.to_owned()];
    let admin = match load_if_valid(&admin_cert_path, &admin_key_path, |cert| {
        client_cert_fits(cert, &ca, ADMIN_USER, &admin_groups)
    }) {
        Some(admin) => admin,
        None => {
            tracing::info!(dir = %dir.display(), "issuing admin client certificate");
            let admin = ca.issue_client(ADMIN_USER, &admin_groups)?;
            admin.write(&admin_cert_path, &admin_key_path)?;
            admin
        }
    };

    Ok(CertDir {
        dir: dir.to_path_buf(),
        ca_cert_path,
        ca_key_path,
        serving_cert_path,
        serving_key_path,
        admin_cert_path,
        admin_key_path,
        ca,
        serving,
        admin,
    })
}

/// A TLS server configuration for `cert`, using the ring provider, speaking `http/1.1`.
/// With `client_ca_pem`, client certificates signed by that CA are requested but optional,
/// so bearer-token users connect too; a presented certificate must verify.
pub fn server_config(cert: &CertKey, client_ca_pem: Option<&str>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?;
    let builder = match client_ca_pem {
        Some(ca_pem) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(ca_pem)?), provider)
                .allow_unauthenticated()
                .build()
                .map_err(TlsError::Verifier)?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(cert.cert_chain()?, cert.private_key()?).map_err(TlsError::Rustls)?;
    // TODO(h2): offer h2 once the server speaks it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS client configuration trusting `ca_pem`, presenting `client` when given.
pub fn client_config(ca_pem: &str, client: Option<&CertKey>) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .with_root_certificates(root_store(ca_pem)?);
    let mut config = match client {
        Some(client) => {
            builder.with_client_auth_cert(client.cert_chain()?, client.private_key()?).map_err(TlsError::Rustls)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The user a client certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

/// Maps a client certificate to a user: CN is the user name, each O a group (upstream's
/// `CommonNameUserConversion`). `None` when the DER does not parse or the CN is empty.
/// Only call this on a certificate the TLS layer verified (`peer_certificates()[0]`).
pub fn identity_from_cert(der: &[u8]) -> Option<PeerIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    identity_of(&cert)
}

fn identity_of(cert: &X509Certificate<'_>) -> Option<PeerIdentity> {
    let subject = cert.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    if user.is_empty() {
        return None;
    }
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok()).map(str::to_owned).collect();
    Some(PeerIdentity { user, groups })
}

/// Parameters shared by serving and client certificates.
fn leaf_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, LEAF_VALIDITY_YEARS);
    params
}

/// Sets validity from the start of yesterday (UTC, tolerating clock skew) for `years` years.
fn set_validity(params: &mut CertificateParams, years: u32) {
    let today = Utc::now().date_naive();
    let start = today.pred_opt().unwrap_or(today);
    let end = today.checked_add_months(Months::new(years * 12)).unwrap_or(NaiveDate::MAX);
    // rcgen::date_time_ymd panics outside the years 1970..=9999 that certificates can carry,
    // so clamp; inside, chrono dates are valid calendar dates whose month and day fit u8.
    let ymd = |d: NaiveDate| match d.year() {
        y if y > 9999 => rcgen::date_time_ymd(9999, 12, 31),
        y if y < 1970 => rcgen::date_time_ymd(1970, 1, 1),
        y => rcgen::date_time_ymd(y, d.month() as u8, d.day() as u8),
    };
    params.not_before = ymd(start);
    params.not_after = ymd(end);
}

/// Loads a certificate pair and returns it when `fits` accepts the parsed certificate and
/// the key belongs to it; anything unreadable or unfit means "issue a new one".
fn load_if_valid(cert_path: &Path, key_path: &Path, fits: impl Fn(&X509Certificate<'_>) -> bool) -> Option<CertKey> {
    if !cert_path.exists() || !key_path.exists() {
        return None;
    }
    let pair = match CertKey::load(cert_path, key_path) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::warn!(path = %cert_path.display(), error = %error, "replacing unreadable certificate");
            return None;
        }
    };
    let der = pair.cert_chain().ok()?.into_iter().next()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let key = KeyPair::from_pem(&pair.key_pem).ok()?;
    let key_matches = cert.public_key().subject_public_key.data.as_ref() == key.der_bytes();
    (key_matches && fits(&cert)).then_some(pair)
}

/// Whether `cert` was issued by `ca` and is not about to expire.
fn issued_by_and_current(cert: &X509Certificate<'_>, ca: &Ca) -> bool {
    let Ok(ca_der) = parse_certs(&ca.cert_pem) else {
        return false;
    };
    let Some(Ok((_, ca_cert))) = ca_der.first().map(|der| x509_parser::parse_x509_certificate(der)) else {
        return false;
    };
    let ca_key_id = ca_cert.extensions().iter().find_map(|ext| match ext.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0),
        _ => None,
    });
    let authority_key_id = cert.extensions().iter().find_map(|ext| match ext.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|id| id.0),
        _ => None,
    });
    let same_key = match (ca_key_id, authority_key_id) {
        (Some(ca_id), Some(id)) => ca_id == id,
        _ => false,
    };
    let not_expiring = cert.validity().not_after.timestamp() > Utc::now().timestamp() + RENEW_BEFORE_SECS;
    same_key && cert.issuer().as_raw() == ca_cert.subject().as_raw() && not_expiring
}

fn serving_cert_fits(cert: &X509Certificate<'_>, ca: &Ca, dns_names: &[String], ips: &[IpAddr]) -> bool {
    let server_auth = matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.server_auth);
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let mut have_dns = Vec::new();
    let mut have_ips = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(dns) => have_dns.push(dns.to_ascii_lowercase()),
            GeneralName::IPAddress(bytes) => have_ips.extend(ip_from_bytes(bytes)),
            _ => {}
        }
    }
    let covers_dns = dns_names.iter().all(|name| have_dns.contains(&name.to_ascii_lowercase()));
    let covers_ips = ips.iter().all(|ip| have_ips.contains(ip));
    server_auth && covers_dns && covers_ips && issued_by_and_current(cert, ca)
}

fn client_cert_fits(cert: &X509Certificate<'_>, ca: &Ca, user: &str, groups: &[String]) -> bool {
    let client_auth = matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth);
    let identity = identity_of(cert);
    let same_identity = identity.is_some_and(|id| id.user == user && id.groups == groups);
    client_auth && same_identity && issued_by_and_current(cert, ca)
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, TlsError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| TlsError::ParseCertificate(e.to_string()))
}

fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(TlsError::Pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

fn parse_private_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut pem.as_bytes()).map_err(TlsError::Pem)?.ok_or(TlsError::NoPrivateKey)
}

fn root_store(ca_pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem)? {
        roots.add(cert).map_err(TlsError::Rustls)?;
    }
    Ok(roots)
}

fn read_file(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    write_file_mode(path, data, mode).map_err(|source| TlsError::Write { path: path.to_path_buf(), source })
}

/// Writes `data` to `path` in place with permissions `mode`, creating parent directories.
/// The mode is set before any data is written, so a key never sits in a readable file.
pub(crate) fn write_file_mode(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path)?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(data)?;
    file.sync_all()
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // base64 output is ASCII, so splitting its bytes yields valid UTF-8 lines.
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER subject `O=<group>...,CN=<user>`, one attribute per RDN (as openssl writes it).
fn client_subject(cn: &str, groups: &[String]) -> Vec<u8> {
    let rdn = |oid: &[u8], value: &str| {
        let atv = [der(DER_OID, oid), der(DER_UTF8_STRING, value.as_bytes())].concat();
        der(DER_SET, &der(DER_SEQUENCE, &atv))
    };
    let mut rdns: Vec<u8> = groups.iter().flat_map(|group| rdn(OID_ORGANIZATION, group)).collect();
    rdns.extend(rdn(OID_COMMON_NAME, cn));
    der(DER_SEQUENCE, &rdns)
}

/// Replaces the subject of `cert` with `subject` and signs the result with `signer`,
/// keeping everything else (serial, validity, extensions, algorithm) as rcgen wrote it.
fn with_subject(cert: &[u8], subject: &[u8], signer: &impl SigningKey) -> Result<Vec<u8>, rcgen::Error> {
    let malformed = || rcgen::Error::CouldNotParseCertificate;
    let parts = der_children(der_content(cert, DER_SEQUENCE).ok_or_else(malformed)?).ok_or_else(malformed)?;
    let [tbs, signature_algorithm, _signature] = parts.as_slice() else {
        return Err(malformed());
    };
    let mut fields = der_children(der_content(tbs, DER_SEQUENCE).ok_or_else(malformed)?).ok_or_else(malformed)?;
    // TBSCertificate: [0] version, serial, signature, issuer, validity, subject, ...
    let subject_index = match fields.first() {
        Some(first) if first.first() == Some(&DER_VERSION) => 5,
        _ => 4,
    };
    let slot = fields.get_mut(subject_index).ok_or_else(malformed)?;
    if slot.first() != Some(&DER_SEQUENCE) {
        return Err(malformed());
    }
    *slot = subject;
    let tbs = der(DER_SEQUENCE, &fields.concat());
    let signature = signer.sign(&tbs)?;
    let bits = [&[0u8][..], &signature].concat();
    Ok(der(DER_SEQUENCE, &[tbs.as_slice(), signature_algorithm, &der(DER_BIT_STRING, &bits)].concat()))
}

/// Encodes one DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// The length of the TLV at the start of `input` (header included) and of its header.
fn der_tlv_len(input: &[u8]) -> Option<(usize, usize)> {
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        let len = bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let total = header.checked_add(len)?;
    (total <= input.len()).then_some((total, header))
}

/// The content of the single TLV `input`, which must carry `tag`.
fn der_content(input: &[u8], tag: u8) -> Option<&[u8]> {
    if input.first() != Some(&tag) {
        return None;
    }
    let (total, header) = der_tlv_len(input)?;
    (total == input.len()).then(|| &input[header..])
}

/// Splits a DER content into its TLVs.
fn der_children(mut content: &[u8]) -> Option<Vec<&[u8]>> {
    let mut children = Vec::new();
    while !content.is_empty() {
        let (total, _) = der_tlv_len(content)?;
        let (child, rest) = content.split_at(total);
        children.push(child);
        content = rest;
    }
    Some(children)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    fn x509(pem: &str) -> Vec<u8> {
        parse_certs(pem).unwrap().remove(0).to_vec()
    }

    #[test]
    fn ca_is_a_ten_year_signing_ca() {
        let ca = Ca::generate("test-ca").unwrap();
        let der = x509(ca.cert_pem());
        let cert = parse_x509(&der).unwrap();
        assert!(cert.is_ca());
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "test-ca");
        let years = (cert.validity().not_after.timestamp() - Utc::now().timestamp()) / 31_536_000;
        assert!((9..=10).contains(&years), "{years}");
    }

    #[test]
    fn serving_cert_has_sans_and_server_auth() {
        let ca = Ca::generate("test-ca").unwrap();
        let dns = vec!["localhost".to_owned(), "kubernetes.default.svc".to_owned()];
        let ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
        let pair = ca.issue_serving("kube-apiserver", &dns, &ips).unwrap();
        let der = x509(&pair.cert_pem);
        let cert = parse_x509(&der).unwrap();
        assert!(!cert.is_ca());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        let mut got_dns = Vec::new();
        let mut got_ips = Vec::new();
        for name in &san.general_names {
            match name {
                GeneralName::DNSName(d) => got_dns.push(d.to_string()),
                GeneralName::IPAddress(b) => got_ips.push(ip_from_bytes(b).unwrap()),
                other => panic!("unexpected san {other:?}"),
            }
        }
        assert_eq!(got_dns, dns);
        assert_eq!(got_ips, ips);
        assert!(serving_cert_fits(&cert, &ca, &dns, &ips));
        assert!(!serving_cert_fits(&cert, &ca, &["other.example".to_owned()], &ips));
    }

    #[test]
    fn serving_cert_rejects_invalid_dns_name() {
        let ca = Ca::generate("test-ca").unwrap();
        let err = ca.issue_serving("x", &["bad\u{e9}name".to_owned()], &[]).unwrap_err();
        assert!(matches!(err, TlsError::InvalidDnsName(_)), "{err}");
    }

    #[test]
    fn client_cert_maps_cn_to_user_and_each_o_to_a_group() {
        let ca = Ca::generate("test-ca").unwrap();
        let groups = vec!["system:masters".to_owned(), "devs".to_owned()];
        let pair = ca.issue_client("alice", &groups).unwrap();
        let der = x509(&pair.cert_pem);
        let cert = parse_x509(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let orgs: Vec<_> = cert.subject().iter_organization().map(|o| o.as_str().unwrap()).collect();
        assert_eq!(orgs, ["system:masters", "devs"]);
        assert_eq!(identity_from_cert(&der), Some(PeerIdentity { user: "alice".to_owned(), groups }));
        assert!(issued_by_and_current(&cert, &ca));
    }

    #[test]
    fn client_cert_without_groups() {
        let ca = Ca::generate("test-ca").unwrap();
        let pair = ca.issue_client("bob", &[]).unwrap();
        let identity = identity_from_cert(&x509(&pair.cert_pem)).unwrap();
        assert_eq!(identity.user, "bob");
        assert!(identity.groups.is_empty());
    }

    #[test]
    fn identity_from_garbage_is_none() {
        assert_eq!(identity_from_cert(b"not a certificate"), None);
    }

    #[test]
    fn ca_round_trips_through_pem() {
        let ca = Ca::generate("test-ca").unwrap();
        let loaded = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let pair = loaded.issue_client("carol", &[]).unwrap();
        let cert_der = x509(&pair.cert_pem);
        let cert = parse_x509(&cert_der).unwrap();
        assert!(issued_by_and_current(&cert, &ca));
    }

    #[test]
    fn ca_load_rejects_foreign_key_and_leaf_cert() {
        let ca = Ca::generate("a").unwrap();
        let other = Ca::generate("b").unwrap();
        assert!(matches!(Ca::from_pem(ca.cert_pem(), other.key_pem()), Err(TlsError::KeyMismatch)));
        let leaf = ca.issue_client("x", &[]).unwrap();
        assert!(matches!(Ca::from_pem(&leaf.cert_pem, &leaf.key_pem), Err(TlsError::NotCa)));
    }

    #[test]
    fn cert_key_write_sets_key_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("test-ca").unwrap();
        let pair = ca.issue_client("x", &[]).unwrap();
        let (cert_path, key_path) = (dir.path().join("a/x.crt"), dir.path().join("a/x.key"));
        pair.write(&cert_path, &key_path).unwrap();
        let mode = fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(CertKey::load(&cert_path, &key_path).unwrap(), pair);
    }

    #[test]
    fn ensure_cert_dir_reuses_ca_and_certs() {
        let dir = tempfile::tempdir().unwrap();
        let dns = vec!["localhost".to_owned()];
        let ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let first = ensure_cert_dir(dir.path(), &dns, &ips).unwrap();
        let second = ensure_cert_dir(dir.path(), &dns, &ips).unwrap();
        assert_eq!(first.ca_pem(), second.ca_pem());
        assert_eq!(first.serving, second.serving);
        assert_eq!(first.admin, second.admin);
        let mode = fs::metadata(&first.ca_key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let admin = identity_from_cert(&x509(&second.admin.cert_pem)).unwrap();
        assert_eq!(admin.user, ADMIN_USER);
        assert_eq!(admin.groups, [ADMIN_GROUP]);
    }

    #[test]
    fn ensure_cert_dir_reissues_serving_cert_for_new_sans() {
        let dir = tempfile::tempdir().unwrap();
        let ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let first = ensure_cert_dir(dir.path(), &[], &ips).unwrap();
        let more_ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))];
        let second = ensure_cert_dir(dir.path(), &["localhost".to_owned()], &more_ips).unwrap();
        assert_eq!(first.ca_pem(), second.ca_pem());
        assert_ne!(first.serving, second.serving);
        assert_eq!(first.admin, second.admin);
        let der = x509(&second.serving.cert_pem);
        let cert = parse_x509(&der).unwrap();
        assert!(serving_cert_fits(&cert, &second.ca, &["localhost".to_owned()], &more_ips));
    }

    #[test]
    fn ensure_cert_dir_reissues_leaves_after_ca_changes() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_cert_dir(dir.path(), &[], &[]).unwrap();
        fs::remove_file(&first.ca_key_path).unwrap();
        let second = ensure_cert_dir(dir.path(), &[], &[]).unwrap();
        assert_ne!(first.ca_pem(), second.ca_pem());
        assert_ne!(first.serving, second.serving);
        assert_ne!(first.admin, second.admin);
    }

    /// Accepts one TLS connection, reads a line and answers with the peer's identity.
    async fn serve_once(
        listener: tokio::net::TcpListener,
        config: Arc<ServerConfig>,
    ) -> anyhow::Result<Option<PeerIdentity>> {
        let (tcp, _) = listener.accept().await?;
        let mut tls = TlsAcceptor::from(config).accept(tcp).await?;
        let identity = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| identity_from_cert(cert));
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        tls.write_all(b"pong").await?;
        tls.shutdown().await?;
        Ok(identity)
    }

    async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> anyhow::Result<Option<PeerIdentity>> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let server_task = tokio::spawn(serve_once(listener, server));
        let client_result = async {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
            tls.write_all(b"ping").await?;
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await?;
            anyhow::ensure!(buf == b"pong", "unexpected answer {buf:?}");
            anyhow::Ok(())
        };
        let client_result = tokio::time::timeout(std::time::Duration::from_secs(10), client_result).await;
        let server_result = server_task.await?;
        client_result??;
        server_result
    }

    fn cluster() -> (Ca, CertKey) {
        let ca = Ca::generate("test-ca").unwrap();
        let serving =
            ca.issue_serving("kube-apiserver", &["localhost".to_owned()], &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).unwrap();
        (ca, serving)
    }

    #[tokio::test]
    async fn mtls_handshake_recovers_peer_identity() {
        let (ca, serving) = cluster();
        let client = ca.issue_client("alice", &["system:masters".to_owned(), "devs".to_owned()]).unwrap();
        let server = server_config(&serving, Some(ca.cert_pem())).unwrap();
        let client = client_config(ca.cert_pem(), Some(&client)).unwrap();
        let identity = handshake(server, client).await.unwrap();
        assert_eq!(
            identity,
            Some(PeerIdentity {
                user: "alice".to_owned(),
                groups: vec!["system:masters".to_owned(), "devs".to_owned()],
            })
        );
    }

    #[tokio::test]
    async fn client_certificate_is_optional() {
        let (ca, serving) = cluster();
        let server = server_config(&serving, Some(ca.cert_pem())).unwrap();
        let client = client_config(ca.cert_pem(), None).unwrap();
        assert_eq!(handshake(server, client).await.unwrap(), None);
    }

    #[tokio::test]
    async fn client_certificate_from_another_ca_is_rejected() {
        let (ca, serving) = cluster();
        let stranger = Ca::generate("stranger").unwrap();
        let client = stranger.issue_client("mallory", &[]).unwrap();
        let server = server_config(&serving, Some(ca.cert_pem())).unwrap();
        let client = client_config(ca.cert_pem(), Some(&client)).unwrap();
        // The server's verifier fails with UnknownIssuer and alerts the client (UnknownCA);
        // which side reports first depends on scheduling.
        let err = format!("{:#}", handshake(server, client).await.unwrap_err());
        assert!(err.contains("UnknownIssuer") || err.contains("UnknownCA"), "{err}");
    }

    #[tokio::test]
    async fn server_certificate_from_another_ca_is_rejected() {
        let (_, serving) = cluster();
        let other = Ca::generate("other").unwrap();
        let server = server_config(&serving, None).unwrap();
        let client = client_config(other.cert_pem(), None).unwrap();
        let err = handshake(server, client).await.unwrap_err();
        assert!(format!("{err:#}").contains("UnknownIssuer"), "{err:#}");
    }

    #[test]
    fn der_length_encoding_round_trips() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let tlv = der(DER_SEQUENCE, &vec![0u8; len]);
            assert_eq!(der_content(&tlv, DER_SEQUENCE).map(<[u8]>::len), Some(len));
        }
        assert_eq!(der_content(&[DER_SEQUENCE, 0x05, 0x00], DER_SEQUENCE), None);
    }
}
