"""ASGI middleware: only requests whose authgate identity verifies reach the app."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Collection, Dict, List, MutableMapping, Optional

from ._errors import AuthgateVerifyError, VerificationError
from ._responses import refusal
from ._verifier import Identity, Verifier
from .wsgi import ENVIRON_KEY

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def verify_scope(verifier: Verifier, scope: Scope) -> Identity:
    """Verifies the identity headers of an ASGI ``http``/``websocket`` scope.

    A repeated identity header is refused (authgate sets each exactly once).
    """
    wanted = {verifier.token_header, verifier.user_header, verifier.groups_header, "host"}
    found: Dict[str, List[str]] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        if name in wanted:
            found.setdefault(name, []).append(raw_value.decode("latin-1"))
    for name, values in found.items():
        if len(values) > 1:
            raise VerificationError("repeated_header", f"{name} was sent more than once")

    def one(name: str) -> Optional[str]:
        values = found.get(name)
        return values[0] if values else None

    return verifier.verify(
        one(verifier.token_header),
        one(verifier.user_header),
        one(verifier.groups_header),
        one("host"),
    )


def identity_from_scope(scope: Scope) -> Optional[Identity]:
    """The identity :class:`AuthgateASGIMiddleware` verified, if any."""
    value = scope.get(ENVIRON_KEY)
    return value if isinstance(value, Identity) else None


class AuthgateASGIMiddleware:
    """Wraps an ASGI app; refuses every ``http`` request (401/503 JSON) and ``websocket``
    connection (closed with 1008 before it is accepted) whose identity does not verify. The
    identity is put into ``scope["authgate.identity"]``. Other scope types (``lifespan``) pass.

    Verification runs inline while the keys are cached; a JWKS fetch runs in a worker thread.
    """

    def __init__(
        self, app: ASGIApp, verifier: Verifier, *, exempt_paths: Collection[str] = ()
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.exempt_paths = frozenset(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        scope.pop(ENVIRON_KEY, None)
        if scope.get("path", "") in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        try:
            if self.verifier.jwks.is_fresh():
                identity = verify_scope(self.verifier, scope)
            else:
                identity = await asyncio.get_running_loop().run_in_executor(
                    None, verify_scope, self.verifier, scope
                )
        except Exception as e:  # noqa: BLE001 — whatever went wrong, the request is refused
            error = e if isinstance(e, AuthgateVerifyError) else AuthgateVerifyError(
                "internal", "identity verification failed"
            )
            status, headers, body = refusal(error, scope.get("method", "WS"), scope.get("path", ""))
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(n.lower().encode(), v.encode()) for n, v in headers],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        scope[ENVIRON_KEY] = identity
        await self.app(scope, receive, send)
