//! A finding: which rule matched where, with the secret redacted (a short
//! prefix and its length, never the whole secret) and a fingerprint (a hash
//! of rule and secret) that identifies the same secret wherever it is found.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::rules::Severity;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The rule's id (a built-in or a custom rule).
    pub rule: String,
    pub severity: Severity,
    /// The commit that added it (history scans).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub file: String,
    /// 1-based line of the secret's first byte.
    pub line: usize,
    /// 1-based byte column of the secret's first byte in its line.
    pub column: usize,
    pub redacted: String,
    pub fingerprint: String,
    /// A match of a built-in rule's format whose checksum or structure
    /// check failed (a made-up or mistyped token), reported only when asked
    /// for, with severity low.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
}

/// At most a quarter of the secret (and at most 4 characters) is shown.
pub fn redact(secret: &str) -> String {
    let chars = secret.chars().count();
    let shown: String = secret.chars().take((chars / 4).min(4)).collect();
    format!("{shown}****({chars} chars)")
}

/// `sha256(rule ":" secret)`, hex: the same secret found again, in another
/// file or scan, has the same fingerprint.
pub fn fingerprint(rule: &str, secret: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(rule.as_bytes());
    hasher.update(b":");
    hasher.update(secret.as_bytes());
    hex16(&hasher.finalize())
}

/// [`fingerprint`] keyed: `HMAC-SHA256(key, rule ":" secret)`, hex. Without
/// the key, a guessed secret cannot be checked against it.
pub fn keyed_fingerprint(key: &[u8; 32], rule: &str, secret: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(rule.as_bytes());
    mac.update(b":");
    mac.update(secret.as_bytes());
    hex16(&mac.finalize().into_bytes())
}

/// The first 16 bytes of a digest, hex: fingerprints are 32 characters.
fn hex16(digest: &[u8]) -> String {
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_never_shows_the_secret() {
        let secret = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
        let shown = redact(secret);
        assert_eq!(shown, "ghp_****(40 chars)");
        assert!(!shown.contains(&secret[4..]));
        assert_eq!(redact("abc"), "****(3 chars)");
        assert_eq!(fingerprint("r", "s"), fingerprint("r", "s"));
        assert_ne!(fingerprint("r", "s"), fingerprint("r", "t"));
        assert_ne!(fingerprint("r1", "s"), fingerprint("r2", "s"));
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(
            keyed_fingerprint(&a, "r", "s"),
            keyed_fingerprint(&a, "r", "s")
        );
        assert_ne!(
            keyed_fingerprint(&a, "r", "s"),
            keyed_fingerprint(&b, "r", "s")
        );
        assert_ne!(keyed_fingerprint(&a, "r", "s"), fingerprint("r", "s"));
        assert_eq!(keyed_fingerprint(&a, "r", "s").len(), 32);
    }
}
