#!/usr/bin/env python3
"""Renders every kustomization under istio/ offline and validates what comes out.

Called by scripts/validate-manifests.sh (which provides the tools); runs standalone as
    .venv/bin/python3 scripts/validate_manifests.py --kustomize "kubectl kustomize"

What is checked, for every rendered object:
  * Kubernetes kinds against the official OpenAPI schemas (PyPI kubernetes-validate, strict:
    unknown fields are errors) for the oldest and the newest Kubernetes version we support;
  * custom resources (Istio's AuthorizationPolicy, and whatever CRD scripts/schemas/ holds)
    against the official CRD's openAPIV3Schema (copied unchanged into scripts/schemas/, sources
    in its README), read strictly as the API server prunes: an unknown field is an error unless
    the schema preserves unknown fields. The mesh config's extension providers are not a CRD
    (MeshConfig has no published schema file here): they keep the structural schema written here;
  * pod security and RBAC hygiene with checkov (PyPI; the ids in CHECKOV_CHECKS): no privileged
    container, no host namespaces or ports, no privilege escalation, a read-only root
    filesystem, capabilities ALL dropped and none added, non-root with a high fixed UID, seccomp
    RuntimeDefault on the pod, resource requests and a memory limit, a pinned image, secrets as
    files, nothing in `default`, no RBAC wildcard, escalate, bind or webhook control. One checkov
    run covers every kustomization and every self-test variant;
  * by hand, only what no checkov check covers: no checkov skip annotation (it would silence the
    scan), no hostPath volume (checkov flags the Docker socket only), a fixed non-root GID
    (checkov reads no group), a container's own seccomp profile (CKV_K8S_31 stops at the pod's),
    init containers' UID (CKV_K8S_23/40 read `containers` only); and authgate's own invariants
    (DESIGN.md invariant 7 and issue 4): RBAC only `create` on tokenreviews/subjectaccessreviews
    and no built-in ClusterRole bound; UID/GID 65532 as the Dockerfile's USER, 2+ replicas,
    probes on the HTTP port; service accounts other than authgate's without a token; ext_authz
    providers with an explicit timeout and failOpen false; the CUSTOM gateway policy excludes
    only the OIDC provider's /dex/ paths; identity-header guards trust only named principals
    (and attach only to the namespace or its waypoint); Envoy Gateway's SecurityPolicy calls
    authgate over gRPC, fails closed, has a timeout, and targets the named Gateway; the HTTP
    provider passes `cookie` upstream (authgate removes its own cookies from it); the gRPC port
    admits only the gateway; the OIDC provider's pods (Dex) may reach only the HTTP port, for
    back-channel logout; NetworkPolicies and PodDisruptionBudgets name their namespace
    (CKV_K8S_21 does not read those kinds);
  * every authgate config in a ConfigMap is accepted by `authgate check-config` (the real
    binary), with its secret files laid out where the Deployment mounts the Secret; every file
    key (key_file, client_secret_file, redis_password_file, encryption_key_file) points into that
    Secret; an overlay with browser login and 2+ replicas keeps sessions in Redis;
  * the Kubeflow overlay's skip_auth, api_routes, authorization (the rule preset) and review
    settings equal examples/kubeflow.yaml's (`--sync-kubeflow-preset` rewrites the copy).
Any problem is printed and the exit code is 1; a missing tool is exit 2 with the install step.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ISTIO = ROOT / "istio"

# Kubernetes versions whose schemas every object must satisfy: oldest supported, newest.
K8S_VERSIONS = ["1.30.0", "1.37.0"]

# What gets rendered. The mesh-config component patches Istio's own ConfigMap, so it is
# rendered on top of a stand-in for that ConfigMap (see render_component_on_stub).
KUSTOMIZATIONS = ["base", "overlays/kubeflow", "overlays/redis", "overlays/gateway-api",
                  "overlays/ambient", "overlays/envoy-gateway"]
MESH_COMPONENT = "components/mesh-config"

GATEWAY_PRINCIPAL = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
IDENTITY_HEADERS = {"kubeflow-userid", "kubeflow_userid", "kubeflow-groups", "kubeflow_groups",
                    "x-authgate-identity"}
ALLOWED_RBAC = {
    ("authentication.k8s.io", "tokenreviews"): {"create"},
    ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
}
OIDC_PROVIDER_PATHS = {"/dex/*"}
AUTHGATE_UID = 65532
SECRET_MOUNT = "/etc/authgate/secrets"
# Files of the Secret authgate-secrets that the shipped configs may name (check-config gets
# stand-ins for all of them).
SECRET_FILES = ("signing-key.pem", "client-secret", "redis-password", "session-key")
# The OIDC provider's pods, admitted to authgate's HTTP port for back-channel logout: Kubeflow's
# Dex (kubeflow/manifests common/dex/base/deployment.yaml: namespace auth, label app=dex).
PROVIDER_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "auth"}},
                 "podSelector": {"matchLabels": {"app": "dex"}}}
# The Kubeflow rule preset and the overlay that must carry a copy of it.
PRESET = ROOT / "examples/kubeflow.yaml"
PRESET_COPY = ISTIO / "overlays/kubeflow/authgate.yaml"
PRESET_MARKER = "# ---- BEGIN copy of examples/kubeflow.yaml"
PRESET_SECTIONS = ("skip_auth", "api_routes", "authorization")

SCHEMAS = ROOT / "scripts/schemas"

problems: list[str] = []


def fail(where: str, message: str) -> None:
    problems.append(f"{where}: {message}")


def die_missing(tool: str, step: str) -> None:
    print(f"validate-manifests: {tool} is missing. Install it with: {step}", file=sys.stderr)
    sys.exit(2)


try:
    import yaml  # noqa: E402
    import jsonschema  # noqa: E402
    import kubernetes_validate  # noqa: E402
except ImportError as e:  # pragma: no cover
    die_missing(str(e.name), "scripts/validate-manifests.sh (pip installs kubernetes-validate into .venv)")


def name_of(obj: dict) -> str:
    md = obj.get("metadata") or {}
    ns = md.get("namespace")
    return f"{obj.get('kind')}/{(ns + '/') if ns else ''}{md.get('name')}"


# ---- rendering -------------------------------------------------------------------------------

def render(kustomize: list[str], path: Path) -> list[dict]:
    proc = subprocess.run([*kustomize, str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        fail(str(path.relative_to(ROOT)), f"kustomize failed:\n{proc.stderr.strip()}")
        return []
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


STUB_ISTIO_CM = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |-
    rootNamespace: istio-system
"""


def render_component_on_stub(kustomize: list[str], component: Path) -> list[dict]:
    """Renders a patch-only component on a stand-in of Istio's `istio` ConfigMap, as it would be
    in the kustomization that renders Istio."""
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "istio-cm.yaml").write_text(STUB_ISTIO_CM)
        rel = os.path.relpath(component, t)
        (t / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources:\n- istio-cm.yaml\ncomponents:\n- {rel}\n"
        )
        return render(kustomize, t)


# ---- schemas ---------------------------------------------------------------------------------

