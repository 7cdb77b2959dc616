//! A fake kube-apiserver for integration tests: HTTPS with a generated CA, bearer
//! authentication of the caller, and the two endpoints authgate uses (TokenReview and
//! SubjectAccessReview), decided from an in-memory fixture. It is reached through the
//! production `kube` client via a kubeconfig, so the wire format is the real one: request
//! and response bodies are parsed and rendered with the k8s-openapi types, errors are
//! `metav1.Status` objects.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus, UserInfo};
use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;

/// The audience the apiserver assumes when a TokenReview names none (`--api-audiences`).
pub const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

#[derive(Clone, Debug, Default)]
pub struct Fixture {
    pub tokens: Vec<TokenEntry>,
    pub rbac: Rbac,
}

/// A token the fake cluster recognises. Empty `audiences` means a legacy token, valid only
/// for [`DEFAULT_AUDIENCE`], as the apiserver treats tokens without an `aud` claim.
#[derive(Clone, Debug, Default)]
pub struct TokenEntry {
    pub token: String,
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub audiences: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
    pub expired: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Rbac {
    pub bindings: Vec<Binding>,
}

/// A RoleBinding in `namespace`, or a ClusterRoleBinding when `namespace` is `"*"`.
#[derive(Clone, Debug)]
pub struct Binding {
    pub namespace: String,
    pub subject: Subject,
    pub rules: Vec<PolicyRule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    User(String),
    Group(String),
}

#[derive(Clone, Debug, Default)]
pub struct PolicyRule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
}

/// Mutable state shared between the test and the server task.
struct State {
    caller_token: String,
    fixture: Mutex<Fixture>,
    token_reviews: Mutex<Vec<serde_json::Value>>,
    access_reviews: Mutex<Vec<serde_json::Value>>,
    down: AtomicBool,
    /// Answer TokenReviews like an API server that is not audience-aware: the requested
    /// audiences are ignored and `status.audiences` is left out.
    audience_unaware: AtomicBool,
    delay_ms: AtomicU64,
    /// Calls being answered now, and the most ever answered at once.
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

/// Counts a call as in flight until dropped.
struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    fn enter(state: &'a State) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct KubeApi {
    state: Arc<State>,
    addr: SocketAddr,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
    kubeconfig: PathBuf,
    // Kept alive for the kubeconfig file; removed on drop.
    _dir: tempfile::TempDir,
}

impl KubeApi {
    pub async fn start(fixture: Fixture) -> KubeApi {
        let (ca_pem, cert_der, key_der) = generate_pki();
        let tls = axum_server::tls_rustls::RustlsConfig::from_der(vec![cert_der], key_der)
            .await
            .expect("rustls server config (is a rustls CryptoProvider available?)");

        let state = Arc::new(State {
            caller_token: random_token(),
            fixture: Mutex::new(fixture),
            token_reviews: Mutex::default(),
            access_reviews: Mutex::default(),
            down: AtomicBool::new(false),
            audience_unaware: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
        });

        // Bind before spawning so the port is known and connections queue from now on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback({
            let state = state.clone();
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { handle(&state, method, uri, headers, body).await }
            }
        });
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(listener, tls)
            .expect("listener")
            .handle(handle.clone());
        let task = tokio::spawn(async move {
            server
                .serve(app.into_make_service())
                .await
                .expect("kube api server");
        });

        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(addr, &ca_pem, &state.caller_token),
        )
        .expect("write kubeconfig");

        KubeApi {
            state,
            addr,
            handle,
            task,
            kubeconfig,
            _dir: dir,
        }
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn caller_token(&self) -> &str {
        &self.state.caller_token
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn token_reviews(&self) -> Vec<serde_json::Value> {
        self.state.token_reviews.lock().unwrap().clone()
    }

    pub fn access_reviews(&self) -> Vec<serde_json::Value> {
        self.state.access_reviews.lock().unwrap().clone()
    }

    /// The most calls the server was answering at one time.
    pub fn max_in_flight(&self) -> u64 {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// TokenReviews answered as an API server without audience support does: any valid token
    /// is authenticated whatever audiences were asked for, and `status.audiences` is absent.
    pub fn set_audience_unaware(&self, unaware: bool) {
        self.state.audience_unaware.store(unaware, Ordering::SeqCst);
    }

    pub fn set_delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_fixture(&self, fixture: Fixture) {
        *self.state.fixture.lock().unwrap() = fixture;
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.handle.shutdown();
        self.task.abort();
    }
}

/// CA + server certificate valid for 127.0.0.1 and localhost. Returns the CA as PEM (for
/// the kubeconfig) and the server certificate and key as DER (for rustls).
fn generate_pki() -> (String, Vec<u8>, Vec<u8>) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kube-api-test-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.der().to_vec(), key.serialize_der())
}

