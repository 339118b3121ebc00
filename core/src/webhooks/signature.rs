//! `Longhaul-Signature`: how a receiver knows a delivery came from Longhaul,
//! unaltered and recent.
//!
//! The header reads `t=<unix seconds>,v1=<hex>`, where the hex is
//! HMAC-SHA256, keyed with the endpoint's whole secret (`whsec_…` as UTF-8),
//! of `<t>.<raw body>`. A receiver:
//!
//! 1. splits the header on `,` and each part on the first `=`; takes `t` and
//!    every `v1` (other schemes are ignored);
//! 2. computes the HMAC of `t`, a `.` and the body exactly as received;
//! 3. accepts if it equals one of the `v1` values (compared in constant time)
//!    and `t` is within five minutes of its clock ([`TOLERANCE`]);
//! 4. drops a body whose `id` it has already processed: a delivery may be
//!    repeated (a retry after a timeout the receiver did answer), and a
//!    replayed request carries an old `t` or a seen `id`.
//!
//! [`verify`] does steps 1–3 (docs/WEBHOOKS.md shows it in Python).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header's name.
pub const SIGNATURE_HEADER: &str = "Longhaul-Signature";
/// How far a delivery's timestamp may be from the receiver's clock.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("no v1 signature matches the body")]
    Mismatch,
    #[error("the timestamp is {age_secs} s from now, beyond the {TOLERANCE_SECS} s tolerance")]
    Stale { age_secs: i64 },
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Result<Hmac<Sha256>, SignatureError> {
    // HMAC takes keys of any length; the error is never seen.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| SignatureError::Malformed("the secret is not an HMAC key"))?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() & 1 == 1 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The header value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> Result<String, SignatureError> {
    let digest = mac(secret, timestamp, body)?.finalize().into_bytes();
    Ok(format!("t={timestamp},v1={}", hex(&digest)))
}

/// Checks a header against the body as received, at `now` (unix seconds).
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (name, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed("a part without '='"))?;
        match name {
            "t" => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed("t is not a number"))?,
                )
            }
            "v1" => signatures
                .push(unhex(value).ok_or(SignatureError::Malformed("v1 is not hexadecimal"))?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no t"))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no v1"));
    }
    let expected = mac(secret, timestamp, body)?;
    let matches = signatures
        .iter()
        .any(|signature| expected.clone().verify_slice(signature).is_ok());
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    let age_secs = (now - timestamp).abs();
    if age_secs > TOLERANCE_SECS {
        return Err(SignatureError::Stale { age_secs });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"job.succeeded"}"#;

    #[test]
    fn a_signed_body_verifies() {
        let header = sign(SECRET, 1_700_000_000, BODY).expect("signs");
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(verify(SECRET, &header, BODY, 1_700_000_100), Ok(()));
    }

    #[test]
    fn the_digest_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231-style check against an independent computation:
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").expect("key");
        mac.update(b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        let header = sign("key", 1, b"x").expect("signs");
        let mut expected = Hmac::<Sha256>::new_from_slice(b"key").expect("key");
        expected.update(b"1.x");
        assert_eq!(
            header,
            format!("t=1,v1={}", hex(&expected.finalize().into_bytes()))
        );
    }

    #[test]
    fn altered_bodies_other_secrets_and_old_timestamps_are_refused() {
        let header = sign(SECRET, 1_700_000_000, BODY).expect("signs");
        assert_eq!(
            verify(SECRET, &header, br#"{"id":"evt_2"}"#, 1_700_000_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("whsec_other", &header, BODY, 1_700_000_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, &header, BODY, 1_700_000_000 + 301),
            Err(SignatureError::Stale { age_secs: 301 })
        );
        // A timestamp changed to look recent no longer matches.
        let forged = header.replace("t=1700000000", "t=1700000900");
        assert_eq!(
            verify(SECRET, &forged, BODY, 1_700_000_900),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_are_refused_and_unknown_schemes_ignored() {
        for header in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz", "garbage"] {
            assert!(
                matches!(
                    verify(SECRET, header, BODY, 1),
                    Err(SignatureError::Malformed(_))
                ),
                "{header:?}"
            );
        }
        let header = format!("{},v0=abc", sign(SECRET, 5, BODY).expect("signs"));
        assert_eq!(verify(SECRET, &header, BODY, 5), Ok(()));
    }
}
