//! One real browser: headless Chromium (Debian's) logs in through Envoy and authgate at the
//! OpenID Provider, and the page it lands on shows the identity the app received.

use crate::support::oidc::{self, ALICE};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_logs_in_and_sees_its_identity() {
    let stack = LoginStack::start(ExtAuthz::Grpc, "").await;
    let screenshot =
        std::env::temp_dir().join(format!("authgate-login-{}.png", std::process::id()));
    let page =
        oidc::chromium_login(&stack.url("/notebook/team-a/nb1/lab"), ALICE, &screenshot).await;
    assert_eq!(page["url"], stack.url("/notebook/team-a/nb1/lab"), "{page}");
    assert_eq!(page["status"], 200, "{page}");
    let text = page["text"].as_str().unwrap();
    // The app (an echo of the request) shows the verified identity headers it received.
    assert!(text.contains("kubeflow-userid"), "{text}");
    assert!(text.contains("alice@example.com"), "{text}");
    assert!(text.contains("kubeflow-users,team-a"), "{text}");
    assert!(screenshot.is_file(), "a screenshot was saved");
}
