//! The API over real TCP, for what only a socket shows (connection caps,
//! timeouts, keep-alive, what the HTTP layer answers itself): the server
//! started on a free 127.0.0.1 port, and a raw HTTP/1.1 client that sends
//! exactly the bytes a test gives and reads answers one by one.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use longhaul_api::ServeOptions;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server; stopped (gracefully) on drop of [`Server::stop`].
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start(router: Router, options: ServeOptions) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("the port");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(longhaul_api::serve_on(listener, router, options, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Asks the server to stop and waits until it has (its open connections
    /// finished).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .expect("the server task")
            .expect("the server stopped cleanly");
    }

    pub async fn connect(&self) -> Wire {
        Wire::connect(self.addr).await
    }
}

/// One answer read off the wire.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON (status {}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The error format with this status and code, a request id, and for a
    /// 503 a `Retry-After`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert!(body["error"].get("details").is_some(), "{body}");
        assert!(self.header("x-request-id").is_some(), "{self:?}");
        if status == 503 {
            let seconds: u64 = self
                .header("retry-after")
                .expect("a Retry-After")
                .parse()
                .expect("whole seconds");
            assert!(seconds >= 1, "{seconds}");
        }
    }
}

/// A raw HTTP/1.1 client connection.
pub struct Wire {
    stream: TcpStream,
    buffer: Vec<u8>,
}

/// How long a test waits for something the server should do at once.
pub const PROMPT: Duration = Duration::from_secs(5);

impl Wire {
    pub async fn connect(addr: SocketAddr) -> Wire {
        Wire {
            stream: TcpStream::connect(addr).await.expect("connecting"),
            buffer: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads one answer (a body sized by `Content-Length`, chunked, or
    /// none); an error when the connection closes first or nothing complete
    /// arrives within `within`.
    pub async fn read_reply(&mut self, within: Duration) -> std::io::Result<RawReply> {
        tokio::time::timeout(within, self.read_reply_now())
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "no complete answer in time")
            })?
    }

    async fn read_reply_now(&mut self) -> std::io::Result<RawReply> {
        let head_end = loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                break end;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        self.buffer.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("no status in {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let body = if let Some(length) = header("content-length") {
            let length: usize = length.parse().map_err(|_| bad("content-length"))?;
            self.take(length).await?
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let line = self.line().await?;
                let size = usize::from_str_radix(line.trim(), 16).map_err(|_| bad("chunk size"))?;
                let chunk = self.take(size).await?;
                body.extend(chunk);
                self.line().await?;
                if size == 0 {
                    break body;
                }
            }
        } else {
            Vec::new()
        };
        Ok(RawReply {
            status,
            headers,
            body,
        })
    }

    /// Whether the server closes the connection within `within` (reading and
    /// dropping whatever it sends first).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let mut sink = [0u8; 4096];
        let closed = tokio::time::timeout(within, async {
            loop {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        closed.is_ok()
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let read = self.stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.buffer.extend_from_slice(&chunk[..read]);
        Ok(())
    }

    async fn take(&mut self, length: usize) -> std::io::Result<Vec<u8>> {
        while self.buffer.len() < length {
            self.fill().await?;
        }
        Ok(self.buffer.drain(..length).collect())
    }

    async fn line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
                self.buffer.drain(..end + 2);
                return Ok(line);
            }
            self.fill().await?;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn bad(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.into())
}

/// A request's bytes: `GET`/`POST`… with `Host`, an optional bearer key,
/// extra header lines, and a JSON body when given.
pub fn request(
    method: &str,
    path: &str,
    key: Option<&str>,
    extra: &[&str],
    body: Option<&str>,
) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: longhaul.test\r\n");
    if let Some(key) = key {
        text.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    for line in extra {
        text.push_str(line);
        text.push_str("\r\n");
    }
    if let Some(body) = body {
        text.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        text.push_str("\r\n");
    }
    text.into_bytes()
}
