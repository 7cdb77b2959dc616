//! The Kubernetes API test server itself, driven through the production kube client: the
//! TokenReview and SubjectAccessReview answers the other tests rely on.

mod support;

use support::kube_api;

#[path = "support/kube_api_selftest.rs"]
mod selftest;
