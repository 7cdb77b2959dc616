"""Flask helper: ``init_app(app, verifier)`` refuses requests whose identity does not verify.

Needs the ``flask`` extra (``pip install authgate-verify[flask]``).
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Optional, TypeVar

from flask import Flask, Response, g, request

from ._errors import AuthgateVerifyError
from ._responses import refusal
from ._verifier import Identity, Verifier
from .wsgi import verify_environ

F = TypeVar("F", bound=Callable[..., Any])

_EXEMPT_ATTR = "_authgate_exempt"


def init_app(app: Flask, verifier: Verifier, *, exempt_paths: Collection[str] = ()) -> None:
    """Verifies every request before its view runs; the identity is in ``current_identity()``.

    Views decorated with :func:`exempt`, and the exact ``exempt_paths``, pass without one.
    """
    exempt_set = frozenset(exempt_paths)

    @app.before_request
    def _authgate_verify() -> Optional[Response]:
        g.pop("authgate_identity", None)
        view = app.view_functions.get(request.endpoint or "")
        if request.path in exempt_set or getattr(view, _EXEMPT_ATTR, False):
            return None
        try:
            g.authgate_identity = verify_environ(verifier, request.environ)
        except Exception as e:  # noqa: BLE001 — whatever went wrong, the request is refused
            error = e if isinstance(e, AuthgateVerifyError) else AuthgateVerifyError(
                "internal", "identity verification failed"
            )
            status, headers, body = refusal(error, request.method, request.path)
            return Response(body, status=status, headers=headers)
        return None


def exempt(view: F) -> F:
    """Marks a view as reachable without an authgate identity (health checks)."""
    setattr(view, _EXEMPT_ATTR, True)
    return view


def current_identity() -> Identity:
    """The verified identity of the current request (raises if there is none)."""
    identity = g.get("authgate_identity")
    if not isinstance(identity, Identity):
        raise RuntimeError("no verified authgate identity for this request (exempt view?)")
    return identity