def validate_k8s(where: str, obj: dict) -> None:
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            fail(where, f"Kubernetes {version} schema: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            fail(where, f"no Kubernetes {version} schema for {obj.get('apiVersion')} {obj.get('kind')}")


# The mesh config's extension providers: MeshConfig is no CRD and no schema file of it is here,
# so this structural schema (no unknown fields, right types) stays hand-written.
EXT_AUTHZ_COMMON = {"service": {"type": "string", "pattern": r"^[a-z0-9.-]+$"},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "timeout": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(ms|s)$"},
                    "failOpen": {"type": "boolean"},
                    "statusOnError": {"type": "string", "pattern": r"^[1-5][0-9][0-9]$"},
                    "includeRequestHeadersInCheck": {"type": "array", "items": {"type": "string"}},
                    "headersToUpstreamOnAllow": {"type": "array", "items": {"type": "string"}},
                    "headersToDownstreamOnDeny": {"type": "array", "items": {"type": "string"}},
                    "headersToDownstreamOnAllow": {"type": "array", "items": {"type": "string"}},
                    "includeAdditionalHeadersInCheck": {"type": "object"},
                    "includeRequestBodyInCheck": {"type": "object"},
                    "pathPrefix": {"type": "string", "pattern": "^/"}}
GRPC_KEYS = ["service", "port", "timeout", "failOpen", "statusOnError", "includeRequestBodyInCheck"]
EXTENSION_PROVIDER = {
    "type": "object", "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "envoyExtAuthzGrpc": {"type": "object", "additionalProperties": False,
                              "required": ["service", "port"],
                              "properties": {k: EXT_AUTHZ_COMMON[k] for k in GRPC_KEYS}},
        "envoyExtAuthzHttp": {"type": "object", "additionalProperties": False,
                              "required": ["service", "port"], "properties": EXT_AUTHZ_COMMON},
    },
}


def strict(schema):
    """A CRD's openAPIV3Schema as the API server applies it: objects with `properties` admit no
    other fields unless `x-kubernetes-preserve-unknown-fields` says so (plain JSON schema would
    let a typo through)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if "properties" in schema and "additionalProperties" not in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def load_crd_schemas() -> dict:
    """(group, version, kind) → strict schema, from every CRD under scripts/schemas/."""
    found = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                if version.get("served", True):
                    schema = strict(version["schema"]["openAPIV3Schema"])
                    # apiVersion, kind and metadata are the API server's, not the CRD's to describe.
                    props = schema.setdefault("properties", {})
                    props["apiVersion"] = {"const": f"{spec['group']}/{version['name']}"}
                    props["kind"] = {"const": spec["names"]["kind"]}
                    props["metadata"] = {"type": "object", "required": ["name"]}
                    found[(spec["group"], version["name"], spec["names"]["kind"])] = schema
    return found


CRD_SCHEMAS: dict = {}


def validate_crd(where: str, obj: dict) -> bool:
    """Validates a custom resource against its CRD; False when no CRD is known for it."""
    api = obj.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    schema = CRD_SCHEMAS.get((group, version, obj.get("kind")))
    if schema is None:
        return False
    for e in sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj), key=lambda e: list(e.path)):
        fail(where, f"CRD schema: {'/'.join(str(p) for p in e.path) or '(root)'}: {e.message}")
    return True


def validate_structural(where: str, obj: dict, schema: dict) -> None:
    for e in sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj), key=lambda e: list(e.path)):
        fail(where, f"schema: {'/'.join(str(p) for p in e.path) or '(root)'}: {e.message}")


# ---- pod security and RBAC hygiene: checkov ----------------------------------------------------

# The checks of checkov (PyPI, pinned in validate-manifests.sh) every rendered object must pass.
# Each replaced one this file once made by hand; check_pod keeps what none of them covers.
# Left out on purpose: CKV_K8S_11 (a CPU limit throttles a latency-bound gateway; requests are
# set), CKV_K8S_15 (pull Always), CKV_K8S_43 (digests: a release pins them, the repo a tag),
# CKV_K8S_38 (authgate needs its token for TokenReview; every other service account must not
# automount, checked by hand), CKV_K8S_8/9 (probes: checked by hand, paths and port included).
CHECKOV_CHECKS = {
    "CKV_K8S_16": "no privileged container",
    "CKV_K8S_17": "no host PID namespace",
    "CKV_K8S_18": "no host IPC namespace",
    "CKV_K8S_19": "no host network namespace",
    "CKV_K8S_20": "allowPrivilegeEscalation: false on every container",
    "CKV_K8S_22": "a read-only root filesystem on every container",
    "CKV_K8S_23": "non-root: runAsNonRoot, or a non-zero UID",
    "CKV_K8S_40": "a fixed UID of 10000 or more",
    "CKV_K8S_37": "capabilities: drop ALL on every container",
    "CKV_K8S_25": "no capability added",
    "CKV_K8S_31": "the pod's seccomp profile RuntimeDefault",
    "CKV_K8S_26": "no hostPort",
    "CKV_K8S_27": "no Docker socket",
    "CKV_K8S_35": "secrets as files, not environment variables",
    "CKV_K8S_10": "CPU requests",
    "CKV_K8S_12": "memory requests",
    "CKV_K8S_13": "memory limits",
    "CKV_K8S_14": "an image tag or digest, not latest",
    "CKV_K8S_21": "not in the default namespace",
    "CKV_K8S_49": "no wildcard in a Role or ClusterRole",
    "CKV_K8S_155": "no control of admission webhooks",
    "CKV_K8S_156": "no approving of certificate signing requests",
    "CKV_K8S_157": "no bind on role bindings",
    "CKV_K8S_158": "no escalate on roles",
}
# A check every object of these kinds must have an answer for: a scan that read nothing would
# pass everything, so an object without one is a problem.
CHECKOV_CANARY = {"Deployment": "CKV_K8S_20", "StatefulSet": "CKV_K8S_20", "DaemonSet": "CKV_K8S_20",
                  "Job": "CKV_K8S_20", "CronJob": "CKV_K8S_20", "Pod": "CKV_K8S_20",
                  "ClusterRole": "CKV_K8S_49", "Role": "CKV_K8S_49"}


def checkov_resource(obj: dict) -> str:
    """checkov's name for an object: Kind.namespace.name (namespace `default` when none)."""
    md = obj.get("metadata") or {}
    return f"{obj.get('kind')}.{md.get('namespace', 'default')}.{md.get('name')}"


def checkov_scan(checkov: str, sets: dict[str, list[dict]]) -> dict[str, list[str]]:
    """Runs checkov once over every set of objects (one file each: a run costs seconds and the
    self-test has dozens) and returns, per set, the failed checks. Objects are written back from
    the parsed YAML, so no `# checkov:skip` comment survives into the scan."""
    findings: dict[str, list[str]] = {label: [] for label in sets}
    with tempfile.TemporaryDirectory(prefix="authgate-checkov-") as d:
        files = {}
        for i, (label, objs) in enumerate(sets.items()):
            name = f"set-{i}.yaml"
            Path(d, name).write_text(yaml.safe_dump_all(objs, sort_keys=False))
            files[name] = label
        scan_dir = Path(d)
        # cwd and HOME point at the scan's own directory: no .checkov.yaml of the machine applies.
        env = {**os.environ, "HOME": d, "LOG_LEVEL": "WARNING"}
        run = subprocess.run(
            [checkov, "--directory", str(scan_dir), "--framework", "kubernetes",
             "--check", ",".join(CHECKOV_CHECKS), "--skip-download", "--soft-fail", "--output", "json"],
            cwd=d, env=env, capture_output=True, text=True)
        if run.returncode != 0:
            fail("checkov", f"exit {run.returncode}: {run.stderr.strip()[-2000:]}")
            return findings
        try:
            reports = json.loads(run.stdout)
        except ValueError as e:
            fail("checkov", f"unreadable JSON output ({e}): {run.stdout[:500]}")
            return findings
    reports = reports if isinstance(reports, list) else [reports]
    answered: set[tuple[str, str, str]] = set()
    for report in reports:
        if report.get("check_type") != "kubernetes":
            continue
        if report.get("summary", {}).get("parsing_errors"):
            fail("checkov", f"parsing errors: {report['results'].get('parsing_errors')}")
        results = report.get("results") or {}
        for outcome in ("passed_checks", "failed_checks"):
            for r in results.get(outcome) or []:
                label = files.get(Path(r["file_path"]).name)
                if label is None:
                    fail("checkov", f"a result for a file it was not given: {r['file_path']}")
                    continue
                answered.add((label, r["resource"], r["check_id"]))
                if outcome == "failed_checks":
                    findings[label].append(
                        f"{r['resource']}: checkov {r['check_id']}: {CHECKOV_CHECKS.get(r['check_id'], r['check_name'])}")
    for label, objs in sets.items():
        for obj in objs:
            canary = CHECKOV_CANARY.get(obj.get("kind"))
            if canary and (label, checkov_resource(obj), canary) not in answered:
                findings[label].append(f"{checkov_resource(obj)}: checkov did not read it (no {canary} result)")
    return findings


