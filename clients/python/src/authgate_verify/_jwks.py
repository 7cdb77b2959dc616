"""authgate's JWKS, fetched over HTTP and cached (thread-safe, fail closed)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Callable, Dict, Mapping, Optional

import jwt

from ._errors import JWKSUnavailable, VerificationError

#: ``fetch(url, timeout) -> body``; raise any exception for "unreachable".
Fetcher = Callable[[str, float], bytes]

MAX_JWKS_BYTES = 1 << 20


def urllib_fetch(url: str, timeout: float) -> bytes:
    """GETs ``url`` and returns the body of a 200 answer (at most 1 MiB)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (scheme checked)
        status = getattr(response, "status", 200)
        # 203: the JWKS answered by authgate through an HTTP-mode ext_authz check (via the gateway).
        if status not in (200, 203):
            raise OSError(f"JWKS answered HTTP {status}")
        body: bytes = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise OSError("JWKS larger than 1 MiB")
    return body


def parse_jwks(body: bytes) -> Dict[str, jwt.PyJWK]:
    """The usable Ed25519 signing keys of a JWKS document, by ``kid``.

    Keys of any other type, curve, algorithm or use are ignored; a document without a single
    usable key is an error (authgate always publishes at least its current key).
    """
    doc = json.loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    keys: Dict[str, jwt.PyJWK] = {}
    for entry in doc["keys"]:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if (
            not isinstance(kid, str)
            or not kid
            or entry.get("kty") != "OKP"
            or entry.get("crv") != "Ed25519"
            or entry.get("alg", "EdDSA") != "EdDSA"
            or entry.get("use", "sig") != "sig"
            or "d" in entry  # a private key has no business in a JWKS
        ):
            continue
        keys[kid] = jwt.PyJWK(entry, algorithm="EdDSA")
    if not keys:
        raise ValueError("JWKS holds no Ed25519 signing key")
    return keys


class JWKSCache:
    """Keys from authgate's ``/authgate/jwks.json``.

    * The document is reused for ``ttl`` seconds, then fetched again before the next
      verification. If that fetch fails, verification fails with :class:`JWKSUnavailable`
      (never with the stale keys: a key removed from the JWKS must stop being accepted).
    * A token whose ``kid`` is not in a fresh document triggers a refetch (a key roll), at most
      once every ``min_refetch_interval`` seconds; in between, such tokens are refused.
    * After a failed fetch, further fetches wait ``error_backoff`` seconds, so an unreachable
      JWKS answers 503 quickly instead of queueing every request behind a timeout.
    * Safe to share between threads: one fetch at a time, and concurrent callers reuse its result.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float = 300.0,
        min_refetch_interval: float = 10.0,
        error_backoff: float = 1.0,
        timeout: float = 2.0,
        fetch: Optional[Fetcher] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (url.startswith("https://") or url.startswith("http://")):
            raise ValueError(f"JWKS URL must be http(s): {url!r}")
        if ttl <= 0 or min_refetch_interval < 0 or error_backoff < 0 or timeout <= 0:
            raise ValueError("ttl and timeout must be positive, intervals not negative")
        self.url = url
        self.ttl = ttl
        self.min_refetch_interval = min_refetch_interval
        self.error_backoff = error_backoff
        self.timeout = timeout
        self._fetch = fetch or urllib_fetch
        self._clock = clock
        self._lock = threading.Lock()  # guards the fields below
        self._fetch_lock = threading.Lock()  # one fetch at a time
        self._keys: Dict[str, jwt.PyJWK] = {}
        self._fetched_at: Optional[float] = None  # last successful fetch
        self._attempted_at: Optional[float] = None  # last fetch attempt, success or not
        self._last_error: Optional[str] = None
        self._generation = 0  # bumped after every attempt

    def is_fresh(self) -> bool:
        """Whether keys are cached and within their TTL (a verification then does no I/O,
        unless the token names an unknown ``kid``)."""
        with self._lock:
            return self._fresh()

    def keys(self) -> Mapping[str, jwt.PyJWK]:
        """The current keys (fetching if the cache is empty or stale)."""
        with self._lock:
            if self._fresh():
                return dict(self._keys)
        self._refresh()
        with self._lock:
            return dict(self._keys)

    def get(self, kid: str) -> jwt.PyJWK:
        """The key with this ``kid``.

        Raises :class:`JWKSUnavailable` when the JWKS cannot be fetched, and
        :class:`VerificationError` when the key is not published.
        """
        with self._lock:
            fresh = self._fresh()
            if fresh and kid in self._keys:
                return self._keys[kid]
            may_refetch = not fresh or self._may_refetch_for_unknown_kid()
        if not may_refetch:
            raise VerificationError("unknown_key", "the token's key is not in authgate's JWKS")
        self._refresh()
        with self._lock:
            key = self._keys.get(kid)
        if key is None:
            raise VerificationError("unknown_key", "the token's key is not in authgate's JWKS")
        return key

    # -- internals (call with self._lock held) -------------------------------------------------

    def _fresh(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at < self.ttl

    def _may_refetch_for_unknown_kid(self) -> bool:
        return (
            self._attempted_at is None
            or self._clock() - self._attempted_at >= self.min_refetch_interval
        )

    def _refresh(self) -> None:
        """Fetches the JWKS (or reuses a fetch that finished while we waited for it).

        Raises :class:`JWKSUnavailable` when that fetch failed. Keys still within their TTL are
        kept for other tokens; keys past it are dropped.
        """
        with self._lock:
            generation = self._generation
        with self._fetch_lock:
            with self._lock:
                if self._generation != generation:
                    # Another thread fetched while we waited: use its outcome.
                    if self._last_error is not None:
                        raise JWKSUnavailable(self._last_error)
                    return
                if (
                    self._last_error is not None
                    and self._attempted_at is not None
                    and self._clock() - self._attempted_at < self.error_backoff
                ):
                    raise JWKSUnavailable(self._last_error)
            keys: Optional[Dict[str, jwt.PyJWK]] = None
            error: Optional[str] = None
            try:
                keys = parse_jwks(self._fetch(self.url, self.timeout))
            except Exception as e:  # noqa: BLE001 — whatever went wrong, fail closed
                error = f"cannot fetch authgate's JWKS from {self.url}: {e}"
            with self._lock:
                now = self._clock()
                self._attempted_at = now
                self._generation += 1
                if keys is not None:
                    self._keys = keys
                    self._fetched_at = now
                    self._last_error = None
                    return
                self._last_error = error
                if not self._fresh():
                    # Never verify with keys past their TTL.
                    self._keys = {}
                    self._fetched_at = None
            raise JWKSUnavailable(error or "JWKS unavailable")
