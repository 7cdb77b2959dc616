"""Live tests against a REAL running authgate behind a real Envoy (not a copied key).

Run only by ``cargo test --test suite python_client`` (tests/suite/python_client.rs), which
starts the stack and sets the environment below. Without it every test here FAILS: these tests
never skip.

    AUTHGATE_JWKS_URL       authgate's HTTP listener, .../authgate/jwks.json
    AUTHGATE_ISSUER         authgate's public_url
    GATEWAY_URL             Envoy, e.g. http://127.0.0.1:PORT
    GATEWAY_HOST            the Host sent through Envoy (the identity JWT's audience)
    AUTHGATE_TOKEN          a service-account token the test cluster knows
    AUTHGATE_TOKEN_USER     the user that token belongs to
    AUTHGATE_OLD_KEY_FILE   (optional) the private key of the previous signing key, which
                            authgate publishes through identity.jwt.extra_public_key_files
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from werkzeug.test import Client

from authgate_verify import (
    REQUEST_HOST,
    AuthgateMiddleware,
    JWKSCache,
    JWKSUnavailable,
    VerificationError,
    Verifier,
    identity_from_environ,
)

REQUIRED = [
    "AUTHGATE_JWKS_URL",
    "AUTHGATE_ISSUER",
    "GATEWAY_URL",
    "GATEWAY_HOST",
    "AUTHGATE_TOKEN",
    "AUTHGATE_TOKEN_USER",
]


@dataclass
class Live:
    jwks_url: str
    issuer: str
    gateway: str
    host: str
    token: str
    user: str
    old_key_file: Optional[str]


@pytest.fixture(scope="session")
def live() -> Live:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"live tests need a running authgate stack; missing {', '.join(missing)}. "
            "They are run by `cargo test --test suite python_client`, which starts one.",
            pytrace=False,
        )
    env = os.environ
    return Live(
        env["AUTHGATE_JWKS_URL"],
        env["AUTHGATE_ISSUER"],
        env["GATEWAY_URL"].rstrip("/"),
        env["GATEWAY_HOST"],
        env["AUTHGATE_TOKEN"],
        env["AUTHGATE_TOKEN_USER"],
        env.get("AUTHGATE_OLD_KEY_FILE") or None,
    )


@dataclass
class Received:
    """What the echo app behind Envoy received."""

    headers: List[Tuple[str, str]]

    def one(self, name: str) -> Optional[str]:
        values = [v for n, v in self.headers if n.lower() == name]
        assert len(values) <= 1, f"{name} reached the app {len(values)} times: {values}"
        return values[0] if values else None

    @property
    def identity_headers(self) -> Dict[str, str]:
        out = {"host": self.one("host") or ""}
        for name in ("x-authgate-identity", "kubeflow-userid", "kubeflow-groups"):
            value = self.one(name)
            if value is not None:
                out[name] = value
        return out


def through_gateway(live: Live, path: str = "/api/whoami", host: Optional[str] = None, extra: Optional[Dict[str, str]] = None) -> Received:
    headers = {"Host": host or live.host, "Authorization": f"Bearer {live.token}"}
    headers.update(extra or {})
    request = urllib.request.Request(live.gateway + path, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        assert response.status == 200
        body = json.load(response)
    return Received([(n, v) for n, v in body["headers"]])


def load_authgate_key(pem: bytes) -> Ed25519PrivateKey:
    """A key as `authgate keygen` writes it: PKCS#8 v2 (RFC 5958, public key included), which
    cryptography (like OpenSSL 3.0) does not parse; the 32-byte seed sits at a fixed offset."""
    try:
        key = load_pem_private_key(pem, password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return key
    except ValueError:
        pass
    der = base64.b64decode(b"".join(line for line in pem.splitlines() if not line.startswith(b"-----")))
    prefix = bytes.fromhex("3051020101300506032b657004220420")
    assert der.startswith(prefix) and len(der) == 83, "not an authgate Ed25519 key"
    return Ed25519PrivateKey.from_private_bytes(der[16:48])


def make_verifier(live: Live, **kwargs: Any) -> Verifier:
    kwargs.setdefault("audience", live.host)
    kwargs.setdefault("issuer", live.issuer)
    return Verifier(jwks_url=live.jwks_url, **kwargs)


def refused(verifier: Verifier, headers: Dict[str, str]) -> str:
    with pytest.raises(VerificationError) as info:
        verifier.verify_headers(headers)
    return info.value.reason


def test_the_published_jwks_holds_ed25519_keys(live: Live) -> None:
    keys = JWKSCache(live.jwks_url).keys()
    assert keys, "authgate published no key"
    expected = 2 if live.old_key_file else 1
    assert len(keys) == expected, f"JWKS kids: {list(keys)}"


def test_the_jwks_through_the_gateway_is_the_same(live: Live) -> None:
    # Apps that may not reach authgate's port directly fetch it through the gateway instead
    # (gRPC mode: 200; HTTP mode: 203, both accepted).
    direct = JWKSCache(live.jwks_url).keys()
    via_gateway = JWKSCache(live.gateway + "/authgate/jwks.json").keys()
    assert sorted(via_gateway) == sorted(direct)


def test_a_real_identity_verifies(live: Live) -> None:
    # Forged identity headers on the way in: authgate replaces them, and what it sets verifies.
    received = through_gateway(
        live,
        extra={"kubeflow-userid": "mallory@example.com", "x-authgate-identity": "forged.jwt.value"},
    )
    headers = received.identity_headers
    assert headers["kubeflow-userid"] == live.user
    identity = make_verifier(live).verify_headers(headers)
    assert identity.user == live.user
    assert identity.auth_method == "service_account"
    assert identity.groups == tuple(headers["kubeflow-groups"].split(","))
    assert "system:authenticated" in identity.groups
    assert identity.expires_at > time.time()
    # The same, with the audience taken from the request's Host.
    assert make_verifier(live, audience=REQUEST_HOST).verify_headers(headers).user == live.user


def test_forged_user_and_groups_headers_are_refused(live: Live) -> None:
    headers = through_gateway(live).identity_headers
    verifier = make_verifier(live)
    assert refused(verifier, dict(headers, **{"kubeflow-userid": "mallory@example.com"})) == "header_mismatch"
    assert refused(verifier, dict(headers, **{"kubeflow-groups": headers["kubeflow-groups"] + ",cluster-admins"})) == "header_mismatch"
    assert refused(verifier, {k: v for k, v in headers.items() if k != "x-authgate-identity"}) == "missing_identity"


def test_a_real_token_for_another_host_is_refused(live: Live) -> None:
    # authgate signs for the request's Host when it is one it serves (identity.jwt.audiences):
    # here another app's.
    other = through_gateway(live, host="other-app.example.com").identity_headers
    claims = jwt.decode(other["x-authgate-identity"], options={"verify_signature": False})
    assert claims["aud"] == "other-app.example.com"
    assert refused(make_verifier(live), other) == "wrong_audience"
    # REQUEST_HOST: replayed to this app (Host = ours), the audience no longer matches.
    replayed = dict(other, host=live.host)
    assert refused(make_verifier(live, audience=REQUEST_HOST), replayed) == "wrong_audience"


def test_a_made_up_host_gets_an_audience_no_app_accepts(live: Live) -> None:
    # The client chooses the Host header: for a host authgate was not told about, the token is
    # addressed to no app, so it is worth nothing anywhere.
    made_up = through_gateway(live, host="made-up.example.com").identity_headers
    claims = jwt.decode(made_up["x-authgate-identity"], options={"verify_signature": False})
    assert claims["aud"] == "authgate:unlisted-host"
    assert refused(make_verifier(live), made_up) == "wrong_audience"


def test_a_token_from_a_key_not_in_the_jwks_is_refused(live: Live) -> None:
    headers = through_gateway(live).identity_headers
    real = headers["x-authgate-identity"]
    claims = jwt.decode(real, options={"verify_signature": False})
    kid = jwt.get_unverified_header(real)["kid"]
    attacker = Ed25519PrivateKey.generate()
    verifier = make_verifier(live)
    forged_same_kid = jwt.encode(claims, attacker, algorithm="EdDSA", headers={"kid": kid})
    assert refused(verifier, dict(headers, **{"x-authgate-identity": forged_same_kid})) == "bad_signature"
    forged_own_kid = jwt.encode(claims, attacker, algorithm="EdDSA", headers={"kid": "attacker"})
    assert refused(verifier, dict(headers, **{"x-authgate-identity": forged_own_kid})) == "unknown_key"


def test_wrong_issuer_configuration_refuses_real_tokens(live: Live) -> None:
    headers = through_gateway(live).identity_headers
    assert refused(make_verifier(live, issuer="https://elsewhere.example.com"), headers) == "wrong_issuer"


def test_key_roll_a_token_signed_by_the_previous_key_verifies(live: Live) -> None:
    if live.old_key_file is None:
        pytest.fail("AUTHGATE_OLD_KEY_FILE is not set: the stack was started without a key roll")
    with open(live.old_key_file, "rb") as f:
        old = load_authgate_key(f.read())
    headers = through_gateway(live).identity_headers
    current = headers["x-authgate-identity"]
    claims = jwt.decode(current, options={"verify_signature": False})
    keys = JWKSCache(live.jwks_url).keys()
    current_kid = jwt.get_unverified_header(current)["kid"]
    (old_kid,) = [kid for kid in keys if kid != current_kid]
    # A token authgate signed with the old key before it was restarted with the new one.
    from_old_key = jwt.encode(claims, old, algorithm="EdDSA", headers={"kid": old_kid})
    verifier = make_verifier(live)
    assert verifier.verify_headers(headers).user == live.user
    assert verifier.verify_headers(dict(headers, **{"x-authgate-identity": from_old_key})).user == live.user


def test_jwks_unreachable_is_refused_not_accepted(live: Live) -> None:
    headers = through_gateway(live).identity_headers
    dead = Verifier(jwks_url="http://127.0.0.1:9/authgate/jwks.json", issuer=live.issuer, audience=live.host)
    with pytest.raises(JWKSUnavailable):
        dead.verify_headers(headers)


def test_wsgi_app_with_the_middleware_on_real_headers(live: Live) -> None:
    def app(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        identity = identity_from_environ(environ)
        assert identity is not None
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"user": identity.user, "groups": list(identity.groups)}).encode()]

    client = Client(AuthgateMiddleware(app, make_verifier(live)))
    headers = through_gateway(live).identity_headers
    ok = client.get("/api/whoami", headers=headers)
    assert ok.status_code == 200, ok.get_data(as_text=True)
    assert ok.get_json()["user"] == live.user
    forged = client.get("/api/whoami", headers=dict(headers, **{"kubeflow-userid": "mallory@example.com"}))
    assert forged.status_code == 401
    assert forged.get_json() == {
        "error": "unauthenticated",
        "reason": "header_mismatch",
        "message": "kubeflow-userid does not match the signed identity",
    }
    bare = client.get("/api/whoami", headers={"host": live.host, "kubeflow-userid": live.user})
    assert bare.status_code == 401