# ---- invariants ------------------------------------------------------------------------------

def check_rbac(where: str, obj: dict) -> None:
    for i, rule in enumerate(obj.get("rules") or []):
        groups, resources, verbs = (rule.get(k) or [] for k in ("apiGroups", "resources", "verbs"))
        if rule.get("nonResourceURLs") or rule.get("resourceNames"):
            fail(where, f"rules[{i}]: nonResourceURLs/resourceNames are not expected")
        for g in groups:
            for r in resources:
                allowed = ALLOWED_RBAC.get((g, r))
                if allowed is None:
                    fail(where, f"rules[{i}]: {g or 'core'}/{r} is not one of the review APIs")
                elif set(verbs) - allowed:
                    fail(where, f"rules[{i}]: verbs {sorted(set(verbs) - allowed)} on {r}: only create")


def check_binding(where: str, obj: dict, cluster_roles: dict) -> None:
    ref = obj.get("roleRef") or {}
    if ref.get("kind") == "ClusterRole" and ref.get("name") not in cluster_roles:
        fail(where, f"binds ClusterRole {ref.get('name')} that this kustomization does not define "
                    "(a built-in role such as cluster-admin or view is not allowed)")


def pod_spec(obj: dict) -> dict | None:
    kind = obj.get("kind")
    if kind == "Pod":
        return obj.get("spec")
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        return ((obj.get("spec") or {}).get("template") or {}).get("spec")
    if kind == "CronJob":
        return (((obj.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}).get("template", {}).get("spec")
    return None


# Annotations that make checkov skip a check on the object they are on: a manifest carrying one
# would silence the scanner, and checkov has no switch to ignore them.
CHECKOV_SKIP_PREFIXES = ("checkov.io/skip", "bridgecrew.io/skip", "cortex.io/skip")


def check_pod(where: str, obj: dict, spec: dict) -> None:
    """The pod-security invariants no checkov check covers (CHECKOV_CHECKS has the rest)."""
    template = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
    for annotations in ((obj.get("metadata") or {}).get("annotations") or {}, template.get("annotations") or {}):
        for key in annotations:
            if key.startswith(CHECKOV_SKIP_PREFIXES):
                fail(where, f"annotation {key} would silence the pod-security scan")
    psc = spec.get("securityContext") or {}
    # checkov flags only the Docker socket; any host path lets a pod read or write the node.
    for v in spec.get("volumes") or []:
        if "hostPath" in v:
            fail(where, f"volume {v.get('name')}: hostPath is not allowed")
    init = {c.get("name") for c in spec.get("initContainers") or []}
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        cw = f"{where} container {c.get('name')}"
        sc = c.get("securityContext") or {}

        def eff(key):
            return sc.get(key, psc.get(key))

        # CKV_K8S_23/40 read the pod and `containers` only, not init containers.
        uid = eff("runAsUser")
        if c.get("name") in init and (not isinstance(uid, int) or uid == 0):
            fail(cw, f"runAsUser must be a fixed non-root UID, is {uid!r}")
        # No checkov check reads the group: GID 0 gives a non-root process root's files.
        gid = eff("runAsGroup")
        if not isinstance(gid, int) or gid == 0:
            fail(cw, f"runAsGroup must be a fixed non-root GID, is {gid!r}")
        # CKV_K8S_31 reads the pod's profile only when it is set; a container may override it.
        if (eff("seccompProfile") or {}).get("type") != "RuntimeDefault":
            fail(cw, "seccompProfile must be RuntimeDefault")


def check_authgate_deployment(where: str, obj: dict, spec: dict) -> None:
    if (obj.get("spec") or {}).get("replicas", 1) < 2:
        fail(where, "authgate needs at least 2 replicas")
    if spec.get("automountServiceAccountToken") is False:
        fail(where, "authgate needs its service-account token (TokenReview)")
    psc = spec.get("securityContext") or {}
    if psc.get("runAsUser") != AUTHGATE_UID or psc.get("runAsGroup") != AUTHGATE_UID:
        fail(where, f"authgate runs as {AUTHGATE_UID}:{AUTHGATE_UID}, the Dockerfile's USER")
    (c,) = [c for c in spec["containers"] if c["name"] == "authgate"]
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    if ports != {"grpc": 9000, "http": 8000}:
        fail(where, f"container ports must be grpc 9000 and http 8000, are {ports}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = (c.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path or get.get("port") not in ("http", 8000):
            fail(where, f"{probe} must GET {path} on the HTTP port, is {get}")


def check_service(where: str, obj: dict) -> None:
    if obj["metadata"]["name"] != "authgate":
        return
    ports = {p.get("name"): (p.get("port"), p.get("appProtocol")) for p in obj["spec"].get("ports", [])}
    want = {"grpc-authz": (9000, "grpc"), "http": (8000, "http")}
    if ports != want:
        fail(where, f"ports must be {want}, are {ports}")


def check_network_policy(where: str, obj: dict) -> None:
    spec = obj.get("spec") or {}
    if "Ingress" not in (spec.get("policyTypes") or []):
        fail(where, "policyTypes must include Ingress")
    for i, rule in enumerate(spec.get("ingress") or []):
        peers = rule.get("from")
        if not peers:
            fail(where, f"ingress[{i}] admits every source")
        for p in peers or []:
            if "ipBlock" in p:
                fail(where, f"ingress[{i}]: ipBlock peers are not expected")
            if "namespaceSelector" in p and not p.get("podSelector"):
                fail(where, f"ingress[{i}]: a whole namespace is admitted, name the pods")
            if p.get("namespaceSelector") == {} or p.get("podSelector") == {}:
                fail(where, f"ingress[{i}]: empty selector admits everything")
        if not rule.get("ports"):
            fail(where, f"ingress[{i}] admits every port")


# The gateways that may ask authgate: Istio's classic ingress gateway, a Gateway API `Gateway` of
# class istio (its pods carry the Gateway's name), Envoy Gateway's proxy of that Gateway.
GATEWAY_PEERS = [
    ({"kubernetes.io/metadata.name": "istio-system"}, {"istio": "ingressgateway"}),
    ({"kubernetes.io/metadata.name": "istio-system"},
     {"gateway.networking.k8s.io/gateway-name": "kubeflow-gateway"}),
    ({"kubernetes.io/metadata.name": "envoy-gateway-system"},
     {"app.kubernetes.io/name": "envoy", "gateway.envoyproxy.io/owning-gateway-name": "kubeflow-gateway"}),
]
GATEWAY_REF = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "kubeflow-gateway"}


def is_gateway_peer(p: dict) -> bool:
    return (set(p) == {"namespaceSelector", "podSelector"}
            and (p["namespaceSelector"].get("matchLabels"), p["podSelector"].get("matchLabels")) in GATEWAY_PEERS)


def check_gateway_ingress(where: str, obj: dict) -> None:
    """The authgate NetworkPolicy admits the ingress gateway pods on both ports, nobody else on
    the gRPC port, and the OIDC provider's pods (back-channel logout) on the HTTP port only."""
    if obj["metadata"]["name"] != "authgate":
        return
    gateway = provider = False
    for i, rule in enumerate(obj["spec"].get("ingress", [])):
        peers = rule.get("from", [])
        ports = sorted(x.get("port") for x in rule.get("ports", []))
        if peers and all(is_gateway_peer(p) for p in peers):
            gateway = gateway or ports == [8000, 9000]
            continue
        if 9000 in ports or "grpc" in ports:
            fail(where, f"ingress[{i}]: only the ingress gateway may reach the gRPC port 9000")
        if any(p == PROVIDER_PEER for p in peers):
            if ports != [8000] or any(p != PROVIDER_PEER for p in peers):
                fail(where, f"ingress[{i}]: the OIDC provider rule admits exactly {PROVIDER_PEER} on 8000")
            provider = True
    if not gateway:
        fail(where, "must admit the ingress gateway's pods (one of GATEWAY_PEERS) on 9000 and 8000")
    if not provider:
        fail(where, "must admit the OIDC provider's pods (auth, app=dex) on 8000: "
                    "/authgate/backchannel-logout is called on the HTTP service directly")


def check_authorization_policy(where: str, obj: dict) -> None:
    spec = obj.get("spec") or {}
    action = spec.get("action", "ALLOW")
    if action == "CUSTOM":
        if (spec.get("provider") or {}).get("name") not in {"authgate", "authgate-http"}:
            fail(where, f"CUSTOM provider must be authgate or authgate-http, is {spec.get('provider')}")
        on_classic = (spec.get("selector") or {}).get("matchLabels") == {"istio": "ingressgateway"} \
            and "targetRefs" not in spec
        on_gateway = spec.get("targetRefs") == [GATEWAY_REF] and "selector" not in spec
        if obj["metadata"].get("namespace") != "istio-system" or not (on_classic or on_gateway):
            fail(where, "the CUSTOM policy belongs on the ingress gateway (istio-system: selector "
                        "istio=ingressgateway, or targetRefs the Gateway kubeflow-gateway)")
        rules = spec.get("rules") or []
        if len(rules) != 1:
            fail(where, f"exactly one rule expected, found {len(rules)}")
            return
        rule = rules[0]
        if set(rule) != {"to"} or len(rule["to"]) != 1 or set(rule["to"][0]["operation"]) != {"notPaths"}:
            fail(where, f"the rule must be only `to: operation: notPaths`, is {rule}")
            return
        excluded = set(rule["to"][0]["operation"]["notPaths"])
        if excluded != OIDC_PROVIDER_PATHS:
            fail(where, f"only the OIDC provider's paths {sorted(OIDC_PROVIDER_PATHS)} may skip authgate, "
                        f"excluded: {sorted(excluded)}")
    elif action == "DENY" and obj["metadata"]["name"] == "authgate-identity-header-guard":
        if spec.get("selector"):
            fail(where, "the guard must cover the whole namespace (no selector)")
        waypoint = [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}]
        if "targetRefs" in spec and spec["targetRefs"] != waypoint:
            fail(where, f"the guard attaches to the namespace's waypoint only (ambient), not {spec['targetRefs']}")
        guarded = set()
        for i, rule in enumerate(spec.get("rules") or []):
            sources = [f["source"] for f in rule.get("from", [])]
            trusted = [p for s in sources for p in s.get("notPrincipals", [])]
            if len(sources) != 1 or set(sources[0]) != {"notPrincipals"}:
                fail(where, f"rules[{i}]: the source must be exactly `notPrincipals`")
            if GATEWAY_PRINCIPAL not in trusted:
                fail(where, f"rules[{i}]: the ingress gateway must be trusted")
            if any("*" in p for p in trusted):
                fail(where, f"rules[{i}]: wildcard principal {trusted}")
            for cond in rule.get("when", []):
                m = re.fullmatch(r"request\.headers\[([^\]]+)\]", cond.get("key", ""))
                if m and cond.get("values") == ["*"]:
                    guarded.add(m.group(1).lower())
        if guarded != IDENTITY_HEADERS:
            fail(where, f"must guard {sorted(IDENTITY_HEADERS)}, guards {sorted(guarded)}")
    elif action == "ALLOW":
        for i, rule in enumerate(spec.get("rules") or [{}]):
            if not rule.get("from"):
                fail(where, f"rules[{i}]: an ALLOW rule without `from` admits every caller")


