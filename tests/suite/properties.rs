//! Property tests (proptest) for the security invariants of issue 5:
//!
//! - path normalization is idempotent, never climbs above `/`, and agrees with a reference model
//!   of RFC 3986 (empty segments kept); a request path is accepted only in that normal form;
//! - no client copy of an identity header survives, in any case or `_`/`-` spelling, repeated or
//!   not — checked on the `HeaderPlan` for random identity configurations, and on real
//!   `Gate::decide` decisions;
//! - a decision never allows on error: a TokenReview or SubjectAccessReview that fails is a 503
//!   (the Gate is built from its public fields with in-process fakes for both APIs, so no
//!   Kubernetes client is needed);
//! - accepted redirect targets are same-origin paths;
//! - with `require_bound`, a token without a numeric `exp` is never accepted;
//! - cookie values never contain `;` or `,`.
//!
//! The libFuzzer targets in `fuzz/` check the same invariants on unstructured input; these run
//! on the stable toolchain with the normal test suite.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use authgate::authn::service_account::{
    ServiceAccountAuthenticator, TokenReviewApi, bound_token_policy,
};
use authgate::authn::session::cookie_values;
use authgate::authz::rules::{RuleSet, Verdict};
use authgate::authz::sar::{AccessAnswer, AccessRequest, AccessReviewApi, AccessReviewer};
use authgate::clock::{SharedClock, SystemClock};
use authgate::config::{Config, IdentityConfig, TokenReviewConfig};
use authgate::decision::{Decision, Reason};
use authgate::gate::{Gate, Peers};
use authgate::identity::HeaderPlan;
use authgate::k8s::KubeError;
use authgate::path::{PathError, PathPrefix, checked_path, normalize_path};
use authgate::redirect::same_origin_target;
use authgate::request::{Headers, Request};
use authgate::settings::Settings;
use authgate::signing::Signer;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use url::Url;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures print the minimal input; no regression files are written next to the tests.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Path normalization
// ---------------------------------------------------------------------------------------------

/// Raw segments and what they decode to.
const SEGMENTS: &[(&str, &str)] = &[
    ("a", "a"),
    ("b", "b"),
    ("notebook", "notebook"),
    ("team-a", "team-a"),
    ("..", ".."),
    (".", "."),
    ("", ""),
    ("%2e", "."),
    ("%2E%2e", ".."),
    (".%2E", ".."),
    ("%61", "a"),
    ("x;y", "x;y"),
    ("%20", "%20"),
    ("%3f", "%3f"),
    ("a b", "a%20b"),
    ("{x}", "%7Bx%7D"),
    ("...", "..."),
    ("~%7E", "~~"),
];

/// RFC 3986 §5.2.4 on already-decoded segments: `.` dropped, `..` drops the segment before it
/// (never above `/`), empty segments kept like any other, a final `.` or `..` leaving a
/// trailing slash.
fn model(decoded: &[&str]) -> String {
    let mut stack: Vec<&str> = Vec::new();
    for (i, s) in decoded.iter().enumerate() {
        let last = i + 1 == decoded.len();
        match *s {
            "." => {}
            ".." => {
                stack.pop();
            }
            s => stack.push(s),
        }
        if last && matches!(*s, "." | "..") {
            stack.push("");
        }
    }
    let out: String = stack.iter().map(|s| format!("/{s}")).collect();
    if out.is_empty() { "/".into() } else { out }
}