/// Unpredictable enough for a test credential without pulling in a RNG crate.
fn random_token() -> String {
    use sha2::{Digest, Sha256};
    use std::hash::{BuildHasher, RandomState};
    let seed = RandomState::new().hash_one(std::time::SystemTime::now());
    let digest = Sha256::digest(format!("{seed}-{}", std::process::id()));
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn kubeconfig_yaml(addr: SocketAddr, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    // JSON is YAML, and serde_json does the quoting for us.
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": format!("https://{addr}"),
            "certificate-authority-data": ca,
        }}],
        "users": [{"name": "authgate", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "authgate"}}],
        "current-context": "test",
    });
    serde_json::to_string_pretty(&config).unwrap()
}

async fn handle(
    state: &State,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = InFlight::enter(state);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }

    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == state.caller_token);

    // Record what authgate sent even when the answer is an error, so tests can count
    // attempts (kube's retry layer repeats 503s) as well as successful reviews.
    if authorized && method == Method::POST {
        let record = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        match uri.path() {
            TOKEN_REVIEWS => state.token_reviews.lock().unwrap().push(record),
            ACCESS_REVIEWS => state.access_reviews.lock().unwrap().push(record),
            _ => {}
        }
    }

    if state.down.load(Ordering::SeqCst) {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        );
    }
    if !authorized {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let fixture = state.fixture.lock().unwrap().clone();
    match (method, uri.path()) {
        (Method::POST, TOKEN_REVIEWS) => match serde_json::from_slice::<TokenReview>(&body) {
            Ok(review) => token_review(
                &fixture,
                review,
                state.audience_unaware.load(Ordering::SeqCst),
            ),
            Err(e) => bad_request(e),
        },
        (Method::POST, ACCESS_REVIEWS) => {
            match serde_json::from_slice::<SubjectAccessReview>(&body) {
                Ok(review) => access_review(&fixture.rbac, review),
                Err(e) => bad_request(e),
            }
        }
        (_, path) => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource ({path})"),
        ),
    }
}

fn token_review(fixture: &Fixture, mut review: TokenReview, audience_unaware: bool) -> Response {
    let token = review.spec.token.clone();
    if token.is_empty() {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "token is required for TokenReview in authentication",
        );
    }
    // The apiserver substitutes its own audiences when the request names none.
    let requested = match review.spec.audiences.as_deref() {
        Some(a) if !a.is_empty() => a.to_vec(),
        _ => vec![DEFAULT_AUDIENCE.to_string()],
    };
    let failed = |error: String| TokenReviewStatus {
        authenticated: Some(false),
        error: Some(error),
        ..Default::default()
    };

    review.status = Some(match fixture.tokens.iter().find(|t| t.token == token) {
        // Same phrasing as the apiserver's bearer-token union authenticator; the lists are
        // rendered like Go's %q of a []string: ["a" "b"].
        None if token.split('.').count() != 3 => failed(
            "[invalid bearer token, square/go-jose: compact JWS format must have three parts]"
                .into(),
        ),
        None => failed("invalid bearer token".into()),
        Some(entry) if entry.expired => {
            failed("[invalid bearer token, service account token has expired]".into())
        }
        Some(entry) => {
            // A token without audiences is a legacy token, valid for the apiserver's own.
            let token_audiences = match entry.audiences.is_empty() {
                true => vec![DEFAULT_AUDIENCE.to_string()],
                false => entry.audiences.clone(),
            };
            let common: Vec<String> = token_audiences
                .iter()
                .filter(|a| requested.contains(a))
                .cloned()
                .collect();
            let authenticated = |audiences: Option<Vec<String>>| TokenReviewStatus {
                authenticated: Some(true),
                audiences,
                user: Some(UserInfo {
                    username: Some(entry.username.clone()),
                    uid: Some(entry.uid.clone()),
                    groups: Some(entry.groups.clone()),
                    extra: (!entry.extra.is_empty()).then(|| entry.extra.clone()),
                }),
                error: None,
            };
            if audience_unaware {
                authenticated(None)
            } else if common.is_empty() {
                failed(format!(
                    "[invalid bearer token, token audiences {} is invalid for the target audiences {}]",
                    go_quote(&token_audiences),
                    go_quote(&requested)
                ))
            } else {
                authenticated(Some(common))
            }
        }
    });
    json(StatusCode::CREATED, &review)
}

