"""WSGI middleware: only requests whose authgate identity verifies reach the app."""

from __future__ import annotations

from typing import Any, Callable, Collection, Iterable, Optional

from ._errors import AuthgateVerifyError
from ._responses import STATUS_LINES, refusal
from ._verifier import Identity, Verifier

#: Where the middlewares put the verified :class:`Identity` (WSGI environ / ASGI scope).
ENVIRON_KEY = "authgate.identity"

WSGIApp = Callable[[dict, Callable[..., Any]], Iterable[bytes]]


def _environ_name(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


def verify_environ(verifier: Verifier, environ: dict) -> Identity:
    """Verifies the identity headers of a WSGI request (``Host`` from ``HTTP_HOST``)."""
    return verifier.verify(
        environ.get(_environ_name(verifier.token_header)),
        environ.get(_environ_name(verifier.user_header)),
        environ.get(_environ_name(verifier.groups_header)),
        environ.get("HTTP_HOST"),
    )


def identity_from_environ(environ: dict) -> Optional[Identity]:
    """The identity :class:`AuthgateMiddleware` verified, if any."""
    value = environ.get(ENVIRON_KEY)
    return value if isinstance(value, Identity) else None


class AuthgateMiddleware:
    """Wraps a WSGI app; refuses (401/503 JSON) every request whose identity does not verify.

    ``exempt_paths`` are exact paths that pass without an identity (e.g. ``/healthz`` probed
    by the kubelet); the identity key is removed from their environ.
    """

    def __init__(
        self, app: WSGIApp, verifier: Verifier, *, exempt_paths: Collection[str] = ()
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.exempt_paths = frozenset(exempt_paths)

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ.pop(ENVIRON_KEY, None)
        if environ.get("PATH_INFO", "") in self.exempt_paths:
            return self.app(environ, start_response)
        try:
            identity = verify_environ(self.verifier, environ)
        except AuthgateVerifyError as e:
            status, headers, body = refusal(
                e, environ.get("REQUEST_METHOD", "?"), environ.get("PATH_INFO", "")
            )
            start_response(STATUS_LINES[status], headers)
            return [body]
        except Exception:  # noqa: BLE001 — a verifier bug must not let the request through
            err = AuthgateVerifyError("internal", "identity verification failed")
            status, headers, body = refusal(err, environ.get("REQUEST_METHOD", "?"), environ.get("PATH_INFO", ""))
            start_response(STATUS_LINES[status], headers)
            return [body]
        environ[ENVIRON_KEY] = identity
        return self.app(environ, start_response)
