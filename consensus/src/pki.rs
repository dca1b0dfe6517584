//! The cluster's certificate authority and each member's TLS identity.
//!
//! Every member holds a certificate issued by one cluster CA and trusts only
//! that CA: the Raft transport (QUIC) and the API servers use mutual TLS, so a
//! process without a certificate from this CA can neither join nor listen in.
//!
//! On disk a member's PKI directory holds `ca.crt`, `ca.key` (so that this
//! member can hand the CA to the next one that joins), `node.crt` and
//! `node.key`, all PEM. Keys are written with mode 0600.
//!
//! The CA must have been made by [`ClusterCa::generate`]: without an X.509
//! parser we cannot read an arbitrary CA's subject, so the subject is derived
//! from the CA key instead, and [`ClusterCa::load`] checks that the pair on
//! disk still signs certificates that verify against `ca.crt`.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};

/// ALPN protocol spoken on the Raft QUIC endpoint.
pub const RAFT_ALPN: &[u8] = b"skiff-raft/1";

pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
pub const NODE_CERT_FILE: &str = "node.crt";
pub const NODE_KEY_FILE: &str = "node.key";

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Leaf certificates outlive any plausible cluster; rotation is not built yet.
const LEAF_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// The CA outlives the leaves it issues late in its life.
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{what}: {reason}")]
    Parse { what: String, reason: String },
    #[error(
        "pki directory {dir} is incomplete (has {present}; missing {missing}): \
         restore the missing files or empty the directory to issue new ones"
    )]
    Incomplete {
        dir: PathBuf,
        present: String,
        missing: String,
    },
    #[error("refusing to overwrite {path}")]
    Exists { path: PathBuf },
    #[error(
        "ca.crt and ca.key in {dir} do not form a skiff cluster ca \
         (mismatched files, or a ca not made by skiff): {reason}"
    )]
    CaMismatch { dir: PathBuf, reason: String },
    #[error("{what} is not a valid certificate from the cluster ca: {reason}")]
    NotIssuedByCa { what: String, reason: String },
    #[error("invalid subject alternative name {san:?}: {source}")]
    InvalidSan { san: String, source: rcgen::Error },
    #[error("generating {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
    #[error("building tls config: {0}")]
    Tls(#[from] rustls::Error),
    #[error("building client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("building quic crypto config: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

pub type Result<T, E = PkiError> = std::result::Result<T, E>;

/// A certificate and its private key, PEM encoded.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

/// The cluster certificate authority: issues member certificates.
pub struct ClusterCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Makes a new self-signed CA with an ECDSA P-256 key.
    pub fn generate() -> Result<Self> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            PkiError::Generate {
                what: "ca key".into(),
                source,
            }
        })?;
        let mut params = ca_params(&key);
        let now = SystemTime::now();
        params.not_before = (now - DAY).into();
        params.not_after = (now + CA_VALIDITY).into();
        let cert = params
            .self_signed(&key)
            .map_err(|source| PkiError::Generate {
                what: "ca certificate".into(),
                source,
            })?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads `ca.crt` and `ca.key` from `dir` and checks that they belong together.
    pub fn load(dir: &Path) -> Result<Self> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read_file(&cert_path)?;
        let key_pem = read_file(&key_path)?;
        Self::from_pem(dir, cert_pem, &key_pem)
    }

    fn from_pem(dir: &Path, cert_pem: String, key_pem: &str) -> Result<Self> {
        let key_path = dir.join(CA_KEY_FILE);
        let ca_der = parse_certs(&cert_pem, &dir.join(CA_CERT_FILE).display().to_string())?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::Parse {
            what: key_path.display().to_string(),
            reason: format!("not a pem private key: {e}"),
        })?;
        let ca = Self {
            issuer: Issuer::new(ca_params(&key), key),
            cert_pem,
        };
        // Rebuilding the issuer from the key alone is only right if ca.crt
        // carries the subject we derive: prove it with a throwaway leaf.
        let probe = ca.issue("skiff ca probe", &[])?;
        let probe_der = parse_certs(&probe.cert_pem, "probe certificate")?;
        verify_leaf(&ca_der, &probe_der[0]).map_err(|reason| PkiError::CaMismatch {
            dir: dir.to_owned(),
            reason,
        })?;
        Ok(ca)
    }

    /// Writes `ca.crt` and `ca.key` (mode 0600) into `dir`, creating it.
    /// Refuses to overwrite an existing CA.
    pub fn save(&self, dir: &Path) -> Result<()> {
        create_dir(dir)?;
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        for path in [&cert_path, &key_path] {
            if path.exists() {
                return Err(PkiError::Exists { path: path.clone() });
            }
        }
        write_file(
            &key_path,
            self.issuer.key().serialize_pem().as_bytes(),
            true,
        )?;
        write_file(&cert_path, self.cert_pem.as_bytes(), false)?;
        sync_dir(dir)
    }

    /// The CA certificate, PEM encoded.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a leaf certificate for both TLS server and client auth, with a
    /// fresh ECDSA P-256 key. `sans` that parse as IP addresses become IP
    /// SANs, the others DNS names.
    pub fn issue(&self, common_name: &str, sans: &[String]) -> Result<IssuedCert> {
        self.issue_for(common_name, &[], sans)
    }

    /// As [`ClusterCa::issue`], with organizations in the subject: the API
    /// server reads the CN as a user name and each O as a group, as
    /// Kubernetes does (a node's agent is `system:node:NAME` in
    /// `system:nodes`).
    pub fn issue_for(
        &self,
        common_name: &str,
        organizations: &[&str],
        sans: &[String],
    ) -> Result<IssuedCert> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            PkiError::Generate {
                what: format!("key for {common_name:?}"),
                source,
            }
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for o in organizations {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for san in sans {
            let san_type = match san.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(san.as_str().try_into().map_err(|source| {
                    PkiError::InvalidSan {
                        san: san.clone(),
                        source,
                    }
                })?),
            };
            if !params.subject_alt_names.contains(&san_type) {
                params.subject_alt_names.push(san_type);
            }
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = (now - DAY).into();
        params.not_after = (now + LEAF_VALIDITY).into();
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| PkiError::Generate {
                what: format!("certificate for {common_name:?}"),
                source,
            })?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The CA's parameters, which are a function of its key alone so that the
