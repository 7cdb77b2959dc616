"""Helpers for the unit tests: locally generated Ed25519 keys, tokens, a fake JWKS endpoint."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import jwt
from authgate_verify import JWKSCache, Verifier

ISSUER = "https://kubeflow.example.com"
HOST = "kubeflow.example.com"
USER = "system:serviceaccount:team-a:default-editor"
GROUPS = ["system:serviceaccounts", "system:serviceaccounts:team-a", "system:authenticated"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Key:
    """An Ed25519 key pair, with its JWK as authgate publishes it (kid = RFC 7638 thumbprint)."""

    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.x = b64url(raw)
        canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": self.x}, separators=(",", ":"))
        self.kid = b64url(hashlib.sha256(canonical.encode()).digest())

    def jwk(self) -> Dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid, "x": self.x}

    def sign(self, claims: Dict[str, Any], kid: Optional[str] = None) -> str:
        return jwt.encode(claims, self.private, algorithm="EdDSA", headers={"kid": kid or self.kid})


def claims(**overrides: Any) -> Dict[str, Any]:
    now = int(time.time())
    out: Dict[str, Any] = {
        "iss": ISSUER,
        "aud": HOST,
        "sub": USER,
        "groups": list(GROUPS),
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
        "auth_method": "service_account",
        "uid": "uid-default-editor",
    }
    for name, value in overrides.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def unsigned(header: Dict[str, Any], payload: Dict[str, Any], secret: Optional[bytes] = None) -> str:
    """A token built by hand: ``alg: none`` (empty signature) or HMAC-SHA256 with ``secret``."""
    head = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    if secret is None:
        return head + "."
    return head + "." + b64url(hmac.new(secret, head.encode(), hashlib.sha256).digest())


class FakeJWKS:
    """A JWKS endpoint for :class:`JWKSCache`: serves ``keys``, counts fetches, can be down."""

    def __init__(self, *keys: Key) -> None:
        self.keys: List[Key] = list(keys)
        self.down = False
        self.body: Optional[bytes] = None  # served instead of the keys when set
        self.delay = 0.0
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, url: str, timeout: float) -> bytes:
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.down:
            raise ConnectionRefusedError("connection refused")
        if self.body is not None:
            return self.body
        return json.dumps({"keys": [k.jwk() for k in self.keys]}).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key() -> Key:
    return Key()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def endpoint(key: Key) -> FakeJWKS:
    return FakeJWKS(key)


@pytest.fixture
def make_verifier(endpoint: FakeJWKS, clock: Clock) -> Callable[..., Verifier]:
    def make(**kwargs: Any) -> Verifier:
        cache_args = {
            k: kwargs.pop(k) for k in ("ttl", "min_refetch_interval", "error_backoff") if k in kwargs
        }
        cache = JWKSCache("https://authgate.test/authgate/jwks.json", fetch=endpoint, clock=clock, **cache_args)
        kwargs.setdefault("issuer", ISSUER)
        kwargs.setdefault("audience", HOST)
        return Verifier(jwks=cache, **kwargs)

    return make


@pytest.fixture
def verifier(make_verifier: Callable[..., Verifier]) -> Verifier:
    return make_verifier()
