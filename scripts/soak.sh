#!/usr/bin/env bash
# The soak run of issue 5: steady mixed load (browser sessions with real OIDC logins, service-
# account tokens with SubjectAccessReviews, denials, a flood of made-up tokens) through a real
# Envoy into the release authgate binary, sampling its memory and counting unexpected answers.
# Writes the result under the marker in docs/soak.md (the text above the marker is kept).
# Usage: scripts/soak.sh [MINUTES]     (default 10; fails if any answer was unexpected)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
minutes="${1:-10}"

bash scripts/supply-chain.sh toolchain
bash scripts/setup-test-peers.sh
cargo build --locked --release --bin authgate --example soak

results="$(mktemp)"
trap 'rm -f "$results"' EXIT
set +e
target/release/examples/soak --minutes "$minutes" --command "scripts/soak.sh $minutes" --out "$results"
status=$?
set -e

marker='<!-- results: written by scripts/soak.sh; everything below is replaced on each run -->'
doc=docs/soak.md
if [ -f "$doc" ] && grep -qF "$marker" "$doc"; then
  head="$(awk -v m="$marker" '$0 == m { exit } { print }' "$doc")"
else
  head="# Soak run"$'\n'
fi
{
  printf '%s\n%s\n\n' "$head" "$marker"
  cat "$results"
} > "$doc"
echo "$doc written" >&2
exit "$status"
