#!/usr/bin/env bash
# The local stack: Envoy (gateway, :8080) → authgate (ext_authz gRPC :9000, HTTP :8000) → a demo
# app that shows the identity it received, with a Kubernetes API test server (service-account
# tokens) and an OpenID Provider with demo users (:5556, browser login) behind authgate.
# Prints the URL, the demo logins and curl commands to try; Ctrl-C stops everything.
#
# Usage: scripts/run-local.sh
#   DEMO_PORT=8081 scripts/run-local.sh       # another gateway port
#   DEMO_GRPC_PORT / DEMO_HTTP_PORT           # other authgate ports
#   DEMO_OIDC_PORT                            # another OpenID Provider port
#   AUTHGATE_LOG=debug                        # more logs
# (Not AUTHGATE_* for the ports: those are authgate's own config overrides.)
# The code is examples/local_stack.rs; what it writes (configs, logs, the OIDC client secret) is in
# target/local-stack/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Envoy into .venv, the OpenID Provider's Node packages into tests/oidc/node_modules (and the other
# test peers); each step is skipped when already done.
bash scripts/setup-test-peers.sh

# Build first so compiler output and the stack's own output do not mix.
cargo build --locked --example local_stack
# exec (and `cargo run` execs the binary on Unix): the stack becomes this process, so Ctrl-C or
# `kill <pid>` reaches it directly and it stops Envoy and the OpenID Provider before exiting.
exec cargo run --locked --quiet --example local_stack
