//! Authentication: who is asking.
//!
//! - Bearer tokens: the admin token generated at init (written into the
//!   kubeconfig), member of `system:masters`.
//! - x509 client certificates signed by the cluster CA (verified during the
//!   TLS handshake): the subject's CN is the user, each O a group, as in
//!   Kubernetes.
//! - ServiceAccount tokens (from the `serviceaccounts/token` subresource):
//!   HS256 JWTs signed with a key generated at init, bound to the account's
//!   uid — deleting the account invalidates them — and expiring.
//!
//! Requests with neither are anonymous, and anonymous requests are refused.

use std::path::Path;

use http::HeaderMap;
use rustls::pki_types::CertificateDer;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

pub struct Authenticator {
    admin_token: String,
    sa_key: ring::hmac::Key,
}

/// What a ServiceAccount token claims.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SaClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The pod a token is bound to (the kubelet's projected tokens): the
    /// token dies with that pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<BoundPod>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BoundPod {
    pub name: String,
    pub uid: String,
}

pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

impl Authenticator {
    pub fn load_or_create(
        data_dir: &Path,
        _tls: Option<&consensus::pki::NodeTls>,
    ) -> anyhow::Result<Authenticator> {
        let path = data_dir.join("pki").join("admin.token");
        if !path.exists() {
            let mut raw = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
                .map_err(|_| anyhow::anyhow!("no randomness for the admin token"))?;
            super::write_private(&path, hex::encode(raw).as_bytes())?;
        }
        let admin_token = std::fs::read_to_string(&path)?.trim().to_string();
        if admin_token.len() < 32 {
            anyhow::bail!("{} holds no usable token", path.display());
        }
        let key_path = data_dir.join("pki").join("sa.key");
        if !key_path.exists() {
            let mut raw = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
                .map_err(|_| anyhow::anyhow!("no randomness for the service account key"))?;
            super::write_private(&key_path, hex::encode(raw).as_bytes())?;
        }
        let raw = hex::decode(std::fs::read_to_string(&key_path)?.trim())
            .map_err(|e| anyhow::anyhow!("{}: {e}", key_path.display()))?;
        let sa_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw);
        Ok(Authenticator {
            admin_token,
            sa_key,
        })
    }

    /// A signed token for a ServiceAccount.
    pub fn issue_sa_token(&self, claims: &SaClaims) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = b64.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let signing = format!("{header}.{payload}");
        let sig = ring::hmac::sign(&self.sa_key, signing.as_bytes());
        format!("{signing}.{}", b64.encode(sig.as_ref()))
    }

    /// The claims of a token this server signed and that has not expired.
    /// Whether the account still exists is the caller's check.
    pub fn verify_sa_token(&self, token: &str) -> Option<SaClaims> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (signing, sig) = token.rsplit_once('.')?;
        let sig = b64.decode(sig).ok()?;
        ring::hmac::verify(&self.sa_key, signing.as_bytes(), &sig).ok()?;
        let (_, payload) = signing.split_once('.')?;
        let claims: SaClaims = serde_json::from_slice(&b64.decode(payload).ok()?).ok()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs() as i64;
        (claims.exp > now && claims.iss == ISSUER).then_some(claims)
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        cert_user: Option<User>,
        objects: &super::storage::Objects,
    ) -> Option<User> {
        if let Some(v) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            // A token that is presented and wrong is a failure, not a
            // fall-back to the certificate.
            let token = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))?
                .trim();
            if constant_time_eq(token.as_bytes(), self.admin_token.as_bytes()) {
                return Some(User {
                    name: "admin".into(),
                    groups: vec!["system:masters".into(), "system:authenticated".into()],
                });
            }
            let claims = self.verify_sa_token(token)?;
            // A token minted for another audience (`vault`, ...) is not
            // one for this API.
            if !claims.aud.iter().any(|a| a == ISSUER) {
                return None;
            }
            // Bound to the account, and to the pod if it names one: a
            // deleted (or re-created) account's or pod's tokens stop
            // working. As kube-apiserver checks this against its informer
            // cache: this member's applied state first (no quorum round
            // on every request of every in-cluster client), a quorum read
            // before refusing what it may not have seen yet.
            let bound = |plural: &str, name: &str, uid: &str| {
                let res = super::resources::find("", "v1", plural).expect("served");
                let key = res.key(Some(&claims.namespace), name);
                let uid = uid.to_string();
                async move {
                    let matches = |o: Option<super::storage::Stored>| {
                        o.is_some_and(|o| {
                            o.object["metadata"]["uid"].as_str() == Some(uid.as_str())
                        })
                    };
                    matches(objects.get_local(&key).await.ok().flatten())
                        || matches(objects.get(&key).await.ok().flatten())
                }
            };
            if !bound("serviceaccounts", &claims.name, &claims.uid).await {
                return None;
            }
            if let Some(pod) = &claims.pod
                && !bound("pods", &pod.name, &pod.uid).await
            {
                return None;
            }
            return Some(User {
                name: claims.sub.clone(),
                groups: vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{}", claims.namespace),
                    "system:authenticated".into(),
                ],
            });
        }
        cert_user
    }
}

