//! The two ways Envoy asks: gRPC and HTTP ext_authz. Each adapter turns its wire format into the
//! core `Request` and the core `Decision` back into its wire format; nothing else lives here.

pub mod grpc;
pub mod http;

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

use crate::telemetry::Checker;

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves gRPC ext_authz until `stop` turns true, then drains.
pub async fn serve_grpc(listener: TcpListener, checker: Arc<Checker>, stop: watch::Receiver<bool>) {
    let service = AuthorizationServer::new(grpc::AuthorizationService::new(checker));
    // TCP_NODELAY must be set on the incoming stream: the builder's `tcp_nodelay` is ignored for
    // `serve_with_incoming*`, and without it every answer waits ~40 ms for a delayed ACK.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, stopped(stop))
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "gRPC server failed");
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