fn go_quote(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect();
    format!("[{}]", quoted.join(" "))
}

fn access_review(rbac: &Rbac, mut review: SubjectAccessReview) -> Response {
    let spec = &review.spec;
    let user = spec.user.clone().unwrap_or_default();
    let groups = spec.groups.clone().unwrap_or_default();
    // The apiserver's validation (422) for the two mistakes a client can make.
    if user.is_empty() && groups.is_empty() {
        return invalid(
            "spec.user: Invalid value: \"\": at least one of user or group must be specified",
        );
    }
    if spec.resource_attributes.is_some() == spec.non_resource_attributes.is_some() {
        return invalid(
            "spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
        );
    }

    // The API server's privileged group bypasses every authorizer: members may do anything.
    if groups.iter().any(|g| g == "system:masters") {
        review.status = Some(SubjectAccessReviewStatus {
            allowed: true,
            ..Default::default()
        });
        return json(StatusCode::CREATED, &review);
    }
    // Non-resource URLs are not modelled by the fixture, so they are never allowed.
    let reason = spec.resource_attributes.as_ref().and_then(|attrs| {
        let namespace = attrs.namespace.clone().unwrap_or_default();
        let group = attrs.group.clone().unwrap_or_default();
        let verb = attrs.verb.clone().unwrap_or_default();
        let resource = attrs.resource.clone().unwrap_or_default();
        let subresource = attrs.subresource.clone().unwrap_or_default();
        rbac.bindings.iter().enumerate().find_map(|(i, binding)| {
            let cluster_wide = binding.namespace == "*";
            if !cluster_wide && (namespace.is_empty() || binding.namespace != namespace) {
                return None;
            }
            let subject = match &binding.subject {
                Subject::User(u) if *u == user => format!("User {u:?}"),
                Subject::Group(g) if groups.contains(g) => format!("Group {g:?}"),
                _ => return None,
            };
            binding.rules.iter().any(|r| r.allows(&group, &resource, &subresource, &verb)).then(|| {
                // Same sentence as the RBAC authorizer, with synthesized object names.
                if cluster_wide {
                    format!("RBAC: allowed by ClusterRoleBinding \"binding-{i}\" of ClusterRole \"role-{i}\" to {subject}")
                } else {
                    format!("RBAC: allowed by RoleBinding \"binding-{i}/{namespace}\" of Role \"role-{i}\" to {subject}")
                }
            })
        })
    });
    // A real RBAC deny carries neither a reason nor `denied: true` (RBAC has no opinion).
    review.status = Some(SubjectAccessReviewStatus {
        allowed: reason.is_some(),
        reason,
        ..Default::default()
    });
    json(StatusCode::CREATED, &review)
}

impl PolicyRule {
    /// RBAC's rule matching: "*" wildcards, and subresources addressed as
    /// "resource/subresource" (or "*/subresource"), so "pods" does not grant "pods/log".
    fn allows(&self, group: &str, resource: &str, subresource: &str, verb: &str) -> bool {
        let has = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
        let resource_ok = if subresource.is_empty() {
            has(&self.resources, resource)
        } else {
            let wanted = format!("{resource}/{subresource}");
            let any_resource = format!("*/{subresource}");
            self.resources
                .iter()
                .any(|r| r == "*" || *r == wanted || *r == any_resource)
        };
        has(&self.api_groups, group) && has(&self.verbs, verb) && resource_ok
    }
}

fn json<T: serde::Serialize>(code: StatusCode, body: &T) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(body).unwrap(),
    )
        .into_response()
}

/// A `metav1.Status` failure, which is what kube turns into `kube::Error::Api`.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = Status {
        status: Some("Failure".into()),
        message: Some(message.into()),
        reason: Some(reason.into()),
        code: Some(code.as_u16().into()),
        ..Default::default()
    };
    json(code, &body)
}

fn bad_request(e: serde_json::Error) -> Response {
    status(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        &format!("the body of the request was in an unknown format: {e}"),
    )
}

fn invalid(detail: &str) -> Response {
    let message = format!("SubjectAccessReview.authorization.k8s.io \"\" is invalid: {detail}");
    status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &message)
}