def check_security_policy(where: str, obj: dict) -> None:
    """Envoy Gateway: ext_authz over gRPC to authgate, failing closed, with a deadline."""
    spec = obj.get("spec") or {}
    ext = spec.get("extAuth")
    if ext is None:
        return
    if spec.get("targetRefs") != [GATEWAY_REF]:
        fail(where, f"extAuth belongs on the Gateway {GATEWAY_REF['name']}, targets {spec.get('targetRefs')}")
    if ext.get("failOpen") is not False:
        fail(where, "extAuth.failOpen must be explicitly false")
    if "timeout" not in ext:
        fail(where, "extAuth.timeout required (Envoy Gateway's default is 10 s)")
    refs = (ext.get("grpc") or {}).get("backendRefs") or []
    if refs != [{"name": "authgate", "namespace": "auth", "port": 9000}]:
        fail(where, f"extAuth.grpc must call authgate.auth:9000 only, calls {refs}")
    # Over gRPC authgate rewrites `cookie` (without its session cookies) only when it sees one,
    # and rules read headers: it must be sent every header.
    if "headersToExtAuth" in ext:
        fail(where, "extAuth.headersToExtAuth must stay unset: over gRPC authgate must see every header")


def check_mesh_config(where: str, obj: dict) -> None:
    mesh = yaml.safe_load((obj.get("data") or {}).get("mesh", "")) or {}
    normalization = (mesh.get("pathNormalization") or {}).get("normalization")
    if normalization not in ("BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"):
        fail(where, "pathNormalization.normalization must be stated and normalize (BASE, MERGE_SLASHES or "
                    f"DECODE_AND_MERGE_SLASHES), not {normalization!r}: authgate judges paths in normal form only")
    providers = {p.get("name"): p for p in mesh.get("extensionProviders") or []}
    for name, kind in (("authgate", "envoyExtAuthzGrpc"), ("authgate-http", "envoyExtAuthzHttp")):
        p = providers.get(name)
        if p is None:
            fail(where, f"extensionProviders has no {name!r}")
            continue
        validate_structural(f"{where} provider {name}", p, EXTENSION_PROVIDER)
        cfg = p.get(kind)
        if not isinstance(cfg, dict):
            fail(where, f"provider {name} must be {kind}")
            continue
        if "timeout" not in cfg:
            fail(where, f"provider {name}: explicit timeout required (Istio's default is 600s)")
        if cfg.get("failOpen") is not False:
            fail(where, f"provider {name}: failOpen must be explicitly false")
        if cfg.get("service") != "authgate.auth.svc.cluster.local":
            fail(where, f"provider {name}: service must be authgate.auth.svc.cluster.local")
        if kind == "envoyExtAuthzGrpc" and cfg.get("port") != 9000:
            fail(where, f"provider {name}: port must be 9000")
        if kind == "envoyExtAuthzHttp":
            if cfg.get("port") != 8000:
                fail(where, f"provider {name}: port must be 8000")
            if cfg.get("pathPrefix") != "/authgate/check":
                fail(where, f"provider {name}: pathPrefix must be /authgate/check (listen.http_check_prefix)")
            if cfg.get("statusOnError") != "503":
                fail(where, f"provider {name}: statusOnError must be \"503\"")
            up = set(cfg.get("headersToUpstreamOnAllow") or [])
            if not {"kubeflow-userid", "kubeflow-groups", "x-authgate-identity"} <= up:
                fail(where, f"provider {name}: headersToUpstreamOnAllow must carry the identity headers")
            if "cookie" not in up:
                fail(where, f"provider {name}: headersToUpstreamOnAllow must include cookie "
                            "(authgate rewrites it without its own session cookies)")
            if "cookie" not in (cfg.get("includeRequestHeadersInCheck") or []):
                fail(where, f"provider {name}: includeRequestHeadersInCheck must include cookie (sessions)")
            shipped = http_check_headers()
            if shipped is not None and set(cfg.get("includeRequestHeadersInCheck") or []) != shipped:
                fail(where, f"provider {name}: includeRequestHeadersInCheck must be exactly the headers "
                            f"authgate decides on (HTTP_CHECK_HEADERS in src/config.rs): {sorted(shipped)}")
            if "set-cookie" not in (cfg.get("headersToDownstreamOnAllow") or []):
                fail(where, f"provider {name}: headersToDownstreamOnAllow must include set-cookie")
            if not (cfg.get("headersToDownstreamOnDeny")):
                fail(where, f"provider {name}: headersToDownstreamOnDeny must be set")


