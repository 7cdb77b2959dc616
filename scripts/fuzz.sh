#!/usr/bin/env bash
# Fuzzes everything authgate parses from the network with cargo-fuzz (libFuzzer): path
# normalization, bearer/cookie header parsing, redirect targets, rule matching, the gRPC adapter.
#
#   scripts/fuzz.sh [SECONDS]   each target for SECONDS (default 60), starting from its seeds
#   scripts/fuzz.sh --smoke     each target over its seed corpus, then 10 s of fuzzing (CI)
#   FUZZ_TARGETS="path_normalize redirect_target" scripts/fuzz.sh 300   only some targets
#
# Needs a nightly toolchain (`rustup toolchain install nightly`); installs cargo-fuzz (pinned)
# when missing. The checked-in seeds (fuzz/corpus/<target>/) are never modified: each run works
# on a scratch copy under fuzz/target/. A crash fails the script; its input is kept under
# fuzz/artifacts/<target>/ and the command to reproduce it is printed.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
SMOKE_SECONDS=10
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

seconds=60
smoke=false
case "${1:-}" in
  --smoke) smoke=true; seconds=$SMOKE_SECONDS ;;
  "") ;;
  *[!0-9]*|0) echo "usage: $0 [SECONDS | --smoke]" >&2; exit 64 ;;
  *) seconds=$1 ;;
esac

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: cargo fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "$CARGO_FUZZ_VERSION" ]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# -s none: authgate forbids unsafe code, so AddressSanitizer buys little and costs a second
# instrumented build of every dependency; -a keeps overflow checks and debug assertions on.
build_flags=(-O -s none -a)
all_targets=$(cargo +nightly fuzz list)
targets=${FUZZ_TARGETS:-$all_targets}

start=$(date +%s)
echo "fuzz: building $(echo "$targets" | wc -w) targets"
cargo +nightly fuzz build "${build_flags[@]}"
built=$(date +%s)
echo "fuzz: build took $((built - start)) s"

dict_for() {
  case "$1" in
    path_normalize) echo fuzz/dict/path.dict ;;
    redirect_target) echo fuzz/dict/redirect.dict ;;
    rule_evaluate) echo fuzz/dict/rules.dict ;;
    bearer_credential|cookie_values) echo fuzz/dict/headers.dict ;;
  esac
}

summary=()
failed=0
for target in $targets; do
  work="fuzz/target/corpus-work/$target"
  rm -rf "$work"
  mkdir -p "$work" "fuzz/artifacts/$target"
  if [ -d "fuzz/corpus/$target" ]; then
    cp -R "fuzz/corpus/$target/." "$work/"
  fi
  seeds=$(find "$work" -type f | wc -l)
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/")
  dict=$(dict_for "$target")
  [ -n "$dict" ] && args+=(-dict="$dict")
  log="fuzz/target/$target.log"
  echo "fuzz: $target for ${seconds} s ($seeds seeds)"
  t0=$(date +%s)
  if cargo +nightly fuzz run "${build_flags[@]}" "$target" "$work" -- "${args[@]}" >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed=1
    tail -n 40 "$log" >&2
    artifact=$(grep -o 'fuzz/artifacts/[^ ]*' "$log" | tail -n 1 || true)
    [ -n "$artifact" ] && echo "fuzz: reproduce with: cargo +nightly fuzz run ${build_flags[*]} $target $artifact" >&2
  fi
  runs=$( (grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" || true) | awk '{print $2}' | tail -n 1)
  cov=$( (grep -o 'cov: [0-9]*' "$log" || true) | tail -n 1 | awk '{print $2}')
  corpus=$(find "$work" -type f | wc -l)
  summary+=("$(printf '%-20s %-6s %6ss %10s runs  cov %-6s corpus %s -> %s' \
    "$target" "$status" "$(( $(date +%s) - t0 ))" "${runs:-?}" "${cov:-?}" "$seeds" "$corpus")")
done

echo
echo "fuzz summary (${seconds} s per target, build $((built - start)) s, total $(( $(date +%s) - start )) s):"
printf '  %s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  echo "fuzz: FAILED: a target crashed; inputs under fuzz/artifacts/, logs under fuzz/target/*.log" >&2
  exit 1
fi
echo "fuzz: all targets passed"