/// What a path in normal form looks like: no dot-segment (not even with `;params`), no
/// encoded separator or NUL, every `%` an escape of a byte that is not unreserved, nothing a
/// normalizing mesh would escape.
fn check_normalized(out: &str) -> Result<(), TestCaseError> {
    prop_assert!(out.starts_with('/'), "{out:?}");
    for segment in out.split('/') {
        let bare = segment.split(';').next().unwrap_or_default();
        prop_assert!(bare != "." && bare != "..", "{out:?}");
    }
    let upper = out.to_ascii_uppercase();
    prop_assert!(
        !upper.contains("%2F") && !upper.contains("%5C") && !upper.contains("%00"),
        "{out:?}"
    );
    prop_assert!(
        out.bytes()
            .all(|b| b.is_ascii_graphic() && !b"\\\"<>^`{|}".contains(&b)),
        "{out:?}"
    );
    let bytes = out.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            let v = u8::from_str_radix(hex, 16).unwrap();
            prop_assert!(
                !(v.is_ascii_alphanumeric() || b"-._~".contains(&v)),
                "{out:?}: unreserved byte left encoded"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn normalization_matches_the_model_and_never_climbs_above_root(
        picks in prop::collection::vec(0..SEGMENTS.len(), 0..12),
        climbs in 0usize..4,
    ) {
        let raw = format!("/{}", picks.iter().map(|&i| SEGMENTS[i].0).collect::<Vec<_>>().join("/"));
        let decoded: Vec<&str> = picks.iter().map(|&i| SEGMENTS[i].1).collect();
        let out = normalize_path(&raw).unwrap();
        prop_assert_eq!(&out, &model(&decoded), "{:?}", raw);
        check_normalized(&out)?;
        prop_assert_eq!(normalize_path(&out).unwrap(), out.clone(), "idempotent");

        // Extra `..` at the root change nothing: there is nothing above `/`.
        let climbed = format!("{}{}", "/..".repeat(climbs), raw);
        prop_assert_eq!(normalize_path(&climbed).unwrap(), out.clone());
        // Under a prefix, a path whose `..` never outnumber the segments (empty ones included)
        // before them stays under that prefix.
        let mut depth = 0i32;
        let mut escapes = false;
        for s in &decoded {
            match *s {
                "." => {}
                ".." => {
                    depth -= 1;
                    escapes |= depth < 0;
                }
                _ => depth += 1,
            }
        }
        let under = normalize_path(&format!("/base{raw}")).unwrap();
        prop_assert_eq!(
            PathPrefix::parse("/base").unwrap().matches(&under),
            !escapes,
            "{:?} -> {:?}", raw, under
        );
    }

    #[test]
    fn a_request_path_is_accepted_only_in_normal_form(
        raw in "/([a-z/.;%\\\\{|]|%[0-9a-fA-F]{2}|\\PC){0,30}",
    ) {
        if let Ok(out) = normalize_path(&raw) {
            check_normalized(&out)?;
            prop_assert_eq!(normalize_path(&out), Ok(out.clone()), "{:?}", raw);
        }
        match checked_path(&raw) {
            Ok(path) => {
                prop_assert_eq!(path, raw.as_str());
                prop_assert_eq!(normalize_path(&raw), Ok(raw.clone()));
                // Only the last segment may be empty.
                let segments: Vec<&str> = raw[1..].split('/').collect();
                prop_assert!(segments[..segments.len() - 1].iter().all(|s| !s.is_empty()), "{:?}", raw);
            }
            Err(PathError::NotNormal { normal }) => {
                prop_assert_eq!(Ok(normal.clone()), normalize_path(&raw));
                prop_assert_ne!(normal, raw);
            }
            Err(PathError::EmptySegment) => {
                prop_assert_eq!(normalize_path(&raw), Ok(raw.clone()));
                prop_assert!(raw.contains("//"));
            }
            Err(_) => prop_assert!(normalize_path(&raw).is_err()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Identity headers: the HeaderPlan
// ---------------------------------------------------------------------------------------------

/// `a-b_c` → lower-case with `-` for `_`: how a header name looks to an app that folds them.
fn canonical(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// A header name made of lower-case words joined by `-` or `_` (at most 6 separators: see the
/// report on `MAX_SEPARATORS_FOR_ALL_MIXES`).
fn header_name() -> impl Strategy<Value = String> {
    prop::collection::vec(("[a-z][a-z0-9]{0,6}", prop::bool::ANY), 1..=7).prop_map(|words| {
        let mut out = String::new();
        for (i, (word, underscore)) in words.iter().enumerate() {
            if i > 0 {
                out.push(if *underscore { '_' } else { '-' });
            }
            out.push_str(word);
        }
        out
    })
}

/// A spelling of `name` as a client may send it: any case per letter, `-`/`_` swapped anywhere.
fn spelling(name: &str, bits: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            let bit = bits >> (i % 64) & 1 == 1;
            match c {
                '-' | '_' if bit => '_',
                '-' | '_' => '-',
                c if bit => c.to_ascii_uppercase(),
                c => c,
            }
        })
        .collect()
}

/// Client headers: spellings of the identity names (index into `names`), repeats, noise.
fn client_headers(names: usize) -> impl Strategy<Value = Vec<(String, String)>> {
    let spoof = (0..names, any::<u64>(), "[ -~]{0,12}")
        .prop_map(|(i, bits, v)| (format!("#{i}:{bits}"), v));
    let noise = ("[A-Za-z][A-Za-z0-9_-]{0,15}", "[ -~]{0,12}");
    prop::collection::vec(prop_oneof![3 => spoof, 1 => noise], 0..10)
}

/// Turns the `#index:bits` placeholders into spellings of `names[index]`.
fn resolve_headers(raw: &[(String, String)], names: &[String]) -> Vec<(String, String)> {
    raw.iter()
        .map(
            |(n, v)| match n.strip_prefix('#').and_then(|r| r.split_once(':')) {
                Some((i, bits)) => (
                    spelling(&names[i.parse::<usize>().unwrap()], bits.parse().unwrap()),
                    v.clone(),
                ),
                None => (n.clone(), v.clone()),
            },
        )
        .collect()
}

/// Every client header whose folded name is an identity header is set (overwritten) or removed.
fn assert_no_spoof_survives(
    sent: &[(String, String)],
    identity_names: &[String],
    set: &[&str],
    remove: &[String],
) -> Result<(), TestCaseError> {
    let owned: BTreeSet<String> = identity_names.iter().map(|n| canonical(n)).collect();
    let set: BTreeSet<String> = set.iter().map(|n| n.to_ascii_lowercase()).collect();
    let removed: BTreeSet<String> = remove.iter().map(|n| n.to_ascii_lowercase()).collect();
    for (name, _) in sent {
        if owned.contains(&canonical(name)) {
            let lower = name.to_ascii_lowercase();
            prop_assert!(
                set.contains(&lower) || removed.contains(&lower),
                "client header {name:?} survives (set {set:?}, removed {removed:?})"
            );
        }
    }
    for name in &set {
        prop_assert!(!removed.contains(name), "{name:?} is set and removed");
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn header_plan_leaves_no_identity_header_spoofable(
        user in header_name(),
        groups in header_name(),
        jwt in header_name(),
        strip in prop::collection::vec(header_name(), 0..3),
        upper_config in any::<u64>(),
        with_groups in any::<bool>(),
        raw_headers in client_headers(6),
    ) {
        prop_assume!(canonical(&user) != canonical(&groups)
            && canonical(&user) != canonical(&jwt)
            && canonical(&groups) != canonical(&jwt));
        // The configuration may spell the names in any case.
        let identity = IdentityConfig {
            user_header: spelling(&user, upper_config),
            groups_header: groups.clone(),
            strip_headers: strip.clone(),
            jwt: authgate::config::JwtConfig { header: jwt.clone(), ..Default::default() },
            ..IdentityConfig::default()
        };
        let plan = HeaderPlan::new(&identity);
        let mut names = vec![identity.user_header.clone(), groups.clone(), jwt.clone()];
        names.extend(strip.iter().cloned());
        let sent = resolve_headers(&raw_headers, &{
            let mut n = names.clone();
            n.resize(6, "x-unrelated".into());
            n
        });

        // Allow: user + jwt (+ groups) set, everything else removed.
        let mut set = vec![plan.user.as_str(), plan.jwt.as_str()];
        if with_groups {
            set.push(plan.groups.as_str());
        }
        let remove = plan.remove_except(&set);
        for s in &set {
            prop_assert!(!remove.iter().any(|r| r == s), "remove_except lists the set {s:?}");
        }
        assert_no_spoof_survives(&sent, &names, &set, &remove)?;
        // Skip-auth: nothing set, everything removed.
        assert_no_spoof_survives(&sent, &names, &[], &plan.remove_except(&[]))?;
        for (name, _) in &sent {
            if names.iter().any(|n| canonical(n) == canonical(name)) {
                prop_assert!(plan.is_identity_header(&name.to_ascii_lowercase()), "{name:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The real decision, with failing and answering Kubernetes APIs
// ---------------------------------------------------------------------------------------------

static PRESET: LazyLock<Config> =
    LazyLock::new(|| crate::support::kubeflow_preset().config().clone());

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
});

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Down,
    Yes,
    No,
}

fn api() -> impl Strategy<Value = Api> {
    prop_oneof![Just(Api::Down), Just(Api::Yes), Just(Api::No)]
}

struct FakeTokenReview(Api);

#[async_trait]
impl TokenReviewApi for FakeTokenReview {
    async fn review(&self, _token: &str, aud: &[String]) -> Result<TokenReviewStatus, KubeError> {
        match self.0 {
            Api::Down => Err(KubeError::Timeout(Duration::from_secs(2))),
            Api::Yes => Ok(TokenReviewStatus {
                authenticated: Some(true),
                audiences: Some(aud.to_vec()),
                user: Some(UserInfo {
                    username: Some("system:serviceaccount:team-a:runner".into()),
                    groups: Some(vec!["system:serviceaccounts".into()]),
                    uid: Some("0000-1111".into()),
                    extra: None,
                }),
                ..Default::default()
            }),
            Api::No => Ok(TokenReviewStatus {
                authenticated: Some(false),
                error: Some("token is invalid".into()),
                ..Default::default()
            }),
        }
    }
}

struct FakeAccessReview(Api);

#[async_trait]
impl AccessReviewApi for FakeAccessReview {
    async fn review(&self, _request: &AccessRequest) -> Result<AccessAnswer, KubeError> {
        match self.0 {
            Api::Down => Err(KubeError::transport("connection refused")),
            answer => Ok(AccessAnswer {
                allowed: answer == Api::Yes,
                reason: String::new(),
            }),
        }
    }
}

fn gate(token_review: Api, access_review: Api, strip_headers: &[String]) -> Gate {
    let mut config = PRESET.clone();
    config.identity.strip_headers = strip_headers.to_vec();
    let settings = Settings::new(config).unwrap();
    let clock: SharedClock = Arc::new(SystemClock);
    let signer = Signer::load(
        None,
        &[],
        settings.public_origin().as_str(),
        Duration::from_secs(300),
        clock.clone(),
    )
    .unwrap();
    let reviewer = AccessReviewer::new(
        Arc::new(FakeAccessReview(access_review)),
        settings.config().kubernetes.subject_access_review.clone(),
        clock.clone(),
    );
    let service_accounts = ServiceAccountAuthenticator::new(
        Arc::new(FakeTokenReview(token_review)),
        settings.config().kubernetes.token_review.clone(),
        clock,
    );
    Gate::new(
        &settings,
        Peers {
            signer: Arc::new(signer),
            service_accounts: Some(service_accounts),
            oidc_bearer: None,
            browser: None,
            reviewer: Some(Arc::new(reviewer)),
        },
    )
}

/// A token the bound-token policy accepts for the preset (so the TokenReview is asked).
fn bound_token() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": "https://kubernetes.default.svc",
        "sub": "system:serviceaccount:team-a:runner",
        "aud": ["pipelines.kubeflow.org"],
        "iat": now,
        "exp": now + 3600,
    });
    format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

const PATH_WORDS: &[&str] = &[
    "notebook",
    "team-a",
    "Team-A",
    "nb",
    "jupyter",
    "api",
    "namespaces",
    "notebooks",
    "pipeline",
    "artifacts",
    "get",
    "apis",
    "v1beta1",
    "runs",
    "katib",
    "fetch_experiments",
    "tensorboard",
    "dex",
    "authgate",
    "whoami",
    "..",
    ".",
    "%2e%2e",
    "%2F",
    "a;b",
    "",
];
/// Placeholder values: valid namespaces and names, and some that are not.
const FILLS: &[&str] = &[
    "team-a", "team-a", "nb", "x", "Team-A", "-a", "a;b", "%2e%2e", "..",
];
const QUERIES: &[&str] = &[
    "",
    "namespace=team-a",
    "namespace=team-b&namespace=team-a",
    "namespace=Team-A",
    "podnamespace=team-a",
    "namespace=",
    "resource_reference_key.type=NAMESPACE&resource_reference_key.id=team-a",
];

#[derive(Debug, Clone)]
enum Credential {
    None,
    Bound,
    Twice,
    Garbage(String),
}

fn credential() -> impl Strategy<Value = Credential> {
    prop_oneof![
        1 => Just(Credential::None),
        4 => Just(Credential::Bound),
        1 => Just(Credential::Twice),
        1 => "[ -~]{0,30}".prop_map(Credential::Garbage),
    ]
}

fn is_allow(d: &Decision) -> bool {
    matches!(d, Decision::Allow(_))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn a_decision_never_allows_on_error_and_never_lets_a_spoof_through(
        token_review in prop_oneof![1 => Just(Api::Down), 2 => Just(Api::Yes), 1 => Just(Api::No)],
        access_review in api(),
        method in prop::sample::select(
            &["GET", "HEAD", "POST", "PATCH", "DELETE", "PUT", "get", "PROPFIND", "G T", ""][..],
        ),
        template in any::<prop::sample::Index>(),
        fills in prop::collection::vec(prop::sample::select(FILLS), 8),
        words in prop::collection::vec(prop::sample::select(PATH_WORDS), 0..7),
        use_template in prop::bool::weighted(0.75),
        trailing_slash in any::<bool>(),
        query in prop::sample::select(QUERIES),
        credential in credential(),
        strip in prop::collection::vec(header_name(), 0..2),
        raw_headers in client_headers(5),
    ) {
        let gate = gate(token_review, access_review, &strip);
        // What the gate was built with, built again to predict its answers.
        let plan = &HeaderPlan::new(&IdentityConfig {
            strip_headers: strip.clone(),
            ..PRESET.identity.clone()
        });
        let mut names = vec![plan.user.clone(), plan.groups.clone(), plan.jwt.clone()];
        names.extend(strip.iter().cloned());
        let mut sent = resolve_headers(&raw_headers, &{
            let mut n = names.clone();
            n.resize(5, "x-unrelated".into());
            n
        });
        // Only the credential under test is an Authorization header.
        sent.retain(|(n, _)| !n.eq_ignore_ascii_case("authorization"));
        let token = bound_token();
        match &credential {
            Credential::None => {}
            Credential::Bound => sent.push(("Authorization".into(), format!("Bearer {token}"))),
            Credential::Twice => {
                sent.push(("authorization".into(), format!("Bearer {token}")));
                sent.push(("Authorization".into(), format!("Bearer {token}")));
            }
            Credential::Garbage(g) => sent.push(("authorization".into(), g.clone())),
        }
        // Mostly a path one of the preset's rules matches, so reviews are asked for.
        let mut target = if use_template {
            let rules = &PRESET.authorization.rules;
            let mut fill = fills.iter().cycle();
            rules[template.index(rules.len())]
                .path
                .split('/')
                .map(|seg| match seg {
                    "**" => words.join("/"),
                    s if s.starts_with('{') => fill.next().unwrap().to_string(),
                    s => s.to_string(),
                })
                .collect::<Vec<_>>()
                .join("/")
        } else {
            format!("/{}", words.join("/"))
        };
        if trailing_slash {
            target.push('/');
        }
        if !query.is_empty() {
            target = format!("{target}?{query}");
        }
        let req = Request::new(method, "https", "kubeflow.example.com", &target,
            Headers::from_pairs(sent.iter().map(|(n, v)| (n.as_str(), v.clone()))), None);
        let decision = RUNTIME.block_on(gate.decide(&req));

        let path = match &req.path {
            Ok(path) => path.clone(),
            Err(_) => {
                prop_assert_eq!(decision.status().as_u16(), 400, "refused path {:?}", target);
                return Ok(());
            }
        };
        // A method that is not a token is refused before anything else is asked.
        if req.method.is_err() {
            prop_assert_eq!(decision.reason(), Reason::BadMethod, "{:?} {:?}", method, target);
            prop_assert_eq!(decision.status().as_u16(), 400);
            return Ok(());
        }
        let skip = PathPrefix::parse("/dex").unwrap().matches(&path);
        let own = PathPrefix::parse("/authgate").unwrap().matches(&path);
        let verdict = PRESET_RULES.evaluate(&req, &path);
        let needs_review = matches!(verdict, Verdict::Review(..));

        // No allow on error: a failing TokenReview is a 503 for every request it was asked about.
        if token_review == Api::Down && matches!(credential, Credential::Bound) && !skip {
            prop_assert!(!is_allow(&decision), "allowed while TokenReview is down: {target:?}");
            if !own || path == "/authgate/whoami" {
                prop_assert_eq!(decision.status().as_u16(), 503, "{:?}: {:?}", target, decision.reason());
            }
        }
        // A failing SubjectAccessReview is a 503 for every request whose rule needs one.
        if access_review == Api::Down && needs_review && !skip && !own && is_allow(&decision) {
            prop_assert!(false, "allowed while SubjectAccessReview is down: {target:?}");
        }
        if token_review == Api::Yes && access_review == Api::Down && needs_review
            && matches!(credential, Credential::Bound) && !skip && !own
        {
            prop_assert_eq!(decision.status().as_u16(), 503, "{:?}: {:?}", target, decision.reason());
        }

        match &decision {
            Decision::Allow(allow) => {
                if skip {
                    prop_assert!(allow.set.is_empty() && allow.identity.is_none());
                } else {
                    // Only an identity the TokenReview vouched for, and RBAC when a rule asks.
                    prop_assert_eq!(token_review, Api::Yes);
                    prop_assert!(matches!(credential, Credential::Bound));
                    prop_assert!(!needs_review || access_review == Api::Yes, "{:?}", target);
                    let user = allow.set.iter().find(|(n, _)| *n == plan.user).map(|(_, v)| v.as_str());
                    prop_assert_eq!(user, Some("system:serviceaccount:team-a:runner"));
                }
                let set: Vec<&str> = allow.set.iter().map(|(n, _)| n.as_str()).collect();
                assert_no_spoof_survives(&sent, &names, &set, &allow.remove)?;
            }
            Decision::Respond(_) => {}
        }
        // Without a usable credential: 401, whatever the APIs do (nothing was asked).
        if !matches!(credential, Credential::Bound) && !skip && !own {
            prop_assert_eq!(decision.status().as_u16(), 401, "{:?}: {:?}", target, decision.reason());
        }
        if matches!(credential, Credential::Bound) && token_review == Api::No && !skip && !own {
            prop_assert_eq!(decision.status().as_u16(), 401, "{:?}: {:?}", target, decision.reason());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Redirect targets, bound tokens, cookies
// ---------------------------------------------------------------------------------------------

const REDIRECT_PIECES: &[&str] = &[
    "/",
    "//",
    "\\",
    "evil.com",
    "kubeflow.example.com",
    "@",
    ":",
    "https:",
    "http:",
    "https://",
    "javascript:",
    "%2f",
    "%2F%2F",
    "%5c",
    "..",
    ".",
    "?",
    "#",
    "&",
    "=",
    "next",
    "a",
    " ",
    "\t",
    "\n",
    "%0a",
    ";",
    "\u{3002}",
    "\u{ff0f}",
    "%252f",
    "https://kubeflow.example.com",
    "https://kubeflow.example.com.evil.com",
    "https://kubeflow.example.com:443",
    ":8443",
];

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn accepted_redirect_targets_are_same_origin_paths(
        pieces in prop::collection::vec(prop::sample::select(REDIRECT_PIECES), 1..8),
    ) {
        let origin = Url::parse("https://kubeflow.example.com").unwrap();
        let target: String = pieces.concat();
        if let Some(out) = same_origin_target(&target, &origin) {
            prop_assert!(out.starts_with('/') && !out.starts_with("//"), "{target:?} -> {out:?}");
            prop_assert!(!out.chars().any(|c| c == '\\' || c.is_whitespace() || c.is_control()),
                "{target:?} -> {out:?}");
            prop_assert!(!out.contains("//") && !out.contains("/./") && !out.contains("/../"),
                "{target:?} -> {out:?}");
            let resolved = origin.join(&out).unwrap();
            prop_assert_eq!(resolved.origin(), origin.origin(), "{:?} -> {:?}", target, out);
            prop_assert_eq!(resolved.host_str(), Some("kubeflow.example.com"));
            prop_assert_eq!(same_origin_target(&out, &origin), Some(out.clone()), "{:?}", target);
        }
    }

    #[test]
    fn require_bound_never_accepts_a_token_without_a_numeric_exp(
        iss in prop::option::of(prop_oneof![Just("kubernetes/serviceaccount".to_string()), "[a-z:/.]{0,20}"]),
        exp in prop_oneof![
            Just(None),
            Just(Some(serde_json::json!("4102444800"))),
            Just(Some(serde_json::json!(4102444800.5))),
            Just(Some(serde_json::json!(-1))),
            Just(Some(serde_json::json!(null))),
            Just(Some(serde_json::json!([4102444800u64]))),
        ],
        iat in prop::option::of(any::<u32>()),
        aud in prop::option::of("[a-z.]{0,24}"),
        audiences in prop::collection::vec(prop_oneof![Just("pipelines.kubeflow.org".to_string()), "[a-z.]{1,12}"], 0..2),
        max_lifetime in prop::option::of(1u64..100_000),
        garbage in "[ -~]{0,60}",
    ) {
        let config = TokenReviewConfig {
            require_bound: true,
            audiences,
            max_lifetime: max_lifetime.map(Duration::from_secs),
            ..TokenReviewConfig::default()
        };
        let mut claims = serde_json::Map::new();
        if let Some(iss) = iss { claims.insert("iss".into(), iss.into()); }
        if let Some(exp) = exp { claims.insert("exp".into(), exp); }
        if let Some(iat) = iat { claims.insert("iat".into(), iat.into()); }
        if let Some(aud) = aud { claims.insert("aud".into(), aud.into()); }
        let payload = URL_SAFE_NO_PAD.encode(serde_json::Value::Object(claims).to_string());
        let now = 1_700_000_000;
        for token in [
            format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln"),
            format!("eyJhbGciOiJSUzI1NiJ9.{payload}=.c2ln"),
            garbage.clone(),
        ] {
            prop_assert!(bound_token_policy(&token, &config, now).is_err(), "{token:?} accepted");
        }
    }

    #[test]
    fn cookie_values_never_contain_separators(
        cookies in prop::collection::vec("[ -~]{0,40}", 0..4),
        name in prop::sample::select(&["authgate_session", "__Host-authgate_session", "a", ""][..]),
    ) {
        let headers = Headers::from_pairs(cookies.iter().map(|c| ("Cookie", c.clone())));
        for value in cookie_values(&headers, name) {
            prop_assert!(!value.contains(';') && !value.contains(','), "{value:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Queries as the apps parse them (issue 14)
// ---------------------------------------------------------------------------------------------

/// The preset's rules with its query bound.
static PRESET_RULES: LazyLock<RuleSet> =
    LazyLock::new(|| RuleSet::from_config(&PRESET.authorization).unwrap());

fn judge(target: &str) -> String {
    let req = Request::new(
        "GET",
        "https",
        "kubeflow.example.com",
        target,
        Headers::default(),
        None,
    );
    let path = req.path.clone().unwrap();
    match PRESET_RULES.evaluate(&req, &path) {
        Verdict::NoRule => "none".into(),
        Verdict::Allow(r) => format!("allow {}", r.name),
        Verdict::Review(r, a) => format!("review {} {}", r.name, a.namespace),
        Verdict::Refuse(r, _) => format!("refuse {}", r.name),
        Verdict::Invalid(r, _) => format!("invalid {}", r.name),
    }
}

/// grpc-gateway's spelling of a dotted field name: each part by its proto or its JSON name.
fn spell(parts: &[&str], json: &[bool]) -> String {
    parts
        .iter()
        .zip(json)
        .map(|(part, &j)| {
            if !j {
                return part.to_string();
            }
            let mut out = String::new();
            let mut upper = false;
            for c in part.chars() {
                match c {
                    '_' => upper = true,
                    c if upper => {
                        out.push(c.to_ascii_uppercase());
                        upper = false;
                    }
                    c => out.push(c),
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join(".")
}

proptest! {
    #![proptest_config(config(256))]

    /// Wherever the namespace sits among junk parameters, a rule that reads the query reviews
    /// it while the query is within the bound, and refuses the request past it: never judges a
    /// namespace the app (Express: 1,000 parameters) might not read.
    #[test]
    fn a_namespace_is_reviewed_within_the_query_bound_and_refused_past_it(
        junk in 0usize..140,
        at in 0usize..140,
        empty in prop::bool::ANY,
    ) {
        let mut pieces: Vec<String> = (0..junk).map(|i| if empty && i % 3 == 0 { String::new() } else { format!("k{i}=v") }).collect();
        pieces.insert(at.min(junk), "namespace=team-a".into());
        let verdict = judge(&format!("/pipeline/artifacts/get?{}", pieces.join("&")));
        if pieces.len() > PRESET.authorization.max_query_parameters {
            prop_assert_eq!(verdict, "invalid kfp-artifacts");
        } else {
            prop_assert_eq!(verdict, "review kfp-artifacts team-a");
        }
    }

    /// Every spelling grpc-gateway accepts is the same parameter: the NAMESPACE rule applies to
    /// any mix of proto and JSON names and any decimal spelling of the enum's number, and two
    /// different namespaces under any two spellings are refused.
    #[test]
    fn every_grpc_gateway_spelling_is_one_parameter(
        type_json in prop::collection::vec(prop::bool::ANY, 2),
        id_json in prop::collection::vec(prop::bool::ANY, 2),
        other_json in prop::collection::vec(prop::bool::ANY, 2),
        zeros in 0usize..3,
        plus in prop::bool::ANY,
        by_name in prop::bool::ANY,
        second in prop::option::of(prop::sample::select(vec!["team-a", "team-b"])),
    ) {
        let key = ["resource_reference_key", "type"];
        let id = ["resource_reference_key", "id"];
        let value = if by_name {
            "NAMESPACE".to_string()
        } else {
            format!("{}{}5", if plus { "%2B" } else { "" }, "0".repeat(zeros))
        };
        let mut target = format!(
            "/pipeline/apis/v1beta1/runs?{}={value}&{}=team-a",
            spell(&key, &type_json),
            spell(&id, &id_json)
        );
        if let Some(ns) = second {
            target.push_str(&format!("&{}={ns}", spell(&id, &other_json)));
        }
        let verdict = judge(&target);
        match second {
            Some("team-b") => prop_assert_eq!(verdict, "refuse kfp-v1-runs-list-by-namespace", "{}", target),
            _ => prop_assert_eq!(verdict, "review kfp-v1-runs-list-by-namespace team-a", "{}", target),
        }
    }
}
