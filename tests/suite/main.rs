//! The integration tests, linked into one test binary: one module per area, all sharing the
//! harness in `support` (real peers around authgate: Envoy, the Kubernetes API test server, the
//! OIDC provider, Redis, an echo upstream).
//!
//! Every module shares the process-wide state: the metrics (`authgate::metrics::global()`), the
//! tracing subscriber (the first `support::Authgate` installs a test writer) and the counter of
//! `support::free_port`. Tests therefore assert metric counters as lower bounds or before/after
//! differences, never exact totals; the store-eviction gauge, set on a scrape of an authgate
//! with a Redis store, is scraped by one test only (`sessions_redis`). A test that needs a
//! process of its own is its own binary: `tests/secrets_in_logs.rs` (a process-wide TRACE
//! subscriber).
//!
//! One area: `cargo test --test suite login::`.

// The harness is also built into examples/bench.rs, soak.rs and local_stack.rs: the benches use
// parts of it the tests do not (Envoy's JWT filter, its pid), and some of it is there for
// debugging or completeness (Envoy's admin URL, every demo user of the provider).
#[allow(dead_code)]
mod support;

mod app_readings;
mod authorization;
mod bound_tokens;
mod browser_login;
mod cli;
mod gateway;
mod identity_trust;
mod kube_api_server;
mod layers;
mod login;
mod monitoring;
mod open_redirects;
mod personal_tokens;
mod properties;
mod python_client;
mod sessions_redis;
mod sessions_redis_topologies;
mod strangers;
mod traces;
