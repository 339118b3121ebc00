//! The time limits of one connection, enforced where hyper reads from it:
//! while no request is being answered, a read that would wait past the
//! deadline fails instead, and hyper closes the connection. The deadline is
//! the header-read timeout from the first byte of a request's head (from the
//! connection's opening for its first request), or the idle timeout from the
//! end of the last answer when nothing of a next request has arrived. While
//! a request is being answered (from the router's call until its response
//! body is dropped) there is no deadline: handlers and streams take their time.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// No time recorded.
const NEVER: u64 = u64::MAX;

/// What a connection's reads and requests tell each other, in milliseconds
/// since the connection opened.
pub(super) struct ConnectionClock {
    opened: Instant,
    /// Requests handed to the router whose answer is not done.
    answering: AtomicUsize,
    /// When the first byte of the head now being read arrived (NEVER: none).
    head_started: AtomicU64,
    /// When the last answer was done (or the connection opened).
    idle_since: AtomicU64,
    /// The connection's task, woken when an answer is done: hyper may have
    /// last read while answering (no deadline then), and must read again
    /// for the idle deadline to be armed.
    reader: AtomicWaker,
}

/// Why a connection is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    SlowHead,
    Idle,
}

impl ConnectionClock {
    /// A clock for a connection that just opened: its first request's head is
    /// due within the header-read timeout.
    pub(super) fn new() -> Self {
        ConnectionClock {
            opened: Instant::now(),
            answering: AtomicUsize::new(0),
            head_started: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            reader: AtomicWaker::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    /// A request's head was read and handed to the router; the connection
    /// has no deadline until the returned guard is dropped (with the
    /// response body, once sent).
    pub(super) fn answering(self: &Arc<Self>) -> Answering {
        self.answering.fetch_add(1, Ordering::SeqCst);
        self.head_started.store(NEVER, Ordering::SeqCst);
        Answering(self.clone())
    }

    /// Bytes arrived: while idle, they start the next request's head.
    fn bytes_arrived(&self) {
        if self.answering.load(Ordering::SeqCst) == 0 {
            let now = self.now();
            let _ =
                self.head_started
                    .compare_exchange(NEVER, now, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    /// When the connection is cut off if nothing changes, and why.
    fn deadline(&self, header_read: Duration, idle: Duration) -> Option<(Instant, Cut)> {
        if self.answering.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let at = |millis: u64, limit: Duration| self.opened + Duration::from_millis(millis) + limit;
        match self.head_started.load(Ordering::SeqCst) {
            NEVER => Some((at(self.idle_since.load(Ordering::SeqCst), idle), Cut::Idle)),
            started => Some((at(started, header_read), Cut::SlowHead)),
        }
    }
}

/// A request being answered; dropped with its response body.
pub(super) struct Answering(Arc<ConnectionClock>);

impl Drop for Answering {
    fn drop(&mut self) {
        let clock = &self.0;
        clock.idle_since.store(clock.now(), Ordering::SeqCst);
        clock.answering.fetch_sub(1, Ordering::SeqCst);
        clock.reader.wake();
    }
}

/// A TCP stream whose reads fail once the connection's deadline passes.
pub(super) struct Deadlines {
    stream: TcpStream,
    clock: Arc<ConnectionClock>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    timer: Pin<Box<Sleep>>,
    armed_for: Option<Instant>,
}

impl Deadlines {
    pub(super) fn new(
        stream: TcpStream,
        clock: Arc<ConnectionClock>,
        header_read_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Deadlines {
            stream,
            clock,
            header_read_timeout,
            idle_timeout,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed_for: None,
        }
    }

    fn deadline(&self) -> Option<(Instant, Cut)> {
        self.clock
            .deadline(self.header_read_timeout, self.idle_timeout)
    }

    /// Waits for the deadline (a read found nothing): an error once it passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.clock.reader.register(cx.waker());
        let Some((deadline, cut)) = self.deadline() else {
            return Poll::Pending;
        };
        if self.armed_for != Some(deadline) {
            self.timer.as_mut().reset(deadline);
            self.armed_for = Some(deadline);
        }
        ready!(self.timer.as_mut().poll(cx));
        Poll::Ready(Err(timed_out(cut, self)))
    }
}

fn timed_out(cut: Cut, deadlines: &Deadlines) -> io::Error {
    let message = match cut {
        Cut::SlowHead => format!(
            "the request head did not arrive within {:?}",
            deadlines.header_read_timeout
        ),
        Cut::Idle => format!("the connection was idle for {:?}", deadlines.idle_timeout),
    };
    io::Error::new(io::ErrorKind::TimedOut, message)
}

impl AsyncRead for Deadlines {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.clock.bytes_arrived();
                    // A head trickling in byte by byte never makes the read
                    // wait, so its deadline is checked here too.
                    if let Some((deadline, cut @ Cut::SlowHead)) = this.deadline() {
                        if Instant::now() >= deadline {
                            return Poll::Ready(Err(timed_out(cut, this)));
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => this.poll_deadline(cx),
        }
    }
}

impl AsyncWrite for Deadlines {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
