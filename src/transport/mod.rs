//! The two ways Envoy asks: gRPC and HTTP ext_authz. Each adapter turns its wire format into the
//! core `Request` and the core `Decision` back into its wire format; nothing else lives here.

pub mod check_request;
pub mod grpc;
pub mod http;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::StreamExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

use crate::telemetry::Checker;

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves gRPC ext_authz until `stop` turns true, then drains.
pub async fn serve_grpc(listener: TcpListener, checker: Arc<Checker>, stop: watch::Receiver<bool>) {
    let service = grpc::AuthorizationService::new(checker);
    // TCP_NODELAY must be set on the incoming stream: the builder's `tcp_nodelay` is ignored for
    // `serve_with_incoming*`, and without it every answer waits ~40 ms for a delayed ACK.
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(|accepted| accepted.map(UnvectoredStream));
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, stopped(stop))
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "gRPC server failed");
    }
}

/// An accepted gRPC connection that does not offer vectored writes, so that h2 batches answers.
/// h2 copies a DATA frame into its write buffer only below 256 bytes on a vectored connection
/// (1 KiB otherwise); a frame it does not copy must be written out before the next frame is
/// queued. authgate's allow answer is ~0.7–1 KiB, mostly the identity JWT: over the vectored
/// socket every answer cost its own `writev`, while copied, the answers of concurrent streams
/// leave in one write. A no-op server answering with 916 bytes instead of 4 cost 8 µs more CPU
/// per Check; this wrapper took that back (BENCHMARKS.md, "What each optimisation bought").
struct UnvectoredStream(TcpStream);

impl AsyncRead for UnvectoredStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

/// `poll_write_vectored` and `is_write_vectored` keep their defaults (one buffer at a time, and
/// `false`): that is the point.
impl AsyncWrite for UnvectoredStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Connected for UnvectoredStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.connect_info()
    }
}

/// Serves the HTTP listener until `stop` turns true, then drains.
pub async fn serve_http(
    listener: TcpListener,
    state: http::HttpState,
    stop: watch::Receiver<bool>,
) {
    use axum::serve::ListenerExt;
    let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
    // Answers are small: send them at once rather than waiting for a delayed ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(stopped(stop))
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The property h2 reads to decide whether to copy an answer into its write buffer; a
    /// wrapper that started to offer vectored writes (e.g. by delegating them) would bring back
    /// one `writev` per answer.
    #[tokio::test]
    async fn grpc_connections_offer_no_vectored_writes_and_pass_bytes_both_ways() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(
            accepted.is_write_vectored(),
            "tokio's TcpStream is vectored"
        );
        let mut server = UnvectoredStream(accepted);
        assert!(!server.is_write_vectored());
        assert_eq!(server.connect_info().remote_addr, client.local_addr().ok());

        server.write_all(b"answer").await.unwrap();
        server.flush().await.unwrap();
        let mut got = [0u8; 6];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"answer");
        client.write_all(b"check").await.unwrap();
        let mut got = [0u8; 5];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"check");
    }
}