/// issuer can be rebuilt from `ca.key` without parsing `ca.crt`. The key hash
/// in the name tells clusters' CAs apart in logs and error messages.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let fingerprint = hex::encode(Sha256::digest(key.public_key_raw()));
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "skiff");
    params.distinguished_name.push(
        DnType::CommonName,
        format!("skiff cluster ca {}", &fingerprint[..16]),
    );
    // Path length 0: the CA signs members only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A member's TLS identity: the cluster CA certificate it trusts and its own
/// certificate and key, all PEM.
#[derive(Clone)]
pub struct NodeTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

impl NodeTls {
    /// Loads `ca.crt`, `node.crt` and `node.key` from `dir` and checks that the
    /// key matches the certificate and the certificate was issued by the CA.
    pub fn load(dir: &Path) -> Result<Self> {
        let tls = Self {
            ca_pem: read_file(&dir.join(CA_CERT_FILE))?,
            cert_pem: read_file(&dir.join(NODE_CERT_FILE))?,
            key_pem: read_file(&dir.join(NODE_KEY_FILE))?,
        };
        tls.check(dir)?;
        Ok(tls)
    }

    /// Returns the identity in `pki_dir`, creating it on first start.
    ///
    /// If `pki_dir` holds `node.crt`, `node.key` and `ca.crt` they are loaded
    /// as they are (`name` and `sans` are not compared). Otherwise the CA is
    /// copied from `ca_from` (its `ca.crt` and `ca.key`) or, without it, a
    /// new CA is made, and a certificate for `name` is issued.
    ///
    /// `sans` must name every address and host name that peers use to reach
    /// this member: peers check the certificate against the address they
    /// dial. `127.0.0.1`, `::1` and `localhost` are always added.
    ///
    /// A directory holding only some of the files is refused rather than
    /// repaired: silently issuing a new identity there could split a member
    /// from its cluster.
    pub fn ensure(
        pki_dir: &Path,
        name: &str,
        sans: &[String],
        ca_from: Option<&Path>,
    ) -> Result<Self> {
        let all = [CA_CERT_FILE, CA_KEY_FILE, NODE_CERT_FILE, NODE_KEY_FILE];
        let present: Vec<&str> = all
            .into_iter()
            .filter(|f| pki_dir.join(f).exists())
            .collect();
        let needed = [CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE];
        if needed.iter().all(|f| present.contains(f)) {
            return Self::load(pki_dir);
        }
        if !present.is_empty() {
            let missing: Vec<&str> = needed
                .into_iter()
                .filter(|f| !present.contains(f))
                .collect();
            return Err(PkiError::Incomplete {
                dir: pki_dir.to_owned(),
                present: present.join(", "),
                missing: missing.join(", "),
            });
        }

        let ca = match ca_from {
            Some(dir) => ClusterCa::load(dir)?,
            None => ClusterCa::generate()?,
        };
        let mut all_sans = sans.to_vec();
        for default in ["127.0.0.1", "::1", "localhost"] {
            if !all_sans.iter().any(|s| s == default) {
                all_sans.push(default.to_owned());
            }
        }
        let issued = ca.issue(name, &all_sans)?;

        ca.save(pki_dir)?;
        write_file(
            &pki_dir.join(NODE_KEY_FILE),
            issued.key_pem.as_bytes(),
            true,
        )?;
        // node.crt last: its presence marks a finished directory.
        write_file(
            &pki_dir.join(NODE_CERT_FILE),
            issued.cert_pem.as_bytes(),
            false,
        )?;
        sync_dir(pki_dir)?;
        Ok(Self {
            ca_pem: ca.cert_pem,
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
        })
    }