def check_configs(where: str, objs: list[dict], authgate_bin: str | None) -> None:
    """Each authgate ConfigMap: accepted by `authgate check-config`, secret files under the
    Deployment's Secret mount."""
    deploy = next((o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "authgate"), None)
    cms = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("authgate-config")]
    if deploy is None:
        return
    if len(cms) != 1:
        fail(where, f"expected one authgate-config ConfigMap, found {len(cms)}")
        return
    cm = cms[0]
    spec = deploy["spec"]["template"]["spec"]
    vol = next((v for v in spec["volumes"] if v.get("configMap", {}).get("name") == cm["metadata"]["name"]), None)
    if vol is None:
        fail(where, f"the Deployment does not mount {cm['metadata']['name']}")
    text = (cm.get("data") or {}).get("authgate.yaml")
    if text is None:
        fail(where, "authgate-config has no authgate.yaml")
        return
    config = yaml.safe_load(text) or {}
    secret_mount = SECRET_MOUNT
    key_file = ((config.get("identity") or {}).get("jwt") or {}).get("key_file")
    if not key_file or not key_file.startswith(secret_mount + "/"):
        fail(where, f"identity.jwt.key_file must be a file under {secret_mount} (the Secret), is {key_file!r}: "
                    "without it each replica signs with its own key")
    oidc = config.get("oidc")
    session = config.get("session") or {}
    files = {"oidc.client_secret_file": (oidc or {}).get("client_secret_file"),
             "session.redis_password_file": session.get("redis_password_file"),
             "session.encryption_key_file": session.get("encryption_key_file")}
    if oidc is not None and not files["oidc.client_secret_file"]:
        fail(where, "oidc.client_secret_file must be set (a file from the Secret, never an inline secret)")
    if (oidc or {}).get("client_secret") is not None:
        fail(where, "oidc.client_secret must not be inline in a ConfigMap: use client_secret_file")
    for key, path in files.items():
        if path and path not in {f"{secret_mount}/{f}" for f in SECRET_FILES}:
            fail(where, f"{key} must be one of the Secret's files {[f'{secret_mount}/{f}' for f in SECRET_FILES]}, "
                        f"is {path!r}")
    replicas = (deploy.get("spec") or {}).get("replicas", 1)
    if where != "base" and oidc is not None and replicas > 1 and session.get("store", "memory") != "redis":
        fail(where, f"browser login with {replicas} replicas needs session.store redis: with memory a login "
                    "started on one replica fails on the other")
    if session.get("store") == "redis":
        if not session.get("redis_password_file"):
            fail(where, "session.redis_password_file must be set for the redis store")
        if not session.get("encryption_key_file"):
            fail(where, "session.encryption_key_file must be set for the redis store (its own key, "
                        "not one derived from the signing key)")
        if session.get("cookie_secure") is False:
            fail(where, "session.cookie_secure must not be false in a shipped config")
    if where.endswith("kubeflow"):
        check_preset_copy(where, config)
    tr = (config.get("kubernetes") or {}).get("token_review") or {}
    if "timeout" not in (config.get("kubernetes") or {}):
        fail(where, "kubernetes.timeout must be explicit")
    if where.endswith("kubeflow") and tr.get("audiences") != ["pipelines.kubeflow.org"]:
        fail(where, "the Kubeflow overlay accepts only pipelines.kubeflow.org service-account tokens")
    if authgate_bin is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        secrets = Path(tmp) / "secrets"
        secrets.mkdir()
        key = subprocess.run([authgate_bin, "keygen"], capture_output=True, text=True)
        if key.returncode != 0:
            fail(where, f"authgate keygen failed: {key.stderr.strip()}")
            return
        (secrets / "signing-key.pem").write_text(key.stdout)
        for f in SECRET_FILES[1:]:
            (secrets / f).write_text("not-a-real-secret\n")
        cfg = Path(tmp) / "authgate.yaml"
        cfg.write_text(text.replace(secret_mount + "/", str(secrets) + "/"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHGATE_")}
        proc = subprocess.run([authgate_bin, "check-config", "--config", str(cfg)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            fail(where, f"authgate check-config rejects the ConfigMap's config (exit {proc.returncode}):\n"
                        f"{proc.stderr.strip()}")


def http_check_headers():
    """HTTP_CHECK_HEADERS of src/config.rs: the headers the shipped HTTP provider must pass."""
    text = (ROOT / "src/config.rs").read_text()
    m = re.search(r"pub const HTTP_CHECK_HEADERS: &\[&str\] = &\[(.*?)\];", text, re.S)
    return set(re.findall(r'"([^"]+)"', m.group(1))) if m else None


# ---- the Kubeflow rule preset --------------------------------------------------------------

def preset_sections(text: str) -> str:
    """The top-level sections PRESET_SECTIONS of examples/kubeflow.yaml, verbatim, each with the
    comment block right above it."""
    lines = text.splitlines(keepends=True)
    starts = []  # (line index where a section's comments begin, key)
    for i, line in enumerate(lines):
        m = re.match(r"^([a-z_]+):", line)
        if m:
            j = i
            while j > 0 and lines[j - 1].startswith("#"):
                j -= 1
            starts.append((j, m.group(1)))
    out = []
    for n, (start, key) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
        if key in PRESET_SECTIONS:
            out.append("".join(lines[start:end]).rstrip("\n") + "\n")
    return "\n".join(out)


def sync_preset() -> None:
    """Rewrites everything below PRESET_MARKER in the Kubeflow overlay's config."""
    text = PRESET_COPY.read_text()
    head = text.split(PRESET_MARKER, 1)[0]
    PRESET_COPY.write_text(
        f"{head}{PRESET_MARKER} ({', '.join(PRESET_SECTIONS)}) ----\n"
        "# Do not edit below this line: run scripts/validate_manifests.py --sync-kubeflow-preset\n\n"
        + preset_sections(PRESET.read_text()))
    print(f"validate-manifests: {PRESET_COPY.relative_to(ROOT)} now carries {PRESET.relative_to(ROOT)}'s "
          f"{', '.join(PRESET_SECTIONS)}")


def check_preset_copy(where: str, config: dict) -> None:
    """The Kubeflow overlay enforces exactly the preset: same skip_auth, api_routes,
    authorization (rules, default, allowlists) and review settings as examples/kubeflow.yaml."""
    preset = yaml.safe_load(PRESET.read_text()) or {}
    fix = "run scripts/validate_manifests.py --sync-kubeflow-preset"
    for key in PRESET_SECTIONS:
        if config.get(key) != preset.get(key):
            theirs, ours = preset.get(key), config.get(key)
            detail = ""
            if key == "authorization":
                a = {r.get("name"): r for r in (theirs or {}).get("rules", [])}
                b = {r.get("name"): r for r in (ours or {}).get("rules", [])}
                changed = sorted(n for n in set(a) & set(b) if a[n] != b[n])
                detail = (f" (rules only in the preset: {sorted(set(a) - set(b))}, only here: "
                          f"{sorted(set(b) - set(a))}, different: {changed}"
                          f"{', order differs' if list(a) != list(b) and set(a) == set(b) else ''})")
            fail(where, f"{key} differs from {PRESET.relative_to(ROOT)}{detail}: {fix}")
    ours_k8s, theirs_k8s = config.get("kubernetes") or {}, preset.get("kubernetes") or {}
    if (ours_k8s.get("token_review") or {}).get("audiences") != (theirs_k8s.get("token_review") or {}).get("audiences"):
        fail(where, f"kubernetes.token_review.audiences differs from {PRESET.relative_to(ROOT)}")
    for k, v in (theirs_k8s.get("subject_access_review") or {}).items():
        if (ours_k8s.get("subject_access_review") or {}).get(k) != v:
            fail(where, f"kubernetes.subject_access_review.{k} differs from {PRESET.relative_to(ROOT)}")


def check_all(where: str, objs: list[dict], authgate_bin: str | None) -> None:
    if not objs:
        fail(where, "rendered nothing")
        return
    seen = set()
    cluster_roles = {o["metadata"]["name"] for o in objs if o["kind"] == "ClusterRole"}
    for obj in objs:
        w = f"{where}: {name_of(obj)}"
        key = (obj.get("apiVersion"), obj.get("kind"), obj["metadata"].get("namespace"), obj["metadata"].get("name"))
        if key in seen:
            fail(w, "rendered twice")
        seen.add(key)
        api = obj.get("apiVersion", "")
        kind = obj.get("kind")
        group = api.split("/")[0] if "/" in api else ""
        if "." in group and not (group.endswith(".k8s.io") and group != "gateway.networking.k8s.io"):
            if not validate_crd(w, obj):
                fail(w, f"no CRD schema for {api} {kind}: copy its CRD into scripts/schemas/")
                continue
            if kind == "AuthorizationPolicy":
                check_authorization_policy(w, obj)
            if kind == "SecurityPolicy":
                check_security_policy(w, obj)
            continue
        validate_k8s(w, obj)
        # CKV_K8S_21 reads neither kind: a policy without a namespace lands in `default`,
        # guarding nothing of authgate's.
        if kind in {"NetworkPolicy", "PodDisruptionBudget"} and not obj["metadata"].get("namespace"):
            fail(w, "names no namespace")
        if kind in {"ClusterRole", "Role"}:
            check_rbac(w, obj)
        if kind in {"ClusterRoleBinding", "RoleBinding"}:
            check_binding(w, obj, cluster_roles)
        spec = pod_spec(obj)
        if spec is not None:
            check_pod(w, obj, spec)
            if kind == "Deployment" and obj["metadata"]["name"] == "authgate":
                check_authgate_deployment(w, obj, spec)
        if kind == "Service":
            check_service(w, obj)
        if kind == "NetworkPolicy":
            check_network_policy(w, obj)
            check_gateway_ingress(w, obj)
        if kind == "ConfigMap" and obj["metadata"]["name"] == "istio":
            check_mesh_config(w, obj)
        if kind == "ServiceAccount" and obj["metadata"]["name"] != "authgate" \
                and obj.get("automountServiceAccountToken") is not False:
            fail(w, "service accounts other than authgate's must not automount a token")
    kinds = {o["kind"] for o in objs}
    if "Deployment" in kinds and not {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service",
                                      "PodDisruptionBudget", "NetworkPolicy", "ConfigMap"} <= kinds:
        fail(where, f"incomplete: has {sorted(kinds)}")
    check_configs(where, objs, authgate_bin)


def self_test(kustomize: list[str], scan_sets: dict[str, list[dict]]) -> list:
    """Proves the checks bite: each mutation of the rendered Kubeflow overlay (and the mesh
    config) must produce at least one problem. A check that stops firing is itself a problem.
    The Kubeflow variants go into scan_sets for the one checkov run; finish_self_test judges
    them after it."""
    import copy

    base_objs = render(kustomize, ISTIO / "overlays/kubeflow")
    mesh_objs = render_component_on_stub(kustomize, ISTIO / MESH_COMPONENT)
    # The gateway-side objects of the other overlays (the rest is the Kubeflow overlay's).
    gateway_objs = [o for o in render(kustomize, ISTIO / "overlays/gateway-api") if o["kind"] == "AuthorizationPolicy"] \
        + [o for o in render(kustomize, ISTIO / "overlays/ambient")
           if o["kind"] == "Gateway" or o["metadata"]["name"] == "authgate-identity-header-guard"] \
        + [o for o in render(kustomize, ISTIO / "overlays/envoy-gateway") if o["kind"] in {"SecurityPolicy", "ReferenceGrant"}]

    def find(objs, kind, name=None):
        return next(o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))

    def pod(objs):
        return find(objs, "Deployment", "authgate")["spec"]["template"]["spec"]

    def container(objs):
        return pod(objs)["containers"][0]

    def root_allowed(objs):
        """runAsNonRoot false and no UID anywhere: the image's USER decides."""
        for sc in (container(objs)["securityContext"], pod(objs)["securityContext"]):
            sc.pop("runAsUser")
            sc["runAsNonRoot"] = False

    def config_edit(objs, edit):
        """Parses the authgate ConfigMap's config, applies edit(config), writes it back."""
        cm = find(objs, "ConfigMap")
        config = yaml.safe_load(cm["data"]["authgate.yaml"])
        edit(config)
        cm["data"]["authgate.yaml"] = yaml.safe_dump(config)

    def config_replace(objs, old, new):
        cm = find(objs, "ConfigMap")
        assert old in cm["data"]["authgate.yaml"], old
        cm["data"]["authgate.yaml"] = cm["data"]["authgate.yaml"].replace(old, new)

    def provider_rule(objs):
        return next(r for r in find(objs, "NetworkPolicy", "authgate")["spec"]["ingress"]
                    if PROVIDER_PEER in r.get("from", []))

    def mesh_path_normalization(objs, value):
        cm = find(objs, "ConfigMap", "istio")
        mesh = yaml.safe_load(cm["data"]["mesh"])
        mesh["pathNormalization"] = {"normalization": value}
        cm["data"]["mesh"] = yaml.safe_dump(mesh)

    def mesh_set(objs, provider, key, value):
        cm = find(objs, "ConfigMap", "istio")
        mesh = yaml.safe_load(cm["data"]["mesh"])
        for p in mesh["extensionProviders"]:
            if p["name"] == provider:
                cfg = next(iter(v for k, v in p.items() if k != "name"))
                if value is None:
                    cfg.pop(key, None)
                else:
                    cfg[key] = value
        cm["data"]["mesh"] = yaml.safe_dump(mesh)

    mutations = {
        "wildcard RBAC verb": (lambda o: find(o, "ClusterRole")["rules"][0].__setitem__("verbs", ["*"]), "CKV_K8S_49"),
        "RBAC get on secrets": lambda o: find(o, "ClusterRole")["rules"].append(
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}),
        "wildcard apiGroups": lambda o: find(o, "ClusterRole")["rules"][1].__setitem__("apiGroups", ["*"]),
        "binding to cluster-admin": lambda o: find(o, "ClusterRoleBinding")["roleRef"].__setitem__("name", "cluster-admin"),
        # (mutation, the checkov check that must catch it): the scanner, not a hand check, bites.
        "runs as root": (lambda o: container(o)["securityContext"].__setitem__("runAsUser", 0), "CKV_K8S_40"),
        "root allowed, no UID": (root_allowed, "CKV_K8S_23"),
        "privilege escalation": (lambda o: container(o)["securityContext"].__setitem__("allowPrivilegeEscalation", True),
                                 "CKV_K8S_20"),
        "writable root fs": (lambda o: container(o)["securityContext"].pop("readOnlyRootFilesystem"), "CKV_K8S_22"),
        "capabilities kept": (lambda o: container(o)["securityContext"]["capabilities"].__setitem__("drop", ["NET_RAW"]),
                              "CKV_K8S_37"),
        "NET_ADMIN added": (lambda o: container(o)["securityContext"]["capabilities"].__setitem__("add", ["NET_ADMIN"]),
                            "CKV_K8S_25"),
        "privileged": (lambda o: container(o)["securityContext"].__setitem__("privileged", True), "CKV_K8S_16"),
        "host network": (lambda o: pod(o).__setitem__("hostNetwork", True), "CKV_K8S_19"),
        "host PID": (lambda o: pod(o).__setitem__("hostPID", True), "CKV_K8S_17"),
        "hostPort": (lambda o: container(o)["ports"][0].__setitem__("hostPort", 9000), "CKV_K8S_26"),
        "pod seccomp Unconfined": (lambda o: pod(o)["securityContext"]["seccompProfile"].__setitem__("type", "Unconfined"),
                                   "CKV_K8S_31"),
        "no memory limit": (lambda o: container(o)["resources"]["limits"].pop("memory"), "CKV_K8S_13"),
        "no CPU request": (lambda o: container(o)["resources"]["requests"].pop("cpu"), "CKV_K8S_10"),
        "image :latest": (lambda o: container(o).__setitem__("image", "ghcr.io/authgate/authgate:latest"), "CKV_K8S_14"),
        "secret in an env var": (lambda o: container(o).setdefault("env", []).append(
            {"name": "CLIENT_SECRET", "valueFrom": {"secretKeyRef": {"name": "authgate-secrets", "key": "client-secret"}}}),
            "CKV_K8S_35"),
        "Deployment in default": (lambda o: find(o, "Deployment", "authgate")["metadata"].pop("namespace"), "CKV_K8S_21"),
        "RBAC escalate": (lambda o: find(o, "ClusterRole")["rules"].append(
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["escalate"]}),
            "CKV_K8S_158"),
        # What checkov does not check, the hand checks of check_pod must catch.
        "container seccomp Unconfined": lambda o: container(o)["securityContext"]["seccompProfile"].__setitem__(
            "type", "Unconfined"),
        "runs as group root": lambda o: container(o)["securityContext"].__setitem__("runAsGroup", 0),
        "init container as root": lambda o: pod(o).__setitem__("initContainers", [
            {**copy.deepcopy(container(o)), "name": "init", "securityContext": {
                **container(o)["securityContext"], "runAsUser": 0}}]),
        "NetworkPolicy in default": lambda o: find(o, "NetworkPolicy", "authgate")["metadata"].pop("namespace"),
        "hostPath volume": lambda o: pod(o)["volumes"].append({"name": "host", "hostPath": {"path": "/var/lib"}}),
        "checkov skip annotation": lambda o: find(o, "Deployment", "authgate")["spec"]["template"]["metadata"]
            .setdefault("annotations", {}).__setitem__("checkov.io/skip1", "CKV_K8S_20=needed"),
        "unknown Deployment field": lambda o: container(o).__setitem__("imagePullPolice", "Always"),
        "one replica": lambda o: find(o, "Deployment", "authgate")["spec"].__setitem__("replicas", 1),
        "liveness on /readyz": lambda o: container(o)["livenessProbe"]["httpGet"].__setitem__("path", "/readyz"),
        "NetworkPolicy from anywhere": lambda o: find(o, "NetworkPolicy")["spec"]["ingress"].append({"ports": [{"port": 9000}]}),
        "CUSTOM also skips /api": lambda o: find(o, "AuthorizationPolicy", "authgate")["spec"]["rules"][0]["to"][0]
            ["operation"]["notPaths"].append("/api/*"),
        "CUSTOM with a when": lambda o: find(o, "AuthorizationPolicy", "authgate")["spec"]["rules"][0].__setitem__(
            "when", [{"key": "request.headers[authorization]", "notValues": ["*"]}]),
        "AuthorizationPolicy typo": lambda o: find(o, "AuthorizationPolicy", "authgate")["spec"].__setitem__("acton", "CUSTOM"),
        "AuthorizationPolicy deep typo": lambda o: find(o, "AuthorizationPolicy", "authgate")["spec"]["rules"][0]["to"][0]
            ["operation"].__setitem__("notPath", ["/x"]),
        "AuthorizationPolicy bad action": lambda o: find(o, "AuthorizationPolicy", "authgate-identity-header-guard")["spec"]
            .__setitem__("action", "REJECT"),
        "AuthorizationPolicy wrong type": lambda o: find(o, "AuthorizationPolicy", "authgate")["spec"]["rules"][0]["to"][0]
            ["operation"].__setitem__("notPaths", "/dex/*"),
        "guard trusts everyone": lambda o: find(o, "AuthorizationPolicy", "authgate-identity-header-guard")["spec"]
            ["rules"][0]["from"][0]["source"].__setitem__("notPrincipals", ["*"]),
        "guard drops a header": lambda o: find(o, "AuthorizationPolicy", "authgate-identity-header-guard")["spec"]["rules"].pop(),
        "key_file not from the Secret": lambda o: config_replace(o, "/etc/authgate/secrets/signing-key.pem", "/tmp/key.pem"),
        "client secret not from the Secret": lambda o: config_replace(
            o, "/etc/authgate/secrets/client-secret", "/etc/authgate/config/client-secret"),
        "no session encryption key": lambda o: config_edit(o, lambda c: c["session"].pop("encryption_key_file")),
        "sessions in memory with 2 replicas": lambda o: config_edit(o, lambda c: c["session"].__setitem__("store", "memory")),
        "preset rule dropped": lambda o: config_edit(o, lambda c: c["authorization"]["rules"].pop(0)),
        "preset rule weakened": lambda o: config_edit(
            o, lambda c: c["authorization"]["rules"][0]["resource"].__setitem__("verb", "list")),
        "preset default changed": lambda o: config_edit(
            o, lambda c: c["authorization"].__setitem__("default", "deny")),
        "preset api_routes changed": lambda o: config_edit(o, lambda c: c.__setitem__("api_routes", ["/api/"])),
        "preset SAR TTL longer": lambda o: config_edit(
            o, lambda c: c["kubernetes"]["subject_access_review"].__setitem__("allow_ttl", "10m")),
        "NetworkPolicy gRPC to Dex": lambda o: provider_rule(o)["ports"].append({"port": 9000, "protocol": "TCP"}),
        "NetworkPolicy whole auth namespace": lambda o: provider_rule(o)["from"][0].pop("podSelector"),
        "NetworkPolicy no back-channel rule": lambda o: find(o, "NetworkPolicy", "authgate")["spec"]["ingress"].remove(
            provider_rule(o)),
    }
    mesh_mutations = {
        "gRPC timeout missing": lambda o: mesh_set(o, "authgate", "timeout", None),
        "gRPC failOpen true": lambda o: mesh_set(o, "authgate", "failOpen", True),
        "HTTP failOpen missing": lambda o: mesh_set(o, "authgate-http", "failOpen", None),
        "HTTP no pathPrefix": lambda o: mesh_set(o, "authgate-http", "pathPrefix", None),
        "HTTP statusOnError 403": lambda o: mesh_set(o, "authgate-http", "statusOnError", "403"),
        "HTTP no identity upstream": lambda o: mesh_set(o, "authgate-http", "headersToUpstreamOnAllow", ["authorization"]),
        "HTTP cookie not upstream": lambda o: mesh_set(o, "authgate-http", "headersToUpstreamOnAllow",
                                                       ["kubeflow-userid", "kubeflow-groups", "x-authgate-identity"]),
        "HTTP cookie not in check": lambda o: mesh_set(o, "authgate-http", "includeRequestHeadersInCheck",
                                                       ["authorization", "accept"]),
        "provider typo": lambda o: mesh_set(o, "authgate", "failopen", False),
        "pathNormalization NONE": lambda o: mesh_path_normalization(o, "NONE"),
    }
    def first(objs, kind, name):
        return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)

    gateway_mutations = {
        "SecurityPolicy failOpen true": lambda o: first(o, "SecurityPolicy", "authgate")["spec"]["extAuth"]
            .__setitem__("failOpen", True),
        "SecurityPolicy no timeout": lambda o: first(o, "SecurityPolicy", "authgate")["spec"]["extAuth"].pop("timeout"),
        "SecurityPolicy sends fewer headers": lambda o: first(o, "SecurityPolicy", "authgate")["spec"]["extAuth"]
            .__setitem__("headersToExtAuth", ["authorization", "cookie"]),
        "SecurityPolicy typo": lambda o: first(o, "SecurityPolicy", "authgate")["spec"]["extAuth"]
            .__setitem__("failopen", False),
        "SecurityPolicy other backend": lambda o: first(o, "SecurityPolicy", "authgate")["spec"]["extAuth"]["grpc"]
            ["backendRefs"][0].__setitem__("port", 8000),
        "ReferenceGrant typo": lambda o: first(o, "ReferenceGrant", "authgate-from-envoy-gateway")["spec"]
            .__setitem__("too", []),
        "waypoint typo": lambda o: first(o, "Gateway", "waypoint")["spec"].__setitem__("gatewayClass", "istio-waypoint"),
        "CUSTOM on another Gateway": lambda o: first(o, "AuthorizationPolicy", "authgate")["spec"]["targetRefs"][0]
            .__setitem__("name", "other"),
        "guard on another waypoint": lambda o: first(o, "AuthorizationPolicy", "authgate-identity-header-guard")["spec"]
            ["targetRefs"][0].__setitem__("name", "other"),
    }
    global problems
    saved = problems
    expectations = []  # (scan set, mutation or None for the unmutated objects, caught by hand, checkov id)
    if not base_objs or not mesh_objs:
        return expectations
    for label, (objs, muts, where) in {"kubeflow": (base_objs, mutations, "self-test/kubeflow"),
                                        "mesh": (mesh_objs, mesh_mutations, "self-test/mesh"),
                                        "gateways": (gateway_objs, gateway_mutations, "self-test/gateways")}.items():
        problems = []
        check_all(where, copy.deepcopy(objs), None)
        clean = problems
        if label == "kubeflow":  # the only set with pods and RBAC, what checkov reads
            scan_sets[where] = objs
            expectations.append((where, None, False, None))
        for name, entry in muts.items():
            mutate, checkov_id = entry if isinstance(entry, tuple) else (entry, None)
            problems = []
            objs2 = copy.deepcopy(objs)
            mutate(objs2)
            check_all(where, objs2, None)
            if label == "kubeflow":
                scan_sets[f"{where}: {name}"] = objs2
            expectations.append((f"{where}: {name}", name, bool(problems), checkov_id))
        if clean:
            saved.extend(f"self-test: unmutated {label} not clean: {p}" for p in clean)
    problems = saved
    return expectations


