#!/usr/bin/env bash
# Supply-chain checks, offline-capable (CI runs it; see docs/deployment.md "Supply chain"):
#   1. cargo deny check: licences allow-list, bans, duplicate versions (warnings), sources, and
#      RustSec advisories read from the offline snapshot ../shared/advisory-db when it is there;
#   2. a CycloneDX SBOM of the authgate binary (cargo cyclonedx), checked to list the key
#      dependencies at the versions in Cargo.lock;
#   3. a `cargo auditable` build whose embedded dependency list is read back (rust-audit-info)
#      and checked the same way.
# Usage:
#   scripts/supply-chain.sh              all of the above (installs the pinned tools if missing)
#   scripts/supply-chain.sh toolchain    only make sure the toolchain pinned in rust-toolchain.toml
#                                        is there (run this before any other cargo command)
# Env: SUPPLY_CHAIN_PROFILE=release builds the auditable binary with --release (default: dev,
#      which reuses the test build's dependencies; the embedded list is the same).
# Outputs: target/supply-chain/{authgate.cdx.json,audit-info.json,deny.toml}.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$ROOT/target/supply-chain"

# Pinned tool versions (crates.io). `cargo install` times measured on the 2-core machine (with
# other builds running): cargo-deny 283 s, cargo-auditable 94 s, cargo-cyclonedx 414 s,
# rust-audit-info 21 s — about 13 minutes once per machine; later runs take ~10 s.
CARGO_DENY_VERSION="0.20.2"
CARGO_AUDITABLE_VERSION="0.7.7"
CARGO_CYCLONEDX_VERSION="0.5.9"
RUST_AUDIT_INFO_VERSION="0.5.4"

# Dependencies that must appear in the SBOM and in the embedded audit data.
KEY_DEPS=(tonic kube jsonwebtoken envoy-types)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'supply-chain: %s\n' "$*" >&2; exit 1; }

# ---- toolchain ----------------------------------------------------------------------------
# rust-toolchain.toml pins channel 1.95.0. rustup cannot download toolchains on these machines
# and does not auto-install: a machine whose only toolchain is `stable` would fail every cargo
# command with "toolchain '1.95.0-…' is not installed". When the installed stable IS 1.95.0 we
# register it under the pinned name (a symlink in $RUSTUP_HOME/toolchains, exactly what an
# install of 1.95.0 would provide); when it is not, we stop and say so.
ensure_toolchain() {
  local channel host rustup_home stable_dir stable_ver
  channel="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$ROOT/rust-toolchain.toml")"
  [[ -n "$channel" ]] || die "no channel in rust-toolchain.toml"
  command -v rustup >/dev/null || { log "no rustup: using $(rustc --version)"; return 0; }
  # Outside the repo, so that the toolchain file is not consulted while we inspect.
  host="$(cd / && rustc -vV | sed -n 's/^host: //p')"
  rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
  if (cd / && rustup toolchain list | grep -q "^${channel}-${host}"); then
    return 0
  fi
  stable_dir="$rustup_home/toolchains/stable-$host"
  [[ -x "$stable_dir/bin/rustc" ]] || die "toolchain $channel is not installed and there is no stable toolchain to use; install Rust $channel"
  stable_ver="$("$stable_dir/bin/rustc" --version | awk '{print $2}')"
  if [[ "$stable_ver" != "$channel" ]]; then
    die "rust-toolchain.toml pins $channel but the installed toolchain is $stable_ver and none can be downloaded here: update rust-toolchain.toml (and the Dockerfile's RUST_VERSION) to $stable_ver"
  fi
  log "registering the installed stable toolchain ($stable_ver) as $channel-$host"
  ln -s "$stable_dir" "$rustup_home/toolchains/${channel}-${host}"
}

if [[ "${1:-}" == "toolchain" ]]; then
  ensure_toolchain
  exit 0
