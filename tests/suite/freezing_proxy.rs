//! A TCP proxy in front of PostgreSQL that makes every connection through it
//! look like a process frozen mid-transaction (SIGSTOP, a paused VM, a
//! half-open connection): it forwards both ways until a client has sent a
//! statement containing a marker (its Parse) and the next message (its
//! Bind/Execute: the statement runs), then forwards nothing more in either
//! direction while keeping every socket open.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct FreezingProxy {
    pub addr: SocketAddr,
    frozen: Arc<OnceLock<Instant>>,
    accept: JoinHandle<()>,
}

impl FreezingProxy {
    /// Listens on a free loopback port, forwarding to `upstream`; freezes
    /// everything once a client sends `marker`.
    pub async fn start(upstream: SocketAddr, marker: &'static [u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy address");
        let frozen = Arc::new(OnceLock::new());
        let flag = frozen.clone();
        let accept = tokio::spawn(async move {
            // Sockets of frozen connections are kept here, open, until the proxy is dropped.
            let mut held = Vec::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                held.push(tokio::spawn(pipe(client, server, marker, flag.clone())));
            }
        });
        FreezingProxy {
            addr,
            frozen,
            accept,
        }
    }

    /// Whether a client has sent the marker.
    pub fn is_frozen(&self) -> bool {
        self.frozen.get().is_some()
    }

    /// How long the connections have been frozen (zero before).
    pub fn frozen_for(&self) -> Duration {
        self.frozen.get().map_or(Duration::ZERO, Instant::elapsed)
    }

    /// `url` (a postgres:// URL whose host part is `host:port`) rewritten to
    /// go through the proxy, without TLS so the proxy can see the statements.
    pub fn url_through(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("scheme");
        let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let (user, _) = authority.rsplit_once('@').unwrap_or(("", authority));
        let user = if user.is_empty() {
            String::new()
        } else {
            format!("{user}@")
        };
        let separator = if tail.contains('?') { '&' } else { '?' };
        format!(
            "{scheme}://{user}{}/{tail}{separator}sslmode=disable",
            self.addr
        )
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Forwards one connection both ways until the marker is seen, then holds it.
async fn pipe(
    client: TcpStream,
    server: TcpStream,
    marker: &'static [u8],
    frozen: Arc<OnceLock<Instant>>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let down_frozen = frozen.clone();
    let down = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Ok(n) = server_read.read(&mut buf).await else {
                return;
            };
            if n == 0 || down_frozen.get().is_some() {
                // Frozen: stop reading and writing, keep both halves open.
                std::future::pending::<()>().await;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    let mut armed = false;
    while let Ok(n) = client_read.read(&mut buf).await {
        if n == 0 || frozen.get().is_some() {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if server_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if armed {
            // The statement's Bind/Execute after its Parse: now it runs, and
            // the process freezes before it reads the answer.
            let _ = frozen.set(Instant::now());
            break;
        }
        armed = tail.windows(marker.len()).any(|w| w == marker);
        let keep = marker.len().saturating_sub(1).min(tail.len());
        tail.drain(..tail.len() - keep);
    }
    // Hold every half open for as long as the test runs.
    std::future::pending::<()>().await;
    drop((client_read, server_write, down));
}