    fn check(&self, dir: &Path) -> Result<()> {
        let cert_what = dir.join(NODE_CERT_FILE).display().to_string();
        let ca = parse_certs(&self.ca_pem, &dir.join(CA_CERT_FILE).display().to_string())?;
        let chain = parse_certs(&self.cert_pem, &cert_what)?;
        let key = parse_key(
            &self.key_pem,
            &dir.join(NODE_KEY_FILE).display().to_string(),
        )?;
        rustls::sign::CertifiedKey::from_der(chain.clone(), key, &provider()).map_err(|e| {
            PkiError::Parse {
                what: dir.join(NODE_KEY_FILE).display().to_string(),
                reason: format!("does not match {cert_what}: {e}"),
            }
        })?;
        verify_leaf(&ca, &chain[0]).map_err(|reason| PkiError::NotIssuedByCa {
            what: cert_what,
            reason,
        })
    }

    /// QUIC server config for the Raft endpoint: presents this member's
    /// certificate and requires a client certificate issued by the CA.
    pub fn quic_server_config(&self) -> Result<quinn::ServerConfig> {
        let mut tls = self.server_builder(true, true)?;
        tls.alpn_protocols = vec![RAFT_ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
        Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
    }

    /// QUIC client config for the Raft endpoint: trusts only the CA and
    /// presents this member's certificate.
    pub fn quic_client_config(&self) -> Result<quinn::ClientConfig> {
        let mut tls = self.client_builder(true)?;
        tls.alpn_protocols = vec![RAFT_ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        Ok(quinn::ClientConfig::new(Arc::new(crypto)))
    }

    /// TLS server config for HTTPS and gRPC; the caller sets ALPN. Without
    /// `require_client_cert` clients may still connect anonymously, but a
    /// certificate they do present must be from the CA.
    pub fn rustls_server_config(&self, require_client_cert: bool) -> Result<rustls::ServerConfig> {
        self.server_builder(require_client_cert, false)
    }

    /// TLS client config that trusts only the CA and presents this member's
    /// certificate; the caller sets ALPN.
    pub fn rustls_client_config(&self) -> Result<rustls::ClientConfig> {
        self.client_builder(false)
    }

    fn server_builder(
        &self,
        require_client_cert: bool,
        tls13_only: bool,
    ) -> Result<rustls::ServerConfig> {
        let provider = Arc::new(provider());
        let mut verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider.clone());
        if !require_client_cert {
            verifier = verifier.allow_unauthenticated();
        }
        let builder = rustls::ServerConfig::builder_with_provider(provider);
        let builder = if tls13_only {
            builder.with_protocol_versions(&[&rustls::version::TLS13])?
        } else {
            builder.with_safe_default_protocol_versions()?
        };
        Ok(builder
            .with_client_cert_verifier(verifier.build()?)
            .with_single_cert(self.chain()?, self.key()?)?)
    }

    fn client_builder(&self, tls13_only: bool) -> Result<rustls::ClientConfig> {
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider()));
        let builder = if tls13_only {
            builder.with_protocol_versions(&[&rustls::version::TLS13])?
        } else {
            builder.with_safe_default_protocol_versions()?
        };
        Ok(builder
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain()?, self.key()?)?)
    }

    fn roots(&self) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for cert in parse_certs(&self.ca_pem, "ca certificate")? {
            roots.add(cert)?;
        }
        Ok(roots)
    }

    fn chain(&self) -> Result<Vec<CertificateDer<'static>>> {
        parse_certs(&self.cert_pem, "node certificate")
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>> {
        parse_key(&self.key_pem, "node key")
    }
}

