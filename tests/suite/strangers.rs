//! Strangers cost nothing, through a real Envoy and the Kubernetes API test server: memory
//! bounded by bytes whatever `Host` a client sends, an address over its limit refused before
//! any review, and a per-identity budget of SubjectAccessReviews. (Sessions and the store:
//! `tests/suite/sessions_redis.rs`.)

use crate::support;
use crate::support::process::AuthgateProcess;
use crate::support::*;

fn tokens() -> Fixture {
    Fixture {
        tokens: vec![
            sa_token("runner-token", "team-a", "runner", &[KFP_AUDIENCE]),
            sa_token("other-token", "team-b", "other", &[KFP_AUDIENCE]),
        ],
        ..Fixture::default()
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// A logged-in client sending a different 16 KB `Host` on every request: one signed token per
/// host used to be kept (~38 KB a request, until the replica was OOM-killed). Hosts authgate
/// does not serve now get the public audience, and the token cache is bounded in bytes.
#[tokio::test]
async fn a_flood_of_made_up_hosts_does_not_grow_the_process() {
    let kube = KubeApi::start(tokens()).await;
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_authgate"));
    let process = AuthgateProcess::start(binary, &config_yaml(kube.kubeconfig_path(), "")).await;
    let (upstream, _) = echo::start_echo().await;
    let envoy = Envoy::start_with(
        ExtAuthz::Grpc,
        process.grpc,
        upstream,
        support::envoy::Options::default(),
    )
    .await;
    let send = |i: usize| {
        let addr = envoy.addr();
        async move {
            let host = format!("h{i}-{}.example.com", "x".repeat(16 * 1024));
            let head = format!(
                "GET /x HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer runner-token\r\n"
            );
            raw_http(addr, &head).await.status
        }
    };
    // Warm up (allocator, caches), then measure.
    for i in 0..50 {
        assert_eq!(send(i).await, 200);
    }
    let pid = process.child.id();
    let before = rss_kib(pid);
    for batch in 0..50 {
        let statuses =
            futures::future::join_all((0..40).map(|i| send(1000 + batch * 40 + i))).await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }
    let after = rss_kib(pid);
    let grown = after.saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "2,000 requests with made-up 16 KB hosts grew the process by {grown} KiB (before {before}, after {after})"
    );
}

/// An address over `per_client_ip` is refused before anything is looked up for it: a flood
/// of made-up tokens from one address costs at most its burst in TokenReviews.
#[tokio::test]
async fn an_address_over_its_limit_costs_no_review() {
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let stack = Stack::start(
            mode,
            tokens(),
            "rate_limit: {per_client_ip: {rps: 1, burst: 5}}",
        )
        .await;
        // A workload behind the same address, its token reviewed before the flood.
        let workload = stack
            .get("/x", &["Authorization: Bearer runner-token"])
            .await;
        assert_eq!(workload.status, 200);
        let mut limited = 0;
        for i in 0..60 {
            // Half through authgate's own endpoints, which count the same way.
            let path = if i % 2 == 0 { "/x" } else { "/authgate/whoami" };
            let response = stack
                .get(path, &[&format!("Authorization: Bearer made-up-{i}")])
                .await;
            match response.status {
                401 => {}
                429 => limited += 1,
                other => panic!("{mode:?}: {other}"),
            }
        }
        assert!(limited >= 50, "{mode:?}: {limited} refused");
        let reviews = stack.kube.token_reviews().len();
        assert!(
            reviews <= 8,
            "{mode:?}: {reviews} TokenReviews for 60 made-up tokens from one address"
        );
        // The address is refused, but what is answered from memory still is.
        let workload = stack
            .get("/x", &["Authorization: Bearer runner-token"])
            .await;
        assert_eq!(
            workload.status, 200,
            "{mode:?}: a verified token still works"
        );
        let unverified = stack
            .get("/x", &["Authorization: Bearer other-token"])
            .await;
        assert_eq!(
            unverified.status, 429,
            "{mode:?}: anything needing a review waits"
        );
    }
}