def finish_self_test(expectations: list, findings: dict[str, list[str]]) -> None:
    """A mutation naming a checkov check must be caught by that check; the others by anything."""
    for set_label, name, by_hand, checkov_id in expectations:
        found = findings.get(set_label, [])
        if name is None:
            problems.extend(f"self-test: unmutated {set_label} not clean: {f}" for f in found)
        elif checkov_id:
            if not any(f": checkov {checkov_id}:" in f for f in found):
                problems.append(f"self-test: the mutation {name!r} was not caught by checkov {checkov_id} ({found})")
        elif not by_hand and not found:
            problems.append(f"self-test: the mutation {name!r} was not detected")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kustomize", default=os.environ.get("KUSTOMIZE", "kubectl kustomize"),
                    help="command that renders a kustomization directory (default: kubectl kustomize)")
    ap.add_argument("--authgate", default=os.environ.get("AUTHGATE_BIN"),
                    help="authgate binary for check-config (default: skip that check)")
    ap.add_argument("--checkov", default=os.environ.get("CHECKOV", str(ROOT / ".venv-checkov/bin/checkov")),
                    help="checkov executable (default: .venv-checkov/bin/checkov, which validate-manifests.sh installs)")
    ap.add_argument("--sync-kubeflow-preset", action="store_true",
                    help=f"copy {', '.join(PRESET_SECTIONS)} of examples/kubeflow.yaml into "
                         "istio/overlays/kubeflow/authgate.yaml and exit")
    args = ap.parse_args()
    if args.sync_kubeflow_preset:
        sync_preset()
        return 0
    CRD_SCHEMAS.update(load_crd_schemas())
    if not CRD_SCHEMAS:
        fail("scripts/schemas", "no CRD found")
    kustomize = shlex.split(args.kustomize)
    if shutil.which(args.checkov) is None:
        die_missing(f"checkov ({args.checkov})", "scripts/validate-manifests.sh (pip installs checkov into .venv-checkov)")
    checkov = os.path.abspath(shutil.which(args.checkov))  # it runs in its own directory
    if shutil.which(kustomize[0]) is None:
        die_missing(kustomize[0], "the machine image's `kubectl` (it embeds kustomize), or set KUSTOMIZE")

    counts = []
    scan_sets: dict[str, list[dict]] = {}
    for k in KUSTOMIZATIONS:
        objs = render(kustomize, ISTIO / k)
        check_all(k, objs, args.authgate)
        scan_sets[k] = objs
        counts.append(f"{k}={len(objs)}")
    mesh = render_component_on_stub(kustomize, ISTIO / MESH_COMPONENT)
    check_all(MESH_COMPONENT, mesh, None)
    if not any(o["kind"] == "ConfigMap" and o["metadata"]["name"] == "istio" for o in mesh):
        fail(MESH_COMPONENT, "did not produce the istio ConfigMap")
    counts.append(f"{MESH_COMPONENT}={len(mesh)}")
    expectations = self_test(kustomize, scan_sets)
    findings = checkov_scan(checkov, scan_sets)
    for k in KUSTOMIZATIONS:
        for f in findings.get(k, []):
            fail(k, f)
    finish_self_test(expectations, findings)
    # Every kustomization under istio/ is one of the above (a new overlay must be added here).
    for kfile in ISTIO.rglob("kustomization.yaml"):
        rel = str(kfile.parent.relative_to(ISTIO))
        if rel not in KUSTOMIZATIONS and rel != MESH_COMPONENT and not rel.startswith("components/"):
            fail(rel, "kustomization not validated: add it to KUSTOMIZATIONS in scripts/validate_manifests.py")

    if problems:
        print(f"validate-manifests: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"validate-manifests: ok ({', '.join(counts)} objects; Kubernetes {' and '.join(K8S_VERSIONS)} "
          f"schemas; {len(CRD_SCHEMAS)} CRD schemas; checkov {len(CHECKOV_CHECKS)} checks; invariant self-test "
          f"passed ({len(expectations)} sets); check-config {'run' if args.authgate else 'skipped'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