/// `kubectl --as`: acting as another user. Only `system:masters` may
/// impersonate (Kubernetes checks the `impersonate` verb; skiff has no RBAC
/// rule for it yet, so everyone else is refused rather than ignored).
pub fn impersonate(user: User, headers: &HeaderMap) -> Result<User, super::status::ApiError> {
    let Some(name) = headers
        .get("Impersonate-User")
        .and_then(|v| v.to_str().ok())
    else {
        if headers.contains_key("Impersonate-Group") {
            return Err(super::status::ApiError::bad_request(
                "impersonating groups requires Impersonate-User",
            ));
        }
        return Ok(user);
    };
    if !user.is_master() {
        return Err(super::status::ApiError::new(
            403,
            "Forbidden",
            format!(
                "users \"{name}\" is forbidden: User \"{}\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope",
                user.name
            ),
        ));
    }
    let mut groups: Vec<String> = headers
        .get_all("Impersonate-Group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(String::from))
        .collect();
    if let Some(rest) = name.strip_prefix("system:serviceaccount:") {
        groups.push("system:serviceaccounts".into());
        if let Some((ns, _)) = rest.split_once(':') {
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
    }
    groups.push("system:authenticated".into());
    Ok(User {
        name: name.to_string(),
        groups,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user a verified client certificate names: CN and O of its subject.
pub fn user_from_cert(cert: &CertificateDer<'_>) -> Option<User> {
    let (cn, orgs) = subject_names(cert.as_ref())?;
    let mut groups = orgs;
    groups.push("system:authenticated".into());
    Some(User { name: cn?, groups })
}

/// Reads one DER TLV: (tag, contents, rest).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];

/// CN and Os of a certificate's subject.
fn subject_names(der: &[u8]) -> Option<(Option<String>, Vec<String>)> {
    let (_, cert, _) = tlv(der)?; // Certificate
    let (_, tbs, _) = tlv(cert)?; // TBSCertificate
    let mut rest = tbs;
    let (tag, _, r) = tlv(rest)?;
    rest = if tag == 0xa0 { r } else { rest }; // [0] version
    let (_, _, r) = tlv(rest)?; // serial
    let (_, _, r) = tlv(r)?; // signature algorithm
    let (_, _, r) = tlv(r)?; // issuer
    let (_, _, r) = tlv(r)?; // validity
    let (_, subject, _) = tlv(r)?; // subject Name
    let mut cn = None;
    let mut orgs = Vec::new();
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (_, set, r) = tlv(rdns)?;
        rdns = r;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (_, atv, r) = tlv(atvs)?;
            atvs = r;
            let (_, oid, r) = tlv(atv)?;
            let (_, val, _) = tlv(r)?;
            let val = String::from_utf8_lossy(val).into_owned();
            if oid == OID_CN {
                cn = Some(val);
            } else if oid == OID_O {
                orgs.push(val);
            }
        }
    }
    Some((cn, orgs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cn_and_orgs_from_a_certificate() {
        let mut params = rcgen_params();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "jane");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "dev");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let user = user_from_cert(cert.der()).unwrap();
        assert_eq!(user.name, "jane");
        assert_eq!(
            user.groups,
            vec!["dev".to_string(), "system:authenticated".to_string()]
        );
        assert!(user_from_cert(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01])).is_none());
    }

    fn rcgen_params() -> rcgen::CertificateParams {
        rcgen::CertificateParams::new(Vec::<String>::new()).unwrap()
    }
}
