//! Download tokens for stores without links of their own (the local folder):
//! the API hands out `/v1/artifacts/{token}` where the token names the region,
//! the object key and an expiry, signed with HMAC-SHA256 under a server
//! secret. Anyone holding an unexpired token may fetch that one object, as with
//! an S3 presigned link; a token cannot be altered to name another object.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::validate_key;

const VERSION: &str = "v1";

/// Secrets shorter than this are refused.
pub const MIN_SECRET_LEN: usize = 32;

/// What a token grants: one object, until a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadGrant {
    pub region: String,
    pub key: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the download token is malformed")]
    Malformed,
    #[error("the download token's signature does not match")]
    BadSignature,
    #[error("the download link expired at {0}")]
    Expired(DateTime<Utc>),
}

#[derive(Clone)]
pub struct DownloadSigner {
    secret: Vec<u8>,
    /// Every process of the deployment holds the same secret (configured or
    /// kept in a file), not one made up by this process.
    shared: bool,
}

impl std::fmt::Debug for DownloadSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DownloadSigner(..)")
    }
}

impl DownloadSigner {
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, String> {
        let secret = secret.into();
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!(
                "a download signing secret needs at least {MIN_SECRET_LEN} bytes"
            ));
        }
        Ok(Self {
            secret,
            shared: true,
        })
    }

    /// A random secret of this process only.
    pub fn random() -> Result<Self, String> {
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret).map_err(|e| format!("no OS randomness: {e}"))?;
        let mut signer = Self::new(secret.to_vec())?;
        signer.shared = false;
        Ok(signer)
    }

    /// A key for another purpose, derived from the secret (HMAC of the
    /// purpose); None when the secret is this process's own, since another
    /// process would derive another key.
    pub fn derive_key(&self, purpose: &str) -> Option<[u8; 32]> {
        if !self.shared {
            return None;
        }
        let mut mac = self.mac();
        mac.update(b"longhaul derived key\n");
        mac.update(purpose.as_bytes());
        Some(mac.finalize().into_bytes().into())
    }

    /// The secret kept in `path`, created (random, owner-only) on first use:
    /// links stay valid across restarts of a single-node install.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(secret) => Self::new(secret).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 32];
                getrandom::getrandom(&mut secret).map_err(std::io::Error::other)?;
                let encoded = URL_SAFE_NO_PAD.encode(secret);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                // Written whole under a name of its own, then linked into
                // place: processes starting together (an API and a worker on
                // one data folder) all end up with the one secret that won,
                // never with a half-written file or "File exists".
                let mut suffix = [0u8; 8];
                getrandom::getrandom(&mut suffix).map_err(std::io::Error::other)?;
                let temp = path.with_extension(format!("{}.tmp", URL_SAFE_NO_PAD.encode(suffix)));
                write_owner_only(&temp, encoded.as_bytes())?;
                let linked = std::fs::hard_link(&temp, path);
                let _ = std::fs::remove_file(&temp);
                match linked {
                    Ok(()) => Self::new(encoded).map_err(std::io::Error::other),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::new(std::fs::read(path)?).map_err(std::io::Error::other)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"))
    }

    pub fn sign(&self, grant: &DownloadGrant) -> String {
        let payload = format!(
            "{VERSION}\n{}\n{}\n{}",
            grant.expires_at.timestamp(),
            grant.region,
            grant.key
        );
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The grant in `token` if its signature holds and it has not expired at
    /// `now`. The signature is checked (in constant time) before anything in
    /// the payload is trusted.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<DownloadGrant, TokenError> {
        let (payload, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let payload = String::from_utf8(payload).map_err(|_| TokenError::Malformed)?;
        let mut fields = payload.splitn(4, '\n');
        let (Some(VERSION), Some(expires), Some(region), Some(key)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(TokenError::Malformed);
        };
        let expires_at = expires
            .parse::<i64>()
            .ok()
            .and_then(|secs| Utc.timestamp_opt(secs, 0).single())
            .ok_or(TokenError::Malformed)?;
        validate_key(key).map_err(|_| TokenError::Malformed)?;
        if now >= expires_at {
            return Err(TokenError::Expired(expires_at));
        }
        Ok(DownloadGrant {
            region: region.to_string(),
            key: key.to_string(),
            expires_at,
        })
    }
}

#[cfg(unix)]
fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(expires_at: DateTime<Utc>) -> DownloadGrant {
        DownloadGrant {
            region: "eu".into(),
            key: "tenants/t1/audit.export/job_1/export.csv".into(),
            expires_at,
        }
    }

    #[test]
    fn processes_starting_together_share_one_secret() {
        for round in 0..20 {
            let dir = std::env::temp_dir().join(format!(
                "longhaul-signing-{}-{round}-{}",
                std::process::id(),
                Utc::now().timestamp_nanos_opt().unwrap_or_default()
            ));
            let path = dir.join("download-signing.key");
            let signers: Vec<DownloadSigner> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..4)
                    .map(|_| scope.spawn(|| DownloadSigner::load_or_create(&path)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap()
                            .expect("a signer, whoever created the file")
                    })
                    .collect()
            });
            let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
            let token = signers[0].sign(&grant(now + chrono::Duration::seconds(60)));
            for signer in &signers[1..] {
                assert!(signer.verify(&token, now).is_ok(), "round {round}");
            }
            let leftovers = std::fs::read_dir(&dir).unwrap().count();
            assert_eq!(leftovers, 1, "only the secret stays");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_token_round_trips_until_it_expires() {
        let signer = DownloadSigner::new(vec![7u8; 32]).unwrap();
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let expires = now + chrono::Duration::seconds(300);
        let token = signer.sign(&grant(expires));
        assert_eq!(signer.verify(&token, now), Ok(grant(expires)));
        assert_eq!(
            signer.verify(&token, expires),
            Err(TokenError::Expired(expires))
        );
    }

    #[test]
    fn altered_or_foreign_tokens_are_refused() {
        let signer = DownloadSigner::new(vec![7u8; 32]).unwrap();
        let other = DownloadSigner::new(vec![8u8; 32]).unwrap();
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let token = signer.sign(&grant(now + chrono::Duration::seconds(60)));
        assert_eq!(other.verify(&token, now), Err(TokenError::BadSignature));

        // Another key under the same signature.
        let (_, tag) = token.split_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode(format!(
            "v1\n{}\neu\ntenants/t2/audit.export/job_1/export.csv",
            (now + chrono::Duration::seconds(60)).timestamp()
        ));
        assert_eq!(
            signer.verify(&format!("{forged_payload}.{tag}"), now),
            Err(TokenError::BadSignature)
        );
        for junk in ["", ".", "abc", "a.b.c", "!!!.???"] {
            assert!(signer.verify(junk, now).is_err(), "{junk:?}");
        }
        assert!(DownloadSigner::new(vec![1u8; 31]).is_err());
    }

    #[test]
    fn a_secret_file_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("longhaul-signer-{:016x}", fastrand::u64(..)));
        let path = dir.join("download-signing.key");
        let first = DownloadSigner::load_or_create(&path).unwrap();
        let second = DownloadSigner::load_or_create(&path).unwrap();
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let token = first.sign(&grant(now + chrono::Duration::seconds(60)));
        assert!(second.verify(&token, now).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
