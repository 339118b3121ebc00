//! A connection past the cap: answered `503 service_unavailable` in the
//! error format with `Retry-After`, without waiting for its request, then
//! closed. The answer is written whole before the request is read, the
//! sending side is shut, and what the client sent is read and dropped for a
//! moment, so that closing does not reset the connection before the client
//! read the answer. At most [`MAX_LINGERING`] refusals are in progress; past
//! that a connection is closed at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Most refused connections being answered at once.
pub(super) const MAX_LINGERING: usize = 64;
/// How long a refused connection is kept to answer and drain.
const LINGER: Duration = Duration::from_secs(1);
/// How much of a refused client's request is read and dropped.
const DRAIN_BYTES: usize = 64 * 1024;
/// `Retry-After` of the refusal, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Answers `503` on `stream` in the background (or closes it at once when
/// too many refusals are in progress).
pub(super) fn at_capacity(stream: TcpStream, lingering: &Arc<Semaphore>, max_connections: usize) {
    let Ok(permit) = lingering.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let answered = tokio::time::timeout(LINGER, answer(stream, max_connections)).await;
        if let Ok(Err(error)) = answered {
            tracing::debug!(%error, "answering a connection past the cap");
        }
    });
}

async fn answer(mut stream: TcpStream, max_connections: usize) -> std::io::Result<()> {
    stream.write_all(&response(max_connections)).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < DRAIN_BYTES {
        match stream.read(&mut sink).await? {
            0 => break,
            read => drained += read,
        }
    }
    Ok(())
}

/// The whole HTTP/1.1 answer, headers and body.
fn response(max_connections: usize) -> Vec<u8> {
    let body = serde_json::json!({
        "error": {
            "code": "service_unavailable",
            "message": format!(
                "the API holds its limit of {max_connections} connections; retry shortly"
            ),
            "details": { "maxConnections": max_connections },
        }
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\n\
         content-type: application/json\r\n\
         content-length: {}\r\n\
         retry-after: {RETRY_AFTER_SECS}\r\n\
         x-request-id: {}\r\n\
         connection: close\r\n\
         \r\n\
         {body}",
        body.len(),
        uuid::Uuid::now_v7(),
    )
    .into_bytes()
}
