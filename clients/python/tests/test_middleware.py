"""The WSGI and ASGI middlewares and the Flask helper: who gets through, who gets 401/503."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from werkzeug.test import Client

from authgate_verify import (
    AuthgateASGIMiddleware,
    AuthgateMiddleware,
    Verifier,
    identity_from_environ,
    identity_from_scope,
)
from conftest import GROUPS, HOST, USER, FakeJWKS, Key, claims

JOINED = ",".join(GROUPS)


def good_headers(key: Key, **overrides: Optional[str]) -> Dict[str, str]:
    headers = {
        "Host": HOST,
        "x-authgate-identity": key.sign(claims()),
        "kubeflow-userid": USER,
        "kubeflow-groups": JOINED,
    }
    for name, value in overrides.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


# -- WSGI ---------------------------------------------------------------------------------------


def whoami_wsgi(environ: dict, start_response: Callable[..., Any]) -> List[bytes]:
    identity = identity_from_environ(environ)
    body = json.dumps({"user": identity.user if identity else None, "groups": list(identity.groups) if identity else None})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]


@pytest.fixture
def wsgi(verifier: Verifier) -> Client:
    return Client(AuthgateMiddleware(whoami_wsgi, verifier, exempt_paths=["/healthz"]))


def test_wsgi_passes_a_verified_identity_to_the_app(wsgi: Client, key: Key) -> None:
    response = wsgi.get("/api/runs", headers=good_headers(key))
    assert response.status_code == 200
    assert response.get_json() == {"user": USER, "groups": GROUPS}


@pytest.mark.parametrize(
    "overrides",
    [
        {"kubeflow_userid": "mallory@example.com"},
        {"kubeflow_groups": "cluster-admins"},
        {"x_authgate_identity": None},
        {"x_authgate_identity": "forged.jwt.value"},
        {"kubeflow_userid": None},
    ],
)
def test_wsgi_refuses_forged_identities_with_401_json(wsgi: Client, key: Key, overrides: Dict[str, Optional[str]]) -> None:
    response = wsgi.get("/api/runs", headers=good_headers(key, **overrides))
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/json"
    assert response.get_json()["error"] == "unauthenticated"
    assert "mallory" not in response.get_data(as_text=True)


def test_wsgi_refuses_a_token_from_an_unpublished_key(wsgi: Client, key: Key) -> None:
    response = wsgi.get("/api/runs", headers=good_headers(key, x_authgate_identity=Key().sign(claims())))
    assert response.status_code == 401
    assert response.get_json()["reason"] == "unknown_key"


def test_wsgi_jwks_down_is_503(wsgi: Client, key: Key, endpoint: FakeJWKS) -> None:
    endpoint.down = True
    response = wsgi.get("/api/runs", headers=good_headers(key))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json()["error"] == "unavailable"


def test_wsgi_exempt_path_passes_without_identity(wsgi: Client) -> None:
    response = wsgi.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["user"] is None
    assert wsgi.get("/healthz/x").status_code == 401


def test_wsgi_a_verifier_bug_refuses(key: Key) -> None:
    class Broken(Verifier):
        def verify(self, *args: Any, **kwargs: Any) -> Any:
            raise KeyError("boom")

    broken = Broken(jwks_url="https://authgate.test/jwks", issuer="https://x", audience=HOST)
    response = Client(AuthgateMiddleware(whoami_wsgi, broken)).get("/", headers=good_headers(key))
    assert response.status_code == 401


# -- ASGI ---------------------------------------------------------------------------------------


async def whoami_asgi(scope: Dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return
    identity = identity_from_scope(scope)
    body = json.dumps({"user": identity.user if identity else None}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def call_asgi(app: Any, headers: List[Tuple[str, str]], kind: str = "http", path: str = "/api/runs") -> List[Dict[str, Any]]:
    scope = {
        "type": kind,
        "method": "GET",
        "path": path,
        "headers": [(n.lower().encode(), v.encode()) for n, v in headers],
    }
    sent: List[Dict[str, Any]] = []

    async def receive() -> Dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_asgi_passes_a_verified_identity(verifier: Verifier, key: Key) -> None:
    app = AuthgateASGIMiddleware(whoami_asgi, verifier)
    sent = call_asgi(app, list(good_headers(key).items()))
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"]) == {"user": USER}
    # The first request fetched the JWKS in a worker thread; the second verifies inline.
    sent = call_asgi(app, list(good_headers(key).items()))
    assert sent[0]["status"] == 200


def test_asgi_refuses_forged_and_repeated_headers(verifier: Verifier, key: Key) -> None:
    app = AuthgateASGIMiddleware(whoami_asgi, verifier)
    sent = call_asgi(app, list(good_headers(key, kubeflow_userid="mallory@example.com").items()))
    assert sent[0]["status"] == 401
    assert json.loads(sent[1]["body"])["reason"] == "header_mismatch"
    repeated = list(good_headers(key).items()) + [("kubeflow-userid", USER)]
    sent = call_asgi(app, repeated)
    assert sent[0]["status"] == 401
    assert json.loads(sent[1]["body"])["reason"] == "repeated_header"


def test_asgi_jwks_down_is_503(verifier: Verifier, key: Key, endpoint: FakeJWKS) -> None:
    endpoint.down = True
    sent = call_asgi(AuthgateASGIMiddleware(whoami_asgi, verifier), list(good_headers(key).items()))
    assert sent[0]["status"] == 503
    assert (b"retry-after", b"5") in sent[0]["headers"]


def test_asgi_websocket_without_identity_is_closed(verifier: Verifier) -> None:
    sent = call_asgi(AuthgateASGIMiddleware(whoami_asgi, verifier), [("host", HOST)], kind="websocket")
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_asgi_lifespan_passes(verifier: Verifier) -> None:
    assert call_asgi(AuthgateASGIMiddleware(whoami_asgi, verifier), [], kind="lifespan") == []


# -- Flask --------------------------------------------------------------------------------------


def test_flask_helper(verifier: Verifier, key: Key) -> None:
    import flask  # in the test extra: a missing Flask fails, it does not skip
    from authgate_verify.flask import current_identity, exempt, init_app

    app = flask.Flask("t")

    @app.get("/api/whoami")
    def whoami() -> Any:
        return {"user": current_identity().user}

    @app.get("/healthz")
    @exempt
    def healthz() -> Any:
        return "ok"

    init_app(app, verifier)
    client = app.test_client()
    assert client.get("/api/whoami", headers=good_headers(key)).get_json() == {"user": USER}
    forged = client.get("/api/whoami", headers=good_headers(key, kubeflow_userid="mallory@example.com"))
    assert forged.status_code == 401
    assert forged.get_json()["error"] == "unauthenticated"
    assert client.get("/api/whoami").status_code == 401
    assert client.get("/healthz").status_code == 200
