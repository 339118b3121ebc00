//! Which `X-Request-Id` a request goes by: the client's, when it is a short,
//! plain token (1–64 characters of `A-Z a-z 0-9 . _ : -`, one header), else
//! none, so that the request-id layer mints a fresh one. The id ends up in
//! logs and in the audit log, so a forged or huge value must not.

use axum::extract::Request;

use crate::REQUEST_ID;

/// The longest client-chosen request id kept.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Whether a client's request id is kept as it is.
pub fn is_acceptable(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b))
}

/// Middleware (before the request-id layer): drops a client's request id
/// unless it is acceptable; a fresh one is then minted in its place.
pub async fn keep_only_acceptable(mut request: Request) -> Request {
    let headers = request.headers_mut();
    let mut values = headers.get_all(REQUEST_ID).iter();
    let keep = match (values.next(), values.next()) {
        (None, _) => true,
        (Some(value), None) => is_acceptable(value.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        tracing::debug!("a client's X-Request-Id was not acceptable; minting a fresh one");
        headers.remove(REQUEST_ID);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_short_plain_tokens_only() {
        for id in ["a", "req-1", "0f8e.trace:span_7", &"x".repeat(64)] {
            assert!(is_acceptable(id.as_bytes()), "{id:?}");
        }
        for id in [
            "",
            &"x".repeat(65),
            "two words",
            "<script>",
            "id\u{e9}",
            "a/b",
            "a\"b",
        ] {
            assert!(!is_acceptable(id.as_bytes()), "{id:?}");
        }
    }
}
