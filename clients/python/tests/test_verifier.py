"""The verifier against locally generated keys: what it accepts and everything it refuses."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest

from authgate_verify import REQUEST_HOST, JWKSUnavailable, VerificationError, Verifier
from conftest import GROUPS, HOST, ISSUER, USER, Clock, FakeJWKS, Key, claims, unsigned

JOINED = ",".join(GROUPS)


def refused(verifier: Verifier, token: Any, user: Any = USER, groups: Any = JOINED, host: Any = None) -> str:
    with pytest.raises(VerificationError) as info:
        verifier.verify(token, user, groups, host)
    assert info.value.status == 401
    assert not token or not isinstance(token, str) or token not in info.value.message
    return info.value.reason


# -- accepted -----------------------------------------------------------------------------------


def test_a_genuine_identity_verifies(verifier: Verifier, key: Key) -> None:
    identity = verifier.verify(key.sign(claims()), USER, JOINED)
    assert identity.user == USER
    assert identity.groups == tuple(GROUPS)
    assert identity.auth_method == "service_account"
    assert identity.uid == "uid-default-editor"
    assert identity.claims["iss"] == ISSUER


def test_verify_headers_reads_any_case(verifier: Verifier, key: Key) -> None:
    headers = {"X-Authgate-Identity": key.sign(claims()), "Kubeflow-Userid": USER, "Kubeflow-Groups": JOINED}
    assert verifier.verify_headers(headers).user == USER


def test_no_groups_means_no_groups_header(verifier: Verifier, key: Key) -> None:
    token = key.sign(claims(groups=[]))
    assert verifier.verify(token, USER, None).groups == ()
    assert verifier.verify(token, USER, "").groups == ()
    assert refused(verifier, token, groups="cluster-admins") == "header_mismatch"


def test_issuer_trailing_slash_and_extra_claims(make_verifier: Callable[..., Verifier], key: Key) -> None:
    verifier = make_verifier(issuer=ISSUER + "/")
    token = key.sign(claims(extra={"authentication.kubernetes.io/pod-name": ["runner-1"]}))
    identity = verifier.verify(token, USER, JOINED)
    assert identity.extra == {"authentication.kubernetes.io/pod-name": ("runner-1",)}


def test_custom_header_names(make_verifier: Callable[..., Verifier], key: Key) -> None:
    verifier = make_verifier(user_header="X-User", groups_header="X-Groups", token_header="X-Id")
    headers = {"x-id": key.sign(claims()), "x-user": USER, "x-groups": JOINED}
    assert verifier.verify_headers(headers).user == USER
    assert refused(verifier, None) == "missing_identity"


# -- forged headers -----------------------------------------------------------------------------


def test_forged_user_or_groups_header_is_refused(verifier: Verifier, key: Key) -> None:
    token = key.sign(claims())
    assert refused(verifier, token, user="mallory@example.com") == "header_mismatch"
    assert refused(verifier, token, user=None) == "header_mismatch"
    assert refused(verifier, token, user=USER + " ") == "header_mismatch"
    assert refused(verifier, token, groups=JOINED + ",cluster-admins") == "header_mismatch"
    assert refused(verifier, token, groups=None) == "header_mismatch"
    assert refused(verifier, token, groups=", ".join(GROUPS)) == "header_mismatch"


def test_missing_or_garbage_token_is_refused(verifier: Verifier) -> None:
    assert refused(verifier, None) == "missing_identity"
    assert refused(verifier, "") == "missing_identity"
    assert refused(verifier, "forged.jwt.value") == "malformed"
    assert refused(verifier, "x" * 20000) == "malformed"


def test_token_signed_by_another_key_is_refused(verifier: Verifier, key: Key) -> None:
    attacker = Key()
    # Claiming authgate's kid: the signature does not verify.
    assert refused(verifier, attacker.sign(claims(), kid=key.kid)) == "bad_signature"
    # Its own kid: not published.
    assert refused(verifier, attacker.sign(claims())) == "unknown_key"


def test_tampered_payload_is_refused(verifier: Verifier, key: Key) -> None:
    genuine = key.sign(claims())
    forged = key.sign(claims(sub="mallory@example.com"))
    head, _, sig = genuine.split(".")
    spliced = ".".join([head, forged.split(".")[1], sig])
    assert refused(verifier, spliced, user="mallory@example.com") == "bad_signature"


# -- audience, issuer, time ------------------------------------------------------------------------


def test_token_for_another_app_is_refused(verifier: Verifier, key: Key) -> None:
    assert refused(verifier, key.sign(claims(aud="other.example.com"))) == "wrong_audience"
    assert refused(verifier, key.sign(claims(aud=[HOST, "other.example.com"]))) == "wrong_audience"
    assert refused(verifier, key.sign(claims(aud=None))) in ("malformed", "wrong_audience")


def test_request_host_audience(make_verifier: Callable[..., Verifier], key: Key) -> None:
    verifier = make_verifier(audience=REQUEST_HOST)
    token = key.sign(claims())
    assert verifier.verify(token, USER, JOINED, "Kubeflow.Example.com").user == USER
    assert refused(verifier, token, host="other.example.com") == "wrong_audience"
    assert refused(verifier, token, host=None) == "no_host"
    assert verifier.verify_headers({"host": HOST, "x-authgate-identity": token, "kubeflow-userid": USER, "kubeflow-groups": JOINED}).user == USER


def test_several_configured_hosts(make_verifier: Callable[..., Verifier], key: Key) -> None:
    verifier = make_verifier(audience=["kubeflow.example.com", "kf.internal:8443"])
    assert verifier.verify(key.sign(claims(aud="kf.internal:8443")), USER, JOINED).user == USER


def test_wrong_issuer_is_refused(verifier: Verifier, key: Key) -> None:
    for iss in ("https://evil.example.com", ISSUER + ".evil.com", "https://kubeflow.example", ISSUER + "/"):
        assert refused(verifier, key.sign(claims(iss=iss))) == "wrong_issuer", iss
    assert refused(verifier, key.sign(claims(iss=None))) == "malformed"


def test_expired_and_not_yet_valid_tokens_are_refused(verifier: Verifier, key: Key) -> None:
    now = int(time.time())
    assert refused(verifier, key.sign(claims(iat=now - 400, nbf=now - 400, exp=now - 60))) == "expired"
    assert refused(verifier, key.sign(claims(nbf=now + 120, iat=now + 120, exp=now + 400))) == "not_yet_valid"
    assert refused(verifier, key.sign(claims(exp=None))) == "malformed"
    assert refused(verifier, key.sign(claims(nbf=None))) == "malformed"


def test_small_clock_skew_is_tolerated(verifier: Verifier, key: Key) -> None:
    now = int(time.time())
    # Expired 3 s ago, or valid from 3 s in the future: within the default 10 s leeway.
    verifier.verify(key.sign(claims(iat=now - 300, nbf=now - 300, exp=now - 3)), USER, JOINED)
    verifier.verify(key.sign(claims(iat=now + 3, nbf=now + 3)), USER, JOINED)


def test_claims_of_the_wrong_type_are_refused(verifier: Verifier, key: Key) -> None:
    assert refused(verifier, key.sign(claims(groups="system:authenticated"))) == "malformed"
    assert refused(verifier, key.sign(claims(groups=None))) == "malformed"
    assert refused(verifier, key.sign(claims(auth_method=None))) == "malformed"


# -- algorithm confusion ----------------------------------------------------------------------------


def test_alg_none_is_refused(verifier: Verifier, key: Key) -> None:
    for alg in ("none", "None", "NONE"):
        assert refused(verifier, unsigned({"alg": alg, "kid": key.kid}, claims())) == "bad_algorithm"


def test_hs256_with_the_public_key_as_secret_is_refused(verifier: Verifier, key: Key) -> None:
    import base64

    raw = base64.urlsafe_b64decode(key.x + "==")
    for secret in (raw, key.x.encode()):
        token = unsigned({"alg": "HS256", "typ": "JWT", "kid": key.kid}, claims(), secret)
        assert refused(verifier, token) == "bad_algorithm"
    token = unsigned({"alg": "EdDSA", "kid": key.kid}, claims(), raw)
    assert refused(verifier, token) == "bad_signature"


def test_only_ed25519_keys_of_the_jwks_are_used(endpoint: FakeJWKS, verifier: Verifier, key: Key) -> None:
    import json

    jwk = key.jwk()
    endpoint.body = json.dumps(
        {"keys": [dict(jwk, kid="hmac", kty="oct", k=key.x), dict(jwk, kid="rsa-alg", alg="RS256")]}
    ).encode()
    # No usable key at all: nothing can be verified.
    with pytest.raises(JWKSUnavailable):
        verifier.verify(key.sign(claims(), kid="rsa-alg"), USER, JOINED)


# -- JWKS: key roll, caching, failing closed ----------------------------------------------------------


def test_key_roll_two_keys_in_the_jwks(make_verifier: Callable[..., Verifier], endpoint: FakeJWKS, key: Key) -> None:
    new = Key()
    endpoint.keys = [new, key]  # authgate publishes the current key first, then extra ones
    verifier = make_verifier()
    assert verifier.verify(key.sign(claims()), USER, JOINED).user == USER
    assert verifier.verify(new.sign(claims()), USER, JOINED).user == USER
    assert endpoint.calls == 1


def test_a_new_key_is_picked_up_on_its_first_token(
    make_verifier: Callable[..., Verifier], endpoint: FakeJWKS, key: Key, clock: Clock
) -> None:
    verifier = make_verifier(min_refetch_interval=10)
    verifier.verify(key.sign(claims()), USER, JOINED)
    assert endpoint.calls == 1
    clock.now += 11
    new = Key()
    endpoint.keys = [new, key]  # authgate restarted with the new key, old one still published
    verifier.verify(new.sign(claims()), USER, JOINED)
    assert endpoint.calls == 2
    verifier.verify(key.sign(claims()), USER, JOINED)
    assert endpoint.calls == 2


def test_unknown_kids_refetch_at_most_every_interval(
    make_verifier: Callable[..., Verifier], endpoint: FakeJWKS, key: Key, clock: Clock
) -> None:
    verifier = make_verifier(min_refetch_interval=10)
    verifier.verify(key.sign(claims()), USER, JOINED)
    for _ in range(50):
        assert refused(verifier, Key().sign(claims())) == "unknown_key"
    assert endpoint.calls == 1
    clock.now += 10
    assert refused(verifier, Key().sign(claims())) == "unknown_key"
    assert endpoint.calls == 2


def test_a_removed_key_stops_verifying_after_the_ttl(
    make_verifier: Callable[..., Verifier], endpoint: FakeJWKS, key: Key, clock: Clock
) -> None:
    verifier = make_verifier(ttl=300)
    old_token = key.sign(claims())
    verifier.verify(old_token, USER, JOINED)
    new = Key()
    endpoint.keys = [new]  # the roll is over: the old key is no longer published
    clock.now += 301
    assert refused(verifier, old_token) == "unknown_key"
    assert verifier.verify(new.sign(claims()), USER, JOINED).user == USER


def test_jwks_unreachable_is_503_never_accept(
    make_verifier: Callable[..., Verifier], endpoint: FakeJWKS, key: Key
) -> None:
    endpoint.down = True
    verifier = make_verifier()
    with pytest.raises(JWKSUnavailable) as info:
        verifier.verify(key.sign(claims()), USER, JOINED)
    assert info.value.status == 503
    assert "jwks.json" in info.value.message


@pytest.mark.parametrize("body", [b"<html>", b"{}", b'{"keys": []}', b'{"keys": "x"}', b"[1]"])
def test_a_broken_jwks_is_503(make_verifier: Callable[..., Verifier], endpoint: FakeJWKS, key: Key, body: bytes) -> None:
    endpoint.body = body
    with pytest.raises(JWKSUnavailable):
        make_verifier().verify(key.sign(claims()), USER, JOINED)


def test_stale_keys_are_not_used_when_the_jwks_is_down(
    make_verifier: Callable[..., Verifier], endpoint: FakeJWKS, key: Key, clock: Clock
) -> None:
    verifier = make_verifier(ttl=300, error_backoff=1)
    token = key.sign(claims())
    verifier.verify(token, USER, JOINED)
    endpoint.down = True
    clock.now += 299
    verifier.verify(token, USER, JOINED)  # still within the TTL: no fetch
    assert endpoint.calls == 1
    clock.now += 2
    with pytest.raises(JWKSUnavailable):
        verifier.verify(token, USER, JOINED)
    # Within the error backoff: refused at once, without another fetch.
    with pytest.raises(JWKSUnavailable):
        verifier.verify(token, USER, JOINED)
    assert endpoint.calls == 2
    clock.now += 1
    endpoint.down = False
    verifier.verify(token, USER, JOINED)
    assert endpoint.calls == 3


def test_concurrent_first_requests_share_one_fetch(
    make_verifier: Callable[..., Verifier], endpoint: FakeJWKS, key: Key
) -> None:
    endpoint.delay = 0.2
    verifier = make_verifier()
    token = key.sign(claims())
    results: list = []

    def run() -> None:
        try:
            results.append(verifier.verify(token, USER, JOINED).user)
        except Exception as e:  # noqa: BLE001
            results.append(e)

    threads = [threading.Thread(target=run) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [USER] * 16
    assert endpoint.calls == 1


def test_configuration_mistakes_are_refused(endpoint: FakeJWKS) -> None:
    from authgate_verify import JWKSCache

    with pytest.raises(ValueError):
        Verifier(issuer=ISSUER, audience=HOST)
    with pytest.raises(ValueError):
        Verifier(jwks_url="https://a/jwks", issuer="", audience=HOST)
    with pytest.raises(ValueError):
        Verifier(jwks_url="https://a/jwks", issuer=ISSUER, audience=[])
    with pytest.raises(ValueError):
        JWKSCache("file:///etc/passwd")
