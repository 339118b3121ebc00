//! The API's HTTP/1.1 server: its own accept loop over hyper, so that it
//! caps the connections it holds (past the cap a new connection is answered
//! `503` at once and closed, before file descriptors run out), cuts off
//! clients slow to send a request's head or keeping a connection idle
//! (`deadlines.rs`), and shuts down gracefully: no new connections, idle ones
//! closed, busy ones closed once their answer is sent.

mod connection;
mod deadlines;
mod refuse;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Limits of the connections the server holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// Most connections open at once; more are answered `503` and closed.
    pub max_connections: usize,
    /// Time a client has to send a request's head, from its first byte (or
    /// from the connection's opening, for its first request).
    pub header_read_timeout: Duration,
    /// Time a keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
}

/// The most connections a server may be told to hold.
pub const MAX_CONNECTIONS_CEILING: usize = 1_000_000;

impl Default for ServeOptions {
    /// Three quarters of the open-file limit, 10 s for a head, 60 s idle.
    fn default() -> Self {
        ServeOptions {
            max_connections: default_max_connections(),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Three quarters of the process's (soft) open-file limit: the last quarter
/// stays for the database pool, Redis, artifact files, logs and the
/// connections being refused.
pub fn default_max_connections() -> usize {
    let limit = open_file_limit().unwrap_or(1024);
    usize::try_from(limit / 4 * 3)
        .unwrap_or(MAX_CONNECTIONS_CEILING)
        .clamp(1, MAX_CONNECTIONS_CEILING)
}

/// The soft limit on open files, from `/proc/self/limits` (Linux; `None`
/// elsewhere or when unlimited).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    soft_open_file_limit(&limits)
}

/// `Max open files  <soft>  <hard>  files` → soft.
fn soft_open_file_limit(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// How long the loop waits after an accept error that is not about one
/// connection (out of file descriptors, most likely) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);

/// Serves `router` on `listener` until `shutdown` resolves, then waits for
/// the open connections to finish.
pub async fn serve_on(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let max_connections = options.max_connections.clamp(1, MAX_CONNECTIONS_CEILING);
    let connections = Arc::new(Semaphore::new(max_connections));
    let refusals = Arc::new(Semaphore::new(refuse::MAX_LINGERING));
    let (closing, closing_seen) = watch::channel(false);
    tokio::pin!(shutdown);
    let mut at_cap = false;
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if about_one_connection(&error) => continue,
                Err(error) => {
                    tracing::error!(%error, "accepting a connection failed; trying again shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        match connections.clone().try_acquire_owned() {
            Ok(permit) => {
                if at_cap {
                    at_cap = false;
                    tracing::info!(max_connections, "below the connection cap again");
                }
                tokio::spawn(connection::serve(
                    stream,
                    peer,
                    router.clone(),
                    options,
                    closing_seen.clone(),
                    permit,
                ));
            }
            Err(_) => {
                if !at_cap {
                    at_cap = true;
                    tracing::warn!(
                        max_connections,
                        "connection cap reached: new connections are answered 503 until some close"
                    );
                }
                refuse::at_capacity(stream, &refusals, max_connections);
            }
        }
    }
    drop(listener);
    tracing::info!("API stopping: no new connections; open ones finish their request");
    // Receivers that already ended are fine: the send only fails with none left.
    let _ = closing.send(true);
    // Each connection holds a permit until it ends: all back means all closed.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = connections.acquire_many(all).await;
    let _ = refusals.acquire_many(refuse::MAX_LINGERING as u32).await;
    Ok(())
}

/// Errors of one connection that was gone before it was accepted.
fn about_one_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_open_file_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95698                95698                processes \n\
                      Max open files            4096                 524288               files     \n";
        assert_eq!(soft_open_file_limit(limits), Some(4096));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(soft_open_file_limit(unlimited), None);
        assert_eq!(soft_open_file_limit(""), None);
        assert!(open_file_limit().is_some(), "Linux has /proc/self/limits");
    }
}
