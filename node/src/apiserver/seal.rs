//! Encryption at rest for Secrets: AES-256-GCM with a key generated at
//! init (`DIR/pki/secrets.key`), bound to the object's store key, in the
//! envelope format `k8s:enc:aesgcm:v1:<key name>:<nonce><ciphertext>` that
//! Kubernetes' own encryption provider writes. Other objects pass through.

use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const PREFIX: &str = "k8s:enc:aesgcm:v1:";
const SECRETS_PREFIX: &[u8] = b"/registry/core/secrets/";

pub struct Sealer {
    /// The first key encrypts; every key decrypts (rotation).
    keys: Vec<(String, LessSafeKey)>,
    rng: SystemRandom,
}

impl Sealer {
    /// Loads `secrets.key` from `pki_dir`, creating it on first start.
    /// File format: one `name:hex-key` per line, newest first.
    pub fn load_or_create(pki_dir: &Path) -> Result<Sealer, String> {
        let path = pki_dir.join("secrets.key");
        let rng = SystemRandom::new();
        if !path.exists() {
            let mut key = [0u8; 32];
            rng.fill(&mut key)
                .map_err(|_| "no randomness for the secrets key".to_string())?;
            let line = format!("key1:{}\n", hex::encode(key));
            write_private(&path, line.as_bytes())?;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut keys = Vec::new();
        for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let (name, hexkey) = line.split_once(':').ok_or_else(|| {
                format!("{} line {}: expected name:hexkey", path.display(), i + 1)
            })?;
            let raw = hex::decode(hexkey.trim())
                .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?;
            let key = UnboundKey::new(&AES_256_GCM, &raw)
                .map_err(|_| format!("{} line {}: key must be 32 bytes", path.display(), i + 1))?;
            keys.push((name.to_string(), LessSafeKey::new(key)));
        }
        if keys.is_empty() {
            return Err(format!("{} holds no key", path.display()));
        }
        Ok(Sealer { keys, rng })
    }

    pub fn seal(&self, key: &[u8], plain: &[u8]) -> Result<Vec<u8>, String> {
        if !key.starts_with(SECRETS_PREFIX) {
            return Ok(plain.to_vec());
        }
        let (name, k) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| "no randomness for a nonce".to_string())?;
        let mut buf = plain.to_vec();
        k.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(key),
            &mut buf,
        )
        .map_err(|_| "encrypting a secret failed".to_string())?;
        let mut out = format!("{PREFIX}{name}:").into_bytes();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, String> {
        let Some(rest) = stored.strip_prefix(PREFIX.as_bytes()) else {
            return Ok(stored.to_vec());
        };
        let colon = rest
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| "encrypted value has no key name".to_string())?;
        let name = std::str::from_utf8(&rest[..colon]).map_err(|_| "bad key name".to_string())?;
        let body = &rest[colon + 1..];
        let (_, k) = self
            .keys
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| format!("value sealed with unknown key {name:?}"))?;
        if body.len() < NONCE_LEN {
            return Err("encrypted value is truncated".into());
        }
        let nonce = Nonce::try_assume_unique_for_key(&body[..NONCE_LEN])
            .map_err(|_| "bad nonce".to_string())?;
        let mut buf = body[NONCE_LEN..].to_vec();
        let plain = k
            .open_in_place(nonce, Aad::from(key), &mut buf)
            .map_err(|_| {
                format!(
                    "cannot decrypt {} (wrong key or altered)",
                    String::from_utf8_lossy(key)
                )
            })?;
        Ok(plain.to_vec())
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    f.write_all(data)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    f.sync_all()
        .map_err(|e| format!("syncing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_sealed_and_bound_to_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sealer::load_or_create(dir.path()).unwrap();
        let key = b"/registry/core/secrets/default/db";
        let sealed = s.seal(key, b"{\"data\":{\"p\":\"aHVudGVyMg==\"}}").unwrap();
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
        assert!(!sealed.windows(8).any(|w| w == b"aHVudGVy"));
        assert_eq!(
            s.open(key, &sealed).unwrap(),
            b"{\"data\":{\"p\":\"aHVudGVyMg==\"}}"
        );
        // Moved to another key, the ciphertext does not open.
        assert!(
            s.open(b"/registry/core/secrets/default/other", &sealed)
                .is_err()
        );
        // Other objects are stored as they are.
        assert_eq!(
            s.seal(b"/registry/core/pods/default/p", b"x").unwrap(),
            b"x"
        );
        // The key persists across restarts.
        let s2 = Sealer::load_or_create(dir.path()).unwrap();
        assert!(s2.open(key, &sealed).is_ok());
    }
}
