//! The test upstream ("the app behind the gateway"): answers every method and path with 200 and
//! a JSON description of what it received, so tests can prove which identity headers arrived.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::extract::Request;
use serde_json::{Value, json};

/// Starts the echo server on 127.0.0.1:<free port> (HTTP/1.1; h2c also accepted).
///
/// Body: `{"method": "GET", "path": "/raw/path?query", "headers": [["name", "value"], ...]}`.
/// `headers` holds every received value as its own pair — a header sent twice appears twice —
/// in hyper's `HeaderMap` order (names lower-cased, first-appearance order, repeats adjacent).
/// Values that are not UTF-8 are given lossily.
pub async fn start_echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo");
    let addr = listener.local_addr().expect("echo addr");
    let app = axum::Router::new().fallback(echo);
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("echo server");
    });
    (addr, task)
}

/// Like [`start_echo`], and counts the requests the app received (so a test can prove that a
/// request never reached it).
pub async fn start_counted_echo() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo");
    let addr = listener.local_addr().expect("echo addr");
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        counter.fetch_add(1, Ordering::SeqCst);
        echo(req)
    });
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("echo server");
    });
    (addr, count)
}

async fn echo(req: Request) -> Json<Value> {
    let headers: Vec<[String; 2]> = req
        .headers()
        .iter()
        .map(|(name, value)| {
            [
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ]
        })
        .collect();
    // The request target as sent (origin form), not a re-serialized, normalized URI.
    let path = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    Json(json!({
        "method": req.method().as_str(),
        "path": path,
        "headers": headers,
    }))
}

/// The echo app, with `/dex/…` passed on to `provider` (a provider whose issuer path is `/dex`):
/// Kubeflow's layout, where the browser reaches Dex through the gateway (`skip_auth: /dex`).
/// The request goes on as it came (method, path, query, headers, `Host` included, body); the
/// answer comes back as it was, redirects not followed.
pub async fn start_echo_with_dex(provider: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo");
    let addr = listener.local_addr().expect("echo addr");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let app = axum::Router::new().fallback(move |req: Request| {
        let client = client.clone();
        async move {
            if !req.uri().path().starts_with("/dex/") {
                return axum::response::IntoResponse::into_response(echo(req).await);
            }
            let target = format!(
                "http://{provider}{}",
                req.uri()
                    .path_and_query()
                    .map(|pq| pq.as_str())
                    .unwrap_or("/")
            );
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let mut forward = client.request(parts.method, target).body(body);
            for (name, value) in &parts.headers {
                if name != "content-length" && name != "connection" {
                    forward = forward.header(name, value);
                }
            }
            let answer = forward.send().await.expect("the provider answers");
            let mut response = axum::response::Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                if name != "content-length" && name != "transfer-encoding" && name != "connection" {
                    response = response.header(name, value);
                }
            }
            let bytes = answer.bytes().await.unwrap();
            response.body(axum::body::Body::from(bytes)).unwrap()
        }
    });
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("echo server");
    });
    addr
}

/// All values of header `name` (case-insensitive) in an echo body.
pub fn header_values(body: &Value, name: &str) -> Vec<String> {
    body["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pair| {
            pair[0]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .filter_map(|pair| pair[1].as_str().map(str::to_owned))
        .collect()
}