/// Always ring, passed explicitly: a process-wide default provider would
/// depend on which other crates happen to install one first.
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Checks that `leaf` chains to one of `ca` and is valid for client auth
/// now; server auth is implied by how [`ClusterCa::issue`] makes leaves.
fn verify_leaf(
    ca: &[CertificateDer<'static>],
    leaf: &CertificateDer<'static>,
) -> std::result::Result<(), String> {
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots.add(cert.clone()).map_err(|e| e.to_string())?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(provider()))
            .build()
            .map_err(|e| e.to_string())?;
    verifier
        .verify_client_cert(leaf, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| PkiError::Parse {
            what: what.to_owned(),
            reason: format!("invalid pem: {e}"),
        })?;
    if certs.is_empty() {
        return Err(PkiError::Parse {
            what: what.to_owned(),
            reason: "no pem certificate found".into(),
        });
    }
    Ok(certs)
}

fn parse_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>> {
    match rustls_pemfile::private_key(&mut pem.as_bytes()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(PkiError::Parse {
            what: what.to_owned(),
            reason: "no pem private key found".into(),
        }),
        Err(e) => Err(PkiError::Parse {
            what: what.to_owned(),
            reason: format!("invalid pem: {e}"),
        }),
    }
}

fn read_file(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PkiError::Write {
            path: dir.to_owned(),
            source,
        })
}