fi
[[ $# -eq 0 ]] || die "unknown argument: $1 (usage: scripts/supply-chain.sh [toolchain])"

ensure_toolchain
log "toolchain: $(rustc --version)"

# ---- tools --------------------------------------------------------------------------------
# cargo install --locked of each pinned version, skipped when `cargo install --list` already
# has that version (the tools' own --version output is not uniform).
INSTALLED="$(cargo install --list 2>/dev/null || true)"
install_tool() { # crate version
  local crate=$1 version=$2
  if grep -q -x -F "$crate v$version:" <<<"$INSTALLED"; then
    return 0
  fi
  log "cargo install --locked $crate@$version (minutes on 2 cores; see docs/deployment.md)"
  local start=$SECONDS
  cargo install --locked --quiet "$crate@$version"
  log "installed $crate@$version in $((SECONDS - start))s"
}
install_tool cargo-deny "$CARGO_DENY_VERSION"
install_tool cargo-auditable "$CARGO_AUDITABLE_VERSION"
install_tool cargo-cyclonedx "$CARGO_CYCLONEDX_VERSION"
install_tool rust-audit-info "$RUST_AUDIT_INFO_VERSION"

mkdir -p "$OUT"

# ---- 1. cargo deny --------------------------------------------------------------------------
# `cargo metadata` needs every crate of every platform; fetch them (crates.io is reachable), then
# run cargo-deny --offline so it never tries the advisory database's git remote.
cargo fetch --locked --quiet

SNAPSHOT="$ROOT/../shared/advisory-db"
DENY_CONFIG="$ROOT/deny.toml"
if [[ -d "$SNAPSHOT/crates" ]]; then
  # cargo-deny opens its database as a git repository under db-path, in a folder named after
  # the default database URL (cargo-deny 0.20: advisory-db-3157b0e258782691). The snapshot is
  # read-only and not a repository: copy it into one, committed with the snapshot's own date
  # so that staleness is judged honestly. Rebuilt only when the snapshot changes.
  DB_ROOT="$OUT/advisory-dbs"
  DB="$DB_ROOT/advisory-db-3157b0e258782691"
  STAMP="$(cat "$SNAPSHOT/SNAPSHOT.md" 2>/dev/null | sha256sum | cut -c1-16)"
  if [[ ! -f "$DB/.snapshot-stamp" || "$(cat "$DB/.snapshot-stamp")" != "$STAMP" ]]; then
    log "preparing the offline advisory database from $SNAPSHOT"
    rm -rf "$DB"; mkdir -p "$DB"
    cp -r "$SNAPSHOT/." "$DB/"
    chmod -R u+w "$DB"
    SNAP_DATE="$(grep -o -E '\(20[0-9]{2}-[0-9]{2}-[0-9]{2}\)' "$SNAPSHOT/SNAPSHOT.md" | head -n1 | tr -d '()')"
    SNAP_DATE="${SNAP_DATE:-$(date -u +%F)}"
    (cd "$DB" && git init -q && git add -A \
      && GIT_AUTHOR_DATE="${SNAP_DATE}T00:00:00Z" GIT_COMMITTER_DATE="${SNAP_DATE}T00:00:00Z" \
         git -c user.name=snapshot -c user.email=snapshot@localhost -c commit.gpgsign=false \
         commit -q -m "RustSec advisory-db offline snapshot")
    echo "$STAMP" >"$DB/.snapshot-stamp"
  fi
  # The committed deny.toml stays location-free; this copy adds where the database is.
  DENY_CONFIG="$OUT/deny.toml"
  awk -v p="$DB_ROOT" '{print} /^\[advisories\]/{print "db-path = \"" p "\""}' "$ROOT/deny.toml" >"$DENY_CONFIG"
  log "cargo deny (advisories from the offline snapshot, $(grep -c . <(ls "$SNAPSHOT/crates")) crates)"
  cargo deny --offline --config "$DENY_CONFIG" check
elif cargo deny --config "$DENY_CONFIG" fetch db >/dev/null 2>&1; then
  log "cargo deny (no offline snapshot at $SNAPSHOT: fetched the advisory database)"
  cargo deny --config "$DENY_CONFIG" check
else
  # Neither the snapshot nor the network: check what can be checked, and say loudly what not.
  log "WARNING: no advisory database (no snapshot at $SNAPSHOT, and it cannot be fetched):"
  log "WARNING: advisories NOT checked; licences, bans and sources are"
  cargo deny --offline --config "$DENY_CONFIG" check bans licenses sources
fi

# One crypto stack: aws-lc-rs (kube, rustls, reqwest, jsonwebtoken, the signing key). A second
# TLS provider compiled in makes rustls refuse to choose one at run time (a panic on the first
# TLS connection nobody installed a provider for), and doubles the C build.
log "one TLS crypto provider (no ring in any build)"
if ring_users="$(cargo tree --locked --offline -e normal,build,dev --target all -i ring 2>/dev/null)" && [[ -n "$ring_users" ]]; then
  printf '%s\n' "$ring_users" >&2
  die "ring is compiled in besides aws-lc-rs (above: who pulls it)"
fi

# ---- helpers: versions from Cargo.lock ------------------------------------------------------
lock_versions() { # crate -> every version of it in Cargo.lock, one a line
  awk -v n="$1" '$0=="[[package]]"{name=""} /^name = /{gsub(/"/,"",$3); name=$3} /^version = /{gsub(/"/,"",$3); if (name==n) print $3}' "$ROOT/Cargo.lock"
}

check_listed() { # what json-file -> checks KEY_DEPS are in the list with a Cargo.lock version
  local what=$1 file=$2 dep found
  for dep in "${KEY_DEPS[@]}"; do
    found="$(python3 - "$file" "$dep" "$what" <<'PY'
import json, sys
path, dep, what = sys.argv[1:]
doc = json.load(open(path))
if what == "sbom":
    comps = doc.get("components", [])
    def walk(cs):
        for c in cs:
            yield c
            yield from walk(c.get("components", []))
    print("\n".join(sorted({c.get("version", "") for c in walk(comps) if c.get("name") == dep})))
else:
    print("\n".join(sorted({p["version"] for p in doc.get("packages", []) if p.get("name") == dep})))
PY
)"
    [[ -n "$found" ]] || die "$what: $dep is missing from $file"
    while read -r v; do
      lock_versions "$dep" | grep -qx "$v" || die "$what: $dep $v is not the version in Cargo.lock ($(lock_versions "$dep" | tr '\n' ' '))"
    done <<<"$found"
    log "$what lists $dep $found"
  done
}

# ---- 2. SBOM ---------------------------------------------------------------------------------
log "CycloneDX SBOM of the authgate binary"
rm -f "$ROOT"/*.cdx.json
cargo cyclonedx --format json --spec-version 1.5 --no-build-deps --describe binaries --target x86_64-unknown-linux-gnu >/dev/null
SBOM="$(ls "$ROOT"/*.cdx.json 2>/dev/null | head -n1 || true)"
[[ -n "$SBOM" ]] || die "cargo cyclonedx wrote no *.cdx.json next to Cargo.toml"
mv "$SBOM" "$OUT/authgate.cdx.json"
rm -f "$ROOT"/*.cdx.json
SBOM="$OUT/authgate.cdx.json"
python3 - "$SBOM" <<'PY' || die "SBOM is not a CycloneDX document with components"
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc.get("bomFormat") == "CycloneDX", doc.get("bomFormat")
def walk(cs):
    for c in cs:
        yield c
        yield from walk(c.get("components", []))
comps = list(walk(doc.get("components", [])))
assert len(comps) > 50, f"only {len(comps)} components"
# Dev-only dependencies are not in the binary and must not be in its SBOM.
names = {c.get("name") for c in comps}
assert not names & {"rcgen", "tempfile", "axum-server"}, names & {"rcgen", "tempfile", "axum-server"}
print(f"==> SBOM: CycloneDX {doc.get('specVersion')}, {len(comps)} components", file=sys.stderr)
PY
check_listed sbom "$SBOM"

# ---- 3. cargo auditable ----------------------------------------------------------------------
PROFILE_ARGS=()
PROFILE_DIR=debug
if [[ "${SUPPLY_CHAIN_PROFILE:-dev}" == "release" ]]; then
  PROFILE_ARGS=(--release); PROFILE_DIR=release
fi
log "cargo auditable build ${PROFILE_ARGS[*]:-(dev profile)}"
cargo auditable build --locked --quiet "${PROFILE_ARGS[@]}" --bin authgate
BIN="$ROOT/target/$PROFILE_DIR/authgate"
rust-audit-info "$BIN" >"$OUT/audit-info.json" || die "no audit data embedded in $BIN"
python3 - "$OUT/audit-info.json" <<'PY' || die "embedded audit data is malformed"
import json, sys
doc = json.load(open(sys.argv[1]))
roots = [p for p in doc["packages"] if p.get("root")]
assert [p["name"] for p in roots] == ["authgate"], roots
print(f"==> embedded audit data: {len(doc['packages'])} packages, root authgate {roots[0]['version']}", file=sys.stderr)
PY
check_listed audit "$OUT/audit-info.json"

log "supply chain ok: deny.toml policy holds; SBOM $SBOM; auditable binary $BIN"
