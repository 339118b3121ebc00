//! One accepted connection: hyper's HTTP/1.1 over the stream with its
//! deadlines, the router as the service (with the peer address for
//! `ConnectInfo`), and a graceful close when the server stops. The
//! connection's permit is held until it ends.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tower_service::Service as _;

use super::deadlines::{Answering, ConnectionClock, Deadlines};
use super::ServeOptions;

/// hyper's own limit on a request head, far above `limits.rs`'s so that a
/// head past those is answered in the error format; past this one hyper
/// answers a bare `431`.
const HTTP_MAX_HEAD_BYTES: usize = 256 * 1024;
/// hyper's own limit on header fields (`limits.rs` allows 100).
const HTTP_MAX_HEADER_FIELDS: usize = 256;

pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    options: ServeOptions,
    mut closing: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let clock = Arc::new(ConnectionClock::new());
    let io = TokioIo::new(Deadlines::new(
        stream,
        clock.clone(),
        options.header_read_timeout,
        options.idle_timeout,
    ));
    let service = RouterService {
        router,
        peer,
        clock,
    };
    let mut builder = http1::Builder::new();
    builder
        .max_buf_size(HTTP_MAX_HEAD_BYTES)
        .max_headers(HTTP_MAX_HEADER_FIELDS)
        // The deadlines above replace hyper's own (which would also cut idle
        // keep-alive connections at the header-read timeout).
        .header_read_timeout(None);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => Some(ended),
        _ = closing.wait_for(|closing| *closing) => None,
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%error, %peer, "connection ended");
    }
}

/// The router as hyper's service for one connection.
#[derive(Clone)]
struct RouterService {
    router: Router,
    peer: SocketAddr,
    clock: Arc<ConnectionClock>,
}

impl hyper::service::Service<Request<Incoming>> for RouterService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let answering = self.clock.answering();
        // The router is always ready (axum documents it), so no poll_ready.
        let mut router = self.router.clone();
        Box::pin(async move {
            let response = match router.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(response.map(|body| TrackedBody {
                body,
                _answering: answering,
            }))
        })
    }
}

/// A response body that keeps its request "being answered" until hyper
/// drops it (sent, or the connection gone).
struct TrackedBody {
    body: Body,
    _answering: Answering,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