/// A user looping over made-up object names: each is a new SubjectAccessReview, so the
/// identity's review budget runs out (429 without a review), and another identity is not
/// touched by it.
#[tokio::test]
async fn a_user_looping_over_made_up_names_spends_only_their_own_review_budget() {
    let rules = "kubernetes: {subject_access_review: {review_rate: {rps: 1, burst: 10}}}\n\
                 authorization:\n  rules:\n    - name: notebook\n      path: /notebook/{namespace}/{name}/**\n      resource: {group: kubeflow.org, resource: notebooks, name: '{name}'}\n";
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let stack = Stack::start(mode, tokens(), rules).await;
        let mut throttled = 0;
        for i in 0..40 {
            let response = stack
                .get(
                    &format!("/notebook/team-a/made-up-{i}/"),
                    &["Authorization: Bearer runner-token"],
                )
                .await;
            match response.status {
                403 => {}
                429 => {
                    throttled += 1;
                    assert!(response.header("retry-after").is_some());
                }
                other => panic!("{mode:?}: {other}"),
            }
        }
        let reviews = stack.kube.access_reviews().len();
        assert!(
            reviews <= 12,
            "{mode:?}: {reviews} reviews for 40 made-up names"
        );
        assert!(throttled >= 28, "{mode:?}: {throttled}");
        let other = stack
            .get(
                "/notebook/team-b/nb/",
                &["Authorization: Bearer other-token"],
            )
            .await;
        assert_eq!(
            other.status, 403,
            "{mode:?}: reviewed (and denied), not throttled"
        );
        assert_eq!(stack.kube.access_reviews().len(), reviews + 1);
    }
}

/// Read the request as the app will: a method-override header is refused (grpc-gateway runs the
/// GET handler of a POST that asks for it), and a `{name}` placeholder holds only a Kubernetes
/// object name — both 400, asked of no one.
#[tokio::test]
async fn method_overrides_and_malformed_object_names_are_refused_without_a_review() {
    let rules = "authorization:\n  rules:\n    - name: notebook\n      path: /notebook/{namespace}/{name}/**\n      resource: {group: kubeflow.org, resource: notebooks, name: '{name}'}\n    - {name: runs, path: /pipeline/apis/**, methods: [POST], allow: true}\n";
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let stack = Stack::start(mode, tokens(), rules).await;
        let long = "n".repeat(254);
        for name in ["Nb1", "nb_1", "nb%20x", long.as_str()] {
            let response = stack
                .get(
                    &format!("/notebook/team-a/{name}/lab"),
                    &["Authorization: Bearer runner-token"],
                )
                .await;
            assert_eq!(response.status, 400, "{mode:?} {name:?}: {response:?}");
        }
        assert!(stack.kube.access_reviews().is_empty(), "{mode:?}");
        // A method with no Kubernetes verb (WebDAV's, Envoy forwards it) on a rule that takes
        // its verb from the method: refused without a review.
        let propfind = stack
            .raw(
                "PROPFIND /notebook/team-a/nb/lab HTTP/1.1\r\nHost: kubeflow.example.com\r\n\
                 Authorization: Bearer runner-token\r\n",
            )
            .await;
        assert_eq!(propfind.status, 403, "{mode:?}: {propfind:?}");
        assert!(
            propfind.body.contains("no Kubernetes verb"),
            "{mode:?}: {propfind:?}"
        );
        assert!(stack.kube.access_reviews().is_empty(), "{mode:?}");
        for header in [
            "X-HTTP-Method-Override",
            "X-HTTP-Method",
            "X-Method-Override",
        ] {
            let head = format!(
                "POST /pipeline/apis/v1beta1/runs HTTP/1.1\r\nHost: kubeflow.example.com\r\n\
                 Authorization: Bearer runner-token\r\n{header}: GET\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n"
            );
            let response = stack.raw(&head).await;
            assert_eq!(response.status, 400, "{mode:?} {header}: {response:?}");
        }
    }
}