/// Writes through a temporary file and a rename, so that a crash leaves
/// either no file or a whole one, never a truncated key.
fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<()> {
    let err = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| PkiError::Write {
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sans(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ensure_is_idempotent_and_shares_the_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let a_dir = tmp.path().join("a");
        let a = NodeTls::ensure(&a_dir, "a", &sans(&["10.0.0.1", "a.example"]), None).unwrap();
        for (file, mode) in [
            (CA_CERT_FILE, 0o644),
            (CA_KEY_FILE, 0o600),
            (NODE_CERT_FILE, 0o644),
            (NODE_KEY_FILE, 0o600),
        ] {
            let meta = fs::metadata(a_dir.join(file)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        }

        let again = NodeTls::ensure(&a_dir, "a", &[], None).unwrap();
        assert_eq!(again.ca_pem, a.ca_pem);
        assert_eq!(again.cert_pem, a.cert_pem);
        assert_eq!(again.key_pem, a.key_pem);

        let b_dir = tmp.path().join("b");
        let b = NodeTls::ensure(&b_dir, "b", &[], Some(&a_dir)).unwrap();
        assert_eq!(b.ca_pem, a.ca_pem);
        assert_ne!(b.cert_pem, a.cert_pem);
        // b's certificate verifies against a's CA: same cluster.
        let ca = parse_certs(&a.ca_pem, "ca").unwrap();
        verify_leaf(&ca, &parse_certs(&b.cert_pem, "b").unwrap()[0]).unwrap();
        // The copied CA can issue in turn.
        ClusterCa::load(&b_dir).unwrap().issue("c", &[]).unwrap();

        let other = NodeTls::ensure(&tmp.path().join("other"), "x", &[], None).unwrap();
        assert_ne!(other.ca_pem, a.ca_pem);
        assert!(verify_leaf(&ca, &parse_certs(&other.cert_pem, "x").unwrap()[0]).is_err());
    }

    #[test]
    fn ensure_refuses_a_half_populated_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("n");
        NodeTls::ensure(&dir, "n", &[], None).unwrap();
        fs::remove_file(dir.join(NODE_KEY_FILE)).unwrap();
        let err = NodeTls::ensure(&dir, "n", &[], None).unwrap_err();
        assert!(matches!(err, PkiError::Incomplete { .. }), "{err}");
        assert!(err.to_string().contains("missing node.key"), "{err}");
        // Nothing was issued over the remains.
        assert!(!dir.join(NODE_KEY_FILE).exists());

        // A CA alone is incomplete too.
        let only_ca = tmp.path().join("ca-only");
        ClusterCa::generate().unwrap().save(&only_ca).unwrap();
        let err = NodeTls::ensure(&only_ca, "n", &[], None).unwrap_err();
        assert!(matches!(err, PkiError::Incomplete { .. }), "{err}");
    }

    #[test]
    fn load_names_the_file_that_does_not_parse() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("n");
        NodeTls::ensure(&dir, "n", &[], None).unwrap();
        fs::write(dir.join(NODE_CERT_FILE), "garbage").unwrap();
        let err = NodeTls::ensure(&dir, "n", &[], None).unwrap_err();
        assert!(err.to_string().contains("node.crt"), "{err}");

        // A certificate from another CA is refused at load, not at handshake.
        let stranger = ClusterCa::generate().unwrap().issue("n", &[]).unwrap();
        fs::write(dir.join(NODE_CERT_FILE), &stranger.cert_pem).unwrap();
        fs::write(dir.join(NODE_KEY_FILE), &stranger.key_pem).unwrap();
        let err = NodeTls::load(&dir).unwrap_err();
        assert!(matches!(err, PkiError::NotIssuedByCa { .. }), "{err}");

        // And a CA key that does not match the CA certificate.
        let ca_dir = tmp.path().join("ca");
        ClusterCa::generate().unwrap().save(&ca_dir).unwrap();
        fs::copy(dir.join(CA_KEY_FILE), ca_dir.join(CA_KEY_FILE)).unwrap();
        let err = ClusterCa::load(&ca_dir).unwrap_err();
        assert!(matches!(err, PkiError::CaMismatch { .. }), "{err}");
    }

    #[test]
    fn issue_rejects_a_bad_dns_name_and_save_keeps_an_existing_ca() {
        let ca = ClusterCa::generate().unwrap();
        let err = ca.issue("n", &sans(&["bad name\u{e9}"])).unwrap_err();
        assert!(matches!(err, PkiError::InvalidSan { .. }), "{err}");

        let tmp = tempfile::tempdir().unwrap();
        ca.save(tmp.path()).unwrap();
        let err = ClusterCa::generate().unwrap().save(tmp.path()).unwrap_err();
        assert!(matches!(err, PkiError::Exists { .. }), "{err}");
    }

    #[test]
    fn configs_build() {
        let tmp = tempfile::tempdir().unwrap();
        let tls = NodeTls::ensure(tmp.path(), "n", &[], None).unwrap();
        tls.quic_server_config().unwrap();
        tls.quic_client_config().unwrap();
        tls.rustls_server_config(true).unwrap();
        tls.rustls_server_config(false).unwrap();
        tls.rustls_client_config().unwrap();
    }
}
